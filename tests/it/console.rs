//! The web console in a real browser: Debian's `chromium`, driven through
//! `chromedriver` with the `fantoccini` WebDriver client, against a running
//! agent and a gateway serving a real MCP SDK server (Python) with real
//! traffic.
//!
//! One test walks what an operator does: log in, watch calls in Live and
//! Audit, verify the chain of what is shown, approve a held HIGH call and
//! see it served, deny another, diff two bundle revisions and roll back,
//! pull the kill switch. Beside it: a viewer cannot approve, a POST
//! without the CSRF token (or from another site) is refused, and hostile
//! text in a tool name, an argument and a justification renders inert.
//! Another walks delegated administration (`--admins`): tenant admins see
//! their tenant's layer and servers only, a second finance admin approves
//! a registration, the registrant's own approval and another tenant's
//! server and rollback are refused and recorded.
//!
//! Screenshots of every page go to `$WARDEN_CONSOLE_SHOTS` when set (the
//! ones in `docs/console/` were taken so), else to a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use warden_tests::{free_port, header, post_json, root, Agent, Gateway};

mod browser;
use browser::{click, spawn, text_of, wait_port, Driver};

const KEY: &str = "wk_console_agent_key_1";
const ALICE: &str = "approver-alice-token-0001";
const BOB: &str = "approver-bob-token-00002";
const VIC: &str = "viewer-vic-token-0000003";
/// Runs when a page interprets text as markup.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

fn python() -> PathBuf {
    let p = root().join("tests/peers/.venv/bin/python");
    assert!(p.exists(), "Python peers missing: run scripts/setup.sh");
    p
}

fn source_yaml(py: SocketAddr, extra_rule: &str) -> String {
    let key = warden_config::access::hash_api_key(KEY, &[7u8; 16]);
    format!(
        "version: 1\npolicy: {{entrypoint: data.ops.decision, denial: tool_error}}\n\
identity:\n  resource: http://127.0.0.1/py/mcp\n  api_keys:\n    - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{key}\"}}\n\
approvals:\n  pending: 10m\n  expires: 5m\n\
audit:\n  log_io: [HIGH]\n\
catalog:\n  py:\n    default_risk: LOW\n    tools:\n      checksum: {{risk: HIGH}}\n\
service_groups:\n  - name: g\n    servers:\n      - {{name: py, upstreams: [\"{py}\"]}}\n\
routes:\n  - {{prefix: /py, server: py}}\n{extra_rule}"
    )
}

const POLICY: &str = "package ops\nimport rego.v1\n\
decision := {\"allow\": true, \"reason\": \"ok\", \"require_approval\": {\"approvers\": 1, \"reason\": \"checksums of customer data need a second pair of eyes\"}} if {\n\tinput.request.tool == \"checksum\"\n} else := {\"allow\": false, \"reason\": \"adding past 100 is not allowed\"} if {\n\tinput.request.tool == \"add\"\n\tinput.request.arguments.a > 100\n} else := {\"allow\": true, \"reason\": \"ok\"}\n";

/// An MCP client session through the gateway (raw JSON-RPC over real sockets).
struct Mcp {
    url: String,
    session: String,
    next: u64,
}

impl Mcp {
    async fn open(gw: &Gateway) -> Mcp {
        let url = gw.url("/py/mcp");
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"console-test","version":"1"}}});
        let (s, h, b) = post_json(&url, init.to_string(), &[("x-api-key", KEY)])
            .await
            .expect("initialize");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let session = header(&h, "mcp-session-id").expect("session").to_owned();
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        post_json(
            &url,
            note.to_string(),
            &[("x-api-key", KEY), ("mcp-session-id", &session)],
        )
        .await
        .expect("initialized");
        Mcp {
            url,
            session,
            next: 1,
        }
    }

    /// Calls `tool`; returns the JSON-RPC reply.
    async fn call(&mut self, tool: &str, args: Value, justification: Option<&str>) -> Value {
        self.next += 1;
        let body = json!({"jsonrpc":"2.0","id":self.next,"method":"tools/call",
            "params":{"name":tool,"arguments":args}});
        let mut h = vec![
            ("x-api-key", KEY),
            ("mcp-session-id", self.session.as_str()),
        ];
        if let Some(j) = justification {
            h.push(("x-warden-justification", j));
        }
        let (_, _, b) = post_json(&self.url, body.to_string(), &h)
            .await
            .expect("call");
        let text = String::from_utf8_lossy(&b).into_owned();
        warden_tests::rpc_messages(&text)
            .into_iter()
            .find(|m| m.get("id").is_some())
            .unwrap_or(Value::Null)
    }
}

fn result_text(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

struct Shots(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Shots {
    fn new() -> Shots {
        match std::env::var_os("WARDEN_CONSOLE_SHOTS") {
            Some(d) => {
                // Relative to the repository (tests run in `tests/`).
                let d = root().join(d);
                std::fs::create_dir_all(&d).expect("shots dir");
                Shots(d, None)
            }
            None => {
                let t = tempfile::tempdir().expect("tmp");
                Shots(t.path().to_path_buf(), Some(t))
            }
        }
    }

    async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.0.join(format!("{name}.png")), png).expect("write shot");
    }
}

async fn login(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("login page");
    c.find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("type");
    click(c, "#login").await;
    let who = text_of(c, "#who").await;
    assert!(!who.is_empty(), "logged in");
}

async fn logout(c: &Client) {
    click(c, "header form.who button").await;
    c.find(Locator::Css("#token")).await.expect("back at login");
}

