#![allow(dead_code, missing_docs, unreachable_pub)]
//! Test support: release tarballs, good and hostile. The GitHub stand-in is
//! `agent_testkit::github`.

pub mod archives;
