use super::*;
use crate::chain::filter::Verdict;
use crate::guards::tenant_fixture::*;

const FIN_REGO: &str = "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": false, \"reason\": \"fin_no_delete\"} if input.request.tool == \"delete\"\n";

fn registry(servers: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = servers
        .iter()
        .map(|(name, tenant, state)| {
            // Every tool the tests call, approved (no live definition seen).
            let fp = format!("sha256:{}", "0".repeat(64));
            let tools: Vec<String> = ["delete", "wire", "post", "fetch", "read"]
                .iter()
                .map(|t| format!(r#""{t}": {{"approved": "{fp}"}}"#))
                .collect();
            format!(
                r#""{name}": {{"tenant": "{tenant}", "state": "{state}", "shared": true, "tools": {{{}}}}}"#,
                tools.join(",")
            )
        })
        .collect();
    format!(r#"{{"version": 1, "servers": {{{}}}}}"#, entries.join(","))
}

fn fin_snapshot(extra_fin: &str, rego: Option<&str>) -> crate::snapshot::Snapshot {
    let fin = layer("finance", "ledger", extra_fin);
    let hr = layer("hr", "people", "");
    let reg = registry(&[
        ("ledger", "finance", "deployed"),
        ("people", "hr", "deployed"),
    ]);
    let mut files = vec![
        ("policies/org.rego", ORG_REGO),
        ("tenants/finance/tenant.yaml", fin.as_str()),
        ("tenants/hr/tenant.yaml", hr.as_str()),
        ("registry.json", reg.as_str()),
    ];
    if let Some(r) = rego {
        files.push(("tenants/finance/p.rego", r));
    }
    snapshot(&files)
}

#[test]
fn a_tenant_policy_narrows_for_its_scope_only() {
    let s = fin_snapshot("", Some(FIN_REGO));
    let fin = principal("finance", "fred", &[]);
    let hr = principal("hr", "hanna", &[]);
    // A finance principal, on an org server: finance's rule applies.
    let (v, _) = request(&s, &fin, "crm", &call("delete", "{}"));
    assert!(
        refused(&v).is_some_and(|r| r.contains("tenant_policy:finance:fin_no_delete")),
        "{v:?}"
    );
    // An hr principal on the same org server: finance's rule does not apply.
    assert!(refused(&request(&s, &hr, "crm", &call("delete", "{}")).0).is_none());
    // An hr principal on finance's (shared) server: finance's rule applies.
    let v = request(&s, &hr, "ledger", &call("delete", "{}")).0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("tenant_policy:finance:fin_no_delete")),
        "{v:?}"
    );
    assert!(refused(&request(&s, &hr, "ledger", &call("read", "{}")).0).is_none());
    // The tenant is compared canonically.
    let shouty = principal("FINANCE", "fred", &[]);
    assert!(refused(&request(&s, &shouty, "crm", &call("delete", "{}")).0).is_some());
    // Anything else the tenant allows.
    assert!(refused(&request(&s, &fin, "crm", &call("read", "{}")).0).is_none());
}

#[test]
fn a_tenant_cannot_allow_what_the_org_denies() {
    let all = "package warden.tenants.finance\n\ndecision := {\"allow\": true, \"reason\": \"finance says yes\"}\n";
    let s = fin_snapshot("", Some(all));
    let fin = principal("finance", "fred", &[]);
    let v = request(&s, &fin, "ledger", &call("wire", "{}")).0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("org_no_wire")),
        "{v:?}"
    );
}

#[test]
fn an_undefined_tenant_decision_denies_and_org_rules_are_out_of_reach() {
    // A decision the tenant's rule leaves undefined denies.
    let none = "package warden.tenants.finance\n\ndecision := {\"allow\": true} if input.request.tool == \"nothing\"\n";
    let s = fin_snapshot("", Some(none));
    let v = request(
        &s,
        &principal("finance", "fred", &[]),
        "crm",
        &call("read", "{}"),
    )
    .0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("tenant_policy:finance:policy_undefined")),
        "{v:?}"
    );
    // The module imports the org's rules: compiled apart, they are not
    // there, and the bundle is refused when built, naming the reference.
    let peek = "package warden.tenants.finance\nimport data.warden.authz\n\ndecision := {\"allow\": authz.decision.allow}\n";
    let fin = layer("finance", "ledger", "");
    let reg = registry(&[("ledger", "finance", "deployed")]);
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text) in [
        ("warden.yaml", ORG),
        ("policies/org.rego", ORG_REGO),
        ("tenants/finance/tenant.yaml", fin.as_str()),
        ("tenants/finance/p.rego", peek),
        ("registry.json", reg.as_str()),
    ] {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    }
    let bundle = warden_config::Bundle::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let Err(e) = crate::snapshot::Snapshot::build(&bundle) else {
        panic!("a reference to the org's rules is refused");
    };
    assert!(
        e.to_string().contains("data.warden.authz.decision.allow"),
        "{e}"
    );
}

