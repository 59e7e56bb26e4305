//! The token check: a tower layer in front of every service of the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::{TOKEN_ENV, TOKEN_METADATA_KEY};

/// Path prefix of the health service, the one service reachable without the token
/// (the host polls it before it has a reason to trust the agent, and probes such as
/// `grpc_health_probe` carry no token).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// A [`Layer`] that rejects every request without the right `x-codefly-token`
/// metadata with `Unauthenticated`, except calls to `grpc.health.v1.Health`.
///
/// Without a token (`CODEFLY_AGENT_TOKEN` unset or empty) it lets everything through.
/// [`server`](crate::server) installs it as the outermost layer, so it covers every
/// service added to the router.
///
/// ```
/// use agent_serve::TokenLayer;
/// let layer = TokenLayer::new(Some("s3cret".to_owned()));
/// assert!(layer.is_enforcing());
/// assert!(!TokenLayer::new(None).is_enforcing());
/// ```
#[derive(Clone)]
pub struct TokenLayer {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for TokenLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("TokenLayer")
            .field("enforcing", &self.is_enforcing())
            .finish()
    }
}

impl TokenLayer {
    /// A layer that enforces `token`; `None` or an empty token enforces nothing.
    #[must_use]
    pub fn new(token: Option<String>) -> Self {
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::from(t.into_bytes().into_boxed_slice()));
        Self { token }
    }

    /// A layer enforcing `CODEFLY_AGENT_TOKEN` when it is set and not empty.
    #[must_use]
    pub fn from_env() -> Self {
        let token = std::env::var_os(TOKEN_ENV).map(|t| t.to_string_lossy().into_owned());
        Self::new(token)
    }

    /// Whether requests are checked at all.
    #[must_use]
    pub fn is_enforcing(&self) -> bool {
        self.token.is_some()
    }
}

impl<S> Layer<S> for TokenLayer {
    type Service = TokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenService {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service made by [`TokenLayer`].
#[derive(Clone)]
pub struct TokenService<S> {
    inner: S,
    token: Option<Arc<[u8]>>,
}

impl<S> std::fmt::Debug for TokenService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("enforcing", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// The future of [`TokenService`]: the inner call, or an immediate rejection.
pub type TokenFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TokenService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = TokenFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if let Some(expected) = &self.token
            && !req.uri().path().starts_with(HEALTH_PREFIX)
        {
            let given = req
                .headers()
                .get(TOKEN_METADATA_KEY)
                .map(http::HeaderValue::as_bytes);
            let ok = given.is_some_and(|g| constant_time_eq(g, expected));
            if !ok {
                let message = if given.is_some() {
                    "invalid x-codefly-token"
                } else {
                    "missing x-codefly-token"
                };
                tracing::debug!(path = req.uri().path(), message, "rejected a call");
                let response = tonic::Status::unauthenticated(message).into_http::<ResBody>();
                return Box::pin(std::future::ready(Ok(response)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// Compares two byte strings in time that depends only on their lengths (the
/// token's length is public: 64 hex characters), so a caller cannot learn the
/// token byte by byte from response timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[derive(Clone)]
    struct Ok200;
    impl Service<http::Request<()>> for Ok200 {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new("inner".to_owned())))
        }
    }

    fn request(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header(TOKEN_METADATA_KEY, t);
        }
        b.body(()).unwrap()
    }

    /// The grpc-status a response carries (`None` = passed through to the inner service).
    async fn status(layer: &TokenLayer, path: &str, token: Option<&str>) -> Option<String> {
        let resp = layer
            .layer(Ok200)
            .oneshot(request(path, token))
            .await
            .unwrap();
        if resp.body() == "inner" {
            None
        } else {
            Some(
                resp.headers()
                    .get("grpc-status")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    }

    const UNAUTHENTICATED: &str = "16";

    #[tokio::test]
    async fn right_token_passes() {
        let l = TokenLayer::new(Some("abc".into()));
        assert_eq!(
            status(&l, "/codefly.echo.v1.Echo/Echo", Some("abc")).await,
            None
        );
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_unauthenticated() {
        let l = TokenLayer::new(Some("abc".into()));
        for t in [None, Some("abd"), Some("ab"), Some("abcd"), Some("")] {
            assert_eq!(
                status(&l, "/codefly.echo.v1.Echo/Echo", t).await.as_deref(),
                Some(UNAUTHENTICATED),
                "token {t:?}"
            );
        }
    }

    #[tokio::test]
    async fn health_needs_no_token() {
        let l = TokenLayer::new(Some("abc".into()));
        assert_eq!(status(&l, "/grpc.health.v1.Health/Check", None).await, None);
        assert_eq!(status(&l, "/grpc.health.v1.Health/Watch", None).await, None);
        // A look-alike service name is not exempt.
        assert_eq!(
            status(&l, "/grpc.health.v1.HealthX/Check", None)
                .await
                .as_deref(),
            Some(UNAUTHENTICATED)
        );
    }

    #[tokio::test]
    async fn no_token_enforces_nothing() {
        for l in [TokenLayer::new(None), TokenLayer::new(Some(String::new()))] {
            assert!(!l.is_enforcing());
            assert_eq!(status(&l, "/codefly.echo.v1.Echo/Echo", None).await, None);
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let l = TokenLayer::new(Some("topsecret".into()));
        assert!(!format!("{l:?}").contains("topsecret"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
