//! [`LoadOptions`]: what one load sets on top of the manager's defaults.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_spawn::SpawnOptions;
use agent_store::VerifyMode;

/// The agent's stderr, as it arrives: called from a plain thread, never on
/// an async worker, with each chunk read (not split into lines).
pub use agent_spawn::StderrSink;

/// Per-load settings on top of the manager's defaults.
/// Unset fields keep the default; `Clone` (the sink is shared).
#[doc(alias = "LoadOption")]
#[derive(Default, Clone)]
#[must_use]
pub struct LoadOptions {
    startup_timeout: Option<Duration>,
    dial_timeout: Option<Duration>,
    grace: Option<Duration>,
    workdir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    stderr_sink: Option<StderrSink>,
    unix_socket: Option<bool>,
    env_allowlist: Option<Vec<String>>,
    env_remove: Vec<OsString>,
    managed: Option<bool>,
    verify: Option<VerifyMode>,
    restart: Option<agent_spawn::RestartPolicy>,
    sandbox: Option<agent_sandbox::Sandbox>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("startup_timeout", &self.startup_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("grace", &self.grace)
            .field("workdir", &self.workdir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("args", &self.args)
            .field("stderr_sink", &self.stderr_sink.is_some())
            .field("unix_socket", &self.unix_socket)
            .field("env_allowlist", &self.env_allowlist)
            .field("env_remove", &self.env_remove)
            .field("managed", &self.managed)
            .field("verify", &self.verify)
            .field("restart", &self.restart)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

impl LoadOptions {
    /// Defaults of the manager.
    pub fn new() -> Self {
        Self::default()
    }
    /// How long to wait for the handshake line.
    #[doc(alias = "WithStartupTimeout")]
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = Some(d);
        self
    }
    /// How long to wait for the gRPC connection and health.
    #[doc(alias = "WithDialTimeout")]
    pub fn dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = Some(d);
        self
    }
    /// How long `close` waits after SIGTERM before SIGKILL.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = Some(d);
        self
    }
    /// The agent's working directory, exported as `CODEFLY_AGENT_WORKDIR`.
    #[doc(alias = "WithWorkDir")]
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    /// One more environment variable for the agent (added to the defaults).
    /// An explicit variable is given even when it is a credential's name.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// One more command-line argument for the agent (added to the defaults).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
    /// Tee the agent's stderr to `sink` as it arrives.
    /// Called from a plain thread with each chunk read.
    #[doc(alias = "WithLogWriter")]
    pub fn stderr_sink(mut self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.stderr_sink = Some(Arc::new(sink));
        self
    }
    /// As [`LoadOptions::stderr_sink`], with a sink already shared.
    pub fn stderr_sink_arc(mut self, sink: StderrSink) -> Self {
        self.stderr_sink = Some(sink);
        self
    }
    /// Serve on a unix socket in a private directory instead of loopback TCP.
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = Some(on);
        self
    }
    /// Clear the agent's environment down to an allowlist: `PATH`, `HOME`,
    /// `USER`, `LANG`, `LC_*`, `TZ`, `TMPDIR`, `TERM`, `OTEL_*`, plus `extra`
    /// (a trailing `*` matches a prefix). The `CODEFLY_AGENT_*` variables and
    /// those given with [`LoadOptions::env`] are always set.
    pub fn env_allowlist<I, S>(mut self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env_allowlist = Some(extra.into_iter().map(Into::into).collect());
        self
    }
    /// Remove one more inherited variable from the agent's environment (on
    /// top of the store credentials, which are always removed).
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }
    /// Let the manager's registry own the agent (go-plugin's `Managed`): it
    /// then runs until [`AgentConn::close`], [`Manager::cleanup`] /
    /// [`Manager::cleanup_all`], its own exit, or the manager being dropped,
    /// even after every handle the app held is gone. Default `false`: the
    /// agent dies with the last handle the app holds (the registry only
    /// lists it and can still close it).
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
    pub fn restart(mut self, policy: agent_spawn::RestartPolicy) -> Self {
        self.restart = Some(policy);
        self
    }

    /// How the agent is confined, over the configuration's policy: a
    /// [`Sandbox::policy`](agent_sandbox::Sandbox::policy), or
    /// [`Sandbox::unconfined`](agent_sandbox::Sandbox::unconfined) as the explicit
    /// opt-out. A policy this machine cannot enforce is `admission`, nothing started.
    #[doc(alias = "WithSandbox")]
    #[doc(alias = "WithoutSandbox")]
    pub fn sandbox(mut self, sandbox: agent_sandbox::Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// `self` on top of `d` (the manager's defaults): set fields win, env and args are appended.
    pub(crate) fn over(self, d: &LoadOptions) -> LoadOptions {
        let mut env = d.env.clone();
        env.extend(self.env);
        let mut args = d.args.clone();
        args.extend(self.args);
        let mut env_remove = d.env_remove.clone();
        env_remove.extend(self.env_remove);
        LoadOptions {
            startup_timeout: self.startup_timeout.or(d.startup_timeout),
            dial_timeout: self.dial_timeout.or(d.dial_timeout),
            grace: self.grace.or(d.grace),
            workdir: self.workdir.or_else(|| d.workdir.clone()),
            env,
            args,
            stderr_sink: self.stderr_sink.or_else(|| d.stderr_sink.clone()),
            unix_socket: self.unix_socket.or(d.unix_socket),
            env_allowlist: self.env_allowlist.or_else(|| d.env_allowlist.clone()),
            env_remove,
            managed: self.managed.or(d.managed),
            verify: self.verify.or(d.verify),
            restart: self.restart.or(d.restart),
            sandbox: self.sandbox.or_else(|| d.sandbox.clone()),
        }
    }

    /// The spawn options: `base` (the builder's `spawn_options`) with the
    /// fields set here on top (env and args appended); the store credentials
    /// are removed from the inherited environment.
    pub(crate) fn into_spawn(self, base: &SpawnOptions) -> SpawnOptions {
        let mut o = base.clone();
        if let Some(d) = self.startup_timeout {
            o.startup_timeout = d;
        }
        if let Some(d) = self.dial_timeout {
            o.dial_timeout = d;
        }
        if let Some(d) = self.grace {
            o.grace = d;
        }
        if self.workdir.is_some() {
            o.workdir = self.workdir;
        }
        o.env.extend(self.env);
        o.args.extend(self.args);
        if self.stderr_sink.is_some() {
            o.stderr_sink = self.stderr_sink;
        }
        o.unix_socket = self.unix_socket.unwrap_or(o.unix_socket);
        if self.env_allowlist.is_some() {
            o.env_allowlist = self.env_allowlist;
        }
        if let Some(sandbox) = self.sandbox {
            o.sandbox = sandbox;
        }
        for v in credential_env().into_iter().chain(self.env_remove) {
            if !o.env_remove.contains(&v) {
                o.env_remove.push(v);
            }
        }
        o
    }
}

/// The inherited variables that carry store credentials, never given to an
/// agent: agent-spawn always strips `HOST_SECRET_ENV`; naming them here too
/// keeps the facade's guarantee visible in one place, whatever the lower crate.
fn credential_env() -> Vec<OsString> {
    agent_protocol::HOST_SECRET_ENV
        .iter()
        .map(OsString::from)
        .collect()
}
