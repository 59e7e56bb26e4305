//! [`SpawnOptions`]: how to start an agent, built with chained setters over
//! private fields (so a setting can be added without breaking anyone).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exec::Admit;
use crate::logs::AgentLogs;
use crate::{Sandbox, StderrSink};

/// How to start an agent. [`SpawnOptions::new`] (or `Default`) gives the
/// documented defaults; each setter returns the options, so they chain:
///
/// ```
/// use std::time::Duration;
/// use agent_spawn::SpawnOptions;
///
/// let opts = SpawnOptions::new()
///     .grace(Duration::from_secs(5))
///     .env("RUST_LOG", "debug")
///     .arg("--verbose");
/// assert_eq!(opts.get_grace(), Duration::from_secs(5));
/// ```
///
/// `Debug` shows the names of the environment variables given, never their
/// values, and how many arguments, never the arguments.
#[derive(Clone)]
#[must_use]
pub struct SpawnOptions {
    pub(crate) startup_timeout: Duration,
    pub(crate) dial_timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) env_remove: Vec<OsString>,
    pub(crate) env_allowlist: Option<Vec<String>>,
    pub(crate) lifeline: bool,
    pub(crate) args: Vec<OsString>,
    pub(crate) stderr_sink: Option<StderrSink>,
    pub(crate) agent_logs: AgentLogs,
    pub(crate) log_name: Option<String>,
    pub(crate) unix_socket: bool,
    pub(crate) accepted_versions: Vec<u32>,
    pub(crate) admit: Option<Admit>,
    pub(crate) sandbox: Sandbox,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            startup_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            workdir: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            env_allowlist: None,
            lifeline: true,
            args: Vec::new(),
            stderr_sink: None,
            agent_logs: AgentLogs::default(),
            log_name: None,
            unix_socket: false,
            accepted_versions: vec![1, 2],
            admit: None,
            sandbox: Sandbox::Unconfined,
        }
    }
}