#[test]
fn tenant_rego_without_org_rego_still_applies() {
    let fin = layer("finance", "ledger", "");
    let reg = registry(&[("ledger", "finance", "deployed")]);
    let s = snapshot(&[
        ("tenants/finance/tenant.yaml", fin.as_str()),
        ("tenants/finance/p.rego", FIN_REGO),
        ("registry.json", reg.as_str()),
    ]);
    assert!(s.policy.is_none());
    let fin_p = principal("finance", "fred", &[]);
    assert!(refused(&request(&s, &fin_p, "crm", &call("delete", "{}")).0).is_some());
    assert!(
        refused(&request(&s, &principal("hr", "h", &[]), "crm", &call("delete", "{}")).0).is_none()
    );
}

#[test]
fn tenant_dlp_is_judged_beside_the_orgs() {
    let rule = "dlp:\n  rules:\n    - {name: no-email, detectors: [email], action: block, direction: request}\n";
    let s = fin_snapshot(rule, None);
    let args = r#"{"to": "someone@example.com"}"#;
    let v = request(
        &s,
        &principal("finance", "fred", &[]),
        "crm",
        &call("send", args),
    )
    .0;
    assert!(refused(&v).is_some(), "finance's rule blocks: {v:?}");
    let v = request(&s, &principal("hr", "h", &[]), "crm", &call("send", args)).0;
    assert!(refused(&v).is_none(), "not in finance's scope: {v:?}");
}

