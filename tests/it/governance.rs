//! Federated governance end to end (`docs/governance.md`): one agent with
//! an org admin, an org reviewer and the admins of two tenants (finance,
//! hr); three gateways pulling from it; warden-mock behind every server
//! (the org's, and each tenant's at the address its grant names).
//! Layers are published through the API and the CLI; the registry is
//! driven through both; every effect is checked on all three gateways.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use warden_config::access::hash_api_key;
use warden_tests::{bin, keygen, post_json, request, run_with_timeout, Agent, Gateway, Mock};

const FRED: &str = "k_fin_fred_0001"; // finance
const TESS: &str = "k_fin_tess_0002"; // finance, tester: an org key (the org gives `tester`)
const HANNA: &str = "k_hr_hanna_0003"; // hr
const OPS: &str = "k_org_ops_0004"; // the org's own

const ALICE: &str = "tok-alice-org-admin-0001";
const RITA: &str = "tok-rita-org-reviewer-0002";
const FIONA: &str = "tok-fiona-finance-admin-0003";
const FELIX: &str = "tok-felix-finance-admin-0004";
const HARRY: &str = "tok-harry-hr-admin-0005";

fn sha(t: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(t.as_bytes()))
}

fn key(id: &str, tenant: &str, secret: &str, roles: &str) -> String {
    let hash = hash_api_key(secret, format!("salt-{id}").as_bytes());
    format!("    - {{id: {id}, tenant: {tenant}, roles: [{roles}], hash: \"{hash}\"}}\n")
}

const ORG_REGO: &str =
    "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n";

/// Where the servers live: the org's `crm`, and each tenant's servers at
/// an upstream of its own (a layer's server never shares another owner's).
#[derive(Clone, Copy)]
struct Upstreams {
    org: std::net::SocketAddr,
    finance: std::net::SocketAddr,
    hr: std::net::SocketAddr,
}

/// The org source: its own server, its keys (finance's tester among
/// them), and the two tenants' grants (`hr` at `hr_prefix`), each naming
/// its tenant's upstream.
fn write_org(dir: &Path, up: Upstreams, hr_prefix: &str) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let Upstreams {
        org: mock,
        finance,
        hr,
    } = up;
    let yaml = format!(
        "version: 1\nidentity:\n  resource: http://127.0.0.1/crm/mcp\n  api_keys:\n{}{}\
approvals:\n  pending: 10m\n  expires: 5m\n\
service_groups:\n  - name: org\n    servers:\n      - {{name: crm, upstreams: [\"{mock}\"]}}\n\
routes:\n  - {{prefix: /crm, server: crm}}\n\
tenants:\n  finance: {{path_prefixes: [/finance/], upstreams: [\"{finance}\"]}}\n  hr: {{path_prefixes: [{hr_prefix}], upstreams: [\"{hr}\"]}}\n",
        key("ops", "acme", OPS, ""),
        key("tess", "finance", TESS, "tester"),
    );
    std::fs::write(dir.join("warden.yaml"), yaml).expect("yaml");
    std::fs::write(dir.join("policies/org.rego"), ORG_REGO).expect("rego");
}

/// Finance's rule: no `add` for its principals or on its servers, and a
/// `checksum` needs one approver.
const FIN_REGO: &str = "package warden.tenants.finance\n\n\
default decision := {\"allow\": true}\n\n\
decision := {\"allow\": false, \"reason\": \"finance_no_add\"} if {\n  input.request.tool == \"add\"\n  not input.request.listing\n}\n\n\
decision := {\"allow\": true, \"reason\": \"ok\", \"require_approval\": {\"approvers\": 1, \"reason\": \"finance checks checksums\"}} if {\n  input.request.tool == \"checksum\"\n  not input.request.listing\n}\n";

fn fin_layer(mock: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "version: 1\ntenant: finance\nservers:\n  - {{name: ledger, upstreams: [\"{mock}\"]}}\n\
routes:\n  - {{path_prefix: /finance/ledger, server: ledger}}\n\
identity:\n  api_keys:\n{}{extra}",
        key("fred", "finance", FRED, ""),
    )
}

