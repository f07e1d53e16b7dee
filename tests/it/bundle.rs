//! Bundles: the shipped examples validate; broken bundles are refused with
//! every problem named by file and field path; TLS listeners serve h1 and h2.

use std::process::Command;
use std::time::Duration;

use warden_tests::{bin, root, run_with_timeout, Gateway, Mock};

#[test]
fn every_example_bundle_validates() {
    let dir = root().join("config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if !path.join("warden.yaml").exists() {
            continue;
        }
        n += 1;
        let (ok, out, err) = run_with_timeout(
            Command::new(bin("warden")).arg("validate").arg(&path),
            Duration::from_secs(30),
        )
        .expect("run");
        assert!(ok, "{}: {out}{err}", path.display());
        assert!(out.contains(": ok"), "{out}");
        // The control agent judges bundles with the same snapshot build.
        let (ok, out, err) = run_with_timeout(
            Command::new(bin("warden-agent")).arg("validate").arg(&path),
            Duration::from_secs(30),
        )
        .expect("run");
        assert!(ok, "agent: {out}{err}");
        assert!(out.contains(": ok"), "{out}");
    }
    assert!(n >= 1, "no example bundles found");
}

#[test]
fn broken_bundles_name_every_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("warden.yaml"),
        r#"version: 1
limits: {max_request_body: 4 parsecs, max_json_depth: 0}
timeouts: {connect: soon}
service_groups:
  - name: g
    servers:
      - {name: a, upstreams: ["not-an-address", "127.0.0.1:0"]}
      - {name: a, upstreams: []}
routes:
  - {prefix: "jira/", server: nowhere}
quotas:
  - {name: fleet, limit: 10, window: 1h, global: true, on_store_failure: maybe}
  - {name: slots, concurrency: 3, global: true}
"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("data.json"), "[1,2]").expect("write");
    let (ok, _, err) = run_with_timeout(
        Command::new(bin("warden")).arg("validate").arg(dir.path()),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!ok, "a broken bundle must fail validation");
    let (agent_ok, _, agent_err) = run_with_timeout(
        Command::new(bin("warden-agent"))
            .arg("validate")
            .arg(dir.path()),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!agent_ok);
    assert!(
        agent_err.contains("routes[0].server: unknown server `nowhere`"),
        "{agent_err}"
    );
    for needle in [
        "warden.yaml: limits.max_request_body: unknown size unit `parsecs`",
        "warden.yaml: limits.max_json_depth: must be greater than zero",
        "warden.yaml: timeouts.connect:",
        "warden.yaml: service_groups[0].servers[0].upstreams[0]: `not-an-address` is not an ip:port address",
        "warden.yaml: service_groups[0].servers[0].upstreams[1]: port 0",
        "warden.yaml: service_groups[0].servers[1].name: server `a` is already defined",
        "warden.yaml: service_groups[0].servers[1].upstreams: a server needs at least one upstream address",
        "warden.yaml: routes[0].prefix:",
        "warden.yaml: routes[0].server: unknown server `nowhere`",
        "data.json: must hold a JSON object",
        "warden.yaml: quotas[0].global: needs the `redis` section",
        "warden.yaml: quotas[0].on_store_failure: `maybe` is not local or closed",
        "warden.yaml: quotas[1].global: only exact `limit`/`window` quotas can be global",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // A typo in a field name fails loudly with its path instead of being ignored.
    std::fs::write(dir.path().join("data.json"), "{}").expect("write");
    std::fs::write(
        dir.path().join("warden.yaml"),
        "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: a, upstreams: [\"127.0.0.1:1\"], helth_check: {}}\nroutes: [{prefix: /a, server: a}]\n",
    )
    .expect("write");
    let (ok, _, err) = run_with_timeout(
        Command::new(bin("warden")).arg("validate").arg(dir.path()),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!ok);
    assert!(
        err.contains("service_groups[0].servers[0]") && err.contains("unknown field `helth_check`"),
        "{err}"
    );
    // `warden run` refuses a broken bundle the same way.
    let (ok, _, err) = run_with_timeout(
        Command::new(bin("warden"))
            .args(["run", "--listen", "127.0.0.1:1", "--bundle"])
            .arg(dir.path()),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!ok);
    assert!(err.contains("unknown field `helth_check`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_upstreams_verifies_certificates() {
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = warden_tests::self_signed(dir.path());
    // An inner gateway terminates TLS in front of the mock: a TLS MCP upstream.
    let port = warden_tests::free_port();
    let inner_yaml = format!(
        "version: 1\nlisteners:\n  - {{name: tls, address: \"127.0.0.1:{port}\", tls: {{cert: cert.pem, key: key.pem}}}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{}\"]}}\nroutes: [{{prefix: /, server: mock}}]\n",
        mock.addr
    );
    let _inner = Gateway::start_with(
        &inner_yaml,
        true,
        &[("cert.pem", &cert), ("key.pem", &key)],
        &[],
        Some(format!("127.0.0.1:{port}").parse().expect("addr")),
    )
    .expect("inner");
    let outer = |verify: bool| {
        format!("version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {{name: tls, upstreams: [\"127.0.0.1:{port}\"], host: \"localhost:{port}\", tls: {{sni: localhost, verify: {verify}}}}}\nroutes: [{{prefix: /t, server: tls}}]\n")
    };
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over tls"}}}"#;
    let gw = Gateway::start(&outer(false), false).expect("outer");
    let (s, _, b) = warden_tests::post_json(&gw.url("/t/mcp"), body, &[])
        .await
        .expect("call");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("over tls"));
    drop(gw);
    // Verification on: a certificate no trusted root signed is refused.
    let gw = Gateway::start(&outer(true), false).expect("outer");
    let (s, _, b) = warden_tests::post_json(&gw.url("/t/mcp"), body, &[])
        .await
        .expect("call");
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("-31001"));
    assert_eq!(
        mock.posts().await,
        1,
        "only the verified-off call reached the server"
    );
}

