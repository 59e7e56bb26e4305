//! Where the registry is, how to talk to it, and with which credentials.

use std::fmt;
use std::path::{Path, PathBuf};

use agent_ref::AgentRef;
use agent_store::StoreError;
use base64::Engine as _;

/// The store's name in messages and records.
pub(crate) const STORE: &str = "oci";

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: the default only for `localhost`, `127.0.0.1` and `[::1]`.
    Http,
    /// HTTPS (rustls, ring provider).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Credentials for the registry, and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous pulls (and bearer tokens the registry hands
    /// out anonymously).
    Anonymous,
    /// HTTP basic credentials (also used to obtain a bearer token when the
    /// registry asks for one).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
        /// Where they were found: `AGENT_REGISTRY_USERNAME/PASSWORD`, a
        /// docker config path, or `explicit`.
        origin: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    /// A description without the secret, e.g. `basic auth as "bob" from /home/b/.docker/config.json`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous access (no AGENT_REGISTRY_USERNAME/AGENT_REGISTRY_PASSWORD, no matching `auths` entry in the docker config)".to_owned(),
            Credentials::Basic {
                username, origin, ..
            } => format!("basic auth as {username:?} from {origin}"),
        }
    }

    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credentials::Basic {
                username, password, ..
            } => oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }
}

/// A registry location: host, optional path prefix, scheme and credentials.
///
/// `ghcr.io/codefly-dev` puts service agent `codefly.dev/echo` at
/// `ghcr.io/codefly-dev/agents/codefly.dev/service-echo` (and reads the
/// Go loader's `ghcr.io/codefly-dev/agents/codefly.dev/echo` when that does
/// not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    host: String,
    prefix: String,
    scheme: Scheme,
    credentials: Credentials,
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
}

