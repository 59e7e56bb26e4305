//! Starting agent processes from one long-lived thread, and signalling their groups.
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process. Tokio's worker and blocking threads come and go, so
//! every fork happens on a process-wide "spawner" thread that never exits;
//! the child then dies with the host, and only with the host.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<io::Result<mpsc::Sender<Request>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("agent-spawner".into())
                .spawn(move || spawner_loop(&rx))?;
            Ok(tx)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

fn spawner_loop(rx: &mpsc::Receiver<Request>) {
    // The sender lives in a static, so this loop runs as long as the process.
    while let Ok(mut req) = rx.recv() {
        // The pipes and the child's reaper register with the caller's runtime.
        let result = {
            let _guard = req.runtime.enter();
            req.command.spawn()
        };
        if let Err(Ok(child)) = req.reply.send(result) {
            // The caller gave up (its future was dropped): leave nothing behind.
            if let Some(pid) = child.id() {
                kill_group(pid, libc::SIGKILL);
            }
            drop(child); // tokio reaps orphaned children
        }
    }
}

/// Spawns `command` in its own process group, from the spawner thread, with
/// `PR_SET_PDEATHSIG(SIGKILL)` so the agent dies with the host.
pub(crate) async fn spawn_in_group(mut command: Command) -> io::Result<Child> {
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid out of range"))?;
    command.process_group(0);
    set_parent_death_signal(&mut command, parent);
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| io::Error::other("agent_spawn::spawn must run inside a tokio runtime"))?;
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(Request {
            command,
            runtime,
            reply,
        })
        .map_err(|_| io::Error::other("the agent spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, parent: libc::pid_t) {
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                let sig = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The host may have died between fork and prctl: then nobody would
            // ever signal us, so do not start at all.
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group `pgid`; `false` when no such group exists.
pub(crate) fn kill_group(pgid: u32, signal: libc::c_int) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false; // never signal "every process" or init's group
    }
    // SAFETY: killpg has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::killpg(pgid, signal) };
    rc == 0
}
