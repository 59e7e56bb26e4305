//! When a supervised agent is started again, and after what delay.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ExitInfo;

/// When a supervised agent is started again after it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartMode {
    /// Never (the default): the exit ends the handle.
    #[default]
    Never,
    /// After an exit that is not a success (non-zero status or a signal).
    OnFailure,
    /// After every exit, clean ones included.
    Always,
}

impl RestartMode {
    /// The spelling of [`FromStr`]/[`fmt::Display`]: `never`, `on-failure`, `always`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        }
    }
}

impl fmt::Display for RestartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A restart mode that does not parse: names what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown restart policy {given:?}: expected never, on-failure or always")]
pub struct ParseRestartError {
    /// What was given.
    pub given: String,
}

impl FromStr for RestartMode {
    type Err = ParseRestartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" | "no" => Ok(RestartMode::Never),
            "on-failure" => Ok(RestartMode::OnFailure),
            "always" => Ok(RestartMode::Always),
            other => Err(ParseRestartError {
                given: other.to_owned(),
            }),
        }
    }
}

/// Whether, how often and how fast a supervised agent is restarted.
///
/// `RestartPolicy::default()` never restarts. `"on-failure".parse()` (or
/// [`RestartPolicy::on_failure`]) restarts after failures, at most
/// [`max_restarts`](RestartPolicy::max_restarts) (default 5) within
/// [`window`](RestartPolicy::window) (default 60 s), waiting
/// `initial_backoff · 2^(n-1)` (200 ms, 400 ms, …, at most 30 s, ±20 %)
/// before the n-th restart of the window.
///
/// ```
/// use std::time::Duration;
/// use agent_spawn::{RestartMode, RestartPolicy};
///
/// let p: RestartPolicy = "on-failure".parse().unwrap();
/// let p = p.with_max_restarts(3).with_window(Duration::from_secs(10));
/// assert_eq!(p.mode, RestartMode::OnFailure);
/// assert_eq!(p.max_restarts, 3);
/// assert!(RestartPolicy::default().is_never());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// Most restarts within `window`; one more exit gives up (`agent-exited`).
    pub max_restarts: u32,
    /// The sliding window `max_restarts` counts in; quiet windows reset the backoff.
    pub window: Duration,
    /// The delay before the first restart of a window (default 200 ms).
    pub initial_backoff: Duration,
    /// The longest delay (default 30 s).
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::new(RestartMode::Never)
    }
}

impl RestartPolicy {
    /// A policy of `mode` with the default limits.
    #[must_use]
    pub const fn new(mode: RestartMode) -> Self {
        RestartPolicy {
            mode,
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Never restart.
    #[must_use]
    pub const fn never() -> Self {
        RestartPolicy::new(RestartMode::Never)
    }

    /// Restart after failures.
    #[must_use]
    pub const fn on_failure() -> Self {
        RestartPolicy::new(RestartMode::OnFailure)
    }

    /// Restart after every exit.
    #[must_use]
    pub const fn always() -> Self {
        RestartPolicy::new(RestartMode::Always)
    }

    /// With at most `n` restarts within the window.
    #[must_use]
    pub const fn with_max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// With `window` as the sliding window of `max_restarts`.
    #[must_use]
    pub const fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// With backoff from `initial` doubling up to `max`.
    #[must_use]
    pub const fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Whether this policy never restarts.
    #[must_use]
    pub fn is_never(&self) -> bool {
        self.mode == RestartMode::Never
    }

    /// Whether an exit with `status` is restarted (ignoring the limits).
    /// An unknown status (the reaper was stopped) is never restarted.
    #[must_use]
    pub fn restarts_after(&self, status: &ExitInfo) -> bool {
        match self.mode {
            RestartMode::Never => false,
            _ if status.is_unknown() => false,
            RestartMode::OnFailure => !status.success(),
            RestartMode::Always => true,
        }
    }

    /// The delay before the `attempt`-th restart of a window (1-based), with
    /// `jitter` in `[0, 1)` spreading it over ±20 %.
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.max_backoff)
    }
}

impl FromStr for RestartPolicy {
    type Err = ParseRestartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(RestartPolicy::new(s.parse()?))
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("never");
        }
        write!(
            f,
            "{} (at most {} restarts in {}s)",
            self.mode,
            self.max_restarts,
            self.window.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_modes() {
        for (s, m) in [
            ("never", RestartMode::Never),
            ("on-failure", RestartMode::OnFailure),
            ("always", RestartMode::Always),
        ] {
            assert_eq!(s.parse::<RestartMode>().unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        let e = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert!(e.to_string().contains("on-failure"), "{e}");
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RestartPolicy::on_failure();
        for (attempt, base_ms) in [(1u32, 200u64), (2, 400), (3, 800), (8, 25_600)] {
            let lo = p.delay(attempt, 0.0);
            let hi = p.delay(attempt, 0.999_999);
            assert_eq!(
                lo,
                Duration::from_millis(base_ms * 8 / 10),
                "attempt {attempt}"
            );
            assert!(hi <= Duration::from_millis(base_ms * 12 / 10) && hi > lo);
        }
        assert_eq!(p.delay(9, 0.0), Duration::from_secs(24));
        assert_eq!(p.delay(40, 0.999), Duration::from_secs(30));
        assert_eq!(p.delay(u32::MAX, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn which_exits_restart() {
        let ok = ExitInfo {
            code: Some(0),
            signal: None,
        };
        let bad = ExitInfo {
            code: Some(1),
            signal: None,
        };
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        let unknown = ExitInfo::default();
        let of = RestartPolicy::on_failure();
        assert!(!of.restarts_after(&ok) && of.restarts_after(&bad) && of.restarts_after(&killed));
        assert!(RestartPolicy::always().restarts_after(&ok));
        assert!(!RestartPolicy::always().restarts_after(&unknown));
        assert!(!RestartPolicy::never().restarts_after(&killed));
    }
}
