//! The registry of active agents: [`Manager::active`], [`Manager::cleanup`],
//! [`Manager::cleanup_all`], and how it holds each agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agent_spawn::{AgentConn, Endpoint, WeakAgentConn};
use tracing::debug;

use crate::Manager;
use crate::manager::Inner;

/// One registered agent, as [`Manager::active`] lists it.
#[derive(Debug, Clone)]
pub struct ActiveAgent {
    /// The registry key: `ref.unique()` (`kind::publisher/name:version`), or
    /// `path::{path}` for [`Manager::load_path`].
    pub unique: String,
    /// The process id (also its process group id).
    pub pid: u32,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// The connection (a clone; cheap).
    pub conn: AgentConn,
}

pub(crate) struct Entry {
    id: u64,
    held: Held,
}

/// How the registry holds an agent (see the crate docs, *When an agent dies*).
enum Held {
    /// `LoadOptions::managed(true)`: the registry keeps it alive.
    Managed(AgentConn),
    /// The default: listed, closable by `cleanup`, but alive only while the
    /// app holds a handle.
    Listed(WeakAgentConn),
}

impl Held {
    fn conn(&self) -> Option<AgentConn> {
        match self {
            Held::Managed(c) => Some(c.clone()),
            Held::Listed(w) => w.upgrade(),
        }
    }
}

impl Manager {
    pub(crate) fn register(&self, unique: String, conn: &AgentConn, managed: bool) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let held = if managed {
            Held::Managed(conn.clone())
        } else {
            Held::Listed(conn.downgrade())
        };
        self.lock_active()
            .entry(unique.clone())
            .or_default()
            .push(Entry { id, held });
        // Unregister when the agent exits by itself. The task holds a weak
        // reference so that it never keeps the manager (and its agents) alive.
        let exited = conn.exited();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let info = exited.await;
            if let Some(inner) = weak.upgrade() {
                debug!(unique, ?info, "agent exited; unregistered");
                remove_entry(&inner, &unique, id);
            }
        });
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        lock(&self.inner)
    }

    /// Every registered agent that is still alive.
    #[must_use]
    pub fn active(&self) -> Vec<ActiveAgent> {
        let map = self.lock_active();
        let mut out: Vec<ActiveAgent> = map
            .iter()
            .flat_map(|(unique, entries)| {
                entries.iter().filter_map(move |e| {
                    let conn = e.held.conn()?;
                    Some(ActiveAgent {
                        unique: unique.clone(),
                        pid: conn.pid(),
                        endpoint: conn.endpoint().clone(),
                        conn,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| a.unique.cmp(&b.unique).then(a.pid.cmp(&b.pid)));
        out
    }

    /// Closes every agent registered under `unique` (gracefully, concurrently)
    /// and unregisters it. Returns how many were closed.
    #[doc(alias = "Cleanup")]
    pub async fn cleanup(&self, unique: &str) -> usize {
        let entries = self.lock_active().remove(unique).unwrap_or_default();
        close_all(entries).await
    }

    /// Closes every registered agent (gracefully, concurrently) and empties the
    /// registry. Returns how many were closed.
    #[doc(alias = "CleanupAll")]
    pub async fn cleanup_all(&self) -> usize {
        let entries: Vec<Entry> = self.lock_active().drain().flat_map(|(_, v)| v).collect();
        close_all(entries).await
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
    inner
        .active
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remove_entry(inner: &Inner, unique: &str, id: u64) {
    let mut map = lock(inner);
    if let Some(v) = map.get_mut(unique) {
        v.retain(|e| e.id != id);
        if v.is_empty() {
            map.remove(unique);
        }
    }
}

async fn close_all(entries: Vec<Entry>) -> usize {
    let conns: Vec<AgentConn> = entries.iter().filter_map(|e| e.held.conn()).collect();
    let n = conns.len();
    futures_util::future::join_all(conns.iter().map(AgentConn::close)).await;
    n
}
