//! Measurement helpers for `cargo xtask bench`: summaries of samples and
//! child processes timed with their peak RSS.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// p50/p90/max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) max: f64,
}

impl Summary {
    pub(crate) fn of(samples: &[Duration]) -> Summary {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            // Nearest-rank percentile.
            let rank = (q * ms.len() as f64).ceil().max(1.0) as usize;
            ms[rank.min(ms.len()) - 1]
        };
        Summary {
            n: ms.len(),
            p50: pick(0.5),
            p90: pick(0.9),
            max: pick(1.0),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({ "n": self.n, "p50": round3(self.p50), "p90": round3(self.p90), "max": round3(self.max) })
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median of plain numbers.
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[(v.len() - 1) / 2]
    }
}

/// One child process run: wall time and its peak resident set size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildRun {
    pub(crate) wall: Duration,
    pub(crate) max_rss_kib: u64,
}

/// Runs `cmd` to completion and reports wall time and peak RSS (from `wait4`'s
/// rusage, so only that child is counted). Fails when the child fails.
#[allow(unsafe_code)]
pub(crate) fn run_child(cmd: &mut Command) -> Result<ChildRun> {
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let mut status = 0i32;
    // SAFETY: rusage is plain old data, and wait4 only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own un-waited child; status and usage are valid pointers.
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = start.elapsed();
    // The child is reaped by wait4; std's Child must not wait again.
    std::mem::forget(child);
    if rc != pid {
        bail!(
            "wait4 failed for {cmd:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (wait status {status})");
    }
    Ok(ChildRun {
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = Summary::of(&d);
        assert_eq!(s.n, 10);
        assert!((s.p50 - 5.0).abs() < 1e-9);
        assert!((s.p90 - 9.0).abs() < 1e-9);
        assert!((s.max - 10.0).abs() < 1e-9);
    }

    #[test]
    fn child_rss_is_reported() {
        let run = run_child(Command::new("true").arg("x")).unwrap();
        assert!(run.max_rss_kib > 0);
        assert!(run_child(&mut Command::new("false")).is_err());
    }
}
