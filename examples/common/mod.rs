//! What the three framework examples share: the stores, the layers and the handlers' logic.
//! Each example only adapts these to its framework's routing and request types.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_redis_http::auth::{TokenAuthLayer, Tokens};
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::{ClientAddressHeader, Commit, Key, RateLimitLayer, Rule};
use tower_redis_http::store::{
    AnyStore, MemoryStore, Pem, RedisStore, RedisStoreBuilder, Store, Stores,
};
use tower_redis_http::{ConfigError, FailurePolicy};

/// The principal stored under each token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub is_active: bool,
}

#[derive(Debug, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The demo's state: named stores, token issuing, the server's limits, and how often
/// `/articles/` really ran.
#[derive(Clone, Debug)]
pub struct Demo {
    pub stores: Stores,
    pub tokens: Tokens<User>,
    pub limits: Limits,
    /// The proxies whose `Forwarded` / `X-Forwarded-For` is believed: `TRUSTED_PROXIES`,
    /// comma-separated addresses or networks, none by default.
    pub trusted_proxies: Vec<String>,
    /// The header those proxies name the client in: `CLIENT_ADDRESS_HEADER`
    /// (`x-forwarded-for` by default, `forwarded` for RFC 7239, or another name such as
    /// `x-real-ip`). Set it to what the proxy in front writes: a header the proxy passes
    /// through from clients would let each client pick its own rate-limit key.
    pub client_address_header: ClientAddressHeader,
    article_runs: Arc<AtomicU64>,
}

/// What every example's server refuses to wait for or to buffer. Examples are copied into
/// production: a server without these keeps a connection open for a client that never
/// finishes its header, and reads a body of any size into memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request body a handler reads; a larger one is answered 413. Defaults to
    /// 64 KiB, plenty for a login form.
    pub max_body: usize,
    /// How long a client may take to send a request's header before the connection is
    /// closed. Defaults to 10 s.
    pub header_read: Duration,
    /// How long a request body may stall between two chunks before reading it fails.
    /// Defaults to 10 s.
    pub body_read: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
        }
    }
}

/// A handler's answer, independent of the framework: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// Sent as `Cache-Control`, for answers that must not be cached.
    pub cache_control: Option<&'static str>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            cache_control: None,
        }
    }

    fn status(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            cache_control: None,
        }
    }

    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.body.to_string())
    }
}

/// The Prometheus recorder the layers' metrics go to (the crate's `metrics` feature),
/// installed on first use; its text is what `GET /metrics` answers, to anyone: the auth layer
/// allows the path. Serve it on an address only the scraper reaches, or behind a rule of the
/// proxy in front, before copying this.
#[cfg(feature = "metrics")]
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// Makes builders for the Redis the environment names.
pub type RedisFromEnv = Box<dyn Fn() -> RedisStoreBuilder + Send + Sync>;

/// The Redis the environment names, and a label for it; `None` when it names none:
///
/// - `REDIS_CLUSTER`: a Redis Cluster, through its seed node URLs (comma-separated);
/// - `REDIS_SENTINELS`: sentinels (`host:port`, comma-separated) watching the master
///   `REDIS_SENTINEL_MASTER` (`mymaster` by default);
/// - `REDIS_URL`: one server (`rediss://` for TLS).
///
/// A `rediss://` server is trusted by the system's roots, or by the CA in the PEM file
/// `REDIS_CA_CERT`.
pub fn redis_from_env() -> Option<(RedisFromEnv, &'static str)> {
    redis_from(|name| std::env::var(name).ok())
}

