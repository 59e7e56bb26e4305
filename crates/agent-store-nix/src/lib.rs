//! `agent-store-nix`: an [`agent_store::AgentStore`] that realizes Nix flake outputs.
//!
//! Nix outputs are content-addressed, so a flake pins agents exactly. An agent
//! `{publisher}/{name}:{version}` of a kind with prefix P
//! ([`agent_ref::AgentKind::prefix`]: `service` for `service:runtime` too,
//! `toolbox`, `provider`, …) is the flake attribute `agents-P-{name}-{version}`,
//! always **quoted** in the installable because versions contain dots:
//! `{flake}#"agents-service-echo-1.0.0"`, `{flake}#"agents-toolbox-grep-0.3.1"`.
//!
//! - `available`: `nix eval --raw {installable}.drvPath`.
//! - `pull`: `nix build --json --out-link {gc root} {installable}` (`--json`
//!   works on old and new Nix alike; `--print-out-paths` does not exist on
//!   Debian's Nix 2.8). The output is the binary itself, or a directory with
//!   `bin/P-{name}`, or a directory whose `bin/` holds exactly one executable
//!   that is not named for another kind (`bin/service-{name}` is never taken
//!   for a toolbox).
//! - Provider and solution outputs install only with a verified-artifact
//!   descriptor ([`agent_store::descriptor`]): `provider.artifact.json` at the
//!   output's root naming the binary, or beside `bin/P-{name}` / `P-{name}`.
//!   It is verified before anything reaches the cache (a missing or wrong one
//!   is `untrusted`), and it and its manifest are installed beside the cached
//!   binary as `{binary}.provider.artifact.json` and
//!   `{binary}.provider.codefly.yaml`, where the loader checks them again. The binary is copied into the cache through the
//!   [`agent_store::Installer`] with the source `nix:{store path}`, and the
//!   out-link under `$CODEFLY_HOME/nix-gcroots/` keeps the output from being
//!   garbage-collected.
//! - `versions`: `nix eval --json {flake}#packages.{system} --apply builtins.attrNames`,
//!   keeping the names `agents-P-{name}-{semver}`.
//!
//! **Trust.** Nix outputs are trusted as the local Nix trusts them: the
//! flake (and its lock file) pins each output by hash, and what reaches the
//! store is whatever the local Nix accepted — built locally, or substituted
//! from a cache whose signing key is in the local Nix's `trusted-public-keys`.
//! No minisign signature is fetched; the installer's trust policy counts the
//! `nix` store as self-verifying (`TrustPolicy::self_verifying_store`), so a
//! publisher that requires signatures is still served by Nix. Remove `nix`
//! from the self-verifying stores (or from `[publishers."P"] stores`) to
//! refuse that.
//!
//! Every call passes `--extra-experimental-features "nix-command flakes"`, as
//! one argument (nix is never run through a shell). nix runs in its own
//! process group; a call that exceeds the timeout is stopped (SIGTERM, so nix
//! stops its builders, then SIGKILL).
//!
//! On a machine without a nix daemon (Debian's `nix-bin`, run as root), nix
//! builds in-process; it needs no build users, no sandbox and no binary
//! cache for a flake without inputs. Pass that with [`NixStore::with_nix_config`]
//! (or `NIX_CONFIG` in the environment):
//! `build-users-group =`, `sandbox = false`, `substituters =`, `flake-registry =`.
//!
//! ```no_run
//! use agent_store::{AgentStore, Installer};
//! use agent_store_nix::NixStore;
//! use agent_ref::{AgentHome, AgentRef, Platform};
//!
//! # async fn demo() -> Result<(), agent_store::StoreError> {
//! let store = NixStore::new("path:/srv/agents-flake")
//!     .with_timeout(std::time::Duration::from_secs(300));
//! let agent: AgentRef = "codefly.dev/echo:1.0.0".parse()?;
//! assert_eq!(store.installable(&agent, &Platform::current())?, r#"path:/srv/agents-flake#"agents-service-echo-1.0.0""#);
//! let installer = Installer::new(AgentHome::new("/tmp/codefly"));
//! let installed = store.pull(&agent, &Platform::current(), &installer).await?;
//! assert!(installed.source.starts_with("nix:/nix/store/"));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod probe;
mod run;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentKind, AgentRef, Platform, RefError};
use agent_store::{AgentStore, Expected, Installed, Installer, StoreError, descriptor};
use async_trait::async_trait;
use tracing::Instrument;