#[test]
fn tls_listener_serves_http1_and_http2() {
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = warden_tests::self_signed(dir.path());
    let port = warden_tests::free_port();
    let yaml = format!(
        "version: 1\nlisteners:\n  - {{name: tls, address: \"127.0.0.1:{port}\", tls: {{cert: cert.pem, key: key.pem}}}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{}\"]}}\nroutes: [{{prefix: /mock, server: mock}}]\n",
        mock.addr
    );
    let gw = Gateway::start_with(
        &yaml,
        true,
        &[("cert.pem", &cert), ("key.pem", &key)],
        &[],
        Some(format!("127.0.0.1:{port}").parse().expect("addr")),
    )
    .expect("gateway");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"tls"}}}"#;
    for (flag, want) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let (ok, out, err) = run_with_timeout(
            Command::new("curl")
                .args(["-sS", "-i", flag, "--cacert"])
                .arg(dir.path().join("cert.pem"))
                .args([
                    "-H",
                    "content-type: application/json",
                    "-H",
                    "accept: application/json, text/event-stream",
                    "--data",
                    body,
                ])
                .arg(format!("https://127.0.0.1:{port}/mock/mcp")),
            Duration::from_secs(30),
        )
        .expect("curl");
        assert!(ok, "curl {flag}: {err}");
        assert!(out.starts_with(want), "{flag}: {out}");
        assert!(out.contains("\"text\":\"tls\""), "{out}");
    }
    drop(gw);
}

