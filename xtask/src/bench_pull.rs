//! `cargo xtask bench-pull`: a verified, durable pull of one large blob,
//! against what no verified pull of one stream can beat.
//!
//! One blob (`--mib`, 256 MiB by default) is served by a real registry
//! (Debian's `docker-registry`) and by the HTTP test server, and pulled by
//! `agentctl pull` from each (fresh home every run: sha256 verified, fsynced,
//! renamed into the cache). Beside it, in the same run and alternating:
//!
//! - `curl -o` of the same blob URL (the transfer alone, not durable);
//! - `openssl dgst -sha256` of the same bytes from the page cache (the hash
//!   alone, SHA-NI where the CPU has it);
//! - the floor: the slower of those two;
//! - the Go loader's way, written in Rust (`xtask bench-pull-anchor`): GET,
//!   32 KiB copies into a temp file and sha256 on one thread, fsync, rename.
//!
//! Every row is the p50 of `--runs` runs with the peak RSS of the pulling
//! process (GNU `time`). `--old-agentctl PATH` adds rows for another build
//! of `agentctl` (the code before a change), run alternately with this one.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::measure::{ChildRun, median, round3, run_child, write_noise};
use crate::root;

/// What to pull and how often.
#[derive(Debug, Clone)]
pub(crate) struct PullOptions {
    pub(crate) mib: u64,
    pub(crate) runs: usize,
    /// Another `agentctl` build, measured beside this one.
    pub(crate) old_agentctl: Option<PathBuf>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            mib: 256,
            runs: 5,
            old_agentctl: None,
        }
    }
}

/// The rows (figure, measured, target) and the same figures as JSON.
pub(crate) struct PullReport {
    pub(crate) rows: Vec<(String, String, String)>,
    pub(crate) json: Value,
}

fn parse(args: &[String]) -> Result<PullOptions> {
    let mut o = PullOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--mib" => o.mib = value()?.parse().context("--mib")?,
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--old-agentctl" => o.old_agentctl = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown bench-pull argument {other:?} (use --mib M, --runs N, --old-agentctl PATH)"
            ),
        }
    }
    if o.runs == 0 || o.mib == 0 {
        bail!("--runs and --mib must be at least 1");
    }
    Ok(o)
}

/// `cargo xtask bench-pull`: builds the release `agentctl` and `xtask`, then
/// runs `xtask bench-pull-run` (release) with the same arguments.
pub(crate) fn bench_pull(args: &[String]) -> Result<()> {
    parse(args)?;
    let mut build = crate::cargo();
    build.args([
        "build",
        "--release",
        "-q",
        "-p",
        "agent-manager-cli",
        "-p",
        "xtask",
    ]);
    crate::run("build release binaries", build)?;
    let mut run = Command::new(root().join("target/release/xtask"));
    run.arg("bench-pull-run").args(args);
    crate::run("bench-pull", run)
}

