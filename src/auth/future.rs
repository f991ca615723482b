use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::layer::Config;
use super::service::into_body;
use super::{AuthErrorKind, Authenticated, PrincipalType, RejectionResponse, Token, rejection};
use crate::body::ResponseBody;
use crate::store::{StoreError, value};

type StoreCall = Pin<Box<dyn Future<Output = Result<Option<Bytes>, StoreError>> + Send>>;

/// A request waiting for its token's lookup.
pub(crate) struct Lookup<S, ReqBody, P, R> {
    pub(crate) store_call: StoreCall,
    pub(crate) inner: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) token: Token,
    pub(crate) config: Arc<Config<P>>,
    pub(crate) rejection: R,
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
        state: State<S, ReqBody, P, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, P, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Lookup { lookup: Option<Lookup<S, ReqBody, P, R>> },
        Inner { #[pin] future: S::Future },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody, P, R> ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn lookup(lookup: Lookup<S, ReqBody, P, R>) -> Self {
        Self {
            state: State::Lookup {
                lookup: Some(lookup),
            },
        }
    }
}

impl<S, ReqBody, P, R> ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: RejectionResponse,
{
    /// The future once the token was looked up: the inner service's call or a rejection.
    pub(crate) fn looked_up(
        found: Result<Option<Bytes>, StoreError>,
        inner: &mut S,
        request: Request<ReqBody>,
        token: Token,
        config: &Config<P>,
        rejection: &R,
    ) -> Self {
        Self {
            state: after_lookup(found, inner, request, token, config, rejection),
        }
    }
}

/// Where a request goes once its token was looked up.
fn after_lookup<S, ReqBody, P, R>(
    found: Result<Option<Bytes>, StoreError>,
    inner: &mut S,
    mut request: Request<ReqBody>,
    token: Token,
    config: &Config<P>,
    rejection: &R,
) -> State<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: RejectionResponse,
{
    match config.principal(found) {
        Ok(principal) => {
            let extensions = request.extensions_mut();
            extensions.insert(Authenticated::new(principal, token));
            extensions.insert(PrincipalType(std::any::type_name::<P>()));
            State::Inner {
                future: inner.call(request),
            }
        }
        Err(kind) => State::Rejected {
            response: Some(rejection::respond(rejection, &config.error(kind))),
        },
    }
}

impl<S, ReqBody, P, R> std::fmt::Debug for ResponseFuture<S, ReqBody, P, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Lookup { .. } => "Lookup",
            State::Inner { .. } => "Inner",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<P: DeserializeOwned> Config<P> {
    /// The principal for a lookup's outcome, or why there is none.
    fn principal(&self, found: Result<Option<Bytes>, StoreError>) -> Result<P, AuthErrorKind> {
        let stored = match found {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(AuthErrorKind::InvalidToken),
            Err(err) if self.on_store_error.handle("auth", &err) => {
                return Err(AuthErrorKind::InvalidToken);
            }
            Err(_) => return Err(AuthErrorKind::StoreUnavailable),
        };
        let principal = value::decode::<P>(&stored).map_err(|err| {
            tracing::warn!(layer = "auth", error = %crate::failure::ErrorChain(&err), "stored principal does not decode; treating the token as unknown");
            AuthErrorKind::InvalidToken
        })?;
        if let Some(validate) = &self.validate {
            validate(&principal).map_err(AuthErrorKind::PrincipalRejected)?;
        }
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
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Lookup { lookup } => {
                    let pending = lookup
                        .as_mut()
                        .expect("a lookup is polled until it moves on");
                    let found = ready!(pending.store_call.as_mut().poll(cx));
                    let Lookup {
                        mut inner,
                        request,
                        token,
                        config,
                        rejection,
                        ..
                    } = lookup.take().expect("checked just above");
                    state.set(after_lookup(
                        found, &mut inner, request, token, &config, &rejection,
                    ));
                }
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(into_body(response)));
                }
            }
        }
    }
}
