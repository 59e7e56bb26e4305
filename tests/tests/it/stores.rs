//! The Manager with real stores (agent-store-http against a small real HTTP
//! server on loopback, agent-store-github against its GitHub stand-in): pull
//! then load, tampered bytes → `integrity` and nothing cached, a missing
//! artifact → `binary-not-found` naming the store; store authority (no
//! dependency confusion), publisher scoping, and the configuration file.

use crate::common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use agent_manager::stores::http::HttpStore;
use agent_manager::{AgentHome, AgentRef, AgentStore, ErrorKind, Manager, Platform};
use agent_testkit::github::{AssetSpec, FakeGitHub};
use agent_testkit::http::TestServer;
use common::Home;
use sha2::Digest as _;

fn layout(version: &str, body: &[u8], digest_of: &[u8]) -> HashMap<String, Vec<u8>> {
    layout_for("codefly.dev", version, body, digest_of)
}

/// The HTTP store layout of `{publisher}/echo` at one version.
fn layout_for(
    publisher: &str,
    version: &str,
    body: &[u8],
    digest_of: &[u8],
) -> HashMap<String, Vec<u8>> {
    let suffix = Platform::current().suffix();
    let url = format!("/{publisher}/echo/{version}/service-echo_{suffix}");
    let digest = hex::encode(sha2::Sha256::digest(digest_of));
    HashMap::from([
        (url.clone(), body.to_vec()),
        (
            format!("{url}.sha256"),
            format!("{digest}  service-echo\n").into_bytes(),
        ),
        (
            format!("/{publisher}/echo/versions"),
            format!("{version}\n").into_bytes(),
        ),
    ])
}

fn manager(home: &Home, server: &TestServer) -> Manager {
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new(server.url()).unwrap());
    Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![store])
        .build()
        .unwrap()
}

#[tokio::test]
async fn latest_is_pulled_verified_and_loaded() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = TestServer::with_files(layout("0.4.0", &echo, &echo));
    let home = Home::new();
    let m = manager(&home, &server);
    let agent: AgentRef = "echo".parse().unwrap();
    assert_eq!(
        m.resolve(&agent).await.unwrap().identifier(),
        "codefly.dev/echo:0.4.0"
    );
    let conn = m.load(&agent).await.unwrap();
    let cached = home.binary("services", "codefly.dev", "echo", "0.4.0");
    assert_eq!(std::fs::read(&cached).unwrap(), echo, "byte-exact");
    assert_eq!(m.active()[0].unique, "service::codefly.dev/echo:0.4.0");
    let installed = m.pull(&agent).await.unwrap();
    assert!(installed.source.contains("http"), "{}", installed.source);
    conn.close().await;
    m.cleanup_all().await;
}

#[tokio::test]
async fn tampered_bytes_are_integrity_and_nothing_is_cached() {
    let echo = std::fs::read(common::echo()).unwrap();
    let mut tampered = echo.clone();
    tampered[1000] ^= 0xff;
    let server = TestServer::with_files(layout("0.4.0", &tampered, &echo));
    let home = Home::new();
    let m = manager(&home, &server);
    let e = m.load(&"echo:0.4.0".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        !home
            .binary("services", "codefly.dev", "echo", "0.4.0")
            .exists()
    );
    assert!(m.active().is_empty());
}

#[tokio::test]
async fn missing_everywhere_is_binary_not_found_naming_the_store() {
    let server = TestServer::with_files(HashMap::new());
    let home = Home::new();
    let m = manager(&home, &server);
    let e = m.load(&"echo:0.4.0".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("http"), "{msg}");
    assert!(msg.contains("local: no "), "{msg}");
}

#[tokio::test]
async fn a_dead_store_is_store_unavailable() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let home = Home::new();
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new(base).unwrap());
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![store])
        .build()
        .unwrap();
    let e = m.resolve(&"echo".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
    assert!(e.is_retryable());
}

/// The GitHub stand-in with a look-alike org: `acme-corp/service-echo`
/// v9.9.9 (what `acme.corp/echo` maps to), its asset a working agent.
async fn lookalike_github() -> FakeGitHub {
    let gh = FakeGitHub::start().await;
    let suffix = Platform::current().suffix();
    let name = format!("service-echo_9.9.9_{suffix}.tar.gz");
    gh.release(
        "acme-corp",
        "service-echo",
        "v9.9.9",
        false,
        vec![AssetSpec::with_digest(&name, b"not used".to_vec())],
    );
    gh
}

