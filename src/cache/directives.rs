//! `Cache-Control` and the targeted fields of RFC 9213 read into the directives a cache acts
//! on, and `Vary` read into the names a response varies on.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The `Cache-Control` directives this cache acts on, from a request or a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    /// `no-cache` in any form, qualified or not.
    pub(crate) no_cache: bool,
    /// `no-cache` without field names: the whole response needs revalidation.
    pub(crate) no_cache_all: bool,
    /// `private` in any form, qualified or not.
    pub(crate) private: bool,
    /// `private` without field names: the whole response is for one user.
    pub(crate) private_all: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    /// The fields named by `no-cache="..."`: stripped before storing (RFC 9111 §5.2.2.4).
    pub(crate) no_cache_fields: Vec<HeaderName>,
    /// The fields named by `private="..."`: stripped before storing (RFC 9111 §5.2.2.7).
    pub(crate) private_fields: Vec<HeaderName>,
    /// Request only: `max-stale`, with `Some(None)` for "any staleness".
    pub(crate) max_stale: Option<Option<u64>>,
    /// Request only.
    pub(crate) min_fresh: Option<u64>,
    /// Request only.
    pub(crate) only_if_cached: bool,
}

/// Splits a field value at commas outside quoted strings (`private="a, b"` is one item).
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Whether every quoted string in `value` ends (backslash escapes inside read as such).
fn quotes_balance(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// Parses every `Cache-Control` field of `headers`. Directive names are case-insensitive
/// (RFC 9111 §5.2). A qualified `private="..."` or `no-cache="..."` counts as the plain
/// directive in `private` / `no_cache` *and* lists its fields; the HTTP-cache mode strips those
/// fields instead. A repeated or invalid delta-seconds takes the most restrictive reading (0
/// when unparseable).
pub(crate) fn cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            // an unreadable Cache-Control might say anything: be as strict as it could be
            cc.no_store = true;
            continue;
        };
        if !quotes_balance(value) {
            // an unterminated quoted string hides what follows it (`x="a, private`)
            cc.no_store = true;
            cc.private = true;
            cc.private_all = true;
        }
        for item in split_list(value) {
            let (name, argument) = match item.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (item, None),
            };
            let seconds = || argument.map_or(0, delta_seconds);
            let least =
                |current: Option<u64>| Some(current.map_or(seconds(), |m| m.min(seconds())));
            let is = |directive: &str| name.eq_ignore_ascii_case(directive);
            if is("no-store") {
                cc.no_store = true;
            } else if is("no-cache") {
                // a list that names no field (`no-cache=""`) is read as the whole response
                let before = cc.no_cache_fields.len();
                cc.no_cache = true;
                cc.no_cache_fields
                    .extend(argument.into_iter().flat_map(field_names));
                cc.no_cache_all |= cc.no_cache_fields.len() == before;
            } else if is("private") {
                let before = cc.private_fields.len();
                cc.private = true;
                cc.private_fields
                    .extend(argument.into_iter().flat_map(field_names));
                cc.private_all |= cc.private_fields.len() == before;
            } else if is("public") {
                cc.public = true;
            } else if is("max-age") {
                cc.max_age = least(cc.max_age);
            } else if is("s-maxage") {
                cc.s_maxage = least(cc.s_maxage);
            } else if is("must-revalidate") {
                cc.must_revalidate = true;
            } else if is("proxy-revalidate") {
                cc.proxy_revalidate = true;
            } else if is("must-understand") {
                cc.must_understand = true;
            } else if is("stale-while-revalidate") {
                cc.stale_while_revalidate = least(cc.stale_while_revalidate);
            } else if is("stale-if-error") {
                cc.stale_if_error = least(cc.stale_if_error);
            } else if is("max-stale") {
                let limit = argument.map(|a| a.parse::<u64>().unwrap_or(0));
                cc.max_stale = Some(match (cc.max_stale, limit) {
                    (Some(Some(a)), Some(b)) => Some(a.min(b)),
                    (Some(Some(a)), None) | (None | Some(None), Some(a)) => Some(a),
                    (None | Some(None), None) => None,
                });
            } else if is("min-fresh") {
                cc.min_fresh = Some(cc.min_fresh.map_or(seconds(), |m| m.max(seconds())));
            } else if is("only-if-cached") {
                cc.only_if_cached = true;
            }
        }
    }
    cc
}

/// The targeted cache-control fields (RFC 9213) a cache obeys, and how far they reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct Targeting {
    /// The fields obeyed, most precedent first.
    pub(crate) fields: Vec<HeaderName>,
    /// Whether a targeted field also replaces `Cache-Control`'s `private`, its field-qualified
    /// `private` / `no-cache`, and its permission to share an answer to a request with
    /// credentials (RFC 9111 §3.5), as RFC 9213 has it. Off, those keep their effect.
    pub(crate) overrides_private: bool,
}

/// The response directives a cache follows, from its `Cache-Control` and targeted fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResponseDirectives {
    /// The directives storing and reuse follow.
    pub(crate) cc: CacheControl,
    /// Whether `Expires` counts: not when a targeted field applies (RFC 9213 §2.1).
    pub(crate) expires_counts: bool,
    /// What lets the answer to a request with credentials be shared (RFC 9111 §3.5).
    pub(crate) sharing: Sharing,
}

