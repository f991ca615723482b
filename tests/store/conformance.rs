//! Behaviour every `Store` backend must share, written once and run against each backend by
//! `conformance_suite!` in `main.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;
use tower_redis_http::store::{Expiry, KeyScheme, RatePolicy, Store, StoreErrorKind, Ttl, value};

use crate::support::eventually;

const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn secs(n: u64) -> Expiry {
    Duration::from_secs(n).into()
}

/// Runs `task` on `n` tasks released together by a barrier, collecting their results.
async fn race<S, T, F, Fut>(store: &S, n: usize, task: F) -> Vec<T>
where
    S: Store,
    T: Send + 'static,
    F: Fn(S, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let task = Arc::new(task);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (store, barrier, task) = (store.clone(), Arc::clone(&barrier), Arc::clone(&task));
            tokio::spawn(async move {
                barrier.wait().await;
                task(store, i).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("task panicked"));
    }
    results
}

pub async fn get_of_missing_key_is_none<S: Store>(store: S) {
    assert_eq!(store.get("nothing-here").await.unwrap(), None);
}

pub async fn set_then_get_round_trips_any_bytes<S: Store>(store: S) {
    for (key, value) in [
        ("text", Bytes::from_static(b"hello")),
        ("empty", Bytes::new()),
        ("binary", Bytes::from_static(&[0, 255, 13, 10, 0])),
        ("unicode", bytes("验证码 123456")),
    ] {
        store.set(key, value.clone(), Expiry::Never).await.unwrap();
        assert_eq!(store.get(key).await.unwrap(), Some(value), "{key}");
    }
}

pub async fn set_replaces_value_and_expiry<S: Store>(store: S) {
    store.set("k", bytes("one"), secs(60)).await.unwrap();
    store.set("k", bytes("two"), Expiry::Never).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("two")));
    assert_eq!(store.ttl("k").await.unwrap(), Ttl::Persistent);
}

pub async fn value_with_ttl_expires<S: Store>(store: S) {
    store
        .set("short", bytes("v"), Duration::from_millis(150).into())
        .await
        .unwrap();
    match store.ttl("short").await.unwrap() {
        Ttl::Expires(left) => assert!(left <= Duration::from_millis(150), "{left:?}"),
        // a slow machine may already have passed the deadline
        Ttl::Missing => {}
        Ttl::Persistent => panic!("a value set with a TTL must not be persistent"),
    }
    let gone = eventually(EXPIRY_DEADLINE, || async {
        store.get("short").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "value outlived its TTL");
    assert_eq!(store.ttl("short").await.unwrap(), Ttl::Missing);
}

pub async fn default_expiry_is_the_store_timeout<S: Store>(store: S) {
    // Factories build stores with the default timeout: Django's 300 seconds.
    store.set("d", bytes("v"), Expiry::Default).await.unwrap();
    let left = store.ttl("d").await.unwrap().remaining().expect("expires");
    assert!(
        left > Duration::from_secs(290) && left <= Duration::from_secs(300),
        "{left:?}"
    );
}

pub async fn zero_expiry_deletes_and_stores_nothing<S: Store>(store: S) {
    store.set("z", bytes("v"), Expiry::Never).await.unwrap();
    store
        .set("z", bytes("w"), Duration::ZERO.into())
        .await
        .unwrap();
    assert_eq!(store.get("z").await.unwrap(), None);
    assert!(
        !store
            .set_if_absent("z", bytes("v"), Duration::ZERO.into())
            .await
            .unwrap()
    );
    assert_eq!(store.get("z").await.unwrap(), None);
}

pub async fn sub_millisecond_ttl_still_stores<S: Store>(store: S) {
    store
        .set("tiny", bytes("v"), Duration::from_micros(10).into())
        .await
        .unwrap();
    // rounded up to one millisecond rather than refused or kept forever
    let gone = eventually(EXPIRY_DEADLINE, || async {
        store.get("tiny").await.unwrap().is_none()
    })
    .await;
    assert!(gone);
}

pub async fn set_if_absent_refuses_an_existing_key<S: Store>(store: S) {
    assert!(
        store
            .set_if_absent("flag", bytes("1"), secs(60))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_if_absent("flag", bytes("2"), secs(60))
            .await
            .unwrap()
    );
    assert_eq!(store.get("flag").await.unwrap(), Some(bytes("1")));
}

pub async fn set_if_absent_has_exactly_one_winner_under_concurrency<S: Store>(store: S) {
    let results = race(&store, 64, |store, i| async move {
        let won = store
            .set_if_absent("send_flag_13800138000", bytes(&i.to_string()), secs(60))
            .await
            .unwrap();
        (i, won)
    })
    .await;
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, won)| *won)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.get("send_flag_13800138000").await.unwrap().unwrap();
    assert_eq!(stored, bytes(&winners[0].to_string()));
}

