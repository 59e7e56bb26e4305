//! `agent-store-oci`: an [`agent_store::AgentStore`] on an OCI registry.
//!
//! Repository `{registry}/agents/{publisher}/{name}`, tag = version, a
//! single-layer ORAS-shaped artifact; digests verified. Configured by
//! `AGENT_REGISTRY` / `AGENT_REGISTRY_SCHEME`. Also publishes. (Implementation: issue #6.)
