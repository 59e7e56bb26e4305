//! `agentctl info REF`.

use crate::commands::Ctx;
use crate::report::Failure;

#[allow(clippy::unused_async)]
pub(crate) async fn info(_ctx: &Ctx, _reference: &str) -> Result<(), Failure> {
    Err(Failure::new(
        agent_manager::ErrorKind::Io,
        "not available in this build yet",
    ))
}
