//! The agent's audit store on a day of the 100K-calls-per-day profile:
//! 100,000 calls over the last 24 hours, each a request record and its
//! reply's (200,000 chained records of about 700 bytes, one gateway of
//! three per call, 60 principals in 5 tenants, 24 tools on 4 servers, 9 %
//! refused), ingested in the gateway sink's batches of 1,000. Measured: a
//! search with one filter and its total, a page deep in the results, the
//! verification of a page-sized range, the live figures of 5 minutes.
//!
//! `cargo bench -p warden-agent --bench audit -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use sha2::{Digest, Sha256};
use warden_agent::audit::{AuditStore, Limits, Query};

const CALLS: u64 = 100_000;
const DAY_US: i64 = 86_400_000_000;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Skewed towards small values (a few principals and tools do most).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.next() % n;
        let b = self.next() % n;
        a.min(b)
    }
}

struct Chain {
    seq: u64,
    prev: [u8; 32],
    lines: Vec<String>,
}

/// Three gateways' trails over the day ending now.
fn day(now_us: i64) -> Vec<Chain> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut chains: Vec<Chain> = (0..3)
        .map(|_| Chain {
            seq: 0,
            prev: [0; 32],
            lines: Vec::new(),
        })
        .collect();
    let servers = ["github", "jira", "postgres", "search"];
    let start = now_us - DAY_US;
    for call in 0..CALLS {
        let ts_us = start + (call as i64 * DAY_US) / CALLS as i64 + (rng.next() % 500_000) as i64;
        let ts = jiff::Timestamp::from_microsecond(ts_us)
            .unwrap()
            .to_string();
        let p = rng.skewed(60);
        let tenant = format!("tenant-{}", p % 5);
        let principal = format!("user-{p}@example.com");
        let t = rng.skewed(24);
        let server = servers[(t % 4) as usize];
        let tool = format!("{server}_tool_{t}");
        let roll = rng.next() % 100;
        let (outcome, decided_by, reason) = match roll {
            0..=90 => ("forwarded", None, None),
            91..=95 => (
                "denied",
                Some("policy"),
                Some(format!("not_allowed: {tool} is not for {tenant}")),
            ),
            96..=97 => (
                "quota_exceeded",
                Some("quota"),
                Some("quota_exceeded:per_principal".to_owned()),
            ),
            _ => ("failed", None, Some("upstream timed out".to_owned())),
        };
        let risk = ["LOW", "MEDIUM", "HIGH", "CRITICAL"][(t % 4) as usize];
        let dlp = if rng.next().is_multiple_of(100) {
            serde_json::json!([{"detector": if t.is_multiple_of(2) {"email"} else {"aws_key"}, "rule": "default", "path": "$.arguments.text", "action": "redact"}])
        } else {
            serde_json::json!([])
        };
        let latency = 2_000
            + rng.next() % 40_000
            + if rng.next().is_multiple_of(100) {
                400_000
            } else {
                0
            };
        let trace = format!("{:032x}", rng.next() as u128 * 0x1_0000_0001);
        let session = format!("sess-{:016x}", rng.next());
        let g = (call % 3) as usize;
        for direction in ["request", "response"] {
            let rec = serde_json::json!({
                "seq": chains[g].seq,
                "prev": hex::encode(chains[g].prev),
                "ts": ts,
                "revision": "sha256:5d7f9bdf6277e571fbed30558bcb235b8778e45a34f35f7b5e04e9951aa2c57a",
                "request_id": call,
                "trace_id": trace,
                "principal": principal,
                "tenant": tenant,
                "person": format!("{tenant}/{principal}"),
                "auth": "jwt",
                "source_ip": format!("10.0.{}.{}", p % 250, t),
                "server": server,
                "group": "tools",
                "http_method": "POST",
                "path": format!("/{server}/mcp"),
                "session_id": session,
                "direction": direction,
                "jsonrpc_id": call,
                "method": "tools/call",
                "tool": tool,
                "risk": risk,
                "outcome": outcome,
                "decided_by": decided_by,
                "reason": reason,
                "args_digest": format!("sha256:{}", hex::encode(Sha256::digest(trace.as_bytes()))),
                "dlp": if direction == "request" { dlp.clone() } else { serde_json::json!([]) },
                "upstream": "10.1.0.7:8080",
                "upstream_status": 200,
                "status": 200,
                "latency_us": latency,
            });
            let line = rec.to_string();
            let c = &mut chains[g];
            c.prev = Sha256::digest(line.as_bytes()).into();
            c.seq += 1;
            c.lines.push(line);
        }
    }
    chains
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn bench_audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("audit.sqlite3"), Limits::default()).unwrap();
    warden_agent::jobs::audit_retention(&store).unwrap();
    let now = now_us();
    let t = Instant::now();
    let chains = day(now);
    let generated = t.elapsed();
    let (mut records, mut bytes) = (0u64, 0usize);
    let t = Instant::now();
    // Batches of 1,000 lines, the gateways interleaved as they would ship.
    let mut at = [0usize; 3];
    loop {
        let mut any = false;
        for (g, chain) in chains.iter().enumerate() {
            let end = (at[g] + 1000).min(chain.lines.len());
            if at[g] == end {
                continue;
            }
            any = true;
            let mut body = chain.lines[at[g]..end].join("\n");
            body.push('\n');
            bytes += body.len();
            let done = store.ingest(&format!("gw-{g}"), body.as_bytes()).unwrap();
            records += done.accepted;
            at[g] = end;
        }
        if !any {
            break;
        }
    }
    let ingest = t.elapsed();
    let size = std::fs::metadata(dir.path().join("audit.sqlite3")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("audit.sqlite3-wal")).map_or(0, |m| m.len());
    eprintln!(
        "generated {records} records ({} MB of lines) in {generated:?}; ingested in {ingest:?} \
         ({:.0} records/s); store {} MB",
        bytes / 1_000_000,
        records as f64 / ingest.as_secs_f64(),
        size / 1_000_000
    );
    // Resending a batch: all duplicates.
    let mut body = chains[0].lines[..1000].join("\n");
    body.push('\n');
    let t = Instant::now();
    let again = store.ingest("gw-0", body.as_bytes()).unwrap();
    eprintln!(
        "a batch of 1,000 sent again: {} duplicates in {:?}",
        again.duplicates,
        t.elapsed()
    );
    let day = Query {
        from_us: Some(now - DAY_US),
        to_us: Some(now + 1),
        ..Query::default()
    };
    let mut g = c.benchmark_group("audit_search_day");
    g.sample_size(20);
    let filters: Vec<(&str, Query)> = vec![
        ("none", day.clone()),
        (
            "principal",
            Query {
                principal: Some("user-7@example.com".into()),
                ..day.clone()
            },
        ),
        (
            "principal_rare",
            Query {
                principal: Some("user-59@example.com".into()),
                ..day.clone()
            },
        ),
        (
            "tenant",
            Query {
                tenant: Some("tenant-3".into()),
                ..day.clone()
            },
        ),
        (
            "tool",
            Query {
                tool: Some("jira_tool_5".into()),
                ..day.clone()
            },
        ),
        (
            "outcome_denied",
            Query {
                outcome: Some("denied".into()),
                ..day.clone()
            },
        ),
        (
            "reason_substring",
            Query {
                reason: Some("timed out".into()),
                ..day.clone()
            },
        ),
        (
            "gateway",
            Query {
                gateway: Some("gw-1".into()),
                ..day.clone()
            },
        ),
        (
            "tenant_scoped_outcome",
            Query {
                outcome: Some("denied".into()),
                tenants: vec!["tenant-1".into(), "tenant-2".into()],
                ..day.clone()
            },
        ),
    ];
    for (name, q) in &filters {
        let p = store.search(q).unwrap();
        eprintln!(
            "search {name}: {} matches, page of {}",
            p.total,
            p.rows.len()
        );
        g.bench_function(*name, |b| {
            b.iter(|| black_box(store.search(black_box(q)).unwrap()))
        });
    }
    // Page 20 of a principal's records (paging by `before`).
    let mut deep = filters[1].1.clone();
    for _ in 0..19 {
        deep.before_id = store.search(&deep).unwrap().next_before;
    }
    g.bench_function("principal_page_20", |b| {
        b.iter(|| black_box(store.search(black_box(&deep)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(20);
    // A page-sized range: one gateway's 50 records around noon.
    let noon = now - DAY_US / 2;
    let range = Query {
        gateway: Some("gw-2".into()),
        from_us: Some(noon),
        to_us: Some(noon + 65_000_000),
        ..Query::default()
    };
    let v = store.verify(&range).unwrap();
    eprintln!("verify page range: {} records, ok {}", v.records, v.ok);
    assert!(v.ok);
    g.bench_function("page_range", |b| {
        b.iter(|| black_box(store.verify(black_box(&range)).unwrap()))
    });
    // A principal's page-sized range: every record's predecessor looked up.
    let sparse = Query {
        principal: Some("user-7@example.com".into()),
        from_us: Some(noon),
        to_us: Some(noon + 600_000_000),
        ..Query::default()
    };
    let v = store.verify(&sparse).unwrap();
    eprintln!(
        "verify a principal's range: {} records, ok {}",
        v.records, v.ok
    );
    assert!(v.ok);
    g.bench_function("principal_range", |b| {
        b.iter(|| black_box(store.verify(black_box(&sparse)).unwrap()))
    });
    g.finish();
    let t = Instant::now();
    let whole = store.verify(&Query::default()).unwrap();
    eprintln!(
        "verify the whole day once: {} records, ok {}, {:?}",
        whole.records,
        whole.ok,
        t.elapsed()
    );

    let mut g = c.benchmark_group("audit_live");
    g.sample_size(20);
    let l = store.live(Duration::from_secs(300), None, &[]).unwrap();
    eprintln!(
        "live 5 min: {} calls, p50 {:?} ms, p99 {:?} ms",
        l.calls, l.p50_ms, l.p99_ms
    );
    g.bench_function("5min", |b| {
        b.iter(|| black_box(store.live(Duration::from_secs(300), None, &[]).unwrap()))
    });
    g.bench_function("1h", |b| {
        b.iter(|| black_box(store.live(Duration::from_secs(3600), None, &[]).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);
