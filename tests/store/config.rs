//! Named stores from a Django-shaped configuration.

use bytes::Bytes;
use tower_redis_http::ConfigError;
use tower_redis_http::store::{AnyStore, Expiry, RedisStore, Store, Stores, StoresConfig, Ttl};

use crate::support::TestRedis;

#[tokio::test]
async fn stores_build_from_a_django_shaped_toml_document() {
    let redis = TestRedis::start();
    let config: StoresConfig = toml::from_str(&format!(
        r#"
        [default]
        location = "{url}/1"
        key_prefix = "shop"
        timeout = 600
        [default.options]
        max_connections = 256
        socket_timeout = 0.25

        [verify_codes]
        LOCATION = "{url}/2"
        TIMEOUT = 300

        [session]
        location = "memory://"
        timeout = "never"
        "#,
        url = redis.url()
    ))
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    assert_eq!(
        stores.aliases().collect::<Vec<_>>(),
        ["default", "session", "verify_codes"]
    );

    let default = stores.get("default").unwrap();
    assert!(matches!(default, AnyStore::Redis(_)));
    default
        .set("page", Bytes::from_static(b"x"), Expiry::Default)
        .await
        .unwrap();
    assert_eq!(redis.command(&["SELECT", "1"]), "OK");
    let ttl = default.ttl("page").await.unwrap().remaining().unwrap();
    assert!(ttl.as_secs() > 590 && ttl.as_secs() <= 600, "{ttl:?}");

    let codes = stores.get("verify_codes").unwrap();
    codes
        .set(
            "sms_13800138000",
            Bytes::from_static(b"123456"),
            Expiry::Default,
        )
        .await
        .unwrap();
    // each alias keeps its own database and prefix
    assert_eq!(default.get("sms_13800138000").await.unwrap(), None);

    let session = stores.get("session").unwrap();
    assert!(matches!(session, AnyStore::Memory(_)));
    session
        .set("t", Bytes::from_static(b"u"), Expiry::Default)
        .await
        .unwrap();
    assert_eq!(session.ttl("t").await.unwrap(), Ttl::Persistent);
}

#[tokio::test]
async fn unknown_alias_names_the_alias_and_the_known_ones() {
    let config: StoresConfig = serde_json::from_str(
        r#"{"default": {"location": "memory://"}, "session": {"location": "memory://"}}"#,
    )
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let err = stores.get("verify_codes").unwrap_err();
    match &err {
        ConfigError::UnknownAlias { alias, known } => {
            assert_eq!(alias, "verify_codes");
            assert_eq!(known, &["default", "session"]);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "unknown store alias `verify_codes`; configured aliases: default, session"
    );
}

#[tokio::test]
async fn a_bad_store_names_its_alias() {
    let config: StoresConfig = serde_json::from_str(
        r#"{"broken": {"location": "redis://:pw@127.0.0.1", "options": {"max_connections": 0}}}"#,
    )
    .unwrap();
    let err = Stores::from_config(&config).await.unwrap_err();
    assert!(err.to_string().contains("store `broken`"), "{err}");
}

/// A django-redis `CACHES` entry as a Django project has it, client, pool arguments,
/// serializer and all.
#[tokio::test]
async fn a_django_redis_caches_entry_parses_as_users_have_it() {
    let redis = TestRedis::start();
    let config: StoresConfig = serde_json::from_str(&format!(
        r#"{{
            "default": {{
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": "{url}/1",
                "TIMEOUT": 300,
                "OPTIONS": {{
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
                    "CONNECTION_POOL_KWARGS": {{"max_connections": 100, "retry_on_timeout": true}},
                    "SOCKET_CONNECT_TIMEOUT": 5,
                    "SOCKET_TIMEOUT": 5
                }}
            }},
            "verify_codes": {{
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": "{url}/2",
                "OPTIONS": {{"KEY_LAYOUT": "raw"}}
            }}
        }}"#,
        url = redis.url()
    ))
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let codes = stores.get("verify_codes").unwrap();
    codes
        .set(
            "send_flag_13800138000",
            Bytes::from_static(b"1"),
            Expiry::Default,
        )
        .await
        .unwrap();
    assert_eq!(redis.command(&["SELECT", "2"]), "OK");
    // the raw layout: the key as `get_redis_connection("verify_codes")` users write it
    assert_eq!(
        codes.get("send_flag_13800138000").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert!(codes.key_scheme().is_raw());
    assert!(!stores.get("default").unwrap().key_scheme().is_raw());
}

