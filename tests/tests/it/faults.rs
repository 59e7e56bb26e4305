//! Network faults between a store and its server, through
//! `agent_testkit::proxy::FaultProxy`: truncate, reset, stall, delay, 5xx
//! bursts, wrong `Content-Length`. For the HTTP store (a small real HTTP/1.1
//! file server on 127.0.0.1) and the OCI store (the real `docker-registry`).
//!
//! Each test goes through `StoreChain::pull` with an `Installer` on a temp
//! home, as the manager does, and checks what a user sees: the error kind, how
//! many connections the retries made, nothing at the final cache path (and no
//! temp file left), and that the next clean pull is byte-exact.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_manager::store::{
    AgentHome, AgentRef, ErrorKind, Installed, Installer, Platform, RetryPolicy, StoreChain,
    StoreError,
};
use agent_manager::stores::http::HttpStore;
use agent_manager::stores::oci::{OciStore, RegistryConfig, push};
use agent_testkit::http::TestServer;
use agent_testkit::proxy::{Fault, FaultProxy};
use agent_testkit::registry::LocalRegistry;
use sha2::Digest as _;

/// Generous upper bound on any one pull in these tests (never a speed claim).
const BOUND: Duration = Duration::from_secs(120);

/// Large enough that every fault lands in the binary's body, never in a
/// manifest, a sidecar or a header block.
const PAYLOAD_LEN: usize = 1 << 20;
const CUT: u64 = 256 * 1024;

fn payload(seed: u8) -> Vec<u8> {
    (0..PAYLOAD_LEN)
        .map(|i| (i as u8).wrapping_mul(167).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn platform() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn echo(version: &str) -> AgentRef {
    format!("codefly.dev/echo:{version}").parse().unwrap()
}

fn chain(store: Arc<dyn agent_manager::store::AgentStore>, attempts: usize) -> StoreChain {
    StoreChain::new(vec![store]).with_retry(RetryPolicy {
        attempts,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    })
}

struct Home {
    _dir: tempfile::TempDir,
    installer: Installer,
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    Home {
        _dir: dir,
        installer,
    }
}

async fn pull(chain: &StoreChain, agent: &AgentRef, home: &Home) -> Result<Installed, StoreError> {
    tokio::time::timeout(BOUND, chain.pull(agent, &platform(), &home.installer))
        .await
        .expect("a pull must end within the bound")
}

/// Nothing at the final cache path, no temp file beside it, no cache hit.
fn assert_nothing_installed(home: &Home, agent: &AgentRef) {
    agent_testkit::assert_nothing_at(&home.installer.home().binary_path(agent).unwrap());
    assert!(home.installer.cached(agent).unwrap().is_none());
}

fn assert_exact(installed: &Installed, want: &[u8]) {
    agent_testkit::assert_file_bytes(&installed.path, want);
    assert_eq!(installed.sha256, hex::encode(sha2::Sha256::digest(want)));
    assert_eq!(installed.size, want.len() as u64);
}

/// Fails with `kind`, leaves nothing; then a pass-through pull is byte-exact.
/// Returns the error and how many connections the failing pull made.
async fn assert_fails_then_recovers(
    proxy: &FaultProxy,
    chain: &StoreChain,
    agent: &AgentRef,
    want: &[u8],
    kind: ErrorKind,
) -> (StoreError, usize) {
    let home = home();
    let err = pull(chain, agent, &home).await.unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert_nothing_installed(&home, agent);
    let connections = proxy.connections();
    proxy.clear();
    let got = pull(chain, agent, &home).await.unwrap();
    assert_exact(&got, want);
    assert_eq!(
        got.path,
        home.installer.home().binary_path(agent).unwrap(),
        "installed at the final cache path"
    );
    (err, connections)
}

/// A file server holding agent `echo` 1.0.0 for linux/amd64 (binary + sidecar).
///
/// One request per connection, so the proxy's connections count requests.
fn http_setup() -> (TestServer, Vec<u8>) {
    let bytes = payload(7);
    let path = "/store/codefly.dev/echo/1.0.0/service-echo_linux_amd64";
    let sum = format!(
        "{}  service-echo_linux_amd64\n",
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    let server = TestServer::builder().one_request_per_connection().start();
    server.put(path, bytes.clone());
    server.put(&format!("{path}.sha256"), sum);
    server.put("/store/codefly.dev/echo/versions", "1.0.0\n");
    (server, bytes)
}

fn http_store(proxy: &FaultProxy, stall: Duration) -> Arc<HttpStore> {
    Arc::new(
        HttpStore::builder(format!("{}/store", proxy.url()))
            .connect_timeout(Duration::from_secs(5))
            .stall_timeout(stall)
            .build()
            .unwrap(),
    )
}

/// One pull through the HTTP store is three requests: the `.sha256` sidecar,
/// the `.minisig` signature (a 404 here: the test agent is unsigned), then
/// the binary.
const HTTP_REQUESTS_PER_PULL: usize = 3;

#[tokio::test]
async fn http_truncated_body_is_unavailable_retried_and_recovers() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 3);
    proxy.set(Fault::Truncate { after: CUT });
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(
        proxy.connections(),
        3 * HTTP_REQUESTS_PER_PULL,
        "three attempts, each a sidecar, a signature and a cut download"
    );
    assert_nothing_installed(&home, &echo("1.0.0"));
    proxy.clear();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
}

#[tokio::test]
async fn http_reset_is_unavailable_and_recovers() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 2);
    proxy.set(Fault::Reset { after: CUT });
    let (_err, connections) = assert_fails_then_recovers(
        &proxy,
        &chain,
        &echo("1.0.0"),
        &bytes,
        ErrorKind::StoreUnavailable,
    )
    .await;
    assert_eq!(connections, 2 * HTTP_REQUESTS_PER_PULL, "two attempts");
}

