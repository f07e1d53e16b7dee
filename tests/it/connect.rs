//! Each person's own account behind the agent, through the whole fleet:
//! a real SaaS authorization server (`oidc-provider`, the fixture
//! `tests/peers/oidc_idp.mjs` with rotating refresh tokens), a Python SDK
//! server that checks every bearer token it gets at that server's
//! introspection endpoint and says whose account a call used, the
//! organisation's identity provider (a second `oidc_idp.mjs`) through
//! which people open their consent links, the agent keeping the tokens in
//! its vault, two gateways, the Python SDK client of two principals, and
//! a real browser (Chromium) for the consent pages.
//!
//! What it shows: the first call is answered with a URL-mode elicitation
//! (an error naming the URL, for a client without elicitation); after
//! consent, each person's calls carry their own token on both gateways and
//! never the other's; a reply that holds the token never reaches the
//! model; the token is refreshed once across both gateways; a revocation
//! asks for consent again on both within seconds; a link replayed by
//! another principal, a forged `state` and a tampered callback are
//! refused; the vault's file holds no token in clear; a master-key
//! rotation keeps every connection working; the audit names each use by
//! reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use warden_tests::postgres::PgServer;
use warden_tests::{free_port, root, Agent, Gateway, Proc};

mod browser;
use browser::{click, spawn, text_of, wait_port, Driver};

const ALICE_KEY: &str = "wk_connect_alice_key_01";
const BOB_KEY: &str = "wk_connect_bob_key_0002";
const CONSOLE_SECRET: &str = "console-client-secret-0001";
const CONNECT_SECRET: &str = "connect-client-secret-0002";
const SERVER_SECRET: &str = "saas-server-secret-000003";
/// The SaaS's access tokens live this long.
const ACCESS_TTL: u64 = 12;
/// The agent refreshes a token this close to its end.
const REFRESH_BEFORE: u64 = 6;

fn node() -> PathBuf {
    let n = root().join("tests/peers/node_modules/.bin/node");
    if n.exists() {
        n
    } else {
        "node".into()
    }
}

fn python() -> PathBuf {
    let p = root().join("tests/peers/.venv/bin/python");
    assert!(
        p.exists(),
        "Python peers missing: run scripts/setup.sh (creates tests/peers/.venv with mcp==2.3.0)"
    );
    p
}

/// An `oidc_idp.mjs` on `port` with `cfg` (its port added).
fn idp(dir: &Path, name: &str, port: u16, mut cfg: Value) -> Proc {
    cfg["port"] = json!(port);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, cfg.to_string()).expect("idp config");
    let mut p = spawn(
        name,
        Command::new(node())
            .arg(root().join("tests/peers/oidc_idp.mjs"))
            .arg(&path)
            .current_dir(root().join("tests/peers")),
    );
    wait_port(
        format!("127.0.0.1:{port}")
            .parse::<SocketAddr>()
            .expect("addr"),
        &mut p,
    );
    p
}

fn accounts(prefix: &str) -> Value {
    json!({
        "alice": {"password": format!("{prefix}-alice"), "claims": {"preferred_username": "alice"}},
        "bob": {"password": format!("{prefix}-bob"), "claims": {"preferred_username": "bob"}},
    })
}

