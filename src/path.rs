//! The path normal-form check the layers share: a path with one reading only, so that an
//! allow-list, a rate-limit key and the router agree on which resource it names.

/// Why a path is not in normal form.
pub(crate) type NotNormalized = &'static str;

/// Checks that `path` (as received, still percent-encoded) has exactly one reading, so that
/// the allow-list, the router and anything behind them agree on which resource it names.
pub(crate) fn check_normalized(path: &str) -> Result<(), NotNormalized> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("the path does not start with '/'");
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err("a '%' is not followed by two hex digits");
                };
                let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) else {
                    return Err("a '%' is not followed by two hex digits");
                };
                match hi << 4 | lo {
                    b'/' | b'\\' => return Err("the path has an encoded '/' or '\\'"),
                    b'.' => return Err("the path has an encoded '.'"),
                    b'%' => return Err("the path has an encoded '%' (double encoding)"),
                    b';' => return Err("the path has an encoded ';'"),
                    byte if byte < 0x20 || byte == 0x7f => {
                        return Err("the path has an encoded control character");
                    }
                    _ => {}
                }
                i += 3;
                continue;
            }
            b'\\' => return Err("the path has a '\\'"),
            b';' => return Err("the path has a ';' (path parameters)"),
            byte if !(0x21..0x7f).contains(&byte) => {
                return Err("the path has a control, space or non-ASCII byte");
            }
            _ => {}
        }
        i += 1;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Err("the path has a '.' or '..' segment"),
            // an empty last segment is a trailing slash; anywhere else it is '//'
            "" if segments.peek().is_some() => {
                return Err("the path has an empty segment ('//')");
            }
            _ => {}
        }
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_pass() {
        for path in [
            "/",
            "/login/",
            "/login",
            "/articles/42/",
            "/sms_codes/13800138000/",
            "/a-b_c~d.e/",
            "/files/report.v2.pdf",
            "/%E4%B8%AD%E6%96%87/",
            "/users/%40alice/",
        ] {
            assert_eq!(check_normalized(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for path in [
            "",
            "login/",
            "//login/",
            "/login//admin",
            "//login/../admin",
            "/login/../admin",
            "/login/./admin",
            "/login/..",
            "/login/.",
            "/.",
            "/..",
            "/login/%2e%2e/admin",
            "/login/%2E%2E/admin",
            "/login/.%2e/admin",
            "/login%2fadmin",
            "/login%2Fadmin",
            "/login%5cadmin",
            "/login\\admin",
            "/login;jsessionid=1/",
            "/login%3b/",
            "/login%00/",
            "/login%252e%252e/admin",
            "/login%",
            "/login%4",
            "/login%zz",
            "/log in/",
            "/login\t/",
            "/login\u{7f}/",
            "/登录/",
        ] {
            assert!(check_normalized(path).is_err(), "{path:?} was accepted");
        }
    }
}
