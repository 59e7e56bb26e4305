//! Serves a directory over HTTP on 127.0.0.1 (for measuring pulls against
//! `curl`): `serve_dir DIR [PORT]`. Files are loaded into memory at start so
//! the server is never the bottleneck. Prints the address, then serves until killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn load(root: &Path, dir: &Path, out: &mut HashMap<String, Bytes>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            load(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(format!("/{rel}"), Bytes::from(std::fs::read(&p).unwrap()));
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(args.get(1).expect("usage: serve_dir DIR [PORT]"));
    let port: u16 = args.get(2).map_or(0, |p| p.parse().unwrap());
    let mut files = HashMap::new();
    load(root, root, &mut files);
    let files = Arc::new(files);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("{}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let files = files.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = files.get(req.uri().path()).cloned();
                    async move {
                        Ok::<_, Infallible>(match body {
                            Some(b) => Response::new(Full::new(b)),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        })
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