pub use error::NixError;

/// The store's name in messages and records.
pub const STORE_NAME: &str = "nix";
/// The environment variable naming the flake (`AGENT_NIX_FLAKE`).
pub const FLAKE_ENV: &str = "AGENT_NIX_FLAKE";
/// The directory under `$CODEFLY_HOME` holding the GC roots of pulled outputs.
pub const GC_ROOTS_DIR: &str = "nix-gcroots";
/// Default time allowed for one nix command (an evaluation or a build).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time between SIGTERM and SIGKILL when a nix command is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

const EXPERIMENTAL: &str = "nix-command flakes";

/// Agents built from a Nix flake with the `nix` CLI.
#[derive(Debug, Clone)]
pub struct NixStore {
    flake: String,
    program: PathBuf,
    nix_config: Option<String>,
    timeout: Duration,
    kill_grace: Duration,
}

impl NixStore {
    /// A store for `flake_ref`, any flake reference nix accepts
    /// (`path:/abs/dir`, `/abs/dir`, `github:owner/repo`, …), without a `#` fragment.
    #[must_use]
    pub fn new(flake_ref: impl Into<String>) -> Self {
        NixStore {
            flake: flake_ref.into(),
            program: PathBuf::from("nix"),
            nix_config: None,
            timeout: DEFAULT_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    /// The store configured by `AGENT_NIX_FLAKE`; `None` when it is unset or
    /// empty, or when no `nix` is on `PATH`.
    ///
    /// # Errors
    /// None today; the `Result` is the contract every store's `from_env` shares.
    pub fn from_env() -> Result<Option<Self>, StoreError> {
        let Some(flake) = std::env::var_os(FLAKE_ENV) else {
            return Ok(None);
        };
        let flake = flake.to_string_lossy().trim().to_owned();
        if flake.is_empty() {
            return Ok(None);
        }
        let Some(nix) = find_on_path("nix") else {
            tracing::info!(flake = %flake, "{FLAKE_ENV} is set but `nix` is not on PATH; the nix store is off");
            return Ok(None);
        };
        Ok(Some(NixStore::new(flake).with_program(nix)))
    }

    /// Runs this program instead of `nix` from `PATH`.
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Sets `NIX_CONFIG` for every nix command (replacing an inherited one),
    /// e.g. `"sandbox = false\nsubstituters =\n"`.
    #[must_use]
    pub fn with_nix_config(mut self, config: impl Into<String>) -> Self {
        self.nix_config = Some(config.into());
        self
    }

    /// The most time one nix command (evaluation or build) may take
    /// (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when a command is stopped
    /// (default [`DEFAULT_KILL_GRACE`]). nix stops its builders on SIGTERM only.
    #[must_use]
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The flake reference.
    #[must_use]
    pub fn flake(&self) -> &str {
        &self.flake
    }

    /// The flake attribute of `agent` at `version`: `agents-{prefix}-{name}-{version}`.
    #[must_use]
    pub fn attr_name(agent: &AgentRef, version: &Version) -> String {
        format!(
            "agents-{}-{version}",
            agent.kind().artifact_name(agent.name())
        )
    }

    /// The installable for `agent` (concrete version):
    /// `{flake}#"agents-{prefix}-{name}-{version}"` for the current platform,
    /// `{flake}#packages.{system}."agents-…"` for another one.
    ///
    /// # Errors
    /// [`StoreError::Ref`] when `agent` has no concrete version.
    pub fn installable(&self, agent: &AgentRef, platform: &Platform) -> Result<String, StoreError> {
        let version = concrete(agent)?;
        let attr = Self::attr_name(agent, version);
        if *platform == Platform::current() {
            Ok(format!("{}#\"{attr}\"", self.flake))
        } else {
            Ok(format!(
                "{}#packages.{}.\"{attr}\"",
                self.flake,
                nix_system(platform)
            ))
        }
    }

    /// Where the GC root of `agent`'s pulled output lives:
    /// `$CODEFLY_HOME/nix-gcroots/{kind}-{publisher}-{name}-{version}`, the
    /// kind with `:` as `-` (`service-runtime`), as `agentctl rm` looks for it.
    /// Removing it lets `nix-collect-garbage` reclaim the output.
    ///
    /// # Errors
    /// [`StoreError::Ref`] when `agent` has no concrete version.
    pub fn gc_root(home: &AgentHome, agent: &AgentRef) -> Result<PathBuf, StoreError> {
        let version = concrete(agent)?;
        Ok(home.root().join(GC_ROOTS_DIR).join(format!(
            "{}-{}-{}-{version}",
            agent.kind().as_str().replace(':', "-"),
            agent.publisher(),
            agent.name()
        )))
    }

    fn runner(&self) -> run::Runner<'_> {
        run::Runner {
            program: &self.program,
            nix_config: self.nix_config.as_deref(),
            timeout: self.timeout,
            kill_grace: self.kill_grace,
        }
    }

    /// Runs `nix --extra-experimental-features … {args}`; a non-zero exit is
    /// [`NixError::MissingAttribute`] when nix says the flake lacks the
    /// attribute, else [`NixError::Failed`].
    async fn nix(&self, args: &[&str], installable: &str) -> Result<Vec<u8>, NixError> {
        let mut argv: Vec<OsString> =
            vec!["--extra-experimental-features".into(), EXPERIMENTAL.into()];
        argv.extend(args.iter().map(OsString::from));
        let out = self.runner().run(&argv).await?;
        if out.status.success() {
            if out.stdout_truncated {
                return Err(NixError::BadAnswer {
                    command: run::display_command(&self.program, &argv),
                    message: "the answer is larger than 16 MiB".to_owned(),
                });
            }
            return Ok(out.stdout);
        }
        if out.stderr_tail.contains("does not provide attribute") {
            return Err(NixError::MissingAttribute {
                installable: installable.to_owned(),
                stderr: out.stderr_tail,
            });
        }
        Err(NixError::Failed {
            command: run::display_command(&self.program, &argv),
            status: out.status.to_string(),
            stderr: out.stderr_tail,
        })
    }

    async fn build(&self, installable: &str, gc_root: &Path) -> Result<PathBuf, NixError> {
        let root = gc_root.to_string_lossy();
        let stdout = self
            .nix(
                &["build", "--json", "--out-link", &root, installable],
                installable,
            )
            .await?;
        let command = || format!("nix build --json {installable}");
        let results: Vec<BuildResult> =
            serde_json::from_slice(&stdout).map_err(|e| NixError::BadAnswer {
                command: command(),
                message: format!("{e}: {}", String::from_utf8_lossy(&stdout)),
            })?;
        let Some(result) = results.into_iter().next() else {
            return Err(NixError::BadAnswer {
                command: command(),
                message: "no build result".to_owned(),
            });
        };
        let out = match result.outputs.get("out") {
            Some(out) => out.clone(),
            None if result.outputs.len() == 1 => {
                result.outputs.into_values().next().unwrap_or_default()
            }
            None => {
                return Err(NixError::BadAnswer {
                    command: command(),
                    message: format!("{} has no `out` output and several others", result.drv_path),
                });
            }
        };
        if out.is_empty() {
            return Err(NixError::BadAnswer {
                command: command(),
                message: "empty output path".to_owned(),
            });
        }
        Ok(PathBuf::from(out))
    }
}

#[derive(Debug, serde::Deserialize)]
struct BuildResult {
    #[serde(rename = "drvPath", default)]
    drv_path: String,
    #[serde(default)]
    outputs: std::collections::BTreeMap<String, String>,
}

#[async_trait]
impl AgentStore for NixStore {
    fn name(&self) -> &str {
        STORE_NAME
    }

