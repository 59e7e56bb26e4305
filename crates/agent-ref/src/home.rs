use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use semver::Version;

use crate::{AgentKind, AgentRef, RefError, VersionSpec};

/// The environment variable naming the codefly home (default `~/.codefly`).
pub const CODEFLY_HOME_ENV: &str = "CODEFLY_HOME";

/// The on-disk agent cache, shared with codefly's Go loader:
/// `{root}/agents/{services|applications|modules}/{publisher}/{name}__{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHome {
    root: PathBuf,
}

impl AgentHome {
    /// A home rooted at `root` (the equivalent of `CODEFLY_HOME`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AgentHome { root: root.into() }
    }

    /// `CODEFLY_HOME` when set and non-empty, else `~/.codefly`
    /// (a thin wrapper over [`AgentHome::from_env_vars`]).
    ///
    /// # Errors
    /// [`RefError::NoHome`] when neither is available.
    pub fn from_env() -> Result<Self, RefError> {
        Self::from_env_vars(std::env::var_os(CODEFLY_HOME_ENV), std::env::home_dir())
    }

    /// The rule of [`AgentHome::from_env`] without reading the environment:
    /// `codefly_home` (the value of `CODEFLY_HOME`) when non-empty, else
    /// `{home}/.codefly` when `home` is non-empty.
    ///
    /// # Errors
    /// [`RefError::NoHome`] when neither is available.
    pub fn from_env_vars(
        codefly_home: Option<OsString>,
        home: Option<PathBuf>,
    ) -> Result<Self, RefError> {
        if let Some(h) = codefly_home.filter(|h| !h.is_empty()) {
            return Ok(Self::new(h));
        }
        home.filter(|h| !h.as_os_str().is_empty())
            .map(|h| Self::new(h.join(".codefly")))
            .ok_or(RefError::NoHome)
    }

    /// The root (`CODEFLY_HOME`).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `{root}/agents`.
    #[must_use]
    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }

    /// `{root}/agents/{kind dir}`.
    #[must_use]
    pub fn kind_dir(&self, kind: AgentKind) -> PathBuf {
        self.agents_dir().join(kind.cache_dir())
    }

    /// The directory holding every version of the agent: `{kind dir}/{publisher}`.
    #[must_use]
    pub fn publisher_dir(&self, agent: &AgentRef) -> PathBuf {
        self.kind_dir(agent.kind()).join(agent.publisher())
    }

    /// The cache path of a concrete reference.
    ///
    /// # Errors
    /// [`RefError::NotConcrete`] for `latest` or a requirement.
    pub fn binary_path(&self, agent: &AgentRef) -> Result<PathBuf, RefError> {
        let v = agent
            .concrete_version()
            .ok_or_else(|| RefError::NotConcrete(agent.identifier()))?;
        Ok(self.binary_path_for(agent, v))
    }

    /// The cache path of `agent` at version `version` (whatever its own version says).
    #[must_use]
    pub fn binary_path_for(&self, agent: &AgentRef, version: &Version) -> PathBuf {
        self.publisher_dir(agent)
            .join(format!("{}__{}", agent.name(), version))
    }

    /// Every version of `agent` installed as a regular file, highest first.
    ///
    /// Only entries named exactly `{name}__{MAJOR.MINOR.PATCH[-PRE]}` count:
    /// temp files (`.echo__1.0.0.tmp.123`, `echo__1.0.0.tmp.123`), lock files
    /// (`echo__1.0.0.lock`), install records (`echo__1.0.0.json`), names that
    /// are not strict semver (`echo__v1.0.0`, `echo__1.0`), directories and
    /// symlinks (the installer never creates them) are ignored.
    /// Pre-releases are listed; [`VersionSpec`] decides whether they match.
    ///
    /// # Errors
    /// I/O errors other than a missing directory.
    pub fn installed_versions(&self, agent: &AgentRef) -> io::Result<Vec<Version>> {
        let dir = self.publisher_dir(agent);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let prefix = format!("{}__", agent.name());
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            // Strict: no leading `v`, no build metadata, nothing after the version.
            let Ok(v) = Version::parse(rest) else {
                continue;
            };
            if !v.build.is_empty() {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                out.push(v);
            }
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        Ok(out)
    }

    /// The highest installed version of `agent` that satisfies `spec` (Go: `FindLocalLatest`).
    ///
    /// # Errors
    /// I/O errors from scanning the directory.
    pub fn find_local(&self, agent: &AgentRef, spec: &VersionSpec) -> io::Result<Option<Version>> {
        Ok(spec.pick(self.installed_versions(agent)?.iter()))
    }
}
