//! Identity, policy and session binding through a real gateway, with the
//! example bundle's Rego policy and the demo API keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_tests::{example_bundle, header, openssl, post_json, Gateway, Mock};

const DEV: &str = "wk_demo_dev_7Qm2";
const AUDITOR: &str = "wk_demo_auditor_P4x9";
const OPS: &str = "wk_demo_ops_Z8r5";

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
        .to_string()
}

fn body_json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

/// The UTC hour now, and a bundle whose business hours include it or not.
fn hours_data(include_now: bool) -> Vec<u8> {
    let h = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 3600)
        % 24;
    let (start, end) = if include_now {
        (h, h + 1)
    } else {
        ((h + 1) % 24, (h + 1) % 24 + 1)
    };
    let all = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let base: Value = serde_json::from_slice(
        &std::fs::read(warden_tests::root().join("config/examples/sidecar/data.json"))
            .expect("data"),
    )
    .expect("json");
    let mut d = base;
    d["warden"]["business_hours"] =
        json!({"start": start, "end": end, "days": all, "risks": ["HIGH", "CRITICAL"]});
    // These tests are about RBAC, ABAC and time windows: no approvers
    // (held calls have their own test in conformance.rs).
    d["warden"]["approvals"]["kinds"] = json!([]);
    serde_json::to_vec(&d).expect("ser")
}

