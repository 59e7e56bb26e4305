//! One bounded `GET` for a store's [`probe`](agent_store::AgentStore::probe):
//! the status, the headers and the start of the body, or why there was no
//! answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};

use crate::{ClientOptions, HttpsClient, client};

/// How much of a probe answer's body is kept.
const BODY_CAP: usize = 64 * 1024;

/// What a server answered to a probe.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProbeAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The body's first 64 KiB (empty when it could not be read).
    pub body: Vec<u8>,
}

/// A client for a store that keeps none of this crate's own (its requests
/// go through another library): native roots, connecting within `timeout`.
#[must_use]
pub fn probe_client(timeout: Duration) -> HttpsClient<Empty<Bytes>> {
    client(&ClientOptions {
        connect_timeout: timeout,
        ..ClientOptions::default()
    })
}

/// `GET url` with `headers` through `client` (the store's own, so its roots
/// and timeouts apply), connection and answer within `timeout`.
///
/// # Errors
/// Why no answer came, on one line: a bad URL, the connection's error
/// chain, or `no answer within Ns`.
pub async fn probe_get(
    client: &HttpsClient<Empty<Bytes>>,
    url: &str,
    headers: &[(&str, http::HeaderValue)],
    timeout: Duration,
) -> Result<ProbeAnswer, String> {
    let mut req = http::Request::get(url).header(
        http::header::USER_AGENT,
        concat!("agent-manager/", env!("CARGO_PKG_VERSION")),
    );
    for (k, v) in headers {
        req = req.header(*k, v.clone());
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let answer = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| agent_ref::error_chain(&e).to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), BODY_CAP)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Ok::<_, String>(ProbeAnswer {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}
