#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use super::*;
use crate::engines::identity::Principal;
use crate::guards::tenant_fixture::{principal, snapshot_with};
use crate::protocol::jsonrpc::Id;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
use warden_config::budgets::Period;

const ORG: &str = r#"version: 1
service_groups:
  - name: g
    servers:
      - {name: crm, upstreams: ["127.0.0.1:1"]}
      - {name: free, upstreams: ["127.0.0.1:2"]}
routes:
  - {prefix: /crm, server: crm}
  - {prefix: /free, server: free}
catalog:
  crm:
    price: {currency: EUR, per_call: "0.25"}
budgets:
  timezone: Europe/Paris
  limits:
    - {name: acme-month, per: tenant, period: month, amount: "1.00", tenants: [acme], alerts: [0.5, 0.8]}
    - {name: team-day, per: team, period: day, amount: "10.00"}
"#;

fn at(rfc: &str) -> SystemTime {
    SystemTime::from(rfc.parse::<jiff::Timestamp>().unwrap())
}

#[test]
fn periods_run_in_the_bundles_time_zone() {
    let clock = BudgetClock::new("Europe/Paris");
    // 23:30 UTC on 30 November is already 1 December in Paris.
    let s = clock.span(Period::Month, at("2026-11-30T23:30:00Z"));
    assert_eq!(&*s.label, "2026-12");
    assert_eq!(s.index, 202_612);
    assert_eq!(&*s.resets_at, "2027-01-01T00:00:00+01:00");
    let s = clock.span(Period::Month, at("2026-11-30T22:59:59Z"));
    assert_eq!(&*s.label, "2026-11");
    assert_eq!(&*s.resets_at, "2026-12-01T00:00:00+01:00");
    assert_eq!(
        s.ends,
        at("2026-11-30T23:00:00Z")
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let d = clock.span(Period::Day, at("2026-03-29T12:00:00Z"));
    assert_eq!(&*d.label, "2026-03-29");
    assert_eq!(d.index, 20_260_329);
    // The clocks go forward that night: the next day starts at +02:00.
    assert_eq!(&*d.resets_at, "2026-03-30T00:00:00+02:00");
    let utc = BudgetClock::new("UTC").span(Period::Day, at("2026-11-30T23:30:00Z"));
    assert_eq!(&*utc.resets_at, "2026-12-01T00:00:00+00:00");
}

fn demand(limit: u64, index: u32, ends: u64) -> BudgetDemand {
    BudgetDemand {
        budget: 0,
        name: "b".into(),
        per: BudgetScope::Tenant,
        key: b"k".to_vec(),
        holder: "acme".into(),
        limit,
        alerts: vec![800_000],
        period: PeriodSpan {
            index,
            label: "2026-11".into(),
            resets_at: "".into(),
            ends,
        },
        global: None,
    }
}

#[test]
fn a_charge_never_passes_the_limit_and_a_new_period_starts_over() {
    let t = BudgetTables::new(10);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    let d = demand(1_000, 1, 1_000);
    assert_eq!(t.charge(&d, 600, 600, now), Charged::Taken(0, 600));
    assert_eq!(t.charge(&d, 400, 401, now), Charged::Over(600));
    assert_eq!(t.charge(&d, 400, 400, now), Charged::Taken(600, 1_000));
    // Nothing is left: even a call priced per unit only (need 1) is refused.
    assert_eq!(t.charge(&d, 0, 1, now), Charged::Over(1_000));
    // The reply's units are counted past the limit.
    assert_eq!(t.add(&d, 50, now), Some((1_000, 1_050)));
    t.refund(&d, 400);
    assert_eq!(t.spent(&d), 650);
    // An older period's counter does not move a newer one back.
    assert_eq!(
        t.charge(&demand(700, 0, 500), 1, 1, now),
        Charged::Taken(650, 651)
    );
    let next = demand(1_000, 2, 2_000);
    assert_eq!(t.spent(&next), 0);
    assert_eq!(t.charge(&next, 10, 10, now), Charged::Taken(0, 10));
}

#[test]
fn a_full_table_fails_closed_until_periods_end() {
    let t = BudgetTables::new(2);
    let now = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let mut a = demand(100, 1, 50);
    a.key = b"a".to_vec();
    let mut b = demand(100, 1, 1_000);
    b.key = b"b".to_vec();
    let mut c = demand(100, 1, 1_000);
    c.key = b"c".to_vec();
    assert!(matches!(t.charge(&a, 1, 1, now(10)), Charged::Taken(..)));
    assert!(matches!(t.charge(&b, 1, 1, now(10)), Charged::Taken(..)));
    assert_eq!(t.charge(&c, 1, 1, now(20)), Charged::Full);
    // `a`'s period ended at 50: its counter may go, and `c` gets room.
    assert!(matches!(t.charge(&c, 1, 1, now(60)), Charged::Taken(..)));
    assert_eq!(t.len(), 2);
}

/// Counters that hold nothing (every call given back, or costing nothing
/// per call) are not what a full table must keep: a caller who fills the
/// table with them (a new session per refused call) would otherwise have
/// every other holder refused until the period ends.
#[test]
fn a_full_table_makes_room_by_dropping_counters_that_hold_nothing() {
    let t = BudgetTables::new(2);
    let now = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let holder = |k: &[u8]| {
        let mut d = demand(100, 1, 1_000);
        d.key = k.to_vec();
        d
    };
    let (a, b, c, e) = (holder(b"a"), holder(b"b"), holder(b"c"), holder(b"e"));
    // `a` and `b` reserved, and were given back (another guard refused).
    assert!(matches!(t.charge(&a, 5, 5, now(10)), Charged::Taken(..)));
    t.refund(&a, 5);
    assert!(matches!(t.charge(&b, 5, 5, now(10)), Charged::Taken(..)));
    t.refund(&b, 5);
    assert_eq!(t.len(), 2);
    // `c` is a holder that spends: room is made for it.
    assert_eq!(t.charge(&c, 7, 7, now(20)), Charged::Taken(0, 7));
    assert!(matches!(t.charge(&e, 3, 3, now(20)), Charged::Taken(..)));
    // A counter that holds a spend is never dropped: full again.
    let f = holder(b"f");
    assert_eq!(t.charge(&f, 1, 1, now(30)), Charged::Full);
    assert_eq!(t.spent(&c), 7);
    assert_eq!(t.spent(&e), 3);
}

#[test]
fn an_alert_is_raised_by_the_charge_that_crosses_it_only() {
    let mut d = demand(1_000_000, 1, 10);
    d.alerts = vec![500_000, 800_000];
    assert!(BudgetAlert::crossed(&d, 0, 499_999).is_empty());
    let a = BudgetAlert::crossed(&d, 400_000, 850_000);
    assert_eq!(
        a.iter().map(|a| a.threshold).collect::<Vec<_>>(),
        vec![500_000, 800_000]
    );
    assert!(BudgetAlert::crossed(&d, 800_000, 900_000).is_empty());
    assert_eq!(BudgetAlert::crossed(&d, 799_999, 800_000).len(), 1);
    assert_eq!(a[0].to_json("EUR")["spent"], "0.850000");
}

fn call(id: u64, tool: &str) -> (String, Parsed) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    );
    let parsed = parse(body.as_bytes(), ParseLimits::default()).unwrap();
    (body, parsed)
}

