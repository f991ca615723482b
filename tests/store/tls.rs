//! TLS to Redis (`rediss://`, the `tls` feature): against a local `redis-server` listening
//! for TLS with certificates the tests make (see `TestCertificates`). The conformance suite
//! runs on TLS too (`redis_tls` in main.rs); these are what only TLS can show.

use std::time::Duration;

use bytes::Bytes;
use tower_redis_http::ConfigError;
use tower_redis_http::store::{Expiry, Pem, RedisStore, Store, Stores, StoresConfig};

use crate::support::{TestCertificates, TestRedis};

/// Far above the command timeout: a call that has not answered by then hung.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn pem(name: &str) -> Pem {
    Pem::file(TestCertificates::get().path(name))
}

async fn round_trips(store: &RedisStore) -> bool {
    let written = store
        .set("tls-probe", Bytes::from_static(b"v"), Expiry::Never)
        .await;
    let read = tokio::time::timeout(HANG_GUARD, store.get("tls-probe"))
        .await
        .expect("a call over TLS answers within the guard");
    written.is_ok() && matches!(read, Ok(Some(value)) if value == "v")
}

#[tokio::test]
async fn a_server_whose_ca_is_given_is_trusted() {
    let redis = TestRedis::start_tls(false);
    let store = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(pem("ca.pem"))
        .build()
        .await
        .unwrap();
    assert!(round_trips(&store).await);
    assert_eq!(redis.command(&["GET", ":1:tls-probe"]), "v");
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_within_the_timeout() {
    let redis = TestRedis::start_tls(false);
    for ca in [None, Some("other-ca.pem")] {
        let mut builder = RedisStore::builder(redis.tls_url())
            .connect_timeout(Duration::from_millis(500))
            .command_timeout(Duration::from_millis(500));
        // without a CA, the system's roots, which never signed the test CA
        if let Some(ca) = ca {
            builder = builder.tls_root_certificate(pem(ca));
        }
        let store = builder.build().await.unwrap();
        let read = tokio::time::timeout(HANG_GUARD, store.get("k"))
            .await
            .expect("a refused handshake answers within the guard");
        assert!(
            read.is_err(),
            "{ca:?}: an untrusted server must not be used"
        );
    }
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let redis = TestRedis::start_tls(true);
    let without = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(pem("ca.pem"))
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(
        !round_trips(&without).await,
        "the server asks for a certificate"
    );

    let with = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(pem("ca.pem"))
        .tls_client_certificate(pem("client.pem"), pem("client.key"))
        .build()
        .await
        .unwrap();
    assert!(round_trips(&with).await);

    // PEM held in memory works as a file does
    let read = |name: &str| std::fs::read(TestCertificates::get().path(name)).unwrap();
    let in_memory = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(Pem::data(read("ca.pem")))
        .tls_client_certificate(Pem::data(read("client.pem")), Pem::data(read("client.key")))
        .build()
        .await
        .unwrap();
    assert!(round_trips(&in_memory).await);
}

#[tokio::test]
async fn tls_mistakes_are_configuration_errors_where_the_store_is_built() {
    let redis = TestRedis::start_tls(false);
    let missing = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(Pem::file("/nonexistent/ca.pem"))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ConfigError::InvalidOption { option: "tls_root_certificate", reason } if reason.contains("/nonexistent/ca.pem")),
        "{missing}"
    );
    let plain = RedisStore::builder(redis.url())
        .tls_root_certificate(pem("ca.pem"))
        .build()
        .await
        .unwrap_err();
    assert!(plain.to_string().contains("rediss://"), "{plain}");
    let garbage = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(Pem::data("not a certificate"))
        .build()
        .await
        .unwrap_err();
    assert!(
        garbage.to_string().contains("no PEM certificate"),
        "{garbage}"
    );
    // a certificate where the key belongs
    let swapped = RedisStore::builder(redis.tls_url())
        .tls_root_certificate(pem("ca.pem"))
        .tls_client_certificate(pem("client.pem"), pem("client.pem"))
        .build()
        .await
        .unwrap_err();
    assert!(
        swapped.to_string().contains("no PEM private key"),
        "{swapped}"
    );
}

/// A django-redis `CACHES` entry on TLS, with redis-py's `ssl_*` pool arguments.
#[tokio::test]
async fn a_django_settings_entry_reaches_a_tls_server() {
    let redis = TestRedis::start_tls(true);
    let path = |name: &str| TestCertificates::get().path(name).display().to_string();
    let config: StoresConfig = serde_json::from_value(serde_json::json!({
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": format!("{}/1", redis.tls_url()),
            "OPTIONS": {
                "CONNECTION_POOL_KWARGS": {
                    "ssl_ca_certs": path("ca.pem"),
                    "ssl_certfile": path("client.pem"),
                    "ssl_keyfile": path("client.key"),
                    "ssl_cert_reqs": "required"
                }
            }
        }
    }))
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let store = stores.get("default").unwrap();
    store
        .set("flag", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(redis.command(&["SELECT", "1"]), "OK");
    assert_eq!(store.get("flag").await.unwrap().as_deref(), Some(&b"1"[..]));

    let lax: StoresConfig = serde_json::from_value(serde_json::json!({
        "default": {
            "LOCATION": redis.tls_url(),
            "OPTIONS": {"CONNECTION_POOL_KWARGS": {"ssl_cert_reqs": "none"}}
        }
    }))
    .unwrap();
    let refused = Stores::from_config(&lax).await.unwrap_err();
    assert!(
        refused.to_string().contains("connection_pool_kwargs"),
        "{refused}"
    );
}
