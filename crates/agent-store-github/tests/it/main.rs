//! agent-store-github's integration tests, one binary, against `FakeGitHub`.
//! `from_env` sets process environment variables and is a binary of its own.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod github;
mod kinds;
mod probe;
mod signed;
mod support;