fn judge(
    f: &BudgetFilter,
    p: &Principal,
    server: &str,
    v: Option<&BudgetVerdicts>,
) -> Result<(), Denial> {
    let (body, parsed) = call(7, "lookup");
    let Parsed::Single(env) = parsed else {
        panic!()
    };
    let msg = Message::new(&env, body.as_bytes());
    let mut ex = Exchange::new(p, server);
    ex.budget = v;
    match f.on_request(&msg, &ex, &mut Notes::default()) {
        Decision::Reject(d) => Err(d),
        _ => Ok(()),
    }
}

#[test]
fn the_guard_refuses_what_was_not_reserved_and_names_the_reset() {
    let snap = snapshot_with(ORG, &[]);
    let cfg = &snap.config;
    let f = BudgetFilter::new(&cfg.budgets, &cfg.catalog).unwrap();
    let acme = principal("acme", "alice", &[]);
    // A priced call under budgets that reached the guard with no
    // reservation is refused, never passed.
    let e = judge(&f, &acme, "crm", None).unwrap_err();
    assert_eq!(e.reason, "budget_unchecked:acme-month");
    // An unpriced server's calls spend nothing and need nothing.
    assert!(judge(&f, &acme, "free", None).is_ok());
    let mut ex = Exchange::new(&acme, "crm");
    ex.now = at("2026-11-30T10:00:00Z");
    let ds = demands(&cfg.budgets, &BudgetClock::new("Europe/Paris"), &ex);
    assert_eq!(
        ds.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["acme-month", "team-day"]
    );
    assert_eq!(
        ds[1].holder, "acme/",
        "no team: the tenant's share of no team"
    );
    let over = BudgetVerdicts(
        [(Id::Num(7.into()), BudgetVerdict::Over(ds[0].clone()))]
            .into_iter()
            .collect(),
    );
    let e = judge(&f, &acme, "crm", Some(&over)).unwrap_err();
    assert_eq!(e.reason, "budget_exceeded:acme-month");
    assert_eq!(e.error.code, codes::BUDGET_EXCEEDED);
    assert!(
        e.error
            .message
            .contains("resets at 2026-12-01T00:00:00+01:00"),
        "{}",
        e.error.message
    );
    let data = e.error.data.unwrap();
    assert_eq!(data["resets_at"], "2026-12-01T00:00:00+01:00");
    let ok = BudgetVerdicts(
        [(Id::Num(7.into()), BudgetVerdict::Admitted)]
            .into_iter()
            .collect(),
    );
    assert!(judge(&f, &acme, "crm", Some(&ok)).is_ok());
    // Another tenant is under the team budget only.
    let other = principal("globex", "bob", &[]);
    let ex = Exchange::new(&other, "crm");
    let ds = demands(&cfg.budgets, &BudgetClock::new("Europe/Paris"), &ex);
    assert_eq!(ds.len(), 1);
}

