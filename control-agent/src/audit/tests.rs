#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};

use super::*;
// `serve` runs its store with the retention job: so do these tests.
use crate::jobs::open_audit_with_retention as open_audit;

/// A gateway's trail: `n` chained lines from `seq`, after the line `prev`
/// (None: the start), one a second from `t0` (unix seconds); each call is
/// a request and its reply.
pub(crate) struct Trail {
    pub(crate) lines: Vec<String>,
    pub(super) seq: u64,
    pub(super) prev: [u8; 32],
}

impl Trail {
    pub(crate) fn new() -> Trail {
        Trail {
            lines: Vec::new(),
            seq: 0,
            prev: [0; 32],
        }
    }

    pub(crate) fn push(&mut self, rec: serde_json::Value) -> &str {
        let mut obj = serde_json::Map::new();
        obj.insert("seq".into(), self.seq.into());
        obj.insert("prev".into(), hex::encode(self.prev).into());
        if let serde_json::Value::Object(m) = rec {
            obj.extend(m);
        }
        let line = serde_json::Value::Object(obj).to_string();
        self.prev = Sha256::digest(line.as_bytes()).into();
        self.seq += 1;
        self.lines.push(line);
        self.lines.last().unwrap()
    }

    /// A call: its record (the gateway writes one per client message,
    /// after the reply, with the call's latency), and a reply record as an
    /// older trail might hold (ignored by the live figures).
    pub(super) fn call(
        &mut self,
        ts_s: i64,
        principal: &str,
        tenant: &str,
        tool: &str,
        outcome: &str,
    ) {
        let ts = jiff::Timestamp::from_second(ts_s).unwrap().to_string();
        let trace = format!("trace-{}", self.seq);
        let reason = (outcome != "forwarded").then(|| format!("{outcome}: not for {principal}"));
        let mut rec = serde_json::json!({
            "ts": ts, "principal": principal, "tenant": tenant, "server": "mock",
            "direction": "request", "method": "tools/call", "tool": tool, "outcome": outcome,
            "reason": reason, "trace_id": trace, "latency_us": 2000 + self.seq, "status": 200,
            "dlp": if tool == "leak" { serde_json::json!([{"detector": "email", "rule": "r", "path": "$", "action": "redact"}]) } else { serde_json::json!([]) },
        });
        if tool == "leak" {
            rec["anomaly"] = serde_json::json!({"learning": false, "signals": [
                {"kind": "first_tool", "strength": 1.0, "detail": "mock/leak"},
                {"kind": "new_host", "strength": 1.0, "detail": "evil.example"}]});
        }
        self.push(rec);
        if outcome == "forwarded" {
            self.push(serde_json::json!({
                "ts": ts, "principal": principal, "tenant": tenant, "server": "mock",
                "direction": "response", "method": "tools/call", "tool": tool, "outcome": "forwarded",
                "trace_id": trace, "latency_us": 2000 + self.seq, "status": 200,
            }));
        }
    }

    pub(crate) fn body(&self, from: usize, to: usize) -> Vec<u8> {
        let mut b = self.lines[from..to].join("\n").into_bytes();
        b.push(b'\n');
        b
    }
}

fn store(limits: Limits) -> (tempfile::TempDir, AuditStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open_audit(&dir.path().join("audit.sqlite3"), limits).unwrap();
    (dir, s)
}

pub(super) fn now_s() -> i64 {
    now_us() / 1_000_000
}

/// Ten calls of two principals, two tenants, some denied.
pub(crate) fn sample() -> Trail {
    let mut t = Trail::new();
    let base = now_s() - 100;
    for i in 0..10 {
        let (p, tenant) = if i % 2 == 0 {
            ("alice", "acme")
        } else {
            ("bob", "globex")
        };
        let outcome = if i % 5 == 4 { "denied" } else { "forwarded" };
        let tool = if i == 3 { "leak" } else { "echo" };
        t.call(base + i, p, tenant, tool, outcome);
    }
    t
}

#[test]
fn a_batch_is_stored_and_a_resent_one_is_all_duplicates() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    let n = t.lines.len();
    let half = n / 2;
    assert_eq!(
        s.ingest("gw-1", &t.body(0, half)).unwrap(),
        Ingested {
            accepted: half as u64,
            duplicates: 0,
            unreadable_costs: 0,
            ..Default::default()
        }
    );
    // The second batch overlaps the first (a POST that timed out, resent).
    let again = s.ingest("gw-1", &t.body(half - 3, n)).unwrap();
    assert_eq!(again.accepted, (n - half) as u64);
    assert_eq!(again.duplicates, 3);
    assert_eq!(s.rows(), n as u64);
    // The same lines from another gateway are that gateway's records.
    assert_eq!(s.ingest("gw-2", &t.body(0, 2)).unwrap().accepted, 2);
    assert_eq!(s.rows(), n as u64 + 2);
    // The stored line is the line, byte for byte.
    let page = s
        .search(&Query {
            gateway: Some("gw-1".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(page.total, n as u64);
    let newest = s.get(page.rows[0].id, &[]).unwrap().unwrap();
    assert_eq!(newest.raw.as_deref(), Some(t.lines[n - 1].as_str()));
    assert_eq!(newest.seq, (n - 1) as u64);
}

#[test]
fn a_malformed_line_refuses_the_whole_batch() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    for (bad, why) in [
        ("[1,2]".to_owned(), "not a JSON object"),
        (
            "{\"seq\":1.5,\"prev\":\"00\"}".to_owned(),
            "not an audit record",
        ),
        (
            t.lines[2].replacen("\"prev\":\"", "\"prev\":\"zz", 1),
            "`prev` is not 64 hex digits",
        ),
        (
            t.lines[2].replacen("\"ts\":\"", "\"ts\":\"yesterday", 1),
            "`ts` is not an RFC 3339 time",
        ),
        ("{\"seq\":3".to_owned(), "not an audit record"),
    ] {
        let mut lines = t.lines[..4].to_vec();
        lines[2] = bad;
        let e = s
            .ingest("gw", lines.join("\n").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3: ") && e.contains(why), "{e}");
        assert_eq!(s.rows(), 0, "nothing of a refused batch is stored");
    }
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_LINE));
    let e = s.ingest("gw", long.as_bytes()).unwrap_err().to_string();
    assert!(e.starts_with("line 1: ") && e.contains("more than"), "{e}");
    assert!(s.ingest("", &t.body(0, 1)).is_err());
    assert!(s.ingest("a b", &t.body(0, 1)).is_err());
    assert_eq!(s.search(&Query::default()).unwrap().total, 0);
}

