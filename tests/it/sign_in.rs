//! Operators sign in to the console through the organisation's identity
//! provider: a real OpenID Connect provider (`oidc-provider`, the fixture
//! `tests/peers/oidc_idp.mjs`) with accounts in groups, the agent with a
//! provider file (`serve --oidc`), and a real browser (Chromium through
//! `chromedriver`) that types passwords into the provider's own form.
//!
//! What it shows: each role comes from a group claim (org admin, org
//! reviewer, tenant admin, approver, viewer), and a person in no group of
//! the rules is nobody; a viewer cannot approve; an approver never approves
//! a call of the principal they are; a person removed from their group
//! loses the role at the next recheck; a CRITICAL approval asks for a fresh
//! sign-in at the provider first; logout ends the provider's session too;
//! the token form is closed when the provider file says so; a token the
//! console mints for the CLI acts as its person on the API (never as a
//! console session, and never for a CRITICAL call on an old sign-in). Beside the
//! browser: a callback that is not this browser's sign-in (no cookie, a
//! forged `state`, a replayed code) signs nobody in.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use warden_tests::{free_port, root, Agent, Proc, FLEET_TOKEN};

mod browser;
use browser::{click, spawn, text_of, wait_port, Driver};

const SECRET: &str = "console-client-secret-0001";

/// The accounts of the provider: (name, groups).
const PEOPLE: [(&str, &[&str]); 7] = [
    ("ada", &["warden-admins"]),
    ("rita", &["warden-reviewers"]),
    ("tess", &["finance-admins"]),
    ("paul", &["warden-approvers"]),
    ("quinn", &["warden-approvers"]),
    ("vera", &["warden-viewers"]),
    ("nobody", &["cafeteria"]),
];

fn password(name: &str) -> String {
    format!("pw-{name}-0001")
}

