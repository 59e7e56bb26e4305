//! `agent-spawn`: turn a binary path into a ready, authenticated gRPC connection.
//!
//! Spawn in its own process group, read the handshake line, connect, check
//! `grpc.health.v1`, and tear everything down on close or drop. (Implementation: issue #3.)
