//! Behaviour baselines (`anomaly:`) with real traffic: the example
//! policy holds an agent's first call of a CRITICAL tool for approval
//! through two gateways that share Redis, and not its later calls; a rate
//! far above an agent's own history is flagged once it has left its
//! learning period; a flood of new tool names never grows a baseline past
//! its bound; an accepted behaviour (bundle or admin listener) is normal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{example_bundle, free_port, keygen, post_json, Agent, Gateway, Mock, Redis};

const DEV: &str = "wk_demo_dev_7Qm2";
const WHY: &str = "INC-4711 cleanup approved by bob";
const ADMIN: &str = "admin-token-for-anomaly-tests";

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
        .to_string()
}

/// The example's data with business hours all day, every day (these
/// tests are not about hours).
fn data_all_day() -> Vec<u8> {
    let mut d: Value = serde_json::from_slice(
        &std::fs::read(warden_tests::root().join("config/examples/sidecar/data.json"))
            .expect("data"),
    )
    .expect("json");
    d["warden"]["business_hours"]["start"] = json!(0);
    d["warden"]["business_hours"]["end"] = json!(24);
    d["warden"]["business_hours"]["days"] = json!([
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday"
    ]);
    serde_json::to_vec(&d).expect("ser")
}

/// The example bundle in `dir`, its `anomaly:` section replaced by
/// `anomaly`, with `extra` sections.
fn write_example(dir: &Path, mock: &Mock, anomaly: &str, extra: &str) {
    let (yaml, files) = example_bundle(mock.addr, |y| {
        let y = y.replace("timezone: Europe/Berlin", "timezone: UTC");
        let y = y.replace("anomaly:\n  learning: 7d\n  accept: []\n", anomaly);
        format!("{y}\n{extra}")
    });
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(dir.join("warden.yaml"), yaml).expect("yaml");
    for (name, body) in files {
        let body = if name == "data.json" {
            data_all_day()
        } else {
            body
        };
        std::fs::write(dir.join(name), body).expect("file");
    }
}

/// `(held, text)` of a reply to a call.
fn held(v: &Value) -> (bool, String) {
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (
        v["result"]["isError"] == true && text.contains("held for human approval"),
        text,
    )
}

async fn send(gw: &Gateway, body: String, extra: &[(&str, &str)]) -> Value {
    let mut h = vec![("x-api-key", DEV)];
    h.extend_from_slice(extra);
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), body, &h)
        .await
        .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).expect("json")
}

