//! A canary no reporter can steer; a policy that cannot run is never signed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use warden_tests::{
    bin, header, keygen, mock_bundle, post_json, request, run_with_timeout, Agent, Gateway, Mock,
    FLEET_TOKEN,
};

const POLICY: &str = r#"package warden.authz

import rego.v1

decision := {"allow": false, "reason": "blocked_tool"} if {
	input.request.method == "tools/call"
	input.request.tool in data.warden.blocked
} else := {"allow": true, "reason": "ok"}
"#;

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t"}}})
        .to_string()
}

fn write_source(dir: &Path, mock: SocketAddr, blocked: &[&str]) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(dir.join("warden.yaml"), mock_bundle(&[mock], "")).expect("yaml");
    std::fs::write(dir.join("policies/authz.rego"), POLICY).expect("rego");
    set_blocked(dir, blocked);
}

fn set_blocked(dir: &Path, blocked: &[&str]) {
    let tmp = dir.join(".data.json.tmp");
    std::fs::write(&tmp, json!({"warden": {"blocked": blocked}}).to_string()).expect("data");
    std::fs::rename(&tmp, dir.join("data.json")).expect("rename");
}

/// Gateways `gw0`… carrying `env=prod`, reporting every 200 ms.
fn fleet(agent: &Agent, public: &Path, dir: &Path, n: usize) -> Vec<Gateway> {
    (0..n)
        .map(|i| {
            Gateway::on_agent_with(
                &agent.url,
                public,
                &dir.join(format!("gw{i}")),
                &format!("gw{i}"),
                &["--report-interval", "200ms", "--label", "env=prod"],
            )
            .expect("gateway")
        })
        .collect()
}

