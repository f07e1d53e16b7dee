//! The console's governance pages through a real listener: who logs in as
//! what, tenant admins confined to their tenant (pages, diffs, rollbacks,
//! canaries, servers, upstream health, bundle history), the store's
//! refusals shown and recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use crate::registry::State;
use crate::server::Api;
use crate::store::layer_tests::{yaml_layer, FIN_LEDGER};
use crate::store::CanaryState;

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";
const HR: &str = "version: 1\ntenant: hr\nservers:\n  - {name: payroll, upstreams: [\"127.0.0.1:3\"]}\nroutes:\n  - {path_prefix: /hr/pay, server: payroll}\n";

fn tok(name: &str) -> String {
    format!("tok-{name}-0123456789")
}

struct H {
    _d: tempfile::TempDir,
    url: String,
    api: Arc<Api>,
    state: PathBuf,
    http: reqwest::Client,
}

/// A logged-in browser, as far as the console can tell: its cookie and
/// the CSRF token of its forms.
struct B {
    cookie: String,
    csrf: String,
}

async fn start() -> H {
    let (d, api, state, url) = crate::api::tests::serve_fixture().await;
    H {
        _d: d,
        url,
        api,
        state,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form with the CSRF token")
        .to_owned()
}

impl H {
    async fn login(&self, who: &str) -> B {
        let token = if who == "admin" {
            ADMIN.to_owned()
        } else {
            tok(who)
        };
        let r = self
            .http
            .post(format!("{}/console/login", self.url))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{who} logs in");
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut b = B {
            cookie,
            csrf: String::new(),
        };
        let (s, page) = self.get(&b, "/console/fleet").await;
        assert_eq!(s, 200, "{page}");
        b.csrf = csrf_of(&page);
        b
    }

    async fn get(&self, b: &B, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", &b.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A form POST; returns the status and, after a redirect, the page it
    /// leads to (with the flash).
    async fn post(&self, b: &B, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &b.csrf)];
        form.extend_from_slice(fields);
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", &b.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 303 {
            let to = r.headers()["location"].to_str().unwrap().to_owned();
            let (_, page) = self.get(b, &to).await;
            return (status, page);
        }
        (status, r.text().await.unwrap())
    }

    async fn api(&self, who: &str, path: &str, body: serde_json::Value) -> u16 {
        let token = if who == "fleet" {
            FLEET.into()
        } else {
            tok(who)
        };
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn changes(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("changes.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Whether the console recorded a refusal of `who` whose detail holds `what`.
    fn refused(&self, who: &str, what: &str) -> bool {
        self.changes().iter().any(|c| {
            c["action"] == "console.refused"
                && c["ok"] == false
                && c["actor"] == format!("console:{who}")
                && c["detail"].as_str().unwrap().contains(what)
        })
    }
}

/// Finance with two layer revisions and `ledger` registered by felix; hr
/// with one and `payroll` registered by harry.
async fn governed() -> (H, Vec<String>, String) {
    let h = start().await;
    let store = h.api.store.clone();
    let (fin, hr) = tokio::task::spawn_blocking(move || {
        let r1 = store
            .publish_layer("admin:fiona", "finance", yaml_layer(FIN_LEDGER), None)
            .unwrap();
        let v2 = FIN_LEDGER.replace("127.0.0.1:2", "127.0.0.1:4");
        let r2 = store
            .publish_layer("admin:felix", "finance", yaml_layer(&v2), None)
            .unwrap();
        let hr = store
            .publish_layer("admin:harry", "hr", yaml_layer(HR), None)
            .unwrap();
        (vec![r1.revision, r2.revision], hr.revision)
    })
    .await
    .unwrap();
    let def = |tool: &str| serde_json::json!({"tools": [{"name": tool, "inputSchema": {"type": "object"}}]});
    let ledger = serde_json::json!({"server": "ledger", "definition": def("post_entry")});
    assert_eq!(h.api("felix", "/v1/registry", ledger).await, 200);
    let payroll = serde_json::json!({"server": "payroll", "definition": def("pay")});
    assert_eq!(h.api("harry", "/v1/registry", payroll).await, 200);
    (h, fin, hr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_log_in_with_their_roles() {
    let (h, _, _) = governed().await;
    for (who, shown) in [
        ("admin", "admin · admin · all tenants"),
        ("alice", "alice · org admin · all tenants"),
        ("rita", "rita · org reviewer · all tenants"),
        ("fiona", "fiona · tenant admin · finance"),
    ] {
        let b = h.login(who).await;
        let (_, page) = h.get(&b, "/console/fleet").await;
        assert!(page.contains(shown), "{who}: {page}");
        assert!(page.contains("id=\"nav-tenants\""), "{who}");
    }
    assert!(h.changes().iter().any(|c| c["action"] == "console.login"
        && c["actor"] == "console:fiona"
        && c["detail"].as_str().unwrap().ends_with("as tenant admin")));
    // An approver is not an administrator: no governance pages.
    let frank = h.login("frank").await;
    let (_, page) = h.get(&frank, "/console/fleet").await;
    assert!(!page.contains("nav-tenants"));
    for p in [
        "/console/tenants",
        "/console/registry",
        "/console/registry/ledger",
    ] {
        assert_eq!(h.get(&frank, p).await.0, 403, "{p}");
    }
    assert!(h.refused("frank", "administrators'"));
    // The org admin holds the org's actions, the tenant admin none of them.
    let alice = h.login("alice").await;
    let (_, fleet) = h.get(&alice, "/console/fleet").await;
    assert!(fleet.contains("id=\"kill-form\""));
    let fiona = h.login("fiona").await;
    let (_, fleet) = h.get(&fiona, "/console/fleet").await;
    assert!(!fleet.contains("id=\"kill-form\""), "{fleet}");
    let (s, _) = h
        .post(&fiona, "/console/kill", &[("scope", "all"), ("value", "")])
        .await;
    assert_eq!(s, 403);
    let (s, _) = h
        .post(&fiona, "/console/bundles/rollback", &[("revision", "r1")])
        .await;
    assert_eq!(s, 403);
    assert!(h.refused("fiona", "/console/kill"));
    assert!(!h.api.store.fleet_view().kill_switch.all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_governs_their_layer_and_nothing_else() {
    let (h, fin, hr) = governed().await;
    let fiona = h.login("fiona").await;
    let (s, page) = h.get(&fiona, "/console/tenants").await;
    assert_eq!(s, 200);
    assert!(
        page.contains("tenant-finance") && page.contains(&fin[1]),
        "{page}"
    );
    assert!(!page.contains("tenant-hr") && !page.contains(&hr), "{page}");
    assert!(page.contains("layer-rollback") && page.contains("layer-diff"));
    // The diff of their two revisions: tenant.yaml's changed upstream.
    let link = format!("/console/tenants/finance/diff?a={}&b={}", fin[0], fin[1]);
    assert!(page.contains(&link.replace('&', "&#38;")), "{page}");
    let (s, diff) = h.get(&fiona, &link).await;
    assert_eq!(s, 200, "{diff}");
    // (Addresses are redacted as everything the console shows is.)
    assert!(
        diff.contains("tenant.yaml") && diff.contains("[REDACTED]:4&#34;]}</span>"),
        "{diff}"
    );
    assert!(diff.contains("/console/tenants/finance/rollback"));
    // Another tenant's diff, rollback or canary: refused and recorded,
    // under any spelling; hr's layer is unchanged.
    for t in ["hr", "HR", "Hr"] {
        let (s, _) = h
            .get(&fiona, &format!("/console/tenants/{t}/diff?a={hr}&b={hr}"))
            .await;
        assert_eq!(s, 403, "{t}");
        let (s, _) = h
            .post(
                &fiona,
                &format!("/console/tenants/{t}/rollback"),
                &[("revision", &hr)],
            )
            .await;
        assert_eq!(s, 403, "{t}");
        let (s, _) = h
            .post(
                &fiona,
                &format!("/console/tenants/{t}/canary"),
                &[("verb", "rollback")],
            )
            .await;
        assert_eq!(s, 403, "{t}");
    }
    assert!(h.refused("fiona", "tenant `hr`'s layer is not fiona's to change"));
    assert!(h.refused("fiona", "tenant `hr`'s layers are not fiona's to read"));
    assert_eq!(h.api.store.layer_history_view("hr").history.len(), 1);
    // Their own rollback: done, flashed, recorded.
    let (s, page) = h
        .post(
            &fiona,
            "/console/tenants/finance/rollback",
            &[("revision", &fin[0])],
        )
        .await;
    assert_eq!(s, 303);
    assert!(
        page.contains(&format!("rolled back to {}", fin[0])),
        "{page}"
    );
    let now = h.api.store.layer_history_view("finance");
    assert!(
        now.current.as_deref().unwrap().starts_with("finance-r3-"),
        "{now:?}"
    );
    assert_eq!(now.history[2].actor, "console:fiona");
    assert!(h
        .changes()
        .iter()
        .any(|c| c["action"] == "console.tenants.rollback" && c["ok"] == true));
    // The bundles page lists no fleet revision to them, diffs are refused.
    let (_, bundles) = h.get(&fiona, "/console/bundles").await;
    assert!(bundles.contains("scoped-bundles"), "{bundles}");
    assert!(!bundles.contains("hr-r1") && !bundles.contains("id=\"history\""));
    // The reviewer reads both tenants, changes neither.
    let rita = h.login("rita").await;
    let (_, page) = h.get(&rita, "/console/tenants").await;
    assert!(page.contains("tenant-finance") && page.contains("tenant-hr"));
    assert!(!page.contains("layer-rollback"), "{page}");
    let (s, _) = h
        .post(&rita, "/console/tenants/hr/rollback", &[("revision", &hr)])
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_ends_only_their_own_canary() {
    let (h, _, _) = governed().await;
    // A live gateway for the canary to reach.
    let current = h.api.store.current().unwrap().revision.clone();
    let report = serde_json::json!({"id": "gw1", "revision": current, "healthy": true});
    assert_eq!(h.api("fleet", "/v1/fleet/report", report).await, 200);
    let store = h.api.store.clone();
    let canary = tokio::task::spawn_blocking(move || {
        let plan: crate::store::CanaryPlan =
            serde_json::from_value(serde_json::json!({"share": 0.3, "watch_secs": 600})).unwrap();
        let v3 = FIN_LEDGER.replace("127.0.0.1:2", "127.0.0.1:5");
        store
            .publish_layer(
                "admin:fiona",
                "finance",
                yaml_layer(&v3),
                Some((crate::rollout::Selector::default(), plan)),
            )
            .unwrap()
            .revision
    })
    .await
    .unwrap();
    // Harry asks to end "his" canary: there is none of hr; finance's runs on.
    let harry = h.login("harry").await;
    let (_, page) = h.get(&harry, "/console/tenants").await;
    assert!(
        !page.contains(&canary) && !page.contains("canary-promote"),
        "{page}"
    );
    let (s, page) = h
        .post(&harry, "/console/tenants/hr/canary", &[("verb", "promote")])
        .await;
    assert_eq!(s, 303);
    assert!(page.contains("no canary of tenant `hr`"), "{page}");
    assert_eq!(
        h.api.store.rollout_view().state(),
        Some(CanaryState::Watching)
    );
    let fiona = h.login("fiona").await;
    let (_, page) = h.get(&fiona, "/console/tenants").await;
    assert!(
        page.contains(&canary) && page.contains("canary-promote"),
        "{page}"
    );
    let (_, page) = h
        .post(
            &fiona,
            "/console/tenants/finance/canary",
            &[("verb", "promote"), ("revision", &canary)],
        )
        .await;
    assert!(page.contains("promoted"), "{page}");
    assert_eq!(
        h.api.store.rollout_view().state(),
        Some(CanaryState::Promoted)
    );
    assert_eq!(
        h.api.store.layer_history_view("finance").current.as_deref(),
        Some(canary.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_in_the_console_keeps_tenants_apart_and_two_people_on_approval() {
    let (h, _, _) = governed().await;
    let felix = h.login("felix").await;
    let (_, list) = h.get(&felix, "/console/registry").await;
    assert!(list.contains("/console/registry/ledger"), "{list}");
    assert!(!list.contains("payroll"), "{list}");
    // Another tenant's server: refused, recorded, nothing moved.
    assert_eq!(h.get(&felix, "/console/registry/payroll").await.0, 403);
    let (s, _) = h
        .post(
            &felix,
            "/console/registry/payroll/move",
            &[("state", "retired")],
        )
        .await;
    assert_eq!(s, 403);
    assert!(h.refused("felix", "/console/registry/payroll/move"));
    assert_eq!(h.get(&felix, "/console/registry/nosuch").await.0, 404);
    let state = |s: &str| {
        h.api
            .store
            .registry_show_view(&crate::admins::Actor::root(), s)
            .unwrap()
            .entry
            .state
    };
    assert_eq!(state("payroll"), State::Draft);
    // Felix moves his server to testing, then cannot approve it himself.
    let (_, page) = h
        .post(
            &felix,
            "/console/registry/ledger/move",
            &[("state", "testing"), ("note", "ready")],
        )
        .await;
    assert!(page.contains("now testing"), "{page}");
    assert!(page.contains("id=\"move-approved\""), "{page}");
    let (_, page) = h
        .post(
            &felix,
            "/console/registry/ledger/move",
            &[("state", "approved")],
        )
        .await;
    assert!(page.contains("a second person approves it"), "{page}");
    assert!(h.refused("felix", "a second person approves it"));
    assert_eq!(state("ledger"), State::Testing);
    // Fiona approves: the second person, with the digest of the
    // definition the page showed her (the form's hidden `reviewed`).
    let fiona = h.login("fiona").await;
    let reviewed = |page: &str| {
        let mark = "name=\"reviewed\" value=\"";
        let at = page.find(mark).expect("the approve form") + mark.len();
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    };
    let (_, page) = h.get(&fiona, "/console/registry/ledger").await;
    let shown = reviewed(&page);
    assert!(
        page.contains(&shown) && shown.starts_with("sha256:"),
        "{page}"
    );
    // Felix registers another definition after the page was read: the
    // form's approval is refused, nothing approved.
    let store = h.api.store.clone();
    tokio::task::spawn_blocking(move || {
        let felix = crate::admins::Actor {
            name: "felix".into(),
            kind: crate::admins::Kind::TenantAdmin("finance".into()),
        };
        let def = serde_json::json!({"tools": [{"name": "post_entry", "description": "changed", "inputSchema": {"type": "object"}}]});
        store
            .registry_apply(&felix.clone(), "registry.register", "", |r, taken| {
                r.register(&felix, "ledger", None, &def, taken, std::time::SystemTime::now())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let (_, page) = h
        .post(
            &fiona,
            "/console/registry/ledger/move",
            &[("state", "approved"), ("reviewed", &shown)],
        )
        .await;
    assert!(
        page.contains("the definition changed since you reviewed it"),
        "{page}"
    );
    assert_eq!(state("ledger"), State::Testing);
    let (_, page) = h.get(&fiona, "/console/registry/ledger").await;
    let shown = reviewed(&page);
    let (_, page) = h
        .post(
            &fiona,
            "/console/registry/ledger/move",
            &[("state", "approved"), ("reviewed", &shown)],
        )
        .await;
    assert!(page.contains("now approved"), "{page}");
    assert!(page.contains("admin:fiona at"), "{page}");
    assert_eq!(state("ledger"), State::Approved);
    // Sharing: fiona asks, harry cannot approve, the reviewer does.
    let (_, page) = h.post(&fiona, "/console/registry/ledger/share", &[]).await;
    assert!(page.contains("sharing done"), "{page}");
    assert!(!page.contains("id=\"approve-share\""));
    let rita = h.login("rita").await;
    let (_, page) = h.get(&rita, "/console/registry/ledger").await;
    assert!(page.contains("id=\"approve-share\""), "{page}");
    assert!(
        !page.contains("id=\"move-deployed\""),
        "a reviewer does not deploy"
    );
    let (_, page) = h
        .post(
            &rita,
            "/console/registry/ledger/approve-share",
            &[("reviewed", &reviewed(&page))],
        )
        .await;
    assert!(page.contains("shared with every tenant"), "{page}");
    // A lifecycle conflict is the store's, shown and recorded.
    let (_, page) = h
        .post(
            &fiona,
            "/console/registry/ledger/move",
            &[("state", "deprecated")],
        )
        .await;
    assert!(page.contains("cannot move to deprecated"), "{page}");
    assert!(h
        .changes()
        .iter()
        .any(|c| c["action"] == "console.registry.move"
            && c["ok"] == false
            && c["actor"] == "console:fiona"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_shows_a_tenant_admin_their_upstreams_only() {
    let (h, _, _) = governed().await;
    let report = serde_json::json!({
        "id": "gw1", "revision": "x", "healthy": true,
        "upstreams": [
            {"server": "ledger", "replicas": 2, "healthy": 1},
            {"server": "payroll", "replicas": 1, "healthy": 1},
            {"server": "mock", "replicas": 1, "healthy": 0},
        ],
    });
    assert_eq!(h.api("fleet", "/v1/fleet/report", report).await, 200);
    let fiona = h.login("fiona").await;
    let (_, page) = h.get(&fiona, "/console/fleet").await;
    assert!(page.contains("ledger 1/2"), "{page}");
    assert!(
        !page.contains("payroll") && !page.contains("mock 0/1"),
        "{page}"
    );
    let alice = h.login("alice").await;
    let (_, page) = h.get(&alice, "/console/fleet").await;
    assert!(
        page.contains("ledger 1/2") && page.contains("payroll 1/1") && page.contains("mock 0/1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_shows_a_tenant_admin_the_entries_of_their_servers_only() {
    let (h, _, _) = governed().await;
    let store = h.api.store.clone();
    tokio::task::spawn_blocking(move || {
        for (scope, value) in [
            ("server", "ledger"),
            ("tool", "ledger/post_entry"),
            ("server", "payroll"),
            ("tool", "payroll/pay"),
            ("server", "mock"),
            ("tool", "wire_money"),
            ("tenant", "hr"),
            ("tenant", "finance"),
        ] {
            store.kill("admin", scope, value, true).unwrap();
        }
    })
    .await
    .unwrap();
    // The kill switch and its history, as the fleet page shows them.
    let kill_part = |page: &str| -> String {
        let from = page.find("<h2>Kill switch</h2>").expect("the kill switch");
        let to = page[from..]
            .find("</table>")
            .map_or(page.len(), |n| from + n);
        page[from..to].to_owned()
    };
    let fiona = h.login("fiona").await;
    let (_, page) = h.get(&fiona, "/console/fleet").await;
    let shown = kill_part(&page);
    for mine in ["ledger", "ledger/post_entry", "finance"] {
        assert!(shown.contains(mine), "{mine}: {shown}");
    }
    // Hr's servers and tools, the org's server and a tool of every
    // server are not finance's to see, on the switch or in its history.
    for other in ["payroll", "pay", "mock", "wire_money", "hr"] {
        assert!(!shown.contains(other), "{other}: {shown}");
    }
    let alice = h.login("alice").await;
    let (_, page) = h.get(&alice, "/console/fleet").await;
    let shown = kill_part(&page);
    for all in [
        "ledger/post_entry",
        "payroll/pay",
        "mock",
        "wire_money",
        "hr",
    ] {
        assert!(shown.contains(all), "{all}: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_publishes_their_layer_from_the_console() {
    let (h, fin, _hr) = governed().await;
    let fiona = h.login("fiona").await;
    let (_, page) = h.get(&fiona, "/console/tenants").await;
    assert!(
        page.contains("action=\"/console/tenants/finance/publish\""),
        "{page}"
    );
    assert!(!page.contains("/console/tenants/hr/publish"), "{page}");
    // Typed in a browser (CRLF line ends), with a policy of its own.
    let yaml = FIN_LEDGER
        .replace("127.0.0.1:2", "127.0.0.1:5")
        .replace('\n', "\r\n");
    let rego = "package warden.tenants.finance\r\n\r\ndefault decision := {\"allow\": true}\r\n";
    let (s, page) = h
        .post(
            &fiona,
            "/console/tenants/finance/publish",
            &[("tenant_yaml", &yaml), ("policy_rego", rego)],
        )
        .await;
    assert_eq!(s, 303);
    assert!(page.contains("finance: published finance-r3-"), "{page}");
    let now = h.api.store.layer_history_view("finance");
    let current = now.current.clone().unwrap();
    assert!(current.starts_with("finance-r3-"), "{now:?}");
    assert_eq!(now.history[2].actor, "console:fiona");
    let files = h.api.store.current_layer_files("finance").unwrap();
    assert!(files["tenant.yaml"]
        .windows(12)
        .any(|w| w == b"127.0.0.1:5\"".as_slice()));
    assert!(!files["tenant.yaml"].contains(&b'\r'));
    assert!(files.contains_key("policy.rego"));
    // A layer that widens, or whose Rego leaves the tenant's package: the
    // store's refusal is shown with the rule, nothing changes.
    for (yaml, rego, rule) in [
        (
            format!("{FIN_LEDGER}catalog:\n  ledger:\n    egress_allow: [\"evil.example\"]\n"),
            "",
            "egress_allow",
        ),
        (
            FIN_LEDGER.to_owned(),
            "package warden.authz\n\ndecision := {\"allow\": true}\n",
            "warden.tenants.finance",
        ),
    ] {
        let (s, page) = h
            .post(
                &fiona,
                "/console/tenants/finance/publish",
                &[("tenant_yaml", &yaml), ("policy_rego", rego)],
            )
            .await;
        assert_eq!(s, 303);
        assert!(
            page.contains("layer refused") && page.contains(rule),
            "{rule}: {page}"
        );
        assert_eq!(
            h.api.store.layer_history_view("finance").current.as_deref(),
            Some(current.as_str())
        );
    }
    assert!(h
        .changes()
        .iter()
        .any(|c| c["action"] == "console.tenants.publish" && c["ok"] == false));
    // Another tenant's layer, under any spelling, and a reviewer: refused
    // and recorded before anything is read.
    for t in ["hr", "HR"] {
        let (s, _) = h
            .post(
                &fiona,
                &format!("/console/tenants/{t}/publish"),
                &[("tenant_yaml", HR), ("policy_rego", "")],
            )
            .await;
        assert_eq!(s, 403, "{t}");
    }
    assert!(h.refused("fiona", "tenant `hr`'s layer is not fiona's to change"));
    assert_eq!(h.api.store.layer_history_view("hr").history.len(), 1);
    let rita = h.login("rita").await;
    let (s, _) = h
        .post(
            &rita,
            "/console/tenants/finance/publish",
            &[("tenant_yaml", FIN_LEDGER), ("policy_rego", "")],
        )
        .await;
    assert_eq!(s, 403);
    let _ = fin;
}

/// The value of the first hidden `name` field of a form on `page`.
fn hidden(page: &str, name: &str) -> String {
    let mark = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&mark)
        .unwrap_or_else(|| panic!("no `{name}` field: {page}"))
        + mark.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

/// The console's approvals send what their page showed: the share
/// approval the definition's digest, the canary buttons the canary's
/// revision. A definition registered, or a canary replaced, after the
/// page was read is not approved or promoted by its form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_approves_only_what_its_page_showed() {
    let (h, _, _) = governed().await;
    let store = h.api.store.clone();
    let root = crate::admins::Actor::root();
    let entry = |s: &str| h.api.store.registry_show_view(&root, s).unwrap();
    // Ledger (felix's) is tested, approved by fiona, and finance asks to
    // share it.
    let felix = h.login("felix").await;
    let fiona = h.login("fiona").await;
    h.post(
        &felix,
        "/console/registry/ledger/move",
        &[("state", "testing")],
    )
    .await;
    let (_, page) = h.get(&fiona, "/console/registry/ledger").await;
    let (_, page) = h
        .post(
            &fiona,
            "/console/registry/ledger/move",
            &[
                ("state", "approved"),
                ("reviewed", &hidden(&page, "reviewed")),
            ],
        )
        .await;
    assert!(page.contains("now approved"), "{page}");
    let (_, page) = h.post(&fiona, "/console/registry/ledger/share", &[]).await;
    assert!(page.contains("sharing done"), "{page}");
    // Rita reads the entry: the share form carries its digest.
    let rita = h.login("rita").await;
    let (_, page) = h.get(&rita, "/console/registry/ledger").await;
    assert!(page.contains("id=\"approve-share-form\""), "{page}");
    let shown = hidden(&page, "reviewed");
    assert_eq!(shown, entry("ledger").definition_digest);
    // Felix registers another definition, and asks again, before rita
    // submits: her form is refused, nothing shared.
    let reg = serde_json::json!({"server": "ledger", "definition": {"tools": [{"name": "post_entry", "description": "changed", "inputSchema": {"type": "object"}}]}});
    assert_eq!(h.api("felix", "/v1/registry", reg).await, 200);
    assert_eq!(entry("ledger").entry.share_requested_by, None);
    assert_eq!(
        h.api("felix", "/v1/registry/ledger/share", serde_json::json!({}))
            .await,
        200
    );
    let (_, page) = h
        .post(
            &rita,
            "/console/registry/ledger/approve-share",
            &[("reviewed", &shown)],
        )
        .await;
    assert!(
        page.contains("the definition changed since you reviewed it"),
        "{page}"
    );
    assert!(!entry("ledger").entry.shared);
    assert!(h
        .changes()
        .iter()
        .any(|c| c["action"] == "console.registry.approve_share"
            && c["ok"] == false
            && c["actor"] == "console:rita"));
    // A form without the digest: refused too.
    let (_, page) = h
        .post(&rita, "/console/registry/ledger/approve-share", &[])
        .await;
    assert!(page.contains("needs `reviewed`"), "{page}");
    assert!(!entry("ledger").entry.shared);

    // The tenants page's canary buttons carry the canary's revision.
    let current = store.current().unwrap().revision.clone();
    let report = serde_json::json!({"id": "gw1", "revision": current, "healthy": true});
    assert_eq!(h.api("fleet", "/v1/fleet/report", report).await, 200);
    let canary = |upstream: &'static str| {
        let s = store.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let plan: crate::store::CanaryPlan =
                    serde_json::from_value(serde_json::json!({"share": 1.0, "watch_secs": 600}))
                        .unwrap();
                s.publish_layer(
                    "admin:fiona",
                    "finance",
                    yaml_layer(&FIN_LEDGER.replace("127.0.0.1:2", upstream)),
                    Some((crate::rollout::Selector::default(), plan)),
                )
                .unwrap()
                .revision
            })
            .await
            .unwrap()
        }
    };
    let a = canary("127.0.0.1:5").await;
    let (_, page) = h.get(&fiona, "/console/tenants").await;
    let form = &page[page
        .find("action=\"/console/tenants/finance/canary\"")
        .unwrap()..];
    assert_eq!(hidden(form, "revision"), a, "{page}");
    // Felix rolls `a` back and starts `b`; fiona's page still shows `a`.
    let (_, _) = h
        .post(
            &felix,
            "/console/tenants/finance/canary",
            &[("verb", "rollback"), ("revision", &a)],
        )
        .await;
    assert_eq!(store.rollout_view().state(), Some(CanaryState::RolledBack));
    let b = canary("127.0.0.1:4").await;
    let before = store.layer_history_view("finance").current;
    let (_, page) = h
        .post(
            &fiona,
            "/console/tenants/finance/canary",
            &[("verb", "promote"), ("revision", &a)],
        )
        .await;
    assert!(
        page.contains("the canary changed since you read it"),
        "{page}"
    );
    assert_eq!(store.rollout_view().state(), Some(CanaryState::Watching));
    assert_eq!(store.layer_history_view("finance").current, before);
    // Read again: `b` is promoted.
    let (_, page) = h.get(&fiona, "/console/tenants").await;
    let form = &page[page
        .find("action=\"/console/tenants/finance/canary\"")
        .unwrap()..];
    assert_eq!(hidden(form, "revision"), b);
    let (_, page) = h
        .post(
            &fiona,
            "/console/tenants/finance/canary",
            &[("verb", "promote"), ("revision", &b)],
        )
        .await;
    assert!(page.contains("promoted"), "{page}");
    assert_eq!(
        store.layer_history_view("finance").current.as_deref(),
        Some(b.as_str())
    );
}
