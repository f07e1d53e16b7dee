//! Money budgets through two gateways sharing a real Redis: a tenant's
//! monthly budget refuses the call that would exceed it on either gateway,
//! with when it resets; a team's daily budget under it; an 80 % alert
//! raised once across the fleet; a call another guard refuses gives back
//! what it reserved; the audit's costs add up to what the store counted; a
//! price per unit charged once the reply says how many; the store down, a
//! global budget fails closed.

use serde_json::{json, Value};
use warden_config::access::hash_api_key;
use warden_tests::{free_port, mock_bundle, post_json, Gateway, Mock, Redis};

const ALICE: &str = "wk_alice_payments_0001";
const BOB: &str = "wk_bob_sales_00000002";
const CAROL: &str = "wk_carol_globex_00003";

fn key(id: &str, tenant: &str, secret: &str, team: &str) -> String {
    let hash = hash_api_key(secret, format!("salt-{id}").as_bytes());
    let attrs = if team.is_empty() {
        String::new()
    } else {
        format!(", attributes: {{team: {team}}}")
    };
    format!("    - {{id: {id}, tenant: {tenant}, hash: \"{hash}\"{attrs}}}\n")
}

/// Puts `mock` into (status > 0) or out of (0) its failing mode.
async fn fail_mock(mock: &Mock, status: u16) {
    let (s, _, _) = post_json(
        &format!("http://{}/__mock/fail", mock.addr),
        json!({"status": status}).to_string(),
        &[],
    )
    .await
    .expect("fail hook");
    assert_eq!(s, 200);
}

async fn call(gw: &Gateway, who: &str, id: u64, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
    let (_, _, b) = post_json(
        &gw.url("/mock/mcp"),
        body.to_string(),
        &[("x-api-key", who)],
    )
    .await
    .expect("post");
    serde_json::from_slice(&b).expect("json")
}

fn micros(a: &str) -> u64 {
    let (w, f) = a.split_once('.').expect("an amount");
    w.parse::<u64>().expect("whole") * 1_000_000
        + format!("{f:0<6}").parse::<u64>().expect("fraction")
}

