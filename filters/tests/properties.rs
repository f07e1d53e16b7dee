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
