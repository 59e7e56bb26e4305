//! An agent's stderr as the host's own log events.
//!
//! Each stderr line becomes one `tracing` event (target `agent`) under a span
//! naming the agent (`agent{agent=… pid=…}`):
//! - a line that is a JSON object from a common logger keeps its level,
//!   message and fields: tracing-subscriber's `json` format
//!   (`level`, `fields.message`, `target`, `span`/`spans`), Go's `log/slog`
//!   JSON handler (`time`, `level`, `msg`), zap (`level`, `ts`, `msg`,
//!   `caller`), hclog as go-plugin plugins write it (`@level`, `@message`,
//!   `@module`, `@timestamp`), and the many loggers using `level`/`severity` +
//!   `msg`/`message` (numeric pino/bunyan levels included);
//! - any other line is an `info` event with the line as its message.
//!
//! tracing has no dynamic field names, so an agent's own fields travel as one
//! `fields` value in logfmt form (`key=value key2="two words"`, keys sorted);
//! timestamps are dropped (the host stamps its own).
//!
//! Bounded, so a flooding agent cannot flood the host: a line is cut at
//! [`MAX_LINE`] bytes (the event says `truncated=true`), and at most
//! [`MAX_LINES_PER_SEC`] lines become events per second; the others are dropped
//! and counted, and the count is reported in a `warn` event once the second
//! is over (or at EOF).
//!
//! ```
//! use agent_spawn::logs::{AgentLogger, AgentLogs};
//!
//! let mut logs = AgentLogger::new(AgentLogs::Parsed, "acme/echo:1.0.0", 4242);
//! logs.feed(b"{\"time\":\"2026-01-01T00:00:00Z\",\"level\":\"WARN\",\"msg\":\"disk low\",\"free_mb\":12}\n");
//! logs.feed(b"plain text ");
//! logs.feed(b"line\n");
//! logs.finish();
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracing::Level;

/// What becomes of an agent's stderr besides the ring buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AgentLogs {
    /// Nothing: the stderr ring (and the raw sink, if any) only.
    Off,
    /// One `info` event per line with the line as written, JSON or not.
    Raw,
    /// One event per line; JSON lines of common loggers keep their level,
    /// message and fields (see the [module docs](self)).
    #[default]
    Parsed,
}

impl AgentLogs {
    /// The name used on command lines: `off`, `raw`, `parsed`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Raw => "raw",
            Self::Parsed => "parsed",
        }
    }
}

impl std::fmt::Display for AgentLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AgentLogs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "raw" => Ok(Self::Raw),
            "parsed" => Ok(Self::Parsed),
            other => Err(format!(
                "unknown agent log mode {other:?} (accepted: off, raw, parsed)"
            )),
        }
    }
}

/// Longest line turned into an event, in bytes; the rest of the line is dropped.
pub const MAX_LINE: usize = 8 * 1024;

/// Most lines turned into events per second; the others are dropped and counted.
pub const MAX_LINES_PER_SEC: u32 = 200;

const WINDOW: Duration = Duration::from_secs(1);

/// Turns the bytes an agent writes on stderr into host `tracing` events.
///
/// Feed it every chunk read from the agent's stderr, in order, then call
/// [`finish`](Self::finish) at EOF. It does no I/O and never blocks; it is
/// meant for the thread that drains stderr.
#[derive(Debug)]
pub struct AgentLogger {
    mode: AgentLogs,
    span: tracing::Span,
    line: Vec<u8>,
    truncated: bool,
    window_start: Option<Instant>,
    in_window: u32,
    dropped: u64,
}

impl AgentLogger {
    /// A logger for the agent named `agent` (its ref, or its program path)
    /// running as `pid`; its events go under the span `agent{agent=… pid=…}`.
    #[must_use]
    pub fn new(mode: AgentLogs, agent: &str, pid: u32) -> Self {
        let span = if mode == AgentLogs::Off {
            tracing::Span::none()
        } else {
            tracing::info_span!(target: "agent", parent: None, "agent", agent = %agent, pid)
        };
        Self {
            mode,
            span,
            line: Vec::new(),
            truncated: false,
            window_start: None,
            in_window: 0,
            dropped: 0,
        }
    }

