//! The origin and the way to it: a pooled HTTP/1.1 client bounded by the timeouts a reverse
//! proxy has, each failure answered as a gateway answers it.

use std::future::Future;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, capture_connection};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::answer::{ProxyBody, answer};
use super::body::{IdleTimeout, SentNotice, Stalled};
use super::hop::strip_hop_by_hop;
use super::hosts::{Forwarding, VIA_NAME, appended, protocol};

/// Where requests go: the origin's scheme and authority.
#[derive(Clone, Debug)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl std::str::FromStr for Origin {
    type Err = String;

    /// An absolute plain-HTTP URI such as `http://127.0.0.1:8000` (a path is ignored).
    fn from_str(origin: &str) -> Result<Self, String> {
        let uri: Uri = origin
            .parse()
            .map_err(|err| format!("{origin:?} is not a URI: {err}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err("the origin must be absolute, as http://host:port".to_owned());
        };
        if scheme != Scheme::HTTP {
            return Err("this example forwards over plain HTTP only".to_owned());
        }
        Ok(Self { scheme, authority })
    }
}

impl Origin {
    /// The origin's authority, as `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// How long the proxy waits on the origin, and on a client's upload. Defaults to nginx's
/// 60 s for each side of the origin, and to the examples' 10 s for a client's body.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To open a connection (`ORIGIN_CONNECT_TIMEOUT_SECS`, nginx's `proxy_connect_timeout`).
    pub connect: Duration,
    /// Between two pieces of a request body the origin takes, while the proxy has the next
    /// one ready (`ORIGIN_SEND_TIMEOUT_SECS`, nginx's `proxy_send_timeout`): an origin that
    /// stops reading an upload is answered for as one that does not answer.
    pub send: Duration,
    /// For the response header, counted from the moment the origin has the whole request
    /// (`ORIGIN_READ_TIMEOUT_SECS`, nginx's `proxy_read_timeout` before the first byte).
    pub read: Duration,
    /// Between two pieces of the response body, and of a WebSocket tunnel either way
    /// (`ORIGIN_BODY_IDLE_TIMEOUT_SECS`, nginx's `proxy_read_timeout` between reads).
    pub body_idle: Duration,
    /// Between two pieces of a client's request body on its way to the origin.
    pub client_body_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(60),
            send: Duration::from_secs(60),
            read: Duration::from_secs(60),
            body_idle: Duration::from_secs(60),
            client_body_idle: Duration::from_secs(10),
        }
    }
}

/// Why the origin gave no response.
#[derive(Debug)]
pub enum Failure {
    /// No connection within the connect timeout.
    ConnectTimeout(Duration),
    /// The origin took no piece of the request body within the send timeout.
    SendTimeout(Duration),
    /// No response header within the read timeout.
    ReadTimeout(Duration),
    /// The client's body stalled on its way to the origin.
    UploadStalled,
    /// The request's target makes no URI on the origin.
    Unroutable,
    /// Anything else: refused, reset, closed, an unreadable answer.
    Unreachable(hyper_util::client::legacy::Error),
}

impl Failure {
    fn from_client(err: hyper_util::client::legacy::Error, timeouts: &Timeouts) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(cause) = source {
            if cause.downcast_ref::<Stalled>().is_some() {
                return Self::UploadStalled;
            }
            if err.is_connect()
                && cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return Self::ConnectTimeout(timeouts.connect);
            }
            source = cause.source();
        }
        Self::Unreachable(err)
    }

    /// The answer a gateway gives for it: `504` for a timeout, `408` for a stalled upload,
    /// `502` for the rest. A `504` goes through the cache, which serves a stale copy in its
    /// place where the stored response's `stale-if-error` allows.
    pub fn answer(&self) -> Response<ProxyBody> {
        match self {
            Self::ConnectTimeout(limit) => answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("The origin did not accept a connection within {limit:?}."),
            ),
            Self::SendTimeout(limit) => answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("The origin took none of the request for {limit:?}."),
            ),
            Self::ReadTimeout(limit) => answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("The origin did not answer within {limit:?}."),
            ),
            Self::UploadStalled => answer(
                StatusCode::REQUEST_TIMEOUT,
                "The request body stalled on its way to the origin.",
            ),
            Self::Unroutable => answer(
                StatusCode::BAD_REQUEST,
                "The request target cannot be forwarded.",
            ),
            Self::Unreachable(err) => {
                tracing::warn!(error = %err, "origin request failed");
                answer(StatusCode::BAD_GATEWAY, "The origin did not answer.")
            }
        }
    }
}

