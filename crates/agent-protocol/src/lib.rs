//! `agent-protocol`: the contract between a host and the agents it starts.
//!
//! Everything both sides must agree on lives here, once: the handshake line an
//! agent prints first on stdout ([`Handshake`], parsed and formatted, with its
//! 4 KiB cap [`MAX_HANDSHAKE_LEN`] and the [`PROTOCOL_VERSIONS`]), the names of
//! the `CODEFLY_AGENT_*` environment variables a host sets, the gRPC metadata
//! key that carries the token ([`TOKEN_METADATA_KEY`]), and what a host may pass
//! on of its own environment ([`HOST_SECRET_ENV`], [`DEFAULT_ENV_ALLOWLIST`],
//! [`env_allowed`]).
//!
//! The crate is deliberately tiny (no async runtime, no gRPC): a host depends on
//! `agent-spawn`, an agent written in Rust on `agent-serve`, and both on this.
//!
//! ```
//! use agent_protocol::{Endpoint, Handshake, PROTOCOL_VERSIONS};
//!
//! // The agent side formats the line ...
//! let line = Handshake::tcp(2, "127.0.0.1:50051".parse().unwrap()).to_string();
//! assert_eq!(line, "2|dns:///127.0.0.1:50051");
//! // ... the host side parses it strictly.
//! let h = Handshake::parse(&line, PROTOCOL_VERSIONS)?;
//! assert_eq!(h.endpoint, Endpoint::Tcp("127.0.0.1:50051".parse().unwrap()));
//! # Ok::<(), agent_protocol::HandshakeError>(())
//! ```
#![forbid(unsafe_code)]

mod env;
mod handshake;

pub use env::{
    ATTACH_ENV, DEFAULT_ENV_ALLOWLIST, HOST_SECRET_ENV, INSECURE_ENV, LIFELINE_ENV, LOG_ENV,
    LOG_JSON, TOKEN_ENV, TOKEN_METADATA_KEY, UDS_PATH_ENV, WORKDIR_ENV, env_allowed,
};
pub use handshake::{
    Endpoint, Handshake, HandshakeError, MAX_HANDSHAKE_LEN, MAX_UNIX_PATH, PROTOCOL_VERSIONS,
};
