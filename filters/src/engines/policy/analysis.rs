//! Rego text analysis: every `input` path a bundle's modules can reach
//! (widened to the whole subtree behind a dynamic index, an alias or a bare
//! `input`), which input fields the cache key must therefore hold, and the
//! argument paths the policy reads by name.

use std::collections::BTreeSet;

/// One leaf (or subtree) of the input document a policy can read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Field {
    PrincipalId,
    PrincipalTenant,
    PrincipalRoles,
    PrincipalKind,
    PrincipalAuth,
    /// `None`: the whole attribute map.
    PrincipalAttribute(Option<String>),
    /// `input.principal.grants`, whole.
    PrincipalGrants,
    ServerName,
    ServerGroup,
    ServerVia,
    Method,
    Tool,
    Prompt,
    ResourceUri,
    /// `None`: the whole arguments value; `Some(k)`: its top-level member `k`.
    Argument(Option<String>),
    Risk,
    Listing,
    Time,
    Hour,
    Weekday,
    SourceIp,
    Justification,
    SessionId,
    /// `input.flow`, whole (the session's state and the call's labels).
    Flow,
    /// `input.anomaly`, whole (the call's behaviour signals).
    Anomaly,
}

pub(super) const ALL_PRINCIPAL: &[Field] = &[
    Field::PrincipalId,
    Field::PrincipalTenant,
    Field::PrincipalRoles,
    Field::PrincipalKind,
    Field::PrincipalAuth,
    Field::PrincipalAttribute(None),
    Field::PrincipalGrants,
];
pub(super) const ALL_SERVER: &[Field] = &[Field::ServerName, Field::ServerGroup, Field::ServerVia];
pub(super) const ALL_REQUEST: &[Field] = &[
    Field::Method,
    Field::Tool,
    Field::Prompt,
    Field::ResourceUri,
    Field::Argument(None),
    Field::Risk,
    Field::Listing,
];
pub(super) const ALL_CONTEXT: &[Field] = &[
    Field::Time,
    Field::Hour,
    Field::Weekday,
    Field::SourceIp,
    Field::Justification,
    Field::SessionId,
];

/// Builtins whose result is not a function of the input and data.
pub(super) const NONDETERMINISTIC: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "uuid.parse",
    "http.send",
    "opa.runtime",
    "net.lookup_ip_addr",
    "crypto.x509.parse_and_verify_certificates",
];

/// Which input fields the cache key must hold, or `None` when the policy
/// cannot be cached at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    pub(super) fields: Vec<Field>,
    /// Names of the `Argument(Some(_))` fields, in `fields` order.
    pub(super) arg_names: Vec<String>,
}

pub(super) fn fields_for(path: &[String]) -> Vec<Field> {
    let seg = |i: usize| path.get(i).map(String::as_str);
    match seg(0) {
        None => [
            ALL_PRINCIPAL,
            ALL_SERVER,
            ALL_REQUEST,
            ALL_CONTEXT,
            &[Field::Flow, Field::Anomaly],
        ]
        .concat(),
        Some("flow") => vec![Field::Flow],
        Some("anomaly") => vec![Field::Anomaly],
        Some("principal") => match seg(1) {
            None => ALL_PRINCIPAL.to_vec(),
            Some("id") => vec![Field::PrincipalId],
            Some("tenant") => vec![Field::PrincipalTenant],
            Some("roles") => vec![Field::PrincipalRoles],
            Some("kind") => vec![Field::PrincipalKind],
            Some("auth") => vec![Field::PrincipalAuth],
            Some("attributes") => vec![Field::PrincipalAttribute(seg(2).map(str::to_owned))],
            Some("grants") => vec![Field::PrincipalGrants],
            Some(_) => Vec::new(),
        },
        Some("server") => match seg(1) {
            None => ALL_SERVER.to_vec(),
            Some("name") => vec![Field::ServerName],
            Some("group") => vec![Field::ServerGroup],
            Some("via") => vec![Field::ServerVia],
            Some(_) => Vec::new(),
        },
        Some("request") => match seg(1) {
            None => ALL_REQUEST.to_vec(),
            Some("method") => vec![Field::Method],
            Some("tool") => vec![Field::Tool],
            Some("prompt") => vec![Field::Prompt],
            Some("resource_uri") => vec![Field::ResourceUri],
            Some("arguments") => vec![Field::Argument(seg(2).map(str::to_owned))],
            Some("risk") => vec![Field::Risk],
            Some("listing") => vec![Field::Listing],
            Some(_) => Vec::new(),
        },
        Some("context") => match seg(1) {
            None => ALL_CONTEXT.to_vec(),
            Some("time") => vec![Field::Time],
            Some("hour") => vec![Field::Hour],
            Some("weekday") => vec![Field::Weekday],
            Some("source_ip") => vec![Field::SourceIp],
            Some("justification") => vec![Field::Justification],
            Some("session_id") => vec![Field::SessionId],
            Some(_) => Vec::new(),
        },
        Some(_) => Vec::new(),
    }
}

