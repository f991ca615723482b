//! The response future, and the verdict on a request once its token's lookup answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::config::Config;
use super::{AuthErrorKind, Authenticated, RejectionResponse, Token, rejection};
use crate::body::ResponseBody;
use crate::gate::{Check, Gate, Gatekeeper, Verdict};
use crate::principal::Credentialed;
use crate::store::{StoreError, value};

/// What a token's lookup answers.
pub(crate) type Lookup = Result<Option<Bytes>, StoreError>;

/// What the layer keeps while the token is looked up: enough to decide once it is.
pub(crate) struct TokenCheck<P, R> {
    pub(crate) config: Arc<Config<P>>,
    pub(crate) rejection: R,
    pub(crate) token: Token,
    /// The token's store key (empty when it could not be made; the lookup then fails).
    pub(crate) key: String,
}

impl<P, R> Gatekeeper for TokenCheck<P, R>
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: RejectionResponse,
{
    type Checked = Lookup;
    type Pass = Credentialed;

    fn decide<B>(&self, found: Lookup, request: &mut Request<B>) -> Verdict<Credentialed> {
        self.config.verdict(
            found,
            &self.key,
            self.token.clone(),
            &self.rejection,
            request,
        )
    }

    /// Marks the response to a request let through on a token, for a cache outside this
    /// layer (see [`Credentialed`]).
    fn finish<ResBody, E>(mark: Credentialed, answer: &mut Result<Response<ResBody>, E>) {
        if let Ok(response) = answer {
            response.extensions_mut().insert(mark);
        }
    }
}

pin_project! {
    /// The response future of [`TokenAuth`](super::TokenAuth).
    ///
    /// # Example
    ///
    /// ```
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    /// use tower_redis_http::auth::{ResponseFuture, TokenAuthLayer};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut service = ServiceBuilder::new()
    ///     .layer(TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?)
    ///     .service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
    ///     });
    /// let ready = service.ready().await?;
    /// let future: ResponseFuture<_, _, _, _> = ready.call(http::Request::new(String::new()));
    /// assert_eq!(future.await?.status(), 401);
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<S, ReqBody, P, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        gate: Gate<S, ReqBody, TokenCheck<P, R>, Lookup, Credentialed>,
    }
}

impl<S, ReqBody, P, R> ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn new(gate: Gate<S, ReqBody, TokenCheck<P, R>, Lookup, Credentialed>) -> Self {
        Self { gate }
    }

    /// A request that waits for its token's lookup.
    pub(crate) fn lookup(
        check: Check<Lookup>,
        inner: S,
        request: Request<ReqBody>,
        keeper: TokenCheck<P, R>,
        span: tracing::Span,
    ) -> Self {
        Self::new(Gate::checking(check, inner, request, keeper, span))
    }
}

impl<S, ReqBody, P, R> std::fmt::Debug for ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.gate.state())
            .finish()
    }
}

impl<P> Config<P>
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Where a request goes once its token was looked up: on, with the principal in its
    /// extensions, or back with a rejection.
    pub(crate) fn verdict<B, R: RejectionResponse>(
        &self,
        found: Lookup,
        key: &str,
        token: Token,
        rejection: &R,
        request: &mut Request<B>,
    ) -> Verdict<Credentialed> {
        match self.principal(found, key) {
            Ok(principal) => {
                let extensions = request.extensions_mut();
                extensions.insert(Authenticated::new(principal, token));
                extensions.insert(self.credentialed.clone());
                Verdict::Call(self.credentialed.clone())
            }
            Err(kind) => Verdict::Answer(rejection::respond(rejection, &self.error(kind))),
        }
    }
}

impl<P: DeserializeOwned + Clone> Config<P> {
    /// The principal for a lookup's outcome, or why there is none.
    fn principal(
        &self,
        found: Result<Option<Bytes>, StoreError>,
        key: &str,
    ) -> Result<P, AuthErrorKind> {
        let stored = match found {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                crate::observe::auth("invalid");
                return Err(AuthErrorKind::InvalidToken);
            }
            Err(err) => {
                crate::observe::auth("store_error");
                if self.on_store_error.handle("auth", &err) {
                    return Err(AuthErrorKind::InvalidToken);
                }
                return Err(AuthErrorKind::StoreUnavailable);
            }
        };
        let principal = self.decoded.get_or_decode(key, &stored, value::decode::<P>).map_err(|err| {
            crate::observe::auth("invalid");
            tracing::warn!(layer = "auth", error = %crate::failure::ErrorChain(&err), "stored principal does not decode; treating the token as unknown");
            AuthErrorKind::InvalidToken
        })?;
        if let Some(validate) = &self.validate {
            validate(&principal).map_err(|why| {
                crate::observe::auth("rejected");
                AuthErrorKind::PrincipalRejected(why)
            })?;
        }
        crate::observe::auth("authenticated");
        Ok(principal)
    }
}

impl<S, ReqBody, ResBody, P, R> Future for ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: RejectionResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().gate.poll(cx)
    }
}
