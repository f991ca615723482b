//! How a logical key becomes the key stored: Django's `prefix:version:key`, raw, or a function.

use std::fmt;
use std::sync::Arc;

use super::{StoreError, StoreErrorKind};

/// A user-supplied key function: `(key, prefix, version) -> full key`, like Django's
/// `KEY_FUNCTION`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use tower_redis_http::store::KeyFn;
///
/// let hash_tagged: KeyFn = Arc::new(|key, prefix, version| format!("{prefix}:{version}:{{{key}}}"));
/// assert_eq!(hash_tagged("abc", "app", 1), "app:1:{abc}");
/// ```
pub type KeyFn = Arc<dyn Fn(&str, &str, i64) -> String + Send + Sync>;

/// The longest full key a store accepts by default, in bytes.
const DEFAULT_MAX_KEY_LEN: usize = 1024;

/// How a logical key becomes the key stored in Redis or in memory.
///
/// - [`KeyScheme::django`] (the default): `prefix:version:key`, exactly Django's default
///   `KEY_FUNCTION`, so `:1:abc` is what django-redis wrote for `cache.set("abc", ...)` with no
///   `KEY_PREFIX`. A Rust service and a Django one can share a Redis database.
/// - [`KeyScheme::raw`]: the key as given, for keys that a plain Redis client wrote.
/// - [`KeyScheme::custom`]: any function of key, prefix and version.
///
/// Full keys longer than [`max_len`](Self::max_len) (1024 bytes by default) are refused with
/// [`StoreErrorKind::InvalidKey`] before anything is sent, so request data cannot make a store
/// build unbounded keys; the layers hash their variable parts to stay well below that.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::KeyScheme;
///
/// assert_eq!(KeyScheme::default().make("abc").unwrap(), ":1:abc");
/// assert_eq!(KeyScheme::django("shop", 2).make("abc").unwrap(), "shop:2:abc");
/// assert_eq!(KeyScheme::raw().make("sms_13800138000").unwrap(), "sms_13800138000");
///
/// let tagged = KeyScheme::custom("app", 1, |key, prefix, version| format!("{prefix}:{version}:{{{key}}}"));
/// assert_eq!(tagged.make("abc").unwrap(), "app:1:{abc}");
/// ```
#[derive(Clone)]
pub struct KeyScheme {
    prefix: Arc<str>,
    version: i64,
    layout: Layout,
    max_len: usize,
}

#[derive(Clone)]
enum Layout {
    Django,
    Raw,
    Custom(KeyFn),
}

impl KeyScheme {
    /// Django's layout, `prefix:version:key`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::django("", 1).make("token").unwrap(), ":1:token");
    /// ```
    #[must_use]
    pub fn django(prefix: impl Into<Arc<str>>, version: i64) -> Self {
        Self {
            prefix: prefix.into(),
            version,
            layout: Layout::Django,
            max_len: DEFAULT_MAX_KEY_LEN,
        }
    }

    /// Keys as given: no prefix, no version.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert!(KeyScheme::raw().is_raw());
    /// ```
    #[must_use]
    pub fn raw() -> Self {
        Self {
            prefix: Arc::from(""),
            version: 1,
            layout: Layout::Raw,
            max_len: DEFAULT_MAX_KEY_LEN,
        }
    }

