//! Every caller against every route of the agent, answered as the golden
//! file `route_matrix.golden` says: status, the `error` of a JSON answer,
//! the redirect target, and whether the refusal went to the change
//! record. The golden file was written by the agent before its HTTP layer
//! moved onto a route table; a change of who reaches what shows here as a
//! diff. `WARDEN_BLESS=1 cargo test -p warden-agent route_matrix` writes
//! it anew (review the diff: each line is a decision about access).
//!
//! Bodies are never valid for a change (a JSON route gets `{` and a layer
//! route bytes that are no gzip), so a route an identity reaches answers
//! 400 or 422 and nothing the next request sees changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";

/// Who asks: a label and the bearer token (`None`: no credential).
fn callers() -> Vec<(&'static str, Option<String>)> {
    let tok = |n: &str| Some(format!("tok-{n}-0123456789"));
    vec![
        ("anonymous", None),
        ("admin", Some(ADMIN.to_owned())),
        ("fleet", Some(FLEET.to_owned())),
        (
            "edge-own",
            Some(crate::server::fleet_http_tests::EDGE_OWN.to_owned()),
        ),
        ("alice/org-admin", tok("alice")),
        ("rita/org-reviewer", tok("rita")),
        ("fiona/finance-admin", tok("fiona")),
        ("harry/hr-admin", tok("harry")),
        ("frank/approver", tok("frank")),
    ]
}

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/bundles/current"),
    ("POST", "/v1/bundles/current"),
    ("POST", "/v1/fleet/report"),
    ("GET", "/v1/fleet/report"),
    ("POST", "/v1/audit/ingest"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit?tenant=hr"),
    ("GET", "/v1/audit?tenant=finance"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/spend"),
    ("GET", "/v1/spend?tenant=hr"),
    ("GET", "/v1/spend?tenant=finance&by=team,server&format=csv"),
    ("GET", "/v1/spend?by=nope"),
    ("POST", "/v1/spend"),
    ("POST", "/v1/audit"),
    ("GET", "/v1/fleet"),
    ("POST", "/v1/fleet"),
    ("PUT", "/v1/fleet"),
    ("GET", "/v1/history"),
    ("POST", "/v1/publish"),
    ("GET", "/v1/publish"),
    ("GET", "/v1/rollout"),
    ("POST", "/v1/rollout"),
    ("POST", "/v1/rollout/promote"),
    ("POST", "/v1/rollout/rollback"),
    ("POST", "/v1/rollback"),
    ("POST", "/v1/kill"),
    ("POST", "/v1/revive"),
    ("GET", "/v1/kill"),
    ("GET", "/v1/approvals"),
    ("GET", "/v1/approvals/"),
    ("GET", "/v1/approvals?all=1"),
    ("GET", "/v1/approvals/nope"),
    ("POST", "/v1/approvals/claim"),
    ("GET", "/v1/approvals/claim"),
    ("POST", "/v1/approvals/nope/approve"),
    ("POST", "/v1/approvals/nope/deny"),
    ("POST", "/v1/approvals/nope/other"),
    ("POST", "/v1/approvals"),
    ("DELETE", "/v1/approvals"),
    ("GET", "/v1/grants"),
    ("POST", "/v1/grants"),
    ("DELETE", "/v1/grants"),
    ("GET", "/v1/tenants"),
    ("GET", "/v1/tenants/"),
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants/finance/history"),
    ("GET", "/v1/tenants/FINANCE/history"),
    ("GET", "/v1/tenants/hr/history"),
    ("GET", "/v1/tenants/finance/diff"),
    ("GET", "/v1/tenants/finance/diff?from=1&to=2"),
    ("POST", "/v1/tenants/finance/layer"),
    ("POST", "/v1/tenants/hr/layer"),
    ("POST", "/v1/tenants/finance/layer?canary=10%25"),
    ("POST", "/v1/tenants/finance/rollback"),
    ("POST", "/v1/tenants/finance/canary/promote"),
    ("POST", "/v1/tenants/finance/canary/rollback"),
    ("GET", "/v1/tenants/finance"),
    ("GET", "/v1/tenants/finance/nope"),
    ("POST", "/v1/tenants/finance/nope"),
    ("POST", "/v1/tenants/hr/nope"),
    ("GET", "/v1/registry"),
    ("GET", "/v1/registry/"),
    ("POST", "/v1/registry"),
    ("GET", "/v1/registry/ledger"),
    ("GET", "/v1/registry/nope"),
    ("POST", "/v1/registry/ledger/move"),
    ("POST", "/v1/registry/ledger/share"),
    ("POST", "/v1/registry/ledger/approve-share"),
    ("POST", "/v1/registry/ledger/nope"),
    ("GET", "/v1/registry/ledger/move"),
    ("DELETE", "/v1/registry/ledger"),
    ("POST", "/v1/vault/token"),
    ("GET", "/v1/vault/token"),
    ("GET", "/v1/vault/secrets/jira"),
    ("POST", "/v1/vault/secrets/jira"),
    ("GET", "/v1/vault/connections"),
    ("POST", "/v1/vault/connections/revoke"),
    ("POST", "/v1/vault/rewrap"),
    ("GET", "/console/connect"),
    ("POST", "/console/connect/allow"),
    ("GET", "/console/connect/callback"),
    ("GET", "/console/connections"),
    ("GET", "/v1/nope"),
    ("POST", "/v1/nope"),
    ("GET", "/v1"),
    ("GET", "/nope"),
    ("GET", "/"),
    ("GET", "/console"),
    ("GET", "/console/fleet"),
    ("GET", "/console/spend"),
    ("GET", "/console/login"),
    ("POST", "/console/fleet"),
    ("PUT", "/console/fleet"),
    ("GET", "/console/static/console.css"),
    ("GET", "/console/nope"),
];

async fn matrix() -> String {
    let (_d, _api, state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let changes = || {
        std::fs::read_to_string(state.join("changes.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let mut out = String::new();
    for (who, token) in callers() {
        for (method, path) in ROUTES {
            let before = changes();
            let mut r = http.request(method.parse().unwrap(), format!("{url}{path}"));
            if let Some(t) = &token {
                r = r.bearer_auth(t);
            }
            if *method != "GET" && *method != "DELETE" {
                r = if path.contains("/layer") {
                    r.header("content-type", "application/gzip")
                        .body(&b"not gzip"[..])
                } else {
                    r.header("content-type", "application/json").body("{")
                };
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let json = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let error = if json {
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                v.get("error")
                    .and_then(|e| e.as_str())
                    .map(|e| e.to_owned())
                    .or_else(|| v.get("code").map(|c| c.to_string()))
            } else {
                None
            };
            let recorded = changes() > before;
            write!(out, "{who:<20} {method:<6} {path:<44} {status}").unwrap();
            if let Some(l) = location {
                write!(out, " -> {l}").unwrap();
            }
            if recorded {
                out.push_str(" [recorded]");
            }
            if let Some(e) = error {
                write!(out, " {}", e.escape_debug()).unwrap();
            }
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_reaches_what_the_golden_file_says() {
    let got = matrix().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/route_matrix.golden");
    if std::env::var_os("WARDEN_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
        return;
    }
    let want =
        std::fs::read_to_string(path).expect("route_matrix.golden (WARDEN_BLESS=1 writes it)");
    if got != want {
        let diff = similar::TextDiff::from_lines(&want, &got)
            .unified_diff()
            .header("golden", "now")
            .to_string();
        panic!("who reaches what changed:\n{diff}");
    }
}

/// HEAD takes no route (axum would answer it with a GET route): answered
/// as any method a route does not take, and a HEAD of the bundle is no
/// fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_takes_no_route() {
    let (_d, api, _state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::new();
    let head = |path: &str, token: &str| {
        http.head(format!("{url}{path}"))
            .bearer_auth(token)
            .header("x-warden-gateway", "edge-1")
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(head("/v1/fleet", ADMIN).await.unwrap()), 404);
    assert_eq!(status(head("/v1/rollout", ADMIN).await.unwrap()), 404);
    assert_eq!(
        status(head("/v1/bundles/current", FLEET).await.unwrap()),
        403
    );
    assert_eq!(status(head("/v1/approvals", FLEET).await.unwrap()), 403);
    assert_eq!(status(head("/v1/approvals", ADMIN).await.unwrap()), 404);
    let fleet = api.store.fleet_view();
    assert!(
        fleet.members.iter().all(|m| m.id != "edge-1"),
        "a HEAD of the bundle counted as a fetch"
    );
    // GET still answers.
    let r = http
        .get(format!("{url}/v1/fleet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
