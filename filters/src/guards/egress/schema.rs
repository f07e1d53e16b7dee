//! What a tool's input schema declares: whether it declares a URL, host or
//! address anywhere, the values it declares as one, and members whose
//! names fold to a declared property's — within a budget of schema steps.

use serde_json::Value as Json;

use super::found::{declared_value, walk, Found};
use crate::chain::filter::{Decision, Denial};
use crate::protocol::error::{codes, JsonRpcError};

pub(super) const URL_FORMATS: &[&str] = &[
    "uri",
    "url",
    "iri",
    "uri-reference",
    "iri-reference",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
];

/// What a local `$ref` in `schema` (`#/$defs/Model`, as Pydantic writes
/// nested models) points at within `root`. The schema's other keywords
/// still apply beside it (JSON Schema 2019-09 on), so the walks below take
/// the target as one more branch, never instead of them.
pub(super) fn ref_target<'s>(root: &'s Json, schema: &'s Json) -> Option<&'s Json> {
    schema
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
}

/// Schema nodes one call's walk may visit: a base, plus 64 for each node
/// of the arguments (a bulk call's thousand items each cost a few). A
/// pinned schema is the server's, and a hostile one can make `$ref`s and
/// branches multiply (an `allOf` of two `{"$ref": "#"}` doubles the walk at
/// every level). Past this budget the call is refused, never judged by a
/// partial walk.
pub(super) fn schema_steps(args: &Json) -> usize {
    fn nodes(v: &Json) -> usize {
        1 + match v {
            Json::Array(a) => a.iter().map(nodes).sum(),
            Json::Object(o) => o.values().map(nodes).sum(),
            _ => 0,
        }
    }
    10_000 + 64 * nodes(args)
}

pub(super) fn schema_too_complex() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            "The tool's input schema is too complex to judge its arguments against \
             (its $ref and allOf/anyOf/oneOf branches multiply); the call is refused",
        )
        .with_data(serde_json::json!({"reason": "schema_too_complex"})),
        "schema_too_complex",
    ))
}

/// Whether `schema` declares a URL, host or address anywhere it nests.
pub(super) fn declares_url(schema: &Json, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    match schema {
        Json::Object(o) => {
            o.get("format")
                .and_then(Json::as_str)
                .is_some_and(|f| URL_FORMATS.contains(&f))
                || o.iter().any(|(k, v)| {
                    matches!(
                        k.as_str(),
                        "properties"
                            | "items"
                            | "additionalProperties"
                            | "allOf"
                            | "anyOf"
                            | "oneOf"
                            | "prefixItems"
                            | "$defs"
                            | "definitions"
                    ) && match v {
                        Json::Object(m)
                            if matches!(k.as_str(), "properties" | "$defs" | "definitions") =>
                        {
                            m.values().any(|s| declares_url(s, depth + 1))
                        }
                        v => declares_url(v, depth + 1),
                    }
                })
        }
        Json::Array(a) => a.iter().any(|s| declares_url(s, depth + 1)),
        _ => false,
    }
}

/// The values of `v` that `schema` declares (at any depth: `properties`,
/// `items`, `additionalProperties`, `allOf`/`anyOf`/`oneOf`) as a URL,
/// host or address, judged whole under the declared path `at`.
pub(super) fn declared_at<'a>(
    root: &Json,
    v: &'a Json,
    schema: &Json,
    at: &str,
    out: &mut Vec<Found<'a>>,
    depth: usize,
    steps: &mut usize,
) {
    if depth > 64 || *steps == 0 {
        return;
    }
    *steps -= 1;
    if let Some(target) = ref_target(root, schema) {
        declared_at(root, v, target, at, out, depth + 1, steps);
    }
    let format = schema.get("format").and_then(Json::as_str);
    if format.is_some_and(|f| URL_FORMATS.contains(&f)) {
        let bracket = format == Some("ipv6");
        let mut one = |at: String, x: &'a Json| match (x, bracket) {
            // A bare IPv6 address is a host once bracketed.
            (Json::String(s), true) if !s.starts_with('[') => out.push(Found {
                argument: Some(at),
                value: format!("[{s}]").into(),
                whole: true,
            }),
            _ => match declared_value(at.clone(), x) {
                Some(f) => out.push(f),
                None => walk(x, Some(&at), out),
            },
        };
        match v {
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    one(format!("{at}[{i}]"), x);
                }
            }
            x => one(at.to_owned(), x),
        }
    }
    for branch in ["allOf", "anyOf", "oneOf"] {
        for b in schema
            .get(branch)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            declared_at(root, v, b, at, out, depth + 1, steps);
        }
    }
    match v {
        Json::Object(o) => {
            let props = schema.get("properties").and_then(Json::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in o {
                if let Some(s) = props.and_then(|p| p.get(k)).or(extra) {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    declared_at(root, x, s, &path, out, depth + 1, steps);
                }
            }
        }
        Json::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter().enumerate() {
                    declared_at(root, x, items, &format!("{at}[{i}]"), out, depth + 1, steps);
                }
            }
        }
        _ => {}
    }
}

/// Whether `v` holds, at any depth `schema` declares (`properties`,
/// `items`, and the branches of `allOf`/`anyOf`/`oneOf`), a member whose
/// name folds to a declared property's (or one of `extra`, at the top)
/// without being it.
pub(super) fn near_named(
    root: Option<&Json>,
    v: &Json,
    schema: Option<&Json>,
    extra: &[&str],
    depth: usize,
    steps: &mut usize,
) -> bool {
    // Schemas nest as deep as the arguments may; past this, nothing declares.
    if depth > 64 {
        return false;
    }
    if schema.is_none() && extra.is_empty() {
        return false;
    }
    // Out of budget: the caller refuses the call (`steps` is 0).
    if *steps == 0 {
        return true;
    }
    *steps -= 1;
    let target = root.zip(schema).and_then(|(r, s)| ref_target(r, s));
    let branches = ["allOf", "anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.and_then(|s| s.get(*k)).and_then(Json::as_array))
        .flatten()
        .chain(target);
    match v {
        Json::Object(o) => {
            let props = schema
                .and_then(|s| s.get("properties"))
                .and_then(Json::as_object);
            let names: Vec<&str> = extra
                .iter()
                .copied()
                .chain(props.into_iter().flat_map(|p| p.keys().map(String::as_str)))
                .collect();
            if !names.is_empty()
                && o.keys().any(|k| {
                    !names.contains(&k.as_str()) && crate::protocol::names::near_name(k, &names)
                })
            {
                return true;
            }
            o.iter().any(|(k, x)| {
                let declared = props.and_then(|p| p.get(k)).or_else(|| {
                    schema
                        .and_then(|s| s.get("additionalProperties"))
                        .filter(|a| a.is_object())
                });
                near_named(root, x, declared, &[], depth + 1, steps)
            }) || branches
                .into_iter()
                .any(|b| near_named(root, v, Some(b), &[], depth + 1, steps))
        }
        Json::Array(a) => {
            let items = schema
                .and_then(|s| s.get("items"))
                .filter(|i| i.is_object());
            a.iter()
                .any(|x| near_named(root, x, items, &[], depth + 1, steps))
                || branches
                    .into_iter()
                    .any(|b| near_named(root, v, Some(b), &[], depth + 1, steps))
        }
        _ => false,
    }
}
