//! The home, checked as the installer checks it before anything runs from
//! it: who may change the home and its cache directories (the installer's
//! one permission rule), and the temp files that interrupted installs left.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use agent_ref::{AgentHome, ErrorKind};

use crate::Cache;
use crate::install::{Exposure, exposures, is_temp_name, untouched_too_long};

/// The kind directories a home check looks at, below `agents/`.
const CHECKED_KIND_DIRS: [&str; 3] = ["services", "applications", "modules"];
/// How deep below `agents/` the temp file walk goes (kind, publisher, file).
const WALK_DEPTH: usize = 3;

/// What [`check_home`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HomeCheck {
    /// The home directory.
    pub root: PathBuf,
    /// Its permission bits, when it exists (`None`: the first pull creates it).
    pub root_mode: Option<u32>,
    /// Every problem, each with its fix; empty when all is well.
    pub problems: Vec<HomeProblem>,
}

/// One problem of the home or of a cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HomeProblem {
    /// The directory.
    pub path: PathBuf,
    /// The kind a load would fail with (`untrusted`, or `io` when the
    /// directory cannot be looked at).
    pub kind: ErrorKind,
    /// What is wrong, naming the directory.
    pub problem: String,
    /// The command that fixes it.
    pub fix: String,
}

/// Checks the home, `agents/` and its kind directories by the rule the
/// installer refuses a cache with: none may be a symlink (the home itself
/// excepted) or changeable by another user (group- or world-writable, or
/// owned by someone other than us or root). Missing directories pass (the
/// first pull creates them). Blocking.
#[must_use]
pub fn check_home(home: &AgentHome) -> HomeCheck {
    let root = home.root().to_path_buf();
    let mut dirs = vec![root.clone(), home.agents_dir()];
    for kind in CHECKED_KIND_DIRS {
        dirs.push(home.agents_dir().join(kind));
    }
    let mut problems = Vec::new();
    for d in &dirs {
        let meta = match fs::symlink_metadata(d) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(HomeProblem {
                    path: d.clone(),
                    kind: ErrorKind::Io,
                    problem: format!("{}: {e}", d.display()),
                    fix: format!("check the permissions of {}", d.display()),
                });
                continue;
            }
        };
        if meta.file_type().is_symlink() && d != &root {
            problems.push(HomeProblem {
                path: d.clone(),
                kind: ErrorKind::Untrusted,
                problem: format!("{} is a symlink", d.display()),
                fix: format!(
                    "replace it with a directory: rm {0} && mkdir -m 0755 {0}",
                    d.display()
                ),
            });
            continue;
        }
        let mut found = exposures(&meta);
        // The mode first: it is the usual mistake, and its fix needs no root.
        found.sort_by_key(|e| matches!(e, Exposure::Owner { .. }));
        for exposure in found {
            problems.push(exposure_problem(d, exposure));
        }
    }
    let root_mode = fs::metadata(&root).ok().map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        m.mode() & 0o777
    });
    HomeCheck {
        root,
        root_mode,
        problems,
    }
}

fn exposure_problem(d: &Path, exposure: Exposure) -> HomeProblem {
    let (problem, fix) = match exposure {
        Exposure::Writable { mode } => (
            format!(
                "{} is writable by {} (mode {mode:04o}): anyone could replace an agent",
                d.display(),
                if mode & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                }
            ),
            format!("chmod go-w {}", d.display()),
        ),
        Exposure::Owner { owner, me } => (
            format!(
                "{} is owned by uid {owner}, not you (uid {me})",
                d.display()
            ),
            format!("chown {me} {}", d.display()),
        ),
    };
    HomeProblem {
        path: d.to_path_buf(),
        kind: ErrorKind::Untrusted,
        problem,
        fix,
    }
}

impl Cache {
    /// The installers' temp files under `agents/` untouched for longer than
    /// the age past which an install removes them whoever owns them (an
    /// hour): downloads a crash or a kill interrupted. Unreadable
    /// directories are skipped. Blocking.
    #[must_use]
    pub fn stale_temps(&self) -> Vec<PathBuf> {
        let mut stale = Vec::new();
        let now = SystemTime::now();
        walk(&self.home().agents_dir(), 0, &mut |p, meta| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if is_temp_name(name) && untouched_too_long(meta, now) {
                stale.push(p.to_owned());
            }
        });
        stale.sort();
        stale
    }
}

fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    if depth > WALK_DEPTH {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            walk(&p, depth + 1, f);
        } else {
            f(&p, &meta);
        }
    }
}