fn github_store(gh: &FakeGitHub, home: &Home) -> Arc<dyn AgentStore> {
    Arc::new(
        agent_manager::stores::github::GithubStore::builder()
            .api_url(gh.url())
            .cache_dir(home.path().join("gh-cache"))
            .build()
            .unwrap(),
    )
}

/// Dependency confusion: `acme.corp/echo` 1.0.0 on the HTTP
/// store and a look-alike GitHub org publishing v9.9.9. `latest` is 1.0.0
/// from the HTTP store (the first store listing any version is
/// authoritative), and GitHub is never asked; with the HTTP store down,
/// neither `latest` nor the exact 9.9.9 goes to GitHub: `store-unavailable`
/// naming the HTTP store. Versions are never merged across stores.
#[tokio::test]
async fn the_first_store_listing_an_agent_is_authoritative_a_lookalike_github_org_is_never_asked() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = TestServer::with_files(layout_for("acme.corp", "1.0.0", &echo, &echo));
    let gh = lookalike_github().await;
    let home = Home::new();
    let http: Arc<dyn AgentStore> = Arc::new(HttpStore::new(server.url()).unwrap());
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![http, github_store(&gh, &home)])
        .build()
        .unwrap();
    let agent: AgentRef = "acme.corp/echo".parse().unwrap();
    assert_eq!(
        m.resolve(&agent).await.unwrap().identifier(),
        "acme.corp/echo:1.0.0"
    );
    let conn = m.load(&agent).await.unwrap();
    let installed = m.pull(&agent).await.unwrap();
    assert!(installed.source.contains("http"), "{}", installed.source);
    conn.close().await;
    assert_eq!(gh.count("/repos"), 0, "GitHub was asked: {:?}", gh.seen());

    // The HTTP store goes down.
    drop(server);
    let home2 = Home::new();
    let m = Manager::builder()
        .home(AgentHome::new(home2.path()))
        .stores(m.chain().stores().to_vec())
        .build()
        .unwrap();
    let e = m.resolve(&agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
    assert!(e.to_string().contains("http"), "{e}");
    let e = m
        .load(&"acme.corp/echo:9.9.9".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
    assert!(e.to_string().contains("http"), "{e}");
    assert_eq!(gh.count("/repos"), 0, "GitHub was asked: {:?}", gh.seen());
    assert!(m.active().is_empty());
}

/// `[publishers."acme.corp"] stores = ["http"]`: GitHub is never asked for
/// acme.corp even when it comes first in the order and the HTTP store lists
/// nothing; every store is built from the configuration file's values.
#[tokio::test]
async fn publisher_scoping_from_the_config_file_keeps_other_stores_out() {
    let server = TestServer::with_files(HashMap::new());
    let gh = lookalike_github().await;
    let home = Home::new();
    let file = home.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[stores]\norder = [\"github\", \"http\"]\nhttp = \"{}\"\ngithub-api-url = \"{}\"\n\n\
             [publishers.\"acme.corp\"]\nstores = [\"http\"]\n",
            server.url(),
            gh.url()
        ),
    )
    .unwrap();
    let m = Manager::builder()
        .env_config(env(&home, &[("CODEFLY_CONFIG", file.to_str().unwrap())]))
        .build()
        .unwrap();
    assert_eq!(m.store_names(), ["github", "http"]);
    let e = m
        .resolve(&"acme.corp/echo".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound, "{e}");
    let e = m
        .pull(&"acme.corp/echo:9.9.9".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound, "{e}");
    assert_eq!(gh.count("/repos"), 0, "GitHub was asked: {:?}", gh.seen());
    // Another publisher is not scoped: GitHub is asked (and has nothing).
    let _ = m.resolve(&"other/echo".parse().unwrap()).await;
    assert!(gh.count("/repos/other/") > 0, "{:?}", gh.seen());
}

/// The environment as `from_env` would read it, without touching the
/// process environment (tests run in parallel).
fn env(home: &Home, vars: &[(&str, &str)]) -> agent_manager::EnvConfig {
    let mut map: HashMap<String, std::ffi::OsString> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    map.insert("CODEFLY_HOME".into(), home.path().into());
    agent_manager::EnvConfig::from_lookup(|k| map.get(k).cloned()).unwrap()
}

