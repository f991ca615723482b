//! All three layers through a failover, behind Sentinel and on a Redis Cluster: the master
//! is killed while requests run;
//! every request is answered within its bound by the layers' failure policies, the layers
//! serve normally again soon after the promotion, and what was done before the failover
//! (a send flag's exclusivity, a revoke-all, a cache invalidation) still holds after it.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{TokenAuthLayer, TokenKeys, Tokens};
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{AnyStore, RatePolicy, RedisStore, Store};

use support::{TestCluster, TestSentinels};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

type App = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Bytes>, Infallible>;

/// What the request got, and how long it took.
async fn get(app: &App, token: &str) -> (StatusCode, Bytes, Duration) {
    let request = Request::get("http://shop.example/page")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.unwrap();
    (response.status(), response.into_body(), started.elapsed())
}

/// A deployment whose master can be killed: Sentinel's master, or the cluster master that
/// serves the first token.
trait Failover {
    /// Waits until the replicas have every write so far.
    fn replicate(&self) -> bool;
    fn kill_master(&mut self);
    /// Whether a replica has taken the killed master's place.
    fn promoted(&self) -> bool;
}

struct SentinelFailover(TestSentinels);

impl Failover for SentinelFailover {
    fn replicate(&self) -> bool {
        self.0.master.replicas_caught_up()
    }

    fn kill_master(&mut self) {
        self.0.master.kill();
    }

    fn promoted(&self) -> bool {
        self.0.master_port() == Some(self.0.replica.port())
    }
}

struct ClusterFailover {
    cluster: TestCluster,
    /// The key whose master is killed.
    key: String,
    killed: Option<usize>,
}

impl Failover for ClusterFailover {
    fn replicate(&self) -> bool {
        self.cluster
            .masters()
            .iter()
            .all(|master| master.replicas_caught_up())
    }

    fn kill_master(&mut self) {
        let master = self.cluster.master_of(&self.key);
        self.cluster.nodes[master].kill();
        self.killed = Some(master);
    }

    fn promoted(&self) -> bool {
        self.cluster
            .serving_master_of(&self.key)
            .is_some_and(|master| Some(master) != self.killed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_layers_ride_out_a_sentinel_failover() {
    let topology = TestSentinels::start();
    assert!(
        topology.wait_until_ready(Duration::from_secs(30)),
        "the sentinels never saw the replica and each other"
    );
    let timeout = Duration::from_millis(500);
    let store: AnyStore = RedisStore::sentinel(topology.addresses(), TestSentinels::SERVICE)
        .command_timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .await
        .unwrap()
        .into();
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let token = tokens.issue(&User { id: 1 }).await.unwrap();
    ride_out(SentinelFailover(topology), store, tokens, token, timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_layers_ride_out_a_cluster_failover() {
    let cluster = TestCluster::start();
    let timeout = Duration::from_millis(500);
    let store: AnyStore = RedisStore::cluster(cluster.seeds())
        .command_timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .await
        .unwrap()
        .into();
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let token = tokens.issue(&User { id: 1 }).await.unwrap();
    // the master of the token's key goes: auth, which fails closed, has to wait for the
    // promotion
    let key = format!(":1:{}", TokenKeys::new().key(&token));
    let failover = ClusterFailover {
        cluster,
        key,
        killed: None,
    };
    ride_out(failover, store, tokens, token, timeout).await;
}

async fn ride_out(
    mut topology: impl Failover,
    store: AnyStore,
    tokens: Tokens<User>,
    token: String,
    timeout: Duration,
) {
    let second = tokens.issue(&User { id: 1 }).await.unwrap();

    let cache = ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(600))
        .build()
        .unwrap();
    let invalidator = cache.invalidator();
    let versions = Arc::new(AtomicUsize::new(0));
    let version = Arc::clone(&versions);
    let app: App = BoxCloneSyncService::new(
        ServiceBuilder::new()
            // the body collected, so that the app answers `Response<Bytes>`
            .map_future(|future| async move {
                let response: Response<_> = future.await?;
                let (parts, body) = response.into_parts();
                let body = BodyExt::collect(body).await.unwrap().to_bytes();
                Ok::<_, Infallible>(Response::from_parts(parts, body))
            })
            .layer(
                TokenAuthLayer::<User>::bearer(store.clone())
                    .build()
                    .unwrap(),
            )
            .layer(
                RateLimitLayer::builder(store.clone())
                    .rule(Rule::fixed_window("pages", "1000000/m", Key::global()))
                    .build()
                    .unwrap(),
            )
            .layer(cache)
            .service_fn(move |_request: Request<Empty<Bytes>>| {
                let n = version.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    // shared with every authenticated user: stored though the request
                    // carries Authorization (RFC 9111 §3.5)
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CACHE_CONTROL, "public, max-age=600")
                            .body(Full::new(Bytes::from(format!("v{n}"))))
                            .unwrap(),
                    )
                }
            }),
    );

    // before: stored and hit, then invalidated and stored again (a store on Redis lands
    // from a task of its own, just after the response)
    let stored = Duration::from_millis(300);
    let first = get(&app, &token).await.1;
    tokio::time::sleep(stored).await;
    assert_eq!(get(&app, &token).await.1, first, "a hit");
    invalidator.invalidate_all().await.unwrap();
    let second_version = get(&app, &token).await.1;
    assert_ne!(second_version, first);
    tokio::time::sleep(stored).await;
    assert_eq!(get(&app, &token).await.1, second_version, "a hit");
    // the replica has everything written so far before the master goes
    assert!(support::eventually(Duration::from_secs(5), || async { topology.replicate() }).await);

    topology.kill_master();
    let killed = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (app, token, first) = (app.clone(), token.clone(), first.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                loop {
                    let (status, body, took) = get(&app, &token).await;
                    slowest = slowest.max(took);
                    assert!(
                        status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                        "during the failover: {status}"
                    );
                    assert_ne!(body, first, "an invalidated entry was served");
                    if status == StatusCode::OK {
                        return (slowest, killed.elapsed());
                    }
                    assert!(
                        killed.elapsed() < Duration::from_secs(20),
                        "never served again"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    let mut promoted = None;
    while killed.elapsed() < Duration::from_secs(20) {
        if topology.promoted() {
            promoted = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = promoted.expect("the sentinels promoted the replica");
    for client in clients {
        let (slowest, served) = client.await.unwrap();
        // auth, the rate limit and the cache each make at most one bounded call before
        // the failure policy answers; a connect is bounded by the same timeout
        assert!(
            slowest < 4 * timeout + Duration::from_secs(1),
            "a request took {slowest:?}"
        );
        assert!(
            served < promoted + Duration::from_secs(5),
            "served again {served:?} after the kill, promoted at {promoted:?}"
        );
    }

    // after: the invalidation held, a send flag admits one of 100, revoke-all revokes all
    let (status, body, _) = get(&app, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        body, first,
        "the cache namespace went back to before its invalidation"
    );
    let flag = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let hits: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.rate_limit("sms_13800138000", &flag).await })
        })
        .collect();
    let mut admitted = 0;
    for hit in hits {
        admitted += usize::from(hit.await.unwrap().unwrap().allowed);
    }
    assert_eq!(admitted, 1);
    assert_eq!(tokens.revoke_all("1").await.unwrap(), 2);
    for token in [&token, &second] {
        assert_eq!(get(&app, token).await.0, StatusCode::UNAUTHORIZED);
    }
}
