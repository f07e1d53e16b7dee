//! A tenant's rules never vanish for its principals, and a tenant is only its own name.
//!
//! Over real sockets (warden-mock behind every server, a control agent for
//! the layers' composition):
//!
//! - a tenant layer the org breaks (its grant removed, narrowed or moved)
//!   is left out of what is served, and its tenant's principals are then
//!   refused until it composes again — never judged by the org's rules
//!   alone; the org's publish warns; a fresh gateway fetching the bundle
//!   refuses them too;
//! - a tenant claim enters a tenant's unshared server only as the tenant's
//!   own ASCII name in any case: spaces around, other spaces, look-alikes
//!   and Unicode case forms are other tenants;
//! - a principal whose name holds invisible characters (zero-width,
//!   soft hyphen, bidi controls, controls, tags) is refused at admission
//!   with a clear reason, and a bundle defining one is refused at load.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_config::access::hash_api_key;
use warden_tests::{
    bin, header, keygen, openssl, post_json, request, run_with_timeout, Agent, Gateway, Mock,
    ADMIN_TOKEN,
};

const AKIA: &str = "AKIAIOSFODNN7EXAMPLE";
const OPS: &str = "k_org_ops_0001"; // the org's own (tenant acme)
const FINA: &str = "k_org_fina_0002"; // an org key of finance's tenant
const FINCAPS: &str = "k_org_fincaps_0003"; // an org key whose tenant is `FINANCE`
const FRED: &str = "k_fin_fred_0004"; // finance's layer's key
const HANNA: &str = "k_hr_hanna_0005"; // hr's layer's key
const SPACE_AFTER: &str = "k_org_space_after_0006"; // tenant `finance `
const SPACE_BEFORE: &str = "k_org_space_before_0007"; // tenant ` finance`

fn key(id: &str, tenant: &str, secret: &str) -> String {
    let hash = hash_api_key(secret, format!("salt-{id}").as_bytes());
    format!("    - {{id: {id}, tenant: '{tenant}', hash: \"{hash}\"}}\n")
}

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
        .to_string()
}

async fn rpc(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
    let (s, _, b) = post_json(&gw.url(path), body, headers).await.expect("post");
    (
        s,
        serde_json::from_slice(&b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
    )
}

async fn as_key(gw: &Gateway, path: &str, k: &str, tool: &str, args: Value) -> (u16, Value) {
    rpc(gw, path, &[("x-api-key", k)], call(1, tool, args)).await
}

fn served(v: &Value) -> bool {
    v["result"].is_object() && v["result"]["isError"] != true
}

/// An Ed25519 key pair made with openssl: its JWKS and tokens it signs.
struct Issuer {
    dir: tempfile::TempDir,
}

const ISS: &str = "https://idp.example";
const AUD: &str = "http://127.0.0.1/crm/mcp";

impl Issuer {
    fn new() -> Issuer {
        let dir = tempfile::tempdir().expect("tmp");
        openssl(
            dir.path(),
            &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"],
        );
        openssl(
            dir.path(),
            &[
                "pkey", "-in", "ed.pem", "-pubout", "-outform", "DER", "-out", "ed.der",
            ],
        );
        Issuer { dir }
    }

    fn jwks(&self) -> String {
        use base64::Engine;
        let der = std::fs::read(self.dir.path().join("ed.der")).expect("der");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed", "alg": "EdDSA"}]})
            .to_string()
    }

    /// A token for `sub` of `tenant` (a JSON value: a claim may be anything).
    fn token(&self, sub: &str, tenant: Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now + 300,
                            "nbf": now - 5, "tenant": tenant});
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("ed".into());
        let pem = std::fs::read(self.dir.path().join("ed.pem")).expect("pem");
        let key = EncodingKey::from_ed_pem(&pem).expect("ed key");
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &claims, &key).expect("sign")
        )
    }
}

