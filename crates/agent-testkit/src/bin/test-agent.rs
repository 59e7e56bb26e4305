//! Misbehaving agents for tests, one mode per failure, selected by the first argument.
//!
//! ```text
//! test-agent serve               healthy: health SERVING + Echo (honours CODEFLY_AGENT_UDS_PATH)
//! test-agent exit-early          message on stderr, exit 3, no handshake
//! test-agent hang                never prints anything
//! test-agent pid-then-hang FILE  writes its pid to FILE, then never prints anything
//! test-agent garbage             prints "hello world"
//! test-agent wrong-version       prints 9|dns:///127.0.0.1:1
//! test-agent non-loopback        prints 2|dns:///10.1.2.3:80
//! test-agent relative-unix       prints 2|unix:rel.sock
//! test-agent overlong-line       prints 10 KiB without a newline
//! test-agent no-listener         handshake to a port nothing listens on
//! test-agent not-serving         health NOT_SERVING forever
//! test-agent no-health           a gRPC server (Echo) without health: must load
//! test-agent stdout-flood        8 MiB on stdout before serving, then floods stdout forever
//! test-agent stderr-flood [MiB]  serves, then writes MiB (default 300) to stderr and "stderr-flood: done"
//! test-agent ignore-sigterm      serves, ignores SIGTERM
//! test-agent fork-grandchildren  serves; 3 children ignoring SIGTERM in its group ("child pid N" on stderr)
//! test-agent die-after-load      serves, exits 1 one second after the handshake
//! test-agent token               agent-serve + Echo: the token is required on Echo
//! test-agent sleeper             (internal) ignores SIGTERM, sleeps forever
//! test-agent report FILE         writes its environment and open fds to FILE, then serves
//! test-agent foreign-socket      serves on a unix socket of its own choosing and announces it
//! test-agent fork-tree FILE      serves; 2 children ignoring SIGTERM, each with a grandchild,
//!                                all in its group; every pid appended to FILE before the handshake
//! test-agent tree-node FILE [N]  (internal) appends its pid to FILE, starts N grandchildren, sleeps
//! ```
//!
//! Every mode that prints nothing valid stays alive afterwards, so the host
//! must kill it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;