/// A bad configuration file is kind `config`, naming the file, the line and
/// the key, and what is accepted (it was `invalid-ref`, with no file or line).
#[tokio::test]
async fn a_bad_config_file_is_kind_config_naming_file_line_and_key() {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        "# stores\n[stores]\nhttp = \"http://127.0.0.1:1\"\nfalback = \"any\"\n",
    )
    .unwrap();
    let e = Manager::builder()
        .env_config(env(&home, &[]))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let msg = e.to_string();
    let file = home.path().join("config.toml");
    assert!(
        msg.starts_with(&format!("{}:4: stores.falback", file.display())),
        "{msg}"
    );
    assert!(msg.contains("fallback"), "accepted keys listed: {msg}");
    // A store value the store refuses names the key and line too.
    std::fs::write(
        home.path().join("config.toml"),
        "[stores]\n\nhttp = \"ftp://example.com\"\n",
    )
    .unwrap();
    let e = Manager::builder()
        .env_config(env(&home, &[]))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains(":3: stores.http"), "{e}");
    // A variable naming a store that is not configured: the variable is named.
    let e = Manager::builder()
        .env_config(env(&home, &[("CODEFLY_AGENT_STORES", "oci")]))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("CODEFLY_AGENT_STORES"), "{e}");
}

/// Every store setting keeps its variable, which wins over the file; the
/// effective configuration says where each setting came from and never
/// shows a secret.
#[tokio::test]
async fn env_wins_over_the_file_and_the_effective_config_says_so() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = TestServer::with_files(layout("0.4.0", &echo, &echo));
    let home = Home::new();
    let file = home.path().join("config.toml");
    std::fs::write(
        &file,
        "[stores]\nhttp = \"http://127.0.0.1:1\"\ngithub = false\nfallback = \"any\"\n",
    )
    .unwrap();
    let m = Manager::builder()
        .env_config(env(&home, &[("AGENT_HTTP_STORE", &server.url())]))
        .build()
        .unwrap();
    // The variable's store is the one built (the file's port 1 would be refused).
    assert_eq!(m.store_names(), ["http"], "github = false in the file");
    assert_eq!(
        m.resolve(&"echo".parse().unwrap())
            .await
            .unwrap()
            .identifier(),
        "codefly.dev/echo:0.4.0"
    );
    let eff = m.effective_config();
    assert_eq!(eff.file.as_deref(), Some(file.as_path()));
    let http = eff.get("stores.http").unwrap();
    assert_eq!(http.value, server.url());
    assert_eq!(http.origin.to_string(), "env AGENT_HTTP_STORE");
    let gh = eff.get("stores.github").unwrap();
    assert_eq!(
        (gh.value.as_str(), gh.origin.to_string()),
        ("false", format!("file {}", file.display()))
    );
    assert_eq!(eff.get("stores.fallback").unwrap().value, "any");
    assert_eq!(
        eff.get("cache.verify").unwrap().origin.to_string(),
        "default"
    );
    assert_eq!(
        eff.get("home").unwrap().origin.to_string(),
        "env CODEFLY_HOME"
    );
    let json = serde_json::to_value(&eff).unwrap();
    assert!(json["settings"].as_array().unwrap().len() > 5, "{json}");
}

/// A lock file for `codefly.dev/echo` at `version`, pinning `sha256` on this platform.
fn write_lock(path: &std::path::Path, version: &str, sha256: &str) {
    use agent_manager::lockfile::{LockEntry, LockFile, LockedArtifact};
    let agent: AgentRef = "codefly.dev/echo".parse().unwrap();
    let mut entry = LockEntry::new(&agent, &version.parse().unwrap()).unwrap();
    entry.platforms.insert(
        Platform::current().to_string(),
        LockedArtifact {
            sha256: sha256.to_owned(),
            size: 0,
            store: "http".into(),
            signer: None,
        },
    );
    let mut lock = LockFile::default();
    lock.upsert(entry);
    lock.write(path).unwrap();
}

