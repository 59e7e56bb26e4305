//! The Manager with a real store (agent-store-http against a small real HTTP
//! server on loopback): pull then load, tampered bytes → `integrity` and
//! nothing cached, a missing artifact → `binary-not-found` naming the store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agent_manager::http::HttpStore;
use agent_manager::{AgentHome, AgentRef, AgentStore, ErrorKind, LoadOptions, Manager, Platform};
use common::Home;
use sha2::Digest as _;

/// A minimal HTTP/1.1 file server: exact paths → bodies, 404 otherwise.
struct Server {
    base: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let mut w = stream;
                let head = line.starts_with("HEAD");
                match files.get(&path) {
                    Some(body) => {
                        let _ = write!(
                            w,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        if !head {
                            let _ = w.write_all(body);
                        }
                    }
                    None => {
                        let _ = w.write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                }
            }
        });
        Server {
            base,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn layout(version: &str, body: &[u8], digest_of: &[u8]) -> HashMap<String, Vec<u8>> {
    let suffix = Platform::current().suffix();
    let url = format!("/codefly.dev/echo/{version}/service-echo_{suffix}");
    let digest = hex::encode(sha2::Sha256::digest(digest_of));
    HashMap::from([
        (url.clone(), body.to_vec()),
        (
            format!("{url}.sha256"),
            format!("{digest}  service-echo\n").into_bytes(),
        ),
        (
            "/codefly.dev/echo/versions".to_owned(),
            format!("{version}\n").into_bytes(),
        ),
    ])
}

fn manager(home: &Home, server: &Server) -> Manager {
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new(server.base.clone()).unwrap());
    Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(vec![store])
        .build()
        .unwrap()
}

#[tokio::test]
async fn latest_is_pulled_verified_and_loaded() {
    let echo = std::fs::read(common::echo()).unwrap();
    let server = Server::start(layout("0.4.0", &echo, &echo));
    let home = Home::new();
    let m = manager(&home, &server);
    let agent: AgentRef = "echo".parse().unwrap();
    assert_eq!(
        m.resolve(&agent).await.unwrap().identifier(),
        "codefly.dev/echo:0.4.0"
    );
    let conn = m.load(&agent, LoadOptions::new()).await.unwrap();
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
    let server = Server::start(layout("0.4.0", &tampered, &echo));
    let home = Home::new();
    let m = manager(&home, &server);
    let e = m
        .load(&"echo:0.4.0".parse().unwrap(), LoadOptions::new())
        .await
        .unwrap_err();
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
    let server = Server::start(HashMap::new());
    let home = Home::new();
    let m = manager(&home, &server);
    let e = m
        .load(&"echo:0.4.0".parse().unwrap(), LoadOptions::new())
        .await
        .unwrap_err();
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
