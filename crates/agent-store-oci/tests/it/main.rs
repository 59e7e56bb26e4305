//! agent-store-oci's integration tests, one binary, against a real registry.
// Helpers beside the tests unwrap too; clippy.toml's allow-unwrap-in-tests
// covers only the test functions.
#![allow(clippy::unwrap_used)]

mod kinds;
mod registry;
mod signed;

/// A plain-HTTP `oci_client::Client` for driving the local registry the way
/// oras does. It installs the workspace's TLS provider first: the store
/// builds its own client only at its first request, so nothing else in the
/// process may have installed one when a test starts.
fn oras_client() -> oci_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}
