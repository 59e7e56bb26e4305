//! agent-store-nix's integration tests, one binary, against the real `nix`.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod common;
mod kinds;
mod loads;
mod nix_store;
