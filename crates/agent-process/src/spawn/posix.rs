//! The portable backend's start: `posix_spawn` in a new process group.
//!
//! Descriptors: on macOS `POSIX_SPAWN_CLOEXEC_DEFAULT` closes every
//! descriptor not named in the file actions, and `addinherit_np` names the
//! one to keep; on glibc `addclosefrom_np` closes everything above it; other
//! systems get one `close` action per number up to `RLIMIT_NOFILE` (capped).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::ffi::OsStrExt as _;
#[cfg(not(target_os = "linux"))]
use std::path::Path;
use std::sync::Arc;

use super::{Exec, Prepared, dev_null, pipe_cloexec};
use crate::AgentProcess;

// Not in the libc crate: libSystem's way to name a descriptor that survives
// POSIX_SPAWN_CLOEXEC_DEFAULT.
#[cfg(target_vendor = "apple")]
#[allow(unsafe_code)]
unsafe extern "C" {
    fn posix_spawn_file_actions_addinherit_np(
        actions: *mut libc::posix_spawn_file_actions_t,
        fd: libc::c_int,
    ) -> libc::c_int;
}

/// Turns a `posix_spawn*` return code (an errno, not -1) into a result.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The attribute and file-action objects, destroyed on every path.
struct Attrs {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Drop for Attrs {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `Attrs::new`.
        #[allow(unsafe_code)]
        unsafe {
            libc::posix_spawnattr_destroy(&raw mut self.attr);
            libc::posix_spawn_file_actions_destroy(&raw mut self.actions);
        }
    }
}

impl Attrs {
    #[allow(unsafe_code)]
    fn new() -> io::Result<Box<Attrs>> {
        // SAFETY: zeroed storage, initialised right below before any other use.
        let mut a: Box<Attrs> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: init of our own storage.
        unsafe {
            check(libc::posix_spawnattr_init(&raw mut a.attr))?;
            if let Err(e) = check(libc::posix_spawn_file_actions_init(&raw mut a.actions)) {
                libc::posix_spawnattr_destroy(&raw mut a.attr);
                std::mem::forget(a);
                return Err(e);
            }
        }
        Ok(a)
    }
}

#[allow(unsafe_code)]
pub(super) fn start(
    exec: &Exec,
    c: &Prepared,
) -> io::Result<(Arc<AgentProcess>, OwnedFd, OwnedFd)> {
    if exec.child_setup.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a child-setup hook needs the Linux pidfd backend: posix_spawn has no step \
             between fork and exec (on macOS, confine the agent with sandbox-exec instead)",
        ));
    }
    // Linux: the child executes `/proc/self/fd/N`, the checked descriptor
    // itself (no link, which would move the cached file's ctime, and no
    // copy). A script keeps it open across exec for its interpreter.
    #[cfg(target_os = "linux")]
    let by_fd = exec
        .program_fd
        .as_ref()
        .map(|fd| {
            let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(|_| io::Error::other("descriptor path"))?;
            Ok::<_, io::Error>((path, fd.as_raw_fd(), super::is_script(fd)))
        })
        .transpose()?;
    #[cfg(not(target_os = "linux"))]
    let by_fd = None::<(CString, RawFd, bool)>;
    #[cfg(not(target_os = "linux"))]
    let copy = exec.program_fd.as_ref().map(PrivateCopy::new).transpose()?;
    #[cfg(not(target_os = "linux"))]
    let program = copy
        .as_ref()
        .map_or(c.program.as_ptr(), |p| p.path.as_ptr());
    #[cfg(target_os = "linux")]
    let program = c.program.as_ptr();
    let path = by_fd.as_ref().map_or(program, |(p, _, _)| p.as_ptr());
    let program_fd = by_fd.as_ref().map(|&(_, fd, script)| (fd, script));

    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let null = dev_null()?;
    let mut a = Attrs::new()?;
    let keep = exec.keep_fd.unwrap_or(-1);
    // SAFETY: calls on the initialised attribute objects; every pointer handed
    // to posix_spawn (path, argv, envp, cwd) lives until it returns.
    let pid = unsafe {
        let actions = &raw mut a.actions;
        check(libc::posix_spawn_file_actions_adddup2(
            actions,
            null.as_raw_fd(),
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            actions,
            out_w.as_raw_fd(),
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            actions,
            err_w.as_raw_fd(),
            2,
        ))?;
        if let Some(cwd) = &c.cwd {
            add_chdir(actions, cwd)?;
        }
        let mut flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGDEF
            | libc::POSIX_SPAWN_SETSIGMASK;
        flags |= close_descriptors(actions, keep, program_fd)?;
        let attr = &raw mut a.attr;
        check(libc::posix_spawnattr_setflags(
            attr,
            libc::c_short::try_from(flags).map_err(|_| io::Error::other("spawn flags"))?,
        ))?;
        check(libc::posix_spawnattr_setpgroup(attr, 0))?;
        // Every handler back to the default (the host's are its own code),
        // nothing blocked.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::sigdelset(&raw mut all, libc::SIGKILL);
        libc::sigdelset(&raw mut all, libc::SIGSTOP);
        check(libc::posix_spawnattr_setsigdefault(attr, &raw const all))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        check(libc::posix_spawnattr_setsigmask(attr, &raw const none))?;

        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &raw mut pid,
            path,
            actions,
            attr,
            c.argv.as_ptr().cast::<*mut libc::c_char>(),
            c.envp.as_ptr().cast::<*mut libc::c_char>(),
        ))?;
        pid
    };
    drop((out_w, err_w, null, a));
    let process = AgentProcess::watched(pid, crate::sys::Handle::open(pid)?, true)?;
    #[cfg(not(target_os = "linux"))]
    if let Some(copy) = copy {
        // Kept while the agent runs: a script's interpreter opens the path
        // after exec, and an agent may start itself again from its own path
        // (`current_exe`, Go's `os.Executable`).
        process.on_exit(move |_| drop(copy));
    }
    Ok((process, out_r, err_r))
}

