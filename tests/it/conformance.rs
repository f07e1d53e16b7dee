//! Conformance matrix through Warden with real MCP SDK peers: the Python SDK
//! (`mcp==2.3.0`) client in its default (2026-07-28 probe with fallback) and
//! legacy (initialize) modes, the TypeScript SDK client and the Rust `rmcp`
//! client, against the Python SDK server, the TypeScript "everything" server
//! and an `rmcp` server — plus the legacy HTTP+SSE transport with the Python
//! server. Each client run covers initialize, tools/list, tools/call with JSON
//! and SSE replies, progress notifications, resources/read (where the server
//! has resources), sessions and DELETE.
//!
//! A second test drives the Python SDK client and server in their modern
//! mode (2026-07-28) through Warden with a DLP and policy bundle:
//! discovery, a tool call with one multi-round-trip elicitation round
//! (whose `requestState` the gateway seals and unseals), and a resource
//! subscription over `subscriptions/listen`.
//!
//! Needs the peers installed by `scripts/setup.sh`; fails loudly without them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{bin, free_port, root, run_with_timeout, Gateway, Proc};

/// The official MCP conformance suite, directly and through the gateway.
#[path = "official_suite.rs"]
mod official_suite;

/// Every test here starts SDK peer processes; they take turns. On two
/// cores, side by side, they starved each other's clients past their
/// timeouts (the legacy HTTP+SSE client of the matrix hung at its progress
/// call in three full-suite runs, never alone), and their ports (picked
/// free, then bound by the peer) race.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn peers() -> PathBuf {
    root().join("tests/peers")
}

fn python() -> PathBuf {
    let p = peers().join(".venv/bin/python");
    assert!(
        p.exists(),
        "Python peers missing: run scripts/setup.sh (creates tests/peers/.venv with mcp==2.3.0)"
    );
    p
}

fn wait_port(addr: SocketAddr, proc: &mut Proc) {
    if let Err(e) = warden_tests::wait_listening(proc, &[addr.port()], Duration::from_secs(30)) {
        panic!("{e}");
    }
}

fn spawn(name: &str, cmd: &mut Command) -> Proc {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("WARDEN_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc {
        child,
        name: name.into(),
    }
}

fn py_server(transport: &str) -> (Proc, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut p = spawn(
        &format!("python {transport} server"),
        Command::new(python())
            .arg(peers().join("py_server.py"))
            .arg(port.to_string())
            .arg(transport),
    );
    wait_port(addr, &mut p);
    (p, addr)
}

fn ts_server() -> (Proc, SocketAddr) {
    let entry = peers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        entry.exists(),
        "TypeScript peers missing: run scripts/setup.sh"
    );
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut p = spawn(
        "typescript everything server",
        Command::new("node")
            .arg(entry)
            .arg("streamableHttp")
            .env("PORT", port.to_string()),
    );
    wait_port(addr, &mut p);
    (p, addr)
}

/// What the upstream's `whoami` tool says about the caller, through the
/// Python SDK client with one credential variable set (`(name, value)`).
fn whoami(url: &str, credential: (&str, &str)) -> Value {
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_whoami_client.py"))
            .arg(url)
            .env(credential.0, credential.1),
        Duration::from_secs(60),
    )
    .expect("client ran");
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    v["whoami"].clone()
}

/// Starts a peer that prints `listening on <address>` as its first line;
/// returns it and that address.
fn listening(name: &str, cmd: &mut Command) -> (Proc, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("WARDEN_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let out = child.stdout.take().expect("stdout");
    let p = Proc {
        child,
        name: name.into(),
    };
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{name} said {line:?}"))
        .to_owned();
    (p, addr)
}

fn rmcp_server() -> (Proc, SocketAddr) {
    let (p, addr) = listening(
        "rmcp server (cargo build --workspace --bins)",
        &mut Command::new(bin("rmcp-server")),
    );
    (p, addr.parse().expect("addr"))
}

struct Run {
    client: &'static str,
    server: &'static str,
    ok: bool,
    report: String,
}

fn run_client(client: &'static str, server: &'static str, cmd: &mut Command) -> Run {
    let (ok, out, err) = run_with_timeout(cmd, Duration::from_secs(90)).expect("client ran");
    let report = out.lines().last().unwrap_or("").to_owned();
    let parsed: Value = serde_json::from_str(&report).unwrap_or(Value::Null);
    let ok = ok && parsed["ok"] == Value::Bool(true);
    Run {
        client,
        server,
        ok,
        report: if ok {
            report
        } else {
            format!("{report}\n{err}")
        },
    }
}

#[test]
fn sdk_clients_and_servers_work_through_warden() {
    let _turn = heavy();
    let (_py, py_addr) = py_server("streamable-http");
    let (_pysse, pysse_addr) = py_server("sse");
    let (_ts, ts_addr) = ts_server();
    let (_rs, rs_addr) = rmcp_server();
    let yaml = format!(
        "version: 1\nservice_groups:\n  - name: conformance\n    servers:\n      - {{name: py, upstreams: [\"{py_addr}\"]}}\n      - {{name: pysse, upstreams: [\"{pysse_addr}\"]}}\n      - {{name: ts, upstreams: [\"{ts_addr}\"]}}\n      - {{name: rs, upstreams: [\"{rs_addr}\"]}}\nroutes:\n  - {{prefix: /py, server: py}}\n  - {{prefix: /legacy/pysse, server: pysse}}\n  - {{prefix: /ts, server: ts}}\n  - {{prefix: /rs, server: rs}}\n"
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    // (route, echo tool, progress tool)
    let servers: [(&'static str, &str, &str, &str); 3] = [
        ("python", "/py/mcp", "echo", "count"),
        (
            "typescript",
            "/ts/mcp",
            "echo",
            "trigger-long-running-operation",
        ),
        ("rmcp", "/rs/mcp", "echo", "count"),
    ];
    let mut runs = Vec::new();
    for (server, path, echo, progress) in servers {
        let url = gw.url(path);
        for mode in ["auto", "legacy"] {
            let client = if mode == "auto" {
                "python (default)"
            } else {
                "python (legacy)"
            };
            runs.push(run_client(
                client,
                server,
                Command::new(python())
                    .arg(peers().join("py_client.py"))
                    .args([&url, "streamable", mode, echo, progress]),
            ));
        }
        runs.push(run_client(
            "typescript",
            server,
            Command::new("node")
                .arg(peers().join("ts_client.mjs"))
                .args([&url, echo, progress])
                .current_dir(peers()),
        ));
        runs.push(run_client(
            "rmcp",
            server,
            Command::new(bin("rmcp-client")).args([&url, echo, progress]),
        ));
    }
    runs.push(run_client(
        "python (HTTP+SSE)",
        "python sse",
        Command::new(python())
            .arg(peers().join("py_client.py"))
            .args([&gw.url("/legacy/pysse/sse"), "sse"]),
    ));
    println!("\nconformance matrix (client → server through warden):");
    for r in &runs {
        println!(
            "  {:<20} → {:<12} {}",
            r.client,
            r.server,
            if r.ok { "PASS" } else { "FAIL" }
        );
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} → {}: {}", r.client, r.server, r.report))
        .collect();
    assert!(failed.is_empty(), "failures:\n{}", failed.join("\n\n"));
    // Version negotiation through the gateway, both ways: the probing client
    // speaks 2026-07-28 with the server that does and falls back with those
    // that do not; the legacy client gets an older revision from the modern
    // server.
    for r in &runs {
        let v: Value =
            serde_json::from_str(r.report.lines().next().unwrap_or("")).unwrap_or_default();
        let Some(p) = v["protocol"].as_str() else {
            continue;
        };
        println!("  {:<20} → {:<12} negotiated {p}", r.client, r.server);
        match (r.client, r.server) {
            ("python (default)", "python") => assert_eq!(p, "2026-07-28", "{}", r.report),
            ("python (default)", "typescript") | ("python (legacy)", "python") => {
                assert!(p < "2026-07-28", "{} → {}: {p}", r.client, r.server)
            }
            _ => {}
        }
    }
    // Every server saw audited traffic, including session ends.
    let audit = gw.audit_when(|a| {
        a.iter().any(|r| r["http_method"] == "DELETE") && a.iter().any(|r| r["server"] == "pysse")
    });
    for s in ["py", "pysse", "ts", "rs"] {
        assert!(
            audit.iter().any(|r| r["server"] == s
                && r["method"] == "tools/call"
                && r["outcome"] == "forwarded"),
            "no audited call for {s}"
        );
    }
    assert!(
        audit.iter().any(|r| r["http_method"] == "DELETE"),
        "session DELETE passes through"
    );
}

#[test]
fn modern_python_peers_through_warden() {
    let _turn = heavy();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut server = spawn(
        "python modern server",
        Command::new(python())
            .arg(peers().join("py_modern_server.py"))
            .arg(port.to_string()),
    );
    wait_port(addr, &mut server);
    // Every guard on: DLP both ways, a policy that allows, output schemas.
    let yaml = format!(
        "version: 1\ndlp:\n  rules:\n    - {{name: no-secrets, detectors: [\"category:secret\"], action: block}}\nservice_groups:\n  - name: conformance\n    servers:\n      - {{name: modern, upstreams: [\"{addr}\"]}}\nroutes:\n  - {{prefix: /modern, server: modern}}\n"
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let run = run_client(
        "python (modern)",
        "python (modern)",
        Command::new(python())
            .arg(peers().join("py_modern_client.py"))
            .arg(gw.url("/modern/mcp")),
    );
    println!(
        "  {:<20} → {:<16} {}",
        run.client,
        run.server,
        if run.ok { "PASS" } else { "FAIL" }
    );
    assert!(run.ok, "{}", run.report);
    let report: Value = serde_json::from_str(&run.report).expect("report");
    assert_eq!(report["protocol"], "2026-07-28");
    // The elicitation round went through the gateway: the first call came
    // back input_required and the retry, with the gateway's state, was
    // forwarded and answered.
    let audit = gw.audit_when(|a| {
        a.iter().any(|r| r["method"] == "subscriptions/listen")
            && a.iter()
                .filter(|r| {
                    r["method"] == "tools/call"
                        && r["tool"] == "greet"
                        && r["direction"] == "request"
                })
                .count()
                >= 2
    });
    let greets: Vec<&Value> = audit
        .iter()
        .filter(|r| {
            r["method"] == "tools/call" && r["tool"] == "greet" && r["direction"] == "request"
        })
        .collect();
    assert!(
        greets
            .iter()
            .all(|r| r["outcome"] == "forwarded" || r["outcome"] == "mutated"),
        "{greets:?}"
    );
    assert!(
        greets.iter().any(|r| r["outcome"] == "mutated"),
        "the retry's state was unsealed: {greets:?}"
    );
    drop(gw);
    drop(server);
}

/// The "front your own server" path: `warden init` against a real Python SDK
/// server writes a bundle that lists the server's tools, the gateway runs on
/// it, and the real Python SDK client calls through it with the one key init
/// printed; without the key the gateway answers 401.
#[test]
fn warden_init_fronts_a_real_python_server() {
    let _turn = heavy();
    let (_py, py_addr) = py_server("streamable-http");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("my-bundle");
    let gw_port = free_port();
    let listen = format!("127.0.0.1:{gw_port}");
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden")).arg("init").arg(&dir).args([
            "--upstream",
            &format!("http://{py_addr}/mcp"),
            "--listen",
            &listen,
            "--name",
            "mine",
        ]),
        Duration::from_secs(60),
    )
    .expect("init runs");
    assert!(ok, "{out}{err}");
    assert!(out.contains("answered: 5 tool(s)"), "{out}");
    let key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("wk_"))
        .expect("the key is printed")
        .to_owned();
    let yaml = std::fs::read_to_string(dir.join("warden.yaml")).expect("yaml");
    assert!(!yaml.contains(&key), "only the hash is written");
    for tool in ["echo", "add", "count"] {
        assert!(
            yaml.contains(&format!("\"{tool}\": {{risk: MEDIUM}}")),
            "{yaml}"
        );
    }
    // A second init never overwrites.
    let (again, _, err2) = run_with_timeout(
        Command::new(bin("warden"))
            .arg("init")
            .arg(&dir)
            .args(["--upstream", &format!("http://{py_addr}/mcp")]),
        Duration::from_secs(60),
    )
    .expect("init runs");
    assert!(!again && err2.contains("not empty"), "{err2}");
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden"))
            .args(["policy", "test", "--bundle"])
            .arg(&dir),
        Duration::from_secs(30),
    )
    .expect("policy test");
    assert!(ok && out.contains("3 passed, 0 failed"), "{out}{err}");

    let addr: SocketAddr = listen.parse().expect("addr");
    let gw = Gateway::start_with(
        "unused",
        true,
        &[],
        &["--bundle", dir.to_str().expect("utf8")],
        Some(addr),
    )
    .expect("gateway on the init bundle");
    let url = gw.url("/mine/mcp");
    assert!(
        !gw.log().iter().any(|l| l.contains("identity.resource")),
        "init's resource URL matches the listener: {:?}",
        gw.log()
    );
    let run = run_client(
        "python (with the init key)",
        "python",
        Command::new(python())
            .arg(peers().join("py_client.py"))
            .args([&url, "streamable", "auto", "echo", "count"])
            .env("WARDEN_API_KEY", &key),
    );
    assert!(run.ok, "{}", run.report);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (status, headers, _) = rt
        .block_on(warden_tests::post_json(
            &url,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[],
        ))
        .expect("post");
    assert_eq!(status, 401);
    assert!(
        warden_tests::header(&headers, "www-authenticate").is_some_and(|h| h.contains(&format!(
            "127.0.0.1:{gw_port}/.well-known/oauth-protected-resource/mine/mcp"
        ))),
        "{headers:?}"
    );
    // The call is audited under the key's principal.
    let recs = gw.audit_when(|r| r.iter().any(|x| x["tool"] == "echo"));
    let call = recs
        .iter()
        .find(|x| x["tool"] == "echo")
        .expect("echo record");
    assert_eq!(call["principal"], "my-agent", "{call}");
    assert_eq!(call["server"], "mine", "{call}");
}

