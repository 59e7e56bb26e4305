//! agent-store-http's integration tests, one binary, against real HTTP(S)
//! servers on loopback.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod common;
mod http;
mod kinds;
mod signed;
mod tls;
