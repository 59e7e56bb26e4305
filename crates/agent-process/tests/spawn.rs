//! Starting real processes through `agent_process::spawn`, on whichever
//! backend is compiled in (CI runs this file with both).

#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_process::{ChildSetup, Spawned, spawn_in_group_blocking};
use common::exec;

/// Waits for the process and returns (exit code, stdout).
fn finish(s: Spawned) -> (Option<i32>, String) {
    let mut out = String::new();
    std::fs::File::from(s.stdout)
        .read_to_string(&mut out)
        .unwrap();
    let exit = s
        .process
        .wait_timeout(Duration::from_secs(30))
        .expect("exited");
    (exit.code, out)
}

fn write_exe(path: &Path, body: &[u8]) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn backend_is_the_one_compiled_in() {
    let expected = if cfg!(all(target_os = "linux", not(agent_portable))) {
        "pidfd"
    } else {
        "portable"
    };
    assert_eq!(agent_process::backend(), expected);
}

#[test]
fn runs_in_its_own_group_with_env_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = exec(
        Path::new("/bin/sh"),
        &["-c", "echo \"$H1_VAR $(pwd) $$ $(ps -o pgid= -p $$)\""],
    );
    e.env.push(("H1_VAR".into(), "hello".into()));
    e.cwd = Some(dir.path().canonicalize().unwrap());
    let s = spawn_in_group_blocking(e).unwrap();
    let pid = s.process.pid();
    let (code, out) = finish(s);
    assert_eq!(code, Some(0));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "hello");
    assert_eq!(Path::new(words[1]), dir.path().canonicalize().unwrap());
    assert_eq!(words[2], pid.to_string());
    assert_eq!(words[3], pid.to_string(), "leads its own process group");
}

