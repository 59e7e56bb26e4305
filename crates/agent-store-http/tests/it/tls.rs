//! An https store (a real TLS server: `openssl s_server -HTTP` with a test CA
//! made by the `openssl` CLI) that redirects to plain http: refused before
//! the http URL is ever asked.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_store::{
    AgentHome, AgentStore as _, ErrorKind, Installer, Platform, ProbeStatus, RetryPolicy,
    StoreChain,
};
use agent_store_http::HttpStore;
use common::{TestServer, artifact_path, publish};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI is needed");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA (DER, for the store to trust) and a leaf for 127.0.0.1 signed by it.
fn test_ca(dir: &Path) -> Vec<u8> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut leaf = vec!["req"];
    leaf.extend(ec);
    leaf.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &leaf);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    openssl(
        dir,
        &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
    );
    std::fs::read(dir.join("ca.der")).unwrap()
}

struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -HTTP` serving `www` (each file is a whole HTTP response).
fn s_server(dir: &Path) -> (SServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .current_dir(dir.join("www"))
        .args(["s_server", "-quiet", "-HTTP", "-cert"])
        .arg(dir.join("leaf.pem"))
        .arg("-key")
        .arg(dir.join("leaf.key"))
        .arg("-accept")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = SServer(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("openssl s_server did not start on {port}");
}

#[tokio::test]
async fn https_to_http_redirect_is_refused() {
    let plain = TestServer::start();
    let path = publish(&plain, "echo", "1.0.0", b"plain http bytes");
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    // The https store answers the sidecar with a redirect to plain http.
    let sidecar = format!("{}.sha256", artifact_path("codefly.dev", "echo", "1.0.0"));
    let file = dir.path().join("www").join(sidecar.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!(
            "HTTP/1.0 302 Found\r\nLocation: http://{}{path}.sha256\r\nContent-Length: 0\r\n\r\n",
            plain.addr()
        ),
    )
    .unwrap();
    let (_server, port) = s_server(dir.path());
    let store = HttpStore::builder(format!("https://127.0.0.1:{port}/store"))
        .root_certificates(vec![ca])
        .allow_redirect_host(plain.addr().to_string())
        .stall_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    let agent = "codefly.dev/echo:1.0.0".parse().unwrap();
    let err = StoreChain::new(vec![Arc::new(store)])
        .with_retry(RetryPolicy::none())
        .pull(&agent, &Platform::current(), &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("never downgraded"), "{err}");
    assert_eq!(
        plain.hits(&format!("{path}.sha256")),
        0,
        "the http URL is never requested, even though its host is allowed"
    );
    assert!(!installer.home().binary_path(&agent).unwrap().exists());
}

#[tokio::test]
async fn the_probe_trusts_the_roots_the_store_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let (_server, port) = s_server(dir.path());
    let base = format!("https://127.0.0.1:{port}/store");
    let trusting = HttpStore::builder(&base)
        .root_certificates(vec![ca])
        .build()
        .unwrap();
    let p = trusting.probe().await;
    assert_eq!(p.status, ProbeStatus::Ok, "{p:?}");
    // Without the private CA the same server is not trusted.
    let p = HttpStore::new(&base).unwrap().probe().await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert!(p.detail.contains("unreachable"), "{p:?}");
}