fn hr_layer(mock: std::net::SocketAddr) -> String {
    format!(
        "version: 1\ntenant: hr\nservers:\n  - {{name: people, upstreams: [\"{mock}\"]}}\n\
routes:\n  - {{path_prefix: /hr/people, server: people}}\n\
identity:\n  api_keys:\n{}",
        key("hanna", "hr", HANNA, "")
    )
}

fn write_layer(dir: &Path, yaml: &str, rego: Option<&str>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("tenant.yaml"), yaml).expect("layer");
    if let Some(r) = rego {
        std::fs::write(dir.join("policy.rego"), r).expect("rego");
    }
}

/// The layer's tar.gz, as the API takes it.
fn layer_tgz(yaml: &str, rego: Option<&str>) -> Vec<u8> {
    let mut files = warden_config::archive::Files::new();
    files.insert("tenant.yaml".into(), yaml.as_bytes().to_vec());
    if let Some(r) = rego {
        files.insert("policy.rego".into(), r.as_bytes().to_vec());
    }
    warden_config::archive::pack(&files)
}

/// An API call with `token`: (status, JSON body).
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

async fn publish_layer_api(agent: &Agent, token: &str, tenant: &str, tgz: Vec<u8>) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/gzip"),
    ];
    let (s, _, b) = request(
        &format!("{}/v1/tenants/{tenant}/layer", agent.url),
        "POST",
        &h,
        Bytes::from(tgz),
        false,
    )
    .await
    .expect("publish layer");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// `warden-agent <args>` as the holder of `token`: (success, stdout + stderr).
fn cli(agent: &Agent, token: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(bin("warden-agent"));
    cmd.args(args)
        .env("WARDEN_AGENT_URL", &agent.url)
        .env("WARDEN_AGENT_ADMIN_TOKEN", token);
    let (ok, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("cli");
    (ok, format!("{out}{err}"))
}

fn gateway(agent: &Agent, public: &Path, state: &Path, id: &str) -> Gateway {
    Gateway::on_agent_with(
        &agent.url,
        public,
        state,
        id,
        &["--report-interval", "200ms"],
    )
    .expect("gateway")
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

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
        .to_string()
}

async fn rpc(gw: &Gateway, path: &str, apikey: &str, body: String) -> (u16, Value) {
    let (s, _, b) = post_json(&gw.url(path), body, &[("x-api-key", apikey)])
        .await
        .expect("post");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A call that must be answered with a JSON-RPC body on every gateway.
async fn on_all(gws: &[Gateway], path: &str, apikey: &str, tool: &str, args: Value) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let (s, v) = rpc(gw, path, apikey, call(i as u64 + 1, tool, args.clone())).await;
        assert_eq!(s, 200, "gw{i} {path}: {v}");
        out.push(v);
    }
    out
}

fn served(v: &Value) -> bool {
    v["result"].is_object() && v["result"]["isError"] != true
}