/// Runs the client of `key` against `url`, calling `tool`.
fn call(url: &str, key: &str, tool: &str, elicit: bool) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/peers/py_connect_client.py"))
        .arg(url)
        .arg(tool)
        .env("WARDEN_API_KEY", key)
        .env("ELICIT", if elicit { "1" } else { "0" })
        .current_dir(root().join("tests/peers"))
        .output()
        .expect("python client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "client output: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Whose account `whoami` says a call used.
fn whose(v: &Value) -> String {
    let t = v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {v}"));
    let inner: Value = serde_json::from_str(t).unwrap_or_else(|_| panic!("{t}"));
    inner["sub"].as_str().unwrap_or_default().to_owned()
}

async fn stats(issuer: &str) -> Value {
    let (_, _, b) = warden_tests::request(
        &format!("{issuer}/test/stats"),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("stats");
    serde_json::from_slice(&b).expect("stats json")
}

/// Types `who`'s password into the provider's form open in the browser.
async fn sign_in(c: &Client, who: &str, password: &str) {
    let user = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#username"))
        .await
        .unwrap_or_else(|e| panic!("a provider's form: {e}"));
    user.send_keys(who).await.expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password")
        .send_keys(password)
        .await
        .expect("type");
    click(c, "#signin").await;
}

/// Follows a consent link as `who` in a browser that has signed in to
/// neither provider: the organisation's sign-in, the consent page, the
/// SaaS's sign-in, and the agent's "connected".
async fn consent(c: &Client, url: &str, who: &str) {
    c.goto(url).await.expect("consent link");
    sign_in(c, who, &format!("org-{who}")).await;
    let asks = text_of(c, "#asks").await;
    assert!(asks.contains(who) && asks.contains("saas"), "{asks}");
    assert_eq!(text_of(c, "#scopes").await, "files.read openid");
    click(c, "#allow").await;
    sign_in(c, who, &format!("saas-{who}")).await;
    let done = text_of(c, "#connected").await;
    assert!(done.contains("connected"), "{done}");
}

async fn fresh_browser(c: &Client) {
    c.delete_all_cookies().await.expect("cookies");
}

fn write_keys(path: &Path, text: &str) {
    std::fs::write(path, text).expect("keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("mode");
    }
}

struct Fleet {
    /// One agent on files, or two on one PostgreSQL database.
    agents: Vec<Agent>,
    /// Gateway 0 prefers the first agent, gateway 1 the last.
    gws: [Gateway; 2],
    saas: String,
    pg: Option<PgServer>,
    dir: tempfile::TempDir,
    _peers: Vec<Proc>,
}

/// The peers, the agents (`ha`: two on PostgreSQL, else one on files) and
/// two gateways.
async fn fleet(ha: bool) -> Fleet {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (org_port, saas_port, mcp_port) = (free_port(), free_port(), free_port());
    let ports: Vec<u16> = (0..if ha { 2 } else { 1 }).map(|_| free_port()).collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let callbacks = |path: &str| {
        bases
            .iter()
            .map(|b| format!("{b}{path}"))
            .collect::<Vec<_>>()
    };
    let org = idp(
        d,
        "org-idp",
        org_port,
        json!({
        "clients": [{"client_id": "warden-console", "client_secret": CONSOLE_SECRET,
            "redirect_uris": callbacks("/console/oidc/callback")}],
        "accounts": accounts("org")}),
    );
    let saas = idp(
        d,
        "saas-idp",
        saas_port,
        json!({
        "extra_scopes": ["files.read"], "refresh": true,
        "ttl": {"access": ACCESS_TTL},
        "clients": [
            {"client_id": "warden-connect", "client_secret": CONNECT_SECRET,
             "redirect_uris": callbacks("/console/connect/callback")},
            {"client_id": "saas-server", "client_secret": SERVER_SECRET,
             "redirect_uris": ["http://127.0.0.1:9/unused"]}],
        "accounts": accounts("saas")}),
    );
    let org_url = format!("http://127.0.0.1:{org_port}");
    let saas_url = format!("http://127.0.0.1:{saas_port}");
    let mut server = spawn(
        "saas mcp server",
        Command::new(python())
            .arg(root().join("tests/peers/py_saas_server.py"))
            .arg(mcp_port.to_string())
            .arg(&saas_url)
            .arg("saas-server")
            .arg(SERVER_SECRET)
            .arg("files.read")
            .arg(d.join("seen-tokens"))
            .current_dir(root().join("tests/peers")),
    );
    wait_port(
        format!("127.0.0.1:{mcp_port}").parse().expect("addr"),
        &mut server,
    );

    // The bundle: the SaaS server needs each principal's own account.
    let key = |k: &str| warden_config::access::hash_api_key(k, &[7u8; 16]);
    let source = d.join("source");
    std::fs::create_dir_all(&source).expect("source");
    std::fs::write(
        source.join("warden.yaml"),
        format!(
            "version: 1\nidentity:\n  resource: http://127.0.0.1/saas/mcp\n  api_keys:\n\
\x20   - {{id: alice, tenant: acme, hash: \"{}\"}}\n\
\x20   - {{id: bob, tenant: acme, hash: \"{}\"}}\n\
service_groups:\n  - name: g\n    servers:\n      - name: saas\n        upstreams: [\"127.0.0.1:{mcp_port}\"]\n\
\x20       credentials: {{per_user: {{provider: saas, scopes: [openid, files.read]}}}}\n\
routes:\n  - {{prefix: /saas, server: saas}}\n",
            key(ALICE_KEY),
            key(BOB_KEY)
        ),
    )
    .expect("yaml");
    std::fs::write(d.join("console-secret"), CONSOLE_SECRET).expect("secret");
    std::fs::write(d.join("connect-secret"), CONNECT_SECRET).expect("secret");
    write_keys(
        &d.join("vault-keys"),
        "# the first key is the current one\nk1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    );
    let (private, public) = warden_tests::keygen(d, "k");
    let pg = ha.then(PgServer::start);
    let database = pg.as_ref().map(|pg| pg.database("vault_ha"));
    let agents: Vec<Agent> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let base = &bases[i];
            let oidc = d.join(format!("oidc-{i}.yaml"));
            std::fs::write(
                &oidc,
                format!(
                    "issuer: {org_url}\nclient_id: warden-console\nclient_secret_file: {}\n\
                     redirect_url: {base}/console/oidc/callback\nscopes: [openid, profile]\n\
                     roles:\n  - {{claim: groups, value: warden-admins, role: org_admin}}\n\
                     principal_claims: [sub]\n",
                    d.join("console-secret").display()
                ),
            )
            .expect("oidc");
            let connections = d.join(format!("connections-{i}.yaml"));
            std::fs::write(
                &connections,
                format!(
                    "providers:\n  saas:\n    authorization_endpoint: {saas_url}/auth\n\
                     \x20   token_endpoint: {saas_url}/token\n    revocation_endpoint: {saas_url}/token/revocation\n\
                     \x20   client_id: warden-connect\n    client_secret_file: {}\n\
                     \x20   redirect_url: {base}/console/connect/callback\n\
                     refresh_before: {REFRESH_BEFORE}s\nlink_lifetime: 5m\n",
                    d.join("connect-secret").display()
                ),
            )
            .expect("connections");
            let listen = format!("127.0.0.1:{port}");
            let keys = d.join("vault-keys");
            let state = d.join(format!("state-{i}"));
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "--oidc".as_ref(),
                oidc.as_os_str(),
                "--connections".as_ref(),
                connections.as_os_str(),
                "--vault-keys".as_ref(),
                keys.as_os_str(),
                "--listen".as_ref(),
                listen.as_ref(),
            ];
            if let Some(db) = &database {
                args.push(std::ffi::OsStr::new("--database"));
                args.push(std::ffi::OsStr::new(db.as_str()));
            }
            Agent::start_with(&source, &state, Some(&private), &args).expect("agent")
        })
        .collect();
    let urls: Vec<&str> = agents.iter().map(|a| a.url.as_str()).collect();
    let (first, last) = (
        urls.join(","),
        urls.iter().rev().copied().collect::<Vec<_>>().join(","),
    );
    let gws = [0, 1].map(|i| {
        let gw = Gateway::on_agent(
            if i == 0 { &first } else { &last },
            &public,
            &d.join(format!("gw{i}")),
            &format!("gw-{i}"),
        )
        .expect("gateway");
        gw.wait_ready().expect("ready");
        gw
    });
    Fleet {
        agents,
        gws,
        saas: saas_url,
        pg,
        dir,
        _peers: vec![org, saas, server],
    }
}