pub async fn set_if_absent_succeeds_again_after_expiry<S: Store>(store: S) {
    let ttl = Duration::from_millis(100).into();
    assert!(store.set_if_absent("again", bytes("1"), ttl).await.unwrap());
    let reopened = eventually(EXPIRY_DEADLINE, || async {
        store.set_if_absent("again", bytes("2"), ttl).await.unwrap()
    })
    .await;
    assert!(reopened);
}

pub async fn get_and_refresh_extends_the_ttl<S: Store>(store: S) {
    store.set("session", bytes("user"), secs(2)).await.unwrap();
    let value = store
        .get_and_refresh("session", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(value, Some(bytes("user")));
    let left = store.ttl("session").await.unwrap().remaining().unwrap();
    assert!(left > Duration::from_secs(3500), "{left:?}");
}

pub async fn get_and_refresh_of_missing_key_creates_nothing<S: Store>(store: S) {
    assert_eq!(
        store
            .get_and_refresh("ghost", Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.ttl("ghost").await.unwrap(), Ttl::Missing);
}

pub async fn get_and_refresh_makes_a_persistent_key_expire<S: Store>(store: S) {
    store.set("p", bytes("v"), Expiry::Never).await.unwrap();
    store
        .get_and_refresh("p", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(store.ttl("p").await.unwrap(), Ttl::Expires(_)));
}

pub async fn delete_reports_whether_the_key_existed<S: Store>(store: S) {
    store.set("gone", bytes("v"), Expiry::Never).await.unwrap();
    assert!(store.delete("gone").await.unwrap());
    assert!(!store.delete("gone").await.unwrap());
    assert_eq!(store.get("gone").await.unwrap(), None);
}

pub async fn increment_adds_and_keeps_the_ttl<S: Store>(store: S) {
    store.set("visits", bytes("41"), secs(60)).await.unwrap();
    assert_eq!(store.increment("visits", 1).await.unwrap(), Some(42));
    assert_eq!(store.increment("visits", -50).await.unwrap(), Some(-8));
    assert_eq!(store.get("visits").await.unwrap(), Some(bytes("-8")));
    assert!(matches!(
        store.ttl("visits").await.unwrap(),
        Ttl::Expires(_)
    ));
}

pub async fn increment_of_missing_key_is_none_and_creates_nothing<S: Store>(store: S) {
    assert_eq!(store.increment("absent", 1).await.unwrap(), None);
    assert_eq!(store.get("absent").await.unwrap(), None);
}

pub async fn increment_refuses_non_integers_and_overflow<S: Store>(store: S) {
    for text in ["abc", "1.5", "", " 1", "{\"n\":1}"] {
        store.set("bad", bytes(text), Expiry::Never).await.unwrap();
        let err = store.increment("bad", 1).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::InvalidValue, "{text:?}: {err}");
        assert_eq!(
            store.get("bad").await.unwrap(),
            Some(bytes(text)),
            "value kept"
        );
    }
    store
        .set("max", bytes(&i64::MAX.to_string()), Expiry::Never)
        .await
        .unwrap();
    let err = store.increment("max", 1).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::InvalidValue, "{err}");
}

pub async fn concurrent_increments_are_all_counted<S: Store>(store: S) {
    store
        .set("counter", bytes("0"), Expiry::Never)
        .await
        .unwrap();
    race(&store, 100, |store, _| async move {
        store.increment("counter", 1).await.unwrap();
    })
    .await;
    assert_eq!(store.get("counter").await.unwrap(), Some(bytes("100")));
}