fn metric(m: &str, prefix: &str) -> i64 {
    m.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Two gateways on one control agent share Redis. The agent's first call
/// of `purge` (CRITICAL) through the first is held for two approvers;
/// approved, the same call through the second is served; its later calls,
/// up to its tenth, through either, are never held (the second learnt the
/// tool, the first reads it from Redis).
#[tokio::test(flavor = "multi_thread")]
async fn a_first_critical_call_is_held_and_later_ones_are_not_across_two_gateways() {
    use sha2::Digest;
    let redis = Redis::start(free_port());
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_example(
        &source,
        &mock,
        "anomaly:\n  learning: 7d\n",
        &format!("redis: {{url: \"redis://127.0.0.1:{}\"}}\n", redis.port),
    );
    let (alice, bob) = ("approver-alice-token-0001", "approver-bob-token-0002");
    let approvers = tmp.path().join("approvers.yaml");
    std::fs::write(
        &approvers,
        format!(
            "alice: {}\nbob: {}\n",
            hex::encode(sha2::Sha256::digest(alice)),
            hex::encode(sha2::Sha256::digest(bob))
        ),
    )
    .expect("approvers");
    let agent = Agent::start_with(
        &source,
        &tmp.path().join("agent"),
        Some(&private),
        &["--approvers".as_ref(), approvers.as_os_str()],
    )
    .expect("agent");
    let a = Gateway::on_agent(&agent.url, &public, &tmp.path().join("gw-a"), "gw-a").expect("a");
    let b = Gateway::on_agent(&agent.url, &public, &tmp.path().join("gw-b"), "gw-b").expect("b");
    a.wait_ready().expect("a ready");
    b.wait_ready().expect("b ready");
    let purge = |id: u64| call(id, "purge", json!({"table": "users"}));
    let why = [("x-warden-justification", WHY)];

    // The agent has used an ordinary tool before; its first purge is held.
    let echo = send(&a, call(1, "echo", json!({"text": "hi"})), &[]).await;
    assert!(echo["result"]["isError"] != true, "{echo}");
    let first = send(&a, purge(2), &why).await;
    let (is_held, text) = held(&first);
    assert!(is_held, "{first}\n{}", a.log().join("\n"));
    assert!(text.contains("0 of 2"), "{text}");
    let id = text
        .split("Approval id: ")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .expect("approval id")
        .to_owned();
    // Held calls teach nothing: asked again, it is still a first use.
    let again = send(&b, purge(3), &why).await;
    assert!(held(&again).0, "{again}");
    for who in [alice, bob] {
        let (s, _, v) = warden_tests::request(
            &format!("{}/v1/approvals/{id}/approve", agent.url),
            "POST",
            &[("authorization", &format!("Bearer {who}"))],
            bytes::Bytes::new(),
            false,
        )
        .await
        .expect("approve");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&v));
    }
    // Approved: served once, through the other gateway.
    let served = send(&b, purge(4), &why).await;
    assert!(
        served["error"].is_null() && served["result"]["isError"] != true,
        "{served}\n{}",
        b.log().join("\n")
    );
    // Its later calls, up to its tenth, through either gateway: never held.
    for n in 5..=10u64 {
        let gw = if n % 2 == 0 { &b } else { &a };
        let r = send(gw, purge(100 + n), &why).await;
        assert!(
            r["error"].is_null() && r["result"]["isError"] != true,
            "call {n}: {r}\n{}",
            gw.log().join("\n")
        );
    }
    // The first purge's record carries the signal; the later ones none.
    let recs = a.audit_when(|r| {
        r.iter()
            .filter(|x| x["tool"] == "purge" && x["direction"] == "request")
            .count()
            >= 4
    });
    let purges: Vec<&Value> = recs
        .iter()
        .filter(|x| x["tool"] == "purge" && x["direction"] == "request")
        .collect();
    let first_rec = purges.first().expect("a purge record");
    assert!(
        first_rec["anomaly"]["signals"].as_array().is_some_and(|s| s
            .iter()
            .any(|x| x["kind"] == "first_tool" && x["detail"] == "mock/purge")),
        "{first_rec}"
    );
    assert!(
        purges
            .iter()
            .filter(|r| r["outcome"] == "forwarded")
            .all(|r| r["anomaly"].is_null()),
        "{purges:?}"
    );
    let m = a
        .metrics_when(|m| metric(m, "warden_anomalies_total{kind=\"first_tool\"}") >= 1)
        .await;
    assert!(
        metric(&m, "warden_anomalies_total{kind=\"first_tool\"}") >= 1,
        "{m}"
    );
    assert!(
        metric(&m, "warden_table_entries{table=\"baselines\"}") >= 1,
        "{m}"
    );
    // The fleet's set holds the tool (a hash, never its name).
    let keys = redis.cli(&["KEYS", "warden:anomaly:*:t"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let members = redis.cli(&["SMEMBERS", keys.trim()]);
    assert!(!members.contains("purge"), "{members}");
}

/// One gateway, a short learning period and rate window: a burst far
/// above the agent's own rate is flagged (`rate`, its strength the
/// ratio); three hundred new tool names leave its baseline at 256 tools;
/// a tool accepted in the bundle or through the admin listener is normal
/// (the example policy then no longer holds its first call, which this
/// gateway, with no control agent, would refuse).
#[tokio::test(flavor = "multi_thread")]
async fn rate_spikes_floods_and_accepted_behaviours() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("bundle");
    write_example(
        &bundle,
        &mock,
        "anomaly:\n  learning: 3s\n  rate_window: 1s\n  rate_factor: 4\n  accept:\n    - {tenant: acme, principal: agent-dev, server: mock, tool: checksum}\n",
        "",
    );
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, format!("{ADMIN}\n")).expect("token");
    let gw = Gateway::start_with(
        "",
        true,
        &[],
        &[
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--admin-token-file",
            token.to_str().expect("utf8"),
        ],
        None,
    )
    .expect("gateway");
    let echo = |id: u64| call(id, "echo", json!({"text": "hi"}));

    // Learning: a call or two a window for longer than the learning period.
    let start = Instant::now();
    let mut id = 1;
    while start.elapsed() < Duration::from_millis(4500) {
        send(&gw, echo(id), &[]).await;
        id += 1;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // The burst.
    for _ in 0..30 {
        send(&gw, echo(id), &[]).await;
        id += 1;
    }
    let recs = gw.audit_when(|r| {
        r.iter().any(|x| {
            x["anomaly"]["signals"]
                .as_array()
                .is_some_and(|s| s.iter().any(|k| k["kind"] == "rate"))
        })
    });
    let rate = recs
        .iter()
        .filter_map(|x| x["anomaly"]["signals"].as_array())
        .flatten()
        .find(|k| k["kind"] == "rate")
        .unwrap_or_else(|| panic!("no rate signal: {recs:?}"));
    assert!(rate["strength"].as_f64().unwrap_or(0.0) > 4.0, "{rate}");
    // Before the burst, past the first call, nothing was flagged.
    let early: Vec<&Value> = recs
        .iter()
        .filter(|x| x["tool"] == "echo" && x["direction"] == "request")
        .skip(1)
        .take(5)
        .collect();
    assert!(early.iter().all(|x| x["anomaly"].is_null()), "{early:?}");

    // A flood of new tool names (the mock answers each as unknown; every
    // one is forwarded and learnt, as far as the cap allows).
    for n in 0..300u64 {
        send(&gw, call(10_000 + n, &format!("tool_{n}"), json!({})), &[]).await;
    }
    let get = |q: &'static str, token: Option<&'static str>| {
        let admin = gw.admin;
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            warden_tests::request(
                &format!("http://{admin}/anomaly{q}"),
                "GET",
                &headers,
                bytes::Bytes::new(),
                false,
            )
            .await
            .expect("get")
        }
    };
    // A principal's baseline is read with the admin token only.
    let (s, _, b) = get("?tenant=acme&principal=agent-dev", None).await;
    assert_eq!(s, 401, "{}", String::from_utf8_lossy(&b));
    assert!(!String::from_utf8_lossy(&b).contains("first_seen"));
    let (s, _, _) = get("?tenant=acme&principal=agent-dev", Some("wrong-token")).await;
    assert_eq!(s, 401);
    let status = |q: &'static str| {
        let get = &get;
        async move {
            let (s, _, b) = get(q, Some(ADMIN)).await;
            assert_eq!(s, 200);
            serde_json::from_slice::<Value>(&b).expect("json")
        }
    };
    let base = status("?tenant=acme&principal=agent-dev").await;
    assert_eq!(base["baseline"]["tools"], 256, "{base}");
    assert_eq!(base["baseline"]["servers"], 1, "{base}");
    assert_eq!(base["table"]["entries"], 1, "{base}");
    let st = gw.status().await;
    assert_eq!(st["baselines"]["entries"], 1, "{st}");
    // A name it could not learn is still new.
    let late = send(&gw, call(20_000, "tool_299", json!({})), &[]).await;
    assert!(!late.is_null());
    let recs = gw.audit_when(|r| r.iter().any(|x| x["jsonrpc_id"] == 20_000));
    let late_rec = recs
        .iter()
        .find(|x| x["jsonrpc_id"] == 20_000 && x["direction"] == "request")
        .expect("record");
    assert!(
        late_rec["anomaly"]["signals"]
            .as_array()
            .is_some_and(|s| s.iter().any(|k| k["kind"] == "first_tool")),
        "{late_rec}"
    );

    // Accepted in the bundle: `checksum` is no first use.
    send(&gw, call(30_000, "checksum", json!({"data": "x"})), &[]).await;
    let recs = gw.audit_when(|r| r.iter().any(|x| x["jsonrpc_id"] == 30_000));
    let ck = recs
        .iter()
        .find(|x| x["jsonrpc_id"] == 30_000 && x["direction"] == "request")
        .expect("record");
    assert!(
        !ck["anomaly"]["signals"]
            .as_array()
            .is_some_and(|s| s.iter().any(|k| k["kind"] == "first_tool")),
        "{ck}"
    );

    // A first purge is held, and with no control agent refused.
    let why = [("x-warden-justification", WHY)];
    let r = send(&gw, call(40_000, "purge", json!({"table": "t"})), &why).await;
    assert!(
        r["error"].is_object() || r["result"]["isError"] == true,
        "held, and refused here: {r}"
    );
    // Accepting needs the admin token.
    let accept =
        json!({"tenant": "acme", "principal": "agent-dev", "server": "mock", "tool": "purge"})
            .to_string();
    let post = |auth: Option<&'static str>| {
        let admin = gw.admin;
        let accept = accept.clone();
        async move {
            let bearer = auth.map(|t| format!("Bearer {t}"));
            let mut h = vec![("content-type", "application/json")];
            if let Some(b) = &bearer {
                h.push(("authorization", b.as_str()));
            }
            warden_tests::request(
                &format!("http://{admin}/anomaly/accept"),
                "POST",
                &h,
                bytes::Bytes::from(accept),
                false,
            )
            .await
            .expect("post")
            .0
        }
    };
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some("not-the-admin-token-at-all")).await, 401);
    assert_eq!(post(Some(ADMIN)).await, 200);
    // Accepted: the purge is no first use, not held, and served.
    let r = send(&gw, call(40_001, "purge", json!({"table": "t"})), &why).await;
    assert!(
        r["error"].is_null() && r["result"]["isError"] != true,
        "{r}\n{}",
        gw.log().join("\n")
    );
    let m = gw.metrics().await;
    assert!(
        metric(&m, "warden_anomalies_total{kind=\"rate\"}") >= 1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "warden_table_entries{table=\"baselines\"}"),
        1,
        "{m}"
    );
}