#[test]
fn search_filters_pages_and_counts() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let all = s.search(&Query::default()).unwrap();
    assert_eq!(all.total, t.lines.len() as u64);
    assert!(
        all.rows.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let alice = Query {
        principal: Some("alice".into()),
        ..Query::default()
    };
    let page = s.search(&alice).unwrap();
    assert!(page.rows.iter().all(|r| r.principal == "alice"));
    assert_eq!(page.total, page.rows.len() as u64);
    // alice: calls 0, 2, 4 (denied), 6, 8 → 4 forwarded with replies + 1.
    assert_eq!(page.total, 9);
    let denied = s
        .search(&Query {
            outcome: Some("denied".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(denied.total, 2);
    assert!(denied.rows.iter().all(|r| r.reason.is_some()));
    let by_reason = s
        .search(&Query {
            reason: Some("not for bob".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(by_reason.total, 1);
    assert_eq!(by_reason.rows[0].principal, "bob");
    let leak = s
        .search(&Query {
            tool: Some("leak".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(leak.total, 2);
    assert!(leak.rows.iter().any(|r| r.dlp == vec!["email".to_owned()]));
    let trace = s
        .search(&Query {
            trace_id: Some("trace-0".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(trace.total, 2, "a call's request and reply");
    // A time range: the first three seconds.
    let t0 = all.rows.last().unwrap().ts_us;
    let early = s
        .search(&Query {
            from_us: Some(t0),
            to_us: Some(t0 + 3_000_000),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(early.total, 6);
    // Paging: pages of 4 cover everything once, in order, total fixed.
    let mut seen = Vec::new();
    let mut q = Query {
        limit: 4,
        ..Query::default()
    };
    loop {
        let p = s.search(&q).unwrap();
        assert_eq!(p.total, t.lines.len() as u64);
        assert!(p.rows.len() <= 4);
        seen.extend(p.rows.iter().map(|r| r.id));
        match p.next_before {
            Some(b) => q.before_id = Some(b),
            None => break,
        }
    }
    let ids: Vec<i64> = all_ids(&s);
    assert_eq!(seen, ids);
    assert_eq!(
        s.search(&Query {
            limit: 100_000,
            ..Query::default()
        })
        .unwrap()
        .rows
        .len(),
        t.lines.len().min(500)
    );
}

fn all_ids(s: &AuditStore) -> Vec<i64> {
    s.search(&Query {
        limit: 500,
        ..Query::default()
    })
    .unwrap()
    .rows
    .iter()
    .map(|r| r.id)
    .collect()
}

#[test]
fn a_viewer_sees_only_their_tenants() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let scoped = Query {
        tenants: vec!["acme".into()],
        ..Query::default()
    };
    let page = s.search(&scoped).unwrap();
    assert!(page.total > 0 && page.rows.iter().all(|r| r.tenant == "acme"));
    // Asking for another tenant inside the scope finds nothing.
    let other = s
        .search(&Query {
            tenant: Some("globex".into()),
            ..scoped.clone()
        })
        .unwrap();
    assert_eq!(other.total, 0);
    let bobs = s
        .search(&Query {
            principal: Some("bob".into()),
            ..Query::default()
        })
        .unwrap();
    let id = bobs.rows[0].id;
    assert!(s.get(id, &["acme".into()]).unwrap().is_none());
    assert!(s.get(id, &["globex".into()]).unwrap().is_some());
    assert!(s.get(id, &[]).unwrap().is_some());
    let live = s
        .live(Duration::from_secs(300), None, &["acme".into()])
        .unwrap();
    assert_eq!(live.top_principals, vec![("alice".to_owned(), 5)]);
    let v = s.verify(&scoped).unwrap();
    assert_eq!(v.records, page.total);
}

#[test]
fn verify_finds_an_edited_line_a_gap_and_a_line_altered_in_the_store() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    let n = t.lines.len();
    s.ingest("good", &t.body(0, n)).unwrap();
    let v = s.verify(&Query::default()).unwrap();
    assert!(v.ok, "{:?}", v.chains);
    assert_eq!(v.records, n as u64);
    assert_eq!(
        (v.chains[0].first_seq, v.chains[0].last_seq),
        (0, n as u64 - 1)
    );
    // A filtered range is checked against the lines before it in the store.
    let alice = s
        .verify(&Query {
            principal: Some("alice".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(alice.ok, "{:?}", alice.chains);

    // An edited line (its next record's `prev` no longer matches it).
    let mut edited = t.lines.clone();
    edited[4] = edited[4].replace("\"alice\"", "\"mallory\"");
    assert_ne!(edited[4], t.lines[4]);
    s.ingest("edited", (edited.join("\n") + "\n").as_bytes())
        .unwrap();
    // A gap: seqs 6 and 7 never arrived.
    let mut gap = t.lines.clone();
    gap.drain(6..8);
    s.ingest("gap", (gap.join("\n") + "\n").as_bytes()).unwrap();
    let v = s.verify(&Query::default()).unwrap();
    assert!(!v.ok);
    let chain = |g: &str| v.chains.iter().find(|c| c.gateway == g).unwrap();
    assert!(chain("good").ok);
    let e = chain("edited");
    assert!(!e.ok);
    assert!(
        e.problems.iter().any(|p| p.starts_with("seq 5: break")),
        "{:?}",
        e.problems
    );
    let g = chain("gap");
    assert!(
        g.problems == vec!["gap: seqs 6 to 7 are missing".to_owned()],
        "{:?}",
        g.problems
    );
    // Only the gateway asked for.
    let only = s
        .verify(&Query {
            gateway: Some("good".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(only.ok && only.chains.len() == 1);

    // A line changed in the store itself.
    {
        let c = lock(&s.sqlite().writer);
        c.execute(
            "UPDATE lines SET raw = replace(raw, 'echo', 'ECHO') WHERE id = \
             (SELECT id FROM records WHERE gateway = 'good' AND seq = 0)",
            [],
        )
        .unwrap();
    }
    let v = s
        .verify(&Query {
            gateway: Some("good".into()),
            ..Query::default()
        })
        .unwrap();
    let p = &v.chains[0].problems;
    assert!(
        p.iter().any(|p| p.contains("altered in the store"))
            && p.iter().any(|p| p.starts_with("seq 1: break")),
        "{p:?}"
    );
}

#[test]
fn retention_deletes_old_records_and_the_oldest_beyond_the_bound() {
    let (_d, s) = store(Limits {
        retention: Duration::from_secs(3600),
        max_rows: 8,
        ..Limits::default()
    });
    let mut t = Trail::new();
    let now = now_s();
    // Two calls of two hours ago, then eight recent ones.
    for i in 0..10 {
        let at = if i < 2 { now - 7200 } else { now - 100 + i };
        t.call(at, "alice", "acme", "echo", "forwarded");
    }
    s.ingest("gw", &t.body(0, t.lines.len())).unwrap();
    assert_eq!(s.rows(), 20);
    // (The background retention may have run first.)
    s.trim().unwrap();
    assert_eq!(s.rows(), 8);
    let page = s.search(&Query::default()).unwrap();
    assert_eq!(page.total, 8);
    // The newest eight are kept, and their lines with them.
    assert_eq!(page.rows.last().unwrap().seq, 12);
    let lines: i64 = lock(&s.sqlite().writer)
        .query_row("SELECT count(*) FROM lines", [], |r| r.get(0))
        .unwrap();
    assert_eq!(lines, 8);
    // A verification of what is left: the trimmed start is no gap.
    assert!(s.verify(&Query::default()).unwrap().ok);
}

#[test]
fn live_counts_the_calls_of_the_window() {
    let (dir, s) = store(Limits::default());
    let t = sample();
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let live = s.live(Duration::from_secs(300), None, &[]).unwrap();
    assert_eq!(live.window_secs, 300);
    assert_eq!(live.calls, 10);
    assert_eq!(live.per_second.len(), 300);
    assert_eq!(live.per_second.iter().map(|p| p.1).sum::<u64>(), 10);
    assert_eq!(
        live.outcomes,
        vec![("forwarded".to_owned(), 8), ("denied".to_owned(), 2)]
    );
    assert_eq!(live.top_tools[0], ("echo".to_owned(), 9));
    assert_eq!(live.dlp, vec![("email".to_owned(), 1)]);
    let mut anomalies = live.anomalies.clone();
    anomalies.sort();
    assert_eq!(
        anomalies,
        vec![("first_tool".to_owned(), 1), ("new_host".to_owned(), 1)]
    );
    assert_eq!(live.gateways, vec![("gw-1".to_owned(), 10)]);
    assert_eq!(live.top_reasons.len(), 2);
    assert!(live.p50_ms.is_some_and(|p| p > 2.0) && live.p99_ms >= live.p50_ms);
    // A window that ends before the records: nothing.
    let short = s.live(Duration::from_secs(5), None, &[]).unwrap();
    assert_eq!(short.calls, 0);
    assert!(short.p50_ms.is_none());
    assert_eq!(
        s.live(Duration::from_secs(300), Some("other"), &[])
            .unwrap()
            .calls,
        0
    );
    // Reopened: the rows are still there.
    drop(s);
    let s = open_audit(&dir.path().join("audit.sqlite3"), Limits::default()).unwrap();
    assert_eq!(s.rows(), t.lines.len() as u64);
}

#[test]
fn api_times_and_queries_parse() {
    assert_eq!(
        query::parse_time("1700000000").unwrap(),
        1_700_000_000_000_000
    );
    assert_eq!(
        query::parse_time("2023-11-14T22:13:20Z").unwrap(),
        1_700_000_000_000_000
    );
    assert!(query::parse_time("soon").is_err());
    let q = query::parse_query("from=1700000000&principal=a%20b&before=9&limit=3&reason=").unwrap();
    assert_eq!(q.from_us, Some(1_700_000_000_000_000));
    assert_eq!(q.principal.as_deref(), Some("a b"));
    assert_eq!((q.before_id, q.limit), (Some(9), 3));
    assert!(q.reason.is_none());
    assert!(query::parse_query("princpal=x").is_err());
}

/// One record of `tenant` at `server` (a `tools/call` request, recent),
/// carrying approval `approval` when given.
pub(super) fn held(t: &mut Trail, tenant: &str, server: &str, approval: Option<&str>) {
    let ts = jiff::Timestamp::from_second(now_s() - 50)
        .unwrap()
        .to_string();
    t.push(serde_json::json!({
        "ts": ts, "principal": "alice", "tenant": tenant, "server": server,
        "direction": "request", "method": "tools/call", "tool": "deploy",
        "outcome": "forwarded", "trace_id": format!("trace-{}", t.seq), "latency_us": 10,
        "approval": approval.map(|id| serde_json::json!({"id": id, "approvers": ["bob"]})),
    }));
}

/// The seqs of what `q` finds, in seq order.
fn seqs(s: &AuditStore, q: Query) -> Vec<u64> {
    let page = s.search(&q).unwrap();
    assert_eq!(page.total, page.rows.len() as u64, "one page holds it all");
    let mut v: Vec<u64> = page.rows.iter().map(|r| r.seq).collect();
    v.sort_unstable();
    v
}

#[test]
fn search_filters_by_server_tenant_and_approval() {
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    held(&mut t, "acme", "ops", Some("ap_one")); // 0
    held(&mut t, "globex", "ops", None); // 1
    held(&mut t, "acme", "mock", Some("ap_two")); // 2
    held(&mut t, "globex", "mock", None); // 3
    held(&mut t, "acme", "ops", Some("ap_one")); // 4: the approved call itself
    held(&mut t, "globex", "ops", Some("ap_three")); // 5
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let q = Query::default;

    // `server`: exactly that server (no substring, no other case).
    let server = |x: &str| Query {
        server: Some(x.into()),
        ..q()
    };
    assert_eq!(seqs(&s, server("ops")), vec![0, 1, 4, 5]);
    assert_eq!(seqs(&s, server("mock")), vec![2, 3]);
    assert_eq!(seqs(&s, server("op")), Vec::<u64>::new());
    assert_eq!(seqs(&s, server("other")), Vec::<u64>::new());

    // `tenant`.
    let tenant = |x: &str| Query {
        tenant: Some(x.into()),
        ..q()
    };
    assert_eq!(seqs(&s, tenant("acme")), vec![0, 2, 4]);
    assert_eq!(seqs(&s, tenant("globex")), vec![1, 3, 5]);
    assert_eq!(seqs(&s, tenant("acm")), Vec::<u64>::new());

    // `approval_id`: the records that carry that approval, and only them.
    let approval = |x: &str| Query {
        approval_id: Some(x.into()),
        ..q()
    };
    assert_eq!(seqs(&s, approval("ap_one")), vec![0, 4]);
    assert_eq!(seqs(&s, approval("ap_two")), vec![2]);
    assert_eq!(seqs(&s, approval("ap_")), Vec::<u64>::new());
    let one = s.search(&approval("ap_one")).unwrap();
    assert!(one
        .rows
        .iter()
        .all(|r| r.approval_id.as_deref() == Some("ap_one")));

    // Together, and inside a viewer's scope: every filter must match.
    assert_eq!(
        seqs(
            &s,
            Query {
                server: Some("ops".into()),
                tenant: Some("acme".into()),
                ..q()
            }
        ),
        vec![0, 4]
    );
    assert_eq!(
        seqs(
            &s,
            Query {
                server: Some("mock".into()),
                approval_id: Some("ap_one".into()),
                ..q()
            }
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        seqs(
            &s,
            Query {
                approval_id: Some("ap_three".into()),
                tenants: vec!["acme".into()],
                ..q()
            }
        ),
        Vec::<u64>::new(),
        "another tenant's approval is not found inside the scope"
    );
    assert_eq!(
        seqs(
            &s,
            Query {
                server: Some("ops".into()),
                tenants: vec!["globex".into()],
                ..q()
            }
        ),
        vec![1, 5]
    );
    // A verification takes the same filters.
    assert_eq!(s.verify(&server("mock")).unwrap().records, 2);
    assert_eq!(s.verify(&approval("ap_one")).unwrap().records, 2);
}

/// The store scopes search, one record and live figures as a console
/// session and an approver see tenants (by the tenant scope key): an ASCII
/// tenant in any case, any other name only as itself (NFC or NFD).
#[test]
fn a_scope_matches_tenants_as_sessions_and_approvers_do() {
    use crate::approvals::Approver;
    use crate::console::{Role, User};
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    let spellings = [
        "acme",
        "ACME",
        "\u{ff21}\u{ff43}\u{ff4d}\u{ff45}", // fullwidth Ａｃｍｅ
        "A\u{301}cme",                      // Ácme, decomposed
        "ac\u{200b}me",                     // an invisible character: not acme
        "globex",
        "stra\u{df}e", // straße
    ];
    for tenant in spellings {
        held(&mut t, tenant, "ops", None);
    }
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let rows = s
        .search(&Query {
            limit: 500,
            ..Query::default()
        })
        .unwrap()
        .rows;
    assert_eq!(rows.len(), spellings.len());
    for scope in [
        vec!["acme".to_owned()],
        vec!["Acme".to_owned()],
        vec!["STRASSE".to_owned()],
        vec!["globex".to_owned(), "ACME".to_owned()],
        vec!["ac\u{200b}me".to_owned()],
        vec!["\u{c1}cme".to_owned()],
        vec!["stra\u{df}e".to_owned()],
        vec!["\u{ff41}\u{ff43}\u{ff4d}\u{ff45}".to_owned()],
    ] {
        let user = User {
            name: "vic".into(),
            role: Role::Viewer,
            tenants: scope.clone(),
            actor: None,
            oidc: None,
            cli: false,
        };
        let approver = Approver {
            tenants: scope.clone(),
            ..Approver::default()
        };
        let found = seqs(
            &s,
            Query {
                tenants: scope.clone(),
                ..Query::default()
            },
        );
        for r in &rows {
            let sees = user.sees(&r.tenant);
            assert_eq!(approver.sees(&r.tenant), sees, "{scope:?} {:?}", r.tenant);
            assert_eq!(found.contains(&r.seq), sees, "{scope:?} {:?}", r.tenant);
            assert_eq!(
                s.get(r.id, &scope).unwrap().is_some(),
                sees,
                "{scope:?} {:?}",
                r.tenant
            );
        }
        let live = s.live(Duration::from_secs(300), None, &scope).unwrap();
        assert_eq!(live.calls, found.len() as u64, "{scope:?}");
    }
    // Acme's records are those of `acme` in ASCII letters: not the
    // full-width, accented or invisible spellings.
    let by = |q: Query| seqs(&s, q);
    let scoped = |t: &str| Query {
        tenants: vec![t.to_owned()],
        ..Query::default()
    };
    let filtered = |t: &str| Query {
        tenant: Some(t.to_owned()),
        ..Query::default()
    };
    assert_eq!(by(scoped("acme")), vec![0, 1]);
    // The `tenant` filter compares the same way.
    assert_eq!(by(filtered("ACME")), vec![0, 1]);
    assert_eq!(by(filtered("\u{ff21}\u{ff43}\u{ff4d}\u{ff45}")), vec![2]);
    // Another case of a name that is not ASCII is another name.
    assert_eq!(by(filtered("ＡＣＭＥ")), Vec::<u64>::new());
    assert_eq!(by(filtered("\u{c1}cme")), vec![3]);
    assert_eq!(by(filtered("strasse")), Vec::<u64>::new());
    assert_eq!(by(filtered("stra\u{df}e")), vec![6]);
    assert_eq!(by(scoped("STRASSE")), Vec::<u64>::new());
}

/// Records of principals whose tenant claim looks like finance (an accent,
/// a ligature, full-width letters, the Kelvin sign for k) are not
/// finance's: a scope of finance (a tenant admin's, an approver's, a
/// viewer's) does not search, verify, count or read them; the org, with no
/// scope, reads them all.
#[test]
fn a_look_alike_tenants_records_are_not_the_tenants() {
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    let tenants = [
        "finance",                                                  // 0
        "FINANCE",                                                  // 1
        "financ\u{e9}",                                             // 2 financé
        "finance\u{301}",                                           // 3 financé, decomposed
        "\u{fb01}nance",                                            // 4 ﬁnance
        "\u{ff46}\u{ff49}\u{ff4e}\u{ff41}\u{ff4e}\u{ff43}\u{ff45}", // 5 ｆｉｎａｎｃｅ
        "kyc",                                                      // 6
        "\u{212a}yc",                                               // 7 Kelvin sign
    ];
    for tenant in tenants {
        held(&mut t, tenant, "ops", None);
    }
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let scoped = |scope: &[&str]| Query {
        tenants: scope.iter().map(|t| (*t).to_owned()).collect(),
        ..Query::default()
    };
    for (scope, theirs) in [
        (&["finance"][..], vec![0, 1]),
        (&["Finance"][..], vec![0, 1]),
        (&["kyc"][..], vec![6]),
        (&["finance", "kyc"][..], vec![0, 1, 6]),
        (&["financ\u{e9}"][..], vec![2, 3]),
        (&["\u{212a}yc"][..], vec![7]),
    ] {
        let q = scoped(scope);
        assert_eq!(seqs(&s, q.clone()), theirs, "search {scope:?}");
        let v = s.verify(&q).unwrap();
        assert_eq!(v.records, theirs.len() as u64, "verify {scope:?}");
        let live = s.live(Duration::from_secs(300), None, &q.tenants).unwrap();
        assert_eq!(live.calls, theirs.len() as u64, "live {scope:?}");
        let owned: Vec<String> = q.tenants.clone();
        for r in s.search(&scoped(&[])).unwrap().rows {
            assert_eq!(
                s.get(r.id, &owned).unwrap().is_some(),
                theirs.contains(&r.seq),
                "get {scope:?} {:?}",
                r.tenant
            );
        }
    }
    // Inside finance's scope, naming a look-alike finds nothing.
    for other in ["financ\u{e9}", "\u{fb01}nance", "ＦＩＮＡＮＣＥ"] {
        let q = Query {
            tenant: Some(other.to_owned()),
            ..scoped(&["finance"])
        };
        assert_eq!(seqs(&s, q.clone()), Vec::<u64>::new(), "{other:?}");
        assert_eq!(s.verify(&q).unwrap().records, 0, "{other:?}");
    }
    // The org reads every record.
    let all = scoped(&[]);
    assert_eq!(seqs(&s, all.clone()), (0..8).collect::<Vec<u64>>());
    assert_eq!(s.verify(&all).unwrap().records, 8);
    assert!(s.verify(&all).unwrap().ok);
    assert_eq!(
        s.live(Duration::from_secs(300), None, &[]).unwrap().calls,
        8
    );
}

/// A store written before records had a `tenant_key` column is brought
/// up to date when it is opened: scoped searches find its records.
#[test]
fn an_older_store_gains_the_tenant_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite3");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, gateway TEXT NOT NULL, \
             seq INTEGER NOT NULL, ts TEXT NOT NULL, ts_us INTEGER NOT NULL, \
             principal TEXT NOT NULL, tenant TEXT NOT NULL, server TEXT NOT NULL, tool TEXT, \
             method TEXT, direction TEXT NOT NULL, outcome TEXT NOT NULL, decided_by TEXT, \
             reason TEXT, risk TEXT, trace_id TEXT NOT NULL, approval_id TEXT, \
             latency_us INTEGER, dlp TEXT, prev BLOB NOT NULL, hash BLOB NOT NULL);
             CREATE TABLE lines (id INTEGER PRIMARY KEY, raw TEXT NOT NULL);
             CREATE INDEX records_ts ON records(ts_us, tenant);
             CREATE INDEX records_tenant ON records(tenant, ts_us);",
        )
        .unwrap();
        for (seq, tenant) in [
            (0, "ACME"),
            (1, "globex"),
            (2, "\u{ff21}\u{ff23}\u{ff2d}\u{ff25}"),
        ] {
            c.execute(
                "INSERT INTO records (gateway, seq, ts, ts_us, principal, tenant, server, \
                 direction, outcome, trace_id, prev, hash) \
                 VALUES ('gw', ?1, '2026-01-01T00:00:00Z', ?2, 'alice', ?3, 'ops', 'request', \
                 'forwarded', 't', x'00', ?4)",
                params![seq, now_us(), tenant, vec![seq as u8; 32]],
            )
            .unwrap();
        }
    }
    let s = open_audit(&path, Limits::default()).unwrap();
    assert_eq!(
        seqs(
            &s,
            Query {
                tenants: vec!["acme".into()],
                ..Query::default()
            }
        ),
        vec![0]
    );
    let indexed: Vec<String> = lock(&s.sqlite().writer)
        .prepare("SELECT name FROM pragma_index_info('records_ts')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(indexed, vec!["ts_us".to_owned(), "tenant_key".to_owned()]);
    assert_eq!(user_version(&s), KEYS_STRICT);
    // Opened again: nothing more to do.
    drop(s);
    let s = open_audit(&path, Limits::default()).unwrap();
    assert_eq!(s.rows(), 3);
}

fn user_version(s: &AuditStore) -> i64 {
    lock(&s.sqlite().writer)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// A store written when a tenant's key was its canonical form (`financé`
/// keyed `finance`) is keyed again when it is opened, once: finance's
/// scope no longer holds the look-alikes' records; ASCII tenants' keys
/// (and the lines, and the chain) are as they were.
#[test]
fn an_older_store_is_keyed_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite3");
    let mut t = Trail::new();
    let tenants = [
        "finance",
        "FINANCE",
        "financ\u{e9}",
        "\u{fb01}nance",
        "\u{ff46}\u{ff49}\u{ff4e}\u{ff41}\u{ff4e}\u{ff43}\u{ff45}",
        "\u{212a}yc",
        "kyc",
        "fin\u{200b}ance",
        "",
    ];
    for tenant in tenants {
        held(&mut t, tenant, "ops", None);
    }
    // What the older agent wrote: the same rows, each keyed by its
    // tenant's canonical form, and no user_version.
    {
        let s = open_audit(&path, Limits::default()).unwrap();
        s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
        let c = lock(&s.sqlite().writer);
        for tenant in tenants {
            c.execute(
                "UPDATE records SET tenant_key = ?1 WHERE tenant = ?2",
                params![warden_config::person::canonical_or_marked(tenant), tenant],
            )
            .unwrap();
        }
        c.execute_batch("PRAGMA user_version = 0;").unwrap();
        let leaked: i64 = c
            .query_row(
                "SELECT count(*) FROM records WHERE tenant_key = 'finance'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leaked, 5, "the older keys hold the look-alikes in finance");
    }
    let keys = |s: &AuditStore| -> Vec<(String, String)> {
        lock(&s.sqlite().writer)
            .prepare("SELECT tenant, tenant_key FROM records ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let finance = Query {
        tenants: vec!["finance".into()],
        ..Query::default()
    };
    let s = open_audit(&path, Limits::default()).unwrap();
    assert_eq!(user_version(&s), KEYS_STRICT);
    assert_eq!(seqs(&s, finance.clone()), vec![0, 1]);
    assert_eq!(s.verify(&finance).unwrap().records, 2);
    assert_eq!(
        s.live(Duration::from_secs(300), None, &finance.tenants)
            .unwrap()
            .calls,
        2
    );
    for (tenant, key) in keys(&s) {
        assert_eq!(key, tenant_key(&tenant), "{tenant:?}");
        if tenant.is_ascii() {
            assert_eq!(
                key,
                warden_config::person::canonical_or_marked(&tenant),
                "an ASCII tenant's key is as it was"
            );
        }
    }
    for (scope, theirs) in [
        ("kyc", vec![6]),
        ("\u{212a}yc", vec![5]),
        ("financ\u{e9}", vec![2]),
        ("fin\u{200b}ance", vec![7]),
    ] {
        let q = Query {
            tenants: vec![scope.to_owned()],
            ..Query::default()
        };
        assert_eq!(seqs(&s, q), theirs, "{scope:?}");
    }
    let all = s.verify(&Query::default()).unwrap();
    assert!(all.ok && all.records == tenants.len() as u64, "{all:?}");
    // Once: a key set by hand afterwards stays (nothing scans again).
    lock(&s.sqlite().writer)
        .execute(
            "UPDATE records SET tenant_key = 'x' WHERE tenant = ?1",
            ["financ\u{e9}"],
        )
        .unwrap();
    drop(s);
    let s = open_audit(&path, Limits::default()).unwrap();
    assert!(keys(&s).contains(&("financ\u{e9}".to_owned(), "x".to_owned())));
}

/// A stub of `line` as the gateway's shipper makes one: `elided` first,
/// the full line's SHA-256 and size, then the members it keeps.
pub(super) fn stub_of(line: &str, keep: &[&str]) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut out = format!(
        "{{\"elided\":{{\"sha256\":\"{}\",\"bytes\":{},\"fields\":[\"arguments\"]}}",
        hex::encode(Sha256::digest(line.as_bytes())),
        line.len()
    );
    for k in keep {
        out.push_str(&format!(",\"{k}\":{}", v[*k]));
    }
    out.push('}');
    out
}

#[test]
fn a_record_too_large_to_ship_keeps_its_place_in_the_chain_as_a_stub() {
    let (_d, s) = store(Limits::default());
    let mut t = sample();
    // A caller's 1.2 MB arguments to a HIGH tool, logged in full.
    let ts = jiff::Timestamp::from_second(now_s() - 50)
        .unwrap()
        .to_string();
    let big = t
        .push(serde_json::json!({
            "ts": ts, "principal": "mallory", "tenant": "acme", "server": "mock",
            "direction": "request", "method": "tools/call", "tool": "wire_money",
            "outcome": "forwarded", "trace_id": "trace-big",
            "arguments": {"memo": "x".repeat(1_200_000)},
        }))
        .to_owned();
    let big_at = t.lines.len() - 1;
    t.call(now_s() - 49, "alice", "acme", "echo", "forwarded");
    let n = t.lines.len();
    assert!(big.len() > MAX_LINE);
    assert!(s
        .ingest("gw", big.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("more than"));

    let stub = stub_of(
        &big,
        &[
            "seq",
            "prev",
            "ts",
            "principal",
            "tenant",
            "server",
            "direction",
            "method",
            "tool",
            "outcome",
            "trace_id",
        ],
    );
    let mut shipped = t.lines.clone();
    shipped[big_at] = stub.clone();
    let done = s
        .ingest("gw", (shipped.join("\n") + "\n").as_bytes())
        .unwrap();
    assert_eq!(done.accepted, n as u64);
    // The chain verifies across the stub, which is counted, not hidden.
    let v = s.verify(&Query::default()).unwrap();
    assert!(v.ok, "{:?}", v.chains);
    assert_eq!(v.chains[0].elided, 1);
    // A verification that starts after it looks its hash up.
    let after = s
        .verify(&Query {
            principal: Some("alice".into()),
            from_us: Some((now_s() - 49) * 1_000_000),
            ..Query::default()
        })
        .unwrap();
    assert!(after.ok, "{:?}", after.chains);
    // The record is found by what it kept, and is the stub.
    let page = s
        .search(&Query {
            principal: Some("mallory".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].tool.as_deref(), Some("wire_money"));
    let row = s.get(page.rows[0].id, &[]).unwrap().unwrap();
    assert_eq!(row.raw.as_deref(), Some(stub.as_str()));
    // Sent again (whole or as the stub), it is the same record.
    assert_eq!(s.ingest("gw", stub.as_bytes()).unwrap().duplicates, 1);

    // A stub that names another line's hash breaks the chain after it.
    let forged = stub.replace(
        &hex::encode(Sha256::digest(big.as_bytes())),
        &"ab".repeat(32),
    );
    shipped[big_at] = forged;
    s.ingest("forged", (shipped.join("\n") + "\n").as_bytes())
        .unwrap();
    let v = s
        .verify(&Query {
            gateway: Some("forged".into()),
            ..Query::default()
        })
        .unwrap();
    let next = big_at + 1;
    assert!(
        v.chains[0]
            .problems
            .iter()
            .any(|p| p.starts_with(&format!("seq {next}: break"))),
        "{:?}",
        v.chains[0].problems
    );

    // `elided` marks a stub only as its first member, with a real hash.
    for bad in [
        format!("{{\"seq\":1,\"prev\":\"{}\",\"ts\":\"{ts}\",\"elided\":{{\"sha256\":\"{}\",\"bytes\":9}}}}", "0".repeat(64), "ab".repeat(32)),
        format!("{{\"elided\":{{\"sha256\":\"zz\",\"bytes\":9}},\"seq\":1,\"prev\":\"{}\",\"ts\":\"{ts}\"}}", "0".repeat(64)),
        format!("{{\"elided\":{{\"sha256\":\"{}\",\"bytes\":0}},\"seq\":1,\"prev\":\"{}\",\"ts\":\"{ts}\"}}", "ab".repeat(32), "0".repeat(64)),
    ] {
        assert!(s.ingest("bad", bad.as_bytes()).is_err(), "{bad}");
    }
}

/// A search that runs past its budget (one that walks the whole store) is
/// cut off with an error asking for a narrower one, and the reader is left
/// as it was: the next search runs whole.
#[test]
fn a_search_past_its_budget_is_cut_off() {
    let (_d, s) = store(Limits::default());
    let t = sample();
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let broad = Query {
        reason: Some("never matches".into()),
        ..Query::default()
    };
    let e = s
        .search_within(&broad, std::time::Duration::ZERO, 1)
        .expect_err("cut off");
    assert!(
        format!("{e:#}").starts_with(super::SEARCH_TOO_BROAD),
        "{e:#}"
    );
    assert_eq!(
        s.search(&Query::default()).unwrap().total,
        t.lines.len() as u64
    );
}

/// A record stamped in the future (a gateway's clock ahead, or a forged
/// stamp) is ordered, aged and counted as of its arrival, so retention
/// takes it like any other; its line keeps the stamp it bears.
#[test]
fn a_record_from_the_future_is_stored_as_of_its_arrival() {
    let (_dir, s) = store(Limits::default());
    let mut t = Trail::new();
    let far = now_s() + 10 * 365 * 86_400;
    t.call(far, "ann", "acme", "echo", "forwarded");
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let (ts, ts_us): (String, i64) = lock(&s.sqlite().writer)
        .query_row("SELECT ts, max(ts_us) FROM records", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(ts_us <= now_us(), "stored as of its arrival");
    assert_eq!(ts, jiff::Timestamp::from_second(far).unwrap().to_string());
    // Counted in a window that holds its arrival, and only there.
    assert_eq!(
        s.live(Duration::from_secs(300), None, &[]).unwrap().calls,
        1
    );
    // The chain over the lines as written still holds.
    assert!(s.verify(&Query::default()).unwrap().ok);
}

/// A verification stops at its time budget: what it read by then is
/// reported, `truncated` with the reason, or (nothing read) an error that
/// says to narrow it; with time enough it reads every record.
#[test]
fn verify_stops_at_its_time_budget() {
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    let t0 = now_s() - 3600;
    for i in 0..1500 {
        t.call(t0 + i, "alice", "acme", "echo", "forwarded");
    }
    let n = t.lines.len();
    s.ingest("gw", &t.body(0, n)).unwrap();
    let whole = s.verify(&Query::default()).unwrap();
    assert!(whole.ok && !whole.truncated && whole.stopped.is_none());
    assert_eq!(whole.records, n as u64);
    match s.verify_within(&Query::default(), Duration::ZERO) {
        Ok(v) => {
            assert!(v.truncated, "read {} of {n}", v.records);
            assert!(v.records < n as u64);
            let why = v.stopped.expect("a reason");
            assert!(why.contains("time budget"), "{why}");
        }
        Err(e) => assert!(e.to_string().starts_with(SEARCH_TOO_BROAD), "{e}"),
    }
    // The reader it held is usable again, with no handler left on it.
    for _ in 0..4 {
        assert_eq!(s.verify(&Query::default()).unwrap().records, n as u64);
    }
}

/// Rows alone bound nothing (a line may be up to a MiB): past
/// `max_bytes` of pages in use the oldest records go until the store is
/// under it; the newest are kept, and what is left verifies.
#[test]
fn the_store_is_bounded_in_bytes() {
    let max = 2 << 20;
    let (_d, s) = store(Limits {
        max_bytes: max,
        ..Limits::default()
    });
    let mut t = Trail::new();
    let t0 = now_s() - 600;
    let pad = "x".repeat(4000);
    for i in 0..2000 {
        t.push(serde_json::json!({
            "ts": jiff::Timestamp::from_second(t0 + i / 10).unwrap().to_string(),
            "principal": "alice", "tenant": "acme", "server": "mock",
            "direction": "request", "method": "tools/call", "tool": "echo",
            "outcome": "forwarded", "reason": format!("{i} {pad}"),
        }));
    }
    let n = t.lines.len();
    for from in (0..n).step_by(500) {
        s.ingest("gw", &t.body(from, (from + 500).min(n))).unwrap();
    }
    for _ in 0..20 {
        s.trim().unwrap();
        if s.bytes() <= max {
            break;
        }
    }
    assert!(s.bytes() <= max, "{} bytes in use", s.bytes());
    assert!(
        s.bytes() > max / 4,
        "far more deleted than needed: {}",
        s.bytes()
    );
    let kept = s.rows();
    assert!(kept > 0 && kept < n as u64, "{kept} of {n}");
    let page = s.search(&Query::default()).unwrap();
    assert_eq!(page.rows[0].seq, n as u64 - 1, "the newest is kept");
    assert!(s.verify(&Query::default()).unwrap().ok);
}

/// Large records (near the 1 MiB a line may have): past the bound only as
/// many of the oldest go as the overshoot needs; the newest stay, round
/// after round.
#[test]
fn a_byte_bound_keeps_the_newest_of_large_records() {
    let max: u64 = 24 << 20;
    let (_d, s) = store(Limits {
        max_bytes: max,
        ..Limits::default()
    });
    let mut t = Trail::new();
    let pad = "a".repeat(MAX_LINE - 400);
    let t0 = now_s() - 60;
    for round in 0..4 {
        let from = t.lines.len();
        for _ in 0..14 {
            t.push(serde_json::json!({
                "ts": jiff::Timestamp::from_second(t0).unwrap().to_string(),
                "principal": "mallory", "tenant": "acme", "server": "mock",
                "direction": "request", "method": "tools/call", "tool": "echo",
                "outcome": "forwarded", "reason": pad,
            }));
        }
        for i in from..t.lines.len() {
            s.ingest("gw", &t.body(i, i + 1)).unwrap();
        }
        s.trim().unwrap();
        let kept = s.rows();
        assert!(
            kept >= 10,
            "round {round}: {kept} rows kept of a bound of about 24 one-MiB records"
        );
        let page = s.search(&Query::default()).unwrap();
        assert_eq!(
            page.rows[0].seq,
            t.lines.len() as u64 - 1,
            "the newest is kept"
        );
        assert!(s.bytes() <= max + (2 << 20), "{} bytes", s.bytes());
    }
}

/// A trail laid out so that a filtered verification reads few records,
/// each after large lines of one seq (looked up, hashed outside SQLite):
/// the budget still stops it; and a seq held by more than `MAX_SIBLINGS`
/// records is compared on the first of them only, said. The budget is a
/// fraction of what the whole verification took on this machine, so the
/// test holds on a fast machine and a loaded one alike; the trail is a
/// few tens of megabytes, so it holds on a small temporary disk too.
#[test]
fn verify_budget_holds_against_many_large_lines_of_one_seq() {
    let (_d, s) = store(Limits::default());
    let pad = "a".repeat(MAX_LINE / 4);
    let ts = jiff::Timestamp::from_second(now_s() - 60)
        .unwrap()
        .to_string();
    let line = |seq: u64, principal: &str, pad: &str, salt: u64| {
        serde_json::json!({
            "seq": seq, "prev": "0".repeat(64), "ts": ts, "principal": principal,
            "tenant": "acme", "server": "mock", "direction": "request",
            "method": "tools/call", "tool": "echo", "outcome": "forwarded",
            "salt": salt, "reason": pad,
        })
        .to_string()
    };
    let mut seq = 0;
    for i in 0..40u64 {
        let body: String = (0..2u64)
            .map(|k| line(seq, "pad", &pad, i * 100 + k) + "\n")
            .collect();
        s.ingest("gw-x", body.as_bytes())
            .unwrap_or_else(|e| panic!("the large lines of seq {seq}: {e:#}"));
        seq += 1;
        s.ingest("gw-x", (line(seq, "target", "", i) + "\n").as_bytes())
            .unwrap_or_else(|e| panic!("the record of seq {seq}: {e:#}"));
        seq += 1;
    }
    let q = Query {
        principal: Some("target".into()),
        ..Query::default()
    };
    let started = Instant::now();
    let whole = s.verify(&q).expect("the whole verification");
    let took = started.elapsed();
    assert!(!whole.truncated && whole.records == 40, "{whole:?}");
    match s.verify_within(&q, took / 8) {
        Ok(v) => assert!(
            v.truncated && v.stopped.is_some() && v.records < 40,
            "read all within {:?} of {took:?}: {v:?}",
            took / 8
        ),
        Err(e) => assert!(e.to_string().starts_with(SEARCH_TOO_BROAD), "{e}"),
    }
    // Seventy records of one seq.
    let body: String = (0..70u64)
        .map(|k| line(1000, "many", "", k) + "\n")
        .collect();
    s.ingest("gw-y", body.as_bytes())
        .unwrap_or_else(|e| panic!("seventy records of one seq: {e:#}"));
    s.ingest("gw-y", (line(1001, "next", "", 0) + "\n").as_bytes())
        .unwrap_or_else(|e| panic!("the record after them: {e:#}"));
    let v = s
        .verify(&Query {
            principal: Some("next".into()),
            ..Query::default()
        })
        .unwrap();
    let problems = v.chains[0].problems.join("\n");
    assert!(
        problems.contains("more than 64 records hold it"),
        "{problems}"
    );
}

/// A deprecated server's calls carry the gateway's notice in their
/// records; a search's rows carry it too (and rows without one, none).
#[test]
fn search_rows_carry_a_deprecated_servers_notice() {
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    let ts = jiff::Timestamp::from_second(now_s() - 10)
        .unwrap()
        .to_string();
    let notice = "server `oldapi` is deprecated since 2026-11-01T00:00:00Z";
    t.push(serde_json::json!({
        "ts": ts, "principal": "alice", "tenant": "acme", "server": "oldapi",
        "direction": "request", "method": "tools/call", "tool": "echo",
        "outcome": "forwarded", "trace_id": "trace-0", "latency_us": 10,
        "notice": notice,
    }));
    held(&mut t, "acme", "ops", None);
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let page = s.search(&Query::default()).unwrap();
    let by = |server: &str| page.rows.iter().find(|r| r.server == server).unwrap();
    assert_eq!(by("oldapi").notice.as_deref(), Some(notice));
    assert_eq!(by("ops").notice, None);
    let row = serde_json::to_value(by("oldapi")).unwrap();
    assert_eq!(row["notice"], notice, "{row}");
}

/// A record carrying `n` budget alerts, at `ts_s`.
pub(crate) fn alerting(t: &mut Trail, ts_s: i64, n: usize) {
    let ts = jiff::Timestamp::from_second(ts_s).unwrap().to_string();
    let alerts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"budget": format!("b{i}"), "per": "tenant", "holder": "acme",
                "threshold": "0.8", "spent": "8", "limit": "10", "currency": "EUR",
                "period": "2026-11", "resets_at": "2026-12-01T00:00:00Z"})
        })
        .collect();
    t.push(serde_json::json!({
        "ts": ts, "principal": "p", "tenant": "acme", "server": "llm", "direction": "request",
        "method": "tools/call", "tool": "chat", "outcome": "forwarded", "trace_id": format!("t{}", t.seq),
        "budget": {"alerts": alerts},
    }));
}

/// Budget alerts are queued only when asked, only the first time their
/// record is kept, up to the bound (the rest counted as dropped); which
/// webhooks took one is kept once each; one done no longer waits.
#[test]
fn budget_alerts_are_queued_once_within_their_bound() {
    let (_d, s) = store(Limits::default());
    let mut t = Trail::new();
    alerting(&mut t, now_s() - 10, 2);
    // Not asked: none queued, none dropped.
    let done = s.ingest("gw-1", &t.body(0, 1)).unwrap();
    assert_eq!(
        (done.accepted, done.alerts_queued, done.alerts_dropped),
        (1, 0, 0)
    );
    assert!(s.pending_alerts(10).unwrap().is_empty());
    s.queue_alerts(2);
    // Sent again: a duplicate, nothing queued.
    let done = s.ingest("gw-1", &t.body(0, 1)).unwrap();
    assert_eq!((done.duplicates, done.alerts_queued), (1, 0));
    alerting(&mut t, now_s() - 9, 2);
    alerting(&mut t, now_s() - 8, 1);
    let done = s.ingest("gw-1", &t.body(0, 3)).unwrap();
    // Two fit the bound; the third is dropped, counted.
    assert_eq!(
        (done.accepted, done.alerts_queued, done.alerts_dropped),
        (2, 2, 1)
    );
    let again = s.ingest("gw-1", &t.body(0, 3)).unwrap();
    assert_eq!((again.alerts_queued, again.alerts_dropped), (0, 0));
    let p = s.pending_alerts(10).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].alert.budget, "b0");
    assert_eq!(p[0].alert.tenant, "acme");
    s.alert_sent(p[0].id, "ops").unwrap();
    s.alert_sent(p[0].id, "ops").unwrap();
    s.alert_sent(p[0].id, "chat").unwrap();
    let p = s.pending_alerts(10).unwrap();
    assert_eq!(p[0].sent, vec!["ops".to_owned(), "chat".to_owned()]);
    s.alert_done(p[0].id).unwrap();
    assert_eq!(s.pending_alerts(10).unwrap().len(), 1);
    // A done alert leaves room in the queue.
    alerting(&mut t, now_s() - 7, 2);
    let done = s.ingest("gw-1", &t.body(3, 4)).unwrap();
    assert_eq!((done.alerts_queued, done.alerts_dropped), (1, 1));
}
