//! Workspace tests, one binary: `agentctl` end to end and the facade across
//! crates, with real agents, stores and tools.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod adopt;
mod cli;
mod cli_doctor;
mod cli_escape;
mod cli_ops;
mod cli_sign;
mod common;
mod faults;
mod kinds;
mod manager;
mod props;
mod sandbox;
mod stores;
mod trust_files;
mod trust_nix;