fn start_example(mock: &Mock, include_now: bool, edit: impl Fn(String) -> String) -> Gateway {
    let (yaml, mut files) = example_bundle(mock.addr, |y| {
        edit(y.replace("timezone: Europe/Berlin", "timezone: UTC"))
    });
    files.retain(|(n, _)| n != "data.json");
    files.push(("data.json".into(), hours_data(include_now)));
    files.push(("upstream.token".into(), b"upstream-s3cret\n".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    Gateway::start_with(&yaml, false, &refs, &[], None).expect("gateway")
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_and_the_resource_server_contract() {
    let mock = Mock::start(&[]).expect("mock");
    // The server gets Warden's own credential, read from a file the bundle names.
    let gw = start_example(&mock, true, |y| {
        y.replace(
            "        health_check:\n          interval: 2s",
            "        health_check:\n          interval: 2s\n        credentials: {file: upstream.token}",
        )
    });
    let url = gw.url("/mock/mcp");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    // No credential: 401 pointing at the protected-resource metadata.
    let (s, h, b) = post_json(&url, ping, &[]).await.expect("post");
    assert_eq!(s, 401, "{}", String::from_utf8_lossy(&b));
    let www = header(&h, "www-authenticate").expect("www-authenticate");
    assert!(www.starts_with("Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/mock/mcp\""), "{www}");
    assert!(
        !www.contains("error="),
        "no error code without a credential: {www}"
    );
    assert_eq!(body_json(&b)["error"]["code"], -31030);

    // The metadata document itself.
    let (s, _, b) = warden_tests::request(
        &gw.url("/.well-known/oauth-protected-resource/mock/mcp"),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("get");
    assert_eq!(s, 200);
    let meta = body_json(&b);
    assert_eq!(meta["resource"], "http://127.0.0.1:8080/mock/mcp");
    assert_eq!(meta["authorization_servers"][0], "https://auth.example.com");

    // A wrong key is an invalid token; so is a repeated credential header.
    for hs in [
        vec![("x-api-key", "wk_demo_dev_7Qm3")],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Basic Zm9vOmJhcg==")],
    ] {
        let (s, h, _) = post_json(&url, ping, &hs).await.expect("post");
        assert_eq!(s, 401, "{hs:?}");
        assert!(header(&h, "www-authenticate")
            .expect("hdr")
            .contains("error=\"invalid_token\""));
    }

    // The right key, in its header or as a bearer token.
    for hs in [
        vec![("x-api-key", DEV)],
        vec![
            ("authorization", &*format!("Bearer {DEV}")),
            ("x-warden-justification", "INC-1 token AKIAIOSFODNN7EXAMPLE"),
        ],
    ] {
        let (s, _, b) = post_json(&url, ping, &hs).await.expect("post");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    // Neither the key nor the client's bearer token reaches the upstream;
    // Warden's own credential does.
    let last = &mock.stats().await.expect("stats")["last"];
    assert_eq!(last["authorization"], "Bearer upstream-s3cret", "{last}");
    assert!(last["x_api_key"].is_null(), "{last}");
    assert!(
        last["justification"].is_null(),
        "the justification stays with the gateway: {last}"
    );
    let recs = gw.audit_when(|r| r.iter().filter(|x| x["principal"] == "agent-dev").count() >= 2);
    let rec = recs
        .iter()
        .find(|x| x["principal"] == "agent-dev")
        .expect("record");
    assert_eq!(rec["tenant"], "acme");
    assert_eq!(rec["auth"], "api_key");
}

#[tokio::test(flavor = "multi_thread")]
async fn example_policy_decides_rbac_abac_justification_and_hides_tools() {
    let mock = Mock::start(&["--tools-page-size", "3"]).expect("mock");
    let gw = start_example(&mock, true, |y| y);
    let url = gw.url("/mock/mcp");
    let before = mock.posts().await;

    // RBAC: the auditor's role grants no group — echo is hidden, so a call
    // looks like an unknown tool, and no page of tools/list shows any tool.
    let (s, _, b) = post_json(
        &url,
        call(1, "echo", json!({"text":"hi"})),
        &[("x-api-key", AUDITOR)],
    )
    .await
    .expect("post");
    assert_eq!(s, 200);
    let v = body_json(&b);
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["message"], "Unknown tool: echo");
    let mut pages = 0;
    for key in [AUDITOR, DEV] {
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let req = json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":params});
            let (s, _, b) = post_json(&url, req.to_string(), &[("x-api-key", key)])
                .await
                .expect("list");
            assert_eq!(s, 200);
            let v = body_json(&b);
            for t in v["result"]["tools"].as_array().expect("tools") {
                seen.push(t["name"].as_str().expect("name").to_owned());
            }
            pages += 1;
            match v["result"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        if key == AUDITOR {
            assert!(seen.is_empty(), "auditor sees {seen:?}");
        } else {
            // The developer sees every tool, CRITICAL ones included (listing needs no justification).
            assert!(
                seen.contains(&"echo".to_owned()) && seen.contains(&"purge".to_owned()),
                "{seen:?}"
            );
            assert_eq!(seen.len(), 12, "{seen:?}");
        }
    }
    assert_eq!(
        pages, 8,
        "the cursor is kept on every filtered page (4 pages each)"
    );

    // ABAC: a region argument must match the principal's region; the denial
    // is a tool error the model can read.
    let (_, _, b) = post_json(
        &url,
        call(3, "deploy", json!({"service":"web","region":"us"})),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    let v = body_json(&b);
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"],
        "Denied by policy: region_mismatch"
    );
    let (_, _, b) = post_json(
        &url,
        call(4, "deploy", json!({"service":"web","region":"eu"})),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert!(body_json(&b)["result"]["content"][0]["text"]
        .as_str()
        .expect("text")
        .starts_with("deploy done"));
    // The same call by a principal of another region is refused.
    let (_, _, b) = post_json(
        &url,
        call(5, "deploy", json!({"service":"web","region":"eu"})),
        &[("x-api-key", OPS)],
    )
    .await
    .expect("post");
    assert_eq!(
        body_json(&b)["result"]["content"][0]["text"],
        "Denied by policy: region_mismatch"
    );
    // A `\u0065u` escape is the same region: the policy judges what the JSON means.
    let escaped = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"deploy","arguments":{"service":"web","region":"\u0065u"}}}"#;
    let (_, _, b) = post_json(&url, escaped, &[("x-api-key", DEV)])
        .await
        .expect("post");
    assert!(body_json(&b)["result"]["content"][0]["text"]
        .as_str()
        .expect("t")
        .starts_with("deploy done"));
    let (_, _, b) = post_json(
        &url,
        escaped.replace("\\u0065u", "\\u0075s"),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert_eq!(
        body_json(&b)["result"]["content"][0]["text"],
        "Denied by policy: region_mismatch"
    );

    // CRITICAL needs a justification.
    let (_, _, b) = post_json(
        &url,
        call(7, "purge", json!({"table":"t"})),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert_eq!(
        body_json(&b)["result"]["content"][0]["text"],
        "Denied by policy: justification_required"
    );
    let (_, _, b) = post_json(
        &url,
        call(8, "purge", json!({"table":"t"})),
        &[
            ("x-api-key", DEV),
            ("x-warden-justification", "INC-4711 approved by bob"),
        ],
    )
    .await
    .expect("post");
    assert!(body_json(&b)["result"]["content"][0]["text"]
        .as_str()
        .expect("t")
        .starts_with("purge done"));

    // Exactly the allowed calls reached the server: 8 list pages + 3 tool calls.
    assert_eq!(mock.posts().await - before, 8 + 3);
    let recs = gw.audit_when(|r| r.iter().any(|x| x["reason"] == "justification_required"));
    let denied = recs
        .iter()
        .find(|x| x["reason"] == "justification_required")
        .expect("denial record");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["decided_by"], "policy");
    assert_eq!(denied["risk"], "CRITICAL");
    assert!(denied["revision"]
        .as_str()
        .is_some_and(|r| r.starts_with("example-sidecar-1+")));
    assert!(denied["args_digest"]
        .as_str()
        .expect("digest")
        .starts_with("sha256:"));
    // Raw arguments are off by default; a CRITICAL call is logged in full
    // (`audit.log_io` defaults to HIGH and CRITICAL), DLP-redacted.
    assert!(denied["arguments"].is_object(), "{denied}");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_windows_and_kill_switch() {
    let mock = Mock::start(&[]).expect("mock");
    let deploy = call(1, "deploy", json!({"service":"web","region":"eu"}));
    let closed = start_example(&mock, false, |y| y);
    let (_, _, b) = post_json(
        &closed.url("/mock/mcp"),
        deploy.clone(),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert_eq!(
        body_json(&b)["result"]["content"][0]["text"],
        "Denied by policy: outside_business_hours"
    );
    // LOW risk tools are not bound to business hours.
    let (_, _, b) = post_json(
        &closed.url("/mock/mcp"),
        call(2, "echo", json!({"text":"x"})),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert_eq!(body_json(&b)["result"]["content"][0]["text"], "x");
    drop(closed);

    let paused = start_example(&mock, true, |y| {
        y.replace("  tools: []", "  tools: [\"mock/deploy\"]")
            .replace("  principals: []", "  principals: [alice-ops]")
    });
    let url = paused.url("/mock/mcp");
    let (_, _, b) = post_json(&url, deploy.clone(), &[("x-api-key", DEV)])
        .await
        .expect("post");
    let v = body_json(&b);
    assert_eq!(v["error"]["code"], -31011, "{v}");
    assert_eq!(v["error"]["data"]["scope"], "tool");
    let (_, _, b) = post_json(
        &url,
        call(3, "echo", json!({"text":"x"})),
        &[("x-api-key", OPS)],
    )
    .await
    .expect("post");
    assert_eq!(body_json(&b)["error"]["data"]["scope"], "principal");
    let (_, _, b) = post_json(
        &url,
        call(4, "echo", json!({"text":"ok"})),
        &[("x-api-key", DEV)],
    )
    .await
    .expect("post");
    assert_eq!(body_json(&b)["result"]["content"][0]["text"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_bound_to_their_principal() {
    let mock = Mock::start(&["--require-session"]).expect("mock");
    let gw = start_example(&mock, true, |y| y);
    let url = gw.url("/mock/mcp");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (s, h, _) = post_json(&url, init, &[("x-api-key", DEV)])
        .await
        .expect("init");
    assert_eq!(s, 200);
    let sid = header(&h, "mcp-session-id").expect("session id").to_owned();
    let echo = call(2, "echo", json!({"text":"mine"}));
    let (s, _, b) = post_json(
        &url,
        echo.clone(),
        &[("x-api-key", DEV), ("mcp-session-id", &sid)],
    )
    .await
    .expect("own");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let before = mock.posts().await;
    // Another principal presenting the id is refused before the upstream.
    let (s, _, b) = post_json(
        &url,
        echo.clone(),
        &[("x-api-key", OPS), ("mcp-session-id", &sid)],
    )
    .await
    .expect("hijack");
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    assert_eq!(body_json(&b)["error"]["code"], -31031);
    let (s, _, _) = warden_tests::request(
        &url,
        "DELETE",
        &[("x-api-key", OPS), ("mcp-session-id", &sid)],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("delete");
    assert_eq!(s, 403);
    assert_eq!(mock.posts().await, before);
    // The owner goes on.
    let (s, _, _) = post_json(&url, echo, &[("x-api-key", DEV), ("mcp-session-id", &sid)])
        .await
        .expect("own");
    assert_eq!(s, 200);
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pem",
            ],
        );
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec.pem",
            ],
        );
        openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]);
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rogue.pem",
            ],
        );
        openssl(
            d,
            &[
                "pkey",
                "-in",
                "ed.pem",
                "-pubout",
                "-outform",
                "DER",
                "-out",
                "ed.pub.der",
            ],
        );
        Keys { dir }
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).expect("key")
    }

    fn encoding(&self, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.pem("rsa.pem")).expect("rsa"),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.pem("ec.pem")).expect("ec"),
            _ => EncodingKey::from_ed_pem(&self.pem("ed.pem")).expect("ed"),
        }
    }

    fn jwks(&self) -> String {
        let mut keys = Vec::new();
        for (alg, kid) in [(Algorithm::RS256, "rsa"), (Algorithm::ES256, "ec")] {
            let mut jwk = Jwk::from_encoding_key(&self.encoding(alg), alg).expect("jwk");
            jwk.common.key_id = Some(kid.into());
            keys.push(serde_json::to_value(jwk).expect("ser"));
        }
        let der = self.pem("ed.pub.der");
        use base64::Engine;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        keys.push(json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":"ed","alg":"EdDSA"}));
        let set: JwkSet = serde_json::from_value(json!({"keys": keys})).expect("jwks");
        serde_json::to_string(&set).expect("ser")
    }

    fn token(&self, alg: Algorithm, kid: &str, claims: Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        let key = if kid == "rogue" {
            EncodingKey::from_rsa_pem(&self.pem("rogue.pem")).expect("rogue")
        } else {
            self.encoding(alg)
        };
        let mut h2 = h.clone();
        if kid == "rogue" {
            h2.kid = Some("rsa".into());
        }
        jsonwebtoken::encode(&h2, &claims, &key).expect("sign")
    }
}

