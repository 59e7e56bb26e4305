//! Measurement helpers for `cargo xtask bench`: summaries of samples and
//! child processes timed with their peak RSS.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
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

    /// The same summary of samples already in milliseconds.
    pub(crate) fn of_ms(samples: &[f64]) -> Summary {
        let d: Vec<Duration> = samples
            .iter()
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3))
            .collect();
        Summary::of(&d)
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

/// This process's resident set size now (`VmRSS`), in KiB.
pub(crate) fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// How many descriptors this process has open now.
pub(crate) fn fd_count() -> Result<u64> {
    let n = std::fs::read_dir("/proc/self/fd")
        .context("/proc/self/fd")?
        .count();
    // The directory handle read_dir held is counted once.
    Ok(u64::try_from(n.saturating_sub(1)).unwrap_or(u64::MAX))
}

/// One child process run: wall time and its peak resident set size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildRun {
    pub(crate) wall: Duration,
    pub(crate) max_rss_kib: u64,
    /// User + system CPU time of the child.
    pub(crate) cpu: Duration,
}

const GNU_TIME: &str = "/usr/bin/time";

/// Runs `program args…` to completion under GNU `time` and reports wall time
/// and the child's peak RSS. Not `wait4`'s rusage: a child started by
/// vfork/fork is charged its parent's resident set at exec time, so it would
/// report this (larger) process's RSS. `time` is tiny, so its fork is not.
pub(crate) fn run_child(
    program: &Path,
    args: &[&OsStr],
    env: &[(&str, String)],
) -> Result<ChildRun> {
    if !Path::new(GNU_TIME).is_file() {
        bail!("{GNU_TIME} is missing: `apt-get install time` (GNU time measures peak RSS)");
    }
    let out = tempfile::NamedTempFile::new().context("temp file for time's report")?;
    let mut cmd = Command::new(GNU_TIME);
    cmd.args(["-f", "%M %U %S", "-o"])
        .arg(out.path())
        .arg(program)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null());
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let wall = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    let report = std::fs::read_to_string(out.path()).context("reading time's report")?;
    let fields: Vec<&str> = report
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let (Some(max_rss_kib), Some(user), Some(sys)) = (
        fields.first().and_then(|f| f.parse::<u64>().ok()),
        fields.get(1).and_then(|f| f.parse::<f64>().ok()),
        fields.get(2).and_then(|f| f.parse::<f64>().ok()),
    ) else {
        bail!("time's report is not \"RSS user sys\": {report:?}");
    };
    let cpu = Duration::from_secs_f64(user + sys);
    Ok(ChildRun {
        wall,
        max_rss_kib,
        cpu,
    })
}

/// `mib` MiB of cheap pseudo-random bytes (incompressible enough for a registry).
pub(crate) fn write_noise(path: &Path, mib: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

/// CPU time of each of this process's threads, summed by thread name, in
/// nanoseconds: [`ThreadCpu::after`] minus [`ThreadCpu::before`] is what each
/// thread spent between the two.
///
/// Other threads are read from `/proc/self/task/*/schedstat` (the
/// scheduler's own runtime account; empty where there is no `/proc`). The
/// calling thread is read from its own CPU clock instead, taken after the
/// `/proc` pass in `before` and ahead of it in `after`: its `schedstat` lags
/// until its next scheduler event, which would charge the window with the
/// reading itself.
pub(crate) struct ThreadCpu(std::collections::BTreeMap<String, u64>);

impl ThreadCpu {
    pub(crate) fn before() -> ThreadCpu {
        let mut by_name = others_cpu_ns();
        let (name, ns) = own_cpu_ns();
        *by_name.entry(name).or_insert(0) += ns;
        ThreadCpu(by_name)
    }

    pub(crate) fn after() -> ThreadCpu {
        let (name, ns) = own_cpu_ns();
        let mut by_name = others_cpu_ns();
        *by_name.entry(name).or_insert(0) += ns;
        ThreadCpu(by_name)
    }

    /// Nanoseconds spent since `before`, by thread name.
    pub(crate) fn since(&self, before: &ThreadCpu) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(name, ns)| {
            let was = before.0.get(name).copied().unwrap_or(0);
            (name.as_str(), ns.saturating_sub(was))
        })
    }
}

/// The calling thread's id, as `/proc/self/task` names it (Linux only;
/// elsewhere there is no `/proc` to read, and `-1`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn gettid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

#[cfg(not(target_os = "linux"))]
fn gettid() -> i64 {
    -1
}

/// The calling thread's name and CPU time (its own clock, read last), in nanoseconds.
#[allow(unsafe_code)]
fn own_cpu_ns() -> (String, u64) {
    let name = std::fs::read_to_string("/proc/thread-self/comm")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    let ns = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0);
    (name, ns)
}

/// Every other thread's `schedstat` runtime, summed by name.
fn others_cpu_ns() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let own = gettid().to_string();
    for task in tasks.flatten() {
        if task.file_name().to_str() == Some(own.as_str()) {
            continue;
        }
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        *out.entry(comm.trim().to_owned()).or_insert(0) += ns;
    }
    out
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
    fn own_rss_and_fds() {
        let (rss, fds) = (rss_kib().unwrap(), fd_count().unwrap());
        assert!(rss > 0 && fds >= 3, "{rss} {fds}");
        let extra: Vec<_> = (0..10)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        // Other tests of this process open and close descriptors meanwhile,
        // so only a bound that holds whatever they do: stdio plus these ten.
        assert!(fd_count().unwrap() >= 13);
        drop(extra);
        let ms = Summary::of_ms(&[3.0, 1.0, 2.0]);
        assert!((ms.p50 - 2.0).abs() < 1e-6);
    }

    #[test]
    fn child_rss_is_the_childs_own() {
        let py = Path::new("/usr/bin/python3");
        let small = run_child(py, &[OsStr::new("-c"), OsStr::new("pass")], &[]).unwrap();
        let big = run_child(
            py,
            &[
                OsStr::new("-c"),
                OsStr::new("x = bytearray(64 << 20); x[::4096] = b'1' * len(x[::4096])"),
            ],
            &[],
        )
        .unwrap();
        assert!(
            big.max_rss_kib > small.max_rss_kib + 60 * 1024,
            "{small:?} {big:?}"
        );
        assert!(run_child(Path::new("/bin/false"), &[], &[]).is_err());
    }
}