/// Issue 15: a ref the lock lists resolves to the locked version without
/// asking any store (the only store is down), and loads when its binary
/// hashes to the lock's sha256.
#[tokio::test]
async fn a_locked_ref_resolves_without_any_store_and_loads_when_the_digest_matches() {
    let echo = std::fs::read(common::echo()).unwrap();
    let home = Home::new();
    let lockfile = home.path().join("agents.lock");
    write_lock(
        &lockfile,
        "0.3.0",
        &hex::encode(sha2::Sha256::digest(&echo)),
    );
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new(base).unwrap());
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![store])
        .lockfile(&lockfile)
        .build()
        .unwrap();
    let agent: AgentRef = "echo".parse().unwrap();
    assert_eq!(
        m.resolve(&agent).await.unwrap().identifier(),
        "codefly.dev/echo:0.3.0",
        "the store is down: only the lock could say 0.3.0"
    );
    m.installer()
        .install_file(
            &"codefly.dev/echo:0.3.0".parse().unwrap(),
            "test",
            &Default::default(),
            &common::echo(),
        )
        .await
        .unwrap();
    let conn = m.load(&agent).await.unwrap();
    assert_eq!(m.active()[0].unique, "service::codefly.dev/echo:0.3.0");
    conn.close().await;
    // A ref whose spec the lock's version does not meet is not locked (and
    // the store being down then shows).
    let e = m.resolve(&"echo:^1".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
}

/// A restart of a locked agent runs only the bytes the lock pins: a binary
/// installed over it while it ran (with an install record of its own, so the
/// cache alone would vouch for it) is refused (`integrity`) and never runs.
#[tokio::test]
async fn a_locked_agents_restart_runs_only_the_locked_bytes() {
    let echo = std::fs::read(common::echo()).unwrap();
    let home = Home::new();
    let lockfile = home.path().join("agents.lock");
    write_lock(
        &lockfile,
        "0.3.0",
        &hex::encode(sha2::Sha256::digest(&echo)),
    );
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(Vec::new())
        .lockfile(&lockfile)
        .build()
        .unwrap();
    let agent: AgentRef = "codefly.dev/echo:0.3.0".parse().unwrap();
    m.installer()
        .install_file(&agent, "test", &Default::default(), &common::echo())
        .await
        .unwrap();
    let conn = m
        .load_with(
            &agent,
            agent_manager::LoadOptions::new()
                .restart(agent_manager::spawn::RestartPolicy::on_failure()),
        )
        .await
        .unwrap();
    let marker = home.path().join("replacement-ran");
    let fake = home.path().join("fake");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\nexec sleep 30\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    m.installer()
        .install_file(&agent, "test", &Default::default(), &fake)
        .await
        .unwrap();
    let pid = i32::try_from(conn.pid()).unwrap();
    // SAFETY: kill(2) on the test's own agent.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let gave_up = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Some(failure) = conn.failure() {
                return failure;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("supervision went on");
    assert_eq!(gave_up.kind(), ErrorKind::Integrity, "{gave_up:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the replacement ran");
}

/// Issue 15: a binary whose sha256 is not the lock's is `integrity`: it is
/// not run, and it never reaches the cache path, not even for a moment
/// (watched with inotify: a binary renamed into place and removed after the
/// check would show up as a move into the directory).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_binary_that_differs_from_the_lock_is_integrity_not_run_not_cached() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = TestServer::with_files(layout("0.4.0", &echo, &echo));
    let home = Home::new();
    let lockfile = home.path().join("agents.lock");
    write_lock(&lockfile, "0.4.0", &"0".repeat(64));
    let cached = home.binary("services", "codefly.dev", "echo", "0.4.0");
    let dir = cached.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let watch = common::DirWatch::new(dir);
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new(server.url()).unwrap());
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![store])
        .lockfile(&lockfile)
        .build()
        .unwrap();
    let e = m.load(&"echo".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("agents.lock"), "{e}");
    assert!(m.active().is_empty());
    assert!(!cached.exists(), "left in the cache: {}", cached.display());
    let e = m.pull(&"echo".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!cached.exists());
    let seen = watch.names();
    assert!(
        seen.iter().any(|n| n.contains(".tmp.")),
        "the watch saw no install at all: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|n| n == "echo__0.4.0" || n == "echo__0.4.0.json"),
        "the unlocked binary (or its record) was at the cache path for a while: {seen:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
            .count(),
        0,
        "something of the install stayed"
    );
}

