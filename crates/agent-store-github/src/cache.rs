//! On-disk cache of API answers (`latest`, release listings) with their ETag.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One cached answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedAnswer {
    /// The URL it answers (guards against key collisions).
    pub(crate) url: String,
    /// HTTP status: 200, or 404 for "none" (also worth remembering).
    pub(crate) status: u16,
    /// The `ETag` to revalidate with.
    #[serde(default)]
    pub(crate) etag: Option<String>,
    /// When it was fetched or last revalidated, seconds since the epoch.
    pub(crate) fetched_at: u64,
    /// The JSON body (null for a 404).
    pub(crate) body: serde_json::Value,
}

impl CachedAnswer {
    pub(crate) fn is_fresh(&self, ttl: Duration) -> bool {
        now_secs().saturating_sub(self.fetched_at) < ttl.as_secs()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `{dir}/{key}.json` files, written atomically.
#[derive(Debug, Clone)]
pub(crate) struct AnswerCache {
    dir: PathBuf,
}

impl AnswerCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        AnswerCache { dir }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The cached answer for `key` about `url`; unreadable or foreign entries
    /// count as absent.
    pub(crate) async fn load(&self, key: &str, url: &str) -> Option<CachedAnswer> {
        let bytes = tokio::fs::read(self.path(key)).await.ok()?;
        let a: CachedAnswer = serde_json::from_slice(&bytes).ok()?;
        (a.url == url).then_some(a)
    }

    /// Stores `answer` under `key`. Failures are logged, not fatal: the cache
    /// only saves requests.
    pub(crate) async fn store(&self, key: &str, answer: &CachedAnswer) {
        let path = self.path(key);
        let dir = self.dir.clone();
        let Ok(bytes) = serde_json::to_vec(answer) else {
            return;
        };
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            create_private_dir_all(&dir)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".answer-")
                .tempfile_in(&dir)?;
            std::io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, key, "could not write the GitHub answer cache");
            }
            Err(e) => tracing::warn!(error = %e, key, "could not write the GitHub answer cache"),
        }
    }
}

/// `mkdir -p` with 0700 for the directories it creates.
pub(crate) fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}
