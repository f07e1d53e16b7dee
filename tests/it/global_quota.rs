//! Global quotas across replicas on a real Redis: three gateways share one
//! limit with no overshoot; Redis killed and restarted mid-test, each quota
//! following its `on_store_failure`, and recovering by itself.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{free_port, mock_bundle, post_json, Gateway, Mock, Redis};

/// Units granted so far, over every window counter of the fleet.
fn granted(redis: &Redis) -> u64 {
    redis
        .cli(&["--scan", "--pattern", "warden:q:*"])
        .lines()
        .filter(|k| !k.is_empty())
        .map(|k| redis.cli(&["GET", k]).trim().parse::<u64>().unwrap_or(0))
        .sum()
}

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"g","a":1,"b":2}}})
        .to_string()
}

async fn send(url: &str, id: u64, tool: &str) -> Value {
    let (_, _, b) = post_json(url, call(id, tool), &[]).await.expect("post");
    serde_json::from_slice(&b).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_limit_holds_across_three_replicas() {
    let redis = Redis::start(free_port());
    let mock = Mock::start(&[]).expect("mock");
    let limit = 150u64;
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "redis: {{url: \"redis://127.0.0.1:{}\", lease: 5}}\nquotas:\n  - {{name: fleet, per: [tenant], limit: {limit}, window: 1h, global: true, tools: [echo]}}\n",
            redis.port
        ),
    );
    let gws: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&yaml, true).expect("gateway"))
        .collect();
    let urls: Vec<String> = gws.iter().map(|g| g.url("/mock/mcp")).collect();
    let before = mock.posts().await;
    // 360 calls from 36 concurrent clients spread over the three replicas.
    let mut tasks = Vec::new();
    for c in 0..36u64 {
        let urls = urls.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            for i in 0..10u64 {
                let v = send(&urls[((c + i) % 3) as usize], c * 100 + i, "echo").await;
                if v["result"].is_object() {
                    ok += 1;
                } else {
                    assert_eq!(v["error"]["code"], -31012, "{v}");
                    assert_eq!(v["error"]["data"]["reason"], "quota_exceeded", "{v}");
                    refused += 1;
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.expect("join");
        ok += o;
        refused += r;
    }
    let granted = granted(&redis);
    println!(
        "global quota: limit {limit}, admitted {ok} across 3 replicas, refused {refused}, \
         granted by Redis {granted}, overshoot {}",
        ok.saturating_sub(limit)
    );
    assert_eq!(ok + refused, 360);
    assert!(ok <= limit, "admitted {ok} > limit {limit}: overshoot");
    assert!(granted <= limit, "Redis granted {granted} > {limit}");
    // Under-use is bounded by the leases left on the replicas (≤ 1.5 blocks each).
    assert!(ok + 3 * 8 >= limit, "admitted only {ok} of {limit}");
    assert_eq!(
        mock.posts().await - before,
        ok,
        "refused calls never reach the server"
    );
    // Each replica shows the store.
    let st = gws[0].status().await;
    assert_eq!(st["quota_store"]["up"], true, "{st}");
    let m = gws[0].metrics().await;
    assert!(
        m.contains(&format!(
            "warden_quota_store_up{{store=\"redis://127.0.0.1:{}\"}} 1",
            redis.port
        )),
        "{m}"
    );
    assert!(m.contains("warden_quota_store_requests_total{result=\"granted\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_follows_each_quotas_failure_mode_and_recovers() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "redis: {{url: \"redis://127.0.0.1:{port}\", lease: 2, timeout: 200ms}}\nquotas:\n  - {{name: soft, per: [tenant], limit: 40, window: 1h, global: true, tools: [echo]}}\n  - {{name: hard, per: [tenant], limit: 1000, window: 1h, global: true, on_store_failure: closed, tools: [add]}}\n"
        ),
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let url = gw.url("/mock/mcp");
    for i in 0..10 {
        assert!(send(&url, i, "echo").await["result"].is_object());
        assert!(send(&url, 100 + i, "add").await["result"].is_object());
    }
    // Redis dies.
    redis.proc.child.kill().expect("kill redis");
    let _ = redis.proc.child.wait();
    let wait_for = |want: bool| {
        let gw = &gw;
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let st = gw.status().await;
                if st["quota_store"]["up"] == want {
                    return st;
                }
                assert!(Instant::now() < deadline, "store up != {want}: {st}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let st = wait_for(false).await;
    assert!(st["quota_store"]["down_since"].is_u64(), "{st}");
    // `local`: served, with the limit now enforced by this replica alone —
    // counting what it already used this window (10 of 40).
    let mut ok = 0;
    for i in 0..40 {
        let v = send(&url, 1000 + i, "echo").await;
        if v["result"].is_object() {
            ok += 1;
        } else {
            assert_eq!(v["error"]["data"]["reason"], "quota_exceeded", "{v}");
        }
    }
    assert_eq!(ok, 30, "local fallback keeps the limit per replica");
    // `closed`: once the units this replica already leased (at most 1.5
    // blocks of 2) are spent, refused while the store is away.
    let mut leased = 0;
    let refusal = loop {
        let v = send(&url, 2000 + leased, "add").await;
        if v["result"].is_object() {
            leased += 1;
            assert!(leased <= 3, "more than the leased units were spent");
            continue;
        }
        break v;
    };
    assert_eq!(refusal["error"]["code"], -31012, "{refusal}");
    assert_eq!(
        refusal["error"]["data"]["reason"], "quota_store_unavailable",
        "{refusal}"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(&format!(
            "warden_quota_store_up{{store=\"redis://127.0.0.1:{port}\"}} 0"
        )),
        "{m}"
    );
    assert!(
        m.contains("warden_quota_store_fallbacks_total{mode=\"closed\"}"),
        "{m}"
    );
    assert!(
        m.contains("warden_quota_store_fallbacks_total{mode=\"local\"}"),
        "{m}"
    );

    // Redis comes back on the same port (empty: it kept nothing): leasing
    // resumes without a restart of the gateway.
    let redis = Redis::start(port);
    wait_for(true).await;
    let v = send(&url, 3000, "add").await;
    assert!(v["result"].is_object(), "{v}");
    assert!(granted(&redis) >= 1, "leases come from the new Redis");
}
