//! `cargo xtask bench`'s store sections: resolve, dedup, pull.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use agent_manager::{AgentRef, AgentSource, AgentStore};
use agent_store_oci::{OciStore, RegistryConfig};

use crate::bench::{Args, Rows, local_manager, ms, temp_home};
use crate::measure::write_noise;
use crate::measure::{ChildRun, Summary, median, round3, run_child};

/// `latest` over many installed versions.
pub(crate) async fn resolve_section(
    args: &Args,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    eprintln!(
        "bench: resolve latest over {} installed versions",
        args.versions
    );
    let resolve = resolve_many(args.versions, args.n).await?;
    rows.push((
        format!("resolve latest /{}", args.versions),
        ms(&resolve),
        "p50 ≤ 1 ms".into(),
    ));
    report.insert(
        "resolve".into(),
        json!({ "installed_versions": args.versions, "ms": resolve.json() }),
    );
    Ok(())
}

/// The sections that need a local registry: dedup and pull.
pub(crate) async fn registry_sections(
    args: &Args,
    echo: &Path,
    agentctl: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let registry = agent_testkit::registry::LocalRegistry::start()?;
    eprintln!("bench: registry at {}", registry.addr());
    let config =
        RegistryConfig::parse(&registry.addr().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;

    if args.wants("dedup") {
        eprintln!(
            "bench: dedup, {} concurrent loads of one uncached ref",
            args.dedup
        );
        let downloads = dedup(&registry, &config, echo, args.dedup).await?;
        rows.push((
            format!("dedup {} loads", args.dedup),
            format!("{downloads} blob download(s)"),
            "= 1".into(),
        ));
        report.insert(
            "dedup".into(),
            json!({ "loads": args.dedup, "blob_downloads": downloads }),
        );
    }

    if args.wants("pull") {
        eprintln!(
            "bench: pull {} MiB, agentctl vs curl × {}",
            args.pull_mib, args.pull_runs
        );
        let pull =
            pull_vs_curl(&registry, &config, agentctl, args.pull_mib, args.pull_runs).await?;
        rows.push((
            format!("pull {} MiB agentctl", args.pull_mib),
            format!(
                "{:.0} ms, {:.0} MiB/s, RSS {} MiB, CPU {:.0} ms",
                pull.ours_ms, pull.ours_mibps, pull.ours_rss_mib, pull.ours_cpu_ms
            ),
            "≤ 1.15× curl, RSS ≤ 32 MiB".into(),
        ));
        rows.push((
            format!("pull {} MiB agentctl, signed", args.pull_mib),
            format!(
                "{:.0} ms, RSS {} MiB, CPU {:.0} ms (minisign verified while streaming)",
                pull.signed_ms, pull.signed_rss_mib, pull.signed_cpu_ms
            ),
            format!(
                "signed/curl = {:.2}× (≤ 1.15×), signed/unsigned = {:.2}× (≤ 1.05×)",
                pull.signed_ms / pull.curl_ms,
                pull.signed_ms / pull.ours_ms
            ),
        ));
        rows.push((
            format!("pull {} MiB curl", args.pull_mib),
            format!(
                "{:.0} ms, {:.0} MiB/s, RSS {} MiB, CPU {:.0} ms",
                pull.curl_ms, pull.curl_mibps, pull.curl_rss_mib, pull.curl_cpu_ms
            ),
            format!("ours/curl = {:.2}×", pull.ours_ms / pull.curl_ms),
        ));
        rows.push((
            format!("pull {} MiB curl + fsync", args.pull_mib),
            format!("{:.0} ms", pull.curl_sync_ms),
            format!(
                "ours/(curl+fsync) = {:.2}×",
                pull.ours_ms / pull.curl_sync_ms
            ),
        ));
        // The pull must hash every byte (SHA-256 for the digest, and
        // BLAKE2b-512 for a prehashed signature): what that alone costs here.
        let (sha, blake) = hash_floor(usize::try_from(args.pull_mib)?);
        rows.push((
            format!("  hash {} MiB in memory", args.pull_mib),
            format!("SHA-256 {sha:.0} ms, BLAKE2b-512 {blake:.0} ms (one core each)"),
            format!("SHA-256 alone = {:.2}× curl", sha / pull.curl_ms),
        ));
        report.insert(
            "hash_floor_ms".into(),
            json!({ "sha256": round3(sha), "blake2b512": round3(blake) }),
        );
        report.insert("pull".into(), pull.json(args.pull_mib));
    }
    Ok(())
}

/// Milliseconds to SHA-256 and to BLAKE2b-512 `mib` MiB already in memory
/// (the faster of three), in 256 KiB updates as the installer does.
fn hash_floor(mib: usize) -> (f64, f64) {
    let data = vec![0x5a_u8; mib << 20];
    (
        hash_ms::<sha2::Sha256>(&data),
        hash_ms::<blake2::Blake2b512>(&data),
    )
}

/// The fastest of three runs of hasher `D` over `data`, in ms.
fn hash_ms<D: sha2::Digest>(data: &[u8]) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut h = D::new();
            data.chunks(256 << 10).for_each(|c| h.update(c));
            std::hint::black_box(h.finalize());
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// `latest` over `versions` installed versions, resolved `n` times.
async fn resolve_many(versions: usize, n: usize) -> Result<Summary> {
    let home = temp_home("resolve")?;
    let manager = local_manager(home.path(), Vec::new(), AgentSource::Local)?;
    let r: AgentRef = "codefly.dev/many:latest".parse()?;
    let dir = manager.home().publisher_dir(&r);
    std::fs::create_dir_all(&dir)?;
    for i in 0..versions {
        std::fs::write(dir.join(format!("many__1.{}.{}", i / 100, i % 100)), b"")?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let got = manager
            .resolve(&r)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(t.elapsed());
        if got.concrete_version().is_none() {
            bail!("resolve gave no concrete version");
        }
    }
    Ok(Summary::of(&samples))
}

fn blob_gets(registry: &agent_testkit::registry::LocalRegistry, repo: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/blobs/sha256:");
    registry.log_text().matches(&needle).count()
}

/// `loads` concurrent loads of one ref that is not cached → blob downloads seen by the registry.
async fn dedup(
    registry: &agent_testkit::registry::LocalRegistry,
    config: &RegistryConfig,
    echo: &Path,
    loads: usize,
) -> Result<usize> {
    let r: AgentRef = "codefly.dev/echo-dedup:1.0.0".parse()?;
    agent_store_oci::push(config, &r, &[(echo.to_path_buf(), None)])
        .await
        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
    let home = temp_home("dedup")?;
    let store: Arc<dyn AgentStore> =
        Arc::new(OciStore::new(config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    let manager = local_manager(home.path(), vec![store], AgentSource::Remote)?;
    let repo = config.repository(&r);
    let before = blob_gets(registry, &repo);
    let conns = futures_util::future::join_all((0..loads).map(|_| manager.load(&r))).await;
    for c in conns {
        c.map_err(|e| anyhow::anyhow!("dedup load: {e}"))?;
    }
    manager.cleanup_all().await;
    // The registry writes its access log asynchronously.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(blob_gets(registry, &repo) - before)
}

struct PullFigures {
    ours_ms: f64,
    ours_mibps: f64,
    ours_rss_mib: u64,
    signed_ms: f64,
    signed_rss_mib: u64,
    curl_ms: f64,
    curl_mibps: f64,
    curl_rss_mib: u64,
    curl_sync_ms: f64,
    ours_cpu_ms: f64,
    signed_cpu_ms: f64,
    curl_cpu_ms: f64,
}

impl PullFigures {
    fn json(&self, mib: u64) -> Value {
        json!({
            "mib": mib,
            "agentctl": { "ms": round3(self.ours_ms), "cpu_ms": round3(self.ours_cpu_ms), "mib_per_s": round3(self.ours_mibps), "max_rss_mib": self.ours_rss_mib },
            "agentctl_signed": { "ms": round3(self.signed_ms), "cpu_ms": round3(self.signed_cpu_ms), "max_rss_mib": self.signed_rss_mib, "ratio_vs_unsigned": round3(self.signed_ms / self.ours_ms) },
            "curl": { "ms": round3(self.curl_ms), "cpu_ms": round3(self.curl_cpu_ms), "mib_per_s": round3(self.curl_mibps), "max_rss_mib": self.curl_rss_mib },
            "curl_and_fsync": { "ms": round3(self.curl_sync_ms) },
            "ratio": round3(self.ours_ms / self.curl_ms),
            "ratio_vs_curl_and_fsync": round3(self.ours_ms / self.curl_sync_ms),
        })
    }
}

/// A `mib` MiB blob pushed once, then pulled by `agentctl pull` (fresh home
/// each run) and by `curl` from the same blob URL, alternating.
async fn pull_vs_curl(
    registry: &agent_testkit::registry::LocalRegistry,
    config: &RegistryConfig,
    agentctl: &Path,
    mib: u64,
    runs: usize,
) -> Result<PullFigures> {
    let work = temp_home("pull")?;
    let big = work.path().join("big.bin");
    write_noise(&big, mib)?;
    let r: AgentRef = "codefly.dev/big:1.0.0".parse()?;
    let pushed = agent_store_oci::push(config, &r, &[(big.clone(), None)])
        .await
        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
    // The same bytes, signed (minisign, prehashed) and pulled under a policy
    // that requires the signature: the cost of verification while streaming.
    let signed: AgentRef = "codefly.dev/bigsigned:1.0.0".parse()?;
    let keys = agent_manager::store::trust::keygen().map_err(|e| anyhow::anyhow!("keygen: {e}"))?;
    let comment =
        agent_manager::store::trust::trusted_comment(&signed, &agent_manager::Platform::current());
    let minisig = work.path().join("big.bin.minisig");
    std::fs::write(
        &minisig,
        agent_manager::store::trust::sign_file(&keys.secret, None, &big, &comment)
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?,
    )?;
    agent_store_oci::push_files(
        config,
        &signed,
        &[agent_store_oci::PushFile {
            path: big.clone(),
            platform: None,
            signature: Some(minisig),
        }],
    )
    .await
    .map_err(|e| anyhow::anyhow!("push signed: {e}"))?;
    let public = keys
        .public
        .lines()
        .last()
        .context("an empty public key")?
        .trim()
        .to_owned();
    let signed_config = work.path().join("config.toml");
    std::fs::write(
        &signed_config,
        format!("[publishers.\"codefly.dev\"]\nkeys = [\"{public}\"]\n"),
    )?;
    std::fs::remove_file(&big)?;
    let digest = &pushed.layers.first().context("no layer pushed")?.digest;
    let url = format!(
        "http://{}/v2/{}/blobs/{digest}",
        registry.addr(),
        config.repository(&r)
    );

    let mut ours: Vec<ChildRun> = Vec::new();
    let mut signed_runs: Vec<ChildRun> = Vec::new();
    let mut curl: Vec<ChildRun> = Vec::new();
    let mut curl_sync: Vec<ChildRun> = Vec::new();
    for i in 0..runs {
        let home = work.path().join(format!("home-{i}"));
        let args: [&std::ffi::OsStr; 5] = [
            "--home".as_ref(),
            home.as_os_str(),
            "-q".as_ref(),
            "pull".as_ref(),
            "codefly.dev/big:1.0.0".as_ref(),
        ];
        let env = [
            ("CODEFLY_AGENT_STORES", "oci".to_owned()),
            ("AGENT_REGISTRY", registry.addr().to_string()),
        ];
        ours.push(tokio::task::block_in_place(|| {
            run_child(agentctl, &args, &env)
        })?);
        std::fs::remove_dir_all(&home)?;

        let signed_args: [&std::ffi::OsStr; 5] = [
            "--home".as_ref(),
            home.as_os_str(),
            "-q".as_ref(),
            "pull".as_ref(),
            "codefly.dev/bigsigned:1.0.0".as_ref(),
        ];
        let signed_env = [
            env[0].clone(),
            env[1].clone(),
            ("CODEFLY_CONFIG", signed_config.display().to_string()),
        ];
        let run = tokio::task::block_in_place(|| run_child(agentctl, &signed_args, &signed_env))?;
        let record =
            std::fs::read_to_string(home.join("agents/services/codefly.dev/bigsigned__1.0.0.json"))
                .context("the signed pull installed nothing")?;
        if !record.contains(&comment) {
            bail!("the signed pull's record names no signer: {record}");
        }
        signed_runs.push(run);
        std::fs::remove_dir_all(&home)?;

        let out = work.path().join("curl.out");
        let args: [&std::ffi::OsStr; 6] = [
            "-sS".as_ref(),
            "-f".as_ref(),
            "-L".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            url.as_ref(),
        ];
        let curl_bin = Path::new("/usr/bin/curl");
        curl.push(tokio::task::block_in_place(|| {
            run_child(curl_bin, &args, &[])
        })?);
        std::fs::remove_file(&out)?;

        // What we promise (durable bytes) costs curl an fsync too.
        let script = format!(
            "/usr/bin/curl -sS -f -L -o '{}' '{url}' && sync '{}'",
            out.display(),
            out.display()
        );
        let args: [&std::ffi::OsStr; 2] = ["-c".as_ref(), script.as_ref()];
        curl_sync.push(tokio::task::block_in_place(|| {
            run_child(Path::new("/bin/sh"), &args, &[])
        })?);
        std::fs::remove_file(&out)?;
    }
    let wall = |v: &[ChildRun]| {
        median(
            &v.iter()
                .map(|r| r.wall.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    let rss = |v: &[ChildRun]| v.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) / 1024;
    let cpu = |v: &[ChildRun]| {
        median(
            &v.iter()
                .map(|r| r.cpu.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    #[allow(clippy::cast_precision_loss)]
    let mibf = mib as f64;
    let (ours_ms, curl_ms, curl_sync_ms) = (wall(&ours), wall(&curl), wall(&curl_sync));
    Ok(PullFigures {
        ours_ms,
        ours_mibps: mibf / (ours_ms / 1e3),
        ours_rss_mib: rss(&ours),
        ours_cpu_ms: cpu(&ours),
        signed_cpu_ms: cpu(&signed_runs),
        curl_cpu_ms: cpu(&curl),
        signed_ms: wall(&signed_runs),
        signed_rss_mib: rss(&signed_runs),
        curl_ms,
        curl_mibps: mibf / (curl_ms / 1e3),
        curl_rss_mib: rss(&curl),
        curl_sync_ms,
    })
}
