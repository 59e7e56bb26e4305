//! What the GitHub store says about itself: the API's `/rate_limit` answer,
//! which shows the API is there, whether the token is accepted, and how many
//! requests are left.

use std::time::Instant;

use agent_ref::ErrorKind;
use agent_store::{PROBE_TIMEOUT, StoreProbe};

use crate::api::Api;

/// `GET {api}/rate_limit` with the store's token (never shown).
pub(crate) async fn probe(api: &Api) -> StoreProbe {
    let base = api.url("");
    let url = api.url("/rate_limit");
    let mut headers = vec![(
        "accept",
        http::HeaderValue::from_static("application/vnd.github+json"),
    )];
    if let Some(auth) = api.authorization() {
        headers.push(("authorization", auth.clone()));
    }
    let token_note = if api.has_token() {
        "token set"
    } else {
        "no token (60 requests/hour)"
    };
    let started = Instant::now();
    let client = agent_store_transport::probe_client(PROBE_TIMEOUT);
    match agent_store_transport::probe_get(&client, &url, &headers, PROBE_TIMEOUT).await {
        Ok(answer) if answer.status == 200 => {
            let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let remaining = v["rate"]["remaining"].as_u64();
            let limit = v["rate"]["limit"].as_u64();
            let detail = match (remaining, limit) {
                (Some(r), Some(l)) => format!("{base}: rate limit {r} of {l} left; {token_note}"),
                _ => format!("{base}: answers; {token_note}"),
            };
            let p = if remaining == Some(0) {
                StoreProbe::fail(
                    ErrorKind::StoreUnavailable,
                    detail,
                    "wait for the rate limit to reset, or set GITHUB_TOKEN",
                )
            } else {
                StoreProbe::ok(detail)
            };
            p.with_latency(started.elapsed())
        }
        Ok(answer) => {
            let fix = match answer.status {
                401 if api.has_token() => "the token was refused: renew GITHUB_TOKEN",
                403 | 429 => "wait for the rate limit to reset, or set GITHUB_TOKEN",
                _ => "check GITHUB_API_URL",
            };
            StoreProbe::fail(
                ErrorKind::StoreUnavailable,
                format!("{url}: HTTP {}; {token_note}", answer.status),
                fix,
            )
            .with_latency(started.elapsed())
        }
        Err(e) => StoreProbe::fail(
            ErrorKind::StoreUnavailable,
            format!("{url}: unreachable: {e}"),
            "check the network, GITHUB_API_URL, or set [stores] github = false",
        )
        .with_latency(started.elapsed()),
    }
}
