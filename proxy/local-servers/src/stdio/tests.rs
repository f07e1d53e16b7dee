//! Unit tests of the bridge's pure parts.

use super::one_line;

#[test]
fn a_message_reaches_the_process_as_one_line_with_the_same_value() {
    // One judged message (a ping whose unknown member holds an array)
    // whose whitespace would otherwise split it into three lines, the
    // second a tools/call nobody judged.
    let smuggled = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"z\":[\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\"}\r\n]\r}".to_vec();
    let text = "{\"t\":\"a\u{2028}b\u{2029}c\u{85}d\u{e9}\u{1F600}\"}";
    for line in [smuggled, text.as_bytes().to_vec()] {
        let out = one_line(line.clone());
        assert!(!out.iter().any(|b| matches!(b, b'\n' | b'\r')), "{out:?}");
        let out_text = String::from_utf8(out.clone()).expect("utf-8");
        for c in ['\u{85}', '\u{2028}', '\u{2029}'] {
            assert!(!out_text.contains(c), "{out_text}");
        }
        let before: serde_json::Value = serde_json::from_slice(&line).expect("json");
        let after: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(before, after);
        // Python's universal-newline reader sees one line too.
        assert_eq!(out_text.lines().count(), 1);
    }
    let plain = b"{\"a\":1}".to_vec();
    assert_eq!(one_line(plain.clone()), plain);
}
