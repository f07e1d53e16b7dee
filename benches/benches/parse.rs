//! JSON-RPC envelope parsing: Warden's validating parser (envelope plus the
//! spans of params, arguments, _meta, result and error) against the naive
//! baseline (`serde_json::Value` plus the same field extraction, which
//! neither rejects duplicate keys nor bounds depth), and against simd-json
//! as the design card suggests: its tape alone (no duplicate or case-folded
//! key check, no byte spans, which a tape does not carry) and its borrowed
//! value. And the SSE decoder.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use warden_benches::tools_call;
use warden_filters::{parse, ParseLimits, SseDecoder};

fn naive(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let method = v.get("method")?.as_str()?.to_owned();
    let name = v.get("params")?.get("name")?.as_str()?.to_owned();
    Some((method, name))
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for size in [1024usize, 16 * 1024, 256 * 1024] {
        let body = tools_call(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("warden_validating", size),
            &body,
            |b, body| {
                b.iter(|| {
                    parse(black_box(body), ParseLimits::default())
                        .map(|_| ())
                        .ok()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("naive_serde_value", size),
            &body,
            |b, body| b.iter(|| naive(black_box(body))),
        );
        // simd-json parses in place: each iteration pays for the copy it needs.
        g.bench_with_input(
            BenchmarkId::new("simd_json_tape", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut copy = black_box(body).clone();
                    let n = simd_json::to_tape(&mut copy).map(|t| t.0.len()).ok();
                    n
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("simd_json_borrowed_value", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut copy = black_box(body).clone();
                    let ok = simd_json::to_borrowed_value(&mut copy).is_ok();
                    ok
                })
            },
        );
    }
    g.finish();
}

fn bench_sse(c: &mut Criterion) {
    let event = format!(
        "event: message\ndata: {}\n\n",
        String::from_utf8_lossy(&tools_call(1024))
    );
    let stream: Vec<u8> = event.repeat(256).into_bytes();
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [1460usize, 16 * 1024] {
        g.bench_with_input(BenchmarkId::new("decode", chunk), &stream, |b, stream| {
            b.iter(|| {
                let mut d = SseDecoder::new(1 << 20);
                let mut n = 0;
                for c in stream.chunks(chunk) {
                    n += d.push(c).map(|e| e.len()).unwrap_or(0);
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_sse);
criterion_main!(benches);