    /// Keys built by `key_fn(key, prefix, version)`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// let scheme = KeyScheme::custom("p", 3, |key, prefix, version| format!("{prefix}/{version}/{key}"));
    /// assert_eq!(scheme.make("k").unwrap(), "p/3/k");
    /// ```
    #[must_use]
    pub fn custom(
        prefix: impl Into<Arc<str>>,
        version: i64,
        key_fn: impl Fn(&str, &str, i64) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            prefix: prefix.into(),
            version,
            layout: Layout::Custom(Arc::new(key_fn)),
            max_len: DEFAULT_MAX_KEY_LEN,
        }
    }

    /// The same layout with another bound on full key length, in bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// let scheme = KeyScheme::raw().max_len(4);
    /// assert!(scheme.make("12345").is_err());
    /// ```
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The same layout with another version.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::default().with_version(2).make("a").unwrap(), ":2:a");
    /// ```
    #[must_use]
    pub fn with_version(&self, version: i64) -> Self {
        Self {
            version,
            ..self.clone()
        }
    }

    /// The key prefix (empty for raw keys).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::django("shop", 1).prefix(), "shop");
    /// ```
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The version (Django's `VERSION`, 1 by default).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::default().version(), 1);
    /// ```
    #[must_use]
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Whether keys are used as given, so the version plays no part.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert!(!KeyScheme::default().is_raw());
    /// ```
    #[must_use]
    pub fn is_raw(&self) -> bool {
        matches!(self.layout, Layout::Raw)
    }

    /// The full key for `key` at this scheme's version.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::InvalidKey`] when the full key is empty or longer than the bound.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::django("a", 7).make("b").unwrap(), "a:7:b");
    /// ```
    pub fn make(&self, key: &str) -> Result<String, StoreError> {
        self.make_versioned(key, self.version)
    }

    /// The full key for `key` at `version`.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::InvalidKey`] when the full key is empty or longer than the bound.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::KeyScheme;
    ///
    /// assert_eq!(KeyScheme::default().make_versioned("b", 3).unwrap(), ":3:b");
    /// ```
    pub fn make_versioned(&self, key: &str, version: i64) -> Result<String, StoreError> {
        self.build(&[key], version)
    }

    /// The full key of the logical key `parts` concatenated: what a layer building
    /// `rl:<rule>:<value>` per request needs, in one allocation instead of two.
    pub(crate) fn make_joined(&self, parts: &[&str]) -> Result<String, StoreError> {
        self.build(parts, self.version)
    }

    /// The full-key glob of the logical-key glob `glob`: the scheme's own prefix and version
    /// escaped, so that glob characters in a `KEY_PREFIX` (`shop[eu]`, `sh?p`, `a\b`) match
    /// themselves, as django-redis escapes them for `delete_pattern`. A custom key function is
    /// given the glob as its key and its result used as it is.
    pub(crate) fn make_pattern(&self, glob: &str) -> Result<String, StoreError> {
        match &self.layout {
            Layout::Django => {
                let prefix = escape_glob(&self.prefix);
                self.check(format!("{prefix}:{}:{glob}", self.version))
            }
            Layout::Raw | Layout::Custom(_) => self.build(&[glob], self.version),
        }
    }

    /// What every full key of a logical key starting with `before` starts with (prefix,
    /// version and `before`), made once so that a layer keying `rl:<rule>:<value>` per request
    /// appends only the value ([`make_from_start`](Self::make_from_start)). `None` under a
    /// custom key function, which is handed the whole logical key.
    pub(crate) fn fixed_start(&self, before: &str) -> Option<String> {
        match &self.layout {
            Layout::Django => Some(format!("{}:{}:{before}", self.prefix, self.version)),
            Layout::Raw => Some(before.to_owned()),
            Layout::Custom(_) => None,
        }
    }

    /// The full key that `start` (from [`fixed_start`](Self::fixed_start)) and `parts` make:
    /// the same key [`make_joined`](Self::make_joined) makes of `before` and `parts`, in one
    /// copy of each part.
    pub(crate) fn make_from_start(
        &self,
        start: &str,
        parts: &[&str],
    ) -> Result<String, StoreError> {
        let len = start.len() + parts.iter().map(|part| part.len()).sum::<usize>();
        let mut full = String::with_capacity(len);
        full.push_str(start);
        parts.iter().for_each(|part| full.push_str(part));
        self.check(full)
    }

    fn build(&self, parts: &[&str], version: i64) -> Result<String, StoreError> {
        let logical_len: usize = parts.iter().map(|part| part.len()).sum();
        let full = match &self.layout {
            Layout::Django => {
                let mut digits = itoa::Buffer::new();
                let version = digits.format(version);
                let mut full =
                    String::with_capacity(self.prefix.len() + version.len() + 2 + logical_len);
                full.push_str(&self.prefix);
                full.push(':');
                full.push_str(version);
                full.push(':');
                parts.iter().for_each(|part| full.push_str(part));
                full
            }
            Layout::Raw => parts.concat(),
            Layout::Custom(key_fn) => key_fn(&parts.concat(), &self.prefix, version),
        };
        self.check(full)
    }

    /// `full`, unless it is empty or longer than the bound.
    fn check(&self, full: String) -> Result<String, StoreError> {
        if full.is_empty() {
            return Err(StoreError::new(StoreErrorKind::InvalidKey, "empty key"));
        }
        if full.len() > self.max_len {
            return Err(StoreError::new(
                StoreErrorKind::InvalidKey,
                format!(
                    "key of {} bytes exceeds the bound of {}",
                    full.len(),
                    self.max_len
                ),
            ));
        }
        Ok(full)
    }
}

