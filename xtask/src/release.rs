//! `cargo xtask release [--sign KEY] [--registry R] [--publisher P] [--out DIR] [--debug]`
//!
//! Builds the workspace's agent binaries (every `[[bin]]` named `agent-*`,
//! e.g. `agent-echo` → agent `echo`) and `agentctl` in release mode (dev
//! profile with `--debug`) for the host platform, then writes:
//!
//! - the GitHub release layout the GitHub store reads:
//!   `{out}/{prefix}-{name}_{version}_{os}_{arch}.tar.gz`, holding one file
//!   `{prefix}-{name}` (mode 0755, mtime 0, owner 0:0: reproducible), and
//!   `{out}/SHA256SUMS` (`sha256sum` format, one line per archive);
//! - the HTTP-store layout, servable by any static file server:
//!   `{out}/http/{publisher}/{name}/{version}/{prefix}-{name}_{os}_{arch}`
//!   plus `.sha256`, and `{out}/http/{publisher}/{name}/versions`;
//! - the man pages, one per command: `{out}/man/agentctl*.1`.
//!
//! With `--sign KEY` (a minisign secret key: `agentctl keygen`, or
//! `minisign -G -W`; an encrypted one takes its password from
//! `CODEFLY_SIGN_PASSWORD`), each archive gets `{archive}.minisig`, the
//! HTTP binary `{binary}.minisig`, both with the trusted comment
//! `codefly-agent {publisher}/{name}:{version} {os}/{arch}`, and
//! `SHA256SUMS.minisig` signs the sums.
//!
//! `{out}` defaults to `{target-dir}/release-artifacts`. With `--registry R`
//! each binary is also pushed to `R/agents/{publisher}/{name}:{version}` as
//! an image index with the host platform's entry (agent-store-oci's
//! `push_files`), with its signature layer when signing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::Digest as _;

/// One agent binary of the workspace.
#[derive(Debug)]
struct AgentBin {
    package: String,
    bin: String,
    name: String,
    version: String,
}

#[derive(Debug, Default)]
struct Args {
    registry: Option<String>,
    publisher: String,
    out: Option<PathBuf>,
    sign: Option<PathBuf>,
    debug: bool,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut out = Args {
        publisher: agent_ref::DEFAULT_PUBLISHER.to_owned(),
        ..Args::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{name} needs a value"))
        };
        match flag {
            "--registry" => out.registry = Some(value("--registry")?),
            "--publisher" => out.publisher = value("--publisher")?,
            "--out" => out.out = Some(PathBuf::from(value("--out")?)),
            "--sign" => out.sign = Some(PathBuf::from(value("--sign")?)),
            "--debug" => out.debug = true,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask release [--sign KEY] [--registry HOST[/PREFIX]] [--publisher P] [--out DIR] [--debug]"
                );
                std::process::exit(0);
            }
            other => bail!("release: unknown argument {other:?} (try --help)"),
        }
    }
    Ok(out)
}

