//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use agent_manager::reference::{AgentKind, Platform};
use clap::{Args, Parser, Subcommand};

/// Find, fetch, verify, cache, start and stop agents.
///
/// REF is `[publisher/]name[:version]` (publisher defaults to codefly.dev,
/// version to `latest`; versions may be requirements such as `^1.2`), or a
/// path to an executable (`./x`, `../x`, `/x`), used as is.
///
/// Exit status: 0 success, 1 failure (printed as `error[KIND]: …`), 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, propagate_version = true)]
pub(crate) struct Cli {
    /// The agent home (default: $CODEFLY_HOME, else ~/.codefly).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    // The help lists every kind of the kind table.
    #[arg(long, global = true, value_name = "KIND", value_parser = parse_kind, help = kind_help())]
    pub(crate) kind: Option<AgentKind>,

    /// Resolve `latest` from the local cache only (as CODEFLY_AGENT_SOURCE=local).
    #[arg(long, global = true)]
    pub(crate) local: bool,

    /// Machine-readable output: one JSON document on stdout (errors too).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// More logs on stderr (-v info, -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,

    /// Only results and errors: no logs, no progress, no summaries on stderr.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// The lock file (default: $CODEFLY_AGENT_LOCKFILE, else ./agents.lock when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) lockfile: Option<PathBuf>,

