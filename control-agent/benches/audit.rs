//! The agent's audit store on a day of the 100K-calls-per-day profile:
//! 100,000 calls over the last 24 hours, each a request record and its
//! reply's (200,000 chained records of about 700 bytes, one gateway of
//! three per call, 60 principals in 5 tenants, 24 tools on 4 servers, 9 %
//! refused), ingested in the gateway sink's batches of 1,000. Measured: a
//! search with one filter and its total, a page deep in the results, the
//! verification of a page-sized range, the live figures of 5 minutes.
//!
//! On SQLite (`audit_*`) and on PostgreSQL (`audit_pg_*`: a server started
//! for the run by the tests' harness, `tests/src/postgres.rs`; skipped,
//! saying so, when its binaries are missing). On PostgreSQL also: ingest
//! (a batch of 1,000 through one agent, and through two agents at once),
//! and searches over 30 days of daily partitions (`audit_pg_search_30d`:
//! the older days `WARDEN_BENCH_PG_DAY_ROWS` records each, default
//! 100,000, the newest `WARDEN_BENCH_PG_FULL_DAY_ROWS`, default 1,000,000:
//! a day at 1M calls/day; loaded in SQL, not through ingest, to fit in a
//! few minutes; docs/audit-store.md says what that stands for;
//! `WARDEN_BENCH_PG_DAYS=0` leaves them out).
//!
//! `cargo bench -p warden-agent --bench audit -- --warm-up-time 1 --measurement-time 3`
//! (`-- audit_pg` for PostgreSQL's alone)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/src/postgres.rs"]
mod pg;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
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

/// Calls as gateways' trails hold them (each a request record and its
/// reply's, chained per gateway).
struct Gen {
    rng: Rng,
    chains: Vec<Chain>,
}

impl Gen {
    fn new(seed: u64, gateways: usize) -> Gen {
        Gen {
            rng: Rng(seed),
            chains: (0..gateways)
                .map(|_| Chain {
                    seq: 0,
                    prev: [0; 32],
                    lines: Vec::new(),
                })
                .collect(),
        }
    }