#[tokio::test]
async fn django_redis_options_this_crate_cannot_honour_are_refused_with_the_reason() {
    let cases = [
        (
            r#"{"CLIENT_CLASS": "django_redis.client.HerdClient"}"#,
            "pickled",
        ),
        (
            r#"{"CLIENT_CLASS": "django_redis.client.ShardClient"}"#,
            "shards",
        ),
        (
            r#"{"SERIALIZER": "django_redis.serializers.pickle.PickleSerializer"}"#,
            "JSONSerializer",
        ),
        (
            r#"{"COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor"}"#,
            "identity",
        ),
        (
            r#"{"CONNECTION_POOL_KWARGS": {"ssl_cert_reqs": "none"}}"#,
            "ssl_cert_reqs",
        ),
        (
            r#"{"CONNECTION_POOL_KWARGS": {"max_connections": "many"}}"#,
            "max_connections",
        ),
        (r#"{"KEY_LAYOUT": "flat"}"#, "raw"),
    ];
    for (options, expected) in cases {
        let config: StoresConfig = serde_json::from_str(&format!(
            r#"{{"default": {{"LOCATION": "redis://127.0.0.1:1", "OPTIONS": {options}}}}}"#
        ))
        .unwrap();
        let err = Stores::from_config(&config).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{options}: {err}");
    }
}

/// django-redis's master-and-replicas form: `LOCATION` as a list whose first entry is the
/// master. The store uses the master for everything, reads included, so none is stale.
#[tokio::test]
async fn a_location_list_uses_its_first_entry_the_master() {
    let master = TestRedis::start();
    let port = master.port().to_string();
    let replica = TestRedis::start_with(&["--replicaof", "127.0.0.1", &port]);
    let config: StoresConfig = serde_json::from_value(serde_json::json!({
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": [format!("{}/1", master.url()), format!("{}/1", replica.url())]
        }
    }))
    .unwrap();
    let store = Stores::from_config(&config)
        .await
        .unwrap()
        .get("default")
        .unwrap();
    // the replica refuses writes (READONLY): a write that goes through went to the master
    store
        .set("greeting", Bytes::from_static(b"hi"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        store.get("greeting").await.unwrap().as_deref(),
        Some(&b"hi"[..])
    );

    let empty = serde_json::from_value::<StoresConfig>(serde_json::json!({
        "default": {"LOCATION": []}
    }))
    .map(|_| ())
    .expect_err("an empty LOCATION list is refused");
    assert!(empty.to_string().contains("master"), "{empty}");
}

/// The ways Django settings name a Redis Cluster (redis-py's `RedisCluster` as the client
/// class, or this crate's `CLUSTER` option) build a cluster store on the seed nodes the
/// location lists, and keys land on the node of their slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_built_from_django_settings_and_its_seed_nodes() {
    let cluster = crate::support::TestCluster::start();
    let seeds = cluster.seeds();
    let config: StoresConfig = serde_json::from_value(serde_json::json!({
        "redis_py": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": seeds[0],
            "OPTIONS": {"REDIS_CLIENT_CLASS": "redis.cluster.RedisCluster"}
        },
        "listed": {"LOCATION": seeds, "OPTIONS": {"CLUSTER": true}}
    }))
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    for alias in ["redis_py", "listed"] {
        let store = stores.get(alias).unwrap();
        // keys in every third of the slots: a single-server store would be refused MOVED
        for key in ["a", "b", "c", "d", "e", "f"] {
            store
                .set(key, Bytes::from_static(b"v"), Expiry::Never)
                .await
                .unwrap_or_else(|err| panic!("{alias}: {err}"));
        }
    }
    let dump = crate::support::RawRedis::command(&cluster, &["KEYS", "*"]);
    assert_eq!(dump.lines().count(), 6, "{dump}");

    let both = serde_json::from_value::<StoresConfig>(serde_json::json!({
        "default": {
            "LOCATION": seeds[0],
            "OPTIONS": {"CLUSTER": true, "SENTINELS": [["127.0.0.1", 26379]]}
        }
    }))
    .unwrap();
    let err = Stores::from_config(&both).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("sentinels"), "{err}");
}

