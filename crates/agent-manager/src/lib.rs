//! `agent-manager`: the facade apps depend on.
//!
//! `Manager::builder()…build()`, then `resolve`, `pull`, `load` → `AgentConn`.
//! Re-exports the lower crates under short names. (Implementation: issue #4.)
