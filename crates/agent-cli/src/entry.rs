//! One installed binary as `ls`, `rm`, `prune` and `info` print it (human
//! and `--json`), from the library's [`CacheEntry`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_manager::semver::Version;
use agent_manager::store::CacheEntry;

/// One installed binary, as `ls`, `rm` and `prune` print it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Entry {
    /// The kind's canonical name (`service`, `application`, `module`,
    /// `toolbox`, …): the cache directory it is in.
    pub(crate) kind: &'static str,
    /// `publisher/name:version`.
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    pub(crate) publisher: String,
    pub(crate) name: String,
    #[serde(serialize_with = "as_string")]
    pub(crate) version: Version,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// From the install record, or computed when there is none (empty when not asked).
    pub(crate) sha256: String,
    /// From the install record; `local` when there is none (built or copied by hand).
    pub(crate) source: String,
    /// The store that delivered it, when recorded.
    pub(crate) store: Option<String>,
    /// The minisign key id that signed it; `None` = unsigned.
    pub(crate) signer: Option<String>,
    /// The signature's trusted comment.
    pub(crate) signed_as: Option<String>,
    /// When it was last loaded, in seconds since the epoch.
    pub(crate) last_used: u64,
}

impl Entry {
    /// `signer KEYID` or `unsigned`.
    pub(crate) fn signer_text(&self) -> String {
        self.signer
            .as_deref()
            .map_or_else(|| "unsigned".to_owned(), |k| format!("signed {k}"))
    }

    /// `3d ago`, `never`, …
    pub(crate) fn last_used_text(&self) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(self.last_used);
        match SystemTime::now().duration_since(t) {
            Ok(d) if d < Duration::from_secs(60) => "just now".to_owned(),
            Ok(d) if d < Duration::from_secs(3600) => format!("{}m ago", d.as_secs() / 60),
            Ok(d) if d < Duration::from_secs(86400) => format!("{}h ago", d.as_secs() / 3600),
            Ok(d) => format!("{}d ago", d.as_secs() / 86400),
            Err(_) => "just now".to_owned(),
        }
    }

    /// The entries as printed, in the library's order.
    pub(crate) fn all(entries: Vec<CacheEntry>) -> Vec<Entry> {
        entries.into_iter().map(Entry::from).collect()
    }
}

impl From<CacheEntry> for Entry {
    fn from(e: CacheEntry) -> Self {
        let version = e
            .agent
            .concrete_version()
            .cloned()
            .unwrap_or_else(|| Version::new(0, 0, 0));
        Entry {
            kind: e.agent.kind().canonical().as_str(),
            reference: e.agent.identifier(),
            publisher: e.agent.publisher().to_owned(),
            name: e.agent.name().to_owned(),
            version,
            path: e.path,
            size: e.size,
            sha256: e.sha256.unwrap_or_default(),
            source: e.source,
            store: e.store,
            signer: e.signer.as_ref().map(|s| s.key_id.clone()),
            signed_as: e.signer.map(|s| s.trusted_comment),
            last_used: secs(e.last_used),
        }
    }
}

fn as_string<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