    async fn probe(&self) -> agent_store::StoreProbe {
        self.probe_nix().await
    }

    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError> {
        if agent.kind().refusal(STORE_NAME).is_some() {
            return Ok(false);
        }
        let installable = self.installable(agent, platform)?;
        let expr = format!("{installable}.drvPath");
        match self.nix(&["eval", "--raw", &expr], &installable).await {
            Ok(_) => Ok(true),
            Err(NixError::MissingAttribute { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn versions(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        refuse_kind(agent)?;
        let installable = format!("{}#packages.{}", self.flake, nix_system(platform));
        let stdout = match self
            .nix(
                &[
                    "eval",
                    "--json",
                    &installable,
                    "--apply",
                    "builtins.attrNames",
                ],
                &installable,
            )
            .await
        {
            Ok(stdout) => stdout,
            // A flake without packages for this system offers no versions.
            Err(NixError::MissingAttribute { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let names: Vec<String> =
            serde_json::from_slice(&stdout).map_err(|e| NixError::BadAnswer {
                command: format!("nix eval --json {installable} --apply builtins.attrNames"),
                message: e.to_string(),
            })?;
        Ok(versions_from_attr_names(agent, &names))
    }

    async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        refuse_kind(agent)?;
        let installable = self.installable(agent, platform)?;
        let gc_root = Self::gc_root(installer.home(), agent)?;
        let span = tracing::info_span!("nix pull", agent = %agent.identifier(), %installable);
        self.pull_inner(agent, installable, gc_root, installer)
            .instrument(span)
            .await
    }
}

impl NixStore {
    async fn pull_inner(
        &self,
        agent: &AgentRef,
        installable: String,
        gc_root: PathBuf,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        if let Some(dir) = gc_root.parent() {
            let mut builder = tokio::fs::DirBuilder::new();
            builder.recursive(true).mode(0o700);
            builder
                .create(dir)
                .await
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let result = async {
            let out = self.build(&installable, &gc_root).await?;
            let kind = agent.kind();
            let name = agent.name().to_owned();
            let out2 = out.clone();
            let binary = tokio::task::spawn_blocking(move || match layout_binary(&out2) {
                Some(b) if kind.needs_descriptor() => Ok(b),
                _ => find_binary(&out2, kind, &name),
            })
                .await
                .map_err(|e| NixError::Io {
                    context: format!("inspecting {}", out.display()),
                    source: std::io::Error::other(e),
                })??;
            tracing::debug!(output = %out.display(), binary = %binary.display(), "nix output built");
            Ok::<_, NixError>((out, binary))
        }
        .await;
        let (out, binary) = match result {
            Ok(v) => v,
            Err(e) => {
                remove_gc_root(&gc_root);
                return Err(e.into());
            }
        };
        let sidecars = if agent.kind().needs_descriptor() {
            match install_descriptor(agent, &binary, installer) {
                Ok(s) => s,
                Err(e) => {
                    remove_gc_root(&gc_root);
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        let source = format!("nix:{}", out.display());
        match installer
            .install_file(agent, &source, &Expected::default(), &binary)
            .await
        {
            Ok(installed) => Ok(installed),
            Err(e) => {
                for s in &sidecars {
                    let _ = std::fs::remove_file(s);
                }
                remove_gc_root(&gc_root);
                Err(e)
            }
        }
    }
}

/// `artifact-missing` for a kind no store serves (`job`).
fn refuse_kind(agent: &AgentRef) -> Result<(), StoreError> {
    match agent.kind().refusal(STORE_NAME) {
        None => Ok(()),
        Some(why) => Err(StoreError::Missing {
            store: STORE_NAME.to_owned(),
            what: format!("{agent}: {why}"),
        }),
    }
}

/// The binary a layout descriptor (`provider.artifact.json` at the output's
/// root) names, when there is one and it parses.
fn layout_binary(out: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(out.join(descriptor::DESCRIPTOR_FILE_NAME)).ok()?;
    let d = descriptor::Descriptor::parse(&bytes, "").ok()?;
    Some(out.join(d.binary_path))
}

/// Verifies the verified-artifact descriptor of a provider or solution
/// output, then copies it and its manifest beside the binary's cache path
/// (`{binary}.provider.artifact.json`, `{binary}.provider.codefly.yaml`),
/// where the loader checks it again before every start. Returns the files
/// written, for removal when the install fails.
fn install_descriptor(
    agent: &AgentRef,
    binary: &Path,
    installer: &Installer,
) -> Result<Vec<PathBuf>, StoreError> {
    let verified = descriptor::verify(binary, agent).map_err(|e| StoreError::Untrusted {
        path_or_artifact: binary.display().to_string(),
        reason: agent_ref::error_chain(&e).to_string(),
        fix: "publish the provider with its provider.artifact.json and provider.codefly.yaml beside the binary".to_owned(),
    })?;
    let target = installer.home().binary_path(agent)?;
    let mut written = Vec::new();
    for (from, suffix) in [
        (
            &verified.descriptor_path,
            descriptor::INSTALLED_DESCRIPTOR_SUFFIX,
        ),
        (
            &verified.manifest_path,
            descriptor::INSTALLED_MANIFEST_SUFFIX,
        ),
    ] {
        let mut to = target.as_os_str().to_owned();
        to.push(suffix);
        let to = PathBuf::from(to);
        if let Err(e) = copy_atomic(from, &to) {
            for w in &written {
                let _ = std::fs::remove_file(w);
            }
            return Err(StoreError::io(
                format!("copying {} to {}", from.display(), to.display()),
                e,
            ));
        }
        written.push(to);
    }
    Ok(written)
}

/// Copies `from` to `to` through a temp file in `to`'s directory and a rename,
/// so a reader never sees half a file.
fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::copy(from, tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

fn concrete(agent: &AgentRef) -> Result<&Version, StoreError> {
    agent
        .concrete_version()
        .ok_or_else(|| StoreError::Ref(RefError::NotConcrete(agent.identifier())))
}

fn remove_gc_root(gc_root: &Path) {
    match std::fs::remove_file(gc_root) {
        Ok(()) => tracing::debug!(path = %gc_root.display(), "removed GC root"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %gc_root.display(), error = %e, "could not remove GC root"),
    }
}

/// The versions of `agent` among a flake's attribute names: exactly the
/// prefix `agents-{prefix}-{name}-` followed by a semver version. (Names contain
/// `-`, so `agents-service-echo-extra-1.0.0` is not a version of `echo`.)
#[must_use]
pub fn versions_from_attr_names(agent: &AgentRef, names: &[String]) -> Vec<Version> {
    let prefix = format!("agents-{}-", agent.kind().artifact_name(agent.name()));
    let mut versions: Vec<Version> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter_map(|v| Version::parse(v).ok())
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// The Nix system name of a platform (`linux/amd64` → `x86_64-linux`).
#[must_use]
pub fn nix_system(platform: &Platform) -> String {
    let arch = match platform.arch.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i686",
        "arm" => "armv7l",
        other => other,
    };
    format!("{arch}-{}", platform.os)
}

/// The agent binary inside a built output: the output itself when it is a
/// file, else `bin/{prefix}-{name}`, else (for kinds without a descriptor) the
/// only executable in `bin/` that is not named for another kind.
fn find_binary(out: &Path, kind: AgentKind, name: &str) -> Result<PathBuf, NixError> {
    let artifact = kind.artifact_name(name);
    let bad = |reason: String| NixError::BadOutput {
        path: out.display().to_string(),
        reason,
    };
    let io = |context: String| move |source| NixError::Io { context, source };
    let meta = std::fs::metadata(out).map_err(io(format!("reading {}", out.display())))?;
    if meta.is_file() {
        return if is_executable(&meta) {
            Ok(out.to_path_buf())
        } else {
            Err(bad("the output is a file but not executable".to_owned()))
        };
    }
    if !meta.is_dir() {
        return Err(bad(
            "the output is neither a file nor a directory".to_owned()
        ));
    }
    let bin = out.join("bin");
    let named = bin.join(&artifact);
    if let Ok(m) = std::fs::metadata(&named)
        && m.is_file()
    {
        return if is_executable(&m) {
            Ok(named)
        } else {
            Err(bad(format!("bin/{artifact} is not executable")))
        };
    }
    if kind.needs_descriptor() {
        // A verified-artifact layout keeps the binary at the output's root.
        let root = out.join(&artifact);
        if std::fs::metadata(&root).is_ok_and(|m| m.is_file() && is_executable(&m)) {
            return Ok(root);
        }
        return Err(bad(format!(
            "a {kind} output must be the executable itself or a directory with {artifact} or bin/{artifact}"
        )));
    }
    let expected = format!(
        "expected the output to be the executable itself, or a directory with bin/{artifact}, \
         or a directory whose bin/ holds exactly one executable"
    );
    // Another kind's binary of the same name is a decoy, never this agent.
    let decoy = |file: &str| {
        AgentKind::ALL
            .iter()
            .any(|k| k.prefix() != kind.prefix() && k.artifact_name(name) == file)
    };
    let entries = match std::fs::read_dir(&bin) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!("{expected}; the output has no bin/")));
        }
        Err(e) => return Err(io(format!("reading {}", bin.display()))(e)),
    };
    let mut executables = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", bin.display())))?;
        let path = entry.path();
        if let Ok(m) = std::fs::metadata(&path)
            && m.is_file()
            && is_executable(&m)
            && !decoy(&entry.file_name().to_string_lossy())
        {
            executables.push(path);
        }
    }
    executables.sort();
    match executables.len() {
        1 => Ok(executables.remove(0)),
        0 => Err(bad(format!("{expected}; bin/ holds no executable"))),
        n => {
            let names: Vec<String> = executables
                .iter()
                .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .collect();
            Err(bad(format!(
                "{expected}; bin/ holds {n} executables: {}",
                names.join(", ")
            )))
        }
    }
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && is_executable(&m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> AgentRef {
        s.parse().unwrap()
    }

    #[test]
    fn attribute_is_quoted_in_the_installable() {
        let store = NixStore::new("path:/f");
        let p = Platform::current();
        assert_eq!(
            store.installable(&r("codefly.dev/echo:1.0.0"), &p).unwrap(),
            r#"path:/f#"agents-service-echo-1.0.0""#
        );
    }

    #[test]
    fn kind_uses_its_prefix() {
        for (kind, attr) in [
            (AgentKind::ServiceRuntime, "agents-service-go-1.2.3"),
            (AgentKind::Toolbox, "agents-toolbox-go-1.2.3"),
            (AgentKind::Provider, "agents-provider-go-1.2.3"),
        ] {
            let agent = r("codefly.dev/go:1.2.3").with_kind(kind);
            assert_eq!(NixStore::attr_name(&agent, &Version::new(1, 2, 3)), attr);
        }
    }

    #[test]
    fn foreign_platform_names_its_system() {
        let store = NixStore::new("path:/f");
        let other = if Platform::current().arch == "arm64" {
            Platform {
                os: "linux".into(),
                arch: "amd64".into(),
            }
        } else {
            Platform {
                os: "darwin".into(),
                arch: "arm64".into(),
            }
        };
        let inst = store.installable(&r("echo:1.0.0"), &other).unwrap();
        assert!(
            inst == r#"path:/f#packages.x86_64-linux."agents-service-echo-1.0.0""#
                || inst == r#"path:/f#packages.aarch64-darwin."agents-service-echo-1.0.0""#,
            "{inst}"
        );
    }

    #[test]
    fn latest_is_not_an_installable() {
        let err = NixStore::new("path:/f")
            .installable(&r("echo"), &Platform::current())
            .unwrap_err();
        assert_eq!(err.kind(), agent_ref::ErrorKind::InvalidRef);
    }

    #[test]
    fn versions_match_the_exact_prefix() {
        let names: Vec<String> = [
            "agents-service-echo-1.0.0",
            "agents-service-echo-1.10.0",
            "agents-service-echo-1.2.0",
            "agents-service-echo-extra-9.0.0",
            "agents-service-echoes-8.0.0",
            "agents-service-echo-latest",
            "agents-module-echo-7.0.0",
            "agents-service-echo-2.0.0-rc.1",
            "default",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let v = versions_from_attr_names(&r("echo"), &names);
        let v: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(v, ["1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1"]);
    }

    #[test]
    fn systems_are_named_as_nix_names_them() {
        let p = |os: &str, arch: &str| Platform {
            os: os.into(),
            arch: arch.into(),
        };
        assert_eq!(nix_system(&p("linux", "amd64")), "x86_64-linux");
        assert_eq!(nix_system(&p("linux", "arm64")), "aarch64-linux");
        assert_eq!(nix_system(&p("darwin", "arm64")), "aarch64-darwin");
    }

    #[test]
    fn gc_root_lives_under_the_home() {
        let home = AgentHome::new("/h");
        let agent = r("codefly.dev/echo:1.0.0");
        assert_eq!(
            NixStore::gc_root(&home, &agent).unwrap(),
            Path::new("/h/nix-gcroots/service-codefly.dev-echo-1.0.0")
        );
    }

    fn write_exe(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn output_layouts() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("file-out");
        write_exe(&file);
        assert_eq!(
            find_binary(&file, AgentKind::Service, "echo").unwrap(),
            file
        );

        let named = d.path().join("named");
        write_exe(&named.join("bin/service-echo"));
        write_exe(&named.join("bin/helper"));
        assert_eq!(
            find_binary(&named, AgentKind::Service, "echo").unwrap(),
            named.join("bin/service-echo")
        );

        let single = d.path().join("single");
        write_exe(&single.join("bin/whatever"));
        std::fs::write(single.join("bin/README"), "not executable").unwrap();
        assert_eq!(
            find_binary(&single, AgentKind::Service, "echo").unwrap(),
            single.join("bin/whatever")
        );

        let two = d.path().join("two");
        write_exe(&two.join("bin/a"));
        write_exe(&two.join("bin/b"));
        let err = find_binary(&two, AgentKind::Service, "echo").unwrap_err();
        assert_eq!(err.kind(), agent_ref::ErrorKind::ArtifactMissing);
        assert!(err.to_string().contains("2 executables: a, b"), "{err}");

        let nobin = d.path().join("nobin");
        std::fs::create_dir_all(nobin.join("share")).unwrap();
        let err = find_binary(&nobin, AgentKind::Service, "echo").unwrap_err();
        assert!(err.to_string().contains("no bin/"), "{err}");

        // Another kind's binary is a decoy, even alone in bin/.
        let decoy = d.path().join("decoy");
        write_exe(&decoy.join("bin/service-echo"));
        let err = find_binary(&decoy, AgentKind::Toolbox, "echo").unwrap_err();
        assert!(err.to_string().contains("bin/toolbox-echo"), "{err}");
        write_exe(&decoy.join("bin/toolbox-echo"));
        assert_eq!(
            find_binary(&decoy, AgentKind::Toolbox, "echo").unwrap(),
            decoy.join("bin/toolbox-echo")
        );

        // A provider must name its binary: no lone-executable guess.
        let lone = d.path().join("lone");
        write_exe(&lone.join("bin/whatever"));
        let err = find_binary(&lone, AgentKind::Provider, "echo").unwrap_err();
        assert!(err.to_string().contains("bin/provider-echo"), "{err}");
    }
}