#[tokio::test]
async fn http_stall_is_unavailable_within_the_stall_timeout() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_millis(500)), 1);
    proxy.set(Fault::Stall { after: CUT });
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("stall"), "{err}");
    assert_eq!(proxy.connections(), HTTP_REQUESTS_PER_PULL);
    assert_nothing_installed(&home, &echo("1.0.0"));
    proxy.clear();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
}

#[tokio::test]
async fn http_stall_before_headers_is_unavailable() {
    let (server, _bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_millis(500)), 1);
    proxy.set(Fault::Stall { after: 0 });
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(proxy.connections(), 1, "the sidecar request stalled");
    assert_nothing_installed(&home, &echo("1.0.0"));
}

#[tokio::test]
async fn http_slow_chunks_still_deliver_exact_bytes() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 1);
    proxy.set(Fault::Delay {
        per_chunk: Duration::from_millis(1),
    });
    let home = home();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
    assert!(proxy.bytes_down() >= bytes.len() as u64);
    assert_eq!(proxy.connections(), HTTP_REQUESTS_PER_PULL);
}

#[tokio::test]
async fn http_5xx_burst_of_two_is_retried_and_succeeds() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 3);
    for code in [503, 500] {
        proxy.clear();
        proxy.burst(code, 2);
        let home = home();
        assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
        // Two attempts end at their first request (the sidecar); the third makes all three.
        assert_eq!(proxy.connections(), 2 + HTTP_REQUESTS_PER_PULL, "{code}");
    }
}

#[tokio::test]
async fn http_permanent_503_stops_after_the_policy_attempts() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    for attempts in [1, 3] {
        proxy.clear();
        proxy.set(Fault::status(503));
        let chain = chain(http_store(&proxy, Duration::from_secs(10)), attempts);
        let home = home();
        let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(proxy.connections(), attempts, "one request per attempt");
        assert_nothing_installed(&home, &echo("1.0.0"));
        proxy.clear();
        assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
    }
}

#[tokio::test]
async fn http_retry_after_beyond_the_cap_is_not_waited_for() {
    let (server, _bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 3);
    proxy.set(Fault::Status {
        code: 503,
        retry_after: Some(3600),
    });
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(
        proxy.connections(),
        1,
        "an hour's Retry-After is not retried"
    );
    assert_nothing_installed(&home, &echo("1.0.0"));
}

#[tokio::test]
async fn http_wrong_content_length_is_never_success() {
    let (server, bytes) = http_setup();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let chain = chain(http_store(&proxy, Duration::from_secs(10)), 2);
    // The sidecar passes; every binary download claims 1000 bytes too many.
    proxy.set(Fault::WrongContentLength { extra: 1000 });
    proxy.push([Fault::PassThrough]);
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    // The body ends before its Content-Length: a broken transfer, retried.
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_nothing_installed(&home, &echo("1.0.0"));
    proxy.clear();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
}

// ---------------------------------------------------------------------------
// OCI: the real registry behind the proxy. The agent is pushed directly to
// the registry; the store pulls through the proxy.

