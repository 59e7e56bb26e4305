//! `agentctl rm REF [--all]`: remove installed versions of an agent.

use agent_manager::reference::{AgentRef, VersionSpec};
use agent_manager::store::Cache;
use agent_manager::{ErrorKind, StoreAnswer};
use clap::Args;
use serde_json::json;

use crate::ctx::{Ctx, is_path};
use crate::entry::Entry;
use crate::report::Failure;

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The agent, with a version or requirement (or --all).
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Remove every installed version of the agent.
    #[arg(long)]
    pub(crate) all: bool,
}

pub(crate) fn exec(ctx: &Ctx, args: &RmArgs) -> Result<(), Failure> {
    let reference = &args.reference;
    if is_path(reference) {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "rm takes an agent reference, not a path ({reference}); remove files with rm(1)"
            ),
        ));
    }
    let home = ctx.home()?;
    let agent = ctx.parse_ref(reference)?;
    check_selection(&agent, args.all)?;
    let removed = agent_manager::remove_installed(&Cache::new(home.clone()), &agent)?;
    if removed.is_empty() {
        let answer = StoreAnswer {
            store: "local".to_owned(),
            answer: format!(
                "nothing installed matching {} in {}",
                agent.version_spec(),
                home.publisher_dir(&agent).display()
            ),
        };
        return Err(Failure::new(
            ErrorKind::BinaryNotFound,
            format!("agent {} is not installed ({answer})", agent.identifier()),
        ));
    }
    print_removed(ctx, &Entry::all(removed), None);
    Ok(())
}

/// An exact version, a requirement, or with `--all` every version: a bare
/// name without `--all` is refused, so that nothing is removed by accident.
fn check_selection(agent: &AgentRef, all: bool) -> Result<(), Failure> {
    let latest = matches!(agent.version_spec(), VersionSpec::Latest);
    if all && !latest {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "--all removes every version; give the agent without a version ({}/{}), not {}",
                agent.publisher(),
                agent.name(),
                agent.identifier()
            ),
        ));
    }
    if latest && !all {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "say which version to remove: {p}/{n}:1.2.3, a requirement such as '{p}/{n}:^1', or --all",
                p = agent.publisher(),
                n = agent.name()
            ),
        ));
    }
    Ok(())
}

/// What `rm` and `prune` removed (and what `prune` kept, in JSON).
pub(crate) fn print_removed(ctx: &Ctx, removed: &[Entry], kept: Option<&[Entry]>) {
    if ctx.json {
        let mut doc = json!({ "removed": removed });
        if let Some(k) = kept {
            doc["kept"] = json!(k);
        }
        outln!("{doc}");
        return;
    }
    for e in removed {
        outln!("removed {} {}", e.reference, e.path.display());
    }
    if ctx.chatty() && removed.is_empty() {
        eprintln!("nothing to remove");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_needs_all_and_all_needs_a_bare_name() {
        let r = |s: &str| -> AgentRef { s.parse().unwrap() };
        let e = check_selection(&r("acme/echo"), false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRef);
        let e = check_selection(&r("acme/echo:1.1.0"), true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRef);
        check_selection(&r("acme/echo:^1"), false).unwrap();
        check_selection(&r("acme/echo:1.0.0"), false).unwrap();
        check_selection(&r("acme/echo"), true).unwrap();
    }
}