pub async fn ttl_tells_missing_persistent_and_expiring_apart<S: Store>(store: S) {
    assert_eq!(store.ttl("t-missing").await.unwrap(), Ttl::Missing);
    store
        .set("t-forever", bytes("v"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.ttl("t-forever").await.unwrap(), Ttl::Persistent);
    store.set("t-minute", bytes("v"), secs(60)).await.unwrap();
    let left = store.ttl("t-minute").await.unwrap().remaining().unwrap();
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

pub async fn bump_version_moves_the_value_and_keeps_its_ttl<S: Store>(store: S) {
    store.set("page", bytes("v1 body"), secs(60)).await.unwrap();
    assert_eq!(store.bump_version("page", 1).await.unwrap(), Some(2));
    assert_eq!(store.get("page").await.unwrap(), None, "old version gone");
    let v2 = store.with_version(2);
    assert_eq!(v2.get("page").await.unwrap(), Some(bytes("v1 body")));
    assert!(matches!(v2.ttl("page").await.unwrap(), Ttl::Expires(_)));
    assert_eq!(store.bump_version("never-set", 1).await.unwrap(), None);
    assert_eq!(v2.bump_version("page", -1).await.unwrap(), Some(1));
    assert_eq!(store.get("page").await.unwrap(), Some(bytes("v1 body")));
}

pub async fn concurrent_version_bumps_move_the_value_once<S: Store>(store: S) {
    store.set("hot", bytes("v"), Expiry::Never).await.unwrap();
    let results = race(&store, 16, |store, _| async move {
        store.bump_version("hot", 1).await.unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|moved| moved.is_some()).count(), 1);
    assert_eq!(
        store.with_version(2).get("hot").await.unwrap(),
        Some(bytes("v"))
    );
}

pub async fn bump_version_on_raw_keys_is_unsupported<S: Store>(store: S) {
    let raw = store.with_key_scheme(KeyScheme::raw());
    raw.set("plain", bytes("v"), Expiry::Never).await.unwrap();
    let err = raw.bump_version("plain", 1).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unsupported);
}

pub async fn keys_follow_the_django_layout<S: Store>(store: S) {
    let raw = store.with_key_scheme(KeyScheme::raw());
    store.set("abc", bytes("1"), Expiry::Never).await.unwrap();
    assert_eq!(raw.get(":1:abc").await.unwrap(), Some(bytes("1")));
    let shop = store.with_key_scheme(KeyScheme::django("shop", 3));
    shop.set("abc", bytes("2"), Expiry::Never).await.unwrap();
    assert_eq!(raw.get("shop:3:abc").await.unwrap(), Some(bytes("2")));
    // what django-redis wrote with the JSON serializer reads back typed
    raw.set(
        ":1:user",
        bytes(r#"{"id": 1, "username": "alice"}"#),
        Expiry::Never,
    )
    .await
    .unwrap();
    let user: serde_json::Value =
        value::decode(&store.get("user").await.unwrap().unwrap()).unwrap();
    assert_eq!(user["username"], "alice");
}

pub async fn oversized_and_empty_keys_are_refused<S: Store>(store: S) {
    let long = "k".repeat(2000);
    for key in [long.as_str()] {
        let err = store.get(key).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::InvalidKey);
        let err = store.set(key, bytes("v"), Expiry::Never).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::InvalidKey);
    }
    let raw = store.with_key_scheme(KeyScheme::raw());
    assert_eq!(
        raw.get("").await.unwrap_err().kind(),
        StoreErrorKind::InvalidKey
    );
}

pub async fn cooldown_allows_one_hit_per_interval<S: Store>(store: S) {
    let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let first = store.rate_limit("sms:13800138000", &policy).await.unwrap();
    assert!(first.allowed);
    assert_eq!(
        (first.limit, first.remaining, first.retry_after),
        (1, 0, None)
    );
    let second = store.rate_limit("sms:13800138000", &policy).await.unwrap();
    assert!(!second.allowed);
    let wait = second.retry_after.expect("a denied hit says when to retry");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // another phone number has its own flag
    assert!(
        store
            .rate_limit("sms:13900139000", &policy)
            .await
            .unwrap()
            .allowed
    );
}

