use std::fmt;
use std::str::FromStr;

use crate::RefError;

/// What an agent is for; decides its cache sub-directory, its artifact names
/// and which stores may serve it (see [`AgentKind::TABLE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum AgentKind {
    /// `service`: a service agent.
    #[default]
    Service,
    /// `service:runtime`, an alias of `service` kept apart in `unique()` keys.
    ServiceRuntime,
    /// `service:builder`, an alias of `service`.
    ServiceBuilder,
    /// `service:code`, an alias of `service`.
    ServiceCode,
    /// `application`.
    Application,
    /// `module`.
    Module,
    /// `toolbox`.
    Toolbox,
    /// `runnable`.
    Runnable,
    /// `provider`: served from the cache and Nix only, behind a verified-artifact descriptor.
    Provider,
    /// `solution`: served from the cache and Nix only, behind a verified-artifact descriptor.
    Solution,
    /// `job`: parses, never loads.
    Job,
}

/// Which stores may resolve a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KindStores {
    /// The cache and every remote store.
    All,
    /// The cache and the Nix store only; the artifact must carry a verified-artifact descriptor.
    CacheAndNix,
    /// None: the kind is not loaded.
    None,
}

/// One row of the kind table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// The kind this row describes.
    pub kind: AgentKind,
    /// Its name in references and `unique()` keys, e.g. `service:runtime`.
    pub name: &'static str,
    /// The kind it is an alias of (itself when it is not an alias).
    pub alias_of: AgentKind,
    /// Sub-directory of `agents/` in the cache.
    pub cache_dir: &'static str,
    /// Prefix of every artifact name: executable, GitHub repository and asset,
    /// Nix binary and attribute, OCI repository and layer.
    pub prefix: &'static str,
    /// Which stores may resolve it.
    pub stores: KindStores,
    /// Whether the manager starts it.
    pub loads: bool,
}

const fn row(
    kind: AgentKind,
    name: &'static str,
    alias_of: AgentKind,
    cache_dir: &'static str,
    prefix: &'static str,
    stores: KindStores,
    loads: bool,
) -> KindSpec {
    KindSpec {
        kind,
        name,
        alias_of,
        cache_dir,
        prefix,
        stores,
        loads,
    }
}

impl AgentKind {
    /// The kind table, as codefly core v0.3.x keeps its registry. Every path and
    /// artifact name in the workspace is derived from it.
    pub const TABLE: [KindSpec; 11] = {
        use AgentKind as K;
        use KindStores as S;
        [
            row(
                K::Service,
                "service",
                K::Service,
                "services",
                "service",
                S::All,
                true,
            ),
            row(
                K::ServiceRuntime,
                "service:runtime",
                K::Service,
                "services",
                "service",
                S::All,
                true,
            ),
            row(
                K::ServiceBuilder,
                "service:builder",
                K::Service,
                "services",
                "service",
                S::All,
                true,
            ),
            row(
                K::ServiceCode,
                "service:code",
                K::Service,
                "services",
                "service",
                S::All,
                true,
            ),
            row(
                K::Application,
                "application",
                K::Application,
                "applications",
                "application",
                S::All,
                true,
            ),
            row(
                K::Module,
                "module",
                K::Module,
                "modules",
                "module",
                S::All,
                true,
            ),
            row(
                K::Toolbox,
                "toolbox",
                K::Toolbox,
                "toolboxes",
                "toolbox",
                S::All,
                true,
            ),
            row(
                K::Runnable,
                "runnable",
                K::Runnable,
                "runnables",
                "runnable",
                S::All,
                true,
            ),
            row(
                K::Provider,
                "provider",
                K::Provider,
                "providers",
                "provider",
                S::CacheAndNix,
                true,
            ),
            row(
                K::Solution,
                "solution",
                K::Solution,
                "solutions",
                "solution",
                S::CacheAndNix,
                true,
            ),
            row(K::Job, "job", K::Job, "jobs", "job", S::None, false),
        ]
    };

