//! The Go side of `cargo xtask bench`: the Go loader, faithful to the
//! original, and a grpc-go agent shaped like its `agents.Serve` (sources in
//! `xtask/go-loader/`), built with Debian's Go toolchain and
//! `golang-google-grpc-dev` in GOPATH mode (no module download). When either
//! is missing the bench says "skipped: …" and measures the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::root;

/// Where Debian's Go packages live (GOPATH layout).
const GOCODE: &str = "/usr/share/gocode";

fn out_dir() -> PathBuf {
    root().join("target/bench/go")
}

fn skip_file() -> PathBuf {
    out_dir().join("skipped.txt")
}

fn goplugin_skip_file() -> PathBuf {
    out_dir().join("goplugin-skipped.txt")
}

/// The built Go programs.
pub(crate) struct GoPrograms {
    pub(crate) agent: PathBuf,
    pub(crate) loader: PathBuf,
    /// hashicorp/go-plugin's host and plugin (host, plugin), or why not.
    pub(crate) goplugin: Result<(PathBuf, PathBuf), String>,
}

/// Builds both programs, or records why not (read back by [`built`]).
pub(crate) fn build_all() {
    let dir = out_dir();
    let result = std::fs::create_dir_all(&dir)
        .context("creating target/bench/go")
        .and_then(|()| try_build(&dir));
    match result {
        Ok(()) => {
            let _ = std::fs::remove_file(skip_file());
            match try_build_goplugin(&dir) {
                Ok(()) => {
                    let _ = std::fs::remove_file(goplugin_skip_file());
                }
                Err(why) => {
                    let why = format!("{why:#}");
                    eprintln!("xtask: skipped: go-plugin anchor: {why}");
                    let _ = std::fs::write(goplugin_skip_file(), why);
                }
            }
        }
        Err(why) => {
            let why = format!("{why:#}");
            eprintln!("xtask: skipped: Go loader and grpc-go agent: {why}");
            for p in ["agent", "loader"] {
                let _ = std::fs::remove_file(dir.join(p));
            }
            let _ = std::fs::write(skip_file(), why);
        }
    }
}

fn try_build(dir: &Path) -> Result<()> {
    let grpc = Path::new(GOCODE).join("src/google.golang.org/grpc");
    if !grpc.is_dir() {
        bail!(
            "{} is missing (apt-get install golang-google-grpc-dev)",
            grpc.display()
        );
    }
    go_build(dir, &["agent", "loader"])
}

fn try_build_goplugin(dir: &Path) -> Result<()> {
    let gp = Path::new(GOCODE).join("src/github.com/hashicorp/go-plugin");
    if !gp.is_dir() {
        bail!(
            "{} is missing (apt-get install golang-github-hashicorp-go-plugin-dev)",
            gp.display()
        );
    }
    go_build(dir, &["goplugin-host", "goplugin-plugin"])
}

fn go_build(dir: &Path, programs: &[&str]) -> Result<()> {
    let go = which("go").context("`go` is not on PATH (apt-get install golang-go)")?;
    let cache = root().join("target/bench/go-cache");
    for prog in programs {
        let src = root().join("xtask/go-loader").join(prog);
        let mut cmd = Command::new(&go);
        cmd.args(["build", "-o"])
            .arg(dir.join(prog))
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", GOCODE)
            .env("GOFLAGS", "")
            .env("GOCACHE", &cache);
        eprintln!("xtask: build Go {prog}: {cmd:?}");
        let out = cmd
            .output()
            .with_context(|| format!("running {}", go.display()))?;
        if !out.status.success() {
            bail!(
                "go build {prog} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The programs [`build_all`] built, or why there are none.
pub(crate) fn built() -> Result<GoPrograms, String> {
    let dir = out_dir();
    let (host, plugin) = (dir.join("goplugin-host"), dir.join("goplugin-plugin"));
    let goplugin = if host.is_file() && plugin.is_file() {
        Ok((host, plugin))
    } else {
        Err(std::fs::read_to_string(goplugin_skip_file())
            .unwrap_or_else(|_| "not built".to_owned()))
    };
    let programs = GoPrograms {
        agent: dir.join("agent"),
        loader: dir.join("loader"),
        goplugin,
    };
    if programs.agent.is_file() && programs.loader.is_file() {
        return Ok(programs);
    }
    Err(std::fs::read_to_string(skip_file())
        .unwrap_or_else(|_| "not built (run `cargo xtask bench`, which builds them)".to_owned()))
}

/// What the Go loader measured.
pub(crate) struct GoLoads {
    pub(crate) load_ms: Vec<f64>,
    pub(crate) close_ms: Vec<f64>,
    pub(crate) phases: Value,
    /// Host CPU per load (the loader's getrusage), in ms, when it reports one.
    pub(crate) host_cpu_ms: Option<f64>,
}

/// Runs the Go loader `n` times on the grpc-go agent.
pub(crate) fn run_loader(go: &GoPrograms, n: usize) -> Result<GoLoads> {
    run_json(&go.loader, "-agent", &go.agent, n)
}

/// Runs go-plugin's host `n` times on its plugin.
pub(crate) fn run_goplugin(host: &Path, plugin: &Path, n: usize) -> Result<GoLoads> {
    run_json(host, "-plugin", plugin, n)
}

fn run_json(program: &Path, flag: &str, target: &Path, n: usize) -> Result<GoLoads> {
    let out = Command::new(program)
        .arg(flag)
        .arg(target)
        .arg("-n")
        .arg(n.to_string())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("the Go loader's JSON")?;
    let nums = |key: &str| -> Result<Vec<f64>> {
        v[key]
            .as_array()
            .with_context(|| format!("no {key} in the Go loader's report"))?
            .iter()
            .map(|x| x.as_f64().context("a number"))
            .collect()
    };
    Ok(GoLoads {
        load_ms: nums("load_ms")?,
        close_ms: nums("close_ms")?,
        phases: v["phases_p50_ms"].clone(),
        host_cpu_ms: v["host_cpu_ms_per_load"].as_f64(),
    })
}
