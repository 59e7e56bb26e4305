//! Support shared by the supervised-agent tests of this binary.

use std::time::Duration;

use agent_spawn::AgentEvent;
use tokio::sync::broadcast;

/// Generous upper bound for an event (machines are shared).
const GUARD: Duration = Duration::from_secs(60);

/// The next event on `rx` that `want` accepts (`what` names it in a failure).
pub(crate) async fn next_event(
    rx: &mut broadcast::Receiver<AgentEvent>,
    what: &str,
    mut want: impl FnMut(&AgentEvent) -> bool,
) -> AgentEvent {
    tokio::time::timeout(GUARD, async {
        loop {
            match rx.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("events ended while waiting for {what}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} event"))
}
