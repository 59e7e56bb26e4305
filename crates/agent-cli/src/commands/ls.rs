//! `agentctl ls [REF]`: the installed agents.

use agent_manager::store::{Cache, CacheQuery};
use clap::Args;
use serde_json::json;

use crate::ctx::Ctx;
use crate::entry::Entry;
use crate::report::{Failure, human_size};

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only this agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: Option<String>,
}

pub(crate) fn exec(ctx: &Ctx, args: &LsArgs) -> Result<(), Failure> {
    let home = ctx.home()?;
    let mut query = CacheQuery::all().kind(ctx.kind).hash_unrecorded(true);
    if let Some(r) = &args.reference {
        query = query.agent(&ctx.parse_ref(r)?);
    }
    let entries = Entry::all(Cache::new(home.clone()).query(&query)?);
    if ctx.json {
        outln!("{}", json!(entries));
        return Ok(());
    }
    if entries.is_empty() {
        if ctx.chatty() {
            eprintln!("no agents installed in {}", home.agents_dir().display());
        }
        return Ok(());
    }
    let width = entries.iter().map(|e| e.reference.len()).max().unwrap_or(0);
    for e in &entries {
        let kind = if e.kind == "service" {
            String::new()
        } else {
            format!(" [{}]", e.kind)
        };
        outln!(
            "{:<width$}  {:>10}  {:<12}  {:<23}  {:<9}  {}  {}{kind}",
            e.reference,
            human_size(e.size),
            e.sha256.get(..12).unwrap_or(&e.sha256),
            e.signer_text(),
            e.last_used_text(),
            e.source,
            e.path.display(),
        );
    }
    Ok(())
}
