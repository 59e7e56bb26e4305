use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use semver::Version;

use crate::{AgentKind, AgentRef, RefError, VersionSpec};

/// Last dot-components of names the cache keeps beside a binary
/// (`{name}__{version}.json` records, `.lock` files, temp files, sidecars).
/// A version whose pre-release ends in one of these is refused, and scans skip them.
pub(crate) const RESERVED_SUFFIXES: &[&str] = &["json", "lock", "tmp", "sha256"];

/// The environment variable naming the codefly home (default `~/.codefly`).
pub const CODEFLY_HOME_ENV: &str = "CODEFLY_HOME";

/// The on-disk agent cache, shared with codefly's Go loader:
/// `{root}/agents/{kind cache dir}/{publisher}/{name}__{version}`, the kind's
/// directory read from [`AgentKind::TABLE`] (`services`, `toolboxes`, `providers`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHome {
    root: PathBuf,
}

impl AgentHome {
    /// A home rooted at `root` (the equivalent of `CODEFLY_HOME`).
    ///
    /// A relative `root` is made absolute here, once, against the current
    /// directory (lexically, as [`std::path::absolute`] does), so every path
    /// derived from the home is absolute: the path the host checks is the path
    /// it executes, whatever work directory the agent is later started in.
    /// Only when the current directory cannot be read does a relative root stay
    /// relative (and then nothing relative to it can be found either).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        AgentHome { root }
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
    /// [`RefError::NotConcrete`] for `latest` or a requirement;
    /// [`RefError::NotLoadable`] for a kind that is never loaded (`job`).
    pub fn binary_path(&self, agent: &AgentRef) -> Result<PathBuf, RefError> {
        agent.kind().check_loads()?;
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
            // A record or lock file of a pre-release (`echo__1.0.0-rc.1.json`)
            // parses as semver; those suffixes are the cache's own.
            if rest
                .rsplit('.')
                .next()
                .is_some_and(|s| RESERVED_SUFFIXES.contains(&s))
            {
                continue;
            }
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

    /// The highest installed version of `agent` that satisfies `spec`.
    ///
    /// # Errors
    /// I/O errors from scanning the directory.
    #[doc(alias = "FindLocalLatest")]
    pub fn find_local(&self, agent: &AgentRef, spec: &VersionSpec) -> io::Result<Option<Version>> {
        Ok(spec.pick(self.installed_versions(agent)?.iter()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn r(s: &str) -> AgentRef {
        AgentRef::parse(s).unwrap()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// A temp home with `files` created (empty) in echo's publisher dir.
    fn home_with(files: &[&str]) -> (tempfile::TempDir, AgentHome, AgentRef) {
        let dir = tempfile::tempdir().unwrap();
        let home = AgentHome::new(dir.path());
        let echo = r("codefly.dev/echo");
        let pd = home.publisher_dir(&echo);
        fs::create_dir_all(&pd).unwrap();
        for f in files {
            fs::write(pd.join(f), b"bin").unwrap();
        }
        (dir, home, echo)
    }

    #[test]
    fn binary_path_layout_per_kind() {
        let home = AgentHome::new("/c");
        let e = r("acme/echo:1.2.3");
        let cases = [
            (AgentKind::Service, "/c/agents/services/acme/echo__1.2.3"),
            (
                AgentKind::ServiceCode,
                "/c/agents/services/acme/echo__1.2.3",
            ),
            (
                AgentKind::Application,
                "/c/agents/applications/acme/echo__1.2.3",
            ),
            (AgentKind::Module, "/c/agents/modules/acme/echo__1.2.3"),
            (AgentKind::Toolbox, "/c/agents/toolboxes/acme/echo__1.2.3"),
            (AgentKind::Runnable, "/c/agents/runnables/acme/echo__1.2.3"),
            (AgentKind::Provider, "/c/agents/providers/acme/echo__1.2.3"),
            (AgentKind::Solution, "/c/agents/solutions/acme/echo__1.2.3"),
        ];
        for (k, want) in cases {
            let got = home.binary_path(&e.clone().with_kind(k)).unwrap();
            assert_eq!(got, Path::new(want), "{k}");
        }
        let job = home.binary_path(&e.clone().with_kind(AgentKind::Job));
        assert_eq!(job.unwrap_err().kind(), crate::ErrorKind::InvalidRef);
    }

    #[test]
    fn binary_path_needs_a_concrete_version() {
        let home = AgentHome::new("/c");
        for s in ["echo", "echo:latest", "echo:^1.2"] {
            let e = home.binary_path(&r(s)).unwrap_err();
            assert!(matches!(e, RefError::NotConcrete(_)), "{s}");
            assert!(e.to_string().contains("resolve it first"), "{e}");
        }
    }

    #[test]
    fn binary_path_for_overrides_version() {
        let home = AgentHome::new("/c");
        assert_eq!(
            home.binary_path_for(&r("echo"), &v("0.9.0-rc.2")),
            Path::new("/c/agents/services/codefly.dev/echo__0.9.0-rc.2")
        );
    }

    #[test]
    fn dirs() {
        let home = AgentHome::new("/c");
        assert_eq!(home.root(), Path::new("/c"));
        assert_eq!(home.agents_dir(), Path::new("/c/agents"));
        assert_eq!(
            home.kind_dir(AgentKind::Module),
            Path::new("/c/agents/modules")
        );
        assert_eq!(
            home.publisher_dir(&r("acme/x:1.0.0")),
            Path::new("/c/agents/services/acme")
        );
    }

    #[test]
    fn from_env_vars_prefers_codefly_home() {
        let h = AgentHome::from_env_vars(Some("/x/cf".into()), Some("/home/u".into())).unwrap();
        assert_eq!(h.root(), Path::new("/x/cf"));
    }

    #[test]
    fn a_relative_root_is_made_absolute_once() {
        let cwd = std::env::current_dir().unwrap();
        let h = AgentHome::from_env_vars(Some("cf".into()), None).unwrap();
        assert_eq!(h.root(), cwd.join("cf"));
        let agent: AgentRef = "codefly.dev/echo:1.0.0".parse().unwrap();
        assert!(h.binary_path(&agent).unwrap().is_absolute());
    }

    #[test]
    fn from_env_vars_defaults_to_dot_codefly() {
        let h = AgentHome::from_env_vars(None, Some("/home/u".into())).unwrap();
        assert_eq!(h.root(), Path::new("/home/u/.codefly"));
        let h = AgentHome::from_env_vars(Some(OsString::new()), Some("/home/u".into())).unwrap();
        assert_eq!(
            h.root(),
            Path::new("/home/u/.codefly"),
            "empty CODEFLY_HOME is unset"
        );
    }

    #[test]
    fn from_env_vars_without_any_home_is_no_home() {
        let e = AgentHome::from_env_vars(None, None).unwrap_err();
        assert!(matches!(e, RefError::NoHome));
        assert_eq!(e.kind(), crate::ErrorKind::Io);
        assert!(e.to_string().contains("CODEFLY_HOME"), "{e}");
        assert!(AgentHome::from_env_vars(Some("".into()), Some("".into())).is_err());
    }

    #[test]
    fn missing_dir_means_nothing_installed() {
        let dir = tempfile::tempdir().unwrap();
        let home = AgentHome::new(dir.path().join("nope"));
        assert!(home.installed_versions(&r("echo")).unwrap().is_empty());
        assert_eq!(
            home.find_local(&r("echo"), &VersionSpec::Latest).unwrap(),
            None
        );
    }

    #[test]
    fn prerelease_records_and_locks_are_not_versions() {
        let (_d, home, echo) = home_with(&[
            "echo__1.0.0-rc.1",
            "echo__1.0.0-rc.1.json",
            "echo__1.0.0-rc.1.lock",
            "echo__2.0.0-beta.json",
        ]);
        assert_eq!(
            home.installed_versions(&echo).unwrap(),
            vec![v("1.0.0-rc.1")]
        );
    }

    #[test]
    fn installed_versions_highest_first() {
        let (_d, home, echo) = home_with(&["echo__1.0.0", "echo__1.10.0", "echo__1.9.3"]);
        assert_eq!(
            home.installed_versions(&echo).unwrap(),
            vec![v("1.10.0"), v("1.9.3"), v("1.0.0")]
        );
    }

    #[test]
    fn installed_versions_ignores_temp_lock_record_and_junk() {
        let (_d, home, echo) = home_with(&[
            "echo__1.0.0",
            ".echo__1.0.0.tmp.123",
            "echo__2.0.0.tmp.99",
            "echo__3.0.0.lock",
            "echo__4.0.0.json",
            "echo__v5.0.0",
            "echo__6.0",
            "echo__7.0.0+build",
            "echo__",
            "echo",
            "echo-1.0.0",
            "echoes__9.0.0",
            "other__8.0.0",
        ]);
        assert_eq!(home.installed_versions(&echo).unwrap(), vec![v("1.0.0")]);
        assert_eq!(
            home.find_local(&echo, &VersionSpec::Latest).unwrap(),
            Some(v("1.0.0"))
        );
    }

    #[test]
    fn installed_versions_ignores_directories_and_symlinks() {
        let (_d, home, echo) = home_with(&["echo__1.0.0"]);
        let pd = home.publisher_dir(&echo);
        fs::create_dir(pd.join("echo__2.0.0")).unwrap();
        std::os::unix::fs::symlink(pd.join("echo__1.0.0"), pd.join("echo__3.0.0")).unwrap();
        assert_eq!(home.installed_versions(&echo).unwrap(), vec![v("1.0.0")]);
    }

    #[test]
    fn names_sharing_a_prefix_do_not_mix() {
        let (_d, home, _echo) = home_with(&["echo__1.0.0", "echo__x__2.0.0", "echo__x__3.0.0"]);
        let ex = r("codefly.dev/echo__x");
        assert_eq!(
            home.installed_versions(&ex).unwrap(),
            vec![v("3.0.0"), v("2.0.0")]
        );
        assert_eq!(
            home.installed_versions(&r("echo")).unwrap(),
            vec![v("1.0.0")]
        );
    }

    #[test]
    fn kinds_and_publishers_are_separate() {
        let (_d, home, _echo) = home_with(&["echo__1.0.0"]);
        assert!(home.installed_versions(&r("acme/echo")).unwrap().is_empty());
        let module = r("echo").with_kind(AgentKind::Module);
        assert!(home.installed_versions(&module).unwrap().is_empty());
        let runtime = r("echo").with_kind(AgentKind::ServiceRuntime);
        assert_eq!(home.installed_versions(&runtime).unwrap(), vec![v("1.0.0")]);
    }

    #[test]
    fn find_local_picks_highest_match_and_skips_prereleases() {
        let (_d, home, echo) = home_with(&[
            "echo__1.2.0",
            "echo__1.4.2",
            "echo__2.0.0",
            "echo__3.0.0-rc.1",
        ]);
        let find = |s: &str| home.find_local(&echo, &s.parse().unwrap()).unwrap();
        assert_eq!(find("latest"), Some(v("2.0.0")));
        assert_eq!(find("^1.2"), Some(v("1.4.2")));
        assert_eq!(find("~1.2"), Some(v("1.2.0")));
        assert_eq!(find("1.4.2"), Some(v("1.4.2")));
        assert_eq!(find("1.4.3"), None);
        assert_eq!(find("3.0.0-rc.1"), Some(v("3.0.0-rc.1")));
        assert_eq!(find(">=3.0.0-rc.0"), Some(v("3.0.0-rc.1")));
    }

    #[test]
    fn installed_version_round_trips_to_its_binary_path() {
        let (_d, home, echo) = home_with(&["echo__1.2.3-beta.1"]);
        let found = home.installed_versions(&echo).unwrap();
        assert_eq!(found, vec![v("1.2.3-beta.1")]);
        let pinned = echo.with_version(&found[0]).unwrap();
        assert!(home.binary_path(&pinned).unwrap().is_file());
    }

    #[test]
    fn unreadable_publisher_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = AgentHome::new(dir.path());
        let echo = r("echo");
        let pd = home.publisher_dir(&echo);
        fs::create_dir_all(pd.parent().unwrap()).unwrap();
        fs::write(&pd, b"not a dir").unwrap();
        assert!(home.installed_versions(&echo).is_err());
    }
}
