//! The agent's own log output: `tracing` events on stderr, as JSON lines when
//! the host asks for them (`CODEFLY_AGENT_LOG=json`), so the host can turn
//! them into its own log events with their levels and fields.

use tracing_subscriber::EnvFilter;

use crate::{LOG_ENV, LOG_JSON};

/// Installs a stderr subscriber as the global default, unless the program
/// already set one: JSON lines when `CODEFLY_AGENT_LOG=json`, plain text
/// otherwise; the level from `RUST_LOG` (default `info`).
pub(crate) fn init() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var_os(LOG_ENV).is_some_and(|v| v == LOG_JSON);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // Another thread may win the race to set it; either way one is set.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
