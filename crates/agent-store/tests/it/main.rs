//! agent-store's integration tests, one binary: the installer, the cache, the
//! store chain, descriptors and signatures on real files.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod cache;
mod cache_check;
mod cache_query;
mod chain;
mod descriptor;
mod home_check;
mod installer;
mod trust;