/// A call priced per unit is charged the units its result says; asked to
/// run as a task, its reply is a task handle and its result comes later
/// under another method (`tasks/result`, or `tasks/get` inline), which
/// no charge reads: the units would never be counted. Under a budget, such
/// a call is refused (the gateway cannot price it), never forwarded as if
/// it cost its price per call; a task of a tool priced per call only is
/// priced whole by its call.
#[test]
fn a_task_of_a_tool_priced_per_unit_is_refused_under_a_budget() {
    let org = ORG.replace(
        "    price: {currency: EUR, per_call: \"0.25\"}\n",
        "    price: {currency: EUR, per_call: \"0.25\"}\n    tools:\n      rows: {price: {currency: EUR, per_call: \"0.01\", per_unit: {pointer: /structuredContent/rows, price: \"0.001\"}}}\n",
    );
    let snap = snapshot_with(&org, &[]);
    let cfg = &snap.config;
    let f = BudgetFilter::new(&cfg.budgets, &cfg.catalog).unwrap();
    let acme = principal("acme", "alice", &[]);
    let ok = BudgetVerdicts(
        [(Id::Num(7.into()), BudgetVerdict::Admitted)]
            .into_iter()
            .collect(),
    );
    let run = |tool: &str, task: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}{task}}}}}"#
        );
        let parsed = parse(body.as_bytes(), ParseLimits::default()).unwrap();
        let Parsed::Single(env) = parsed else {
            panic!()
        };
        let msg = Message::new(&env, body.as_bytes());
        let mut ex = Exchange::new(&acme, "crm");
        ex.budget = Some(&ok);
        match f.on_request(&msg, &ex, &mut Notes::default()) {
            Decision::Reject(d) => Err(d.reason),
            _ => Ok(()),
        }
    };
    assert_eq!(run("rows", ""), Ok(()));
    assert_eq!(
        run("rows", r#","task":{"ttl":60000}"#),
        Err("budget_units_unreadable:acme-month".to_owned())
    );
    // Priced per call only: the call's price is all it costs.
    assert_eq!(run("lookup", r#","task":{"ttl":60000}"#), Ok(()));
    // Another tenant's call is under the team budget alone: refused, naming it.
    let globex = principal("globex", "bob", &[]);
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"rows","arguments":{},"task":{}}}"#;
    let Parsed::Single(env) = parse(body.as_bytes(), ParseLimits::default()).unwrap() else {
        panic!()
    };
    let msg = Message::new(&env, body.as_bytes());
    let mut ex = Exchange::new(&globex, "crm");
    ex.budget = Some(&ok);
    assert!(matches!(
        f.on_request(&msg, &ex, &mut Notes::default()),
        Decision::Reject(d) if d.reason == "budget_units_unreadable:team-day"
    ));
}

