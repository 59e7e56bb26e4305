#![allow(dead_code, unreachable_pub)]
//! Test support: release tarballs, good and hostile. The GitHub stand-in is
//! `agent_testkit::github`.

pub mod archives;
