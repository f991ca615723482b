//! Path normalization and allow-lists.

use http::Method;

use crate::ConfigError;
use crate::path::{NotNormalized, check_normalized};

/// What a request's path and method call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Allow-listed: passes without looking at tokens.
    Open,
    /// A valid token attaches the principal; no token passes anonymously; a bad token is
    /// rejected.
    Optional,
    /// A valid token is required.
    Protected,
}

/// Whether letter case matters when paths are compared.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::Case;
///
/// assert_eq!(Case::default(), Case::Sensitive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Case {
    /// `/Login/` and `/login/` are different paths, as they are to axum's router. Default.
    #[default]
    Sensitive,
    /// ASCII letters compare case-insensitively, for routers that match that way.
    Insensitive,
}

/// Whether a trailing slash matters when paths are compared.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::TrailingSlash;
///
/// assert_eq!(TrailingSlash::default(), TrailingSlash::Exact);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TrailingSlash {
    /// `/login` and `/login/` are different paths. Default.
    #[default]
    Exact,
    /// `/login` and `/login/` are the same path, for routers (or a `NormalizePath` layer)
    /// that treat them alike.
    Ignore,
}

/// What happens to a request whose path is not in normal form (see [the module
/// docs](crate::auth#path-normalization)).
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::AmbiguousPaths;
///
/// assert_eq!(AmbiguousPaths::default(), AmbiguousPaths::Reject);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AmbiguousPaths {
    /// Answer `400 Bad Request` on every route. Default.
    #[default]
    Reject,
    /// Match no allow-list entry: such a request needs a valid token like any protected one.
    Protect,
}

#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Segments(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    CatchAll,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    methods: Option<Vec<Method>>,
    access: Access,
}

/// The allow-list and optional list of a [`TokenAuthLayer`](super::TokenAuthLayer).
#[derive(Debug, Clone, Default)]
pub(crate) struct PathPolicy {
    rules: Vec<Rule>,
    case: Case,
    trailing_slash: TrailingSlash,
    ambiguous: AmbiguousPaths,
}

/// How a rule's path was written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathKind {
    /// Exact, or a pattern when it has `{name}` segments.
    Pattern,
    /// A prefix, matched at segment boundaries.
    Prefix,
    /// Every path.
    Any,
}

impl PathPolicy {
    pub(crate) fn set_case(&mut self, case: Case) {
        self.case = case;
        self.renormalize();
    }

    pub(crate) fn set_trailing_slash(&mut self, trailing_slash: TrailingSlash) {
        self.trailing_slash = trailing_slash;
        self.renormalize();
    }

    pub(crate) fn set_ambiguous(&mut self, ambiguous: AmbiguousPaths) {
        self.ambiguous = ambiguous;
    }