const UDS_PATH_ENV: &str = "CODEFLY_AGENT_UDS_PATH";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("serve", String::as_str);
    match mode {
        "exit-early" => {
            eprintln!("test-agent: fatal: missing configuration (exit-early)");
            ExitCode::from(3)
        }
        "hang" => sleep_forever(),
        "pid-then-hang" => {
            let file = args.get(1).expect("pid-then-hang FILE");
            append_pid(file, std::process::id());
            sleep_forever()
        }
        "garbage" => print_then_sleep("hello world\n"),
        "wrong-version" => print_then_sleep("9|dns:///127.0.0.1:1\n"),
        "non-loopback" => print_then_sleep("2|dns:///10.1.2.3:80\n"),
        "relative-unix" => print_then_sleep("2|unix:rel.sock\n"),
        "overlong-line" => print_then_sleep(&"x".repeat(10 * 1024)),
        "no-listener" => {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            print_then_sleep(&format!("2|dns:///127.0.0.1:{port}\n"))
        }
        "sleeper" => {
            ignore_sigterm();
            sleep_forever()
        }
        "tree-node" => {
            ignore_sigterm();
            let file = args.get(1).expect("tree-node FILE [N]");
            let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
            spawn_tree(file, n);
            append_pid(file, std::process::id());
            sleep_forever()
        }
        "report" => {
            let file = args.get(1).expect("report FILE");
            std::fs::write(file, report()).expect("write the report");
            serve_mode("serve", &args)
        }
        "serve" | "not-serving" | "no-health" | "stdout-flood" | "stderr-flood"
        | "ignore-sigterm" | "fork-grandchildren" | "die-after-load" | "foreign-socket"
        | "setsid-helper" => serve_mode(mode, &args),
        "fork-tree" => {
            let file = args.get(1).expect("fork-tree FILE");
            spawn_tree(file, 2);
            serve_mode("serve", &args)
        }
        "token" => runtime().block_on(async {
            match agent_serve::serve(agent_echo::router()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("test-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        other => {
            eprintln!("test-agent: unknown mode {other:?}");
            ExitCode::from(2)
        }
    }
}

/// Starts `n` `tree-node` children (each with one grandchild when `n` is 2,
/// i.e. at the top) in our process group; their pids go to `file`.
fn spawn_tree(file: &str, n: usize) {
    let exe = std::env::current_exe().expect("own path");
    let below = if n == 2 { "1" } else { "0" };
    for _ in 0..n {
        // Never waited for on purpose: the host (or its watchdog) must clean them up.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new(&exe)
            .args(["tree-node", file, below])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn a tree node");
        let _ = child.id();
    }
    // Wait until every node has written its pid (2 children + 2 grandchildren
    // at the top), so the host sees the whole tree once the handshake is out.
    if n == 2 {
        for _ in 0..2000 {
            let lines = std::fs::read_to_string(file).map_or(0, |t| t.lines().count());
            if lines >= 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn append_pid(file: &str, pid: u32) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("open the pid file");
    // One write(2) per line: O_APPEND makes it atomic, so concurrent nodes
    // never interleave (`writeln!` may split the number and the newline).
    f.write_all(format!("{pid}\n").as_bytes())
        .expect("write the pid file");
}

/// `env NAME=VALUE` lines, then `fd N TARGET` lines (from /proc/self/fd, or
/// /dev/fd where there is no /proc; TARGET is `?` when it cannot be read).
fn report() -> String {
    let mut text = String::new();
    for (name, value) in std::env::vars_os() {
        text.push_str(&format!(
            "env {}={}\n",
            name.to_string_lossy(),
            value.to_string_lossy()
        ));
    }
    let mut fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
        .or_else(|_| std::fs::read_dir("/dev/fd"))
        .expect("/proc/self/fd or /dev/fd")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path())
                .map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
            Some((n, target))
        })
        .collect();
    fds.sort();
    for (n, target) in fds {
        text.push_str(&format!("fd {n} {target}\n"));
    }
    text
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn sleep_forever() -> ExitCode {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn print_then_sleep(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    sleep_forever()
}

fn ignore_sigterm() {
    // SAFETY: installing SIG_IGN has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

fn serve_mode(mode: &str, args: &[String]) -> ExitCode {
    if mode == "ignore-sigterm" {
        ignore_sigterm();
    }
    if mode == "fork-grandchildren" {
        let exe = std::env::current_exe().expect("own path");
        for _ in 0..3 {
            // Never waited for on purpose: the host must clean them up.
            #[allow(clippy::zombie_processes)]
            let child = std::process::Command::new(&exe)
                .arg("sleeper")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn a grandchild");
            eprintln!("child pid {}", child.id());
        }
    }
    if mode == "setsid-helper" {
        // A helper in its own session: out of reach of group signals.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("setsid")
            .args(["sleep", "300"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn setsid sleep");
        eprintln!("helper pid {}", child.id());
    }
    let rt = runtime();
    rt.block_on(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        if mode == "not-serving" {
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
        let echo = agent_echo::EchoService::from_env().into_server();
        let routes = if mode == "no-health" {
            Routes::new(echo)
        } else {
            Routes::new(health).add_service(echo)
        };

        let foreign = (mode == "foreign-socket").then(|| {
            let dir = std::env::temp_dir().join(format!("foreign-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            dir.join("s.sock").into_os_string()
        });
        let (listener, line) = match foreign.or_else(|| std::env::var_os(UDS_PATH_ENV)) {
            Some(path) => {
                let l = tokio::net::UnixListener::bind(&path).expect("bind unix");
                let line = format!("2|unix:{}\n", std::path::Path::new(&path).display());
                (Listener::Unix(l), line)
            }
            None => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind tcp");
                let port = l.local_addr().expect("addr").port();
                (Listener::Tcp(l), format!("2|dns:///127.0.0.1:{port}\n"))
            }
        };
        {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).expect("handshake");
            out.flush().expect("flush");
        }

        match mode {
            "stdout-flood" => {
                // Blocks here, before serving, unless the host drains stdout.
                let chunk = vec![b'o'; 64 * 1024];
                let mut out = std::io::stdout().lock();
                for _ in 0..128 {
                    out.write_all(&chunk).expect("stdout");
                }
                drop(out);
                std::thread::spawn(move || {
                    let mut out = std::io::stdout().lock();
                    while out.write_all(&chunk).is_ok() {}
                });
            }
            "stderr-flood" => {
                let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
                std::thread::spawn(move || {
                    let chunk = vec![b'e'; 1024 * 1024];
                    let mut err = std::io::stderr().lock();
                    for _ in 0..mib {
                        err.write_all(&chunk).expect("stderr");
                    }
                    err.write_all(b"\nstderr-flood: done\n").expect("stderr");
                });
            }
            "die-after-load" => {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_secs(1));
                    eprintln!("test-agent: dying on purpose");
                    std::process::exit(1);
                });
            }
            _ => {}
        }

        let server = Server::builder().add_routes(routes);
        let result = match listener {
            Listener::Tcp(l) => server.serve_with_incoming(TcpListenerStream::new(l)).await,
            Listener::Unix(l) => server.serve_with_incoming(UnixListenerStream::new(l)).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("test-agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