pub async fn cooldown_has_exactly_one_winner_under_concurrency<S: Store>(store: S) {
    let results = race(&store, 64, |store, _| async move {
        let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
        store.rate_limit("sms:race", &policy).await.unwrap().allowed
    })
    .await;
    assert_eq!(results.iter().filter(|allowed| **allowed).count(), 1);
}

pub async fn cooldown_reopens_after_the_interval<S: Store>(store: S) {
    let policy = RatePolicy::cooldown(Duration::from_millis(100)).unwrap();
    assert!(
        store
            .rate_limit("sms:short", &policy)
            .await
            .unwrap()
            .allowed
    );
    let reopened = eventually(EXPIRY_DEADLINE, || async {
        store
            .rate_limit("sms:short", &policy)
            .await
            .unwrap()
            .allowed
    })
    .await;
    assert!(reopened);
}

pub async fn fixed_window_counts_up_to_the_limit<S: Store>(store: S) {
    let policy = RatePolicy::fixed_window(5, Duration::from_secs(60)).unwrap();
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let decision = store.rate_limit("ip:10.0.0.1", &policy).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.limit, 5);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let denied = store.rate_limit("ip:10.0.0.1", &policy).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    let wait = denied.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // a denied hit is not counted
    let raw = store.with_key_scheme(KeyScheme::raw());
    let full_key = store.key_scheme().make("ip:10.0.0.1").unwrap();
    assert_eq!(raw.get(&full_key).await.unwrap(), Some(bytes("5")));
}

pub async fn fixed_window_admits_exactly_the_limit_under_concurrency<S: Store>(store: S) {
    let results = race(&store, 40, |store, _| async move {
        let policy = RatePolicy::fixed_window(5, Duration::from_secs(60)).unwrap();
        store.rate_limit("ip:race", &policy).await.unwrap().allowed
    })
    .await;
    assert_eq!(results.iter().filter(|allowed| **allowed).count(), 5);
}

pub async fn fixed_window_starts_over_after_the_window<S: Store>(store: S) {
    let policy = RatePolicy::fixed_window(1, Duration::from_millis(100)).unwrap();
    assert!(store.rate_limit("w", &policy).await.unwrap().allowed);
    assert!(!store.rate_limit("w", &policy).await.unwrap().allowed);
    let reopened = eventually(EXPIRY_DEADLINE, || async {
        store.rate_limit("w", &policy).await.unwrap().allowed
    })
    .await;
    assert!(reopened);
}

pub async fn fixed_window_of_zero_refuses_everything<S: Store>(store: S) {
    let policy = RatePolicy::fixed_window(0, Duration::from_secs(1)).unwrap();
    let denied = store.rate_limit("none", &policy).await.unwrap();
    assert!(!denied.allowed);
    assert!(denied.retry_after.is_some());
}

pub async fn gcra_reports_like_redis_cell<S: Store>(store: S) {
    // CL.THROTTLE user123 15 30 60 -> 0, 16, 15, -1, 2
    let policy = RatePolicy::gcra(30, Duration::from_secs(60), 15).unwrap();
    let first = store.rate_limit("user123", &policy).await.unwrap();
    assert!(first.allowed);
    assert_eq!(
        (first.limit, first.remaining, first.retry_after),
        (16, 15, None)
    );
    assert!(first.reset <= Duration::from_secs(2) && first.reset > Duration::from_secs(1));
}

pub async fn gcra_allows_the_burst_then_spaces_hits<S: Store>(store: S) {
    let policy = RatePolicy::gcra(1, Duration::from_secs(10), 2).unwrap();
    let allowed: Vec<bool> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(store.rate_limit("g", &policy).await.unwrap().allowed);
        }
        out
    };
    assert_eq!(allowed, [true, true, true, false]);
    let denied = store.rate_limit("g", &policy).await.unwrap();
    let wait = denied.retry_after.unwrap();
    // one emission interval, less the little time the calls took
    assert!(
        wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
}

pub async fn gcra_admits_exactly_the_burst_under_concurrency<S: Store>(store: S) {
    let results = race(&store, 40, |store, _| async move {
        let policy = RatePolicy::gcra(1, Duration::from_secs(3600), 4).unwrap();
        store.rate_limit("g:race", &policy).await.unwrap().allowed
    })
    .await;
    assert_eq!(results.iter().filter(|allowed| **allowed).count(), 5);
}

