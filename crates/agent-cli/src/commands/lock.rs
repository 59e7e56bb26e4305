//! `agentctl lock`: resolve refs and pin them in `agents.lock`.

use std::path::PathBuf;

use agent_manager::lockfile::{self, LockEntry, LockFile, LockedArtifact};
use agent_manager::reference::{AgentRef, Platform, VersionSpec};
use agent_manager::{ErrorKind, Installed, Manager};
use serde_json::json;

use clap::Args;

use crate::ctx::Ctx;
use crate::report::Failure;
use crate::values::parse_platform;

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The agents to lock (`publisher/name[:requirement]`).
    #[arg(value_name = "REF")]
    pub(crate) references: Vec<String>,
    /// The platforms to lock (os/arch, repeatable; default: this one).
    #[arg(long, value_name = "OS/ARCH", value_parser = parse_platform)]
    pub(crate) platform: Vec<Platform>,
    /// Move this ref to its newest match (repeatable).
    #[arg(long, value_name = "REF")]
    pub(crate) update: Vec<String>,
}

/// The lock file `lock` writes: `--lockfile`, `$CODEFLY_AGENT_LOCKFILE`, else `./agents.lock`.
fn lock_path(ctx: &Ctx) -> Result<PathBuf, Failure> {
    match lockfile::discover(ctx.lockfile.as_deref()) {
        Some(p) => Ok(p),
        None => std::env::current_dir()
            .map(|d| d.join(lockfile::LOCKFILE_NAME))
            .map_err(|e| Failure::io("the current directory", &e)),
    }
}

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Unchanged,
    Added,
    Updated,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Added => "added",
            Change::Updated => "updated",
        }
    }
}

