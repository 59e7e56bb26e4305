//! What every command sees: the global flags, and the managers and refs
//! built from them.

use std::path::{Path, PathBuf};

use agent_manager::reference::{AgentHome, AgentKind, AgentRef, AgentSource};
use agent_manager::{Manager, ManagerBuilder};

use crate::cli::Cli;
use crate::commands::load::{AgentLogsMode, SpawnArgs};
use crate::report::Failure;

/// Global settings every command sees.
pub(crate) struct Ctx {
    pub(crate) home: Option<PathBuf>,
    pub(crate) kind: Option<AgentKind>,
    pub(crate) local: bool,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) lockfile: Option<PathBuf>,
    pub(crate) locked: bool,
    #[allow(dead_code)]
    pub(crate) verbose: u8,
}

impl Ctx {
    /// The global flags of `cli`.
    pub(crate) fn of(cli: &Cli) -> Self {
        Ctx {
            home: cli.home.clone(),
            kind: cli.kind,
            local: cli.local,
            json: cli.json,
            quiet: cli.quiet,
            lockfile: cli.lockfile.clone(),
            locked: cli.locked,
            verbose: cli.verbose,
        }
    }

    /// Progress and summaries on stderr only for a person watching.
    pub(crate) fn chatty(&self) -> bool {
        !self.json && !self.quiet
    }

    pub(crate) fn home(&self) -> Result<AgentHome, Failure> {
        match &self.home {
            Some(h) => Ok(AgentHome::new(absolute(h)?)),
            None => Ok(agent_manager::EnvConfig::from_env()?.home),
        }
    }

    /// The builder every command starts from: environment, config file,
    /// `--home`, `--local`.
    fn builder(&self, refresh: bool) -> Result<ManagerBuilder, Failure> {
        let mut b = Manager::builder()
            .env_config(agent_manager::EnvConfig::from_env()?)
            .refresh(refresh);
        if self.home.is_some() {
            b = b.home(self.home()?);
        }
        if self.local {
            b = b.source(AgentSource::Local);
        }
        Ok(b)
    }

    /// The manager, honouring the lock file (`--lockfile`, the variable, or
    /// `./agents.lock`) and `--locked`.
    pub(crate) fn manager(&self, refresh: bool) -> Result<Manager, Failure> {
        self.manager_with_progress(refresh, None)
    }

    /// [`Ctx::manager`] whose installer reports each pull's bytes to `progress`.
    pub(crate) fn manager_with_progress(
        &self,
        refresh: bool,
        progress: Option<agent_manager::store::ProgressFn>,
    ) -> Result<Manager, Failure> {
        let mut b = self.builder(refresh)?.locked(self.locked);
        if let Some(p) = agent_manager::lockfile::discover(self.lockfile.as_deref()) {
            b = b.lockfile(p);
        }
        if let Some(progress) = progress {
            b = b.progress(progress);
        }
        Ok(b.build()?)
    }

    /// The manager for `load` and `bench`: agent stderr handled as `--agent-logs` says.
    pub(crate) fn manager_for_load(&self, spawn: &SpawnArgs) -> Result<Manager, Failure> {
        use agent_manager::spawn::AgentLogs;
        let mut b = self.builder(false)?.locked(self.locked);
        if let Some(p) = agent_manager::lockfile::discover(self.lockfile.as_deref()) {
            b = b.lockfile(p);
        }
        let logs = match spawn.agent_logs {
            AgentLogsMode::Parsed => AgentLogs::Parsed,
            AgentLogsMode::Raw => AgentLogs::Raw,
            AgentLogsMode::Off => AgentLogs::Off,
        };
        Ok(
            b.load_defaults(agent_manager::LoadOptions::new().agent_logs(logs))
                .build()?,
        )
    }

    /// The manager with no lock file at all (for `agentctl lock` itself).
    pub(crate) fn manager_without_lock(&self, refresh: bool) -> Result<Manager, Failure> {
        let mut env = agent_manager::EnvConfig::from_env()?;
        env.lockfile = None;
        let mut b = Manager::builder().env_config(env).refresh(refresh);
        if self.home.is_some() {
            b = b.home(self.home()?);
        }
        if self.local {
            b = b.source(AgentSource::Local);
        }
        Ok(b.build()?)
    }

    /// A lock-free manager fetching for `platform` into the home `home`.
    pub(crate) fn manager_for_platform(
        &self,
        platform: &agent_manager::Platform,
        home: &Path,
    ) -> Result<Manager, Failure> {
        let mut env = agent_manager::EnvConfig::from_env()?;
        env.lockfile = None;
        Ok(Manager::builder()
            .env_config(env)
            .home(AgentHome::new(home))
            .platform(platform.clone())
            .build()?)
    }

    pub(crate) fn parse_ref(&self, s: &str) -> Result<AgentRef, Failure> {
        let r = AgentRef::parse(s)?;
        Ok(match self.kind {
            Some(k) => r.with_kind(k),
            None => r,
        })
    }

    /// What `s` names: a path (`./x`, `../x`, `/x`) or an agent reference.
    pub(crate) fn target(&self, s: &str) -> Result<Target, Failure> {
        if is_path(s) {
            Ok(Target::Path(absolute(Path::new(s))?))
        } else {
            self.parse_ref(s).map(Target::Agent)
        }
    }
}

/// What a REF names.
pub(crate) enum Target {
    Agent(AgentRef),
    /// An executable used as is.
    Path(PathBuf),
}

pub(crate) fn is_path(s: &str) -> bool {
    s.starts_with("./") || s.starts_with("../") || s.starts_with('/') || s == "." || s == ".."
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::io(p.display(), &e))
}
