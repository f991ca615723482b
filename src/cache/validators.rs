//! Entity tags and their comparison (RFC 9110 §8.8.3 and §13.1.2): what `If-None-Match`,
//! `If-Range` and the combining of partial responses compare.

use http::header::HeaderMap;

/// One entity tag, borrowed from the field it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub(crate) weak: bool,
    /// The opaque tag, without its quotes.
    pub(crate) opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// A single entity tag (`"xyz"` or `W/"xyz"`), or `None` when `value` is not one: an
    /// unquoted tag is not an entity tag, so it matches nothing.
    pub(crate) fn parse(value: &'a str) -> Option<Self> {
        let (tag, rest) = next_tag(value.trim())?;
        rest.trim().is_empty().then_some(tag)
    }

    /// The `ETag` of a stored or new response, when it has one that parses.
    pub(crate) fn of(headers: &'a HeaderMap) -> Option<Self> {
        Self::parse(headers.get(http::header::ETAG)?.to_str().ok()?)
    }

    /// Weak comparison: the opaque tags match, whatever their weakness.
    pub(crate) fn weak_eq(self, other: Self) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong, and the opaque tags match.
    pub(crate) fn strong_eq(self, other: Self) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// The first entity tag at the start of `input`, and what follows it. An opaque tag may hold
/// any visible character but `"`, commas included, so a list cannot be split at commas first.
fn next_tag(input: &str) -> Option<(EntityTag<'_>, &str)> {
    let (weak, quoted) = match input.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let inner = quoted.strip_prefix('"')?;
    let end = inner.find('"')?;
    let opaque = &inner[..end];
    // etagc = %x21 / %x23-7E / obs-text
    if opaque.bytes().any(|b| b < 0x21 || b == 0x7f) {
        return None;
    }
    Some((EntityTag { weak, opaque }, &inner[end + 1..]))
}

/// What an `If-None-Match` field (all its lines) asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IfNoneMatch<'a> {
    /// `*`: any current representation.
    Any,
    Tags(Vec<EntityTag<'a>>),
}

impl<'a> IfNoneMatch<'a> {
    /// The field's members, or `None` when it is absent or not a valid list (an unquoted tag,
    /// a stray character): a condition that cannot be read is not evaluated.
    pub(crate) fn from_headers(headers: &'a HeaderMap) -> Option<Self> {
        let mut lines = headers
            .get_all(http::header::IF_NONE_MATCH)
            .iter()
            .peekable();
        lines.peek()?;
        let mut tags = Vec::new();
        let mut any = false;
        for line in lines {
            let mut rest = line.to_str().ok()?;
            loop {
                rest = rest.trim_start_matches([' ', '\t', ',']);
                if rest.is_empty() {
                    break;
                }
                if let Some(after) = rest.strip_prefix('*') {
                    any = true;
                    rest = after;
                } else {
                    let (tag, after) = next_tag(rest)?;
                    tags.push(tag);
                    rest = after;
                }
                // members are separated by a comma, with optional whitespace around it
                let after = rest.trim_start_matches([' ', '\t']);
                if !(after.is_empty() || after.starts_with(',')) {
                    return None;
                }
                rest = after;
            }
        }
        match (any, tags.is_empty()) {
            (true, true) => Some(Self::Any),
            // `*` must stand alone
            (true, false) => None,
            (false, true) => None,
            (false, false) => Some(Self::Tags(tags)),
        }
    }

    /// Whether the condition is false for a representation with `etag` (RFC 9110 §13.1.2:
    /// weak comparison), so a `304` answers it.
    pub(crate) fn matches(&self, etag: Option<EntityTag<'_>>) -> bool {
        match (self, etag) {
            (Self::Any, _) => true,
            (Self::Tags(tags), Some(etag)) => tags.iter().any(|tag| tag.weak_eq(etag)),
            (Self::Tags(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(http::header::IF_NONE_MATCH, value.parse().unwrap());
        }
        headers
    }

    fn tag(value: &str) -> EntityTag<'_> {
        EntityTag::parse(value).unwrap()
    }

    #[test]
    fn entity_tags_parse_as_rfc_9110_writes_them() {
        assert_eq!(
            tag("\"xyz\""),
            EntityTag {
                weak: false,
                opaque: "xyz"
            }
        );
        assert_eq!(
            tag(" W/\"a,b\" "),
            EntityTag {
                weak: true,
                opaque: "a,b"
            }
        );
        assert_eq!(tag("\"\"").opaque, "");
        for invalid in ["xyz", "w/\"x\"", "\"x", "\"x\" y", "\"a b\"", ""] {
            assert_eq!(EntityTag::parse(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn weak_and_strong_comparison_follow_the_table_of_rfc_9110() {
        // RFC 9110 §8.8.3.2
        let cases = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in cases {
            assert_eq!(tag(a).strong_eq(tag(b)), strong, "{a} {b}");
            assert_eq!(tag(a).weak_eq(tag(b)), weak, "{a} {b}");
        }
    }

    #[test]
    fn if_none_match_lists_keep_commas_inside_quotes() {
        let stored = tag("\"a,b\"");
        let list = lines(&["\"x\", \"a,b\""]);
        assert!(
            IfNoneMatch::from_headers(&list)
                .unwrap()
                .matches(Some(stored))
        );
        // split at commas, the list would hold `"a` and `b"` and never match
        let split = lines(&["\"a\", \"b\""]);
        assert!(
            !IfNoneMatch::from_headers(&split)
                .unwrap()
                .matches(Some(stored))
        );
        // over several lines, weak against strong, without spaces
        let many = lines(&["\"x\"", "W/\"y\",W/\"a,b\""]);
        assert!(
            IfNoneMatch::from_headers(&many)
                .unwrap()
                .matches(Some(stored))
        );
        assert!(
            IfNoneMatch::from_headers(&lines(&["*"]))
                .unwrap()
                .matches(None)
        );
        assert!(
            !IfNoneMatch::from_headers(&lines(&["\"a,b\""]))
                .unwrap()
                .matches(None)
        );
    }

    #[test]
    fn unreadable_if_none_match_is_not_evaluated() {
        for invalid in ["a,b", "xyz", "\"x\" \"y\"", "*, \"x\"", "\"open", ","] {
            assert_eq!(
                IfNoneMatch::from_headers(&lines(&[invalid])),
                None,
                "{invalid:?}"
            );
        }
        assert_eq!(IfNoneMatch::from_headers(&HeaderMap::new()), None);
    }
}
