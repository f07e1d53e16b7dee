//! Shared inputs for Warden's criterion benches.

/// A `tools/call` body of roughly `size` bytes with realistic argument shapes.
pub fn tools_call(size: usize) -> Vec<u8> {
    let mut text = String::new();
    let words = [
        "deploy",
        "the",
        "service",
        "to",
        "eu-west-1",
        "with",
        "3",
        "replicas",
        "and",
        "notify",
        "#ops",
    ];
    let mut i = 0;
    while text.len() + 160 < size {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "create_ticket",
            "arguments": {"project": "OPS", "priority": 2, "labels": ["a", "b"], "description": text},
            "_meta": {"progressToken": "p-42"}
        }
    }))
    .unwrap_or_default()
}