/// [`redis_from_env`] on the variables `var` gives.
pub fn redis_from(var: impl Fn(&str) -> Option<String>) -> Option<(RedisFromEnv, &'static str)> {
    let listed = |name: &str| -> Option<Vec<String>> {
        let value = var(name)?;
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        (!items.is_empty()).then_some(items)
    };
    if let Some(seeds) = listed("REDIS_CLUSTER") {
        let redis: RedisFromEnv =
            Box::new(move || with_ca_from_env(RedisStore::cluster(seeds.clone())));
        return Some((redis, "redis (cluster)"));
    }
    if let Some(sentinels) = listed("REDIS_SENTINELS") {
        let master = var("REDIS_SENTINEL_MASTER").unwrap_or_else(|| "mymaster".to_owned());
        let redis: RedisFromEnv =
            Box::new(move || RedisStore::sentinel(sentinels.clone(), master.clone()));
        return Some((redis, "redis (sentinel)"));
    }
    let url = var("REDIS_URL")?;
    let redis: RedisFromEnv = Box::new(move || with_ca_from_env(RedisStore::builder(&url)));
    Some((redis, "redis"))
}

/// `builder` trusting the CA in `REDIS_CA_CERT`, when it names one.
fn with_ca_from_env(builder: RedisStoreBuilder) -> RedisStoreBuilder {
    match std::env::var_os("REDIS_CA_CERT") {
        Some(ca) => builder.tls_root_certificate(Pem::file(ca)),
        None => builder,
    }
}

impl Demo {
    /// The demo on the Redis the environment names (see [`redis_from_env`]), else on the
    /// embedded memory store.
    pub async fn from_env() -> Result<(Self, &'static str), ConfigError> {
        let (mut demo, backend) = match redis_from_env() {
            Some((redis, backend)) => (Self::on_redis_with(redis).await?, backend),
            None => (Self::in_memory()?, "memory"),
        };
        demo.trusted_proxies = trusted_proxies_from_env();
        demo.client_address_header = client_address_header_from_env();
        Ok((demo, backend))
    }

    /// The demo on the Redis that `redis` makes builders for (see [`redis_from_env`]).
    pub async fn on(redis: RedisFromEnv) -> Result<Self, ConfigError> {
        Self::on_redis_with(redis).await
    }

    pub async fn on_redis(url: &str) -> Result<Self, ConfigError> {
        let url = url.to_owned();
        Self::on_redis_with(Box::new(move || {
            with_ca_from_env(RedisStore::builder(&url))
        }))
        .await
    }

