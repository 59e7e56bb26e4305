//! Noticing that the host died.
//!
//! Two mechanisms, because neither is enough alone: Linux's `PR_SET_PDEATHSIG`
//! delivers SIGTERM the moment the parent dies (but fires on the death of the
//! parent *thread* and does not exist elsewhere), and a cheap periodic
//! `getppid()` comparison catches everything else (re-parenting to init or a
//! subreaper).

use std::time::Duration;

/// How often the fallback check looks at the parent pid.
pub(crate) const PARENT_POLL: Duration = Duration::from_millis(500);

/// The current parent pid.
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::getppid()
    }
}

/// Asks the kernel for SIGTERM when the parent dies, then checks it has not
/// died already. Returns `false` when the parent is already gone.
///
/// A parent that died before `original` was read cannot be told apart from an
/// agent started by init (pid 1 is a legitimate host in a container); that
/// window is a few microseconds at process start.
pub(crate) fn arm(original: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes plain integers and only
        // changes this process's own death-signal setting.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::c_ulong::from(libc::SIGTERM.unsigned_abs()),
            )
        };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "PR_SET_PDEATHSIG failed; relying on the parent poll"
            );
        }
    }
    // The parent may have died between our start and the prctl: the signal
    // would then never come, but the parent pid has changed.
    parent_pid() == original
}

/// Resolves when the parent pid is no longer `original`.
pub(crate) async fn died(original: i32) {
    let mut tick = tokio::time::interval(PARENT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if parent_pid() != original {
            return;
        }
    }
}