#[test]
fn tenant_egress_narrows_the_orgs() {
    let cat = "catalog:\n  ledger:\n    tools:\n      fetch: {url_arguments: [url]}\negress:\n  allow: [\"*.bank.example\"]\n";
    let s = fin_snapshot(cat, None);
    let fin = principal("finance", "fred", &[]);
    // The org allows any host (no egress.allow): the tenant's list narrows.
    let ok = request(
        &s,
        &fin,
        "ledger",
        &call("fetch", r#"{"url": "https://api.bank.example/x"}"#),
    )
    .0;
    assert!(refused(&ok).is_none(), "{ok:?}");
    let bad = request(
        &s,
        &fin,
        "ledger",
        &call("fetch", r#"{"url": "https://evil.example/x"}"#),
    )
    .0;
    assert!(
        refused(&bad).is_some_and(|r| r.contains("egress")),
        "{bad:?}"
    );
    // Outside finance's scope (an hr principal on an org server) the list does not apply.
    let hr = principal("hr", "h", &[]);
    let v = request(
        &s,
        &hr,
        "crm",
        &call("fetch", r#"{"url": "https://evil.example/x"}"#),
    )
    .0;
    assert!(refused(&v).is_none(), "{v:?}");
}

#[test]
fn tenant_quotas_count_calls_in_scope_under_their_own_name() {
    let q = "quotas:\n  - {name: q, per: [principal], limit: 1, window: 1m}\n";
    let s = fin_snapshot(q, None);
    let fin = principal("finance", "fred", &[]);
    assert!(refused(&request(&s, &fin, "crm", &call("read", "{}")).0).is_none());
    let v = request(&s, &fin, "crm", &call("read", "{}")).0;
    assert!(refused(&v).is_some_and(|r| r.contains("quota")), "{v:?}");
    // Another tenant's principal is not counted by finance's quota.
    let hr = principal("hr", "h", &[]);
    for _ in 0..3 {
        assert!(refused(&request(&s, &hr, "crm", &call("read", "{}")).0).is_none());
    }
}

#[test]
fn tenant_approval_tiers_raise_the_orgs() {
    let a = "catalog:\n  ledger:\n    tools:\n      post: {risk: HIGH}\napprovals:\n  require: {HIGH: 2}\n";
    let s = fin_snapshot(a, None);
    let (_, notes) = request(
        &s,
        &principal("hr", "h", &[]),
        "ledger",
        &call("post", "{}"),
    );
    let need = notes.approval.expect("held");
    assert_eq!(need.approvers, 2, "ledger is finance's");
    // Finance's layer asked: finance's approvers decide hr's call.
    assert_eq!(need.for_tenants, ["finance"]);
    let (_, notes) = request(&s, &principal("hr", "h", &[]), "crm", &call("post", "{}"));
    assert!(notes.approval.is_none());
}

/// A tenant's Rego that asks for approval on its own server has its own
/// approvers decide another tenant's call, as its approval tiers do: the
/// caller's colleagues never release what the owner's rules hold.
#[test]
fn a_tenant_policys_approval_is_decided_by_that_tenant() {
    let ask = "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": true, \"reason\": \"fin_posts_held\", \"require_approval\": 2} if input.request.tool == \"post\"\n";
    let s = fin_snapshot("", Some(ask));
    let (_, notes) = request(
        &s,
        &principal("hr", "h", &[]),
        "ledger",
        &call("post", "{}"),
    );
    let need = notes.approval.expect("held by finance's rule");
    assert_eq!(need.approvers, 2);
    assert_eq!(need.for_tenants, ["finance"]);
    // Finance's own principal: finance's approvers are the caller's.
    let (_, notes) = request(
        &s,
        &principal("finance", "f", &[]),
        "ledger",
        &call("post", "{}"),
    );
    let need = notes.approval.expect("held");
    assert!(need.for_tenants.is_empty(), "{:?}", need.for_tenants);
    // Outside finance's scope its rule asks nothing.
    let (_, notes) = request(&s, &principal("hr", "h", &[]), "crm", &call("post", "{}"));
    assert!(notes.approval.is_none());
}

#[test]
fn asks_merge_keeping_the_most_approvers_and_every_tenant() {
    use crate::engines::policy::ApprovalAsk;
    let mut a = ApprovalAsk::new(1, "org".into());
    a.tenants = vec!["finance".into()];
    let mut b = ApprovalAsk::new(3, "hr".into());
    b.tenants = vec!["hr".into()];
    let m = a.clone().stricter(b.clone());
    assert_eq!((m.approvers, &*m.reason), (3, "hr"));
    assert_eq!(m.tenants.len(), 2);
    let m = b.stricter(a);
    assert_eq!((m.approvers, &*m.reason), (3, "hr"));
    assert_eq!(m.tenants.len(), 2);
}

#[test]
fn composition_keeps_the_stricter() {
    use crate::engines::policy::{ApprovalAsk, PolicyDecision};
    let allow = |n: Option<u8>| PolicyDecision {
        allow: true,
        reason: "ok".into(),
        scopes: None,
        approval: n.map(|approvers| ApprovalAsk::new(approvers, "r".into())),
    };
    let deny = PolicyDecision {
        allow: false,
        reason: "no".into(),
        scopes: None,
        approval: None,
    };
    assert!(!compose(deny.clone(), "t", allow(None)).allow);
    let d = compose(allow(None), "t", deny);
    assert!(!d.allow && &*d.reason == "tenant_policy:t:no");
    assert_eq!(
        compose(allow(Some(1)), "t", allow(Some(3)))
            .approval
            .map(|a| a.approvers),
        Some(3)
    );
    assert_eq!(
        compose(allow(Some(2)), "t", allow(None))
            .approval
            .map(|a| a.approvers),
        Some(2)
    );
}

#[test]
fn the_org_kill_switch_overrides_every_tenant() {
    let org = format!("{ORG}kill_switch: {{tenants: [finance], servers: [people]}}\n");
    let fin = layer("finance", "ledger", "");
    let hr = layer("hr", "people", "");
    let all = "package warden.tenants.finance\n\ndecision := {\"allow\": true}\n";
    let s = snapshot(&[
        ("warden.yaml", org.as_str()),
        ("tenants/finance/tenant.yaml", fin.as_str()),
        ("tenants/finance/p.rego", all),
        ("tenants/hr/tenant.yaml", hr.as_str()),
    ]);
    let v = request(
        &s,
        &principal("finance", "fred", &[]),
        "crm",
        &call("read", "{}"),
    )
    .0;
    assert!(
        matches!(
            &v,
            crate::chain::filter::Verdict::Reject {
                filter: "kill_switch",
                ..
            }
        ),
        "{v:?}"
    );
    let v = request(
        &s,
        &principal("hr", "h", &[]),
        "people",
        &call("read", "{}"),
    )
    .0;
    assert!(
        matches!(
            &v,
            crate::chain::filter::Verdict::Reject {
                filter: "kill_switch",
                ..
            }
        ),
        "{v:?}"
    );
}

/// A tenant's DLP mask (or text its strip joins) rewrites a request after
/// the org's policy and egress judged it: the rewritten request is judged
/// again, so what reaches the upstream is what the org's rules allowed.
#[test]
fn a_rewritten_request_is_judged_again_by_the_orgs_rules() {
    let rules = "dlp:\n  custom:\n    - {name: nm, regex: \"^read$\"}\n    - {name: host, regex: \"docs[.]example[.]com\"}\n  rules:\n    - {name: a, detectors: [nm], action: redact, direction: request, mask: \"wire\"}\n    - {name: b, detectors: [host], action: redact, direction: request, mask: \"169.254.169.254\"}\n";
    let s = fin_snapshot(rules, None);
    let fin = principal("finance", "fred", &[]);
    // The tool `read` masked as `wire`, which the org denies.
    let v = request(&s, &fin, "crm", &call("read", r#"{"op": "x"}"#)).0;
    assert!(refused(&v).is_some(), "{v:?}");
    // A URL masked into the metadata address.
    let v = request(
        &s,
        &fin,
        "crm",
        &call("fetch", r#"{"url": "http://docs.example.com/x"}"#),
    )
    .0;
    assert!(refused(&v).is_some_and(|r| r.contains("egress")), "{v:?}");
    // A mask that makes nothing the org's rules refuse is forwarded rewritten.
    let v = request(&s, &fin, "crm", &call("post", r#"{"op": "list"}"#)).0;
    assert!(refused(&v).is_none(), "{v:?}");
}

/// A name a tenant's Rego writes (`READ`) is a near-name only for calls in
/// that tenant's scope: the org's and other tenants' `read` pass.
#[test]
fn a_tenants_written_names_bind_its_scope_only() {
    let rego = "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": false, \"reason\": \"no\"} if input.request.tool == \"READ\"\n";
    let s = fin_snapshot("", Some(rego));
    let call_echo = call("read", "{}");
    let v = request(&s, &principal("hr", "h", &[]), "crm", &call_echo).0;
    assert!(refused(&v).is_none(), "{v:?}");
    let v = request(&s, &principal("acme", "o", &[]), "crm", &call_echo).0;
    assert!(refused(&v).is_none(), "{v:?}");
    let v = request(&s, &principal("finance", "fred", &[]), "ledger", &call_echo).0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("tool_name_near")),
        "{v:?}"
    );
}

/// A tenant's server carries no flow labels (the org's to give): it is
/// judged as a sink, so data the org labelled never leaves through it.
#[test]
fn a_tenants_server_is_a_sink_to_the_orgs_flows() {
    let org = format!(
        "{ORG}flows:\n  track: principal\n  default_clearance: restricted\ncatalog:\n  crm:\n    flow: [private]\n    classification: restricted\n    tools:\n      get_employee: {{classification: restricted, flow: [private]}}\n      fetch: {{flow: [untrusted]}}\n"
    );
    let fin = layer("finance", "ledger", "");
    let reg = registry(&[("ledger", "finance", "deployed")]);
    let s = snapshot_with(
        &org,
        &[
            ("tenants/finance/tenant.yaml", fin.as_str()),
            ("registry.json", reg.as_str()),
        ],
    );
    let fred = principal("finance", "fred", &[]);
    let post = call("post", r#"{"text": "emp 7 salary 212000"}"#);
    // Before any labelled read, the ledger takes it.
    assert!(refused(&request(&s, &fred, "ledger", &post).0).is_none());
    // A reply from crm the gateway cannot match: restricted and untrusted.
    let v = reply(
        &s,
        &fred,
        "crm",
        "tools/call",
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"emp 7 salary 212000"}]}}"#,
    );
    assert!(refused(&v).is_none(), "{v:?}");
    let v = request(&s, &fred, "ledger", &post).0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("flow_blocked")),
        "{v:?}"
    );
}

/// On a replica that has not seen the server list, a spelling a folding
/// server reads as a name the policy hides by a pattern (`ADMIN_purge`
/// under a rule on the `admin_` prefix) is judged as it is read too, and
/// refused; a spelling whose readings the policy allows passes.
#[test]
fn an_unlisted_name_is_judged_as_a_folding_server_reads_it() {
    let rego = "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false, \"reason\": \"hidden\"} if startswith(input.request.tool, \"admin_\")\n";
    let s = snapshot(&[("policies/org.rego", rego)]);
    let p = principal("acme", "o", &[]);
    for name in ["ADMIN_purge", "Admin_Purge", "admin\u{200b}_purge"] {
        let v = request(&s, &p, "crm", &call(name, "{}")).0;
        assert!(
            refused(&v).is_some_and(|r| r.contains("name_near")),
            "{name:?}: {v:?}"
        );
    }
    let v = request(&s, &p, "crm", &call("admin_purge", "{}")).0;
    assert!(refused(&v).is_some_and(|r| r.contains("hidden")), "{v:?}");
    for name in ["Echo", "getUser", "echo"] {
        let v = request(&s, &p, "crm", &call(name, "{}")).0;
        assert!(refused(&v).is_none(), "{name}: {v:?}");
    }
}

/// However many filters rewrote a request before, the last rewrite is
/// judged again by every filter before it: the org's DLP redacting an
/// e-mail first does not let the tenant's strip join a metadata URL past
/// egress; and a rewrite never renames the tool a call names.
#[test]
fn every_rewrite_is_judged_again_and_names_stay() {
    let org = format!(
        "{ORG}dlp:\n  rules:\n    - {{name: mail, detectors: [email], action: redact, direction: request}}\n"
    );
    let fin = layer(
        "finance",
        "ledger",
        "dlp:\n  custom:\n    - {name: host, regex: \"docs[.]example[.]com\"}\n  rules:\n    - {name: inj, detectors: [\"category:injection\"], action: strip, direction: request}\n    - {name: h, detectors: [host], action: redact, direction: request, mask: \"169.254.169.254\"}\n",
    );
    let s = snapshot_with(&org, &[("tenants/finance/tenant.yaml", fin.as_str())]);
    let fred = principal("finance", "fred", &[]);
    for args in [
        r#"{"url": "http://docs.example.com/x"}"#,
        r#"{"url": "http://docs.example.com/x", "cc": "bob@example.com"}"#,
    ] {
        let v = request(&s, &fred, "crm", &call("fetch", args)).0;
        assert!(
            refused(&v).is_some_and(|r| r.contains("egress")),
            "{args}: {v:?}"
        );
    }
    // A strip that would rename the tool is refused.
    let v = request(&s, &fred, "crm", &call("sen<|im_start|>d", "{}")).0;
    assert!(refused(&v).is_some(), "{v:?}");
}

/// On server→client messages DLP runs before every other guard: a strip
/// that joins text into a URL, a hidden name or a secret is judged as the
/// client will read it (egress, the policy's lists, the other rule set).
#[test]
fn a_reply_is_judged_after_dlp_rewrites_it() {
    let org = format!(
        "{ORG}dlp:\n  rules:\n    - {{name: no-secrets, detectors: [\"category:secret\"], action: block}}\n    - {{name: injection, detectors: [\"category:injection\"], action: strip, direction: response}}\n"
    );
    let s = snapshot_with(&org, &[("policies/org.rego", ORG_REGO)]);
    let fred = principal("finance", "fred", &[]);
    // An icon whose host the strip turns into the metadata address.
    for marker in ["###system", "[INST]", "<|im_start|>"] {
        let list = format!(
            r#"{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{{"name":"echo","inputSchema":{{"type":"object"}},"icons":[{{"src":"http://cdn.example{marker}@169.254.169.254/latest/meta-data/"}}]}}]}}}}"#
        );
        let v = reply(&s, &fred, "crm", "tools/list", &list);
        let out = delivered(&v, &list);
        assert!(!out.contains("169.254.169.254"), "{marker}: {v:?}");
        // A resource link in a tool's result, the same way.
        let link = format!(
            r#"{{"jsonrpc":"2.0","id":2,"result":{{"content":[{{"type":"resource_link","name":"r","uri":"http://docs.example{marker}@10.0.0.5/admin"}}]}}}}"#
        );
        let v = reply(&s, &fred, "crm", "tools/call", &link);
        let out = delivered(&v, &link);
        assert!(!out.contains("10.0.0.5"), "{marker}: {v:?}");
    }
    // A tool the policy hides (`wire`), listed with a marker inside its name
    // (a fresh gateway: above, `echo` changed its icons from list to list,
    // which quarantines it).
    let s = snapshot_with(&org, &[("policies/org.rego", ORG_REGO)]);
    let list = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"wi[INST]re","inputSchema":{"type":"object"}}]}}"#;
    let v = reply(&s, &fred, "crm", "tools/list", list);
    match &v {
        Verdict::ForwardMutated(b, _) => {
            let out = String::from_utf8_lossy(b);
            assert!(out.contains("echo") && !out.contains("wire"), "{out}");
        }
        other => assert!(refused(other).is_some(), "{other:?}"),
    }
}