    /// The demo on the Redis that `redis` makes builders for.
    async fn on_redis_with(redis: RedisFromEnv) -> Result<Self, ConfigError> {
        let store = |prefix: &'static str| {
            redis()
                .key_prefix(prefix)
                .command_timeout(Duration::from_millis(250))
                .build()
        };
        Ok(Self::with(
            Stores::builder()
                .store("default", store("demo").await?)
                .store("verify_codes", store("codes").await?)
                .build(),
        ))
    }

    pub fn in_memory() -> Result<Self, ConfigError> {
        Ok(Self::with(
            Stores::builder()
                .store(
                    "default",
                    MemoryStore::builder().key_prefix("demo").build()?,
                )
                .store(
                    "verify_codes",
                    MemoryStore::builder().key_prefix("codes").build()?,
                )
                .build(),
        ))
    }

    fn with(stores: Stores) -> Self {
        let tokens = Tokens::new(
            stores.get("default").expect("configured above"),
            |user: &User| user.id.to_string(),
        )
        .ttl(Duration::from_secs(72 * 3600));
        Self {
            stores,
            tokens,
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            client_address_header: ClientAddressHeader::default(),
            article_runs: Arc::default(),
        }
    }

    pub fn store(&self) -> AnyStore {
        self.stores.get("default").expect("configured above")
    }

    /// Token authentication: open login, register and SMS routes, CORS preflight anywhere.
    pub fn auth_layer(&self) -> TokenAuthLayer<User> {
        TokenAuthLayer::bearer(self.store())
            .allow_for([Method::POST], "/login/")
            .allow_for([Method::POST], "/register/")
            .allow("/sms_codes/{mobile}/")
            .allow("/articles/")
            .allow("/healthz")
            .allow("/metrics")
            .allow_method(Method::OPTIONS)
            .validate(|user: &User| {
                if user.is_active {
                    Ok(())
                } else {
                    Err("User inactive or deleted.".into())
                }
            })
            .build()
            .expect("the demo's auth configuration is valid")
    }

    /// `/articles/` cached for 30 s, with an ETag computed for clients to revalidate.
    pub fn cache_layer(&self) -> ResponseCacheLayer {
        ResponseCacheLayer::cache_page(self.store(), Duration::from_secs(30))
            .compute_etag(true)
            .x_cache_header(true)
            // behind these proxies, X-Forwarded-Host / -Proto are keyed, not refused
            .trusted_proxies(self.trusted_proxies.iter().map(String::as_str))
            .build()
            .expect("TRUSTED_PROXIES holds addresses or networks such as 10.0.0.0/8")
    }

    /// One SMS code per phone number per minute (a failed send does not count), twenty codes
    /// an hour per client address, and ten login attempts a minute per client address
    /// (brute-force protection, failing closed). The client address is the peer's, or what a
    /// proxy in `TRUSTED_PROXIES` forwarded.
    pub fn rate_limit_layer(&self) -> RateLimitLayer {
        RateLimitLayer::builder(self.store())
            .rule(Rule::cooldown(
                "sms",
                Duration::from_secs(60),
                Key::path_segment("/sms_codes/{mobile}/", "mobile"),
            ))
            .rule(
                // every attempt counts, failed ones above all; a guess the limit cannot count
                // (the store down, its room full) is refused rather than let through
                Rule::fixed_window("login", "10/m", Key::client_ip())
                    .when(|request| request.method == Method::POST && request.path_is("/login/"))
                    .commit(Commit::Always)
                    .on_store_error(FailurePolicy::Closed),
            )
            .rule(
                // one number's cooldown does not stop one client asking codes for many
                // HEAD too: every router here answers it with the GET handler, which sends
                Rule::fixed_window("sms_per_address", "20/h", Key::client_ip()).when(|request| {
                    (request.method == Method::GET || request.method == Method::HEAD)
                        && request.path_is("/sms_codes/{mobile}/")
                }),
            )
            .trusted_proxies(self.trusted_proxies.iter().map(String::as_str))
            .client_address_header(self.client_address_header.clone())
            .commit(Commit::OnSuccess)
            .build()
            .expect("TRUSTED_PROXIES holds addresses or networks such as 10.0.0.0/8")
    }

    /// `POST /login/`: the demo account is alice / wonderland.
    pub async fn login(&self, body: &[u8]) -> Answer {
        let Ok(credentials) = serde_json::from_slice::<Credentials>(body) else {
            return Answer::status(
                StatusCode::BAD_REQUEST,
                json!({"detail": "Send {\"username\": ..., \"password\": ...}."}),
            );
        };
        if credentials.username != "alice" || credentials.password != "wonderland" {
            return Answer::status(
                StatusCode::FORBIDDEN,
                json!({"detail": "Invalid username or password."}),
            );
        }
        let user = User {
            id: 1,
            username: "alice".into(),
            is_active: true,
        };
        match self.tokens.issue(&user).await {
            Ok(token) => Answer::ok(json!({ "token": token })),
            Err(err) => {
                tracing::error!(error = %err, "could not issue a token");
                Answer::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"detail": "Try again later."}),
                )
            }
        }
    }

    /// `POST /logout/`: revokes the presented token.
    pub async fn logout(&self, token: &str) -> Answer {
        match self.tokens.revoke(token).await {
            Ok(_) => Answer::ok(json!({"message": "logged out"})),
            Err(err) => {
                tracing::error!(error = %err, "could not revoke a token");
                Answer::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"detail": "Try again later."}),
                )
            }
        }
    }

    /// `POST /register/`: open to everyone; the demo keeps no accounts, it only answers.
    pub fn register(&self, body: &[u8]) -> Answer {
        match serde_json::from_slice::<Credentials>(body) {
            Ok(credentials)
                if !credentials.username.is_empty() && credentials.password.len() >= 8 =>
            {
                Answer::status(
                    StatusCode::CREATED,
                    json!({"username": credentials.username}),
                )
            }
            _ => Answer::status(
                StatusCode::BAD_REQUEST,
                json!({"detail": "A username and a password of 8 or more characters are needed."}),
            ),
        }
    }

    /// `GET /healthz`: every store pinged within its command timeout; 200 when all answer,
    /// else 503 with what failed. Open to all (no token), never cached or rate limited.
    pub async fn healthz(&self) -> Answer {
        let mut stores = serde_json::Map::new();
        let mut ready = true;
        for (alias, answer) in self.stores.ping().await {
            let state = match answer {
                Ok(()) => "ok".to_owned(),
                Err(err) => {
                    ready = false;
                    err.to_string()
                }
            };
            stores.insert(alias.to_owned(), json!(state));
        }
        let status = if ready { "ok" } else { "unavailable" };
        Answer {
            status: if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            body: json!({"status": status, "stores": stores}),
            cache_control: Some("no-store"),
        }
    }

    /// `GET /me/`: the principal the auth layer attached.
    pub fn me(&self, user: &User) -> Answer {
        Answer::ok(json!(user))
    }

    /// `GET /articles/`: counts its real runs, so caching shows.
    pub fn articles(&self) -> Answer {
        let runs = self.article_runs.fetch_add(1, Ordering::SeqCst) + 1;
        Answer::ok(json!({
            "articles": [
                {"id": 1, "title": "Caching pages with Redis"},
                {"id": 2, "title": "Send flags without races"},
            ],
            "handler_runs": runs,
        }))
    }

    /// `GET /sms_codes/{mobile}/`: stores a code for 300 s in `verify_codes` and logs a
    /// digest of the number (never the number or the code).
    /// The rate-limit layer in front allows one per number per minute.
    pub async fn sms_code(&self, mobile: &str) -> Answer {
        if !valid_mobile(mobile) {
            return Answer::status(StatusCode::NOT_FOUND, json!({"detail": "Not found."}));
        }
        let mut random = [0u8; 4];
        if getrandom::fill(&mut random).is_err() {
            return Answer::status(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": "Try again later."}),
            );
        }
        let code = format!("{:06}", u32::from_le_bytes(random) % 1_000_000);
        let codes = self.stores.get("verify_codes").expect("configured above");
        let stored = codes
            .set(
                &format!("sms_{mobile}"),
                Bytes::from(code.clone()),
                Duration::from_secs(300).into(),
            )
            .await;
        match stored {
            Ok(()) => {
                // neither the number nor its code goes to the log, which more people read
                // than the SMS reaches: a digest tells one number's requests apart, as the
                // crate logs keys; the code is in `verify_codes` under `sms_<mobile>`
                tracing::info!(
                    mobile = %digest(mobile),
                    "verification code stored (sent by SMS in a real service)"
                );
                Answer {
                    cache_control: Some("no-store"),
                    ..Answer::ok(json!({"message": "ok"}))
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "could not store a verification code");
                Answer::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"detail": "Try again later."}),
                )
            }
        }
    }
}

