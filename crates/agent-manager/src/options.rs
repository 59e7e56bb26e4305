//! [`LoadOptions`]: what one load sets on top of the manager's defaults.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_sandbox::Sandbox;
use agent_spawn::{AgentLogs, RestartPolicy, SpawnOptions};
use agent_store::VerifyMode;

/// One change to the spawn options, applied when the load spawns.
type Apply = Arc<dyn Fn(SpawnOptions) -> SpawnOptions + Send + Sync>;

/// A spawn setting given to [`LoadOptions`]: the change, and what `Debug`
/// shows of it (never a variable's value or an argument).
#[derive(Clone)]
struct SpawnSetting {
    shown: String,
    apply: Apply,
}

/// How to load: the settings of one load, or (given to
/// [`ManagerBuilder::load_defaults`](crate::ManagerBuilder::load_defaults))
/// the defaults of every load.
///
/// A load's options apply on top of the manager's defaults, which apply on
/// top of [`SpawnOptions::new`]: what a load sets wins, its environment
/// variables, arguments and removed variables are added to the defaults'.
/// The spawn settings ([`startup_timeout`](Self::startup_timeout),
/// [`env`](Self::env), …, or any [`SpawnOptions`] setter through
/// [`spawn_options`](Self::spawn_options)) are [`SpawnOptions`]' own; the
/// others ([`managed`](Self::managed), [`verify`](Self::verify),
/// [`restart`](Self::restart), [`sandbox`](Self::sandbox)) are the
/// manager's. `Clone` is cheap (a stderr sink is shared).
///
/// `Debug` names the settings given and the environment variables, never a
/// variable's value or an argument.
#[doc(alias = "LoadOption")]
#[derive(Default, Clone)]
#[must_use]
pub struct LoadOptions {
    spawn: Vec<SpawnSetting>,
    managed: Option<bool>,
    verify: Option<VerifyMode>,
    restart: Option<RestartPolicy>,
    sandbox: Option<Sandbox>,
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field(
                "spawn",
                &self.spawn.iter().map(|s| &s.shown).collect::<Vec<_>>(),
            )
            .field("managed", &self.managed)
            .field("verify", &self.verify)
            .field("restart", &self.restart)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

impl LoadOptions {
    /// Nothing set: the manager's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(
        mut self,
        shown: String,
        apply: impl Fn(SpawnOptions) -> SpawnOptions + Send + Sync + 'static,
    ) -> Self {
        self.spawn.push(SpawnSetting {
            shown,
            apply: Arc::new(apply),
        });
        self
    }

    /// How long to wait for the handshake line (default 30 s).
    #[doc(alias = "WithStartupTimeout")]
    pub fn startup_timeout(self, d: Duration) -> Self {
        self.with(format!("startup_timeout {d:?}"), move |o| {
            o.startup_timeout(d)
        })
    }

    /// How long to wait for the gRPC connection and health (default 10 s);
    /// also how long an attach (`CODEFLY_AGENT_ATTACH`) waits.
    #[doc(alias = "WithDialTimeout")]
    pub fn dial_timeout(self, d: Duration) -> Self {
        self.with(format!("dial_timeout {d:?}"), move |o| o.dial_timeout(d))
    }

    /// How long `close` waits after SIGTERM before SIGKILL (default 30 s).
    pub fn grace(self, d: Duration) -> Self {
        self.with(format!("grace {d:?}"), move |o| o.grace(d))
    }

