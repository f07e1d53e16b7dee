//! Rego calls whose cost a request could make unbounded, refused when a
//! bundle or a tenant layer is loaded.
//!
//! The policy engine caps the instructions one evaluation runs, but a single
//! builtin runs as one instruction, and a few of them allocate in proportion
//! to a number or a product of their arguments: `numbers.range(0, n)`
//! reserves `n` values up front, `net.cidr_expand("0.0.0.0/0")` builds four
//! billion strings, `sprintf("%09999999999d", …)` pads to the width its
//! format names, and `concat(sep, list)` or `replace(s, old, new)` grow with
//! one argument *times* another. When those arguments come from a request,
//! one call asks for terabytes: the allocation fails and the process aborts
//! (Rust cannot turn that into an error), taking every tenant down.
//!
//! So, in every module (the org's and each tenant layer's):
//! - `numbers.range`, `numbers.range_step` and `net.cidr_expand` are refused;
//! - the argument that multiplies must be written as a literal:
//!   `sprintf`'s format (whose widths and precisions are at most 999 and
//!   written in ASCII digits: regorus panics on other digits), `concat`'s
//!   separator, `replace`'s and `regex.replace`'s replacement,
//!   `strings.replace_n`'s pattern object, `json.marshal_with_options`'
//!   options, `bits.lsh`'s shift and the text `units.parse` and
//!   `units.parse_bytes` read (regorus reads it as a number of any size);
//! - those builtins are only called by name (never handed to `with … as`).
//!
//! - the text `to_number`, `json.unmarshal`, `json.is_valid`,
//!   `yaml.unmarshal` and `yaml.is_valid` read (and the paths of
//!   `json.filter` and `json.remove`) must be literals: regorus reads an
//!   object named as serde's private big-number marker in it as a number
//!   of any size, and the text can reach the call decoded (base64, hex, a
//!   URL query) where no screening of the input sees it.
//!
//! The policy engine also refuses an input string spelling the marker
//! (belt and braces), and an evaluation that panics is a denial.
//!
//! The check reads the module's tokens with regorus's own lexer, so a name
//! in a comment or a string is no call, and a builtin is found however the
//! module spaces it (`numbers . range (`). Functions are not values in
//! Rego, so a builtin cannot be reached under another name.

use regorus::unstable::{Lexer, TokenKind};

/// Builtins refused outright.
const REFUSED: &[&str] = &["numbers.range", "numbers.range_step", "net.cidr_expand"];

/// Builtins whose argument at this index (from 0) must be a literal.
const LITERAL_ARG: &[(&str, usize)] = &[
    ("sprintf", 0),
    ("concat", 0),
    ("replace", 2),
    ("regex.replace", 2),
    ("strings.replace_n", 0),
    ("json.marshal_with_options", 1),
    // The shift: `bits.lsh(1, n)` holds 2^n.
    ("bits.lsh", 1),
    // regorus reads the text as a number of any size: `units.parse("1e2147483647")`
    // computes ten to that power.
    ("units.parse", 0),
    ("units.parse_bytes", 0),
    // Text read into a value: an object named as serde's private
    // big-number marker becomes a number of any size (`1e2147483647`
    // computed), however the text reached the call (decoded from base64,
    // hex, a URL query, or JSON cut short after the marker).
    ("to_number", 0),
    ("json.unmarshal", 0),
    ("json.is_valid", 0),
    ("yaml.unmarshal", 0),
    ("yaml.is_valid", 0),
    // Their paths are read the same way.
    ("json.filter", 1),
    ("json.remove", 1),
];

/// The widest `sprintf` width or precision allowed.
const MAX_WIDTH: u64 = 999;

