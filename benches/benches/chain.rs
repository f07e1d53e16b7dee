//! The whole per-message path on the example bundle (plus an argument schema
//! and a quota, so every filter has work): API-key authentication, parsing,
//! the request chain (kill switch → quota → cached policy → pins → schema →
//! egress → DLP) on a 1 KB `tools/call`, and the response chain (DLP) on its
//! 1 KB result — beside a naive baseline that does the same checks the
//! obvious way (serde_json::Value, a fresh Rego interpreter, a schema compiled
//! per call, a RegexSet over every string).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, Criterion};
use warden_config::Bundle;
use warden_filters::chain::plan::plan_request;
use warden_filters::engines::dlp::detectors::SPECS;
use warden_filters::engines::identity::Presented;
use warden_filters::{parse, Exchange, Parsed, Snapshot, Verdict};

#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

const SCHEMA: &str = r#"      echo:
        risk: LOW
        input_schema:
          type: object
          required: [text]
          additionalProperties: false
          properties: {text: {type: string, maxLength: 1000000}}"#;

fn bundle() -> Bundle {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/sidecar");
    let dir = std::env::temp_dir().join(format!("warden-bench-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("dir");
    for f in ["data.json", ".manifest"] {
        std::fs::copy(root.join(f), dir.join(f)).expect("copy");
    }
    for e in std::fs::read_dir(root.join("policies")).expect("policies") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.join("policies").join(e.file_name())).expect("copy");
    }
    let yaml = std::fs::read_to_string(root.join("warden.yaml"))
        .expect("yaml")
        .replace("      echo: {risk: LOW}", SCHEMA)
        + "\nquotas:\n  - {name: per-agent, per: [principal], limit: 4000000000, window: 1h}\n";
    std::fs::write(dir.join("warden.yaml"), yaml).expect("write");
    let b = Bundle::load(&dir).expect("bundle");
    let _ = std::fs::remove_dir_all(&dir);
    b
}

fn bench(c: &mut Criterion) {
    let bundle = bundle();
    let snap = Snapshot::build(&bundle).expect("snapshot");
    let auth = snap.auth.as_ref().expect("identity");
    let text = warden_benches::tool_result(1024, 0);
    let prose: serde_json::Value = serde_json::from_slice(&text).expect("json");
    let prose = prose["result"]["content"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    let request = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": prose}}
    }))
    .expect("request");
    let reply = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": 7,
        "result": {"content": [{"type": "text", "text": prose}]}
    }))
    .expect("reply");
    // Tuesday 10:00 in Berlin (inside the example's business hours).
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_424_400);

    let whole = || {
        let principal = auth
            .authenticate(
                Presented {
                    authorization: None,
                    api_key: Some("wk_demo_dev_7Qm2"),
                    client_cert: None,
                },
                now,
            )
            .expect("authenticated");
        let parsed = parse(&request, snap.parse_limits).expect("parse");
        let fctx = Exchange {
            principal: &principal,
            server: "mock",
            group: "tools",
            via: None,
            session_id: Some("s-1"),
            protocol_version: Some("2025-06-18"),
            source_ip: None,
            now,
            justification: None,
            keep_arguments: false,
            global: None,
            budget: None,
            flow: None,
            flow_session: None,
            asked: None,
            query: None,
        };
        let plan = plan_request(
            &warden_filters::RequestMessages::new(&request, &parsed),
            &snap.chain,
            &fctx,
        );
        let Ok(Parsed::Single(env)) = parse(&reply, snap.parse_limits) else {
            panic!("reply parses");
        };
        let verdict = snap.chain.run(
            &warden_filters::Message::from_server(&env, &reply, Some("tools/call"), Some("echo")),
            &fctx,
            &mut warden_filters::Notes::default(),
        );
        (plan, verdict)
    };
    let (plan, verdict) = whole();
    assert!(
        plan.answers.is_empty(),
        "the call is forwarded: {:?}",
        plan.answers
    );
    assert!(matches!(verdict, Verdict::Forward), "the reply passes");

    // Naive: the same decisions, each done the first way that comes to mind.
    let modules = warden_benches::rego_modules(&bundle);
    let data = regorus::Value::from(bundle.data.clone());
    let set = regex::RegexSet::new(SPECS.iter().map(|s| s.pattern)).expect("set");
    let schema = serde_json::json!({"type":"object","required":["text"],"additionalProperties":false,
        "properties":{"text":{"type":"string","maxLength":1000000}}});
    let quotas: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let naive = || {
        use sha2::Digest;
        let key = "wk_demo_dev_7Qm2";
        let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        let v: serde_json::Value = serde_json::from_slice(&request).expect("json");
        *quotas.lock().expect("lock").entry(digest).or_default() += 1;
        let mut e = regorus::Engine::new();
        e.add_data(data.clone()).expect("data");
        for (p, t) in &modules {
            e.add_policy(p.clone(), t.clone()).expect("policy");
        }
        e.set_input(regorus::Value::from(serde_json::json!({
            "principal": {"id": "agent-dev", "roles": ["developer"], "attributes": {"region": "eu"}},
            "server": {"name": "mock", "group": "tools"},
            "request": {"method": v["method"], "tool": v["params"]["name"], "risk": "LOW",
                        "arguments": v["params"]["arguments"]},
            "context": {"hour": 10, "weekday": "Tuesday"}
        })));
        let d = e
            .eval_rule("data.warden.authz.decision".into())
            .expect("eval");
        let validator = jsonschema::validator_for(&schema).expect("schema");
        let valid = validator.is_valid(&v["params"]["arguments"]);
        let mut all = Vec::new();
        warden_benches::strings(&v, &mut all);
        let r: serde_json::Value = serde_json::from_slice(&reply).expect("reply");
        warden_benches::strings(&r, &mut all);
        let hits = all.iter().filter(|s| set.is_match(s)).count();
        (d, valid, hits)
    };
    let mut g = c.benchmark_group("chain");
    g.bench_function("whole_path_1k_call_and_reply", |b| {
        b.iter(|| black_box(whole()))
    });
    // The same path with cold caches: before each timed call, a buffer
    // larger than the cache level named is written and read (not timed), as
    // the kernel's network stack, Pingora and the other connections do
    // between two calls of one connection in the live proxy. 1 MB evicts
    // this VM's L1 and L2 (32 KB and 512 KB per core) and leaves L3; 16 MB
    // evicts L3 (8 MB) too. What the guards cost live lies between. The
    // sweep makes an iteration milliseconds long, so these take the fewest
    // iterations criterion allows (1,275 over 50 samples).
    g.sample_size(50)
        .warm_up_time(std::time::Duration::from_millis(200))
        .measurement_time(std::time::Duration::from_millis(1));
    for (name, bytes) in [
        ("whole_path_1k_cold_l2", 1 << 20),
        ("whole_path_1k_cold_l3", 16 << 20),
    ] {
        let mut sweep = vec![0u8; bytes];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    evict(&mut sweep);
                    let t = std::time::Instant::now();
                    black_box(whole());
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    g.measurement_time(std::time::Duration::from_secs(5));
    g.sample_size(20);
    g.bench_function("naive_1k_call_and_reply", |b| b.iter(|| black_box(naive())));
    g.finish();
}

/// Writes and reads every cache line of `sweep`, so that what was cached
/// before is evicted by it.
fn evict(sweep: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    for line in sweep.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
        sum = sum.wrapping_add(u64::from(line[0]));
    }
    black_box(sum)
}

criterion_group!(benches, bench);
criterion_main!(benches);
