//! The production path: `apply_in_child` in a `CLONE_VM|CLONE_VFORK` child, which shares
//! the parent's memory until it execs (so it may not allocate or take a lock).
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::FromRawFd as _;
use std::time::Duration;

use agent_sandbox::{Network, PreparedSandbox, Sandbox, SandboxContext, SandboxPolicy};

const PROBE: &str = env!("CARGO_BIN_EXE_sandbox-probe");

struct ChildArgs<'a> {
    sandbox: &'a PreparedSandbox,
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdout: libc::c_int,
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive until the vfork child execs;
    // only raw system calls follow.
    unsafe {
        let a = &*(arg as *const ChildArgs<'_>);
        if libc::dup2(a.stdout, 1) < 0 {
            libc::_exit(126);
        }
        if let Err(e) = a.sandbox.apply_in_child() {
            libc::_exit(e.clamp(1, 125));
        }
        libc::execve(a.path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
        libc::_exit(127)
    }
}

#[test]
fn confinement_applies_in_a_clone_vm_vfork_child() {
    let root = tempfile::tempdir().unwrap();
    for d in ["home", "work", "granted"] {
        std::fs::create_dir(root.path().join(d)).unwrap();
    }
    let secret = root.path().join("home/secret");
    std::fs::write(&secret, "SECRET").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let policy = SandboxPolicy {
        network: Network::None,
        read: Vec::new(),
        write: vec![root.path().join("granted").display().to_string()],
    };
    let ctx = SandboxContext::new(PROBE, root.path().join("work")).home(root.path().join("home"));
    let sandbox = Sandbox::policy(policy).prepare(&ctx).unwrap();

    let args: Vec<CString> = [
        PROBE.to_owned(),
        "--secret".into(),
        secret.display().to_string(),
        "--granted".into(),
        root.path().join("granted/x").display().to_string(),
        "--tcp".into(),
        tcp.local_addr().unwrap().to_string(),
        "--udp".into(),
        udp.local_addr().unwrap().to_string(),
        "--proc-self".into(),
        "--child".into(),
    ]
    .into_iter()
    .map(|s| CString::new(s).unwrap())
    .collect();
    let env = [CString::new("PATH=/usr/bin:/bin").unwrap()];
    let mut fds = [0; 2];
    // SAFETY: a plain pipe.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let mut child_args = ChildArgs {
        sandbox: &sandbox,
        path: CString::new(PROBE).unwrap(),
        argv: args
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect(),
        envp: env
            .iter()
            .map(|e| e.as_ptr())
            .chain([std::ptr::null()])
            .collect(),
        stdout: fds[1],
    };
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the stack grows down from its 16-byte-aligned top; the parent is suspended
    // until the child execs or exits, so the borrowed ChildArgs outlives its use.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut child_args).cast(),
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    let mut out = String::new();
    // SAFETY: we own both ends; the write end must close here for read_to_string to end.
    unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
            .read_to_string(&mut out)
            .unwrap();
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}, output:\n{out}"
    );
    for line in [
        "secret-read fail",
        "granted-write ok",
        "tcp-connect fail",
        "udp-send fail",
        "proc-self-read ok",
        "child-secret-read fail",
        "child-tcp-connect fail",
        "child-spawn ok",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{out}"
        );
    }
    assert!(matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(udp.recv_from(&mut [0u8; 16]).is_err());
    drop(stack);
}
