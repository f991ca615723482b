use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode, header};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_redis_http::FailurePolicy;
use tower_redis_http::auth::{
    AuthError, AuthErrorKind, Authenticated, TokenAuthBuilder, TokenAuthLayer, TokenKeys,
    TokenSource, TokenStorage, Tokens,
};
use tower_redis_http::store::{AnyStore, Expiry, RedisStore, Store, value};

use crate::support::{Backend, TestRedis, command_calls, eventually};
use crate::{Reply, User, alice, empty, get, send, whoami};

type App = BoxCloneService<
    http::Request<Full<Bytes>>,
    http::Response<tower_redis_http::body::ResponseBody<Full<Bytes>>>,
    std::convert::Infallible,
>;

fn app(builder: TokenAuthBuilder<User>) -> App {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(builder.build().unwrap())
            .service_fn(whoami),
    )
}

async fn issue(store: &AnyStore, user: &User) -> String {
    Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(user)
        .await
        .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_rejected(reply: &Reply, status: StatusCode, detail: &str, challenge: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.body,
        serde_json::json!({ "detail": detail }).to_string()
    );
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        reply
            .headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap()),
        challenge,
        "challenge for {detail}"
    );
}

async fn a_valid_bearer_token_reaches_the_handler_with_the_principal(backend: &Backend) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;
    let app = app(TokenAuthLayer::bearer(store));
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "user:alice");
}

async fn every_token_source_works(backend: &Backend) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;

    let drf = app(TokenAuthLayer::drf(store.clone()));
    let reply = send(
        &drf,
        empty(get("/me/").header("authorization", format!("token {token}"))),
    )
    .await;
    assert_eq!(reply.body, "user:alice");

    let custom_keyword =
        app(TokenAuthLayer::bearer(store.clone()).token_sources([TokenSource::keyword("JWT")]));
    let reply = send(
        &custom_keyword,
        empty(get("/me/").header("authorization", format!("JWT {token}"))),
    )
    .await;
    assert_eq!(reply.body, "user:alice");

    let many = app(TokenAuthLayer::bearer(store.clone())
        .token_from(TokenSource::query("token"))
        .token_from(TokenSource::cookie("token"))
        .token_from(TokenSource::header(HeaderName::from_static("x-auth-token"))));
    for request in [
        get(&format!("/me/?page=2&token={token}")),
        get("/me/").header("cookie", format!("theme=dark; token={token}")),
        get("/me/").header("x-auth-token", token.as_str()),
    ] {
        let reply = send(&many, empty(request)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "user:alice")
        );
    }
}

