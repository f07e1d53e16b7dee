//! The URIs a resource template (RFC 6570) makes of given values: what a
//! completion's offered value names once a client puts it in the template.
//!
//! Only what a judgment needs: each expression's operator and variables
//! (levels 1–4; a prefix modifier `:n` and the explode modifier `*` are
//! read as the whole value, which names at least as much). A variable
//! without a value is left out, as RFC 6570 says. Two expansions are made
//! of one set of values: the one RFC 6570 defines (reserved characters
//! percent-encoded where the operator says so) and the raw one, every
//! value as it is, which a client that joins strings instead of expanding
//! makes. A judgment must pass both.

/// The two URIs `template` makes of `value_of`'s values, `(rfc, raw)`;
/// `None` for a template that is not well formed (an unclosed brace).
pub fn expand(
    template: &str,
    value_of: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    let (mut rfc, mut raw) = (String::new(), String::new());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rfc.push_str(&rest[..open]);
        raw.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let expr = &after[..close];
        rest = &after[close + 1..];
        let (op, vars) = match expr.chars().next() {
            Some(c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => (Some(c), &expr[1..]),
            _ => (None, expr),
        };
        // (first prefix, separator, named, reserved allowed)
        let (first, sep, named, reserved) = match op {
            None => ("", ",", false, false),
            Some('+') => ("", ",", false, true),
            Some('#') => ("#", ",", false, true),
            Some('.') => (".", ".", false, false),
            Some('/') => ("/", "/", false, false),
            Some(';') => (";", ";", true, false),
            Some('?') => ("?", "&", true, false),
            _ => ("&", "&", true, false),
        };
        let mut wrote = false;
        for spec in vars.split(',') {
            let name = spec
                .split(':')
                .next()
                .unwrap_or_default()
                .trim_end_matches('*');
            let Some(value) = value_of(name) else {
                continue;
            };
            let p = if wrote { sep } else { first };
            wrote = true;
            rfc.push_str(p);
            raw.push_str(p);
            if named {
                rfc.push_str(name);
                raw.push_str(name);
                if !(op == Some(';') && value.is_empty()) {
                    rfc.push('=');
                    raw.push('=');
                }
            }
            rfc.push_str(&encode(&value, reserved));
            raw.push_str(&value);
        }
    }
    if rest.contains('}') {
        return None;
    }
    rfc.push_str(rest);
    raw.push_str(rest);
    Some((rfc, raw))
}

/// `value` percent-encoded as RFC 6570 does: unreserved characters kept,
/// and with `reserved` the reserved ones and existing `%XX` triplets too.
fn encode(value: &str, reserved: bool) -> String {
    const RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=";
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let keep = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~')
            || (reserved && RESERVED.contains(&c));
        let triplet = reserved
            && c == b'%'
            && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if keep || triplet {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(v: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            v.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, x)| (*x).to_owned())
        }
    }

    #[test]
    fn each_operator_expands_as_rfc_6570_says() {
        let v = [("path", "employees/7"), ("x", "1"), ("y", "a b"), ("e", "")];
        for (t, rfc, raw) in [
            ("hr://{path}", "hr://employees%2F7", "hr://employees/7"),
            ("hr://{+path}", "hr://employees/7", "hr://employees/7"),
            ("hr://h{#path}", "hr://h#employees/7", "hr://h#employees/7"),
            ("hr://h{/x,y}", "hr://h/1/a%20b", "hr://h/1/a b"),
            ("hr://h{.x}", "hr://h.1", "hr://h.1"),
            ("hr://h{;x,e}", "hr://h;x=1;e", "hr://h;x=1;e"),
            ("hr://h{?x,y}", "hr://h?x=1&y=a%20b", "hr://h?x=1&y=a b"),
            ("hr://h?a=0{&x}", "hr://h?a=0&x=1", "hr://h?a=0&x=1"),
            ("hr://{path:3}", "hr://employees%2F7", "hr://employees/7"),
            ("hr://{missing}/x", "hr:///x", "hr:///x"),
        ] {
            assert_eq!(
                expand(t, &vars(&v)),
                Some((rfc.to_owned(), raw.to_owned())),
                "{t}"
            );
        }
        assert_eq!(expand("hr://{path", &vars(&v)), None);
        assert_eq!(expand("hr://path}", &vars(&v)), None);
    }
}