fn claims(aud: &str, exp_offset: i64, scope: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    json!({"iss":"https://auth.example.com","sub":"user-42","aud":aud,"exp":now + exp_offset,"nbf":now - 5,
           "tenant":"acme","roles":["developer"],"region":"eu","scope":scope})
}

/// JWKS served over HTTP for the `jwks_url` test: answers every request with `body`.
fn serve_jwks(
    body: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}", body.len(), body);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (addr, stop)
}

/// Step-up authorization (2025-11-25 and 2026-07-28 authorization, scope
/// challenge): a tool whose catalog entry lists scopes is answered 403
/// `insufficient_scope` naming them, with the request id, until the token
/// carries them; the call then goes through. Nothing reaches the server before.
#[tokio::test(flavor = "multi_thread")]
async fn tools_can_require_a_step_up_scope() {
    let mock = Mock::start(&[]).expect("mock");
    let keys = Keys::new();
    let aud = "http://127.0.0.1:8080/mock/mcp";
    let jwt = "  required_scopes: [\"mcp:tools\"]\n  jwt:\n    issuer: https://auth.example.com\n    jwks_file: jwks.json\n    attribute_claims: [region]\n    allowed_clients: [\"https://app.example.com/\", \"cli-registered\"]\n    scope_implies: {\"tools:all\": [\"tools:echo\"]}\n  api_keys:";
    let (yaml, mut files) = example_bundle(mock.addr, |y| {
        y.replace(
            "  scopes_supported: [\"mcp:tools\"]",
            "  scopes_supported: [\"mcp:tools\", \"offline_access\"]",
        )
        .replacen("  api_keys:", jwt, 1)
        .replace(
            "      echo: {risk: LOW}",
            "      echo: {risk: LOW, scopes: [\"tools:echo\"]}",
        )
    });
    files.push(("jwks.json".into(), keys.jwks().into_bytes()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let gw = Gateway::start_with(&yaml, false, &refs, &[], None).expect("gateway");
    let url = gw.url("/mock/mcp");
    let token_for = |scope: &str, client: Option<(&str, &str)>| {
        let mut c = claims(aud, 300, scope);
        if let Some((k, v)) = client {
            c[k] = json!(v);
        }
        format!("Bearer {}", keys.token(Algorithm::ES256, "ec", c))
    };
    let app = Some(("client_id", "https://app.example.com/oauth/client.json"));
    let bearer = |scope: &str| token_for(scope, app);
    let before = mock.stats().await.expect("stats")["posts"].clone();
    let (s, h, b) = post_json(
        &url,
        call(7, "echo", json!({"text":"hi"})),
        &[("authorization", &bearer("mcp:tools"))],
    )
    .await
    .expect("post");
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    let www = header(&h, "www-authenticate").expect("www-authenticate");
    assert!(
        www.starts_with("Bearer error=\"insufficient_scope\""),
        "{www}"
    );
    assert!(www.contains("scope=\"mcp:tools tools:echo\""), "{www}");
    assert!(www.contains("resource_metadata=\""), "{www}");
    let v = body_json(&b);
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(v["error"]["data"]["scopes"], json!(["tools:echo"]), "{v}");
    assert_eq!(
        mock.stats().await.expect("stats")["posts"],
        before,
        "nothing forwarded"
    );
    // Another tool needs no step-up; with the scope, echo goes through.
    let (s, _, b) = post_json(
        &url,
        call(8, "add", json!({"a":1,"b":2})),
        &[("authorization", &bearer("mcp:tools"))],
    )
    .await
    .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = post_json(
        &url,
        call(9, "echo", json!({"text":"hi"})),
        &[("authorization", &bearer("mcp:tools tools:echo"))],
    )
    .await
    .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(
        body_json(&b)["result"]["content"][0]["text"] == "hi",
        "{}",
        String::from_utf8_lossy(&b)
    );
    let audit = gw.audit_when(|a| a.iter().any(|r| r["outcome"] == "insufficient_scope"));
    assert!(audit
        .iter()
        .any(|r| r["outcome"] == "insufficient_scope" && r["tool"] == "echo"));

    // The bundle's scope hierarchy: a broader scope implies the tool's.
    let (s, _, b) = post_json(
        &url,
        call(10, "echo", json!({"text":"hi"})),
        &[("authorization", &bearer("mcp:tools tools:all"))],
    )
    .await
    .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    // Clients: a Client ID Metadata Document URL under an accepted origin, or
    // a registered id (`azp`), is accepted; anything else is an invalid token.
    for (client, ok) in [
        (Some(("azp", "cli-registered")), true),
        (
            Some(("client_id", "https://evil.example.com/client.json")),
            false,
        ),
        (
            Some(("client_id", "https://app.example.com.evil.com/c.json")),
            false,
        ),
        (Some(("client_id", "https://app.example.com/")), false),
        (None, false),
    ] {
        let (s, h, b) = post_json(
            &url,
            call(11, "add", json!({"a":1,"b":2})),
            &[("authorization", &token_for("mcp:tools", client))],
        )
        .await
        .expect("post");
        if ok {
            assert_eq!(s, 200, "{client:?}: {}", String::from_utf8_lossy(&b));
        } else {
            assert_eq!(s, 401, "{client:?}");
            assert!(
                header(&h, "www-authenticate")
                    .is_some_and(|w| w.contains("token_client_not_allowed")),
                "{client:?}"
            );
        }
    }

    // Protected-resource metadata and challenges never ask for offline_access.
    let (s, _, b) = warden_tests::request(
        &gw.url("/.well-known/oauth-protected-resource/mock/mcp"),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("get");
    assert_eq!(s, 200);
    let meta = body_json(&b);
    assert_eq!(meta["scopes_supported"], json!(["mcp:tools"]), "{meta}");
    let (s, h, _) = post_json(&url, call(12, "add", json!({})), &[])
        .await
        .expect("post");
    assert_eq!(s, 401);
    let www = header(&h, "www-authenticate").expect("www");
    assert!(
        www.contains("scope=\"mcp:tools\"") && !www.contains("offline_access"),
        "{www}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_bearer_tokens_from_jwks_file_and_url() {
    let mock = Mock::start(&[]).expect("mock");
    let keys = Keys::new();
    let jwks = keys.jwks();
    let (jwks_addr, stop) = serve_jwks(jwks.clone());
    let aud = "http://127.0.0.1:8080/mock/mcp";
    for source in [
        "jwks_file: jwks.json",
        &format!("jwks_url: http://{jwks_addr}/jwks"),
    ] {
        let jwt = format!(
            "  required_scopes: [\"mcp:tools\"]\n  jwt:\n    issuer: https://auth.example.com\n    {source}\n    attribute_claims: [region]\n  api_keys:"
        );
        let mock_addr = mock.addr;
        let (yaml, mut files) = example_bundle(mock_addr, |y| y.replacen("  api_keys:", &jwt, 1));
        files.push(("jwks.json".into(), jwks.clone().into_bytes()));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let gw = Gateway::start_with(&yaml, false, &refs, &[], None).expect("gateway");
        let url = gw.url("/mock/mcp");
        let echo = call(1, "echo", json!({"text":"jwt"}));
        let bearer = |t: &str| format!("Bearer {t}");
        for (alg, kid) in [
            (Algorithm::RS256, "rsa"),
            (Algorithm::ES256, "ec"),
            (Algorithm::EdDSA, "ed"),
        ] {
            let t = keys.token(alg, kid, claims(aud, 300, "mcp:tools"));
            // The URL source fetches in the background: allow it a moment at start.
            let mut tries = 0;
            let (s, _, b) = loop {
                let r = post_json(&url, echo.clone(), &[("authorization", &bearer(&t))])
                    .await
                    .expect("post");
                tries += 1;
                if r.0 == 200 || tries > 50 {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(
                s,
                200,
                "{alg:?} via {source}: {}",
                String::from_utf8_lossy(&b)
            );
            assert_eq!(body_json(&b)["result"]["content"][0]["text"], "jwt");
        }
        let recs = gw.audit_when(|r| r.iter().any(|x| x["principal"] == "user-42"));
        let rec = recs
            .iter()
            .find(|x| x["principal"] == "user-42")
            .expect("jwt principal");
        assert_eq!(
            (rec["auth"].as_str(), rec["tenant"].as_str()),
            (Some("jwt"), Some("acme"))
        );

        let cases = [
            (
                keys.token(Algorithm::RS256, "rsa", claims(aud, -600, "mcp:tools")),
                401,
                "token_expired",
            ),
            (
                keys.token(
                    Algorithm::RS256,
                    "rsa",
                    claims("https://other.example/mcp", 300, "mcp:tools"),
                ),
                401,
                "token_audience_mismatch",
            ),
            (
                keys.token(Algorithm::RS256, "rogue", claims(aud, 300, "mcp:tools")),
                401,
                "token_signature_invalid",
            ),
            (
                keys.token(Algorithm::RS256, "unknown", claims(aud, 300, "mcp:tools")),
                401,
                "token_key_unknown",
            ),
            (
                keys.token(Algorithm::RS256, "rsa", claims(aud, 300, "mcp:read")),
                403,
                "insufficient_scope",
            ),
        ];
        let before = mock.posts().await;
        for (t, status, why) in cases {
            let (s, h, b) = post_json(&url, echo.clone(), &[("authorization", &bearer(&t))])
                .await
                .expect("post");
            assert_eq!(s, status, "{why}: {}", String::from_utf8_lossy(&b));
            let www = header(&h, "www-authenticate").expect("www");
            if status == 403 {
                assert!(
                    www.contains("error=\"insufficient_scope\"")
                        && www.contains("scope=\"mcp:tools\""),
                    "{www}"
                );
            } else {
                assert!(
                    www.contains("error=\"invalid_token\"") && www.contains(why),
                    "{why}: {www}"
                );
            }
        }
        // An issuer mismatch, and a token whose header says HS256 (key confusion).
        let mut c = claims(aud, 300, "mcp:tools");
        c["iss"] = json!("https://evil.example");
        let t = keys.token(Algorithm::RS256, "rsa", c);
        let (s, _, _) = post_json(&url, echo.clone(), &[("authorization", &bearer(&t))])
            .await
            .expect("post");
        assert_eq!(s, 401);
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("rsa".into());
        let forged = jsonwebtoken::encode(
            &hs,
            &claims(aud, 300, "mcp:tools"),
            &EncodingKey::from_secret(&keys.pem("rsa.pem")),
        )
        .expect("hs");
        let (s, _, _) = post_json(&url, echo.clone(), &[("authorization", &bearer(&forged))])
            .await
            .expect("post");
        assert_eq!(s, 401);
        assert_eq!(
            mock.posts().await,
            before,
            "no refused token reached the server"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn mtls_client_certificates_map_to_principals() {
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=warden-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    warden_tests::self_signed(d);
    for (name, san) in [
        ("agent", "URI:spiffe://acme.example/agent/builder"),
        ("stranger", "URI:spiffe://other.example/x"),
    ] {
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(
            d.join(format!("{name}.ext")),
            format!("subjectAltName={san}\nextendedKeyUsage=clientAuth\n"),
        )
        .expect("ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
    let port = warden_tests::free_port();
    let mtls = format!(
        "listeners:\n  - name: tls\n    address: \"127.0.0.1:{port}\"\n    tls: {{cert: cert.pem, key: key.pem, client_ca: ca.pem}}\n\nadmin:"
    );
    let (yaml, mut files) = example_bundle(mock.addr, |y| {
        let y = y.replace(
            "listeners:\n  - name: main\n    address: 127.0.0.1:8080\n\nadmin:",
            &mtls,
        );
        y.replacen(
            "  api_keys:",
            "  mtls:\n    - {spiffe_id: \"spiffe://acme.example/agent/builder\", id: builder, tenant: acme, roles: [developer], attributes: {region: eu}}\n  api_keys:",
            1,
        )
    });
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        files.push((f.into(), std::fs::read(d.join(f)).expect("pem")));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let gw = Gateway::start_with(
        &yaml,
        false,
        &refs,
        &[],
        Some(format!("127.0.0.1:{port}").parse().expect("addr")),
    )
    .expect("gateway");
    let curl = |extra: &[&str]| {
        let mut c = std::process::Command::new("curl");
        c.current_dir(d).args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", "cert.pem"]).args(extra).args([
            "-H", "content-type: application/json", "-H", "accept: application/json, text/event-stream",
            "--data", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"mtls"}}}"#,
        ]).arg(format!("https://localhost:{port}/mock/mcp")).arg("--resolve").arg(format!("localhost:{port}:127.0.0.1"));
        let (_, out, err) =
            warden_tests::run_with_timeout(&mut c, Duration::from_secs(30)).expect("curl");
        (out, err)
    };
    let (out, err) = curl(&["--cert", "agent.pem", "--key", "agent.key"]);
    assert!(
        out.ends_with("\n200") && out.contains("\"text\":\"mtls\""),
        "{out} {err}"
    );
    // A certificate from the CA that no rule maps is refused; no certificate and no key too.
    let (out, _) = curl(&["--cert", "stranger.pem", "--key", "stranger.key"]);
    assert!(
        out.ends_with("\n401") && out.contains("client_certificate_unmapped"),
        "{out}"
    );
    let (out, err) = curl(&[]);
    assert!(out.ends_with("\n401"), "{out} {err}");
    // API keys still work on the same listener.
    let (out, _) = curl(&["-H", &format!("x-api-key: {DEV}")]);
    assert!(out.ends_with("\n200"), "{out}");
    let recs = gw.audit_when(|r| r.iter().any(|x| x["principal"] == "builder"));
    assert!(recs
        .iter()
        .any(|x| x["principal"] == "builder" && x["auth"] == "mtls"));
}

#[test]
fn policy_authors_work_offline_with_eval_and_test() {
    let bundle = warden_tests::root().join("config/examples/sidecar");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(warden_tests::bin("warden"))
            .args(args)
            .output()
            .expect("warden runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["policy", "test", "--bundle", bundle.to_str().expect("utf8")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("22 passed, 0 failed"), "{out}");
    // The sample inputs shipped beside the example bundle (the README tour
    // uses them): one allowed, one denied, whatever the hour.
    let inputs = warden_tests::root().join("config/examples/inputs");
    for (file, code_want, reason) in [
        ("deploy-denied.json", 3, "region_mismatch"),
        ("deploy-allowed.json", 0, "granted"),
    ] {
        let f = inputs.join(file);
        let (code, out) = run(&[
            "policy",
            "eval",
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--input",
            f.to_str().expect("utf8"),
        ]);
        assert_eq!(code, Some(code_want), "{out}");
        let v: Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(v["reason"], reason);
    }
    // `--now` sets the clock fields as the gateway would, in the policy's
    // time zone: the allowed input on a Sunday afternoon (Berlin), and on a
    // Tuesday at 09:30 Berlin, which is 08:30 UTC.
    let allowed = inputs.join("deploy-allowed.json");
    for (now, code_want, reason) in [
        ("2026-11-22T15:00:00+01:00", 3, "outside_business_hours"),
        ("2026-11-24T08:30:00Z", 0, "granted"),
        ("2026-11-24T05:30:00+00:00", 3, "outside_business_hours"),
    ] {
        let (code, out) = run(&[
            "policy",
            "eval",
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--input",
            allowed.to_str().expect("utf8"),
            "--now",
            now,
        ]);
        assert_eq!(code, Some(code_want), "{now}: {out}");
        let v: Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(v["reason"], reason, "{now}");
    }
    let (code, _) = run(&[
        "policy",
        "eval",
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--input",
        allowed.to_str().expect("utf8"),
        "--now",
        "tuesday",
    ]);
    assert_eq!(code, Some(1), "a --now that is no instant is an error");
    // A failing Rego test fails the command.
    let broken = tempfile::tempdir().expect("tmp");
    for e in ["warden.yaml", "data.json", ".manifest"] {
        std::fs::copy(bundle.join(e), broken.path().join(e)).expect("copy");
    }
    std::fs::create_dir(broken.path().join("policies")).expect("mkdir");
    std::fs::copy(
        bundle.join("policies/authz.rego"),
        broken.path().join("policies/authz.rego"),
    )
    .expect("copy");
    std::fs::write(
        broken.path().join("policies/wrong_test.rego"),
        "package warden.wrong_test\nimport rego.v1\nimport data.warden.authz\ntest_auditor_may_echo if {\n  authz.decision.allow with input as {\"principal\": {\"roles\": [\"auditor\"], \"attributes\": {}}, \"server\": {\"group\": \"tools\"}, \"request\": {\"method\": \"tools/call\", \"risk\": \"LOW\", \"arguments\": {}, \"listing\": false}, \"context\": {}}\n}\n",
    )
    .expect("write");
    let (code, out) = run(&[
        "policy",
        "test",
        "--bundle",
        broken.path().to_str().expect("utf8"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL data.warden.wrong_test.test_auditor_may_echo"),
        "{out}"
    );
}

/// A candidate rule rides beside the enforced one (`policy.shadow`): it is
/// evaluated on every request and never enforced; each disagreement is in
/// the request's audit record (both decisions and reasons) and counted per
/// server and enforced outcome; agreement leaves no trace. A shadow rule
/// that is the enforced one, is no rule path, or has no Rego to run is
/// refused when the bundle loads.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_policy_is_judged_beside_the_enforced_one_and_never_enforced() {
    let mock = Mock::start(&[]).expect("mock");
    let enforced =
        "package warden.authz\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n";
    let candidate = "package candidate\nimport rego.v1\ndecision := {\"allow\": false, \"reason\": \"echo_retired\"} if {\n\tinput.request.tool == \"echo\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n";
    let files: [(&str, &[u8]); 2] = [
        ("policies/authz.rego", enforced.as_bytes()),
        ("policies/candidate.rego", candidate.as_bytes()),
    ];
    let yaml = warden_tests::mock_bundle(&[mock.addr], "policy: {shadow: data.candidate.decision}");
    let gw = Gateway::start_with(&yaml, true, &files, &[], None).expect("gateway");
    let url = gw.url("/mock/mcp");
    let (s, _, b) = post_json(&url, call(1, "echo", json!({"text": "still here"})), &[])
        .await
        .expect("call");
    let text = String::from_utf8_lossy(&b);
    assert_eq!(s, 200, "{text}");
    assert!(
        text.contains("still here"),
        "the shadow rule is never enforced: {text}"
    );
    let (s, _, _) = post_json(&url, call(2, "add", json!({"a": 1, "b": 2})), &[])
        .await
        .expect("call");
    assert_eq!(s, 200);
    let recs = gw.audit_when(|r| {
        r.iter()
            .filter(|x| x["direction"] == "request" && x["method"] == "tools/call")
            .count()
            >= 2
    });
    let echo = recs
        .iter()
        .find(|r| r["direction"] == "request" && r["tool"] == "echo")
        .expect("echo audited");
    assert_eq!(
        echo["shadow"],
        json!({"allow": false, "reason": "echo_retired", "enforced_allow": true, "enforced_reason": "ok"}),
        "{echo}"
    );
    assert_eq!(echo["outcome"], "forwarded", "{echo}");
    let add = recs
        .iter()
        .find(|r| r["direction"] == "request" && r["tool"] == "add")
        .expect("add audited");
    assert!(
        add.get("shadow").is_none(),
        "agreement leaves no trace: {add}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"warden_policy_shadow_disagreements_total{enforced="allowed",server="mock"} 1"#
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("shadow"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Refused at load: the enforced rule itself, no rule path, no Rego.
    for (extra, with_rego, says) in [
        (
            "policy: {shadow: data.warden.authz.decision}",
            true,
            "enforced entrypoint",
        ),
        (
            "policy: {shadow: candidate.decision}",
            true,
            "not a rule path",
        ),
        (
            "policy: {shadow: data.candidate.decision}",
            false,
            "policies/",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("warden.yaml"),
            warden_tests::mock_bundle(&[mock.addr], extra),
        )
        .expect("yaml");
        if with_rego {
            std::fs::create_dir_all(dir.path().join("policies")).expect("mkdir");
            for (name, body) in files {
                std::fs::write(dir.path().join(name), body).expect("rego");
            }
        }
        let (ok, out, err) = warden_tests::run_with_timeout(
            std::process::Command::new(warden_tests::bin("warden"))
                .arg("validate")
                .arg(dir.path()),
            Duration::from_secs(30),
        )
        .expect("validate");
        assert!(
            !ok && format!("{out}{err}").contains(says),
            "{extra}: {out}{err}"
        );
    }
}

/// `warden policy replay`: the trail judged again by the bundle that wrote
/// it changes nothing (the input is rebuilt as the gateway built it), and a
/// changed rule reports exactly the calls it flips.
#[tokio::test(flavor = "multi_thread")]
async fn policy_replay_reports_exactly_the_calls_a_changed_rule_flips() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = start_example(&mock, true, |y| {
        y.replace(
            "audit:\n  path: \"-\"",
            "audit:\n  path: \"-\"\n  include_arguments: true",
        )
    });
    let url = gw.url("/mock/mcp");
    let calls: [(&str, &str, Value); 6] = [
        (DEV, "echo", json!({"text": "hi"})),
        (DEV, "deploy", json!({"service": "web", "region": "eu"})),
        (DEV, "deploy", json!({"service": "web", "region": "us"})),
        (AUDITOR, "echo", json!({"text": "hi"})),
        (OPS, "echo", json!({"text": "hi"})),
        (DEV, "purge", json!({"table": "users"})),
    ];
    for (i, (key, tool, args)) in calls.iter().enumerate() {
        let (s, _, _) = post_json(
            &url,
            call(i as u64 + 1, tool, args.clone()),
            &[("x-api-key", key)],
        )
        .await
        .expect("call");
        assert_eq!(s, 200);
    }
    let list = json!({"jsonrpc":"2.0","id":9,"method":"tools/list"}).to_string();
    post_json(&url, list, &[("x-api-key", DEV)])
        .await
        .expect("list");
    let recs = gw.audit_when(|r| {
        r.iter()
            .filter(|x| x["direction"] == "request" && x["method"].is_string())
            .count()
            >= 7
    });
    let denied_by_policy = |tool: &str, reason: &str| {
        recs.iter().any(|r| {
            r["direction"] == "request"
                && r["tool"] == tool
                && r["decided_by"] == "policy"
                && r["reason"] == reason
        })
    };
    assert!(denied_by_policy("deploy", "region_mismatch"), "{recs:?}");
    assert!(
        denied_by_policy("purge", "justification_required"),
        "{recs:?}"
    );
    let dev = recs
        .iter()
        .find(|r| r["direction"] == "request" && r["principal"] == "agent-dev")
        .expect("dev");
    assert_eq!(
        dev["principal_detail"],
        json!({"roles": ["developer"], "kind": "agent", "attributes": {"region": "eu"}}),
        "{dev}"
    );

    let audit = gw.dir.path().join("audit.jsonl");
    let replay = |bundle: &std::path::Path, json: bool| {
        let mut cmd = std::process::Command::new(warden_tests::bin("warden"));
        cmd.args(["policy", "replay", "--bundle"])
            .arg(bundle)
            .arg("--audit")
            .arg(&audit);
        if json {
            cmd.arg("--json");
        }
        let (ok, out, err) =
            warden_tests::run_with_timeout(&mut cmd, Duration::from_secs(60)).expect("replay");
        assert!(ok, "{out}{err}");
        out
    };
    let same: Value = serde_json::from_str(&replay(gw.dir.path(), true)).expect("json");
    assert_eq!(same["replayed"], 7, "{same}");
    for k in ["newly_denied", "newly_allowed", "reason_changed"] {
        assert_eq!(same[k], json!([]), "the bundle that judged them: {same}");
    }

    // The candidate retires echo and lets anyone deploy to us.
    let cand = tempfile::tempdir().expect("tmp");
    for entry in walk(gw.dir.path()) {
        let rel = entry.strip_prefix(gw.dir.path()).expect("rel");
        if rel.starts_with("audit.jsonl") {
            continue;
        }
        let to = cand.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, &to).expect("copy");
    }
    let rego = cand.path().join("policies/authz.rego");
    let text = std::fs::read_to_string(&rego).expect("rego");
    let first = "tool_decision := {\"allow\": false, \"reason\": \"rbac_group_not_granted\"} if {";
    assert!(text.contains(first));
    let text = text.replacen(
        first,
        "tool_decision := {\"allow\": false, \"reason\": \"echo_retired\"} if {\n\tinput.request.tool == \"echo\"\n} else := {\"allow\": false, \"reason\": \"rbac_group_not_granted\"} if {",
        1,
    ) + "\nregion_ok if input.request.arguments.region == \"us\"\n";
    std::fs::write(&rego, text).expect("write");
    let r: Value = serde_json::from_str(&replay(cand.path(), true)).expect("json");
    let who = |k: &str| {
        let mut v: Vec<String> = r[k]
            .as_array()
            .expect(k)
            .iter()
            .map(|x| {
                format!(
                    "{} {} {}",
                    x["principal"].as_str().unwrap_or("?"),
                    x["target"].as_str().unwrap_or("?"),
                    x["after"]["reason"].as_str().unwrap_or("?")
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        who("newly_denied"),
        [
            "acme/agent-dev echo echo_retired",
            "acme/alice-ops echo echo_retired"
        ],
        "{r}"
    );
    assert_eq!(
        who("newly_allowed"),
        ["acme/agent-dev deploy allowed"],
        "{r}"
    );
    assert_eq!(
        who("reason_changed"),
        ["acme/agent-auditor echo echo_retired"],
        "{r}"
    );
    assert_eq!(r["unchanged"], 3, "deploy eu, purge, tools/list: {r}");
    let text = replay(cand.path(), false);
    assert!(
        text.contains("2 newly denied, 1 newly allowed")
            && text.contains("by tool       mock/echo 2"),
        "{text}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
