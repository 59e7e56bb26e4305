//! What the HTTP store says about itself: whether a server answers at its base.

use std::time::Instant;

use agent_ref::ErrorKind;
use agent_store::{PROBE_TIMEOUT, StoreProbe};

use crate::HttpStore;

/// `GET {base}/` through the store's own client (its roots) with its
/// authorization: any answer below 500 means the server is there (static
/// servers answer 404 for the base itself).
pub(crate) async fn probe(store: &HttpStore) -> StoreProbe {
    let url = format!("{}/", store.base.trim_end_matches('/'));
    let headers: Vec<_> = store
        .authorization
        .iter()
        .map(|v| ("authorization", v.clone()))
        .collect();
    let started = Instant::now();
    match agent_store_transport::probe_get(&store.client, &url, &headers, PROBE_TIMEOUT).await {
        Ok(answer) if answer.status < 500 => {
            StoreProbe::ok(format!("{url}: HTTP {}", answer.status)).with_latency(started.elapsed())
        }
        Ok(answer) => StoreProbe::fail(
            ErrorKind::StoreUnavailable,
            format!("{url}: HTTP {}", answer.status),
            "the server answers with errors: check its logs",
        )
        .with_latency(started.elapsed()),
        Err(e) => StoreProbe::fail(
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            "start the server, or fix AGENT_HTTP_STORE / [stores] http",
        )
        .with_latency(started.elapsed()),
    }
}
