//! `cargo xtask fuzz [--minutes N] [--target NAME]…`: runs each cargo-fuzz
//! target for N minutes (default 1) and prints executions and findings.
//!
//! Each target lives in a crate's own `fuzz/` project (its own `[workspace]`,
//! excluded from the main one); it runs as
//! `cargo +nightly fuzz run TARGET corpus/TARGET [seeds/TARGET] -- -max_total_time=S`
//! in that directory. The corpus grows in `fuzz/corpus/` (git-ignored); the
//! committed starting inputs are in `fuzz/seeds/`. A crash is saved by libFuzzer
//! under `fuzz/artifacts/TARGET/`; its path is printed. Needs a nightly
//! toolchain; installs cargo-fuzz (`cargo install --locked cargo-fuzz`) if it is
//! missing. Not run in CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// `(fuzz project directory, target)`, in the order they run.
const TARGETS: &[(&str, &str)] = &[
    ("crates/agent-ref/fuzz", "parse_ref"),
    ("crates/agent-spawn/fuzz", "handshake"),
    ("crates/agent-store-oci/fuzz", "select_layer"),
    ("crates/agent-store-github/fuzz", "extract"),
    ("crates/agent-store/fuzz", "minisig"),
    ("crates/agent-manager/fuzz", "lockfile"),
];

/// What one run produced.
#[derive(Debug, Default)]
struct Outcome {
    executions: Option<u64>,
    per_second: Option<u64>,
    new_units: Option<u64>,
    corpus: usize,
    findings: Vec<PathBuf>,
    exit_ok: bool,
    log: PathBuf,
}

/// Entry point of `cargo xtask fuzz`.
pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let mut minutes: f64 = 1.0;
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => {
                let v = it.next().context("--minutes needs a value")?;
                minutes = v
                    .parse()
                    .with_context(|| format!("--minutes {v:?} is not a number"))?;
                if !minutes.is_finite() || minutes <= 0.0 {
                    bail!("--minutes must be a positive number");
                }
            }
            "--target" => {
                let v = it.next().context("--target needs a name")?;
                only.extend(v.split(',').map(str::to_owned));
            }
            "--list" => {
                for (dir, t) in TARGETS {
                    println!("{t}\t{dir}");
                }
                return Ok(());
            }
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask fuzz [--minutes N] [--target NAME[,NAME]]… [--list]\n\
                     targets: {}",
                    TARGETS
                        .iter()
                        .map(|(_, t)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; try `cargo xtask fuzz --help`"),
        }
    }
    for name in &only {
        if !TARGETS.iter().any(|(_, t)| t == name) {
            bail!("no fuzz target {name:?}; try `cargo xtask fuzz --list`");
        }
    }
    let chosen: Vec<(&str, &str)> = TARGETS
        .iter()
        .copied()
        .filter(|(_, t)| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    ensure_cargo_fuzz()?;

    // Rounded to whole seconds; at least one.
    let seconds = ((minutes * 60.0).round() as u64).max(1);
    let root = crate::root();
    let logs = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("fuzz-logs");
    fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;

    let mut results = Vec::new();
    for (dir, target) in &chosen {
        println!("fuzz: {target} for {seconds} s (in {dir}) …");
        let started = Instant::now();
        let outcome = run_target(&root.join(dir), target, seconds, &logs)?;
        println!(
            "fuzz: {target} done in {:.0} s: {} executions, {} finding(s)",
            started.elapsed().as_secs_f64(),
            show(outcome.executions),
            outcome.findings.len()
        );
        results.push((*target, outcome));
    }

    println!();
    println!(
        "{:<14} {:>14} {:>10} {:>8} {:>8}  findings",
        "target", "executions", "exec/s", "new", "corpus"
    );
    let mut failed = Vec::new();
    for (target, o) in &results {
        let findings = if o.findings.is_empty() {
            if o.exit_ok {
                "none".to_owned()
            } else {
                format!("run failed; see {}", o.log.display())
            }
        } else {
            o.findings
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{target:<14} {:>14} {:>10} {:>8} {:>8}  {findings}",
            show(o.executions),
            show(o.per_second),
            show(o.new_units),
            o.corpus
        );
        if !o.findings.is_empty() || !o.exit_ok {
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} found a failure (inputs above; reproduce with \
             `cargo +nightly fuzz run TARGET ARTIFACT` in the target's fuzz directory)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// Installs cargo-fuzz when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz (cargo install --locked cargo-fuzz)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install --locked cargo-fuzz failed ({status})");
    }
    Ok(())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn run_target(dir: &Path, target: &str, seconds: u64, logs: &Path) -> Result<Outcome> {
    let corpus = dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let before = files_in(&artifacts);
    let log = logs.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;

    // `cargo` from PATH (the rustup proxy understands `+nightly`; the `CARGO`
    // that runs xtask is a toolchain's own binary and does not).
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .stdout(log_file.try_clone().context("log file")?)
        .stderr(log_file);
    let status = cmd
        .status()
        .with_context(|| format!("running cargo +nightly fuzz run {target}"))?;

    let text = fs::read_to_string(&log).unwrap_or_default();
    let stat = |key: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut findings: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    // libFuzzer names the input it saved; keep it even if it went elsewhere.
    for line in text.lines() {
        if let Some(rest) = line.split("Test unit written to ").nth(1) {
            let p = dir.join(rest.trim());
            if !findings.contains(&p) {
                findings.push(p);
            }
        }
    }
    Ok(Outcome {
        executions: stat("stat::number_of_executed_units"),
        per_second: stat("stat::average_exec_per_sec"),
        new_units: stat("stat::new_units_added"),
        corpus: files_in(&corpus).len(),
        findings,
        exit_ok: status.success(),
        log,
    })
}
