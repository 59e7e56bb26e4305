//! The effective settings: defaults, then the configuration file (or a
//! [`Config`] given in code), then the environment, each setting with its origin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use agent_ref::{AGENT_SOURCE_ENV, AgentHome, AgentSource, CODEFLY_HOME_ENV};

use crate::config::{
    Config, ConfigError, EffectiveConfig, FallbackSetting, OciScheme, Origin, PublisherConfig,
    VerifySetting, find_line,
};
use crate::env::{
    AGENT_STORES_ENV, EnvConfig, GITHUB_API_URL_ENV, HTTP_STORE_ENV, LOCKFILE_ENV, NIX_FLAKE_ENV,
    REGISTRY_ENV, REGISTRY_SCHEME_ENV, StoreId, StoreSelection,
};

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Val<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

impl<T> Val<T> {
    pub(crate) fn new(value: T, origin: Origin) -> Self {
        Val { value, origin }
    }
}

/// Every setting the manager uses, merged.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) file: Option<PathBuf>,
    /// Where the choice of file came from (`CODEFLY_CONFIG`, the home, code).
    file_origin: Origin,
    /// The file's text, to name lines in later errors.
    text: Option<String>,
    pub(crate) home: Val<AgentHome>,
    pub(crate) source: Val<AgentSource>,
    pub(crate) order: Val<StoreSelection>,
    pub(crate) oci: Option<Val<String>>,
    pub(crate) oci_scheme: Option<Val<OciScheme>>,
    pub(crate) http: Option<Val<String>>,
    pub(crate) nix: Option<Val<String>>,
    pub(crate) github: Val<bool>,
    pub(crate) github_api_url: Option<Val<String>>,
    pub(crate) fallback: Val<FallbackSetting>,
    pub(crate) download_timeout: Val<std::time::Duration>,
    pub(crate) verify: Val<VerifySetting>,
    pub(crate) publishers: BTreeMap<String, PublisherConfig>,
    pub(crate) publishers_origin: Origin,
    pub(crate) lockfile: Option<Val<PathBuf>>,
    /// `[sandbox] require`.
    pub(crate) sandbox_require: Val<bool>,
}

