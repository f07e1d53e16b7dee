//! Quota checks and argument-schema validation, each beside a naive baseline.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

fn quota(c: &mut Criterion) {
    let tables = warden_filters::guards::quota::QuotaTables::new(1_000_000);
    let now = SystemTime::now();
    let key = b"definition-digest-32-bytes......acme\0agent-dev\0".to_vec();
    let mut g = c.benchmark_group("quota");
    g.bench_function("exact_window_check", |b| {
        b.iter(|| {
            black_box(tables.take_window(
                black_box(&key),
                u32::MAX as u64,
                Duration::from_secs(3600),
                1,
                now,
            ))
        })
    });
    g.bench_function("concurrency_slot_take_and_release", |b| {
        b.iter(|| drop(black_box(tables.take_slot(black_box(&key[..40]), 1_000))))
    });
    // Baseline: one mutex-guarded map, the first thing one would write.
    let naive: Mutex<HashMap<Vec<u8>, (u64, u64)>> = Mutex::new(HashMap::new());
    g.bench_function("naive_mutex_hashmap", |b| {
        b.iter(|| {
            let mut m = naive.lock().expect("lock");
            let e = m.entry(black_box(&key).clone()).or_insert((0, 0));
            e.1 += 1;
            black_box(e.1)
        })
    });
    g.finish();
}

fn schema(c: &mut Criterion) {
    // A typical tool: a ticket-creation schema with a handful of typed fields.
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "project": {"type": "string", "pattern": "^[A-Z]{2,10}$"},
            "summary": {"type": "string", "minLength": 1, "maxLength": 200},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
            "assignee": {"type": "string", "format": "email"}
        },
        "required": ["project", "summary"],
        "additionalProperties": false
    });
    let args = serde_json::json!({
        "project": "OPS", "summary": "Rotate the staging database credentials",
        "priority": 2, "labels": ["security", "db"], "assignee": "alice@example.com"
    });
    let compiled = warden_filters::guards::tools::compile(&schema).expect("schema");
    assert!(compiled.is_valid(&args));
    let mut g = c.benchmark_group("schema");
    g.bench_function("validate_typical_tool_compiled_once", |b| {
        b.iter(|| black_box(compiled.is_valid(black_box(&args))))
    });
    g.bench_function("validate_and_parse_arguments", |b| {
        let raw = args.to_string();
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&raw)).expect("json");
            black_box(compiled.is_valid(&v))
        })
    });
    g.sample_size(20);
    g.bench_function("naive_compile_per_call", |b| {
        b.iter(|| {
            let v = jsonschema::validator_for(black_box(&schema)).expect("schema");
            black_box(v.is_valid(&args))
        })
    });
    g.finish();
}

criterion_group!(benches, quota, schema);
criterion_main!(benches);