/// One piece of a Rego module as its lexer sees it.
enum Piece {
    /// A comment, `#` to the end of its line.
    Comment,
    /// A string literal, quotes included: `"…"` or raw `` `…` ``.
    Literal,
    /// Any other character.
    Code,
}

/// The pieces of `src` in order, as `(kind, start, end)`.
fn pieces(src: &str) -> impl Iterator<Item = (Piece, usize, usize)> + '_ {
    let b = src.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = i;
        match *b.get(i)? {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Some((Piece::Comment, start, i))
            }
            q @ (b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                Some((Piece::Literal, start, i))
            }
            _ => {
                i += src[i..].chars().next().map_or(1, char::len_utf8);
                Some((Piece::Code, start, i))
            }
        }
    })
}

/// Strips comments so that only code (and string literals, which may index
/// `input["x"]`) is scanned. Anything a literal adds only widens the key.
pub(super) fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for (piece, start, end) in pieces(src) {
        if !matches!(piece, Piece::Comment) {
            out.push_str(&src[start..end]);
        }
    }
    out
}

pub(super) fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The name paths of every `input` reference in `code` (comments
/// stripped): `.name` and `["name"]` segments followed from `input`.
pub(super) fn input_paths(code: &str) -> Vec<Vec<String>> {
    paths_from(code, "input")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Every reference to the variable `root` in `code`, with where it starts
/// and the `.name` / `["name"]` segments that follow it.
pub(super) fn paths_from(code: &str, root: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while let Some(off) = code[i..].find(root) {
        let start = i + off;
        let end = start + root.len();
        i = end;
        let before_ok = start == 0 || !(is_ident(b[start - 1]) || b[start - 1] == b'.');
        let after_ok = end >= b.len() || !is_ident(b[end]);
        if !(before_ok && after_ok) {
            continue;
        }
        let mut path: Vec<String> = Vec::new();
        let mut j = end;
        loop {
            if j < b.len() && b[j] == b'.' {
                let s = j + 1;
                let mut e = s;
                while e < b.len() && is_ident(b[e]) {
                    e += 1;
                }
                if e == s {
                    break;
                }
                path.push(code[s..e].to_owned());
                j = e;
            } else if j + 1 < b.len() && b[j] == b'[' && b[j + 1] == b'"' {
                let s = j + 2;
                let Some(close) = code[s..].find('"') else {
                    break;
                };
                let lit = &code[s..s + close];
                if lit.contains('\\') || code.as_bytes().get(s + close + 1) != Some(&b']') {
                    break;
                }
                path.push(lit.to_owned());
                j = s + close + 2;
            } else {
                break;
            }
        }
        out.push((start, path));
    }
    out
}

/// The variable a reference starting at `start` is bound to (`args :=
/// input.request.arguments`, `loc = input.request.arguments.loc`), if any.
pub(super) fn bound_to(code: &str, start: usize) -> Option<&str> {
    let before = code[..start].trim_end();
    let before = before
        .strip_suffix(":=")
        .or_else(|| {
            before
                .strip_suffix('=')
                .filter(|b| !b.ends_with(['=', '!', '<', '>']))
        })?
        .trim_end();
    let name_start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &before[name_start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

/// The paths below `input.request.arguments` that `modules` read by name
/// (`input.request.arguments.loc.region` gives `["loc", "region"]`), also
/// through a variable bound to the arguments or a part of them (`args :=
/// input.request.arguments` then `args.region`).
pub fn argument_paths(modules: &[&str]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in modules {
        let code = code_only(m);
        for (start, p) in paths_from(&code, "input") {
            if p.len() < 2 || p[0] != "request" || p[1] != "arguments" {
                continue;
            }
            let below = p[2..].to_vec();
            if let Some(alias) = bound_to(&code, start) {
                for (_, q) in paths_from(&code, alias) {
                    let mut whole = below.clone();
                    whole.extend(q);
                    if !whole.is_empty() {
                        out.push(whole);
                    }
                }
            }
            if !below.is_empty() {
                out.push(below);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How a bundle's modules read the call's arguments: the paths they name,
/// and whether they also reach the arguments in a way no path names (the
/// whole arguments handed to a function, `object.get`, iterated, indexed
/// by a variable, re-aliased; `input` or `input.request` taken whole).
/// Then every word the modules hold (identifiers and string literals) is
/// a name the policy may read, and an argument key some peer reads as one
/// of them without being it is refused.
#[derive(Debug, Clone, Default)]
pub struct ArgumentReads {
    pub paths: Vec<Vec<String>>,
    /// `Some`: the arguments are read opaquely; the modules' words, exact
    /// and folded.
    pub opaque: Option<Words>,
}

/// The words of a bundle's modules.
#[derive(Debug, Clone, Default)]
pub struct Words {
    exact: std::collections::HashSet<String>,
    folded: std::collections::HashSet<String>,
}

impl Words {
    fn of(modules: &[&str]) -> Words {
        let mut w = Words::default();
        for m in modules {
            let code = code_only(m);
            let mut add = |t: &str| {
                if !t.is_empty() && t.len() <= 256 {
                    w.folded
                        .insert(crate::protocol::names::fold(t).into_owned());
                    w.exact.insert(t.to_owned());
                }
            };
            for t in code.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                add(t);
            }
            // Whole string literals (`"eu-west"`, `"max.tokens"`).
            for lit in code.split('"').skip(1).step_by(2) {
                add(lit);
            }
        }
        w
    }

    /// Whether some peer reads `key` as one of the words without it being one.
    fn near(&self, key: &str) -> bool {
        if self.exact.contains(key) {
            return false;
        }
        if key.is_ascii() {
            return self.folded.contains(&key.to_ascii_lowercase());
        }
        crate::protocol::names::folded_readings(key)
            .iter()
            .any(|r| self.folded.contains(r.as_ref()))
            || self
                .exact
                .iter()
                .any(|w| crate::protocol::names::same_name(key, w))
    }
}

/// Whether `args` holds, at any depth, a key that is a near-name of one
/// of `words`.
fn near_a_word(words: &Words, args: &serde_json::Value, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match args {
        serde_json::Value::Object(o) => o
            .iter()
            .any(|(k, v)| words.near(k) || near_a_word(words, v, depth - 1)),
        serde_json::Value::Array(a) => a.iter().any(|v| near_a_word(words, v, depth - 1)),
        _ => false,
    }
}

/// [`argument_paths`], and whether the modules also read the arguments
/// opaquely (see [`ArgumentReads`]).
pub fn argument_reads(modules: &[&str]) -> ArgumentReads {
    let mut opaque = false;
    for m in modules {
        let code = code_only(m);
        for (start, p) in paths_from(&code, "input") {
            let arguments = p.len() >= 2 && p[0] == "request" && p[1] == "arguments";
            let whole = match p.len() {
                0 => true,
                1 => p[0] == "request",
                2 => arguments,
                _ => false,
            };
            let alias = bound_to(&code, start);
            if !(whole || arguments && alias.is_some()) {
                continue;
            }
            // Bound to a name every use of which names a path below it:
            // the paths say it all. Anything else is opaque.
            let named = arguments
                && alias.is_some_and(|alias| {
                    let uses = paths_from(&code, alias);
                    // The binding itself is one use with no path; a part
                    // bound to a further name (`loc := args.loc`) is not
                    // followed.
                    uses.iter().filter(|(_, q)| q.is_empty()).count() <= 1
                        && uses
                            .iter()
                            .all(|(at, q)| q.is_empty() || bound_to(&code, *at).is_none())
                });
            if !named {
                opaque = true;
            }
        }
    }
    ArgumentReads {
        paths: argument_paths(modules),
        opaque: opaque.then(|| Words::of(modules)),
    }
}

/// Whether an argument the modules read (along one of their paths, or
/// anywhere when they read the arguments opaquely) holds a string a lax
/// reader takes for another type (`"true"`, `"yes"`, `"5"`, `" 1e3 "`:
/// pydantic's lax mode reads a `bool` or number field so; `"[\"us\"]"`:
/// the Python SDK decodes it into a list, see [`coercible`]). Until the tool's
/// schema says which type the server reads, a rule comparing the typed
/// value (`force == true`) cannot judge it.
pub fn reads_coercible(reads: &ArgumentReads, args: &serde_json::Value) -> bool {
    if reads.opaque.is_some() {
        return coercible_under(args, 64);
    }
    reads.paths.iter().any(|path| {
        let mut at = args;
        for key in path {
            // A string on the way (`"opts": "{\"force\": true}"`) may be
            // decoded into the object the path goes through.
            if let serde_json::Value::String(s) = at {
                return coercible(s);
            }
            match at.get(key.as_str()) {
                Some(v) => at = v,
                None => return false,
            }
        }
        coercible_under(at, 64)
    })
}

/// Whether `v` or anything under it is a string a lax reader coerces.
fn coercible_under(v: &serde_json::Value, depth: usize) -> bool {
    if depth == 0 {
        return true;
    }
    match v {
        serde_json::Value::String(s) => coercible(s),
        serde_json::Value::Array(a) => a.iter().any(|x| coercible_under(x, depth - 1)),
        serde_json::Value::Object(o) => o.values().any(|x| coercible_under(x, depth - 1)),
        _ => false,
    }
}

/// A string a server may read as another type: pydantic's lax mode (and
/// readers like it) reads `true`/`false`, `yes`/`no`, `on`/`off`, `t`/`f`,
/// `y`/`n`, `1`/`0` in any case, or a decimal number as a boolean or a
/// number; the Python SDK's tools decode a string argument whose parameter
/// is not a string as JSON first (`json.loads`, which also takes `NaN`),
/// so `"[\"us\"]"` reaches the tool as a list, `"{…}"` as an object and
/// `"null"` as `None`. Surrounding spaces allowed. A string that starts
/// and ends as an array or an object counts whether or not it is valid
/// JSON to this gateway: what Python reads is not this parser's to say.
pub fn coercible(s: &str) -> bool {
    let t = s.trim();
    if t.is_empty() {
        return false;
    }
    let b = t.as_bytes();
    if matches!((b[0], b[b.len() - 1]), (b'[', b']') | (b'{', b'}')) || t == "null" {
        return true;
    }
    if t.len() > 64 {
        return false;
    }
    const BOOLS: [&str; 10] = [
        "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n",
    ];
    BOOLS.iter().any(|b| t.eq_ignore_ascii_case(b))
        || t.trim_start_matches(['+', '-'])
            .replace('_', "")
            .parse::<f64>()
            .is_ok_and(f64::is_finite)
}

/// Whether `args` holds a near-name of an argument the modules read, by
/// path or (when they read the arguments opaquely) of any of their words.
pub fn near_named_read(reads: &ArgumentReads, args: &serde_json::Value) -> bool {
    near_named_argument(&reads.paths, args)
        || reads
            .opaque
            .as_ref()
            .is_some_and(|w| near_a_word(w, args, 128))
}

/// Whether `args` holds, along one of `paths`, a member whose name some
/// mainstream peer reads as the path's (`Region`, `regıon` for `region`)
/// without being it: the server would act on a value the policy never saw.
pub fn near_named_argument(paths: &[Vec<String>], args: &serde_json::Value) -> bool {
    paths.iter().any(|path| {
        let mut at = args;
        for seg in path {
            let Some(o) = at.as_object() else {
                return false;
            };
            if o.keys()
                .any(|k| k != seg && crate::protocol::names::same_name(k, seg))
            {
                return true;
            }
            match o.get(seg) {
                Some(next) => at = next,
                None => return false,
            }
        }
        false
    })
}

/// The string literals of a bundle's modules, comments aside: `"…"`
/// (unescaped as Rego reads it, which is JSON's escaping) and raw
/// `` `…` ``. A name a rule compares with (`input.request.tool == "purge"`)
/// is one of them.
pub fn string_literals(modules: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for m in modules {
        for (piece, start, end) in pieces(m) {
            let Piece::Literal = piece else {
                continue;
            };
            let text = &m[start..end];
            let inner = text.get(1..text.len().saturating_sub(1)).unwrap_or("");
            let lit = if text.starts_with('"') && inner.contains('\\') {
                serde_json::from_str::<String>(text).unwrap_or_else(|_| inner.to_owned())
            } else {
                inner.to_owned()
            };
            out.push(lit);
        }
    }
    out
}

/// Finds every `input` reference in the modules and the fields it can reach.
pub fn key_plan(modules: &[&str]) -> Option<KeyPlan> {
    let mut fields: BTreeSet<Field> = BTreeSet::new();
    for m in modules {
        let code = code_only(m);
        for nd in NONDETERMINISTIC {
            if code.contains(nd) {
                return None;
            }
        }
        for path in input_paths(&code) {
            fields.extend(fields_for(&path));
        }
    }
    // A whole subtree subsumes its members.
    if fields.contains(&Field::Argument(None)) {
        fields.retain(|f| !matches!(f, Field::Argument(Some(_))));
    }
    if fields.contains(&Field::PrincipalAttribute(None)) {
        fields.retain(|f| !matches!(f, Field::PrincipalAttribute(Some(_))));
    }
    let fields: Vec<Field> = fields.into_iter().collect();
    let arg_names = fields
        .iter()
        .filter_map(|f| match f {
            Field::Argument(Some(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    Some(KeyPlan { fields, arg_names })
}
