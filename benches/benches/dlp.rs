//! DLP throughput on realistic MCP JSON (a 16 KiB tool result): clean,
//! clean but full of near misses, and with one finding per KiB, all built-in detectors on; beside a naive
//! `regex::RegexSet` over the same patterns on every unescaped string; and
//! short texts scanned again (the scanner's memo) and new.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warden_benches::corpus;
use warden_filters::engines::dlp::detectors::SPECS;
use warden_filters::engines::dlp::Scanner;

#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new(&[]).expect("scanner");
    let set = regex::RegexSet::new(SPECS.iter().map(|s| s.pattern)).expect("set");
    let singles: Vec<regex::Regex> = SPECS
        .iter()
        .map(|s| regex::Regex::new(s.pattern).expect("re"))
        .collect();
    let naive = |raw: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(raw).expect("json");
        let mut all = Vec::new();
        warden_benches::strings(&v, &mut all);
        let mut n = 0;
        for s in all {
            for i in set.matches(s).iter() {
                n += singles[i].find_iter(s).count();
            }
        }
        n
    };
    let clean = warden_benches::tool_result(16 * 1024, 0);
    let dirty = warden_benches::tool_result(16 * 1024, 1);
    let near = warden_benches::tool_result_near_misses(16 * 1024);
    assert!(!scanner.clean(&near), "near misses wake detectors up");
    assert_eq!(
        scanner.scan_json(&near).map(|f| f.len()),
        Ok(0),
        "… and find nothing"
    );
    assert!(
        scanner.scan_json(&clean).map(|f| f.is_empty()) == Ok(true),
        "the clean sample is clean"
    );
    assert!(
        scanner.scan_json(&dirty).map(|f| f.len()).unwrap_or(0) >= 12,
        "about one finding per KiB"
    );
    // Adversarial: 64 KiB packed with anchors of unbounded patterns and with
    // digit runs; the scan must stay linear (each candidate may not re-read
    // the rest of the string).
    // (Two sizes: the time per byte must not grow with the size.)
    let flood = |kib: usize| {
        let mut t = String::new();
        while t.len() < kib * 1024 {
            t.push_str("sk-sk-sk-sk-password=password=ignore previous 4111 ");
        }
        serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"text": t}}))
            .unwrap_or_default()
    };
    let mut g = c.benchmark_group("dlp");
    for kib in [64, 256] {
        let data = flood(kib);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("scanner/anchor_flood_{kib}k"), |b| {
            b.iter(|| black_box(scanner.scan_json(black_box(&data))))
        });
    }
    for (name, data) in [
        ("clean_16k", &clean),
        ("clean_near_misses_16k", &near),
        ("one_finding_per_kb_16k", &dirty),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("scanner/{name}"), |b| {
            b.iter(|| black_box(scanner.scan_json(black_box(data))))
        });
        g.bench_function(format!("naive_regexset/{name}"), |b| {
            b.iter(|| black_box(naive(black_box(data))))
        });
    }
    g.finish();
    // The benchmarks' own call (`benches/ab.sh`, `benches/e2e.sh`): a 924-byte
    // text in a `tools/call` and the same text echoed back, each scanned
    // whole on every call.
    let filler = "deploy the service to eu-west-1 with 3 replicas ";
    let text: String = filler.repeat(924 / filler.len() + 1)[..924].to_owned();
    let call = serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1,
        "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}))
    .unwrap_or_default();
    let reply = serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1,
        "result": {"content": [{"type": "text", "text": text}], "isError": false}}))
    .unwrap_or_default();
    let mut g = c.benchmark_group("dlp_call");
    for (name, data) in [("request_1k", &call), ("reply_1k", &reply)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("scan_json/{name}"), |b| {
            b.iter(|| black_box(scanner.scan_json(black_box(data))))
        });
    }
    g.finish();
    // Short texts that come back on every call (a session id in each audit
    // record, a header line): scanned once, then found in the scanner's
    // memo; `_new` scans a different id every time (the memo misses).
    let mut g = c.benchmark_group("dlp_short");
    for (name, text) in [
        ("session_id", "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
        ("header_line", "MCP-Protocol-Version: 2025-06-18"),
    ] {
        g.bench_function(format!("{name}_again"), |b| {
            b.iter(|| {
                let mut hits = Vec::new();
                scanner.scan_str(black_box(text), &mut hits);
                hits
            })
        });
        let mut n = 0u64;
        g.bench_function(format!("{name}_new"), |b| {
            b.iter(|| {
                n += 1;
                let t = format!("{text}{n:x}");
                let mut hits = Vec::new();
                scanner.scan_str(black_box(&t), &mut hits);
                hits
            })
        });
    }
    g.finish();
    // The corpus (`warden_benches::corpus`): every class of content MCP
    // carries, in a tool result, at 1 KiB, 16 KiB and 256 KiB, clean and
    // with a secret planted per 4 KiB (the cost of a finding). MB/s per
    // class is what `BENCHMARKS.md` reports; a class far below prose is a
    // cliff. (`cargo bench --bench dlp -- dlp_corpus/scan/1k` for one size.)
    let mut g = c.benchmark_group("dlp_corpus");
    for (size, label) in [(1024, "1k"), (16 * 1024, "16k"), (256 * 1024, "256k")] {
        for class in corpus::Class::ALL {
            for (secrets, kind) in [(false, "scan"), (true, "scan_with_findings")] {
                let data = corpus::result(&corpus::sample(class, size, secrets));
                g.throughput(Throughput::Bytes(data.len() as u64));
                g.bench_function(format!("{kind}/{label}/{}", class.name()), |b| {
                    b.iter(|| black_box(scanner.scan_json(black_box(&data))))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