/// Waits until `check` holds of a call, or panics after `within`.
fn until(what: &str, within: Duration, mut check: impl FnMut() -> Option<Value>) -> Value {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_person_acts_with_their_own_account_after_consent() {
    let f = fleet(false).await;
    let url = |i: usize| f.gws[i].url("/saas/mcp");
    let driver = Driver::start();
    let c = driver.browser().await;

    // The first call: a URL-mode elicitation pointing at the agent.
    let first = call(&url(0), ALICE_KEY, "whoami", true);
    let link = first["consent"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no elicitation: {first}"))
        .to_owned();
    assert!(
        link.starts_with(&format!("{}/console/connect?link=", f.agents[0].url)),
        "{link}"
    );
    // A client without elicitation is told the URL in the error.
    let plain = call(&url(1), BOB_KEY, "whoami", false);
    let bob_link = plain["error"]["data"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no URL in the error: {plain}"))
        .to_owned();
    assert!(plain["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(&bob_link)));

    // Alice consents in the browser.
    consent(&c, &link, "alice").await;
    // Bob's link opened by Alice (her sign-in in this browser) is refused.
    c.goto(&bob_link).await.expect("bob's link");
    let refused = text_of(&c, "#refused").await;
    assert!(
        refused.contains("another principal") || refused.contains("who is not"),
        "{refused}"
    );

    // Alice's calls carry her own account, on both gateways.
    for i in [0, 1] {
        let v = call(&url(i), ALICE_KEY, "whoami", true);
        assert_eq!(whose(&v), "alice", "gateway {i}: {v}");
    }
    // Bob still has none; he consents in a browser of his own.
    assert!(call(&url(0), BOB_KEY, "whoami", true)["consent"]["url"].is_string());
    fresh_browser(&c).await;
    // His sign-in at the organisation ended with the cookies; the
    // provider's own session too (a new browser profile would be the same).
    consent(&c, &bob_link, "bob").await;
    for i in [0, 1] {
        assert_eq!(whose(&call(&url(i), BOB_KEY, "whoami", true)), "bob");
        assert_eq!(whose(&call(&url(i), ALICE_KEY, "whoami", true)), "alice");
    }

    // A reply holding the token never reaches the model.
    let leak = call(&url(0), ALICE_KEY, "leak", true);
    let shown = leak.to_string();
    assert!(!shown.contains("your token is"), "{shown}");
    assert!(shown.contains("withheld"), "{shown}");

    // The audit names each use by reference.
    let uses = f.gws[0].audit_when(|recs| {
        recs.iter().any(|r| {
            r["credential"]
                .as_str()
                .is_some_and(|c| c.starts_with("vault:"))
        })
    });
    assert!(
        uses.iter().any(|r| r["credential"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:"))),
        "no record names the connection used"
    );

    // The vault's file holds no token in clear: the tokens the SaaS server
    // saw are looked for in it, in the agent's change record and in the
    // gateways' audit trails and logs.
    assert_no_token_anywhere(&f);

    // Refreshed once across both gateways: both ask after the token came
    // within REFRESH_BEFORE of its end.
    let before = stats(&f.saas).await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL + 1)).await;
    let (u0, u1) = (url(0), url(1));
    let a = std::thread::spawn(move || call(&u0, ALICE_KEY, "whoami", true));
    let b = std::thread::spawn(move || call(&u1, ALICE_KEY, "whoami", true));
    let (a, b) = (a.join().expect("a"), b.join().expect("b"));
    assert_eq!(whose(&a), "alice", "{a}");
    assert_eq!(whose(&b), "alice", "{b}");
    let after = stats(&f.saas).await;
    assert_eq!(
        after["refreshes"].as_u64().unwrap_or(0) - before["refreshes"].as_u64().unwrap_or(0),
        1,
        "{before} → {after}"
    );
    assert_eq!(after["refresh_refused"], before["refresh_refused"]);

    // Alice revokes her connection in the console: both gateways ask for
    // consent again within seconds; Bob's stays.
    fresh_browser(&c).await;
    c.goto(&format!("{}/console/connections", f.agents[0].url))
        .await
        .expect("connections");
    sign_in(&c, "alice", "org-alice").await;
    let rows = text_of(&c, "tr.connection").await;
    assert!(rows.contains("saas"), "{rows}");
    click(&c, "button.revoke").await;
    assert!(text_of(&c, "#none").await.contains("No connections"));
    for i in [0, 1] {
        until("consent asked again", Duration::from_secs(10), || {
            let v = call(&url(i), ALICE_KEY, "whoami", true);
            v["consent"]["url"].is_string().then_some(v)
        });
    }
    assert_eq!(whose(&call(&url(1), BOB_KEY, "whoami", true)), "bob");
    assert!(stats(&f.saas).await["revocations"].as_u64().unwrap_or(0) >= 1);

    assert_no_token_anywhere(&f);
    drop(c);
    drop(driver);
}

/// No token the SaaS server accepted is in the agent's state (the vault's
/// file, the change record) or in a gateway's audit trail or log.
fn assert_no_token_anywhere(f: &Fleet) {
    let seen = std::fs::read_to_string(f.dir.path().join("seen-tokens")).expect("tokens seen");
    let tokens: Vec<&str> = seen.lines().filter(|l| !l.is_empty()).collect();
    assert!(!tokens.is_empty(), "the server saw no token");
    let mut places: Vec<(String, String)> = Vec::new();
    for i in 0..f.agents.len() {
        // On a database the agents keep nothing there.
        let Ok(dir) = std::fs::read_dir(f.dir.path().join(format!("state-{i}"))) else {
            assert!(f.pg.is_some(), "agent {i} has no state directory");
            continue;
        };
        for e in dir.flatten() {
            if e.path().is_file() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                places.push((
                    e.path().display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    match &f.pg {
        // Every byte the vault's tables hold, as text.
        Some(pg) => {
            // Each row as text, and its bytes read as text (a token kept
            // in clear in a bytea would show there, not in its hex).
            for (table, bytes) in [
                ("warden_vault_keys", "wrapped"),
                ("warden_vault_connections", "tokens"),
                ("warden_vault_secrets", "value"),
            ] {
                let rows = pg
                    .psql(
                        "vault_ha",
                        &format!("SELECT t::text, encode(t.{bytes}, 'escape') FROM {table} t"),
                    )
                    .expect("rows");
                places.push((table.to_owned(), rows));
            }
            let kept = pg
                .psql("vault_ha", "SELECT count(*) FROM warden_vault_connections")
                .expect("count");
            places.push(("connections kept".into(), kept));
        }
        None => assert!(
            places.iter().any(|(p, _)| p.ends_with("vault.json")),
            "the vault's file is where the connections are kept"
        ),
    }
    for (i, gw) in f.gws.iter().enumerate() {
        places.push((
            format!("gateway {i} audit"),
            serde_json::to_string(&gw.audit()).unwrap_or_default(),
        ));
        places.push((format!("gateway {i} log"), gw.log().join("\n")));
    }
    for t in &tokens {
        for (where_, text) in &places {
            assert!(!text.contains(t), "a token in clear in {where_}");
        }
    }
}

/// Reads `name=value` pairs of the browser's cookies as a `Cookie` header.
async fn cookies(c: &Client) -> String {
    c.get_all_cookies()
        .await
        .expect("cookies")
        .iter()
        .map(|k| format!("{}={}", k.name(), k.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn get(url: &str, cookie: &str) -> (u16, String) {
    let (s, _, b) = warden_tests::request(
        url,
        "GET",
        &[("cookie", cookie)],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("get");
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_agents_forged_consents_are_refused_refresh_runs_once_and_keys_rotate() {
    let f = fleet(true).await;
    let url = |i: usize| f.gws[i].url("/saas/mcp");
    let driver = Driver::start();
    let c = driver.browser().await;
    let first = call(&url(0), ALICE_KEY, "whoami", true);
    let link = first["consent"]["url"].as_str().expect("a link").to_owned();

    // A link changed by hand (another principal written into it) is no
    // link of this agent's.
    let forged = link.replacen("link=", "link=x", 1);
    c.goto(&forged).await.expect("forged link");
    assert!(text_of(&c, "#refused").await.contains("not valid"));

    // Alice opens her link, signs in, and is sent on to the SaaS: the
    // browser now holds the consent under way.
    c.goto(&link).await.expect("link");
    sign_in(&c, "alice", "org-alice").await;
    click(&c, "#allow").await;
    let held = cookies(&c).await;
    assert!(held.contains("__Host-warden_authorizing="), "{held}");
    let cb = format!("{}/console/connect/callback", f.agents[0].url);
    // A callback without the browser's consent, with a forged state, or
    // with a code the SaaS never issued: refused, nothing kept.
    let (s, body) = get(&format!("{cb}?code=x&state=y"), "").await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = get(&format!("{cb}?code=x&state=forged"), &held).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("state"), "{body}");
    // The real state (the cookie is MACed, not hidden: the browser may
    // read it) with a code the SaaS never issued: the SaaS refuses it.
    let state = {
        use base64::Engine;
        let v = held
            .split("; ")
            .find_map(|kv| kv.strip_prefix("__Host-warden_authorizing="))
            .expect("the cookie");
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.split('.').next().expect("body"))
            .expect("base64");
        serde_json::from_slice::<Value>(&body).expect("json")["state"]
            .as_str()
            .expect("state")
            .to_owned()
    };
    let (s, body) = get(&format!("{cb}?code=tampered&state={state}"), &held).await;
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("refused"), "{body}");
    let (_, agent_list) = f.agents[0]
        .api("GET", "/v1/vault/connections", None)
        .await
        .expect("list");
    assert_eq!(
        agent_list["connections"].as_array().map(Vec::len),
        Some(0),
        "{agent_list}"
    );
    sign_in(&c, "alice", "saas-alice").await;
    assert!(text_of(&c, "#connected").await.contains("connected"));
    assert_eq!(whose(&call(&url(0), ALICE_KEY, "whoami", true)), "alice");

    // A master-key rotation: the new key first, the old one still listed.
    write_keys(
        &f.dir.path().join("vault-keys"),
        "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\nk1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in [0, 1] {
        assert_eq!(whose(&call(&url(i), ALICE_KEY, "whoami", true)), "alice");
    }
    // Every data key wrapped again under the new key; the old one leaves
    // the file; the connection still opens (and refreshes) after.
    let (s, v) = f.agents[0]
        .api("POST", "/v1/vault/rewrap", Some(json!({})))
        .await
        .expect("rewrap");
    assert_eq!(s, 200, "{v}");
    write_keys(
        &f.dir.path().join("vault-keys"),
        "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n",
    );
    // Gateway 0 asks the first agent, gateway 1 the second, at once,
    // once the token has ended: one refresh at the SaaS, fleet-wide.
    let before = stats(&f.saas).await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL + 1)).await;
    let (u0, u1) = (url(0), url(1));
    let a = std::thread::spawn(move || call(&u0, ALICE_KEY, "whoami", true));
    let b = std::thread::spawn(move || call(&u1, ALICE_KEY, "whoami", true));
    assert_eq!(whose(&a.join().expect("a")), "alice");
    assert_eq!(whose(&b.join().expect("b")), "alice");
    let after = stats(&f.saas).await;
    assert_eq!(
        after["refreshes"].as_u64().unwrap_or(0) - before["refreshes"].as_u64().unwrap_or(0),
        1,
        "{before} → {after}"
    );
    assert_eq!(after["refresh_refused"], before["refresh_refused"]);
    let pg = f.pg.as_ref().expect("the database");
    let masters = pg
        .psql("vault_ha", "SELECT master FROM warden_vault_keys")
        .expect("keys");
    assert!(masters.contains("k2"), "{masters}");
    assert!(
        !masters.contains("k1"),
        "the old master key still wraps a data key: {masters}"
    );

    // An admin revokes by principal: both gateways ask again.
    let (s, v) = f.agents[f.agents.len() - 1]
        .api(
            "POST",
            "/v1/vault/connections/revoke",
            Some(json!({"tenant": "acme", "principal": "alice"})),
        )
        .await
        .expect("revoke");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"].as_array().map(Vec::len), Some(1), "{v}");
    for i in [0, 1] {
        until("consent asked again", Duration::from_secs(10), || {
            let v = call(&url(i), ALICE_KEY, "whoami", true);
            v["consent"]["url"].is_string().then_some(v)
        });
    }
    // Nobody but a gateway reads a credential from the vault.
    let (s, v) = f.agents[f.agents.len() - 1]
        .api(
            "POST",
            "/v1/vault/token",
            Some(
                json!({"tenant": "acme", "principal": "bob", "server": "saas", "provider": "saas"}),
            ),
        )
        .await
        .expect("token");
    assert_eq!(s, 403, "{v}");
    assert_no_token_anywhere(&f);
    drop(c);
    drop(driver);
}

/// A static secret kept in the vault (`credentials: {vault: NAME}`): no
/// call goes up before an org admin keeps it; then every call carries it,
/// and a new value reaches the upstream within seconds without a new
/// bundle or a restart; the audit names it by reference; the vault's file
/// holds it sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_secret_from_the_vault_is_used_and_rotated_without_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let mock = warden_tests::Mock::start(&[]).expect("mock");
    let source = d.join("source");
    std::fs::create_dir_all(&source).expect("source");
    std::fs::write(
        source.join("warden.yaml"),
        format!(
            "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - name: mock\n        upstreams: [\"{}\"]\n\
             \x20       credentials: {{vault: mock-key}}\nroutes:\n  - {{prefix: /mock, server: mock}}\n",
            mock.addr
        ),
    )
    .expect("yaml");
    write_keys(
        &d.join("vault-keys"),
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    );
    let (private, public) = warden_tests::keygen(d, "k");
    let keys = d.join("vault-keys");
    let agent = Agent::start_with(
        &source,
        &d.join("state"),
        Some(&private),
        &["--vault-keys".as_ref(), keys.as_os_str()],
    )
    .expect("agent");
    let gw = Gateway::on_agent(&agent.url, &public, &d.join("gw"), "gw-1").expect("gateway");
    gw.wait_ready().expect("ready");
    let echo = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}})
        .to_string()
    };
    // Not kept yet: refused, and nothing reaches the upstream.
    let posts = mock.posts().await;
    let (s, _, b) = warden_tests::post_json(&gw.url("/mock/mcp"), echo(1), &[])
        .await
        .expect("call");
    let text = String::from_utf8_lossy(&b).into_owned();
    assert_eq!(s, 403, "{text}");
    assert!(text.contains("credential_refused"), "{text}");
    assert_eq!(mock.posts().await, posts);

    let mut seen = Vec::new();
    for value in ["s3cret-value-one", "s3cret-value-two"] {
        let (s, v) = agent
            .api(
                "POST",
                "/v1/vault/secrets/mock-key",
                Some(json!({"value": value})),
            )
            .await
            .expect("keep");
        assert_eq!(s, 200, "{v}");
        let want = format!("Bearer {value}");
        let start = Instant::now();
        loop {
            let (s, _, b) = warden_tests::post_json(&gw.url("/mock/mcp"), echo(2), &[])
                .await
                .expect("call");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            let stats = mock.stats().await.expect("stats");
            if stats["last"]["authorization"] == want.as_str() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the upstream never got {value}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        seen.push(value);
    }
    let recs = gw.audit_when(|r| {
        r.iter()
            .any(|x| x["credential"] == "vault-secret:mock-key@2")
    });
    assert!(
        recs.iter()
            .any(|x| x["credential"] == "vault-secret:mock-key@2"),
        "no record names the secret's version"
    );
    let vault = std::fs::read_to_string(d.join("state/vault.json")).expect("vault");
    let audit = serde_json::to_string(&gw.audit()).unwrap_or_default();
    for v in seen {
        assert!(!vault.contains(v), "the secret in clear in vault.json");
        assert!(!audit.contains(v), "the secret in the audit");
    }
}