    /// Refuse (error[not-locked]) every agent the lock file does not list.
    #[arg(long, global = true)]
    pub(crate) locked: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the concrete version REF resolves to, as `publisher/name:version`.
    ///
    /// Order: the local cache, then the stores, then the local cache again
    /// (only the local cache with --local). A path prints itself, absolute.
    Resolve {
        /// The agent.
        #[arg(value_name = "REF")]
        reference: String,
        /// Ask the stores for their newest release even when a version is
        /// installed (never resolves lower than the installed one).
        #[arg(long)]
        release: bool,
        /// Bypass the stores' cached answers (GitHub caches `latest` for an hour).
        #[arg(long)]
        refresh: bool,
    },
    /// Fetch REF into the cache (if needed) and print the binary's absolute path (last stdout line).
    Pull {
        /// The agent.
        #[arg(value_name = "REF")]
        reference: String,
        /// Resolve `latest` against the stores' newest release (see `resolve --release`).
        #[arg(long)]
        release: bool,
        /// Bypass the stores' cached answers (GitHub caches `latest` for an hour).
        #[arg(long)]
        refresh: bool,
    },
    /// Load REF (resolve, pull, spawn, handshake, health), print where it runs, close it.
    ///
    /// JSON: {"ref","version","pid","endpoint","load_ms"}.
    Load(LoadArgs),
    /// Load and close REF N times; print load and close latency percentiles.
    ///
    /// JSON: {"n","load_ms":{"p50","p90","max"},"close_ms":{"p50","p90","max"}}.
    Bench {
        /// The agent.
        #[arg(value_name = "REF")]
        reference: String,
        /// How many load/close rounds.
        #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        #[command(flatten)]
        spawn: SpawnArgs,
    },
    /// List installed agents (version, size, sha256, source, path).
    ///
    /// With REF, only that agent's versions (matching its version, if given).
    Ls {
        /// Only this agent.
        #[arg(value_name = "REF")]
        reference: Option<String>,
    },
    /// Remove installed versions of an agent.
    ///
    /// `rm echo:1.2.3` removes that version; `rm 'echo:^1'` every installed
    /// version matching the requirement; `rm echo --all` every version. A bare
    /// name (`rm echo`) is refused, so that nothing is removed by accident.
    Rm {
        /// The agent, with a version or requirement (or --all).
        #[arg(value_name = "REF")]
        reference: String,
        /// Remove every installed version of the agent.
        #[arg(long)]
        all: bool,
    },
    /// Remove installed versions: beyond the N highest of each agent, unused for
    /// a while, or least recently used first until the cache fits a size.
    ///
    /// With no flag, keeps the highest version of each agent (`--keep 1`).
    /// Flags combine: a version goes when any of them says so.
    Prune(PruneArgs),
    /// Publish FILE(s) as REF (a concrete version) to an OCI registry, as `oras push` would.
    ///
    /// One file: a single-layer artifact. Several files: give one --platform
    /// per file, in the same order; the tag then points at an image index.
    Push {
        /// The agent, with a concrete version (the tag).
        #[arg(value_name = "REF")]
        reference: String,
        /// The agent binary (or binaries, one per --platform).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// The platform of each FILE, in order (os/arch, e.g. linux/amd64).
        #[arg(long, value_name = "OS/ARCH", value_parser = parse_platform)]
        platform: Vec<Platform>,
        /// The registry, `host[:port][/prefix]` (default: $AGENT_REGISTRY).
        #[arg(long, value_name = "R", env = "AGENT_REGISTRY")]
        registry: String,
        /// Sign each binary with this minisign secret key (`agentctl keygen`
        /// or `minisign -G -W`) and push the signature as a second layer.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Resolve each REF and pin it in the lock file (agents.lock): version and,
    /// per platform, sha256, size, store and signer.
    ///
    /// Re-running changes only what changed: a ref already locked with the
    /// same requested version keeps its version (use --update to move it).
    /// With no REF, re-locks every entry of the file (adding missing platforms).
    Lock {
        /// The agents to lock (`publisher/name[:requirement]`).
        #[arg(value_name = "REF")]
        references: Vec<String>,
        /// The platforms to lock (os/arch, repeatable; default: this one).
        #[arg(long, value_name = "OS/ARCH", value_parser = parse_platform)]
        platform: Vec<Platform>,
        /// Move this ref to its newest match (repeatable).
        #[arg(long, value_name = "REF")]
        update: Vec<String>,
    },
    /// Print the effective settings and where each came from (file, env, default).
    ///
    /// Never prints a secret: credentials show as set or unset.
    Config,
    /// Check the home, the configuration, each store, the lock file and the
    /// cache; print what is wrong and how to fix it. Exit 0 only when all is well.
    Doctor,
    /// Everything known about one agent: the authoritative store and every
    /// store's versions, what `latest` resolves to and why, installed versions.
    Info {
        /// The agent.
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Write a minisign key pair (unencrypted secret key) for signing agents.
    ///
    /// Prints the public key to put in the config (`[publishers."P"] keys`).
    Keygen {
        /// The secret key file to write (the public key goes to FILE.pub).
        #[arg(long, value_name = "FILE", default_value = "agent.key")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `agentctl completions bash > ~/.local/share/bash-completion/completions/agentctl`
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command into DIR (used by `cargo xtask release`).
    #[command(hide = true)]
    Man {
        /// The output directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

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

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    #[command(flatten)]
    pub(crate) spawn: SpawnArgs,
    /// Work directory for the agent (exported as CODEFLY_AGENT_WORKDIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<PathBuf>,
    /// Extra environment for the agent (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Keep the agent running until SIGINT or SIGTERM, then close it.
    #[arg(long, conflicts_with = "for_")]
    pub(crate) hold: bool,
    /// Keep the agent running for this long (e.g. 500ms, 3s, 2m), then close it.
    #[arg(long = "for", id = "for_", value_name = "D", value_parser = parse_duration)]
    pub(crate) for_: Option<Duration>,
    /// Restart the agent when it exits (with --hold or --for): never, on-failure, always.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = RestartWhen::Never)]
    pub(crate) restart: RestartWhen,
    /// Give up after this many restarts (then exit 1 with error[agent-exited]).
    #[arg(long, value_name = "N")]
    pub(crate) max_restarts: Option<u32>,
}

/// `--restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RestartWhen {
    /// Never restart (default).
    Never,
    /// Restart when it exits with a failure (non-zero status or a signal).
    OnFailure,
    /// Restart whenever it exits.
    Always,
}

/// `--agent-logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AgentLogsMode {
    /// JSON log lines (tracing, slog, zap, hclog) become host log events with
    /// their level; other lines become info events (shown with -v).
    Parsed,
    /// Every line becomes an info event as written, JSON or not (shown with -v).
    Raw,
    /// The agent's stderr is only kept for error reports.
    Off,
}

/// Spawn settings shared by `load` and `bench`.
#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    /// How long to wait for the handshake line (default 30s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) startup_timeout: Option<Duration>,
    /// How long to wait for the gRPC connection and health (default 10s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) dial_timeout: Option<Duration>,
    /// How long close waits after SIGTERM before SIGKILL (default 30s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) grace: Option<Duration>,
    /// Serve on a unix socket in a private directory instead of loopback TCP.
    #[arg(long)]
    pub(crate) uds: bool,
    /// What becomes of the agent's stderr: parsed (host log events with their
    /// levels, shown with -v), raw (info events as written), off.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AgentLogsMode::Parsed)]
    pub(crate) agent_logs: AgentLogsMode,
    /// Sandbox network, over the configuration's policy: none (no TCP or UDP at
    /// all; the agent is reached over its unix socket) or any.
    #[arg(long, value_name = "NET", value_enum)]
    pub(crate) sandbox_network: Option<SandboxNetwork>,
    /// Sandbox: a read-only path (repeatable; replaces the configuration's list;
    /// ${HOME}, ${WORKDIR}, ${TMPDIR} expand).
    #[arg(long, value_name = "PATH")]
    pub(crate) sandbox_read: Vec<String>,
    /// Sandbox: a writable path (repeatable; replaces the configuration's list).
    #[arg(long, value_name = "PATH")]
    pub(crate) sandbox_write: Vec<String>,
    /// Run the agent unconfined, whatever the configuration says.
    #[arg(long, conflicts_with_all = ["sandbox_network", "sandbox_read", "sandbox_write"])]
    pub(crate) no_sandbox: bool,
}

/// `--sandbox-network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SandboxNetwork {
    /// No TCP or UDP to anything, the host's loopback included.
    None,
    /// The host's network.
    Any,
}

