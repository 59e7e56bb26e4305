//! `agentctl doctor`: why loads would fail, before they fail.
//!
//! A table of checks (and `--json`): the home and its permissions, the
//! configuration file, each configured store (reachable or not, latency,
//! its answer), the lock file of the current directory and whether each
//! entry is installed, stale temp files. Exit 0 only when no check failed;
//! every problem names its fix.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use agent_manager::lock::LockFile;
use agent_manager::reference::AgentHome;
use agent_manager::{EffectiveConfig, ErrorKind, Manager};
use serde_json::json;

use crate::ctx::Ctx;
use crate::report::{Failure, ms};

/// How long one store probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A temp file older than this is no download in progress.
const STALE_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// The kind a load would fail with.
    #[serde(skip)]
    kind: Option<ErrorKind>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            latency_ms: None,
            kind: None,
        }
    }

    fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Check::ok(check, detail)
        }
    }

    fn fail(
        check: impl Into<String>,
        kind: ErrorKind,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            status: Status::Fail,
            fix: Some(fix.into()),
            kind: Some(kind),
            ..Check::ok(check, detail)
        }
    }

    fn latency(mut self, d: Duration) -> Self {
        self.latency_ms = Some(ms(d));
        self
    }
}

pub(crate) async fn exec(ctx: &Ctx) -> Result<(), Failure> {
    let mut checks = vec![
        Check::ok("process", agent_manager::spawn::process_backend()),
        sandbox_check(&agent_manager::sandbox::probe()),
    ];
    let home = ctx.home();
    match &home {
        Ok(h) => checks.extend(home_checks(h)),
        Err(f) => checks.push(Check::fail(
            "home",
            f.kind,
            f.message.clone(),
            "set CODEFLY_HOME (or HOME), or pass --home DIR",
        )),
    }
    let manager = match ctx.manager(false) {
        Ok(m) => Some(m),
        Err(f) => {
            let fix = match f.kind {
                ErrorKind::Config => {
                    "edit the file or variable named above (see `agentctl config`)"
                }
                ErrorKind::NotLocked => {
                    "run `agentctl lock REF…` to create the lock file, or drop --locked"
                }
                ErrorKind::Untrusted => "run the chmod or chown the message names",
                _ => "see the message",
            };
            checks.push(Check::fail("config", f.kind, f.message.clone(), fix));
            None
        }
    };
    if let Some(m) = &manager {
        let effective = m.effective_config();
        checks.push(match &effective.file {
            Some(p) => Check::ok("config", format!("{} (valid)", p.display())),
            None => Check::ok("config", "no configuration file (environment and defaults)"),
        });
        checks.extend(store_checks(m, &effective).await);
    }
    checks.extend(lock_checks(ctx, manager.as_ref(), home.as_ref().ok()));
    if let Ok(h) = &home {
        checks.push(stale_check(h));
    }

    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    if ctx.json {
        outln!("{}", json!({ "ok": failed.is_empty(), "checks": checks }));
    } else {
        print_table(&checks);
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => {
            let mut f = Failure::new(
                first.kind.unwrap_or(ErrorKind::Io),
                format!(
                    "doctor: {} problem{} ({})",
                    failed.len(),
                    if failed.len() == 1 { "" } else { "s" },
                    failed
                        .iter()
                        .map(|c| c.check.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            // The report above is the JSON document; no second one.
            f.json_printed = true;
            Err(f)
        }
    }
}

fn print_table(checks: &[Check]) {
    let w = checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    outln!("{:<w$}  {:<6}  DETAIL", "CHECK", "STATUS");
    for c in checks {
        let latency = c
            .latency_ms
            .map(|l| format!(" ({l:.1} ms)"))
            .unwrap_or_default();
        outln!(
            "{:<w$}  {:<6}  {}{latency}",
            c.check,
            c.status.as_str(),
            c.detail
        );
        if let Some(fix) = &c.fix {
            outln!("{:<w$}  {:<6}  fix: {fix}", "", "");
        }
    }
}

// ---------------------------------------------------------------- home

fn home_checks(home: &AgentHome) -> Vec<Check> {
    let mut out = Vec::new();
    let root = home.root().to_path_buf();
    let mut dirs = vec![root.clone(), home.agents_dir()];
    for kind in ["services", "applications", "modules"] {
        dirs.push(home.agents_dir().join(kind));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    let mut problems = Vec::new();
    for d in &dirs {
        let meta = match std::fs::symlink_metadata(d) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(Check::fail(
                    "home",
                    ErrorKind::Io,
                    format!("{}: {e}", d.display()),
                    format!("check the permissions of {}", d.display()),
                ));
                continue;
            }
        };
        if meta.file_type().is_symlink() && d != &root {
            problems.push(Check::fail(
                "home",
                ErrorKind::Untrusted,
                format!("{} is a symlink", d.display()),
                format!(
                    "replace it with a directory: rm {0} && mkdir -m 0755 {0}",
                    d.display()
                ),
            ));
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            problems.push(Check::fail(
                "home",
                ErrorKind::Untrusted,
                format!(
                    "{} is writable by {} (mode {mode:04o}): anyone could replace an agent",
                    d.display(),
                    if mode & 0o002 != 0 {
                        "everyone"
                    } else {
                        "its group"
                    }
                ),
                format!("chmod go-w {}", d.display()),
            ));
        }
        if meta.uid() != me && meta.uid() != 0 {
            problems.push(Check::fail(
                "home",
                ErrorKind::Untrusted,
                format!(
                    "{} is owned by uid {}, not you (uid {me})",
                    d.display(),
                    meta.uid()
                ),
                format!("chown {me} {}", d.display()),
            ));
        }
    }
    if problems.is_empty() {
        if root.exists() {
            let mode = std::fs::metadata(&root).map_or(0, |m| m.mode() & 0o777);
            out.push(Check::ok(
                "home",
                format!("{} (mode {mode:04o}, owned by you)", root.display()),
            ));
        } else {
            out.push(Check::ok(
                "home",
                format!(
                    "{} (not created yet: the first pull creates it)",
                    root.display()
                ),
            ));
        }
    }
    out.extend(problems);
    out
}

// ---------------------------------------------------------------- stores

fn setting<'a>(e: &'a EffectiveConfig, key: &str) -> Option<&'a str> {
    e.get(key)
        .map(|s| s.value.as_str())
        .filter(|v| *v != "unset")
}

