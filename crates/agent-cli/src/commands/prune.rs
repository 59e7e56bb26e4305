//! `agentctl prune`: remove installed versions by count, age or total size.

use std::time::Duration;

use agent_manager::store::Cache;
use clap::Args;

use crate::commands::rm::print_removed;
use crate::ctx::Ctx;
use crate::entry::Entry;
use crate::report::Failure;
use crate::values::{parse_duration, parse_size};

/// `prune` flags.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Keep the N highest versions (semver order) of each agent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) keep: Option<u32>,
    /// Remove versions not loaded for this long (e.g. 30d, 12h).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) unused_for: Option<Duration>,
    /// Remove least recently used versions until the cache is at most this big (e.g. 2GiB, 500MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_size: Option<u64>,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

pub(crate) fn exec(ctx: &Ctx, args: &PruneArgs) -> Result<(), Failure> {
    let home = ctx.home()?;
    let nothing_asked = args.keep.is_none() && args.unused_for.is_none() && args.max_size.is_none();
    let policy = agent_manager::store::PrunePolicy {
        // No flag: keep the highest version of each agent.
        keep: args.keep.map(|k| k as usize).or(nothing_asked.then_some(1)),
        unused_for: args.unused_for,
        max_size: args.max_size,
        dry_run: args.dry_run,
    };
    let report = agent_manager::prune_installed(&Cache::new(home), ctx.kind, &policy)?;
    let removed = Entry::all(report.removed);
    if args.dry_run && !ctx.json {
        for e in &removed {
            outln!("would remove {} {}", e.reference, e.path.display());
        }
        return Ok(());
    }
    let mut kept = Entry::all(report.kept);
    kept.sort_by(|a, b| {
        (a.kind, &a.publisher, &a.name)
            .cmp(&(b.kind, &b.publisher, &b.name))
            .then_with(|| b.version.cmp(&a.version))
    });
    print_removed(ctx, &removed, Some(&kept));
    Ok(())
}
