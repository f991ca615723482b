//! `Duration::MAX` (and other durations past any real use) at every public entry point that
//! takes one (issue 36, finding 4): each is refused at build with a `ConfigError` naming the
//! option, or saturated where it means "forever"; none panics, at build or on a call.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{TokenAuthLayer, Tokens};
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{
    AnyStore, Expiry, MAX_EXPIRY, MemoryStore, NearCache, RatePolicy, RedisStore, Store,
};

use crate::support::TestRedis;

const HUGE: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX / 2),
    Duration::from_secs(400 * 365 * 86_400),
];

async fn stores(redis: &TestRedis) -> Vec<AnyStore> {
    vec![
        MemoryStore::new().into(),
        RedisStore::builder(redis.url())
            .build()
            .await
            .unwrap()
            .into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_builders_refuse_timeouts_past_their_bound() {
    let redis = TestRedis::start();
    for huge in HUGE {
        let err = RedisStore::builder(redis.url())
            .command_timeout(huge)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("command_timeout"), "{err}");
        let err = RedisStore::builder(redis.url())
            .connect_timeout(huge)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connect_timeout"), "{err}");
        let err = RedisStore::builder(redis.url())
            .near_cache(NearCache::new().max_age(huge))
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_age"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_with_huge_expiries_answer_alike_on_both_stores() {
    let redis = TestRedis::start();
    for store in stores(&redis).await {
        for huge in HUGE {
            // "forever", as Django's timeout None
            store
                .set("k", Bytes::from_static(b"v"), Expiry::After(huge))
                .await
                .unwrap();
            assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
            assert!(store.get_and_refresh("k", huge).await.unwrap().is_some());
            store
                .set_many(&[("m", Bytes::from_static(b"v"), Expiry::After(huge))])
                .await
                .unwrap();
            // past the longest a store keeps a key: refused when the policy is made
            assert!(RatePolicy::cooldown(huge).is_err());
            assert!(RatePolicy::fixed_window(5, huge).is_err());
            assert!(RatePolicy::gcra(5, huge, 1).is_err());
        }
        // the longest allowed works on a call, on both stores
        for policy in [
            RatePolicy::cooldown(MAX_EXPIRY).unwrap(),
            RatePolicy::fixed_window(5, MAX_EXPIRY).unwrap(),
        ] {
            assert!(store.rate_limit("edge", &policy).await.unwrap().allowed);
            store.delete("edge").await.unwrap();
        }
    }
}

async fn answer(
    layer_service: impl tower::Service<
        Request<Empty<Bytes>>,
        Response = Response<impl http_body::Body<Data = Bytes, Error = impl std::fmt::Debug>>,
        Error = impl std::fmt::Debug,
    >,
) -> http::StatusCode {
    let response = layer_service
        .oneshot(
            Request::get("http://shop.example/p")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

fn handler(
    _request: Request<Empty<Bytes>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"page")))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_options_with_huge_durations_build_or_are_refused_and_never_panic() {
    let redis = TestRedis::start();
    for store in stores(&redis).await {
        for huge in HUGE {
            let builders = [
                ResponseCacheLayer::cache_page(store.clone(), huge),
                ResponseCacheLayer::cache_page(store.clone(), huge).patch_response_headers(true),
                ResponseCacheLayer::http_cache(store.clone()).single_flight(Some(huge)),
                ResponseCacheLayer::http_cache(store.clone()).single_flight_deadline(huge),
                ResponseCacheLayer::http_cache(store.clone()).stampede_lock(Some(huge)),
                ResponseCacheLayer::http_cache(store.clone()).hit_for_miss(huge),
                ResponseCacheLayer::http_cache(store.clone()).heuristic_freshness(huge),
                ResponseCacheLayer::http_cache(store.clone()).keep_stale(huge),
                ResponseCacheLayer::http_cache(store.clone()).max_ttl(huge),
            ];
            for builder in builders {
                let Ok(layer) = builder.build() else {
                    continue;
                };
                let service = ServiceBuilder::new().layer(layer).service_fn(handler);
                for _ in 0..2 {
                    answer(service.clone()).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_token_options_with_huge_durations_never_panic() {
    let redis = TestRedis::start();
    for store in stores(&redis).await {
        for huge in HUGE {
            let rules = [
                Rule::cooldown("c", huge, Key::client_ip()),
                Rule::fixed_window(
                    "w",
                    tower_redis_http::ratelimit::Rate::new(5, huge),
                    Key::client_ip(),
                ),
                Rule::gcra(
                    "g",
                    tower_redis_http::ratelimit::Rate::new(5, huge),
                    1,
                    Key::client_ip(),
                ),
            ];
            for rule in rules {
                let Ok(layer) = RateLimitLayer::builder(store.clone()).rule(rule).build() else {
                    continue;
                };
                let service = ServiceBuilder::new().layer(layer).service_fn(handler);
                answer(service).await;
            }
            let tokens = Tokens::new(store.clone(), |id: &u64| id.to_string()).ttl(huge);
            if let Ok(token) = tokens.issue(&1).await {
                assert!(store.get(&token).await.unwrap().is_some());
            }
            if let Ok(layer) = TokenAuthLayer::<u64>::bearer(store.clone())
                .sliding_expiration(huge)
                .build()
            {
                let service = ServiceBuilder::new().layer(layer).service_fn(handler);
                answer(service).await;
            }
        }
    }
}