async fn store_checks(m: &Manager, effective: &EffectiveConfig) -> Vec<Check> {
    let names = m.store_names();
    if names.is_empty() {
        return vec![Check::warn(
            "stores",
            "no store is configured: only installed agents load",
            "configure one: AGENT_REGISTRY, AGENT_HTTP_STORE, AGENT_NIX_FLAKE, or [stores] in the config file",
        )];
    }
    let mut out = vec![Check::ok(
        "stores",
        format!("tried in order: {}", names.join(", ")),
    )];
    for name in names {
        let check = match name.as_str() {
            "oci" => probe_oci(setting(effective, "stores.oci")).await,
            "http" => probe_http(setting(effective, "stores.http")).await,
            "nix" => probe_nix(setting(effective, "stores.nix")).await,
            "github" => probe_github(setting(effective, "stores.github-api-url")).await,
            other => Check::ok(format!("store {other}"), "configured in code; not probed"),
        };
        out.push(check);
    }
    out
}

/// `GET url` with a timeout: (status, headers, body prefix), or the error text.
async fn get(
    url: &str,
    headers: &[(&str, String)],
) -> Result<(u16, http::HeaderMap, Vec<u8>), String> {
    use http_body_util::BodyExt as _;
    let client = agent_store_transport::client::<http_body_util::Empty<bytes::Bytes>>(
        &agent_store_transport::ClientOptions {
            connect_timeout: PROBE_TIMEOUT,
            ..Default::default()
        },
    );
    let mut req = http::Request::get(url).header(
        "user-agent",
        concat!("agentctl/", env!("CARGO_PKG_VERSION")),
    );
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| agent_store_transport::error_chain(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Ok::<_, String>((status, headers, body))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn probe_oci(registry: Option<&str>) -> Check {
    let name = "store oci";
    let Some(value) = registry else {
        return Check::fail(
            name,
            ErrorKind::Config,
            "selected but not configured",
            "set AGENT_REGISTRY or [stores] oci",
        );
    };
    let config = match agent_manager::stores::oci::RegistryConfig::parse(value) {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                name,
                ErrorKind::Config,
                e.to_string(),
                "fix AGENT_REGISTRY / [stores] oci",
            );
        }
    };
    let url = format!("{}://{}/v2/", config.scheme().as_str(), config.host());
    let started = Instant::now();
    match get(&url, &[]).await {
        Ok((status, headers, _)) => {
            let api = headers
                .get("docker-distribution-api-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no API version header")
                .to_owned();
            let c = match status {
                200 => Check::ok(name, format!("{url}: HTTP 200, {api}")),
                401 => Check::ok(name, format!("{url}: HTTP 401 (needs credentials), {api}")),
                s => Check::fail(
                    name,
                    ErrorKind::StoreUnavailable,
                    format!("{url}: HTTP {s}, {api}: not an OCI registry answer"),
                    "check AGENT_REGISTRY / [stores] oci names a registry (host[:port][/prefix])",
                ),
            };
            c.latency(started.elapsed())
        }
        Err(e) => Check::fail(
            name,
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            format!(
                "start the registry at {}, or fix AGENT_REGISTRY / [stores] oci",
                config.host()
            ),
        )
        .latency(started.elapsed()),
    }
}