/// A short digest of `text` for logs, `#` and 12 hex digits of a SHA-256 keyed with a
/// secret this process draws at start: the same text gives the same digest within the
/// process, and the log does not hold the text. Keyed, since a phone number is one of a few
/// billion: an unkeyed digest of one is reversed by trying them all.
pub fn digest(text: &str) -> String {
    use sha2::Digest as _;
    static SECRET: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        let mut secret = [0u8; 16];
        // without randomness the digest is merely unkeyed; the number is still not logged
        let _ = getrandom::fill(&mut secret);
        secret
    });
    let hash = sha2::Sha256::new()
        .chain_update(secret)
        .chain_update(text.as_bytes())
        .finalize();
    let mut out = String::from("#");
    for byte in &hash[..6] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A path segment as the handler must read it: percent-decoded, as axum's `Path` extractor
/// hands it over, so that every spelling of one number (`%31380...`) is the number the
/// rate-limit layer keyed. `None` when it does not decode to UTF-8.
pub fn path_value(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|value| value.into_owned())
}

/// Mainland China mobile numbers, as the original view checks: `1[3-9]\d{9}`.
pub fn valid_mobile(mobile: &str) -> bool {
    let bytes = mobile.as_bytes();
    bytes.len() == 11
        && bytes[0] == b'1'
        && (b'3'..=b'9').contains(&bytes[1])
        && bytes.iter().all(u8::is_ascii_digit)
}

