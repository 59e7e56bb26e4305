//! The configuration file (`$CODEFLY_HOME/config.toml`, or the file named by
//! `CODEFLY_CONFIG`), and the effective settings it combines into.
//!
//! ```toml
//! [stores]
//! order = ["nix", "oci", "http", "github"]   # CODEFLY_AGENT_STORES
//! oci = "registry.example.com/team"          # AGENT_REGISTRY
//! oci-scheme = "https"                       # AGENT_REGISTRY_SCHEME
//! http = "https://agents.example.com"        # AGENT_HTTP_STORE
//! nix = "github:acme/agents"                 # AGENT_NIX_FLAKE
//! github = true                              # GitHub releases (default true)
//! github-api-url = "https://api.github.com"  # GITHUB_API_URL
//! fallback = "missing"                       # or "any"
//! download-timeout = "10m"                   # the longest a whole pull may take
//!
//! [cache]
//! verify = "fingerprint"                     # or "always": hash on every load
//!
//! [publishers."acme.corp"]
//! stores = ["http"]                          # only these stores serve acme.corp
//! keys = ["RWSdOKPTioVXkYwEcl91SOH2lSb2GuPqQp0Il1Bb/6ExfrK/B9EY33qy"]
//! # require-signature = true                 # the default when keys are listed
//!
//! [publishers."*"]                           # every publisher, under its own table
//! require-signature = false                  # the default
//!
//! [sandbox]
//! require = false                            # true: an agent with no policy is refused (admission)
//!
//! [publishers."acme.corp".sandbox]           # or [publishers."*".sandbox]
//! network = "none"                           # or "any"
//! read = ["/opt/models"]                     # ${HOME}, ${WORKDIR}, ${TMPDIR} expand
//! write = ["${WORKDIR}"]
//! ```
//!
//! A publisher's table overrides only the fields it sets; the others come
//! from `"*"` (a table that sets `stores` keeps the keys `"*"` requires).
//! Nix outputs carry no publisher: a publisher that requires signatures is
//! served by the `nix` store only when its `stores` lists `nix` (then its
//! agents are trusted as the local Nix trusts them).
//!
//! Precedence, per setting: an environment variable (with
//! [`Manager::from_env`](crate::Manager::from_env) or an [`EnvConfig`](crate::EnvConfig)) wins over
//! the file, which wins over the default. Unknown keys and bad values are
//! refused ([`ManagerError::Config`], kind `config`), naming the file, the
//! line, the key and what is accepted.
//!
//! The file holds **no secrets**, by construction: there is no key for a
//! token or a password (an unknown key is an error), so printing the
//! effective configuration ([`EffectiveConfig`], `agentctl config`) never
//! shows one. Store credentials come only from the environment
//! (`GITHUB_TOKEN`/`GH_TOKEN`, `AGENT_REGISTRY_USERNAME`/`AGENT_REGISTRY_PASSWORD`)
//! or the docker config, and are never passed on to agents.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ManagerError;
use crate::env::StoreId;

/// Names the configuration file to read instead of `$CODEFLY_HOME/config.toml`.
pub const CONFIG_ENV: &str = "CODEFLY_CONFIG";

/// The file name looked for in the agent home.
pub const CONFIG_FILE_NAME: &str = "config.toml";

/// The publisher table that applies to every publisher not listed.
pub const ANY_PUBLISHER: &str = "*";

/// The configuration file, as parsed. Every field is optional; see the
/// [module docs](self) for the schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[stores]`: which stores, where, in which order.
    pub stores: StoresConfig,
    /// `[cache]`: how the cache checks its binaries.
    pub cache: CacheConfig,
    /// `[publishers."P"]` (and `"*"`): per-publisher store scoping and signing keys.
    pub publishers: BTreeMap<String, PublisherConfig>,
    /// `[sandbox]`: whether every agent must have a sandbox policy.
    pub sandbox: SandboxConfig,
    /// The file this was read from (`None` when built in code).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[stores]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoresConfig {
    /// The stores to use, in order (`CODEFLY_AGENT_STORES`); `[]` = none.
    /// Every store named must be configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<StoreId>>,
    /// The OCI registry, `host[:port][/prefix]` (`AGENT_REGISTRY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// `http` or `https` for the registry (`AGENT_REGISTRY_SCHEME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci_scheme: Option<OciScheme>,
    /// The HTTP store's base URL (`AGENT_HTTP_STORE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The Nix flake (`AGENT_NIX_FLAKE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nix: Option<String>,
    /// Whether GitHub releases are a store at all (default `true`). `false`
    /// is the defence against an org that merely *looks* like a publisher
    /// (the owner is a guess: see [`crate::stores`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<bool>,
    /// The GitHub API (`GITHUB_API_URL`, default `https://api.github.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_api_url: Option<String>,
    /// When a pull may move on to the next store (default `missing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSetting>,
    /// The longest a whole pull may take, retries included (`30s`, `10m`;
    /// default 10 minutes): a store that trickles bytes cannot hold a pull,
    /// and the artifact lock, for longer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_timeout: Option<String>,
}