/// A tenant's strip that joins a secret the org's rules block is judged
/// by the org's rules again, in both directions.
#[test]
fn a_tenants_rewrite_is_judged_by_the_orgs_dlp() {
    let org = format!(
        "{ORG}dlp:\n  rules:\n    - {{name: no-secrets, detectors: [\"category:secret\"], action: block}}\n"
    );
    let fin = layer(
        "finance",
        "ledger",
        "dlp:\n  rules:\n    - {name: inj, detectors: [\"category:injection\"], action: strip}\n",
    );
    let s = snapshot_with(&org, &[("tenants/finance/tenant.yaml", fin.as_str())]);
    let fred = principal("finance", "fred", &[]);
    let key = "AKIA[INST]Z7QW4PLM3XK9RT2B";
    // The key whole is the org's to block.
    let whole = call("send", r#"{"k": "AKIAZ7QW4PLM3XK9RT2B"}"#);
    assert!(refused(&request(&s, &fred, "crm", &whole).0).is_some());
    let v = request(
        &s,
        &fred,
        "crm",
        &call("send", &format!(r#"{{"k": "{key}"}}"#)),
    )
    .0;
    assert!(
        refused(&v).is_some_and(|r| r.contains("dlp")),
        "request: {v:?}"
    );
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{key}"}}]}}}}"#
    );
    let v = reply(&s, &fred, "crm", "tools/call", &body);
    assert!(
        refused(&v).is_some_and(|r| r.contains("dlp")),
        "reply: {v:?}"
    );
    // Outside finance's scope the marker is the org's to judge: it finds
    // no key in the text and forwards it as it is.
    let hr = principal("hr", "h", &[]);
    assert!(matches!(
        reply(&s, &hr, "crm", "tools/call", &body),
        Verdict::Forward
    ));
}

/// A tenant's reply DLP rewrites only what its own callers get: tool pins
/// (one per server, every caller's) learn the server's own definitions,
/// judged before any rule set rewrote them, so two tenants listing one
/// server never make it look like a changed tool.
#[test]
fn a_tenants_reply_rules_do_not_move_the_pins() {
    let fin = layer(
        "finance",
        "ledger",
        "dlp:\n  rules:\n    - {name: mail, detectors: [email], action: redact, direction: response}\n",
    );
    let s = snapshot_with(ORG, &[("tenants/finance/tenant.yaml", fin.as_str())]);
    let list = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","description":"mail ops@example.com","inputSchema":{"type":"object"}}]}}"#;
    let hr = principal("hr", "h", &[]);
    let fred = principal("finance", "fred", &[]);
    assert!(matches!(
        reply(&s, &hr, "crm", "tools/list", list),
        Verdict::Forward
    ));
    match reply(&s, &fred, "crm", "tools/list", list) {
        Verdict::ForwardMutated(b, _) => {
            let out = String::from_utf8_lossy(&b);
            assert!(
                out.contains("echo") && !out.contains("ops@example.com"),
                "{out}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Neither caller's next list nor call finds the tool quarantined.
    assert!(matches!(
        reply(&s, &hr, "crm", "tools/list", list),
        Verdict::Forward
    ));
    let v = request(&s, &hr, "crm", &call("echo", "{}")).0;
    assert!(refused(&v).is_none(), "{v:?}");
}

/// A tenant strip that joins text the org's rules mask is masked, not
/// refused: the rule sets judge each other's text until neither changes it.
#[test]
fn the_rule_sets_judge_each_others_text_until_it_settles() {
    let org =
        format!("{ORG}dlp:\n  rules:\n    - {{name: mail, detectors: [email], action: redact}}\n");
    let fin = layer(
        "finance",
        "ledger",
        "dlp:\n  rules:\n    - {name: inj, detectors: [\"category:injection\"], action: strip}\n",
    );
    let s = snapshot_with(&org, &[("tenants/finance/tenant.yaml", fin.as_str())]);
    let fred = principal("finance", "fred", &[]);
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"write to bob@exa[INST]mple.com"}]}}"#;
    match reply(&s, &fred, "crm", "tools/call", body) {
        Verdict::ForwardMutated(b, _) => {
            let out = String::from_utf8_lossy(&b);
            assert!(
                !out.contains("bob@example.com") && !out.contains("[INST]"),
                "{out}"
            );
        }
        other => panic!("{other:?}"),
    }
    let v = request(
        &s,
        &fred,
        "crm",
        &call("send", r#"{"to": "bob@exa[INST]mple.com"}"#),
    );
    match v.0 {
        Verdict::ForwardMutated(b, _) => {
            let out = String::from_utf8_lossy(&b);
            assert!(!out.contains("bob@example.com"), "{out}");
        }
        other => panic!("{other:?}"),
    }
}

/// When the org's rules hold a call too, naming the owner's tenant does
/// not take the hold out of the caller's tenant's approvers' hands: both
/// decide.
#[test]
fn an_org_hold_beside_a_tenants_keeps_the_callers_tenant_deciding() {
    let org_rego = "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": true, \"reason\": \"org_holds_posts\", \"require_approval\": 1} if input.request.tool == \"post\"\n";
    let fin_rego = "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": true, \"reason\": \"fin_holds\", \"require_approval\": 2} if input.request.tool == \"post\"\n";
    let fin = layer("finance", "ledger", "");
    let hr = layer("hr", "people", "");
    let reg = registry(&[
        ("ledger", "finance", "deployed"),
        ("people", "hr", "deployed"),
    ]);
    let s = snapshot(&[
        ("policies/org.rego", org_rego),
        ("tenants/finance/tenant.yaml", fin.as_str()),
        ("tenants/hr/tenant.yaml", hr.as_str()),
        ("registry.json", reg.as_str()),
        ("tenants/finance/p.rego", fin_rego),
    ]);
    let (_, notes) = request(
        &s,
        &principal("hr", "h", &[]),
        "ledger",
        &call("post", "{}"),
    );
    let need = notes.approval.expect("held");
    assert_eq!(need.approvers, 2);
    let mut t = need.for_tenants.clone();
    t.sort();
    assert_eq!(t, ["finance", "hr"]);
}

/// What the client gets of `original` under verdict `v` (nothing when refused).
fn delivered(v: &Verdict, original: &str) -> String {
    match v {
        Verdict::ForwardMutated(b, _) => String::from_utf8_lossy(b).into_owned(),
        Verdict::Forward => original.to_owned(),
        Verdict::Reject { .. } => String::new(),
    }
}

/// A caller whose tenant claim only folds to a layer's tenant (`financé`,
/// `ﬁnance` for `finance`) is held to that layer's rules, but its call is
/// not that tenant's to read or decide: its own tenant's approvers decide
/// it, unless the layer's tenant owns the server called.
#[test]
fn a_folded_tenant_claim_is_held_by_the_layer_but_decided_by_its_own_tenant() {
    let ask = "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n\ndecision := {\"allow\": true, \"reason\": \"fin_posts_held\", \"require_approval\": 2} if input.request.tool == \"post\"\n";
    let s = fin_snapshot("", Some(ask));
    for claim in ["financé", "ﬁnance", "FINANCE"] {
        let p = principal(claim, "f", &[]);
        if p.canonical_tenant() != "finance" {
            continue;
        }
        let (_, notes) = request(&s, &p, "crm", &call("post", "{}"));
        let need = notes.approval.expect("held by finance's rule");
        assert_eq!(need.approvers, 2, "{claim}");
        assert!(
            need.for_tenants.is_empty(),
            "{claim}: {:?}",
            need.for_tenants
        );
        // On finance's own server, finance decides.
        let (_, notes) = request(&s, &p, "ledger", &call("post", "{}"));
        let need = notes.approval.expect("held");
        let want: &[&str] = if claim == "FINANCE" {
            &[]
        } else {
            &["finance"]
        };
        assert_eq!(need.for_tenants, want, "{claim}");
    }
    assert_eq!(principal("ﬁnance", "f", &[]).canonical_tenant(), "finance");
}