/// Entry point for `cargo xtask release`.
pub(crate) fn release(args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    let root = workspace_root();
    let (agents, target_dir) = discover(&root)?;
    if agents.is_empty() {
        bail!("no agent binaries (bins named agent-*) in the workspace");
    }
    let platform = agent_ref::Platform::current();

    let key = match &args.sign {
        Some(p) => Some(Signer::read(p)?),
        None => None,
    };
    let mut build = cargo(&root);
    build.arg("build");
    if !args.debug {
        build.args(["--release", "--locked"]);
    }
    for a in &agents {
        build.args(["-p", &a.package, "--bin", &a.bin]);
    }
    build.args(["-p", "agent-manager-cli", "--bin", "agentctl"]);
    run("build", build)?;
    let bin_dir = target_dir.join(if args.debug { "debug" } else { "release" });

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir.join("release-artifacts"));
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    let sums_path = out_dir.join("SHA256SUMS");
    // Keep entries for archives of other platforms already there.
    if let Ok(old) = fs::read_to_string(&sums_path) {
        for line in old.lines() {
            if let Some((h, f)) = line.split_once("  ") {
                sums.insert(f.to_owned(), h.to_owned());
            }
        }
    }
    let mut pushes = Vec::new();
    for a in &agents {
        let binary = bin_dir.join(&a.bin);
        let artifact = agent_ref::AgentKind::Service.artifact_name(&a.name);
        let asset = format!(
            "{artifact}_{}_{}_{}.tar.gz",
            a.version, platform.os, platform.arch
        );
        let archive = out_dir.join(&asset);
        write_archive(&binary, &artifact, &archive)?;
        let hash = sha256_file(&archive)?;
        eprintln!("xtask: release: {} ({hash})", archive.display());
        let agent = agent_ref::AgentRef::new(
            agent_ref::AgentKind::Service,
            &args.publisher,
            &a.name,
            &a.version,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut binary_sig = None;
        if let Some(k) = &key {
            let comment = agent_manager::store::trust::trusted_comment(&agent, &platform);
            let sig = with_suffix(&archive, ".minisig");
            fs::write(&sig, k.sign(&archive, &comment)?)
                .with_context(|| format!("writing {}", sig.display()))?;
            eprintln!("xtask: release: {}", sig.display());
            binary_sig = Some(k.sign(&binary, &comment)?);
        }
        write_http_layout(
            &out_dir.join("http"),
            &agent,
            &platform,
            &binary,
            binary_sig.as_deref(),
        )?;
        sums.insert(asset, hash);
        pushes.push((agent, binary, binary_sig));
    }
    let mut text = String::new();
    for (file, hash) in &sums {
        text.push_str(&format!("{hash}  {file}\n"));
    }
    fs::write(&sums_path, text).with_context(|| format!("writing {}", sums_path.display()))?;
    eprintln!("xtask: release: {}", sums_path.display());
    if let Some(k) = &key {
        let sig = with_suffix(&sums_path, ".minisig");
        let comment = format!("codefly-release SHA256SUMS {}", args.publisher);
        fs::write(&sig, k.sign(&sums_path, &comment)?)
            .with_context(|| format!("writing {}", sig.display()))?;
        eprintln!("xtask: release: {}", sig.display());
    }
    let man = out_dir.join("man");
    let mut pages = Command::new(bin_dir.join("agentctl"));
    pages.arg("man").arg(&man);
    pages.stdout(std::process::Stdio::null());
    run("man pages", pages)?;
    eprintln!("xtask: release: {}", man.display());

    if let Some(registry) = &args.registry {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        let config = agent_store_oci::RegistryConfig::parse(registry)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_env_credentials();
        let sig_dir = tempfile::tempdir().context("creating a temp directory")?;
        for (agent, binary, sig) in pushes {
            let signature = match sig {
                Some(text) => {
                    let p = sig_dir.path().join(format!("{}.minisig", agent.name()));
                    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
                    Some(p)
                }
                None => None,
            };
            let files = [agent_store_oci::PushFile {
                path: binary,
                platform: Some(platform.clone()),
                signature,
            }];
            let pushed = rt
                .block_on(agent_store_oci::push_files(&config, &agent, &files))
                .map_err(|e| anyhow::anyhow!("pushing {agent}: error[{}]: {e}", e.kind()))?;
            eprintln!(
                "xtask: release: pushed {} ({})",
                pushed.reference, pushed.digest
            );
        }
    }
    Ok(())
}

/// A minisign secret key to sign with.
struct Signer {
    text: String,
    password: Option<String>,
    path: PathBuf,
}

impl Signer {
    fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading the secret key {}", path.display()))?;
        let password = std::env::var("CODEFLY_SIGN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        Ok(Signer {
            text,
            password,
            path: path.to_owned(),
        })
    }

    /// The `.minisig` text of `file` with `comment` as its trusted comment.
    fn sign(&self, file: &Path, comment: &str) -> Result<String> {
        agent_manager::store::trust::sign_file(&self.text, self.password.clone(), file, comment)
            .map_err(|e| {
                anyhow::anyhow!(
                    "signing {} with {}: {e}",
                    file.display(),
                    self.path.display()
                )
            })
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Writes `{root}/{publisher}/{name}/{version}/{prefix}-{name}_{os}_{arch}`
/// with its `.sha256` (and `.minisig` when signed), and the `versions` file
/// (one version per line, semver order, existing versions kept).
fn write_http_layout(
    root: &Path,
    agent: &agent_ref::AgentRef,
    platform: &agent_ref::Platform,
    binary: &Path,
    signature: Option<&str>,
) -> Result<()> {
    let version = agent
        .concrete_version()
        .context("release versions are concrete")?
        .clone();
    let agent_dir = root.join(agent.publisher()).join(agent.name());
    let dir = agent_dir.join(version.to_string());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = format!(
        "{}_{}",
        agent.kind().artifact_name(agent.name()),
        platform.suffix()
    );
    let dst = dir.join(&file);
    fs::copy(binary, &dst).with_context(|| format!("copying to {}", dst.display()))?;
    let hash = sha256_file(&dst)?;
    fs::write(with_suffix(&dst, ".sha256"), format!("{hash}  {file}\n"))
        .with_context(|| format!("writing {}.sha256", dst.display()))?;
    if let Some(sig) = signature {
        fs::write(with_suffix(&dst, ".minisig"), sig)
            .with_context(|| format!("writing {}.minisig", dst.display()))?;
    }
    let versions_path = agent_dir.join("versions");
    let mut versions: Vec<agent_ref::semver::Version> = fs::read_to_string(&versions_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| agent_ref::semver::Version::parse(l.trim()).ok())
        .collect();
    versions.push(version);
    versions.sort();
    versions.dedup();
    let text: String = versions.iter().map(|v| format!("{v}\n")).collect();
    fs::write(&versions_path, text)
        .with_context(|| format!("writing {}", versions_path.display()))?;
    eprintln!("xtask: release: {}", dst.display());
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: release: {step}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// The workspace's agent binaries and the target directory, from `cargo metadata`.
fn discover(root: &Path) -> Result<(Vec<AgentBin>, PathBuf)> {
    let mut cmd = cargo(root);
    cmd.args(["metadata", "--no-deps", "--format-version", "1"]);
    let out = cmd.output().context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?,
    );
    let mut agents = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let (Some(package), Some(version)) = (p["name"].as_str(), p["version"].as_str()) else {
            continue;
        };
        for t in p["targets"].as_array().into_iter().flatten() {
            let is_bin = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == "bin"));
            let Some(bin) = t["name"].as_str() else {
                continue;
            };
            if let (true, Some(name)) = (is_bin, bin.strip_prefix("agent-")) {
                agents.push(AgentBin {
                    package: package.to_owned(),
                    bin: bin.to_owned(),
                    name: name.to_owned(),
                    version: version.to_owned(),
                });
            }
        }
    }
    Ok((agents, target_dir))
}

