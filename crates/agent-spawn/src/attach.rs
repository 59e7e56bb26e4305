//! Attach to an agent that is already running (go-plugin's `ReattachConfig`,
//! Terraform's `TF_REATTACH_PROVIDERS`): for running an agent under a
//! debugger, or sharing one started by another host.
//!
//! [`attach`] connects with the same readiness check as
//! [`spawn`](crate::spawn) (connect, then `grpc.health.v1` SERVING) and sends
//! the given token on every call. It never starts a process, and never
//! signals one: closing or dropping the handle only drops the channel.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::error::{SpawnError, SpawnFailure};
use crate::{Endpoint, ExitInfo, TokenInterceptor};

/// Where a running agent is and how to authenticate to it: what
/// `agentctl load --hold --json` prints, and what `CODEFLY_AGENT_ATTACH` holds.
///
/// `Debug` never shows the token.
#[doc(alias = "ReattachConfig")]
#[derive(Clone, PartialEq, Eq)]
pub struct AttachInfo {
    /// The agent's pid, when known: the handle then notices when it exits
    /// (it is never signalled).
    pub pid: Option<u32>,
    /// Where it listens (loopback TCP or an absolute unix socket path).
    pub endpoint: Endpoint,
    /// The token it expects in `x-codefly-token` (its `CODEFLY_AGENT_TOKEN`).
    pub token: String,
}

impl fmt::Debug for AttachInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachInfo")
            .field("pid", &self.pid)
            .field("endpoint", &self.endpoint.to_string())
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// An endpoint string that is not `127.0.0.1:PORT`, `[::1]:PORT`,
/// `dns:///127.0.0.1:PORT` or `unix:/absolute/path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad agent endpoint {given:?}: {reason} (expected 127.0.0.1:PORT or unix:/absolute/path)")]
pub struct EndpointParseError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl AttachInfo {
    /// Parses an endpoint as [`Endpoint`]'s `Display` writes it
    /// (`127.0.0.1:PORT`, `unix:/path`), also accepting `dns:///ADDR` and
    /// `localhost:PORT`. Only loopback addresses and absolute paths are accepted.
    ///
    /// ```
    /// use agent_spawn::{AttachInfo, Endpoint};
    ///
    /// let e = AttachInfo::parse_endpoint("127.0.0.1:50051").unwrap();
    /// assert_eq!(e, Endpoint::Tcp("127.0.0.1:50051".parse().unwrap()));
    /// assert_eq!(AttachInfo::parse_endpoint(&e.to_string()).unwrap(), e);
    /// assert!(AttachInfo::parse_endpoint("unix:/run/a.sock").is_ok());
    /// assert!(AttachInfo::parse_endpoint("10.0.0.1:80").is_err());
    /// ```
    ///
    /// # Errors
    /// [`EndpointParseError`] naming the string and the reason.
    pub fn parse_endpoint(s: &str) -> Result<Endpoint, EndpointParseError> {
        let err = |reason| EndpointParseError {
            given: s.to_owned(),
            reason,
        };
        let t = s.trim();
        if let Some(path) = t.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(err("a unix socket path must be absolute"));
            }
            return Ok(Endpoint::Unix(path));
        }
        let t = t.strip_prefix("dns:///").unwrap_or(t);
        let t = t.strip_prefix("http://").unwrap_or(t);
        let t = match t.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => t.to_owned(),
        };
        let addr: SocketAddr = t.parse().map_err(|_| err("not an address with a port"))?;
        if !addr.ip().is_loopback() {
            return Err(err("only loopback addresses are accepted"));
        }
        if addr.port() == 0 {
            return Err(err("port 0"));
        }
        Ok(Endpoint::Tcp(addr))
    }
}

/// A `CODEFLY_AGENT_ATTACH` value (or `AttachInfo` JSON) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttachParseError {
    /// What is wrong, naming the entry and the field.
    pub message: String,
}