/// The provider, on `port`, whose client redirects to the agent on
/// `agent_port`.
fn provider(dir: &Path, port: u16, agent_port: u16) -> Proc {
    let accounts: serde_json::Map<String, Value> = PEOPLE
        .iter()
        .map(|(n, groups)| {
            (
                (*n).to_owned(),
                json!({"password": password(n), "claims": {
                    "preferred_username": n, "email": format!("{n}@example.com"),
                    "groups": groups}}),
            )
        })
        .collect();
    let agent = format!("http://127.0.0.1:{agent_port}");
    let cfg = json!({"port": port, "id_token_alg": "EdDSA",
        "clients": [{"client_id": "warden-console", "client_secret": SECRET,
            "redirect_uris": [format!("{agent}/console/oidc/callback")],
            "post_logout_redirect_uris": [format!("{agent}/console/login")]}],
        "accounts": accounts});
    let path = dir.join("idp.json");
    std::fs::write(&path, cfg.to_string()).expect("idp config");
    let node = root().join("tests/peers/node_modules/.bin/node");
    let node = if node.exists() { node } else { "node".into() };
    let mut p = spawn(
        "oidc provider",
        Command::new(node)
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

fn agent_files(dir: &Path, idp: u16, agent_port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let source = dir.join("source");
    std::fs::create_dir_all(&source).expect("source");
    std::fs::write(
        source.join("warden.yaml"),
        "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: py, upstreams: [\"127.0.0.1:9\"]}\nroutes:\n  - {prefix: /py, server: py}\n",
    )
    .expect("yaml");
    std::fs::write(dir.join("secret"), SECRET).expect("secret");
    let oidc = dir.join("oidc.yaml");
    std::fs::write(
        &oidc,
        format!(
            "issuer: http://127.0.0.1:{idp}\nclient_id: warden-console\nclient_secret_file: {}\n\
             redirect_url: http://127.0.0.1:{agent_port}/console/oidc/callback\n\
             scopes: [openid, profile, email, groups]\n\
             roles:\n\
             \x20 - {{claim: groups, value: warden-admins, role: org_admin}}\n\
             \x20 - {{claim: groups, value: warden-reviewers, role: org_reviewer}}\n\
             \x20 - {{claim: groups, value: finance-admins, role: tenant_admin, tenant: finance}}\n\
             \x20 - {{claim: groups, value: warden-approvers, role: approver}}\n\
             \x20 - {{claim: groups, value: warden-viewers, role: viewer}}\n\
             principal_claims: [sub]\nrecheck: 6s\nclock_skew: 1s\ncritical: {{max_age: 10s}}\ntoken_login: false\n",
            dir.join("secret").display()
        ),
    )
    .expect("oidc file");
    (source, oidc)
}

/// Signs `who` in through the provider's form, from the login page.
async fn sign_in(c: &Client, base: &str, who: &str) {
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("login page");
    click(c, "#oidc-login").await;
    type_password(c, who).await;
}

/// Fills the provider's login form (its page is open) and submits it.
async fn type_password(c: &Client, who: &str) {
    let user = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#username"))
        .await
        .unwrap_or_else(|e| {
            panic!("the provider's form: {e}");
        });
    user.send_keys(who).await.expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password")
        .send_keys(&password(who))
        .await
        .expect("type");
    click(c, "#signin").await;
}

/// The console's header once a page of it is shown.
async fn who(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.find(Locator::Css("#who")).await {
            if let Ok(t) = e.text().await {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no console page at {:?}: {}",
            c.current_url().await.map(|u| u.to_string()),
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs out through the console, and at the provider.
async fn log_out(c: &Client) {
    click(c, "header form.who button").await;
    click(c, "#logout-confirm").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c
        .current_url()
        .await
        .is_ok_and(|u| u.path() == "/console/login")
    {
        assert!(Instant::now() < deadline, "not back at the login page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A held call as a gateway claims it.
async fn hold(base: &str, principal: &str, risk: &str) -> String {
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"{}")));
    let claim = json!({"tenant": "acme", "principal": principal, "server": "py",
        "tool": "transfer", "args_digest": digest, "arguments": "{}", "risk": risk,
        "reason": format!("risk_tier:{risk}"), "required": 1, "pending_secs": 600,
        "grant_secs": 60, "gateway": "gw-1"});
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let (s, _, b) = warden_tests::request(
        &format!("{base}/v1/approvals/claim"),
        "POST",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        bytes::Bytes::from(claim.to_string()),
        false,
    )
    .await
    .expect("claim");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).expect("json");
    v["id"].as_str().expect("an id").to_owned()
}

async fn state_of(c: &Client, base: &str, id: &str) -> String {
    c.goto(&format!("{base}/console/approvals/{id}"))
        .await
        .expect("approval");
    text_of(c, "#state").await
}

async fn stats(idp: u16) -> Value {
    let (_, _, b) = warden_tests::request(
        &format!("http://127.0.0.1:{idp}/test/stats"),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("stats");
    serde_json::from_slice(&b).expect("stats json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_through_the_organisations_provider() {
    let dir = tempfile::tempdir().expect("tmp");
    let (idp, agent_port) = (free_port(), free_port());
    let _provider = provider(dir.path(), idp, agent_port);
    let (source, oidc) = agent_files(dir.path(), idp, agent_port);
    let listen = format!("127.0.0.1:{agent_port}");
    let agent = Agent::start_with(
        &source,
        &dir.path().join("state"),
        None,
        &[
            "--oidc".as_ref(),
            oidc.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ],
    )
    .expect("agent");
    let base = agent.url.clone();
    let own = hold(&base, "paul", "HIGH").await;
    let critical = hold(&base, "agent-9", "CRITICAL").await;

    // Callbacks that are no sign-in of a browser sign nobody in.
    for (q, cookie) in [
        ("code=x&state=y", None),
        ("code=x&state=y", Some("__Host-warden_oidc=forged.value")),
        ("error=access_denied&state=y", None),
    ] {
        let mut h = vec![];
        if let Some(c) = cookie {
            h.push(("cookie", c));
        }
        let (s, hd, b) = warden_tests::request(
            &format!("{base}/console/oidc/callback?{q}"),
            "GET",
            &h,
            bytes::Bytes::new(),
            false,
        )
        .await
        .expect("callback");
        assert_eq!(s, 400, "{q}: {}", String::from_utf8_lossy(&b));
        assert!(
            !warden_tests::header(&hd, "set-cookie")
                .is_some_and(|c| c.contains("warden_console=") && !c.contains("Max-Age=0")),
            "{q}: a session cookie was set"
        );
    }
    // The token form is closed (`token_login: false`).
    let (s, _, _) = warden_tests::request(
        &format!("{base}/console/login"),
        "POST",
        &[("content-type", "application/x-www-form-urlencoded")],
        bytes::Bytes::from(format!("token={}", warden_tests::ADMIN_TOKEN)),
        false,
    )
    .await
    .expect("token login");
    assert_eq!(s, 403);

    let driver = Driver::start();
    let c = driver.browser().await;
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("login");
    assert!(
        c.find(Locator::Css("#token")).await.is_err(),
        "no token form"
    );

    // Each role from a group claim.
    for (name, label) in [
        ("ada", "org admin"),
        ("rita", "org reviewer"),
        ("tess", "tenant admin"),
    ] {
        sign_in(&c, &base, name).await;
        let w = who(&c).await;
        assert!(
            w.contains(&format!("{name}@example.com")) || w.contains(name),
            "{w}"
        );
        assert!(w.contains(label), "{name}: {w}");
        if name == "ada" {
            // An admin reads held calls and never decides them.
            c.goto(&format!("{base}/console/approvals/{own}"))
                .await
                .expect("approval");
            assert!(c.find(Locator::Css("#approve")).await.is_err());
        }
        if name == "tess" {
            assert!(w.contains("finance"), "{w}");
        }
        log_out(&c).await;
    }
    assert_eq!(
        stats(idp).await["logouts"],
        3,
        "logout ended the provider's session"
    );

    // Nobody in a group of the rules is nobody here.
    sign_in(&c, &base, "nobody").await;
    let e = text_of(&c, "#error").await;
    assert!(e.contains("no role rule"), "{e}");

    // A viewer reads and cannot approve, in the page or by a forged form.
    // (The provider's session of `nobody` ends first.)
    c.delete_all_cookies().await.expect("cookies");
    sign_in(&c, &base, "vera").await;
    assert!(who(&c).await.contains("viewer"));
    assert_eq!(state_of(&c, &base, &own).await, "pending");
    assert!(c.find(Locator::Css("#approve")).await.is_err());
    let csrf = c
        .find(Locator::Css("header form.who input[name=csrf]"))
        .await
        .expect("csrf")
        .attr("value")
        .await
        .expect("value")
        .unwrap_or_default();
    let cookie = c
        .get_named_cookie("__Host-warden_console")
        .await
        .expect("session cookie")
        .value()
        .to_owned();
    let (s, _, _) = warden_tests::request(
        &format!("{base}/console/approvals/{own}/decide"),
        "POST",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &format!("__Host-warden_console={cookie}")),
            ("sec-fetch-site", "same-origin"),
        ],
        bytes::Bytes::from(format!("csrf={csrf}&verdict=approve")),
        false,
    )
    .await
    .expect("forged decide");
    assert_eq!(s, 403, "a viewer decided");
    log_out(&c).await;

    // An approver never approves the principal they are (paul's own call);
    // removed from the group, he loses the role at the next recheck.
    sign_in(&c, &base, "paul").await;
    assert!(who(&c).await.contains("approver"));
    c.goto(&format!("{base}/console/approvals/{own}"))
        .await
        .expect("approval");
    click(&c, "#approve").await;
    let f = text_of(&c, "#flash").await;
    assert!(f.contains("not approved"), "{f}");
    assert_eq!(text_of(&c, "#state").await, "pending");
    let (s, _, _) = warden_tests::request(
        &format!("http://127.0.0.1:{idp}/test/accounts/paul"),
        "POST",
        &[("content-type", "application/json")],
        bytes::Bytes::from(json!({"groups": []}).to_string()),
        false,
    )
    .await
    .expect("remove paul");
    assert_eq!(s, 204);
    tokio::time::sleep(Duration::from_secs(7)).await;
    c.goto(&format!("{base}/console/approvals"))
        .await
        .expect("approvals");
    let e = text_of(&c, "#error").await;
    assert!(e.contains("no role rule"), "paul kept a role: {e}");
    c.goto(&format!("{base}/console/approvals"))
        .await
        .expect("approvals");
    assert!(
        c.current_url().await.expect("url").path() == "/console/login",
        "paul's session outlived his role"
    );
    c.delete_all_cookies().await.expect("cookies");

    // Another approver approves paul's call; a CRITICAL one asks for a
    // sign-in within `critical.max_age` first.
    sign_in(&c, &base, "quinn").await;
    assert!(who(&c).await.contains("approver"));
    c.goto(&format!("{base}/console/approvals/{own}"))
        .await
        .expect("approval");
    click(&c, "#approve").await;
    assert_eq!(text_of(&c, "#state").await, "approved");
    // Past `max_age` and the skew by a whole second: `auth_time` is in
    // whole seconds, so after 11 s a sign-in late in its second still
    // read as 11 s old, fresh enough, when what followed took under one.
    tokio::time::sleep(Duration::from_secs(12)).await;
    // The page again (its recheck passes without a page at the provider),
    // then the approval: the provider's form first.
    assert_eq!(state_of(&c, &base, &critical).await, "pending");
    // A token for the CLI, minted now, acts as quinn on the API: it lists
    // and decides what he may, not a CRITICAL call on this old sign-in; it
    // is no console session, and the console's session is no API token.
    click(&c, "#cli-token-new").await;
    let token = text_of(&c, "#cli-token").await;
    let api_held = hold(&base, "agent-3", "HIGH").await;
    let api = |method: &'static str, path: String, token: String| {
        let base = base.clone();
        async move {
            let auth = format!("Bearer {token}");
            let (s, _, b) = warden_tests::request(
                &format!("{base}{path}"),
                method,
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                bytes::Bytes::from_static(b"{}"),
                false,
            )
            .await
            .expect("api");
            (s, String::from_utf8_lossy(&b).into_owned())
        }
    };
    let (s, list) = api("GET", "/v1/approvals".into(), token.clone()).await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list.contains(&api_held) && list.contains(&critical),
        "{list}"
    );
    let (s, b) = api(
        "POST",
        format!("/v1/approvals/{api_held}/approve"),
        token.clone(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"approved\""), "{b}");
    let (s, b) = api(
        "POST",
        format!("/v1/approvals/{critical}/approve"),
        token.clone(),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("recent sign-in"), "{b}");
    let (s, _) = api("GET", "/v1/fleet".into(), token.clone()).await;
    assert_eq!(s, 403, "an approver's token reads no fleet");
    let browser_cookie = c
        .get_named_cookie("__Host-warden_console")
        .await
        .expect("session cookie")
        .value()
        .to_owned();
    let (s, _) = api("GET", "/v1/approvals".into(), browser_cookie).await;
    assert_eq!(s, 401, "a browser's session is no API token");
    let (s, h, _) = warden_tests::request(
        &format!("{base}/console/approvals"),
        "GET",
        &[("cookie", &format!("__Host-warden_console={token}"))],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("console");
    assert_eq!(s, 303);
    assert_eq!(warden_tests::header(&h, "location"), Some("/console/login"));
    c.goto(&format!("{base}/console/approvals/{critical}"))
        .await
        .expect("approval");
    let before = stats(idp).await["logins"].as_u64().unwrap_or(0);
    click(&c, "#approve").await;
    type_password(&c, "quinn").await;
    let f = text_of(&c, "#flash").await;
    assert!(f.contains("Signed in again"), "{f}");
    assert_eq!(stats(idp).await["logins"].as_u64(), Some(before + 1));
    assert_eq!(text_of(&c, "#state").await, "pending");
    click(&c, "#approve").await;
    assert_eq!(text_of(&c, "#state").await, "approved");
    log_out(&c).await;
    drop(c);
}