/// Issue 29, finding 7: a password written unencoded, with `/`, `?` or `#` in it, appears
/// in no configuration error, `Debug` or `Display`, with its causes.
#[tokio::test]
async fn passwords_never_reach_configuration_errors_however_they_are_written() {
    for location in [
        "redis://:pa/ss@127.0.0.1:1/0",
        "redis://:pa?ss@127.0.0.1:1",
        "redis://user:pa#ss@127.0.0.1:1/x",
        "redis://:pa/ss?x@not a host/0",
        "rediz://:pa/ss@127.0.0.1:1",
    ] {
        let err = tower_redis_http::store::RedisStore::builder(location)
            .build()
            .await
            .expect_err(location);
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            texts.push(cause.to_string());
            texts.push(format!("{cause:?}"));
            source = cause.source();
        }
        for text in texts {
            assert!(
                !text.contains("pa/ss") && !text.contains("pa?ss") && !text.contains("pa#ss"),
                "{location}: {text}"
            );
        }
    }
}

/// Every configuration and builder type's `Debug`, and every error a configuration can give,
/// formatted with a known password in each place a password can be written: the password
/// appears in none of them (issue 36, findings 1 and 2).
#[tokio::test]
async fn a_password_appears_in_no_debug_or_error_text_wherever_it_is_written() {
    const PW: &str = "Pw0rd-9f2c";
    fn all_of(err: &dyn std::error::Error) -> String {
        let mut text = format!("{err} {err:?}");
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        text
    }
    let mut texts: Vec<String> = Vec::new();
    let documents = [
        // a Sentinel master's LOCATION with its password
        format!(
            r#"{{"default": {{"LOCATION": "redis://:{PW}@mymaster/0", "OPTIONS": {{"SENTINELS": [["127.0.0.1", 1]]}}}}}}"#
        ),
        // a list in one string, django-redis's way, with a bad third URL
        format!(
            r#"{{"default": {{"LOCATION": "redis://:{PW}@127.0.0.1:1,redis://:{PW}@127.0.0.1:2,redis://:{PW}@bad host"}}}}"#
        ),
        // a cluster's seeds, one of them bad
        format!(
            r#"{{"default": {{"LOCATION": ["redis://:{PW}@127.0.0.1:1", "redis://:{PW}@[bad"], "OPTIONS": {{"CLUSTER": true}}}}}}"#
        ),
        // a password among the pool arguments (refused) and the sentinels' own
        format!(
            r#"{{"default": {{"LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {{"CONNECTION_POOL_KWARGS": {{"password": "{PW}"}}}}}}}}"#
        ),
        format!(
            r#"{{"default": {{"LOCATION": "redis://mymaster/0", "OPTIONS": {{"SENTINELS": [["127.0.0.1", 1]], "SENTINEL_KWARGS": {{"password": "{PW}"}}}}}}}}"#
        ),
        format!(
            r#"{{"default": {{"LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {{"PASSWORD": "{PW}", "DB": "x"}}}}}}"#
        ),
    ];
    for document in &documents {
        match serde_json::from_str::<StoresConfig>(document) {
            Ok(config) => {
                texts.push(format!("{config:?}"));
                for store in config.stores.values() {
                    texts.push(format!("{store:?} {:?}", store.options));
                }
                if let Err(err) = Stores::from_config(&config).await {
                    texts.push(all_of(&err));
                }
            }
            Err(err) => texts.push(all_of(&err)),
        }
    }
    // a password written as a number: the parse error must not echo it
    let numeric =
        r#"{"default": {"LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {"PASSWORD": 987654321}}}"#;
    let err = serde_json::from_str::<StoresConfig>(numeric).unwrap_err();
    assert!(!all_of(&err).contains("987654321"), "{err}");
    assert!(err.to_string().contains("PASSWORD"), "{err}");

    // the builders, in every shape
    let builders = [
        RedisStore::builder(format!("redis://:{PW}@127.0.0.1:1/0")),
        RedisStore::builder("redis://127.0.0.1:1/0").password(PW),
        RedisStore::sentinel([format!("redis://:{PW}@127.0.0.1:1")], "mymaster"),
        RedisStore::cluster([
            format!("redis://:{PW}@127.0.0.1:1"),
            format!("redis://:{PW}@127.0.0.1:2"),
            format!("redis://:{PW}@bad host"),
        ]),
    ];
    for builder in builders {
        texts.push(format!("{builder:?}"));
        if let Err(err) = builder
            .command_timeout(std::time::Duration::from_millis(50))
            .build()
            .await
        {
            texts.push(all_of(&err));
        }
    }
    for text in &texts {
        assert!(!text.contains(PW), "the password is in: {text}");
        assert!(
            !text.contains("Pw0rd"),
            "part of the password is in: {text}"
        );
    }
}