/// The org (`crm`, JWTs of `Issuer`, keys of `finance ` and ` finance`)
/// and finance's layer with its unshared server `ledger`.
async fn member_gateway(up: std::net::SocketAddr, fin_mock: &Mock, jwks: &str) -> Gateway {
    let fin_up = fin_mock.addr;
    let tools: serde_json::Map<String, Value> = fin_mock
        .tools()
        .await
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                json!({"approved": warden_filters::guards::tools::fingerprint(t), "candidate": null}),
            )
        })
        .collect();
    let org = format!(
        "version: 1\nidentity:\n  resource: {AUD}\n  jwt:\n    issuer: {ISS}\n    jwks_file: jwks.json\n  api_keys:\n{}{}{}{}\
service_groups:\n  - name: org\n    servers:\n      - {{name: crm, upstreams: [\"{up}\"]}}\n\
routes:\n  - {{prefix: /crm, server: crm}}\n\
tenants:\n  finance: {{path_prefixes: [/finance/], upstreams: [\"{fin_up}\"]}}\n",
        key("ops", "acme", OPS),
        key("fin-caps", "FINANCE", FINCAPS),
        key("space-after", "finance ", SPACE_AFTER),
        key("space-before", " finance", SPACE_BEFORE),
    );
    let fin = format!(
        "version: 1\ntenant: finance\nservers:\n  - {{name: ledger, upstreams: [\"{fin_up}\"]}}\n\
routes:\n  - {{path_prefix: /finance/ledger, server: ledger}}\n"
    );
    let registry = json!({"version": 1, "servers": {"ledger": {"tenant": "finance",
        "state": "deployed", "since": "2026-11-01T00:00:00Z", "shared": false, "tools": tools}}})
    .to_string();
    let files: Vec<(&str, &[u8])> = vec![
        ("jwks.json", jwks.as_bytes()),
        ("tenants/finance/tenant.yaml", fin.as_bytes()),
        ("registry.json", registry.as_bytes()),
    ];
    Gateway::start_with(&org, false, &files, &[], None).expect("gateway")
}

/// Item 5: only `finance` in any ASCII case enters finance's unshared
/// server. API keys whose tenant has a space around, token claims with
/// spaces around or inside, other spaces, look-alikes and Unicode case
/// forms (dotless ı, dotted İ, the Kelvin sign, full-width letters, a
/// ligature) never do; invisible characters are refused at admission.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_claim_is_the_tenant_only_as_its_own_name() {
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let idp = Issuer::new();
    let gw = member_gateway(mock.addr, &fin_mock, &idp.jwks()).await;
    let ledger = "/finance/ledger/mcp";
    let echo = || json!({"text": "hi"});

    // The tenant's own name, in any ASCII case: admitted.
    let (s, v) = as_key(&gw, ledger, FINCAPS, "echo", echo()).await;
    assert!(s == 200 && served(&v), "FINANCE key: {s} {v}");
    for t in ["finance", "Finance", "FINANCE", "fInAnCe"] {
        let auth = idp.token("fiona", json!(t));
        let (s, v) = rpc(
            &gw,
            ledger,
            &[("authorization", &auth)],
            call(2, "echo", echo()),
        )
        .await;
        assert!(s == 200 && served(&v), "{t:?}: {s} {v}");
    }
    let before = fin_mock.posts().await;

    // Keys of the org whose tenant is `finance ` or ` finance`.
    for (k, what) in [(SPACE_AFTER, "finance "), (SPACE_BEFORE, " finance")] {
        let (s, v) = as_key(&gw, ledger, k, "echo", echo()).await;
        assert!(
            !served(&v),
            "key of {what:?} reached finance's server: {s} {v}"
        );
        assert!(
            v.to_string().contains("belongs to tenant `finance`"),
            "{what:?}: {s} {v}"
        );
    }
    // Token claims that are not the name.
    for t in [
        " finance",
        "finance ",
        "  FINANCE  ",
        "finance\u{a0}",                                            // no-break space
        "\u{3000}finance",                                          // ideographic space
        "fin ance",                                                 // a space inside
        "f\u{131}nance",                                            // dotless ı
        "F\u{130}NANCE",                                            // dotted İ
        "\u{ff46}\u{ff49}\u{ff4e}\u{ff41}\u{ff4e}\u{ff43}\u{ff45}", // full-width
        "\u{fb01}nance",                                            // ﬁ ligature
        "financ\u{e9}",                                             // é
        "finance\u{301}",                                           // a combining accent
        "\u{1d41f}inance",                                          // mathematical bold f
        "\u{212a}finance",                                          // the Kelvin sign
        "finance\u{200b}",                                          // zero-width space
        "\u{feff}finance",                                          // BOM
        "finance\t",                                                // a tab
        "fin\u{ad}ance",                                            // soft hyphen
        "finance\u{202e}",                                          // bidi override
        "finance\u{e0041}",                                         // a tag character
        "finance\u{0}",                                             // NUL
        "",
    ] {
        let auth = idp.token("fiona", json!(t));
        let (s, v) = rpc(
            &gw,
            ledger,
            &[("authorization", &auth)],
            call(3, "echo", echo()),
        )
        .await;
        assert!(
            !served(&v),
            "tenant claim {t:?} reached finance's server: {s} {v}"
        );
    }
    assert_eq!(
        fin_mock.posts().await,
        before,
        "nothing but finance's own name reached finance's server"
    );
}