pub(crate) async fn exec(ctx: &Ctx, args: &LockArgs) -> Result<(), Failure> {
    let (references, platforms, update) = (&args.references, &args.platform, &args.update);
    let path = lock_path(ctx)?;
    let mut file = LockFile::read_if_exists(&path)
        .map_err(|e| Failure::from_error(e.kind(), &e))?
        .unwrap_or_default();
    let platforms: Vec<Platform> = if platforms.is_empty() {
        vec![Platform::current()]
    } else {
        platforms.clone()
    };
    // The work list: (ref as asked, move to newest?).
    let mut work: Vec<(AgentRef, bool)> = Vec::new();
    for r in references {
        work.push((ctx.parse_ref(r)?, false));
    }
    for r in update {
        let asked = ctx.parse_ref(r)?;
        // `--update echo` keeps the entry's requested spec; `--update echo:^2` changes it.
        let agent = match (asked.version_spec(), file.entry_for_agent(&asked)) {
            (VersionSpec::Latest, Some(e)) => agent_manager::AgentRef::new(
                asked.kind(),
                asked.publisher(),
                asked.name(),
                &e.requested.to_string(),
            )?,
            _ => asked,
        };
        match work.iter_mut().find(|(a, _)| same_agent(a, &agent)) {
            Some(w) => *w = (agent, true),
            None => work.push((agent, true)),
        }
    }
    if work.is_empty() {
        if file.entries.is_empty() {
            return Err(Failure::new(
                ErrorKind::InvalidRef,
                format!(
                    "nothing to lock: give the agents (agentctl lock acme/echo:^1 …); {} has no entry",
                    path.display()
                ),
            ));
        }
        for e in &file.entries {
            let requested = AgentRef::new(
                e.reference.kind(),
                e.reference.publisher(),
                e.reference.name(),
                &e.requested.to_string(),
            )?;
            work.push((requested, false));
        }
    }

    // Resolve without the lock being written (a locked ref would resolve to itself).
    let m = ctx.manager_without_lock(false)?;
    let host = m.platform().clone();
    let mut report = Vec::new();
    for (agent, newest) in &work {
        let old = file.entry_for_agent(agent).cloned();
        let keep_version = old
            .as_ref()
            .filter(|o| !newest && o.requested == *agent.version_spec())
            .map(|o| o.version.clone());
        let version = match keep_version {
            Some(v) => v,
            None => {
                let resolved = if *newest {
                    m.pin_to_latest_release(agent).await?
                } else {
                    m.resolve(agent).await?
                };
                resolved.concrete_version().cloned().ok_or_else(|| {
                    Failure::new(
                        ErrorKind::InvalidRef,
                        format!("{resolved} did not resolve to a version"),
                    )
                })?
            }
        };
        let mut entry = LockEntry::new(agent, &version)?;
        for p in &platforms {
            let key = p.to_string();
            let kept = old
                .as_ref()
                .filter(|o| o.version == version)
                .and_then(|o| o.platforms.get(&key).cloned());
            let artifact = match kept {
                Some(a) => a,
                None => fetch(ctx, &m, &host, &entry.reference, p).await?,
            };
            entry.platforms.insert(key, artifact);
        }
        // Platforms locked before and not asked for this time stay, if the version did not move.
        if let Some(o) = old.as_ref().filter(|o| o.version == version) {
            for (k, a) in &o.platforms {
                entry
                    .platforms
                    .entry(k.clone())
                    .or_insert_with(|| a.clone());
            }
        }
        let change = match &old {
            None => Change::Added,
            Some(o) if *o == entry => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        if ctx.chatty() {
            let from = old
                .as_ref()
                .filter(|o| o.version != version)
                .map(|o| format!(" (was {})", o.version))
                .unwrap_or_default();
            eprintln!(
                "{:<9} {} ({}){from}",
                change.as_str(),
                entry.reference.identifier(),
                entry.requested
            );
        }
        report.push((entry.clone(), change));
        file.upsert(entry);
    }
    let changed = report.iter().any(|(_, c)| *c != Change::Unchanged) || !path.exists();
    if changed {
        file.write(&path)
            .map_err(|e| Failure::from_error(e.kind(), &e))?;
    }
    if ctx.json {
        let entries: Vec<serde_json::Value> = report
            .iter()
            .map(|(e, c)| {
                json!({
                    "ref": e.reference.identifier(),
                    "requested": e.requested.to_string(),
                    "version": e.version.to_string(),
                    "change": c.as_str(),
                    "platforms": e.platforms.iter().map(|(p, a)| (p.clone(), json!({
                        "sha256": a.sha256, "size": a.size, "store": a.store, "signer": a.signer,
                    }))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        outln!(
            "{}",
            json!({ "lockfile": path, "written": changed, "entries": entries })
        );
    } else {
        outln!("{}", path.display());
    }
    Ok(())
}

fn same_agent(a: &AgentRef, b: &AgentRef) -> bool {
    a.kind() == b.kind() && a.publisher() == b.publisher() && a.name() == b.name()
}

/// Fetches `agent` (concrete) for `platform`: into the cache for this
/// platform, into a throw-away home for the others (their binaries must
/// never sit at a path this host would run).
async fn fetch(
    ctx: &Ctx,
    m: &Manager,
    host: &Platform,
    agent: &AgentRef,
    platform: &Platform,
) -> Result<LockedArtifact, Failure> {
    if platform == host {
        let installed = m.pull(agent).await?;
        return Ok(artifact(m, agent, &installed));
    }
    let tmp = crate::temp::private_temp_dir("agentctl-lock")?;
    let other = ctx.manager_for_platform(platform, tmp.path())?;
    let result = other.pull(agent).await;
    let out = result.map(|installed| artifact(&other, agent, &installed));
    drop(tmp);
    Ok(out?)
}

fn artifact(m: &Manager, agent: &AgentRef, installed: &Installed) -> LockedArtifact {
    let record = m.installer().record(agent).ok().flatten();
    let store = record
        .as_ref()
        .and_then(|r| r.store.clone())
        .unwrap_or_else(|| store_of(&installed.source));
    LockedArtifact {
        sha256: installed.sha256.to_ascii_lowercase(),
        size: installed.size,
        store,
        signer: record.and_then(|r| r.signer).map(|s| s.key_id),
    }
}

/// `oci:registry/…` → `oci`; `local` → `local`.
fn store_of(source: &str) -> String {
    source.split_once(':').map_or(source, |(s, _)| s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_from_sources() {
        assert_eq!(store_of("oci:127.0.0.1:5000/agents/a/b:1.0.0"), "oci");
        assert_eq!(store_of("local"), "local");
        assert_eq!(store_of("http:https://x/y"), "http");
    }
}
