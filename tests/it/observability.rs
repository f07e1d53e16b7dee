//! The shipped monitoring assets work as shipped: promtool checks and
//! unit-tests the alert rules, a real Prometheus scrapes a running gateway
//! with those rules loaded, and the Grafana dashboard only queries metrics
//! the gateway exports.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{
    free_port, mock_bundle, post_json, request, root, run_with_timeout, Gateway, Mock, Proc,
};

fn monitoring() -> std::path::PathBuf {
    root().join("config/monitoring")
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let (ok, out, err) = run_with_timeout(
        Command::new("promtool")
            .current_dir(monitoring())
            .args(["check", "rules", "alerts.yml"]),
        Duration::from_secs(60),
    )
    .expect("promtool (scripts/setup.sh installs it)");
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run_with_timeout(
        Command::new("promtool").current_dir(monitoring()).args([
            "test",
            "rules",
            "alerts_test.yml",
        ]),
        Duration::from_secs(60),
    )
    .expect("promtool");
    assert!(ok, "{out}{err}");
}

async fn query(base: &str, q: &str) -> Value {
    let url = format!("{base}/api/v1/query?query={}", urlencode(q));
    match request(&url, "GET", &[], bytes::Bytes::new(), false).await {
        Ok((200, _, b)) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_gateway_with_the_rules_loaded() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    for i in 0..5 {
        let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}});
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), body.to_string(), &[])
            .await
            .expect("call");
        assert_eq!(s, 200);
    }
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        monitoring().join("alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .expect("rules");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: warden\n    static_configs: [{{targets: ['{}']}}]\n",
            gw.admin
        ),
    )
    .expect("config");
    let port = free_port();
    let child = Command::new("prometheus")
        .current_dir(dir.path())
        .arg("--config.file=prometheus.yml")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/setup.sh installs it)");
    let _prom = Proc {
        child,
        name: "prometheus".into(),
    };
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Value::Null;
    while Instant::now() < deadline {
        seen = query(
            &base,
            r#"sum(warden_mcp_messages_total{job="warden",method="tools/call",tool="echo"})"#,
        )
        .await;
        let up = query(&base, r#"up{job="warden"}"#).await;
        if up["data"]["result"][0]["value"][1] == "1"
            && seen["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                >= Some(5.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let calls: f64 = seen["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(calls >= 5.0, "Prometheus saw the calls: {seen}");
    // The rules loaded and evaluate without errors against live series.
    let (s, _, b) = request(
        &format!("{base}/api/v1/rules"),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("rules");
    assert_eq!(s, 200);
    let rules: Value = serde_json::from_slice(&b).expect("json");
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .leak()
                .iter()
        })
        .collect();
    assert!(all.len() >= 10, "{rules}");
    for r in &all {
        assert_ne!(
            r["health"], "err",
            "rule {} fails: {}",
            r["name"], r["lastError"]
        );
    }
    assert!(
        all.iter()
            .all(|r| r["state"] != "firing" || r["name"] == "WardenFleetRevisionSkew"),
        "a healthy gateway fires no alert: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_queries_only_exported_metrics() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}});
    post_json(&gw.url("/mock/mcp"), body.to_string(), &[])
        .await
        .expect("call");
    // Metrics are recorded in the logging phase, just after the answer left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exported = gw.metrics().await;
    while !exported.contains("# TYPE warden_mcp_messages_total ") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        exported = gw.metrics().await;
    }
    let dash: Value = serde_json::from_slice(
        &std::fs::read(monitoring().join("grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard json");
    let re = regex::Regex::new(r"warden_[a-z_]+").expect("re");
    let mut names = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            for m in re.find_iter(t["expr"].as_str().expect("expr")) {
                names.push(m.as_str().to_owned());
            }
        }
    }
    assert!(names.len() > 15);
    // Labelled families appear in /metrics only once they have a series; the
    // rest must at least be registered by the gateway.
    // Where the gateway's series are registered (its own, and those of the
    // servers it runs on loopback).
    let source = [
        "proxy/src/observability/metrics.rs",
        "proxy/local-servers/src/metrics.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(root().join(p)).expect(p))
    .collect::<String>();
    for core in [
        "warden_http_requests_total",
        "warden_mcp_messages_total",
        "warden_request_duration_seconds",
        "warden_bundle_info",
    ] {
        assert!(
            exported.contains(&format!("# TYPE {core} ")),
            "{core} exported"
        );
    }
    for n in names {
        let base = n.strip_suffix("_bucket").unwrap_or(&n);
        assert!(
            exported.contains(&format!("# TYPE {base} "))
                || source.contains(&format!("\"{base}\"")),
            "the dashboard queries {n}, which the gateway does not export"
        );
    }
}

/// Every flag the deployment examples pass to `warden run` / `warden-agent
/// serve` is one the binaries accept, and the probes use the admin endpoints.
#[test]
fn deployment_examples_use_real_flags_and_probes() {
    let help = |bin_name: &str, sub: &str| {
        let (ok, out, err) = run_with_timeout(
            Command::new(warden_tests::bin(bin_name)).args([sub, "--help"]),
            Duration::from_secs(30),
        )
        .expect("help");
        assert!(ok, "{err}");
        out
    };
    let run_help = help("warden", "run");
    let serve_help = help("warden-agent", "serve");
    let check = |args: &[String], help: &str, whence: &str| {
        for a in args {
            if let Some(flag) = a.strip_prefix("--") {
                let name = flag.split('=').next().unwrap_or(flag);
                assert!(
                    help.contains(&format!("--{name}")),
                    "{whence}: `--{name}` is not a flag of the binary"
                );
            }
        }
    };
    let dir = root().join("config/deploy");
    let mut wardens = 0;
    for file in ["kubernetes/sidecar.yaml", "kubernetes/edge.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("manifest");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml document");
            let containers = v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in containers {
                let args: Vec<String> = c["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                match args.first().map(String::as_str) {
                    Some("run") => {
                        wardens += 1;
                        check(&args, &run_help, file);
                        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{file}");
                        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{file}");
                        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin", "{file}");
                    }
                    Some("serve") => check(&args, &serve_help, file),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(wardens, 2, "a sidecar and an edge gateway");
    for (unit, help) in [
        ("warden.service", &run_help),
        ("warden-agent.service", &serve_help),
    ] {
        let text = std::fs::read_to_string(dir.join("systemd").join(unit)).expect("unit");
        let exec: String = text
            .split("\nExecStart=")
            .nth(1)
            .expect("ExecStart")
            .split("\n\n")
            .next()
            .unwrap_or("")
            .lines()
            .take_while(|l| !l.starts_with('#') && !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
        check(&args, help, unit);
        assert!(args.len() > 3, "{unit}: {exec}");
    }
}

/// `warden top` on a real terminal (tmux): it draws the running gateway in
/// place, and its numbers are the ones `/metrics` exports.
#[tokio::test(flavor = "multi_thread")]
async fn warden_top_shows_what_metrics_say_on_a_real_terminal() {
    let mock = warden_tests::Mock::start(&[]).expect("mock");
    let gw = Gateway::start(
        &warden_tests::mock_bundle(&[mock.addr], "kill_switch:\n  tools: [add]\n"),
        true,
    )
    .expect("gateway");
    let url = gw.url("/mock/mcp");
    let call = |id: u64, tool: &str| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t","a":1,"b":2}}})
            .to_string()
    };
    for i in 0..25 {
        let (s, _, _) = warden_tests::post_json(&url, call(i, "echo"), &[])
            .await
            .expect("echo");
        assert_eq!(s, 200);
    }
    for i in 100..104 {
        warden_tests::post_json(&url, call(i, "add"), &[])
            .await
            .expect("add");
    }

    // The server's socket in a directory of the test's own, removed with
    // it (`-L` puts it under /tmp/tmux-UID, where it outlived the server).
    let sock_dir = tempfile::tempdir().expect("tmux socket dir");
    let sock = sock_dir.path().join("tmux.sock").display().to_string();
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-S", &sock])
            .args(args)
            .output()
            .expect("tmux (scripts/setup.sh installs it)")
    };
    let top = format!(
        "{} top --admin {} --interval 300ms",
        warden_tests::bin("warden").display(),
        gw.admin
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "110",
        "-y",
        "45",
        &top,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let server_pid = String::from_utf8_lossy(&tmux(&["display-message", "-p", "#{pid}"]).stdout)
        .trim()
        .to_owned();
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-S", &self.0, "kill-server"])
                .status();
            if !self.1.is_empty() {
                let _ = Command::new("kill").arg(&self.1).status();
            }
        }
    }
    let _cleanup = Cleanup(sock.clone(), server_pid);
    let screen = |want: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = tmux(&["capture-pane", "-p", "-t", "top"]);
            let s = String::from_utf8_lossy(&out.stdout).to_string();
            if want(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let row = |s: &str, name: &str| -> Vec<String> {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let s = screen(&|s| row(s, "echo").get(1).map(String::as_str) == Some("25"));
    // What /metrics says, computed here independently.
    let (_, _, body) = warden_tests::request(
        &format!("http://{}/metrics", gw.admin),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("metrics");
    let metrics = String::from_utf8_lossy(&body).to_string();
    let mut by_tool: std::collections::BTreeMap<String, u64> = Default::default();
    let mut by_outcome: std::collections::BTreeMap<String, u64> = Default::default();
    let label = |l: &str, k: &str| {
        l.split(&format!("{k}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    for l in metrics.lines().filter(|l| {
        l.starts_with("warden_mcp_messages_total{") && l.contains("direction=\"request\"")
    }) {
        let n: u64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        *by_tool.entry(label(l, "tool")).or_default() += n;
        *by_outcome.entry(label(l, "outcome")).or_default() += n;
    }
    assert_eq!(by_tool.get("echo"), Some(&25), "{metrics}");
    assert_eq!(by_tool.get("add"), Some(&4), "{metrics}");
    assert_eq!(row(&s, "echo")[1], "25", "{s}");
    assert_eq!(
        row(&s, "add")[1..3],
        ["4", "4"],
        "every add was refused: {s}"
    );
    for (outcome, n) in &by_outcome {
        assert!(
            s.contains(&format!("{outcome} {n}")),
            "decisions {outcome} {n}: {s}"
        );
    }
    let total: u64 = by_outcome.values().sum();
    assert!(s.contains(&format!("calls {total:>10}")), "{s}");
    assert_eq!(
        row(&s, "default/anonymous").get(1),
        Some(&total.to_string()),
        "{s}"
    );
    let revision = gw.status().await["bundle"]["revision"]
        .as_str()
        .expect("revision")
        .to_owned();
    assert!(s.contains(&format!("revision {revision}\n")), "{s}");
    assert!(
        s.contains(&mock.addr.to_string()) && s.contains("healthy"),
        "{s}"
    );
    assert_eq!(
        s.matches("warden top").count(),
        1,
        "refreshed in place: {s}"
    );

    // More traffic: the same screen moves on.
    for i in 200..210 {
        warden_tests::post_json(&url, call(i, "echo"), &[])
            .await
            .expect("echo");
    }
    let s = screen(&|s| row(s, "echo").get(1).map(String::as_str) == Some("35"));
    assert_eq!(row(&s, "echo")[1], "35", "{s}");
    assert_eq!(s.matches("warden top").count(), 1, "{s}");
}