pub async fn rate_limit_gives_a_key_stored_without_expiry_one<S: Store>(store: S) {
    // a flag or counter written by other code without a TTL must not block forever
    store.set("flag", bytes("x"), Expiry::Never).await.unwrap();
    let cooldown = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let denied = store.rate_limit("flag", &cooldown).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Some(Duration::from_secs(60)));
    assert!(
        matches!(store.ttl("flag").await.unwrap(), Ttl::Expires(left) if left <= Duration::from_secs(60))
    );

    store.set("count", bytes("3"), Expiry::Never).await.unwrap();
    let window = RatePolicy::fixed_window(10, Duration::from_secs(60)).unwrap();
    let allowed = store.rate_limit("count", &window).await.unwrap();
    assert!(allowed.allowed);
    assert_eq!(allowed.remaining, 6);
    assert!(
        matches!(store.ttl("count").await.unwrap(), Ttl::Expires(left) if left <= Duration::from_secs(60))
    );
}

pub async fn rate_limit_on_a_non_counter_is_an_invalid_value<S: Store>(store: S) {
    store
        .set("word", bytes("hello"), Expiry::Never)
        .await
        .unwrap();
    for policy in [
        RatePolicy::fixed_window(5, Duration::from_secs(1)).unwrap(),
        RatePolicy::gcra(5, Duration::from_secs(1), 1).unwrap(),
    ] {
        let err = store.rate_limit("word", &policy).await.unwrap_err();
        assert_eq!(
            err.kind(),
            StoreErrorKind::InvalidValue,
            "{policy:?}: {err}"
        );
    }
}

pub async fn take_returns_the_value_once<S: Store>(store: S) {
    store.set("once", bytes("v"), secs(60)).await.unwrap();
    let results = race(&store, 16, |store, _| async move {
        store.take("once").await.unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|taken| taken.is_some()).count(), 1);
    assert_eq!(store.get("once").await.unwrap(), None);
    assert_eq!(store.take("once").await.unwrap(), None);
}

pub async fn index_lists_live_members_with_their_ttls<S: Store>(store: S) {
    store.set("tok:a", bytes("1"), secs(60)).await.unwrap();
    store.set("tok:b", bytes("2"), Expiry::Never).await.unwrap();
    store.index_add("user:1", "tok:a").await.unwrap();
    store.index_add("user:1", "tok:b").await.unwrap();
    store.index_add("user:1", "tok:a").await.unwrap();
    let mut members = store.index_members("user:1").await.unwrap();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let full = |k: &str| store.key_scheme().make(k).unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0].0, full("tok:a"));
    assert!(matches!(members[0].1, Ttl::Expires(_)));
    assert_eq!(members[1], (full("tok:b"), Ttl::Persistent));
    assert!(store.index_remove("user:1", "tok:b").await.unwrap());
    assert!(!store.index_remove("user:1", "tok:b").await.unwrap());
    assert_eq!(store.index_members("user:1").await.unwrap().len(), 1);
    assert!(store.index_members("nobody").await.unwrap().is_empty());
}

pub async fn index_drops_members_whose_keys_are_gone<S: Store>(store: S) {
    store
        .set("tok:short", bytes("1"), Duration::from_millis(50).into())
        .await
        .unwrap();
    store.set("tok:long", bytes("2"), secs(60)).await.unwrap();
    store.index_add("user:2", "tok:short").await.unwrap();
    store.index_add("user:2", "tok:long").await.unwrap();
    store.delete("tok:long").await.unwrap();
    let pruned = eventually(EXPIRY_DEADLINE, || async {
        store.index_members("user:2").await.unwrap().is_empty()
    })
    .await;
    assert!(pruned);
}

pub async fn index_delete_all_deletes_every_member_key<S: Store>(store: S) {
    for token in ["t1", "t2", "t3"] {
        store.set(token, bytes("u"), secs(60)).await.unwrap();
        store.index_add("user:3", token).await.unwrap();
    }
    store.delete("t3").await.unwrap();
    assert_eq!(store.index_delete_all("user:3").await.unwrap(), 2);
    for token in ["t1", "t2"] {
        assert_eq!(store.get(token).await.unwrap(), None);
    }
    assert!(store.index_members("user:3").await.unwrap().is_empty());
    assert_eq!(store.index_delete_all("user:3").await.unwrap(), 0);
}

