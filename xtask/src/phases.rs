//! Where the time of one load goes, for `cargo xtask bench`.
//!
//! Two views of the same load of agent-echo:
//! - **stepwise**: the load done by hand with the pieces agent-spawn uses
//!   (tokio process spawn in its own group, the handshake line, a TCP connect
//!   with `TCP_NODELAY`, tonic's HTTP/2 connection over that stream, one
//!   health `Check`), each step timed;
//! - **agent-spawn's own phase events**: `agent_spawn::spawn` emits
//!   `debug` events with `phase` and `elapsed_us` fields; a subscriber
//!   installed only while measuring collects them (none: the row says so).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt as _;

use agent_manager::spawn::{Endpoint, Handshake, SpawnOptions};

/// The p50 of each step, in the order a load goes through them (ms).
pub(crate) struct Phases {
    pub(crate) steps: Vec<(String, f64)>,
    pub(crate) spawn_events: Vec<(String, f64)>,
}

impl Phases {
    pub(crate) fn json(&self) -> Value {
        let obj = |v: &[(String, f64)]| {
            Value::Object(
                v.iter()
                    .map(|(k, x)| (k.clone(), json!(crate::measure::round3(*x))))
                    .collect(),
            )
        };
        json!({ "stepwise_p50_ms": obj(&self.steps), "agent_spawn_events_p50_ms": obj(&self.spawn_events) })
    }
}

const STEPS: [&str; 7] = [
    "fork/exec",
    "exec → handshake line",
    "TCP connect",
    "HTTP/2 handshake",
    "first health RPC",
    "total",
    "second health RPC (warm, not in total)",
];

/// Both views over `n` loads each.
pub(crate) async fn breakdown(echo: &Path, n: usize) -> Result<Phases> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); STEPS.len()];
    for _ in 0..n {
        let d = stepwise_once(echo).await?;
        for (i, x) in d.iter().enumerate() {
            samples[i].push(*x);
        }
    }
    let steps = STEPS
        .iter()
        .zip(&samples)
        .map(|(name, v)| ((*name).to_owned(), crate::measure::median(v)))
        .collect();

    let events = spawn_events(echo, n).await?;
    Ok(Phases {
        steps,
        spawn_events: events,
    })
}

async fn stepwise_once(echo: &Path) -> Result<[f64; 7]> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(echo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env(
            "CODEFLY_AGENT_TOKEN",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", echo.display()))?;
    let t1 = Instant::now();
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    let t2 = Instant::now();
    let hs = Handshake::parse(line.trim_end(), &[1, 2]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Endpoint::Tcp(addr) = hs.endpoint else {
        bail!("agent-echo announced a unix socket: {line}");
    };
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let t3 = Instant::now();
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let s = slot.lock().ok().and_then(|mut g| g.take());
        async move {
            s.map(hyper_util::rt::TokioIo::new)
                .ok_or_else(|| std::io::Error::other("one connection only"))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await?;
    let t4 = Instant::now();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    let t5 = Instant::now();
    // What the agent's answer costs once its code is warm: the part of the
    // first RPC no loader can take away.
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;
    let t6 = Instant::now();
    if status != 1 {
        bail!("agent-echo is not SERVING ({status})");
    }
    if let Some(pid) = child.id() {
        #[allow(unsafe_code, clippy::cast_possible_wrap)]
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::killpg(pid as i32, libc::SIGKILL);
        }
    }
    child.wait().await?;
    Ok([
        ms(t1 - t0),
        ms(t2 - t1),
        ms(t3 - t2),
        ms(t4 - t3),
        ms(t5 - t4),
        ms(t5 - t0),
        ms(t6 - t5),
    ])
}

/// Phase events seen while capturing: (phase, elapsed µs).
#[derive(Default)]
struct Seen(Mutex<Vec<(String, u64)>>);

static CAPTURING: AtomicBool = AtomicBool::new(false);
static SEEN: OnceLock<Arc<Seen>> = OnceLock::new();

struct PhaseLayer(Arc<Seen>);

#[derive(Default)]
struct PhaseVisit {
    phase: Option<String>,
    elapsed_us: Option<u64>,
}

impl Visit for PhaseVisit {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "phase" {
            self.phase = Some(value.to_owned());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "elapsed_us" {
            self.elapsed_us = Some(value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "elapsed_us" {
            self.elapsed_us = u64::try_from(value).ok();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "phase" {
            self.phase = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseLayer {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.target().starts_with("agent_spawn") && meta.fields().field("phase").is_some() {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        CAPTURING.load(Ordering::Relaxed)
    }
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = PhaseVisit::default();
        event.record(&mut v);
        if let (Some(p), Some(us)) = (v.phase, v.elapsed_us)
            && let Ok(mut seen) = self.0.0.lock()
        {
            seen.push((p, us));
        }
    }
}

/// Installs the capturing subscriber once (the bench process has no other).
fn seen() -> Arc<Seen> {
    SEEN.get_or_init(|| {
        let seen = Arc::new(Seen::default());
        let sub = tracing_subscriber::registry().with(PhaseLayer(seen.clone()));
        if tracing::subscriber::set_global_default(sub).is_err() {
            eprintln!(
                "bench: a tracing subscriber is already set; agent-spawn phases not captured"
            );
        }
        seen
    })
    .clone()
}

async fn spawn_events(echo: &Path, n: usize) -> Result<Vec<(String, f64)>> {
    let seen = seen();
    CAPTURING.store(true, Ordering::SeqCst);
    let mut order: Vec<String> = Vec::new();
    let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..n {
        if let Ok(mut s) = seen.0.lock() {
            s.clear();
        }
        let conn =
            agent_manager::spawn::spawn(echo, SpawnOptions::new().grace(Duration::from_secs(5)))
                .await?;
        conn.close().await;
        let got = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        for (p, us) in got {
            if !order.contains(&p) {
                order.push(p.clone());
            }
            #[allow(clippy::cast_precision_loss)]
            by_phase.entry(p).or_default().push(us as f64 / 1e3);
        }
    }
    CAPTURING.store(false, Ordering::SeqCst);
    Ok(order
        .into_iter()
        .map(|p| {
            let m = crate::measure::median(&by_phase[&p]);
            (p, m)
        })
        .collect())
}