/// Options that the chosen backend would not use are refused, naming them (issue 36, finding
/// 3): a Redis option on the memory store gave each process a store of its own, silently, and
/// a memory bound on Redis did nothing. An empty `LOCATION` is refused unless the backend is
/// explicitly the memory one.
#[tokio::test]
async fn options_the_chosen_backend_would_not_use_are_refused_by_name() {
    let build = |json: &str| {
        let config: StoresConfig = serde_json::from_str(json).unwrap();
        async move { Stores::from_config(&config).await.err() }
    };
    for (location, backend) in [
        (r#""memory://""#, ""),
        (
            r#""""#,
            r#", "BACKEND": "django.core.cache.backends.locmem.LocMemCache""#,
        ),
        (
            r#"["", "redis://127.0.0.1:1"]"#,
            r#", "BACKEND": "LocMemCache""#,
        ),
    ] {
        for (option, value) in [
            ("PASSWORD", r#""pw""#),
            ("DB", "2"),
            ("SENTINELS", r#"[["127.0.0.1", 26379]]"#),
            ("CLUSTER", "true"),
            ("SOCKET_TIMEOUT", "0.5"),
            ("MAX_CONNECTIONS", "10"),
            (
                "CONNECTION_POOL_KWARGS",
                r#"{"ssl_ca_certs": "/no/such/ca.pem"}"#,
            ),
        ] {
            let json = format!(
                r#"{{"default": {{"LOCATION": {location}{backend}, "OPTIONS": {{"{option}": {value}}}}}}}"#
            );
            let err = build(&json)
                .await
                .unwrap_or_else(|| panic!("built: {json}"));
            assert!(
                matches!(&err, ConfigError::InvalidOption { option: named, .. } if named.eq_ignore_ascii_case(option)),
                "{json}: {err}"
            );
        }
    }
    for option in ["MAX_ENTRIES", "MAX_RATE_LIMIT_KEYS", "MAX_CACHE_BYTES"] {
        let json = format!(
            r#"{{"default": {{"LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {{"{option}": 10}}}}}}"#
        );
        let err = build(&json)
            .await
            .unwrap_or_else(|| panic!("built: {json}"));
        assert!(
            matches!(&err, ConfigError::InvalidOption { option: named, .. } if named.eq_ignore_ascii_case(option)),
            "{json}: {err}"
        );
    }
    // an empty or blank location with no backend named
    for location in [r#""""#, r#""  ""#, r#"["", "redis://127.0.0.1:1"]"#] {
        let json = format!(r#"{{"default": {{"LOCATION": {location}}}}}"#);
        let err = build(&json)
            .await
            .unwrap_or_else(|| panic!("built: {json}"));
        assert!(err.to_string().contains("location"), "{json}: {err}");
    }
    // the memory store's own bounds, on the memory store, are taken
    assert!(
        build(r#"{"default": {"LOCATION": "memory://", "OPTIONS": {"MAX_ENTRIES": 10}}}"#)
            .await
            .is_none()
    );
}

/// One setting in two places with two values is refused, naming both (issue 36, finding 5):
/// `LOCATION .../1` with `DB 2` wrote to db 1 while `.../0` with `DB 2` wrote to db 2, and the
/// socket timeout took the opposite of django-redis's precedence. The same value twice is fine.
#[tokio::test]
async fn one_setting_given_twice_with_two_values_is_refused() {
    for (options, location, option) in [
        (r#"{"DB": 2}"#, "redis://127.0.0.1:1/1", "db"),
        (r#"{"DB": 2}"#, "redis://127.0.0.1:1/0", "db"),
        (r#"{"DB": 2}"#, "redis://:p/w@127.0.0.1:1/0", "db"),
        (
            r#"{"SOCKET_TIMEOUT": 1, "CONNECTION_POOL_KWARGS": {"socket_timeout": 2}}"#,
            "redis://127.0.0.1:1/0",
            "socket_timeout",
        ),
        (
            r#"{"SOCKET_CONNECT_TIMEOUT": 1, "CONNECTION_POOL_KWARGS": {"socket_connect_timeout": 2}}"#,
            "redis://127.0.0.1:1/0",
            "socket_connect_timeout",
        ),
        (
            r#"{"MAX_CONNECTIONS": 8, "CONNECTION_POOL_KWARGS": {"max_connections": 9}}"#,
            "redis://127.0.0.1:1/0",
            "max_connections",
        ),
    ] {
        let json = format!(r#"{{"default": {{"LOCATION": "{location}", "OPTIONS": {options}}}}}"#);
        let config: StoresConfig = serde_json::from_str(&json).unwrap();
        let err = Stores::from_config(&config)
            .await
            .err()
            .unwrap_or_else(|| panic!("built: {json}"));
        assert!(
            matches!(&err, ConfigError::InvalidOption { option: named, reason } if *named == option && reason.contains("twice")),
            "{json}: {err}"
        );
    }
    // the same value in both places, or in one, is taken
    let redis = TestRedis::start();
    for options in [
        r#"{"DB": 3}"#,
        r#"{"SOCKET_TIMEOUT": 1, "CONNECTION_POOL_KWARGS": {"socket_timeout": 1}}"#,
    ] {
        let json = format!(
            r#"{{"default": {{"LOCATION": "{}/3", "OPTIONS": {options}}}}}"#,
            redis.url().trim_end_matches("/0")
        );
        let config: StoresConfig = serde_json::from_str(&json).unwrap();
        assert!(Stores::from_config(&config).await.is_ok(), "{json}");
    }
}

/// What would fail every call is refused when the store is built (issue 36, finding 6): a
/// `KEY_PREFIX` that leaves no room for a key, a negative `DB` (every call was then reported as
/// Redis unreachable, and fixed windows failed open), and a `VERSION` with the raw layout.
#[tokio::test]
async fn settings_that_would_fail_every_call_are_refused_at_build() {
    let long = "p".repeat(2000);
    for (json, option) in [
        (
            format!(r#"{{"default": {{"LOCATION": "redis://127.0.0.1:1/0", "KEY_PREFIX": "{long}"}}}}"#),
            "key_prefix",
        ),
        (
            format!(r#"{{"default": {{"LOCATION": "memory://", "KEY_PREFIX": "{long}"}}}}"#),
            "key_prefix",
        ),
        (
            r#"{"default": {"LOCATION": "redis://127.0.0.1:1", "OPTIONS": {"DB": -1}}}"#.to_owned(),
            "db",
        ),
        (
            r#"{"default": {"LOCATION": "redis://127.0.0.1:1/0", "VERSION": 2, "OPTIONS": {"KEY_LAYOUT": "raw"}}}"#.to_owned(),
            "version",
        ),
    ] {
        let config: StoresConfig = serde_json::from_str(&json).unwrap();
        let err = Stores::from_config(&config).await.err().unwrap_or_else(|| panic!("built: {option}"));
        assert!(
            matches!(&err, ConfigError::InvalidOption { option: named, .. } if *named == option),
            "{option}: {err}"
        );
    }
    let err = RedisStore::builder("redis://127.0.0.1:1")
        .database(-3)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("database"), "{err}");
}

/// Smaller edges of the configuration (issue 36, finding 9): errors that name the problem,
/// django-redis's comma-separated `LOCATION`, an IPv6 sentinel without brackets, and a
/// `TIMEOUT` past any real use taken as none.
#[tokio::test]
async fn configuration_edges_get_clear_answers() {
    let parse = |json: &str| serde_json::from_str::<StoresConfig>(json);
    let err = parse(r#"{"default": {"LOCATION": "memory://", "TIMEOUT": true}}"#).unwrap_err();
    assert!(err.to_string().contains("TIMEOUT must be"), "{err}");
    let err = parse(r#"{"default": {"LOCATION": "memory://", "TIMEOUT": -1}}"#).unwrap_err();
    assert!(err.to_string().contains("0 or more"), "{err}");
    let huge = parse(r#"{"default": {"LOCATION": "memory://", "TIMEOUT": 2e19}}"#).unwrap();
    assert_eq!(
        huge.stores["default"].timeout,
        tower_redis_http::store::Timeout::Never
    );

    // a comma-separated LOCATION is a list, as django-redis reads it: the first is the master
    let redis = TestRedis::start();
    let json = format!(
        r#"{{"default": {{"LOCATION": "{}/2,redis://127.0.0.1:1/2"}}}}"#,
        redis.url().trim_end_matches("/0")
    );
    let config = parse(&json).unwrap();
    assert_eq!(config.stores["default"].location.len(), 2);
    let stores = Stores::from_config(&config).await.unwrap();
    let store = stores.get("default").unwrap();
    store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap();
    let db_2 = RedisStore::builder(format!("{}/2", redis.url().trim_end_matches("/0")))
        .build()
        .await
        .unwrap();
    assert_eq!(db_2.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

/// The adversary's review of issue 36: a socket's `?db=` against `OPTIONS.DB`, `Memory://` in
/// another letter case, a list after `memory://`, and a timeout past any use.
#[tokio::test]
async fn the_last_configuration_edges_are_refused_or_read_as_meant() {
    let build = |json: &str| {
        let config: StoresConfig = serde_json::from_str(json).unwrap();
        async move { Stores::from_config(&config).await }
    };
    let err = build(r#"{"a": {"LOCATION": "unix:///tmp/no.sock?db=3", "OPTIONS": {"DB": 5}}}"#)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("twice"), "{err}");
    assert!(build(r#"{"a": {"LOCATION": "Memory://"}}"#).await.is_ok());
    let err = build(r#"{"a": {"LOCATION": "memory://,redis://127.0.0.1:1"}}"#)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("location"), "{err}");
    let err = build(
        r#"{"a": {"LOCATION": "redis://127.0.0.1:1", "OPTIONS": {"SOCKET_TIMEOUT": 1e300}}}"#,
    )
    .await
    .err()
    .unwrap();
    assert!(!err.to_string().contains("0 or more"), "{err}");
}

/// A database past the server's `databases` (16 here) is a configuration error, not an
/// outage: each call fails with `Unsupported` and a message naming the database and the
/// setting, at once and every time, rather than `Connection` ("Redis unreachable"), which
/// the layers treat as an outage (fixed windows fail open through it). The server's
/// reachability is not marked failed, so a store on a database it has keeps working.
#[tokio::test]
async fn a_database_the_server_does_not_have_is_a_configuration_error() {
    let redis = TestRedis::start();
    let store = RedisStore::builder(format!("{}/99", redis.url()))
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let err = store.get("k").await.unwrap_err();
        assert_eq!(
            err.kind(),
            tower_redis_http::store::StoreErrorKind::Unsupported,
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("99") && text.contains("databases"), "{text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let fine = RedisStore::builder(format!("{}/15", redis.url()))
        .build()
        .await
        .unwrap();
    assert_eq!(fine.get("k").await.unwrap(), None);
}

/// The layers do not fail open through a configuration error (the adversary's review of issue
/// 36): a fixed-window rule, which fails open through an outage, answers 503 on a database
/// the server does not have, instead of letting every request through unlimited for good.
#[tokio::test]
async fn a_window_rule_does_not_fail_open_through_a_configuration_error() {
    use std::convert::Infallible;
    use tower::ServiceExt;
    use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};

    let redis = TestRedis::start();
    let store = RedisStore::builder(format!("{}/99", redis.url()))
        .build()
        .await
        .unwrap();
    let limited = tower::ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(store)
                .rule(Rule::fixed_window("api", "5/m", Key::global()))
                .build()
                .unwrap(),
        )
        .service_fn(|_: http::Request<http_body_util::Empty<Bytes>>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
        });
    for _ in 0..3 {
        let response = limited
            .clone()
            .oneshot(http::Request::new(http_body_util::Empty::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
