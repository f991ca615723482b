//! Invalidation: after unsafe requests (RFC 9111 §4.4), by URL, by pattern, and of the whole
//! namespace by a generation bump.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

use super::config::Config;
use super::key;
use crate::store::{Backend, Store, StoreError, StoreErrorKind, escape_glob};

/// How often an instance rereads the namespace generation another instance may have bumped.
const GENERATION_RECHECK: Duration = Duration::from_secs(1);

/// Invalidates entries of one [`ResponseCacheLayer`](super::ResponseCacheLayer), from
/// anywhere: an admin endpoint, a task reacting to a database change, a test.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::cache::ResponseCacheLayer;
/// use tower_redis_http::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
/// let invalidator = layer.invalidator();
/// // every variant of one page
/// invalidator.invalidate_url("http://shop.example/articles/?page=2").await?;
/// // every page under /articles/
/// invalidator.invalidate_matching("http://shop.example/articles/*").await?;
/// // everything this layer stored, on every instance sharing the store (Django's incr_version)
/// invalidator.invalidate_all().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CacheInvalidator {
    config: Arc<Config>,
}

impl std::fmt::Debug for CacheInvalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheInvalidator")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl CacheInvalidator {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    /// Deletes every stored variant of `url` (absolute, as `http://host/path?query`; a
    /// path alone takes the layer's default scheme and no host) and its learned Vary list, in
    /// one atomic step. Returns how many keys were deleted.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails or `url` is not a URI.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_redis_http::cache::ResponseCacheLayer;
    /// # use tower_redis_http::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// assert_eq!(layer.invalidator().invalidate_url("https://shop.example/").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_url(&self, url: &str) -> Result<u64, StoreError> {
        let uri: Uri = url.parse().map_err(|err| {
            StoreError::with_source(
                crate::store::StoreErrorKind::InvalidKey,
                "not a URI to invalidate",
                err,
            )
        })?;
        let url = key::url_key(
            &uri,
            &HeaderMap::new(),
            &self.config.default_scheme,
            self.config.query,
            false,
        );
        self.config.invalidate_url_key(&url).await
    }

    /// Deletes every entry whose URL matches `pattern`, where `*` stands for any run of
    /// characters, `?` for any one (the `?` that starts a query too) and `\` makes the
    /// character after it literal; every other character is itself
    /// (`https://shop.example/articles/*`). A pattern built from input (a slug, a search
    /// term) must pass that input through [`escape_pattern`], or a `*` in it widens the purge
    /// to pages it never named; [`invalidate_prefix`](Self::invalidate_prefix) does so for the
    /// common case. Runs `SCAN` over the store, never `KEYS`, so it costs a pass over the
    /// keyspace: meant for occasional administration. URLs stored by their hash (longer than
    /// 512 bytes, or with an unusual host) are not matched. Returns how many keys were
    /// deleted.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_redis_http::cache::ResponseCacheLayer;
    /// # use tower_redis_http::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// layer.invalidator().invalidate_matching("http://*/static/*").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let glob = pattern_to_glob(pattern);
        let prefix = escape_glob(&self.config.prefix());
        // the store's own prefix and version are escaped too
        let full = self
            .config
            .store
            .key_scheme()
            .make_pattern(&format!("{prefix}{{{glob}}}:*"))?;
        self.config.state.vary_lists.invalidate_all();
        self.config.state.recent_pieces.forget_all();
        self.config.store.delete_matching(&full).await
    }

    /// Deletes every entry whose URL starts with `prefix`, read literally: no character in it
    /// is a pattern (`https://shop.example/search?q=` deletes the searches, not
    /// `/searchXq=...`). The prefix is brought to the form URLs are keyed in first: scheme
    /// and host in lower case, no trailing dot, the default port left out, and characters
    /// outside ASCII percent-encoded (`café` as `caf%C3%A9`, as clients send it). Costs a `SCAN`, as
    /// [`invalidate_matching`](Self::invalidate_matching) does. Returns how many keys were
    /// deleted.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_redis_http::cache::ResponseCacheLayer;
    /// # use tower_redis_http::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// let slug = "50%-off*"; // from the database: its `*` must not widen the purge
    /// layer.invalidator().invalidate_prefix(&format!("https://shop.example/sales/{slug}")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut pattern = escape_pattern(&keyed_prefix(prefix));
        pattern.push('*');
        self.invalidate_matching(&pattern).await
    }

    /// Makes every entry of this layer unreachable at once, on every instance sharing the
    /// store, by bumping the namespace's generation (Django's `incr_version`, applied to the
    /// whole cache): new entries are keyed under the new generation and the old ones expire
    /// on their own. This instance switches at once, others within about a second. Returns
    /// the new generation.
    ///
    /// On Redis with replicas, the bump waits (Redis `WAIT`, within the command timeout) until
    /// every replica has it: a bump only the master holds would be lost with it in a
    /// failover, and the entries it invalidated would come back.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails, and one of kind
    /// [`StoreErrorKind::Timeout`](crate::store::StoreErrorKind::Timeout) when a replica did not
    /// acknowledge the bump in time (this instance has switched anyway; invalidate again).
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_redis_http::cache::ResponseCacheLayer;
    /// # use tower_redis_http::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// assert_eq!(layer.invalidator().invalidate_all().await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_all(&self) -> Result<u64, StoreError> {
        let store = &self.config.store;
        let bump = store.bump_generation(&self.config.generation_key()).await?;
        let generation = u64::try_from(bump.generation).unwrap_or(0);
        // this instance switches whatever the replicas say
        self.config
            .state
            .generation
            .fetch_max(generation, Ordering::AcqRel);
        self.config.state.vary_lists.invalidate_all();
        self.config.state.recent_pieces.forget_all();
        if !bump.replicated {
            return Err(StoreError::new(
                StoreErrorKind::Timeout,
                format!(
                    "cache generation {generation} did not reach every replica in time: a failover now could bring back the entries it invalidates; invalidate again"
                ),
            ));
        }
        Ok(generation)
    }
}

