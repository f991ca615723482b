//! Redis's glob subset, matched in memory for pattern deletes.

/// Redis's glob subset the cache's patterns use: `*`, `?` and `\` escapes (character
/// classes are escaped by the layer, never produced).
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // iterative, backtracking to the last `*` only: linear-ish whatever the pattern
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn matches_redis_glob_subset() {
        // (pattern, text, matches), as Redis's stringmatchlen answers for the same pair
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything at all", true),
            ("**", "x", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ba", false),
            ("*c", "abc", true),
            ("*c", "abd", false),
            ("a*c", "ac", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("?", "a", true),
            ("?", "", false),
            ("?", "ab", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            // escapes: the cache escapes `*`, `?`, `[`, `]` and `\` in the parts it quotes
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("a\\?", "a?", true),
            ("a\\?", "ab", false),
            ("\\\\", "\\", true),
            // a trailing backslash is a literal one
            ("a\\", "a\\", true),
            // the cache's shapes: a URL index prefix, a namespace
            (
                ":1:views.decorators.cache.*",
                ":1:views.decorators.cache.page.abc",
                true,
            ),
            (
                ":1:views.decorators.cache.*",
                ":2:views.decorators.cache.page.abc",
                false,
            ),
            ("*/articles/*", "GET /articles/42", true),
            // backtracking goes back to the latest star only, and still finds the match
            ("*aab", "aaaab", true),
            (
                "*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac",
                false,
            ),
        ];
        for &(pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} against {text:?}"
            );
        }
    }
}