async fn each_rejection_has_its_status_challenge_and_detail(backend: &Backend) {
    let store = backend.store();
    let app = app(TokenAuthLayer::bearer(store.clone()).max_token_len(64));
    let invalid =
        |d: &str| format!(r#"Bearer realm="api", error="invalid_token", error_description="{d}""#);
    let cases: Vec<(Option<&str>, StatusCode, &str, Option<String>)> = vec![
        (
            None,
            StatusCode::UNAUTHORIZED,
            "Authentication credentials were not provided.",
            Some(r#"Bearer realm="api""#.into()),
        ),
        (
            Some("Bearer"),
            StatusCode::UNAUTHORIZED,
            "Invalid token header. No credentials provided.",
            Some(invalid("Invalid token header. No credentials provided.")),
        ),
        (
            Some("Bearer abc def"),
            StatusCode::UNAUTHORIZED,
            "Invalid token header. Token string should not contain spaces.",
            Some(invalid(
                "Invalid token header. Token string should not contain spaces.",
            )),
        ),
        (
            Some("Bearer abc<def>"),
            StatusCode::UNAUTHORIZED,
            "Invalid token header. Token string should not contain invalid characters.",
            Some(invalid(
                "Invalid token header. Token string should not contain invalid characters.",
            )),
        ),
        (
            Some("Bearer   "),
            StatusCode::UNAUTHORIZED,
            "Invalid token header. No credentials provided.",
            Some(invalid("Invalid token header. No credentials provided.")),
        ),
        (
            Some("Bearer 0000000000000000000000000000000000000000"),
            StatusCode::UNAUTHORIZED,
            "Invalid token.",
            Some(invalid("Invalid token.")),
        ),
        (
            Some("Basic dXNlcjpwYXNz"),
            StatusCode::UNAUTHORIZED,
            "Authentication credentials were not provided.",
            Some(r#"Bearer realm="api""#.into()),
        ),
    ];
    for (authorization, status, detail, challenge) in cases {
        let mut request = get("/me/");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let reply = send(&app, empty(request)).await;
        assert_rejected(&reply, status, detail, challenge.as_deref());
    }

    let long = format!("Bearer {}", "a".repeat(65));
    let reply = send(&app, empty(get("/me/").header("authorization", long))).await;
    assert_rejected(
        &reply,
        StatusCode::UNAUTHORIZED,
        "Invalid token header. Token string is too long.",
        Some(&invalid("Invalid token header. Token string is too long.")),
    );

    let reply = send(
        &app,
        empty(
            get("/me/")
                .header("authorization", "Bearer a")
                .header("authorization", "Bearer b"),
        ),
    )
    .await;
    assert_rejected(
        &reply,
        StatusCode::BAD_REQUEST,
        "Invalid request. More than one token was provided.",
        Some(
            r#"Bearer realm="api", error="invalid_request", error_description="Invalid request. More than one token was provided.""#,
        ),
    );
    assert_eq!(
        reply.extensions.get::<AuthErrorKind>(),
        Some(&AuthErrorKind::MultipleCredentials)
    );
}

async fn drf_mode_answers_with_the_token_keyword(backend: &Backend) {
    let app = app(TokenAuthLayer::drf(backend.store()));
    for (authorization, detail) in [
        (None, "Authentication credentials were not provided."),
        (
            Some("Token"),
            "Invalid token header. No credentials provided.",
        ),
        (
            Some("Token a b"),
            "Invalid token header. Token string should not contain spaces.",
        ),
        (Some("Token nope"), "Invalid token."),
    ] {
        let mut request = get("/me/");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let reply = send(&app, empty(request)).await;
        assert_rejected(&reply, StatusCode::UNAUTHORIZED, detail, Some("Token"));
    }
}

async fn expired_and_revoked_tokens_are_invalid(backend: &Backend) {
    let store = backend.store();
    let tokens =
        Tokens::new(store.clone(), |u: &User| u.id.to_string()).ttl(Duration::from_millis(200));
    let token = tokens.issue(&alice()).await.unwrap();
    let app = app(TokenAuthLayer::bearer(store.clone()));
    let request = || empty(get("/me/").header("authorization", bearer(&token)));
    assert_eq!(send(&app, request()).await.status, StatusCode::OK);
    let expired = eventually(Duration::from_secs(5), || async {
        send(&app, request()).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(expired);
    assert_rejected(
        &send(&app, request()).await,
        StatusCode::UNAUTHORIZED,
        "Invalid token.",
        Some(r#"Bearer realm="api", error="invalid_token", error_description="Invalid token.""#),
    );

    let tokens = Tokens::new(store, |u: &User| u.id.to_string());
    let token = tokens.issue(&alice()).await.unwrap();
    assert!(tokens.revoke(&token).await.unwrap());
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn a_token_that_is_too_long_never_reaches_redis_and_a_valid_one_costs_one_get(
    backend: &Backend,
) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;
    let app = app(TokenAuthLayer::bearer(store));
    if let Some(redis) = backend.server() {
        redis.command(&["CONFIG", "RESETSTAT"]);
    }

    let long = format!("Bearer {}", "a".repeat(257));
    let reply = send(&app, empty(get("/me/").header("authorization", long))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    for bad in ["Bearer", "Bearer a b", "Bearer a\"b"] {
        send(&app, empty(get("/me/").header("authorization", bad))).await;
    }
    send(&app, empty(get("/me/"))).await;
    if let Some(redis) = backend.server() {
        assert_eq!(
            command_calls(redis, "get"),
            0,
            "a malformed token reached Redis"
        );
    }

    for _ in 0..10 {
        let reply = send(
            &app,
            empty(get("/me/").header("authorization", bearer(&token))),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let Some(redis) = backend.server() else {
        return;
    };
    let info = redis.command(&["INFO", "commandstats"]);
    let commands: Vec<&str> = info
        .lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .collect();
    // a near cache reads the token once, with its expiry, and holds it
    let gets = if backend.has_near_cache() { 1 } else { 10 };
    assert_eq!(command_calls(redis, "get"), gets, "{commands:?}");
    assert!(
        commands.iter().all(|line| line.starts_with("cmdstat_get:")
            || (backend.has_near_cache()
                && (line.starts_with("cmdstat_pttl:calls=1,")
                    // opt-in tracking: the key's existence first, then its tracked read
                    || line.starts_with("cmdstat_exists:calls=1,")
                    || line.starts_with("cmdstat_client|caching:calls=1,")
                    // the near cache's heartbeat, once a second
                    || line.starts_with("cmdstat_getrange:")))
            || line.starts_with("cmdstat_config")
            || line.starts_with("cmdstat_info:")),
        "other commands were sent: {commands:?}"
    );
}

async fn sliding_expiration_pushes_the_ttl_out_in_the_same_round_trip(backend: &Backend) {
    let store = backend.store();
    let tokens =
        Tokens::new(store.clone(), |u: &User| u.id.to_string()).ttl(Duration::from_secs(60));
    let token = tokens.issue(&alice()).await.unwrap();
    let app =
        app(TokenAuthLayer::bearer(store.clone())
            .sliding_expiration(Duration::from_secs(72 * 3600)));
    if let Some(redis) = backend.server() {
        redis.command(&["CONFIG", "RESETSTAT"]);
    }
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let left = store.ttl(&token).await.unwrap().remaining().unwrap();
    assert!(left > Duration::from_secs(71 * 3600), "{left:?}");
    if let Some(redis) = backend.server() {
        assert_eq!(command_calls(redis, "getex"), 1);
        assert_eq!(command_calls(redis, "get"), 0);
    }

    // without sliding, the TTL is left alone
    let fixed = app_without_sliding(store.clone());
    let token = tokens.issue(&alice()).await.unwrap();
    send(
        &fixed,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert!(store.ttl(&token).await.unwrap().remaining().unwrap() <= Duration::from_secs(60));
}

/// Issue 31, point 3: with a refresh interval, a sliding token is refreshed only once it has
/// less than the TTL less the interval left, as knox's `MIN_REFRESH_INTERVAL` decides; where
/// the store answers at once (memory, a near cache) the other requests are plain reads. A
/// token rewritten with a shorter TTL is refreshed again (adversary's finding F2).
async fn a_sliding_token_is_refreshed_once_it_has_less_than_the_ttl_less_the_interval_left(
    backend: &Backend,
) {
    let store = backend.store();
    let tokens =
        Tokens::new(store.clone(), |u: &User| u.id.to_string()).ttl(Duration::from_secs(60));
    let token = tokens.issue(&alice()).await.unwrap();
    let hour = Duration::from_secs(3600);
    let app = app(TokenAuthLayer::bearer(store.clone())
        .sliding_expiration(72 * hour)
        .sliding_refresh_interval(hour));
    let me = || empty(get("/me/").header("authorization", bearer(&token)));
    let left = || async { store.ttl(&token).await.unwrap().remaining().unwrap() };
    assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    assert!(left().await > 71 * hour + hour / 2);
    // rewritten with 71.5 hours: more than the TTL less the interval, so no refresh is due
    let long_enough = 71 * hour + hour / 2;
    store.get_and_refresh(&token, long_enough).await.unwrap();
    let answers_at_once = match backend {
        Backend::Memory(_) => true,
        Backend::Redis { store, .. } => store.near_cache_usage().is_some(),
        Backend::Cluster { .. } => false,
    };
    if let Some(redis) = backend.server() {
        redis.command(&["CONFIG", "RESETSTAT"]);
    }
    for _ in 0..3 {
        assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    }
    if answers_at_once {
        assert!(left().await <= long_enough, "{:?}", left().await);
        if let Some(redis) = backend.server() {
            assert_eq!(command_calls(redis, "getex"), 0);
        }
    } else {
        // without a near cache every lookup is a round trip, and it refreshes in it
        assert!(left().await > long_enough);
    }
    // rewritten with a minute: refreshed within two requests (a near cache first reads the
    // rewritten expiry with the value), never left to expire while in use
    store
        .get_and_refresh(&token, Duration::from_secs(60))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    }
    assert!(left().await > 71 * hour + hour / 2, "{:?}", left().await);
    // a revoked token is refused at once
    tokens.revoke(&token).await.unwrap();
    assert_eq!(send(&app, me()).await.status, StatusCode::UNAUTHORIZED);
}

/// Adversary's finding F1: a principal type holding shared state (left out of its JSON)
/// never carries one token's request state into another token's request, even when both
/// tokens store equal JSON.
async fn principals_of_equal_json_do_not_share_state_between_tokens(backend: &Backend) {
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Guest {
        role: String,
        #[serde(skip)]
        scratch: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }
    let store = backend.store();
    let guest = Guest {
        role: "guest".into(),
        scratch: Default::default(),
    };
    let tokens = Tokens::new(store.clone(), |_: &Guest| "guests".to_owned());
    let (first, second) = (
        tokens.issue(&guest).await.unwrap(),
        tokens.issue(&guest).await.unwrap(),
    );
    let service = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<Guest>::bearer(store.clone())
                .build()
                .unwrap(),
        )
        .service_fn(|request: http::Request<Full<Bytes>>| async move {
            let auth = request.extensions().get::<Authenticated<Guest>>().unwrap();
            let who = request.headers()["x-who"].to_str().unwrap().to_owned();
            let mut scratch = auth.principal.scratch.lock().unwrap();
            scratch.push(who);
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                scratch.join(","),
            ))))
        });
    let ask = |token: &str, who: &str| {
        empty(
            get("/me/")
                .header("authorization", bearer(token))
                .header("x-who", who),
        )
    };
    assert_eq!(
        send(&service, ask(&first, "alice-secret")).await.body,
        "alice-secret"
    );
    assert_eq!(send(&service, ask(&second, "bob")).await.body, "bob");
}

/// Issue 31, point 1: principals are kept decoded by their stored JSON, so a principal
/// changed in the store is what the next request sees.
async fn a_principal_changed_in_the_store_is_seen_at_once(backend: &Backend) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;
    let service = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<User>::bearer(store.clone())
                .build()
                .unwrap(),
        )
        .service_fn(whoami);
    let me = || empty(get("/me/").header("authorization", bearer(&token)));
    let first = send(&service, me()).await;
    assert_eq!(send(&service, me()).await.body, first.body);
    let renamed = User {
        username: "alice2".into(),
        ..alice()
    };
    store
        .set(&token, value::encode(&renamed).unwrap(), Expiry::Never)
        .await
        .unwrap();
    let after = send(&service, me()).await;
    assert_ne!(after.body, first.body);
    assert!(after.body.contains("alice2"), "{}", after.body);
}

fn app_without_sliding(store: AnyStore) -> App {
    app(TokenAuthLayer::bearer(store))
}

async fn a_bare_user_id_as_django_stores_it_is_a_principal(backend: &Backend) {
    // cache.set(token, user.id, timeout) in Django, with django-redis defaults
    match backend.server() {
        Some(redis) => {
            redis.command(&["SET", ":1:abcdef0123456789", "42", "EX", "300"]);
        }
        None => backend
            .store()
            .set(
                "abcdef0123456789",
                Bytes::from_static(b"42"),
                Expiry::After(Duration::from_secs(300)),
            )
            .await
            .unwrap(),
    }
    let service = ServiceBuilder::new()
        .layer(TokenAuthLayer::<u64>::drf(backend.store()).build().unwrap())
        .service_fn(whoami);
    let reply = send(
        &service,
        empty(get("/me/").header("authorization", "Token abcdef0123456789")),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "id:42")
    );
}

async fn a_corrupt_stored_entry_is_an_invalid_token_not_a_server_error(backend: &Backend) {
    let store = backend.store();
    for (token, stored) in [("corrupt", "{not json"), ("wrongshape", "[1, 2, 3]")] {
        store
            .set(token, Bytes::from_static(stored.as_bytes()), Expiry::Never)
            .await
            .unwrap();
    }
    let app = app(TokenAuthLayer::bearer(backend.store()));
    for token in ["corrupt", "wrongshape"] {
        let reply = send(
            &app,
            empty(get("/me/").header("authorization", bearer(token))),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.extensions.get::<AuthErrorKind>(),
            Some(&AuthErrorKind::InvalidToken)
        );
    }
}

async fn validation_rejects_inactive_users_with_its_own_reason(backend: &Backend) {
    let store = backend.store();
    let inactive = User {
        is_active: false,
        ..alice()
    };
    let token = issue(&store, &inactive).await;
    let app = app(TokenAuthLayer::bearer(store).validate(|user: &User| {
        if user.is_active {
            Ok(())
        } else {
            Err("User inactive or deleted.".into())
        }
    }));
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_rejected(
        &reply,
        StatusCode::UNAUTHORIZED,
        "User inactive or deleted.",
        Some(
            r#"Bearer realm="api", error="invalid_token", error_description="User inactive or deleted.""#,
        ),
    );
    assert!(matches!(
        reply.extensions.get::<AuthErrorKind>(),
        Some(AuthErrorKind::PrincipalRejected(_))
    ));
}

async fn allow_listed_paths_pass_without_a_token_and_ignore_bad_ones(backend: &Backend) {
    let app = app(TokenAuthLayer::bearer(backend.store())
        .allow_for([Method::POST], "/login/")
        .allow("/register/")
        .allow("/sms_codes/{mobile}/")
        .allow_prefix("/static/")
        .allow_method(Method::OPTIONS));
    for (method, uri) in [
        (Method::POST, "/login/"),
        (Method::GET, "/register/"),
        (Method::GET, "/sms_codes/13800138000/"),
        (Method::GET, "/static/app.js"),
        (Method::GET, "/static"),
        (Method::OPTIONS, "/me/"),
    ] {
        let reply = send(
            &app,
            empty(http::Request::builder().method(method.clone()).uri(uri)),
        )
        .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "anonymous"),
            "{method} {uri}"
        );
        let with_garbage = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("authorization", "Bearer x y z");
        assert_eq!(
            send(&app, empty(with_garbage)).await.status,
            StatusCode::OK,
            "{method} {uri}"
        );
    }
    for (method, uri) in [
        (Method::GET, "/login/"),
        (Method::GET, "/sms_codes/"),
        (Method::GET, "/sms_codes/1/2/"),
        (Method::GET, "/static-admin/"),
        (Method::DELETE, "/me/"),
    ] {
        let reply = send(
            &app,
            empty(http::Request::builder().method(method.clone()).uri(uri)),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

async fn bypass_attempts_never_reach_a_protected_route(backend: &Backend) {
    let app = app(TokenAuthLayer::bearer(backend.store())
        .allow("/login/")
        .allow_prefix("/static")
        .allow("/sms_codes/{mobile}/"));
    let cases = [
        ("//login/../admin", StatusCode::BAD_REQUEST),
        ("/login/../admin", StatusCode::BAD_REQUEST),
        ("/login/%2e%2e/admin", StatusCode::BAD_REQUEST),
        ("/login/%2E%2E/admin", StatusCode::BAD_REQUEST),
        ("/login/.%2e/admin", StatusCode::BAD_REQUEST),
        ("/login%2f..%2fadmin", StatusCode::BAD_REQUEST),
        ("/static/..%5cadmin", StatusCode::BAD_REQUEST),
        ("/static/%252e%252e/admin", StatusCode::BAD_REQUEST),
        ("/login/;/../admin", StatusCode::BAD_REQUEST),
        ("/login;x=1/", StatusCode::BAD_REQUEST),
        ("/./admin", StatusCode::BAD_REQUEST),
        ("/static/./../admin", StatusCode::BAD_REQUEST),
        ("/sms_codes/1/../../admin", StatusCode::BAD_REQUEST),
        ("/LOGIN/", StatusCode::UNAUTHORIZED),
        ("/Login/", StatusCode::UNAUTHORIZED),
        ("/login", StatusCode::UNAUTHORIZED),
        ("/login//", StatusCode::BAD_REQUEST),
        ("/login/admin", StatusCode::UNAUTHORIZED),
        ("/login-admin/", StatusCode::UNAUTHORIZED),
        ("/staticadmin", StatusCode::UNAUTHORIZED),
        ("/static-admin/x", StatusCode::UNAUTHORIZED),
        ("/%6cogin/", StatusCode::UNAUTHORIZED),
        ("/sms_codes/x/y/", StatusCode::UNAUTHORIZED),
    ];
    for (uri, status) in cases {
        let reply = send(&app, empty(get(uri))).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.body);
        assert_ne!(reply.body, "anonymous", "{uri} reached the handler");
        if status == StatusCode::BAD_REQUEST {
            assert_rejected(
                &reply,
                status,
                "The request was rejected because the URL was not normalized.",
                None,
            );
        }
    }
}

async fn optional_paths_attach_a_principal_when_there_is_one(backend: &Backend) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;
    let app = app(TokenAuthLayer::bearer(store)
        .optional("/articles/")
        .optional_prefix("/public"));
    let reply = send(&app, empty(get("/articles/"))).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    let reply = send(
        &app,
        empty(get("/public/x").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "user:alice")
    );
    let reply = send(
        &app,
        empty(get("/articles/").header("authorization", "Bearer unknown")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = send(
        &app,
        empty(get("/articles/").header("authorization", "Bearer a b")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn the_rejection_response_is_replaceable(backend: &Backend) {
    let layer = TokenAuthLayer::<User>::bearer(backend.store())
        .build()
        .unwrap()
        .with_rejection_response(|err: &AuthError| {
            let body = serde_json::json!({"code": 1008, "msg": err.kind().message()});
            http::Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Bytes::from(body.to_string()))
                .unwrap()
        });
    let service = ServiceBuilder::new().layer(layer).service_fn(whoami);
    let reply = send(&service, empty(get("/me/"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.body,
        r#"{"code":1008,"msg":"Authentication credentials were not provided."}"#
    );
    assert_eq!(
        reply.headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="api""#
    );
    assert_eq!(
        reply.extensions.get::<AuthErrorKind>(),
        Some(&AuthErrorKind::NotAuthenticated)
    );
}

async fn tokens_hashed_at_rest_authenticate_and_leave_no_token_in_redis(backend: &Backend) {
    let store = backend.store();
    let keys = TokenKeys::new()
        .prefix("token:")
        .storage(TokenStorage::Sha256);
    let tokens = Tokens::new(store.clone(), |u: &User| u.id.to_string()).keys(keys.clone());
    let token = tokens.issue(&alice()).await.unwrap();
    match backend.server() {
        Some(redis) => {
            let dump = redis.command(&["KEYS", "*"]);
            assert!(
                !dump.contains(&token),
                "the token itself is in Redis: {dump}"
            );
            assert!(dump.contains(&format!(":1:{}", keys.key(&token))), "{dump}");
        }
        None => {
            assert!(store.get(&token).await.unwrap().is_none());
            assert!(store.get(&keys.key(&token)).await.unwrap().is_some());
        }
    }

    let app = app(TokenAuthLayer::bearer(store.clone()).token_keys(keys));
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(reply.body, "user:alice");
    // the digest itself is not a token
    let digest = TokenKeys::new().storage(TokenStorage::Sha256).key(&token);
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&digest))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    assert_eq!(tokens.list("1").await.unwrap()[0].id, digest);
    assert!(tokens.revoke(&token).await.unwrap());
    let reply = send(
        &app,
        empty(get("/me/").header("authorization", bearer(&token))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// Two instances on one Redis, the second with a near cache: a token revoked on the first,
/// alone or with all its user's tokens, is refused by the second within 50 ms, though the
/// second authenticates from process memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_another_instance_is_refused_within_50_ms() {
    use std::time::Instant;

    let redis = TestRedis::start();
    let a: AnyStore = RedisStore::builder(redis.url())
        .build()
        .await
        .unwrap()
        .into();
    let near = crate::support::near_store(&redis).await;
    let b = app(TokenAuthLayer::bearer(near));
    let tokens = Tokens::new(a.clone(), |u: &User| u.id.to_string());
    let request = |t: &str| empty(get("/me/").header("authorization", bearer(t)));
    let refused_within = |token: String| {
        let b = b.clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(1) {
                if send(&b, request(&token)).await.status == StatusCode::UNAUTHORIZED {
                    return started.elapsed();
                }
                tokio::task::yield_now().await;
            }
            started.elapsed()
        }
    };

    let token = tokens.issue(&alice()).await.unwrap();
    assert_eq!(send(&b, request(&token)).await.status, StatusCode::OK);
    let gets = command_calls(&redis, "get");
    for _ in 0..20 {
        assert_eq!(send(&b, request(&token)).await.status, StatusCode::OK);
    }
    assert_eq!(
        command_calls(&redis, "get"),
        gets,
        "authenticated from memory"
    );
    assert!(tokens.revoke(&token).await.unwrap());
    let took = refused_within(token).await;
    assert!(
        took < Duration::from_millis(50),
        "revoked token accepted for {took:?}"
    );

    let first = tokens.issue(&alice()).await.unwrap();
    let second = tokens.issue(&alice()).await.unwrap();
    for token in [&first, &second] {
        assert_eq!(send(&b, request(token)).await.status, StatusCode::OK);
        assert_eq!(send(&b, request(token)).await.status, StatusCode::OK);
    }
    assert_eq!(tokens.revoke_all("1").await.unwrap(), 2);
    for token in [first, second] {
        let took = refused_within(token).await;
        assert!(
            took < Duration::from_millis(50),
            "revoked-all token accepted for {took:?}"
        );
    }
}

/// Adversary's finding G1: a token the near cache does not hold is read with its expiry,
/// and refreshed in the same lookup when that is due, whatever the near cache holds later
/// (it may be too small, down, or refused by ACLs). Here the token was stored with a minute
/// and the near cache has never read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_token_the_near_cache_does_not_hold_is_refreshed_when_its_expiry_says_so() {
    let redis = TestRedis::start();
    let store = AnyStore::from(crate::support::near_store(&redis).await);
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .ttl(Duration::from_secs(60))
        .issue(&alice())
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let app = app(TokenAuthLayer::bearer(store.clone())
        .sliding_expiration(hour)
        .sliding_refresh_interval(Duration::from_secs(600)));
    let me = || empty(get("/me/").header("authorization", bearer(&token)));
    redis.command(&["CONFIG", "RESETSTAT"]);
    assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    let left = store.ttl(&token).await.unwrap().remaining().unwrap();
    assert!(left > 50 * 60 * Duration::from_secs(1), "{left:?}");
    assert_eq!(command_calls(&redis, "getex"), 1);
    // the refresh left nothing in the near cache; another client now rewrites the token with
    // a minute, and the next request reads that expiry and refreshes
    let full_key = format!(":1:{token}");
    let stored = redis.command(&["GET", &full_key]);
    redis.command(&["SET", &full_key, &stored, "PX", "60000"]);
    assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    let left = store.ttl(&token).await.unwrap().remaining().unwrap();
    assert!(left > 50 * 60 * Duration::from_secs(1), "{left:?}");
    assert_eq!(command_calls(&redis, "getex"), 2);
    // fresh enough now: read (filling the near cache), then served from it, not refreshed
    for _ in 0..3 {
        assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    }
    assert_eq!(command_calls(&redis, "getex"), 2);
}

/// Adversary's finding H2: a sliding TTL past the longest expiry a store keeps leaves the
/// token without one once refreshed; a near cache then serves it without refreshing it on
/// every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_ttl_past_the_longest_expiry_is_not_refreshed_on_every_request() {
    let redis = TestRedis::start();
    let store = AnyStore::from(crate::support::near_store(&redis).await);
    let token = issue(&store, &alice()).await;
    let app = app(TokenAuthLayer::bearer(store.clone())
        .sliding_expiration(Duration::from_secs(200 * 365 * 24 * 3600))
        .sliding_refresh_interval(Duration::from_secs(600)));
    let me = || empty(get("/me/").header("authorization", bearer(&token)));
    assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    assert_eq!(store.ttl(&token).await.unwrap().remaining(), None);
    redis.command(&["CONFIG", "RESETSTAT"]);
    for _ in 0..3 {
        assert_eq!(send(&app, me()).await.status, StatusCode::OK);
    }
    assert_eq!(command_calls(&redis, "getex"), 0);
}

/// Adversary's finding G2: the longest settings never overflow a request's arithmetic.
async fn a_refresh_interval_near_duration_max_never_panics_a_request(backend: &Backend) {
    let store = backend.store();
    let token = issue(&store, &alice()).await;
    let app = app(TokenAuthLayer::bearer(store.clone())
        .sliding_expiration(Duration::MAX)
        .sliding_refresh_interval(Duration::MAX - Duration::from_nanos(1)));
    for _ in 0..3 {
        let reply = send(
            &app,
            empty(get("/me/").header("authorization", bearer(&token))),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_with_503_and_recovers() {
    let mut redis = TestRedis::start();
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let token = issue(&store.clone().into(), &alice()).await;
    let closed = app(TokenAuthLayer::bearer(store.clone()));
    let open = app(TokenAuthLayer::bearer(store.clone()).on_store_error(FailurePolicy::Open));
    let request = |t: &str| empty(get("/me/").header("authorization", bearer(t)));

    redis.pause();
    let reply = send(&closed, request(&token)).await;
    assert_rejected(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "Authentication is temporarily unavailable.",
        None,
    );
    assert_eq!(
        reply.extensions.get::<AuthErrorKind>(),
        Some(&AuthErrorKind::StoreUnavailable)
    );
    let reply = send(&open, request(&token)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "fail open must not let the request through"
    );
    redis.resume();
    let back = eventually(Duration::from_secs(5), || async {
        send(&closed, request(&token)).await.status == StatusCode::OK
    })
    .await;
    assert!(back, "no recovery after the stall");

    redis.kill();
    assert_eq!(
        send(&closed, request(&token)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    redis.restart();
    // the restarted server kept nothing: log in again
    let token = eventually_issue(&store).await;
    assert_eq!(send(&closed, request(&token)).await.body, "user:alice");
}

async fn eventually_issue(store: &RedisStore) -> String {
    let tokens = Tokens::new(store.clone(), |u: &User| u.id.to_string());
    for _ in 0..500 {
        if let Ok(token) = tokens.issue(&alice()).await {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("could not issue a token after Redis came back");
}

#[test]
fn invalid_allow_list_entries_fail_at_build_time() {
    let store = tower_redis_http::store::MemoryStore::new();
    for (builder, option) in [
        (
            TokenAuthLayer::<User>::bearer(store.clone()).allow("login/"),
            "allow",
        ),
        (
            TokenAuthLayer::<User>::bearer(store.clone()).allow_prefix("/a/../b"),
            "allow_prefix",
        ),
        (
            TokenAuthLayer::<User>::bearer(store.clone()).optional("/x/{id"),
            "optional",
        ),
        (
            TokenAuthLayer::<User>::bearer(store.clone()).token_sources([]),
            "token_sources",
        ),
        (
            TokenAuthLayer::<User>::bearer(store).sliding_expiration(Duration::ZERO),
            "sliding_expiration",
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.to_string().contains(&format!("`{option}`")), "{err}");
    }
}

/// Issue 29, finding 5: a token read from a cookie or the query is a credential to the
/// cache as `Authorization` is (RFC 9111 §3.5), with the cache inside the auth layer (it
/// sees the request's mark) or outside (the response's): alice's page never reaches bob,
/// nor anyone without a token.
async fn the_cache_treats_a_token_from_any_source_as_a_credential(backend: &Backend) {
    let store = backend.store();
    let bob = User {
        id: 2,
        username: "bob".into(),
        is_active: true,
    };
    let tokens = [issue(&store, &alice()).await, issue(&store, &bob).await];
    let cache = || {
        tower_redis_http::cache::ResponseCacheLayer::cache_page(
            store.clone(),
            Duration::from_secs(60),
        )
        .build()
        .unwrap()
    };
    let auth = || {
        TokenAuthLayer::<User>::bearer(store.clone())
            .token_from(TokenSource::cookie("token"))
            .token_from(TokenSource::query("token"))
            .build()
            .unwrap()
    };
    let inside = ServiceBuilder::new()
        .layer(auth())
        .layer(cache())
        .service_fn(whoami);
    let outside = ServiceBuilder::new()
        .layer(cache())
        .layer(auth())
        .service_fn(whoami);
    let by_cookie = |token: &str| empty(get("/me/").header("cookie", format!("token={token}")));
    let by_query = |token: &str| empty(get(&format!("/me/?token={token}")));
    for round in 0..3 {
        for (token, who) in tokens.iter().zip(["user:alice", "user:bob"]) {
            for request in [by_cookie(token), by_query(token)] {
                assert_eq!(
                    send(&inside, request).await.body,
                    who,
                    "inside, round {round}"
                );
            }
            for request in [by_cookie(token), by_query(token)] {
                assert_eq!(
                    send(&outside, request).await.body,
                    who,
                    "outside, round {round}"
                );
            }
        }
        let anonymous = send(&outside, empty(get("/me/"))).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            anonymous.body
        );
    }
}

crate::on_each_backend!(
    the_cache_treats_a_token_from_any_source_as_a_credential,
    a_valid_bearer_token_reaches_the_handler_with_the_principal,
    every_token_source_works,
    each_rejection_has_its_status_challenge_and_detail,
    drf_mode_answers_with_the_token_keyword,
    expired_and_revoked_tokens_are_invalid,
    a_token_that_is_too_long_never_reaches_redis_and_a_valid_one_costs_one_get,
    sliding_expiration_pushes_the_ttl_out_in_the_same_round_trip,
    a_sliding_token_is_refreshed_once_it_has_less_than_the_ttl_less_the_interval_left,
    principals_of_equal_json_do_not_share_state_between_tokens,
    a_refresh_interval_near_duration_max_never_panics_a_request,
    a_principal_changed_in_the_store_is_seen_at_once,
    a_bare_user_id_as_django_stores_it_is_a_principal,
    a_corrupt_stored_entry_is_an_invalid_token_not_a_server_error,
    validation_rejects_inactive_users_with_its_own_reason,
    allow_listed_paths_pass_without_a_token_and_ignore_bad_ones,
    bypass_attempts_never_reach_a_protected_route,
    optional_paths_attach_a_principal_when_there_is_one,
    the_rejection_response_is_replaceable,
    tokens_hashed_at_rest_authenticate_and_leave_no_token_in_redis,
);
