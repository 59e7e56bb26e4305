//! Starting agent processes from one long-lived thread, with exactly the
//! descriptors we mean to give them, and handing each to its one owner
//! ([`AgentProcess`]).
//!
//! Every start happens on a process-wide "spawner" thread that never exits:
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process, and async runtimes' threads come and go.
//!
//! What the child gets: stdin `/dev/null`, stdout and stderr pipes (the read
//! ends are returned), its own process group, [`Exec::cwd`], the environment
//! given (nothing inherited implicitly), and no descriptor but 0, 1, 2 and
//! [`Exec::keep_fd`]. The group is registered with the host's
//! [`watchdog`](crate::watchdog).
//!
//! ## Executing the file that was checked
//! With [`Exec::program_fd`], the bytes behind that descriptor run, whatever
//! the path names by then:
//! - pidfd backend: `execveat(fd, "", AT_EMPTY_PATH)`. A `#!` script is run by
//!   its interpreter, which the kernel hands `/dev/fd/N`; the descriptor is
//!   therefore left open across exec for scripts (only for them), and the
//!   script's process holds a read-only descriptor of its own file.
//! - portable backend: on Linux, `posix_spawn` of `/proc/self/fd/N`, the
//!   descriptor itself (left open across exec only for a script, as above).
//!   Where there is no `/proc` (macOS), its bytes are copied into a fresh
//!   private 0700 directory of the host and that path is spawned; the copy is
//!   removed when the process is reaped (a script's interpreter opens the path
//!   after exec, and an agent may start itself again from its own path). A
//!   hard link would be cheaper, but it moves the cached file's ctime, so the
//!   next load would hash it.
//!
//! [`Exec::program`] still gives `argv[0]` and the name in errors.

use std::ffi::{CString, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use crate::AgentProcess;

#[cfg(all(target_os = "linux", not(agent_portable)))]
#[path = "clone.rs"]
mod imp;
#[cfg(any(not(target_os = "linux"), agent_portable))]
#[path = "posix.rs"]
mod imp;

/// Code run in the child between fork and exec (e.g. to confine it), after it
/// has its process group and working directory, before the descriptor sweep
/// and exec. Only the pidfd backend runs it; the portable one refuses a spawn
/// that has one (`posix_spawn` has no such hook).
pub trait ChildSetup: Send + Sync {
    /// Applies the setup in the child; `Err(errno)` makes the spawn fail with
    /// that OS error, as any other failure in the child does.
    ///
    /// # Safety
    /// Called in the child between `clone(CLONE_VM | CLONE_VFORK)` and exec:
    /// it shares the parent's memory and runs on a small borrowed stack. It
    /// must only make async-signal-safe system calls on memory prepared
    /// before the spawn: no allocation, no locks, no panics.
    #[allow(unsafe_code)]
    unsafe fn apply(&self) -> Result<(), i32>;
}

/// Everything the child needs, prepared in the parent.
pub struct Exec {
    /// The program's path (`argv[0]`); executed unless `program_fd` is set.
    pub program: PathBuf,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// The whole environment of the child.
    pub env: Vec<(OsString, OsString)>,
    /// The child's working directory (the host's when `None`).
    pub cwd: Option<PathBuf>,
    /// A descriptor to keep open across exec, under the same number (the
    /// lifeline's read end).
    pub keep_fd: Option<RawFd>,
    /// The checked file itself: when set, these bytes are executed rather
    /// than whatever `program` names at exec time.
    pub program_fd: Option<OwnedFd>,
    /// A hook run in the child before exec (pidfd backend only).
    pub child_setup: Option<Arc<dyn ChildSetup>>,
}

impl fmt::Debug for Exec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("keep_fd", &self.keep_fd)
            .field("program_fd", &self.program_fd)
            .field("child_setup", &self.child_setup.is_some())
            .finish_non_exhaustive()
    }
}

/// A started child: its owner and the read ends of its stdout and stderr.
#[derive(Debug)]
pub struct Spawned {
    /// The one owner of the process (and of the group it leads).
    pub process: Arc<AgentProcess>,
    /// Read end of the child's stdout.
    pub stdout: OwnedFd,
    /// Read end of the child's stderr.
    pub stderr: OwnedFd,
}

type Done = Box<dyn FnOnce(io::Result<Spawned>) + Send>;

