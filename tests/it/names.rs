//! One name, one reading: servers, tools, tenants and people compared in one form by the agent, the gateway, the kill switch, the registry and the layers.
//!
//! Each test runs a real agent (`warden-agent serve` with an org admin and
//! the admins of two tenants) and gateways fetching from it, with
//! warden-mock behind every server, and drives the API as the admins do.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use warden_config::access::hash_api_key;
use warden_tests::{keygen, post_json, request, Agent, Gateway, Mock};

const FRED: &str = "k_fin_fred_0001"; // finance
const OPS: &str = "k_org_ops_0004"; // the org's own

const ALICE: &str = "tok-alice-org-admin-0001";
const FIONA: &str = "tok-fiona-finance-admin-0003";
const FELIX: &str = "tok-felix-finance-admin-0004";
const HARRY: &str = "tok-harry-hr-admin-0005";

fn sha(t: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(t.as_bytes()))
}

fn key(id: &str, tenant: &str, secret: &str) -> String {
    let hash = hash_api_key(secret, format!("salt-{id}").as_bytes());
    format!("    - {{id: {id}, tenant: {tenant}, hash: \"{hash}\"}}\n")
}

/// The org source: `crm` (and `extra` servers, each routed at `/<name>`)
/// at the org's mock; finance and hr granted their own upstreams.
fn write_org(
    dir: &Path,
    org: std::net::SocketAddr,
    fin: std::net::SocketAddr,
    hr: std::net::SocketAddr,
    extra: &[&str],
) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut servers = format!("      - {{name: crm, upstreams: [\"{org}\"]}}\n");
    let mut routes = "  - {prefix: /crm, server: crm}\n".to_owned();
    for name in extra {
        servers.push_str(&format!(
            "      - {{name: {name}, upstreams: [\"{org}\"]}}\n"
        ));
        routes.push_str(&format!("  - {{prefix: /{name}, server: {name}}}\n"));
    }
    let yaml = format!(
        "version: 1\nidentity:\n  resource: http://127.0.0.1/crm/mcp\n  api_keys:\n{}\
service_groups:\n  - name: org\n    servers:\n{servers}routes:\n{routes}\
tenants:\n  finance: {{path_prefixes: [/finance/], upstreams: [\"{fin}\"]}}\n  hr: {{path_prefixes: [/hr/], upstreams: [\"{hr}\"]}}\n",
        key("ops", "acme", OPS),
    );
    std::fs::write(dir.join("warden.yaml"), yaml).expect("yaml");
}

/// Finance's layer: `servers` at `up`, each routed at `/finance/<name>`.
fn fin_layer(up: &str, servers: &[&str]) -> String {
    let mut s = String::new();
    let mut r = String::new();
    for n in servers {
        s.push_str(&format!("  - {{name: {n}, upstreams: [\"{up}\"]}}\n"));
        r.push_str(&format!("  - {{path_prefix: /finance/{n}, server: {n}}}\n"));
    }
    format!(
        "version: 1\ntenant: finance\nservers:\n{s}routes:\n{r}identity:\n  api_keys:\n{}",
        key("fred", "finance", FRED)
    )
}

fn hr_layer(up: std::net::SocketAddr) -> String {
    format!(
        "version: 1\ntenant: hr\nservers:\n  - {{name: people, upstreams: [\"{up}\"]}}\n\
routes:\n  - {{path_prefix: /hr/people, server: people}}\n"
    )
}

fn layer_tgz(yaml: &str) -> Vec<u8> {
    let mut files = warden_config::archive::Files::new();
    files.insert("tenant.yaml".into(), yaml.as_bytes().to_vec());
    warden_config::archive::pack(&files)
}