/// `xtask bench-pull-run`: the measurements, printed as a table and written
/// to `target/bench/pull.json`.
pub(crate) fn bench_pull_run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let agentctl = root().join("target/release/agentctl");
    if !agentctl.is_file() {
        bail!(
            "{} is missing: run `cargo xtask bench-pull`, which builds it",
            agentctl.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(pull_rows(&agentctl, &opts))?;
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("pull.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report.json)? + "\n")?;
    let rows = &report.rows;
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("{:<w0$}  {:<w1$}  target", "figure", "measured");
    for (a, b, c) in rows {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }
    println!("\nwritten to {}", out.display());
    Ok(())
}

/// p50 figures of one kind of run.
#[derive(Debug, Clone, Copy)]
struct Figures {
    ms: f64,
    cpu_ms: f64,
    max_rss_mib: f64,
}

impl Figures {
    #[allow(clippy::cast_precision_loss)]
    fn of(runs: &[ChildRun]) -> Figures {
        let ms: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect();
        let cpu: Vec<f64> = runs.iter().map(|r| r.cpu.as_secs_f64() * 1e3).collect();
        Figures {
            ms: median(&ms),
            cpu_ms: median(&cpu),
            max_rss_mib: runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        }
    }

    fn json(&self) -> Value {
        json!({ "p50_ms": round3(self.ms), "cpu_ms": round3(self.cpu_ms), "max_rss_mib": round3(self.max_rss_mib) })
    }

    fn show(&self, mib: u64) -> String {
        #[allow(clippy::cast_precision_loss)]
        let rate = mib as f64 / (self.ms / 1e3);
        format!(
            "p50 {:.0} ms, {rate:.0} MiB/s, RSS {:.1} MiB, CPU {:.0} ms",
            self.ms, self.max_rss_mib, self.cpu_ms
        )
    }
}

/// Writes back everything dirty, so that no run pays for an earlier run's
/// writes (not timed).
#[allow(unsafe_code)]
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Runs one timed child after [`settle`], off the async workers.
fn timed(program: &Path, args: &[&OsStr], env: &[(&str, String)]) -> Result<ChildRun> {
    tokio::task::block_in_place(|| {
        settle();
        run_child(program, args, env)
    })
}

/// The bench; see the [module](self) documentation. Starts its own registry
/// and HTTP server; `agentctl` is the build under test.
pub(crate) async fn pull_rows(agentctl: &Path, opts: &PullOptions) -> Result<PullReport> {
    use agent_manager::stores::oci::{RegistryConfig, push};
    use agent_manager::{AgentRef, Platform};

    let mib = opts.mib;
    let work = tempfile::Builder::new()
        .prefix("bench-pull-")
        .tempdir()
        .context("a work directory")?;
    let blob = work.path().join("big.bin");
    write_noise(&blob, mib)?;
    let bytes = std::fs::read(&blob).context("reading the blob back")?;
    let digest = hex::encode(Sha256::digest(&bytes));
    // What the installer's sha256 (the sha2 crate) costs here, in its chunks.
    let in_memory: Vec<f64> = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            let mut h = Sha256::new();
            bytes.chunks(256 << 10).for_each(|c| h.update(c));
            std::hint::black_box(h.finalize());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let in_memory = median(&in_memory);

    // The registry.
    let registry = agent_testkit::registry::LocalRegistry::start()?;
    let config =
        RegistryConfig::parse(&registry.addr().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r: AgentRef = "codefly.dev/big:1.0.0".parse()?;
    let pushed = push(&config, &r, &[(blob.clone(), None)])
        .await
        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
    let layer = &pushed.layers.first().context("no layer pushed")?.digest;
    let oci_path = format!("/v2/{}/blobs/{layer}", config.repository(&r));
    let oci_url = format!("http://{}{oci_path}", registry.addr());

    // The HTTP store, serving the same bytes from memory.
    let server = agent_testkit::http::TestServer::start();
    let store = agent_manager::stores::http::HttpStore::new(format!("{}/store", server.url()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let http_url = store
        .artifact_url(&r, &Platform::current())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let http_path = http_url
        .strip_prefix(&server.url())
        .context("the artifact URL is not below the server's")?
        .to_owned();
    server.put(&format!("{http_path}.sha256"), format!("{digest}  big\n"));
    server.put(&http_path, bytes);

    // The hash floor reads the blob from the page cache.
    std::io::copy(&mut std::fs::File::open(&blob)?, &mut std::io::sink())?;

    let xtask = std::env::current_exe().context("this executable")?;
    let curl = Path::new("/usr/bin/curl");
    let openssl = Path::new("/usr/bin/openssl");
    let home = work.path().join("home");
    let out = work.path().join("curl.out");
    let anchor_dir = work.path().join("anchor");
    std::fs::create_dir_all(&anchor_dir)?;

    let oci_env = vec![
        ("CODEFLY_AGENT_STORES", "oci".to_owned()),
        ("AGENT_REGISTRY", registry.addr().to_string()),
    ];
    let http_env = vec![
        ("CODEFLY_AGENT_STORES", "http".to_owned()),
        ("AGENT_HTTP_STORE", format!("{}/store", server.url())),
    ];
    let pull_args: [&OsStr; 5] = [
        "--home".as_ref(),
        home.as_os_str(),
        "-q".as_ref(),
        "pull".as_ref(),
        "codefly.dev/big:1.0.0".as_ref(),
    ];
    let installed = home.join("agents/services/codefly.dev/big__1.0.0");

    let builds: Vec<(&str, &Path)> = std::iter::once(("", agentctl))
        .chain(opts.old_agentctl.as_deref().map(|p| (" (old)", p)))
        .collect();
    // (label, runs) in the order they are reported.
    let mut pulls: Vec<(String, Vec<ChildRun>)> = Vec::new();
    for (tag, _) in &builds {
        pulls.push((format!("pull oci{tag}"), Vec::new()));
        pulls.push((format!("pull http{tag}"), Vec::new()));
    }
    let (mut curl_oci, mut curl_http, mut sha, mut anchor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());

    eprintln!(
        "bench-pull: {mib} MiB, {} runs, registry {}, http {}",
        opts.runs,
        registry.addr(),
        server.url()
    );
    for _ in 0..opts.runs {
        for (i, (_, program)) in builds.iter().enumerate() {
            for (j, env) in [&oci_env, &http_env].into_iter().enumerate() {
                let run = timed(program, &pull_args, env)?;
                let got = hash_file(&installed)
                    .with_context(|| format!("{} installed nothing", program.display()))?;
                if got != digest {
                    bail!("{} installed other bytes ({got})", program.display());
                }
                std::fs::remove_dir_all(&home)?;
                pulls[2 * i + j].1.push(run);
            }
        }
        for (url, runs) in [(&oci_url, &mut curl_oci), (&http_url, &mut curl_http)] {
            let args: [&OsStr; 5] = [
                "-sSf".as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
                url.as_ref(),
                "--no-progress-meter".as_ref(),
            ];
            runs.push(timed(curl, &args, &[])?);
            std::fs::remove_file(&out)?;
        }
        let args: [&OsStr; 2] = ["dgst".as_ref(), "-sha256".as_ref()];
        let args = [args[0], args[1], blob.as_os_str()];
        sha.push(timed(openssl, &args, &[])?);

        let dest = anchor_dir.join("big");
        let args: [&OsStr; 4] = [
            "bench-pull-anchor".as_ref(),
            oci_url.as_ref(),
            digest.as_ref(),
            dest.as_os_str(),
        ];
        anchor.push(timed(&xtask, &args, &[])?);
        std::fs::remove_file(&dest).context("the Go-loader-style pull installed nothing")?;
    }

    let (curl_oci, curl_http, sha, anchor) = (
        Figures::of(&curl_oci),
        Figures::of(&curl_http),
        Figures::of(&sha),
        Figures::of(&anchor),
    );
    let floor_oci = curl_oci.ms.max(sha.ms);
    let floor_http = curl_http.ms.max(sha.ms);
    let mut rows = Vec::new();
    let mut js = serde_json::Map::new();
    for (label, runs) in &pulls {
        let f = Figures::of(runs);
        let floor = if label.contains("oci") {
            floor_oci
        } else {
            floor_http
        };
        rows.push((
            format!("{label} {mib} MiB (agentctl)"),
            f.show(mib),
            format!(
                "{:.2}× floor (≤ 1.10×), RSS ≤ 32 MiB; {:.2}× Go-loader-style",
                f.ms / floor,
                f.ms / anchor.ms
            ),
        ));
        let mut v = f.json();
        v["over_floor"] = json!(round3(f.ms / floor));
        js.insert(label.replace(' ', "_").replace(['(', ')'], ""), v);
    }
    rows.push((
        format!("  curl -o oci {mib} MiB"),
        curl_oci.show(mib),
        "transfer alone, not durable".into(),
    ));
    rows.push((
        format!("  curl -o http {mib} MiB"),
        curl_http.show(mib),
        "transfer alone, not durable".into(),
    ));
    rows.push((
        format!("  openssl dgst -sha256 {mib} MiB"),
        sha.show(mib),
        "the hash alone, from the page cache".into(),
    ));
    rows.push((
        format!("  sha2 crate sha256 {mib} MiB in memory"),
        format!("p50 {in_memory:.0} ms"),
        format!(
            "{:.2}× openssl (one core, no process start)",
            in_memory / sha.ms
        ),
    ));
    rows.push((
        "  floor oci / http".into(),
        format!("{floor_oci:.0} ms / {floor_http:.0} ms"),
        "the slower of curl and the hash".into(),
    ));
    rows.push((
        format!("  Go-loader-style pull oci {mib} MiB"),
        anchor.show(mib),
        format!("{:.2}× floor", anchor.ms / floor_oci),
    ));
    js.insert("mib".into(), json!(mib));
    js.insert("runs".into(), json!(opts.runs));
    js.insert("curl_oci".into(), curl_oci.json());
    js.insert("curl_http".into(), curl_http.json());
    js.insert("openssl_sha256".into(), sha.json());
    js.insert("sha2_in_memory_ms".into(), json!(round3(in_memory)));
    js.insert(
        "floor_ms".into(),
        json!({ "oci": round3(floor_oci), "http": round3(floor_http) }),
    );
    js.insert("go_loader_style_oci".into(), anchor.json());
    drop(server);
    drop(registry);
    Ok(PullReport {
        rows,
        json: Value::Object(js),
    })
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `xtask bench-pull-anchor URL SHA256 DEST`: a pull the way the Go loader
/// does it, on one thread: GET (plain HTTP/1.1), copy the body in 32 KiB
/// reads into a temp file beside `DEST` while hashing it, compare the
/// digest, fsync, rename.
pub(crate) fn anchor(args: &[String]) -> Result<()> {
    let [url, want, dest] = args else {
        bail!("usage: xtask bench-pull-anchor URL SHA256 DEST");
    };
    let rest = url
        .strip_prefix("http://")
        .context("the anchor speaks plain http:// only")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut conn = std::net::TcpStream::connect(host).with_context(|| format!("connect {host}"))?;
    write!(
        conn,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = BufReader::with_capacity(32 << 10, conn);
    let mut line = String::new();
    body.read_line(&mut line)?;
    if line.split_whitespace().nth(1) != Some("200") {
        bail!("GET {url}: {}", line.trim());
    }
    loop {
        line.clear();
        body.read_line(&mut line)?;
        if line.to_ascii_lowercase().starts_with("transfer-encoding:") {
            bail!("GET {url}: a chunked body (the anchor reads plain bodies only)");
        }
        if line.trim().is_empty() {
            break;
        }
    }
    let dest = Path::new(dest);
    let temp = dest.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
    }
    let got = hex::encode(hasher.finalize());
    if &got != want {
        std::fs::remove_file(&temp)?;
        bail!("digest mismatch: {got}, expected {want}");
    }
    file.sync_all()?;
    std::fs::rename(&temp, dest)?;
    Ok(())
}
