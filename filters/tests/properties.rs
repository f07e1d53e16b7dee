//! Property tests for the parser and the SSE decoder: no input panics them,
//! the parser agrees with serde_json on every well-formed message, duplicate
//! keys are refused however they are spelled, and SSE decoding does not
//! depend on how the stream was split into chunks.

use proptest::prelude::*;
use serde_json::{json, Value};
use warden_filters::{parse, Id, Kind, ParseLimits, Parsed, SseDecoder};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9 \\\\\"\\u{0}-\\u{1f}é😀]{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Value> {
    (prop_oneof![(-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| json!(n)), "[a-z0-9-]{1,8}".prop_map(|s| json!(s))], "[a-z/]{1,12}", "[a-z_]{1,10}", value()).prop_map(
        |(id, method, name, args)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"name": name, "arguments": args}}),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, ParseLimits::default());
    }

    #[test]
    fn agrees_with_serde_on_well_formed_messages(msg in message()) {
        let body = serde_json::to_vec(&msg).expect("serialise");
        let Ok(Parsed::Single(env)) = parse(&body, ParseLimits::default()) else {
            return Err(TestCaseError::fail(format!("refused {}", String::from_utf8_lossy(&body))));
        };
        prop_assert_eq!(env.kind, Kind::Request);
        let want_id = match &msg["id"] { Value::Number(n) => Id::Num(n.clone()), Value::String(s) => Id::Str(s.clone()), _ => unreachable!() };
        prop_assert_eq!(env.id, Some(want_id));
        prop_assert_eq!(env.method.as_deref(), msg["method"].as_str());
        prop_assert_eq!(env.name.as_deref(), msg["params"]["name"].as_str());
        prop_assert_eq!(env.span, 0..body.len());
    }

    #[test]
    fn duplicate_keys_are_refused_however_spelled(msg in message(), escape in any::<bool>()) {
        let text = serde_json::to_string(&msg).expect("serialise");
        // Add a second `name` inside params, possibly spelled with an escape.
        let dup = if escape { r#""n\u0061me":"other","# } else { r#""name":"other","# };
        let evil = text.replacen(r#""params":{"#, &format!(r#""params":{{{dup}"#), 1);
        prop_assert!(parse(evil.as_bytes(), ParseLimits::default()).is_err(), "{}", evil);
    }

    #[test]
    fn sse_decoding_is_independent_of_chunking(
        events in prop::collection::vec(("[a-z]{0,6}", "[ -~]{0,40}", prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for (ev, data, eol) in &events {
            if !ev.is_empty() {
                stream.extend_from_slice(format!("event: {ev}{eol}").as_bytes());
            }
            stream.extend_from_slice(format!("data: {data}{eol}{eol}").as_bytes());
        }
        let mut whole = SseDecoder::new(1 << 16);
        let mut expected = whole.push(&stream).expect("ok");
        expected.extend(whole.push(b"\n").expect("ok")); // settles a trailing CR
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut d = SseDecoder::new(1 << 16);
        let mut got = Vec::new();
        let mut last = 0;
        for p in points {
            got.extend(d.push(&stream[last..p]).expect("ok"));
            last = p;
        }
        got.extend(d.push(&stream[last..]).expect("ok"));
        got.extend(d.push(b"\n").expect("ok"));
        prop_assert_eq!(got, expected);
    }
}

/// A value with large and fractional numbers too (spans must not care).
fn wide_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        leaf(),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_{}\\[\\]\",:\\\\]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Requests, notifications and responses with every member the spans name,
/// present or not, in any order.
fn any_message() -> impl Strategy<Value = Value> {
    let params = (
        prop::option::of(wide_value()),
        prop::option::of(wide_value()),
        prop::option::of(wide_value()),
    )
        .prop_map(|(args, meta, other)| {
            let mut p = serde_json::Map::new();
            if let Some(o) = other {
                p.insert("zz_other".into(), o);
            }
            if let Some(a) = args {
                p.insert("arguments".into(), a);
            }
            if let Some(m) = meta {
                p.insert("_meta".into(), m);
            }
            p.insert("name".into(), json!("t"));
            Value::Object(p)
        });
    prop_oneof![
        params
            .prop_map(|p| json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p})),
        wide_value().prop_map(|r| json!({"jsonrpc": "2.0", "id": "x", "result": r})),
        wide_value().prop_map(
            |d| json!({"jsonrpc": "2.0", "id": 2, "error": {"code": 1, "message": "m", "data": d}})
        ),
    ]
}

/// Re-spells the text: pretty-printed or not, and member names with `\u` escapes.
fn spell(v: &Value, pretty: bool, escape_names: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v).expect("serialise")
    } else {
        serde_json::to_string(v).expect("serialise")
    };
    if !escape_names {
        return text;
    }
    text.replace("\"arguments\":", "\"\\u0061rguments\":")
        .replace("\"params\":", "\"par\\u0061ms\":")
        .replace("\"result\":", "\"r\\u0065sult\":")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The spans the parser records hold exactly the values a full serde_json
    /// parse reads for `params`, `params.arguments`, `params._meta`, `result`
    /// and `error`, however the message is spelled, alone or in a batch.
    #[test]
    fn spans_agree_with_a_full_parse(msg in any_message(), pretty in any::<bool>(), esc in any::<bool>(), batch in any::<bool>()) {
        let one = spell(&msg, pretty, esc);
        let body = if batch { format!("[ {one} ,{one}]") } else { one };
        let envs = match parse(body.as_bytes(), ParseLimits::default()) {
            Ok(Parsed::Single(e)) => vec![e],
            Ok(Parsed::Batch(items)) => items.into_iter().map(|i| i.expect("element")).collect(),
            Err(e) => return Err(TestCaseError::fail(format!("refused {body}: {e:?}"))),
        };
        for env in envs {
            let bytes = &body.as_bytes()[env.span.clone()];
            let full: Value = serde_json::from_slice(bytes).expect("json");
            let at = |r: &Option<std::ops::Range<usize>>| -> Option<Value> {
                r.clone().map(|r| serde_json::from_slice(&bytes[r]).expect("span is one JSON value"))
            };
            prop_assert_eq!(at(&env.spans.params), full.get("params").cloned());
            prop_assert_eq!(at(&env.spans.arguments), full.get("params").and_then(|p| p.get("arguments")).cloned());
            prop_assert_eq!(at(&env.spans.meta), full.get("params").and_then(|p| p.get("_meta")).cloned());
            prop_assert_eq!(at(&env.spans.result), full.get("result").cloned());
            prop_assert_eq!(at(&env.spans.error), full.get("error").cloned());
        }
    }
}
