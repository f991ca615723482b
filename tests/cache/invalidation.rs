//! Invalidation: unsafe requests (RFC 9111 §4.4), one URL's every variant, a pattern, and the
//! whole namespace, on both stores.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use tower_redis_http::cache::{
    CacheInvalidator, ResponseCacheBuilder, ResponseCacheLayer, escape_pattern,
};
use tower_redis_http::store::{KeyScheme, Store};

use crate::support::{Backend, eventually};
use crate::{App, ReqBody, get, ok, req, send};

/// A cached app whose pages vary on Accept-Language, and which answers unsafe requests with
/// the status and Location the path asks for (`/status/201/location/...`).
fn site(builder: ResponseCacheBuilder) -> (App, CacheInvalidator) {
    let layer = builder.build().unwrap();
    let invalidator = layer.invalidator();
    let (app, _) = crate::app_with_layer(layer, |request: &Request<ReqBody>, run| {
        if request.method() == Method::GET {
            let mut response = ok(&format!("{} run {run}", request.uri().path()));
            response
                .headers_mut()
                .insert("vary", "accept-language".parse().unwrap());
            return response;
        }
        let path = request.uri().path();
        let mut response = ok("done");
        if let Some(rest) = path.strip_prefix("/status/") {
            let (code, location) = rest.split_once("/location").unwrap_or((rest, ""));
            *response.status_mut() = code.parse().unwrap();
            if !location.is_empty() {
                response
                    .headers_mut()
                    .insert("location", location.parse().unwrap());
            }
        }
        response
    });
    (app, invalidator)
}

fn page(path: &str, language: &str) -> Request<ReqBody> {
    req(get(path).header("accept-language", language))
}

/// Stores `path` in two languages and waits until both are hits.
async fn warm(app: &App, path: &str) {
    for language in ["en", "fr"] {
        let path = path.to_owned();
        crate::until_hit(app, move || page(&path, language)).await;
    }
}

async fn is_hit(app: &App, path: &str, language: &str) -> bool {
    send(app, page(path, language)).await.is_hit()
}

fn unsafe_request(method: Method, path: &str) -> Request<ReqBody> {
    req(get(path).method(method))
}

async fn unsafe_methods_invalidate_the_target_and_same_origin_location(backend: &Backend) {
    let store = backend.store();
    let (app, _) = site(ResponseCacheLayer::cache_page(
        store,
        Duration::from_secs(60),
    ));
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        warm(&app, "/articles/1").await;
        let reply = send(&app, unsafe_request(method.clone(), "/articles/1")).await;
        assert_eq!(reply.status, StatusCode::OK);
        // invalidated before the response came back: every variant is a miss at once
        assert!(!is_hit(&app, "/articles/1", "en").await, "{method}");
        assert!(!is_hit(&app, "/articles/1", "fr").await, "{method}");
    }
    // an error response invalidates nothing
    warm(&app, "/status/500").await;
    send(&app, unsafe_request(Method::POST, "/status/500")).await;
    assert!(is_hit(&app, "/status/500", "en").await);
    // a same-origin Location (relative or absolute) is invalidated, another origin's is not
    warm(&app, "/list").await;
    warm(&app, "/other").await;
    send(
        &app,
        unsafe_request(Method::POST, "/status/201/location/list"),
    )
    .await;
    assert!(!is_hit(&app, "/list", "en").await);
    warm(&app, "/list").await;
    send(
        &app,
        unsafe_request(Method::POST, "/status/303/locationhttp://shop.example/list"),
    )
    .await;
    assert!(!is_hit(&app, "/list", "fr").await);
    send(
        &app,
        unsafe_request(
            Method::POST,
            "/status/201/locationhttp://evil.example/other",
        ),
    )
    .await;
    assert!(is_hit(&app, "/other", "en").await);
}

async fn the_api_invalidates_a_url_a_pattern_or_everything(backend: &Backend) {
    let store = backend.store();
    let (app, invalidator) = site(ResponseCacheLayer::cache_page(
        store,
        Duration::from_secs(60),
    ));
    for path in ["/a/1", "/a/2", "/b/1"] {
        warm(&app, path).await;
    }
    // one URL, all of its variants
    let deleted = invalidator
        .invalidate_url("http://shop.example/a/1")
        .await
        .unwrap();
    assert!(deleted >= 2, "{deleted}");
    assert!(!is_hit(&app, "/a/1", "en").await);
    assert!(!is_hit(&app, "/a/1", "fr").await);
    assert!(is_hit(&app, "/a/2", "en").await);
    // a pattern
    warm(&app, "/a/1").await;
    let deleted = invalidator
        .invalidate_matching("http://shop.example/a/*")
        .await
        .unwrap();
    assert!(deleted >= 4, "{deleted}");
    for path in ["/a/1", "/a/2"] {
        assert!(!is_hit(&app, path, "fr").await, "{path}");
    }
    assert!(is_hit(&app, "/b/1", "fr").await);
    // glob characters in a pattern other than * and ? are literal
    assert_eq!(
        invalidator
            .invalidate_matching("http://shop.example/[b]/*")
            .await
            .unwrap(),
        0
    );
    assert!(is_hit(&app, "/b/1", "en").await);
    // everything
    warm(&app, "/a/2").await;
    assert_eq!(invalidator.invalidate_all().await.unwrap(), 1);
    for path in ["/a/2", "/b/1"] {
        assert!(!is_hit(&app, path, "en").await, "{path}");
    }
    warm(&app, "/b/1").await;
    assert_eq!(invalidator.invalidate_all().await.unwrap(), 2);
    assert!(!is_hit(&app, "/b/1", "fr").await);
}

