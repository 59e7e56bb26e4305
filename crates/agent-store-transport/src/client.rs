//! The one hyper client builder: rustls with the ring provider, native roots.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client type every hyper-based store uses, over body type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to connect (TCP; TLS is bounded by the caller's timeout).
    pub connect_timeout: Duration,
    /// Offer HTTP/2 by ALPN on https (HTTP/1.1 always).
    pub http2: bool,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Trust only these root certificates (DER) instead of the system's
    /// (a private CA; tests). Empty: the system's native roots.
    pub roots: Vec<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            http2: true,
            pool_idle_timeout: Duration::from_secs(30),
            roots: Vec::new(),
        }
    }
}

fn empty_roots(provider: &Arc<rustls::crypto::CryptoProvider>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions();
    match builder {
        Ok(b) => b
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        // ring supports the default versions; stay total rather than panic.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

fn tls_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: &[Vec<u8>],
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        if let Err(e) = store.add(rustls::pki_types::CertificateDer::from(der.clone())) {
            tracing::warn!(error = %e, "ignoring an unusable root certificate");
        }
    }
    match rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(store).with_no_client_auth(),
        Err(_) => empty_roots(provider),
    }
}

/// A hyper client (http and https) with `options`. Needs no runtime; makes
/// no connection. Without native roots it still builds (and https fails to
/// verify, with a warning now and a TLS error later).
#[must_use]
pub fn client<B>(options: &ClientOptions) -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    // One TLS stack for the workspace: rustls with ring. Installing the
    // process default is harmless when another crate already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let tls = if options.roots.is_empty() {
        match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::clone(&provider))
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no native root certificates; https will fail to verify");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty_roots(&provider))
            }
        }
    } else {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&provider, &options.roots))
    };
    let tls = tls.https_or_http().enable_http1();
    let connector = if options.http2 {
        tls.enable_http2().wrap_connector(http)
    } else {
        tls.wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(connector)
}