    /// Adds a rule, validating its path the way request paths are validated.
    pub(crate) fn add(
        &mut self,
        option: &'static str,
        kind: PathKind,
        path: &str,
        methods: Option<Vec<Method>>,
        access: Access,
    ) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidOption { option, reason };
        let pattern = match kind {
            PathKind::Any => Pattern::Any,
            PathKind::Prefix => {
                check_normalized(path).map_err(|why| invalid(format!("`{path}`: {why}")))?;
                Pattern::Prefix(path.to_owned())
            }
            PathKind::Pattern if path.contains(['{', '}']) => Pattern::Segments(
                parse_segments(path).map_err(|why| invalid(format!("`{path}`: {why}")))?,
            ),
            PathKind::Pattern => {
                check_normalized(path).map_err(|why| invalid(format!("`{path}`: {why}")))?;
                Pattern::Exact(path.to_owned())
            }
        };
        self.rules.push(Rule {
            pattern: self.normalize_pattern(pattern),
            methods,
            access,
        });
        Ok(())
    }

    fn renormalize(&mut self) {
        let rules = std::mem::take(&mut self.rules);
        self.rules = rules
            .into_iter()
            .map(|rule| Rule {
                pattern: self.normalize_pattern(rule.pattern),
                ..rule
            })
            .collect();
    }

    fn normalize_pattern(&self, pattern: Pattern) -> Pattern {
        match pattern {
            Pattern::Any => Pattern::Any,
            Pattern::Exact(path) => Pattern::Exact(self.normalize(&path).into_owned()),
            Pattern::Prefix(path) => {
                let normalized = self.normalize(&path);
                Pattern::Prefix(normalized.trim_end_matches('/').to_owned())
            }
            Pattern::Segments(segments) => {
                let mut segments: Vec<Segment> = segments
                    .into_iter()
                    .map(|segment| match segment {
                        Segment::Literal(text) if self.case == Case::Insensitive => {
                            Segment::Literal(text.to_ascii_lowercase())
                        }
                        other => other,
                    })
                    .collect();
                // a trailing slash is an empty last segment
                if self.trailing_slash == TrailingSlash::Ignore
                    && segments.len() > 2
                    && segments.last() == Some(&Segment::Literal(String::new()))
                {
                    segments.pop();
                }
                Pattern::Segments(segments)
            }
        }
    }

    /// The comparison form of a path under this policy's case and trailing-slash options.
    fn normalize<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let path = match self.trailing_slash {
            TrailingSlash::Ignore if path.len() > 1 => path.strip_suffix('/').unwrap_or(path),
            _ => path,
        };
        match self.case {
            Case::Insensitive if path.bytes().any(|b| b.is_ascii_uppercase()) => {
                std::borrow::Cow::Owned(path.to_ascii_lowercase())
            }
            _ => std::borrow::Cow::Borrowed(path),
        }
    }

    /// What `method` on `path` calls for.
    ///
    /// # Errors
    ///
    /// Why the path is not in normal form, when ambiguous paths are rejected.
    pub(crate) fn access(&self, method: &Method, path: &str) -> Result<Access, NotNormalized> {
        if let Err(why) = check_normalized(path) {
            return match self.ambiguous {
                AmbiguousPaths::Reject => Err(why),
                AmbiguousPaths::Protect => Ok(Access::Protected),
            };
        }
        let normalized = self.normalize(path);
        let mut access = Access::Protected;
        for rule in &self.rules {
            let method_matches = rule
                .methods
                .as_ref()
                .is_none_or(|methods| methods.contains(method));
            if method_matches && rule.pattern.matches(&normalized) {
                match rule.access {
                    Access::Open => return Ok(Access::Open),
                    Access::Optional => access = Access::Optional,
                    Access::Protected => {}
                }
            }
        }
        Ok(access)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => path == exact,
            // "" is the root prefix, which every path extends
            Self::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Segments(pattern) => {
                let mut parts = path.split('/');
                for segment in pattern {
                    match (segment, parts.next()) {
                        (Segment::CatchAll, Some(_)) => return true,
                        (Segment::Literal(literal), Some(part)) if part == literal => {}
                        (Segment::Param, Some(part)) if !part.is_empty() => {}
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// Splits `/sms_codes/{mobile}/` into literal, parameter and catch-all (`{*rest}`) segments.
fn parse_segments(pattern: &str) -> Result<Vec<Segment>, String> {
    if !pattern.starts_with('/') {
        return Err("a pattern starts with '/'".to_owned());
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let segment = match part
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(name) if name.starts_with('*') && index == last && name.len() > 1 => {
                Segment::CatchAll
            }
            Some(name) if name.starts_with('*') => {
                return Err("a catch-all `{*name}` must be the last segment".to_owned());
            }
            Some(name) if !name.is_empty() && !name.contains(['{', '}', '/']) => Segment::Param,
            Some(_) => return Err(format!("`{part}` is not a `{{name}}` segment")),
            None if part.contains(['{', '}']) => {
                return Err(format!("`{part}`: a `{{name}}` must be a whole segment"));
            }
            None => {
                if matches!(*part, "." | "..") || (part.is_empty() && index != 0 && index != last) {
                    return Err("patterns may not have '.', '..' or empty segments".to_owned());
                }
                Segment::Literal((*part).to_owned())
            }
        };
        segments.push(segment);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(PathKind, &str, Option<Vec<Method>>, Access)]) -> PathPolicy {
        let mut policy = PathPolicy::default();
        for (kind, path, methods, access) in rules {
            policy
                .add("allow", *kind, path, methods.clone(), *access)
                .unwrap();
        }
        policy
    }

    #[test]
    fn allow_list_matching_is_exact_by_default() {
        let policy = policy(&[
            (PathKind::Pattern, "/login/", None, Access::Open),
            (PathKind::Prefix, "/static/", None, Access::Open),
            (
                PathKind::Pattern,
                "/sms_codes/{mobile}/",
                None,
                Access::Open,
            ),
            (PathKind::Pattern, "/docs/{*rest}", None, Access::Open),
            (PathKind::Pattern, "/articles/", None, Access::Optional),
            (PathKind::Any, "", Some(vec![Method::OPTIONS]), Access::Open),
        ]);
        let get = Method::GET;
        let cases: &[(&Method, &str, Result<Access, ()>)] = &[
            (&get, "/login/", Ok(Access::Open)),
            (&get, "/login", Ok(Access::Protected)),
            (&get, "/LOGIN/", Ok(Access::Protected)),
            (&get, "/login/x", Ok(Access::Protected)),
            (&get, "/login-admin/", Ok(Access::Protected)),
            (&get, "/static", Ok(Access::Open)),
            (&get, "/static/app.js", Ok(Access::Open)),
            (&get, "/static-admin/", Ok(Access::Protected)),
            (&get, "/staticx", Ok(Access::Protected)),
            (&get, "/sms_codes/13800138000/", Ok(Access::Open)),
            (&get, "/sms_codes//", Err(())),
            (&get, "/sms_codes/13800138000", Ok(Access::Protected)),
            (&get, "/sms_codes/1/extra/", Ok(Access::Protected)),
            (&get, "/docs/a/b/c", Ok(Access::Open)),
            (&get, "/docs", Ok(Access::Protected)),
            (&get, "/articles/", Ok(Access::Optional)),
            (&get, "/admin/", Ok(Access::Protected)),
            (&Method::OPTIONS, "/admin/", Ok(Access::Open)),
            (&get, "//login/../admin", Err(())),
            (&get, "/login/%2e%2e/admin", Err(())),
            (&get, "/static/..%2fadmin", Err(())),
            (&get, "/static/../admin", Err(())),
        ];
        for (method, path, expected) in cases {
            let got = policy.access(method, path).map_err(|_| ());
            assert_eq!(&got, expected, "{method} {path}");
        }
    }

    #[test]
    fn methods_restrict_a_rule() {
        let policy = policy(&[(
            PathKind::Pattern,
            "/login/",
            Some(vec![Method::POST]),
            Access::Open,
        )]);
        assert_eq!(policy.access(&Method::POST, "/login/"), Ok(Access::Open));
        assert_eq!(
            policy.access(&Method::GET, "/login/"),
            Ok(Access::Protected)
        );
    }

    #[test]
    fn case_and_trailing_slash_options_widen_matching_explicitly() {
        let mut policy = policy(&[
            (PathKind::Pattern, "/Login/", None, Access::Open),
            (PathKind::Prefix, "/Static/", None, Access::Open),
            (PathKind::Pattern, "/Codes/{m}/", None, Access::Open),
        ]);
        policy.set_case(Case::Insensitive);
        assert_eq!(policy.access(&Method::GET, "/LOGIN/"), Ok(Access::Open));
        assert_eq!(policy.access(&Method::GET, "/static/x"), Ok(Access::Open));
        assert_eq!(policy.access(&Method::GET, "/CODES/1/"), Ok(Access::Open));
        assert_eq!(policy.access(&Method::GET, "/login"), Ok(Access::Protected));
        policy.set_trailing_slash(TrailingSlash::Ignore);
        assert_eq!(policy.access(&Method::GET, "/login"), Ok(Access::Open));
        assert_eq!(policy.access(&Method::GET, "/codes/1"), Ok(Access::Open));
        assert_eq!(policy.access(&Method::GET, "/codes/1/"), Ok(Access::Open));
        assert_eq!(
            policy.access(&Method::GET, "/login/x"),
            Ok(Access::Protected)
        );
    }

    #[test]
    fn ambiguous_paths_can_be_treated_as_protected_instead() {
        let mut policy = policy(&[(PathKind::Prefix, "/static/", None, Access::Open)]);
        policy.set_ambiguous(AmbiguousPaths::Protect);
        assert_eq!(
            policy.access(&Method::GET, "/static/../admin"),
            Ok(Access::Protected)
        );
    }

    #[test]
    fn invalid_rules_are_config_errors() {
        let mut policy = PathPolicy::default();
        for path in [
            "login/",
            "/a/../b",
            "/a//b",
            "/{",
            "/{}/",
            "/x{id}/",
            "/{*rest}/more",
            "/a/%2e/",
        ] {
            let kind = if path.contains('{') {
                PathKind::Pattern
            } else {
                PathKind::Prefix
            };
            assert!(
                policy.add("allow", kind, path, None, Access::Open).is_err(),
                "{path} was accepted"
            );
        }
    }
}