/// How long connecting to the registry may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a registry response may go without sending a byte before the
/// transfer counts as stalled (`store-unavailable`), by default.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl RegistryConfig {
    /// Parses `host[:port][/prefix…]`, optionally with an `http://`,
    /// `https://` or `oci://` in front. Without an explicit scheme, plain
    /// HTTP is used only for `localhost`, `127.0.0.1` and `[::1]`.
    /// Credentials start anonymous: see [`RegistryConfig::with_credentials`]
    /// and [`RegistryConfig::with_env_credentials`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] saying what is wrong with the value.
    pub fn parse(value: &str) -> Result<RegistryConfig, StoreError> {
        let v = value.trim();
        let (explicit, rest) = if let Some(r) = v.strip_prefix("http://") {
            (Some(Scheme::Http), r)
        } else if let Some(r) = v.strip_prefix("https://") {
            (Some(Scheme::Https), r)
        } else if let Some(r) = v.strip_prefix("oci://") {
            (None, r)
        } else {
            (None, v)
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
        let prefix_ok = prefix.split('/').all(|seg| {
            prefix.is_empty()
                || (!seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    }))
        });
        if !host_ok || !prefix_ok {
            return Err(config_error(format!(
                "registry {value:?} is not host[:port][/lower-case/path] (e.g. ghcr.io/codefly-dev, 127.0.0.1:5000)"
            )));
        }
        let scheme = explicit.unwrap_or_else(|| default_scheme(host));
        Ok(RegistryConfig {
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_owned(),
            scheme,
            credentials: Credentials::Anonymous,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// From `AGENT_REGISTRY` (unset or empty: `None`), `AGENT_REGISTRY_SCHEME`
    /// (`http`/`https`), and credentials as [`RegistryConfig::with_env_credentials`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for values that do not parse.
    pub fn from_env() -> Result<Option<RegistryConfig>, StoreError> {
        let Some(value) = std::env::var("AGENT_REGISTRY")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return Ok(None);
        };
        let mut cfg = RegistryConfig::parse(&value)?;
        if let Ok(s) = std::env::var("AGENT_REGISTRY_SCHEME") {
            cfg.scheme = match s.trim().to_ascii_lowercase().as_str() {
                "" => cfg.scheme,
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                _ => {
                    return Err(config_error(format!(
                        "AGENT_REGISTRY_SCHEME={s:?} is neither http nor https"
                    )));
                }
            };
        }
        Ok(Some(cfg.with_env_credentials()))
    }

    /// The same registry with `scheme`.
    #[must_use]
    pub fn with_scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The same registry with other connect and read (stall) timeouts
    /// (defaults [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_READ_TIMEOUT`]).
    #[must_use]
    pub fn with_timeouts(
        mut self,
        connect: std::time::Duration,
        read: std::time::Duration,
    ) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The same registry with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Credentials from `AGENT_REGISTRY_USERNAME`/`AGENT_REGISTRY_PASSWORD`
    /// if both are set, else from the docker config (`$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json`, the `auths` entry for this host), else anonymous.
    #[must_use]
    pub fn with_env_credentials(self) -> Self {
        let user = std::env::var("AGENT_REGISTRY_USERNAME").ok();
        let pass = std::env::var("AGENT_REGISTRY_PASSWORD").ok();
        if let (Some(username), Some(password)) = (user, pass)
            && !username.is_empty()
        {
            return self.with_credentials(Credentials::Basic {
                username,
                password,
                origin: "AGENT_REGISTRY_USERNAME/AGENT_REGISTRY_PASSWORD".to_owned(),
            });
        }
        let path = docker_config_path();
        let creds = path
            .as_deref()
            .and_then(|p| docker_config_credentials(p, &self.host))
            .unwrap_or(Credentials::Anonymous);
        self.with_credentials(creds)
    }

    /// `host[:port]`.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path prefix (may be empty).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The scheme.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The credentials.
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The repository of `agent` in the current layout, the one [`crate::push`]
    /// writes: `{prefix}/agents/{publisher}/{P}-{name}` with P the kind's prefix
    /// (`agents/codefly.dev/service-go-grpc`), lower-cased (OCI repository
    /// names are lower case).
    #[must_use]
    pub fn repository(&self, agent: &AgentRef) -> String {
        self.under_prefix(&format!(
            "agents/{}/{}",
            agent.publisher(),
            agent.kind().artifact_name(agent.name())
        ))
    }

    /// The repository of `agent` in the Go loader's layout,
    /// `{prefix}/agents/{publisher}/{name}`, read only when the current one
    /// does not exist.
    #[must_use]
    pub fn legacy_repository(&self, agent: &AgentRef) -> String {
        self.under_prefix(&format!("agents/{}/{}", agent.publisher(), agent.name()))
    }

    /// The repositories asked for `agent`, in order: [`Self::repository`],
    /// then [`Self::legacy_repository`]. The first that exists is the only
    /// one that answers; their tags are never merged.
    #[must_use]
    pub fn repositories(&self, agent: &AgentRef) -> [String; 2] {
        [self.repository(agent), self.legacy_repository(agent)]
    }

    fn under_prefix(&self, tail: &str) -> String {
        let tail = tail.to_ascii_lowercase();
        if self.prefix.is_empty() {
            tail
        } else {
            format!("{}/{tail}", self.prefix)
        }
    }

    pub(crate) fn client_config(&self) -> oci_client::client::ClientConfig {
        oci_client::client::ClientConfig {
            protocol: match self.scheme {
                Scheme::Http => oci_client::client::ClientProtocol::Http,
                Scheme::Https => oci_client::client::ClientProtocol::Https,
            },
            // We pick the platform ourselves (select_layer).
            platform_resolver: None,
            // One PUT per blob, body streamed from the file.
            use_monolithic_push: true,
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            ..Default::default()
        }
    }

    pub(crate) fn client(&self) -> Result<oci_client::Client, StoreError> {
        // One TLS stack for the workspace: rustls with ring. Another crate may
        // have installed it already; that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        oci_client::Client::try_from(self.client_config()).map_err(|e| StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!("cannot build the HTTP client for {}", self.host),
            retry_after: None,
            source: Some(Box::new(e)),
        })
    }
}

impl fmt::Display for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn config_error(message: String) -> StoreError {
    StoreError::Unavailable {
        store: STORE.to_owned(),
        message,
        retry_after: None,
        source: None,
    }
}