struct Request {
    exec: Exec,
    done: Done,
}

static SPAWNER: OnceLock<io::Result<mpsc::Sender<Request>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("agent-spawner".into())
                .spawn(move || {
                    // The sender lives in a static: this runs as long as the process.
                    while let Ok(req) = rx.recv() {
                        (req.done)(start(&req.exec));
                    }
                })?;
            Ok(tx)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// Starts `exec` in its own process group from the spawner thread and calls
/// `done` there with the result. `done` must not block; if it drops the
/// [`Spawned`], kill the process first (nothing else will).
///
/// # Errors
/// The spawner thread could not be started.
pub fn spawn_in_group(
    exec: Exec,
    done: impl FnOnce(io::Result<Spawned>) + Send + 'static,
) -> io::Result<()> {
    spawner()?
        .send(Request {
            exec,
            done: Box::new(done),
        })
        .map_err(|_| io::Error::other("the agent spawner thread is gone"))
}

/// [`spawn_in_group`], waiting for the result on the calling thread.
///
/// # Errors
/// The child could not be started (the OS error of the step that failed).
pub fn spawn_in_group_blocking(exec: Exec) -> io::Result<Spawned> {
    let (tx, rx) = mpsc::sync_channel(1);
    spawn_in_group(exec, move |result| {
        if let Err(mpsc::TrySendError::Full(Ok(s)) | mpsc::TrySendError::Disconnected(Ok(s))) =
            tx.try_send(result)
        {
            s.process.kill();
        }
    })?;
    rx.recv()
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

fn start(exec: &Exec) -> io::Result<Spawned> {
    let prepared = Prepared::new(exec)?;
    let (process, stdout, stderr) = imp::start(exec, &prepared)?;
    if let Err(error) = process.guard_with_watchdog() {
        tracing::warn!(%error, "no host watchdog: the agent's children may outlive a killed host");
    }
    Ok(Spawned {
        process,
        stdout,
        stderr,
    })
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the program, an argument or the environment",
        )
    })
}

/// The C strings and pointer arrays the child reads; built before the spawn
/// so the child allocates nothing.
struct Prepared {
    program: CString,
    _argv_c: Vec<CString>,
    _envp_c: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
}

impl Prepared {
    fn new(exec: &Exec) -> io::Result<Prepared> {
        let program = cstring(exec.program.clone().into_os_string().into_vec())?;
        let mut argv_c = vec![program.clone()];
        for a in &exec.args {
            argv_c.push(cstring(a.clone().into_vec())?);
        }
        let mut envp_c = Vec::with_capacity(exec.env.len());
        for (k, v) in &exec.env {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            envp_c.push(cstring(kv)?);
        }
        let cwd = exec
            .cwd
            .as_ref()
            .map(|c| cstring(c.clone().into_os_string().into_vec()))
            .transpose()?;
        let argv = argv_c
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = envp_c
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(Prepared {
            program,
            _argv_c: argv_c,
            _envp_c: envp_c,
            argv,
            envp,
            cwd,
        })
    }
}

/// Whether the file behind `fd` starts with `#!` (read at offset 0, so the
/// descriptor's own offset is untouched).
#[cfg(target_os = "linux")]
fn is_script(fd: &OwnedFd) -> bool {
    let mut head = [0u8; 2];
    // SAFETY: reading at most 2 bytes into a valid buffer.
    #[allow(unsafe_code)]
    let n = unsafe { libc::pread(fd.as_raw_fd(), head.as_mut_ptr().cast(), head.len(), 0) };
    n == 2 && head == *b"#!"
}

/// A pipe, both ends close-on-exec.
///
/// # Errors
/// `pipe` or `fcntl` failed (out of descriptors).
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: fds is a valid out-array.
    #[allow(unsafe_code)]
    let rc = unsafe {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        {
            libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        {
            libc::pipe(fds.as_mut_ptr())
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    #[allow(unsafe_code)]
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        set_cloexec(&r)?;
        set_cloexec(&w)?;
    }
    Ok((r, w))
}

/// Marks `fd` close-on-exec (where descriptors cannot be created so).
#[cfg_attr(
    any(target_os = "linux", target_os = "android", target_os = "freebsd"),
    allow(dead_code)
)]
pub(crate) fn set_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `/dev/null`, read-write, close-on-exec.
fn dev_null() -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(OwnedFd::from(file))
}
