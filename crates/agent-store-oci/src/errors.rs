//! Mapping `oci-client` errors onto the stable kinds.

use agent_store::StoreError;
use agent_store_transport::{Class, classify};
use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::config::{Credentials, STORE};
use crate::select::SelectError;

pub(crate) fn unavailable(message: String, source: Option<OciDistributionError>) -> StoreError {
    StoreError::Unavailable {
        store: STORE.to_owned(),
        message,
        retry_after: None,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

pub(crate) fn missing(what: String) -> StoreError {
    StoreError::Missing {
        store: STORE.to_owned(),
        what,
    }
}

pub(crate) fn integrity(what: String, message: String) -> StoreError {
    StoreError::Integrity {
        store: STORE.to_owned(),
        what,
        message,
    }
}

pub(crate) fn from_select(e: &SelectError, what: &str) -> StoreError {
    match e.kind() {
        agent_ref::ErrorKind::ArtifactMissing => missing(format!("{what}: {e}")),
        _ => integrity(what.to_owned(), e.to_string()),
    }
}

/// A refusal: not retried (asking again with the same credentials cannot help).
fn auth_failure(
    what: &str,
    host: &str,
    creds: &Credentials,
    status: u16,
    detail: &str,
) -> StoreError {
    StoreError::Denied {
        store: STORE.to_owned(),
        status,
        message: format!(
            "{host} refused access to {what} ({detail}); tried {}",
            creds.describe()
        ),
        hint: format!(
            "log in with `docker login {host}` or set AGENT_REGISTRY_USERNAME/AGENT_REGISTRY_PASSWORD"
        ),
    }
}

/// Whether a registry error code means "no such thing".
fn is_missing_code(code: &OciErrorCode) -> bool {
    matches!(
        code,
        OciErrorCode::ManifestUnknown
            | OciErrorCode::NameUnknown
            | OciErrorCode::BlobUnknown
            | OciErrorCode::NotFound
            | OciErrorCode::ManifestBlobUnknown
            | OciErrorCode::NameInvalid
    )
}

fn is_auth_code(code: &OciErrorCode) -> bool {
    matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
}

/// Maps an `oci-client` error met while working on `what` at `host`.
pub(crate) fn map(
    e: OciDistributionError,
    what: &str,
    host: &str,
    creds: &Credentials,
) -> StoreError {
    match &e {
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope.errors.iter().any(|x| is_auth_code(&x.code)) {
                return auth_failure(what, host, creds, 0, &e.to_string());
            }
            if envelope.errors.iter().any(|x| is_missing_code(&x.code)) {
                return missing(what.to_owned());
            }
            unavailable(format!("{host} answered an error for {what}"), Some(e))
        }
        // The one status mapping every network store uses.
        OciDistributionError::ServerError { code, .. } => {
            match http::StatusCode::from_u16(*code).map(classify) {
                Ok(Class::Missing) => missing(what.to_owned()),
                Ok(Class::Denied) => {
                    auth_failure(what, host, creds, *code, &format!("HTTP {code}"))
                }
                _ => unavailable(format!("{host} failed for {what}"), Some(e)),
            }
        }
        OciDistributionError::UnauthorizedError { .. } => {
            auth_failure(what, host, creds, 401, &e.to_string())
        }
        OciDistributionError::AuthenticationFailure(_) => {
            auth_failure(what, host, creds, 0, &e.to_string())
        }
        OciDistributionError::ImageManifestNotFoundError(_) => missing(what.to_owned()),
        OciDistributionError::DigestError(d) => integrity(what.to_owned(), d.to_string()),
        OciDistributionError::RequestError(r) => {
            let why = if r.is_connect() {
                "cannot connect"
            } else if r.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            unavailable(format!("{host}: {why} while fetching {what}"), Some(e))
        }
        _ => unavailable(format!("{host}: {what}"), Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_ref::ErrorKind;

    #[test]
    fn refusals_name_the_credentials_tried() {
        let creds = Credentials::Basic {
            username: "bob".into(),
            password: "hunter2".into(),
            origin: "/home/bob/.docker/config.json".into(),
        };
        let e = map(
            OciDistributionError::UnauthorizedError {
                url: "https://r/v2/x/manifests/1".into(),
            },
            "r/x:1",
            "r",
            &creds,
        );
        assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
        assert!(!e.is_retryable(), "a refusal is not retried");
        let msg = e.to_string();
        assert!(
            msg.contains("bob") && msg.contains(".docker/config.json"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");

        let e = map(
            OciDistributionError::ServerError {
                code: 403,
                url: "u".into(),
                message: String::new(),
            },
            "r/x:1",
            "r",
            &Credentials::Anonymous,
        );
        assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
        assert!(e.to_string().contains("anonymous"), "{e}");
    }

    #[test]
    fn statuses_map_to_kinds() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: String::new(),
        };
        let kind = |e| map(e, "w", "h", &Credentials::Anonymous).kind();
        assert_eq!(kind(server(404)), ErrorKind::ArtifactMissing);
        assert_eq!(kind(server(500)), ErrorKind::StoreUnavailable);
        assert_eq!(kind(server(503)), ErrorKind::StoreUnavailable);
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .unwrap();
        assert_eq!(
            kind(OciDistributionError::RegistryError {
                envelope,
                url: "u".into()
            }),
            ErrorKind::ArtifactMissing
        );
        assert_eq!(
            kind(OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError {
                    expected: "a".into(),
                    actual: "b".into()
                }
            )),
            ErrorKind::Integrity
        );
    }
}