fn default_scheme(host: &str) -> Scheme {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if matches!(name, "localhost" | "127.0.0.1" | "::1") {
        Scheme::Http
    } else {
        Scheme::Https
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The host a docker config `auths` key names: `https://ghcr.io/v1/` → `ghcr.io`.
fn auths_key_host(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Basic credentials for `host` from a docker `config.json`, if it has them
/// (`auth` = base64 `user:password`, or `username`/`password`). Credential
/// helpers (`credsStore`, `credHelpers`) are not run.
pub(crate) fn docker_config_credentials(path: &Path, host: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = match serde_json::from_str(&text) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable docker config");
            return None;
        }
    };
    let want = auths_key_host(host);
    let auths = json.get("auths")?.as_object()?;
    let entry = auths
        .iter()
        .find(|(k, _)| auths_key_host(k) == want)
        .map(|(_, v)| v)?;
    let from_fields = || {
        let u = entry.get("username")?.as_str()?;
        let p = entry.get("password")?.as_str()?;
        Some((u.to_owned(), p.to_owned()))
    };
    let from_auth = || {
        let b64 = entry.get("auth")?.as_str()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    };
    let (username, password) = from_auth().or_else(from_fields)?;
    if username.is_empty() {
        return None;
    }
    Some(Credentials::Basic {
        username,
        password,
        origin: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_prefix_and_scheme() {
        let c = RegistryConfig::parse("ghcr.io/codefly-dev").unwrap();
        assert_eq!(c.host(), "ghcr.io");
        assert_eq!(c.prefix(), "codefly-dev");
        assert_eq!(c.scheme(), Scheme::Https);
        let agent = AgentRef::parse("codefly.dev/echo:1.0.0").unwrap();
        assert_eq!(
            c.repository(&agent),
            "codefly-dev/agents/codefly.dev/service-echo"
        );
        assert_eq!(
            c.legacy_repository(&agent),
            "codefly-dev/agents/codefly.dev/echo"
        );

        let l = RegistryConfig::parse("127.0.0.1:5000").unwrap();
        assert_eq!(l.scheme(), Scheme::Http);
        assert_eq!(l.repository(&agent), "agents/codefly.dev/service-echo");
        let toolbox = agent.clone().with_kind(agent_ref::AgentKind::Toolbox);
        assert_eq!(
            l.repositories(&toolbox),
            ["agents/codefly.dev/toolbox-echo", "agents/codefly.dev/echo"]
        );
        assert_eq!(
            RegistryConfig::parse("localhost").unwrap().scheme(),
            Scheme::Http
        );
        assert_eq!(
            RegistryConfig::parse("[::1]:5000").unwrap().scheme(),
            Scheme::Http
        );
        assert_eq!(
            RegistryConfig::parse("registry.local:5000")
                .unwrap()
                .scheme(),
            Scheme::Https
        );
        assert_eq!(
            RegistryConfig::parse("http://registry.local:5000/a/b/")
                .unwrap()
                .scheme(),
            Scheme::Http
        );
        for bad in ["", "/x", "host/UPPER", "host/../x", "ho st"] {
            assert!(RegistryConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_config_auth_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        // "bob:s3cret:x" — the password may contain ':'.
        std::fs::write(
            &p,
            r#"{"auths":{"https://ghcr.io":{"auth":"Ym9iOnMzY3JldDp4"},
                "127.0.0.1:5000":{"username":"al","password":"pw"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let Some(Credentials::Basic {
            username, password, ..
        }) = docker_config_credentials(&p, "ghcr.io")
        else {
            panic!("no ghcr credentials")
        };
        assert_eq!((username.as_str(), password.as_str()), ("bob", "s3cret:x"));
        let Some(Credentials::Basic { username, .. }) =
            docker_config_credentials(&p, "127.0.0.1:5000")
        else {
            panic!("no local credentials")
        };
        assert_eq!(username, "al");
        assert!(docker_config_credentials(&p, "quay.io").is_none());
        let d = docker_config_credentials(&p, "ghcr.io").unwrap().describe();
        assert!(d.contains("bob") && !d.contains("s3cret"), "{d}");
    }
}
