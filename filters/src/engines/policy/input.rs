//! The input document handed to Rego (the documented input contract):
//! [`PolicyInput`], built whole or restricted to what the policy can read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use regorus::Value;
use warden_config::access::Risk;

use super::analysis::{Field, KeyPlan};
use super::clock::Clock;
use crate::engines::identity::Principal;

/// Everything a decision may depend on (the documented input contract).
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub principal: &'a Principal,
    /// The principal's just-in-time grants that hold now
    /// (`input.principal.grants`).
    pub grants: &'a [crate::engines::grants::Grant],
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
    /// The call's flow (`flows`): the session's state and the call's labels.
    pub flow: Option<&'a crate::engines::flow::FlowNote>,
    /// The call's behaviour signals (`anomaly`).
    pub anomaly: Option<&'a crate::engines::anomaly::AnomalyNote>,
}

/// Member names of the input document, made once per thread (a Rego string
/// is reference-counted: cloning one is cheaper than allocating it).
pub(super) const NAME_LIST: [&str; 27] = [
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
    "flow",
    "anomaly",
];

thread_local! {
    static NAMES: [Value; 27] = NAME_LIST.map(Value::from);
}

/// `input.principal.grants`: each grant's id, kind, name, server and
/// expiry (RFC 3339, UTC).
fn grants_value(grants: &[crate::engines::grants::Grant]) -> Value {
    Value::from(
        grants
            .iter()
            .map(|g| {
                let mut m = BTreeMap::new();
                m.insert(s("id"), s(&g.id));
                m.insert(s("kind"), s(&g.kind));
                m.insert(s("name"), s(&g.name));
                m.insert(s("server"), opt(g.server.as_deref()));
                m.insert(
                    s("expires_at"),
                    s(&jiff::Timestamp::from_second(g.expires_at as i64)
                        .map(|t| t.to_string())
                        .unwrap_or_default()),
                );
                Value::from(m)
            })
            .collect::<Vec<_>>(),
    )
}

/// `input.anomaly`: `{"learning": bool, "signals": [{"kind", "strength",
/// "detail"}]}`.
fn anomaly_value(a: &crate::engines::anomaly::AnomalyNote) -> Value {
    let mut m = BTreeMap::new();
    m.insert(s("learning"), Value::from(a.learning));
    m.insert(
        s("signals"),
        Value::from(
            a.signals
                .iter()
                .map(|x| {
                    let mut o = BTreeMap::new();
                    o.insert(s("kind"), s(x.kind.as_str()));
                    o.insert(s("strength"), Value::from(x.strength));
                    o.insert(s("detail"), s(&x.detail));
                    Value::from(o)
                })
                .collect::<Vec<_>>(),
        ),
    );
    Value::from(m)
}

pub(super) fn s(v: &str) -> Value {
    Value::from(v)
}

pub(super) fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

/// The input document handed to Rego (see docs/policy.md, the input contract).
/// `Null` when the arguments are unreadable to Rego (see [`input_for`]).
pub fn input_value(i: &PolicyInput<'_>, clock: &Clock) -> Value {
    input_for(i, clock, None).unwrap_or(Value::Null)
}

/// The input document restricted to what `plan` says the policy can read
/// (everything when `plan` is `None`). Leaving out what no rule can reach
/// cannot change a decision, by the same analysis that makes the cache sound.
/// `None` when the arguments the policy reads are JSON the gateway read
/// but Rego's reader does not (an object whose first member is named as
/// serde's private big-number marker, `$serde_json::private::Number`):
/// the policy would judge them absent while the server acts on them.
pub(super) fn input_for(
    i: &PolicyInput<'_>,
    clock: &Clock,
    plan: Option<&KeyPlan>,
) -> Option<Value> {
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
            Some(raw) => Value::from_json_str(raw).ok(),
            None => Some(Value::new_object()),
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
                    Some(None) => whole_args()?,
                    Some(Some(values)) => {
                        let mut m = BTreeMap::new();
                        for (name, v) in wanted.iter().zip(values) {
                            if let Some(v) = v {
                                m.insert(s(name), Value::from_json_str(v).ok()?);
                            }
                        }
                        Value::from(m)
                    }
                }
            }
            _ => whole_args()?,
        };
        Some(obj(vec![
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
                    (
                        "grants",
                        if has(&Field::PrincipalGrants) {
                            grants_value(i.grants)
                        } else {
                            Value::new_array()
                        },
                    ),
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
                "flow",
                if has(&Field::Flow) {
                    i.flow
                        .and_then(|f| Value::from_json_str(&f.to_json().to_string()).ok())
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                },
            ),
            (
                "anomaly",
                if has(&Field::Anomaly) {
                    i.anomaly.map_or(Value::Null, anomaly_value)
                } else {
                    Value::Null
                },
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
        ]))
    })
}

/// The raw values of the top-level members `wanted` of the JSON object
/// `raw`, names compared after unescaping; `None` when `raw` is not an
/// object. `raw` is validated JSON (the arguments of a parsed message):
/// values are found by the parser's structural scan, so a long string
/// argument the policy does not read is skipped, not read again.
pub(super) fn pick_members<'a>(raw: &'a str, wanted: &[String]) -> Option<Vec<Option<&'a str>>> {
    let mut out = vec![None; wanted.len()];
    crate::protocol::jsonrpc::object_members(raw.as_bytes(), |key, span| {
        if let Some(i) = wanted.iter().position(|w| w.as_bytes() == key) {
            out[i] = raw.get(span);
        }
    })?;
    Some(out)
}
