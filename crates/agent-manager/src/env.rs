//! The manager's own environment variables, parsed as a pure function over a
//! lookup so tests never race on the process environment.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use agent_ref::{AGENT_SOURCE_ENV, AgentHome, AgentSource, CODEFLY_HOME_ENV};

use crate::ManagerError;
use crate::attach::ATTACH_ENV;
use crate::config::{CONFIG_ENV, ConfigError, OciScheme};

/// Selects the stores and their order: `nix,oci,http,github`, or `none`.
pub const AGENT_STORES_ENV: &str = "CODEFLY_AGENT_STORES";

pub(crate) use crate::lockfile::LOCKFILE_ENV;

/// The store variables the manager reads (each also a key of the config file).
pub(crate) const REGISTRY_ENV: &str = "AGENT_REGISTRY";
pub(crate) const REGISTRY_SCHEME_ENV: &str = "AGENT_REGISTRY_SCHEME";
pub(crate) const HTTP_STORE_ENV: &str = "AGENT_HTTP_STORE";
pub(crate) const NIX_FLAKE_ENV: &str = "AGENT_NIX_FLAKE";
pub(crate) const GITHUB_API_URL_ENV: &str = "GITHUB_API_URL";

/// One kind of store the manager knows how to build from its configuration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StoreId {
    /// Nix flakes (`AGENT_NIX_FLAKE`, `nix` on `PATH`).
    Nix,
    /// An OCI registry (`AGENT_REGISTRY`, `AGENT_REGISTRY_SCHEME`).
    Oci,
    /// A plain HTTP(S) store (`AGENT_HTTP_STORE`).
    Http,
    /// GitHub releases (`GITHUB_API_URL`, `GITHUB_TOKEN`); always configured.
    Github,
}

impl StoreId {
    /// Every store, in the default order (ARCHITECTURE.md): nix → oci → http → github.
    pub const DEFAULT_ORDER: [StoreId; 4] =
        [StoreId::Nix, StoreId::Oci, StoreId::Http, StoreId::Github];

    /// The name used in `CODEFLY_AGENT_STORES` and in messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StoreId::Nix => "nix",
            StoreId::Oci => "oci",
            StoreId::Http => "http",
            StoreId::Github => "github",
        }
    }

    /// What the user must set for this store to be configured.
    #[must_use]
    pub fn requirement(self) -> &'static str {
        match self {
            StoreId::Nix => {
                "set AGENT_NIX_FLAKE or [stores] nix = \"FLAKE\", and put `nix` on PATH"
            }
            StoreId::Oci => {
                "set AGENT_REGISTRY or [stores] oci = \"host[:port][/prefix]\" (and AGENT_REGISTRY_SCHEME / oci-scheme for plain HTTP)"
            }
            StoreId::Http => "set AGENT_HTTP_STORE or [stores] http = \"https://…\"",
            StoreId::Github => {
                "GitHub is configured unless [stores] github = false (GITHUB_API_URL, GITHUB_TOKEN)"
            }
        }
    }

    /// The environment variable that configures this store.
    #[must_use]
    pub fn env_var(self) -> &'static str {
        match self {
            StoreId::Nix => NIX_FLAKE_ENV,
            StoreId::Oci => REGISTRY_ENV,
            StoreId::Http => HTTP_STORE_ENV,
            StoreId::Github => GITHUB_API_URL_ENV,
        }
    }
}

const STORES_ACCEPTED: &str = "a comma list of nix, oci, http, github, or none";

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreId {
    type Err = ManagerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        StoreId::DEFAULT_ORDER
            .into_iter()
            .find(|id| id.as_str() == t)
            .ok_or_else(|| {
                ManagerError::Config(ConfigError::var(
                    AGENT_STORES_ENV,
                    format!("unknown store {s:?}"),
                    STORES_ACCEPTED.to_owned(),
                ))
            })
    }
}

