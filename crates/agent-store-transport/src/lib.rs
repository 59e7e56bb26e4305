//! `agent-store-transport`: the one HTTP transport the network stores share.
//!
//! The HTTP and GitHub stores talk HTTP through hyper; the OCI store through
//! `oci-client`. What they have in common lives here, once:
//!
//! - [`client`]: the hyper client (rustls with the ring provider, native
//!   roots, connect timeout, HTTP/1.1 and HTTP/2 by ALPN);
//! - [`RedirectPolicy`]: never https → http; a hop to another host only to
//!   the hosts the store allows; credentials only ever to the origin they were
//!   given for ([`same_origin`]);
//! - [`classify`] and [`status_error`]: one status → answer mapping with its
//!   retry class — 404/410 are `artifact-missing`; 401, 403 and the other 4xx
//!   are [`agent_store::StoreError::Denied`] (not retried, with the credential
//!   hint); 408, 429 and 5xx are `store-unavailable`, retried honouring
//!   [`retry_after`] in both its forms (seconds and HTTP date);
//! - [`BodyReader`]: a response body as `AsyncRead` whose stall timer counts
//!   bytes, not frames (an empty DATA frame is no progress);
//! - [`probe_get`]: one bounded `GET` for a store's probe.
//!
//! ```
//! use agent_store_transport::{Class, RedirectPolicy, classify};
//! use http::{StatusCode, Uri};
//!
//! // A store's redirects: its own host, and its CDN.
//! let policy = RedirectPolicy::new().allow_host("*.cdn.example.com");
//! let from: Uri = "https://agents.example.com/acme/echo/1.0.0".parse()?;
//! let to = policy.next(&from, "https://eu.cdn.example.com/blob/42")?;
//! assert_eq!(to.host(), Some("eu.cdn.example.com"));
//! // Never https → http, never a host the store did not allow.
//! assert!(policy.next(&from, "http://agents.example.com/x").is_err());
//! assert!(policy.next(&from, "https://evil.example.net/x").is_err());
//!
//! assert_eq!(classify(StatusCode::NOT_FOUND), Class::Missing);
//! assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Class::Retry);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! It is a crate of its own, not a module of `agent-store`, so that the trait
//! crate (and the Nix store, and an app using only the Nix store) does not
//! pull hyper and rustls.
#![forbid(unsafe_code)]

mod body;
mod client;
mod probe;
mod redirect;
mod status;

pub use body::{BodyReader, ReadError, read_to_end};
pub use client::{ClientOptions, HttpsClient, client};
pub use probe::{ProbeAnswer, probe_client, probe_get};
pub use redirect::{
    DEFAULT_MAX_REDIRECTS, RedirectError, RedirectPolicy, resolve_location, same_host, same_origin,
};
pub use status::{Class, classify, retry_after, retry_after_at, status_error};
