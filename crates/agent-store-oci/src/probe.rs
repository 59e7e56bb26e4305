//! What the OCI store says about itself: the registry's `/v2/` answer (the
//! distribution API's base endpoint, which every registry serves).

use std::time::Instant;

use agent_ref::ErrorKind;
use agent_store::{PROBE_TIMEOUT, StoreProbe};

use crate::RegistryConfig;

/// `GET {scheme}://{host}/v2/`: 200, or 401 (the registry wants
/// credentials, which a pull sends), is a registry; anything else is not.
pub(crate) async fn probe(config: &RegistryConfig) -> StoreProbe {
    let url = format!("{}://{}/v2/", config.scheme().as_str(), config.host());
    let started = Instant::now();
    let client = agent_store_transport::probe_client(PROBE_TIMEOUT);
    match agent_store_transport::probe_get(&client, &url, &[], PROBE_TIMEOUT).await {
        Ok(answer) => {
            let api = answer
                .headers
                .get("docker-distribution-api-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no API version header")
                .to_owned();
            let p = match answer.status {
                200 => StoreProbe::ok(format!("{url}: HTTP 200, {api}")),
                401 => StoreProbe::ok(format!("{url}: HTTP 401 (needs credentials), {api}")),
                s => StoreProbe::fail(
                    ErrorKind::StoreUnavailable,
                    format!("{url}: HTTP {s}, {api}: not an OCI registry answer"),
                    "check AGENT_REGISTRY / [stores] oci names a registry (host[:port][/prefix])",
                ),
            };
            p.with_latency(started.elapsed())
        }
        Err(e) => StoreProbe::fail(
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            format!(
                "start the registry at {}, or fix AGENT_REGISTRY / [stores] oci",
                config.host()
            ),
        )
        .with_latency(started.elapsed()),
    }
}