/// A gzip'd tar holding `binary` as `member`, mode 0755, reproducible headers.
fn write_archive(binary: &Path, member: &str, archive: &Path) -> Result<()> {
    let tmp = archive.with_extension("tmp");
    let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut src =
        fs::File::open(binary).with_context(|| format!("opening {}", binary.display()))?;
    let len = src
        .metadata()
        .with_context(|| format!("stat {}", binary.display()))?
        .len();
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, member, &mut src)
        .with_context(|| format!("archiving {}", binary.display()))?;
    let gz = tar.into_inner().context("finishing the tar")?;
    let mut file = gz.finish().context("finishing the gzip stream")?;
    file.flush().context("flushing the archive")?;
    file.sync_all().context("syncing the archive")?;
    fs::rename(&tmp, archive).with_context(|| format!("renaming to {}", archive.display()))?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_one_executable_member() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("agent-x");
        fs::write(&bin, b"\x7fELF pretend").unwrap();
        let archive = dir.path().join("service-x_1.0.0_linux_amd64.tar.gz");
        write_archive(&bin, "service-x", &archive).unwrap();
        let gz = flate2::read::GzDecoder::new(fs::File::open(&archive).unwrap());
        let mut tar = tar::Archive::new(gz);
        let entries: Vec<_> = tar
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    body,
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("service-x".to_owned(), 0o755, b"\x7fELF pretend".to_vec())]
        );
        // Reproducible: the same input gives the same archive.
        let first = fs::read(&archive).unwrap();
        write_archive(&bin, "service-x", &archive).unwrap();
        assert_eq!(first, fs::read(&archive).unwrap());
    }

    #[test]
    fn http_layout_and_versions_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("agent-x");
        fs::write(&bin, b"\x7fELF pretend").unwrap();
        let root = dir.path().join("http");
        let p: agent_ref::Platform = "linux/amd64".parse().unwrap();
        for v in ["1.10.0", "1.2.0", "1.2.0"] {
            let a: agent_ref::AgentRef = format!("acme/x:{v}").parse().unwrap();
            write_http_layout(&root, &a, &p, &bin, Some("sig")).unwrap();
        }
        let base = root.join("acme/x");
        assert_eq!(
            fs::read_to_string(base.join("versions")).unwrap(),
            "1.2.0\n1.10.0\n"
        );
        let f = base.join("1.2.0/service-x_linux_amd64");
        assert_eq!(fs::read(&f).unwrap(), b"\x7fELF pretend");
        let sidecar = fs::read_to_string(with_suffix(&f, ".sha256")).unwrap();
        assert!(sidecar.starts_with(&sha256_file(&f).unwrap()), "{sidecar}");
        assert_eq!(
            fs::read_to_string(with_suffix(&f, ".minisig")).unwrap(),
            "sig"
        );
    }

    #[test]
    fn finds_agent_echo() {
        let (agents, _) = discover(&workspace_root()).unwrap();
        assert!(
            agents
                .iter()
                .any(|a| a.bin == "agent-echo" && a.name == "echo"),
            "{agents:?}"
        );
    }
}