/// Mistakes in warden.yaml are blamed on warden.yaml, once: an unknown field
/// names its path once, and an entrypoint naming no rule says which rule was
/// probably meant (it used to blame `policies/authz.rego`).
#[test]
fn config_mistakes_are_named_where_they_are() {
    let example = warden_tests::root().join("config/examples/sidecar");
    let copy = |edit: &dyn Fn(String) -> String| {
        let dir = tempfile::tempdir().expect("tmp");
        for f in ["data.json", ".manifest"] {
            std::fs::copy(example.join(f), dir.path().join(f)).expect("copy");
        }
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        std::fs::copy(
            example.join("policies/authz.rego"),
            dir.path().join("policies/authz.rego"),
        )
        .expect("copy");
        let yaml = std::fs::read_to_string(example.join("warden.yaml")).expect("read");
        std::fs::write(dir.path().join("warden.yaml"), edit(yaml)).expect("write");
        let (ok, out, err) = run_with_timeout(
            Command::new(bin("warden")).arg("validate").arg(dir.path()),
            Duration::from_secs(30),
        )
        .expect("run");
        (ok, format!("{out}{err}"))
    };
    let (ok, text) = copy(&|y: String| {
        y.replace(
            "      echo: {risk: LOW}",
            "      echo: {risk: LOW, colour: red}",
        )
    });
    assert!(!ok, "{text}");
    assert!(
        text.contains("catalog.mock.tools.echo.colour: unknown field `colour`"),
        "{text}"
    );
    assert_eq!(text.matches("catalog.mock.tools.echo").count(), 1, "{text}");
    let (ok, text) =
        copy(&|y: String| y.replace("data.warden.authz.decision", "data.warden.authz.decisoin"));
    assert!(!ok, "{text}");
    assert!(text.contains("warden.yaml"), "{text}");
    assert!(text.contains("did you mean `decision`?"), "{text}");
    assert!(!text.contains("authz.rego"), "{text}");
    // This session's sections: each mistake named at its path.
    for (edit, want) in [
        (
            "runaway:\n  loops: {max_repeats: 0, window: 1m}\n",
            "runaway.loops.max_repeats: must be greater than zero",
        ),
        (
            "runaway:\n  loops: {max_repeats: 3, window: 2d}\n",
            "runaway.loops.window: must be between 1s and 1d",
        ),
        (
            "runaway:\n  session: {}\n",
            "runaway.session: set calls, duration or per_tool",
        ),
        (
            "runaway:\n  session: {calls: 5, duration: soon}\n",
            "runaway.session.duration:",
        ),
        (
            "audit:\n  log_io: [HIGH, SEVERE]\n",
            "audit.log_io[1]: `SEVERE` is not a risk",
        ),
        (
            "assertions: {rotate: 10s}\n",
            "assertions.rotate: at least 1m",
        ),
        (
            "approvals:\n  require: {SEVERE: 1}\n",
            "approvals.require.SEVERE: `SEVERE` is not a risk",
        ),
        (
            "approvals:\n  require: {HIGH: 9}\n",
            "approvals.require.HIGH: must be between 1 and 5 approvers",
        ),
        (
            "approvals:\n  expires: 2d\n",
            "approvals.expires: must be between 1s and 1day",
        ),
        (
            "approvals:\n  url: ftp://x/{id}\n",
            "approvals.url: must be an http(s) URL",
        ),
        (
            "anomaly:\n  rate_factor: 0.5\n",
            "anomaly.rate_factor: must be a number above 1 and at most 1000",
        ),
        (
            "anomaly:\n  learning: soon\n",
            "anomaly.learning: `soon` is not a duration",
        ),
        (
            "anomaly:\n  accept: [{tenant: acme, principal: agent-dev, server: nope, tool: x}]\n",
            "anomaly.accept[0]: `nope` is not a server of this bundle",
        ),
        (
            "anomaly:\n  accept: [{tenant: acme, principal: agent-dev, tool: purge}]\n",
            "anomaly.accept[0]: names nothing to accept",
        ),
    ] {
        let (ok, text) = copy(&|y: String| {
            let y = y.replace("audit:\n  path: \"-\"\n", "");
            // The example's own `approvals:` (or `anomaly:`) section gives
            // way to the edit's.
            let own = ["approvals:", "anomaly:"]
                .into_iter()
                .find(|s| edit.starts_with(s));
            let y = match (own, own.and_then(|s| y.find(&format!("\n{s}\n")))) {
                (Some(_), Some(at)) => {
                    let end = y[at + 1..].find("\n\n").map_or(y.len(), |e| at + 1 + e);
                    format!("{}{}", &y[..at + 1], &y[end..])
                }
                _ => y,
            };
            format!("{y}\n{edit}")
        });
        assert!(!ok, "{edit}: {text}");
        assert!(text.contains(want), "{edit}: {text}");
    }
    for (server, want) in [
        (
            "        identity_assertion: {audience: \"\"}\n",
            "identity_assertion.audience: must name the upstream",
        ),
        (
            "        identity_assertion: {audience: https://x, ttl: 1h}\n",
            "identity_assertion.ttl: at most 5m",
        ),
        (
            "        identity_assertion: {audience: https://x, header: \"x y\"}\n",
            "identity_assertion.header: must be a header name",
        ),
        (
            "        credentials: {env: PATH}\n        identity_assertion: {audience: https://x}\n",
            "`credentials` already sets `authorization`",
        ),
        (
            "        oauth: {grant: password, token_endpoint: https://a/token, client_id: c, client_secret: {env: PATH}, audience: https://x}\n",
            "oauth.grant: `password` is not `token_exchange` or `client_credentials`",
        ),
        (
            "        oauth: {grant: token_exchange, token_endpoint: http://auth.example.com/token, client_id: c, client_secret: {env: PATH}, audience: https://x}\n",
            "oauth.token_endpoint: must be https",
        ),
        (
            "        oauth: {grant: token_exchange, token_endpoint: \"http://127.0.0.1@auth.example.com/token\", client_id: c, client_secret: {env: PATH}, audience: https://x}\n",
            "oauth.token_endpoint: must be https",
        ),
        (
            "        oauth: {grant: client_credentials, token_endpoint: https://a/token, client_id: c, client_secret: {env: WARDEN_NO_SUCH_VAR}, audience: https://x}\n",
            "oauth.client_secret.env: environment variable `WARDEN_NO_SUCH_VAR` is not set",
        ),
        (
            "        oauth: {grant: client_credentials, token_endpoint: https://a/token, client_id: c, client_secret: {env: PATH}, audience: https://x, header: host}\n",
            "oauth.header: `host` is a header the gateway sets or strips itself",
        ),
        (
            "        caller_token: {audience: \"http://127.0.0.1:8080/mock/mcp\"}\n",
            "caller_token.audience: names the gateway itself",
        ),
        (
            "        caller_token: {audience: https://x}\n        oauth: {grant: client_credentials, token_endpoint: https://a/token, client_id: c, client_secret: {env: PATH}, audience: https://x, header: x-token}\n",
            "`oauth` already says how this server learns who calls",
        ),
        (
            "        stdio: {command: /bin/true}\n",
            "a server is either `upstreams` or `stdio`, not both",
        ),
        (
            "        stdio: {command: true}\n",
            "stdio.command: must be an absolute path",
        ),
        (
            "          probe: icmp\n",
            "health_check.probe: `icmp` is not tcp, ping or initialize",
        ),
    ] {
        let (ok, text) = copy(&|y: String| {
            y.replace(
                "        health_check:\n          interval: 2s\n",
                &format!("        health_check:\n          interval: 2s\n{server}"),
            )
        });
        assert!(!ok, "{server}: {text}");
        assert!(text.contains(want), "{server}: {text}");
    }
    // Virtual servers: members are real servers of the bundle, once each,
    // with their own prefixes; rules are written for the members.
    for (virt, extra, want) in [
        (
            "{members: [{server: nowhere}]}",
            "",
            "members[0].server: no server `nowhere` in this bundle",
        ),
        (
            "{members: [{server: mock}, {server: mock}]}",
            "",
            "`mock` is a member twice",
        ),
        (
            "{members: [{server: mock}, {server: ws}]}",
            "",
            "`ws` is itself virtual",
        ),
        (
            "{members: []}",
            "",
            "a virtual server needs at least one member",
        ),
        (
            "{members: [{server: mock, prefix: sometimes}]}",
            "",
            "`sometimes` is not `always`, `never` or `conflict`",
        ),
        (
            "{members: [{server: mock, path: /a/../b}]}",
            "",
            "must be a plain path",
        ),
        (
            "{members: [{server: mock, tools: {echo: {alias: \"a b\"}}}]}",
            "",
            "must be a tool name",
        ),
        (
            "{members: [{server: mock, tools: {echo: {hidden: {x: 1}, defaults: {x: 2}}}}]}",
            "",
            "is also hidden",
        ),
        (
            "{members: [{server: mock}]}\n        upstreams: [\"127.0.0.1:1\"]",
            "",
            "has no `upstreams` of its own",
        ),
        (
            "{members: [{server: mock, tools: {echo: {alias: say}}}]}",
            "kill_switch:\n  tools: [say]\n",
            "`say` is a virtual server's alias: name the member's own tool",
        ),
        (
            "{members: [{server: mock}]}",
            "catalog:\n  ws: {default_risk: LOW}\n",
            "is a virtual server: list the tools under each member",
        ),
    ] {
        let (ok, text) = copy(&|y: String| {
            let y = y.replace(
                "        health_check:\n          interval: 2s\n",
                &format!("        health_check:\n          interval: 2s\n      - name: ws\n        virtual: {virt}\n"),
            );
            if extra.is_empty() {
                y
            } else if extra.starts_with("kill_switch:") {
                y.replacen(
                    "kill_switch:\n  tenants: []\n  principals: []\n  tools: []\n",
                    extra,
                    1,
                )
            } else {
                y.replacen("catalog:\n", extra, 1)
            }
        });
        assert!(!ok, "{virt}: {text}");
        assert!(text.contains(want), "{virt}: {text}");
    }
    let (ok, text) = copy(&|y: String| {
        y.replace(
            "        health_check:\n          interval: 2s\n",
            "        health_check:\n          interval: 2s\n      - name: ws\n        virtual: {members: [{server: mock, tools: {echo: {alias: say}}}]}\n",
        )
    });
    assert!(ok, "a virtual server over the example's mock: {text}");
    // The gateway's own member routes cannot be shadowed by a bundle route.
    let (ok, text) = copy(&|y: String| {
        y.replace(
            "  - prefix: /mock\n    server: mock\n",
            "  - prefix: /mock\n    server: mock\n  - prefix: /.warden/virtual\n    server: mock\n",
        )
    });
    assert!(
        !ok && text.contains("`/.warden` is the gateway's own"),
        "{text}"
    );
    // Listening elsewhere than identity.resource says: valid, with a warning.
    let (ok, text) =
        copy(&|y: String| y.replace("address: 127.0.0.1:8080", "address: 127.0.0.1:18080"));
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: identity.resource `http://127.0.0.1:8080/mock/mcp` names port 8080, but the gateway listens on 127.0.0.1:18080"),
        "{text}"
    );
}