async fn oci_setup(tmp: &Path) -> (LocalRegistry, FaultProxy, Vec<u8>) {
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let bytes = payload(23);
    let file = tmp.join("service-echo");
    std::fs::write(&file, &bytes).unwrap();
    let direct = RegistryConfig::parse(&reg.addr().to_string()).unwrap();
    push(&direct, &echo("1.0.0"), &[(file, None)])
        .await
        .unwrap();
    let proxy = FaultProxy::start(reg.addr()).await.unwrap();
    (reg, proxy, bytes)
}

fn oci_store(proxy: &FaultProxy) -> Arc<OciStore> {
    Arc::new(OciStore::new(RegistryConfig::parse(&proxy.addr().to_string()).unwrap()).unwrap())
}

#[tokio::test]
async fn oci_truncated_blob_is_unavailable_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let chain = chain(oci_store(&proxy), 3);
    proxy.set(Fault::Truncate { after: CUT });
    let (_err, connections) = assert_fails_then_recovers(
        &proxy,
        &chain,
        &echo("1.0.0"),
        &bytes,
        ErrorKind::StoreUnavailable,
    )
    .await;
    assert!(connections >= 3, "retried: {connections} connection(s)");
}

#[tokio::test]
async fn oci_reset_is_unavailable_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let chain = chain(oci_store(&proxy), 2);
    proxy.set(Fault::Reset { after: CUT });
    assert_fails_then_recovers(
        &proxy,
        &chain,
        &echo("1.0.0"),
        &bytes,
        ErrorKind::StoreUnavailable,
    )
    .await;
}

#[tokio::test]
async fn oci_slow_chunks_still_deliver_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let chain = chain(oci_store(&proxy), 1);
    proxy.set(Fault::Delay {
        per_chunk: Duration::from_millis(1),
    });
    let home = home();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
    assert!(proxy.bytes_down() >= bytes.len() as u64);
}

#[tokio::test]
async fn oci_5xx_burst_of_two_is_retried_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let chain = chain(oci_store(&proxy), 3);
    proxy.burst(503, 2);
    let home = home();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
    assert!(proxy.connections() >= 3, "{}", proxy.connections());
}

#[tokio::test]
async fn oci_permanent_503_is_unavailable_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    // An attempt refused at once makes a fixed number of requests (oci-client's
    // anonymous `/v2/` probe, whose status it ignores, then the manifest);
    // the policy's attempts multiply it, no more.
    let mut per_attempt = 0;
    for attempts in [1, 3] {
        proxy.clear();
        proxy.set(Fault::status(503));
        let chain = chain(oci_store(&proxy), attempts);
        let home = home();
        let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
        assert!(err.to_string().contains("503"), "{err}");
        if attempts == 1 {
            per_attempt = proxy.connections();
            assert!((1..=2).contains(&per_attempt), "{per_attempt}");
        } else {
            assert_eq!(proxy.connections(), attempts * per_attempt);
        }
        assert_nothing_installed(&home, &echo("1.0.0"));
        proxy.clear();
        assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
    }
}

#[tokio::test]
async fn oci_wrong_content_length_is_never_success() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let chain = chain(oci_store(&proxy), 2);
    proxy.set(Fault::WrongContentLength { extra: 1000 });
    let home = home();
    let err = pull(&chain, &echo("1.0.0"), &home).await.unwrap_err();
    // Every connection's first response claims too much: that is the manifest
    // (or the `/v2/` probe before it), whose body ends early: a broken transfer.
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_nothing_installed(&home, &echo("1.0.0"));
    proxy.clear();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
}

/// A blob that stops arriving is `store-unavailable` once the store's read
/// (stall) timeout passes, here shortened from its 60 s default.
#[tokio::test]
async fn oci_stall_is_unavailable_within_the_read_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (_reg, proxy, bytes) = oci_setup(tmp.path()).await;
    let config = RegistryConfig::parse(&proxy.addr().to_string())
        .unwrap()
        .with_timeouts(Duration::from_secs(5), Duration::from_millis(800));
    let chain = chain(Arc::new(OciStore::new(config).unwrap()), 1);
    proxy.set(Fault::Stall { after: CUT });
    let home = home();
    // Well under the 60 s default: the configured read timeout is what ends it.
    let err = tokio::time::timeout(Duration::from_secs(20), pull(&chain, &echo("1.0.0"), &home))
        .await
        .expect("the stall outlived the configured read timeout")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_nothing_installed(&home, &echo("1.0.0"));
    proxy.clear();
    assert_exact(&pull(&chain, &echo("1.0.0"), &home).await.unwrap(), &bytes);
}
