//! Spend reports on SQLite (PostgreSQL runs the same checks in
//! `pg/spend_tests.rs`): a set of priced, unpriced and unreadable records
//! across tenants, teams, principals, servers and tools; every row's
//! amount and calls equal the costs of the records its `records` search
//! lists; totals; tenant scope; the period's bounds; truncation; CSV.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::cost::cost_in;
use super::query::parse_query;
use super::spend::{parse_spend, Key, Spend, SpendQuery, MAX_GROUPS};
use super::spend_csv::csv;
use super::tests::{now_s, Trail};
use super::*;
use crate::jobs::open_audit_with_retention as open_audit;

/// The period the records fall in: `[from, to)`, unix seconds.
pub(crate) struct Period {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

impl Period {
    /// Two days ago to one day ago, on whole seconds.
    pub(crate) fn recent() -> Period {
        let to = now_s() - 86_400;
        Period {
            from: to - 86_400,
            to,
        }
    }
}

/// One record: (seconds after `from`, tenant, principal, server, tool, cost).
type Rec = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<serde_json::Value>,
);

fn eur(amount: &str, team: Option<&str>) -> Option<serde_json::Value> {
    let mut c = serde_json::json!({"amount": amount, "currency": "EUR", "units": 3});
    if let Some(t) = team {
        c["team"] = t.into();
    }
    Some(c)
}

/// The records, and what the report of every priced one in the period
/// must say: EUR 4.332001 over 7 calls, USD 3 over 1.
pub(crate) fn records(p: &Period) -> Trail {
    records_of(p, ["acme", "ACME", "globex"])
}

/// [`records`] of other tenants: `acme`, another spelling of it, `globex`.
pub(crate) fn records_of(p: &Period, tenants: [&'static str; 3]) -> Trail {
    let named = |t: &'static str| match t {
        "acme" => tenants[0],
        "ACME" => tenants[1],
        _ => tenants[2],
    };
    let span = p.to - p.from;
    let set: Vec<Rec> = vec![
        // At `from`: in.
        (
            0,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            eur("0.022000", Some("data")),
        ),
        (
            10,
            "acme",
            "bob",
            "warehouse",
            Some("query"),
            eur("0.010000", Some("data")),
        ),
        (
            20,
            "acme",
            "alice",
            "warehouse",
            Some("export"),
            eur("1.500000", None),
        ),
        // Another spelling of acme: one tenant.
        (
            30,
            "ACME",
            "carol",
            "crm",
            Some("lookup"),
            eur("0.000001", Some("ops")),
        ),
        (
            40,
            "globex",
            "dave",
            "warehouse",
            Some("query"),
            eur("2.000000", Some("data")),
        ),
        // Cells a spreadsheet would run.
        (
            50,
            "globex",
            "mallory",
            "crm",
            Some("+cmd"),
            eur("0.500000", Some("=evil,\"x\"")),
        ),
        // Unpriced (the tool has no price), no cost at all, unreadable.
        (
            60,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            Some(serde_json::json!({"priced": false, "team": "data"})),
        ),
        (70, "acme", "alice", "warehouse", Some("query"), None),
        (
            80,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            Some(serde_json::json!({"amount": "abc", "currency": "EUR", "team": "data"})),
        ),
        // Another currency.
        (
            90,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            Some(serde_json::json!({"amount": "3", "currency": "USD", "team": "data"})),
        ),
        // No principal, server, tool or team.
        (100, "acme", "", "", None, eur("0.300000", None)),
        // At `to`, and just before `from`: out.
        (
            span,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            eur("100.000000", Some("data")),
        ),
        (
            -1,
            "acme",
            "alice",
            "warehouse",
            Some("query"),
            eur("100.000000", Some("data")),
        ),
    ];
    let mut t = Trail::new();
    for (at, tenant, principal, server, tool, cost) in set {
        let tenant = named(tenant);
        let ts = jiff::Timestamp::from_second(p.from + at)
            .unwrap()
            .to_string();
        let mut rec = serde_json::json!({
            "ts": ts, "tenant": tenant, "direction": "request", "method": "tools/call",
            "outcome": "forwarded", "trace_id": format!("t-{at}"), "status": 200,
        });
        for (k, v) in [("principal", principal), ("server", server)] {
            if !v.is_empty() {
                rec[k] = v.into();
            }
        }
        if let Some(tool) = tool {
            rec["tool"] = tool.into();
        }
        if let Some(c) = cost {
            rec["cost"] = c;
        }
        t.push(rec);
    }
    t
}