async fn probe_http(base: Option<&str>) -> Check {
    let name = "store http";
    let Some(base) = base else {
        return Check::fail(
            name,
            ErrorKind::Config,
            "selected but not configured",
            "set AGENT_HTTP_STORE or [stores] http",
        );
    };
    let url = format!("{}/", base.trim_end_matches('/'));
    let started = Instant::now();
    match get(&url, &[]).await {
        // Any HTTP answer means the server is there (static servers 404 on the base).
        Ok((status, _, _)) if status < 500 => {
            Check::ok(name, format!("{url}: HTTP {status}")).latency(started.elapsed())
        }
        Ok((status, _, _)) => Check::fail(
            name,
            ErrorKind::StoreUnavailable,
            format!("{url}: HTTP {status}"),
            "the server answers with errors: check its logs",
        )
        .latency(started.elapsed()),
        Err(e) => Check::fail(
            name,
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            "start the server, or fix AGENT_HTTP_STORE / [stores] http",
        )
        .latency(started.elapsed()),
    }
}

async fn probe_nix(flake: Option<&str>) -> Check {
    let name = "store nix";
    let started = Instant::now();
    let out = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::process::Command::new("nix")
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let version = match out {
        Ok(Ok(o)) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(Ok(o)) => {
            return Check::fail(
                name,
                ErrorKind::StoreUnavailable,
                format!(
                    "nix --version failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                "repair the Nix installation",
            );
        }
        Ok(Err(e)) => {
            return Check::fail(
                name,
                ErrorKind::StoreUnavailable,
                format!("cannot run nix: {e}"),
                "install Nix (Debian: apt-get install nix-bin), or drop the nix store",
            );
        }
        Err(_) => {
            return Check::fail(
                name,
                ErrorKind::StoreUnavailable,
                "nix --version did not answer",
                "repair the Nix installation",
            );
        }
    };
    let flake = flake.unwrap_or("(no flake)");
    Check::ok(name, format!("{version}; flake {flake}")).latency(started.elapsed())
}

async fn probe_github(api: Option<&str>) -> Check {
    let name = "store github";
    let api = api
        .unwrap_or("https://api.github.com")
        .trim_end_matches('/');
    let token = ["GITHUB_TOKEN", "GH_TOKEN"].iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| (*v, t))
    });
    let mut headers = vec![("accept", "application/vnd.github+json".to_owned())];
    if let Some((_, t)) = &token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    let token_note = match &token {
        Some((var, _)) => format!("token from {var}"),
        None => "no token (60 requests/hour)".to_owned(),
    };
    let url = format!("{api}/rate_limit");
    let started = Instant::now();
    match get(&url, &headers).await {
        Ok((200, _, body)) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let remaining = v["rate"]["remaining"].as_u64();
            let limit = v["rate"]["limit"].as_u64();
            let detail = match (remaining, limit) {
                (Some(r), Some(l)) => format!("{api}: rate limit {r} of {l} left; {token_note}"),
                _ => format!("{api}: answers; {token_note}"),
            };
            let c = if remaining == Some(0) {
                Check::fail(
                    name,
                    ErrorKind::StoreUnavailable,
                    detail,
                    "wait for the rate limit to reset, or set GITHUB_TOKEN",
                )
            } else {
                Check::ok(name, detail)
            };
            c.latency(started.elapsed())
        }
        Ok((status, _, _)) => Check::fail(
            name,
            ErrorKind::StoreUnavailable,
            format!("{url}: HTTP {status}; {token_note}"),
            if token.is_some() {
                "the token was refused: renew GITHUB_TOKEN"
            } else {
                "check GITHUB_API_URL"
            },
        )
        .latency(started.elapsed()),
        Err(e) => Check::fail(
            name,
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            "check the network, GITHUB_API_URL, or set [stores] github = false",
        )
        .latency(started.elapsed()),
    }
}

// ---------------------------------------------------------------- lock file

