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

    /// The agent kind: service (also service:runtime|builder|code), application, module.
    #[arg(long, global = true, value_name = "KIND", value_parser = parse_kind)]
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
    /// Remove old versions, keeping the N highest (semver order) of each agent.
    Prune {
        /// How many versions of each agent to keep.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
    },
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
    },
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
    fn verbosity_counts() {
        assert_eq!(parse(&["-vv", "ls"]).unwrap().verbose, 2);
        assert!(parse(&["ls", "-q"]).unwrap().quiet);
    }
}
