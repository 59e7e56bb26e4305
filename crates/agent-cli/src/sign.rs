//! `agentctl keygen` and the signing half of `agentctl push --sign`.

use std::path::Path;

use crate::commands::Ctx;
use crate::report::Failure;

pub(crate) fn keygen(_ctx: &Ctx, _out: &Path, _force: bool) -> Result<(), Failure> {
    Err(Failure::new(
        agent_manager::ErrorKind::Io,
        "not available in this build yet",
    ))
}
