//! A host that sets SIGCHLD to `SIG_IGN` makes the kernel reap its children
//! the moment they exit, agents included. Waiting for such an agent must end
//! when it exits (with its status unknown, where the kernel kept none), not
//! at the waiter's timeout. Process-wide (it ignores SIGCHLD), hence a test
//! binary of its own; both backends.

#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use agent_process::spawn_in_group_blocking;

#[test]
fn waiting_for_an_agent_ends_when_it_exits_though_the_host_ignores_sigchld() {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let s = spawn_in_group_blocking(common::sh("sleep 0.2; exit 7")).unwrap();
    let t = Instant::now();
    let exit = s.process.wait_timeout(Duration::from_secs(60));
    assert!(
        exit.is_some(),
        "no exit seen after {:?}: the wait hung",
        t.elapsed()
    );
    let exit = exit.unwrap();
    assert!(
        exit.code.is_none_or(|c| c == 7) && exit.signal.is_none(),
        "{exit:?}"
    );
    assert!(s.process.has_exited());
}