/// Which stores to use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSelection {
    /// `CODEFLY_AGENT_STORES` unset or empty: every configured store, nix → oci → http → github.
    #[default]
    Configured,
    /// Exactly these, in this order; each must be configured. Empty = `none`.
    Explicit(Vec<StoreId>),
}

impl StoreSelection {
    /// Parses a value of `CODEFLY_AGENT_STORES`: a comma list of store names
    /// (case-insensitive, blanks ignored), `none`, or empty for the default.
    ///
    /// # Errors
    /// [`ManagerError::Config`] for unknown or repeated names, or `none` mixed with names.
    pub fn parse(value: &str) -> Result<Self, ManagerError> {
        let items: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(StoreSelection::Configured);
        }
        if items.iter().any(|s| s.eq_ignore_ascii_case("none")) {
            if items.len() > 1 {
                return Err(ManagerError::Config(ConfigError::var(
                    AGENT_STORES_ENV,
                    format!("{value:?}: `none` cannot be combined with store names"),
                    STORES_ACCEPTED.to_owned(),
                )));
            }
            return Ok(StoreSelection::Explicit(Vec::new()));
        }
        let mut out: Vec<StoreId> = Vec::with_capacity(items.len());
        for item in items {
            let id: StoreId = item.parse()?;
            if out.contains(&id) {
                return Err(ManagerError::Config(ConfigError::var(
                    AGENT_STORES_ENV,
                    format!("{value:?}: store {id} is named twice"),
                    STORES_ACCEPTED.to_owned(),
                )));
            }
            out.push(id);
        }
        Ok(StoreSelection::Explicit(out))
    }

    /// The stores to try, in order. For [`StoreSelection::Configured`] that is
    /// every store; unconfigured ones are skipped when they are built.
    #[must_use]
    pub fn candidates(&self) -> Vec<StoreId> {
        match self {
            StoreSelection::Configured => StoreId::DEFAULT_ORDER.to_vec(),
            StoreSelection::Explicit(v) => v.clone(),
        }
    }
}

/// The manager's settings from the environment: `CODEFLY_HOME` (else
/// `$HOME/.codefly`), `CODEFLY_AGENT_SOURCE`, `CODEFLY_AGENT_STORES`,
/// `CODEFLY_CONFIG`, `CODEFLY_AGENT_LOCKFILE`, `CODEFLY_AGENT_ATTACH`, and
/// the store variables `AGENT_REGISTRY`, `AGENT_REGISTRY_SCHEME`,
/// `AGENT_HTTP_STORE`, `AGENT_NIX_FLAKE`, `GITHUB_API_URL`. Each wins over the
/// configuration file. Read once, when it is built: a manager built from it
/// does not look at the process environment again.
/// Credentials (`GITHUB_TOKEN`, `AGENT_REGISTRY_USERNAME`, …) are not kept
/// here: the stores read them when they are built. `Debug` hides the value
/// of `CODEFLY_AGENT_ATTACH` (it holds the agents' tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct EnvConfig {
    /// The agent home.
    pub home: AgentHome,
    /// Where `latest` is resolved from.
    pub source: AgentSource,
    /// Which stores to use.
    pub stores: StoreSelection,
    /// `CODEFLY_CONFIG`: the configuration file to read.
    pub config: Option<PathBuf>,
    /// `CODEFLY_AGENT_LOCKFILE`.
    pub lockfile: Option<PathBuf>,
    /// `AGENT_REGISTRY`.
    pub registry: Option<String>,
    /// `AGENT_REGISTRY_SCHEME`.
    pub registry_scheme: Option<OciScheme>,
    /// `AGENT_HTTP_STORE`.
    pub http: Option<String>,
    /// `AGENT_NIX_FLAKE`.
    pub nix: Option<String>,
    /// `GITHUB_API_URL`.
    pub github_api_url: Option<String>,
    /// `CODEFLY_AGENT_ATTACH`: the running agents a load attaches to
    /// instead of spawning (see [`Manager::attach`](crate::Manager::attach)).
    /// Parsed by the load that looks it up.
    pub attach: Option<String>,
    /// The variables among the above that were set (non-empty).
    pub set: Vec<&'static str>,
}

