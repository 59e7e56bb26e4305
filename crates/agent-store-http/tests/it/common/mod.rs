#![allow(dead_code, unreachable_pub, unused_imports)]
//! The HTTP store's layout on the testkit's HTTP server: artifacts and their
//! sidecars under `/store`.

pub use agent_testkit::http::{Fault, TestServer, payload, sha256_hex};

/// The store's base URL on `server`.
pub fn base(server: &TestServer) -> String {
    format!("{}/store", server.url())
}

/// The store on `server`, with short connect and stall timeouts.
pub fn store(server: &TestServer) -> agent_store_http::HttpStore {
    agent_store_http::HttpStore::builder(base(server))
        .connect_timeout(std::time::Duration::from_secs(5))
        .stall_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The path of an artifact under `/store` for this platform.
pub fn artifact_path(publisher: &str, name: &str, version: &str) -> String {
    format!(
        "/store/{publisher}/{name}/{version}/service-{name}_{}",
        agent_ref::Platform::current().suffix()
    )
}

/// Serves `bytes` as `codefly.dev/{name}:{version}` with a correct sidecar.
/// Returns the binary's path on the server.
pub fn publish(server: &TestServer, name: &str, version: &str, bytes: &[u8]) -> String {
    let path = artifact_path("codefly.dev", name, version);
    server.put(&path, bytes.to_vec());
    server.put(
        &format!("{path}.sha256"),
        format!("{}  service-{name}\n", sha256_hex(bytes)),
    );
    path
}
