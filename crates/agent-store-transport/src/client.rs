//! The one hyper client builder: rustls with the ring provider, native roots.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client type every hyper-based store uses, over body type `B`.
pub type HttpsClient<B> = Client<LazyHttpsConnector, B>;

/// The client's connector (http and https). Its TLS configuration, with the
/// system's root certificates read and parsed, is built on the first
/// connection, not with the client: a program that builds a store and never
/// reaches it (a load served from the cache) never reads a certificate.
/// Clones share the one configuration.
#[derive(Clone)]
pub struct LazyHttpsConnector {
    options: Arc<ClientOptions>,
    built: Arc<OnceLock<HttpsConnector<HttpConnector>>>,
}

impl std::fmt::Debug for LazyHttpsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyHttpsConnector")
            .field("built", &self.built.get().is_some())
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for LazyHttpsConnector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Every call connects with a clone of the built connector, whose own
        // readiness (the plain HTTP connector's) is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut connector = self.built.get_or_init(|| connector(&self.options)).clone();
        tower_service::Service::call(&mut connector, dst)
    }
}

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
/// no connection and reads no certificate until its first request. Without
/// native roots it still works (and https fails to verify, with a warning at
/// the first connection and a TLS error).
#[must_use]
pub fn client<B>(options: &ClientOptions) -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(LazyHttpsConnector {
            options: Arc::new(options.clone()),
            built: Arc::new(OnceLock::new()),
        })
}

/// The connector `options` describe, its TLS configuration built now.
fn connector(options: &ClientOptions) -> HttpsConnector<HttpConnector> {
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
    if options.http2 {
        tls.enable_http2().wrap_connector(http)
    } else {
        tls.wrap_connector(http)
    }
}