/// Patterns built from input do not widen (issue 35, finding 9): `?` in a pattern is any
/// one character, the query's own `?` included, and a slug with `*` in it matched every page.
/// `invalidate_prefix` reads its prefix literally; `escape_pattern` makes input literal inside
/// a pattern of one's own.
async fn a_purge_built_from_input_deletes_only_what_it_names(backend: &Backend) {
    let (app, invalidator) = site(ResponseCacheLayer::cache_page(
        backend.store(),
        Duration::from_secs(60),
    ));
    for path in [
        "/search?q=a",
        "/searchXq=b",
        "/sale/50*off/1",
        "/sale/50-and-more-off/1",
    ] {
        warm(&app, path).await;
    }
    invalidator
        .invalidate_prefix("http://shop.example/search?q=")
        .await
        .unwrap();
    assert!(!is_hit(&app, "/search?q=a", "en").await);
    assert!(
        is_hit(&app, "/searchXq=b", "en").await,
        "the prefix widened"
    );

    let slug = "50*off";
    let pattern = format!(
        "{}/*",
        escape_pattern(&format!("http://shop.example/sale/{slug}"))
    );
    invalidator.invalidate_matching(&pattern).await.unwrap();
    assert!(!is_hit(&app, "/sale/50*off/1", "en").await);
    assert!(
        is_hit(&app, "/sale/50-and-more-off/1", "en").await,
        "the slug's * widened the purge"
    );
}

/// Every spelling of a host is one entry, so one invalidation reaches them all (the
/// adversary's review of issue 35): `SHOP.Example`, `shop.example.`, `shop.example:80` and
/// `shop.example:0080` were entries of their own, still served after `invalidate_url` of the
/// page. `invalidate_prefix` brings its prefix to the keyed form too.
async fn every_spelling_of_a_host_is_invalidated_together(backend: &Backend) {
    let (app, invalidator) = site(ResponseCacheLayer::cache_page(
        backend.store(),
        Duration::from_secs(60),
    ));
    let spellings = [
        "shop.example",
        "SHOP.Example",
        "shop.example.",
        "shop.example:80",
        "shop.example:0080",
    ];
    let spelled = |host: &'static str, path: &'static str| {
        move || {
            req(Request::get(path)
                .header("host", host)
                .header("accept-language", "en"))
        }
    };
    for host in spellings {
        let hit = crate::until_hit(&app, spelled(host, "/page")).await;
        assert!(
            hit.body.contains("run 1"),
            "{host}: a separate entry: {}",
            hit.body
        );
    }
    invalidator
        .invalidate_url("http://shop.example/page")
        .await
        .unwrap();
    // the first spelling stores the page anew; no spelling gets the invalidated one
    for host in spellings {
        let reply = send(&app, spelled(host, "/page")()).await;
        assert!(
            !reply.body.contains("run 1"),
            "{host}: the invalidated page is still served"
        );
    }

    for path in ["/sales/a", "/sales/caf%C3%A9"] {
        crate::until_hit(&app, spelled("Shop.Example:80", path)).await;
    }
    invalidator
        .invalidate_prefix("HTTP://Shop.Example./sales/a")
        .await
        .unwrap();
    assert!(
        !send(&app, spelled("shop.example", "/sales/a")())
            .await
            .is_hit()
    );
    invalidator
        .invalidate_prefix("http://shop.example/sales/café")
        .await
        .unwrap();
    assert!(
        !send(&app, spelled("shop.example", "/sales/caf%C3%A9")())
            .await
            .is_hit()
    );
}

/// Glob characters in the store's own `KEY_PREFIX` match themselves (issue 36, finding 8):
/// `shop[eu]` deleted nothing of its own on Redis and `shope`'s pages instead, `sh?p` deleted
/// `shop`'s too, and `a\b` matched `ab`. Each prefix shares the database with its neighbour.
async fn glob_characters_in_the_stores_key_prefix_match_themselves(backend: &Backend) {
    for (prefix, neighbour) in [("shop[eu]", "shope"), ("sh?p", "shop"), ("a\\b", "ab")] {
        let scheme = |prefix: &str| {
            backend
                .store()
                .with_key_scheme(KeyScheme::django(prefix, 1))
        };
        let (app, invalidator) = site(ResponseCacheLayer::cache_page(
            scheme(prefix),
            Duration::from_secs(60),
        ));
        let (next_door, _) = site(ResponseCacheLayer::cache_page(
            scheme(neighbour),
            Duration::from_secs(60),
        ));
        warm(&app, "/p").await;
        warm(&next_door, "/p").await;
        invalidator
            .invalidate_matching("http://shop.example/*")
            .await
            .unwrap();
        assert!(
            !is_hit(&app, "/p", "en").await,
            "{prefix}: its own pages stayed"
        );
        assert!(
            is_hit(&next_door, "/p", "en").await,
            "{prefix}: {neighbour}'s pages went"
        );
    }
}