fn kind_help() -> String {
    format!("The agent kind: {}", AgentKind::allowed())
}

fn parse_kind(s: &str) -> Result<AgentKind, String> {
    s.parse()
        .map_err(|e: agent_manager::RefError| e.to_string())
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
        .map_err(|e: agent_manager::RefError| e.to_string())
}

/// `500ms`, `3s`, `2m`, `1h 30m` (humantime).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
}

/// `2GiB`, `500MB`, `1.5G`, `1024` (bytes). Binary units for `KiB`/`MiB`/`GiB`/`TiB`
/// and for the bare `K`/`M`/`G`/`T`; decimal for `kB`/`MB`/`GB`/`TB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 2GiB, 500MB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bytes = (n * mult as f64).round() as u64;
    Ok(bytes)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agentctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn load_flags() {
        let cli = parse(&[
            "load",
            "echo:1.0.0",
            "--startup-timeout",
            "3s",
            "--dial-timeout",
            "500ms",
            "--grace",
            "2m",
            "--workdir",
            "/tmp",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--uds",
            "--for",
            "1s",
            "--json",
            "--home",
            "/h",
            "--kind",
            "module",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.home.as_deref(), Some(std::path::Path::new("/h")));
        assert_eq!(cli.kind, Some(AgentKind::Module));
        let Command::Load(l) = cli.command else {
            panic!("not load")
        };
        assert_eq!(l.spawn.startup_timeout, Some(Duration::from_secs(3)));
        assert_eq!(l.spawn.dial_timeout, Some(Duration::from_millis(500)));
        assert_eq!(l.spawn.grace, Some(Duration::from_secs(120)));
        assert!(l.spawn.uds);
        assert_eq!(
            l.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(l.for_, Some(Duration::from_secs(1)));
        assert!(!l.hold);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["load", "x", "--hold", "--for", "1s"][..],
            &["load", "x", "--for", "soon"],
            &["load", "x", "--env", "NOEQUALS"],
            &["bench", "x", "-n", "0"],
            &["prune", "--keep", "0"],
            &["prune", "--max-size", "lots"],
            &["completions", "tcsh"],
            &["load", "x", "--restart", "sometimes"],
            &["load", "x", "--agent-logs", "loud"],
            &["ls", "--kind", "robot"],
            &["-v", "-q", "ls"],
            &["frobnicate"],
            &["resolve"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn push_platforms_repeat() {
        let cli = parse(&[
            "push",
            "echo:1.0.0",
            "a",
            "b",
            "--platform",
            "linux/amd64",
            "--platform",
            "darwin/arm64",
            "--registry",
            "127.0.0.1:5000",
        ])
        .unwrap();
        let Command::Push {
            files,
            platform,
            registry,
            ..
        } = cli.command
        else {
            panic!("not push")
        };
        assert_eq!(files.len(), 2);
        assert_eq!(platform[1].to_string(), "darwin/arm64");
        assert_eq!(registry, "127.0.0.1:5000");
    }

    #[test]
    fn sizes_accept_the_documented_forms() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size(" 10 KiB ").unwrap(), 10 << 10);
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("2 parsecs").is_err());
    }

    #[test]
    fn lock_and_prune_flags() {
        let cli = parse(&[
            "lock",
            "acme/echo:^1",
            "b",
            "--platform",
            "linux/arm64",
            "--update",
            "b",
            "--lockfile",
            "x.lock",
        ])
        .unwrap();
        assert_eq!(
            cli.lockfile.as_deref(),
            Some(std::path::Path::new("x.lock"))
        );
        let Command::Lock {
            references,
            platform,
            update,
        } = cli.command
        else {
            panic!("not lock")
        };
        assert_eq!(references, ["acme/echo:^1", "b"]);
        assert_eq!(platform[0].to_string(), "linux/arm64");
        assert_eq!(update, ["b"]);
        let cli = parse(&[
            "prune",
            "--unused-for",
            "30d",
            "--max-size",
            "2GiB",
            "--dry-run",
        ])
        .unwrap();
        let Command::Prune(p) = cli.command else {
            panic!("not prune")
        };
        assert_eq!(p.unused_for, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(p.max_size, Some(2 << 30));
        assert!(p.dry_run && p.keep.is_none());
        assert!(parse(&["--locked", "load", "x"]).unwrap().locked);
    }

    #[test]
    fn verbosity_counts() {
        assert_eq!(parse(&["-vv", "ls"]).unwrap().verbose, 2);
        assert!(parse(&["ls", "-q"]).unwrap().quiet);
    }
}
