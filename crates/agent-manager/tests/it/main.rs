//! agent-manager's integration tests, one binary: its feature graph and the
//! lock file's properties.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod features;
mod lock_props;