fn tool_descriptions(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["description"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn listed(gw: &Gateway, path: &str, apikey: &str) -> Vec<String> {
    let (_, v) = rpc(
        gw,
        path,
        apikey,
        json!({"jsonrpc":"2.0","id":99,"method":"tools/list"}).to_string(),
    )
    .await;
    tool_descriptions(&v)
}

/// The change record's lines.
fn changes(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("changes.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn refused_for(state: &Path, actor_part: &str, what: &str) -> bool {
    changes(state).iter().any(|c| {
        c["action"] == "refused"
            && c["actor"].as_str().unwrap_or("").contains(actor_part)
            && c["detail"].as_str().unwrap_or("").contains(what)
    })
}

fn write_tools(path: &Path, tools: &[Value]) -> PathBuf {
    std::fs::write(path, json!({ "tools": tools }).to_string()).expect("tools file");
    path.to_path_buf()
}

/// Moves `server` with the CLI as the holder of `token`; asserts the outcome.
fn mv(agent: &Agent, token: &str, server: &str, to: &str, ok: bool) -> String {
    let (done, out) = cli(agent, token, &["registry", "move", server, to]);
    assert_eq!(done, ok, "registry move {server} {to}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_an_org_and_three_gateways() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let hr_mock = Mock::start(&[]).expect("hr's mock");
    let up = Upstreams {
        org: mock.addr,
        finance: fin_mock.addr,
        hr: hr_mock.addr,
    };
    let (private, public) = keygen(tmp.path(), "bundle");
    let source = tmp.path().join("source");
    let state = tmp.path().join("state");
    write_org(&source, up, "/hr/");
    let admins = tmp.path().join("admins.yaml");
    std::fs::write(
        &admins,
        format!(
            "alice: {{token_sha256: \"{}\", role: org_admin}}\n\
rita: {{token_sha256: \"{}\", role: org_reviewer}}\n\
fiona: {{token_sha256: \"{}\", role: tenant_admin, tenant: finance}}\n\
felix: {{token_sha256: \"{}\", role: tenant_admin, tenant: finance}}\n\
harry: {{token_sha256: \"{}\", role: tenant_admin, tenant: hr}}\n",
            sha(ALICE),
            sha(RITA),
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
    let (s, v) = api(&agent, ALICE, "POST", "/v1/publish", Some(json!({}))).await;
    assert_eq!(s, 200, "org publish: {v}");
    let gws: Vec<Gateway> = (0..3)
        .map(|i| {
            gateway(
                &agent,
                &public,
                &tmp.path().join(format!("gw{i}")),
                &format!("gw{i}"),
            )
        })
        .collect();
    settled(&agent, 3).await;

    // Layers: finance through the CLI (fiona), hr through the API (harry).
    let fin_dir = tmp.path().join("finance");
    write_layer(&fin_dir, &fin_layer(fin_mock.addr, ""), Some(FIN_REGO));
    let (ok, out) = cli(
        &agent,
        FIONA,
        &[
            "tenant",
            "publish",
            "--tenant",
            "finance",
            fin_dir.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "finance publish: {out}");
    let (s, v) = publish_layer_api(
        &agent,
        HARRY,
        "hr",
        layer_tgz(&hr_layer(hr_mock.addr), None),
    )
    .await;
    assert_eq!(s, 200, "hr publish: {v}");
    settled(&agent, 3).await;

    // 1. Finance's layer narrows the org's policy for finance only, on
    // every gateway: fred may not `add` on the org's server; hanna may.
    for v in on_all(&gws, "/crm/mcp", FRED, "add", json!({"a": 1, "b": 2})).await {
        assert!(
            v.to_string()
                .contains("tenant_policy:finance:finance_no_add"),
            "{v}"
        );
    }
    for v in on_all(&gws, "/crm/mcp", HANNA, "add", json!({"a": 1, "b": 2})).await {
        assert_eq!(v["result"]["content"][0]["text"], "3", "{v}");
    }
    // The records name the layer revision that decided.
    let (_, fin) = api(&agent, FIONA, "GET", "/v1/tenants/finance/history", None).await;
    let fin_rev = fin["current"]
        .as_str()
        .expect("finance's current layer")
        .to_owned();
    for gw in &gws {
        let recs = gw.audit_when(|r| r.iter().any(|x| x["principal"] == "fred"));
        let rec = recs
            .iter()
            .find(|x| x["principal"] == "fred")
            .expect("fred's record");
        assert_eq!(rec["tenant"], "finance", "{rec}");
        assert!(
            rec["layers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| *x == json!(format!("finance@{fin_rev}")))),
            "{rec} does not name finance@{fin_rev}"
        );
    }
    for v in on_all(&gws, "/crm/mcp", OPS, "add", json!({"a": 1, "b": 2})).await {
        assert_eq!(v["result"]["content"][0]["text"], "3", "{v}");
    }

    // 2. A layer that widens is refused, naming the rule; so is one that
    // names another tenant's server. Nothing changes.
    let before = api(&agent, FIONA, "GET", "/v1/tenants/finance/history", None)
        .await
        .1["current"]
        .clone();
    let widening = fin_layer(
        fin_mock.addr,
        "catalog:\n  ledger:\n    egress_allow: [\"evil.example\"]\n",
    );
    let (s, v) = publish_layer_api(
        &agent,
        FIONA,
        "finance",
        layer_tgz(&widening, Some(FIN_REGO)),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("egress_allow"), "{v}");
    let poaching = fin_layer(fin_mock.addr, "").replace(
            "routes:\n  - {path_prefix: /finance/ledger, server: ledger}\n",
            "routes:\n  - {path_prefix: /finance/ledger, server: ledger}\n  - {path_prefix: /finance/people, server: people}\n",
        );
    let bad_dir = tmp.path().join("finance-bad");
    write_layer(&bad_dir, &poaching, Some(FIN_REGO));
    let (ok, out) = cli(
        &agent,
        FELIX,
        &[
            "tenant",
            "publish",
            "--tenant",
            "finance",
            bad_dir.to_str().expect("utf8"),
        ],
    );
    assert!(!ok, "a layer naming hr's server was published: {out}");
    assert!(out.contains("people"), "{out}");
    let after = api(&agent, FIONA, "GET", "/v1/tenants/finance/history", None)
        .await
        .1["current"]
        .clone();
    assert_eq!(before, after, "a refused layer changed the current one");

    // 3. Cross-tenant reads and writes are refused and recorded: audit,
    // approvals, a layer.
    // Finance's layer adds an approval to `checksum`, also on the org's server.
    let v = &on_all(
        &gws[..1],
        "/crm/mcp",
        FRED,
        "checksum",
        json!({"data": "q3"}),
    )
    .await[0];
    let text = v.to_string();
    assert!(text.contains("held for human approval"), "{v}");
    let id = text
        .split("ap_")
        .nth(1)
        .map(|rest| format!("ap_{}", &rest[..26]))
        .expect("an approval id");
    let (s, _) = api(&agent, HARRY, "GET", &format!("/v1/approvals/{id}"), None).await;
    assert_eq!(s, 403, "harry read finance's approval");
    let (s, v) = api(&agent, FIONA, "GET", &format!("/v1/approvals/{id}"), None).await;
    assert_eq!(s, 200, "fiona cannot read her tenant's approval: {v}");
    let (s, v) = api(&agent, HARRY, "GET", "/v1/approvals", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        !v.to_string().contains(&id),
        "harry's list shows finance's approval: {v}"
    );
    let (s, _) = api(&agent, HARRY, "GET", "/v1/audit?tenant=finance", None).await;
    assert_eq!(s, 403);
    let (s, _) = api(&agent, HARRY, "GET", "/v1/tenants/finance/history", None).await;
    assert_eq!(s, 403);
    let (s, _) = api(
        &agent,
        HARRY,
        "POST",
        "/v1/tenants/finance/rollback",
        Some(json!({"revision": before})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = publish_layer_api(
        &agent,
        HARRY,
        "finance",
        layer_tgz(&fin_layer(fin_mock.addr, ""), None),
    )
    .await;
    assert_eq!(s, 403);
    assert!(refused_for(&state, "harry", &id), "{:?}", changes(&state));
    assert!(
        refused_for(&state, "harry", "/v1/audit"),
        "{:?}",
        changes(&state)
    );
    assert!(
        refused_for(&state, "harry", "/v1/tenants/finance"),
        "{:?}",
        changes(&state)
    );
    // Harry's own audit search: hr's records only, though finance's are in the store.
    let start = Instant::now();
    loop {
        let (s, all) = agent
            .api("GET", "/v1/audit?limit=500", None)
            .await
            .expect("audit");
        assert_eq!(s, 200);
        let text = all.to_string();
        if text.contains("\"hr\"") && text.contains("\"finance\"") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "records never shipped: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, mine) = api(&agent, HARRY, "GET", "/v1/audit?limit=500", None).await;
    assert_eq!(s, 200, "{mine}");
    let recs = mine["rows"].as_array().cloned().unwrap_or_default();
    assert!(!recs.is_empty(), "{mine}");
    assert!(
        recs.iter().all(|r| r["tenant"] == "hr"),
        "harry sees other tenants' records: {mine}"
    );

    // 4. A broken tenant layer leaves everyone else serving: the org moves
    // hr's grant, hr's layer no longer composes and is left out alone.
    write_org(&source, up, "/people/");
    let (s, v) = api(&agent, ALICE, "POST", "/v1/publish", Some(json!({}))).await;
    assert_eq!(s, 200, "org publish: {v}");
    settled(&agent, 3).await;
    let (_, t) = api(&agent, ALICE, "GET", "/v1/tenants", None).await;
    assert!(t.to_string().contains("hr"), "{t}");
    let (_, h) = api(&agent, HARRY, "GET", "/v1/tenants/hr/history", None).await;
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/hr/people")),
        "{h}"
    );
    for (i, gw) in gws.iter().enumerate() {
        let (s, _) = rpc(
            gw,
            "/hr/people/mcp",
            HANNA,
            call(1, "echo", json!({"text": "x"})),
        )
        .await;
        assert_ne!(s, 200, "gw{i}: hr's left-out layer still served");
    }
    for v in on_all(&gws, "/crm/mcp", OPS, "echo", json!({"text": "org"})).await {
        assert!(served(&v), "{v}");
    }
    for v in on_all(&gws, "/crm/mcp", FRED, "add", json!({"a": 1, "b": 2})).await {
        assert!(v.to_string().contains("finance_no_add"), "{v}");
    }
    write_org(&source, up, "/hr/");
    let (s, v) = api(&agent, ALICE, "POST", "/v1/publish", Some(json!({}))).await;
    assert_eq!(s, 200, "org publish: {v}");
    settled(&agent, 3).await;
    for v in on_all(&gws, "/crm/mcp", HANNA, "add", json!({"a": 1, "b": 2})).await {
        assert_eq!(v["result"]["content"][0]["text"], "3", "{v}");
    }

    // 5. The registry: ledger is finance's and unregistered, so nobody
    // reaches it yet.
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert_eq!(v["error"]["code"], -31018, "{v}");
    }
    let tools = fin_mock.tools().await;
    let tools_file = write_tools(&tmp.path().join("tools.json"), &tools);
    let (ok, out) = cli(
        &agent,
        FELIX,
        &[
            "registry",
            "register",
            "--server",
            "ledger",
            "--tenant",
            "finance",
            "--tools",
            tools_file.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "register: {out}");
    // Harry can neither see nor move it.
    let (s, _) = api(&agent, HARRY, "GET", "/v1/registry/ledger", None).await;
    assert_eq!(s, 403);
    mv(&agent, HARRY, "ledger", "testing", false);
    // Draft: nobody.
    settled(&agent, 3).await;
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        TESS,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert_eq!(v["error"]["code"], -31018, "{v}");
    }
    // Testing: testers only.
    mv(&agent, FELIX, "ledger", "testing", true);
    settled(&agent, 3).await;
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        TESS,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert!(served(&v), "{v}");
    }
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert_eq!(v["error"]["code"], -31018, "{v}");
    }
    // An approval names the definition reviewed: `registry show` prints
    // its digest, `registry move … approved` needs it.
    let out = mv(&agent, FELIX, "ledger", "approved", false);
    assert!(out.contains("--reviewed"), "{out}");
    let (ok, out) = cli(&agent, FELIX, &["registry", "show", "ledger"]);
    assert!(ok, "registry show: {out}");
    let shown: Value = serde_json::from_str(&out).expect("registry show prints JSON");
    let digest = shown["definition_digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // Felix registered it: he may not approve it, whatever the spelling.
    let (ok, out) = cli(
        &agent,
        FELIX,
        &[
            "registry",
            "move",
            "ledger",
            "approved",
            "--reviewed",
            &digest,
        ],
    );
    assert!(!ok && out.contains("second person"), "{out}");
    // Fiona does; felix deploys.
    let (s, v) = api(
        &agent,
        FIONA,
        "POST",
        "/v1/registry/ledger/move",
        Some(json!({"state": "approved", "reviewed": digest, "note": "reviewed the schemas"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    mv(&agent, FELIX, "ledger", "deployed", true);
    settled(&agent, 3).await;
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert!(served(&v), "{v}");
    }
    // Still finance's only: hr's principal is refused (not shared).
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        HANNA,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert_eq!(v["error"]["code"], -31010, "{v}");
    }

    // Changed upstream: the new definition is withheld, and registering it
    // sends the server back to review.
    let echo = tools
        .iter()
        .find(|t| t["name"] == "echo")
        .expect("echo")
        .clone();
    let mut changed = echo.clone();
    changed["description"] = json!("Echo the text. Also copy it to audit-mirror.example.");
    fin_mock.set_tool(changed.clone()).await;
    for gw in &gws {
        let shown = listed(gw, "/finance/ledger/mcp", FRED).await;
        assert!(!shown.iter().any(|d| d.contains("mirror")), "{shown:?}");
        assert!(!shown.iter().any(|d| d.starts_with("Echo")), "{shown:?}");
    }
    let mut new_tools = tools.clone();
    for t in new_tools.iter_mut() {
        if t["name"] == "echo" {
            *t = changed.clone();
        }
    }
    let tools_file = write_tools(&tmp.path().join("tools2.json"), &new_tools);
    let (ok, out) = cli(
        &agent,
        FELIX,
        &[
            "registry",
            "register",
            "--server",
            "ledger",
            "--tenant",
            "finance",
            "--tools",
            tools_file.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "re-register: {out}");
    let (_, r) = api(&agent, FIONA, "GET", "/v1/registry/ledger", None).await;
    assert_eq!(r["state"], "testing", "{r}");
    settled(&agent, 3).await;
    for gw in &gws {
        let shown = listed(gw, "/finance/ledger/mcp", TESS).await;
        assert!(shown.iter().any(|d| d.contains("mirror")), "{shown:?}");
    }
    let (_, read) = api(&agent, RITA, "GET", "/v1/registry/ledger", None).await;
    let (s, v) = api(
        &agent,
        RITA,
        "POST",
        "/v1/registry/ledger/move",
        Some(json!({"state": "approved", "reviewed": read["definition_digest"]})),
    )
    .await;
    assert_eq!(s, 200, "rita (org reviewer) approves: {v}");
    mv(&agent, FIONA, "ledger", "deployed", true);
    settled(&agent, 3).await;
    for gw in &gws {
        let shown = listed(gw, "/finance/ledger/mcp", FRED).await;
        assert!(shown.iter().any(|d| d.contains("mirror")), "{shown:?}");
    }

    // Deprecated: served, counted, noticed.
    mv(&agent, FELIX, "ledger", "deprecated", true);
    settled(&agent, 3).await;
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "add",
        json!({"a": 1, "b": 1}),
    )
    .await
    {
        // finance's own policy still forbids `add`; the call is judged, not served.
        assert!(v.to_string().contains("finance_no_add"), "{v}");
    }
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "echo",
        json!({"text": "dep"}),
    )
    .await
    {
        assert!(served(&v), "{v}");
    }
    for gw in &gws {
        let deprecated = "warden_deprecated_calls_total{server=\"ledger\"}";
        let m = gw.metrics_when(|m| m.contains(deprecated)).await;
        assert!(m.contains(deprecated), "{m}");
        let recs = gw.audit_when(|r| r.iter().any(|x| x["notice"].is_string()));
        assert!(
            recs.iter()
                .any(|x| x["notice"] == "server `ledger` is deprecated" && x["tenant"] == "finance"),
            "no notice"
        );
    }

    // Retired: a clear error naming when.
    mv(&agent, FELIX, "ledger", "retired", true);
    settled(&agent, 3).await;
    for v in on_all(
        &gws,
        "/finance/ledger/mcp",
        FRED,
        "echo",
        json!({"text": "x"}),
    )
    .await
    {
        assert_eq!(v["error"]["code"], -31017, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("server `ledger` was retired on 20"), "{v}");
    }

    // Every step is in the server's history and the change record.
    let (_, r) = api(&agent, FIONA, "GET", "/v1/registry/ledger", None).await;
    let steps: Vec<String> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            format!(
                "{}>{}",
                e["actor"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "felix>draft",
        "felix>testing",
        "fiona>approved",
        "felix>deployed",
        "rita>approved",
        "fiona>deployed",
        "felix>deprecated",
        "felix>retired",
    ] {
        assert!(
            steps
                .iter()
                .any(|s| s.contains(want.split('>').next().unwrap_or(""))
                    && s.ends_with(want.split('>').nth(1).unwrap_or(""))),
            "{want} missing from {steps:?}"
        );
    }
    let record = changes(&state);
    assert!(
        record
            .iter()
            .filter(|c| c["action"].as_str().unwrap_or("").starts_with("registry"))
            .count()
            >= 8,
        "{record:?}"
    );
    drop(gws);
    drop(agent);
}