async fn api(
    agent: &Agent,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    if body.is_some() {
        h.push(("content-type", "application/json"));
    }
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let (s, _, b) = request(&format!("{}{path}", agent.url), method, &h, payload, false)
        .await
        .expect("agent api");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn publish_layer(agent: &Agent, token: &str, tenant: &str, yaml: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/gzip"),
    ];
    let (s, _, b) = request(
        &format!("{}/v1/tenants/{tenant}/layer", agent.url),
        "POST",
        &h,
        Bytes::from(layer_tgz(yaml)),
        false,
    )
    .await
    .expect("publish layer");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Waits until every one of `n` gateways reports the revision due to it.
async fn settled(agent: &Agent, n: usize) {
    let start = Instant::now();
    loop {
        let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
        let members = fleet["members"].as_array().cloned().unwrap_or_default();
        if members.len() == n && members.iter().all(|m| m["current"] == true) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the fleet never settled: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `echo` through `path` as `apikey` on every gateway: the JSON-RPC bodies.
async fn echo_on_all(gws: &[Gateway], path: &str, apikey: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let body = json!({"jsonrpc":"2.0","id":i + 1,"method":"tools/call",
                          "params":{"name":"echo","arguments":{"text":"hi"}}})
        .to_string();
        let (s, _, b) = post_json(&gw.url(path), body, &[("x-api-key", apikey)])
            .await
            .expect("post");
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert!(s == 200 || s == 403, "gw{i} {path}: {s} {v}");
        out.push(v);
    }
    out
}

fn served(v: &Value) -> bool {
    v["result"].is_object() && v["result"]["isError"] != true
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

/// The change record's lines.
fn changes(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("changes.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct Setup {
    tmp: tempfile::TempDir,
    agent: Agent,
    gws: Vec<Gateway>,
    org: Mock,
    fin: Mock,
    hr: Mock,
}

impl Setup {
    fn state(&self) -> std::path::PathBuf {
        self.tmp.path().join("state")
    }
}

/// An agent with alice (org admin), fiona and felix (finance's admins),
/// harry (hr's); `seed` is written as the agent's registry before it
/// starts (state an older agent left); two gateways on it.
async fn setup(extra_org: &[&str], seed: Option<Value>) -> Setup {
    let tmp = tempfile::tempdir().expect("tmp");
    let org = Mock::start(&[]).expect("mock");
    let fin = Mock::start(&[]).expect("finance's mock");
    let hr = Mock::start(&[]).expect("hr's mock");
    let (private, public) = keygen(tmp.path(), "bundle");
    let source = tmp.path().join("source");
    let state = tmp.path().join("state");
    write_org(&source, org.addr, fin.addr, hr.addr, extra_org);
    if let Some(seed) = seed {
        std::fs::create_dir_all(&state).expect("state");
        std::fs::write(state.join("registry.json"), seed.to_string()).expect("seed");
    }
    let admins = tmp.path().join("admins.yaml");
    std::fs::write(
        &admins,
        format!(
            "alice: {{token_sha256: \"{}\", role: org_admin}}\n\
fiona: {{token_sha256: \"{}\", role: tenant_admin, tenant: finance}}\n\
felix: {{token_sha256: \"{}\", role: tenant_admin, tenant: finance}}\n\
harry: {{token_sha256: \"{}\", role: tenant_admin, tenant: hr}}\n",
            sha(ALICE),
            sha(FIONA),
            sha(FELIX),
            sha(HARRY)
        ),
    )
    .expect("admins");
    let agent = Agent::start_with(
        &source,
        &state,
        Some(&private),
        &[
            "--watch-interval".as_ref(),
            "0".as_ref(),
            "--admins".as_ref(),
            admins.as_os_str(),
        ],
    )
    .expect("agent");
    let gws: Vec<Gateway> = (0..2)
        .map(|i| {
            Gateway::on_agent_with(
                &agent.url,
                &public,
                &tmp.path().join(format!("gw{i}")),
                &format!("gw{i}"),
                &["--report-interval", "200ms"],
            )
            .expect("gateway")
        })
        .collect();
    let s = Setup {
        tmp,
        agent,
        gws,
        org,
        fin,
        hr,
    };
    let (st, v) = api(&s.agent, ALICE, "POST", "/v1/publish", Some(json!({}))).await;
    assert_eq!(st, 200, "org publish: {v}");
    settled(&s.agent, 2).await;
    s
}

/// Registers `server` (the mock's tools) as `by`, and takes it through
/// testing, a second person's approval and deployment.
async fn register_and_deploy(
    s: &Setup,
    mock: &Mock,
    server: &str,
    by: &'static str,
    second: &'static str,
) {
    let tools = mock.tools().await;
    let (st, v) = api(
        &s.agent,
        by,
        "POST",
        "/v1/registry",
        Some(json!({"server": server, "definition": {"tools": tools}})),
    )
    .await;
    assert_eq!(st, 200, "register {server}: {v}");
    let mv = |token: &'static str, state: &'static str, reviewed: Option<String>| {
        let server = server.to_owned();
        async move {
            let mut body = json!({"state": state});
            if let Some(r) = reviewed {
                body["reviewed"] = r.into();
            }
            let (st, v) = api(
                &s.agent,
                token,
                "POST",
                &format!("/v1/registry/{server}/move"),
                Some(body),
            )
            .await;
            assert_eq!(st, 200, "move {server} {state}: {v}");
        }
    };
    mv(by, "testing", None).await;
    let (_, entry) = api(
        &s.agent,
        second,
        "GET",
        &format!("/v1/registry/{server}"),
        None,
    )
    .await;
    let digest = entry["definition_digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    mv(second, "approved", Some(digest)).await;
    mv(by, "deployed", None).await;
}

/// The org pauses finance's `ledger` in another case (`LEDGER`, as the
/// registry and the layer checks read it); then a finance admin points a
/// new name, `ledger_alive`, at the same upstream, a second finance admin
/// approves it, and it is deployed. What the org paused is the server:
/// every name a layer gives it again is paused, on every gateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_follows_the_server_not_its_spelling_or_name() {
    let s = setup(&[], None).await;
    let up = s.fin.addr.to_string();
    let (st, v) = publish_layer(&s.agent, FIONA, "finance", &fin_layer(&up, &["ledger"])).await;
    assert_eq!(st, 200, "finance publish: {v}");
    register_and_deploy(&s, &s.fin, "ledger", FIONA, FELIX).await;
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/finance/ledger/mcp", FRED).await {
        assert!(served(&v), "ledger before the pause: {v}");
    }

    // 1. The pause in another case pauses the server.
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/kill",
        Some(json!({"scope": "server", "value": "LEDGER"})),
    )
    .await;
    assert_eq!(st, 200, "kill LEDGER: {v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/finance/ledger/mcp", FRED).await {
        assert_eq!(
            code(&v),
            -31011,
            "`kill --server LEDGER` leaves `ledger` served: {v}"
        );
    }

    // 2. A new name at the paused upstream: paused too.
    let (st, v) = publish_layer(
        &s.agent,
        FIONA,
        "finance",
        &fin_layer(&up, &["ledger_alive"]),
    )
    .await;
    assert_eq!(st, 200, "finance publish of ledger_alive: {v}");
    register_and_deploy(&s, &s.fin, "ledger_alive", FIONA, FELIX).await;
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/finance/ledger_alive/mcp", FRED).await {
        assert_eq!(
            code(&v),
            -31011,
            "the paused upstream is served as `ledger_alive`: {v}"
        );
    }
    // The org's own server, elsewhere, is not touched.
    for v in echo_on_all(&s.gws, "/crm/mcp", OPS).await {
        assert!(served(&v), "{v}");
    }

    // 3. Revived (in yet another spelling): the server is served again,
    // under its new name.
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/revive",
        Some(json!({"scope": "server", "value": "Ledger"})),
    )
    .await;
    assert_eq!(st, 200, "revive: {v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/finance/ledger_alive/mcp", FRED).await {
        assert!(served(&v), "revived: {v}");
    }
}