    /// The agent's working directory, exported as `CODEFLY_AGENT_WORKDIR`.
    #[doc(alias = "WithWorkDir")]
    pub fn workdir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.with(format!("workdir {}", dir.display()), move |o| {
            o.workdir(dir.clone())
        })
    }

    /// One more environment variable for the agent (added to the defaults').
    /// An explicit variable is given even when it is a credential's name.
    #[doc(alias = "WithEnv")]
    pub fn env(self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.with(format!("env {}", key.to_string_lossy()), move |o| {
            o.env(key.clone(), value.clone())
        })
    }

    /// One more command-line argument for the agent (added to the defaults').
    pub fn arg(self, arg: impl Into<OsString>) -> Self {
        let arg = arg.into();
        self.with("arg".to_owned(), move |o| o.arg(arg.clone()))
    }

    /// Tee the agent's stderr to `sink` as it arrives: called from a plain
    /// thread, never on an async worker, with each chunk read (not split
    /// into lines). Given to the manager's defaults, one sink receives every
    /// agent's stderr; a load's own sink replaces it for that load.
    #[doc(alias = "WithLogWriter")]
    pub fn stderr_sink(self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        let sink: agent_spawn::StderrSink = Arc::new(sink);
        self.with("stderr_sink".to_owned(), move |o| {
            let sink = Arc::clone(&sink);
            o.stderr_sink(move |chunk| sink(chunk))
        })
    }

    /// Serve on a unix socket in a private directory instead of loopback TCP.
    #[doc(alias = "WithUDS")]
    pub fn unix_socket(self, on: bool) -> Self {
        self.with(format!("unix_socket {on}"), move |o| o.unix_socket(on))
    }

    /// Clear the agent's environment down to an allowlist: `PATH`, `HOME`,
    /// `USER`, `LANG`, `LC_*`, `TZ`, `TMPDIR`, `TERM`, `OTEL_*`, plus `extra`
    /// (a trailing `*` matches a prefix). The `CODEFLY_AGENT_*` variables and
    /// those given with [`LoadOptions::env`] are always set.
    pub fn env_allowlist<I, S>(self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let extra: Vec<String> = extra.into_iter().map(Into::into).collect();
        self.with(format!("env_allowlist {extra:?}"), move |o| {
            o.env_allowlist(extra.clone())
        })
    }

    /// Remove one more inherited variable from the agent's environment (on
    /// top of the store credentials, which are always removed).
    pub fn env_remove(self, key: impl Into<OsString>) -> Self {
        let key = key.into();
        self.with(format!("env_remove {}", key.to_string_lossy()), move |o| {
            o.env_remove(key.clone())
        })
    }

    /// What the agent's stderr lines become in the host's `tracing`
    /// (default [`AgentLogs::Parsed`]).
    pub fn agent_logs(self, logs: AgentLogs) -> Self {
        self.with(format!("agent_logs {}", logs.as_str()), move |o| {
            o.agent_logs(logs)
        })
    }

    /// Any other [`SpawnOptions`] setting, applied in order with the
    /// settings above (`|o| o.lifeline(false)`). The admission check and the
    /// sandbox are the manager's: set the sandbox with
    /// [`sandbox`](Self::sandbox).
    pub fn spawn_options(
        self,
        apply: impl Fn(SpawnOptions) -> SpawnOptions + Send + Sync + 'static,
    ) -> Self {
        self.with("spawn_options(..)".to_owned(), apply)
    }

    /// Let the manager's registry own the agent (go-plugin's `Managed`): it
    /// then runs until [`AgentConn::close`](crate::AgentConn::close),
    /// [`Manager::cleanup`](crate::Manager::cleanup) /
    /// [`Manager::cleanup_all`](crate::Manager::cleanup_all), its own exit,
    /// or the manager being dropped, even after every handle the app held is
    /// gone. Default `false`: the agent dies with the last handle the app
    /// holds (the registry only lists it and can still close it).
    #[doc(alias = "Managed")]
    pub fn managed(mut self, on: bool) -> Self {
        self.managed = Some(on);
        self
    }

    /// How the cached binary is checked before it runs: by its file
    /// identity (default, one `stat`) or by hashing it every time
    /// (`[cache] verify = "always"`).
    pub fn verify(mut self, mode: VerifyMode) -> Self {
        self.verify = Some(mode);
        self
    }

    /// Restart the agent when it exits, as `policy` says (default never):
    /// the returned connection and its channel follow the restarts (see
    /// [`agent_spawn::supervise`]).
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = Some(policy);
        self
    }

    /// How the agent is confined, over the configuration's policy: a
    /// [`Sandbox::policy`], or [`Sandbox::unconfined`] as the explicit
    /// opt-out. A policy this machine cannot enforce is `admission`, nothing started.
    #[doc(alias = "WithSandbox")]
    #[doc(alias = "WithoutSandbox")]
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// `self` on top of `defaults`: the settings set here win, the spawn
    /// settings apply after the defaults' (so variables and arguments add up).
    pub(crate) fn over(self, defaults: &LoadOptions) -> LoadOptions {
        let mut spawn = defaults.spawn.clone();
        spawn.extend(self.spawn);
        LoadOptions {
            spawn,
            managed: self.managed.or(defaults.managed),
            verify: self.verify.or(defaults.verify),
            restart: self.restart.or(defaults.restart),
            sandbox: self.sandbox.or_else(|| defaults.sandbox.clone()),
        }
    }

    /// Whether the registry owns the agent.
    pub(crate) fn is_managed(&self) -> bool {
        self.managed.unwrap_or(false)
    }

    /// How the cached binary is checked, when set.
    pub(crate) fn verify_mode(&self) -> Option<VerifyMode> {
        self.verify
    }

    /// The restart policy (default never).
    pub(crate) fn restart_policy(&self) -> RestartPolicy {
        self.restart.unwrap_or_default()
    }

    /// The sandbox asked for, when set.
    pub(crate) fn sandbox_asked(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// The spawn options: [`SpawnOptions::new`] with the spawn settings
    /// applied in order; the store credentials are removed from the
    /// inherited environment.
    pub(crate) fn to_spawn_options(&self) -> SpawnOptions {
        let o = self
            .spawn
            .iter()
            .fold(SpawnOptions::new(), |o, s| (s.apply)(o));
        agent_protocol::HOST_SECRET_ENV
            .iter()
            .fold(o, |o, name| o.env_remove(*name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_load_wins_over_the_defaults_and_adds_to_their_environment() {
        let defaults = LoadOptions::new()
            .grace(Duration::from_secs(1))
            .dial_timeout(Duration::from_secs(7))
            .env("A", "1")
            .managed(true);
        let load = LoadOptions::new()
            .grace(Duration::from_secs(2))
            .env("B", "2")
            .over(&defaults);
        let o = load.to_spawn_options();
        assert_eq!(o.get_grace(), Duration::from_secs(2));
        assert_eq!(o.get_dial_timeout(), Duration::from_secs(7));
        assert!(load.is_managed());
        let shown = format!("{o:?}");
        assert!(
            shown.contains("\"A\"") && shown.contains("\"B\""),
            "{shown}"
        );
        for secret in agent_protocol::HOST_SECRET_ENV {
            assert!(shown.contains(secret), "{secret} not removed: {shown}");
        }
    }

    #[test]
    fn debug_never_shows_a_value_or_an_argument() {
        let o = LoadOptions::new()
            .env("API_TOKEN", "hunter2-secret")
            .arg("--password=swordfish");
        let shown = format!("{o:?}");
        assert!(shown.contains("API_TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
    }
}