    /// The span the events go under (to add fields, or to nest other events).
    #[must_use]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Takes the next bytes of the agent's stderr.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.mode == AgentLogs::Off {
            return;
        }
        while !chunk.is_empty() {
            let (part, rest, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            if !self.truncated {
                let room = MAX_LINE - self.line.len();
                if part.len() > room {
                    self.line.extend_from_slice(&part[..room]);
                    self.truncated = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if complete {
                self.end_line();
            }
            chunk = rest;
        }
    }

    /// At EOF: the last line without a newline becomes an event too, and
    /// dropped lines not yet reported are.
    pub fn finish(&mut self) {
        if self.mode == AgentLogs::Off {
            return;
        }
        if !self.line.is_empty() || self.truncated {
            self.end_line();
        }
        self.report_dropped();
    }

    fn end_line(&mut self) {
        let truncated = std::mem::take(&mut self.truncated);
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) && !truncated {
            self.line = line;
            self.line.clear();
            return;
        }
        if self.admit() {
            let text = String::from_utf8_lossy(&line);
            let record = match self.mode {
                AgentLogs::Parsed => parse_line(&text),
                AgentLogs::Raw | AgentLogs::Off => None,
            };
            match record {
                Some(r) => emit(&self.span, &r, truncated),
                None => emit(
                    &self.span,
                    &Record {
                        level: Level::INFO,
                        message: text.into_owned(),
                        target: None,
                        fields: String::new(),
                    },
                    truncated,
                ),
            }
        }
        // Keep the allocation for the next line.
        line.clear();
        self.line = line;
    }

    /// Whether one more line fits in this second's budget.
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < WINDOW => {}
            _ => {
                self.report_dropped();
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window >= MAX_LINES_PER_SEC {
            self.dropped += 1;
            return false;
        }
        self.in_window += 1;
        true
    }

    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            let dropped = std::mem::take(&mut self.dropped);
            tracing::warn!(
                target: "agent",
                parent: &self.span,
                dropped,
                "the agent wrote more than {MAX_LINES_PER_SEC} stderr lines per second; \
                 {dropped} lines were not logged (the stderr ring still has the tail)"
            );
        }
    }
}

/// One log line as the agent meant it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    level: Level,
    message: String,
    /// The agent's own target/module/logger name, if it gave one.
    target: Option<String>,
    /// The agent's fields in logfmt form (empty: none).
    fields: String,
}

fn emit(span: &tracing::Span, r: &Record, truncated: bool) {
    let fields = (!r.fields.is_empty()).then(|| tracing::field::display(r.fields.as_str()));
    let agent_target = r.target.as_deref().map(tracing::field::display);
    let truncated = truncated.then_some(true);
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: "agent",
                parent: span,
                $level,
                agent_target,
                fields,
                truncated,
                "{}",
                r.message
            )
        };
    }
    match r.level {
        Level::ERROR => at!(Level::ERROR),
        Level::WARN => at!(Level::WARN),
        Level::INFO => at!(Level::INFO),
        Level::DEBUG => at!(Level::DEBUG),
        _ => at!(Level::TRACE),
    }
}

/// Keys that carry the level, in the loggers we know.
const LEVEL_KEYS: &[&str] = &["level", "@level", "severity", "lvl", "log.level"];
/// Keys that carry the message.
const MESSAGE_KEYS: &[&str] = &["msg", "message", "@message"];
/// Keys that carry the agent's own logger/module/target name.
const TARGET_KEYS: &[&str] = &["target", "@module", "logger", "module"];
/// Timestamps: dropped, the host stamps its own events.
const TIME_KEYS: &[&str] = &["time", "ts", "timestamp", "@timestamp", "t"];