/// The agent and the gateway read a registry name alike: registering
/// `OldAPI` for the org's `oldapi` is refused where it is written (the
/// registry would hold one spelling, the gateway look up the other), an
/// entry is reached under any case of its name, and a bundle whose
/// registry spells a server otherwise than its definition still gates it.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_name_has_one_reading() {
    let s = setup(&["oldapi"], None).await;
    let tools = s.org.tools().await;
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/registry",
        Some(json!({"server": "OldAPI", "definition": {"tools": tools}})),
    )
    .await;
    assert_eq!(st, 409, "`OldAPI` registered for the org's `oldapi`: {v}");
    assert!(v.to_string().contains("oldapi"), "{v}");
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/registry",
        Some(json!({"server": "oldapi", "definition": {"tools": tools}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    // Moved in another spelling: the one entry moves.
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/registry/OLDAPI/move",
        Some(json!({"state": "testing"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/oldapi/mcp", OPS).await {
        assert_eq!(code(&v), -31018, "in testing: {v}");
    }
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/registry/OldApi/move",
        Some(json!({"state": "retired"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/oldapi/mcp", OPS).await {
        assert_eq!(code(&v), -31017, "retired: {v}");
    }

    // A bundle written elsewhere: its registry spells the org's `oldapi`
    // `OldAPI`. The gateway reads the entry for the server.
    let mock = Mock::start(&[]).expect("mock");
    let org = format!(
        "version: 1\nservice_groups:\n  - name: org\n    servers:\n      - {{name: oldapi, upstreams: [\"{}\"]}}\nroutes:\n  - {{prefix: /oldapi, server: oldapi}}\n",
        mock.addr
    );
    for state in ["retired", "testing", "draft"] {
        let registry = json!({"version": 1, "servers": {"OldAPI": {
            "tenant": null, "state": state, "since": "2026-11-01T00:00:00Z",
            "retired_at": if state == "retired" { json!("2026-11-20T09:00:00Z") } else { Value::Null },
            "tools": {}}}})
        .to_string();
        let gw = Gateway::start_with(
            &org,
            false,
            &[("registry.json", registry.as_bytes())],
            &[],
            None,
        )
        .expect("gateway");
        let v = echo_on_all(std::slice::from_ref(&gw), "/oldapi/mcp", "none").await;
        let want = if state == "retired" { -31017 } else { -31018 };
        assert_eq!(
            code(&v[0]),
            want,
            "`OldAPI` {state} leaves `oldapi` served: {}",
            v[0]
        );
    }
}

/// A tenant registers only the servers its layer defines: a name nobody
/// defines yet (`crm2`, `ledger2`) is not a tenant's to take, and another
/// tenant's server in another case (`PEOPLE`) is refused as forbidden,
/// recorded as refused, without naming whose it is. A name a tenant took
/// before (an older agent let it) is the org's to take back: the org
/// defines it and registers it, and the gateways gate it by the org's
/// entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_squat_a_name_and_the_org_takes_names_back() {
    let seed = json!({"servers": {"crm3": {
        "tenant": "finance", "state": "retired", "since": "2026-11-01T00:00:00Z",
        "retired_at": "2026-11-02T00:00:00Z",
        "registered_by": "admin:fiona", "registrant": "fiona", "registered_at": "2026-11-01T00:00:00Z",
        "definition": [{"name": "echo", "inputSchema": {"type": "object"}}],
        "tools": {}, "events": []}}});
    let s = setup(&[], Some(seed)).await;
    let (st, v) = publish_layer(&s.agent, HARRY, "hr", &hr_layer(s.hr.addr)).await;
    assert_eq!(st, 200, "hr publish: {v}");
    let up = s.fin.addr.to_string();
    let (st, v) = publish_layer(&s.agent, FIONA, "finance", &fin_layer(&up, &["ledger"])).await;
    assert_eq!(st, 200, "finance publish: {v}");
    let tools = s.fin.tools().await;
    let register = |token: &'static str, server: &'static str| {
        let tools = tools.clone();
        let agent = &s.agent;
        async move {
            api(
                agent,
                token,
                "POST",
                "/v1/registry",
                Some(json!({"server": server, "definition": {"tools": tools}})),
            )
            .await
        }
    };
    for (token, server) in [
        (FIONA, "crm2"),
        (HARRY, "ledger2"),
        (FIONA, "PEOPLE"),
        (HARRY, "Ledger"),
        (FIONA, "people"),
    ] {
        let (st, v) = register(token, server).await;
        assert_eq!(st, 403, "{server}: {v}");
        let text = v.to_string();
        if token == FIONA {
            assert!(!text.contains("hr"), "{server}: names the owner: {v}");
        } else {
            assert!(!text.contains("finance"), "{server}: names the owner: {v}");
        }
        assert!(
            changes(&s.state())
                .iter()
                .any(|c| c["action"] == "refused"
                    && c["detail"].as_str().unwrap_or("").contains(server)),
            "{server}: not recorded as refused"
        );
    }
    // Its own layer's server: registered.
    let (st, v) = register(FIONA, "ledger").await;
    assert_eq!(st, 200, "{v}");

    // The org defines `crm3`, which finance took before: the org's publish
    // goes through, and the org registers it back.
    write_org(
        &s.tmp.path().join("source"),
        s.org.addr,
        s.fin.addr,
        s.hr.addr,
        &["crm3"],
    );
    let (st, v) = api(&s.agent, ALICE, "POST", "/v1/publish", Some(json!({}))).await;
    assert_eq!(st, 200, "the org defining `crm3`: {v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/crm3/mcp", OPS).await {
        assert!(served(&v), "the org's crm3: {v}");
    }
    let org_tools = s.org.tools().await;
    let (st, v) = api(
        &s.agent,
        ALICE,
        "POST",
        "/v1/registry",
        Some(json!({"server": "crm3", "definition": {"tools": org_tools}})),
    )
    .await;
    assert_eq!(st, 200, "the org registering `crm3` back: {v}");
    assert_eq!(v["tenant"], Value::Null, "{v}");
    settled(&s.agent, 2).await;
    for v in echo_on_all(&s.gws, "/crm3/mcp", OPS).await {
        assert_eq!(code(&v), -31018, "the org's draft: {v}");
    }

    // A refusal of `approve-share` names what was asked (method, path).
    let (st, v) = api(
        &s.agent,
        FIONA,
        "POST",
        "/v1/registry/ledger/approve-share",
        Some(json!({"reviewed": "sha256:00"})),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        changes(&s.state()).iter().any(|c| c["action"] == "refused"
            && c["detail"]
                .as_str()
                .unwrap_or("")
                .contains("POST /v1/registry/ledger/approve-share")),
        "approve-share's refusal does not name the request: {:?}",
        changes(&s.state())
            .iter()
            .filter(|c| c["action"] == "refused")
            .collect::<Vec<_>>()
    );
}