    /// Every kind, aliases included, in the order of [`AgentKind::TABLE`].
    pub const ALL: [AgentKind; 11] = {
        let mut out = [AgentKind::Service; 11];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::TABLE[i].kind;
            i += 1;
        }
        out
    };

    /// This kind's row of [`AgentKind::TABLE`].
    #[must_use]
    pub fn spec(self) -> &'static KindSpec {
        // The table has one row per variant, in declaration order.
        &Self::TABLE[self as usize]
    }

    /// The kind as written in references and in `unique()` keys, e.g. `service:runtime`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The cache sub-directory under `agents/`, as the Go loader names it.
    #[must_use]
    pub fn cache_dir(self) -> &'static str {
        self.spec().cache_dir
    }

    /// The artifact-name prefix (`service` for `service:runtime` too).
    #[must_use]
    pub fn prefix(self) -> &'static str {
        self.spec().prefix
    }

    /// `{prefix}-{name}`: the executable, GitHub repository, Nix binary and OCI
    /// repository name of agent `name` of this kind.
    #[must_use]
    pub fn artifact_name(self, name: &str) -> String {
        format!("{}-{name}", self.prefix())
    }

    /// The kind this one is an alias of (`service` for `service:code`), or itself.
    #[must_use]
    pub fn canonical(self) -> AgentKind {
        self.spec().alias_of
    }

    /// Which stores may resolve this kind.
    #[must_use]
    pub fn stores(self) -> KindStores {
        self.spec().stores
    }

    /// Whether store `store` (`cache`, `nix`, `oci`, `http`, `github`) may
    /// resolve this kind. Unknown store names are treated as remote stores.
    #[must_use]
    pub fn served_by(self, store: &str) -> bool {
        match self.stores() {
            KindStores::All => true,
            KindStores::CacheAndNix => matches!(store, "cache" | "nix"),
            KindStores::None => false,
        }
    }

    /// Why a store named `store` refuses this kind, for its `artifact-missing`
    /// answer; `None` when it may serve it.
    #[must_use]
    pub fn refusal(self, store: &str) -> Option<String> {
        if self.served_by(store) {
            return None;
        }
        Some(match self.stores() {
            KindStores::None => format!("{self} agents are never loaded, so no store serves them"),
            _ => format!(
                "{self} agents are served from the cache and Nix only (with a verified-artifact descriptor), not from {store}"
            ),
        })
    }

    /// Whether the manager starts agents of this kind.
    #[must_use]
    pub fn loads(self) -> bool {
        self.spec().loads
    }

    /// `Ok` when agents of this kind may be loaded; otherwise the
    /// [`RefError::NotLoadable`] (`invalid-ref`) a load must answer with.
    pub fn check_loads(self) -> Result<(), RefError> {
        if self.loads() {
            Ok(())
        } else {
            Err(RefError::NotLoadable(self.as_str()))
        }
    }

    /// Whether loading needs a verified-artifact descriptor beside the binary.
    #[must_use]
    pub fn needs_descriptor(self) -> bool {
        self.stores() == KindStores::CacheAndNix
    }

    /// Every kind name of [`AgentKind::TABLE`], comma-separated, for error
    /// messages and help texts.
    #[must_use]
    pub fn allowed() -> &'static str {
        static ALLOWED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        ALLOWED.get_or_init(|| {
            let names: Vec<&str> = Self::TABLE.iter().map(|k| k.name).collect();
            format!("{} (optionally codefly:-prefixed)", names.join(", "))
        })
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentKind {
    type Err = RefError;

    /// Accepts the plain names, an optional `codefly:` prefix (the Go
    /// resources' form), and ASCII case differences.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("codefly:").unwrap_or(&lower);
        AgentKind::ALL
            .into_iter()
            .find(|k| k.as_str() == bare)
            .ok_or_else(|| RefError::UnknownKind(s.to_owned()))
    }
}

