//! agent-spawn's integration tests, one binary: real agent processes spawned,
//! supervised, attached and killed. The tests that change process-wide state or
//! measure the whole process (`agent_logs`, `isolation`, `stale_sockets`,
//! `stderr_flood`) are binaries of their own.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod admission;
mod agents;
mod attach;
mod exited_port;
mod host_death;
mod pid_reuse;
mod restart;
mod sandbox;
mod shared_io;
mod support;