/// `TRUSTED_PROXIES`: comma-separated addresses or networks (`10.0.0.0/8`), none when unset.
pub fn trusted_proxies_from_env() -> Vec<String> {
    std::env::var("TRUSTED_PROXIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|network| !network.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `CLIENT_ADDRESS_HEADER`: the header the trusted proxies name the client in.
///
/// # Panics
///
/// When the value is not a header name: the server would otherwise key clients wrongly.
pub fn client_address_header_from_env() -> ClientAddressHeader {
    let Ok(name) = std::env::var("CLIENT_ADDRESS_HEADER") else {
        return ClientAddressHeader::default();
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "" | "x-forwarded-for" => ClientAddressHeader::XForwardedFor,
        "forwarded" => ClientAddressHeader::Forwarded,
        other => ClientAddressHeader::Named(
            http::HeaderName::from_bytes(other.as_bytes())
                .expect("CLIENT_ADDRESS_HEADER names a header, such as x-real-ip"),
        ),
    }
}

/// The address to listen on: `ADDR`, else 127.0.0.1 on `default_port`.
///
/// # Errors
///
/// An `ADDR` that is not an address and port: said at start, not replaced by the default.
pub fn addr(default_port: u16) -> Result<std::net::SocketAddr, String> {
    match std::env::var("ADDR") {
        Ok(addr) => addr.trim().parse().map_err(|_| {
            format!("ADDR={addr:?} is not an address and port, as 127.0.0.1:{default_port}")
        }),
        Err(_) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], default_port))),
    }
}

/// What each example's `main` does: logging, the demo on Redis or memory, the listener on
/// `ADDR`, the URL printed, then `serve` until the process ends.
pub async fn run<F, Fut>(serve: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: FnOnce(tokio::net::TcpListener, Demo) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    init_tracing();
    let addr = addr(3000)?;
    let (demo, backend) = Demo::from_env().await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "listening on http://{} (store: {backend})",
        listener.local_addr()?
    );
    serve(listener, demo).await?;
    Ok(())
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}

/// Serves a tower service with hyper 1 over HTTP/1.1, one task per connection, closing
/// connections whose request header takes longer than `header_read`, and handing a
/// connection a `101` answer switched to the service that asked for it: what the examples
/// run on. (`axum::serve` has no header timeout, so the axum example runs on this too.)
pub async fn serve_tower<S, B>(
    listener: tokio::net::TcpListener,
    service: S,
    header_read: Duration,
) -> std::io::Result<()>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // out of file descriptors (EMFILE), or a connection reset before it was taken: the
            // server stays up, and tries again once connections have closed
            Err(err) => {
                tracing::warn!(error = %err, "could not accept a connection; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // the peer address, where the rate limiter looks for it by default
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                request
            })
            .service(service.clone());
        let service = hyper_util::service::TowerToHyperService::new(service);
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                // a `101 Switching Protocols` hands the connection to the service (the
                // caching proxy's WebSocket tunnel); without it hyper closes it instead
                .with_upgrades();
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}
