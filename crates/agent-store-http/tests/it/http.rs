//! `HttpStore` against a real hyper server on 127.0.0.1: the layout, every
//! fault mode, concurrency across tasks and processes, and a crash mid-download.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_store::{
    AgentHome, AgentRef, AgentStore, ErrorKind, Installer, Platform, RetryPolicy, StoreChain,
};
use agent_store_http::HttpStore;
use agent_testkit::{assert_nothing_at, dead_pid};
use common::{Fault, TestServer, payload, publish, sha256_hex, store};

const CHILD_BASE: &str = "AGENT_STORE_HTTP_TEST_CHILD_BASE";
const CHILD_HOME: &str = "AGENT_STORE_HTTP_TEST_CHILD_HOME";

fn fast_chain(store: HttpStore) -> StoreChain {
    StoreChain::new(vec![Arc::new(store)]).with_retry(RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    })
}

fn echo(version: &str) -> AgentRef {
    format!("codefly.dev/echo:{version}").parse().unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    installer: Installer,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    Env {
        _dir: dir,
        installer,
    }
}

fn final_path(installer: &Installer, agent: &AgentRef) -> std::path::PathBuf {
    installer.home().binary_path(agent).unwrap()
}

#[tokio::test]
async fn happy_path_is_byte_exact_with_record_and_mode() {
    let server = TestServer::start();
    let bytes = payload(3 * 1024 * 1024 + 17);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    let e = env();
    let agent = echo("1.0.0");
    let got = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(got.path, final_path(&e.installer, &agent));
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert_eq!(got.sha256, sha256_hex(&bytes));
    assert_eq!(got.size, bytes.len() as u64);
    let url = format!("http://{}{path}", server.addr());
    assert_eq!(got.source, format!("http:{url}"));
    let mode = std::fs::metadata(&got.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);

    let rec_path = got.path.with_file_name("echo__1.0.0.json");
    let rec: serde_like::Record = serde_like::read(&rec_path);
    assert_eq!(rec.sha256, got.sha256);
    assert_eq!(rec.size, got.size);
    assert_eq!(rec.source, got.source);
    assert_eq!(server.downloads(&path), 1);

    // A second pull is a cache hit: no new download.
    let again = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(server.downloads(&path), 1);
}

/// Reads the record as plain JSON without depending on serde in the test.
mod serde_like {
    pub(super) struct Record {
        pub(super) sha256: String,
        pub(super) size: u64,
        pub(super) source: String,
    }

    fn field<'a>(text: &'a str, key: &str) -> &'a str {
        let k = format!("\"{key}\":");
        let start = text.find(&k).unwrap() + k.len();
        let rest = text[start..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap();
        rest[..end].trim().trim_matches('"')
    }

    pub(super) fn read(path: &std::path::Path) -> Record {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(field(&text, "installed_at").parse::<u64>().unwrap() > 1_600_000_000);
        Record {
            sha256: field(&text, "sha256").to_owned(),
            size: field(&text, "size").parse().unwrap(),
            source: field(&text, "source").to_owned(),
        }
    }
}

#[tokio::test]
async fn versions_and_availability() {
    let server = TestServer::start();
    server.put(
        "/store/codefly.dev/echo/versions",
        "1.0.0\n1.10.0\n\nv1.2.0\nnot-a-version\n# comment\n1.2.0\n",
    );
    publish(&server, "echo", "1.10.0", b"bin");
    let s = store(&server);
    let p = Platform::current();
    let vs = s.versions(&echo("latest"), &p).await.unwrap();
    let vs: Vec<String> = vs.iter().map(ToString::to_string).collect();
    assert_eq!(vs, ["1.0.0", "1.2.0", "1.10.0"]);
    assert!(s.available(&echo("1.10.0"), &p).await.unwrap());
    assert!(!s.available(&echo("1.0.0"), &p).await.unwrap());
    let err = s
        .versions(&"codefly.dev/other".parse().unwrap(), &p)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing);
}

