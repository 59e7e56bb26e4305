//! Attach to agents that are already running (go-plugin's `ReattachConfig`,
//! Terraform's `TF_REATTACH_PROVIDERS`): [`Manager::attach`], and
//! `CODEFLY_AGENT_ATTACH`, which makes [`Manager::load`] attach instead of
//! spawning for the agents it lists — for running an agent under a debugger.
//! The variable is read with the rest of the environment
//! ([`EnvConfig`](crate::EnvConfig)), when the manager is built from it.
//!
//! ```text
//! CODEFLY_AGENT_ATTACH='{"acme/echo": {"pid": 4242, "endpoint": "127.0.0.1:50051", "token": "…"}}'
//! ```
//!
//! Keys are `publisher/name` (any version) or `publisher/name:version` (that
//! version only); values are what `agentctl load --hold --json` prints. An
//! attached agent gets the same readiness check as a spawned one; it is never
//! spawned, never signalled, and closing it only drops the channel.

use std::time::Duration;

use agent_ref::{AgentRef, VersionSpec};
use agent_spawn::{AgentConn, AttachInfo};
use tracing::{Instrument, info_span};

use crate::{ConfigError, Manager, ManagerError};

/// The variable listing agents to attach to instead of spawning.
pub const ATTACH_ENV: &str = "CODEFLY_AGENT_ATTACH";

/// How long an attach waits for the connection and health SERVING unless told.
pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

const ACCEPTED: &str = r#"a JSON object {"publisher/name": {"pid": N, "endpoint": "127.0.0.1:PORT" | "unix:/path", "token": "…"}}"#;

impl Manager {
    /// Connects to the running agent `info` describes (health checked, the
    /// token sent on every call) and lists it under `agent.unique()` like a
    /// loaded agent. Nothing is spawned; closing it (or
    /// [`Manager::cleanup`]) only drops the channel: the process keeps running.
    ///
    /// # Errors
    /// `dial-timeout`, `not-serving`, or `agent-exited` when `info.pid` names
    /// no running process.
    pub async fn attach(
        &self,
        agent: &AgentRef,
        info: AttachInfo,
    ) -> Result<AgentConn, ManagerError> {
        self.attach_within(agent, info, DEFAULT_ATTACH_TIMEOUT)
            .await
    }

