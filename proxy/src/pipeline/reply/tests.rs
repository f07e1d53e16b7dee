//! Unit tests of the reply path's pure parts.

use super::inferred_method;
use crate::pipeline::ctx::JsonEnds;

/// A second top-level value is seen where it begins, however the text
/// is cut into chunks; braces, quotes and escapes in strings are text.
#[test]
fn a_second_json_value_is_seen_where_it_begins() {
    let cases: [(&str, bool); 9] = [
        (r#"{"a":"}{"}"#, false),
        (r#"{"a":"\"}"}  "#, false),
        (r#"{"a":"\\"} {"#, true),
        ("[1,[2]]\n[", true),
        ("{} \"x\"", true),
        ("12 3", true),
        ("true", false),
        (r#"{"a":{"b":[]}}"#, false),
        (r#"{"a":"x\"}{"}"#, false),
    ];
    for (text, second) in cases {
        for cut in 0..=text.len() {
            let mut e = JsonEnds::default();
            let (a, b) = text.as_bytes().split_at(cut);
            let seen = e.second_begins(a) || e.second_begins(b);
            assert_eq!(seen, second, "{text:?} cut at {cut}");
        }
    }
}

/// A reply to a request this replica never saw is judged as the list its
/// shape names; one that also carries a call's output is not a list.
#[test]
fn a_list_shape_beside_a_result_is_no_list() {
    let list = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    assert_eq!(inferred_method(list), Ok(Some("tools/list".into())));
    let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    assert_eq!(inferred_method(plain), Ok(None));
    for disguised in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"content":[{"type":"text","text":"x"}]}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"structuredContent":{"k":1}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resources":[],"contents":[]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"prompts":[]}}"#,
    ] {
        assert_eq!(inferred_method(disguised), Err(()));
    }
}