/// Item 13: names that cannot be compared are refused at admission, with
/// a clear reason, whatever the method; a bundle whose API key (or
/// certificate rule) names such a principal is refused at load.
#[tokio::test(flavor = "multi_thread")]
async fn a_principal_whose_name_cannot_be_compared_is_refused_at_admission() {
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let idp = Issuer::new();
    let gw = member_gateway(mock.addr, &fin_mock, &idp.jwks()).await;
    let before = mock.posts().await;
    let plain = idp.token("mallory", json!("acme"));
    let (s, v) = rpc(
        &gw,
        "/crm/mcp",
        &[("authorization", &plain)],
        call(1, "echo", json!({"text": "x"})),
    )
    .await;
    assert!(s == 200 && served(&v), "{s} {v}");
    let base = mock.posts().await;
    assert!(base > before);

    let subjects = [
        "mal\u{200d}lory", // zero-width joiner
        "vic\u{ad}tor",    // soft hyphen
        "\u{200b}alice",   // zero-width space
        "bob\u{200e}",     // left-to-right mark
        "eve\u{202e}",     // right-to-left override
        "dan\u{2066}x",    // bidi isolate
        "\u{feff}carol",   // BOM
        "erin\u{7}",       // a control
        "frank\u{85}",     // a C1 control
        "gus\u{e0041}",    // a tag character
        "hal\u{fe0f}",     // a variation selector
        "ivy\u{2028}",     // a line separator
        "jo\u{fffe}",      // a noncharacter
        "",                // empty
        "   ",             // blank
        "\u{301}\u{302}",  // marks alone: nothing to compare
    ];
    for sub in subjects {
        let auth = idp.token(sub, json!("acme"));
        let (s, h, b) = post_json(
            &gw.url("/crm/mcp"),
            call(2, "echo", json!({"text": "x"})),
            &[("authorization", &auth)],
        )
        .await
        .expect("post");
        let body = String::from_utf8_lossy(&b);
        assert_eq!(s, 401, "sub {sub:?}: {body}");
        let www = header(&h, "www-authenticate").unwrap_or("");
        assert!(
            www.contains("token_subject_not_a_name"),
            "sub {sub:?}: {www}"
        );
        assert!(body.contains("token_subject_not_a_name"), "{body}");
    }
    for tenant in [
        json!("acme\u{200d}"),
        json!("ac\u{ad}me"),
        json!("acme\u{202e}"),
        json!("acme\u{0}"),
        json!(""),
        json!(["acme"]),
        json!(7),
    ] {
        let auth = idp.token("mallory", tenant.clone());
        let (s, h, b) = post_json(
            &gw.url("/crm/mcp"),
            call(3, "echo", json!({"text": "x"})),
            &[("authorization", &auth)],
        )
        .await
        .expect("post");
        assert_eq!(s, 401, "tenant {tenant}: {}", String::from_utf8_lossy(&b));
        let www = header(&h, "www-authenticate").unwrap_or("");
        assert!(
            www.contains("token_tenant_not_a_name"),
            "tenant {tenant}: {www}"
        );
    }
    // A GET stream is admitted the same way.
    let auth = idp.token("mal\u{200d}lory", json!("acme"));
    let (s, _, _) = request(
        &gw.url("/crm/mcp"),
        "GET",
        &[("accept", "text/event-stream"), ("authorization", &auth)],
        Bytes::new(),
        false,
    )
    .await
    .expect("get");
    assert_eq!(s, 401);
    assert_eq!(
        mock.posts().await,
        base,
        "nothing refused reached the server"
    );

    // At load: API keys and certificate rules naming such a principal.
    for (id, tenant) in [
        ("mal\\u200dlory", "acme"),
        ("vic\\u00adtor", "acme"),
        ("eve\\u202e", "acme"),
        ("ok", "ac\\u200bme"),
        ("ok", "acme\\u2028"),
        ("\\u0301", "acme"),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let hash = hash_api_key("k_whatever_1", b"salt-x");
        std::fs::write(
            dir.path().join("warden.yaml"),
            format!(
                "version: 1\nidentity:\n  resource: {AUD}\n  api_keys:\n    - {{id: \"{id}\", tenant: \"{tenant}\", hash: \"{hash}\"}}\n\
service_groups:\n  - name: org\n    servers:\n      - {{name: crm, upstreams: [\"{}\"]}}\nroutes:\n  - {{prefix: /crm, server: crm}}\n",
                mock.addr
            ),
        )
        .expect("yaml");
        let (ok, out, err) = run_with_timeout(
            Command::new(bin("warden")).arg("validate").arg(dir.path()),
            Duration::from_secs(30),
        )
        .expect("validate");
        assert!(!ok, "{id}/{tenant} loaded: {out}{err}");
        assert!(
            format!("{out}{err}").contains("identity.api_keys[0]"),
            "{id}/{tenant}: {out}{err}"
        );
    }
}