#[tokio::test]
async fn not_found_is_artifact_missing() {
    let server = TestServer::start();
    let e = env();
    let agent = echo("9.9.9");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn truncated_body_is_unavailable_retried_and_leaves_nothing() {
    let server = TestServer::start();
    let bytes = payload(1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.fault(&path, &[Fault::Truncate, Fault::Truncate, Fault::Truncate]);
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(server.downloads(&path), 3, "retried up to the policy");
    assert_nothing_at(&final_path(&e.installer, &agent));

    // The same store recovers on the next pull.
    let got = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), bytes);
}

#[tokio::test]
async fn truncated_file_on_the_server_is_integrity() {
    let server = TestServer::start();
    let bytes = payload(200_000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    // The server's copy lost its tail; the sidecar is for the whole file.
    server.put(&path, bytes[..100_000].to_vec());
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(server.downloads(&path), 1, "integrity is not retried");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn wrong_sidecar_is_integrity() {
    let server = TestServer::start();
    let bytes = payload(100_000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.put(
        &format!("{path}.sha256"),
        format!("{}  service-echo\n", sha256_hex(b"other bytes")),
    );
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("expected sha256"), "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn missing_or_garbled_sidecar_is_integrity() {
    let server = TestServer::start();
    let bytes = payload(1000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    let sidecar = format!("{path}.sha256");
    let e = env();
    let agent = echo("1.0.0");

    server.remove(&sidecar);
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("no sha256 sidecar"), "{err}");
    assert_eq!(
        server.downloads(&path),
        0,
        "nothing downloaded without a digest"
    );
    assert_nothing_at(&final_path(&e.installer, &agent));

    server.put(&sidecar, "not-hex  service-echo\n");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn server_error_then_success_is_retried_by_the_chain() {
    let server = TestServer::start();
    let bytes = payload(300_000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.fault(
        &path,
        &[Fault::Status(500, None), Fault::Status(503, Some("1"))],
    );
    let e = env();
    let agent = echo("1.0.0");
    let started = std::time::Instant::now();
    let got = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), bytes);
    assert_eq!(server.hits(&path), 3);
    assert_eq!(server.downloads(&path), 1);
    // Retry-After: 1 was honoured (a lower bound, not a time limit).
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn persistent_server_error_is_unavailable() {
    let server = TestServer::start();
    let path = publish(&server, "echo", "1.0.0", b"x");
    server.fault(&format!("{path}.sha256"), &[Fault::Status(502, None); 5]);
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(server.hits(&format!("{path}.sha256")), 3);
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn denied_is_not_retried_and_says_so() {
    let server = TestServer::start();
    let path = publish(&server, "echo", "1.0.0", b"x");
    let sidecar = format!("{path}.sha256");
    server.fault(&sidecar, &[Fault::Status(401, None); 3]);
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("denied") && msg.contains("401"), "{msg}");
    assert!(
        msg.contains("AGENT_HTTP_STORE"),
        "the credential hint: {msg}"
    );
    assert_eq!(server.hits(&sidecar), 1, "a 401 is not retried");
    assert_nothing_at(&final_path(&e.installer, &agent));

    // 403 and other 4xx alike.
    server.clear_faults(&sidecar);
    server.fault(
        &sidecar,
        &[Fault::Status(403, None), Fault::Status(400, None)],
    );
    for _ in 0..2 {
        let before = server.hits(&sidecar);
        let err = fast_chain(store(&server))
            .pull(&agent, &Platform::current(), &e.installer)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("denied"), "{err}");
        assert_eq!(server.hits(&sidecar), before + 1);
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let server = TestServer::start();
    let path = publish(&server, "echo", "1.0.0", b"x");
    let sidecar = format!("{path}.sha256");
    // An hour from now, as an HTTP date: longer than the chain waits, so it
    // gives up at once instead of hammering the store.
    let later: &'static str = Box::leak(httpdate_in(Duration::from_secs(3600)).into_boxed_str());
    server.fault(&sidecar, &[Fault::Status(503, Some(later)); 3]);
    let e = env();
    let err = fast_chain(store(&server))
        .pull(&echo("1.0.0"), &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(
        server.hits(&sidecar),
        1,
        "Retry-After (a date) beyond the cap: not retried"
    );
}

fn httpdate_in(d: Duration) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + d)
}

#[tokio::test]
async fn cross_host_redirect_is_refused_by_default() {
    let server = TestServer::start();
    let other = TestServer::start();
    let bytes = payload(5000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    other.put("/cdn/blob", bytes.clone());
    let to: &'static str = Box::leak(format!("http://{}/cdn/blob", other.addr()).into_boxed_str());
    server.fault(&path, &[Fault::Redirect(to); 3]);
    let e = env();
    let agent = echo("1.0.0");
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(
        err.to_string().contains("does not allow that host"),
        "{err}"
    );
    assert_eq!(
        other.hits("/cdn/blob"),
        0,
        "the foreign host is never asked"
    );
    assert_eq!(server.hits(&path), 1, "a refused redirect is not retried");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn credentials_go_only_to_their_origin_across_an_allowed_redirect() {
    let server = TestServer::start();
    let cdn = TestServer::start();
    let bytes = payload(5000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    cdn.put("/cdn/blob", bytes.clone());
    let to: &'static str = Box::leak(format!("http://{}/cdn/blob", cdn.addr()).into_boxed_str());
    server.fault(&path, &[Fault::Redirect(to)]);
    let s = HttpStore::builder(common::base(&server))
        .stall_timeout(Duration::from_secs(5))
        .authorization("Bearer s3cret")
        .allow_redirect_host(cdn.addr().to_string())
        .build()
        .unwrap();
    assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
    let e = env();
    let got = fast_chain(s)
        .pull(&echo("1.0.0"), &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), bytes);
    assert_eq!(
        server.authorizations(&format!("{path}.sha256")),
        [Some("Bearer s3cret".to_owned())],
        "the store's own origin gets the credential"
    );
    assert_eq!(
        cdn.authorizations("/cdn/blob"),
        [None],
        "the other host never sees it"
    );
}

#[tokio::test]
async fn redirects_are_followed() {
    let server = TestServer::start();
    let bytes = payload(5000);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.put("/cdn/blob", bytes.clone());
    server.fault(&path, &[Fault::Redirect("/cdn/blob")]);
    let e = env();
    let got = fast_chain(store(&server))
        .pull(&echo("1.0.0"), &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), bytes);
    assert_eq!(server.downloads("/cdn/blob"), 1);
}

#[tokio::test]
async fn stalled_body_times_out_as_unavailable() {
    let server = TestServer::start();
    let bytes = payload(1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.fault(&path, &[Fault::StallAfter(300_000)]);
    let e = env();
    let agent = echo("1.0.0");
    let s = HttpStore::builder(common::base(&server))
        .stall_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let err = StoreChain::new(vec![Arc::new(s)])
        .with_retry(RetryPolicy::none())
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("stalled"), "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn connection_reset_mid_body_is_unavailable() {
    let server = TestServer::builder().reset_on_error().start();
    let bytes = payload(2 * 1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.fault(&path, &[Fault::Reset]);
    let e = env();
    let agent = echo("1.0.0");
    let err = StoreChain::new(vec![Arc::new(store(&server))])
        .with_retry(RetryPolicy::none())
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = HttpStore::builder(format!("http://127.0.0.1:{port}/store"))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let e = env();
    let agent = echo("1.0.0");
    let err = StoreChain::new(vec![Arc::new(s)])
        .with_retry(RetryPolicy::none())
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert_nothing_at(&final_path(&e.installer, &agent));
}

#[tokio::test]
async fn symlinked_cache_path_is_refused() {
    let server = TestServer::start();
    let path = publish(&server, "echo", "1.0.0", b"bytes");
    let e = env();
    let agent = echo("1.0.0");
    let elsewhere = e
        .installer
        .home()
        .root()
        .parent()
        .unwrap()
        .join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let services = e.installer.home().root().join("agents/services");
    std::fs::create_dir_all(&services).unwrap();
    std::os::unix::fs::symlink(&elsewhere, services.join("codefly.dev")).unwrap();
    let err = fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(server.downloads(&path), 0);
}

#[tokio::test]
async fn stale_temp_from_a_dead_process_is_cleaned() {
    let server = TestServer::start();
    let bytes = payload(10_000);
    publish(&server, "echo", "1.0.0", &bytes);
    let e = env();
    let agent = echo("1.0.0");
    let dir = final_path(&e.installer, &agent)
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(format!(".echo__1.0.0.tmp.{}.dead", dead_pid()));
    std::fs::write(&stale, &bytes[..5000]).unwrap();
    fast_chain(store(&server))
        .pull(&agent, &Platform::current(), &e.installer)
        .await
        .unwrap();
    assert!(!stale.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_one_download() {
    let server = TestServer::start();
    let bytes = payload(4 * 1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    // ~64 chunks × 5 ms: long enough that every task arrives mid-download.
    server.throttle(Some(Duration::from_millis(5)));
    let e = env();
    let chain = fast_chain(store(&server));
    let agent = echo("1.0.0");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (chain, installer, agent) = (chain.clone(), e.installer.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            chain.pull(&agent, &Platform::current(), &installer).await
        }));
    }
    for t in tasks {
        let got = t.await.unwrap().unwrap();
        assert_eq!(got.sha256, sha256_hex(&bytes));
    }
    assert_eq!(server.downloads(&path), 1);
    assert_eq!(
        std::fs::read(final_path(&e.installer, &agent)).unwrap(),
        bytes
    );
}

/// Not a test on its own: the body of a child process started by the
/// multi-process tests (`--ignored --exact child_pull_entry`), hence ignored.
#[test]
#[ignore = "child-process entry point of the multi-process tests"]
fn child_pull_entry() {
    let base = std::env::var(CHILD_BASE).expect("run by the multi-process tests only");
    let home = std::env::var(CHILD_HOME).expect("run by the multi-process tests only");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let store = HttpStore::new(base).unwrap();
        let installer = Installer::new(AgentHome::new(home));
        fast_chain(store)
            .pull(&echo("1.0.0"), &Platform::current(), &installer)
            .await
    });
    match result {
        Ok(i) => println!("CHILD-OK {}", i.sha256),
        Err(e) => panic!("child pull failed: {e}"),
    }
}

fn child(base: &str, home: &Path) -> Command {
    let mut c = agent_testkit::rerun(&agent_testkit::test_name!("child_pull_entry"));
    c.env(CHILD_BASE, base)
        .env(CHILD_HOME, home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_one_download() {
    let server = TestServer::start();
    let bytes = payload(4 * 1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.throttle(Some(Duration::from_millis(10)));
    let e = env();
    let home = e.installer.home().root().to_path_buf();
    let children: Vec<_> = (0..4)
        .map(|_| child(&common::base(&server), &home).spawn().unwrap())
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let want = format!("CHILD-OK {}", sha256_hex(&bytes));
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&want),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(server.downloads(&path), 1);
    assert_eq!(
        std::fs::read(final_path(&e.installer, &echo("1.0.0"))).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_download_leaves_nothing_and_next_pull_succeeds() {
    let server = TestServer::start();
    let bytes = payload(4 * 1024 * 1024);
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.fault(&path, &[Fault::StallAfter(bytes.len() / 2)]);
    let e = env();
    let agent = echo("1.0.0");
    let home = e.installer.home().root().to_path_buf();
    let stalled = server.stalled().notified();
    let mut proc = child(&common::base(&server), &home).spawn().unwrap();
    let pid = proc.id();
    tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("the child never reached the stall");

    // The child is mid-download: its temp file exists, the final path does not.
    let dir = final_path(&e.installer, &agent)
        .parent()
        .unwrap()
        .to_path_buf();
    let prefix = format!(".echo__1.0.0.tmp.{pid}.");
    let mut temp = None;
    for _ in 0..200 {
        temp = std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
        });
        if temp
            .as_ref()
            .is_some_and(|t| t.metadata().unwrap().len() > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let temp = temp.expect("child's temp file");
    assert!(!final_path(&e.installer, &agent).exists());

    proc.kill().unwrap(); // SIGKILL
    let status = proc.wait().unwrap();
    assert!(!status.success());
    assert!(
        !final_path(&e.installer, &agent).exists(),
        "killed download must leave nothing"
    );
    assert!(
        temp.exists(),
        "a SIGKILLed process cannot clean up; the next install does"
    );

    // The lock died with the process: the next pull proceeds and cleans the temp.
    server.clear_faults(&path);
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        fast_chain(store(&server)).pull(&agent, &Platform::current(), &e.installer),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert!(!temp.exists(), "stale temp cleaned");
    assert_eq!(server.downloads(&path), 2);
}
