//! The supervisor: watches the current agent, restarts it as the policy says.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::{AgentEvent, Ending, GaveUp, Phase, RestartPolicy, Snapshot, Stop};
use crate::conn::STDERR_SETTLE;
use crate::{AgentConn, ExitInfo, SpawnOptions, StderrRing, StderrSink};

/// Spawns the same program again with the same options.
pub(super) struct Respawn {
    pub(super) program: PathBuf,
    pub(super) opts: SpawnOptions,
    /// The caller's sink: receives every agent's stderr.
    pub(super) sink: Option<StderrSink>,
}

impl Respawn {
    /// Options for one more start, and the ring that start's stderr goes to
    /// (the handle's view of the current agent's stderr).
    pub(super) fn options(&self) -> (SpawnOptions, StderrRing) {
        let mut o = self.opts.clone();
        let ring = StderrRing::default();
        let tee_ring = ring.clone();
        let sink = self.sink.clone();
        o.stderr_sink = Some(Arc::new(move |bytes: &[u8]| {
            tee_ring.push(bytes);
            if let Some(sink) = &sink {
                sink(bytes);
            }
        }));
        (o, ring)
    }
}

pub(super) struct Supervisor {
    pub(super) respawn: Respawn,
    pub(super) policy: RestartPolicy,
    pub(super) state: watch::Sender<Snapshot>,
    pub(super) events: broadcast::Sender<AgentEvent>,
    pub(super) stop: watch::Receiver<Stop>,
}

/// Resolves when the handle asks to stop: `true` = close gracefully,
/// `false` = every handle is gone (kill).
async fn stop_requested(stop: &mut watch::Receiver<Stop>) -> bool {
    stop.wait_for(|s| *s != Stop::Run).await.is_ok()
}

impl Supervisor {
    fn emit(&self, event: AgentEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn end(&self, status: ExitInfo, gave_up: Option<GaveUp>, reason: String) {
        match &gave_up {
            Some(g) => self.emit(AgentEvent::GaveUp { error: g.clone() }),
            None => self.emit(AgentEvent::Stopped { status }),
        }
        let ending = Arc::new(Ending {
            status,
            gave_up,
            reason,
        });
        self.state
            .send_modify(|s| s.phase = Phase::Ended(Arc::clone(&ending)));
    }

    pub(super) async fn run(mut self, first: AgentConn) {
        let mut conn = first;
        let mut window: VecDeque<Instant> = VecDeque::new();
        let mut restarts: u32 = 0;
        loop {
            let pid = conn.pid();
            if restarts > 0 {
                // The first start is announced by `supervise` itself.
                self.emit(AgentEvent::Started {
                    pid,
                    endpoint: conn.endpoint(),
                    restarts,
                });
            }
            let status = tokio::select! {
                status = conn.exited() => status,
                graceful = stop_requested(&mut self.stop) => {
                    let status = if graceful {
                        conn.close().await
                    } else {
                        drop(conn); // the last strong handle: kills the group
                        ExitInfo::default()
                    };
                    self.end(status, None, format!("the agent was closed ({status})"));
                    return;
                }
            };
            // The agent exited by itself.
            self.state.send_modify(|s| s.phase = Phase::Down);
            // The exit can be seen before its last stderr bytes are read.
            conn.stderr_settled(STDERR_SETTLE).await;
            let mut tail = conn.stderr_tail();
            conn.close().await; // removes the socket directory
            tracing::warn!(pid, %status, tail = %last_lines(&tail, 5), "supervised agent exited");
            self.emit(AgentEvent::Exited {
                pid,
                status,
                tail: tail.clone(),
            });
            if !self.policy.restarts_after(&status) {
                tracing::info!(pid, %status, policy = %self.policy, "not restarting");
                self.end(
                    status,
                    None,
                    format!(
                        "the agent exited ({status}) and the restart policy is {}",
                        self.policy.mode
                    ),
                );
                return;
            }

            let mut last_error = None;
            // A refused restart ends supervision: the admission's answer
            // does not change by trying again.
            let mut refused = None;
            let (next, ring) = loop {
                let now = Instant::now();
                while window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.policy.window)
                {
                    window.pop_front();
                }
                let in_window = u32::try_from(window.len()).unwrap_or(u32::MAX);
                if in_window >= self.policy.max_restarts || refused.is_some() {
                    let gave_up = GaveUp {
                        status,
                        pid,
                        restarts: in_window,
                        window: self.policy.window,
                        last_error,
                        tail: tail.clone(),
                        refused,
                    };
                    tracing::warn!(error = %gave_up, tail = %last_lines(&tail, 5), "supervised agent: giving up");
                    let reason = format!("{}: {gave_up}\n{}", gave_up.kind(), last_lines(&tail, 5));
                    self.end(status, Some(gave_up), reason);
                    return;
                }
                window.push_back(now);
                let attempt = in_window + 1;
                let delay = self.policy.delay(attempt, jitter());
                tracing::warn!(attempt, ?delay, "restarting the supervised agent");
                self.emit(AgentEvent::Restarting { attempt, delay });
                let started = tokio::select! {
                    started = async {
                        tokio::time::sleep(delay).await;
                        let (opts, ring) = self.respawn.options();
                        crate::spawn(&self.respawn.program, opts).await.map(|c| (c, ring))
                    } => started,
                    graceful = stop_requested(&mut self.stop) => {
                        let _ = graceful; // nothing runs: nothing to close
                        self.end(status, None, format!("the agent exited ({status}) and was closed while restarting"));
                        return;
                    }
                };
                restarts = restarts.saturating_add(1);
                match started {
                    Ok(next) => break next,
                    Err(e) => {
                        let e_tail = e.stderr_tail().unwrap_or_default().to_owned();
                        tracing::warn!(attempt, kind = %e.kind(), error = %agent_ref::error_chain(&e), "restart failed");
                        self.emit(AgentEvent::RestartFailed {
                            attempt,
                            error: format!("{}: {}", e.kind(), agent_ref::error_chain(&e)),
                            tail: e_tail.clone(),
                        });
                        last_error = Some(format!("{}: {}", e.kind(), agent_ref::error_chain(&e)));
                        if e.is_refusal() {
                            refused = Some(e.kind());
                        }
                        if !e_tail.is_empty() {
                            tail = e_tail;
                        }
                    }
                }
            };
            conn = next;
            self.state.send_replace(Snapshot::of(&conn, ring, restarts));
        }
    }
}

/// The last `n` lines of `text`, for log lines and messages.
fn last_lines(text: &str, n: usize) -> &str {
    let trimmed = text.trim_end();
    let mut start = trimmed.len();
    for _ in 0..n {
        match trimmed[..start].rfind('\n') {
            Some(i) => start = i,
            None => return trimmed,
        }
    }
    trimmed[start..].trim_start_matches('\n')
}

/// A number in `[0, 1)`; 0.5 when the OS has no randomness to give.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 3), "a");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
