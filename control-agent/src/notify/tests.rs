#![allow(clippy::unwrap_used)]
//! What a notification says, to whom, and how it is signed.

use super::*;
use crate::approvals::{Approval, ApprovalView, State};

fn view(tool: &str, justification: &str, tenant: &str, risk: &str) -> ApprovalView {
    let a: Approval = serde_json::from_value(json!({
        "id": "ap_01", "binding": "b", "tenant": tenant, "principal": "agent-7",
        "server": "ops", "tool": tool, "args_digest": "sha256:x",
        "arguments": "{\"key\":\"AKIAIOSFODNN7EXAMPLE\"}", "risk": risk,
        "reason": "risk_tier", "justification": justification, "required": 2,
        "requested_at": "2026-11-29T10:00:00Z", "pending_until": "2026-11-29T10:10:00Z",
        "grant_secs": 60, "requested_by": "gw1", "decisions": []}))
    .unwrap();
    ApprovalView {
        approval: a,
        state: State::Pending,
        approvals: 0,
        usable_until: None,
        waiting_secs: 0,
    }
}

fn hook(kind: Kind, tenants: &[&str], risks: &[&str]) -> Webhook {
    Webhook {
        name: "h".into(),
        kind,
        url: url::Url::parse("https://hooks.example/x").unwrap(),
        secret: Some(b"hook-secret-0123456789".to_vec()),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        risks: risks.iter().map(|r| (*r).to_owned()).collect(),
        events: vec![Event::HeldCalls, Event::BudgetAlerts],
    }
}

fn redact(t: &str) -> String {
    t.replace("AKIAIOSFODNN7EXAMPLE", "[REDACTED:aws_access_key]")
}