/// A report of the period, by `by`, with the query string's filters.
pub(crate) fn asked(p: &Period, by: &str, extra: &str, tenants: &[&str]) -> SpendQuery {
    let qs = format!("from={}&to={}&by={by}{extra}", p.from, p.to);
    let (mut q, _) = parse_spend(&qs, now_s() * 1_000_000).unwrap();
    q.filter.tenants = tenants.iter().map(|t| t.to_string()).collect();
    q
}

/// Every record a search lists (all its pages).
fn listed(s: &AuditStore, mut q: Query) -> Vec<Row> {
    q.limit = 500;
    let mut out = Vec::new();
    loop {
        let page = s.search(&q).unwrap();
        out.extend(page.rows);
        match page.next_before {
            Some(b) => q.before_id = Some(b),
            None => return out,
        }
    }
}

/// The calls and millionths the records a row's link lists add up to,
/// each in the row's currency.
fn added_up(
    s: &AuditStore,
    q: &SpendQuery,
    keys: &[Option<String>],
    currency: &str,
) -> (u64, i128) {
    let mut search = parse_query(&q.records(keys, currency)).unwrap();
    search.tenants = q.filter.tenants.clone();
    let mut sum = (0u64, 0i128);
    for r in listed(s, search) {
        let raw = s.get(r.id, &[]).unwrap().unwrap().raw.unwrap();
        let (micros, cur) = cost_in(&raw).priced.expect("a priced record");
        assert_eq!(cur, currency, "{raw}");
        sum.0 += 1;
        sum.1 += i128::from(micros);
    }
    sum
}

/// Each row and total of `report` adds up to the records its search lists.
fn rows_match_their_records(s: &AuditStore, q: &SpendQuery, report: &Spend) {
    for r in &report.rows {
        assert_eq!(
            added_up(s, q, &r.keys, &r.currency),
            (r.calls, r.micros),
            "row {r:?} of {:?}",
            q.by
        );
    }
    for t in &report.totals {
        assert_eq!(
            added_up(s, q, &[], &t.currency),
            (t.calls, t.micros),
            "{t:?}"
        );
        if !report.truncated {
            let rows: Vec<_> = report
                .rows
                .iter()
                .filter(|r| r.currency == t.currency)
                .collect();
            assert_eq!(rows.iter().map(|r| r.calls).sum::<u64>(), t.calls);
            assert_eq!(rows.iter().map(|r| r.micros).sum::<i128>(), t.micros);
        }
    }
}

fn totals(report: &Spend) -> BTreeMap<String, (u64, i128)> {
    report
        .totals
        .iter()
        .map(|t| (t.currency.clone(), (t.calls, t.micros)))
        .collect()
}

fn row<'a>(report: &'a Spend, keys: &[Option<&str>], currency: &str) -> &'a super::spend::SpendRow {
    report
        .rows
        .iter()
        .find(|r| {
            r.currency == currency
                && r.keys.iter().map(Option::as_deref).collect::<Vec<_>>() == keys
        })
        .unwrap_or_else(|| panic!("no row {keys:?} {currency} in {:?}", report.rows))
}