/// One message per unbounded call in `text` (a Rego module); none when the
/// module does not lex (compiling it reports that).
pub fn unbounded_calls(file: &str, text: &str) -> Vec<String> {
    let Ok(source) = regorus::Source::from_contents(file.to_owned(), text.to_owned()) else {
        return Vec::new();
    };
    let mut lexer = Lexer::new(&source);
    let mut toks: Vec<(TokenKind, String)> = Vec::new();
    loop {
        match lexer.next_token() {
            Ok(t) if t.0 == TokenKind::Eof => break,
            Ok(t) => toks.push((t.0, t.1.text().to_owned())),
            Err(_) => return Vec::new(),
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_name = toks[i].0 == TokenKind::Ident
            && (i == 0 || !(toks[i - 1].0 == TokenKind::Symbol && toks[i - 1].1 == "."));
        if !starts_name {
            i += 1;
            continue;
        }
        // The dotted name starting here (`numbers`, `.`, `range`).
        let mut name = toks[i].1.clone();
        let mut j = i + 1;
        while j + 1 < toks.len()
            && toks[j].0 == TokenKind::Symbol
            && toks[j].1 == "."
            && toks[j + 1].0 == TokenKind::Ident
        {
            name.push('.');
            name.push_str(&toks[j + 1].1);
            j += 2;
        }
        if REFUSED.contains(&name.as_str()) {
            out.push(format!(
                "`{name}` is refused: its result grows with its arguments without bound, so a request could make the gateway allocate without limit"
            ));
        } else if let Some(&(_, at)) = LITERAL_ARG.iter().find(|(n, _)| *n == name) {
            let is_call = toks
                .get(j)
                .is_some_and(|t| t.0 == TokenKind::Symbol && t.1 == "(");
            if !is_call {
                // Named without a call: `… with f as sprintf` would hand
                // `f`'s arguments, unchecked, to it.
                out.push(format!(
                    "`{name}` may only be called by its name, with the arguments this check reads"
                ));
            } else {
                let args = arguments(&toks[j + 1..]);
                let why = match args.get(at) {
                    None => None,
                    Some(arg) if !literal(arg) => Some(format!(
                        "`{name}`: argument {} must be written as a literal (a value from a request there could make the result grow without bound)",
                        at + 1
                    )),
                    Some(arg) if name == "sprintf" => format_problem(arg),
                    Some(_) => None,
                };
                out.extend(why.map(|w| {
                    if w.starts_with('`') {
                        w
                    } else {
                        format!("`sprintf`: {w}")
                    }
                }));
            }
        }
        i = j;
    }
    out
}

/// The arguments of a call whose `(` came just before `toks`: the tokens of
/// each, split at the commas outside brackets, up to the closing `)`.
fn arguments(toks: &[(TokenKind, String)]) -> Vec<&[(TokenKind, String)]> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (k, (kind, text)) in toks.iter().enumerate() {
        if *kind != TokenKind::Symbol {
            continue;
        }
        match text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" if depth > 0 => depth -= 1,
            ")" => {
                if k > start {
                    out.push(&toks[start..k]);
                }
                return out;
            }
            "," if depth == 0 => {
                out.push(&toks[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    out
}

/// Whether an argument is a literal: strings, numbers, `true`, `false`,
/// `null`, and arrays and objects of them.
fn literal(arg: &[(TokenKind, String)]) -> bool {
    !arg.is_empty()
        && arg.iter().all(|(kind, text)| match kind {
            TokenKind::String | TokenKind::RawString | TokenKind::Number => true,
            TokenKind::Ident => matches!(text.as_str(), "true" | "false" | "null"),
            TokenKind::Symbol => matches!(text.as_str(), "[" | "]" | "{" | "}" | ":" | ","),
            _ => false,
        })
}

/// What is wrong with a `sprintf` format argument, if anything: it must be
/// one string whose widths and precisions are ASCII numbers up to
/// [`MAX_WIDTH`].
fn format_problem(arg: &[(TokenKind, String)]) -> Option<String> {
    let [(kind, text)] = arg else {
        return Some("the format must be one string literal".into());
    };
    let format = match kind {
        TokenKind::RawString => text.clone(),
        TokenKind::String => match serde_json::from_str::<String>(&format!("\"{text}\"")) {
            Ok(s) => s,
            Err(_) => return Some("the format is not a readable string".into()),
        },
        _ => return Some("the format must be a string literal".into()),
    };
    if format
        .chars()
        .any(|c| c.is_numeric() && !c.is_ascii_digit())
    {
        return Some("the format holds a digit outside ASCII".into());
    }
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            continue;
        }
        // Widths and precisions: digits, and a `.` among them.
        let mut n: u64 = 0;
        while let Some(&d) = chars.peek() {
            match d {
                '0'..='9' => {
                    n = n
                        .saturating_mul(10)
                        .saturating_add(u64::from(d as u8 - b'0'));
                    if n > MAX_WIDTH {
                        return Some(format!(
                            "a width or precision in the format is above {MAX_WIDTH}"
                        ));
                    }
                }
                '.' => n = 0,
                _ => break,
            }
            chars.next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::unbounded_calls;

    fn refused(text: &str) -> Vec<String> {
        unbounded_calls("t.rego", &format!("package t\nimport rego.v1\n{text}\n"))
    }

    #[test]
    fn builtins_that_allocate_by_an_argument_are_refused() {
        for call in [
            "x := numbers.range(0, input.n)",
            "x := numbers.range_step(0, input.n, 1)",
            "x := net.cidr_expand(input.cidr)",
            "x := numbers . range(0, 3)",
            "x := count(numbers.range(1, 2))",
            "x := y if { y := net.cidr_expand(\"10.0.0.0/30\") }",
        ] {
            assert_eq!(refused(call).len(), 1, "{call}");
        }
    }

    #[test]
    fn multiplying_arguments_must_be_literals() {
        for call in [
            "x := sprintf(input.f, [1])",
            "x := concat(input.sep, input.list)",
            "x := replace(input.s, \"a\", input.b)",
            "x := regex.replace(input.s, \"a\", input.b)",
            "x := strings.replace_n(input.p, input.s)",
            "x := json.marshal_with_options(input, input.o)",
            "f(s) := sprintf(s, [1])",
            "x := sprintf(\"%09999999999d\", [1])",
            "x := sprintf(\"%1000s\", [1])",
            "x := sprintf(\"%.1000f\", [1])",
            "x := sprintf(\"\\u002501000000d\", [1])",
            "x := sprintf(`%4000000000d`, [1])",
            "x := sprintf(\"%٣d\", [1])",
            "x := bits.lsh(1, input.n)",
            "x := units.parse(input.m)",
            "x := units.parse_bytes(input.m)",
            "x := to_number(input.a)",
            "x := json.unmarshal(base64url.decode(input.t))",
            "x := json.is_valid(input.t)",
            "x := yaml.unmarshal(input.t)",
            "x := json.filter(input.o, input.paths)",
            "f(a, b) := a\nx := f(input.fmt, [1]) with f as sprintf",
        ] {
            assert_eq!(refused(call).len(), 1, "{call}: {:?}", refused(call));
        }
    }

    #[test]
    fn ordinary_calls_pass() {
        for call in [
            "x := sprintf(\"%s call by %v\", [input.a, input.b])",
            "x := sprintf(\"%05d|%.2f|100%%\", [1, 2])",
            "x := concat(\", \", input.list)",
            "x := replace(input.s, \"a\", \"b\")",
            "x := regex.replace(input.s, \"[0-9]\", \"#\")",
            "x := strings.replace_n({\"a\": \"b\", \"c\": \"d\"}, input.s)",
            "x := json.marshal_with_options(input, {\"pretty\": true, \"indent\": \"  \"})",
            "x := input.numbers.range",
            "# numbers.range(0, input.n) in a comment\nx := \"net.cidr_expand\"",
            "x := count(input.list)",
            "x := bits.lsh(input.n, 3)",
            "x := units.parse_bytes(\"10Gi\")",
            "x := to_number(\"5\")",
            "x := json.filter(input.o, [\"a/b\"])",
        ] {
            assert!(refused(call).is_empty(), "{call}: {:?}", refused(call));
        }
    }
}