/// Runaway agents, with the real Python SDK client and server: the same
/// call a fourth time within the window is a loop, the seventh tool call of
/// a session is over its budget; a new session has a new budget but the
/// loop is the principal's. Each refusal is a tool error the model reads,
/// and is audited with its reason. A justification is audited with the call.
#[test]
fn runaway_sessions_and_loops_are_refused() {
    let _turn = heavy();
    let (_py, py_addr) = py_server("streamable-http");
    // A named principal: its loop holds across its sessions (anonymous
    // callers' loops are kept per session, see the next test).
    let hash = warden_config::access::hash_api_key("wk_loop_agent_1", &[3u8; 16]);
    let yaml = format!(
        "version: 1\npolicy: {{denial: tool_error}}\nidentity:\n  resource: http://127.0.0.1/py/mcp\n  api_keys:\n    - {{id: looper, tenant: acme, roles: [developer], hash: \"{hash}\"}}\nrunaway:\n  session: {{calls: 6, duration: 10m}}\n  loops: {{max_repeats: 3, window: 1m}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: py, upstreams: [\"{py_addr}\"]}}\nroutes:\n  - {{prefix: /py, server: py}}\n"
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_runaway_client.py"))
            .arg(gw.url("/py/mcp"))
            .env("WARDEN_API_KEY", "wk_loop_agent_1"),
        Duration::from_secs(90),
    )
    .expect("client ran");
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && report["ok"] == true, "{out}{err}");
    let first = report["first"].as_array().expect("first");
    let got: Vec<(bool, String)> = first
        .iter()
        .map(|r| {
            (
                r["error"] == true,
                r["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // Three echoes, then the loop.
    for g in &got[..3] {
        assert_eq!(g, &(false, "same".to_owned()), "{got:?}");
    }
    assert!(got[3].0 && got[3].1.contains("loop_detected"), "{got:?}");
    // The refused echo did not count: three adds fit the budget of six.
    for (i, g) in got[4..7].iter().enumerate() {
        assert_eq!(g, &(false, (i + 2).to_string()), "{got:?}");
    }
    assert!(
        got[7].0
            && got[7].1.contains("session_budget_exceeded")
            && got[7].1.contains("6 tool calls"),
        "{got:?}"
    );
    // A new session: a new budget, the same principal's loop.
    let second = &report["second"];
    assert_eq!(second[0]["text"], "4", "{second}");
    assert!(
        second[1]["error"] == true
            && second[1]["text"]
                .as_str()
                .is_some_and(|t| t.contains("loop_detected")),
        "{second}"
    );
    let recs = gw.audit_when(|r| r.iter().filter(|x| x["decided_by"] == "runaway").count() >= 3);
    let refused: Vec<&str> = recs
        .iter()
        .filter(|x| x["decided_by"] == "runaway")
        .filter_map(|x| x["reason"].as_str())
        .collect();
    assert_eq!(
        refused,
        [
            "loop_detected",
            "session_budget_exceeded:calls",
            "loop_detected"
        ],
        "{recs:?}"
    );

    // The justification is audited with the call (DLP-redacted).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (status, _, body) = rt
        .block_on(warden_tests::post_json(
            &gw.url("/py/mcp"),
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add","arguments":{"a":5,"b":5}}}"#,
            &[
                ("x-api-key", "wk_loop_agent_1"),
                ("x-warden-justification", "INC-42 approved by bob, token AKIAIOSFODNN7EXAMPLE"),
            ],
        ))
        .expect("post");
    assert!(
        status == 200 || status == 400 || status == 404,
        "{status} {body:?}"
    );
    let recs = gw.audit_when(|r| r.iter().any(|x| x["justification"].is_string()));
    let j = recs
        .iter()
        .find_map(|x| x["justification"].as_str())
        .expect("a record with the justification");
    assert!(j.starts_with("INC-42 approved by bob"), "{j}");
    assert!(!j.contains("AKIAIOSFODNN7EXAMPLE"), "DLP redacts it: {j}");
}

/// The Python SDK decodes a string argument of a parameter that is not a
/// string as JSON before the tool sees it (`"[\"us\"]"` becomes the list
/// `['us']`). Until the tool's input schema is known to the gateway, a
/// rule over that argument would judge a string while the tool acts on a
/// list: refused (`argument_type_unknown`), never forwarded. The list
/// itself is judged by the rule; once the server's listing pinned the
/// schema, the schema guard refuses the string form.
#[test]
fn a_string_the_python_sdk_decodes_waits_for_the_tools_schema() {
    let _turn = heavy();
    let (_py, py_addr) = py_server("streamable-http");
    let yaml = format!(
        "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {{name: py, upstreams: [\"{py_addr}\"]}}\nroutes:\n  - {{prefix: /py, server: py}}\n"
    );
    let policy = r#"package warden.authz
import rego.v1
default decision := {"allow": true, "reason": "ok"}
decision := {"allow": false, "reason": "regions_mismatch"} if {
	input.request.tool == "deploy"
	some r in input.request.arguments.regions
	r != "eu"
}
"#;
    let gw = Gateway::start_with(
        &yaml,
        true,
        &[("policies/authz.rego", policy.as_bytes())],
        &[],
        None,
    )
    .expect("gateway");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let url = gw.url("/py/mcp");
    let post = |body: String, session: Option<&str>| {
        let mut h: Vec<(&str, &str)> = vec![("mcp-protocol-version", "2025-06-18")];
        if let Some(s) = session {
            h.push(("mcp-session-id", s));
        }
        let (status, headers, b) = rt
            .block_on(warden_tests::post_json(&url, body, &h))
            .expect("post");
        let text = String::from_utf8_lossy(&b).into_owned();
        let sid = warden_tests::header(&headers, "mcp-session-id").map(str::to_owned);
        (status, sid, text)
    };
    let (status, sid, text) = post(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#.to_owned(),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let sid = sid.expect("session id");
    let (status, _, _) = post(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
        Some(&sid),
    );
    assert_eq!(status, 202);
    let call = |id: u32, regions: Value| {
        let body = serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":"deploy","arguments":{"service":"web","regions":regions}}});
        let (_, _, text) = post(body.to_string(), Some(&sid));
        warden_tests::rpc_messages(&text)
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id}: {text}"))
    };
    let reason = |m: &Value| m["error"]["data"]["reason"].as_str().map(str::to_owned);
    // No schema known yet: the string forms are refused, whatever their spelling.
    for (id, v) in [
        (1, Value::from("[\"us\"]")),
        (2, Value::from(" [\"us\"]\n")),
        (3, Value::from("[\"us\", NaN]")),
    ] {
        let m = call(id, v.clone());
        assert_eq!(
            reason(&m).as_deref(),
            Some("argument_type_unknown"),
            "{v}: {m}"
        );
    }
    // The list is judged by the rule.
    let m = call(4, serde_json::json!(["us"]));
    assert!(
        m["result"]["isError"] == true
            && m["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("regions_mismatch")),
        "{m}"
    );
    let m = call(5, serde_json::json!(["eu"]));
    let text = m["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text, "deployed web to eu (list)", "{m}");
    // None of the refused calls reached the server: it deployed once.
    let recs = gw.audit_when(|r| {
        r.iter()
            .filter(|x| x["tool"] == "deploy" && x["direction"] == "request")
            .count()
            >= 5
    });
    let outcomes: Vec<(String, String)> = recs
        .iter()
        .filter(|x| x["tool"] == "deploy" && x["direction"] == "request")
        .map(|x| {
            (
                x["outcome"].as_str().unwrap_or_default().to_owned(),
                x["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|(o, _)| o == "forwarded").count(),
        1,
        "{outcomes:?}"
    );
    // Listed through the gateway, the schema says `array`: the string
    // form is now the schema guard's to refuse.
    let (_, _, text) = post(
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#.to_owned(),
        Some(&sid),
    );
    assert!(text.contains("\"deploy\""), "{text}");
    let m = call(7, Value::from("[\"eu\"]"));
    assert!(
        m["result"]["isError"] == true
            && m["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("/regions: fails the schema's `type`")),
        "{m}"
    );
}

/// Outbound identity by assertion: the upstream (the real Python SDK server)
/// trusts nothing but JWTs the gateway signs, verified with PyJWT against
/// the gateway's JWKS, and answers `whoami` with the user behind the agent.
/// Each principal's call carries its own identity; the client's key never
/// reaches the upstream; a call straight to the upstream, or with a token
/// signed by another key, is refused there.
#[test]
fn upstreams_verify_identity_assertions_against_the_jwks() {
    let _turn = heavy();
    let py_port = free_port();
    let py_addr: SocketAddr = format!("127.0.0.1:{py_port}").parse().expect("addr");
    let audience = format!("http://{py_addr}/mcp");
    let key = |id: &str, tenant: &str, role: &str, secret: &str| {
        let hash = warden_config::access::hash_api_key(secret, &[7u8; 16]);
        format!("    - {{id: {id}, tenant: {tenant}, roles: [{role}], hash: \"{hash}\"}}\n")
    };
    let yaml = format!(
        "version: 1\nassertions: {{issuer: https://gw.example, rotate: 1h}}\nidentity:\n  resource: http://127.0.0.1/py/mcp\n  api_keys:\n{}{}service_groups:\n  - name: g\n    servers:\n      - name: py\n        upstreams: [\"{py_addr}\"]\n        health_check: {{interval: 1s}}\n        identity_assertion: {{audience: \"{audience}\", ttl: 30s}}\nroutes:\n  - {{prefix: /py, server: py}}\n",
        key("alice", "acme", "developer", "wk_alice_secret_1"),
        key("bob", "globex", "operator", "wk_bob_secret_2"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    let jwks_url = format!("http://{}/.well-known/jwks.json", gw.admin);
    let mut py = spawn(
        "python assertion server",
        Command::new(python())
            .arg(peers().join("py_assertion_server.py"))
            .args([
                &py_port.to_string(),
                &jwks_url,
                &audience,
                "https://gw.example",
            ]),
    );
    wait_port(py_addr, &mut py);
    let deadline = Instant::now() + Duration::from_secs(20);
    while warden_tests::sync_get_status(gw.admin, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the upstream never became healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let whoami = |secret: &str| whoami(&gw.url("/py/mcp"), ("WARDEN_API_KEY", secret));
    let alice = whoami("wk_alice_secret_1");
    assert_eq!(alice["sub"], "alice", "{alice}");
    assert_eq!(alice["tenant"], "acme");
    assert_eq!(alice["roles"], serde_json::json!(["developer"]));
    assert_eq!(alice["auth"], "api_key");
    assert_eq!(alice["aud"], audience.as_str());
    assert_eq!(alice["iss"], "https://gw.example");
    // The assertion names the call's trace, as its audit record does.
    let trace = alice["trace_id"].as_str().expect("trace_id").to_owned();
    assert_eq!(trace.len(), 32, "{alice}");
    let recs = gw.audit_when(|r| r.iter().any(|x| x["tool"] == "whoami"));
    let call = recs
        .iter()
        .find(|x| x["tool"] == "whoami" && x["direction"] == "request")
        .expect("the call's record");
    assert_eq!(call["trace_id"], trace.as_str(), "{call}");
    assert_eq!(call["principal"], "alice");
    let bob = whoami("wk_bob_secret_2");
    assert_eq!(bob["sub"], "bob", "{bob}");
    assert_eq!(bob["tenant"], "globex");

    // The JWKS on the admin listener: Ed25519 keys, cacheable.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (s, h, body) = rt
        .block_on(warden_tests::request(
            &jwks_url,
            "GET",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .expect("jwks");
    assert_eq!(s, 200);
    assert!(warden_tests::header(&h, "cache-control").is_some_and(|c| c.starts_with("max-age=")));
    let jwks: Value = serde_json::from_slice(&body).expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3, "previous, current and next period: {jwks}");
    assert!(keys
        .iter()
        .all(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519" && k["d"].is_null()));

    // Straight to the upstream: no assertion, no service; a token signed by
    // another key is refused too (the SDK answers 401).
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let direct = |auth: Option<&str>| {
        let mut h = vec![];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        rt.block_on(warden_tests::post_json(&audience, init, &h))
            .expect("direct")
            .0
    };
    assert_eq!(direct(None), 401);
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let kid = keys[1]["kid"].as_str().expect("kid");
        let header = b64.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#));
        let claims = b64.encode(format!(
            r#"{{"iss":"https://gw.example","aud":"{audience}","sub":"mallory","iat":1,"nbf":1,"exp":9999999999,"jti":"x"}}"#
        ));
        format!("Bearer {header}.{claims}.{}", b64.encode([0u8; 64]))
    };
    assert_eq!(direct(Some(&forged)), 401);
    drop(py);
}

/// Human approval of risky calls, end to end with the Python SDK client and
/// server, a signing control agent and its `approvals` CLI:
/// - a HIGH call (the policy asks one approver) is held with an approval id;
///   the caller cannot approve it under its own name; alice approves; the
///   retried call is served once, its approval used up;
/// - changed arguments do not fit an approval (member order does not matter);
/// - a CRITICAL call (the tier asks two) needs two distinct approvers;
/// - a denial is told with the approver's name; an unused approval lapses;
/// - a client that declared URL-mode elicitation gets one (-32042);
/// - the fleet token cannot decide, the audit chain verifies and links the
///   held call, each approver's decision and the served call; the agent and
///   the gateway export the metrics the alert rules read.
#[test]
fn risky_calls_wait_for_their_approvers() {
    let _turn = heavy();
    use warden_tests::{Agent, FLEET_TOKEN};
    let (_py, py_addr) = py_server("streamable-http");
    let dir = tempfile::tempdir().expect("tmp");
    let (source, state) = (dir.path().join("source"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    let key = warden_config::access::hash_api_key("wk_agent7_secret", &[9u8; 16]);
    std::fs::write(
        source.join("warden.yaml"),
        format!(
            "version: 1\npolicy: {{entrypoint: data.ops.decision, denial: tool_error}}\nidentity:\n  resource: http://127.0.0.1/py/mcp\n  api_keys:\n    - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{key}\"}}\napprovals:\n  require: {{CRITICAL: 2}}\n  expires: 2s\n  pending: 10m\ncatalog:\n  py:\n    default_risk: LOW\n    tools:\n      add: {{risk: HIGH}}\n      checksum: {{risk: CRITICAL}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: py, upstreams: [\"{py_addr}\"]}}\nroutes:\n  - {{prefix: /py, server: py}}\n"
        ),
    )
    .expect("yaml");
    std::fs::write(
        source.join("policies/ops.rego"),
        "package ops\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\", \"require_approval\": {\"approvers\": 1, \"reason\": \"adds need a second pair of eyes\"}} if {\n\tinput.request.tool == \"add\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
    )
    .expect("rego");
    let tokens = [
        ("alice", "approver-alice-token-0001"),
        ("bob", "approver-bob-token-0002"),
        ("agent-7", "approver-self-token-0003"),
    ];
    let approvers: String = tokens
        .iter()
        .map(|(n, t)| {
            use sha2::Digest;
            format!("{n}: {}\n", hex::encode(sha2::Sha256::digest(t.as_bytes())))
        })
        .collect();
    let approvers_file = dir.path().join("approvers.yaml");
    std::fs::write(&approvers_file, approvers).expect("approvers");
    let (private, public) = warden_tests::keygen(dir.path(), "k");
    let agent = Agent::start_with(
        &source,
        &state,
        Some(&private),
        &["--approvers".as_ref(), approvers_file.as_os_str()],
    )
    .expect("agent");
    let gw = Gateway::on_agent(
        &agent.url,
        &public,
        &dir.path().join("gw-state"),
        "gw-approvals",
    )
    .expect("gateway");
    let deadline = Instant::now() + Duration::from_secs(20);
    while warden_tests::sync_get_status(gw.admin, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_approval_client.py"))
            .args([&gw.url("/py/mcp"), "2"])
            .env("WARDEN_API_KEY", "wk_agent7_secret")
            .env("WARDEN_AGENT_BIN", bin("warden-agent"))
            .env("WARDEN_AGENT_URL", &agent.url)
            .env("APPROVER_ALICE", tokens[0].1)
            .env("APPROVER_BOB", tokens[1].1)
            .env("APPROVER_SELF", tokens[2].1),
        Duration::from_secs(120),
    )
    .expect("client ran");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && r["ok"] == true, "{out}{err}");
    let text = |k: &str| r[k]["text"].as_str().unwrap_or("").to_owned();
    let id = |k: &str| r[k]["id"].as_str().unwrap_or("").to_owned();
    // Held, with an id and where to approve; never reached the server.
    assert_eq!(r["held"]["error"], true, "{r}");
    assert!(id("held").starts_with("ap_"), "{r}");
    assert!(
        text("held").contains("held for human approval")
            && text("held").contains(&format!("{}/v1/approvals/{}", agent.url, id("held"))),
        "{r}"
    );
    // No self-approval; alice's counts.
    assert_eq!(r["self"]["ok"], false, "{r}");
    assert!(
        r["self"]["out"]
            .as_str()
            .unwrap_or("")
            .contains("own calls"),
        "{r}"
    );
    assert_eq!(r["alice"]["ok"], true, "{r}");
    // Changed arguments: another approval. The approved one, in another
    // member order, is served; once.
    assert!(
        r["changed"]["error"] == true && id("changed") != id("held"),
        "{r}"
    );
    assert_eq!(
        r["served"],
        serde_json::json!({"error": false, "text": "3", "id": null})
    );
    assert!(
        r["reused"]["error"] == true && !id("reused").is_empty() && id("reused") != id("held"),
        "used up: {r}"
    );
    // CRITICAL: two distinct approvers.
    assert!(text("critical_held").contains("0 of 2"), "{r}");
    assert!(text("critical_one").contains("1 of 2"), "{r}");
    assert_eq!(r["crit_alice_again"]["ok"], false, "{r}");
    assert_eq!(r["crit_bob"]["ok"], true, "{r}");
    assert_eq!(r["critical_served"]["error"], false, "{r}");
    // Denied, with who denied; expired.
    assert!(
        text("denied").contains("denied by approver bob (not today)"),
        "{r}"
    );
    assert_eq!(r["approve_changed"]["ok"], true, "{r}");
    assert!(
        r["expired"]["error"] == true
            && !id("expired").is_empty()
            && id("expired") != id("changed"),
        "an approval unused for longer than `expires` lapses: {r}"
    );
    // URL-mode elicitation for a client that declared it.
    let el = &r["elicited"]["elicitation"];
    assert!(
        el["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{}/v1/approvals/ap_", agent.url))),
        "{r}"
    );
    assert!(
        el["id"].as_str().is_some_and(|i| i.starts_with("ap_")),
        "{r}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    // A gateway's token can neither list nor decide.
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let (s, _, _) = rt
        .block_on(warden_tests::request(
            &format!("{}/v1/approvals/{}/approve", agent.url, id("changed")),
            "POST",
            &[("authorization", &bearer)],
            bytes::Bytes::new(),
            false,
        ))
        .expect("post");
    assert_eq!(s, 403);
    // The CLI lists what waits (the admin token may look).
    let (ok, listed, err) = run_with_timeout(
        Command::new(bin("warden-agent"))
            .args(["approvals", "--agent", &agent.url, "list"])
            .env("WARDEN_APPROVER_TOKEN", warden_tests::ADMIN_TOKEN),
        Duration::from_secs(20),
    )
    .expect("list");
    assert!(ok, "{err}");
    assert!(
        listed.contains(&id("expired")) && listed.contains("acme/agent-7 → py.add"),
        "{listed}"
    );
    let agent_metrics = rt
        .block_on(warden_tests::request(
            &format!("{}/metrics", agent.url),
            "GET",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned())
        .expect("metrics");
    assert!(
        agent_metrics
            .lines()
            .any(|l| l.starts_with("warden_agent_approvals_waiting ") && !l.ends_with(" 0")),
        "{agent_metrics}"
    );
    assert!(agent_metrics.contains("warden_agent_approval_oldest_wait_seconds"));
    let m = rt.block_on(gw.metrics());
    assert!(
        m.contains(
            "warden_risky_calls_total{outcome=\"forwarded\",risk=\"CRITICAL\",server=\"py\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("warden_approvals_total{answer=\"approved\",server=\"py\"} 2"),
        "{m}"
    );

    // The audit chain: held, each decision, the served call — one id.
    let first = id("held");
    let recs = gw.audit_when(|r| {
        r.iter()
            .any(|x| x["approval"]["id"] == first.as_str() && x["outcome"] == "forwarded")
    });
    let linked: Vec<(&str, &str)> = recs
        .iter()
        .filter(|x| x["approval"]["id"] == first.as_str())
        .map(|x| {
            (
                x["direction"].as_str().unwrap_or(""),
                x["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        linked,
        [
            ("request", "denied"),
            ("approval", "approved"),
            ("request", "forwarded")
        ],
        "{recs:?}"
    );
    let held = recs
        .iter()
        .find(|x| x["approval"]["id"] == first.as_str())
        .expect("held");
    assert_eq!(held["reason"], "approval_pending", "{held}");
    assert_eq!(held["approval"]["required"], 1);
    assert_eq!(
        held["approval"]["reason"],
        "adds need a second pair of eyes"
    );
    let decision = recs
        .iter()
        .find(|x| x["approval"]["id"] == first.as_str() && x["direction"] == "approval")
        .expect("decision");
    assert_eq!(decision["approval"]["approver"], "alice", "{decision}");
    assert_eq!(decision["approval"]["comment"], "looks fine");
    let crit: Vec<&str> = recs
        .iter()
        .filter(|x| x["direction"] == "approval" && x["tool"] == "checksum")
        .filter_map(|x| x["approval"]["approver"].as_str())
        .collect();
    assert_eq!(crit, ["alice", "bob"], "{recs:?}");
    assert!(recs
        .iter()
        .any(|x| x["reason"] == "approval_denied"
            && x["approval"]["approvers"] == serde_json::json!([])));
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden"))
            .args(["audit", "verify"])
            .arg(gw.dir.path().join("audit.jsonl")),
        Duration::from_secs(30),
    )
    .expect("verify");
    assert!(ok, "{out}{err}");
}

/// Starts `node tests/peers/oauth_server.mjs CONFIG` (the `oidc-provider`
/// library as a real authorization server); returns it and its issuer URL.
fn oauth_server(config: &std::path::Path) -> (Proc, String) {
    listening(
        "oauth server",
        Command::new("node")
            .arg(peers().join("oauth_server.mjs"))
            .arg(config),
    )
}

/// Every outbound identity mode verified by a real upstream (the Python SDK
/// server checking each request's JWT against its issuer's JWKS with PyJWT),
/// with a real OAuth authorization server (`oidc-provider`) on loopback:
/// - token exchange (RFC 8693): the upstream sees the user behind the agent
///   (`sub`), for its own audience, issued by the authorization server, with
///   the gateway as the actor; one principal never gets another's token;
///   the exchanged token is cached until just before it expires, then
///   fetched again; an API-key caller has nothing to exchange (403);
/// - client credentials: the gateway's own service token, cached across
///   callers;
/// - the caller's own token, opt-in: passed on only when issued for that
///   upstream (403 otherwise, never passed);
/// - the authorization server down: a clear error, and no call.
#[test]
fn each_outbound_identity_mode_is_verified_by_a_real_upstream() {
    let _turn = heavy();
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    // The identity provider that issued the callers' tokens.
    warden_tests::openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "idp.pem"]);
    warden_tests::openssl(
        d,
        &[
            "pkey", "-in", "idp.pem", "-pubout", "-outform", "DER", "-out", "idp.der",
        ],
    );
    let der = std::fs::read(d.join("idp.der")).expect("der");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    let jwks = serde_json::json!({"keys": [{"kty":"OKP","crv":"Ed25519","x":x,"kid":"idp","alg":"EdDSA","use":"sig"}]});
    let idp_dir = d.join("idp");
    std::fs::create_dir_all(&idp_dir).expect("mkdir");
    std::fs::write(idp_dir.join("jwks.json"), jwks.to_string()).expect("jwks");
    let gw_aud = "http://127.0.0.1/gw";
    let key =
        jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(d.join("idp.pem")).expect("pem"))
            .expect("ed key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = |sub: &str, aud: Value| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some("idp".into());
        jsonwebtoken::encode(
            &h,
            &serde_json::json!({"iss": "https://idp.example", "sub": sub, "aud": aud, "tenant": "acme", "iat": now, "exp": now + 600}),
            &key,
        )
        .expect("sign")
    };
    // Upstream A trusts the authorization server; upstream B, the IdP.
    let (a_port, b_port, idp_port) = (free_port(), free_port(), free_port());
    let aud_a = format!("http://127.0.0.1:{a_port}/mcp");
    let aud_b = format!("http://127.0.0.1:{b_port}/mcp");
    let alice = token("alice", serde_json::json!(gw_aud));
    // Alice's token for the server that takes callers' own tokens.
    let alice_b = token("alice", serde_json::json!([gw_aud, aud_b]));
    let bob = token("bob", serde_json::json!(gw_aud));
    let config = d.join("oauth.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "port": 0,
            // Long enough for three SDK client sessions in a row (about
            // 2 s each on a slow machine) to fall inside one token's life.
            "ttl": 12,
            "clients": [{"client_id": "warden-gw", "client_secret": "gw-secret-0123456789",
                         "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]}],
            "resources": {aud_a.clone(): {"scope": "tools"}},
            "subject": {"issuer": "https://idp.example", "audience": gw_aud, "jwks": jwks},
        })
        .to_string(),
    )
    .expect("config");
    let (mut oauth, issuer) = oauth_server(&config);
    let mut idp = spawn(
        "idp jwks server",
        Command::new(python())
            .args([
                "-m",
                "http.server",
                &idp_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&idp_dir),
    );
    let mut up_a = spawn(
        "python upstream (authorization server tokens)",
        Command::new(python())
            .arg(peers().join("py_assertion_server.py"))
            .args([
                &a_port.to_string(),
                &format!("{issuer}/jwks"),
                &aud_a,
                &issuer,
            ]),
    );
    let mut up_b = spawn(
        "python upstream (caller tokens)",
        Command::new(python())
            .arg(peers().join("py_assertion_server.py"))
            .args([
                &b_port.to_string(),
                &format!("http://127.0.0.1:{idp_port}/jwks.json"),
                &aud_b,
                "https://idp.example",
            ]),
    );
    for (port, p) in [
        (a_port, &mut up_a),
        (b_port, &mut up_b),
        (idp_port, &mut idp),
    ] {
        wait_port(format!("127.0.0.1:{port}").parse().expect("addr"), p);
    }
    std::fs::write(d.join("gw-secret"), "gw-secret-0123456789\n").expect("secret");
    let api_key = warden_config::access::hash_api_key("wk_plain_key_1", &[5u8; 16]);
    let yaml = format!(
        "version: 1\nidentity:\n  resource: {gw_aud}\n  jwt: {{issuer: \"https://idp.example\", jwks_file: jwks.json, audiences: [\"{gw_aud}\"]}}\n  api_keys:\n    - {{id: keyed, tenant: acme, roles: [developer], hash: \"{api_key}\"}}\nservice_groups:\n  - name: g\n    servers:\n      - name: tx\n        upstreams: [\"127.0.0.1:{a_port}\"]\n        oauth: {{grant: token_exchange, token_endpoint: \"{issuer}/token\", client_id: warden-gw, client_secret: {{file: gw-secret}}, audience: \"{aud_a}\", scope: tools}}\n      - name: cc\n        upstreams: [\"127.0.0.1:{a_port}\"]\n        oauth: {{grant: client_credentials, token_endpoint: \"{issuer}/token\", client_id: warden-gw, client_secret: {{file: gw-secret}}, audience: \"{aud_a}\"}}\n      - name: ct\n        upstreams: [\"127.0.0.1:{b_port}\"]\n        caller_token: {{audience: \"{aud_b}\"}}\nroutes:\n  - {{prefix: /tx, server: tx}}\n  - {{prefix: /cc, server: cc}}\n  - {{prefix: /ct, server: ct}}\n"
    );
    let jwks_text = jwks.to_string();
    let gw = Gateway::start_with(
        &yaml,
        true,
        &[
            ("jwks.json", jwks_text.as_bytes()),
            ("gw-secret", b"gw-secret-0123456789\n"),
        ],
        &[],
        None,
    )
    .expect("gateway");
    let whoami = |path: &str, bearer: &str| {
        whoami(&gw.url(&format!("/{path}/mcp")), ("WARDEN_BEARER", bearer))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let stats = || -> Value {
        rt.block_on(warden_tests::request(
            &format!("{issuer}/stats"),
            "GET",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .ok()
        .and_then(|(_, _, b)| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
    };

    // Token exchange: the user, for this upstream, by this authorization
    // server, the gateway acting.
    let first_exchange = std::time::Instant::now();
    let a1 = whoami("tx", &alice);
    assert_eq!(a1["sub"], "alice", "{a1}");
    assert_eq!(a1["aud"], aud_a.as_str(), "{a1}");
    assert_eq!(a1["iss"], issuer.as_str(), "{a1}");
    assert_eq!(a1["act"]["sub"], "warden-gw", "{a1}");
    assert_eq!(a1["tenant"], "acme", "{a1}");
    // Every request of that session (initialize, initialized, the call) was
    // served by one exchange.
    assert_eq!(stats()["token_exchange"], 1, "{}", stats());
    let b1 = whoami("tx", &bob);
    assert_eq!(b1["sub"], "bob", "another principal, its own token: {b1}");
    assert_eq!(stats()["token_exchange"], 2);
    let a2 = whoami("tx", &alice);
    assert_eq!(a2["sub"], "alice");
    assert_eq!(stats()["token_exchange"], 2, "cached: {}", stats());
    // The authorization server's tokens live 12 s: past that, a new one.
    std::thread::sleep(Duration::from_millis(12_200).saturating_sub(first_exchange.elapsed()));
    assert_eq!(whoami("tx", &alice)["sub"], "alice");
    assert_eq!(stats()["token_exchange"], 3, "refreshed: {}", stats());

    // Client credentials: the gateway's own token, whoever calls.
    let c1 = whoami("cc", &alice);
    assert_eq!(c1["sub"], "warden-gw", "{c1}");
    assert_eq!(c1["aud"], aud_a.as_str());
    assert_eq!(whoami("cc", &bob)["sub"], "warden-gw");
    assert_eq!(stats()["client_credentials"], 1, "{}", stats());

    // The caller's own token, only where it was issued for the upstream.
    let own = whoami("ct", &alice_b);
    assert_eq!(own["sub"], "alice", "{own}");
    assert_eq!(own["iss"], "https://idp.example", "{own}");
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let post = |path: &str, h: &[(&str, &str)]| -> (u16, Value) {
        let (s, _, b) = rt
            .block_on(warden_tests::post_json(&gw.url(path), call, h))
            .expect("post");
        (s, serde_json::from_slice(&b).unwrap_or_default())
    };
    let bob_auth = format!("Bearer {bob}");
    let (s, v) = post("/ct/mcp", &[("authorization", &bob_auth)]);
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["data"]["reason"], "caller_token_audience", "{v}");
    assert_eq!(v["id"], 7);
    // Calls that miss the cache together make one exchange, not one each.
    let before = stats()["token_exchange"].as_u64().unwrap_or(0);
    let dave = token("dave", serde_json::json!(gw_aud));
    let dave_auth = format!("Bearer {dave}");
    let together: Vec<(u16, Value)> =
        rt.block_on(futures_util::future::join_all((0..8).map(|_| {
            let url = gw.url("/tx/mcp");
            let h = dave_auth.clone();
            async move {
                let (s, _, b) =
                    warden_tests::post_json(&url, call, &[("authorization", h.as_str())])
                        .await
                        .expect("post");
                (s, serde_json::from_slice(&b).unwrap_or_default())
            }
        })));
    assert!(together.iter().all(|(s, _)| *s != 502), "{together:?}");
    assert_eq!(
        stats()["token_exchange"].as_u64().unwrap_or(0),
        before + 1,
        "one exchange for eight calls that missed together"
    );
    // That server holds Alice's token now: it cannot replay it at the
    // gateway against another server.
    let alice_b_auth = format!("Bearer {alice_b}");
    let (s, v) = post("/tx/mcp", &[("authorization", &alice_b_auth)]);
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["error"]["data"]["reason"], "caller_token_elsewhere",
        "{v}"
    );
    assert_eq!(v["id"], 7, "{v}");
    // An API-key caller has no token to exchange.
    let (s, v) = post("/tx/mcp", &[("x-api-key", "wk_plain_key_1")]);
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["error"]["data"]["reason"],
        "token_exchange_needs_caller_token"
    );
    // The authorization server down: a clear error, and no call.
    let _ = oauth.child.kill();
    let _ = oauth.child.wait();
    let carol = token("carol", serde_json::json!(gw_aud));
    let carol_auth = format!("Bearer {carol}");
    let (s, v) = post("/tx/mcp", &[("authorization", &carol_auth)]);
    assert_eq!(s, 502, "{v}");
    assert_eq!(
        v["error"]["data"]["reason"], "token_endpoint_unavailable",
        "{v}"
    );
    let m = rt.block_on(gw.metrics());
    assert!(
        m.contains("warden_outbound_tokens_total{grant=\"token_exchange\",result=\"cached\",server=\"tx\"}"),
        "{m}"
    );
    let recs = gw.audit_when(|r| {
        r.iter()
            .any(|x| x["outcome"] == "token_endpoint_unavailable")
    });
    assert!(
        recs.iter()
            .any(|x| x["principal"] == "carol" && x["outcome"] == "token_endpoint_unavailable"),
        "{recs:?}"
    );
}

/// stdio upstreams behind the gateway: the TypeScript "everything" server
/// run over stdio serves the Python and TypeScript SDK clients (tools,
/// progress) through every guard; a hostile Python SDK server sees only the
/// environment the bundle gives it (a DLP rule redacts what it leaks back),
/// its stderr flood reaches the log bounded, its crash fails the call in
/// flight and a new session gets a new process; a process bound refuses
/// more; the processes end with the gateway.
#[test]
fn stdio_servers_run_behind_the_gateway_with_every_guard() {
    let _turn = heavy();
    let entry = peers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let marker = format!("warden-stdio-test-{}", std::process::id());
    let raw_dir = tempfile::tempdir().expect("tmp");
    let raw_log = raw_dir.path().join("lines.jsonl");
    let yaml = format!(
        "version: 1\ndlp:\n  rules:\n    - {{name: pii, detectors: [email], direction: response, action: redact}}\nservice_groups:\n  - name: local\n    servers:\n      - name: ev\n        stdio: {{command: /usr/bin/node, args: [\"{}\", stdio], max_processes: 4}}\n      - name: hostile\n        stdio:\n          command: \"{}\"\n          args: [\"{}\", \"{marker}\"]\n          env: {{GIVEN: \"alice@example.com\"}}\n          max_processes: 2\n          limits: {{cpu: 1m, memory_mb: 1024, open_files: 128}}\n      - name: raw\n        stdio: {{command: \"{}\", args: [\"{}\", \"{}\"]}}\nroutes:\n  - {{prefix: /ev, server: ev}}\n  - {{prefix: /hostile, server: hostile}}\n  - {{prefix: /raw, server: raw}}\n",
        entry.display(),
        python().display(),
        peers().join("py_stdio_server.py").display(),
        python().display(),
        peers().join("raw_stdio_server.py").display(),
        raw_log.display(),
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let mut runs = Vec::new();
    for mode in ["auto", "legacy"] {
        runs.push(run_client(
            if mode == "auto" {
                "python (default)"
            } else {
                "python (legacy)"
            },
            "typescript over stdio",
            Command::new(python())
                .arg(peers().join("py_client.py"))
                .args([
                    &gw.url("/ev/mcp"),
                    "streamable",
                    mode,
                    "echo",
                    "trigger-long-running-operation",
                ]),
        ));
    }
    runs.push(run_client(
        "typescript",
        "typescript over stdio",
        Command::new("node")
            .arg(peers().join("ts_client.mjs"))
            .args([&gw.url("/ev/mcp"), "echo", "trigger-long-running-operation"])
            .current_dir(peers()),
    ));
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} → {}: {}", r.client, r.server, r.report))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));

    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_stdio_client.py"))
            .arg(gw.url("/hostile/mcp"))
            .env("WARDEN_TEST_CANARY", "must-not-leak"),
        Duration::from_secs(90),
    )
    .expect("client ran");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && r["ok"] == true, "{out}{err}");
    assert_eq!(r["echo"]["text"], "over stdio", "{r}");
    // Only the bundle's environment, and what leaks back is judged.
    let given = r["given"]["text"].as_str().unwrap_or("");
    assert!(
        !given.contains("alice@example.com") && !given.is_empty(),
        "{r}"
    );
    assert_eq!(r["path"]["text"], "<unset>", "{r}");
    assert_eq!(r["canary"]["text"], "<unset>", "{r}");
    assert_eq!(r["shout"]["text"], "shouted", "{r}");
    // The process reads the arguments as judged, digit for digit.
    assert_eq!(r["number"]["text"], "10000000000000000001", "{r}");
    // The crash fails the call in flight; a new session works.
    assert_eq!(r["crash"]["error"], true, "{r}");
    assert_eq!(r["new_session"]["text"], "again", "{r}");
    let log = gw.log();
    let shouted = log.iter().filter(|l| l.contains("shouting line")).count();
    assert!(
        shouted > 0 && shouted <= 200,
        "bounded: {shouted} lines logged"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("more lines not logged") && l.contains("hostile")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("stdio server exited")),
        "{log:?}"
    );

    // A line that is not JSON-RPC is dropped, never forwarded: the
    // client gets the answer after it, and the log names the server.
    let rt0 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let init0 = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (s0, h0, b0) = rt0
        .block_on(warden_tests::post_json(
            &gw.url("/raw/mcp"),
            init0,
            &[("accept", "application/json, text/event-stream")],
        ))
        .expect("post");
    let text0 = String::from_utf8_lossy(&b0);
    assert!(
        s0 == 200 && text0.contains("\"name\":\"raw\""),
        "{s0} {text0}"
    );
    assert!(!text0.contains("not json"), "{text0}");
    // The line dropped is logged by the process's reader, which may write
    // it just after the answer went out (a loaded machine): waited for.
    let dropped = |log: Vec<String>| {
        log.iter()
            .any(|l| l.contains("not JSON: dropped") && l.contains("server=raw"))
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !dropped(gw.log()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dropped(gw.log()), "{:?}", gw.log());
    // One judged message is one line for the process, whatever whitespace
    // it holds: raw LF and CR between tokens (JSON allows them) would split
    // this ping into three lines, the second a tools/call nobody judged.
    let sid0 = warden_tests::header(&h0, "mcp-session-id")
        .expect("session")
        .to_owned();
    let smuggled = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":{\"z\":[\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"purge\",\"arguments\":{}}}\r\n]}}";
    let (s1, _, b1) = rt0
        .block_on(warden_tests::post_json(
            &gw.url("/raw/mcp"),
            smuggled,
            &[
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", &sid0),
            ],
        ))
        .expect("post");
    assert_eq!(s1, 200, "{}", String::from_utf8_lossy(&b1));
    let lines: Vec<String> = std::fs::read_to_string(&raw_log)
        .expect("the raw server's log")
        .lines()
        .map(|l| serde_json::from_str::<String>(l).expect("logged line"))
        .collect();
    let methods: Vec<String> = lines
        .iter()
        .map(|l| {
            let m: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line that is not one message ({e}): {l:?}"));
            m["method"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(
        methods.last().map(String::as_str),
        Some("ping"),
        "{lines:?}"
    );
    assert!(!methods.iter().any(|m| m == "tools/call"), "{lines:?}");
    // The process bound: two sessions, then a clear refusal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (s, _, b) = rt
            .block_on(warden_tests::post_json(
                &gw.url("/hostile/mcp"),
                init,
                &[("accept", "application/json, text/event-stream")],
            ))
            .expect("post");
        statuses.push((s, String::from_utf8_lossy(&b).into_owned()));
    }
    assert_eq!(statuses[0].0, 200, "{statuses:?}");
    assert_eq!(statuses[1].0, 200, "{statuses:?}");
    assert!(
        statuses[2].0 == 429 && statuses[2].1.contains("(stdio.max_p"),
        "{statuses:?}"
    );
    // The processes end with the gateway.
    let running = || {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(running() >= 2, "the two sessions' processes run");
    drop(gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() > 0 {
        assert!(
            Instant::now() < deadline,
            "stdio processes outlived the gateway"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A policy that refuses one underlying tool (by its member server and
/// upstream name), however it is reached; lists stay open.
const VIRTUAL_POLICY: &str = r#"package warden.authz
import rego.v1
decision := {"allow": false, "reason": "checksum_forbidden"} if {
	input.server.name == "py"
	input.request.tool == "checksum"
	not input.request.listing
} else := {"allow": true, "reason": "ok"}
"#;

#[test]
fn virtual_servers_compose_http_and_stdio_members_under_every_guard() {
    let _turn = heavy();
    let (py, py_addr) = py_server("streamable-http");
    let (_rs, rs_addr) = {
        let (p, addr) = listening(
            "rmcp server (paged)",
            Command::new(bin("rmcp-server")).env("RMCP_PAGE_SIZE", "1"),
        );
        (p, addr)
    };
    let entry = peers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let marker = format!("warden-virtual-test-{}", std::process::id());
    let yaml = format!(
        r#"version: 1
dlp:
  rules:
    - {{name: pii, detectors: [email], direction: response, action: redact}}
service_groups:
  - name: tools
    servers:
      - name: py
        upstreams: ["{py_addr}"]
        health_check: {{interval: 1s}}
      - name: ev
        stdio: {{command: /usr/bin/node, args: ["{entry}", stdio], max_processes: 8}}
      - name: rs
        upstreams: ["{rs_addr}"]
      - name: hostile
        stdio:
          command: "{python}"
          args: ["{hostile}", "{marker}"]
          env: {{GIVEN: "alice@example.com"}}
          max_processes: 8
      - name: workspace
        virtual:
          members:
            - server: py
              tools:
                add: {{alias: plus, description: "Adds 1000 to a", hidden: {{b: 1000}}}}
                count: {{defaults: {{steps: 2}}}}
                echo: {{title: "Echo (Python)"}}
            - {{server: ev}}
            - {{server: rs, prefix: always}}
            - {{server: hostile, prefix: always}}
routes:
  - {{prefix: /workspace, server: workspace}}
  - {{prefix: /py, server: py}}
"#,
        entry = entry.display(),
        python = python().display(),
        hostile = peers().join("py_stdio_server.py").display(),
    );
    let gw = Gateway::start_with(
        &yaml,
        true,
        &[("policies/authz.rego", VIRTUAL_POLICY.as_bytes())],
        &[],
        None,
    )
    .expect("gateway");
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_virtual_client.py"))
            .arg(gw.url("/workspace/mcp")),
        Duration::from_secs(120),
    )
    .expect("client ran");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && r["ok"] == true, "{out}{err}\n{}", gw.log().join("\n"));
    assert_eq!(r["server"], "workspace", "{r}");
    // Merged, prefixed (an earlier member keeps the bare name), paged.
    let tools: Vec<&str> = r["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for want in [
        "echo",
        "plus",
        "count",
        "checksum",
        "ev_echo",
        "trigger-sampling-request",
        "rs_echo",
        "rs_count",
        "hostile_env",
    ] {
        assert!(tools.contains(&want), "{want} missing from {tools:?}");
    }
    assert!(!tools.contains(&"add"), "{tools:?}");
    assert!(r["pages"].as_u64() >= Some(2), "{r}");
    assert!(
        r["cursor"].as_str().is_some_and(|c| c.starts_with("wvc1.")),
        "{r}"
    );
    // The tool view: alias, description, the hidden argument gone.
    assert_eq!(r["plus_view"]["description"], "Adds 1000 to a", "{r}");
    assert_eq!(
        r["plus_view"]["properties"],
        serde_json::json!(["a"]),
        "{r}"
    );
    // Calls routed to each member.
    assert_eq!(r["echo"]["text"], "to python", "{r}");
    assert!(
        r["ev_echo"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("to everything"),
        "{r}"
    );
    assert_eq!(r["rs_echo"]["text"], "to rmcp", "{r}");
    assert_eq!(r["plus"]["text"], "1005", "{r}");
    assert!(
        r["plus_hidden"]["error"] == true
            && r["plus_hidden"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("set by the gateway"),
        "{r}"
    );
    assert!(
        r["plus_case"]["error"] == true
            && !r["plus_case"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("1001"),
        "{r}"
    );
    assert_eq!(r["count"]["text"], "counted 2", "{r}");
    assert_eq!(r["count_progress"], 2, "{r}");
    assert_eq!(r["rs_count_progress"], 3, "{r}");
    // Sampling from a member, answered by the client.
    assert!(
        r["sampling"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("sampled by the client"),
        "{r}"
    );
    // The rule on the underlying tool holds through the virtual name.
    assert!(
        r["checksum"]["error"] == true
            && r["checksum"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("checksum_forbidden"),
        "{r}"
    );
    assert_eq!(r["unknown"]["error"], true, "{r}");
    // The stdio member: only the bundle's environment, responses DLP'd.
    assert_eq!(r["env_path"]["text"], "<unset>", "{r}");
    let given = r["env_given"]["text"].as_str().unwrap_or("");
    assert!(
        !given.is_empty() && !given.contains("alice@example.com"),
        "{r}"
    );
    assert_eq!(r["shout"]["text"], "shouted", "{r}");
    // A crash fails the call in flight; the member's session opens again.
    assert_eq!(r["crash"]["error"], true, "{r}");
    assert_eq!(r["after_crash"]["text"], "back again", "{r}");
    assert!(r["resource_pages"].as_u64() >= Some(1), "{r}");
    assert_eq!(r["greeting"], "hello from the python server", "{r}");
    // A prompt, routed by name to the stdio member; a completion by its
    // prompt; a read by the member's template; a subscription; the level.
    assert!(r["prompt"].as_str().is_some_and(|p| !p.is_empty()), "{r}");
    assert_eq!(r["completion"], serde_json::json!(["Engineering"]), "{r}");
    assert_eq!(r["template_read"], 1, "{r}");
    assert_eq!(r["subscribed"], true, "{r}");
    assert_eq!(r["log_level"], true, "{r}");
    assert_eq!(r["echo_title"], "Echo (Python)", "{r}");
    // The audit trail names the underlying server and tool, and the way.
    let audit = gw.audit_when(|recs| {
        recs.iter()
            .any(|a| a["tool"] == "checksum" && a["via"] == "workspace")
    });
    let denied = audit
        .iter()
        .find(|a| a["tool"] == "checksum" && a["via"] == "workspace")
        .expect("checksum record");
    assert_eq!(denied["server"], "py", "{denied}");
    assert_eq!(denied["decided_by"], "policy", "{denied}");
    // The TypeScript SDK client: the paged rmcp member, its progress, and
    // a resource read routed by URI.
    let ts = run_client(
        "typescript",
        "virtual",
        Command::new("node")
            .arg(peers().join("ts_client.mjs"))
            .args([&gw.url("/workspace/mcp"), "rs_echo", "rs_count"])
            .current_dir(peers()),
    );
    assert!(ts.ok, "{}", ts.report);
    let tr: Value = serde_json::from_str(&ts.report).unwrap_or_default();
    assert_eq!(tr["progress_events"], 3, "{tr}");
    assert_eq!(tr["read"], 1, "{tr}");

    // A member killed mid-session: its calls fail with an error naming it,
    // the others and the listing go on, /status says so; once it is back
    // its session is opened again without the client noticing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let accept = ("accept", "application/json, text/event-stream");
    let (s, h, b) = rt
        .block_on(warden_tests::post_json(
            &gw.url("/workspace/mcp"),
            init,
            &[accept],
        ))
        .expect("init");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let sid = warden_tests::header(&h, "mcp-session-id")
        .expect("session id")
        .to_owned();
    let on_session = [
        accept,
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let call = |id: u32, tool: &str, args: &str| -> (u16, String) {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        );
        let (s, _, b) = rt
            .block_on(warden_tests::post_json(
                &gw.url("/workspace/mcp"),
                body,
                &on_session,
            ))
            .expect("call");
        (s, String::from_utf8_lossy(&b).into_owned())
    };
    let (s, b) = call(2, "echo", r#"{"text":"before"}"#);
    assert!(s == 200 && b.contains("before"), "{s} {b}");
    drop(py);
    let (s, b) = call(3, "echo", r#"{"text":"while down"}"#);
    assert!(
        s == 200 && b.contains("`py` is unavailable") && !b.contains("while down"),
        "{s} {b}"
    );
    let (s, b) = call(4, "rs_echo", r#"{"text":"others go on"}"#);
    assert!(s == 200 && b.contains("others go on"), "{s} {b}");
    let list = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#;
    let (s, _, b) = rt
        .block_on(warden_tests::post_json(
            &gw.url("/workspace/mcp"),
            list,
            &on_session,
        ))
        .expect("list");
    let b = String::from_utf8_lossy(&b);
    assert!(
        s == 200
            && b.contains("\"rs_echo\"")
            && b.contains("\"ev_echo\"")
            && !b.contains("\"checksum\""),
        "{s} {b}"
    );
    let status = rt.block_on(gw.status());
    let py_health = status["virtual_servers"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["server"] == "workspace"))
        .and_then(|w| w["members"].as_array())
        .and_then(|m| m.iter().find(|x| x["member"] == "py"))
        .cloned()
        .unwrap_or_default();
    assert!(
        py_health["healthy"] == false && py_health["failures"].as_u64() > Some(0),
        "{status}"
    );
    let metrics = rt
        .block_on(warden_tests::request(
            &format!("http://{}/metrics", gw.admin),
            "GET",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("warden_virtual_member_failures_total")
                && l.contains("member=\"py\"")
                && l.contains("server=\"workspace\"")),
        "{metrics}"
    );
    let mut back = spawn(
        "python server, again",
        Command::new(python())
            .arg(peers().join("py_server.py"))
            .arg(py_addr.port().to_string())
            .arg("streamable-http"),
    );
    wait_port(py_addr, &mut back);
    // Back in rotation at the next health check (1 s here); the member's
    // session is then opened again on the call that finds it gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (s, b) = loop {
        let (s, b) = call(6, "echo", r#"{"text":"after restart"}"#);
        if b.contains("after restart") || Instant::now() > deadline {
            break (s, b);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(s == 200 && b.contains("after restart"), "{s} {b}");
    // DELETE ends the session (and each member's).
    let (s, _, _) = rt
        .block_on(warden_tests::request(
            &gw.url("/workspace/mcp"),
            "DELETE",
            &on_session,
            bytes::Bytes::new(),
            false,
        ))
        .expect("delete");
    assert_eq!(s, 200);
    let (s, _) = call(7, "rs_echo", r#"{"text":"gone"}"#);
    assert_eq!(s, 404);
    // Member routes exist only for the aggregator.
    for secret in [None, Some("guess")] {
        let mut h = vec![("accept", "application/json, text/event-stream")];
        if let Some(s) = secret {
            h.push(("x-warden-virtual", s));
        }
        let (s, _, b) = rt
            .block_on(warden_tests::post_json(
                &gw.url("/.warden/virtual/workspace/py/mcp"),
                init,
                &h,
            ))
            .expect("post");
        assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
    }
}

#[test]
fn a_hostile_member_cannot_cross_the_virtual_server() {
    let _turn = heavy();
    let (_hostile, hostile_addr) = listening(
        "hostile member",
        Command::new(python()).arg(peers().join("hostile_member.py")),
    );
    let (_rs, rs_addr) = rmcp_server();
    let yaml = format!(
        r#"version: 1
identity:
  resource: http://127.0.0.1/combo/mcp
  api_keys:
    - id: agent-dev
      tenant: acme
      roles: [developer]
      hash: "sha256:d0abfb21f2a5d2fc66a2e0c5f9b369c4:995c0dc437d925d6baad52296a0ef3c5be924b056ab931cd5a2284bf8ba3bc0a"
    - id: alice-ops
      tenant: acme
      roles: [operator]
      hash: "sha256:8771d3578b7a4dc4b3526100880cca03:c349f1202007a966b733cae64bd8e2f2642c7d8ca75e5b66d779624e436cb92b"
service_groups:
  - name: t
    servers:
      - {{name: hostile, upstreams: ["{hostile_addr}"]}}
      - {{name: rs, upstreams: ["{rs_addr}"]}}
      - name: combo
        virtual: {{members: [{{server: hostile, prefix: never}}, {{server: rs, prefix: always}}]}}
routes:
  - {{prefix: /combo, server: combo}}
"#
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_virtual_hostile.py"))
            .args([
                &gw.url("/combo/mcp"),
                "wk_demo_dev_7Qm2",
                "wk_demo_ops_Z8r5",
            ]),
        Duration::from_secs(90),
    )
    .expect("client ran");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && r["ok"] == true, "{out}{err}\n{}", gw.log().join("\n"));
    let text = r.to_string();
    assert_eq!(
        r["tools"],
        serde_json::json!([
            "ask",
            "cancelled",
            "echo",
            "rs_count",
            "rs_echo",
            "spoof",
            "wait"
        ]),
        "{r}"
    );
    // The member's question reached the client under an id of the
    // aggregator's, and the answer reached the member.
    assert!(
        r["asked_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("wv-ask-")),
        "{r}"
    );
    assert_eq!(r["answer_status"], 202, "{r}");
    assert_eq!(
        r["ask"]["result"]["content"][0]["text"], "roots: file:///workspace",
        "{r}"
    );
    // A forged answer is refused; injected responses never arrive.
    assert_eq!(r["forged_status"], 400, "{r}");
    assert_eq!(r["forged_cursor"], -32602, "{r}");
    assert!(!text.contains("SPOOFED"), "{r}");
    assert!(text.contains("real answer"), "{r}");
    assert!(
        r["get"].as_array().is_some_and(|g| g
            .iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")),
        "{r}"
    );
    // The cancellation reached the member that had the request, naming
    // it by the id the member got (the aggregator's, not the client's 77).
    let seen: Value = r["cancelled"]["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    assert!(
        seen["waits"].as_array().is_some_and(|w| w.len() == 1)
            && seen["cancelled"] == seen["waits"],
        "{r}"
    );
    assert!(
        r["wait"].as_array().is_some_and(|w| w.len() == 1),
        "cancelled: no answer: {r}"
    );
    // Another principal cannot use the session; batches are refused.
    assert!(r["other_status"] == 403 || r["other_status"] == 404, "{r}");
    assert_eq!(r["batch_status"], 400, "{r}");
    assert_eq!(r["delete"], 200, "{r}");
}

/// Legacy HTTP+SSE: a server may write a reply on its stream before its
/// POST's 202 is back at the gateway. The reply must still be judged as the
/// reply to its request (here: a result checked against the tool's
/// outputSchema), never dropped as one to no request. (Under load, the SDK
/// matrix's legacy client hung at its progress call this way.)
#[test]
fn legacy_replies_that_beat_their_202_are_judged_with_their_request() {
    let _turn = heavy();
    let (_server, addr) = listening(
        "legacy race server",
        Command::new(python()).arg(peers().join("legacy_race_server.py")),
    );
    let yaml = format!(
        "version: 1\nservice_groups:\n  - name: t\n    servers:\n      - {{name: race, upstreams: [\"{addr}\"]}}\nroutes:\n  - {{prefix: /race, server: race}}\n"
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let (ok, out, err) = run_with_timeout(
        Command::new(python())
            .arg(peers().join("py_legacy_race_client.py"))
            .arg(gw.url("/race/sse")),
        Duration::from_secs(60),
    )
    .expect("client ran");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_default();
    assert!(ok && r["ok"] == true, "{out}{err}\n{}", gw.log().join("\n"));
    assert_eq!(
        r["call"]["result"]["structuredContent"]["result"], "before the 202",
        "{r}"
    );
}
