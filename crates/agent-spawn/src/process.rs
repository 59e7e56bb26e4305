//! Starting agent processes from one long-lived thread, with exactly the
//! descriptors we mean to give them, and handing each to its one owner
//! ([`AgentProcess`]).
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process. Tokio's worker and blocking threads come and go, so
//! every fork happens on a process-wide "spawner" thread that never exits;
//! the child then dies with the host, and only with the host.
//!
//! Between fork and exec the child also marks every descriptor above 2
//! close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, or a walk of
//! `/proc/self/fd`, or of every number below `RLIMIT_NOFILE`), so a descriptor
//! the host inherited or opened without `O_CLOEXEC` never reaches an agent.
//! The one exception is the lifeline's read end ([`LIFELINE_ENV`](crate::LIFELINE_ENV)).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use agent_process::AgentProcess;
use tokio::sync::oneshot;

/// What the spawner hands back: the owner of the process and its pipes.
pub(crate) struct Spawned {
    pub(crate) process: Arc<AgentProcess>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Everything the child needs, prepared in the parent: between clone and
/// exec the child only makes system calls on these.
pub(crate) struct Exec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    /// A descriptor to keep open across exec (the lifeline's read end).
    pub(crate) keep_fd: Option<RawFd>,
    /// The checked file: executed instead of `program` when set.
    pub(crate) program_fd: Option<OwnedFd>,
}

struct Request {
    exec: Exec,
    reply: oneshot::Sender<io::Result<Spawned>>,
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
    while let Ok(req) = rx.recv() {
        let result = start(&req.exec);
        if let Err(Ok(spawned)) = req.reply.send(result) {
            // The caller gave up (its future was dropped): leave nothing behind.
            spawned.process.kill();
        }
    }
}

fn start(exec: &Exec) -> io::Result<Spawned> {
    let (process, stdout, stderr) = clone_exec(exec)?;
    if let Err(error) = process.guard_with_watchdog() {
        tracing::warn!(%error, "no host watchdog: the agent's children may outlive a killed host");
    }
    Ok(Spawned {
        process,
        stdout,
        stderr,
    })
}

/// Spawns `exec` in its own process group, from the spawner thread, with
/// `PR_SET_PDEATHSIG(SIGKILL)`, every descriptor but 0, 1, 2 and `keep_fd`
/// closed on exec.
pub(crate) async fn spawn_in_group(exec: Exec) -> io::Result<Spawned> {
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(Request { exec, reply })
        .map_err(|_| io::Error::other("the agent spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the program, an argument or the environment",
        )
    })
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: fds is a valid out-array.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    #[allow(unsafe_code)]
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What the child reads (and, on failure, writes: the shared `errno`).
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    keep_fd: RawFd,
    program_fd: RawFd,
    program_fd_inherit: bool,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    error: libc::c_int,
}

/// Starts the agent with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`: no
/// copy of the host's page tables (a plain fork's cost grows with the host's
/// size), the spawner thread waits until the child has exec'd, and the pidfd
/// exists before anyone could reap the child. The child resets signal
/// handlers, sets up stdio, its group, directory, death signal and
/// descriptors, then execs; all of it system calls on memory prepared here.
#[allow(unsafe_code)]
fn clone_exec(exec: &Exec) -> io::Result<(Arc<AgentProcess>, OwnedFd, OwnedFd)> {
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid out of range"))?;
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
    let argv: Vec<*const libc::c_char> = argv_c
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp_c
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();

    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    // SAFETY: open of a constant path.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let null = unsafe { OwnedFd::from_raw_fd(null) };

    let mut args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        keep_fd: exec.keep_fd.unwrap_or(-1),
        program_fd: exec.program_fd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        // A script run from a close-on-exec descriptor fails (its interpreter
        // opens /dev/fd/N after exec): such a descriptor stays open.
        program_fd_inherit: exec.program_fd.as_ref().is_some_and(|fd| {
            let mut magic = [0u8; 2];
            // SAFETY: a 2-byte buffer; pread leaves the file offset alone.
            let n = unsafe { libc::pread(fd.as_raw_fd(), magic.as_mut_ptr().cast(), 2, 0) };
            n == 2 && magic == *b"#!"
        }),
        parent,
        // SAFETY: sigset_t is plain data; filled below.
        mask: unsafe { std::mem::zeroed() },
        error: 0,
    };
    let mut stack = vec![0u8; 64 * 1024];
    let mut pidfd: RawFd = -1;
    // SAFETY: signals are blocked around the clone so no handler of ours runs
    // on the child's borrowed stack; the child only makes system calls on
    // `args` (alive until clone returns: CLONE_VFORK suspends us until the
    // child execs or exits).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut args.mask);
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&raw mut args).cast(),
            &raw mut pidfd,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &raw const args.mask,
            std::ptr::null_mut(),
        );
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop((out_w, err_w, null, stack));
    // SAFETY: the kernel gave us this pidfd for our new child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if args.error != 0 {
        // The child failed before exec and exited: reap it here.
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(io::Error::from_raw_os_error(args.error));
    }
    // SAFETY: `pid` is our unreaped child, `pidfd` refers to it, nothing else reaps it.
    let process = unsafe { AgentProcess::from_pidfd(pid.unsigned_abs(), pidfd, true)? };
    Ok((process, out_r, err_r))
}

