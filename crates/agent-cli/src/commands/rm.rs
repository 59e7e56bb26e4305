//! `agentctl rm REF [--all]`: remove installed versions of an agent.

use agent_manager::ErrorKind;
use clap::Args;
use serde_json::json;

use crate::cache;
use crate::ctx::{Ctx, is_path};
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
    let removed = cache::rm(&home, &agent, args.all)?;
    print_removed(ctx, &removed, None);
    Ok(())
}

/// What `rm` and `prune` removed (and what `prune` kept, in JSON).
pub(crate) fn print_removed(ctx: &Ctx, removed: &[cache::Entry], kept: Option<&[cache::Entry]>) {
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