    /// Call number `call` at `ts_us`, by gateway `g`.
    fn call(&mut self, call: u64, ts_us: i64, g: usize) {
        let servers = ["github", "jira", "postgres", "search"];
        let ts = jiff::Timestamp::from_microsecond(ts_us)
            .unwrap()
            .to_string();
        let p = self.rng.skewed(60);
        let tenant = format!("tenant-{}", p % 5);
        let principal = format!("user-{p}@example.com");
        let t = self.rng.skewed(24);
        let server = servers[(t % 4) as usize];
        let tool = format!("{server}_tool_{t}");
        let roll = self.rng.next() % 100;
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
        let dlp = if self.rng.next().is_multiple_of(100) {
            serde_json::json!([{"detector": if t.is_multiple_of(2) {"email"} else {"aws_key"}, "rule": "default", "path": "$.arguments.text", "action": "redact"}])
        } else {
            serde_json::json!([])
        };
        let latency = 2_000
            + self.rng.next() % 40_000
            + if self.rng.next().is_multiple_of(100) {
                400_000
            } else {
                0
            };
        let trace = format!("{:032x}", self.rng.next() as u128 * 0x1_0000_0001);
        let session = format!("sess-{:016x}", self.rng.next());
        for direction in ["request", "response"] {
            let rec = serde_json::json!({
                "seq": self.chains[g].seq,
                "prev": hex::encode(self.chains[g].prev),
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
            let c = &mut self.chains[g];
            c.prev = Sha256::digest(line.as_bytes()).into();
            c.seq += 1;
            c.lines.push(line);
        }
    }

    /// The next `n` calls of gateway 0 over the last hour, as a batch.
    fn batch(&mut self, first_call: u64, n: u64, now_us: i64) -> Vec<u8> {
        let from = self.chains[0].lines.len();
        for call in first_call..first_call + n {
            let ts_us = now_us - 3_600_000_000 + (self.rng.next() % 3_600_000_000) as i64;
            self.call(call, ts_us, 0);
        }
        let mut body = self.chains[0].lines[from..].join("\n");
        body.push('\n');
        self.chains[0].lines.clear();
        body.into_bytes()
    }
}

/// Three gateways' trails over the day ending now.
fn day(now_us: i64) -> Vec<Chain> {
    let mut gen = Gen::new(0x9E37_79B9_7F4A_7C15, 3);
    let start = now_us - DAY_US;
    for call in 0..CALLS {
        let ts_us =
            start + (call as i64 * DAY_US) / CALLS as i64 + (gen.rng.next() % 500_000) as i64;
        gen.call(call, ts_us, (call % 3) as usize);
    }
    gen.chains
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Ships the day's trails into `store` in batches of 1,000 lines, the
/// gateways interleaved as they would ship: records accepted, bytes sent,
/// the time it took.
fn ship(store: &AuditStore, chains: &[Chain]) -> (u64, usize, Duration) {
    let (mut records, mut bytes) = (0u64, 0usize);
    let t = Instant::now();
    let mut at = vec![0usize; chains.len()];
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
    (records, bytes, t.elapsed())
}

/// The one-filter searches of a day (both stores).
fn day_filters(day: &Query) -> Vec<(&'static str, Query)> {
    vec![
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
    ]
}

fn bench_audit(c: &mut Criterion) {
    if std::env::args().any(|a| a.starts_with("audit_pg")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = warden_agent::jobs::open_audit_with_retention(
        &dir.path().join("audit.sqlite3"),
        Limits::default(),
    )
    .unwrap();
    let now = now_us();
    let t = Instant::now();
    let chains = day(now);
    let generated = t.elapsed();
    let (records, bytes, ingest) = ship(&store, &chains);
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
    let filters = day_filters(&day);
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

/// Why the PostgreSQL benchmarks cannot run here, if they cannot.
fn pg_missing() -> Option<String> {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().join("bin/postgres").exists())
        })
        .unwrap_or(false);
    if !found {
        return Some(
            "PostgreSQL's server is missing (/usr/lib/postgresql/*/bin/postgres): run scripts/setup.sh".into(),
        );
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let user = std::process::Command::new("id")
        .args(["-u", pg::PG_USER])
        .output()
        .is_ok_and(|o| o.status.success());
    (root && !user).then(|| {
        format!(
            "running as root and user {} is missing (PostgreSQL refuses root): run scripts/setup.sh",
            pg::PG_USER
        )
    })
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The bytes of the audit table's partitions.
fn pg_bytes(server: &pg::PgServer, db: &str) -> u64 {
    server
        .psql(
            db,
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits \
             WHERE inhparent = 'warden_audit'::regclass",
        )
        .unwrap()
        .parse()
        .unwrap()
}

/// The partition of the day starting at `lo` (µs), as the store names it.
fn pg_part_name(lo: i64) -> String {
    let date = jiff::Timestamp::from_microsecond(lo)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    format!(
        "warden_audit_p{:04}{:02}{:02}",
        date.year(),
        date.month(),
        date.day()
    )
}

/// A day of generated records (the day profile's shape: 60 principals
/// skewed, 24 tools on 4 servers skewed, 9 % refused) in SQL: `rows`
/// records in the partition of the day starting `lo` (µs), loaded into a
/// table of its own and attached (its indexes built once, not row by
/// row), ids in time order after `first_id`.
fn pg_day_sql(lo: i64, rows: u64, first_id: u64) -> String {
    let name = pg_part_name(lo);
    let hi = lo + DAY_US;
    format!(
        "SET maintenance_work_mem = '256MB';
         CREATE TABLE {name} (LIKE warden_audit);
         INSERT INTO {name}
         SELECT {first_id} + g, 'gw-' || (g % 3), g / 3,
           to_char(to_timestamp(({lo} + (g::int8 * {DAY_US}) / {rows}) / 1e6) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
           {lo} + (g::int8 * {DAY_US}) / {rows},
           'user-' || s.p || '@example.com', 'tenant-' || (s.p % 5), 'tenant-' || (s.p % 5),
           (ARRAY['github','jira','postgres','search'])[s.t % 4 + 1],
           (ARRAY['github','jira','postgres','search'])[s.t % 4 + 1] || '_tool_' || s.t,
           'tools/call', CASE WHEN g % 2 = 0 THEN 'request' ELSE 'response' END,
           CASE WHEN s.r < 0.91 THEN 'forwarded' WHEN s.r < 0.96 THEN 'denied'
                WHEN s.r < 0.98 THEN 'quota_exceeded' ELSE 'failed' END,
           CASE WHEN s.r >= 0.91 THEN 'policy' END,
           CASE WHEN s.r >= 0.98 THEN 'upstream timed out' WHEN s.r >= 0.91 THEN 'not_allowed: not for this tenant' END,
           (ARRAY['LOW','MEDIUM','HIGH','CRITICAL'])[s.t % 4 + 1], md5(g::text || '{lo}'), NULL,
           2000 + (s.r * 40000)::int8, NULL, NULL,
           decode(md5((g - 1)::text || '{lo}'), 'hex'), decode(md5(g::text || '{lo}'), 'hex'),
           repeat('x', 700)
         FROM (SELECT g, least(floor(random() * 60), floor(random() * 60))::int AS p,
                 least(floor(random() * 24), floor(random() * 24))::int AS t, random() AS r
               FROM generate_series(0, {rows} - 1) g) s;
         ALTER TABLE warden_audit ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi});
         INSERT INTO warden_audit_partitions (lo, hi, name, rows, peak) VALUES ({lo}, {hi}, '{name}', {rows}, {rows});",
        rows = rows.max(1)
    )
}

fn bench_audit_pg(c: &mut Criterion) {
    if let Some(why) = pg_missing() {
        eprintln!("audit on PostgreSQL: skipped: {why}");
        return;
    }
    let server = pg::PgServer::start();
    let url = server.database("audit_day");
    let store = AuditStore::on_database(&url, Limits::default()).unwrap();
    let now = now_us();
    let chains = day(now);
    let (records, bytes, ingest) = ship(&store, &chains);
    let size = pg_bytes(&server, "audit_day");
    eprintln!(
        "PostgreSQL: the day's {records} records ({} MB of lines) ingested in {ingest:?} \
         ({:.0} records/s, one agent, batches of 1,000); partitions {} MB ({} bytes a record)",
        bytes / 1_000_000,
        records as f64 / ingest.as_secs_f64(),
        size / 1_000_000,
        size / records.max(1)
    );
    let mut body = chains[0].lines[..1000].join("\n");
    body.push('\n');
    let t = Instant::now();
    let again = store.ingest("gw-0", body.as_bytes()).unwrap();
    eprintln!(
        "PostgreSQL: a batch of 1,000 sent again: {} duplicates in {:?}",
        again.duplicates,
        t.elapsed()
    );
    server
        .psql("audit_day", "VACUUM ANALYZE warden_audit")
        .unwrap();

    // Ingest: fresh batches of 1,000 (a gateway's full batch), one agent;
    // and two agents at once, each its own gateway's batch; into a
    // database of their own (the day's searches read the day alone).
    let mut g = c.benchmark_group("audit_pg_ingest");
    g.sample_size(10);
    let ingest_url = server.database("audit_ingest");
    let one = AuditStore::on_database(&ingest_url, Limits::default()).unwrap();
    let other = AuditStore::on_database(&ingest_url, Limits::default()).unwrap();
    let gens = std::cell::RefCell::new((Gen::new(7, 1), Gen::new(11, 1), 0u64));
    g.bench_function("batch_1000_one_agent", |b| {
        b.iter_batched(
            || {
                let mut g = gens.borrow_mut();
                g.2 += 1000;
                let first = g.2;
                g.0.batch(first, 500, now_us())
            },
            |body| one.ingest("gw-bench-a", &body).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("batch_1000_each_two_agents", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (ba, bb) = {
                    let mut g = gens.borrow_mut();
                    g.2 += 1000;
                    let first = g.2;
                    (
                        g.0.batch(first, 500, now_us()),
                        g.1.batch(first, 500, now_us()),
                    )
                };
                let t = Instant::now();
                std::thread::scope(|s| {
                    s.spawn(|| one.ingest("gw-bench-a", &ba).unwrap());
                    s.spawn(|| other.ingest("gw-bench-b", &bb).unwrap());
                });
                spent += t.elapsed();
            }
            spent
        })
    });
    g.finish();
    let ingested: u64 = server
        .psql("audit_ingest", "SELECT count(*) FROM warden_audit")
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "PostgreSQL ingest benchmarks: {ingested} records stored, {} MB",
        pg_bytes(&server, "audit_ingest") / 1_000_000
    );
    drop((one, other));

    let day_q = Query {
        from_us: Some(now - DAY_US),
        to_us: Some(now + 1),
        ..Query::default()
    };
    let mut g = c.benchmark_group("audit_pg_search_day");
    g.sample_size(20);
    let filters = day_filters(&day_q);
    for (name, q) in &filters {
        let p = store.search(q).unwrap();
        eprintln!(
            "PostgreSQL search {name}: {} matches, page of {}",
            p.total,
            p.rows.len()
        );
        g.bench_function(*name, |b| {
            b.iter(|| black_box(store.search(black_box(q)).unwrap()))
        });
    }
    let mut deep = filters[1].1.clone();
    for _ in 0..19 {
        deep.before_id = store.search(&deep).unwrap().next_before;
    }
    g.bench_function("principal_page_20", |b| {
        b.iter(|| black_box(store.search(black_box(&deep)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("audit_pg_verify");
    g.sample_size(20);
    let noon = now - DAY_US / 2;
    let range = Query {
        gateway: Some("gw-2".into()),
        from_us: Some(noon),
        to_us: Some(noon + 65_000_000),
        ..Query::default()
    };
    let v = store.verify(&range).unwrap();
    assert!(v.ok, "{v:?}");
    g.bench_function("page_range", |b| {
        b.iter(|| black_box(store.verify(black_box(&range)).unwrap()))
    });
    let sparse = Query {
        principal: Some("user-7@example.com".into()),
        from_us: Some(noon),
        to_us: Some(noon + 600_000_000),
        ..Query::default()
    };
    let v = store.verify(&sparse).unwrap();
    eprintln!(
        "PostgreSQL verify a principal's range: {} records, ok {}",
        v.records, v.ok
    );
    assert!(v.ok);
    g.bench_function("principal_range", |b| {
        b.iter(|| black_box(store.verify(black_box(&sparse)).unwrap()))
    });
    g.finish();
    let t = Instant::now();
    let whole = store
        .verify(&Query {
            from_us: Some(now - DAY_US - 1),
            to_us: Some(now + 1),
            ..Query::default()
        })
        .unwrap();
    eprintln!(
        "PostgreSQL verify the whole day once: {} records, ok {}, {:?}",
        whole.records,
        whole.ok,
        t.elapsed()
    );

    let mut g = c.benchmark_group("audit_pg_live");
    g.sample_size(20);
    g.bench_function("5min", |b| {
        b.iter(|| black_box(store.live(Duration::from_secs(300), None, &[]).unwrap()))
    });
    g.bench_function("1h", |b| {
        b.iter(|| black_box(store.live(Duration::from_secs(3600), None, &[]).unwrap()))
    });
    g.finish();
    drop(store);

    // 30 days of daily partitions, the newest at a full day.
    let days = env_or("WARDEN_BENCH_PG_DAYS", 30) as i64;
    if days == 0 {
        return;
    }
    let per_day = env_or("WARDEN_BENCH_PG_DAY_ROWS", 100_000);
    let full_day = env_or("WARDEN_BENCH_PG_FULL_DAY_ROWS", 1_000_000);
    let url = server.database("audit_month");
    let store = AuditStore::on_database(
        &url,
        // A retention whose partitions are daily, as loaded below.
        Limits {
            retention: Duration::from_secs(31 * 86_400),
            max_rows: u64::MAX,
            max_bytes: u64::MAX,
        },
    )
    .unwrap();
    let today = now.div_euclid(DAY_US) * DAY_US;
    let t = Instant::now();
    let mut first_id = 0u64;
    let mut total = 0u64;
    for d in (1..=days).rev() {
        let rows = if d == 1 { full_day } else { per_day };
        let lo = today - d * DAY_US;
        server
            .psql("audit_month", &pg_day_sql(lo, rows, first_id))
            .unwrap();
        // Its visibility map set (index-only scans), as autovacuum leaves
        // a day that no longer changes.
        server
            .psql(
                "audit_month",
                &format!("VACUUM ANALYZE {}", pg_part_name(lo)),
            )
            .unwrap();
        first_id += rows;
        total += rows;
    }
    server
        .psql(
            "audit_month",
            &format!("SELECT setval('warden_audit_id', {first_id}); ANALYZE warden_audit"),
        )
        .unwrap();
    // Every day's visibility map set, as the retention leaves a closed
    // partition (a day vacuumed while autovacuum analyzed the one before
    // may have none: its snapshot holds the vacuum back).
    let visible = || -> f64 {
        server
            .psql(
                "audit_month",
                "SELECT coalesce(sum(c.relallvisible)::float8 / nullif(sum(c.relpages), 0), 1) \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'warden_audit'::regclass",
            )
            .unwrap()
            .parse()
            .unwrap()
    };
    for _ in 0..3 {
        if visible() > 0.99 {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
        server
            .psql("audit_month", "VACUUM (ANALYZE) warden_audit")
            .unwrap();
    }
    eprintln!(
        "PostgreSQL 30 days: {:.1} % of the partitions' pages all-visible",
        visible() * 100.0
    );
    let size = pg_bytes(&server, "audit_month");
    eprintln!(
        "PostgreSQL: {days} days loaded in SQL ({total} records: {} a day, the newest {full_day}) in {:?}; partitions {} MB",
        per_day,
        t.elapsed(),
        size / 1_000_000
    );
    let yesterday = today - DAY_US;
    let hour = |h: i64| {
        (
            yesterday + h * 3_600_000_000,
            yesterday + (h + 1) * 3_600_000_000,
        )
    };
    let (h3, h3_end) = hour(3);
    let month = Query {
        from_us: Some(today - days * DAY_US),
        to_us: Some(today),
        ..Query::default()
    };
    let searches: Vec<(&str, Query)> = vec![
        ("none_30d", month.clone()),
        (
            "principal_30d",
            Query {
                principal: Some("user-7@example.com".into()),
                ..month.clone()
            },
        ),
        (
            "principal_rare_30d",
            Query {
                principal: Some("user-59@example.com".into()),
                ..month.clone()
            },
        ),
        (
            "tool_30d",
            Query {
                tool: Some("jira_tool_5".into()),
                ..month.clone()
            },
        ),
        (
            "principal_newest_day",
            Query {
                principal: Some("user-7@example.com".into()),
                from_us: Some(yesterday),
                to_us: Some(today),
                ..Query::default()
            },
        ),
        (
            "tool_newest_day",
            Query {
                tool: Some("jira_tool_5".into()),
                from_us: Some(yesterday),
                to_us: Some(today),
                ..Query::default()
            },
        ),
        (
            "time_hour_3_of_newest_day",
            Query {
                from_us: Some(h3),
                to_us: Some(h3_end),
                ..Query::default()
            },
        ),
        (
            "principal_hour_3_of_newest_day",
            Query {
                principal: Some("user-7@example.com".into()),
                from_us: Some(h3),
                to_us: Some(h3_end),
                ..Query::default()
            },
        ),
        (
            "time_hour_3_of_day_15",
            Query {
                from_us: Some(today - 15 * DAY_US + 3 * 3_600_000_000),
                to_us: Some(today - 15 * DAY_US + 4 * 3_600_000_000),
                ..Query::default()
            },
        ),
        (
            "outcome_denied_30d_tenant_scoped",
            Query {
                outcome: Some("denied".into()),
                tenants: vec!["tenant-1".into()],
                ..month.clone()
            },
        ),
        (
            "reason_substring_newest_day",
            Query {
                reason: Some("timed out".into()),
                from_us: Some(yesterday),
                to_us: Some(today),
                ..Query::default()
            },
        ),
    ];
    let mut g = c.benchmark_group("audit_pg_search_30d");
    g.sample_size(10);
    for (name, q) in &searches {
        match store.search(q) {
            Ok(p) => eprintln!(
                "PostgreSQL 30 days, search {name}: {} matches, page of {}",
                p.total,
                p.rows.len()
            ),
            Err(e) => {
                eprintln!("PostgreSQL 30 days, search {name}: {e:#}");
                continue;
            }
        }
        g.bench_function(*name, |b| {
            b.iter(|| black_box(store.search(black_box(q)).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_audit, bench_audit_pg);
criterion_main!(benches);
