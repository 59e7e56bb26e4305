//! `agentctl`: the command line for agent-manager. (Implementation: issue #4.)
fn main() {}
