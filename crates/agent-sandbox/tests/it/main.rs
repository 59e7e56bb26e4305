//! agent-sandbox's integration tests, one binary: the sandbox on the real kernel.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod confinement;
mod vfork;
