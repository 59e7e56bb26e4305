//! A real agent that tries, before it serves, each way out of a sandbox, and
//! reports what got through as one JSON line.
//!
//! Probes (each `true` when it got through):
//! - `secret_read`: read `$HOME/.ssh/id_test`;
//! - `outside_write`: write the file `$PROBE_OUTSIDE` (a path outside its grants);
//! - `granted_write`: write the file `$PROBE_GRANTED` (a path inside a grant);
//! - `tmpdir_write`: write a file in `$TMPDIR`;
//! - `tcp_connect`: connect to `127.0.0.1:$PROBE_TCP_PORT` and send a few bytes;
//! - `udp_send`: send a datagram to `127.0.0.1:$PROBE_UDP_PORT`;
//! - `environ_marker`: find `$PROBE_MARKER` in another process's `/proc/<pid>/environ`;
//! - `child_secret_read`: a child it starts reads `$HOME/.ssh/id_test`.
//!
//! Why each probe failed is under `errors`, and `tmpdir` is its `TMPDIR`. The line goes to the file
//! `$PROBE_REPORT` (in a directory the agent may write), or to stderr. Then
//! it serves Echo and health with agent-serve, like any agent.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

/// One probe: `Ok` when it got through.
type Probe = fn() -> Result<(), String>;

fn secret_path() -> Result<String, String> {
    std::env::var("HOME")
        .map(|h| format!("{h}/.ssh/id_test"))
        .map_err(|_| "HOME is not set".to_owned())
}

fn read_secret() -> Result<(), String> {
    std::fs::read(secret_path()?)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn write_file(var: &str) -> Result<(), String> {
    let path = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
    std::fs::write(path, b"written by probe-agent").map_err(|e| e.to_string())
}

fn port(var: &str) -> Result<SocketAddr, String> {
    let p: u16 = std::env::var(var)
        .map_err(|_| format!("{var} is not set"))?
        .parse()
        .map_err(|e| format!("{var}: {e}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], p)))
}

fn tcp() -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&port("PROBE_TCP_PORT")?, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.write_all(b"probe").map_err(|e| e.to_string())
}

fn udp() -> Result<(), String> {
    let to = port("PROBE_UDP_PORT")?;
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.send_to(b"probe", to))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Looks for the marker in every other process's environment.
fn environ() -> Result<(), String> {
    let marker = std::env::var("PROBE_MARKER").map_err(|_| "PROBE_MARKER is not set")?;
    let me = std::process::id().to_string();
    let (mut read, mut last_error) = (0, String::from("no other process"));
    for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut bytes = Vec::new();
        match std::fs::File::open(entry.path().join("environ"))
            .and_then(|mut f| f.read_to_end(&mut bytes))
        {
            Ok(_) => read += 1,
            Err(e) => {
                last_error = format!("/proc/{name}/environ: {e}");
                continue;
            }
        }
        if bytes
            .split(|b| *b == 0)
            .any(|kv| String::from_utf8_lossy(kv).contains(marker.as_str()))
        {
            return Ok(());
        }
    }
    Err(format!(
        "marker not found ({read} environments read; last error: {last_error})"
    ))
}

fn child_read() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg("--read-secret")
        .output()
        .map_err(|e| format!("starting the child: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text == "ok" { Ok(()) } else { Err(text) }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--read-secret") {
        match read_secret() {
            Ok(()) => println!("ok"),
            Err(e) => println!("{e}"),
        }
        return ExitCode::SUCCESS;
    }
    let probes: [(&str, Probe); 8] = [
        ("secret_read", read_secret),
        ("outside_write", || write_file("PROBE_OUTSIDE")),
        ("granted_write", || write_file("PROBE_GRANTED")),
        ("tmpdir_write", || {
            let dir = std::env::var("TMPDIR").map_err(|_| "TMPDIR is not set")?;
            std::fs::write(format!("{dir}/probe"), b"probe").map_err(|e| e.to_string())
        }),
        ("tcp_connect", tcp),
        ("udp_send", udp),
        ("environ_marker", environ),
        ("child_secret_read", child_read),
    ];
    let mut results = Map::new();
    let mut errors = Map::new();
    for (name, probe) in probes {
        let r = probe();
        results.insert(name.to_owned(), Value::Bool(r.is_ok()));
        if let Err(e) = r {
            errors.insert(name.to_owned(), Value::String(e));
        }
    }
    results.insert("errors".to_owned(), Value::Object(errors));
    results.insert(
        "tmpdir".to_owned(),
        std::env::var("TMPDIR").map_or(Value::Null, Value::String),
    );
    let line = format!("{}\n", Value::Object(results));
    match std::env::var("PROBE_REPORT") {
        Ok(path) => {
            if let Err(e) = std::fs::write(&path, &line) {
                eprintln!("probe-agent: cannot write {path}: {e}");
                eprint!("{line}");
            }
        }
        Err(_) => eprint!("{line}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(agent_serve::serve(agent_echo::router())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