fn lock_checks(ctx: &Ctx, m: Option<&Manager>, home: Option<&AgentHome>) -> Vec<Check> {
    let Some(path) = agent_manager::lock::discover(ctx.lockfile.as_deref()) else {
        return vec![Check::ok("lock", "no agents.lock here")];
    };
    if let Err(e) = agent_manager::store::check_trust_file(&path, "lock file") {
        return vec![Check::fail(
            "lock",
            e.kind(),
            e.to_string(),
            "run the chmod or chown the message names",
        )];
    }
    let lock = match LockFile::read(&path) {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::fail(
                "lock",
                e.kind(),
                e.to_string(),
                format!(
                    "fix {} or re-create it with `agentctl lock REF…`",
                    path.display()
                ),
            )];
        }
    };
    let platform = m.map_or_else(agent_manager::Platform::current, |m| m.platform().clone());
    let mut out = vec![Check::ok(
        "lock",
        format!(
            "{} ({} agent{})",
            path.display(),
            lock.entries.len(),
            if lock.entries.len() == 1 { "" } else { "s" }
        ),
    )];
    let Some(home) = home else {
        return out;
    };
    for e in &lock.entries {
        let name = format!("lock {}", e.reference.identifier());
        let bin = home.binary_path_for(&e.reference, &e.version);
        let Some(art) = e.artifact(&platform) else {
            out.push(Check::warn(
                name,
                format!("no {platform} binary locked"),
                format!(
                    "agentctl lock --platform {platform} {}",
                    e.reference.identifier()
                ),
            ));
            continue;
        };
        match std::fs::metadata(&bin) {
            Ok(meta) if meta.len() == art.size => {
                out.push(Check::ok(name, format!("installed at {}", bin.display())));
            }
            Ok(meta) => out.push(Check::fail(
                name,
                ErrorKind::Integrity,
                format!(
                    "{} is {} bytes, the lock says {}",
                    bin.display(),
                    meta.len(),
                    art.size
                ),
                format!(
                    "agentctl rm {0} && agentctl pull {0}",
                    e.reference.identifier()
                ),
            )),
            Err(_) => out.push(Check::warn(
                name,
                "not installed",
                format!("agentctl pull {}", e.reference.identifier()),
            )),
        }
    }
    out
}

// ---------------------------------------------------------------- stale files

fn stale_check(home: &AgentHome) -> Check {
    let mut stale: Vec<PathBuf> = Vec::new();
    let now = SystemTime::now();
    walk(
        &home.agents_dir(),
        0,
        &mut |p: &Path, meta: &std::fs::Metadata| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let old = meta
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_AFTER);
            if old && name.starts_with('.') && name.contains(".tmp.") {
                stale.push(p.to_owned());
            }
        },
    );
    if stale.is_empty() {
        return Check::ok("stale files", "no leftover downloads");
    }
    let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
    Check::warn(
        "stale files",
        format!(
            "{} leftover download{} older than an hour",
            stale.len(),
            if stale.len() == 1 { "" } else { "s" }
        ),
        format!("rm {}", list.join(" ")),
    )
}

fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    if depth > 3 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            walk(&p, depth + 1, f);
        } else {
            f(&p, &meta);
        }
    }
}

/// What this machine can enforce of a sandbox policy.
fn sandbox_check(s: &agent_manager::sandbox::Support) -> Check {
    if s.os == "macos" {
        return if s.sandbox_exec {
            Check::ok("sandbox", "sandbox-exec")
        } else {
            Check::warn(
                "sandbox",
                "no /usr/bin/sandbox-exec: sandboxed agents are refused (admission)",
                "restore the system's sandbox-exec",
            )
        };
    }
    let landlock = s.landlock_abi.map_or_else(
        || "no Landlock".to_owned(),
        |abi| format!("Landlock ABI {abi}"),
    );
    let userns = if s.user_namespaces {
        "user namespaces".to_owned()
    } else {
        format!(
            "no user namespaces ({})",
            s.user_namespaces_detail.as_deref().unwrap_or("disabled")
        )
    };
    let detail = format!("{landlock}, {userns}");
    if s.landlock_abi.is_none() {
        Check::warn(
            "sandbox",
            format!("{detail}: sandboxed agents are refused (admission)"),
            "run Linux >= 5.13 with Landlock enabled (`lsm=` boot parameter)",
        )
    } else if !s.user_namespaces {
        Check::warn(
            "sandbox",
            format!("{detail}: network = \"none\" is refused (admission)"),
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces)",
        )
    } else {
        Check::ok("sandbox", detail)
    }
}