    /// [`Manager::attach`] with an explicit dial timeout.
    ///
    /// # Errors
    /// As [`Manager::attach`].
    pub async fn attach_within(
        &self,
        agent: &AgentRef,
        info: AttachInfo,
        dial_timeout: Duration,
    ) -> Result<AgentConn, ManagerError> {
        let span = info_span!("attach", agent = %agent, endpoint = %info.endpoint);
        async {
            let conn = agent_spawn::attach(info, dial_timeout).await?;
            self.register(agent.unique(), &conn, false);
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// The hook of [`Manager::load`]: attaches when `CODEFLY_AGENT_ATTACH`
    /// (as the manager's environment gave it) lists `agent`, else `None`
    /// (load spawns as usual).
    ///
    /// # Errors
    /// `config` when the variable does not parse; those of [`Manager::attach`].
    pub(crate) async fn attach_if_listed(
        &self,
        agent: &AgentRef,
        dial_timeout: Duration,
    ) -> Result<Option<AgentConn>, ManagerError> {
        let Some(value) = self.inner.attach.as_deref() else {
            return Ok(None);
        };
        let Some(info) = listed(value, agent)? else {
            return Ok(None);
        };
        tracing::info!(agent = %agent, endpoint = %info.endpoint, "{ATTACH_ENV} lists the agent: attaching instead of spawning");
        self.attach_within(agent, info, dial_timeout)
            .await
            .map(Some)
    }
}

/// The entry of a `CODEFLY_AGENT_ATTACH` value for `agent`, if any.
///
/// # Errors
/// `config` naming the variable when the value or a key does not parse.
pub(crate) fn listed(value: &str, agent: &AgentRef) -> Result<Option<AttachInfo>, ManagerError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let bad = |message: String| {
        ManagerError::Config(ConfigError::var(ATTACH_ENV, message, ACCEPTED.to_owned()))
    };
    let entries = AttachInfo::parse_map(value).map_err(|e| bad(e.message))?;
    for (key, info) in entries {
        let listed = AgentRef::parse(&key).map_err(|e| bad(format!("key {key:?}: {e}")))?;
        if listed.publisher() != agent.publisher() || listed.name() != agent.name() {
            continue;
        }
        let version_ok = match listed.version_spec() {
            VersionSpec::Latest => true,
            spec => spec == agent.version_spec(),
        };
        if version_ok {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use agent_echo::pb::EchoRequest;
    use agent_echo::pb::echo_client::EchoClient;
    use agent_ref::{AgentHome, ErrorKind};

    fn r(s: &str) -> AgentRef {
        AgentRef::parse(s).unwrap()
    }

    #[test]
    fn the_variable_lists_agents_by_publisher_name_and_version() {
        let v = r#"{"acme/echo": {"pid": 42, "endpoint": "127.0.0.1:5000", "token": "t"},
                    "acme/other:1.2.3": {"endpoint": "unix:/tmp/o.sock"}}"#;
        let hit = listed(v, &r("acme/echo:2.0.0")).unwrap().unwrap();
        assert_eq!(hit.pid, Some(42));
        assert_eq!(hit.token, "t");
        assert!(listed(v, &r("acme/echo")).unwrap().is_some());
        assert!(listed(v, &r("acme/other:1.2.3")).unwrap().is_some());
        assert!(listed(v, &r("acme/other:1.2.4")).unwrap().is_none());
        assert!(listed(v, &r("other/echo")).unwrap().is_none());
        assert!(listed("", &r("acme/echo")).unwrap().is_none());
    }

    #[test]
    fn a_bad_variable_is_a_config_error_naming_it() {
        for bad in [
            "not json",
            r#"{"acme/echo": {"endpoint": "10.1.2.3:80"}}"#,
            r#"{"acme/echo": {"endpoint": "127.0.0.1:80", "port": 1}}"#,
            r#"{"../x": {"endpoint": "127.0.0.1:80"}}"#,
        ] {
            let e = listed(bad, &r("acme/echo")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}: {e}");
            assert!(e.to_string().contains(ATTACH_ENV), "{bad}: {e}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_lists_the_agent_and_cleanup_leaves_it_running() {
        let home = tempfile::tempdir().unwrap();
        let manager = Manager::builder()
            .home(AgentHome::new(home.path()))
            .stores(Vec::new())
            .build()
            .unwrap();
        let owner = agent_spawn::spawn(
            &agent_testkit::bin_path("agent-echo"),
            agent_spawn::SpawnOptions::default(),
        )
        .await
        .unwrap();
        let pid = owner.pid();
        let agent = r("acme/echo");
        let conn = manager.attach(&agent, owner.attach_info()).await.unwrap();
        let reply = EchoClient::new(conn.channel())
            .echo(EchoRequest {
                message: "attached".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "attached");
        assert!(
            manager
                .active()
                .iter()
                .any(|a| a.unique == agent.unique() && a.pid == pid),
            "{:?}",
            manager.active()
        );
        manager.cleanup_all().await;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            agent_testkit::pid_alive(pid),
            "cleanup killed an attached agent"
        );
        owner.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn load_attaches_to_what_the_variable_lists() {
        let home = tempfile::tempdir().unwrap();
        let owner = agent_spawn::spawn(
            &agent_testkit::bin_path("agent-echo"),
            agent_spawn::SpawnOptions::default(),
        )
        .await
        .unwrap();
        let value = format!(
            r#"{{"h7test/attach-only": {}}}"#,
            owner.attach_info().to_json()
        );
        let env = crate::EnvConfig::from_lookup(|k| match k {
            ATTACH_ENV => Some(value.clone().into()),
            "CODEFLY_HOME" => Some(home.path().as_os_str().to_owned()),
            _ => None,
        })
        .unwrap();
        // No store: without the variable this load could only fail.
        let manager = Manager::builder()
            .env_config(env)
            .stores(Vec::new())
            .build()
            .unwrap();
        let conn = manager.load(&r("h7test/attach-only")).await.unwrap();
        assert!(conn.is_attached());
        assert_eq!(conn.pid(), owner.pid());
        let reply = EchoClient::new(conn.channel())
            .echo(EchoRequest {
                message: "via load".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "via load");
        manager.cleanup_all().await;
        assert!(agent_testkit::pid_alive(owner.pid()));
        owner.close().await;
    }

    /// Not attach, but wired beside it in this crate: `LoadOptions::restart`.
    /// The registry keeps a supervised agent across its restarts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_with_restart_survives_a_crash_and_stays_listed() {
        let home = tempfile::tempdir().unwrap();
        let manager = Manager::builder()
            .home(AgentHome::new(home.path()))
            .stores(Vec::new())
            .build()
            .unwrap();
        let path = agent_testkit::bin_path("agent-echo");
        let conn = manager
            .load_path_with(
                &path,
                crate::LoadOptions::new().restart(agent_spawn::RestartPolicy::on_failure()),
            )
            .await
            .unwrap();
        let mut events = conn.events();
        let mut client = EchoClient::new(conn.channel());
        let first = conn.pid();
        #[allow(unsafe_code)]
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(i32::try_from(first).unwrap(), libc::SIGKILL) };
        assert_eq!(rc, 0);
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let agent_spawn::AgentEvent::Started { .. } = events.recv().await.unwrap() {
                    return;
                }
            }
        })
        .await
        .expect("restarted");
        let reply = client
            .echo(EchoRequest {
                message: "after the crash".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "after the crash");
        assert_ne!(conn.pid(), first);
        assert_eq!(manager.active().len(), 1, "{:?}", manager.active());
        assert_eq!(manager.cleanup_all().await, 1);
        assert!(agent_testkit::wait_pid_gone(
            conn.pid(),
            Duration::from_secs(30)
        ));
    }
}
