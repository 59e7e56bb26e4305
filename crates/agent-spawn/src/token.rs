//! The per-spawn secret and the interceptor that sends it on every RPC.

use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::TOKEN_METADATA_KEY;

/// A fresh 256-bit token as 64 lowercase hex characters.
pub(crate) fn fresh_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Adds `x-codefly-token: <token>` to every request.
#[derive(Debug, Clone)]
pub struct TokenInterceptor {
    value: AsciiMetadataValue,
}

impl TokenInterceptor {
    /// An interceptor sending `token` (which must be visible ASCII, as hex is).
    ///
    /// # Errors
    /// When `token` is not a valid metadata value.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(TokenInterceptor {
            value: token.parse()?,
        })
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(
            MetadataKey::from_static(TOKEN_METADATA_KEY),
            self.value.clone(),
        );
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_hex() {
        let a = fresh_token().unwrap();
        let b = fresh_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn interceptor_sets_the_header() {
        let mut i = TokenInterceptor::new("abc123").unwrap();
        let req = i.call(Request::new(())).unwrap();
        assert_eq!(req.metadata().get(TOKEN_METADATA_KEY).unwrap(), "abc123");
    }
}
