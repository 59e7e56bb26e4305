//! The token check: a tower layer in front of every service of the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::{INSECURE_ENV, TOKEN_ENV, TOKEN_METADATA_KEY};

/// Path prefix of the health service, the one service reachable without the token
/// (the host polls it before it has a reason to trust the agent, and probes such as
/// `grpc_health_probe` carry no token).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// What the layer lets through.
#[derive(Clone)]
pub(crate) enum Policy {
    /// Calls must carry this token (health excepted).
    Token(Arc<[u8]>),
    /// Started without a token: every call but health is refused (fail closed).
    RefuseAll,
    /// `CODEFLY_AGENT_INSECURE=1` and no token: everything goes through.
    Insecure,
}

impl Policy {
    /// From `CODEFLY_AGENT_TOKEN` (set and not empty) or, without it,
    /// `CODEFLY_AGENT_INSECURE=1`.
    pub(crate) fn from_env() -> Self {
        match std::env::var_os(TOKEN_ENV) {
            Some(t) if !t.is_empty() => Self::token(t.to_string_lossy().into_owned()),
            _ if std::env::var_os(INSECURE_ENV).is_some_and(|v| v == "1") => Self::Insecure,
            _ => Self::RefuseAll,
        }
    }

    fn token(token: String) -> Self {
        Self::Token(Arc::from(token.into_bytes().into_boxed_slice()))
    }

    /// Whether `given` (the call's `x-codefly-token`, if any) is the token.
    pub(crate) fn authenticates(&self, given: Option<&[u8]>) -> bool {
        match self {
            Self::Token(expected) => given.is_some_and(|g| constant_time_eq(g, expected)),
            Self::RefuseAll | Self::Insecure => false,
        }
    }
}

/// A [`Layer`] that rejects every request but `grpc.health.v1.Health` calls
/// with `Unauthenticated` unless it carries the right `x-codefly-token` metadata.
///
/// It fails closed: without a token (`CODEFLY_AGENT_TOKEN` unset or empty)
/// every call but health is refused, unless the layer is [`insecure`](Self::insecure)
/// (`CODEFLY_AGENT_INSECURE=1`, for running an agent by hand).
/// [`server`](crate::server) installs it as the outermost layer, so it covers every
/// service added to the router.
///
/// ```
/// use agent_serve::TokenLayer;
/// let layer = TokenLayer::new(Some("s3cret".to_owned()));
/// assert!(layer.is_enforcing());
/// // No token: nothing but health gets through.
/// assert!(TokenLayer::new(None).is_enforcing());
/// assert!(!TokenLayer::insecure().is_enforcing());
/// ```
#[derive(Clone)]
pub struct TokenLayer {
    policy: Policy,
}

impl std::fmt::Debug for TokenLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        let mode = match self.policy {
            Policy::Token(_) => "token",
            Policy::RefuseAll => "refuse-all",
            Policy::Insecure => "insecure",
        };
        f.debug_struct("TokenLayer").field("mode", &mode).finish()
    }
}

impl TokenLayer {
    /// A layer that enforces `token`; `None` or an empty token refuses every
    /// call but health.
    #[must_use]
    pub fn new(token: Option<String>) -> Self {
        let policy = match token {
            Some(t) if !t.is_empty() => Policy::token(t),
            _ => Policy::RefuseAll,
        };
        Self { policy }
    }

    /// A layer that lets every call through (what `CODEFLY_AGENT_INSECURE=1`
    /// asks for when there is no token).
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            policy: Policy::Insecure,
        }
    }

    /// The layer the environment asks for: enforcing `CODEFLY_AGENT_TOKEN` when
    /// it is set and not empty; otherwise open if `CODEFLY_AGENT_INSECURE=1`,
    /// else refusing every call but health.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            policy: Policy::from_env(),
        }
    }

    /// Whether calls other than health are checked at all (false only when insecure).
    #[must_use]
    pub fn is_enforcing(&self) -> bool {
        !matches!(self.policy, Policy::Insecure)
    }
}

impl<S> Layer<S> for TokenLayer {
    type Service = TokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`TokenLayer`].
#[derive(Clone)]
pub struct TokenService<S> {
    inner: S,
    policy: Policy,
}

impl<S> std::fmt::Debug for TokenService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("enforcing", &!matches!(self.policy, Policy::Insecure))
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
        if !matches!(self.policy, Policy::Insecure) && !req.uri().path().starts_with(HEALTH_PREFIX)
        {
            let given = req
                .headers()
                .get(TOKEN_METADATA_KEY)
                .map(http::HeaderValue::as_bytes);
            if !self.policy.authenticates(given) {
                let message = match (&self.policy, given) {
                    (Policy::RefuseAll, _) => {
                        "this agent was started without CODEFLY_AGENT_TOKEN and serves \
                         nothing but health (set CODEFLY_AGENT_INSECURE=1 to run it open)"
                    }
                    (_, Some(_)) => "invalid x-codefly-token",
                    (_, None) => "missing x-codefly-token",
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
    async fn no_token_refuses_all_but_health() {
        for l in [TokenLayer::new(None), TokenLayer::new(Some(String::new()))] {
            assert!(l.is_enforcing());
            for t in [None, Some(""), Some("abc")] {
                assert_eq!(
                    status(&l, "/codefly.echo.v1.Echo/Echo", t).await.as_deref(),
                    Some(UNAUTHENTICATED),
                    "token {t:?}"
                );
            }
            assert_eq!(status(&l, "/grpc.health.v1.Health/Check", None).await, None);
        }
    }

    #[tokio::test]
    async fn insecure_lets_everything_through() {
        let l = TokenLayer::insecure();
        assert!(!l.is_enforcing());
        assert_eq!(status(&l, "/codefly.echo.v1.Echo/Echo", None).await, None);
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
