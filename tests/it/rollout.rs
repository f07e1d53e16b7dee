//! Safe rollout with the agent and three gateways: a bundle published to a
//! label selector reaches only the gateways carrying those labels; a
//! canary whose denial rate jumps is rolled back by the agent on its own,
//! a healthy one is promoted, and the kill switch reaches every gateway
//! while a canary is watched.

use super::*;

/// A gateway on `agent` carrying `labels`, reporting every 200 ms.
fn labelled(agent: &Agent, public: &Path, state: &Path, id: &str, labels: &[&str]) -> Gateway {
    let mut extra = vec!["--report-interval", "200ms"];
    for l in labels {
        extra.extend(["--label", l]);
    }
    Gateway::on_agent_with(&agent.url, public, state, id, &extra).expect("gateway")
}

/// Gateways `gw0`, `gw1`, … on `agent`, each carrying its labels, each
/// with its own state under `dir`.
fn fleet(agent: &Agent, public: &Path, dir: &Path, labels: &[&[&str]]) -> Vec<Gateway> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            labelled(
                agent,
                public,
                &dir.join(format!("gw{i}")),
                &format!("gw{i}"),
                l,
            )
        })
        .collect()
}

/// An agent that publishes only when told (`--watch-interval 0`).
fn manual_agent(source: &Path, state: &Path, key: &Path) -> Agent {
    Agent::start_with(
        source,
        state,
        Some(key),
        &["--watch-interval".as_ref(), "0".as_ref()],
    )
    .expect("agent")
}

