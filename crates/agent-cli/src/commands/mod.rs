//! The subcommands, one file each (its clap arguments and its `exec`), as
//! cargo lays out `src/bin/cargo/commands/`. Each calls the library and
//! prints; what it shows is what the library says.

use std::path::Path;

use agent_manager::ErrorKind;
use clap::Subcommand;

use crate::cli::Cli;
use crate::ctx::Ctx;
use crate::report::Failure;

pub(crate) mod bench;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod doctor;
pub(crate) mod info;
pub(crate) mod keygen;
pub(crate) mod load;
pub(crate) mod lock;
pub(crate) mod ls;
pub(crate) mod man;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod resolve;
pub(crate) mod rm;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the concrete version REF resolves to, as `publisher/name:version`.
    ///
    /// Order: the local cache, then the stores, then the local cache again
    /// (only the local cache with --local). A path prints itself, absolute.
    Resolve(resolve::ResolveArgs),
    /// Fetch REF into the cache (if needed) and print the binary's absolute path (last stdout line).
    Pull(pull::PullArgs),
    /// Load REF (resolve, pull, spawn, handshake, health), print where it runs, close it.
    ///
    /// JSON: {"ref","version","pid","endpoint","load_ms"}.
    Load(load::LoadArgs),
    /// Load and close REF N times; print load and close latency percentiles.
    ///
    /// JSON: {"n","load_ms":{"p50","p90","max"},"close_ms":{"p50","p90","max"}}.
    Bench(bench::BenchArgs),
    /// List installed agents (version, size, sha256, source, path).
    ///
    /// With REF, only that agent's versions (matching its version, if given).
    Ls(ls::LsArgs),
    /// Remove installed versions of an agent.
    ///
    /// `rm echo:1.2.3` removes that version; `rm 'echo:^1'` every installed
    /// version matching the requirement; `rm echo --all` every version. A bare
    /// name (`rm echo`) is refused, so that nothing is removed by accident.
    Rm(rm::RmArgs),
    /// Remove installed versions: beyond the N highest of each agent, unused for
    /// a while, or least recently used first until the cache fits a size.
    ///
    /// With no flag, keeps the highest version of each agent (`--keep 1`).
    /// Flags combine: a version goes when any of them says so.
    Prune(prune::PruneArgs),
    /// Publish FILE(s) as REF (a concrete version) to an OCI registry, as `oras push` would.
    ///
    /// One file: a single-layer artifact. Several files: give one --platform
    /// per file, in the same order; the tag then points at an image index.
    Push(push::PushArgs),
    /// Resolve each REF and pin it in the lock file (agents.lock): version and,
    /// per platform, sha256, size, store and signer.
    ///
    /// Re-running changes only what changed: a ref already locked with the
    /// same requested version keeps its version (use --update to move it).
    /// With no REF, re-locks every entry of the file (adding missing platforms).
    Lock(lock::LockArgs),
    /// Print the effective settings and where each came from (file, env, default).
    ///
    /// Never prints a secret: credentials show as set or unset.
    Config,
    /// Check the home, the configuration, each store, the lock file and the
    /// cache; print what is wrong and how to fix it. Exit 0 only when all is well.
    Doctor,
    /// Everything known about one agent: the authoritative store and every
    /// store's versions, what `latest` resolves to and why, installed versions.
    Info(info::InfoArgs),
    /// Write a minisign key pair (unencrypted secret key) for signing agents.
    ///
    /// Prints the public key to put in the config (`[publishers."P"] keys`).
    Keygen(keygen::KeygenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `agentctl completions bash > ~/.local/share/bash-completion/completions/agentctl`
    Completions(completions::CompletionsArgs),
    /// Write a man page per command into DIR (used by `cargo xtask release`).
    #[command(hide = true)]
    Man(man::ManArgs),
}

/// Runs the command `cli` names.
pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx::of(&cli);
    match cli.command {
        Command::Resolve(args) => resolve::exec(&ctx, &args).await,
        Command::Pull(args) => pull::exec(&ctx, &args).await,
        Command::Load(args) => load::exec(&ctx, args).await,
        Command::Bench(args) => bench::exec(&ctx, &args).await,
        Command::Ls(args) => ls::exec(&ctx, &args),
        Command::Rm(args) => rm::exec(&ctx, &args),
        Command::Prune(args) => prune::exec(&ctx, &args),
        Command::Push(args) => push::exec(&ctx, args).await,
        Command::Lock(args) => lock::exec(&ctx, &args).await,
        Command::Config => config::exec(&ctx),
        Command::Doctor => doctor::exec(&ctx).await,
        Command::Info(args) => info::exec(&ctx, &args).await,
        Command::Keygen(args) => keygen::exec(&ctx, &args),
        Command::Completions(args) => {
            completions::exec(&args);
            Ok(())
        }
        Command::Man(args) => man::exec(&args),
    }
}

/// `binary-not-found` for a path with nothing there, else `io`.
pub(crate) fn not_found_path(p: &Path, e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::NotFound {
        Failure::new(
            ErrorKind::BinaryNotFound,
            format!("no executable at {}", p.display()),
        )
    } else {
        Failure::io(p.display(), e)
    }
}
