//! The top-level parser: the global flags and the subcommand
//! ([`crate::commands::Command`]).

use std::path::PathBuf;

use agent_manager::reference::AgentKind;
use clap::Parser;

use crate::commands::Command;
use crate::values::parse_kind;

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

fn kind_help() -> String {
    format!("The agent kind: {}", AgentKind::allowed())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let Command::Push(crate::commands::push::PushArgs {
            files,
            platform,
            registry,
            ..
        }) = cli.command
        else {
            panic!("not push")
        };
        assert_eq!(files.len(), 2);
        assert_eq!(platform[1].to_string(), "darwin/arm64");
        assert_eq!(registry, "127.0.0.1:5000");
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
        let Command::Lock(crate::commands::lock::LockArgs {
            references,
            platform,
            update,
        }) = cli.command
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
