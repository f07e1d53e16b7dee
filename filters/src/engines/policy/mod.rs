//! Rego policy, compiled once per bundle with regorus, behind a decision cache.
//!
//! The cache is sound by construction: the bundle's Rego text is read to find
//! every `input` path it can reach (a path reached through a dynamic index,
//! an alias or a bare `input` widens to the whole subtree), and the cache key
//! holds the value of each such path — exactly, not a hash. A policy that
//! calls a builtin whose result is not a function of its input (`time.now_ns`,
//! `rand.intn`, `http.send` …) is never cached. Each snapshot has its own
//! cache, so a key never crosses bundle revisions.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use regorus::Value;
use serde_json::value::RawValue;
use warden_config::access::Risk;

use crate::engines::identity::Principal;

/// The policy's verdict on one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allow: bool,
    /// Stable reason from the policy (`rbac_role_missing` …) or from Warden
    /// (`policy_undefined`, `policy_error`, `policy_invalid_decision`).
    pub reason: Arc<str>,
    /// Step-up: OAuth scopes the caller's token must carry for an allowed
    /// call (the decision's `scopes`, an array, or `scope`, space-separated).
    pub scopes: Option<Arc<[String]>>,
    /// Human approval an allowed call needs first (`require_approval`:
    /// `true`, a number of approvers, or `{approvers, reason}`).
    pub approval: Option<ApprovalAsk>,
}

/// What a policy asks before an allowed call may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAsk {
    /// Distinct approvers needed (1 ..= `MAX_APPROVERS`).
    pub approvers: u8,
    pub reason: Arc<str>,
}

impl PolicyDecision {
    fn deny(reason: &str) -> Self {
        PolicyDecision {
            allow: false,
            reason: reason.into(),
            scopes: None,
            approval: None,
        }
    }
}

/// Everything a decision may depend on (the documented input contract).
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub group: &'a str,
    /// The virtual server the message came through, if any.
    pub via: Option<&'a str>,
    pub method: &'a str,
    pub tool: Option<&'a str>,
    /// `params.name` of `prompts/get`.
    pub prompt: Option<&'a str>,
    pub resource_uri: Option<&'a str>,
    /// Raw JSON text of `params.arguments`.
    pub arguments: Option<&'a str>,
    pub risk: Option<Risk>,
    /// True when Warden asks whether a listed item may be shown.
    pub listing: bool,
    pub now: SystemTime,
    pub source_ip: Option<IpAddr>,
    pub justification: Option<&'a str>,
    pub session_id: Option<&'a str>,
}

/// One leaf (or subtree) of the input document a policy can read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Field {
    PrincipalId,
    PrincipalTenant,
    PrincipalRoles,
    PrincipalKind,
    PrincipalAuth,
    /// `None`: the whole attribute map.
    PrincipalAttribute(Option<String>),
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
}

const ALL_PRINCIPAL: &[Field] = &[
    Field::PrincipalId,
    Field::PrincipalTenant,
    Field::PrincipalRoles,
    Field::PrincipalKind,
    Field::PrincipalAuth,
    Field::PrincipalAttribute(None),
];
const ALL_SERVER: &[Field] = &[Field::ServerName, Field::ServerGroup, Field::ServerVia];
const ALL_REQUEST: &[Field] = &[
    Field::Method,
    Field::Tool,
    Field::Prompt,
    Field::ResourceUri,
    Field::Argument(None),
    Field::Risk,
    Field::Listing,
];
const ALL_CONTEXT: &[Field] = &[
    Field::Time,
    Field::Hour,
    Field::Weekday,
    Field::SourceIp,
    Field::Justification,
    Field::SessionId,
];

/// Builtins whose result is not a function of the input and data.
const NONDETERMINISTIC: &[&str] = &[
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
    fields: Vec<Field>,
    /// Names of the `Argument(Some(_))` fields, in `fields` order.
    arg_names: Vec<String>,
}