/// The body of requests on their way to the origin.
type UpstreamBody = SentNotice<IdleTimeout<Incoming>>;

/// The client that reaches the origin.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
    origin: Origin,
    timeouts: Timeouts,
}

impl Upstream {
    pub fn new(origin: Origin, timeouts: Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        // a connection the origin left idle longer than it keeps one is not reused
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            origin,
            timeouts,
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Sends `request` (origin-form, hop-by-hop fields stripped, its [`Forwarding`] in the
    /// extensions) to the origin: the response head within the timeouts, or why not.
    pub fn send(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Incoming>, Failure>> + Send + 'static {
        let (client, origin, timeouts) = (self.client.clone(), self.origin.clone(), self.timeouts);
        async move {
            let (mut parts, body) = request.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            // a target that makes no URI on the origin is the client's to fix
            parts.uri = Uri::builder()
                .scheme(origin.scheme)
                .authority(origin.authority)
                .path_and_query(path)
                .build()
                .map_err(|_| Failure::Unroutable)?;
            if let Some(forwarding) = parts.extensions.get::<Forwarding>() {
                forwarding.write(&mut parts.headers);
            }
            let (body, sent, progress) =
                SentNotice::new(IdleTimeout::new(body, timeouts.client_body_idle, "client"));
            let mut request = Request::from_parts(parts, body);
            let mut connection = capture_connection(&mut request);
            let response = client.request(request);
            // once the origin has a connection, the send timeout runs until it has the whole
            // request, and then the read timeout
            let origin_times_out = async move {
                connection.wait_for_connection_metadata().await;
                progress.reset();
                let mut sent = std::pin::pin!(sent);
                loop {
                    let stalls_at = progress.stalls_at(timeouts.send);
                    let check_again = stalls_at.unwrap_or_else(|| Instant::now() + timeouts.send);
                    tokio::select! {
                        _ = &mut sent => break,
                        () = tokio::time::sleep_until(check_again) => {
                            if progress
                                .stalls_at(timeouts.send)
                                .is_some_and(|at| at <= Instant::now())
                            {
                                return Failure::SendTimeout(timeouts.send);
                            }
                        }
                    }
                }
                tokio::time::sleep(timeouts.read).await;
                Failure::ReadTimeout(timeouts.read)
            };
            tokio::select! {
                biased;
                response = response => {
                    response.map_err(|err| Failure::from_client(err, &timeouts))
                }
                failure = origin_times_out => Err(failure),
            }
        }
    }

    /// Sends `request` on to the origin and readies its answer for the client: hop-by-hop
    /// fields stripped, `Via` added, the body bounded by the idle timeout.
    pub fn forward(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        let sending = self.send(request);
        let body_idle = self.timeouts.body_idle;
        async move {
            match sending.await {
                Ok(response) => finish(response, body_idle),
                Err(failure) => failure.answer(),
            }
        }
    }

    /// The origin's `response` as the client gets it.
    pub fn finish(&self, response: Response<Incoming>) -> Response<ProxyBody> {
        finish(response, self.timeouts.body_idle)
    }
}

/// The origin's `response` as the client gets it: hop-by-hop fields stripped, `Via` added,
/// the body failing once it stalls for `body_idle`.
fn finish(response: Response<Incoming>, body_idle: Duration) -> Response<ProxyBody> {
    // RFC 9110 §15.2.2: a 101 answers a request that asked for an upgrade, and this path
    // carries none (the WebSocket one is the tunnel's): passed on, it would end the client's
    // connection with its pipelined requests
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        tracing::warn!("the origin switched protocols for a request that asked for no upgrade");
        return answer(
            StatusCode::BAD_GATEWAY,
            "The origin switched protocols unasked.",
        );
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let via = appended(
        &parts.headers,
        header::VIA.as_str(),
        &format!("{} {VIA_NAME}", protocol(parts.version)),
    );
    parts.headers.insert(header::VIA, via);
    // the origin's HTTP version is its own hop's; this hop answers in its own
    parts.version = http::Version::HTTP_11;
    let body = IdleTimeout::new(body, body_idle, "origin").boxed();
    Response::from_parts(parts, body)
}