impl fmt::Debug for SpawnOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnOptions")
            .field("startup_timeout", &self.startup_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("grace", &self.grace)
            .field("workdir", &self.workdir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("env_remove", &self.env_remove)
            .field("env_allowlist", &self.env_allowlist)
            .field("lifeline", &self.lifeline)
            .field("args", &self.args.len())
            .field("stderr_sink", &self.stderr_sink.is_some())
            .field("agent_logs", &self.agent_logs)
            .field("log_name", &self.log_name)
            .field("unix_socket", &self.unix_socket)
            .field("accepted_versions", &self.accepted_versions)
            .field("admit", &self.admit.is_some())
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

impl SpawnOptions {
    /// The defaults: startup timeout 30 s, dial timeout 10 s, grace 30 s,
    /// the host's environment minus its secrets, the lifeline, loopback TCP,
    /// protocols 1 and 2, parsed agent logs, unconfined.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time allowed for the handshake line (default 30 s).
    #[doc(alias = "WithStartupTimeout")]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Time allowed, after the handshake, to connect and see SERVING (default 10 s).
    #[doc(alias = "WithDialTimeout")]
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Time `close` gives the agent between SIGTERM and SIGKILL (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Work directory: the agent's current directory and `CODEFLY_AGENT_WORKDIR`.
    #[doc(alias = "WithWorkDir")]
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// One more environment variable for the agent. It wins over the
    /// inherited environment (a host secret given here explicitly is
    /// passed); the `CODEFLY_AGENT_*` variables the host sets always win
    /// over it.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Several more environment variables, as [`env`](Self::env).
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Remove one more variable from the inherited environment (allowlisted
    /// or not), on top of [`HOST_SECRET_ENV`](agent_protocol::HOST_SECRET_ENV),
    /// which is always removed.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        let key = key.into();
        if !self.env_remove.contains(&key) {
            self.env_remove.push(key);
        }
        self
    }

    /// Start from an empty environment and keep only
    /// [`DEFAULT_ENV_ALLOWLIST`](agent_protocol::DEFAULT_ENV_ALLOWLIST) plus
    /// `extra` (patterns: exact names, or a prefix and `*`). Without it the
    /// agent inherits the host's environment minus the secrets.
    pub fn env_allowlist<I, S>(mut self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env_allowlist = Some(extra.into_iter().map(Into::into).collect());
        self
    }

    /// Give the agent the host's lifeline (`CODEFLY_AGENT_LIFELINE=FD`, default true).
    pub fn lifeline(mut self, on: bool) -> Self {
        self.lifeline = on;
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Several more command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Receive a live copy of the agent's stderr, chunk by chunk (see
    /// [`StderrSink`]): called from the agent's I/O thread, never on an
    /// async worker. Replaces a sink set before.
    #[doc(alias = "WithLogWriter")]
    pub fn stderr_sink(mut self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.stderr_sink = Some(Arc::new(sink));
        self
    }

    /// What the agent's stderr lines become in the host's `tracing` (default
    /// [`AgentLogs::Parsed`]); unless `Off`, the agent is asked for JSON lines
    /// (`CODEFLY_AGENT_LOG=json`).
    pub fn agent_logs(mut self, logs: AgentLogs) -> Self {
        self.agent_logs = logs;
        self
    }

    /// The agent's name in its log span (default: the program's file name).
    pub fn log_name(mut self, name: impl Into<String>) -> Self {
        self.log_name = Some(name.into());
        self
    }

    /// Ask the agent to listen on a unix socket in a private 0700 directory
    /// (default false: loopback TCP). A handshake naming any other socket
    /// path is then refused.
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = on;
        self
    }

    /// Protocol versions this host accepts (default 1 and 2).
    pub fn accepted_versions(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        self.accepted_versions = versions.into_iter().collect();
        self
    }

    /// The admission check every start goes through, supervised restarts
    /// included: it returns the checked file to execute, or refuses (see
    /// [`Admit`]). Without one, each start opens the program path itself.
    pub fn admit(mut self, admit: Admit) -> Self {
        self.admit = Some(admit);
        self
    }

    /// How the agent is confined (default [`Sandbox::Unconfined`]). A policy
    /// is prepared again for every start, restarts included; one this machine
    /// cannot enforce is `admission` and nothing starts. The agent gets a
    /// private `TMPDIR`, removed once it is reaped; with `network = "none"` it
    /// lives in an empty network namespace, so the host talks to it over a
    /// unix socket whatever [`unix_socket`](Self::unix_socket) says. On macOS
    /// the agent runs under `sandbox-exec`, which is started by path: there the
    /// descriptor that was checked is not the one executed.
    #[doc(alias = "WithSandbox")]
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The dial timeout these options give.
    #[must_use]
    pub fn get_dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// The grace period these options give.
    #[must_use]
    pub fn get_grace(&self) -> Duration {
        self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = SpawnOptions::default();
        assert_eq!(o.startup_timeout, Duration::from_secs(30));
        assert_eq!(o.dial_timeout, Duration::from_secs(10));
        assert_eq!(o.grace, Duration::from_secs(30));
        assert_eq!(o.accepted_versions, [1, 2]);
        assert!(!o.unix_socket && o.stderr_sink.is_none() && o.workdir.is_none());
        assert!(o.lifeline && o.env_allowlist.is_none() && o.env_remove.is_empty());
    }

    #[test]
    fn setters_append_env_and_args_and_replace_the_rest() {
        let o = SpawnOptions::new()
            .env("A", "1")
            .envs([("B", "2"), ("C", "3")])
            .arg("x")
            .args(["y", "z"])
            .env_remove("D")
            .env_remove("D")
            .grace(Duration::from_secs(1))
            .grace(Duration::from_secs(2));
        let names: Vec<_> = o.env.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(o.args, ["x", "y", "z"]);
        assert_eq!(o.env_remove, ["D"]);
        assert_eq!(o.get_grace(), Duration::from_secs(2));
    }

    #[test]
    fn debug_names_variables_but_never_shows_values_or_arguments() {
        let o = SpawnOptions::new()
            .env("API_TOKEN", "hunter2-secret")
            .arg("--password=swordfish");
        let shown = format!("{o:?}");
        assert!(shown.contains("API_TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
    }
}