/// The default of `[stores] download-timeout`.
pub const DEFAULT_DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Parses a `download-timeout` value: a positive duration (`humantime`).
pub(crate) fn parse_download_timeout(v: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a zero deadline would refuse every pull".to_owned()),
        Err(e) => Err(format!("{v:?} is not a duration ({e})")),
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// `fingerprint` (default: hash only when the file's identity changed
    /// since it was installed) or `always` (hash on every load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySetting>,
}

/// `[sandbox]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SandboxConfig {
    /// Refuse (`admission`) to load an agent that no `[publishers."…".sandbox]`
    /// table and no `LoadOptions::sandbox` confines (default `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<bool>,
}

/// `[publishers."P"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublisherConfig {
    /// Only these stores are ever asked for this publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stores: Option<Vec<StoreId>>,
    /// Minisign public keys (base64) whose signatures this publisher's agents carry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Refuse unsigned agents (default: `true` when `keys` are listed, else `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<bool>,
    /// `[publishers."P".sandbox]`: the fields of the sandbox policy this table sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<agent_sandbox::SandboxPolicyPatch>,
}

impl PublisherConfig {
    /// Whether a signature is required: as set, else whenever keys are listed.
    #[must_use]
    pub fn requires_signature(&self) -> bool {
        self.require_signature.unwrap_or(!self.keys.is_empty())
    }

    /// This table over `base` (the `"*"` table): each field this table sets
    /// wins, the others are `base`'s. No keys listed counts as not set;
    /// keys listed without `require-signature` set it (to true), as they do
    /// in a table alone.
    #[must_use]
    pub fn over(&self, base: &PublisherConfig) -> PublisherConfig {
        PublisherConfig {
            stores: self.stores.clone().or_else(|| base.stores.clone()),
            keys: if self.keys.is_empty() {
                base.keys.clone()
            } else {
                self.keys.clone()
            },
            require_signature: self
                .require_signature
                .or((!self.keys.is_empty()).then_some(true))
                .or(base.require_signature),
            sandbox: match (&base.sandbox, &self.sandbox) {
                (Some(b), Some(o)) => Some(b.merge(o)),
                (b, o) => o.clone().or_else(|| b.clone()),
            },
        }
    }

    /// Whether the `nix` store may serve this publisher: always when no
    /// signature is required; else only when `stores` names `nix` (a flake
    /// attribute names no publisher, so Nix cannot prove one).
    #[must_use]
    pub fn nix_may_serve(&self) -> bool {
        !self.requires_signature()
            || self
                .stores
                .as_deref()
                .is_some_and(|s| s.contains(&StoreId::Nix))
    }
}

/// The effective table of `publisher` among `tables`: its own over `"*"`'s.
pub(crate) fn merged_publisher(
    tables: &BTreeMap<String, PublisherConfig>,
    publisher: &str,
) -> Option<PublisherConfig> {
    let any = tables.get(ANY_PUBLISHER);
    match (tables.get(publisher), any) {
        (Some(own), Some(any)) if publisher != ANY_PUBLISHER => Some(own.over(any)),
        (Some(own), _) => Some(own.clone()),
        (None, any) => any.cloned(),
    }
}

/// `[stores] oci-scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciScheme {
    /// Plain HTTP (a local registry).
    Http,
    /// HTTPS.
    Https,
}

/// `[stores] fallback`: when a pull may move on to the next store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackSetting {
    /// Only when a store answers `artifact-missing` (the default): an
    /// unreachable store stops the pull with `store-unavailable`.
    #[default]
    Missing,
    /// On any error but tampering (`integrity`) and local failures.
    Any,
}