/// A bundle directory edited in place shows a new revision on every edit,
/// even though its hidden `.manifest` (copied along from the example) still
/// names the same revision; `validate` prints the one the gateway will show.
#[tokio::test(flavor = "multi_thread")]
async fn an_edited_bundle_directory_gets_a_new_revision() {
    use warden_tests::mock_bundle;
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start_with(
        &mock_bundle(&[mock.addr], ""),
        false,
        &[(
            ".manifest",
            br#"{"revision": "copied-1", "roots": ["warden"]}"#,
        )],
        &[],
        None,
    )
    .expect("gateway");
    let rev = |st: serde_json::Value| st["bundle"]["revision"].as_str().expect("rev").to_owned();
    let first = rev(gw.status().await);
    assert!(first.starts_with("copied-1+"), "{first}");
    let validated = |want: &str| {
        let (ok, out, err) = run_with_timeout(
            Command::new(bin("warden"))
                .arg("validate")
                .arg(gw.dir.path()),
            Duration::from_secs(30),
        )
        .expect("validate");
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("revision {want},")), "{out}");
    };
    validated(&first);

    let mut seen = vec![first];
    for (n, extra) in [
        "kill_switch:\n  tools: [purge]\n",
        "kill_switch:\n  tools: [echo]\n",
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(
            gw.dir.path().join("warden.yaml"),
            mock_bundle(&[mock.addr], extra),
        )
        .expect("edit");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gw.status().await["bundle"]["reloads"].as_u64().unwrap_or(0) < n as u64 + 1 {
            assert!(std::time::Instant::now() < deadline, "no reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = rev(gw.status().await);
        assert!(now.starts_with("copied-1+"), "{now}");
        assert!(
            !seen.contains(&now),
            "edit {n} shows a new revision: {now} after {seen:?}"
        );
        validated(&now);
        seen.push(now);
    }
    // The reload log names both revisions.
    assert!(
        gw.log()
            .iter()
            .any(|l| l.contains("bundle applied") && l.contains(&seen[2]) && l.contains(&seen[1])),
        "{:?}",
        gw.log()
    );
}
