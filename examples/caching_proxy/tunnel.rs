//! What is not a request for a representation: WebSocket upgrades, tunnelled both ways past
//! the cache, and `CONNECT`, refused.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{ProxyBody, answer};
use super::hop::strip_hop_by_hop;
use super::hosts::{VIA_NAME, appended};
use super::origin::Upstream;

/// `CONNECT` asks a forward proxy for a tunnel to any host; this is a reverse proxy for one
/// origin, so it answers `501 Not Implemented` (RFC 9110 §9.3.6 lets a server refuse it), never
/// from the cache and never passed on.
pub fn refuse_connect() -> Response<ProxyBody> {
    answer(
        StatusCode::NOT_IMPLEMENTED,
        "CONNECT is not supported: this is a reverse proxy for one origin.",
    )
}

/// A WebSocket handshake past the cap on open tunnels (`MAX_TUNNELS`): `503`, to be tried
/// again shortly, rather than one more pair of sockets held open.
pub fn refuse_over_cap() -> Response<ProxyBody> {
    let mut response = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many WebSocket connections are open; try again shortly.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A WebSocket handshake (see [`asks_for_websocket`](super::hop::asks_for_websocket)),
/// stripped of its hop-by-hop fields, sent on to the origin with `Connection: upgrade` and
/// `Upgrade: websocket`, past the cache. When the origin switches protocols, the client gets
/// its `101` and a task splices the two connections until either side closes or both fall
/// silent for the body idle timeout; any other answer is passed on as it is, never stored.
/// `room` is the tunnel's place under the cap, held until it closes.
pub async fn websocket(
    upstream: Upstream,
    mut request: Request<Incoming>,
    room: OwnedSemaphorePermit,
) -> Response<ProxyBody> {
    let client_side = hyper::upgrade::on(&mut request);
    let headers = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut response = match upstream.send(request).await {
        Ok(response) => response,
        Err(failure) => return failure.answer(),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return upstream.finish(response);
    }
    let switched_to_websocket = response
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    if !switched_to_websocket {
        return answer(
            StatusCode::BAD_GATEWAY,
            "The origin switched to another protocol than WebSocket.",
        );
    }
    let origin_side = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let via = appended(
        &parts.headers,
        header::VIA.as_str(),
        &format!("1.1 {VIA_NAME}"),
    );
    parts.headers.insert(header::VIA, via);
    parts.version = http::Version::HTTP_11;
    let idle = upstream.timeouts().body_idle;
    tokio::spawn(async move {
        let _room = room;
        match tokio::join!(client_side, origin_side) {
            (Ok(client), Ok(origin)) => {
                splice(TokioIo::new(client), TokioIo::new(origin), idle).await;
            }
            (client, origin) => tracing::debug!(
                client = client.is_ok(),
                origin = origin.is_ok(),
                "a WebSocket upgrade did not complete"
            ),
        }
    });
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    Response::from_parts(parts, body)
}

/// Copies bytes both ways between `client` and `origin` until both have closed, one fails,
/// or nothing moved either way for `idle`. A side that closes its writing half is passed on
/// as a half close, and the other way goes on.
async fn splice<C, O>(client: C, origin: O, idle: Duration)
where
    C: AsyncRead + AsyncWrite,
    O: AsyncRead + AsyncWrite,
{
    let (mut client_reads, mut client_writes) = tokio::io::split(client);
    let (mut origin_reads, mut origin_writes) = tokio::io::split(origin);
    let (mut up, mut down) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    let (mut client_open, mut origin_open) = (true, true);
    while client_open || origin_open {
        let moved = tokio::select! {
            read = client_reads.read(&mut up), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    tokio::time::timeout(idle, origin_writes.shutdown()).await.is_ok()
                }
                Ok(n) => matches!(
                    tokio::time::timeout(idle, origin_writes.write_all(&up[..n])).await,
                    Ok(Ok(()))
                ),
            },
            read = origin_reads.read(&mut down), if origin_open => match read {
                Ok(0) | Err(_) => {
                    origin_open = false;
                    tokio::time::timeout(idle, client_writes.shutdown()).await.is_ok()
                }
                Ok(n) => matches!(
                    tokio::time::timeout(idle, client_writes.write_all(&down[..n])).await,
                    Ok(Ok(()))
                ),
            },
            () = tokio::time::sleep(idle) => {
                tracing::debug!(?idle, "a WebSocket tunnel fell silent; closing it");
                false
            }
        };
        if !moved {
            break;
        }
    }
}
