//! How results and failures are shown: `error[KIND]: message`, `caused by:`
//! lines and the agent's stderr tail on stderr; `{"error":{…}}` on stdout with --json.

use std::error::Error as StdError;
use std::fmt::Write as _;

use agent_manager::{ErrorKind, ManagerError};
use serde_json::json;

/// Lines of the agent's stderr shown with a failure.
const TAIL_LINES: usize = 20;

/// A failure as the user sees it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) causes: Vec<String>,
    pub(crate) stderr_tail: Option<String>,
    /// The command already printed its JSON document (e.g. `doctor`'s report):
    /// with --json, print no error document on top of it.
    pub(crate) json_printed: bool,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            causes: Vec::new(),
            stderr_tail: None,
            json_printed: false,
        }
    }

    pub(crate) fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Failure::new(ErrorKind::Io, format!("{context}: {e}"))
    }

    /// The error's message, then each of its causes (each error says what
    /// failed at its own level, so no text repeats); causes with no text are skipped.
    pub(crate) fn from_error(kind: ErrorKind, e: &(dyn StdError + 'static)) -> Self {
        Failure {
            kind,
            message: e.to_string(),
            causes: agent_manager::reference::causes(e)
                .map(ToString::to_string)
                .filter(|t| !t.is_empty())
                .collect(),
            stderr_tail: None,
            json_printed: false,
        }
    }

    /// The stderr text: `error[KIND]: message`, `caused by:` lines, the stderr tail.
    pub(crate) fn render(&self) -> String {
        let mut s = format!("error[{}]: {}\n", self.kind, self.message);
        for c in &self.causes {
            let _ = writeln!(s, "  caused by: {c}");
        }
        if let Some(tail) = self.stderr_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            let lines: Vec<&str> = tail.trim_end().lines().collect();
            let from = lines.len().saturating_sub(TAIL_LINES);
            let _ = writeln!(
                s,
                "  agent stderr (last {} line{}):",
                lines.len() - from,
                if lines.len() - from == 1 { "" } else { "s" }
            );
            for l in &lines[from..] {
                let _ = writeln!(s, "    | {l}");
            }
        }
        s
    }

    /// The stdout JSON document: `{"error":{"kind","message"}}` (plus
    /// `causes` and `stderr_tail` when there are some).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut err = json!({ "kind": self.kind.as_str(), "message": self.message });
        if !self.causes.is_empty() {
            err["causes"] = json!(self.causes);
        }
        if let Some(t) = &self.stderr_tail {
            err["stderr_tail"] = json!(t);
        }
        json!({ "error": err })
    }
}

impl From<ManagerError> for Failure {
    fn from(e: ManagerError) -> Self {
        let mut f = Failure::from_error(e.kind(), &e);
        f.stderr_tail = e.stderr_tail().map(str::to_owned);
        f
    }
}

impl From<agent_manager::RefError> for Failure {
    fn from(e: agent_manager::RefError) -> Self {
        Failure::from_error(e.kind(), &e)
    }
}

impl From<agent_manager::StoreError> for Failure {
    fn from(e: agent_manager::StoreError) -> Self {
        Failure::from_error(e.kind(), &e)
    }
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub(crate) fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            // Nearest rank: ceil(p·n), 1-based.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let r = (p * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(0.5),
            p90: rank(0.9),
            max: v[v.len() - 1],
        })
    }
}

/// Milliseconds with microsecond precision, for JSON.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `1.2 KiB`, `3.4 MiB`…
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn render_has_kind_causes_and_tail() {
        let e = Outer(Inner(std::io::Error::other("disk on fire")));
        let mut f = Failure::from_error(ErrorKind::Io, &e);
        // Each level once, outermost first.
        assert_eq!(
            f.causes,
            vec!["inner".to_owned(), "disk on fire".to_owned()]
        );
        f.stderr_tail = Some("l1\nl2\n".to_owned());
        let r = f.render();
        assert!(r.starts_with("error[io]: outer\n"), "{r}");
        assert!(r.contains("  caused by: inner\n"), "{r}");
        assert!(r.contains("  caused by: disk on fire\n"), "{r}");
        assert!(r.contains("agent stderr (last 2 lines)"), "{r}");
        assert!(r.contains("    | l2\n"), "{r}");
    }

    #[test]
    fn tail_is_limited() {
        let mut f = Failure::new(ErrorKind::AgentExited, "gone");
        f.stderr_tail = Some((0..100).map(|i| format!("line {i}\n")).collect());
        let r = f.render();
        assert!(
            r.contains("line 99") && r.contains("line 80") && !r.contains("line 79\n"),
            "{r}"
        );
    }

    #[test]
    fn json_shape() {
        let f = Failure::new(ErrorKind::BinaryNotFound, "nope");
        assert_eq!(
            f.to_json(),
            json!({"error": {"kind": "binary-not-found", "message": "nope"}})
        );
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!((p.p50, p.p90, p.max), (5.0, 9.0, 10.0));
        let p = Percentiles::of(&[7.0]).unwrap();
        assert_eq!((p.p50, p.p90, p.max), (7.0, 7.0, 7.0));
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 20), "5.0 MiB");
    }
}