/// Adds the file actions (and returns the flags) that leave the child no
/// descriptor above 2 but `keep`, and `program` (the descriptor executed,
/// `(fd, keep_open)`): left to its close-on-exec flag, or kept open across
/// exec for a script's interpreter.
#[allow(unsafe_code)]
unsafe fn close_descriptors(
    actions: *mut libc::posix_spawn_file_actions_t,
    keep: RawFd,
    program: Option<(RawFd, bool)>,
) -> io::Result<libc::c_int> {
    // SAFETY: file actions on an initialised object (the whole function).
    unsafe {
        #[cfg(target_vendor = "apple")]
        {
            let _ = program;
            if keep >= 0 {
                check(posix_spawn_file_actions_addinherit_np(actions, keep))?;
            }
            Ok(libc::POSIX_SPAWN_CLOEXEC_DEFAULT)
        }
        #[cfg(not(target_vendor = "apple"))]
        {
            // (fd, clear its close-on-exec flag), in order.
            let mut spared: Vec<(RawFd, bool)> = Vec::with_capacity(2);
            if keep >= 0 {
                spared.push((keep, true));
            }
            if let Some((fd, open)) = program.filter(|&(fd, _)| fd >= 0 && fd != keep) {
                spared.push((fd, open));
            }
            spared.sort_unstable();
            // A close of a number that is not open is not an error for posix_spawn.
            let mut next = 3;
            for (fd, clear) in spared {
                for f in next..fd {
                    check(libc::posix_spawn_file_actions_addclose(actions, f))?;
                }
                if clear {
                    // dup2 onto itself clears close-on-exec.
                    check(libc::posix_spawn_file_actions_adddup2(actions, fd, fd))?;
                }
                next = fd + 1;
            }
            close_from(actions, next)?;
            Ok(0)
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
unsafe fn close_from(
    actions: *mut libc::posix_spawn_file_actions_t,
    from: RawFd,
) -> io::Result<()> {
    // SAFETY: a file action on an initialised object.
    check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(actions, from) })
}

#[cfg(not(any(target_vendor = "apple", all(target_os = "linux", target_env = "gnu"))))]
#[allow(unsafe_code)]
unsafe fn close_from(
    actions: *mut libc::posix_spawn_file_actions_t,
    from: RawFd,
) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct; file actions on an initialised object.
    unsafe {
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            RawFd::try_from(limit.rlim_cur.min(1 << 16)).unwrap_or(1 << 16)
        } else {
            1 << 16
        };
        for fd in from..max {
            check(libc::posix_spawn_file_actions_addclose(actions, fd))?;
        }
    }
    Ok(())
}

#[cfg(any(target_vendor = "apple", all(target_os = "linux", target_env = "gnu")))]
#[allow(unsafe_code)]
unsafe fn add_chdir(
    actions: *mut libc::posix_spawn_file_actions_t,
    cwd: &CString,
) -> io::Result<()> {
    // SAFETY: a file action on an initialised object; `cwd` outlives the spawn.
    check(unsafe { libc::posix_spawn_file_actions_addchdir_np(actions, cwd.as_ptr()) })
}

#[cfg(not(any(target_vendor = "apple", all(target_os = "linux", target_env = "gnu"))))]
#[allow(unsafe_code)]
unsafe fn add_chdir(
    _actions: *mut libc::posix_spawn_file_actions_t,
    _cwd: &CString,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a working directory for the agent needs posix_spawn_file_actions_addchdir_np",
    ))
}

/// The checked descriptor's bytes under a path only the host can reach (where
/// there is no `/proc/self/fd` to execute): a copy in a fresh 0700
/// directory. A hard link would be cheaper but moves the cached file's
/// ctime, so the next load would hash it. Dropping it removes both.
#[cfg(not(target_os = "linux"))]
struct PrivateCopy {
    _dir: tempfile::TempDir,
    path: CString,
}

#[cfg(not(target_os = "linux"))]
impl PrivateCopy {
    fn new(fd: &OwnedFd) -> io::Result<PrivateCopy> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("am")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let file = dir.path().join("a");
        copy(fd, &file)?;
        let path = CString::new(file.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("NUL byte in the temporary directory's path"))?;
        Ok(PrivateCopy { _dir: dir, path })
    }
}

#[cfg(not(target_os = "linux"))]
/// Copies the descriptor's bytes (from offset 0, with positioned reads: the
/// descriptor's own offset is left alone) into a new 0700 file at `to`.
fn copy(fd: &OwnedFd, to: &Path) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    let src = std::fs::File::from(fd.try_clone()?);
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(to)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = src.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])?;
        at += n as u64;
    }
    dst.flush()
}
