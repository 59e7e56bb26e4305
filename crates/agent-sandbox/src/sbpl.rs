//! The `sandbox-exec` profile (SBPL) for macOS, generated from the policy.
//!
//! Pure text, so it is built and unit-tested on every platform; only macOS runs it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Network;

/// Where macOS keeps `sandbox-exec`.
pub const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";

/// The paths a profile is made of, all absolute.
#[derive(Debug, Clone)]
pub struct ProfileInput<'a> {
    /// The agent's binary: the only thing it may execute besides the system's runtime.
    pub binary: &'a Path,
    /// The agent's work directory (read-write).
    pub workdir: &'a Path,
    /// The directory of the agent's unix socket (read-write; the only network with `none`).
    pub socket_dir: Option<&'a Path>,
    /// The private temp directory (read-write).
    pub tmpdir: &'a Path,
    /// The user's home: nothing under it is readable unless granted.
    pub home: Option<&'a Path>,
    /// Extra read-only paths.
    pub read: &'a [PathBuf],
    /// Extra read-write paths.
    pub write: &'a [PathBuf],
    /// The network the agent may reach.
    pub network: Network,
}

/// System runtime readable by every agent (`/private/etc` is where `/etc` points).
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/System",
    "/Library/Apple",
    "/private/etc",
    "/etc",
    "/private/var/db/timezone",
    "/var/db/timezone",
];
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn subpaths<'p>(paths: impl IntoIterator<Item = &'p Path>) -> String {
    paths
        .into_iter()
        .map(|p| format!(" (subpath {})", quote(p)))
        .collect()
}

/// The profile text for `sandbox-exec -p`.
#[must_use]
pub fn profile(i: &ProfileInput<'_>) -> String {
    let mut rw: Vec<&Path> = vec![i.workdir, i.tmpdir];
    rw.extend(i.socket_dir);
    rw.extend(i.write.iter().map(PathBuf::as_path));
    let mut p = String::from("(version 1)\n(deny default)\n");
    let _ = writeln!(p, "(allow process-exec (literal {}))", quote(i.binary));
    p.push_str("(allow process-fork)\n(allow signal (target same-sandbox))\n");
    p.push_str("(allow process-info* (target self))\n(allow sysctl-read)\n");
    let system: Vec<&Path> = SYSTEM_READ.iter().map(Path::new).collect();
    let _ = writeln!(p, "(allow file-read*{})", subpaths(system));
    let devices: String = DEVICES
        .iter()
        .map(|d| format!(" (literal {})", quote(Path::new(d))))
        .collect();
    let _ = writeln!(p, "(allow file-read*{devices})");
    p.push_str("(allow file-write-data (literal \"/dev/null\"))\n");
    // Path resolution stats every parent; names and sizes, not contents.
    p.push_str("(allow file-read-metadata)\n");
    if let Some(home) = i.home {
        let _ = writeln!(p, "(deny file-read* (subpath {}))", quote(home));
    }
    // Later rules win: grants under the home are re-allowed after the deny above.
    let _ = writeln!(p, "(allow file-read* (literal {}))", quote(i.binary));
    let read: Vec<&Path> = i.read.iter().map(PathBuf::as_path).collect();
    if !read.is_empty() {
        let _ = writeln!(p, "(allow file-read*{})", subpaths(read));
    }
    let _ = writeln!(p, "(allow file-read*{})", subpaths(rw.iter().copied()));
    let _ = writeln!(p, "(allow file-write*{})", subpaths(rw.iter().copied()));
    match i.network {
        Network::Any => p.push_str("(allow network*)\n"),
        Network::None => {
            p.push_str("(deny network*)\n");
            if let Some(dir) = i.socket_dir {
                let _ = writeln!(
                    p,
                    "(allow network-bind network-inbound (local unix-socket (subpath {0})))\n(allow network-outbound (remote unix-socket (subpath {0})))",
                    quote(dir)
                );
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(read: &'a [PathBuf], write: &'a [PathBuf], network: Network) -> ProfileInput<'a> {
        ProfileInput {
            binary: Path::new("/Users/u/.codefly/agents/acme/echo/1.0.0/echo"),
            workdir: Path::new("/Users/u/proj"),
            socket_dir: Some(Path::new("/private/var/folders/x/sock")),
            tmpdir: Path::new("/private/var/folders/x/T/agent-1"),
            home: Some(Path::new("/Users/u")),
            read,
            write,
            network,
        }
    }

    #[test]
    fn network_none_profile_denies_by_default_and_allows_only_the_socket() {
        let read = [PathBuf::from("/opt/models")];
        let p = profile(&input(&read, &[], Network::None));
        assert!(p.starts_with("(version 1)\n(deny default)\n"), "{p}");
        assert!(p.contains(
            "(allow process-exec (literal \"/Users/u/.codefly/agents/acme/echo/1.0.0/echo\"))"
        ));
        assert!(p.contains("(subpath \"/usr\")"));
        assert!(p.contains("(literal \"/dev/urandom\")"));
        assert!(p.contains("(deny network*)\n"));
        assert!(!p.contains("(allow network*)"));
        assert!(p.contains("(allow network-bind network-inbound (local unix-socket (subpath \"/private/var/folders/x/sock\")))"));
        assert!(p.contains("(allow file-read* (subpath \"/opt/models\"))"));
        let write_line = p
            .lines()
            .find(|l| l.starts_with("(allow file-write*"))
            .unwrap();
        assert_eq!(
            write_line,
            "(allow file-write* (subpath \"/Users/u/proj\") (subpath \"/private/var/folders/x/T/agent-1\") (subpath \"/private/var/folders/x/sock\"))"
        );
        assert!(!write_line.contains("/opt/models"));
        // The home deny comes before the grants that re-allow parts of it.
        let deny = p.find("(deny file-read* (subpath \"/Users/u\"))").unwrap();
        let workdir = p
            .find("(allow file-read* (subpath \"/Users/u/proj\")")
            .unwrap();
        assert!(deny < workdir);
    }

    #[test]
    fn network_any_and_write_grants() {
        let write = [PathBuf::from("/Users/u/out")];
        let p = profile(&input(&[], &write, Network::Any));
        assert!(p.contains("(allow network*)\n"));
        assert!(!p.contains("(deny network*)"));
        assert!(p.contains("(subpath \"/Users/u/out\"))\n"));
    }

    #[test]
    fn quotes_and_backslashes_in_paths_cannot_end_the_string() {
        let read = [PathBuf::from("/tmp/a\") (allow default) (x \"\\")];
        let p = profile(&input(&read, &[], Network::None));
        assert!(
            p.contains("(subpath \"/tmp/a\\\") (allow default) (x \\\"\\\\\")"),
            "{p}"
        );
        assert!(!p.contains("\n(allow default)"));
    }
}
