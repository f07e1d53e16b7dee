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

/// The names of the variables `template` uses, each once, in order: every
/// comma-separated name of every expression, its operator, prefix
/// modifier (`:n`) and explode modifier (`*`) taken off; `None` for a
/// template that is not well formed, or with a variable SDKs could read
/// as another name: one that is not RFC 6570's (letters, digits, `_`,
/// `.`, at most 64 bytes, nothing around it), a modifier that is not
/// `:digits` or a trailing `*`, or more than [`MAX_VARIABLES`].
pub fn variables(template: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    each_expression(template, |expr| {
        let (_, vars) = operator(expr);
        for spec in vars.split(',') {
            let (name, modifier) = match spec.split_once(':') {
                Some((n, m)) => (n, Some(m)),
                None => (spec.strip_suffix('*').unwrap_or(spec), None),
            };
            ok &= !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                && modifier.is_none_or(|m| {
                    !m.is_empty() && m.len() <= 4 && m.bytes().all(|b| b.is_ascii_digit())
                });
            if ok && !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
            ok &= out.len() <= MAX_VARIABLES;
        }
    })?;
    ok.then_some(out)
}

/// The most variables a template judged here may have.
pub const MAX_VARIABLES: usize = 16;

/// The URIs `template` makes of `value_of`'s values, each once: the one
/// RFC 6570 defines (a prefix modifier `:n` applied), the raw one (every
/// value as it is, whole, after the operator's prefix), and for an
/// expression of several names the TypeScript SDK's (the values joined by
/// commas, no prefix, no encoding). `None` for a template that is not
/// well formed.
pub fn expand(template: &str, value_of: &dyn Fn(&str) -> Option<String>) -> Option<Vec<String>> {
    // RFC 6570's, the raw one, the TypeScript SDK's.
    let [mut rfc, mut raw, mut ts] = [String::new(), String::new(), String::new()];
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let literal = &rest[..open];
        if literal.contains('}') {
            return None;
        }
        for f in [&mut rfc, &mut raw, &mut ts] {
            f.push_str(literal);
        }
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let expr = &after[..close];
        rest = &after[close + 1..];
        let (op, vars) = operator(expr);
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
        let specs: Vec<&str> = vars.split(',').collect();
        let (mut rfc_piece, mut raw_piece) = (String::new(), String::new());
        let mut joined: Vec<String> = Vec::new();
        for spec in &specs {
            let name = var_name(spec);
            let Some(value) = value_of(name) else {
                continue;
            };
            let prefix_len = spec
                .split_once(':')
                .and_then(|(_, n)| n.trim().trim_end_matches('*').trim().parse::<usize>().ok());
            let cut: String = match prefix_len {
                Some(n) => value.chars().take(n).collect(),
                None => value.clone(),
            };
            let p = if joined.is_empty() { first } else { sep };
            for piece in [&mut rfc_piece, &mut raw_piece] {
                piece.push_str(p);
                if named {
                    piece.push_str(name);
                    if !(op == Some(';') && value.is_empty()) {
                        piece.push('=');
                    }
                }
            }
            rfc_piece.push_str(&encode(&cut, reserved));
            raw_piece.push_str(&value);
            joined.push(value);
        }
        rfc.push_str(&rfc_piece);
        if specs.len() > 1 {
            ts.push_str(&joined.join(","));
        } else {
            ts.push_str(&raw_piece);
        }
        raw.push_str(&raw_piece);
    }
    if rest.contains('}') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for mut f in [rfc, raw, ts] {
        f.push_str(rest);
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Some(out)
}

/// Calls `each` with every expression of `template` (between braces);
/// `None` for a template that is not well formed.
fn each_expression(template: &str, mut each: impl FnMut(&str)) -> Option<()> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return None;
        }
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        each(&after[..close]);
        rest = &after[close + 1..];
    }
    (!rest.contains('}')).then_some(())
}

fn operator(expr: &str) -> (Option<char>, &str) {
    match expr.chars().next() {
        Some(c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => (Some(c), &expr[1..]),
        _ => (None, expr),
    }
}

fn var_name(spec: &str) -> &str {
    spec.split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('*')
        .trim()
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
    fn each_operator_expands_as_rfc_6570_says_and_raw() {
        let v = [("path", "employees/7"), ("x", "1"), ("y", "a b"), ("e", "")];
        for (t, forms) in [
            (
                "hr://{path}",
                vec!["hr://employees%2F7", "hr://employees/7"],
            ),
            ("hr://{+path}", vec!["hr://employees/7"]),
            ("hr://h{#path}", vec!["hr://h#employees/7"]),
            (
                "hr://h{/x,y}",
                vec!["hr://h/1/a%20b", "hr://h/1/a b", "hr://h1,a b"],
            ),
            ("hr://h{.x}", vec!["hr://h.1"]),
            ("hr://h{;x,e}", vec!["hr://h;x=1;e", "hr://h1,"]),
            (
                "hr://h{?x,y}",
                vec!["hr://h?x=1&y=a%20b", "hr://h?x=1&y=a b", "hr://h1,a b"],
            ),
            ("hr://h?a=0{&x}", vec!["hr://h?a=0&x=1"]),
            ("hr://{path:3}", vec!["hr://emp", "hr://employees/7"]),
            ("hr://{missing}/x", vec!["hr:///x"]),
        ] {
            assert_eq!(
                expand(t, &vars(&v)),
                Some(forms.iter().map(|f| (*f).to_owned()).collect()),
                "{t}"
            );
        }
        assert_eq!(expand("hr://{path", &vars(&v)), None);
        assert_eq!(expand("hr://path}", &vars(&v)), None);
        assert_eq!(expand("hr://}{path}", &vars(&v)), None);
    }

    #[test]
    fn variables_are_read_as_sdks_read_them() {
        assert_eq!(
            variables("hr://{dept}/{+id:3}{?q*,dept}"),
            Some(vec!["dept".to_owned(), "id".to_owned(), "q".to_owned()])
        );
        assert_eq!(variables("hr://static"), Some(vec![]));
        // What SDKs could read as another name is no template to judge.
        for t in [
            "hr://{x",
            "hr://{ dept}",
            "hr://{dept }",
            "hr://{}",
            "hr://{de-pt}",
            "hr://{*x}",
            "hr://{x:}",
            "hr://{x:3*}",
            "hr://{x*y}",
            "hr://{\u{feff}x}",
        ] {
            assert_eq!(variables(t), None, "{t}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("{{v{i}}}")).collect();
        assert_eq!(variables(&many.concat()), None);
    }
}
