//! `agent-echo`: the example agent binary.
//!
//! ```text
//! agent-echo [--protocol 1|2]   serve Echo + health, print the handshake
//! agent-echo --version          print the version and exit
//! ```

use std::process::ExitCode;

fn usage() -> String {
    format!(
        "agent-echo {}: example agent (Echo + health over gRPC)\n\
         usage: agent-echo [--protocol 1|2] | --version | --help",
        agent_echo::VERSION
    )
}

/// Hidden modes for agent-serve's process tests (not in the usage text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestMode {
    /// After the handshake, block the runtime's only thread forever.
    Wedge,
    /// Before serving, start one child in our process group that ignores
    /// SIGTERM; its pid goes to stderr as `agent-echo: test child pid N`.
    Child,
}

fn main() -> ExitCode {
    let mut v1 = false;
    let mut test_mode = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let protocol = match arg.as_str() {
            "--test-wedge" => {
                test_mode = Some(TestMode::Wedge);
                continue;
            }
            "--test-child" => {
                test_mode = Some(TestMode::Child);
                continue;
            }
            "--test-sleeper" => {
                // SAFETY: installing SIG_IGN has no preconditions.
                #[allow(unsafe_code)]
                unsafe {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                }
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            "--version" | "-V" => {
                println!("{}", agent_echo::VERSION);
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            "--protocol" => args.next(),
            other => match other.strip_prefix("--protocol=") {
                Some(p) => Some(p.to_owned()),
                None => {
                    eprintln!("agent-echo: unknown argument {other:?}\n{}", usage());
                    return ExitCode::from(2);
                }
            },
        };
        match protocol.as_deref() {
            Some("1") => v1 = true,
            Some("2") => v1 = false,
            p => {
                eprintln!("agent-echo: --protocol takes 1 or 2, got {p:?}");
                return ExitCode::from(2);
            }
        }
    }

    // One thread: the agent serves one host, and startup latency matters more
    // than parallelism (no worker threads to spawn before the handshake).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut agent = agent_serve::Agent::new();
    if v1 {
        agent = agent.protocol_v1();
    }
    if test_mode == Some(TestMode::Child) {
        match std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg("--test-sleeper")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
        }) {
            Ok(child) => eprintln!("agent-echo: test child pid {}", child.id()),
            Err(e) => {
                eprintln!("agent-echo: cannot start the test child: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let served = runtime.block_on(async {
        if test_mode == Some(TestMode::Wedge) {
            // Runs once serve() has printed the handshake and first awaits.
            tokio::spawn(async {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            });
        }
        agent.serve(agent_echo::router()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
