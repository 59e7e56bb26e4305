//! Another library in the host that reaps "any child" (`waitpid(-1)`) takes
//! an agent's exit status, but not its exit: the agent's owner still sees it
//! end (with an unknown status when the other reaper got there first) rather
//! than waiting for ever. Process-wide (it reaps any child), hence a test
//! binary of its own; both backends.

#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_process::spawn_in_group_blocking;

#[test]
fn an_agent_reaped_by_a_waitpid_elsewhere_in_the_host_is_still_seen_to_exit() {
    // Blocked in the kernel's wait, as such a library usually is, it is
    // woken by a child's exit as early as the agent's own reaper. It is never
    // joined: it may wait on for the host's watchdog process.
    let stop = Arc::new(AtomicBool::new(false));
    let reaped = Arc::new(Mutex::new(Vec::new()));
    {
        let (stop, reaped) = (stop.clone(), reaped.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut status = 0;
                // SAFETY: waitpid writes the status it is given.
                let pid = unsafe { libc::waitpid(-1, &raw mut status, 0) };
                if pid > 0 {
                    reaped.lock().unwrap().push(pid);
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }
    let s = spawn_in_group_blocking(common::sh("sleep 0.3; exit 5")).unwrap();
    let pid = i32::try_from(s.process.pid()).unwrap();
    let exit = s.process.wait_timeout(Duration::from_secs(60));
    let exit = exit.unwrap_or_else(|| panic!("no exit seen for agent {pid}: the wait hung"));
    if exit.code == Some(5) {
        // Its owner reaped it: the other waitpid never had it.
        stop.store(true, Ordering::Relaxed);
        assert!(!reaped.lock().unwrap().contains(&pid));
    } else {
        // The other waitpid got there first (it records the pid just after).
        assert_eq!(exit, agent_process::Exit::default(), "{exit:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reaped.lock().unwrap().contains(&pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            reaped.lock().unwrap().contains(&pid),
            "an unknown status, yet nothing else reaped agent {pid}"
        );
    }
    assert!(s.process.has_exited());
}