/// Issue 15: with `locked`, a ref the lock does not list is `not-locked`,
/// naming the lock file; no store is asked.
#[tokio::test]
async fn locked_refuses_a_ref_the_lock_does_not_list() {
    let home = Home::new();
    let lockfile = home.path().join("agents.lock");
    write_lock(&lockfile, "0.3.0", &"0".repeat(64));
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(Vec::new())
        .lockfile(&lockfile)
        .locked(true)
        .build()
        .unwrap();
    let e = m.load(&"acme/other".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLocked, "{e}");
    assert!(
        e.to_string().contains(&lockfile.display().to_string()),
        "{e}"
    );
    let e = m
        .pull(&"acme/other:1.0.0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLocked, "{e}");
}

/// Issue 15 through the facade: `[publishers."P"] keys` in the config file
/// reach the installer. An unsigned binary of a publisher with keys is
/// `untrusted` and not cached; the same binary signed by the listed key
/// (with the contract's trusted comment) loads.
#[tokio::test]
async fn publisher_keys_from_the_config_file_are_enforced() {
    use agent_manager::store::{keygen, sign_file, trusted_comment};
    let echo = std::fs::read(common::echo()).unwrap();
    let kp = keygen().unwrap();
    let public = kp
        .public
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap()
        .trim()
        .to_owned();
    let config = |home: &Home, base: &str| {
        let file = home.path().join("config.toml");
        std::fs::write(
            &file,
            format!(
                "[stores]\nhttp = \"{base}\"\ngithub = false\n\n[publishers.\"codefly.dev\"]\nkeys = [\"{public}\"]\n"
            ),
        )
        .unwrap();
        Manager::builder()
            .env_config(env(home, &[]))
            .build()
            .unwrap()
    };
    let agent: AgentRef = "codefly.dev/echo:0.4.0".parse().unwrap();

    let server = TestServer::with_files(layout("0.4.0", &echo, &echo));
    let home = Home::new();
    let m = config(&home, &server.url());
    let e = m.load(&agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Untrusted, "{e}");
    assert!(
        !home
            .binary("services", "codefly.dev", "echo", "0.4.0")
            .exists()
    );
    // The refused download may leave the server's thread blocked writing a
    // body nobody reads; leak it rather than join it.
    std::mem::forget(server);

    let sig = sign_file(
        &kp.secret,
        None,
        &common::echo(),
        &trusted_comment(&agent, &Platform::current()),
    )
    .unwrap();
    let mut files = layout("0.4.0", &echo, &echo);
    let url = format!(
        "/codefly.dev/echo/0.4.0/service-echo_{}",
        Platform::current().suffix()
    );
    files.insert(format!("{url}.minisig"), sig.into_bytes());
    let server = TestServer::with_files(files);
    let home = Home::new();
    let m = config(&home, &server.url());
    let conn = m.load(&agent).await.unwrap();
    conn.close().await;
}

/// A `.tar.gz` holding one executable `service-echo` (GitHub's asset layout).
fn tgz_with_binary(body: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "service-echo", body).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// Store authority covers the bytes: `acme.corp/echo` 1.0.0 on the HTTP
/// store, v1.1.0 on a GitHub org. `load acme.corp/echo:1.1.0` (an exact
/// version) is `binary-not-found` naming the HTTP store as authoritative;
/// GitHub is never asked, its binary never runs and never reaches the cache.
/// With `[stores] fallback = "any"` (the opt-out) GitHub serves it.
#[tokio::test]
async fn the_authoritative_store_alone_serves_the_bytes_a_version_it_lacks_is_missing() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = TestServer::with_files(layout_for("acme.corp", "1.0.0", &echo, &echo));
    let gh = FakeGitHub::start().await;
    let home = Home::new();
    let marker = home.path().join("github-binary-ran");
    let script = format!(
        "#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n",
        marker.display(),
        common::echo().display()
    );
    let suffix = Platform::current().suffix();
    gh.release(
        "acme-corp",
        "service-echo",
        "v1.1.0",
        false,
        vec![AssetSpec::with_digest(
            &format!("service-echo_1.1.0_{suffix}.tar.gz"),
            tgz_with_binary(script.as_bytes()),
        )],
    );
    let stores = |home: &Home| -> Vec<Arc<dyn AgentStore>> {
        vec![
            Arc::new(HttpStore::new(server.url()).unwrap()),
            github_store(&gh, home),
        ]
    };
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(stores(&home))
        .build()
        .unwrap();
    let agent: AgentRef = "acme.corp/echo:1.1.0".parse().unwrap();
    let e = m.load(&agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("store http has no") && msg.contains("authoritative"),
        "{msg}"
    );
    assert!(!marker.exists(), "GitHub's binary ran");
    assert!(
        !home
            .binary("services", "acme.corp", "echo", "1.1.0")
            .exists()
    );
    assert_eq!(gh.count("/repos"), 0, "GitHub was asked: {:?}", gh.seen());
    assert!(m.active().is_empty());

    // The opt-out: any store may serve it.
    let home = Home::new();
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(stores(&home))
        .build()
        .unwrap();
    let any = agent_manager::StoreChain::new(m.chain().stores().to_vec())
        .with_fallback(agent_manager::store::Fallback::Any);
    let installer = m.installer().clone();
    let installed = any
        .pull(&agent, &Platform::current(), &installer)
        .await
        .unwrap();
    assert!(installed.source.starts_with("github"), "{installed:?}");
}