/// Every check of a report, on a store holding [`records`] (ingested by
/// the caller, on either backend).
pub(crate) fn check_store(s: &AuditStore, p: &Period) {
    let all = |by: &str| {
        let q = asked(p, by, "", &[]);
        let r = s.spend(&q).unwrap();
        rows_match_their_records(s, &q, &r);
        (q, r)
    };
    for by in [
        "tenant",
        "team",
        "principal",
        "server",
        "tool",
        "tenant,team",
        "tenant,server,tool",
        "team,principal",
        "tool,team,tenant,server,principal",
    ] {
        let (_, r) = all(by);
        assert!(!r.truncated);
        // The period's bounds: the record at `from` is in, those at `to`
        // and before `from` are not; unpriced and unreadable costs add
        // nothing.
        assert_eq!(
            totals(&r),
            BTreeMap::from([
                ("EUR".to_owned(), (7, 4_332_001)),
                ("USD".to_owned(), (1, 3_000_000)),
            ]),
            "{by}"
        );
    }
    let (_, by_tenant) = all("tenant");
    // acme and ACME are one tenant.
    assert_eq!(by_tenant.rows.len(), 3, "{:?}", by_tenant.rows);
    let acme = row(&by_tenant, &[Some("ACME")], "EUR");
    assert_eq!((acme.calls, acme.micros), (5, 1_832_001));
    let globex = row(&by_tenant, &[Some("globex")], "EUR");
    assert_eq!((globex.calls, globex.micros), (2, 2_500_000));
    // Most spent first.
    assert_eq!(by_tenant.rows[0].currency, "USD");
    let (_, by_team) = all("team");
    let none = row(&by_team, &[None], "EUR");
    assert_eq!((none.calls, none.micros), (2, 1_800_000));
    let data = row(&by_team, &[Some("data")], "EUR");
    assert_eq!((data.calls, data.micros), (3, 2_032_000));
    let (_, by_tool) = all("server,tool");
    let bare = row(&by_tool, &[None, None], "EUR");
    assert_eq!((bare.calls, bare.micros), (1, 300_000));

    // Filters, an absent team among them.
    let q = asked(p, "principal", "&team=data&server=warehouse", &[]);
    let r = s.spend(&q).unwrap();
    rows_match_their_records(s, &q, &r);
    assert_eq!(totals(&r)["EUR"], (3, 2_032_000));
    let q = asked(p, "tenant", "&absent=team", &[]);
    let r = s.spend(&q).unwrap();
    rows_match_their_records(s, &q, &r);
    assert_eq!(
        totals(&r),
        BTreeMap::from([("EUR".to_owned(), (2, 1_800_000))])
    );

    // A tenant's scope: their records alone, whatever is asked.
    for by in ["tenant", "team,principal", "server,tool"] {
        let q = asked(p, by, "", &["globex"]);
        let r = s.spend(&q).unwrap();
        rows_match_their_records(s, &q, &r);
        assert_eq!(
            totals(&r),
            BTreeMap::from([("EUR".to_owned(), (2, 2_500_000))])
        );
    }
    let q = asked(p, "tenant", "&tenant=acme", &["globex"]);
    assert!(s.spend(&q).unwrap().rows.is_empty());

    // A second later from: the record at the old `from` is out; a second
    // later to: the record at the old `to` is in.
    let later = Period {
        from: p.from + 1,
        to: p.to,
    };
    let q = asked(&later, "tenant", "", &[]);
    let r = s.spend(&q).unwrap();
    rows_match_their_records(s, &q, &r);
    assert_eq!(totals(&r)["EUR"], (6, 4_310_001));
    let longer = Period {
        from: p.from,
        to: p.to + 1,
    };
    let q = asked(&longer, "tenant", "", &[]);
    let r = s.spend(&q).unwrap();
    rows_match_their_records(s, &q, &r);
    assert_eq!(totals(&r)["EUR"], (8, 104_332_001));

    // Cut to one group: the most spent; the totals still count every one.
    let q = asked(p, "principal", "&limit=1", &[]);
    let r = s.spend(&q).unwrap();
    assert!(r.truncated);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(
        (r.rows[0].keys[0].as_deref(), r.rows[0].currency.as_str()),
        (Some("alice"), "USD")
    );
    assert_eq!(totals(&r)["EUR"], (7, 4_332_001));
    rows_match_their_records(s, &q, &r);
}

fn store() -> (tempfile::TempDir, AuditStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open_audit(&dir.path().join("audit.sqlite3"), Limits::default()).unwrap();
    (dir, s)
}

#[test]
fn spend_adds_up_to_the_records_each_row_lists() {
    let (_d, s) = store();
    let p = Period::recent();
    let t = records(&p);
    let done = s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    // The unreadable cost is stored, counted, and adds nothing.
    assert_eq!((done.accepted, done.unreadable_costs), (13, 1));
    assert_eq!(
        serde_json::to_value(done).unwrap()["unreadable_costs"],
        serde_json::json!(1)
    );
    // Sent again: duplicates, nothing counted.
    let again = s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    assert_eq!((again.duplicates, again.unreadable_costs), (13, 0));
    check_store(&s, &p);
}

