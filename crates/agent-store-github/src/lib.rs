//! `agent-store-github`: an [`agent_store::AgentStore`] on GitHub releases.
//!
//! Owner = publisher with `.` → `-`, repo `service-{name}`, tag `v{version}`,
//! asset `service-{name}_{version}_{os}_{arch}.tar.gz`, verified and safely
//! extracted. Configured by `GITHUB_API_URL` / `GITHUB_TOKEN`. (Implementation: issue #8.)