/// `prefix` in the form URLs are keyed in: the scheme and the host as
/// [`normal_host`](key::normal_host) writes them (when the prefix holds the whole host), and
/// the rest with bytes outside printable ASCII percent-encoded.
fn keyed_prefix(prefix: &str) -> String {
    fn encoded(text: &str, into: &mut String) {
        for &byte in text.as_bytes() {
            if byte.is_ascii_graphic() {
                into.push(char::from(byte));
            } else {
                into.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let mut keyed = String::with_capacity(prefix.len() + 8);
    let Some((scheme, rest)) = prefix.split_once("://") else {
        encoded(prefix, &mut keyed);
        return keyed;
    };
    let scheme = scheme.to_ascii_lowercase();
    keyed.push_str(&scheme);
    keyed.push_str("://");
    match rest.split_once('/') {
        Some((authority, path)) => {
            let host = key::normal_host(authority.as_bytes(), &scheme);
            keyed.push_str(&String::from_utf8_lossy(&host));
            keyed.push('/');
            encoded(path, &mut keyed);
        }
        // the prefix ends inside the host: only its letters can be brought to their case
        None => encoded(&rest.to_ascii_lowercase(), &mut keyed),
    }
    keyed
}

/// `text` as a pattern of [`CacheInvalidator::invalidate_matching`] that matches `text`
/// alone: `*`, `?` and `\` escaped with `\`. For a pattern built from input:
/// `format!("{}/*", escape_pattern(&url_of_the_category))`.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::escape_pattern;
///
/// assert_eq!(escape_pattern("https://shop.example/search?q=*"), r"https://shop.example/search\?q=\*");
/// ```
#[must_use]
pub fn escape_pattern(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// An [`invalidate_matching`](CacheInvalidator::invalidate_matching) pattern as a Redis glob:
/// `*` and `?` stay wildcards, `\` makes the next character literal, and every other
/// character Redis's glob would read specially (`[`, `]`, `\`, `^`, `-`) is escaped.
fn pattern_to_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => glob.push(c),
            // a trailing backslash escapes nothing: it is itself
            '\\' => match chars.next() {
                Some(literal) => {
                    glob.push('\\');
                    glob.push(literal);
                }
                None => glob.push_str("\\\\"),
            },
            c => {
                if matches!(c, '[' | ']' | '^' | '-') {
                    glob.push('\\');
                }
                glob.push(c);
            }
        }
    }
    glob
}

impl Config {
    /// The key prefix with the namespace generation, when one was bumped.
    pub(crate) fn prefix(&self) -> Cow<'_, str> {
        match self.state.generation.load(Ordering::Acquire) {
            0 => Cow::Borrowed(&self.prefix),
            generation => {
                let mut prefix = String::with_capacity(self.prefix.len() + 12);
                prefix.push_str(&self.prefix);
                prefix.push('g');
                prefix.push_str(itoa::Buffer::new().format(generation));
                prefix.push(':');
                Cow::Owned(prefix)
            }
        }
    }

    fn generation_key(&self) -> String {
        let mut key = self.prefix.clone();
        key.push_str("generation");
        key
    }

    /// Rereads the generation another instance may have bumped, at most once a second and in
    /// the background, so that requests never wait for it. With a near cache, also as soon as
    /// Redis announced a change of a key this process holds (the generation among them): the
    /// reread is then mostly local, and a bump is seen within milliseconds.
    pub(crate) fn recheck_generation(self: &Arc<Self>) {
        if let Some(changes) = self.store.near_cache_changes()
            && self
                .state
                .near_changes_seen
                .swap(changes, Ordering::Relaxed)
                != changes
        {
            self.state.generation_due.store(0, Ordering::Relaxed);
        }
        let now_ms = super::storage::unix_ms();
        let due = self.state.generation_due.load(Ordering::Relaxed);
        let next = now_ms + GENERATION_RECHECK.as_millis() as u64;
        if now_ms < due
            || self
                .state
                .generation_due
                .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let config = Arc::clone(self);
        runtime.spawn(async move {
            let stored = config.store.get_watched(&config.generation_key()).await;
            if let Ok(Some(value)) = stored
                && let Some(generation) = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                && config
                    .state
                    .generation
                    .fetch_max(generation, Ordering::AcqRel)
                    < generation
            {
                config.state.vary_lists.invalidate_all();
                config.state.recent_pieces.forget_all();
            }
        });
    }

    /// Deletes every variant of the URL keyed `url`, its Vary list and index.
    pub(crate) async fn invalidate_url_key(&self, url: &str) -> Result<u64, StoreError> {
        self.state.vary_lists.invalidate(url);
        // before the store's delete: a range request meanwhile finds neither
        self.state.recent_pieces.forget_url(url);
        let index = key::index_key(&self.prefix(), url);
        self.store.index_delete_all(&index).await
    }
}