/// A store written before the cost columns gains them when it is opened,
/// filled from the lines it holds: the same reports.
#[test]
fn an_older_store_gains_the_cost_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite3");
    let p = Period::recent();
    let t = records(&p);
    {
        let s = open_audit(&path, Limits::default()).unwrap();
        s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
        lock(&s.sqlite().writer)
            .execute_batch(
                "DROP INDEX records_priced; DROP INDEX records_team; \
                 ALTER TABLE records DROP COLUMN cost_micros; \
                 ALTER TABLE records DROP COLUMN currency; \
                 ALTER TABLE records DROP COLUMN team;",
            )
            .unwrap();
    }
    let s = open_audit(&path, Limits::default()).unwrap();
    check_store(&s, &p);
    drop(s);
    // Opened again: nothing more to do.
    let s = open_audit(&path, Limits::default()).unwrap();
    assert_eq!(s.rows(), 13);
}

#[test]
fn spend_parameters_are_checked() {
    let now = jiff::Timestamp::from_second(1_778_000_000).unwrap(); // 2026-05-05
    let now = now.as_microsecond();
    let (q, f) = parse_spend("", now).unwrap();
    assert_eq!(f, super::spend::Format::Json);
    assert_eq!(q.by, vec![Key::Tenant]);
    assert_eq!(q.limit, MAX_GROUPS);
    let day = |d: &str| super::spend::parse_bound(d).unwrap();
    assert_eq!((q.from_us, q.to_us), (day("2026-05-01"), day("2026-06-01")));
    let (q, f) = parse_spend(
        "from=2026-02-01&to=2026-03-01T00:00:00Z&by=team,tool&format=csv&absent=principal",
        now,
    )
    .unwrap();
    assert_eq!(f, super::spend::Format::Csv);
    assert_eq!(q.by, vec![Key::Team, Key::Tool]);
    assert_eq!(q.to_us - q.from_us, 28 * 86_400_000_000);
    assert_eq!(q.filter.principal.as_deref(), Some(""));
    // Read back as it is written.
    let (again, _) = parse_spend(&q.query_string(), now).unwrap();
    assert_eq!(again.query_string(), q.query_string());
    for (bad, says) in [
        ("by=nope", "by `nope`"),
        ("by=tenant,tenant", "twice"),
        ("from=yesterday", "from: `yesterday`"),
        ("to=2026-13-01", "to:"),
        ("from=2026-05-02&to=2026-05-01", "the period is empty"),
        ("from=2026-05-01&to=2026-05-01", "the period is empty"),
        ("format=xml", "format `xml`"),
        ("limit=0", "limit `0`"),
        ("limit=1001", "limit `1001`"),
        ("outcome=denied", "unknown parameter `outcome`"),
        ("tenant=a&tenant=b", "`tenant` is given twice"),
        ("team=a&absent=team", "both given and absent"),
        ("absent=gateway", "absent `gateway`"),
    ] {
        let e = parse_spend(bad, now).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_csv_is_rfc_4180_and_safe_in_a_spreadsheet() {
    let (_d, s) = store();
    let p = Period::recent();
    let t = records(&p);
    s.ingest("gw-1", &t.body(0, t.lines.len())).unwrap();
    let q = asked(&p, "team,tool", "", &[]);
    let report = s.spend(&q).unwrap();
    let text = csv(&q, &report);
    assert!(text.ends_with("\r\n"));
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "row,team,tool,calls,amount,currency");
    assert_eq!(lines.len(), 1 + report.rows.len() + report.totals.len());
    // A team and a tool a spreadsheet would run, neutralised and quoted.
    assert!(
        lines.contains(&"group,\"'=evil,\"\"x\"\"\",'+cmd,1,0.500000,EUR"),
        "{text}"
    );
    assert!(lines.contains(&"group,,,1,0.300000,EUR"), "{text}");
    assert!(lines.contains(&"total,,,7,4.332001,EUR"), "{text}");
    assert!(lines.contains(&"total,,,1,3.000000,USD"), "{text}");
    // Read back by a CSV reader's rules: every line has the header's cells.
    for l in &lines {
        assert_eq!(cells(l).len(), 6, "{l}");
        assert!(
            cells(l)
                .iter()
                .all(|c| !c.starts_with(['=', '+', '-', '@'])),
            "{l}"
        );
    }
    let cut = s.spend(&asked(&p, "team,tool", "&limit=2", &[])).unwrap();
    let text = csv(&q, &cut);
    assert!(text.ends_with("truncated,,,,,\r\n"), "{text}");
}

/// A CSV line's cells, unquoted (RFC 4180).
pub(crate) fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut chars) = (false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().unwrap().push(c),
        }
    }
    out
}
