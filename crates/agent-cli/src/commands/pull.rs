//! `agentctl pull REF`: fetch into the cache, print the binary's path.

use std::io::IsTerminal as _;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::commands::not_found_path;
use crate::commands::resolve::resolve_or_pin;
use crate::ctx::{Ctx, Target};
use crate::report::{Failure, human_size};

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Resolve `latest` against the stores' newest release (see `resolve --release`).
    #[arg(long)]
    pub(crate) release: bool,
    /// Bypass the stores' cached answers (GitHub caches `latest` for an hour).
    #[arg(long)]
    pub(crate) refresh: bool,
}

pub(crate) async fn exec(ctx: &Ctx, args: &PullArgs) -> Result<(), Failure> {
    let agent = match ctx.target(&args.reference)? {
        Target::Path(p) => {
            let meta = std::fs::metadata(&p).map_err(|e| not_found_path(&p, &e))?;
            if ctx.json {
                outln!(
                    "{}",
                    json!({ "ref": p, "path": p, "size": meta.len(), "source": "path" })
                );
            } else {
                outln!("{}", p.display());
            }
            return Ok(());
        }
        Target::Agent(a) => a,
    };
    let bar = (ctx.chatty() && std::io::stderr().is_terminal()).then(PullBar::new);
    let m = ctx.manager_with_progress(args.refresh, bar.as_ref().map(PullBar::callback))?;
    let resolved = resolve_or_pin(&m, &agent, args.release).await?;
    let result = m.pull(&resolved).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    let installed = result?;
    if ctx.json {
        outln!(
            "{}",
            json!({
                "ref": resolved.identifier(),
                "version": resolved.version_spec().to_string(),
                "path": installed.path,
                "sha256": installed.sha256,
                "size": installed.size,
                "source": installed.source,
            })
        );
    } else {
        if ctx.chatty() {
            eprintln!(
                "{} ({}, sha256 {}, from {})",
                resolved.identifier(),
                human_size(installed.size),
                installed.sha256,
                crate::escape::terminal_safe(&installed.source)
            );
        }
        outln!("{}", installed.path.display());
    }
    Ok(())
}

/// A progress bar on stderr fed by the installer's progress callback: a
/// spinner until the store announces a size, then a bar with an ETA. Nothing
/// is drawn for a pull served from the cache (the installer never reports).
struct PullBar {
    bar: indicatif::ProgressBar,
}

impl PullBar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} pulling {msg} {bytes} ({bytes_per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        PullBar { bar }
    }

    fn callback(&self) -> agent_manager::store::ProgressFn {
        let bar = self.bar.clone();
        std::sync::Arc::new(move |p: agent_manager::store::Progress| {
            if bar.is_hidden() && !p.done {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_message(p.agent.identifier());
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            if let Some(total) = p.total
                && bar.length() != Some(total)
            {
                bar.set_length(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} pulling {msg} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
            bar.set_position(p.bytes);
        })
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
