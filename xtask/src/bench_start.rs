//! `cargo xtask bench`'s start section: the same agent linked two ways, the
//! default position-independent executable and the same with packed relative
//! relocations (`-z pack-relative-relocs`, `DT_RELR`), loaded by ref through
//! the manager, alternating: what the agent's own start costs, and what an
//! agent author gains from the link flag.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{Args, Rows, cpu_ms, ms};
use crate::bench_load::{home_with, timed_load};
use crate::measure::{Summary, round3};
use crate::{cargo, root};

/// The linker flag an agent author adds to get packed relative relocations.
pub(crate) const RELR_RUSTFLAGS: &str = "-C link-arg=-Wl,-z,pack-relative-relocs";

fn relr_dir() -> PathBuf {
    root().join("target/relr")
}

fn relr_agent() -> PathBuf {
    relr_dir().join("release/agent-echo")
}

fn relr_skip_file() -> PathBuf {
    relr_dir().join("skipped.txt")
}

/// Builds agent-echo with packed relative relocations into `target/relr`,
/// or records why not (a linker or platform without them).
pub(crate) fn build_relr_agent() {
    let result = if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let mut build = cargo();
        build
            .args(["build", "--release", "-q", "-p", "agent-echo"])
            .env("RUSTFLAGS", RELR_RUSTFLAGS)
            .env("CARGO_TARGET_DIR", relr_dir());
        crate::run("build agent-echo with packed relative relocations", build)
    } else {
        Err(anyhow::anyhow!(
            "packed relative relocations are an ELF and glibc feature"
        ))
    };
    match result {
        Ok(()) => {
            let _ = std::fs::remove_file(relr_skip_file());
        }
        Err(why) => {
            let why = format!("{why:#}");
            eprintln!("xtask: skipped: agent-echo with packed relative relocations: {why}");
            let _ = std::fs::remove_file(relr_agent());
            let _ = std::fs::create_dir_all(relr_dir());
            let _ = std::fs::write(relr_skip_file(), why);
        }
    }
}

/// The relocation entries the dynamic loader applies at start (`RELA` +
/// `RELR` bytes of the dynamic section), from `readelf -d`.
fn relocation_bytes(path: &Path) -> Result<u64> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(path)
        .output()
        .context("running readelf")?;
    if !out.status.success() {
        bail!("readelf -d {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut bytes = 0;
    for line in text.lines() {
        if line.contains("(RELASZ)") || line.contains("(RELRSZ)") {
            bytes += line
                .split_whitespace()
                .rev()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(bytes)
}

/// Loads by ref (then close) the default agent-echo and the one with packed
/// relative relocations, alternating `n` times: latency, and the agent's
/// CPU over its whole life (its exit is reaped before `close` returns).
pub(crate) async fn start_section(
    args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let relr = relr_agent();
    if !relr.is_file() {
        let why = std::fs::read_to_string(relr_skip_file())
            .unwrap_or_else(|_| "not built (run `cargo xtask bench`, which builds it)".to_owned());
        rows.push((
            "agent start, packed relative relocations".into(),
            format!("skipped: {why}"),
            String::new(),
        ));
        return Ok(());
    }
    eprintln!(
        "bench: agent start, default vs packed relative relocations × {}",
        args.n
    );
    /// One build of the agent, installed in a home of its own, and what its loads measured.
    struct Variant {
        label: &'static str,
        path: PathBuf,
        _home: tempfile::TempDir,
        manager: agent_manager::Manager,
        r: agent_manager::AgentRef,
        samples: Vec<std::time::Duration>,
        agent_cpu_ms: f64,
    }
    let mut variants = Vec::new();
    for (label, path) in [
        ("default (PIE)", echo.to_owned()),
        ("packed relocations", relr),
    ] {
        let (home, manager, r) = home_with(&path, "start").await?;
        variants.push(Variant {
            label,
            path,
            _home: home,
            manager,
            r,
            samples: Vec::with_capacity(args.n),
            agent_cpu_ms: 0.0,
        });
    }
    for _ in 0..args.n {
        for v in &mut variants {
            let c0 = cpu_ms(libc::RUSAGE_CHILDREN);
            let (conn, took, _) = timed_load(&v.manager, &v.r).await?;
            conn.close().await;
            v.agent_cpu_ms += cpu_ms(libc::RUSAGE_CHILDREN) - c0;
            v.samples.push(took);
        }
    }
    let mut json_rows = Vec::new();
    for v in &variants {
        let (label, samples) = (v.label, &v.samples);
        #[allow(clippy::cast_precision_loss)]
        let cpu = v.agent_cpu_ms / args.n.max(1) as f64;
        let relocs = relocation_bytes(&v.path).unwrap_or(0);
        let s = Summary::of(samples);
        rows.push((
            format!("load by ref agent-echo, {label}"),
            ms(&s),
            format!(
                "agent CPU {cpu:.3} ms over its life; {} KiB of relocations",
                relocs / 1024
            ),
        ));
        json_rows.push(json!({
            "variant": label, "load_by_ref_ms": s.json(),
            "agent_cpu_ms_per_life": round3(cpu), "relocation_bytes": relocs,
        }));
    }
    report.insert("start".into(), Value::Array(json_rows));
    Ok(())
}