async fn a_namespace_bump_reaches_other_instances(backend: &Backend) {
    let store = backend.store();
    let (one, invalidator) = site(ResponseCacheLayer::cache_page(
        store.clone(),
        Duration::from_secs(60),
    ));
    let (two, _) = site(ResponseCacheLayer::cache_page(
        store,
        Duration::from_secs(60),
    ));
    warm(&one, "/shared").await;
    assert!(is_hit(&two, "/shared", "en").await);
    invalidator.invalidate_all().await.unwrap();
    // the other instance rereads the generation within about a second
    let two_missed = eventually(Duration::from_secs(10), || {
        let two = two.clone();
        async move { !is_hit(&two, "/shared", "en").await }
    })
    .await;
    assert!(two_missed);
}

crate::on_each_backend!(
    unsafe_methods_invalidate_the_target_and_same_origin_location,
    the_api_invalidates_a_url_a_pattern_or_everything,
    a_purge_built_from_input_deletes_only_what_it_names,
    every_spelling_of_a_host_is_invalidated_together,
    glob_characters_in_the_stores_key_prefix_match_themselves,
    a_namespace_bump_reaches_other_instances,
);

/// A namespace bump that only the master holds would be lost with it in a failover, and the
/// entries it invalidated would come back: the bump waits (Redis `WAIT`) until the replica has
/// it, and says so when the replica does not answer in time, within the command timeout.
#[tokio::test]
async fn a_namespace_bump_waits_for_the_replicas() {
    use tower_redis_http::store::{RedisStore, StoreErrorKind};

    use crate::support::TestRedis;

    let master = TestRedis::start();
    let port = master.port().to_string();
    let replica = TestRedis::start_with(&["--replicaof", "127.0.0.1", &port]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            replica
                .command(&["INFO", "replication"])
                .contains("master_link_status:up")
        })
        .await
    );
    let timeout = Duration::from_millis(500);
    let store = RedisStore::builder(master.url())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    let invalidator = ResponseCacheLayer::cache_page(store, Duration::from_secs(60))
        .build()
        .unwrap()
        .invalidator();
    assert_eq!(invalidator.invalidate_all().await.unwrap(), 1);
    // acknowledged means on the replica already, not soon
    let key = master.command(&["KEYS", "*generation*"]);
    assert_eq!(replica.command(&["GET", &key]), "1");

    replica.pause();
    let started = std::time::Instant::now();
    let err = invalidator.invalidate_all().await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < timeout + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    replica.resume();
    assert_eq!(invalidator.invalidate_all().await.unwrap(), 3);
}

/// Two instances on one Redis, the second with a near cache: what the first invalidates (one
/// URL, or the whole namespace) stops being served by the second within 50 ms, though the
/// second serves its hits from process memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_drops_what_another_instance_invalidates_within_50_ms() {
    use std::time::Instant;
    use tower_redis_http::store::RedisStore;

    let redis = crate::support::TestRedis::start();
    let plain = RedisStore::builder(redis.url()).build().await.unwrap();
    let near = crate::support::near_store(&redis).await;
    let (one, invalidator) = site(ResponseCacheLayer::cache_page(
        plain,
        Duration::from_secs(60),
    ));
    let (two, _) = site(ResponseCacheLayer::cache_page(
        near.clone(),
        Duration::from_secs(60),
    ));
    let missed_within = |path: &'static str| {
        let two = two.clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(1) {
                if !is_hit(&two, path, "en").await {
                    return started.elapsed();
                }
                tokio::task::yield_now().await;
            }
            started.elapsed()
        }
    };

    warm(&one, "/a").await;
    assert!(is_hit(&two, "/a", "en").await);
    let gets = crate::support::command_calls(&redis, "GET");
    for _ in 0..20 {
        assert!(is_hit(&two, "/a", "en").await);
    }
    assert_eq!(
        crate::support::command_calls(&redis, "GET"),
        gets,
        "the second instance's hits come from its near cache"
    );
    invalidator
        .invalidate_url("http://shop.example/a")
        .await
        .unwrap();
    let took = missed_within("/a").await;
    assert!(
        took < Duration::from_millis(50),
        "invalidated URL served for {took:?}"
    );

    warm(&one, "/b").await;
    assert!(is_hit(&two, "/b", "en").await);
    assert!(is_hit(&two, "/b", "en").await);
    invalidator.invalidate_all().await.unwrap();
    let took = missed_within("/b").await;
    assert!(
        took < Duration::from_millis(50),
        "bumped namespace served for {took:?}"
    );
}
