//! In-process single flight: one fetch per final path at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::Installed;
use crate::StoreError;

/// One in-process flight per final path: the leader fetches while holding
/// `state`; waiters that queued while it ran take its outcome.
#[derive(Default)]
pub(super) struct Flight {
    /// Completed fetches so far; read before queueing to tell whether a
    /// fetch finished while we waited.
    pub(super) completed: AtomicU64,
    /// Callers queued for `state`: a leader whose fetch failed shares its
    /// error only when someone waits for it.
    pub(super) waiting: AtomicUsize,
    /// The last outcome; a failure is the one error every waiter shares.
    pub(super) state: tokio::sync::Mutex<Option<Result<Installed, Arc<StoreError>>>>,
}

impl Flight {
    /// Counts the caller as waiting for `state` until the guard drops (also
    /// when its future is dropped while it queues).
    pub(super) fn queue(&self) -> Queued<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Queued(&self.waiting)
    }
}

/// A caller queued for a flight's `state`.
pub(super) struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type FlightMap = Mutex<HashMap<PathBuf, Weak<Flight>>>;

/// Process-wide, so that two `Installer`s on one home still share fetches.
static FLIGHTS: LazyLock<FlightMap> = LazyLock::new(FlightMap::default);

pub(super) fn flight_for(path: &Path) -> Arc<Flight> {
    let mut map = FLIGHTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(f) = map.get(path).and_then(Weak::upgrade) {
        return f;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let f = Arc::new(Flight::default());
    map.insert(path.to_path_buf(), Arc::downgrade(&f));
    f
}
