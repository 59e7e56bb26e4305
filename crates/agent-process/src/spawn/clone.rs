//! The pidfd backend's start: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`.
//!
//! Between clone and exec the child also marks every descriptor above 2
//! close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, or a walk of
//! `/proc/self/fd`, or of every number below `RLIMIT_NOFILE`), so a descriptor
//! the host inherited or opened without `O_CLOEXEC` never reaches an agent.
//! The one exception is [`Exec::keep_fd`] (and a script's `program_fd`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::{ChildSetup, Exec, Prepared, dev_null, is_script, pipe_cloexec};
use crate::AgentProcess;

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
    keep_program_fd: bool,
    setup: Option<*const dyn ChildSetup>,
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
pub(super) fn start(
    exec: &Exec,
    c: &Prepared,
) -> io::Result<(Arc<AgentProcess>, OwnedFd, OwnedFd)> {
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid out of range"))?;
    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let null = dev_null()?;

    let mut args = ChildArgs {
        program: c.program.as_ptr(),
        argv: c.argv.as_ptr(),
        envp: c.envp.as_ptr(),
        cwd: c.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        keep_fd: exec.keep_fd.unwrap_or(-1),
        program_fd: exec.program_fd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        keep_program_fd: exec.program_fd.as_ref().is_some_and(is_script),
        setup: exec
            .child_setup
            .as_deref()
            .map(std::ptr::from_ref::<dyn ChildSetup>),
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
    // `pid` is our unreaped child, `pidfd` refers to it, nothing else reaps it.
    let process = AgentProcess::watched(pid, crate::sys::Handle::from_pidfd(pidfd), true)?;
    Ok((process, out_r, err_r))
}

/// The child between clone and exec: system calls only, on the parent's memory.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while we run (CLONE_VFORK).
    unsafe {
        let args = &mut *arg.cast::<ChildArgs>();
        let fail = |args: &mut ChildArgs| -> ! {
            args.error = crate::errno();
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
        if let Some(setup) = args.setup {
            // SAFETY: the hook's contract is this very context.
            if let Err(errno) = (*setup).apply() {
                args.error = if errno == 0 { libc::EINVAL } else { errno };
                libc::_exit(127);
            }
        }
        cloexec_from_3();
        if args.keep_fd >= 0 && libc::fcntl(args.keep_fd, libc::F_SETFD, 0) != 0 {
            fail(args);
        }
        // A script's interpreter opens /dev/fd/N after exec.
        if args.keep_program_fd && libc::fcntl(args.program_fd, libc::F_SETFD, 0) != 0 {
            fail(args);
        }
        libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &raw const args.mask,
            std::ptr::null_mut(),
        );
        if args.program_fd >= 0 {
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