/// `[cache] verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifySetting {
    /// Hash a cached binary only when its file identity changed (default).
    #[default]
    Fingerprint,
    /// Hash it on every load.
    Always,
}

impl Config {
    /// Parses `text` as the configuration file `path` (used in messages).
    ///
    /// # Errors
    /// [`ManagerError::Config`] naming the file, the line, the key and what is accepted.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ManagerError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ManagerError::Config(from_toml(text, path, &e)))?;
        config.path = path.map(Path::to_path_buf);
        config.validate(text)?;
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    /// [`ManagerError::Config`] for a file that cannot be read or does not validate.
    pub fn load(path: &Path) -> Result<Config, ManagerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManagerError::Config(ConfigError::unreadable(path, e)))?;
        Config::parse(&text, Some(path))
    }

    /// The file to read: `config_env` (the value of `CODEFLY_CONFIG`) when
    /// set, else `{home}/config.toml` if it exists. `None` = no file (every
    /// setting from the environment or the defaults).
    ///
    /// # Errors
    /// [`ManagerError::Config`] when `CODEFLY_CONFIG` names a file that does
    /// not exist (a named file is never silently skipped).
    pub fn discover(
        config_env: Option<&Path>,
        home: &agent_ref::AgentHome,
    ) -> Result<Option<PathBuf>, ManagerError> {
        if let Some(p) = config_env {
            if !p.is_file() {
                return Err(ManagerError::Config(ConfigError {
                    file: Some(p.to_path_buf()),
                    line: None,
                    key: Some(CONFIG_ENV.to_owned()),
                    message: "no such file".to_owned(),
                    accepted: Some("the path of a TOML configuration file".to_owned()),
                    source: None,
                }));
            }
            return Ok(Some(p.to_path_buf()));
        }
        let p = home.root().join(CONFIG_FILE_NAME);
        Ok(p.is_file().then_some(p))
    }

    /// The settings for `publisher`: its own table over `"*"`'s (field by
    /// field), else the defaults.
    #[must_use]
    pub fn publisher(&self, publisher: &str) -> Option<PublisherConfig> {
        merged_publisher(&self.publishers, publisher)
    }

    /// Checks what serde cannot: publisher names, repeated stores.
    fn validate(&self, text: &str) -> Result<(), ManagerError> {
        let err = |key: String, message: String, accepted: &str| {
            ManagerError::Config(ConfigError {
                file: self.path.clone(),
                line: find_line(text, &key),
                key: Some(key),
                message,
                accepted: Some(accepted.to_owned()),
                source: None,
            })
        };
        if let Some(order) = &self.stores.order
            && let Some(dup) = first_repeat(order)
        {
            return Err(err(
                "stores.order".to_owned(),
                format!("store {dup} is named twice"),
                "each of nix, oci, http, github at most once",
            ));
        }
        if let Some(v) = &self.stores.download_timeout
            && let Err(message) = parse_download_timeout(v)
        {
            return Err(err(
                "stores.download-timeout".to_owned(),
                message,
                "a positive duration: 90s, 10m, 1h",
            ));
        }
        for (name, p) in &self.publishers {
            if name != ANY_PUBLISHER && !valid_publisher(name) {
                return Err(err(
                    format!("publishers.\"{name}\""),
                    format!("{name:?} is not a publisher name"),
                    "a publisher ([A-Za-z0-9._-], no leading dot) or \"*\"",
                ));
            }
            if let Some(stores) = &p.stores
                && let Some(dup) = first_repeat(stores)
            {
                return Err(err(
                    format!("publishers.\"{name}\".stores"),
                    format!("store {dup} is named twice"),
                    "each of nix, oci, http, github at most once",
                ));
            }
            for (i, k) in p.keys.iter().enumerate() {
                if !plausible_minisign_key(k) {
                    return Err(err(
                        format!("publishers.\"{name}\".keys[{i}]"),
                        format!("{k:?} is not a minisign public key"),
                        "the base64 line of a minisign .pub file (56 characters, starting with RW)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A publisher as refs validate it (a ref `P/probe` must parse back to `P`).
fn valid_publisher(name: &str) -> bool {
    format!("{name}/probe")
        .parse::<agent_ref::AgentRef>()
        .is_ok_and(|r| r.publisher() == name)
}

fn first_repeat(ids: &[StoreId]) -> Option<StoreId> {
    ids.iter()
        .enumerate()
        .find(|(i, id)| ids[..*i].contains(id))
        .map(|(_, id)| *id)
}

/// The shape of a minisign public key: base64 of `Ed` + 8-byte key id + 32
/// bytes. The signature check itself is the store crate's (`TrustedKey`).
fn plausible_minisign_key(k: &str) -> bool {
    let k = k.trim();
    k.len() == 56
        && k.starts_with("RW")
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// A configuration that does not validate: which file (or variable), where,
/// which key, what is wrong and what would be accepted; the OS error of a
/// file that cannot be read is its [`source`](std::error::Error::source).
///
/// A TOML error is translated, not wrapped: its position, key, complaint and
/// expected values become `line`, `key`, `message` and `accepted`, and the
/// TOML error's own text (which quotes the offending line of the file, where
/// a secret may stand) is not kept.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file, when the setting came from one.
    pub file: Option<PathBuf>,
    /// The 1-based line in the file.
    pub line: Option<usize>,
    /// The key (`stores.fallback`, `publishers."acme".stores`) or the
    /// environment variable (`CODEFLY_AGENT_STORES`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What is accepted instead.
    pub accepted: Option<String>,
    /// Why, when another error is the cause (the file could not be read).
    pub(crate) source: Option<std::sync::Arc<std::io::Error>>,
}

impl ConfigError {
    /// An error about an environment variable (or a builder setting).
    pub(crate) fn var(
        name: &str,
        message: impl Into<String>,
        accepted: impl Into<Option<String>>,
    ) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(name.to_owned()),
            message: message.into(),
            accepted: accepted.into(),
            source: None,
        }
    }

    /// The configuration file `path` cannot be read; `cause` is the source.
    pub(crate) fn unreadable(path: &Path, cause: std::io::Error) -> Self {
        ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: None,
            message: "cannot read the configuration file".to_owned(),
            accepted: None,
            source: Some(std::sync::Arc::new(cause)),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(p), Some(l)) => write!(f, "{}:{l}: ", p.display())?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            _ => {}
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(a) = &self.accepted {
            write!(f, " (accepted: {a})")?;
        }
        Ok(())
    }
}

/// Maps toml's error onto file, line, key and what is accepted.
fn from_toml(text: &str, path: Option<&Path>, e: &toml::de::Error) -> ConfigError {
    let span = e.span();
    let line = span
        .as_ref()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let key = span.as_ref().and_then(|s| key_at(text, s.start));
    let message = e.message().trim().to_owned();
    // serde says "unknown field `x`, expected one of `a`, `b`": split the two.
    let (message, accepted) = match message.split_once(", expected ") {
        Some((m, a)) => (m.to_owned(), Some(a.to_owned())),
        None => match message.split_once("expected ") {
            Some((m, a)) if !m.is_empty() => (
                m.trim_end_matches([',', ' ']).to_owned(),
                Some(a.to_owned()),
            ),
            _ => (message, None),
        },
    };
    ConfigError {
        file: path.map(Path::to_path_buf),
        line,
        key,
        message,
        accepted,
        source: None,
    }
}

/// The dotted key (`table.key`) of the line holding byte `at`: the last
/// `[table]` header above it, plus the bare key before `=` on that line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        );
    }
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k.to_owned()),
        (t, None) => t,
    }
}

