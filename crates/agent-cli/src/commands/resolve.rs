//! `agentctl resolve REF`: the concrete version a ref resolves to.

use agent_manager::Manager;
use agent_manager::reference::AgentRef;
use clap::Args;
use serde_json::json;

use crate::ctx::{Ctx, Target};
use crate::report::Failure;

#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Ask the stores for their newest release even when a version is
    /// installed (never resolves lower than the installed one).
    #[arg(long)]
    pub(crate) release: bool,
    /// Bypass the stores' cached answers (GitHub caches `latest` for an hour).
    #[arg(long)]
    pub(crate) refresh: bool,
}

/// `--release` pins to the newest release (never below what is installed);
/// otherwise the Go loader's `latest` resolution.
pub(crate) async fn resolve_or_pin(
    m: &Manager,
    agent: &AgentRef,
    release: bool,
) -> Result<AgentRef, Failure> {
    Ok(if release {
        m.pin_to_latest_release(agent).await?
    } else {
        m.resolve(agent).await?
    })
}

pub(crate) async fn exec(ctx: &Ctx, args: &ResolveArgs) -> Result<(), Failure> {
    let agent = match ctx.target(&args.reference)? {
        Target::Path(p) => {
            if ctx.json {
                outln!("{}", json!({ "ref": p, "path": p }));
            } else {
                outln!("{}", p.display());
            }
            return Ok(());
        }
        Target::Agent(a) => a,
    };
    let m = ctx.manager(args.refresh)?;
    let resolved = resolve_or_pin(&m, &agent, args.release).await?;
    if ctx.json {
        outln!(
            "{}",
            json!({
                "ref": resolved.identifier(),
                "kind": resolved.kind().as_str(),
                "publisher": resolved.publisher(),
                "name": resolved.name(),
                "version": resolved.version_spec().to_string(),
            })
        );
    } else {
        outln!("{}", resolved.identifier());
    }
    Ok(())
}