/// Waits until the agent has heard from `n` gateways, each on its due revision.
async fn fleet_settled(agent: &Agent, n: usize) -> Value {
    let start = Instant::now();
    loop {
        let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
        let members = fleet["members"].as_array().cloned().unwrap_or_default();
        if members.len() == n && members.iter().all(|m| m["current"] == true) {
            return fleet;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fleet never settled: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member<'a>(fleet: &'a Value, id: &str) -> &'a Value {
    fleet["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("{id} not in {fleet}"))
}

async fn publish(agent: &Agent, body: Value) -> Value {
    let (s, v) = agent
        .api("POST", "/v1/publish", Some(body))
        .await
        .expect("publish");
    assert_eq!(s, 200, "{v}");
    v
}

/// Polls the rollout until its state is `want`.
async fn rollout_reaches(agent: &Agent, want: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (_, r) = agent
            .api("GET", "/v1/rollout", None)
            .await
            .expect("rollout");
        if r["state"] == want {
            return r;
        }
        assert!(
            start.elapsed() < limit,
            "the canary never became {want}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls `tool` on every gateway in turn until stopped; counts each
/// gateway's outcomes other than "ok".
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Traffic {
    fn start(urls: Vec<String>, tool: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut refused = vec![0u64; urls.len()];
            let mut id = 1000;
            while !flag.load(Ordering::Relaxed) {
                for (i, u) in urls.iter().enumerate() {
                    id += 1;
                    let (s, _, b) = post_json(u, call(id, tool), &[]).await.expect("post");
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    if s != 200 || v.get("error").is_some() || v["result"]["isError"] == true {
                        refused[i] += 1;
                    }
                }
            }
            refused
        });
        Traffic { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_published_to_a_label_reaches_only_those_gateways() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let agent = manual_agent(&source, &tmp.path().join("agent"), &private);
    let labels: [&[&str]; 3] = [
        &["env=prod", "region=eu"],
        &["env=prod", "region=us"],
        &["env=staging"],
    ];
    let gws = fleet(&agent, &public, tmp.path(), &labels);
    fleet_settled(&agent, 3).await;
    for g in &gws {
        assert_eq!(outcome(g, "echo").await, "ok");
    }

    // To staging only: the edit is in force there and nowhere else.
    set_blocked(&source, &["add", "echo"]);
    let v = publish(&agent, json!({"select": {"env": "staging"}})).await;
    assert_eq!(v["target"]["labels"]["env"], "staging", "{v}");
    until_all(&gws[2..], "echo", "denied", Duration::from_secs(10)).await;
    let fleet = fleet_settled(&agent, 3).await;
    for round in 0..5 {
        for g in &gws[..2] {
            assert_eq!(outcome(g, "echo").await, "ok", "round {round}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        member(&fleet, "gw2")["why"],
        "published to env=staging",
        "{fleet}"
    );
    assert_eq!(member(&fleet, "gw0")["why"], "published to all", "{fleet}");
    assert_eq!(member(&fleet, "gw1")["labels"]["region"], "us", "{fleet}");
    // The gateway says why it runs what it runs.
    let st = gws[2].status().await;
    assert_eq!(st["bundle"]["rollout"], "published to env=staging", "{st}");
    assert_eq!(st["bundle"]["labels"]["env"], "staging", "{st}");

    // The staging bundle is signed for staging: served to a prod gateway
    // (by a mirror, a cache, a man in the middle), it is refused, though
    // validly signed, and the gateway keeps what it runs.
    let (s, _, staging) = warden_tests::request(
        &format!("{}/v1/bundles/current", agent.url),
        "GET",
        &[
            ("authorization", &format!("Bearer {FLEET_TOKEN}")),
            ("x-warden-gateway", "gw2"),
            ("x-warden-labels", "env=staging"),
        ],
        Default::default(),
        false,
    )
    .await
    .expect("fetch");
    assert_eq!(s, 200);
    let srv = super::Static::start(staging.to_vec());
    let (ok, _, err) = run_with_timeout(
        std::process::Command::new(bin("warden"))
            .args([
                "run",
                "--bundle-url",
                &format!("http://{}/bundle.tar.gz", srv.addr),
                "--bundle-public-key",
                public.to_str().expect("utf-8"),
                "--label",
                "env=prod",
                "--listen",
                "127.0.0.1:1",
                "--state-dir",
            ])
            .arg(tmp.path().join("elsewhere")),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!ok);
    assert!(
        err.contains("not for this gateway: the bundle was published to env=staging"),
        "{err}"
    );

    // Every label of a selector must match.
    publish(&agent, json!({"select": {"env": "prod", "region": "eu"}})).await;
    until_all(&gws[..1], "echo", "denied", Duration::from_secs(10)).await;
    fleet_settled(&agent, 3).await;
    assert_eq!(outcome(&gws[1], "echo").await, "ok");

    // A selector the agent cannot read is refused; nothing is published.
    let (s, v) = agent
        .api(
            "POST",
            "/v1/publish",
            Some(json!({"select": {"env": "a b"}})),
        )
        .await
        .expect("publish");
    assert_eq!(s, 400, "{v}");
    let (s, v) = agent
        .api(
            "POST",
            "/v1/publish",
            Some(json!({"selector": {"env": "x"}})),
        )
        .await
        .expect("publish");
    assert_eq!(s, 400, "an unknown field is refused: {v}");

    // Published to all, it reaches every gateway.
    publish(&agent, json!({})).await;
    until_all(&gws, "echo", "denied", Duration::from_secs(10)).await;
    let fleet = fleet_settled(&agent, 3).await;
    assert!(
        fleet["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["why"] == "published to all"),
        "{fleet}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn canaries_roll_back_on_denials_promote_when_healthy_and_never_hold_the_kill_switch() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let agent = manual_agent(&source, &tmp.path().join("agent"), &private);
    let gws = fleet(&agent, &public, tmp.path(), &[&[], &[], &[]]);
    let urls: Vec<String> = gws.iter().map(|g| g.url("/mock/mcp")).collect();
    fleet_settled(&agent, 3).await;

    // A policy edit that denies the tool everybody uses, as a canary on
    // one gateway of three: its denial rate jumps and the agent rolls it
    // back on its own, well before the watch ends.
    set_blocked(&source, &["echo"]);
    let traffic = Traffic::start(urls.clone(), "echo");
    let v = publish(
        &agent,
        json!({"canary": {"share": 0.3, "watch_secs": 120, "guard": {"min_calls": 10}}}),
    )
    .await;
    let members: Vec<String> = v["target"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(members.len(), 1, "{v}");
    let canary = members[0]
        .trim_start_matches("gw")
        .parse::<usize>()
        .expect("index");
    let r = rollout_reaches(&agent, "rolled_back", Duration::from_secs(30)).await;
    let refused = traffic.stop().await;
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("denial rate")),
        "{r}"
    );
    assert!(r["canary"]["denial_rate"].as_f64() > Some(0.5), "{r}");
    assert!(refused[canary] > 0, "the canary ran the edit: {refused:?}");
    for (i, n) in refused.iter().enumerate() {
        if i != canary {
            assert_eq!(
                *n, 0,
                "gateway {i} outside the canary never ran it: {refused:?}"
            );
        }
    }
    // Rolled back: the canary gateway is back on the enforced revision.
    until_all(&gws, "echo", "ok", Duration::from_secs(10)).await;
    fleet_settled(&agent, 3).await;

    // A healthy edit (it blocks a tool nobody calls) as a canary; the kill
    // switch pulled during its watch reaches every gateway at once, the
    // canary's included, and the canary keeps its watch.
    set_blocked(&source, &["add"]);
    let traffic = Traffic::start(urls.clone(), "echo");
    let v = publish(
        &agent,
        // The probes below count as denials too: at most three reach the
        // canary (the `add` that shows it runs the edit, the paused
        // `checksum`, the `add` after the kill; `until_all` stops probing a
        // gateway once it answers), so judged on at least 20 calls they
        // stay under the 40 % margin, far below the bad canary's 100 %.
        json!({"canary": {"share": 0.3, "watch_secs": 12, "guard": {"min_calls": 20, "max_denial_increase": 0.4}}}),
    )
    .await;
    let canary = v["target"]["members"][0]
        .as_str()
        .and_then(|m| m.trim_start_matches("gw").parse::<usize>().ok())
        .expect("one member");
    until_all(
        &gws[canary..=canary],
        "add",
        "denied",
        Duration::from_secs(10),
    )
    .await;
    let fleet = fleet_settled(&agent, 3).await;
    assert!(
        member(&fleet, &format!("gw{canary}"))["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("canary on 1 gateway")),
        "{fleet}"
    );
    let (s, v) = agent
        .api(
            "POST",
            "/v1/kill",
            Some(json!({"scope": "tool", "value": "checksum"})),
        )
        .await
        .expect("kill");
    assert_eq!(s, 200, "{v}");
    until_all(&gws, "checksum", "paused", Duration::from_secs(5)).await;
    let (_, r) = agent
        .api("GET", "/v1/rollout", None)
        .await
        .expect("rollout");
    assert_eq!(
        r["state"], "watching",
        "the kill did not end the canary: {r}"
    );
    for (i, g) in gws.iter().enumerate() {
        let want = if i == canary { "denied" } else { "ok" };
        assert_eq!(outcome(g, "add").await, want, "gateway {i} after the kill");
    }
    let r = rollout_reaches(&agent, "promoted", Duration::from_secs(30)).await;
    let refused = traffic.stop().await;
    assert_eq!(refused, vec![0, 0, 0], "the healthy canary refused nothing");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("healthy over")),
        "{r}"
    );
    // Promoted: every gateway runs it, the kill switch still pulled.
    until_all(&gws, "add", "denied", Duration::from_secs(10)).await;
    for g in &gws {
        assert_eq!(outcome(g, "checksum").await, "paused");
        assert_eq!(outcome(g, "echo").await, "ok");
    }

    // Promote and rollback by hand need a canary being watched.
    let (s, _) = agent
        .api("POST", "/v1/rollout/promote", None)
        .await
        .expect("promote");
    assert_eq!(s, 409);
    // A second canary while one is watched is refused; a manual rollback ends it.
    publish(&agent, json!({"canary": {"share": 1.0, "watch_secs": 600}})).await;
    let (s, v) = agent
        .api(
            "POST",
            "/v1/publish",
            Some(json!({"canary": {"share": 0.5, "watch_secs": 60}})),
        )
        .await
        .expect("publish");
    assert_eq!(s, 422, "{v}");
    let (s, v) = agent
        .api("POST", "/v1/rollout/rollback", None)
        .await
        .expect("rollback");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "rolled_back", "{v}");
    let changes = std::fs::read_to_string(tmp.path().join("agent/changes.jsonl")).expect("changes");
    for action in [
        "\"canary\"",
        "\"canary_rollback\"",
        "\"promote\"",
        "\"kill\"",
    ] {
        assert!(changes.contains(action), "{action} not recorded: {changes}");
    }
}

/// A candidate rule shipped through the agent as `policy.shadow`: every
/// gateway judges each call by both, enforces only the current rule, and
/// counts and audits each disagreement.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_rule_from_the_agent_is_judged_on_every_gateway_and_never_enforced() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    std::fs::write(
        source.join("warden.yaml"),
        warden_tests::mock_bundle(&[mock.addr], "policy: {shadow: data.candidate.decision}"),
    )
    .expect("yaml");
    std::fs::write(
        source.join("policies/candidate.rego"),
        "package candidate\nimport rego.v1\ndecision := {\"allow\": false, \"reason\": \"echo_retired\"} if {\n\tinput.request.tool == \"echo\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
    )
    .expect("rego");
    let agent = manual_agent(&source, &tmp.path().join("agent"), &private);
    let gws = fleet(&agent, &public, tmp.path(), &[&[], &[], &[]]);
    fleet_settled(&agent, 3).await;
    for g in &gws {
        assert_eq!(outcome(g, "echo").await, "ok", "never enforced");
        assert_eq!(outcome(g, "add").await, "ok");
    }
    for (i, g) in gws.iter().enumerate() {
        let recs = g.audit_when(|r| {
            r.iter()
                .any(|x| x["direction"] == "request" && x["tool"] == "echo")
        });
        let echo = recs
            .iter()
            .find(|r| r["direction"] == "request" && r["tool"] == "echo")
            .expect("echo audited");
        assert_eq!(echo["outcome"], "forwarded", "gateway {i}: {echo}");
        assert_eq!(
            echo["shadow"]["reason"], "echo_retired",
            "gateway {i}: {echo}"
        );
        let metrics = g.metrics().await;
        assert!(
            metrics.contains(
                r#"warden_policy_shadow_disagreements_total{enforced="allowed",server="mock"} 1"#
            ),
            "gateway {i}"
        );
    }
}
