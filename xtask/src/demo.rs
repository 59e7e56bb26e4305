//! `cargo xtask demo`: build the example agent, install it through the
//! verified installer, load it through the facade, call it, close it.
//!
//! Works on a fresh machine: no store, no network, nothing but cargo. The
//! home is `$CODEFLY_HOME`, else `target/demo-home` in the workspace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_manager::store::Expected;
use agent_manager::{AgentHome, AgentRef, Manager};
use anyhow::{Context, Result, bail};

/// Runs the demo; `args` may hold `--message TEXT`.
pub(crate) fn demo(args: &[String]) -> Result<()> {
    let mut message = "hello from cargo xtask demo".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--message" => message = it.next().context("--message needs a value")?.clone(),
            "-h" | "--help" => {
                println!("usage: cargo xtask demo [--message TEXT]");
                return Ok(());
            }
            other => bail!("unknown demo argument {other:?} (try --help)"),
        }
    }

    let (binary, agentctl) = build_echo()?;
    let home = match std::env::var_os("CODEFLY_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => crate::root().join("target").join("demo-home"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(&binary, &agentctl, &home, &message))
}

/// `cargo build --release -p agent-echo`, returning the executable's path.
/// Builds the example agent and `agentctl` (release) in one cargo call and
/// returns their paths, so the demo's "try:" lines name a binary that exists.
fn build_echo() -> Result<(PathBuf, PathBuf)> {
    eprintln!("demo: building agent-echo and agentctl (release)…");
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "agent-echo",
        "--bin",
        "agent-echo",
        "-p",
        "agent-manager-cli",
        "--bin",
        "agentctl",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("building agent-echo and agentctl failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let executable = |name: &str| {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo did not report the {name} executable"))
    };
    Ok((executable("agent-echo")?, executable("agentctl")?))
}

async fn run(binary: &Path, agentctl: &Path, home_dir: &Path, message: &str) -> Result<()> {
    let home = AgentHome::new(home_dir);
    let agent = AgentRef::parse(&format!("codefly.dev/echo:{}", agent_echo::VERSION))?;

    // No stores: the demo needs nothing but the binary we just built.
    let manager = Manager::builder()
        .home(home.clone())
        .stores(Vec::new())
        .build()?;

    let installed = manager
        .installer()
        .install_file(
            &agent,
            &format!("local:{}", binary.display()),
            &Expected::default(),
            binary,
        )
        .await
        .context("installing agent-echo into the demo home")?;
    println!("installed  {agent}");
    println!("  path     {}", installed.path.display());
    println!("  sha256   {}", installed.sha256);
    println!("  size     {} bytes", installed.size);

    let started = Instant::now();
    let conn = manager
        .load(&agent)
        .await
        .with_context(|| format!("loading {agent}"))?;
    let load_time = started.elapsed();
    println!("loaded     {agent}");
    println!("  pid      {}", conn.pid());
    println!("  endpoint {}", conn.endpoint());
    println!("  load     {:.3} ms", load_time.as_secs_f64() * 1000.0);

    let started = Instant::now();
    let reply = EchoClient::new(conn.channel())
        .echo(EchoRequest {
            message: message.to_owned(),
        })
        .await
        .context("calling Echo")?
        .into_inner();
    println!(
        "echo       {:?} -> {:?} in {:.3} ms",
        message,
        reply.message,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let started = Instant::now();
    let status = conn.close().await;
    manager.cleanup_all().await;
    println!(
        "closed     ({status}) in {:.3} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    println!();
    println!("where things are:");
    println!("  agent binary    {}", installed.path.display());
    println!(
        "  install record  {}",
        manager.installer().record_path(&agent)?.display()
    );
    println!(
        "  agent home      {}  (CODEFLY_HOME)",
        home.root().display()
    );
    // Name the agentctl just built, so the lines run as printed on a fresh
    // machine; `cargo install` puts it on the PATH for good.
    let ctl = agentctl.display();
    let root = home.root().display();
    println!("try:");
    println!("  {ctl} --home {root} ls");
    println!("  {ctl} --home {root} load echo --hold");
    println!("(to put agentctl on your PATH: cargo install --locked --path crates/agent-cli)");
    Ok(())
}