/// RFC 9111 §4.4: a non-error response to an unsafe request invalidates. Every method is
/// unsafe unless it is known to be safe (RFC 9110 §9.2.1): the safe methods of RFC 9110, and
/// the extension methods the IANA method registry marks safe. An unknown extension method
/// (`M-SEARCH`, a custom `PURGE`) invalidates, as POST does: a cache that let it pass would
/// keep serving what it may have changed.
pub(crate) fn invalidates(method: &Method) -> bool {
    const SAFE_EXTENSIONS: [&str; 4] = ["PROPFIND", "REPORT", "SEARCH", "PRI"];
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && !SAFE_EXTENSIONS.contains(&method.as_str())
}

/// The URL keys a non-error response to an unsafe request invalidates: the target, and the
/// `Location` / `Content-Location` on the same origin (a cross-origin one could be used to
/// evict another site's entries).
pub(crate) fn invalidated_urls(
    config: &Config,
    target: &Uri,
    request: &HeaderMap,
    forwarded: bool,
    status: StatusCode,
    response: &HeaderMap,
) -> Vec<String> {
    if !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let url = |uri: &Uri| {
        key::url_key(
            uri,
            request,
            &config.default_scheme,
            config.query,
            forwarded,
        )
    };
    let target_url = url(target);
    let origin = origin_of(&target_url).to_owned();
    let mut urls = vec![target_url];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(uri) = response
            .get(&name)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<Uri>().ok())
        else {
            continue;
        };
        // a relative reference takes the request's origin; only absolute paths are resolved
        if uri.authority().is_none() && !uri.path().starts_with('/') {
            continue;
        }
        let candidate = match uri.authority() {
            Some(_) => url(&uri),
            None => {
                let mut parts = target.clone().into_parts();
                parts.path_and_query = uri.path_and_query().cloned();
                match Uri::from_parts(parts) {
                    Ok(resolved) => url(&resolved),
                    Err(_) => continue,
                }
            }
        };
        if origin_of(&candidate) == origin && !urls.contains(&candidate) {
            urls.push(candidate);
        }
    }
    urls
}

/// `scheme://host` of a URL key (a hashed key is its own origin: never equal to another).
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url.len(), |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(origin_of("https://a.example/x?y"), "https://a.example");
        assert_eq!(origin_of("http://a.example:8080"), "http://a.example:8080");
        assert_ne!(origin_of("#0123"), origin_of("https://a.example/"));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("cache:{a*b?[c]}"), "cache:{a\\*b\\?\\[c\\]}");
        assert_eq!(pattern_to_glob("/a*/[b]?"), "/a*/\\[b\\]?");
    }

    #[test]
    fn a_pattern_escapes_what_follows_a_backslash_and_an_escaped_text_matches_itself() {
        assert_eq!(pattern_to_glob(r"/s\?q=\*x*"), r"/s\?q=\*x*");
        assert_eq!(pattern_to_glob(r"/a\\b"), r"/a\\b");
        assert_eq!(pattern_to_glob(r"/end\"), r"/end\\");
        assert_eq!(pattern_to_glob(r"/\[x\]"), r"/\[x\]");
        for text in ["/search?q=*", r"a\b", "x[y]-^z", "plain", "*?*"] {
            let glob = pattern_to_glob(&escape_pattern(text));
            // every character of the text is matched as itself
            assert!(!glob.replace(r"\*", "").contains('*'), "{text}: {glob}");
        }
    }
}
