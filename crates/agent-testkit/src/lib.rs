//! `agent-testkit`: test support shared by the workspace (not published).
//!
//! Misbehaving agent binaries, a local OCI registry, process checks.

pub mod registry;