/// `[publishers."*"]` requires key K; `[publishers."acme.corp"]` sets only
/// `stores`. The acme.corp table overrides only what it sets: K is still
/// required, an unsigned acme.corp agent is `untrusted`, nothing is cached.
#[tokio::test]
async fn a_publisher_table_keeps_the_wildcard_keys_it_does_not_set() {
    use agent_manager::store::keygen;
    let echo = std::fs::read(common::echo()).unwrap();
    let kp = keygen().unwrap();
    let public = kp
        .public
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap()
        .trim()
        .to_owned();
    let server = TestServer::with_files(layout_for("acme.corp", "0.4.0", &echo, &echo));
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[stores]\nhttp = \"{}\"\ngithub = false\n\n[publishers.\"*\"]\nkeys = [\"{public}\"]\n\n\
             [publishers.\"acme.corp\"]\nstores = [\"http\"]\n",
            server.url()
        ),
    )
    .unwrap();
    let m = Manager::builder()
        .env_config(env(&home, &[]))
        .build()
        .unwrap();
    let agent: AgentRef = "acme.corp/echo:0.4.0".parse().unwrap();
    let e = m.load(&agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Untrusted, "{e}");
    assert!(
        !home
            .binary("services", "acme.corp", "echo", "0.4.0")
            .exists()
    );
    assert!(m.active().is_empty());
    std::mem::forget(server);
}

/// An HTTP store that lists `acme/echo` 1.0.0 and its digest at once, then
/// sends the binary one byte per 100 ms (each byte resets a stall timer).
fn trickling_server() -> TestServer {
    let bin = format!(
        "/acme/echo/1.0.0/service-echo_{}",
        Platform::current().suffix()
    );
    let server = TestServer::start();
    server.put("/acme/echo/versions", "1.0.0\n");
    server.put(&format!("{bin}.sha256"), format!("{}  x\n", "0".repeat(64)));
    server.put(&bin, vec![b'x'; 1_000_000]);
    server.trickle(&bin, std::time::Duration::from_millis(100));
    server
}

/// `[stores] download-timeout = "1s"` and a store trickling one byte per
/// 100 ms: the pull ends after about a second as `store-unavailable` naming
/// the deadline, and no temp file is left; `agentctl config` shows the
/// setting with its source.
#[tokio::test]
async fn a_trickling_store_is_cut_off_at_the_download_deadline() {
    let server = trickling_server();
    let base = server.url();
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[stores]\nhttp = \"{base}\"\ngithub = false\ndownload-timeout = \"1s\"\n"),
    )
    .unwrap();
    let m = Manager::builder()
        .env_config(env(&home, &[]))
        .build()
        .unwrap();
    let setting = m.effective_config();
    let setting = setting.get("stores.download-timeout").unwrap();
    assert_eq!(setting.value, "1s");
    assert!(
        setting.origin.to_string().contains("config.toml"),
        "{:?}",
        setting.origin
    );
    let started = std::time::Instant::now();
    let e = m
        .pull(&"acme/echo:1.0.0".parse().unwrap())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("download deadline of 1s") && msg.contains("download-timeout"),
        "{msg}"
    );
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    let dir = home.binary("services", "acme", "echo", "1.0.0");
    let dir = dir.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp."))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "temp files left: {left:?}");
    assert!(!home.binary("services", "acme", "echo", "1.0.0").exists());

    let r = common::ctl(&home, &["config"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("stores.download-timeout"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(
        line.contains("1s") && line.contains("config.toml"),
        "{line}"
    );
}
