//! Who may ask a just-in-time grant for whom.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::is_one_of;

/// An approver asks grants for the principals they are, as gateways key
/// the grant: `acme/alice` in ASCII case, never a look-alike the gateway
/// keeps apart, another tenant's `alice`, nor anyone for a bare id.
#[test]
fn an_approver_asks_for_the_principals_they_are_as_gateways_key_them() {
    let mine = ["quinn", "acme/alice", "acme/x/bob"];
    let yes = |t: &str, p: &str| is_one_of(mine, t, p);
    assert!(yes("acme", "alice"));
    assert!(yes("ACME", "Alice"));
    assert!(yes("acme", "alice "));
    assert!(yes("acme", "x/bob"));
    // Look-alikes: the same person to the self-approval rule, other
    // principals at the gateway.
    assert!(!yes("acme", "\u{ff41}lice"));
    assert!(!yes("acme", "alic\u{e9}"));
    assert!(!yes("\u{ff41}cme", "alice"));
    assert!(!yes("acme", "bob"));
    // Another tenant's namesake.
    assert!(!yes("globex", "alice"));
    // A bare id (the approver's name too) names no principal of a tenant.
    assert!(!yes("acme", "quinn"));
    assert!(!is_one_of(["alice"], "acme", "alice"));
    assert!(!is_one_of(["alice"], "globex", "alice"));
    // A slash only a compatibility form makes is read two ways: none.
    assert!(!is_one_of(["acme\u{ff0f}alice"], "acme", "alice"));
    assert!(!is_one_of(["acme\u{ff0f}alice"], "acme\u{ff0f}", "alice"));
    // A name with no canonical form is nobody.
    assert!(!is_one_of(["acme/al\u{200b}ice"], "acme", "al\u{200b}ice"));
}

/// Through the API: approver frank (no principals, finance's calls)
/// asks no grant for `frank` of any tenant; an org admin asks for anyone;
/// a tenant admin within their tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_asks_grants_for_whom() {
    let h = crate::api::tests::start().await;
    let ask = |tenant: &str, principal: &str| {
        json!({"tenant": tenant, "principal": principal, "kind": "tool", "name": "deploy",
            "duration": "5m", "justification": "incident 7"})
    };
    for tenant in ["finance", "hr"] {
        let (s, v) = h.post("frank", "/v1/grants", ask(tenant, "frank")).await;
        assert_eq!(s, 403, "{tenant}: {v}");
    }
    let (s, v) = h.post("fiona", "/v1/grants", ask("hr", "harriet")).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = h.post("fiona", "/v1/grants", ask("FINANCE", "felix")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = h.post("alice", "/v1/grants", ask("hr", "harriet")).await;
    assert_eq!(s, 200, "{v}");
}
