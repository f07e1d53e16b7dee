//! Shared inputs for Warden's criterion benches.

pub mod corpus;

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

/// A `tools/call` result of about `size` bytes of ordinary prose (dates,
/// counts, versions — no personal data), with `per_kb` findings per KiB
/// (a card number, an e-mail address, an AWS key in turn) when asked.
pub fn tool_result(size: usize, per_kb: usize) -> Vec<u8> {
    let prose = [
        "The quarterly review on 2026-11-02 covered 14 projects across 3 regions.",
        "Build 4821 passed after retrying 2 flaky tests; version 1.8.3 ships Friday.",
        "Latency p99 dropped from 240 ms to 180 ms once the cache warmed up.",
        "Please see the attached notes from the design meeting and reply by Monday.",
        "Ticket OPS-2291 tracks the migration; 87 percent of tenants are done.",
    ];
    let findings = [
        "card 4111 1111 1111 1111 on file",
        "mail alice.smith@example.com now",
        "key AKIAIOSFODNN7EXAMPLE leaked",
    ];
    let mut text = String::new();
    let mut i = 0;
    let mut next_finding = 0;
    while text.len() + 200 < size {
        text.push_str(prose[i % prose.len()]);
        text.push(' ');
        if per_kb > 0 && text.len() / 1024 * per_kb > next_finding {
            text.push_str(findings[next_finding % findings.len()]);
            text.push(' ');
            next_finding += 1;
        }
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 42,
        "result": {"content": [{"type": "text", "text": text}], "isError": false}
    }))
    .unwrap_or_default()
}

/// A clean `tools/call` result of about `size` bytes that keeps waking
/// detectors up without any finding: order numbers failing Luhn, UUIDs,
/// timestamps, git SHAs, versions, IPv6-looking times and words such as
/// "password", "secret" or "ignore" outside any assignment.
pub fn tool_result_near_misses(size: usize) -> Vec<u8> {
    let lines = [
        "Order 4111 1111 1111 1112 shipped at 2026-11-02T10:15:00Z to warehouse 7.",
        "Request 550e8400-e29b-41d4-a716-446655440000 built from commit 3f786850e387550fdab836ed7e6dc881de23001b.",
        "Reset your password: <redacted> from the settings page; the secret menu is gone in v2.14.1.",
        "Please ignore the previous build, it is harmless: the system will retry 3 times.",
        "Invoice 987654321 for account 1234-5678 was paid by card ending 4242 on 12/03.",
        "Call the front desk at extension 4471 or email the team channel @ops-oncall.",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() + 200 < size {
        text.push_str(lines[i % lines.len()]);
        text.push(' ');
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 42,
        "result": {"content": [{"type": "text", "text": text}], "isError": false}
    }))
    .unwrap_or_default()
}

/// Every string and object key of a JSON value (the naive DLP baselines scan these).
pub fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k);
            strings(x, out)
        }),
        _ => {}
    }
}

/// A bundle's Rego modules without its tests, as (path, text) — what the
/// naive "fresh interpreter per call" baselines load.
pub fn rego_modules(bundle: &warden_config::Bundle) -> Vec<(String, String)> {
    bundle
        .policies
        .iter()
        .filter(|(p, _)| !p.ends_with("_test.rego"))
        .map(|(p, t)| (p.clone(), t.clone()))
        .collect()
}
