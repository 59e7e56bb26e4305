//! Where a load's steps run: on a worker of a multi-thread runtime.
//!
//! A load waits on several wake-ups in a row (the spawner's reply, the
//! handshake line, the TCP connect, the HTTP/2 frames that the connection's
//! own task reads, the health answer). Awaited from a thread that is not one
//! of the runtime's workers (`block_on`'s, which is where a `#[tokio::main]`
//! function runs), each of those is a hand-off between threads. Run as a task,
//! the load is woken on the runtime's workers, where the connection's tasks
//! run, and only its end crosses back to the caller.

use std::future::Future;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

use crate::ManagerError;

/// Runs `work` as a task of the multi-thread runtime this is called on (in
/// the caller's span, logging to the caller's subscriber, a thread-local one
/// included) and awaits it; on any other runtime, runs it in place.
/// Dropping the returned future aborts the task, so a cancelled load is
/// dropped as if it had run in place (its child killed and reaped).
pub(crate) async fn on_worker<T, F>(work: F) -> Result<T, ManagerError>
where
    F: Future<Output = Result<T, ManagerError>> + Send + 'static,
    T: Send + 'static,
{
    let handle = match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => handle,
        _ => return work.await,
    };
    let mut task = AbortOnDrop(handle.spawn(work.in_current_span().with_current_subscriber()));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ManagerError::io(
            "load",
            std::io::Error::other(format!(
                "the load's task ended: {e} (the runtime is shutting down)"
            )),
        )),
    }
}

/// Aborts the task when dropped before it finished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