// ---- Item 4: a layer the org breaks ---------------------------------------

const FIN_REGO: &str = "package warden.tenants.finance\n\n\
default decision := {\"allow\": true}\n\n\
decision := {\"allow\": false, \"reason\": \"finance_no_add\"} if {\n  input.request.tool == \"add\"\n  not input.request.listing\n}\n";

fn fin_layer(fin_up: std::net::SocketAddr) -> String {
    format!(
        "version: 1\ntenant: finance\nservers:\n  - {{name: ledger, upstreams: [\"{fin_up}\"]}}\n\
routes:\n  - {{path_prefix: /finance/ledger, server: ledger}}\n\
identity:\n  api_keys:\n{}\
dlp:\n  rules:\n    - {{name: fin-no-aws, detectors: [aws_access_key_id], action: block, direction: request}}\n",
        key("fred", "finance", FRED),
    )
}

fn hr_layer() -> String {
    format!(
        "version: 1\ntenant: hr\nidentity:\n  api_keys:\n{}",
        key("hanna", "hr", HANNA)
    )
}

/// The org source; `finance` is finance's grant (`None`: not granted).
fn write_org(dir: &Path, up: std::net::SocketAddr, finance: Option<&str>) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let grant = finance
        .map(|g| format!("  finance: {g}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "version: 1\nidentity:\n  resource: {AUD}\n  api_keys:\n{}{}{}\
service_groups:\n  - name: org\n    servers:\n      - {{name: crm, upstreams: [\"{up}\"]}}\n\
routes:\n  - {{prefix: /crm, server: crm}}\n\
tenants:\n{grant}  hr: {{path_prefixes: [/hr/]}}\n",
        key("ops", "acme", OPS),
        key("fina", "finance", FINA),
        key("fin-caps", "FINANCE", FINCAPS),
    );
    std::fs::write(dir.join("warden.yaml"), yaml).expect("yaml");
    std::fs::write(
        dir.join("policies/org.rego"),
        "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n",
    )
    .expect("rego");
}

async fn publish_layer(
    agent: &Agent,
    tenant: &str,
    yaml: &str,
    rego: Option<&str>,
) -> (u16, Value) {
    let mut files = warden_config::archive::Files::new();
    files.insert("tenant.yaml".into(), yaml.as_bytes().to_vec());
    if let Some(r) = rego {
        files.insert("policy.rego".into(), r.as_bytes().to_vec());
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (s, _, b) = request(
        &format!("{}/v1/tenants/{tenant}/layer", agent.url),
        "POST",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/gzip"),
        ],
        Bytes::from(warden_config::archive::pack(&files)),
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

/// Finance's principals (an org key of tenant `finance`, one of
/// `FINANCE`) are judged by finance's rules: its Rego refuses `add`, its
/// DLP blocks an AWS key.
async fn finance_rules_apply(gw: &Gateway, label: &str) {
    for k in [FINA, FINCAPS] {
        let (s, v) = as_key(gw, "/crm/mcp", k, "add", json!({"a": 1, "b": 2})).await;
        assert!(
            v.to_string()
                .contains("tenant_policy:finance:finance_no_add"),
            "{label}: {s} {v}"
        );
        let (s, v) = as_key(gw, "/crm/mcp", k, "echo", json!({"text": AKIA})).await;
        assert!(
            !served(&v) && v.to_string().contains("fin-no-aws"),
            "{label}: {s} {v}"
        );
        let (s, v) = as_key(gw, "/crm/mcp", k, "echo", json!({"text": "hi"})).await;
        assert!(s == 200 && served(&v), "{label}: {s} {v}");
    }
}

/// Finance's layer is withheld: its principals get nothing (the org's
/// rules alone would serve `add` and the AWS key); everyone else is
/// served as before.
async fn finance_refused(gw: &Gateway, label: &str) {
    for k in [FINA, FINCAPS] {
        for (tool, args) in [
            ("add", json!({"a": 1, "b": 2})),
            ("echo", json!({"text": AKIA})),
            ("echo", json!({"text": "hi"})),
        ] {
            let (s, v) = as_key(gw, "/crm/mcp", k, tool, args).await;
            assert!(
                !served(&v),
                "{label}: {tool} served by the org's rules alone: {s} {v}"
            );
            assert_eq!(s, 403, "{label}: {v}");
            assert!(
                v.to_string().contains("tenant_layer_withheld"),
                "{label}: {v}"
            );
        }
    }
    let (s, v) = as_key(gw, "/crm/mcp", HANNA, "add", json!({"a": 1, "b": 2})).await;
    assert!(
        s == 200 && v["result"]["content"][0]["text"] == "3",
        "{label}: {v}"
    );
    let (s, v) = as_key(gw, "/crm/mcp", OPS, "echo", json!({"text": AKIA})).await;
    assert!(s == 200 && served(&v), "{label}: {v}");
}

/// Item 4: the org removes, narrows or moves finance's grant. Finance's
/// layer is left out (hr and the org keep serving), the org's publish
/// warns, and finance's principals are refused on every gateway (a fresh
/// one fetching the bundle too) until finance's layer composes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_layer_the_org_breaks_leaves_its_principals_refused_never_unruled() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mock = Mock::start(&[]).expect("mock");
    let fin_mock = Mock::start(&[]).expect("finance's mock");
    let other = Mock::start(&[]).expect("another upstream");
    let (private, public) = keygen(tmp.path(), "bundle");
    let source = tmp.path().join("source");
    let state = tmp.path().join("state");
    let grant = format!(
        "{{path_prefixes: [/finance/], upstreams: [\"{}\"]}}",
        fin_mock.addr
    );
    write_org(&source, mock.addr, Some(&grant));
    let agent = Agent::start_with(
        &source,
        &state,
        Some(&private),
        &["--watch-interval".as_ref(), "0".as_ref()],
    )
    .expect("agent");
    let (s, v) = agent
        .api("POST", "/v1/publish", Some(json!({})))
        .await
        .expect("publish");
    assert_eq!(s, 200, "{v}");
    let (s, v) = publish_layer(&agent, "finance", &fin_layer(fin_mock.addr), Some(FIN_REGO)).await;
    assert_eq!(s, 200, "finance: {v}");
    let (s, v) = publish_layer(&agent, "hr", &hr_layer(), None).await;
    assert_eq!(s, 200, "hr: {v}");
    let gw = gateway(&agent, &public, &tmp.path().join("gw0"), "gw0");
    settled(&agent, 1).await;
    finance_rules_apply(&gw, "composed").await;

    let broken = [
        ("grant removed", None),
        (
            "grant narrowed",
            Some(format!(
                "{{path_prefixes: [/fin2/], upstreams: [\"{}\"]}}",
                fin_mock.addr
            )),
        ),
        (
            "grant moved to another upstream",
            Some(format!(
                "{{path_prefixes: [/finance/], upstreams: [\"{}\"]}}",
                other.addr
            )),
        ),
    ];
    let mut fresh = Vec::new();
    for (i, (what, g)) in broken.iter().enumerate() {
        write_org(&source, mock.addr, g.as_deref());
        let (s, v) = agent
            .api("POST", "/v1/publish", Some(json!({})))
            .await
            .expect("publish");
        assert_eq!(s, 200, "{what}: {v}");
        let warnings = v["warnings"].to_string();
        assert!(
            warnings.contains("finance") && warnings.contains("refused"),
            "{what}: the org's publish must warn that finance's layer is left out: {v}"
        );
        settled(&agent, 1 + fresh.len()).await;
        finance_refused(&gw, what).await;
        // A fresh gateway fetching the bundle refuses them too.
        let id = format!("fresh{i}");
        fresh.push(gateway(&agent, &public, &tmp.path().join(&id), &id));
        settled(&agent, 1 + fresh.len()).await;
        for f in &fresh {
            finance_refused(f, &format!("{what}, fresh gateway")).await;
        }
    }

    // The grant back: finance's layer composes again, its rules apply.
    write_org(&source, mock.addr, Some(&grant));
    let (s, v) = agent
        .api("POST", "/v1/publish", Some(json!({})))
        .await
        .expect("publish");
    assert_eq!(s, 200, "{v}");
    assert!(v["warnings"].as_array().is_none_or(|w| w.is_empty()), "{v}");
    settled(&agent, 1 + fresh.len()).await;
    finance_rules_apply(&gw, "composed again").await;
    for f in &fresh {
        finance_rules_apply(f, "composed again, fresh gateway").await;
    }
}
