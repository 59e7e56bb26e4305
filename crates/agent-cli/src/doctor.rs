//! `agentctl doctor`.

use crate::commands::Ctx;
use crate::report::Failure;

#[allow(clippy::unused_async)]
pub(crate) async fn doctor(_ctx: &Ctx) -> Result<(), Failure> {
    Err(Failure::new(
        agent_manager::ErrorKind::Io,
        "not available in this build yet",
    ))
}