pub async fn index_survives_concurrent_adds<S: Store>(store: S) {
    race(&store, 32, |store, i| async move {
        let key = format!("c{i}");
        store.set(&key, bytes("u"), secs(60)).await.unwrap();
        store.index_add("user:4", &key).await.unwrap();
    })
    .await;
    assert_eq!(store.index_members("user:4").await.unwrap().len(), 32);
    assert_eq!(store.index_delete_all("user:4").await.unwrap(), 32);
}

pub async fn set_many_writes_every_value_with_its_own_expiry<S: Store>(store: S) {
    store.set("gone", bytes("x"), Expiry::Never).await.unwrap();
    store
        .set_many(&[
            ("page", bytes("body"), secs(60)),
            ("vary", bytes("accept-language"), Expiry::Never),
            ("gone", bytes("y"), Duration::ZERO.into()),
        ])
        .await
        .unwrap();
    assert_eq!(store.get("page").await.unwrap(), Some(bytes("body")));
    assert!(matches!(store.ttl("page").await.unwrap(), Ttl::Expires(_)));
    assert_eq!(store.ttl("vary").await.unwrap(), Ttl::Persistent);
    assert_eq!(store.get("gone").await.unwrap(), None);
    let long = "k".repeat(2000);
    let err = store
        .set_many(&[
            ("fine", bytes("1"), Expiry::Never),
            (&long, bytes("2"), Expiry::Never),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::InvalidKey);
    assert_eq!(
        store.get("fine").await.unwrap(),
        None,
        "nothing is written when a key is bad"
    );
}

pub async fn release_gives_a_cooldown_back_only_to_its_own_holder<S: Store>(store: S) {
    let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let first = store.rate_limit("sms:1", &policy).await.unwrap();
    let denied = store.rate_limit("sms:1", &policy).await.unwrap();
    assert!(
        !store.release("sms:1", &policy, &denied).await.unwrap(),
        "a denied hit holds nothing"
    );
    assert!(store.release("sms:1", &policy, &first).await.unwrap());
    let again = store.rate_limit("sms:1", &policy).await.unwrap();
    assert!(again.allowed, "the released flag is free again");

    // a stale holder whose flag expired cannot clear the flag a later hit set
    let short = RatePolicy::cooldown(Duration::from_millis(50)).unwrap();
    let stale = store.rate_limit("sms:2", &short).await.unwrap();
    assert!(stale.allowed);
    let mut current = None;
    for _ in 0..500 {
        let decision = store.rate_limit("sms:2", &short).await.unwrap();
        if decision.allowed {
            current = Some(decision);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(current.is_some());
    let long_holder = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let holder = store.rate_limit("sms:3", &long_holder).await.unwrap();
    assert!(!store.release("sms:3", &long_holder, &stale).await.unwrap());
    assert!(
        !store
            .rate_limit("sms:3", &long_holder)
            .await
            .unwrap()
            .allowed
    );
    assert!(store.release("sms:3", &long_holder, &holder).await.unwrap());
}

pub async fn release_gives_back_a_window_hit_and_a_gcra_interval<S: Store>(store: S) {
    let window = RatePolicy::fixed_window(2, Duration::from_secs(60)).unwrap();
    let a = store.rate_limit("w:1", &window).await.unwrap();
    store.rate_limit("w:1", &window).await.unwrap();
    assert!(!store.rate_limit("w:1", &window).await.unwrap().allowed);
    assert!(store.release("w:1", &window, &a).await.unwrap());
    assert!(store.rate_limit("w:1", &window).await.unwrap().allowed);
    assert!(!store.rate_limit("w:1", &window).await.unwrap().allowed);

    let gcra = RatePolicy::gcra(1, Duration::from_secs(3600), 1).unwrap();
    let a = store.rate_limit("g:1", &gcra).await.unwrap();
    store.rate_limit("g:1", &gcra).await.unwrap();
    assert!(!store.rate_limit("g:1", &gcra).await.unwrap().allowed);
    assert!(store.release("g:1", &gcra, &a).await.unwrap());
    assert!(store.rate_limit("g:1", &gcra).await.unwrap().allowed);
    assert!(!store.rate_limit("g:1", &gcra).await.unwrap().allowed);
}

pub async fn concurrent_release_and_acquire_never_admit_two_holders<S: Store>(store: S) {
    let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let holder = store.rate_limit("sms:race-release", &policy).await.unwrap();
    assert!(holder.allowed);
    let releaser = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .release("sms:race-release", &policy, &holder)
                .await
                .unwrap()
        })
    };
    let results = race(&store, 32, move |store, _| async move {
        store
            .rate_limit("sms:race-release", &policy)
            .await
            .unwrap()
            .allowed
    })
    .await;
    assert!(releaser.await.unwrap());
    // after the release at most one newcomer got the flag, and it is held now
    assert!(results.iter().filter(|allowed| **allowed).count() <= 1);
    let admitted = results.iter().filter(|allowed| **allowed).count()
        + usize::from(
            store
                .rate_limit("sms:race-release", &policy)
                .await
                .unwrap()
                .allowed,
        );
    assert_eq!(admitted, 1, "exactly one holder after the release");
}