/// What the store holds for every holder of the fleet, summed.
fn stored(redis: &Redis) -> u64 {
    redis
        .cli(&["--scan", "--pattern", "warden:b:*"])
        .lines()
        .filter(|k| !k.is_empty())
        .map(|k| redis.cli(&["GET", k]).trim().parse::<u64>().unwrap_or(0))
        .collect::<Vec<_>>()
        .into_iter()
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budgets_hold_across_two_gateways_and_add_up_to_the_audit() {
    let redis = Redis::start(free_port());
    let mock = Mock::start(&[]).expect("mock");
    let extra = format!(
        "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n{}{}{}\
redis: {{url: \"redis://127.0.0.1:{port}\", timeout: 300ms}}\n\
catalog:\n  mock:\n    tools:\n      \
add: {{price: {{currency: EUR, per_call: \"1.00\"}}}}\n      \
echo: {{price: {{currency: EUR, per_call: \"0.10\", per_unit: {{pointer: /content/0/text, price: \"0.5\"}}}}}}\n\
quotas:\n  - {{name: one-echo, per: [principal], tools: [echo], tenants: [acme], limit: 1, window: 1h}}\n\
budgets:\n  timezone: Europe/Paris\n  limits:\n    \
- {{name: acme-month, per: tenant, tenants: [acme], period: month, amount: \"10.00\", alerts: [0.8], global: true}}\n    \
- {{name: payments-day, per: team, teams: [payments], period: day, amount: \"3.00\", global: true}}\n    \
- {{name: carol-day, per: principal, tenants: [globex], period: day, amount: \"2.00\"}}\n",
        key("alice", "acme", ALICE, "payments"),
        key("bob", "acme", BOB, "sales"),
        key("carol", "globex", CAROL, ""),
        port = redis.port,
    );
    let yaml = mock_bundle(&[mock.addr], &extra);
    let gws = [
        Gateway::start(&yaml, true).expect("gateway 1"),
        Gateway::start(&yaml, true).expect("gateway 2"),
    ];
    let posts_before = mock.posts().await;

    // The team's daily budget: alice's fourth `add` of the day is refused,
    // whichever gateway she uses.
    for i in 0..3u64 {
        let v = call(
            &gws[(i % 2) as usize],
            ALICE,
            10 + i,
            "add",
            json!({"a": 1, "b": 2}),
        )
        .await;
        assert!(v["result"].is_object(), "{v}");
    }
    let v = call(&gws[1], ALICE, 13, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(v["error"]["code"], -31019, "{v}");
    assert_eq!(v["error"]["data"]["budget"], "payments-day", "{v}");
    assert_eq!(v["error"]["data"]["per"], "team", "{v}");

    // A call another guard refuses (the quota: one echo each, in this replica) costs
    // nothing: what it reserved is given back. Alice's echo of "0" units
    // costs its 0.10 per call.
    let v = call(&gws[0], BOB, 20, "echo", json!({"text": "0"})).await;
    assert!(v["result"].is_object(), "{v}");
    let v = call(&gws[0], BOB, 21, "echo", json!({"text": "0"})).await;
    assert_eq!(v["error"]["data"]["reason"], "quota_exceeded", "{v}");
    assert_eq!(
        stored(&redis),
        3_100_000,
        "acme spent 3.10: the refused echo gave back its 0.10"
    );
    // A call the upstream refuses (HTTP 503) did not run: it gives back too.
    fail_mock(&mock, 503).await;
    let v = call(&gws[1], BOB, 22, "add", json!({"a": 1, "b": 2})).await;
    assert!(v["result"].is_null(), "{v}");
    fail_mock(&mock, 0).await;
    assert_eq!(
        stored(&redis),
        3_100_000,
        "a call the upstream refused costs nothing"
    );

    // The tenant's monthly budget: 6.90 left, so six more `add`s of 1.00
    // pass across both gateways at once, and the rest are refused naming
    // the budget and when it resets.
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let url = gws[(i % 2) as usize].url("/mock/mcp");
        tasks.push(tokio::spawn(async move {
            let body = json!({"jsonrpc":"2.0","id":100 + i,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}});
            let (_, _, b) = post_json(&url, body.to_string(), &[("x-api-key", BOB)])
                .await
                .expect("post");
            serde_json::from_slice::<Value>(&b).expect("json")
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let v = t.await.expect("join");
        if v["result"].is_object() {
            ok += 1;
        } else {
            refused += 1;
            assert_eq!(v["error"]["code"], -31019, "{v}");
            let data = &v["error"]["data"];
            assert_eq!(data["reason"], "budget_exceeded", "{v}");
            assert_eq!(data["budget"], "acme-month", "{v}");
            let resets = data["resets_at"].as_str().expect("resets_at");
            assert!(
                resets.ends_with("-01T00:00:00+01:00") || resets.ends_with("-01T00:00:00+02:00"),
                "{resets}"
            );
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(resets),
                "{v}"
            );
            assert!(data["retry_after"].as_u64().unwrap_or(0) >= 1, "{v}");
        }
    }
    assert_eq!(
        (ok, refused),
        (6, 6),
        "exactly what fits under 10.00, never more"
    );
    assert_eq!(stored(&redis), 9_100_000);
    // Bob is refused on the other gateway too, and so is alice now.
    let v = call(&gws[0], BOB, 200, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(v["error"]["data"]["budget"], "acme-month", "{v}");

    // Another tenant's principal has budgets of its own: carol's daily 2.00,
    // in this replica, with a price per unit charged when the reply comes.
    let v = call(&gws[0], CAROL, 300, "echo", json!({"text": "3"})).await; // 0.10 + 1.50
    assert!(v["result"].is_object(), "{v}");
    let v = call(&gws[0], CAROL, 301, "echo", json!({"text": "2"})).await; // 1.60 + 0.10 fits; then + 1.00
    assert!(v["result"].is_object(), "{v}");
    let v = call(&gws[0], CAROL, 302, "echo", json!({"text": "0"})).await;
    assert_eq!(v["error"]["data"]["budget"], "carol-day", "{v}");

    let upstream = mock.posts().await - posts_before;
    assert_eq!(
        upstream,
        3 + 1 + 1 + 6 + 2,
        "refused calls never reach the server"
    );

    // The audit: every forwarded priced call's cost once, adding up to what
    // the store counted for acme; the 80 % alert once across the fleet.
    let mut recs = Vec::new();
    for g in &gws {
        recs.extend(g.audit_when(|r| r.iter().filter(|x| x.get("cost").is_some()).count() >= 5));
    }
    let costs = |tenant: &str| -> u64 {
        recs.iter()
            .filter(|r| r["tenant"] == tenant)
            .filter_map(|r| r["cost"]["amount"].as_str())
            .map(micros)
            .sum()
    };
    assert_eq!(costs("acme"), 9_100_000, "the audit adds up to the store");
    assert_eq!(costs("globex"), 1_600_000 + 1_100_000);
    let teams: Vec<&str> = recs
        .iter()
        .filter(|r| r["principal"] == "alice" && r.get("cost").is_some())
        .filter_map(|r| r["cost"]["team"].as_str())
        .collect();
    assert_eq!(teams, vec!["payments"; 3], "a cost names the caller's team");
    let alerts: Vec<&Value> = recs
        .iter()
        .filter_map(|r| r["budget"]["alerts"].as_array())
        .flatten()
        .collect();
    // Each budget's 80 % once: the team's (by alice's third add), the
    // tenant's (by the add that took it from 7.10 to 8.10, on whichever
    // gateway), carol's (by her first echo's units, charged on its reply).
    let of = |b: &str| {
        alerts
            .iter()
            .filter(|a| a["budget"] == b)
            .collect::<Vec<_>>()
    };
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let tenant = of("acme-month");
    assert_eq!(tenant.len(), 1, "{alerts:?}");
    assert_eq!(tenant[0]["threshold"], "0.8");
    assert_eq!(tenant[0]["holder"], "acme");
    assert_eq!(tenant[0]["spent"], "8.100000");
    assert_eq!(of("payments-day")[0]["holder"], "acme/payments");
    assert_eq!(of("carol-day")[0]["spent"], "1.600000");
    let mut raised = 0;
    for g in &gws {
        let m = g.metrics().await;
        raised += m
            .lines()
            .filter(|l| l.starts_with("warden_budget_alerts_total{budget=\"acme-month\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert_eq!(raised, 1);
    let refusals: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|x| x.starts_with("budget_exceeded:"))
        })
        .collect();
    assert!(
        refusals
            .iter()
            .all(|r| r.get("cost").is_none() && r["decided_by"] == "budget"),
        "{refusals:?}"
    );

    // The store comes back empty (restarted without its data): a replica
    // never reads a holder's spend lower than what it alone counted, so
    // acme's month starts again from gateway 1's share, not from nothing.
    let share: u64 = gws[0]
        .audit()
        .iter()
        .filter(|r| r["tenant"] == "acme")
        .filter_map(|r| r["cost"]["amount"].as_str())
        .map(micros)
        .sum();
    assert!(share > 0 && share < 9_100_000, "{share}");
    redis.cli(&["FLUSHALL"]);
    let v = call(&gws[0], BOB, 250, "add", json!({"a": 1, "b": 2})).await;
    assert!(v["result"].is_object(), "{v}");
    assert_eq!(
        stored(&redis),
        share + 1_000_000,
        "never lower than this replica's count"
    );

    // The store goes away: a global budget fails closed.
    drop(redis);
    let mut last = Value::Null;
    for i in 0..40u64 {
        last = call(&gws[1], ALICE, 400 + i, "echo", json!({"text": "0"})).await;
        if last["error"]["data"]["reason"] == "budget_unavailable" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        last["error"]["data"]["reason"], "budget_unavailable",
        "{last}"
    );
}

/// A batch whose first priced call crosses an alert threshold but is
/// refused by another guard, and whose second call is forwarded: the
/// refused call's charge is given back, the forwarded one's stays, and the
/// holder's spend stands past the threshold. The alert is raised once
/// (before, by no record: the crossing call's alert went with its
/// reservation, and the call after it crossed nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_crossed_by_a_call_given_back_is_raised_when_the_spend_stays_past_it() {
    let mock = Mock::start(&[]).expect("mock");
    let extra = format!(
        "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n{}\
catalog:\n  mock:\n    tools:\n      \
add: {{price: {{currency: EUR, per_call: \"1.00\"}}}}\n      \
echo: {{price: {{currency: EUR, per_call: \"1.00\"}}}}\n\
quotas:\n  - {{name: one-echo, per: [principal], tools: [echo], limit: 1, window: 1h}}\n\
budgets:\n  limits:\n    \
- {{name: acme-month, per: tenant, period: month, amount: \"10.00\", alerts: [0.8]}}\n",
        key("bob", "acme", BOB, "sales"),
    );
    let yaml = mock_bundle(&[mock.addr], &extra);
    let gw = Gateway::start(&yaml, true).expect("gateway");
    // 7.00 spent: one echo (the quota's one), six adds.
    let v = call(&gw, BOB, 1, "echo", json!({"text": "x"})).await;
    assert!(v["result"].is_object(), "{v}");
    for i in 0..6u64 {
        let v = call(&gw, BOB, 10 + i, "add", json!({"a": 1, "b": 2})).await;
        assert!(v["result"].is_object(), "{v}");
    }
    // The echo reserves 7.00 → 8.00 (80 %: crossed), the add 8.00 → 9.00;
    // the quota refuses the echo, whose 1.00 is given back: 8.00 stands.
    let batch = json!([
        {"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}},
        {"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}},
    ]);
    let (_, _, b) = post_json(
        &gw.url("/mock/mcp"),
        batch.to_string(),
        &[("x-api-key", BOB)],
    )
    .await
    .expect("post");
    let replies: Value = serde_json::from_slice(&b).expect("json");
    let by_id = |id: u64| {
        replies
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by_id(20)["error"]["data"]["reason"],
        "quota_exceeded",
        "{replies}"
    );
    assert!(by_id(21)["result"].is_object(), "{replies}");
    // One more add: 8.00 → 9.00, past the threshold already.
    let v = call(&gw, BOB, 30, "add", json!({"a": 1, "b": 2})).await;
    assert!(v["result"].is_object(), "{v}");

    let recs = gw.audit_when(|r| {
        r.iter()
            .any(|x| x["jsonrpc_id"] == 30 && x.get("cost").is_some())
    });
    let costs: u64 = recs
        .iter()
        .filter_map(|r| r["cost"]["amount"].as_str())
        .map(micros)
        .sum();
    assert_eq!(costs, 9_000_000, "{recs:?}");
    let alerts: Vec<&Value> = recs
        .iter()
        .filter_map(|r| r["budget"]["alerts"].as_array())
        .flatten()
        .collect();
    assert_eq!(alerts.len(), 1, "the 80 % alert once: {alerts:?}");
    assert_eq!(alerts[0]["budget"], "acme-month");
    assert_eq!(alerts[0]["threshold"], "0.8");
    let m = gw.metrics().await;
    let raised: u64 = m
        .lines()
        .filter(|l| l.starts_with("warden_budget_alerts_total{budget=\"acme-month\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(raised, 1);
}

/// A price per unit times a number the reply holds can be any amount up to
/// the largest millionths (the units are the server's, and a tool may
/// report a number its caller chose). Such a charge reached the store as
/// a Lua number written in exponent form, which `INCRBY` refuses: the
/// charge was counted nowhere in the fleet and the store was marked down
/// (a `closed` global budget then refused every call it covers on that
/// replica); a charge that saturated at `u64::MAX` was sent wrapped to a
/// small negative number, lowering the spend (a free call). A huge charge
/// now leaves the spend past every limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_charge_per_unit_leaves_a_global_budgets_spend_past_its_limit() {
    let redis = Redis::start(free_port());
    let mock = Mock::start(&[]).expect("mock");
    let extra = format!(
        "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n{}\
redis: {{url: \"redis://127.0.0.1:{port}\", timeout: 300ms}}\n\
catalog:\n  mock:\n    tools:\n      \
add: {{price: {{currency: EUR, per_call: \"1.00\"}}}}\n      \
echo: {{price: {{currency: EUR, per_call: \"0.10\", per_unit: {{pointer: /content/0/text, price: \"0.5\"}}}}}}\n\
budgets:\n  limits:\n    \
- {{name: acme-month, per: tenant, period: month, amount: \"10.00\", global: true}}\n",
        key("bob", "acme", BOB, "sales"),
        port = redis.port,
    );
    let yaml = mock_bundle(&[mock.addr], &extra);
    let gw = Gateway::start(&yaml, true).expect("gateway");
    // 2 × 10^13 units at 0.5: 10^19 millionths, past i64::MAX.
    let v = call(&gw, BOB, 1, "echo", json!({"text": "20000000000000"})).await;
    assert!(v["result"].is_object(), "{v}");
    let spent: i64 = redis
        .cli(&["--scan", "--pattern", "warden:b:*"])
        .lines()
        .filter(|k| !k.is_empty())
        .map(|k| redis.cli(&["GET", k]).trim().parse::<i64>().unwrap_or(0))
        .max()
        .unwrap_or(0);
    assert!(spent > 10_000_000, "the spend is past the limit: {spent}");
    let v = call(&gw, BOB, 2, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(v["error"]["data"]["reason"], "budget_exceeded", "{v}");
}
