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

fn main() -> ExitCode {
    let mut v1 = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let protocol = match arg.as_str() {
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
    match runtime.block_on(agent.serve(agent_echo::router())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