/// A server may answer a call of a tool priced per unit with a task
/// handle although no task was asked (2026-07-28): under a budget, that
/// reply is refused, as the request asking for one is; the tool's result
/// itself passes, and so does a handle for a tool priced per call only.
#[test]
fn a_task_handle_for_a_tool_priced_per_unit_is_refused_under_a_budget() {
    let org = ORG.replace(
        "    price: {currency: EUR, per_call: \"0.25\"}\n",
        "    price: {currency: EUR, per_call: \"0.25\"}\n    tools:\n      rows: {price: {currency: EUR, per_call: \"0.01\", per_unit: {pointer: /structuredContent/rows, price: \"0.001\"}}}\n",
    );
    let snap = snapshot_with(&org, &[]);
    let cfg = &snap.config;
    let f = BudgetFilter::new(&cfg.budgets, &cfg.catalog).unwrap();
    let acme = principal("acme", "alice", &[]);
    let reply = |tool: Option<&str>, result: &str| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
        let Parsed::Single(env) = parse(body.as_bytes(), ParseLimits::default()).unwrap() else {
            panic!()
        };
        let msg = Message::from_server(&env, body.as_bytes(), Some("tools/call"), tool);
        let ex = Exchange::new(&acme, "crm");
        match f.on_response(&msg, &ex, &mut Notes::default()) {
            Decision::Reject(d) => Err(d.reason),
            _ => Ok(()),
        }
    };
    let refused = Err("budget_units_unreadable:acme-month".to_owned());
    assert_eq!(
        reply(
            Some("rows"),
            r#"{"task":{"taskId":"t-1","status":"working"}}"#
        ),
        refused
    );
    assert_eq!(
        reply(
            Some("rows"),
            r#"{"resultType":"task","taskId":"t-1","status":"working"}"#
        ),
        refused
    );
    // A reply whose call is not known (matched on another stream): the
    // server has a tool priced per unit, so its handle is refused too.
    assert_eq!(
        reply(None, r#"{"task":{"taskId":"t-1","status":"working"}}"#),
        refused
    );
    assert_eq!(
        reply(
            Some("rows"),
            r#"{"content":[],"structuredContent":{"rows":3}}"#
        ),
        Ok(())
    );
    assert_eq!(
        reply(
            Some("lookup"),
            r#"{"task":{"taskId":"t-1","status":"working"}}"#
        ),
        Ok(())
    );
}

/// One holder however the credential spells its tenant or team; two
/// tenants' teams of one name are two holders.
#[test]
fn holders_are_keyed_as_quotas_key_people() {
    let snap = snapshot_with(ORG, &[]);
    let b = &snap.config.budgets;
    let clock = BudgetClock::new("UTC");
    let key = |tenant: &str, team: &str| {
        let mut p = principal(tenant, "alice", &[]);
        p.attributes.insert("team".into(), team.into());
        let ex = Exchange::new(&p, "crm");
        demands(b, &clock, &ex)
            .into_iter()
            .find(|d| d.name == "team-day")
            .unwrap()
            .key
    };
    assert_eq!(key("acme", "Payments"), key("ACME", " payments "));
    assert_ne!(key("acme", "payments"), key("globex", "payments"));
    assert_ne!(key("acme", "payments"), key("acme", "sales"));
}

/// A session budget covers the calls of one session of one principal; a
/// call without a session is not under it (the principal's budgets bound
/// a caller who opens new sessions).
#[test]
fn a_session_budget_is_per_session_and_principal() {
    let org = ORG.replace(
        "    - {name: team-day,",
        "    - {name: one-session, per: session, period: day, amount: \"0.50\"}\n    - {name: team-day,",
    );
    let snap = snapshot_with(&org, &[]);
    let b = &snap.config.budgets;
    let clock = BudgetClock::new("UTC");
    let key = |who: &str, session: Option<&str>| {
        let p = principal("globex", who, &[]);
        let mut ex = Exchange::new(&p, "crm");
        ex.session_id = session;
        demands(b, &clock, &ex)
            .into_iter()
            .find(|d| d.name == "one-session")
            .map(|d| d.key)
    };
    assert!(key("alice", None).is_none());
    let a1 = key("alice", Some("s-1")).unwrap();
    assert_eq!(Some(a1.clone()), key("alice", Some("s-1")));
    assert_ne!(Some(a1.clone()), key("alice", Some("s-2")));
    assert_ne!(
        Some(a1),
        key("bob", Some("s-1")),
        "another principal's session of one id"
    );
}

/// A `tools/call` whose tool the gateway cannot read (no `name`, or not a
/// string) cannot be priced: under a budget, on a server with prices, it is
/// refused; on a server without any, it passes.
#[test]
fn a_call_with_no_readable_tool_is_refused_under_a_budget() {
    let snap = snapshot_with(ORG, &[]);
    let cfg = &snap.config;
    let f = BudgetFilter::new(&cfg.budgets, &cfg.catalog).unwrap();
    let acme = principal("acme", "alice", &[]);
    let mut judged = 0;
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":5,"arguments":{}}}"#,
    ] {
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            continue; // refused by the parser itself: never reaches a guard
        };
        judged += 1;
        let msg = Message::new(&env, body.as_bytes());
        for (server, refused) in [("crm", true), ("free", false)] {
            let ex = Exchange::new(&acme, server);
            let d = f.on_request(&msg, &ex, &mut Notes::default());
            assert_eq!(
                matches!(d, Decision::Reject(_)),
                refused,
                "{server}: {body}"
            );
        }
    }
    assert!(judged > 0, "the parser let none of them through to a guard");
}