/// The directives that let a shared cache store the answer to a request with credentials
/// (RFC 9111 §3.5), from the field that decides it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sharing {
    pub(crate) public: bool,
    pub(crate) s_maxage: bool,
    pub(crate) must_revalidate: bool,
}

impl Sharing {
    fn of(cc: &CacheControl) -> Self {
        Self {
            public: cc.public,
            s_maxage: cc.s_maxage.is_some(),
            must_revalidate: cc.must_revalidate,
        }
    }
}

/// The response directives this cache follows (RFC 9213 §2.1): those of the first field on
/// the `targeted` list with a valid, non-empty value, and then neither `Cache-Control` nor
/// `Expires` counts; else `Cache-Control`'s.
///
/// Unless the targeting [overrides `private`](Targeting::overrides_private), what
/// `Cache-Control` says to keep a response from other users still holds under a targeted
/// field: its `private` (whole or field-qualified), its field-qualified `no-cache`, and the
/// lack of permission to share an answer to a request with credentials. A targeted field is
/// often set for a whole site by a CDN's or framework's configuration, where the origin's
/// `Cache-Control: private` is set page by page: the page's word on privacy wins.
pub(crate) fn response_directives(headers: &HeaderMap, targeted: &Targeting) -> ResponseDirectives {
    let general = cache_control(headers);
    let Some(mut cc) = targeted
        .fields
        .iter()
        .find_map(|name| targeted_directives(headers, name))
    else {
        return ResponseDirectives {
            sharing: Sharing::of(&general),
            cc: general,
            expires_counts: true,
        };
    };
    if targeted.overrides_private {
        return ResponseDirectives {
            sharing: Sharing::of(&cc),
            cc,
            expires_counts: false,
        };
    }
    let sharing = Sharing::of(&general);
    cc.private |= general.private;
    cc.private_all |= general.private_all;
    cc.private_fields.extend(general.private_fields);
    cc.no_cache_fields.extend(general.no_cache_fields);
    ResponseDirectives {
        sharing,
        cc,
        expires_counts: false,
    }
}

/// A targeted field (RFC 9213 §2.2) as directives, or `None` when it is absent, empty or not
/// a valid Structured Fields dictionary: the field is then ignored. Directive names are taken
/// in any letter case; `max-age`, `s-maxage` and the RFC 5861 windows must be non-negative
/// integers; a boolean `?0` turns its directive off, `?1` is as if bare.
fn targeted_directives(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut directives = Vec::new();
    for line in headers.get_all(name) {
        for member in split_list(line.to_str().ok()?) {
            // parameters of a member change nothing this cache acts on
            let member = member.split(';').next().unwrap_or_default().trim();
            let (key, value) = match member.split_once('=') {
                Some((key, value)) => (key.to_ascii_lowercase(), Some(value)),
                None => (member.to_ascii_lowercase(), None),
            };
            let mut key_bytes = key.bytes();
            let key_ok = key_bytes
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
                && key_bytes
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
            if !key_ok {
                return None;
            }
            let seconds = matches!(
                key.as_str(),
                "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error"
            );
            match value {
                None | Some("?1") => directives.push(key),
                Some("?0") => {}
                Some(value)
                    if seconds
                        && (1..=15).contains(&value.len())
                        && value.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    directives.push(format!("{key}={value}"));
                }
                Some(_) if seconds => return None,
                Some(value) if sf_item(value) => directives.push(format!("{key}={value}")),
                Some(_) => return None,
            }
        }
    }
    if directives.is_empty() {
        return None;
    }
    let mut map = HeaderMap::new();
    map.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&directives.join(", ")).ok()?,
    );
    Some(cache_control(&map))
}

/// Whether `value` is a bare Structured Fields item this cache can pass on: a string, a
/// token, a number or a boolean.
fn sf_item(value: &str) -> bool {
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    let token = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    let number = value
        .strip_prefix('-')
        .unwrap_or(value)
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.')
        && !value.is_empty();
    quoted || token || number
}

/// A delta-seconds argument (RFC 9111 §1.2.2): digits only; one too large to represent is
/// 2147483648, as that section asks; anything else (a decimal, a sign, a unit) is invalid and
/// reads as 0, the most restrictive value, so an entry it governs is stale (§4.2.1).
fn delta_seconds(argument: &str) -> u64 {
    if argument.is_empty() || !argument.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    argument
        .parse::<u64>()
        .map_or(2_147_483_648, |seconds| seconds.min(2_147_483_648))
}

/// The field names of a qualified `private="a, b"` / `no-cache="a, b"`, each backslash
/// escape read as the character it escapes (RFC 9110 §5.6.4: `"Set\-Cookie"` names
/// `Set-Cookie`).
fn field_names(list: &str) -> impl Iterator<Item = HeaderName> + '_ {
    list.split(',').filter_map(|name| {
        let mut unescaped = Vec::with_capacity(name.len());
        let mut escaped = false;
        for byte in name.trim().bytes() {
            if byte == b'\\' && !escaped {
                escaped = true;
                continue;
            }
            escaped = false;
            unescaped.push(byte);
        }
        HeaderName::from_bytes(&unescaped).ok()
    })
}

/// The response's `Vary`, as sorted lowercase names, or `Err(())` for `Vary: *`.
pub(crate) fn vary(headers: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Err(());
        };
        for item in split_list(value) {
            if item == "*" {
                return Err(());
            }
            match HeaderName::from_bytes(item.as_bytes()) {
                Ok(name) => names.push(name),
                Err(_) => return Err(()),
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}
