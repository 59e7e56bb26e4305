use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// What network an agent may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No TCP or UDP to anything, the host's loopback included; the host reaches
    /// the agent over its unix socket only.
    #[default]
    None,
    /// The network the host has.
    Any,
}

/// A complete sandbox policy: the paths beyond the always-granted ones, and the network.
///
/// Deserializes from the `[publishers."…".sandbox]` table; a field left out takes its
/// default (`network = "none"`, no extra paths). To merge the `"*"` table with a
/// publisher's, deserialize both as [`SandboxPolicyPatch`] and [`merge`](SandboxPolicyPatch::merge).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxPolicy {
    /// The network the agent may reach.
    #[serde(default)]
    pub network: Network,
    /// Extra read-only paths; `${HOME}`, `${WORKDIR}`, `${TMPDIR}` expand.
    #[serde(default)]
    pub read: Vec<String>,
    /// Extra read-write paths; `${HOME}`, `${WORKDIR}`, `${TMPDIR}` expand.
    #[serde(default)]
    pub write: Vec<String>,
}

/// One layer of policy as written in a config table: only the fields it sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxPolicyPatch {
    /// `network`, if this layer sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// `read`, if this layer sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// `write`, if this layer sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
}

impl SandboxPolicyPatch {
    /// This layer with `over` on top: each field `over` sets replaces this one's
    /// (lists are replaced, not appended, so a publisher can narrow the `"*"` table).
    #[must_use]
    pub fn merge(&self, over: &SandboxPolicyPatch) -> SandboxPolicyPatch {
        SandboxPolicyPatch {
            network: over.network.or(self.network),
            read: over.read.clone().or_else(|| self.read.clone()),
            write: over.write.clone().or_else(|| self.write.clone()),
        }
    }

    /// The complete policy, defaults for the fields no layer set.
    #[must_use]
    pub fn into_policy(self) -> SandboxPolicy {
        SandboxPolicy {
            network: self.network.unwrap_or_default(),
            read: self.read.unwrap_or_default(),
            write: self.write.unwrap_or_default(),
        }
    }
}

impl From<SandboxPolicyPatch> for SandboxPolicy {
    fn from(p: SandboxPolicyPatch) -> Self {
        p.into_policy()
    }
}

/// The values `${HOME}`, `${WORKDIR}` and `${TMPDIR}` expand to.
#[derive(Debug, Clone, Copy)]
pub struct PathVars<'a> {
    /// `${HOME}`; `None` makes its use an error.
    pub home: Option<&'a Path>,
    /// `${WORKDIR}`: the agent's work directory.
    pub workdir: &'a Path,
    /// `${TMPDIR}`: the agent's private temp directory.
    pub tmpdir: &'a Path,
}

/// A policy whose paths are expanded and absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedPolicy {
    /// The network the agent may reach.
    pub network: Network,
    /// Extra read-only paths.
    pub read: Vec<PathBuf>,
    /// Extra read-write paths.
    pub write: Vec<PathBuf>,
}

impl SandboxPolicy {
    /// Expands the variables of every path; an unknown variable or a relative result
    /// is an error of kind `config` naming the path.
    pub fn expand(&self, vars: &PathVars<'_>) -> Result<ExpandedPolicy, SandboxError> {
        let all = |list: &[String]| {
            list.iter()
                .map(|p| expand_path(p, vars))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ExpandedPolicy {
            network: self.network,
            read: all(&self.read)?,
            write: all(&self.write)?,
        })
    }
}