/// Serialized as [`AgentKind::as_str`] (`service:runtime`).
impl serde::Serialize for AgentKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Deserialized with the rules of [`FromStr`] (so Go's `codefly:service` works too).
impl<'de> serde::Deserialize<'de> for AgentKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in AgentKind::ALL {
            assert_eq!(k.as_str().parse::<AgentKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    #[test]
    fn cache_dirs_match_the_go_layout() {
        assert_eq!(AgentKind::Service.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceRuntime.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceBuilder.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceCode.cache_dir(), "services");
        assert_eq!(AgentKind::Application.cache_dir(), "applications");
        assert_eq!(AgentKind::Module.cache_dir(), "modules");
    }

    #[test]
    fn service_sub_kinds_parse() {
        assert_eq!(
            "service:runtime".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceRuntime
        );
        assert_eq!(
            "service:builder".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceBuilder
        );
        assert_eq!(
            "service:code".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceCode
        );
    }

    #[test]
    fn go_prefix_and_case_are_accepted() {
        assert_eq!(
            "codefly:service".parse::<AgentKind>().unwrap(),
            AgentKind::Service
        );
        assert_eq!(
            "codefly:service:runtime".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceRuntime
        );
        assert_eq!(" Module ".parse::<AgentKind>().unwrap(), AgentKind::Module);
        assert_eq!(
            "APPLICATION".parse::<AgentKind>().unwrap(),
            AgentKind::Application
        );
    }

    #[test]
    fn allowed_lists_every_kind_of_the_table() {
        let allowed = AgentKind::allowed();
        for spec in AgentKind::TABLE {
            assert!(
                allowed.split([',', ' ']).any(|n| n == spec.name),
                "{} not in {allowed}",
                spec.name
            );
        }
    }

    #[test]
    fn unknown_kinds_are_errors_listing_allowed() {
        for bad in [
            "",
            "services",
            "service:",
            "service:factory",
            "library",
            "jobs",
            "codefly:cli",
            "codefly:",
        ] {
            let e = bad.parse::<AgentKind>().expect_err(bad);
            assert!(matches!(e, RefError::UnknownKind(_)), "{bad}");
            assert_eq!(e.kind(), ErrorKind::InvalidRef);
            assert!(e.to_string().contains("allowed: service"), "{e}");
        }
    }

    #[test]
    fn the_table_has_one_row_per_variant_in_order() {
        for (i, row) in AgentKind::TABLE.iter().enumerate() {
            assert_eq!(row.kind as usize, i, "{}", row.name);
            assert_eq!(row.kind.spec(), row);
        }
    }

    #[test]
    fn new_kinds_parse_with_their_dirs_and_prefixes() {
        for (s, k, dir, prefix) in [
            ("toolbox", AgentKind::Toolbox, "toolboxes", "toolbox"),
            (
                "codefly:toolbox",
                AgentKind::Toolbox,
                "toolboxes",
                "toolbox",
            ),
            ("runnable", AgentKind::Runnable, "runnables", "runnable"),
            ("provider", AgentKind::Provider, "providers", "provider"),
            (
                "codefly:solution",
                AgentKind::Solution,
                "solutions",
                "solution",
            ),
            ("job", AgentKind::Job, "jobs", "job"),
            (
                "service:code",
                AgentKind::ServiceCode,
                "services",
                "service",
            ),
        ] {
            let got: AgentKind = s.parse().unwrap();
            assert_eq!(got, k, "{s}");
            assert_eq!(got.cache_dir(), dir, "{s}");
            assert_eq!(got.prefix(), prefix, "{s}");
        }
        assert_eq!(AgentKind::Toolbox.artifact_name("grep"), "toolbox-grep");
        assert_eq!(
            AgentKind::ServiceRuntime.artifact_name("go-grpc"),
            "service-go-grpc"
        );
        assert_eq!(AgentKind::ServiceBuilder.canonical(), AgentKind::Service);
    }

    #[test]
    fn prefixes_are_unique_per_canonical_kind() {
        let mut seen = std::collections::HashMap::new();
        for row in AgentKind::TABLE {
            let prior = seen.insert(row.prefix, row.alias_of);
            assert!(prior.is_none_or(|p| p == row.alias_of), "{}", row.name);
            assert!(!row.prefix.contains(':'), "{}", row.name);
        }
    }

    #[test]
    fn stores_per_kind() {
        for store in ["cache", "nix", "oci", "http", "github"] {
            assert!(AgentKind::Toolbox.served_by(store), "{store}");
            assert!(AgentKind::ServiceCode.served_by(store), "{store}");
            assert!(!AgentKind::Job.served_by(store), "{store}");
        }
        for k in [AgentKind::Provider, AgentKind::Solution] {
            assert!(k.served_by("cache") && k.served_by("nix"), "{k}");
            assert!(k.needs_descriptor(), "{k}");
            for store in ["oci", "http", "github"] {
                assert!(!k.served_by(store), "{k} {store}");
                let why = k.refusal(store).unwrap();
                assert!(why.contains("cache and Nix only"), "{why}");
            }
        }
        assert!(AgentKind::Module.refusal("oci").is_none());
    }

    #[test]
    fn job_parses_but_does_not_load() {
        assert!(!AgentKind::Job.loads());
        let e = AgentKind::Job.check_loads().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRef);
        assert!(e.to_string().contains("job"), "{e}");
        for k in AgentKind::ALL.into_iter().filter(|k| *k != AgentKind::Job) {
            assert!(k.check_loads().is_ok(), "{k}");
        }
    }

    #[test]
    fn default_is_service() {
        assert_eq!(AgentKind::default(), AgentKind::Service);
    }

    #[test]
    fn serde_is_the_string_form() {
        assert_eq!(
            serde_json::to_string(&AgentKind::ServiceCode).unwrap(),
            "\"service:code\""
        );
        assert_eq!(
            serde_json::from_str::<AgentKind>("\"codefly:module\"").unwrap(),
            AgentKind::Module
        );
        assert!(serde_json::from_str::<AgentKind>("\"robot\"").is_err());
    }
}
