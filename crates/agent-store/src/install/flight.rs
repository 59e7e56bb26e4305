//! In-process single flight: one fetch per final path at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
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
    pub(super) state: tokio::sync::Mutex<Option<Result<Installed, StoreError>>>,
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