#[test]
fn only_stdio_and_the_kept_descriptor_survive_exec() {
    let file = tempfile::tempfile().unwrap();
    // A descriptor the host holds without close-on-exec (as if inherited),
    // and one the child is meant to get; both at known numbers.
    // SAFETY: dup2 of a descriptor we own onto free numbers; closed below.
    let leaked = unsafe { libc::dup2(file.as_raw_fd(), 40) };
    // SAFETY: as above.
    let kept = unsafe { libc::dup2(file.as_raw_fd(), 41) };
    assert_eq!((leaked, kept), (40, 41));
    assert_eq!(
        // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
        unsafe { libc::fcntl(40, libc::F_GETFD) } & libc::FD_CLOEXEC,
        0
    );
    // SAFETY: sets a flag on descriptor 41, which this test owns.
    unsafe { libc::fcntl(41, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut e = exec(Path::new("/bin/sh"), &["-c", "ls /dev/fd"]);
    e.keep_fd = Some(41);
    let (code, out) = finish(spawn_in_group_blocking(e).unwrap());
    // SAFETY: closes the two descriptors this test made; nothing else uses them.
    unsafe {
        libc::close(40);
        libc::close(41);
    }
    assert_eq!(code, Some(0));
    let fds: Vec<i32> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert!(fds.contains(&41), "the kept descriptor is gone: {fds:?}");
    assert!(!fds.contains(&40), "the host's descriptor leaked: {fds:?}");
    // ls itself opens one descriptor to list the directory.
    assert!(
        fds.iter().filter(|&&fd| fd > 2 && fd != 41).count() <= 1,
        "{fds:?}"
    );
}

/// The descriptor's bytes run, not whatever the path names at spawn time.
fn checked_descriptor_runs(first: &[u8], second: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    write_exe(&path, first);
    let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
    // Replace the path after it was opened (and, say, checked).
    let other = dir.path().join("other");
    write_exe(&other, second);
    std::fs::rename(&other, &path).unwrap();

    let mut e = exec(&path, &[]);
    e.program_fd = Some(fd);
    let s = spawn_in_group_blocking(e).unwrap();
    let (code, out) = finish(s);
    assert_eq!((code, out.as_str()), (Some(0), "checked\n"));

    // Without the descriptor, the path's current file runs.
    let (code, out) = finish(spawn_in_group_blocking(exec(&path, &[])).unwrap());
    assert_eq!((code, out.as_str()), (Some(3), "swapped\n"));
}

#[test]
fn the_checked_script_runs_even_if_the_path_is_replaced() {
    checked_descriptor_runs(
        b"#!/bin/sh\necho checked\n",
        b"#!/bin/sh\necho swapped\nexit 3\n",
    );
}

#[test]
fn the_checked_binary_runs_even_if_the_path_is_replaced() {
    // The checked file is a copy of the `echo` binary; a script replaces it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    std::fs::copy("/bin/echo", &path).unwrap();
    let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
    let other = dir.path().join("other");
    write_exe(&other, b"#!/bin/sh\necho swapped\nexit 3\n");
    std::fs::rename(&other, &path).unwrap();
    let mut e = exec(&path, &["checked"]);
    e.program_fd = Some(fd);
    let (code, out) = finish(spawn_in_group_blocking(e).unwrap());
    assert_eq!((code, out.as_str()), (Some(0), "checked\n"));
    let (code, out) = finish(spawn_in_group_blocking(exec(&path, &["checked"])).unwrap());
    assert_eq!((code, out.as_str()), (Some(3), "swapped\n"));
}

/// The checked file itself runs, not a copy of its bytes: the script prints
/// the inode of the file it runs from (`$0`: the descriptor's `/dev/fd/N` or
/// `/proc/self/fd/N` on Linux). Running it leaves the file's identity alone
/// (a hard link would move its ctime, and the next load would hash it), and
/// nothing beside the program.
fn the_checked_inode_runs_from(dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let path = dir.join("agent");
    write_exe(&path, b"#!/bin/sh\nstat -L -c %i \"$0\"\n");
    let before = std::fs::metadata(&path).unwrap();
    let ino = before.ino();
    let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
    let mut e = exec(&path, &[]);
    e.program_fd = Some(fd);
    let (code, out) = finish(spawn_in_group_blocking(e).unwrap());
    assert_eq!(
        (code, out.trim()),
        (Some(0), ino.to_string().as_str()),
        "the agent ran from a copy, not from the checked file"
    );
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ctime(), after.ctime_nsec(), after.nlink()),
        (before.ctime(), before.ctime_nsec(), before.nlink()),
        "running it changed the checked file's ctime or link count"
    );
    let names = || -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The private directory goes when the process is reaped, on the reaper's thread.
    for _ in 0..600 {
        if names() == ["agent"] {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(names(), ["agent"], "left beside the program");
}

#[test]
fn the_checked_file_runs_itself_not_a_copy() {
    the_checked_inode_runs_from(tempfile::tempdir().unwrap().path());
}

/// As above with the program on another file system than the temporary
/// directory (as with a tmpfs `/tmp`), where no link into it can be made.
#[cfg(target_os = "linux")]
#[test]
fn the_checked_file_runs_itself_across_file_systems() {
    use std::os::unix::fs::MetadataExt as _;
    let shm = Path::new("/dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_ne!(
        dev(shm),
        dev(&std::env::temp_dir()),
        "this test needs /dev/shm on another file system than the temporary directory"
    );
    let dir = tempfile::tempdir_in(shm).unwrap();
    the_checked_inode_runs_from(dir.path());
}

struct Umask(libc::mode_t);

impl ChildSetup for Umask {
    unsafe fn apply(&self) -> Result<(), i32> {
        // SAFETY: umask only sets the child's file mode mask.
        unsafe { libc::umask(self.0) };
        Ok(())
    }
}

struct Refuse(i32);

impl ChildSetup for Refuse {
    unsafe fn apply(&self) -> Result<(), i32> {
        Err(self.0)
    }
}

#[test]
fn child_setup_runs_before_exec_or_is_refused() {
    let mut e = exec(Path::new("/bin/sh"), &["-c", "umask"]);
    e.child_setup = Some(Arc::new(Umask(0o027)));
    let result = spawn_in_group_blocking(e);
    if agent_process::backend() == "portable" {
        let err = result.expect_err("posix_spawn has no pre-exec hook");
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
        return;
    }
    let (code, out) = finish(result.unwrap());
    assert_eq!((code, out.trim()), (Some(0), "0027"));

    let mut e = exec(Path::new("/bin/sh"), &["-c", "echo ran"]);
    e.child_setup = Some(Arc::new(Refuse(libc::EACCES)));
    let err = spawn_in_group_blocking(e).expect_err("the setup refused");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

#[test]
fn a_missing_program_is_an_error_and_leaves_no_child() {
    let err = spawn_in_group_blocking(exec(Path::new("/nonexistent/agent"), &[])).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[test]
fn terminate_reaches_the_whole_group() {
    let s = spawn_in_group_blocking(exec(
        Path::new("/bin/sh"),
        &["-c", "trap '' TERM; sleep 1000 & echo $!; wait"],
    ))
    .unwrap();
    let mut line = [0u8; 32];
    let mut out = std::fs::File::from(s.stdout);
    let n = out.read(&mut line).unwrap();
    let child: i32 = std::str::from_utf8(&line[..n])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    s.process.terminate(Duration::from_millis(200));
    let exit = s
        .process
        .wait_timeout(Duration::from_secs(30))
        .expect("killed");
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    // The grandchild went with the group.
    for _ in 0..100 {
        if gone(child) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the group's sleep {child} survived");
}

/// No such process, or only its zombie (reparented, awaiting its new parent).
fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let out = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().starts_with('Z')
}

#[test]
fn a_helper_that_left_the_group_is_stopped_with_it() {
    let s = spawn_in_group_blocking(exec(
        Path::new("/bin/sh"),
        &["-c", "setsid sleep 300 & echo $!; wait"],
    ))
    .unwrap();
    let mut line = [0u8; 32];
    let mut out = std::fs::File::from(s.stdout);
    let n = out.read(&mut line).unwrap();
    let helper: i32 = std::str::from_utf8(&line[..n])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Wait until the helper is in its own session.
    for _ in 0..100 {
        // SAFETY: getsid only reads.
        if unsafe { libc::getsid(helper) } == helper {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        // SAFETY: getsid only reads.
        unsafe { libc::getsid(helper) },
        helper,
        "setsid did not run"
    );
    s.process.terminate(Duration::from_millis(500));
    s.process
        .wait_timeout(Duration::from_secs(30))
        .expect("stopped");
    let mut is_gone = false;
    for _ in 0..100 {
        if gone(helper) {
            is_gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if agent_process::backend() == "pidfd" {
        assert!(is_gone, "the setsid helper {helper} outlived its agent");
    } else {
        // Documented gap of the portable backend: clean up ourselves.
        // SAFETY: the helper is this test's own grandchild, seen alive above.
        unsafe { libc::kill(helper, libc::SIGKILL) };
    }
}
