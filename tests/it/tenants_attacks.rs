//! Hostile tenants, principals and servers against tenant layers and the
//! registry, over real sockets: what travels beside the messages (headers,
//! the URL) is judged by the tenants' DLP rules too; a stream that carries
//! no message (legacy SSE's GET) passes the registry's gate.

use serde_json::{json, Value};
use warden_tests::{post_json, Gateway, Mock};

use super::{call, key, FIN, HR};

const AKIA: &str = "AKIAIOSFODNN7EXAMPLE";

/// The org's `crm` at `up`; finance's servers at `fin_up`, the address the
/// org grants finance (a layer's server never shares an org server's).
fn gateway(up: std::net::SocketAddr, fin_up: std::net::SocketAddr) -> Gateway {
    let org = format!(
        "version: 1\nidentity:\n  resource: http://127.0.0.1/crm/mcp\n  api_keys:\n{}service_groups:\n  - name: org\n    servers:\n      - {{name: crm, upstreams: [\"{up}\"]}}\nroutes:\n  - {{prefix: /crm, server: crm}}\ntenants:\n  finance: {{path_prefixes: [/finance/], upstreams: [\"{fin_up}\"]}}\n  hr: {{path_prefixes: [/hr/]}}\n",
        key("ops", "acme", super::OPS, "")
    );
    let server = |name: &str| format!("  - {{name: {name}, upstreams: [\"{fin_up}\"]}}\n");
    let route = |name: &str| format!("  - {{path_prefix: /finance/{name}, server: {name}}}\n");
    // Finance's own DLP: no AWS key leaves in a finance call (the org has none).
    let fin = format!(
        "version: 1\ntenant: finance\nservers:\n{}{}routes:\n{}{}identity:\n  api_keys:\n{}dlp:\n  rules:\n    - {{name: fin-no-aws, detectors: [aws_access_key_id], action: block, direction: request}}\n",
        server("ledger"), server("gone"), route("ledger"), route("gone"),
        key("fred", "finance", FIN, ""),
    );
    let hr = format!(
        "version: 1\ntenant: hr\nidentity:\n  api_keys:\n{}",
        key("hanna", "hr", HR, "")
    );
    let entry = |state: &str| {
        json!({"tenant": "finance", "state": state, "since": "2026-11-01T00:00:00Z",
               "retired_at": if state == "retired" { json!("2026-11-20T09:00:00Z") } else { Value::Null },
               "tools": {}})
    };
    let registry = json!({"version": 1, "servers": {
        "ledger": entry("deployed"),
        "gone": entry("retired"),
    }})
    .to_string();
    let files: Vec<(&str, &[u8])> = vec![
        ("tenants/finance/tenant.yaml", fin.as_bytes()),
        ("tenants/hr/tenant.yaml", hr.as_bytes()),
        ("registry.json", registry.as_bytes()),
    ];
    Gateway::start_with(&org, false, &files, &[], None).expect("gateway")
}

async fn status(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let body = call(1, "echo", json!({"text": "hi"}));
    let (s, _, b) = post_json(&gw.url(path), body, headers).await.expect("post");
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// A finance principal carries an AWS key out in a header or the query of
/// a call to the org's server: finance's rule applies (the caller is
/// finance's), as it does to the body. Another tenant's caller is not in
/// finance's scope.
#[tokio::test(flavor = "multi_thread")]
async fn tenant_dlp_rules_judge_headers_and_the_url() {
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let gw = gateway(mock.addr, fin_mock.addr);
    let note = format!("note {AKIA}");
    let (s, b) = status(&gw, "/crm/mcp", &[("x-api-key", FIN), ("x-note", &note)]).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("fin-no-aws"), "{b}");
    let url = format!("/crm/mcp?q={AKIA}");
    let (s, b) = status(&gw, &url, &[("x-api-key", FIN)]).await;
    assert_eq!(s, 403, "{b}");
    // HR's caller on the org's server: finance's rules do not apply.
    let (s, b) = status(&gw, "/crm/mcp", &[("x-api-key", HR), ("x-note", &note)]).await;
    assert_eq!(s, 200, "{b}");
    // And in the body, as before.
    let body = call(2, "echo", json!({"text": AKIA}));
    let (_, _, b) = post_json(&gw.url("/crm/mcp"), body, &[("x-api-key", FIN)])
        .await
        .expect("post");
    assert!(String::from_utf8_lossy(&b).contains("fin-no-aws"));
}

/// Legacy SSE's GET opens a session with no message: a retired server, or
/// another tenant's unshared one, is not reached that way either.
#[tokio::test(flavor = "multi_thread")]
async fn a_get_stream_passes_the_registry_gate() {
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let gw = gateway(mock.addr, fin_mock.addr);
    let get = |path: &'static str, k: &'static str| {
        let url = gw.url(path);
        async move {
            warden_tests::request(
                &url,
                "GET",
                &[("accept", "text/event-stream"), ("x-api-key", k)],
                Default::default(),
                false,
            )
            .await
            .expect("get")
        }
    };
    let (s, _, b) = get("/finance/gone/sse", FIN).await;
    let b = String::from_utf8_lossy(&b);
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("was retired on 2026-11-20T09:00:00Z"), "{b}");
    let (s, _, b) = get("/finance/ledger/sse", HR).await;
    let b = String::from_utf8_lossy(&b);
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("belongs to tenant `finance`"), "{b}");
}
