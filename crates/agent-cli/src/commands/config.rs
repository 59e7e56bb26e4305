//! `agentctl config`: the effective settings and their origins.

use serde_json::json;

use crate::ctx::Ctx;
use crate::report::Failure;

pub(crate) fn exec(ctx: &Ctx) -> Result<(), Failure> {
    let m = ctx.manager(false)?;
    let effective = m.effective_config();
    if ctx.json {
        outln!("{}", json!(effective));
    } else {
        out!("{effective}");
    }
    Ok(())
}