impl ExpandedPolicy {
    /// Refuses grants that would expose other processes: `/`, `/proc`, or a process's
    /// directory under it (`/proc/self` here names the host). Landlock's ptrace scoping
    /// does not make such a grant safe: a process holding `CAP_SYS_ADMIN` or
    /// `CAP_PERFMON` in the host's user namespace (root with `network = "any"`) may read
    /// any `/proc/<pid>/environ` it can open. The agent's own `/proc/self` is always
    /// granted; files such as `/proc/cpuinfo` may be granted.
    pub fn refuse_process_grants(&self) -> Result<(), SandboxError> {
        for p in self.read.iter().chain(&self.write) {
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let mut under_proc = real.strip_prefix("/proc").ok().map(Path::components);
            let process_dir = under_proc
                .as_mut()
                .and_then(Iterator::next)
                .is_some_and(|c| {
                    let c = c.as_os_str().to_string_lossy();
                    c == "self" || c == "thread-self" || c.bytes().all(|b| b.is_ascii_digit())
                });
            if Path::new("/proc").starts_with(&real) || process_dir {
                return Err(SandboxError::Path {
                    value: p.display().to_string(),
                    reason: format!(
                        "resolves to {}, which would let the agent read other processes' /proc/<pid> (their environment, with the host's secrets); grant narrower paths such as /proc/cpuinfo",
                        real.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Expands `${HOME}`, `${WORKDIR}` and `${TMPDIR}` in one path.
pub fn expand_path(value: &str, vars: &PathVars<'_>) -> Result<PathBuf, SandboxError> {
    let bad = |reason: String| SandboxError::Path {
        value: value.to_owned(),
        reason,
    };
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| bad("unterminated ${".to_owned()))?;
        let name = &after[..end];
        let with: &Path = match name {
            "HOME" => vars
                .home
                .ok_or_else(|| bad("${HOME} is used but there is no home directory".to_owned()))?,
            "WORKDIR" => vars.workdir,
            "TMPDIR" => vars.tmpdir,
            other => return Err(bad(format!("unknown variable ${{{other}}}"))),
        };
        let with = with
            .to_str()
            .ok_or_else(|| bad(format!("${{{name}}} is not valid UTF-8")))?;
        out.push_str(with);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let path = PathBuf::from(out);
    if !path.is_absolute() {
        return Err(bad(format!("expands to the relative path {path:?}")));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> PathVars<'static> {
        PathVars {
            home: Some(Path::new("/home/u")),
            workdir: Path::new("/w"),
            tmpdir: Path::new("/t/x"),
        }
    }

    #[test]
    fn variables_expand() {
        assert_eq!(
            expand_path("${HOME}/.cache", &vars()).unwrap(),
            Path::new("/home/u/.cache")
        );
        assert_eq!(expand_path("${WORKDIR}", &vars()).unwrap(), Path::new("/w"));
        assert_eq!(
            expand_path("${TMPDIR}/a/${WORKDIR}", &vars()).unwrap(),
            Path::new("/t/x/a//w")
        );
        assert_eq!(
            expand_path("/opt/models", &vars()).unwrap(),
            Path::new("/opt/models")
        );
    }

    #[test]
    fn unknown_unterminated_relative_and_missing_home_are_config_errors() {
        for (input, needle) in [
            ("${USER}/x", "unknown variable ${USER}"),
            ("${HOME", "unterminated"),
            ("models", "relative"),
            ("$HOME/x", "relative"),
        ] {
            let e = expand_path(input, &vars()).unwrap_err();
            assert_eq!(e.kind(), agent_ref::ErrorKind::Config);
            assert!(e.to_string().contains(needle), "{input}: {e}");
            assert!(e.to_string().contains(input), "{input}: {e}");
        }
        let no_home = PathVars {
            home: None,
            ..vars()
        };
        let e = expand_path("${HOME}/x", &no_home).unwrap_err();
        assert!(e.to_string().contains("no home directory"), "{e}");
    }

    #[test]
    fn grants_of_proc_or_a_process_directory_are_refused() {
        let with = |read: &[&str]| ExpandedPolicy {
            network: Network::Any,
            read: read.iter().map(PathBuf::from).collect(),
            write: Vec::new(),
        };
        for bad in [
            "/",
            "/proc",
            "/proc/",
            "/proc/self",
            "/proc/1/environ",
            "/proc/thread-self",
        ] {
            let e = with(&[bad]).refuse_process_grants().unwrap_err();
            assert_eq!(e.kind(), agent_ref::ErrorKind::Config, "{bad}");
            assert!(e.to_string().contains("other processes"), "{e}");
        }
        with(&["/proc/cpuinfo", "/opt/models", "/usr"])
            .refuse_process_grants()
            .unwrap();
    }

    #[test]
    fn star_table_then_publisher_table_merge_by_field() {
        let star: SandboxPolicyPatch =
            toml::from_str("network = \"any\"\nread = [\"/opt/models\"]\nwrite = [\"${WORKDIR}\"]")
                .unwrap();
        let acme: SandboxPolicyPatch = toml::from_str("network = \"none\"").unwrap();
        let p = star.merge(&acme).into_policy();
        assert_eq!(p.network, Network::None);
        assert_eq!(p.read, ["/opt/models"]);
        assert_eq!(p.write, ["${WORKDIR}"]);
        let narrow: SandboxPolicyPatch = toml::from_str("read = []").unwrap();
        let p = star.merge(&narrow).into_policy();
        assert_eq!(p.network, Network::Any);
        assert!(p.read.is_empty());
        assert_eq!(
            SandboxPolicyPatch::default().into_policy(),
            SandboxPolicy::default()
        );
        assert_eq!(SandboxPolicy::default().network, Network::None);
    }

    #[test]
    fn config_shape_deserializes_and_rejects_unknown_fields() {
        let p: SandboxPolicy =
            toml::from_str("network = \"any\"\nread = [\"/opt/models\"]").unwrap();
        assert_eq!(p.network, Network::Any);
        assert!(p.write.is_empty());
        assert!(toml::from_str::<SandboxPolicy>("network = \"some\"").is_err());
        assert!(toml::from_str::<SandboxPolicyPatch>("writes = []").is_err());
    }
}