/// The line of `key` (as [`key_at`] would name it), for errors found after parsing.
pub(crate) fn find_line(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && let Some(k) = key_at(text, offset)
        {
            let wanted = key.split('[').next().unwrap_or(key);
            if k == wanted || k.replace('"', "") == wanted.replace('"', "") {
                return Some(i + 1);
            }
        }
        offset += line.len();
    }
    None
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Set in code (the builder, or [`ManagerBuilder::config`](crate::ManagerBuilder::config)).
    Code,
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Code => f.write_str("code"),
            Origin::Default => f.write_str("default"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One effective setting: its key, its value as shown to a person (never a
/// secret: credentials are shown as `set`/`unset` with the variable's name),
/// and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// `home`, `stores.order`, `publishers."acme".stores`, …
    pub key: String,
    /// The value.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Every effective setting of a manager and where each came from
/// ([`Manager::effective_config`](crate::Manager::effective_config);
/// `agentctl config [--json]`). Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveConfig {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The settings, in a stable order.
    pub settings: Vec<Setting>,
}

impl EffectiveConfig {
    /// The setting named `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        origin: Origin,
    ) {
        self.settings.push(Setting {
            key: key.into(),
            value: value.into(),
            origin,
        });
    }
}

impl fmt::Display for EffectiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => writeln!(f, "# configuration file: {}", p.display())?,
            None => writeln!(f, "# no configuration file")?,
        }
        let width = self.settings.iter().map(|s| s.key.len()).max().unwrap_or(0);
        for s in &self.settings {
            writeln!(f, "{:width$} = {:<30} # {}", s.key, s.value, s.origin)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use agent_ref::ErrorKind;

    use super::*;

    fn parse(t: &str) -> Result<Config, ManagerError> {
        Config::parse(t, Some(Path::new("/etc/cf/config.toml")))
    }

    fn cfg_err(t: &str) -> ConfigError {
        match parse(t).unwrap_err() {
            ManagerError::Config(e) => e,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(
            r#"
[stores]
order = ["nix", "oci", "http", "github"]
oci = "registry.example.com/team"
http = "https://agents.example.com"
nix = "github:acme/agents"
github = true
fallback = "missing"

[cache]
verify = "always"

[publishers."acme.corp"]
stores = ["http"]
keys = ["RWSdOKPTioVXkYwEcl91SOH2lSb2GuPqQp0Il1Bb/6ExfrK/B9EY33qy"]

[publishers."*"]
require-signature = false
"#,
        )
        .unwrap();
        assert_eq!(c.stores.order.as_ref().unwrap().len(), 4);
        assert_eq!(c.stores.fallback, Some(FallbackSetting::Missing));
        assert_eq!(c.cache.verify, Some(VerifySetting::Always));
        let acme = c.publisher("acme.corp").unwrap();
        assert_eq!(acme.stores.as_deref(), Some(&[StoreId::Http][..]));
        assert!(acme.requires_signature());
        assert!(!c.publisher("other").unwrap().requires_signature());
        assert!(
            !acme.nix_may_serve(),
            "keyed, and its stores do not name nix"
        );
        assert_eq!(c.path.as_deref(), Some(Path::new("/etc/cf/config.toml")));
    }

    /// A publisher's table overrides only the fields it sets.
    #[test]
    fn publisher_tables_merge_over_the_wildcard_field_by_field() {
        let key = "RWSdOKPTioVXkYwEcl91SOH2lSb2GuPqQp0Il1Bb/6ExfrK/B9EY33qy";
        let c = parse(&format!(
            "[publishers.\"*\"]\nkeys = [\"{key}\"]\n\n[publishers.\"acme.corp\"]\nstores = [\"http\"]\n\n[publishers.\"free\"]\nrequire-signature = false\n\n[publishers.\"nixed\"]\nstores = [\"nix\", \"oci\"]\n"
        ))
        .unwrap();
        let acme = c.publisher("acme.corp").unwrap();
        assert_eq!(acme.stores.as_deref(), Some(&[StoreId::Http][..]));
        assert_eq!(acme.keys, [key]);
        assert!(acme.requires_signature());
        assert!(!c.publisher("free").unwrap().requires_signature());
        assert!(c.publisher("other").unwrap().requires_signature());
        assert!(!c.publisher("other").unwrap().nix_may_serve());
        assert!(c.publisher("nixed").unwrap().nix_may_serve());
        assert!(c.publisher("free").unwrap().nix_may_serve());
    }

    #[test]
    fn sandbox_tables_merge_by_field_and_refuse_unknown_keys() {
        let c = parse(
            "[sandbox]\nrequire = true\n\n[publishers.\"*\".sandbox]\nnetwork = \"any\"\nread = [\"/opt/models\"]\n\n[publishers.\"acme\".sandbox]\nnetwork = \"none\"\n",
        )
        .unwrap();
        assert_eq!(c.sandbox.require, Some(true));
        let acme = c.publisher("acme").unwrap().sandbox.unwrap().into_policy();
        assert_eq!(acme.network, agent_sandbox::Network::None);
        assert_eq!(acme.read, ["/opt/models"]);
        let other = c.publisher("other").unwrap().sandbox.unwrap().into_policy();
        assert_eq!(other.network, agent_sandbox::Network::Any);
        let e = cfg_err("[publishers.\"acme\".sandbox]\nnetwork = \"some\"\n");
        assert_eq!(e.line, Some(2));
        assert!(e.accepted.unwrap().contains("none"));
        let e = cfg_err("[sandbox]\nrequired = true\n");
        assert_eq!(e.key.as_deref(), Some("sandbox.required"));
    }

    #[test]
    fn an_empty_file_is_every_default() {
        assert_eq!(parse("").unwrap().stores, StoresConfig::default());
    }

    #[test]
    fn unknown_key_names_file_line_key_and_what_is_accepted() {
        let e = cfg_err("[stores]\nhttp = \"http://x\"\ngithub-token = \"ghp_secret\"\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("stores.github-token"));
        assert!(e.accepted.as_deref().unwrap().contains("fallback"), "{e}");
        let shown = ManagerError::Config(e).to_string();
        assert!(
            shown.starts_with("/etc/cf/config.toml:3: stores.github-token"),
            "{shown}"
        );
        assert!(!shown.contains("ghp_secret"), "{shown}");
    }

    #[test]
    fn unknown_table_and_bad_values() {
        let e = cfg_err("[store]\nhttp = 1\n");
        assert_eq!(e.line, Some(1));
        assert!(e.accepted.unwrap().contains("stores"));
        let e = cfg_err("[stores]\nfallback = \"sometimes\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("stores.fallback"))
        );
        assert!(e.accepted.unwrap().contains("any"));
        let e = cfg_err("[stores]\norder = [\"oci\", \"s3\"]\n");
        assert_eq!(e.key.as_deref(), Some("stores.order"));
        assert!(e.accepted.unwrap().contains("github"));
        let e = cfg_err("[stores]\ngithub = \"no\"\n");
        assert_eq!(e.key.as_deref(), Some("stores.github"));
        let e = cfg_err("[cache]\nverify = \"never\"\n");
        assert_eq!(e.key.as_deref(), Some("cache.verify"));
        assert!(e.accepted.unwrap().contains("fingerprint"));
        let e = cfg_err("[publishers.\"acme\"]\nstores = [\"http\"]\nrequire-sig = true\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("publishers.\"acme\".require-sig"));
        let e = cfg_err("not toml at all [");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn semantic_errors_name_the_key_and_line() {
        let e = cfg_err("[stores]\norder = [\"oci\", \"oci\"]\n");
        assert_eq!((e.key.as_deref(), e.line), (Some("stores.order"), Some(2)));
        let e = cfg_err("\n[publishers.\"../x\"]\nstores = []\n");
        assert_eq!(e.key.as_deref(), Some("publishers.\"../x\""));
        assert_eq!(e.line, Some(2));
        let e = cfg_err("[publishers.\"acme\"]\nkeys = [\"not a key\"]\n");
        assert_eq!(e.key.as_deref(), Some("publishers.\"acme\".keys[0]"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn the_kind_is_config() {
        assert_eq!(parse("x = 1").unwrap_err().kind(), ErrorKind::Config);
        let e = Config::load(Path::new("/nonexistent/config.toml")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("/nonexistent/config.toml"), "{e}");
        // The OS error is the cause, said once, after what failed.
        let cause = std::error::Error::source(&e).expect("the read error is the source");
        let os = cause
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(os.kind(), std::io::ErrorKind::NotFound);
        assert!(!e.to_string().contains(&os.to_string()), "{e}");
        assert_eq!(agent_ref::error_chain(&e).to_string(), format!("{e}: {os}"));
    }

    #[test]
    fn discover_prefers_the_variable_and_refuses_a_missing_named_file() {
        let t = tempfile::tempdir().unwrap();
        let home = agent_ref::AgentHome::new(t.path());
        assert_eq!(Config::discover(None, &home).unwrap(), None);
        std::fs::write(t.path().join("config.toml"), "").unwrap();
        assert_eq!(
            Config::discover(None, &home).unwrap(),
            Some(t.path().join("config.toml"))
        );
        let other = t.path().join("other.toml");
        let e = Config::discover(Some(&other), &home).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        std::fs::write(&other, "").unwrap();
        assert_eq!(Config::discover(Some(&other), &home).unwrap(), Some(other));
    }
}
