//! `agent-store-nix`: an [`agent_store::AgentStore`] that realizes Nix flake outputs.
//!
//! Installable `{flake}#"agents-{kind}-{name}-{version}"` (quoted), built with
//! `nix build --no-link --json`. Configured by `AGENT_NIX_FLAKE`. (Implementation: issue #7.)