/// Reloads `url` until `css` holds `needle` (records reach the agent
/// shortly after the calls).
async fn until_page(c: &Client, url: &str, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.goto(url).await.expect("page");
        let t = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: `{css}` never showed {needle:?}; last: {t}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// No script of a hostile text ran, and no element it carried exists.
async fn inert(c: &Client) {
    let v = c
        .execute(
            "return [typeof window.__xss, document.querySelectorAll('img[src=x]').length];",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(v, json!(["undefined", 0]), "a hostile text was interpreted");
}

/// A form POST with the browser's session cookie, as a script of another
/// origin (or a tool outside the browser) would send it.
async fn raw_post(base: &str, path: &str, cookie: &str, body: &str, extra: &[(&str, &str)]) -> u16 {
    let c = format!("__Host-warden_console={cookie}");
    let mut h = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", c.as_str()),
    ];
    h.extend_from_slice(extra);
    let (s, _, _) = warden_tests::request(
        &format!("{base}{path}"),
        "POST",
        &h,
        bytes::Bytes::from(body.to_owned()),
        false,
    )
    .await
    .expect("post");
    s
}

fn token_file(dir: &Path, name: &str, entries: &[(&str, &str, &str)]) -> PathBuf {
    use sha2::Digest;
    let text: String = entries
        .iter()
        .map(|(n, t, tenants)| {
            format!(
                "{n}: {{token_sha256: {}, tenants: [{tenants}]}}\n",
                hex::encode(sha2::Sha256::digest(t.as_bytes()))
            )
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, text).expect("tokens");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_fleet_from_the_console() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let py_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut py = spawn(
        "python MCP server",
        Command::new(python())
            .arg(root().join("tests/peers/py_server.py"))
            .arg(port.to_string())
            .arg("streamable-http"),
    );
    wait_port(py_addr, &mut py);

    let (source, state) = (dir.path().join("source"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    std::fs::write(source.join("warden.yaml"), source_yaml(py_addr, "")).expect("yaml");
    std::fs::write(source.join("policies/ops.rego"), POLICY).expect("rego");
    let approvers = token_file(
        dir.path(),
        "approvers.yaml",
        &[("alice", ALICE, ""), ("bob", BOB, "")],
    );
    let viewers = token_file(dir.path(), "viewers.yaml", &[("vic", VIC, "")]);
    let (private, public) = warden_tests::keygen(dir.path(), "k");
    let agent = Agent::start_with(
        &source,
        &state,
        Some(&private),
        &[
            "--approvers".as_ref(),
            approvers.as_os_str(),
            "--viewers".as_ref(),
            viewers.as_os_str(),
        ],
    )
    .expect("agent");
    let gw =
        Gateway::on_agent(&agent.url, &public, &dir.path().join("gw-1"), "gw-1").expect("gateway");
    gw.wait_ready().expect("ready");
    let base = agent.url.clone();

    let driver = Driver::start();
    let c = driver.browser().await;
    let shots = Shots::new();

    // Not logged in: every page sends to the login; a wrong token is refused.
    c.goto(&format!("{base}/console/audit"))
        .await
        .expect("goto");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/console/login"));
    c.find(Locator::Css("#token"))
        .await
        .expect("field")
        .send_keys("not-a-token-of-this-agent")
        .await
        .expect("type");
    click(&c, "#login").await;
    assert!(text_of(&c, "#error")
        .await
        .contains("not one this agent knows"));
    shots.take(&c, "login").await;

    // Traffic: allowed calls, a denial, hostile text in a tool name, an
    // argument and a justification.
    let mut mcp = Mcp::open(&gw).await;
    for i in 0..5 {
        let r = mcp
            .call("echo", json!({"text": format!("hello {i}")}), None)
            .await;
        assert_eq!(result_text(&r), format!("hello {i}"), "{r}");
    }
    let denied = mcp.call("add", json!({"a": 500, "b": 1}), None).await;
    assert!(denied.to_string().contains("adding past 100"), "{denied}");
    let r = mcp.call("echo", json!({"text": XSS}), Some(XSS)).await;
    assert_eq!(result_text(&r), XSS, "{r}");
    let unknown = mcp.call(XSS, json!({}), None).await;
    assert!(
        unknown.get("error").is_some() || unknown["result"]["isError"] == true,
        "{unknown}"
    );

    // The admin logs in: the fleet shows the gateway, its upstream, its revision.
    login(&c, &base, warden_tests::ADMIN_TOKEN).await;
    let fleet = until_page(&c, &format!("{base}/console/fleet"), "#gateways", "gw-1").await;
    assert!(fleet.contains("healthy"), "{fleet}");
    until_page(&c, &format!("{base}/console/fleet"), "#gateways", "py 1/1").await;
    shots.take(&c, "fleet").await;

    // Live and Audit show the calls.
    let live = until_page(&c, &format!("{base}/console/live"), "#tools", "echo").await;
    assert!(live.contains("echo"), "{live}");
    let outcomes = text_of(&c, "#outcomes").await;
    assert!(
        outcomes.contains("denied") || outcomes.contains("forwarded"),
        "{outcomes}"
    );
    assert!(text_of(&c, "#reasons").await.contains("adding past 100"));
    shots.take(&c, "live").await;
    inert(&c).await;

    let records = until_page(
        &c,
        &format!("{base}/console/audit?tool=echo"),
        "#records",
        "echo",
    )
    .await;
    assert!(!records.contains(" add "), "filtered by tool: {records}");
    assert!(text_of(&c, "#total").await.parse::<u64>().unwrap_or(0) >= 6);
    // The hostile payloads are shown as text, never run.
    c.goto(&format!("{base}/console/audit"))
        .await
        .expect("audit");
    let all = text_of(&c, "#records").await;
    assert!(
        all.contains("<img src=x"),
        "the hostile tool name shows as text: {all}"
    );
    inert(&c).await;
    // Verify the chain of the records shown.
    click(&c, "#verify").await;
    let v = text_of(&c, "#verification").await;
    assert!(v.contains("Chain intact"), "{v}");
    shots.take(&c, "audit").await;
    // One record, opened.
    click(&c, "a.record-link").await;
    let json = text_of(&c, "#record-json").await;
    assert!(json.contains("\"seq\""), "{json}");
    inert(&c).await;
    shots.take(&c, "record").await;

    // A held HIGH call: the admin sees it and cannot decide it.
    let held = mcp
        .call(
            "checksum",
            json!({"data": XSS}),
            Some(&format!("quarterly close {XSS}")),
        )
        .await;
    let held_text = held.to_string();
    assert!(held_text.contains("held for human approval"), "{held}");
    let id = held_text
        .split("ap_")
        .nth(1)
        .map(|rest| format!("ap_{}", &rest[..26]))
        .expect("an approval id");
    let queue = until_page(&c, &format!("{base}/console/approvals"), "#approvals", &id).await;
    assert!(
        queue.contains("HIGH") && queue.contains("checksum"),
        "{queue}"
    );
    inert(&c).await;
    c.goto(&format!("{base}/console/approvals/{id}"))
        .await
        .expect("approval");
    assert!(
        c.find(Locator::Css("#approve")).await.is_err(),
        "an admin does not approve"
    );
    assert!(text_of(&c, "#arguments").await.contains("<img src=x"));
    assert!(text_of(&c, "#justification")
        .await
        .contains("quarterly close"));
    inert(&c).await;

    // CSRF: the session's cookie without the form's token is refused, and
    // so is the token sent from another site.
    let cookie = c
        .get_named_cookie("__Host-warden_console")
        .await
        .expect("the session cookie")
        .value()
        .to_owned();
    let csrf = c
        .find(Locator::Css("header form.who input[name=csrf]"))
        .await
        .expect("csrf field")
        .attr("value")
        .await
        .expect("attr")
        .expect("value");
    assert_eq!(
        raw_post(&base, "/console/kill", &cookie, "scope=all&verb=kill", &[]).await,
        403,
        "no CSRF token"
    );
    assert_eq!(
        raw_post(
            &base,
            "/console/kill",
            &cookie,
            &format!("scope=all&verb=kill&csrf={csrf}"),
            &[("origin", "http://evil.example")]
        )
        .await,
        403,
        "another site"
    );
    // The admin's own (valid) POST to decide is refused: approvers only.
    assert_eq!(
        raw_post(
            &base,
            &format!("/console/approvals/{id}/decide"),
            &cookie,
            &format!("verdict=approve&csrf={csrf}"),
            &[]
        )
        .await,
        403
    );
    logout(&c).await;

    // A viewer sees the queue and cannot approve.
    login(&c, &base, VIC).await;
    c.goto(&format!("{base}/console/approvals/{id}"))
        .await
        .expect("approval");
    assert!(text_of(&c, "#state").await.contains("pending"));
    assert!(
        c.find(Locator::Css("#approve")).await.is_err(),
        "a viewer does not approve"
    );
    let vcookie = c
        .get_named_cookie("__Host-warden_console")
        .await
        .expect("cookie")
        .value()
        .to_owned();
    let vcsrf = c
        .find(Locator::Css("header form.who input[name=csrf]"))
        .await
        .expect("csrf")
        .attr("value")
        .await
        .expect("attr")
        .expect("value");
    assert_eq!(
        raw_post(
            &base,
            &format!("/console/approvals/{id}/decide"),
            &vcookie,
            &format!("verdict=approve&csrf={vcsrf}"),
            &[]
        )
        .await,
        403,
        "a viewer's POST is refused"
    );
    logout(&c).await;

    // Alice approves with a comment; the retried call is served.
    login(&c, &base, ALICE).await;
    c.goto(&format!("{base}/console/approvals/{id}"))
        .await
        .expect("approval");
    c.find(Locator::Css("#comment"))
        .await
        .expect("comment")
        .send_keys("checked with finance")
        .await
        .expect("type");
    shots.take(&c, "approval").await;
    click(&c, "#approve").await;
    assert!(text_of(&c, "#flash").await.contains("approved"), "flash");
    assert!(text_of(&c, "#state").await.contains("approved"));
    let served = mcp
        .call(
            "checksum",
            json!({"data": XSS}),
            Some("quarterly close, approved"),
        )
        .await;
    assert!(
        served.get("result").is_some() && served["result"]["isError"] != true,
        "{served}"
    );

    // Another held call, denied.
    let held2 = mcp
        .call(
            "checksum",
            json!({"data": "payroll"}),
            Some("payroll run now"),
        )
        .await;
    let t2 = held2.to_string();
    let id2 = t2
        .split("ap_")
        .nth(1)
        .map(|rest| format!("ap_{}", &rest[..26]))
        .expect("an approval id");
    c.goto(&format!("{base}/console/approvals/{id2}"))
        .await
        .expect("approval");
    c.find(Locator::Css("#comment"))
        .await
        .expect("c")
        .send_keys("not today")
        .await
        .expect("t");
    click(&c, "#deny").await;
    assert!(text_of(&c, "#state").await.contains("denied"));
    let told = mcp
        .call(
            "checksum",
            json!({"data": "payroll"}),
            Some("payroll run now"),
        )
        .await;
    assert!(
        told.to_string().contains("denied by approver alice"),
        "{told}"
    );
    c.goto(&format!("{base}/console/approvals?all=1"))
        .await
        .expect("all");
    shots.take(&c, "approvals").await;
    logout(&c).await;

    // Bundles: a new revision (the source changed), the diff, a rollback.
    login(&c, &base, warden_tests::ADMIN_TOKEN).await;
    std::fs::write(
        source.join("policies/ops.rego"),
        POLICY.replace("adding past 100", "adding past one hundred"),
    )
    .expect("edit");
    let hist = until_page(&c, &format!("{base}/console/bundles"), "#history", "r2-").await;
    assert!(hist.contains("r1-"), "{hist}");
    click(&c, "#diff").await;
    let page = c.source().await.expect("source");
    assert!(
        page.contains("adding past one hundred") && page.contains("class=\"del\""),
        "the diff shows the changed rule"
    );
    shots.take(&c, "diff").await;
    click(&c, "#rollback-a").await;
    assert!(text_of(&c, "#flash").await.contains("rolled back to r1-"));
    shots.take(&c, "bundles").await;
    // The gateway serves the rolled-back rule again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = mcp
            .call("add", json!({"a": 500, "b": 1}), None)
            .await
            .to_string();
        if d.contains("adding past 100") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollback never reached the gateway: {d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The kill switch, pulled from the fleet page, with who pulled it.
    c.goto(&format!("{base}/console/fleet"))
        .await
        .expect("fleet");
    c.find(Locator::Css("#kill-value"))
        .await
        .expect("value")
        .send_keys("py/echo")
        .await
        .expect("type");
    click(&c, "#kill").await;
    assert!(text_of(&c, "#flash").await.contains("kill tool py/echo"));
    assert!(text_of(&c, "#kill-history").await.contains("console:admin"));
    shots.take(&c, "kill").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = mcp.call("echo", json!({"text": "after kill"}), None).await;
        if result_text(&r) != "after kill" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kill switch never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every console action is in the agent's change record.
    let changes = std::fs::read_to_string(state.join("changes.jsonl")).expect("changes");
    for action in [
        "console.login",
        "console.logout",
        "console.refused",
        "console.audit.verify",
        "console.approval.approved",
        "console.approval.denied",
    ] {
        assert!(changes.contains(action), "{action} not recorded");
    }
    assert!(
        changes
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|c| c["actor"] == "console:admin" && c["action"] == "kill" && c["ok"] == true),
        "the kill switch is recorded with who pulled it"
    );

    c.close().await.expect("close");
    drop(driver);
    drop(gw);
    drop(agent);
    drop(py);
}

/// The console's own defences, without a browser: headers, cookies,
/// sessions that end, limited logins, refused cross-site and ambiguous forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_guards_itself() {
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("mkdir");
    std::fs::write(
        source.join("warden.yaml"),
        source_yaml("127.0.0.1:9".parse().expect("addr"), ""),
    )
    .expect("yaml");
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    std::fs::write(source.join("policies/ops.rego"), POLICY).expect("rego");
    let agent = Agent::start(&source, &dir.path().join("state"), None).expect("agent");
    let base = agent.url.clone();
    let get = |path: &str, cookie: Option<String>| {
        let url = format!("{base}{path}");
        async move {
            let c = cookie
                .map(|c| format!("__Host-warden_console={c}"))
                .unwrap_or_default();
            let h: Vec<(&str, &str)> = if c.is_empty() {
                vec![]
            } else {
                vec![("cookie", c.as_str())]
            };
            warden_tests::request(&url, "GET", &h, bytes::Bytes::new(), false)
                .await
                .expect("get")
        }
    };
    let login = |token: &str, extra: Vec<(&'static str, &'static str)>| {
        let url = format!("{base}/console/login");
        let body = format!("token={token}");
        async move {
            let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
            h.extend(extra);
            warden_tests::request(&url, "POST", &h, bytes::Bytes::from(body), false)
                .await
                .expect("post")
        }
    };

    // Every page without a session sends to the login page.
    for p in [
        "/console",
        "/console/fleet",
        "/console/audit",
        "/console/approvals/ap_x",
    ] {
        let (s, h, _) = get(p, None).await;
        assert_eq!(
            (s, header(&h, "location")),
            (303, Some("/console/login")),
            "{p}"
        );
    }
    // The headers of a page.
    let (s, h, body) = get("/console/login", None).await;
    assert_eq!(s, 200);
    let csp = header(&h, "content-security-policy").expect("CSP");
    for want in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(want), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(!csp.contains("script-src"), "no script runs at all: {csp}");
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    assert!(!String::from_utf8_lossy(&body).contains("<script"));

    // A login: the cookie's attributes; the session works, a forged one does not.
    let (s, h, _) = login(warden_tests::ADMIN_TOKEN, vec![]).await;
    assert_eq!(s, 303);
    let set = header(&h, "set-cookie").expect("cookie").to_owned();
    assert!(set.starts_with("__Host-warden_console="), "{set}");
    for want in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/;"] {
        assert!(set.contains(want), "{set}");
    }
    let cookie = set
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("value");
    let (st, hh, _) = get("/console/fleet", Some(cookie.clone())).await;
    assert_eq!(st, 200, "{set} {cookie} {hh:?}");
    assert_eq!(get("/console/fleet", Some("forged".into())).await.0, 303);
    // The cookie twice (one planted beside the real one): no session.
    let twice = format!("{cookie}; __Host-warden_console=planted");
    assert_eq!(get("/console/fleet", Some(twice)).await.0, 303);
    // Another host name (a page that rebinds its DNS to the agent): refused.
    let (s, _, _) = warden_tests::request(
        &format!("{base}/console/login"),
        "GET",
        &[("host", "evil.example:80")],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("get");
    assert_eq!(s, 421);
    // A login form from another site is refused.
    let (s, _, _) = login(
        warden_tests::ADMIN_TOKEN,
        vec![("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = login(
        warden_tests::ADMIN_TOKEN,
        vec![("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(s, 403);

    // A form with a field twice is refused whole.
    let (_, _, page) = get("/console/fleet", Some(cookie.clone())).await;
    let page = String::from_utf8_lossy(&page).into_owned();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_owned();
    let s = raw_post(
        &base,
        "/console/kill",
        &cookie,
        &format!("csrf={csrf}&scope=tool&value=py/echo&verb=revive&verb=kill"),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    // Logging out ends the session.
    assert_eq!(
        raw_post(
            &base,
            "/console/logout",
            &cookie,
            &format!("csrf={csrf}"),
            &[]
        )
        .await,
        303
    );
    assert_eq!(get("/console/fleet", Some(cookie)).await.0, 303);

    // Failed logins are limited per address, and a success in between
    // does not reset the count: after ten, even the right token waits.
    // (The two cross-site logins above were not counted: a page could
    // otherwise lock the operator out.)
    for _ in 0..5 {
        assert_eq!(login("wrong-token-guess", vec![]).await.0, 401);
    }
    assert_eq!(login(warden_tests::ADMIN_TOKEN, vec![]).await.0, 303);
    for _ in 0..5 {
        assert_eq!(login("wrong-token-guess", vec![]).await.0, 401);
    }
    assert_eq!(login(warden_tests::ADMIN_TOKEN, vec![]).await.0, 429);
    // Refusals past the allowance are not each written down.
    for _ in 0..50 {
        assert_eq!(login("wrong-token-guess", vec![]).await.0, 429);
    }
    let changes = std::fs::read_to_string(dir.path().join("state/changes.jsonl")).expect("changes");
    assert!(changes.contains("too many failed logins") && changes.contains("cross-site login"));
    let refused = changes
        .lines()
        .filter(|l| l.contains("\"console.login\"") && l.contains("\"ok\":false"))
        .count();
    assert!(
        refused <= 11,
        "{refused} refused logins written: the record is flooded"
    );

    // The name `admin` is the admin token's alone.
    let viewers = token_file(dir.path(), "admin-viewer.yaml", &[("admin", VIC, "")]);
    assert!(Agent::start_with(
        &source,
        &dir.path().join("state2"),
        None,
        &["--viewers".as_ref(), viewers.as_os_str()],
    )
    .is_err());
}

/// What the console shows of records gateways shipped: secrets redacted
/// with their key in view, other tenants' records hidden from a scoped
/// viewer, and a verification that tells a scoped viewer only the verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_no_secret_and_no_other_tenant() {
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    std::fs::write(
        source.join("warden.yaml"),
        source_yaml("127.0.0.1:9".parse().expect("addr"), ""),
    )
    .expect("yaml");
    std::fs::write(source.join("policies/ops.rego"), POLICY).expect("rego");
    let viewers = token_file(
        dir.path(),
        "viewers.yaml",
        &[
            ("vic", VIC, ""),
            ("ace", "viewer-acme-only-token-01", "acme"),
        ],
    );
    let agent = Agent::start_with(
        &source,
        &dir.path().join("state"),
        None,
        &["--viewers".as_ref(), viewers.as_os_str()],
    )
    .expect("agent");
    let base = agent.url.clone();
    // Two records of one chain: globex's with secrets in its arguments, then acme's.
    use sha2::Digest;
    let first = json!({"seq": 0, "prev": "0".repeat(64), "ts": "2026-11-25T06:00:00Z",
        "principal": "gina", "tenant": "globex", "server": "py", "direction": "request",
        "method": "tools/call", "tool": "login", "outcome": "forwarded", "trace_id": "t1",
        "latency_us": 5, "status": 200,
        "arguments": {"password": "Xk9mQ2vLp7wRt4zA", "note": "key AKIAIOSFODNN7EXAMPLE"}})
    .to_string();
    let second = json!({"seq": 1, "prev": hex::encode(sha2::Sha256::digest(first.as_bytes())),
        "ts": "2026-11-25T06:00:01Z", "principal": "ann", "tenant": "acme", "server": "py",
        "direction": "request", "method": "tools/call", "tool": "echo", "outcome": "forwarded",
        "trace_id": "t2&tenant=globex", "latency_us": 5, "status": 200})
    .to_string();
    let bearer = format!("Bearer {}", warden_tests::FLEET_TOKEN);
    let (s, _, b) = warden_tests::request(
        &format!("{base}/v1/audit/ingest"),
        "POST",
        &[
            ("authorization", bearer.as_str()),
            ("x-warden-gateway", "gw-9"),
            ("content-type", "application/x-ndjson"),
        ],
        bytes::Bytes::from(format!("{first}\n{second}\n")),
        false,
    )
    .await
    .expect("ingest");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    let session = |token: &'static str| {
        let url = format!("{base}/console/login");
        async move {
            let (s, h, _) = warden_tests::request(
                &url,
                "POST",
                &[("content-type", "application/x-www-form-urlencoded")],
                bytes::Bytes::from(format!("token={token}")),
                false,
            )
            .await
            .expect("login");
            assert_eq!(s, 303);
            let set = header(&h, "set-cookie").expect("cookie").to_owned();
            set.split(';').next().expect("pair").to_owned()
        }
    };
    let page = |cookie: String, path: String| {
        let url = format!("{base}{path}");
        async move {
            let (s, _, b) = warden_tests::request(
                &url,
                "GET",
                &[("cookie", cookie.as_str())],
                bytes::Bytes::new(),
                false,
            )
            .await
            .expect("page");
            (s, String::from_utf8_lossy(&b).into_owned())
        }
    };
    let admin = session(warden_tests::ADMIN_TOKEN).await;
    let (_, list) = page(admin.clone(), "/console/audit".into()).await;
    let ids: Vec<String> = list
        .split("href=\"/console/audit/")
        .skip(1)
        .filter_map(|r| r.split('"').next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    // The trace id's `&` is encoded in the link, never a second parameter.
    let (_, acme_record) = page(admin.clone(), format!("/console/audit/{}", ids[0])).await;
    assert!(
        acme_record.contains("trace_id=t2%26tenant%3Dglobex"),
        "{acme_record}"
    );
    // The globex record: no secret on the page, whatever its key.
    let (s, globex_record) = page(admin.clone(), format!("/console/audit/{}", ids[1])).await;
    assert_eq!(s, 200);
    for secret in ["Xk9mQ2vLp7wRt4zA", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(
            !globex_record.contains(secret),
            "{secret} shown: {globex_record}"
        );
    }
    // The viewer of acme: the acme record only; globex's is not found.
    let ace = session("viewer-acme-only-token-01").await;
    let (_, scoped) = page(ace.clone(), "/console/audit".into()).await;
    assert!(
        scoped.contains("ann") && !scoped.contains("gina"),
        "{scoped}"
    );
    assert_eq!(
        page(ace.clone(), format!("/console/audit/{}", ids[1]))
            .await
            .0,
        404
    );
    // Verifying the range shown: the verdict, not the other tenant's counts.
    let (_, verified) = page(ace.clone(), "/console/audit?verify=1".into()).await;
    assert!(verified.contains("Chain intact"), "{verified}");
    assert!(
        !verified.contains("2 records checked") && !verified.contains("gw-9: records"),
        "{verified}"
    );
    let (_, all) = page(admin.clone(), "/console/audit?verify=1".into()).await;
    assert!(all.contains("2 records checked"), "{all}");
    // Bundle sources are not shown to a scoped viewer.
    let (s, _) = page(ace, "/console/bundles/diff?a=x&b=y".into()).await;
    assert_eq!(s, 403);

    // Anyone with the fleet token writes what the console shows: a
    // record, a held call and a fleet report whose names carry secrets
    // (SSNs, AWS key ids). None is rendered, whichever field carries it.
    let secrets = [
        "123-45-6789",          // the tool
        "AKIAIOSFODNN7EXAMPLE", // the principal
        "078-05-1120",          // the server
        "219-09-9999",          // the tenant
        "536-90-4399",          // the trace id
        "457-55-5462",          // the gateway
        "321-54-9876",          // a field's name
        "AKIAI44QH8DHBEXAMPLE", // a reported upstream
        "ASIAZZZZ1111YYYY2222", // a reported revision
    ];
    let gateway = "gw-457-55-5462";
    let planted = json!({"seq": 0, "prev": "0".repeat(64), "ts": "2026-11-25T06:00:02Z",
        "principal": "svc AKIAIOSFODNN7EXAMPLE", "tenant": "t 219-09-9999",
        "server": "srv 078-05-1120", "direction": "request", "method": "tools/call",
        "tool": "lookup 123-45-6789", "outcome": "denied", "reason": "policy",
        "trace_id": "tr 536-90-4399", "latency_us": 5, "status": 403,
        "321-54-9876": "a name that is a secret"})
    .to_string();
    let (s, _, b) = warden_tests::request(
        &format!("{base}/v1/audit/ingest"),
        "POST",
        &[
            ("authorization", bearer.as_str()),
            ("x-warden-gateway", gateway),
            ("content-type", "application/x-ndjson"),
        ],
        bytes::Bytes::from(format!("{planted}\n")),
        false,
    )
    .await
    .expect("ingest");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"{}")));
    let claim = json!({"tenant": "t 219-09-9999", "principal": "svc AKIAIOSFODNN7EXAMPLE",
        "server": "srv 078-05-1120", "tool": "lookup 123-45-6789", "args_digest": digest,
        "arguments": "{}", "risk": "HIGH", "reason": "risk_tier:HIGH", "required": 1,
        "pending_secs": 600, "grant_secs": 60, "gateway": gateway,
        "trace_id": "tr 536-90-4399"});
    let fleet_post = |path: &'static str, body: Value| {
        let url = format!("{base}{path}");
        let bearer = bearer.clone();
        async move {
            let (s, _, b) = warden_tests::request(
                &url,
                "POST",
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                bytes::Bytes::from(body.to_string()),
                false,
            )
            .await
            .expect("post");
            assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
            serde_json::from_slice::<Value>(&b).expect("json")
        }
    };
    let held = fleet_post("/v1/approvals/claim", claim).await;
    let held_id = held["id"].as_str().expect("an approval id").to_owned();
    fleet_post(
        "/v1/fleet/report",
        json!({"id": gateway, "revision": "ASIAZZZZ1111YYYY2222", "healthy": true,
            "upstreams": [{"server": "up AKIAI44QH8DHBEXAMPLE", "replicas": 1, "healthy": 1}]}),
    )
    .await;
    let (_, list) = page(admin.clone(), "/console/audit".into()).await;
    let planted_id = list
        .split("href=\"/console/audit/")
        .skip(1)
        .filter_map(|r| r.split('"').next().map(str::to_owned))
        .find(|id| !ids.contains(id))
        .expect("the planted record is listed");
    // An admin searches with a secret: the query goes to the change
    // record, which the fleet page shows.
    let (s, _) = page(
        admin.clone(),
        "/console/audit?principal=AKIAIOSFODNN7EXAMPLE&tool=lookup+123-45-6789".into(),
    )
    .await;
    assert_eq!(s, 200);
    let mut shown = vec![("/console/audit".to_owned(), list)];
    for path in [
        format!("/console/audit/{planted_id}"),
        "/console/audit?verify=1".to_owned(),
        "/console/approvals".to_owned(),
        format!("/console/approvals/{held_id}"),
        "/console/fleet".to_owned(),
        "/console/live?window=3600".to_owned(),
    ] {
        let (s, body) = page(admin.clone(), path.clone()).await;
        assert_eq!(s, 200, "{path}: {body}");
        shown.push((path, body));
    }
    // The pages did show the planted record, held call and gateway.
    let on = |p: &str| &shown.iter().find(|(q, _)| q == p).expect("shown").1;
    assert!(
        on("/console/audit").contains("lookup"),
        "{}",
        on("/console/audit")
    );
    assert!(on("/console/approvals").contains("lookup"));
    assert!(on("/console/fleet").contains("gw-"));
    assert!(on("/console/fleet").contains("console.audit.search"));
    for (path, body) in &shown {
        for secret in secrets {
            assert!(!body.contains(secret), "{secret} shown on {path}: {body}");
        }
    }

    // What a user types is cut before it is recorded, and a diff of
    // revisions that do not exist is refused before anything is read.
    let long = "x".repeat(20_000);
    let (s, _) = page(
        admin.clone(),
        format!("/console/bundles/diff?a={long}&b=r1"),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = page(admin, format!("/console/audit?tool={long}")).await;
    assert_eq!(s, 200);
    let changes = std::fs::read_to_string(dir.path().join("state/changes.jsonl")).expect("changes");
    let longest = changes.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a line of {longest} bytes");
    let refused: Value = changes
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|c| c["action"] == "console.bundles.diff")
        .expect("the refused diff is recorded");
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["detail"].as_str().is_some_and(|d| d.ends_with('…')),
        "{refused}"
    );
}

/// An API call with an administrator's token (`--admins`); (status, JSON).
async fn api_as(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: bytes::Bytes,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (s, _, b) = warden_tests::request(
        &format!("{base}{path}"),
        method,
        &[
            ("authorization", auth.as_str()),
            ("content-type", content_type),
        ],
        body,
        false,
    )
    .await
    .expect("api");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

const FIONA: &str = "tenant-admin-fiona-token-01";
const FELIX: &str = "tenant-admin-felix-token-02";
const HARRY: &str = "tenant-admin-harry-token-03";
const ALICE_ORG: &str = "org-admin-alice-token-0004";
const RITA: &str = "org-reviewer-rita-token-05";

/// Delegated administration in a real browser: tenant admins see their
/// tenant's layer and servers only, approve a colleague's registration
/// through the form, and are refused (403, recorded) another tenant's
/// server; a registrant approving their own is refused with the
/// registry's reason, shown and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_govern_their_tenant_from_the_console() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("mkdir");
    // Each tenant's grant names the addresses of its servers (finance's
    // revisions at 127.0.0.1:2, :4 and :6; hr's at :3), none the org's.
    std::fs::write(
        source.join("warden.yaml"),
        "version: 1\nservice_groups:\n  - name: tools\n    servers:\n      - {name: mock, upstreams: [\"127.0.0.1:9\"]}\nroutes:\n  - {prefix: /mock, server: mock}\ntenants:\n  finance: {path_prefixes: [/finance/], upstreams: [\"127.0.0.1:2\", \"127.0.0.1:4\", \"127.0.0.1:6\"]}\n  hr: {path_prefixes: [/hr/], upstreams: [\"127.0.0.1:3\"]}\n",
    )
    .expect("yaml");
    let admins: String = [
        ("alice", ALICE_ORG, "org_admin", ""),
        ("rita", RITA, "org_reviewer", ""),
        ("fiona", FIONA, "tenant_admin", "finance"),
        ("felix", FELIX, "tenant_admin", "finance"),
        ("harry", HARRY, "tenant_admin", "hr"),
    ]
    .iter()
    .map(|(n, t, role, tenant)| {
        format!(
            "{n}: {{token_sha256: \"{}\", role: {role}{}}}\n",
            hex::encode(sha2::Sha256::digest(t.as_bytes())),
            if tenant.is_empty() {
                String::new()
            } else {
                format!(", tenant: {tenant}")
            }
        )
    })
    .collect();
    let admins_file = dir.path().join("admins.yaml");
    std::fs::write(&admins_file, admins).expect("admins");
    let state = dir.path().join("state");
    let agent = Agent::start_with(
        &source,
        &state,
        None,
        &["--admins".as_ref(), admins_file.as_os_str()],
    )
    .expect("agent");
    let base = agent.url.clone();

    // Each tenant publishes its layer; finance twice.
    let layer = |tenant: &str, server: &str, port: u16| {
        let yaml = format!(
            "version: 1\ntenant: {tenant}\nservers:\n  - {{name: {server}, upstreams: [\"127.0.0.1:{port}\"]}}\nroutes:\n  - {{path_prefix: /{tenant}/{server}, server: {server}}}\n"
        );
        let files =
            warden_config::archive::Files::from([("tenant.yaml".to_owned(), yaml.into_bytes())]);
        bytes::Bytes::from(warden_config::archive::pack(&files))
    };
    let mut fin = Vec::new();
    for (who, port) in [(FIONA, 2), (FELIX, 4)] {
        let (s, v) = api_as(
            &base,
            who,
            "POST",
            "/v1/tenants/finance/layer",
            "application/gzip",
            layer("finance", "ledger", port),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        fin.push(
            v["published"]["revision"]
                .as_str()
                .expect("revision")
                .to_owned(),
        );
    }
    let (s, v) = api_as(
        &base,
        HARRY,
        "POST",
        "/v1/tenants/hr/layer",
        "application/gzip",
        layer("hr", "payroll", 3),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let hr_rev = v["published"]["revision"]
        .as_str()
        .expect("revision")
        .to_owned();
    // Felix registers finance's ledger and moves it to testing; harry hr's payroll.
    let def = |server: &str, tool: &str| {
        bytes::Bytes::from(
            json!({"server": server, "definition": {"tools": [{"name": tool, "inputSchema": {"type": "object"}}]}})
                .to_string(),
        )
    };
    let js = "application/json";
    let (s, v) = api_as(
        &base,
        FELIX,
        "POST",
        "/v1/registry",
        js,
        def("ledger", "post_entry"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api_as(
        &base,
        FELIX,
        "POST",
        "/v1/registry/ledger/move",
        js,
        bytes::Bytes::from(json!({"state": "testing"}).to_string()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api_as(
        &base,
        HARRY,
        "POST",
        "/v1/registry",
        js,
        def("payroll", "pay"),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let driver = Driver::start();
    let c = driver.browser().await;
    let shots = Shots::new();

    // Felix cannot approve his own registration: the form is there, the
    // registry refuses, the page says why.
    login(&c, &base, FELIX).await;
    assert!(text_of(&c, "#who")
        .await
        .contains("felix · tenant admin · finance"));
    c.goto(&format!("{base}/console/registry/ledger"))
        .await
        .expect("server page");
    assert_eq!(
        text_of(&c, "#server-state").await.split(' ').next(),
        Some("testing")
    );
    click(&c, "#move-approved").await;
    let flash = text_of(&c, "#flash").await;
    assert!(
        flash.contains("refused") && flash.contains("a second person approves it"),
        "{flash}"
    );
    assert!(text_of(&c, "#reviewer").await.contains("not yet"));
    shots.take(&c, "governance-self-approval").await;
    logout(&c).await;

    // Fiona: finance's layer and server, nothing of hr's.
    login(&c, &base, FIONA).await;
    click(&c, "#nav-tenants").await;
    let tenants = text_of(&c, "main").await;
    assert!(
        tenants.contains("finance") && tenants.contains(&fin[1]),
        "{tenants}"
    );
    assert!(
        !tenants.contains(&hr_rev) && !tenants.contains("hr-r"),
        "{tenants}"
    );
    assert!(text_of(&c, "#tenant-finance .current-layer")
        .await
        .contains(&fin[1]));
    shots.take(&c, "governance-tenants").await;
    // The diff of her two revisions.
    click(&c, "#tenant-finance a.layer-diff").await;
    let diff = text_of(&c, "main").await;
    assert!(
        diff.contains("tenant.yaml") && diff.contains(&fin[0]) && diff.contains(&fin[1]),
        "{diff}"
    );
    shots.take(&c, "governance-layer-diff").await;
    // A new layer typed into the Tenants page: a widening one is refused
    // with the rule it breaks, then a narrowing one is published.
    for (yaml, rego, expect) in [
        (
            "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:6\"]}\nroutes:\n  - {path_prefix: /finance/ledger, server: ledger}\ncatalog:\n  ledger:\n    egress_allow: [\"evil.example\"]\n",
            "",
            "egress_allow",
        ),
        (
            "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:6\"]}\nroutes:\n  - {path_prefix: /finance/ledger, server: ledger}\n",
            "package warden.tenants.finance\n\ndefault decision := {\"allow\": true}\n",
            "finance: published finance-r3-",
        ),
    ] {
        click(&c, "#nav-tenants").await;
        // Opening the form is not a navigation.
        c.find(Locator::Css("#tenant-finance details.layer-publish summary"))
            .await
            .expect("the publish form")
            .click()
            .await
            .expect("opened");
        for (name, text) in [("tenant_yaml", yaml), ("policy_rego", rego)] {
            if text.is_empty() {
                continue;
            }
            c.find(Locator::Css(&format!(
                "#tenant-finance textarea[name={name}]"
            )))
            .await
            .expect("layer field")
            .send_keys(text)
            .await
            .expect("typed");
        }
        click(&c, "#tenant-finance .layer-publish-button").await;
        let flash = text_of(&c, "#flash").await;
        assert!(flash.contains(expect), "{expect}: {flash}");
    }
    assert!(text_of(&c, "#tenant-finance .current-layer")
        .await
        .starts_with("finance-r3-"));
    shots.take(&c, "governance-layer-published").await;
    click(&c, "#nav-registry").await;
    let registry = text_of(&c, "#registry").await;
    assert!(
        registry.contains("ledger") && !registry.contains("payroll"),
        "{registry}"
    );
    click(&c, "#registry a").await;
    click(&c, "#move-approved").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("now approved"), "{flash}");
    assert!(text_of(&c, "#reviewer").await.contains("admin:fiona"));
    assert!(text_of(&c, "#server-state").await.starts_with("approved"));
    assert!(text_of(&c, "#events").await.contains("approved"));
    shots.take(&c, "governance-server").await;
    // Hr's server by its address: refused.
    c.goto(&format!("{base}/console/registry/payroll"))
        .await
        .expect("page");
    let body = text_of(&c, "body").await;
    assert!(
        body.starts_with("refused") && body.contains("payroll"),
        "{body}"
    );
    assert!(!body.contains("pay "), "{body}");
    // Her session posting a rollback of hr's layer (a form of her own
    // page, retargeted, as a hostile admin would): refused, nothing changes.
    c.goto(&format!("{base}/console/tenants"))
        .await
        .expect("page");
    let cookie = c
        .get_named_cookie("__Host-warden_console")
        .await
        .expect("the session cookie")
        .value()
        .to_owned();
    let csrf = c
        .find(Locator::Css("header form.who input[name=csrf]"))
        .await
        .expect("csrf field")
        .attr("value")
        .await
        .expect("attr")
        .expect("value");
    assert_eq!(
        raw_post(
            &base,
            "/console/tenants/hr/rollback",
            &cookie,
            &format!("csrf={csrf}&revision={hr_rev}"),
            &[]
        )
        .await,
        403
    );
    logout(&c).await;

    // The reviewer sees both tenants and both servers.
    login(&c, &base, RITA).await;
    c.goto(&format!("{base}/console/tenants"))
        .await
        .expect("page");
    let all = text_of(&c, "main").await;
    assert!(all.contains(&hr_rev) && all.contains(&fin[1]), "{all}");
    c.goto(&format!("{base}/console/registry"))
        .await
        .expect("page");
    let registry = text_of(&c, "#registry").await;
    assert!(
        registry.contains("ledger") && registry.contains("payroll"),
        "{registry}"
    );
    logout(&c).await;
    drop(c);

    // The API agrees: approved by fiona; payroll untouched.
    let (_, v) = agent
        .api("GET", "/v1/registry/ledger", None)
        .await
        .expect("show");
    assert_eq!(v["state"], "approved", "{v}");
    assert_eq!(v["approved_by"], "admin:fiona", "{v}");
    let (_, v) = agent
        .api("GET", "/v1/registry/payroll", None)
        .await
        .expect("show");
    assert_eq!(v["state"], "draft", "{v}");
    let (_, v) = agent
        .api("GET", "/v1/tenants/hr/history", None)
        .await
        .expect("history");
    assert_eq!(v["current"], hr_rev.as_str(), "{v}");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1), "{v}");
    // The change record holds the refusals and the approval.
    let changes: Vec<Value> = std::fs::read_to_string(state.join("changes.jsonl"))
        .expect("changes")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let has = |actor: &str, action: &str, ok: bool, detail: &str| {
        changes.iter().any(|c| {
            c["actor"] == actor
                && c["action"] == action
                && c["ok"] == ok
                && c["detail"].as_str().is_some_and(|d| d.contains(detail))
        })
    };
    assert!(
        has(
            "console:felix",
            "console.refused",
            false,
            "a second person approves it"
        ),
        "{changes:?}"
    );
    assert!(
        has(
            "console:fiona",
            "console.refused",
            false,
            "/console/registry/payroll"
        ),
        "{changes:?}"
    );
    assert!(
        has(
            "console:fiona",
            "console.refused",
            false,
            "/console/tenants/hr/rollback"
        ),
        "{changes:?}"
    );
    assert!(
        has(
            "console:fiona",
            "console.registry.move",
            true,
            "now approved"
        ),
        "{changes:?}"
    );
    assert!(
        has(
            "admin:fiona",
            "registry.move",
            true,
            "ledger: testing → approved"
        ),
        "{changes:?}"
    );
}
