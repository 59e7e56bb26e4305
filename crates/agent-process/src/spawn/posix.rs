//! The portable backend's start: `posix_spawn` in a new process group.
//!
//! Descriptors: on macOS `POSIX_SPAWN_CLOEXEC_DEFAULT` closes every
//! descriptor not named in the file actions, and `addinherit_np` names the
//! one to keep; on glibc `addclosefrom_np` closes everything above it; other
//! systems get one `close` action per number up to `RLIMIT_NOFILE` (capped).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
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
    let copy = exec
        .program_fd
        .as_ref()
        .map(|fd| PrivateCopy::new(fd, &exec.program))
        .transpose()?;
    let path = copy
        .as_ref()
        .map_or(c.program.as_ptr(), |p| p.path.as_ptr());

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
        flags |= close_descriptors(actions, keep)?;
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
    if let Some(copy) = copy {
        // Kept while the agent runs: a script's interpreter opens the path
        // after exec, and an agent may start itself again from its own path
        // (`current_exe`, Go's `os.Executable`).
        process.on_exit(move |_| drop(copy));
    }
    Ok((process, out_r, err_r))
}

/// Adds the file actions (and returns the flags) that leave the child no
/// descriptor above 2 but `keep`.
#[allow(unsafe_code)]
unsafe fn close_descriptors(
    actions: *mut libc::posix_spawn_file_actions_t,
    keep: RawFd,
) -> io::Result<libc::c_int> {
    // SAFETY (whole function): file actions on an initialised object.
    unsafe {
        #[cfg(target_vendor = "apple")]
        {
            if keep >= 0 {
                check(posix_spawn_file_actions_addinherit_np(actions, keep))?;
            }
            Ok(libc::POSIX_SPAWN_CLOEXEC_DEFAULT)
        }
        #[cfg(not(target_vendor = "apple"))]
        {
            // A close of a number that is not open is not an error for posix_spawn.
            let first_closed_from = if keep >= 0 {
                for fd in 3..keep {
                    check(libc::posix_spawn_file_actions_addclose(actions, fd))?;
                }
                // dup2 onto itself clears close-on-exec.
                check(libc::posix_spawn_file_actions_adddup2(actions, keep, keep))?;
                keep + 1
            } else {
                3
            };
            close_from(actions, first_closed_from)?;
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

/// The checked descriptor's file under a path only the host can reach: a
/// fresh 0700 directory holding a hard link to it (the checked inode itself,
/// as `execveat` of the descriptor would run) or, where no link can be made,
/// a copy of its bytes. Dropping it removes both.
///
/// The directory is made in the temporary directory; when that is another
/// file system than the program's (a tmpfs `/tmp`, so no link can reach it),
/// beside the program, as `.{name}.run.{pid}.{random}`, before falling back
/// to a copy.
struct PrivateCopy {
    _dir: tempfile::TempDir,
    path: CString,
}

impl PrivateCopy {
    /// `program` is the path `fd` was opened at.
    fn new(fd: &OwnedFd, program: &Path) -> io::Result<PrivateCopy> {
        let checked = file_id(fd)?;
        let dir = private_dir(tempfile::Builder::new().prefix("am"), None)?;
        let file = dir.path().join("a");
        if link_checked(fd, checked, program, &file) {
            return PrivateCopy::at(dir, &file);
        }
        if !same_device(dir.path(), checked.0)
            && let Some(beside) = dir_beside(program, checked)
        {
            let linked = beside.path().join("a");
            if link_checked(fd, checked, program, &linked) {
                return PrivateCopy::at(beside, &linked);
            }
        }
        copy(fd, &file)?;
        PrivateCopy::at(dir, &file)
    }

    fn at(dir: tempfile::TempDir, file: &Path) -> io::Result<PrivateCopy> {
        let path = CString::new(file.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("NUL byte in the private directory's path"))?;
        Ok(PrivateCopy { _dir: dir, path })
    }
}

/// A fresh 0700 directory made by `builder` (in `parent`, or the temporary directory).
fn private_dir(
    builder: &mut tempfile::Builder<'_, '_>,
    parent: Option<&Path>,
) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let builder = builder.permissions(std::fs::Permissions::from_mode(0o700));
    match parent {
        Some(p) => builder.tempdir_in(p),
        None => builder.tempdir(),
    }
}

/// The device and inode of the file behind `fd`.
fn file_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    // SAFETY: fstat fills the struct it is given; all-zero is a valid stat.
    #[allow(unsafe_code)]
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we hold and a valid, writable stat.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    Ok((st.st_dev as u64, u64::from(st.st_ino)))
}

/// Whether `path` is on device `dev` (`false` when it cannot be told).
fn same_device(path: &Path, dev: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.dev() == dev)
}

/// A private directory beside `program` for a link to it, when its
/// directory is on the program's file system and writable by us; stale ones
/// of hosts that are gone are removed on the way.
fn dir_beside(program: &Path, checked: (u64, u64)) -> Option<tempfile::TempDir> {
    let parent = program.parent()?;
    let name = program.file_name()?.to_str()?;
    if !same_device(parent, checked.0) {
        return None;
    }
    let stem = format!(".{name}.run.");
    remove_stale(parent, &stem);
    let prefix = format!("{stem}{}.", std::process::id());
    private_dir(tempfile::Builder::new().prefix(&prefix), Some(parent)).ok()
}

/// Removes `{stem}{pid}.*` directories in `dir` whose host process is gone
/// (a host killed before it could remove its own).
fn remove_stale(dir: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(stem))
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        #[allow(unsafe_code)]
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::debug!(path = %entry.path().display(), error = %e, "could not remove a stale private directory");
        }
    }
}

/// Hard-links the checked file at `to`, and reports whether `to` is now that
/// very inode: through `/proc/self/fd` on Linux (no privilege needed), else
/// from `program`'s path, kept only if the link has the descriptor's device
/// and inode (the path may name another file by now).
fn link_checked(fd: &OwnedFd, checked: (u64, u64), program: &Path, to: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if link_descriptor(fd, to) {
        return true;
    }
    let (Ok(from), Ok(to_c)) = (
        CString::new(program.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: two valid C strings. Flags 0: a symlink at `program` is linked
    // as itself, and then fails the identity check below.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            0,
        )
    };
    if rc != 0 {
        return false;
    }
    match std::fs::symlink_metadata(to) {
        Ok(m) if (m.dev(), m.ino()) == checked => true,
        _ => {
            let _ = std::fs::remove_file(to);
            false
        }
    }
}

/// Links the descriptor's inode at `to` (Linux: through `/proc/self/fd`,
/// which needs no privilege). `false` when that is not possible (another
/// file system, no `/proc`, another OS).
fn link_descriptor(fd: &OwnedFd, to: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        let from = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let (Ok(from), Ok(to)) = (CString::new(from), CString::new(to.as_os_str().as_bytes()))
        else {
            return false;
        };
        // SAFETY: two valid C strings.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, to);
        false
    }
}

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