impl KeyScheme {
    /// The full keys of `key` at this version and at `version + delta`, and that version: what
    /// [`Store::bump_version`](super::Store::bump_version) moves between.
    pub(crate) fn bumped(
        &self,
        key: &str,
        delta: i64,
    ) -> Result<(String, String, i64), StoreError> {
        if self.is_raw() {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "raw keys carry no version to bump",
            ));
        }
        let version = self.version.checked_add(delta).ok_or_else(|| {
            StoreError::new(StoreErrorKind::InvalidValue, "version would overflow")
        })?;
        let from = self.make(key)?;
        let to = self.make_versioned(key, version)?;
        if from == to {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "the key scheme gives the same key at both versions",
            ));
        }
        Ok((from, to, version))
    }
}

impl Default for KeyScheme {
    /// Django's default: empty prefix, version 1.
    fn default() -> Self {
        Self::django("", 1)
    }
}

impl fmt::Debug for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = match self.layout {
            Layout::Django => "django",
            Layout::Raw => "raw",
            Layout::Custom(_) => "custom",
        };
        f.debug_struct("KeyScheme")
            .field("layout", &layout)
            .field("prefix", &self.prefix)
            .field("version", &self.version)
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// Escapes every Redis glob character in `text`, so that a pattern holding it matches it
/// literally.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '[' | ']' | '\\' | '^' | '-' | '*' | '?') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_layout_matches_django_default_key_function() {
        let cases: &[(&str, i64, &str, &str)] = &[
            ("", 1, "abc", ":1:abc"),
            ("shop", 1, "abc", "shop:1:abc"),
            ("shop", 12, "a:b", "shop:12:a:b"),
            ("", -3, "k", ":-3:k"),
            ("", 0, "k", ":0:k"),
            ("", i64::MIN, "k", ":-9223372036854775808:k"),
            ("", i64::MAX, "k", ":9223372036854775807:k"),
        ];
        for &(prefix, version, key, expected) in cases {
            assert_eq!(
                KeyScheme::django(prefix, version).make(key).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn keys_from_a_fixed_start_are_the_joined_keys() {
        let schemes = [
            KeyScheme::django("shop", 3),
            KeyScheme::django("", -1),
            KeyScheme::raw(),
            KeyScheme::django("p", 1).max_len(12),
        ];
        let cases: &[(&str, &[&str])] = &[
            ("rl:sms:", &["+4912", ""]),
            ("rl:a:", &["", ":end"]),
            ("", &["x"]),
            ("rl:long:", &["0123456789"]),
        ];
        for scheme in &schemes {
            let start = scheme.fixed_start(cases[0].0);
            assert!(
                start.is_some(),
                "only a custom key function has no fixed start"
            );
            for &(before, parts) in cases {
                let start = scheme.fixed_start(before).unwrap();
                let mut all = vec![before];
                all.extend_from_slice(parts);
                let joined = scheme.make_joined(&all).map_err(|err| err.kind());
                let from_start = scheme
                    .make_from_start(&start, parts)
                    .map_err(|err| err.kind());
                assert_eq!(from_start, joined, "{before:?} {parts:?}");
            }
        }
        let custom = KeyScheme::custom("p", 1, |key, _, _| key.to_owned());
        assert!(custom.fixed_start("rl:").is_none());
    }

    #[test]
    fn raw_layout_ignores_prefix_and_version() {
        assert_eq!(KeyScheme::raw().make_versioned("x", 9).unwrap(), "x");
    }

    #[test]
    fn empty_and_oversized_keys_are_refused() {
        assert_eq!(
            KeyScheme::raw().make("").unwrap_err().kind(),
            StoreErrorKind::InvalidKey
        );
        let scheme = KeyScheme::django("p", 1).max_len(9);
        assert_eq!(scheme.make("12345").unwrap(), "p:1:12345");
        assert_eq!(
            scheme.make("123456").unwrap_err().kind(),
            StoreErrorKind::InvalidKey
        );
    }

    #[test]
    fn with_version_keeps_layout_and_prefix() {
        let scheme = KeyScheme::custom("p", 1, |k, p, v| format!("{p}|{v}|{k}")).with_version(5);
        assert_eq!(scheme.make("k").unwrap(), "p|5|k");
    }
}