/// The child between clone and exec: system calls only, on the parent's memory.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while we run (CLONE_VFORK).
    unsafe {
        let args = &mut *arg.cast::<ChildArgs>();
        let fail = |args: &mut ChildArgs| -> ! {
            args.error = *libc::__errno_location();
            if args.error == 0 {
                args.error = libc::EINVAL;
            }
            libc::_exit(127)
        };
        // Handlers are the parent's code: back to the defaults before any
        // signal may be delivered (the ignored ones stay ignored, as exec keeps them).
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &raw mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &raw const dfl, std::ptr::null_mut());
            }
        }
        if libc::dup2(args.stdin, 0) < 0
            || libc::dup2(args.stdout, 1) < 0
            || libc::dup2(args.stderr, 2) < 0
        {
            fail(args);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(args);
        }
        if !args.cwd.is_null() && libc::chdir(args.cwd) != 0 {
            fail(args);
        }
        let sig = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
        if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
            fail(args);
        }
        // The host may have died between clone and prctl: then nobody would
        // ever signal us, so do not start at all.
        if libc::getppid() != args.parent {
            libc::_exit(127);
        }
        cloexec_from_3();
        if args.keep_fd >= 0 && libc::fcntl(args.keep_fd, libc::F_SETFD, 0) != 0 {
            fail(args);
        }
        libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &raw const args.mask,
            std::ptr::null_mut(),
        );
        if args.program_fd >= 0 {
            if args.program_fd_inherit && libc::fcntl(args.program_fd, libc::F_SETFD, 0) != 0 {
                fail(args);
            }
            libc::syscall(
                libc::SYS_execveat,
                args.program_fd,
                c"".as_ptr(),
                args.argv,
                args.envp,
                libc::AT_EMPTY_PATH,
            );
        } else {
            libc::execve(args.program, args.argv, args.envp);
        }
        fail(args)
    }
}

/// Marks every descriptor from 3 up close-on-exec. Async-signal-safe.
#[allow(unsafe_code)]
fn cloexec_from_3() {
    // SAFETY: syscalls on our own descriptor table, a stack buffer for getdents.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Fallback 1 (kernel < 5.11): the descriptors that exist.
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir >= 0 {
            let mut buf = [0u8; 2048];
            loop {
                let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
                let Ok(n) = usize::try_from(n) else { break };
                if n == 0 {
                    break;
                }
                let mut off = 0;
                // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                while off + 19 < n {
                    let reclen = usize::from(u16::from_ne_bytes([buf[off + 16], buf[off + 17]]));
                    if reclen == 0 {
                        break;
                    }
                    let mut fd: RawFd = 0;
                    let mut digits = false;
                    for &b in &buf[off + 19..(off + reclen).min(n)] {
                        if !b.is_ascii_digit() {
                            break;
                        }
                        digits = true;
                        fd = fd.saturating_mul(10).saturating_add(RawFd::from(b - b'0'));
                    }
                    if digits && fd >= 3 && fd != dir {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                    off += reclen;
                }
            }
            libc::close(dir);
            return;
        }
        // Fallback 2: every possible number.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            RawFd::try_from(limit.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
        } else {
            1 << 16
        };
        for fd in 3..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// The host's lifeline: a pipe whose write end only this process holds
/// (close-on-exec, never given to anyone). Agents get the read end; EOF on it
/// means the host is gone. One pipe serves every agent of the host.
pub(crate) fn lifeline_read_end() -> io::Result<RawFd> {
    static LIFELINE: OnceLock<io::Result<(OwnedFd, OwnedFd)>> = OnceLock::new();
    LIFELINE
        .get_or_init(|| {
            let mut fds: [RawFd; 2] = [-1, -1];
            // SAFETY: fds is a valid out-array.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh fds we own; kept for the life of the process.
            #[allow(unsafe_code)]
            Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
        })
        .as_ref()
        .map(|(read, _write)| read.as_raw_fd())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}
