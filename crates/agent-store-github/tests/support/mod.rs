#![allow(dead_code, missing_docs, unreachable_pub)]
//! Test support: `FakeGitHub` (the stand-in for api.github.com) and tarball builders.

pub mod archives;
pub mod fake_github;