async fn fleet_settled(agent: &Agent, ids: &[&str]) {
    let start = Instant::now();
    loop {
        let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
        let members = fleet["members"].as_array().cloned().unwrap_or_default();
        let ok = ids.iter().all(|id| {
            members
                .iter()
                .any(|m| m["id"] == *id && m["current"] == true)
        });
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fleet never settled: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rollout_ends(agent: &Agent, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (_, r) = agent
            .api("GET", "/v1/rollout", None)
            .await
            .expect("rollout");
        if r["state"] != "watching" {
            return r;
        }
        assert!(start.elapsed() < limit, "the canary never ended: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls `tool` on every gateway until stopped.
fn traffic(
    urls: Vec<String>,
    tool: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut id = 1000;
        while !stop.load(Ordering::Relaxed) {
            for u in &urls {
                id += 1;
                let _ = post_json(u, call(id, tool), &[]).await;
            }
        }
    })
}

/// How a hostile reporter behaves (each with the shared fleet token).
#[derive(Clone, Copy)]
enum Kind {
    /// Never fetches; reports the current revision, 5,000 denied calls
    /// every 50 ms.
    Ghost,
    /// Fetches what it reports, but its counters jump 5,000 every 50 ms.
    Jumper,
    /// Fetches; its counters go up and back down.
    Backwards,
    /// Fetches with other labels than it reports.
    Mislabelled,
    /// Fetches what it reports and counts plausibly (2,000 calls a
    /// second), every one denied.
    Plausible,
    /// Fetches what it reports, 40,000 calls a second, every one allowed:
    /// a loud member of a canary.
    LoudHealthy,
}

/// A reporter of `kind` as gateway `id`, until `stop`.
fn hostile(
    agent: &str,
    id: String,
    kind: Kind,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let agent = agent.to_owned();
    tokio::spawn(async move {
        let instance = format!("{:032x}", rand_u128(&id));
        let mut calls: u64 = 0;
        let mut round: u64 = 0;
        let mut revision = String::new();
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let fetch_labels = match kind {
                Kind::Mislabelled => "env=prod,zone=elsewhere",
                _ => "env=prod",
            };
            if !matches!(kind, Kind::Ghost) || revision.is_empty() {
                let who = if matches!(kind, Kind::Ghost) {
                    "someone-else"
                } else {
                    id.as_str()
                };
                let got = request(
                    &format!("{agent}/v1/bundles/current"),
                    "GET",
                    &[
                        ("authorization", &format!("Bearer {FLEET_TOKEN}")),
                        ("x-warden-gateway", who),
                        ("x-warden-instance", &instance),
                        ("x-warden-labels", fetch_labels),
                    ],
                    Bytes::new(),
                    false,
                )
                .await;
                if let Some(e) = got
                    .ok()
                    .and_then(|(_, h, _)| header(&h, "etag").map(str::to_owned))
                {
                    revision = e.trim_matches('"').to_owned();
                }
            }
            let step = match kind {
                Kind::Ghost | Kind::Jumper => 5000,
                // 40,000 calls a second: as many as a gateway may count.
                Kind::LoudHealthy => 2000,
                _ => 100,
            };
            calls += step;
            let reported = match kind {
                Kind::Backwards if round.is_multiple_of(2) => calls / 2,
                _ => calls,
            };
            let denied = if matches!(kind, Kind::LoudHealthy) {
                0
            } else {
                reported
            };
            let body = json!({
                "id": id, "instance": instance, "revision": revision, "healthy": true,
                "labels": {"env": "prod"},
                "stats": {"calls": reported, "denied": denied, "errors": 0, "latency": [],
                          "replies": reported, "withheld": 0},
            });
            let _ = post_json(
                &format!("{agent}/v1/fleet/report"),
                body.to_string(),
                &[("authorization", &format!("Bearer {FLEET_TOKEN}"))],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn rand_u128(seed: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    (u128::from(h.finish()) << 64) | u128::from(std::process::id())
}

/// A canary that denies every `echo`, watched while reporters with the
/// shared fleet token report, under the canary's labels, that the rest
/// denies everything too: one that never fetched a bundle, one whose
/// counters jump, one whose counters go back, one that fetched under other
/// labels, and three that fetched and count plausibly. None of them is the
/// baseline: the canary is rolled back, and the ones the agent cannot
/// trust are named. A healthy canary is still promoted beside them.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_reporters_cannot_get_a_denying_canary_promoted() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let agent = Agent::start_with(
        &source,
        &tmp.path().join("agent"),
        Some(&private),
        // Hostile ids of the first round are no candidates of the second.
        &[
            "--watch-interval".as_ref(),
            "0".as_ref(),
            "--stale-after".as_ref(),
            "2s".as_ref(),
        ],
    )
    .expect("agent");
    let gws = fleet(&agent, &public, tmp.path(), 3);
    let urls: Vec<String> = gws.iter().map(|g| g.url("/mock/mcp")).collect();
    fleet_settled(&agent, &["gw0", "gw1", "gw2"]).await;

    for (blocked, want) in [(["echo"], "rolled_back"), (["add"], "promoted")] {
        set_blocked(&source, &blocked);
        let stop = Arc::new(AtomicBool::new(false));
        let t = traffic(urls.clone(), "echo", stop.clone());
        let (s, v) = agent
            .api(
                "POST",
                "/v1/publish",
                Some(json!({"select": {"env": "prod"}, "canary": {"share": 0.3, "watch_secs": 8, "guard": {"min_calls": 10, "p99_slack_ms": 5000.0}}})),
            )
            .await
            .expect("publish");
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["target"]["members"].as_array().map(Vec::len),
            Some(1),
            "{v}"
        );
        let mut hostiles = Vec::new();
        for (id, kind) in [
            ("ghost", Kind::Ghost),
            ("jumper", Kind::Jumper),
            ("backwards", Kind::Backwards),
            ("mislabelled", Kind::Mislabelled),
            ("plausible-0", Kind::Plausible),
            ("plausible-1", Kind::Plausible),
            ("plausible-2", Kind::Plausible),
        ] {
            hostiles.push(hostile(
                &agent.url,
                format!("{id}-{want}"),
                kind,
                stop.clone(),
            ));
        }
        let r = rollout_ends(&agent, Duration::from_secs(40)).await;
        stop.store(true, Ordering::Relaxed);
        t.await.expect("traffic");
        for h in hostiles {
            h.await.expect("hostile");
        }
        assert_eq!(r["state"], want, "blocking {blocked:?}: {r}");
        if want == "rolled_back" {
            // A call already under way when the canary took its bundle may
            // be counted with the old one's answer: nearly all, not all.
            assert!(
                r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("denial rate ")),
                "{r}"
            );
            assert!(
                r["canary"]["denial_rate"].as_f64().is_some_and(|d| d > 0.9),
                "{r}"
            );
        }
        let untrusted = r["untrusted"].to_string();
        for id in ["ghost", "jumper", "backwards", "mislabelled"] {
            assert!(
                untrusted.contains(&format!("{id}-{want}")),
                "{id} counted: {r}"
            );
        }
        assert!(!untrusted.contains("plausible"), "{r}");
        fleet_settled(&agent, &["gw0", "gw1", "gw2"]).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
}

/// A member of the canary that reports many healthy calls does not hide
/// another member that denies every call (each is judged alone).
#[tokio::test(flavor = "multi_thread")]
async fn a_loud_member_does_not_hide_a_denying_one() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let agent = Agent::start_with(
        &source,
        &tmp.path().join("agent"),
        Some(&private),
        &["--watch-interval".as_ref(), "0".as_ref()],
    )
    .expect("agent");
    let gws = fleet(&agent, &public, tmp.path(), 1);
    let urls: Vec<String> = gws.iter().map(|g| g.url("/mock/mcp")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // The loud one is in the fleet before the canary: every gateway is
    // picked (share 100 %), it among them.
    let loud = hostile(&agent.url, "loud".into(), Kind::LoudHealthy, stop.clone());
    fleet_settled(&agent, &["gw0", "loud"]).await;
    set_blocked(&source, &["echo"]);
    let t = traffic(urls, "echo", stop.clone());
    let (s, v) = agent
        .api(
            "POST",
            "/v1/publish",
            Some(json!({"canary": {"share": 1.0, "watch_secs": 6, "guard": {"min_calls": 10}}})),
        )
        .await
        .expect("publish");
    assert_eq!(s, 200, "{v}");
    let r = rollout_ends(&agent, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    t.await.expect("traffic");
    loud.await.expect("loud");
    assert_eq!(r["state"], "rolled_back", "{r}");
    assert!(
        r["reason"].as_str().is_some_and(|s| s.contains("`gw0`")),
        "{r}"
    );
}

/// A bundle source whose policy is `rego` (as `policies/authz.rego`).
fn source_with(dir: &Path, rego: &str) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("warden.yaml"),
        mock_bundle(&["127.0.0.1:9".parse().expect("addr")], ""),
    )
    .expect("yaml");
    std::fs::write(dir.join("policies/authz.rego"), rego).expect("rego");
    std::fs::write(dir.join("data.json"), r#"{"warden": {"blocked": []}}"#).expect("data");
}

/// `warden validate` and `warden-agent build` on `dir`: (ok, output) each.
fn validate_and_build(dir: &Path, key: &Path) -> [(bool, String); 2] {
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden")).arg("validate").arg(dir),
        Duration::from_secs(30),
    )
    .expect("validate");
    let validate = (ok, format!("{out}{err}"));
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden-agent"))
            .arg("build")
            .arg(dir)
            .arg("--out")
            .arg(dir.with_extension("tar.gz"))
            .arg("--signing-key")
            .arg(key),
        Duration::from_secs(30),
    )
    .expect("build");
    [validate, (ok, format!("{out}{err}"))]
}

/// A policy that calls a function nothing defines (or a misspelled
/// builtin), or reads a rule its package does not declare, is refused by
/// `warden validate` and never signed by `warden-agent build`, the error
/// naming it; a valid policy laid out with tabs and comments passes both.
#[test]
fn a_policy_that_cannot_run_is_refused_and_layout_never_matters() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, _) = keygen(tmp.path(), "sign");
    let head = "package warden.authz\n\nimport rego.v1\n\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\n\n";
    for (i, (body, name)) in [
        ("decision if { not_defined_anywhere(input.request.method) }", "not_defined_anywhere"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if startswth(input.request.method, \"tools\")", "startswth"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if strings.upper(input.request.tool) == \"X\"", "strings.upper"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.warden.authz.allowed\nallow := true", "data.warden.authz.allowed"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.warden.authz.helper(1)", "data.warden.authz.helper"),
        ("unreached if { missing_helper(1) }", "missing_helper"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("bad{i}"));
        source_with(&dir, &format!("{head}{body}\n"));
        for (ok, out) in validate_and_build(&dir, &private) {
            assert!(!ok, "{body}: accepted: {out}");
            assert!(out.contains(name), "{body}: {out}");
        }
        assert!(!dir.with_extension("tar.gz").exists(), "{body}: signed");
    }
    for (i, text) in [
        "package warden.authz\nimport rego.v1\n\tdecision := {\"allow\": true, \"reason\": \"ok\"} if input.request.tool in data.warden.blocked\n\tdefault decision := {\"allow\": false, \"reason\": \"no\"}\n",
        "# policy\n  package   warden.authz\nimport rego.v1\n\n    decision := {\"allow\": true, \"reason\": \"ok\"} if {\n\tstartswith(input.request.method, \"tools\")\n}\n",
        "package warden\nimport rego.v1\nauthz.decision := {\"allow\": true, \"reason\": \"ok\"}\n",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("good{i}"));
        source_with(&dir, text);
        for (ok, out) in validate_and_build(&dir, &private) {
            assert!(ok, "{text}: refused: {out}");
        }
    }
}