impl Settings {
    /// Merges `config` (the file, or one given in code) under `env`.
    /// `home` is the home already chosen (builder, env or default).
    pub(crate) fn merge(
        home: Val<AgentHome>,
        config: Option<&Config>,
        text: Option<String>,
        config_origin: Origin,
        env: Option<&EnvConfig>,
    ) -> Settings {
        let file_origin = config
            .and_then(|c| c.path.clone())
            .map_or(Origin::Code, Origin::File);
        let default = Config::default();
        let c = config.unwrap_or(&default);
        let env_val = |name: &'static str, v: Option<&String>| -> Option<Val<String>> {
            let e = env?;
            if !e.is_set(name) {
                return None;
            }
            v.map(|v| Val::new(v.clone(), Origin::Env(name.to_owned())))
        };
        let pick = |name: &'static str, env_v: Option<&String>, file_v: Option<&String>| {
            env_val(name, env_v)
                .or_else(|| file_v.map(|v| Val::new(v.clone(), file_origin.clone())))
        };
        let source = match env {
            Some(e) if e.is_set(AGENT_SOURCE_ENV) => {
                Val::new(e.source, Origin::Env(AGENT_SOURCE_ENV.to_owned()))
            }
            _ => Val::new(AgentSource::Remote, Origin::Default),
        };
        let order = match (env, &c.stores.order) {
            (Some(e), _) if e.is_set(AGENT_STORES_ENV) => {
                Val::new(e.stores.clone(), Origin::Env(AGENT_STORES_ENV.to_owned()))
            }
            (_, Some(o)) => Val::new(StoreSelection::Explicit(o.clone()), file_origin.clone()),
            _ => Val::new(StoreSelection::Configured, Origin::Default),
        };
        let oci_scheme = match env {
            Some(e) if e.is_set(REGISTRY_SCHEME_ENV) => e
                .registry_scheme
                .map(|s| Val::new(s, Origin::Env(REGISTRY_SCHEME_ENV.to_owned()))),
            _ => c
                .stores
                .oci_scheme
                .map(|s| Val::new(s, file_origin.clone())),
        };
        let lockfile = match env {
            Some(e) if e.is_set(LOCKFILE_ENV) => e
                .lockfile
                .clone()
                .map(|p| Val::new(p, Origin::Env(LOCKFILE_ENV.to_owned()))),
            _ => None,
        };
        Settings {
            file: config.and_then(|c| c.path.clone()),
            file_origin: config_origin,
            text,
            home,
            source,
            order,
            oci: pick(
                REGISTRY_ENV,
                env.and_then(|e| e.registry.as_ref()),
                c.stores.oci.as_ref(),
            ),
            oci_scheme,
            http: pick(
                HTTP_STORE_ENV,
                env.and_then(|e| e.http.as_ref()),
                c.stores.http.as_ref(),
            ),
            nix: pick(
                NIX_FLAKE_ENV,
                env.and_then(|e| e.nix.as_ref()),
                c.stores.nix.as_ref(),
            ),
            github: match c.stores.github {
                Some(g) => Val::new(g, file_origin.clone()),
                None => Val::new(true, Origin::Default),
            },
            github_api_url: pick(
                GITHUB_API_URL_ENV,
                env.and_then(|e| e.github_api_url.as_ref()),
                c.stores.github_api_url.as_ref(),
            ),
            fallback: or_default(c.stores.fallback, &file_origin),
            download_timeout: c
                .stores
                .download_timeout
                .as_deref()
                .and_then(|v| crate::config::parse_download_timeout(v).ok())
                .map_or_else(
                    || Val::new(crate::config::DEFAULT_DOWNLOAD_TIMEOUT, Origin::Default),
                    |d| Val::new(d, file_origin.clone()),
                ),
            verify: or_default(c.cache.verify, &file_origin),
            publishers: c.publishers.clone(),
            publishers_origin: file_origin.clone(),
            lockfile,
            sandbox_require: or_default(c.sandbox.require, &file_origin),
        }
    }

    /// A [`ConfigError`] about a setting, named as its origin names it: the
    /// file, line and key; the variable; or the key alone.
    pub(crate) fn key_error(
        &self,
        origin: &Origin,
        file_key: &str,
        env_var: &str,
        message: String,
        accepted: String,
    ) -> ConfigError {
        match origin {
            Origin::File(p) => ConfigError {
                file: Some(p.clone()),
                line: self.text.as_deref().and_then(|t| find_line(t, file_key)),
                key: Some(file_key.to_owned()),
                message,
                accepted: Some(accepted),
                source: None,
            },
            Origin::Env(_) => ConfigError::var(env_var, message, accepted),
            Origin::Code | Origin::Default => ConfigError::var(file_key, message, accepted),
        }
    }

    /// The publisher's table over `"*"`'s, field by field.
    pub(crate) fn publisher(&self, publisher: &str) -> Option<PublisherConfig> {
        crate::config::merged_publisher(&self.publishers, publisher)
    }

    /// The stores that may be asked for `publisher` (`None` = every store):
    /// its `stores`, and never `nix` for a publisher that requires
    /// signatures unless its `stores` names `nix`.
    pub(crate) fn scope(&self, publisher: &str) -> Option<Vec<StoreId>> {
        let p = self.publisher(publisher)?;
        match (&p.stores, p.nix_may_serve()) {
            (Some(s), _) => Some(s.clone()),
            (None, true) => None,
            (None, false) => Some(
                StoreId::DEFAULT_ORDER
                    .into_iter()
                    .filter(|s| *s != StoreId::Nix)
                    .collect(),
            ),
        }
    }

    /// The signing policy of `[publishers."P"]` (and `"*"`) for the installer.
    ///
    /// # Errors
    /// [`ManagerError::Config`] naming the key that is not a minisign public key.
    pub(crate) fn trust_policy(&self) -> Result<agent_store::TrustPolicy, crate::ManagerError> {
        let mut policy = agent_store::TrustPolicy::new();
        for name in self.publishers.keys() {
            let Some(p) = self.publisher(name) else {
                continue;
            };
            let mut keys = Vec::with_capacity(p.keys.len());
            for (i, k) in p.keys.iter().enumerate() {
                let key = agent_store::TrustedKey::parse(k).map_err(|e| {
                    crate::ManagerError::Config(self.key_error(
                        &self.publishers_origin,
                        &format!("publishers.\"{name}\".keys[{i}]"),
                        "",
                        e.to_string(),
                        "the base64 line of a minisign .pub file".to_owned(),
                    ))
                })?;
                keys.push(key);
            }
            let mut trust = agent_store::PublisherTrust {
                keys,
                require_signature: p.requires_signature(),
                ..agent_store::PublisherTrust::default()
            };
            if p.nix_may_serve() {
                trust = trust.vouched_by("nix");
            }
            policy = policy.publisher(name, trust);
        }
        Ok(policy)
    }

    /// Every setting with its origin, for a person (never a secret).
    pub(crate) fn effective(&self) -> EffectiveConfig {
        let mut e = EffectiveConfig {
            file: self.file.clone(),
            settings: Vec::new(),
        };
        let config_origin = self.file_origin.clone();
        e.push(
            "config",
            self.file
                .as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
            config_origin,
        );
        let home_origin = match &self.home.origin {
            Origin::Env(_) => Origin::Env(CODEFLY_HOME_ENV.to_owned()),
            o => o.clone(),
        };
        e.push(
            "home",
            self.home.value.root().display().to_string(),
            home_origin,
        );
        e.push(
            "source",
            if self.source.value.is_local() {
                "local"
            } else {
                "remote"
            },
            self.source.origin.clone(),
        );
        let order = match &self.order.value {
            StoreSelection::Configured => {
                "every configured store (nix, oci, http, github)".to_owned()
            }
            StoreSelection::Explicit(v) if v.is_empty() => "none".to_owned(),
            StoreSelection::Explicit(v) => {
                v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        e.push("stores.order", order, self.order.origin.clone());
        let opt = |e: &mut EffectiveConfig, key: &str, v: &Option<Val<String>>| match v {
            Some(v) => e.push(key, v.value.clone(), v.origin.clone()),
            None => e.push(key, "unset", Origin::Default),
        };
        opt(&mut e, "stores.oci", &self.oci);
        match &self.oci_scheme {
            Some(s) => e.push(
                "stores.oci-scheme",
                match s.value {
                    OciScheme::Http => "http",
                    OciScheme::Https => "https",
                },
                s.origin.clone(),
            ),
            None => e.push(
                "stores.oci-scheme",
                "https (http for localhost)",
                Origin::Default,
            ),
        }
        e.push(
            "stores.oci-credentials",
            oci_credentials_shown(),
            Origin::Default,
        );
        opt(&mut e, "stores.http", &self.http);
        opt(&mut e, "stores.nix", &self.nix);
        e.push(
            "stores.github",
            self.github.value.to_string(),
            self.github.origin.clone(),
        );
        match &self.github_api_url {
            Some(v) => e.push("stores.github-api-url", v.value.clone(), v.origin.clone()),
            None => e.push(
                "stores.github-api-url",
                "https://api.github.com",
                Origin::Default,
            ),
        }
        e.push("stores.github-token", github_token_shown(), Origin::Default);
        e.push(
            "stores.fallback",
            match self.fallback.value {
                FallbackSetting::Missing => "missing",
                FallbackSetting::Any => "any",
            },
            self.fallback.origin.clone(),
        );
        e.push(
            "stores.download-timeout",
            humantime::format_duration(self.download_timeout.value).to_string(),
            self.download_timeout.origin.clone(),
        );
        e.push(
            "cache.verify",
            match self.verify.value {
                VerifySetting::Fingerprint => "fingerprint",
                VerifySetting::Always => "always",
            },
            self.verify.origin.clone(),
        );
        match &self.lockfile {
            Some(v) => e.push("lockfile", v.value.display().to_string(), v.origin.clone()),
            None => e.push("lockfile", "agents.lock (if present)", Origin::Default),
        }
        e.push(
            "sandbox.require",
            self.sandbox_require.value.to_string(),
            self.sandbox_require.origin.clone(),
        );
        for (name, p) in &self.publishers {
            let o = self.publishers_origin.clone();
            if let Some(sb) = &p.sandbox {
                crate::sandbox_policy::push_table(&mut e, name, sb, &o);
            }
            if let Some(s) = &p.stores {
                let v = s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                e.push(
                    format!("publishers.\"{name}\".stores"),
                    if v.is_empty() { "none".to_owned() } else { v },
                    o.clone(),
                );
            }
            if !p.keys.is_empty() {
                // Public keys: not secrets.
                e.push(
                    format!("publishers.\"{name}\".keys"),
                    p.keys.join(", "),
                    o.clone(),
                );
            }
            e.push(
                format!("publishers.\"{name}\".require-signature"),
                p.requires_signature().to_string(),
                if p.require_signature.is_some() {
                    o
                } else {
                    Origin::Default
                },
            );
        }
        e
    }
}

fn or_default<T: Default>(v: Option<T>, origin: &Origin) -> Val<T> {
    match v {
        Some(v) => Val::new(v, origin.clone()),
        None => Val::new(T::default(), Origin::Default),
    }
}

fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether a token is set, and by which variable; never its value.
fn github_token_shown() -> String {
    for v in ["GITHUB_TOKEN", "GH_TOKEN"] {
        if set(v) {
            return format!("set (env {v}; never passed to agents)");
        }
    }
    "unset (anonymous)".to_owned()
}

/// Where registry credentials come from; never their value.
fn oci_credentials_shown() -> String {
    if set("AGENT_REGISTRY_USERNAME") && set("AGENT_REGISTRY_PASSWORD") {
        return "set (env AGENT_REGISTRY_USERNAME/AGENT_REGISTRY_PASSWORD; never passed to agents)"
            .to_owned();
    }
    "docker config for the registry's host, else anonymous".to_owned()
}
