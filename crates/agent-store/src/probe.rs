//! What a store says about itself: whether it is reachable, answers as the
//! store it claims to be, and accepts the credentials it holds. `agentctl
//! doctor` prints one [`StoreProbe`] per store, as the store gives it.

use std::time::Duration;

use agent_ref::ErrorKind;

/// How long one store probe may take, connection and answer included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeStatus {
    /// The store answers as it should.
    Ok,
    /// It answers, with something worth fixing.
    Warn,
    /// A pull from it would fail.
    Fail,
}

impl ProbeStatus {
    /// `ok`, `warn`, `fail`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::Ok => "ok",
            ProbeStatus::Warn => "warn",
            ProbeStatus::Fail => "fail",
        }
    }
}

/// One store's account of itself (see [`crate::AgentStore::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreProbe {
    /// How it went.
    pub status: ProbeStatus,
    /// What the store answered: the address asked, the answer, the
    /// configuration that matters (never a secret).
    pub detail: String,
    /// What fixes it, for a warning or a failure.
    pub fix: Option<String>,
    /// The kind a pull would fail with, for a failure.
    pub kind: Option<ErrorKind>,
    /// How long the store took to answer, when it was asked.
    pub latency: Option<Duration>,
}

impl StoreProbe {
    /// All is well.
    #[must_use]
    pub fn ok(detail: impl Into<String>) -> Self {
        StoreProbe {
            status: ProbeStatus::Ok,
            detail: detail.into(),
            fix: None,
            kind: None,
            latency: None,
        }
    }

    /// Working, with something to fix.
    #[must_use]
    pub fn warn(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        StoreProbe {
            status: ProbeStatus::Warn,
            fix: Some(fix.into()),
            ..StoreProbe::ok(detail)
        }
    }

    /// A pull would fail with `kind`.
    #[must_use]
    pub fn fail(kind: ErrorKind, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        StoreProbe {
            status: ProbeStatus::Fail,
            fix: Some(fix.into()),
            kind: Some(kind),
            ..StoreProbe::ok(detail)
        }
    }

    /// The answer of a store that has no way to check itself.
    #[must_use]
    pub fn not_probed() -> Self {
        StoreProbe::ok("configured in code; not probed")
    }

    /// With the time the store took to answer.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_its_kind_and_fix() {
        let p = StoreProbe::fail(ErrorKind::StoreUnavailable, "down", "start it")
            .with_latency(Duration::from_millis(3));
        assert_eq!(p.status, ProbeStatus::Fail);
        assert_eq!(p.kind, Some(ErrorKind::StoreUnavailable));
        assert_eq!(p.fix.as_deref(), Some("start it"));
        assert_eq!(p.latency, Some(Duration::from_millis(3)));
        let ok = StoreProbe::ok("fine");
        assert_eq!((ok.status, ok.kind, ok.fix), (ProbeStatus::Ok, None, None));
    }
}
