//! An agent's stderr as the host's log events, end to end: real agents
//! spawned by `agent_spawn::spawn`, the host's events caught by a tracing
//! subscriber installed in this test process.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_spawn::{AgentLogs, SpawnOptions, spawn};
use agent_testkit::bin_path;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

const WAIT: Duration = Duration::from_secs(30);

/// One host event from target `agent`.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    message: String,
    fields: HashMap<String, String>,
    span: String,
}

#[derive(Default)]
struct Capture {
    events: Mutex<Vec<Seen>>,
    spans: Mutex<HashMap<u64, String>>,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);
impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Layer(Arc<Capture>);
impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        if attrs.metadata().target() != "agent" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let mut kv: Vec<_> = f.0.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        kv.sort();
        self.0
            .spans
            .lock()
            .unwrap()
            .insert(id.into_u64(), kv.join(" "));
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "agent" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let message = f.0.remove("message").unwrap_or_default();
        let span = ctx
            .event_span(event)
            .and_then(|s| {
                self.0
                    .spans
                    .lock()
                    .unwrap()
                    .get(&s.id().into_u64())
                    .cloned()
            })
            .unwrap_or_default();
        self.0.events.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            message,
            fields: f.0,
            span,
        });
    }
}

/// The process-wide capture (events come from agent-spawn's I/O thread, so
/// the subscriber must be the global one).
fn capture() -> &'static Arc<Capture> {
    static CAP: OnceLock<Arc<Capture>> = OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Arc::new(Capture::default());
        let sub = tracing_subscriber::registry().with(Layer(cap.clone()));
        tracing::subscriber::set_global_default(sub).expect("the only subscriber");
        cap
    })
}

/// Events whose span names `pid`.
fn events_of(pid: u32) -> Vec<Seen> {
    let needle = format!("pid={pid}");
    capture()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.span.split(' ').any(|kv| kv == needle))
        .cloned()
        .collect()
}

/// Polls until an event of `pid` matches `pred`.
async fn wait_for(pid: u32, pred: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = events_of(pid).into_iter().find(&pred) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such event for pid {pid}; seen: {:?}",
            events_of(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A wrapper "agent" that writes one Go `slog` JSON-handler line on stderr,
/// then becomes agent-echo.
fn slog_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("slog-agent");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' '{}' >&2\nexec '{}' \"$@\"\n",
        r#"{"time":"2026-12-01T23:00:00.000+00:00","level":"WARN","msg":"cache nearly full","used_pct":93,"dir":"/var/cache/agent"}"#,
        bin_path("agent-echo").display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_go_slog_line_on_an_agents_stderr_is_a_host_event_with_its_level() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let conn = spawn(&slog_agent(dir.path()), SpawnOptions::default())
        .await
        .unwrap();
    let pid = conn.pid();
    let e = wait_for(pid, |e| e.message == "cache nearly full").await;
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.fields["fields"], "dir=/var/cache/agent used_pct=93");
    assert!(e.span.contains("agent=slog-agent"), "{e:?}");
    conn.close().await;
}

#[tokio::test]
async fn an_agent_serve_agent_logs_json_that_the_host_parses() {
    capture();
    let conn = spawn(&bin_path("agent-echo"), SpawnOptions::default())
        .await
        .unwrap();
    let pid = conn.pid();
    conn.close().await;
    // agent-serve's own event on SIGTERM, written as a JSON line because the
    // host asked (CODEFLY_AGENT_LOG=json), arrives parsed: not the raw JSON.
    let e = wait_for(pid, |e| e.message.contains("shutting down")).await;
    assert_eq!(e.level, Level::INFO);
    assert_eq!(e.fields["agent_target"], "agent_serve");
    assert!(!e.message.contains('{'), "{e:?}");
}

#[tokio::test]
async fn agent_logs_off_makes_no_host_events() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let conn = spawn(
        &slog_agent(dir.path()),
        SpawnOptions::new().agent_logs(AgentLogs::Off),
    )
    .await
    .unwrap();
    let pid = conn.pid();
    // The line is still in the stderr ring, just not logged.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !conn.stderr_tail().contains("cache nearly full") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            conn.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.close().await;
    assert!(events_of(pid).is_empty(), "{:?}", events_of(pid));
}