impl fmt::Debug for EnvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvConfig")
            .field("home", &self.home)
            .field("source", &self.source)
            .field("stores", &self.stores)
            .field("config", &self.config)
            .field("lockfile", &self.lockfile)
            .field("registry", &self.registry)
            .field("registry_scheme", &self.registry_scheme)
            .field("http", &self.http)
            .field("nix", &self.nix)
            .field("github_api_url", &self.github_api_url)
            .field("attach", &self.attach.as_ref().map(|_| "(set, hidden)"))
            .field("set", &self.set)
            .finish()
    }
}

impl EnvConfig {
    /// Parses the settings from `lookup` (a variable name → its value).
    /// Empty values count as unset.
    ///
    /// # Errors
    /// [`ManagerError::Config`] for a value that does not validate (bad
    /// `CODEFLY_AGENT_SOURCE`, `CODEFLY_AGENT_STORES`, `AGENT_REGISTRY_SCHEME`,
    /// or one that is not UTF-8); [`ManagerError::Ref`] when there is no home at all.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ManagerError>
    where
        F: Fn(&str) -> Option<OsString>,
    {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let mut set: Vec<&'static str> = Vec::new();
        let mut utf8 = |name: &'static str| -> Result<Option<String>, ManagerError> {
            match get(name) {
                None => Ok(None),
                Some(v) => {
                    let v = v.into_string().map_err(|v| {
                        ManagerError::Config(ConfigError::var(
                            name,
                            format!("{v:?} is not valid UTF-8"),
                            None,
                        ))
                    })?;
                    if v.trim().is_empty() {
                        return Ok(None);
                    }
                    set.push(name);
                    Ok(Some(v))
                }
            }
        };
        let source = match utf8(AGENT_SOURCE_ENV)? {
            Some(v) => AgentSource::parse(&v).map_err(|e| {
                ManagerError::Config(ConfigError::var(
                    AGENT_SOURCE_ENV,
                    e.to_string(),
                    "local or remote".to_owned(),
                ))
            })?,
            None => AgentSource::Remote,
        };
        let stores = match utf8(AGENT_STORES_ENV)? {
            Some(v) => StoreSelection::parse(&v)?,
            None => StoreSelection::Configured,
        };
        let registry_scheme = match utf8(REGISTRY_SCHEME_ENV)? {
            None => None,
            Some(v) => Some(match v.trim().to_ascii_lowercase().as_str() {
                "http" => OciScheme::Http,
                "https" => OciScheme::Https,
                _ => {
                    return Err(ManagerError::Config(ConfigError::var(
                        REGISTRY_SCHEME_ENV,
                        format!("{v:?} is neither http nor https"),
                        "http or https".to_owned(),
                    )));
                }
            }),
        };
        let config = utf8(CONFIG_ENV)?.map(PathBuf::from);
        let lockfile = utf8(LOCKFILE_ENV)?.map(PathBuf::from);
        let registry = utf8(REGISTRY_ENV)?;
        let http = utf8(HTTP_STORE_ENV)?;
        let nix = utf8(NIX_FLAKE_ENV)?;
        let github_api_url = utf8(GITHUB_API_URL_ENV)?;
        let attach = get(ATTACH_ENV).map(|v| v.to_string_lossy().into_owned());
        if get(CODEFLY_HOME_ENV).is_some() {
            set.push(CODEFLY_HOME_ENV);
        }
        let home = AgentHome::from_env_vars(get(CODEFLY_HOME_ENV), get("HOME").map(PathBuf::from))?;
        Ok(EnvConfig {
            home,
            source,
            stores,
            config,
            lockfile,
            registry,
            registry_scheme,
            http,
            nix,
            github_api_url,
            attach,
            set,
        })
    }

    /// [`EnvConfig::from_lookup`] over the process environment.
    ///
    /// # Errors
    /// As [`EnvConfig::from_lookup`].
    pub fn from_env() -> Result<Self, ManagerError> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Whether the variable `name` was set (non-empty).
    #[must_use]
    pub fn is_set(&self, name: &str) -> bool {
        self.set.contains(&name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use agent_ref::ErrorKind;

    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<EnvConfig, ManagerError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        EnvConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn codefly_home_wins_over_home() {
        let c = cfg(&[("CODEFLY_HOME", "/srv/cf"), ("HOME", "/home/u")]).unwrap();
        assert_eq!(c.home.root(), std::path::Path::new("/srv/cf"));
    }

    #[test]
    fn home_defaults_to_dot_codefly() {
        let c = cfg(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.home.root(), std::path::Path::new("/home/u/.codefly"));
        let c = cfg(&[("HOME", "/home/u"), ("CODEFLY_HOME", "")]).unwrap();
        assert_eq!(c.home.root(), std::path::Path::new("/home/u/.codefly"));
    }

    #[test]
    fn no_home_at_all_is_an_error() {
        let e = cfg(&[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn source_defaults_to_remote_and_parses_local() {
        assert_eq!(cfg(&[("HOME", "/h")]).unwrap().source, AgentSource::Remote);
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_SOURCE", "LOCAL")]).unwrap();
        assert_eq!(c.source, AgentSource::Local);
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_SOURCE", "remote")]).unwrap();
        assert_eq!(c.source, AgentSource::Remote);
    }

    #[test]
    fn bad_source_is_an_error_not_a_default() {
        let e = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_SOURCE", "github")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("github"), "{e}");
    }

    #[test]
    fn stores_unset_or_empty_means_every_configured_store() {
        assert_eq!(
            cfg(&[("HOME", "/h")]).unwrap().stores,
            StoreSelection::Configured
        );
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_STORES", " , ")]).unwrap();
        assert_eq!(c.stores, StoreSelection::Configured);
        assert_eq!(
            StoreSelection::Configured.candidates(),
            vec![StoreId::Nix, StoreId::Oci, StoreId::Http, StoreId::Github]
        );
    }

    #[test]
    fn stores_none_is_an_empty_chain() {
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_STORES", "none")]).unwrap();
        assert_eq!(c.stores, StoreSelection::Explicit(vec![]));
        assert!(c.stores.candidates().is_empty());
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_STORES", " NONE ")]).unwrap();
        assert_eq!(c.stores, StoreSelection::Explicit(vec![]));
    }

    #[test]
    fn stores_list_keeps_the_given_order() {
        let c = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_STORES", "github, OCI,nix")]).unwrap();
        assert_eq!(
            c.stores,
            StoreSelection::Explicit(vec![StoreId::Github, StoreId::Oci, StoreId::Nix])
        );
    }

    #[test]
    fn stores_list_errors() {
        for bad in ["s3", "oci,oci", "none,oci", "oci;http"] {
            let e = cfg(&[("HOME", "/h"), ("CODEFLY_AGENT_STORES", bad)]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
            assert!(e.to_string().contains("CODEFLY_AGENT_STORES"), "{e}");
        }
    }

    #[test]
    fn attach_is_kept_and_never_shown() {
        let c = cfg(&[
            ("HOME", "/h"),
            (
                ATTACH_ENV,
                r#"{"acme/echo": {"endpoint": "127.0.0.1:1", "token": "s3cret"}}"#,
            ),
        ])
        .unwrap();
        assert!(c.attach.as_deref().is_some_and(|v| v.contains("s3cret")));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(cfg(&[("HOME", "/h")]).unwrap().attach.is_none());
    }

    #[test]
    fn store_ids_round_trip() {
        for id in StoreId::DEFAULT_ORDER {
            assert_eq!(id.as_str().parse::<StoreId>().unwrap(), id);
            assert_eq!(id.to_string(), id.as_str());
        }
    }
}
