//! agent-store-oci's integration tests, one binary, against a real registry.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod kinds;
mod registry;
mod signed;
