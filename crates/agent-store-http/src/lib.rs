//! `agent-store-http`: an [`agent_store::AgentStore`] over plain HTTP(S).
//!
//! Layout: `{base}/{publisher}/{name}/{version}/service-{name}_{os}_{arch}`
//! with a required `.sha256` sidecar; versions from `{base}/{publisher}/{name}/versions`.
//! Configured by `AGENT_HTTP_STORE`. (Implementation: issue #5.)