/// An index and a value refuse each other's operations with one error kind on every store
/// (Redis answers `WRONGTYPE`, the memory store the same kind), change nothing when they
/// refuse, and a value written over an index replaces it, as Redis's `SET` does.
pub async fn an_index_and_a_value_refuse_each_others_operations<S: Store>(store: S) {
    store
        .set("member", bytes("1"), Expiry::Never)
        .await
        .unwrap();
    store.index_add("idx", "member").await.unwrap();
    let refusals = [
        ("get", store.get("idx").await.map(drop)),
        ("take", store.take("idx").await.map(drop)),
        ("increment", store.increment("idx", 1).await.map(drop)),
        (
            "get_and_refresh",
            store
                .get_and_refresh("idx", Duration::from_secs(60))
                .await
                .map(drop),
        ),
    ];
    for (operation, result) in refusals {
        assert_eq!(
            result.map_err(|err| err.kind()),
            Err(StoreErrorKind::InvalidValue),
            "{operation} of an index"
        );
    }
    assert_eq!(store.ttl("idx").await.unwrap(), Ttl::Persistent);
    assert_eq!(store.index_members("idx").await.unwrap().len(), 1);
    // a rate-limit step on an index refuses, and leaves the index as it is
    let flag = RatePolicy::cooldown(Duration::from_secs(100)).unwrap();
    let window = RatePolicy::fixed_window(5, Duration::from_secs(100)).unwrap();
    for policy in [flag, window] {
        assert_eq!(
            store
                .rate_limit("idx", &policy)
                .await
                .map_err(|err| err.kind())
                .err(),
            Some(StoreErrorKind::InvalidValue),
            "{policy:?} on an index"
        );
    }
    let held = store.rate_limit("flag", &flag).await.unwrap();
    assert_eq!(
        store
            .release("idx", &flag, &held)
            .await
            .map_err(|err| err.kind()),
        Err(StoreErrorKind::InvalidValue),
        "release on an index"
    );
    assert_eq!(store.ttl("idx").await.unwrap(), Ttl::Persistent);
    assert_eq!(store.index_members("idx").await.unwrap().len(), 1);

    // a value that reads as a list of keys is still a value
    let listed = bytes(r#"[":1:member"]"#);
    store
        .set("plain", listed.clone(), Expiry::Never)
        .await
        .unwrap();
    let refusals = [
        (
            "index_members",
            store.index_members("plain").await.map(drop),
        ),
        (
            "index_add",
            store.index_add("plain", "member").await.map(drop),
        ),
        (
            "index_remove",
            store.index_remove("plain", "member").await.map(drop),
        ),
        (
            "index_delete_all",
            store.index_delete_all("plain").await.map(drop),
        ),
    ];
    for (operation, result) in refusals {
        assert_eq!(
            result.map_err(|err| err.kind()),
            Err(StoreErrorKind::InvalidValue),
            "{operation} of a value"
        );
    }
    assert_eq!(store.get("plain").await.unwrap(), Some(listed));
    assert_eq!(store.get("member").await.unwrap(), Some(bytes("1")));

    // an index emptied is gone, as Redis deletes an empty set
    store.index_add("emptied", "member").await.unwrap();
    assert!(store.index_remove("emptied", "member").await.unwrap());
    assert_eq!(store.ttl("emptied").await.unwrap(), Ttl::Missing);
    assert!(
        store
            .set_if_absent("emptied", bytes("free"), secs(60))
            .await
            .unwrap()
    );

    store
        .set("idx", bytes("a value now"), secs(60))
        .await
        .unwrap();
    assert_eq!(store.get("idx").await.unwrap(), Some(bytes("a value now")));
    assert!(store.delete("idx").await.unwrap());
}

/// One batch mixing every edge: an empty value, a zero expiry (a delete), an expiry past
/// any real use (kept without one) and an ordinary one; all of it applies on every store.
pub async fn set_many_applies_every_edge_of_one_batch<S: Store>(store: S) {
    store
        .set("doomed", bytes("x"), Expiry::Never)
        .await
        .unwrap();
    store
        .set_many(&[
            ("empty", Bytes::new(), secs(60)),
            ("doomed", bytes("y"), Duration::ZERO.into()),
            ("forever", bytes("f"), Duration::MAX.into()),
            ("minute", bytes("m"), secs(60)),
            ("empty", bytes("second write wins"), secs(60)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get("empty").await.unwrap(),
        Some(bytes("second write wins"))
    );
    assert_eq!(store.get("doomed").await.unwrap(), None);
    assert_eq!(store.ttl("forever").await.unwrap(), Ttl::Persistent);
    assert!(matches!(
        store.ttl("minute").await.unwrap(),
        Ttl::Expires(_)
    ));
}

/// A send flag the rate-limit layer set through its handle (`layer`: a memory store's
/// rate-limit share, the store itself on Redis) is read, timed, cleared and taken through
/// the application's own handle (`app`), as one Redis database would have it; once cleared,
/// the layer's next hit is allowed. Before, the memory store's general handle saw nothing of
/// the layers' shares.
pub async fn the_layers_keys_are_seen_through_the_applications_handle<S: Store>(app: S, layer: S) {
    let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let flag = layer.rate_limit("sms:+15550100", &policy).await.unwrap();
    assert!(flag.allowed);
    assert!(app.get("sms:+15550100").await.unwrap().is_some());
    assert!(matches!(
        app.ttl("sms:+15550100").await.unwrap(),
        Ttl::Expires(_)
    ));
    assert!(
        app.delete("sms:+15550100").await.unwrap(),
        "the flag was there"
    );
    assert_eq!(app.ttl("sms:+15550100").await.unwrap(), Ttl::Missing);
    assert!(
        layer
            .rate_limit("sms:+15550100", &policy)
            .await
            .unwrap()
            .allowed,
        "cleared through the application's handle, the number is free"
    );
    assert!(app.take("sms:+15550100").await.unwrap().is_some());
    assert!(
        layer
            .rate_limit("sms:+15550100", &policy)
            .await
            .unwrap()
            .allowed
    );
    // the application's writes act on the layer's key too: a held flag is not absent to it,
    // and a counter it sets or increments is the one the layer counts
    assert!(
        !app.set_if_absent("sms:+15550100", bytes("x"), secs(60))
            .await
            .unwrap()
    );
    let window = RatePolicy::fixed_window(5, Duration::from_secs(60)).unwrap();
    for _ in 0..2 {
        layer.rate_limit("api:key", &window).await.unwrap();
    }
    assert_eq!(app.increment("api:key", 1).await.unwrap(), Some(3));
    assert_eq!(
        layer
            .rate_limit("api:key", &window)
            .await
            .unwrap()
            .remaining,
        1
    );
    app.set("api:key", bytes("0"), secs(60)).await.unwrap();
    assert_eq!(
        layer
            .rate_limit("api:key", &window)
            .await
            .unwrap()
            .remaining,
        4,
        "a counter the application reset is the one the layer counts"
    );
    assert!(
        app.get_and_refresh("api:key", Duration::from_secs(600))
            .await
            .unwrap()
            .is_some()
    );
}