impl AttachInfo {
    /// `{"pid": 123, "endpoint": "127.0.0.1:PORT", "token": "…"}` (`pid` is
    /// `null` when unknown): what `agentctl load --hold --json` prints and
    /// what [`AttachInfo::parse_map`] reads back.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pid": self.pid,
            "endpoint": self.endpoint.to_string(),
            "token": self.token,
        })
    }

    /// One entry as [`AttachInfo::to_json`] writes it: `endpoint` required,
    /// `token` (default empty: an agent running open) and `pid` optional,
    /// nothing else.
    ///
    /// # Errors
    /// [`AttachParseError`] naming the field.
    pub fn from_json(value: &serde_json::Value) -> Result<AttachInfo, AttachParseError> {
        let err = |message: String| AttachParseError { message };
        let obj = value
            .as_object()
            .ok_or_else(|| err("expected an object {pid, endpoint, token}".to_owned()))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "pid" | "endpoint" | "token"))
        {
            return Err(err(format!(
                "unknown field {k:?} (accepted: pid, endpoint, token)"
            )));
        }
        let endpoint = obj
            .get("endpoint")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| err("missing string field \"endpoint\"".to_owned()))?;
        let endpoint = AttachInfo::parse_endpoint(endpoint).map_err(|e| err(e.to_string()))?;
        let token = match obj.get("token") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(t)) => t.clone(),
            Some(_) => return Err(err("\"token\" must be a string".to_owned())),
        };
        let pid = match obj.get("pid") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|p| *p > 1)
                    .ok_or_else(|| err(format!("\"pid\" must be a process id, got {v}")))?,
            ),
        };
        Ok(AttachInfo {
            pid,
            endpoint,
            token,
        })
    }

    /// A `CODEFLY_AGENT_ATTACH` value: a JSON object from agent (`publisher/name`,
    /// as the caller matches it) to entry, e.g.
    /// `{"acme/echo": {"pid": 4242, "endpoint": "127.0.0.1:50051", "token": "…"}}`.
    /// Entries come sorted by key.
    ///
    /// ```
    /// use agent_spawn::AttachInfo;
    ///
    /// let map = AttachInfo::parse_map(r#"{"acme/echo": {"endpoint": "unix:/run/echo.sock", "token": "t"}}"#).unwrap();
    /// assert_eq!(map[0].0, "acme/echo");
    /// assert_eq!(map[0].1.pid, None);
    /// assert!(AttachInfo::parse_map(r#"{"acme/echo": {"endpoint": "10.0.0.1:80"}}"#).is_err());
    /// ```
    ///
    /// # Errors
    /// [`AttachParseError`] naming the entry and the field.
    pub fn parse_map(json: &str) -> Result<Vec<(String, AttachInfo)>, AttachParseError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| AttachParseError {
                message: format!("not JSON: {e}"),
            })?;
        let obj = value.as_object().ok_or_else(|| AttachParseError {
            message: "expected an object {\"publisher/name\": {pid, endpoint, token}}".to_owned(),
        })?;
        obj.iter()
            .map(|(k, v)| {
                AttachInfo::from_json(v)
                    .map(|info| (k.clone(), info))
                    .map_err(|e| AttachParseError {
                        message: format!("{k:?}: {}", e.message),
                    })
            })
            .collect()
    }
}

/// An attached agent: the channel, and who it is. Owns no process.
pub(crate) struct Attached {
    pub(crate) info: AttachInfo,
    pub(crate) channel: Channel,
    pub(crate) interceptor: TokenInterceptor,
    /// `Some` once the agent's pid is gone (never when no pid was given).
    pub(crate) exit_rx: watch::Receiver<Option<ExitInfo>>,
}

/// Connects to the running agent `info` describes: connect and health
/// SERVING (or no health service) within `dial_timeout`, as `spawn` does.
///
/// Nothing is started and nothing is ever signalled: [`AgentConn::close`]
/// and dropping the handle only drop the channel. With a pid, the handle's
/// [`AgentConn::exited`] resolves (status unknown) when that process ends.
///
/// # Errors
/// `agent-exited` when `info.pid` names no running process; `io` for a
/// token that is not a valid metadata value; `dial-timeout`; `not-serving`.
///
/// [`AgentConn::close`]: crate::AgentConn::close
/// [`AgentConn::exited`]: crate::AgentConn::exited
pub async fn attach(
    info: AttachInfo,
    dial_timeout: Duration,
) -> Result<crate::AgentConn, SpawnError> {
    let span = tracing::info_span!("attach", endpoint = %info.endpoint, pid = ?info.pid);
    attach_inner(info, dial_timeout).instrument(span).await
}

async fn attach_inner(
    info: AttachInfo,
    dial_timeout: Duration,
) -> Result<crate::AgentConn, SpawnError> {
    let interceptor = TokenInterceptor::new(&info.token).map_err(|e| SpawnFailure::Io {
        context: "invalid agent token".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
    if let Some(pid) = info.pid {
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
        agent_process::on_pid_exit(pid, move || {
            let _ = gone_tx.send(());
        })
        .map_err(|e| {
            tracing::debug!(pid, error = %e, "no such process to attach to");
            SpawnError::from(SpawnFailure::Exited {
                status: ExitInfo::default(),
            })
            .with_agent(pid, String::new())
        })?;
        tokio::spawn(async move {
            if gone_rx.await.is_ok() {
                tracing::debug!(pid, "attached agent exited");
                let _ = exit_tx.send(Some(ExitInfo::default()));
            }
        });
    } else {
        // Never sends: without a pid the exit is not observable.
        tokio::spawn(async move { exit_tx.closed().await });
    }
    // Closing an attached agent signals nothing: its transport is not kept.
    let transport = crate::transport::Transport::default();
    let channel = crate::ready::ready(
        &info.endpoint,
        interceptor.clone(),
        dial_timeout,
        &transport,
    )
    .await?;
    tracing::debug!("attached");
    Ok(crate::AgentConn::attached(Attached {
        info,
        channel,
        interceptor,
        exit_rx,
    }))
}
