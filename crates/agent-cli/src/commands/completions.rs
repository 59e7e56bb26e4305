//! `agentctl completions SHELL`: a shell completion script on stdout.

use clap::{Args, CommandFactory as _};

use crate::cli::Cli;

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

/// Prints the completion script for the shell on stdout.
pub(crate) fn exec(args: &CompletionsArgs) {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "agentctl", &mut std::io::stdout());
}