fn fields_for(path: &[String]) -> Vec<Field> {
    let seg = |i: usize| path.get(i).map(String::as_str);
    match seg(0) {
        None => [ALL_PRINCIPAL, ALL_SERVER, ALL_REQUEST, ALL_CONTEXT].concat(),
        Some("principal") => match seg(1) {
            None => ALL_PRINCIPAL.to_vec(),
            Some("id") => vec![Field::PrincipalId],
            Some("tenant") => vec![Field::PrincipalTenant],
            Some("roles") => vec![Field::PrincipalRoles],
            Some("kind") => vec![Field::PrincipalKind],
            Some("auth") => vec![Field::PrincipalAuth],
            Some("attributes") => vec![Field::PrincipalAttribute(seg(2).map(str::to_owned))],
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

/// Strips comments so that only code (and string literals, which may index
/// `input["x"]`) is scanned. Anything a literal adds only widens the key.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'`') => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != q {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                // Keep short literal contents: `input["x"]` indexes by them.
                let end = i.min(b.len());
                out.push_str(&src[start..end]);
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The name paths of every `input` reference in `code` (comments
/// stripped): `.name` and `["name"]` segments followed from `input`.
fn input_paths(code: &str) -> Vec<Vec<String>> {
    paths_from(code, "input")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Every reference to the variable `root` in `code`, with where it starts
/// and the `.name` / `["name"]` segments that follow it.
fn paths_from(code: &str, root: &str) -> Vec<(usize, Vec<String>)> {
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
fn bound_to(code: &str, start: usize) -> Option<&str> {
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

/// Local calendar facts for the configured time zone.
#[derive(Debug, Clone)]
pub struct Clock {
    tz: jiff::tz::TimeZone,
    id: u64,
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// What the input document says about "now" (second precision).
#[derive(Debug, Clone)]
pub struct Moment {
    pub hour: u8,
    pub weekday: &'static str,
    /// RFC 3339 UTC, as a Rego string.
    pub time: Value,
}

thread_local! {
    /// The last moment computed on this thread: `(clock id, unix second, moment)`.
    static MOMENT: std::cell::RefCell<Option<(u64, i64, Moment)>> =
        const { std::cell::RefCell::new(None) };
}

impl Clock {
    pub fn new(tz: &str) -> Result<Self, String> {
        jiff::tz::TimeZone::get(tz)
            .map(|tz| Clock {
                tz,
                id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            })
            .map_err(|e| format!("unknown time zone `{tz}`: {e}"))
    }

    fn secs(now: SystemTime) -> i64 {
        match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// Hour, weekday and timestamp at `now`; computed once per second per thread.
    pub fn moment(&self, now: SystemTime) -> Moment {
        let secs = Self::secs(now);
        MOMENT.with(|cell| {
            if let Some((id, at, m)) = &*cell.borrow() {
                if *id == self.id && *at == secs {
                    return m.clone();
                }
            }
            let ts = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let z = ts.to_zoned(self.tz.clone());
            let wd = z.weekday().to_monday_zero_offset() as usize;
            let m = Moment {
                hour: z.hour() as u8,
                weekday: WEEKDAYS[wd.min(6)],
                time: Value::from(ts.to_string()),
            };
            *cell.borrow_mut() = Some((self.id, secs, m.clone()));
            m
        })
    }

    /// `(hour 0-23, weekday name)` at `now` in the zone.
    pub fn local(&self, now: SystemTime) -> (u8, &'static str) {
        let m = self.moment(now);
        (m.hour, m.weekday)
    }
}

/// Member names of the input document, made once per thread (a Rego string
/// is reference-counted: cloning one is cheaper than allocating it).
const NAME_LIST: [&str; 25] = [
    "principal",
    "id",
    "tenant",
    "roles",
    "kind",
    "auth",
    "attributes",
    "server",
    "name",
    "group",
    "request",
    "method",
    "tool",
    "prompt",
    "resource_uri",
    "arguments",
    "risk",
    "listing",
    "context",
    "time",
    "hour",
    "weekday",
    "source_ip",
    "justification",
    "session_id",
];

thread_local! {
    static NAMES: [Value; 25] = NAME_LIST.map(Value::from);
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

/// The input document handed to Rego (see docs/policy.md, the input contract).
pub fn input_value(i: &PolicyInput<'_>, clock: &Clock) -> Value {
    input_for(i, clock, None)
}

/// The input document restricted to what `plan` says the policy can read
/// (everything when `plan` is `None`). Leaving out what no rule can reach
/// cannot change a decision, by the same analysis that makes the cache sound.
fn input_for(i: &PolicyInput<'_>, clock: &Clock, plan: Option<&KeyPlan>) -> Value {
    let has = |f: &Field| plan.is_none_or(|p| p.fields.contains(f));
    let has_arg = |name: &str| {
        plan.is_none_or(|p| {
            p.fields.iter().any(|f| match f {
                Field::Argument(None) => true,
                Field::Argument(Some(n)) => n == name,
                _ => false,
            })
        })
    };
    NAMES.with(|names| {
        let n = |k: &'static str| -> Value {
            // Names are a handful of short literals: a linear scan over
            // pointers first, then by value.
            NAME_LIST
                .iter()
                .position(|x| std::ptr::eq(*x, k) || *x == k)
                .map_or_else(|| Value::from(k), |p| names[p].clone())
        };
        let obj = |pairs: Vec<(&'static str, Value)>| -> Value {
            let mut m = BTreeMap::new();
            for (k, v) in pairs {
                m.insert(n(k), v);
            }
            Value::from(m)
        };
        let p = i.principal;
        let now = clock.moment(i.now);
        let all_attributes = has(&Field::PrincipalAttribute(None));
        let attributes: BTreeMap<Value, Value> = p
            .attributes
            .iter()
            .filter(|(k, _)| all_attributes || has(&Field::PrincipalAttribute(Some((*k).clone()))))
            .map(|(k, v)| (s(k), s(v)))
            .collect();
        let whole_args = || match i.arguments {
            Some(raw) => Value::from_json_str(raw).unwrap_or(Value::Null),
            None => Value::new_object(),
        };
        let arguments = match plan {
            Some(pl) if !has(&Field::Argument(None)) => {
                let wanted: Vec<String> = pl
                    .arg_names
                    .iter()
                    .filter(|n| has_arg(n))
                    .cloned()
                    .collect();
                match i.arguments.map(|raw| pick_members(raw, &wanted)) {
                    None => Value::new_object(),
                    Some(None) => whole_args(),
                    Some(Some(values)) => {
                        let mut m = BTreeMap::new();
                        for (name, v) in wanted.iter().zip(values) {
                            if let Some(v) = v {
                                m.insert(
                                    s(name),
                                    Value::from_json_str(v.get()).unwrap_or(Value::Null),
                                );
                            }
                        }
                        Value::from(m)
                    }
                }
            }
            _ => whole_args(),
        };
        obj(vec![
            (
                "principal",
                obj(vec![
                    ("id", s(&p.id)),
                    ("tenant", s(&p.tenant)),
                    (
                        "roles",
                        Value::from(p.roles.iter().map(|r| s(r)).collect::<Vec<_>>()),
                    ),
                    ("kind", s(p.kind.as_str())),
                    ("auth", s(p.auth.as_str())),
                    ("attributes", Value::from(attributes)),
                ]),
            ),
            (
                "server",
                obj(vec![
                    ("name", s(i.server)),
                    ("group", s(i.group)),
                    ("via", opt(i.via)),
                ]),
            ),
            (
                "request",
                obj(vec![
                    ("method", s(i.method)),
                    ("tool", opt(i.tool)),
                    ("prompt", opt(i.prompt)),
                    ("resource_uri", opt(i.resource_uri)),
                    ("arguments", arguments),
                    ("risk", opt(i.risk.map(Risk::as_str))),
                    ("listing", Value::from(i.listing)),
                ]),
            ),
            (
                "context",
                obj(vec![
                    ("time", now.time.clone()),
                    ("hour", Value::from(now.hour as u64)),
                    ("weekday", s(now.weekday)),
                    (
                        "source_ip",
                        i.source_ip
                            .map_or(Value::Null, |ip| Value::from(ip.to_string())),
                    ),
                    ("justification", opt(i.justification)),
                    ("session_id", opt(i.session_id)),
                ]),
            ),
        ])
    })
}

/// A JSON object key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The raw values of the top-level members `wanted` of the JSON object
/// `raw`, compared after unescaping; `None` when `raw` is not an object.
fn pick_members<'a>(raw: &'a str, wanted: &[String]) -> Option<Vec<Option<&'a RawValue>>> {
    struct Pick<'w>(&'w [String]);
    impl<'de> serde::de::Visitor<'de> for Pick<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = vec![None; self.0.len()];
            while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                match self.0.iter().position(|w| *w == k) {
                    Some(i) => out[i] = Some(m.next_value::<&'de RawValue>()?),
                    None => {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    if !raw.trim_start().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde::Deserializer::deserialize_map(&mut de, Pick(wanted)).ok()
}

/// Longest cache key kept; larger inputs are evaluated fresh every time.
const MAX_KEY: usize = 4096;

fn put(key: &mut Vec<u8>, tag: u8, v: Option<&[u8]>) {
    key.push(tag);
    match v {
        None => key.push(0),
        Some(b) => {
            key.push(1);
            key.extend_from_slice(&(b.len() as u32).to_le_bytes());
            key.extend_from_slice(b);
        }
    }
}

impl KeyPlan {
    /// The exact bytes of every input value the policy can read; `None` when
    /// the key would be too large to be worth caching.
    fn key(&self, i: &PolicyInput<'_>, clock: &Clock, key: &mut Vec<u8>) -> bool {
        key.clear();
        let picked = match (self.arg_names.is_empty(), i.arguments) {
            (false, Some(raw)) => pick_members(raw, &self.arg_names),
            _ => None,
        };
        let mut next_arg = 0;
        let mut local: Option<Moment> = None;
        for (n, f) in self.fields.iter().enumerate() {
            let tag = n as u8;
            let p = i.principal;
            match f {
                Field::PrincipalId => put(key, tag, Some(p.id.as_bytes())),
                Field::PrincipalTenant => put(key, tag, Some(p.tenant.as_bytes())),
                Field::PrincipalRoles => {
                    key.push(tag);
                    key.extend_from_slice(&(p.roles.len() as u32).to_le_bytes());
                    for r in &p.roles {
                        put(key, 0, Some(r.as_bytes()));
                    }
                }
                Field::PrincipalKind => put(key, tag, Some(p.kind.as_str().as_bytes())),
                Field::PrincipalAuth => put(key, tag, Some(p.auth.as_str().as_bytes())),
                Field::PrincipalAttribute(None) => {
                    key.push(tag);
                    key.extend_from_slice(&(p.attributes.len() as u32).to_le_bytes());
                    for (k, v) in &p.attributes {
                        put(key, 0, Some(k.as_bytes()));
                        put(key, 0, Some(v.as_bytes()));
                    }
                }
                Field::PrincipalAttribute(Some(a)) => {
                    put(key, tag, p.attributes.get(a).map(|v| v.as_bytes()))
                }
                Field::ServerName => put(key, tag, Some(i.server.as_bytes())),
                Field::ServerGroup => put(key, tag, Some(i.group.as_bytes())),
                Field::ServerVia => put(key, tag, i.via.map(str::as_bytes)),
                Field::Method => put(key, tag, Some(i.method.as_bytes())),
                Field::Tool => put(key, tag, i.tool.map(str::as_bytes)),
                Field::Prompt => put(key, tag, i.prompt.map(str::as_bytes)),
                Field::ResourceUri => put(key, tag, i.resource_uri.map(str::as_bytes)),
                Field::Argument(None) => put(key, tag, i.arguments.map(str::as_bytes)),
                Field::Argument(Some(_)) => {
                    let n = next_arg;
                    next_arg += 1;
                    match &picked {
                        Some(values) => put(key, tag, values[n].map(|v| v.get().as_bytes())),
                        // Not an object (or absent): the whole value decides.
                        None => {
                            key.push(0xff);
                            put(key, tag, i.arguments.map(str::as_bytes))
                        }
                    }
                }
                Field::Risk => put(key, tag, i.risk.map(|r| r.as_str().as_bytes())),
                Field::Listing => put(key, tag, Some(&[i.listing as u8])),
                Field::Time => {
                    let m = local.get_or_insert_with(|| clock.moment(i.now));
                    let t = m
                        .time
                        .as_string()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    put(key, tag, Some(t.as_bytes()))
                }
                Field::Hour => {
                    let h = local.get_or_insert_with(|| clock.moment(i.now)).hour;
                    put(key, tag, Some(&[h]))
                }
                Field::Weekday => {
                    let w = local.get_or_insert_with(|| clock.moment(i.now)).weekday;
                    put(key, tag, Some(w.as_bytes()))
                }
                Field::SourceIp => match i.source_ip {
                    Some(IpAddr::V4(a)) => put(key, tag, Some(&a.octets())),
                    Some(IpAddr::V6(a)) => put(key, tag, Some(&a.octets())),
                    None => put(key, tag, None),
                },
                Field::Justification => put(key, tag, i.justification.map(str::as_bytes)),
                Field::SessionId => put(key, tag, i.session_id.map(str::as_bytes)),
            }
            if key.len() > MAX_KEY {
                return false;
            }
        }
        true
    }
}

/// Instructions one evaluation may run before it is cut off (and denies).
const MAX_INSTRUCTIONS: usize = 2_000_000;

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Reused for building cache keys on this thread.
    static KEY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// One Rego VM per worker thread, loaded with the program of the engine
    /// that last used it on this thread (VMs are reused, never shared).
    static VM: std::cell::RefCell<Option<(u64, regorus::rvm::vm::RegoVM)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compiled policy plus its decision cache; one per snapshot.
pub struct PolicyEngine {
    id: u64,
    compiled: regorus::CompiledPolicy,
    /// The policy compiled to regorus' VM; `None` when it uses something the
    /// VM compiler does not support (the interpreter then evaluates it).
    program: Option<Arc<regorus::rvm::program::Program>>,
    data: Value,
    clock: Clock,
    plan: Option<KeyPlan>,
    /// The argument paths the modules read by name ([`argument_paths`]).
    argument_paths: Vec<Vec<String>>,
    cache: Option<moka::sync::Cache<Box<[u8]>, PolicyDecision, foldhash::fast::RandomState>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("plan", &self.plan)
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

/// A Rego compile failure, located where regorus could tell.
#[derive(Debug, Clone)]
pub struct PolicyCompileError {
    pub file: String,
    pub message: String,
}

impl PolicyEngine {
    /// Compiles `modules` (path → text) with `data` once. `cache_capacity` 0
    /// turns the cache off.
    pub fn compile(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        entrypoint: &str,
        timezone: &str,
        cache_capacity: u64,
    ) -> Result<Self, PolicyCompileError> {
        // Rego unit tests (`*_test.rego`) are for `warden policy test`, not the data plane.
        let modules: BTreeMap<String, String> = modules
            .iter()
            .filter(|(p, _)| !p.ends_with("_test.rego"))
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect();
        let modules = &modules;
        let clock = Clock::new(timezone).map_err(|message| PolicyCompileError {
            file: "warden.yaml".into(),
            message: format!("policy.timezone: {message}"),
        })?;
        // Each module alone first, so a syntax error names its file.
        for (path, text) in modules {
            let mut e = regorus::Engine::new();
            if let Err(err) = e.add_policy(path.clone(), text.clone()) {
                return Err(PolicyCompileError {
                    file: path.clone(),
                    message: err.to_string(),
                });
            }
        }
        let mods: Vec<regorus::PolicyModule> = modules
            .iter()
            .map(|(p, t)| regorus::PolicyModule {
                id: p.as_str().into(),
                content: t.as_str().into(),
            })
            .collect();
        // An entrypoint that names no rule is a mistake in warden.yaml, not
        // in the modules: say so, and which rule was probably meant.
        if let Some(message) = missing_entrypoint(modules, entrypoint) {
            return Err(PolicyCompileError {
                file: "warden.yaml".into(),
                message,
            });
        }
        let data = Value::from(data.clone());
        let compiled =
            regorus::compile_policy_with_entrypoint(data.clone(), &mods, entrypoint.into())
                .map_err(|e| PolicyCompileError {
                    file: modules.keys().next().cloned().unwrap_or_default(),
                    message: format!("{e:#}"),
                })?;
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &compiled,
            &[entrypoint],
        )
        .ok();
        let texts: Vec<&str> = modules.values().map(String::as_str).collect();
        let plan = key_plan(&texts);
        let argument_paths = argument_paths(&texts);
        let cache = (plan.is_some() && cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Ok(PolicyEngine {
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            compiled,
            program,
            data,
            clock,
            plan,
            argument_paths,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether `args` holds a near-name of an argument the policy reads by
    /// name (see [`near_named_argument`]); `false` when it reads none.
    pub fn near_named_argument(&self, args: &serde_json::Value) -> bool {
        near_named_argument(&self.argument_paths, args)
    }

    /// Whether the policy reads any argument by name.
    pub fn reads_arguments(&self) -> bool {
        !self.argument_paths.is_empty()
    }

    /// Whether decisions can be cached (no nondeterministic builtin).
    pub fn cacheable(&self) -> bool {
        self.cache.is_some()
    }

    /// `(hits, misses)` since the snapshot was built.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Evaluates Rego for this input, bypassing the cache.
    pub fn evaluate(&self, i: &PolicyInput<'_>) -> PolicyDecision {
        self.evaluate_value(input_for(i, &self.clock, self.plan.as_ref()))
    }

    /// Whether evaluation runs on regorus' VM (else on its interpreter).
    pub fn compiled_to_vm(&self) -> bool {
        self.program.is_some()
    }

    /// Evaluates a ready-made input document (used by `warden policy eval`).
    pub fn evaluate_value(&self, input: Value) -> PolicyDecision {
        let Some(program) = &self.program else {
            return self.evaluate_interpreted(input);
        };
        let res = VM.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(id, _)| *id != self.id) {
                let mut vm = regorus::rvm::vm::RegoVM::new();
                vm.set_max_instructions(MAX_INSTRUCTIONS);
                vm.load_program(program.clone());
                vm.set_data(self.data.clone())?;
                *slot = Some((self.id, vm));
            }
            let Some((_, vm)) = slot.as_mut() else {
                unreachable!("the slot was just filled")
            };
            vm.set_input(input);
            vm.execute()
        });
        match res {
            Ok(v) => decision_of(&v),
            Err(e) => {
                tracing_free_log(&format!("{e:#}"));
                PolicyDecision::deny("policy_error")
            }
        }
    }

    /// Evaluates with regorus' interpreter (the reference the VM is checked against).
    pub fn evaluate_interpreted(&self, input: Value) -> PolicyDecision {
        match self.compiled.eval_with_input(input) {
            Ok(v) => decision_of(&v),
            Err(e) => {
                tracing_free_log(&format!("{e:#}"));
                PolicyDecision::deny("policy_error")
            }
        }
    }

    /// The decision, from the cache when an equal input was decided before.
    pub fn decide(&self, i: &PolicyInput<'_>) -> PolicyDecision {
        let (Some(cache), Some(plan)) = (&self.cache, &self.plan) else {
            return self.evaluate(i);
        };
        let looked = KEY_BUF.with(|buf| {
            let mut key = buf.borrow_mut();
            if !plan.key(i, &self.clock, &mut key) {
                return Err(None);
            }
            match cache.get(key.as_slice()) {
                Some(d) => Ok(d),
                None => Err(Some(Box::<[u8]>::from(key.as_slice()))),
            }
        });
        match looked {
            Ok(d) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                d
            }
            Err(key) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let d = self.evaluate(i);
                if let Some(k) = key {
                    cache.insert(k, d.clone());
                }
                d
            }
        }
    }
}

/// Why `entrypoint` (`data.<package>.<rule>`) names nothing the modules
/// define, if it does not.
fn missing_entrypoint(modules: &BTreeMap<String, String>, entrypoint: &str) -> Option<String> {
    let path = entrypoint.strip_prefix("data.")?;
    let (package, rule) = path.rsplit_once('.')?;
    let mut rules: Vec<String> = Vec::new();
    let mut packages: Vec<String> = Vec::new();
    for text in modules.values() {
        let declared = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim().to_owned());
        let Some(declared) = declared else { continue };
        if declared != package {
            packages.push(declared);
            continue;
        }
        for line in text.lines() {
            // A rule head starts a line: `name :=`, `name if`, `name contains` …
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !matches!(name.as_str(), "package" | "import" | "default") {
                rules.push(name);
            } else if let Some(rest) = line.strip_prefix("default ") {
                let n: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rules.push(n);
            }
        }
        if rules.iter().any(|r| r == rule) {
            return None;
        }
    }
    if rules.is_empty() && !packages.iter().any(|p| p == package) {
        let mut known = packages;
        known.sort();
        known.dedup();
        return Some(format!(
            "policy.entrypoint `{entrypoint}`: no module declares package `{package}` (declared: {})",
            known.join(", ")
        ));
    }
    let near = rules
        .iter()
        .filter(|r| edit_distance(r, rule) <= 2)
        .min_by_key(|r| edit_distance(r, rule));
    Some(match near {
        Some(n) => format!(
            "policy.entrypoint `{entrypoint}`: package `{package}` defines no rule `{rule}`; did you mean `{n}`?"
        ),
        None => format!("policy.entrypoint `{entrypoint}`: package `{package}` defines no rule `{rule}`"),
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Evaluation errors are policy bugs; they deny, and the first few details go
/// to stderr (filters have no logging dependency; the audit has the reason).
fn tracing_free_log(msg: &str) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 32 {
        eprintln!("warden: policy evaluation error (denied): {msg}");
    }
}

fn decision_of(v: &Value) -> PolicyDecision {
    if matches!(v, Value::Undefined) {
        return PolicyDecision::deny("policy_undefined");
    }
    let Ok(obj) = v.as_object() else {
        return PolicyDecision::deny("policy_invalid_decision");
    };
    let allow = match obj.get(&Value::from("allow")) {
        Some(Value::Bool(b)) => *b,
        _ => return PolicyDecision::deny("policy_invalid_decision"),
    };
    let reason: Arc<str> = match obj.get(&Value::from("reason")) {
        Some(Value::String(s)) => s.as_ref().into(),
        _ if allow => "allowed".into(),
        _ => "denied".into(),
    };
    let scopes: Option<Arc<[String]>> = match (
        obj.get(&Value::from("scopes")),
        obj.get(&Value::from("scope")),
    ) {
        (Some(Value::Array(a)), _) => {
            let mut out = Vec::with_capacity(a.len());
            for s in a.iter() {
                match s {
                    Value::String(s) if scope_token(s) => out.push(s.to_string()),
                    _ => return PolicyDecision::deny("policy_invalid_decision"),
                }
            }
            Some(out.into())
        }
        (None, Some(Value::String(s))) => {
            let out: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if !out.iter().all(|t| scope_token(t)) {
                return PolicyDecision::deny("policy_invalid_decision");
            }
            Some(out.into())
        }
        (None, None) => None,
        _ => return PolicyDecision::deny("policy_invalid_decision"),
    };
    let max = warden_config::guards::MAX_APPROVERS;
    let count = |v: &Value| match v.as_u64() {
        Ok(n) if (1..=u64::from(max)).contains(&n) => Some(n as u8),
        _ => None,
    };
    let approval = match obj.get(&Value::from("require_approval")) {
        None | Some(Value::Bool(false)) | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some(ApprovalAsk {
            approvers: 1,
            reason: reason.clone(),
        }),
        Some(n @ Value::Number(_)) => match count(n) {
            Some(approvers) => Some(ApprovalAsk {
                approvers,
                reason: reason.clone(),
            }),
            None => return PolicyDecision::deny("policy_invalid_decision"),
        },
        Some(Value::Object(o)) => {
            let approvers = match o.get(&Value::from("approvers")) {
                None => Some(1),
                Some(n) => count(n),
            };
            let why = match o.get(&Value::from("reason")) {
                None => Some(reason.clone()),
                Some(Value::String(s)) => Some(s.as_ref().into()),
                Some(_) => None,
            };
            match (approvers, why) {
                (Some(approvers), Some(reason)) => Some(ApprovalAsk { approvers, reason }),
                _ => return PolicyDecision::deny("policy_invalid_decision"),
            }
        }
        Some(_) => return PolicyDecision::deny("policy_invalid_decision"),
    };
    PolicyDecision {
        allow,
        reason,
        scopes: scopes.filter(|s| !s.is_empty()),
        approval: approval.filter(|_| allow),
    }
}

/// An RFC 6749 scope token: visible ASCII but `"` and `\`.
fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_of_the_arguments_policy_reads_are_found() {
        let rego = r#"package warden.authz
# input.request.arguments.commented is not read
deny if input.request.arguments.region == "us"
deny if input.request.arguments["loc"].zone == "a"
deny if input.principal.id == "x"
"#;
        let paths = argument_paths(&[rego]);
        assert_eq!(
            paths,
            vec![
                vec!["loc".to_owned(), "zone".to_owned()],
                vec!["region".to_owned()]
            ]
        );
        // Through a variable bound to the arguments, or to a part of them.
        let aliased = r#"package warden.authz
deny if {
    args := input.request.arguments
    args.region == "us"
}
deny if {
    loc = input.request.arguments.loc
    loc["zone"] == "a"
}
deny if input.request.arguments.n == 1
"#;
        assert_eq!(
            argument_paths(&[aliased]),
            vec![
                vec!["loc".to_owned()],
                vec!["loc".to_owned(), "zone".to_owned()],
                vec!["n".to_owned()],
                vec!["region".to_owned()]
            ]
        );
        for args in [
            serde_json::json!({"Region": "us"}),
            serde_json::json!({"regıon": "us"}),
            serde_json::json!({"loc": {"Zone": "a"}}),
            serde_json::json!({"LOC": {"zone": "a"}}),
        ] {
            assert!(near_named_argument(&paths, &args), "{args}");
        }
        for args in [
            serde_json::json!({"region": "eu", "Other": 1}),
            serde_json::json!({"loc": "flat", "Commented": 1}),
            serde_json::json!([1, 2]),
        ] {
            assert!(!near_named_argument(&paths, &args), "{args}");
        }
    }

    fn obj(pairs: Vec<(&str, Value)>) -> Value {
        let mut m = std::collections::BTreeMap::new();
        for (k, v) in pairs {
            m.insert(Value::from(k), v);
        }
        Value::from(m)
    }

    #[test]
    fn decisions_may_name_step_up_scopes() {
        let arr = |xs: &[&str]| Value::from(xs.iter().map(|x| Value::from(*x)).collect::<Vec<_>>());
        let d = decision_of(&obj(vec![
            ("allow", Value::Bool(true)),
            ("scopes", arr(&["deploy:prod"])),
        ]));
        assert!(d.allow);
        assert_eq!(d.scopes.as_deref(), Some(&["deploy:prod".to_owned()][..]));
        let d = decision_of(&obj(vec![
            ("allow", Value::Bool(true)),
            ("scope", Value::from("a b")),
        ]));
        assert_eq!(d.scopes.as_deref().map(<[String]>::len), Some(2));
        // A scope a header could not carry makes the decision invalid (deny).
        let d = decision_of(&obj(vec![
            ("allow", Value::Bool(true)),
            ("scopes", arr(&["a\"b"])),
        ]));
        assert!(!d.allow);
        assert_eq!(&*d.reason, "policy_invalid_decision");
        let d = decision_of(&obj(vec![
            ("allow", Value::Bool(true)),
            ("scopes", Value::from("x")),
        ]));
        assert!(!d.allow, "scopes must be an array");
    }

    #[test]
    fn decisions_may_ask_for_approvers() {
        let ask = |v: Value| {
            decision_of(&obj(vec![
                ("allow", Value::Bool(true)),
                ("reason", Value::from("granted")),
                ("require_approval", v),
            ]))
        };
        let d = ask(Value::Bool(true));
        assert_eq!(
            d.approval.map(|a| (a.approvers, a.reason)),
            Some((1, "granted".into()))
        );
        let d = ask(Value::from(2u64));
        assert_eq!(d.approval.map(|a| a.approvers), Some(2));
        let d = ask(obj(vec![
            ("approvers", Value::from(2u64)),
            ("reason", Value::from("prod change")),
        ]));
        assert_eq!(
            d.approval.map(|a| (a.approvers, a.reason)),
            Some((2, "prod change".into()))
        );
        assert_eq!(ask(Value::Bool(false)).approval, None);
        // Out of range, or the wrong shape: the decision is invalid (deny).
        for bad in [
            Value::from(0u64),
            Value::from(6u64),
            Value::from("yes"),
            obj(vec![("approvers", Value::from("2"))]),
            obj(vec![("reason", Value::from(3u64))]),
        ] {
            let d = ask(bad);
            assert!(!d.allow && &*d.reason == "policy_invalid_decision", "{d:?}");
        }
        // A denial asks no approver.
        let d = decision_of(&obj(vec![
            ("allow", Value::Bool(false)),
            ("require_approval", Value::Bool(true)),
        ]));
        assert_eq!(d.approval, None);
    }

    fn plan(src: &str) -> Vec<Field> {
        key_plan(&[src]).expect("test").fields
    }

    #[test]
    fn plan_follows_static_paths() {
        let f = plan(
            "package p\nimport rego.v1\nallow if { input.principal.roles[_] == \"x\"; input.request.arguments.region == input.principal.attributes.region }",
        );
        assert_eq!(
            f,
            vec![
                Field::PrincipalRoles,
                Field::PrincipalAttribute(Some("region".into())),
                Field::Argument(Some("region".into())),
            ]
        );
    }

    #[test]
    fn plan_widens_dynamic_and_bare_references() {
        assert!(plan("x := input.request.arguments[k]").contains(&Field::Argument(None)));
        assert_eq!(
            plan("x := input").len(),
            ALL_PRINCIPAL.len() + ALL_SERVER.len() + ALL_REQUEST.len() + ALL_CONTEXT.len()
        );
        assert_eq!(plan("import input.context as c\n").len(), ALL_CONTEXT.len());
        assert_eq!(plan("x := input[\"request\"][\"tool\"]"), vec![Field::Tool]);
        // Comments and other identifiers do not count.
        assert!(plan("# input.request.tool\nmy_input := 1\ndata.input.x").is_empty());
    }

    #[test]
    fn nondeterministic_builtins_disable_the_cache() {
        assert!(key_plan(&["x := time.now_ns()"]).is_none());
        assert!(key_plan(&["# time.now_ns() in a comment only"]).is_some());
    }
}