/// A receiver checks the signature over `{timestamp}.{body}` with the
/// shared secret (the value `openssl dgst -sha256 -hmac` gives).
#[test]
fn a_generic_body_is_signed_over_its_timestamp_and_bytes() {
    assert_eq!(
        signature(b"hook-secret-0123456789", 1_700_000_000, br#"{"a":1}"#),
        "v1=401b52b7632fbf7246eb584456e576a790817127404eca86fc91c742e9352360"
    );
    // Another timestamp, another body, another key: another signature.
    let s = signature(b"hook-secret-0123456789", 1_700_000_000, br#"{"a":1}"#);
    assert_ne!(
        s,
        signature(b"hook-secret-0123456789", 1_700_000_001, br#"{"a":1}"#)
    );
    assert_ne!(
        s,
        signature(b"hook-secret-0123456789", 1_700_000_000, br#"{"a":2}"#)
    );
    assert_ne!(
        s,
        signature(b"hook-secret-012345678X", 1_700_000_000, br#"{"a":1}"#)
    );
}

/// Each body carries what the console shows, redacted, with the link;
/// text a caller wrote cannot become a link or a mention in Slack or
/// Teams.
#[test]
fn bodies_show_what_the_console_shows_and_links_only_the_console() {
    let evil = "<https://evil.example|Approve now> [Approve](https://evil.example) <!channel>";
    let a = view(evil, evil, "acme", "CRITICAL");
    let link = "https://w.example/console/approvals/ap_01";
    for kind in [Kind::Generic, Kind::Slack, Kind::Teams] {
        let b = body(&hook(kind, &[], &[]), &a, link, redact).to_string();
        assert!(!b.contains("AKIAIOSFODNN7EXAMPLE"), "{kind:?}: {b}");
        assert!(b.contains("REDACTED:aws"), "{kind:?}: {b}");
        assert!(b.contains(link), "{kind:?}: {b}");
        match kind {
            Kind::Generic => {
                let v: Value = serde_json::from_str(&b).unwrap();
                assert_eq!(v["tool"], evil);
                assert_eq!(v["required"], 2);
                assert_eq!(v["expires_at"], "2026-11-29T10:10:00Z");
            }
            Kind::Slack => {
                assert!(!b.contains("<https://evil"), "{b}");
                assert!(!b.contains("<!channel>"), "{b}");
            }
            Kind::Teams => {
                assert!(!b.contains("[Approve](https"), "{b}");
            }
        }
    }
}

/// An organisation's budget is every tenant's spend: its alert (which
/// says what the whole organisation spent, of what limit) is no one
/// tenant's news, whichever tenant's call crossed it. A webhook scoped to
/// tenants does not hear of it; one scoped to none does.
#[test]
fn an_organisation_budget_alert_reaches_no_webhook_scoped_to_tenants() {
    let mut a = alert("acme", "org-month");
    a.per = "organisation".into();
    a.holder = String::new();
    assert!(!alerts::wants(&hook(Kind::Generic, &["acme"], &[]), &a));
    assert!(alerts::wants(&hook(Kind::Generic, &[], &[]), &a));
    // The tenant's own budgets still reach the tenant's webhook.
    a.per = "team".into();
    assert!(alerts::wants(&hook(Kind::Generic, &["acme"], &[]), &a));
}

/// Slack's code spans (`...`) have no escape for a backtick: a caller's
/// text holding one (a tool name, a principal) would end the span, and
/// what follows would be read as mrkdwn, a bare URL made a link to click
/// ("approve here"). No text a caller wrote ends a span, and the mrkdwn
/// is read verbatim (no URL or mention parsed out of it).
#[test]
fn a_backtick_in_a_callers_text_ends_no_slack_code_span() {
    let evil = "x` *Approve now:* https://evil.example/approve `y";
    let a = view(evil, "j", "acme", "CRITICAL");
    let link = "https://w.example/console/approvals/ap_01";
    let b = body(&hook(Kind::Slack, &[], &[]), &a, link, redact);
    let mrkdwn = &b["blocks"][0]["text"];
    assert_eq!(mrkdwn["type"], "mrkdwn");
    assert_eq!(mrkdwn["verbatim"], true, "{b}");
    let text = mrkdwn["text"].as_str().unwrap();
    // The template's three spans, and no more backticks.
    assert_eq!(text.matches('`').count(), 6, "{text}");
    assert!(text.contains("https://evil.example/approve"), "{text}");
    let mut al = alert("acme", "acme-month");
    al.holder = evil.into();
    let link = alerts::link("https://w.example", &al);
    let b = alerts::body(&hook(Kind::Slack, &[], &[]), &al, &link, redact);
    let mrkdwn = &b["blocks"][0]["text"];
    assert_eq!(mrkdwn["verbatim"], true, "{b}");
    let text = mrkdwn["text"].as_str().unwrap();
    assert_eq!(text.matches('`').count(), 4, "{text}");
}

/// A webhook hears of the tenants and risk tiers it names (a tenant's
/// layer that asked for the approval counts as its tenant), compared as
/// the console compares tenants.
#[test]
fn a_webhook_hears_of_its_tenants_and_tiers() {
    let a = view("t", "j", "acme", "HIGH");
    assert!(wants(&hook(Kind::Generic, &[], &[]), &a));
    assert!(wants(&hook(Kind::Generic, &["ACME"], &["high"]), &a));
    assert!(!wants(&hook(Kind::Generic, &["globex"], &[]), &a));
    assert!(!wants(&hook(Kind::Generic, &[], &["CRITICAL"]), &a));
    let mut b = view("t", "j", "globex", "HIGH");
    b.approval.for_tenants = vec!["acme".into()];
    assert!(wants(&hook(Kind::Generic, &["acme"], &[]), &b));
}

fn alert(tenant: &str, budget: &str) -> crate::audit::alerts::BudgetAlert {
    crate::audit::alerts::BudgetAlert {
        key: "k1-0".into(),
        gateway: "gw-1".into(),
        tenant: tenant.into(),
        principal: "agent-7".into(),
        server: "llm".into(),
        tool: Some(budget.into()),
        ts: "2026-11-20T10:00:00Z".into(),
        trace_id: "trace 1/x".into(),
        budget: budget.into(),
        per: "tenant".into(),
        holder: tenant.into(),
        threshold: "0.8".into(),
        spent: "8.100000".into(),
        limit: "10.000000".into(),
        currency: "EUR".into(),
        period: "2026-11".into(),
        resets_at: "2026-12-01T00:00:00+01:00".into(),
    }
}

/// A budget alert's bodies: the generic one typed apart from held calls
/// with every field of the alert; Slack and Teams a text message; text
/// from the record escaped for each markup and shown as the console
/// shows it.
#[test]
fn budget_alert_bodies_say_what_crossed_and_escape_the_records_text() {
    let evil = "<https://evil.example|Raise it> [Raise](https://evil.example) <!channel> AKIAIOSFODNN7EXAMPLE";
    let a = alert("acme", evil);
    let link = alerts::link("https://w.example", &a);
    assert_eq!(
        link,
        "https://w.example/console/audit?trace_id=trace%201%2Fx"
    );
    for kind in [Kind::Generic, Kind::Slack, Kind::Teams] {
        let b = alerts::body(&hook(kind, &[], &[]), &a, &link, redact).to_string();
        assert!(!b.contains("AKIAIOSFODNN7EXAMPLE"), "{kind:?}: {b}");
        assert!(b.contains(&link), "{kind:?}: {b}");
        assert!(
            b.contains("8.100000") && b.contains("10.000000") && b.contains("EUR"),
            "{kind:?}: {b}"
        );
        match kind {
            Kind::Generic => {
                let v: Value = serde_json::from_str(&b).unwrap();
                assert_eq!(v["type"], "budget.alert");
                assert_ne!(v["type"], "approval.pending");
                assert_eq!(v["id"], "k1-0");
                assert_eq!(v["threshold"], "0.8");
                assert_eq!(v["holder"], "acme");
                assert_eq!(v["period"], "2026-11");
                assert_eq!(v["resets_at"], "2026-12-01T00:00:00+01:00");
                assert_eq!(v["trace_id"], "trace 1/x");
                assert_eq!(v["gateway"], "gw-1");
                assert!(v["budget"].as_str().unwrap().starts_with("<https://evil"));
            }
            Kind::Slack => {
                let v: Value = serde_json::from_str(&b).unwrap();
                assert!(v["text"].as_str().unwrap().contains("80 %"), "{b}");
                assert!(!b.contains("<https://evil"), "{b}");
                assert!(!b.contains("<!channel>"), "{b}");
            }
            Kind::Teams => {
                assert!(b.contains("80 %"), "{b}");
                assert!(!b.contains("[Raise](https"), "{b}");
            }
        }
    }
}

/// A webhook hears of budget alerts only when its `events` say so, and
/// of its tenants only (compared as the console compares tenants); a
/// webhook of budget alerts alone hears of no held call.
#[test]
fn a_webhook_hears_of_budget_alerts_it_asked_for_in_its_tenants() {
    let a = alert("acme", "acme-month");
    let mut h = hook(Kind::Generic, &[], &[]);
    assert!(alerts::wants(&h, &a));
    h.events = vec![Event::HeldCalls];
    assert!(!alerts::wants(&h, &a));
    h.events = vec![Event::BudgetAlerts];
    assert!(alerts::wants(&h, &a));
    assert!(!wants(&h, &view("t", "j", "acme", "HIGH")));
    // Risk tiers are for held calls: a webhook naming some still hears
    // of alerts.
    let mut h = hook(Kind::Slack, &["ACME"], &["CRITICAL"]);
    assert!(alerts::wants(&h, &a));
    h.tenants = vec!["globex".into()];
    assert!(!alerts::wants(&h, &a));
    // `acme` is not `acmé`.
    h.tenants = vec!["acmé".into()];
    assert!(!alerts::wants(&h, &a));
}