/// A JSON object line from a logger we know, or `None` (the line is text).
fn parse_line(line: &str) -> Option<Record> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let mut obj: Map<String, Value> = serde_json::from_str(trimmed).ok()?;

    // tracing-subscriber's json format nests the event's fields (and the
    // message) under "fields", unless flattened.
    let mut nested = match obj.remove("fields") {
        Some(Value::Object(f)) => Some(f),
        Some(other) => {
            obj.insert("fields".to_owned(), other);
            None
        }
        None => None,
    };

    let level_value = take_first(&mut obj, LEVEL_KEYS);
    let message_value = take_first(&mut obj, MESSAGE_KEYS)
        .or_else(|| nested.as_mut().and_then(|f| take_first(f, MESSAGE_KEYS)));
    if level_value.is_none() && message_value.is_none() {
        return None;
    }
    let level = level_value.as_ref().map_or(Level::INFO, parse_level);
    let message = match message_value {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let target = take_first(&mut obj, TARGET_KEYS).map(|v| match v {
        Value::String(s) => s,
        other => other.to_string(),
    });
    for k in TIME_KEYS {
        obj.remove(*k);
    }
    // tracing-subscriber: the current span and the span list; keep their names.
    let spans = match (obj.remove("spans"), obj.remove("span")) {
        (Some(Value::Array(list)), _) => span_names(&list),
        (_, Some(span @ Value::Object(_))) => span_names(std::slice::from_ref(&span)),
        _ => None,
    };

    let mut fields = String::new();
    if let Some(spans) = spans {
        push_field(&mut fields, "spans", &Value::String(spans));
    }
    for (k, v) in nested.iter().flatten().chain(obj.iter()) {
        // hclog marks its own keys with '@'; the values are what matter.
        push_field(&mut fields, k.strip_prefix('@').unwrap_or(k), v);
    }
    Some(Record {
        level,
        message,
        target,
        fields,
    })
}

fn take_first(obj: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter().find_map(|k| obj.remove(*k))
}

fn span_names(spans: &[Value]) -> Option<String> {
    let names: Vec<&str> = spans
        .iter()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .collect();
    (!names.is_empty()).then(|| names.join(":"))
}

/// The level a logger's `level` value names; unknown ones are `info`.
fn parse_level(v: &Value) -> Level {
    match v {
        // pino/bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
        Value::Number(n) => match n.as_f64().unwrap_or(30.0) {
            x if x <= 10.0 => Level::TRACE,
            x if x <= 20.0 => Level::DEBUG,
            x if x <= 30.0 => Level::INFO,
            x if x <= 40.0 => Level::WARN,
            _ => Level::ERROR,
        },
        Value::String(s) => {
            // slog writes levels between the named ones as "INFO+2", "WARN-1".
            let name = s.split(['+', '-']).next().unwrap_or(s).trim();
            match name.to_ascii_lowercase().as_str() {
                "trace" | "trc" => Level::TRACE,
                "debug" | "dbug" | "dbg" => Level::DEBUG,
                "warn" | "warning" | "wrn" => Level::WARN,
                "error" | "err" | "dpanic" | "panic" | "fatal" | "critical" | "crit" | "alert"
                | "emerg" | "emergency" => Level::ERROR,
                _ => Level::INFO,
            }
        }
        _ => Level::INFO,
    }
}

