//! `cargo xtask <job>`: everything that is more than one cargo command.
//!
//! - `test`: fmt check, clippy `-D warnings`, rustdoc `-D warnings`, a publish
//!   dry run, every test, `cargo deny`.
//! - `demo`: build the example agent, install it, load it, call it, close it.
//! - `bench`: the measured figures, side by side (`target/bench/bench.json`).
//! - `bench-pull`: a verified, durable pull against its floor (`target/bench/pull.json`).
//! - `release`: release archives and `SHA256SUMS`, optionally pushed to a registry.
//! - `fuzz`: every cargo-fuzz target for a few minutes (nightly; not in CI).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;
mod bench_fleet;
mod bench_load;
mod bench_pull;
mod bench_sandbox;
mod bench_start;
mod bench_store;
mod darwin;
mod demo;
mod fuzz;
mod go;
mod measure;
mod phases;
mod release;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (job, rest) = match args.split_first() {
        Some((j, r)) => (j.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match job {
        "test" => test(rest),
        "check-darwin" => darwin::check_darwin(rest),
        "demo" => demo::demo(rest),
        "bench" => bench::bench(rest),
        "bench-run" => bench::bench_run(rest),
        "bench-sandbox" => bench_sandbox::bench_sandbox(rest),
        "bench-pull" => bench_pull::bench_pull(rest),
        "bench-pull-run" => bench_pull::bench_pull_run(rest),
        "bench-pull-anchor" => bench_pull::anchor(rest),
        "release" => release::release(rest),
        "fuzz" => fuzz::fuzz(rest),
        "help" | "-h" | "--help" => {
            println!(
                "usage: cargo xtask <test|demo|bench|release|fuzz> [args]\n  \
                 test [--no-lint]   fmt, clippy and rustdoc -D warnings, publish dry run, every test, cargo deny\n  \
                 demo               build, install, load, call and close the example agent\n  \
                 bench [--quick] [-n N] [--agent PATH] [--pull-mib M]\n  \
                 bench-pull [--mib M] [--runs N] [--old-agentctl PATH]\n  \
                 bench-sandbox [-n N] [--agent PATH]\n  \
                 release [--registry R] [--publisher P] [--out DIR]\n  \
                 fuzz [--minutes N] [--target NAME]"
            );
            Ok(())
        }
        other => Err(anyhow::anyhow!(
            "unknown job {other:?}; try `cargo xtask help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {step}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--no-lint");
    if !quick {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--check"]);
        run("fmt", fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run("clippy", clippy)?;
        // Broken intra-doc links and malformed docs fail, as docs.rs would show them.
        let mut docs = cargo();
        docs.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        run("doc", docs)?;
        // Every published crate packages: manifests complete, no unpublished
        // dependency left, every file it needs inside it. `--no-verify`: the
        // build is the one above, not a second one from the packaged sources.
        let mut package = cargo();
        package.args([
            "publish",
            "--workspace",
            "--dry-run",
            "--no-verify",
            "--locked",
            "--allow-dirty",
        ]);
        run("publish dry run", package)?;
    }
    let mut t = cargo();
    t.args(["test", "--workspace", "--all-targets"]);
    run("test", t)?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run("doctest", doc)?;
    let mut portable = cargo();
    portable
        .args([
            "test",
            "-p",
            "agent-process",
            "-p",
            "agent-spawn",
            "-p",
            "agent-serve",
        ])
        .env("RUSTFLAGS", "--cfg agent_portable")
        .env("CARGO_TARGET_DIR", root().join("target").join("portable"));
    run("test (portable process backend)", portable)?;
    // The facade's lifecycle (load, close, restart, the registry) on the same backend.
    let mut facade = cargo();
    facade
        .args(["test", "-p", "agent-tests", "--test", "it", "manager::"])
        .env("RUSTFLAGS", "--cfg agent_portable")
        .env("CARGO_TARGET_DIR", root().join("target").join("portable"));
    run("test (facade, portable process backend)", facade)?;
    darwin::check_darwin(&[])?;
    if !quick {
        let mut deny = cargo();
        deny.args(["deny", "check", "licenses", "bans", "sources"]);
        run("deny", deny)?;
    }
    Ok(())
}
