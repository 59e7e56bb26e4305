//! `agentctl`: the command line for agent-manager.
//!
//! Resolve, pull, load, benchmark, list, remove, publish (and sign), lock,
//! inspect (`info`, `doctor`, `config`) agents; shell completions. Output
//! contracts (scripts rely on them): `resolve` prints `publisher/name:version`;
//! `pull` prints the binary's absolute path as its last stdout line; `--json`
//! prints one JSON document on stdout; failures print `error[KIND]: message`
//! on stderr (and `{"error":{"kind","message"}}` on stdout with `--json`) and
//! exit 1; usage errors exit 2.

#[macro_use]
mod stdout;

mod cli;
mod commands;
mod ctx;
mod entry;
mod escape;
mod report;
mod temp;
mod values;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::report::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and --version exit 0; every usage error exits 2.
        Err(e) => e.exit(),
    };
    init_tracing(&cli);
    let json = cli.json;
    // One thread: every command is one task waiting on I/O (hashing and
    // writing run on their own threads), and a load on a current-thread
    // runtime needs no wake-up of a second worker (`agentctl bench` measures
    // the load).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Failure::io("starting the async runtime", &e), json),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(&f, json),
    }
}

fn fail(f: &Failure, json: bool) -> ExitCode {
    eprint!("{}", escape::terminal_safe(&f.render()));
    if json && !f.json_printed {
        outln!("{}", f.to_json());
    }
    ExitCode::FAILURE
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "off",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() && !cli.quiet => {
            EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new(level))
        }
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
