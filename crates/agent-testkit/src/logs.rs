//! What a `tracing` fmt subscriber writes, kept for the test to read.
//!
//! ```
//! let logs = agent_testkit::logs::LogCapture::default();
//! let subscriber = tracing_subscriber::fmt()
//!     .with_writer(logs.clone())
//!     .with_ansi(false)
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || tracing::warn!("careful"));
//! assert!(logs.text().contains("WARN") && logs.text().contains("careful"));
//! ```

use std::sync::{Arc, Mutex, PoisonError};

/// A writer (and `MakeWriter`) that appends to a shared buffer; clones share it.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
