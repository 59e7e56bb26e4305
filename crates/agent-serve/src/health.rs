//! The served health service: tonic-health's, with a bound on the `Watch`
//! streams that callers without the token may hold open.
//!
//! Health is the one service reachable without the token, and `Watch` is a
//! stream: without a bound, any local user could open streams until the agent
//! runs out of memory or descriptors. Calls carrying the right token (the
//! host's) are not counted.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;

use crate::TOKEN_METADATA_KEY;
use crate::token::Policy;

/// How many `Watch` streams callers without the token may hold at once; the
/// next one is refused with `RESOURCE_EXHAUSTED` until one ends.
pub const MAX_UNAUTHENTICATED_WATCHES: usize = 16;

/// tonic-health's service with [`MAX_UNAUTHENTICATED_WATCHES`] enforced.
pub(crate) struct CappedHealth {
    inner: HealthService,
    policy: Policy,
    watches: Arc<Semaphore>,
}

impl CappedHealth {
    pub(crate) fn new(inner: HealthService, policy: Policy) -> Self {
        Self {
            inner,
            policy,
            watches: Arc::new(Semaphore::new(MAX_UNAUTHENTICATED_WATCHES)),
        }
    }
}

/// A watch stream, holding its permit (if counted) for as long as it lives.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Health for CappedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let given = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .map(tonic::metadata::MetadataValue::as_bytes);
        let permit: Option<OwnedSemaphorePermit> = if self.policy.authenticates(given) {
            None
        } else {
            match Arc::clone(&self.watches).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::debug!("refused a health watch: too many without the token");
                    return Err(Status::resource_exhausted(format!(
                        "at most {MAX_UNAUTHENTICATED_WATCHES} health watches without \
                         x-codefly-token at once"
                    )));
                }
            }
        };
        let stream = self.inner.watch(request).await?.into_inner();
        // The permit moves into the stream and is released when tonic drops it
        // (the caller went away or the server stopped).
        let held = stream.map(move |item| {
            let _ = &permit;
            item
        });
        Ok(Response::new(Box::pin(held)))
    }
}
