//! Unit tests of the OCSF mapping: severity from the decision and the risk
//! tier, as the table in docs/audit.md gives it.

use serde_json::json;

use super::ocsf;

/// The OCSF event of a record with `outcome` and, when given, `risk`.
fn event(outcome: &str, risk: Option<&str>) -> serde_json::Value {
    let mut rec = json!({"seq": 7, "prev": "0".repeat(64), "ts": "2026-01-01T00:00:00Z",
        "direction": "request", "method": "tools/call", "server": "ops", "tool": "deploy",
        "principal": "alice", "tenant": "acme", "outcome": outcome});
    if let Some(r) = risk {
        rec["risk"] = json!(r);
    }
    ocsf(rec.to_string().as_bytes(), "gw")
}

fn severity(outcome: &str, risk: Option<&str>) -> i64 {
    let e = event(outcome, risk);
    e["severity_id"].as_i64().unwrap_or(-1)
}

#[test]
fn severity_follows_the_decision() {
    // 1 (Informational) for what went through.
    for ok in ["forwarded", "mutated", "approved"] {
        assert_eq!(severity(ok, None), 1, "{ok}");
    }
    // 3 (Medium) for a denial or refusal, 4 (High) for `failed`.
    for refused in ["denied", "invalid", "rate_limited"] {
        assert_eq!(severity(refused, None), 3, "{refused}");
    }
    assert_eq!(severity("failed", None), 4);
    // A risk tier below HIGH adds nothing.
    for low in ["LOW", "MEDIUM"] {
        assert_eq!(severity("denied", Some(low)), 3, "{low}");
        assert_eq!(severity("forwarded", Some(low)), 1, "{low}");
    }
}

#[test]
fn a_high_tool_adds_one_and_a_critical_one_two_at_most_five() {
    assert_eq!(severity("forwarded", Some("HIGH")), 2);
    assert_eq!(severity("denied", Some("HIGH")), 4);
    assert_eq!(severity("failed", Some("HIGH")), 5);
    assert_eq!(severity("forwarded", Some("CRITICAL")), 3);
    assert_eq!(severity("approved", Some("CRITICAL")), 3);
    assert_eq!(severity("denied", Some("CRITICAL")), 5);
    // 4 + 2 is capped at 5 (Critical).
    assert_eq!(severity("failed", Some("CRITICAL")), 5);
}

#[test]
fn status_and_risk_ride_along() {
    let e = event("denied", Some("CRITICAL"));
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["status"], "denied");
    assert_eq!(e["unmapped"]["risk"], "CRITICAL");
    assert_eq!(e["class_uid"], 6003);
    assert_eq!(e["metadata"]["uid"], "7");
    let ok = event("approved", Some("HIGH"));
    assert_eq!(ok["status_id"], 1);
    assert_eq!(ok["severity_id"], 2);
}
