//! `agent-serve`: the agent side of the handshake.
//!
//! Bind loopback (or the host-given unix socket), serve health, enforce the
//! token, print the handshake, stop on SIGTERM or when the host dies. (Implementation: issue #3.)
