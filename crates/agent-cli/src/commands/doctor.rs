//! `agentctl doctor`: why loads would fail, before they fail.
//!
//! A table of checks (and `--json`): the home and its permissions, the
//! configuration file, each configured store (reachable or not, latency,
//! its answer), the lock file of the current directory and whether each
//! entry is installed, stale temp files. Exit 0 only when no check failed;
//! every problem names its fix.

use agent_manager::lockfile::LockFile;
use agent_manager::reference::AgentHome;
use agent_manager::store::{Cache, ProbeStatus, StoreProbe};
use agent_manager::{ErrorKind, Manager};
use serde_json::json;

use crate::ctx::Ctx;
use crate::report::{Failure, ms};

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

    /// A store's account of itself, as one row.
    fn of_probe(check: String, p: StoreProbe) -> Self {
        let status = match p.status {
            ProbeStatus::Ok => Status::Ok,
            ProbeStatus::Warn => Status::Warn,
            _ => Status::Fail,
        };
        Check {
            check,
            status,
            detail: p.detail,
            fix: p.fix,
            latency_ms: p.latency.map(ms),
            kind: p
                .kind
                .or((status == Status::Fail).then_some(ErrorKind::StoreUnavailable)),
        }
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
        checks.extend(store_checks(m).await);
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

/// The home, as the installer's permission rule sees it.
fn home_checks(home: &AgentHome) -> Vec<Check> {
    let report = agent_manager::store::check_home(home);
    if report.problems.is_empty() {
        let root = report.root.display();
        return vec![match report.root_mode {
            Some(mode) => Check::ok("home", format!("{root} (mode {mode:04o}, owned by you)")),
            None => Check::ok(
                "home",
                format!("{root} (not created yet: the first pull creates it)"),
            ),
        }];
    }
    report
        .problems
        .into_iter()
        .map(|p| Check::fail("home", p.kind, p.problem, p.fix))
        .collect()
}

// ---------------------------------------------------------------- stores

/// One row per store: what the store says about itself.
async fn store_checks(m: &Manager) -> Vec<Check> {
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
    for s in m.probe_stores().await {
        out.push(Check::of_probe(format!("store {}", s.store), s.probe));
    }
    out
}

// ---------------------------------------------------------------- lock file

fn lock_checks(ctx: &Ctx, m: Option<&Manager>, home: Option<&AgentHome>) -> Vec<Check> {
    let Some(path) = agent_manager::lockfile::discover(ctx.lockfile.as_deref()) else {
        return vec![Check::ok("lock", "no agents.lock here")];
    };
    if let Err(e) = agent_manager::store::check_trust_file(&path, "lock file") {
        return vec![Check::fail(
            "lock",
            e.kind(),
            agent_manager::reference::error_chain(&e).to_string(),
            "run the chmod or chown the message names",
        )];
    }
    let lock = match LockFile::read(&path) {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::fail(
                "lock",
                e.kind(),
                agent_manager::reference::error_chain(&e).to_string(),
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
    let stale = Cache::new(home.clone()).stale_temps();
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