/// Appends ` key=value` in logfmt form (values quoted when they need it).
fn push_field(out: &mut String, key: &str, value: &Value) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(key);
    out.push('=');
    match value {
        Value::String(s) => {
            let bare = !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
            if bare {
                out.push_str(s);
            } else {
                let _ = write!(out, "{s:?}");
            }
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};

    /// One event as a host's subscriber saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        level: Level,
        target: String,
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
            let mut f = Fields::default();
            attrs.record(&mut f);
            let mut kv: Vec<_> = f.0.into_iter().collect();
            kv.sort();
            let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.0.spans.lock().unwrap().insert(
                id.into_u64(),
                format!("{}{{{}}}", attrs.metadata().name(), kv.join(" ")),
            );
        }
        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
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
                target: event.metadata().target().to_owned(),
                message,
                fields: f.0,
                span,
            });
        }
    }

    /// Runs `f` with a capturing subscriber and returns what it saw.
    fn capture(f: impl FnOnce()) -> Vec<Seen> {
        let cap = Arc::new(Capture::default());
        let sub = tracing_subscriber::registry().with(Layer(cap.clone()));
        tracing::subscriber::with_default(sub, f);
        cap.events.lock().unwrap().clone()
    }

    fn one(mode: AgentLogs, input: &[u8]) -> Vec<Seen> {
        capture(|| {
            let mut l = AgentLogger::new(mode, "acme/echo:1.0.0", 77);
            l.feed(input);
            l.finish();
        })
    }

    fn single(input: &str) -> Seen {
        let mut got = one(AgentLogs::Parsed, input.as_bytes());
        assert_eq!(got.len(), 1, "{got:?}");
        got.remove(0)
    }

    #[test]
    fn go_slog_json_handler() {
        let e = single(
            r#"{"time":"2026-12-01T23:00:00.123+01:00","level":"WARN","msg":"disk low","free_mb":12,"path":"/var/lib"}"#,
        );
        assert_eq!(e.level, Level::WARN);
        assert_eq!(e.message, "disk low");
        assert_eq!(e.target, "agent");
        assert_eq!(e.fields["fields"], "free_mb=12 path=/var/lib");
        assert_eq!(e.span, "agent{agent=acme/echo:1.0.0 pid=77}");
        // slog's in-between levels.
        assert_eq!(
            single(r#"{"level":"ERROR+4","msg":"x"}"#).level,
            Level::ERROR
        );
        assert_eq!(
            single(r#"{"level":"DEBUG-4","msg":"x"}"#).level,
            Level::DEBUG
        );
    }

    #[test]
    fn zap_production_json() {
        let e = single(
            r#"{"level":"error","ts":1733094000.123,"caller":"server/main.go:42","msg":"bind failed","port":8080,"error":"address in use"}"#,
        );
        assert_eq!(e.level, Level::ERROR);
        assert_eq!(e.message, "bind failed");
        assert_eq!(
            e.fields["fields"],
            r#"caller=server/main.go:42 error="address in use" port=8080"#
        );
        assert_eq!(
            single(r#"{"level":"dpanic","msg":"x"}"#).level,
            Level::ERROR
        );
        assert_eq!(
            single(r#"{"level":"debug","msg":"x","logger":"db"}"#).fields["agent_target"],
            "db"
        );
    }

    #[test]
    fn hclog_json_as_go_plugin_plugins_write_it() {
        let e = single(
            r#"{"@level":"debug","@message":"plugin started","@module":"provider.aws","@timestamp":"2026-12-01T23:00:00.000000Z","@caller":"main.go:12","version":"5.1"}"#,
        );
        assert_eq!(e.level, Level::DEBUG);
        assert_eq!(e.message, "plugin started");
        assert_eq!(e.fields["agent_target"], "provider.aws");
        assert_eq!(e.fields["fields"], "caller=main.go:12 version=5.1");
        assert_eq!(
            single(r#"{"@level":"trace","@message":"t"}"#).level,
            Level::TRACE
        );
    }

    #[test]
    fn tracing_subscriber_json_format() {
        let e = single(
            r#"{"timestamp":"2026-12-01T23:00:00.000000Z","level":"INFO","fields":{"message":"listening","port":4242},"target":"agent_serve","span":{"name":"serve","id":1},"spans":[{"name":"main"},{"name":"serve","id":1}]}"#,
        );
        assert_eq!(e.level, Level::INFO);
        assert_eq!(e.message, "listening");
        assert_eq!(e.fields["agent_target"], "agent_serve");
        assert_eq!(e.fields["fields"], "spans=main:serve port=4242");
        // flatten_event(true): the fields at the top.
        let e = single(r#"{"level":"WARN","message":"flat","target":"t","n":1}"#);
        assert_eq!((e.level, e.message.as_str()), (Level::WARN, "flat"));
        assert_eq!(e.fields["fields"], "n=1");
    }

    #[test]
    fn numeric_levels_of_pino_and_bunyan() {
        assert_eq!(single(r#"{"level":50,"msg":"e"}"#).level, Level::ERROR);
        assert_eq!(single(r#"{"level":40,"msg":"w"}"#).level, Level::WARN);
        assert_eq!(single(r#"{"level":20,"msg":"d"}"#).level, Level::DEBUG);
    }

    #[test]
    fn other_lines_are_info_text() {
        for line in [
            "panic: runtime error: index out of range",
            r#"{"not":"a log record"}"#,
            "{ broken json",
            "[1,2,3]",
        ] {
            let e = single(line);
            assert_eq!(e.level, Level::INFO, "{line}");
            assert_eq!(e.message, line);
            assert!(!e.fields.contains_key("fields"), "{line}: {e:?}");
        }
    }

    #[test]
    fn raw_mode_keeps_json_lines_as_text() {
        let line = r#"{"level":"ERROR","msg":"x"}"#;
        let got = one(AgentLogs::Raw, format!("{line}\n").as_bytes());
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].level, got[0].message.as_str()), (Level::INFO, line));
    }

    #[test]
    fn off_mode_logs_nothing() {
        assert!(
            one(
                AgentLogs::Off,
                b"{\"level\":\"error\",\"msg\":\"x\"}\nhello\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn lines_split_across_chunks_crlf_and_an_unterminated_last_line() {
        let got = capture(|| {
            let mut l = AgentLogger::new(AgentLogs::Parsed, "a", 1);
            for chunk in [&b"fir"[..], b"st\r\n\nsec", b"ond\nthi", b"rd"] {
                l.feed(chunk);
            }
            l.finish();
        });
        let msgs: Vec<_> = got.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["first", "second", "third"]);
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let got = one(AgentLogs::Parsed, &input);
        assert_eq!(
            got.len(),
            2,
            "{:?}",
            got.iter().map(|e| e.message.len()).collect::<Vec<_>>()
        );
        assert_eq!(got[0].message.len(), MAX_LINE);
        assert_eq!(got[0].fields["truncated"], "true");
        assert_eq!(got[1].message, "next");
        assert!(!got[1].fields.contains_key("truncated"));
    }

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_drops_are_reported() {
        let total = 5 * MAX_LINES_PER_SEC as usize;
        let input: String = (0..total).map(|i| format!("line {i}\n")).collect();
        let got = one(AgentLogs::Parsed, input.as_bytes());
        // One second cannot pass while feeding: the budget, then one report.
        let (logged, reports): (Vec<_>, Vec<_>) =
            got.iter().partition(|e| e.message.starts_with("line "));
        assert_eq!(logged.len(), MAX_LINES_PER_SEC as usize);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].level, Level::WARN);
        assert_eq!(
            reports[0].fields["dropped"],
            (total - MAX_LINES_PER_SEC as usize).to_string()
        );
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [AgentLogs::Off, AgentLogs::Raw, AgentLogs::Parsed] {
            assert_eq!(m.as_str().parse::<AgentLogs>().unwrap(), m);
        }
        assert!(
            "loud"
                .parse::<AgentLogs>()
                .unwrap_err()
                .contains("off, raw, parsed")
        );
        assert_eq!(AgentLogs::default(), AgentLogs::Parsed);
    }

    /// A real process's stderr, read as the drain reads it, becomes host events.
    #[test]
    fn a_real_process_slog_line_becomes_a_host_event() {
        use std::io::Read as _;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(
                r#"printf '%s\n' '{"time":"2026-12-01T23:00:00Z","level":"ERROR","msg":"cannot open store","store":"oci","attempt":3}' >&2; echo 'plain words' >&2"#,
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stderr = child.stderr.take().unwrap();
        let got = capture(|| {
            let mut l = AgentLogger::new(AgentLogs::Parsed, "/bin/sh", pid);
            let mut buf = [0u8; 7]; // small reads: lines arrive in pieces
            loop {
                let n = stderr.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                l.feed(&buf[..n]);
            }
            l.finish();
        });
        assert!(child.wait().unwrap().success());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].level, Level::ERROR);
        assert_eq!(got[0].message, "cannot open store");
        assert_eq!(got[0].fields["fields"], "attempt=3 store=oci");
        assert_eq!(got[0].span, format!("agent{{agent=/bin/sh pid={pid}}}"));
        assert_eq!(
            (got[1].level, got[1].message.as_str()),
            (Level::INFO, "plain words")
        );
    }
}
