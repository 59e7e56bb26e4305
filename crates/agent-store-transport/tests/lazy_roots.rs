//! A client reads the system's root certificates at its first connection,
//! not when it is built: a program that builds a store it never reaches (a
//! load served from the cache) never pays for them. Observed through the
//! warning the client gives when there are none (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` pointed at nothing). Process-wide (it sets those variables),
//! hence a test binary of its own.

#![allow(clippy::unwrap_used, unsafe_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use agent_store_transport::{ClientOptions, HttpsClient, client};
use bytes::Bytes;
use http_body_util::Empty;

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_system_roots_are_read_at_the_first_connection_not_with_the_client() {
    // SAFETY: the only test of this binary, before anything reads the environment.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", "/nonexistent/roots.pem");
        std::env::set_var("SSL_CERT_DIR", "/nonexistent");
    }
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let c: HttpsClient<Empty<Bytes>> = client(&ClientOptions::default());
    let c2 = c.clone();
    assert!(
        !logs.text().contains("no native root certificates"),
        "the roots were read when the client was built:\n{}",
        logs.text()
    );

    // A port nothing listens on: the connection is refused, after the
    // connector (and its TLS configuration) was built.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let uri: http::Uri = format!("https://{addr}/").parse().unwrap();
    assert!(c.get(uri.clone()).await.is_err());
    assert!(c2.get(uri).await.is_err());
    let text = logs.text();
    assert_eq!(
        text.matches("no native root certificates").count(),
        1,
        "read once, at the first connection, shared by the client's clones:\n{text}"
    );
}
