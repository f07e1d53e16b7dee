#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::engines::identity::Principal;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn settings() -> Settings {
    Settings {
        learning: Duration::from_secs(3600),
        rate_window: Duration::from_secs(60),
        rate_factor: 5.0,
        denial_factor: 3.0,
    }
}

fn who(id: &str) -> Principal {
    Principal {
        id: id.into(),
        tenant: "acme".into(),
        auth: crate::engines::identity::AuthMethod::ApiKey,
        ..Principal::anonymous()
    }
}

fn kinds(n: &AnomalyNote) -> Vec<&'static str> {
    n.signals.iter().map(|s| s.kind.as_str()).collect()
}

fn call(b: &Baselines, p: &Principal, now: SystemTime, tool: &str, hosts: &[&str]) -> AnomalyNote {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let names = Names {
        server: "mock",
        tool,
        hosts: &hosts,
    };
    b.observe(p, &settings(), now, Facts::of("mock", tool, &hosts), &names)
}

/// Hashes are stable (Redis shares them between gateways), distinct per
/// kind, and a tool is hashed with its server.
#[test]
fn facts_hash_stably_and_apart() {
    assert_eq!(tool_hash("mock", "echo"), tool_hash("mock", "echo"));
    assert_ne!(tool_hash("mock", "echo"), tool_hash("other", "echo"));
    assert_ne!(server_hash("echo"), host_hash("echo"));
    assert_ne!(fact_hash(b't', "a/b"), fact_hash(b's', "a/b"));
    // Pinned: a change would split the fleet's shared sets.
    assert_eq!(
        tool_hash("mock", "echo"),
        fact_hash(b't', "mock/echo"),
        "the tool is hashed as server/tool"
    );
}

/// A first call raises every first-use signal and is learning; once
/// forwarded, the same call raises nothing; a new tool of a known server
/// raises `first_tool` only; a new host `new_host`.
#[test]
fn first_uses_are_raised_once_learnt() {
    let b = Baselines::new(10);
    let p = who("agent");
    let n = call(&b, &p, at(1_000_000), "echo", &["api.example.com"]);
    assert!(n.learning);
    assert_eq!(kinds(&n), ["first_server", "first_tool", "new_host"]);
    assert_eq!(n.signals[1].detail, "mock/echo");
    assert_eq!(n.signals[2].detail, "api.example.com");
    b.settle(&p, &settings(), at(1_000_000), &n, true);
    let again = call(&b, &p, at(1_000_001), "echo", &["api.example.com"]);
    assert!(again.signals.is_empty(), "{again:?}");
    let other = call(&b, &p, at(1_000_002), "purge", &["evil.example"]);
    assert_eq!(kinds(&other), ["first_tool", "new_host"]);
    // A denied call teaches nothing.
    b.settle(&p, &settings(), at(1_000_002), &other, false);
    assert_eq!(
        kinds(&call(&b, &p, at(1_000_003), "purge", &[])),
        ["first_tool"]
    );
    // Principals are apart.
    assert_eq!(
        kinds(&call(&b, &who("other"), at(1_000_003), "echo", &[])),
        ["first_server", "first_tool"]
    );
}

/// A flood of new tool names never grows a baseline past its cap, and a
/// name it could not learn is reported as new every time.
#[test]
fn a_flood_of_names_stays_within_the_caps() {
    let b = Baselines::new(10);
    let p = who("agent");
    for i in 0..(MAX_TOOLS + 100) {
        let n = call(
            &b,
            &p,
            at(1_000_000),
            &format!("t{i}"),
            &[&format!("h{i}.example")],
        );
        b.settle(&p, &settings(), at(1_000_000), &n, true);
    }
    let base = b.get(p.owner()).unwrap();
    assert_eq!(base.tools.len(), MAX_TOOLS);
    assert_eq!(base.hosts.len(), MAX_HOSTS);
    assert_eq!(base.servers.len(), 1);
    let late = call(&b, &p, at(1_000_001), &format!("t{}", MAX_TOOLS + 50), &[]);
    assert_eq!(kinds(&late), ["first_tool"], "never learnt, still new");
    let early = call(&b, &p, at(1_000_001), "t0", &[]);
    assert!(early.signals.is_empty());
    // An operator's acceptance makes room in a full set: the tool is
    // known, the set still at its cap (one learnt tool is new again).
    b.accept(
        p.owner(),
        at(1_000_002),
        &Facts::of("mock", "purge", &[]),
        true,
    )
    .unwrap();
    assert!(call(&b, &p, at(1_000_003), "purge", &[]).signals.is_empty());
    assert_eq!(b.get(p.owner()).unwrap().tools.len(), MAX_TOOLS);
}

/// A full table holds no more principals: one it cannot hold is wholly
/// new and `untracked`, never normal; an idle baseline makes room.
#[test]
fn a_full_table_flags_whom_it_cannot_hold() {
    let b = Baselines::new(2);
    for id in ["a", "b"] {
        let p = who(id);
        let n = call(&b, &p, at(1_000_000), "echo", &[]);
        b.settle(&p, &settings(), at(1_000_000), &n, true);
    }
    assert_eq!(b.len(), 2);
    let c = who("c");
    let n = call(&b, &c, at(1_000_100), "echo", &[]);
    assert!(!n.learning);
    assert_eq!(kinds(&n), ["first_server", "first_tool", "untracked"]);
    b.settle(&c, &settings(), at(1_000_100), &n, true);
    assert_eq!(b.len(), 2, "never past its bound");
    // Thirty days later, the idle ones go to make room.
    let later = at(1_000_000 + IDLE.as_secs() + 120);
    let n = call(&b, &c, later, "echo", &[]);
    assert!(n.learning, "{n:?}");
    b.settle(&c, &settings(), later, &n, true);
    assert_eq!(b.len(), 1);
}

/// After learning, a window far above the usual raises `rate` with the
/// ratio as its strength; within learning it is never raised.
#[test]
fn a_rate_far_above_the_usual_is_raised_after_learning() {
    let b = Baselines::new(10);
    let p = who("agent");
    let s = settings();
    let start = 1_000_000 * 60;
    // Two calls a minute for an hour and a half.
    for m in 0..90u64 {
        for k in 0..2 {
            let now = at(start + m * 60 + k);
            let n = call(&b, &p, now, "echo", &[]);
            b.settle(&p, &s, now, &n, true);
        }
    }
    let base = b.get(p.owner()).unwrap();
    assert!((base.usual_rate - 2.0).abs() < 0.01, "{base:?}");
    let spike = start + 95 * 60;
    let mut flagged = None;
    for k in 0..20 {
        let now = at(spike + k);
        let n = call(&b, &p, now, "echo", &[]);
        if let Some(sig) = n.signals.iter().find(|x| x.kind == Kind::Rate) {
            flagged.get_or_insert((k, sig.strength));
        }
        b.settle(&p, &s, now, &n, true);
    }
    let (k, strength) = flagged.expect("flagged");
    assert_eq!(k, 10, "the 11th call of the window is more than 5 × 2");
    assert!((strength - 5.5).abs() < 0.01, "{strength}");
    // Learning: the same spike at the start raises no rate.
    let q = who("new");
    for k in 0..30 {
        let n = call(&b, &q, at(start + k), "echo", &[]);
        assert!(n.signals.iter().all(|x| x.kind != Kind::Rate));
        b.settle(&q, &s, at(start + k), &n, true);
    }
}

/// The hour histogram: a principal that works 9–17 UTC is flagged at
/// 03:00 (strength 1 for an hour it never worked); counts decay by day.
#[test]
fn an_hour_never_worked_is_raised_and_history_decays() {
    let b = Baselines::new(10);
    let p = who("agent");
    let s = settings();
    let day0 = 20_000 * 86_400;
    for d in 0..5u64 {
        for h in 9..17u64 {
            let now = at(day0 + d * 86_400 + h * 3600);
            let n = call(&b, &p, now, "echo", &[]);
            b.settle(&p, &s, now, &n, true);
        }
    }
    let night = at(day0 + 5 * 86_400 + 3 * 3600);
    let n = call(&b, &p, night, "echo", &[]);
    let hour = n
        .signals
        .iter()
        .find(|x| x.kind == Kind::Hour)
        .expect("hour");
    assert_eq!(hour.strength, 1.0);
    assert_eq!(hour.detail, "03:00 UTC");
    let day = at(day0 + 5 * 86_400 + 10 * 3600);
    assert!(call(&b, &p, day, "echo", &[]).signals.is_empty());
    // Decay: the day's counts shrink by 3 % a day.
    let base = b.get(p.owner()).unwrap();
    let mut hours = base.hours;
    decay(&mut hours, base.hours_day, base.hours_day + 10);
    assert!((hours[9] - base.hours[9] * 0.97f32.powi(10)).abs() < 1e-3);
}

/// A run of denials far above the usual raises `denial_rate`.
#[test]
fn a_denial_rate_far_above_the_usual_is_raised() {
    let b = Baselines::new(10);
    let p = who("agent");
    let s = settings();
    let t0 = 1_000_000;
    for k in 0..40 {
        let n = call(&b, &p, at(t0 + k), "echo", &[]);
        b.settle(&p, &s, at(t0 + k), &n, true);
    }
    let late = t0 + 7200;
    // One denial is no run.
    for k in 0..2 {
        let n = call(&b, &p, at(late + k), "echo", &[]);
        assert!(n.signals.iter().all(|x| x.kind != Kind::DenialRate), "{k}");
        b.settle(&p, &s, at(late + k), &n, false);
    }
    let n = call(&b, &p, at(late + 5), "echo", &[]);
    let d = n
        .signals
        .iter()
        .find(|x| x.kind == Kind::DenialRate)
        .expect("denial rate");
    assert!(d.strength > 3.0, "{d:?}");
}

/// Accepting a behaviour makes it normal for that principal only.
#[test]
fn an_accepted_behaviour_is_normal() {
    let b = Baselines::new(10);
    let p = who("agent");
    let key = crate::engines::grants::holder_key("acme", "agent");
    assert_eq!(key, p.owner());
    b.accept(
        &key,
        at(1_000_000),
        &Facts {
            server: server_hash("mock"),
            tool: tool_hash("mock", "purge"),
            hosts: vec![host_hash("api.example.com")],
        },
        true,
    )
    .unwrap();
    assert!(call(&b, &p, at(1_000_001), "purge", &["api.example.com"])
        .signals
        .is_empty());
    assert_eq!(
        kinds(&call(&b, &who("other"), at(1_000_001), "purge", &[])),
        ["first_server", "first_tool"]
    );
}

/// A baseline at its caps fits the bytes `Table::Baselines` counts for it.
#[test]
fn a_full_baseline_fits_its_table_entry() {
    let mut base = Baseline::new(at(0));
    for i in 0..1000u64 {
        base.accept(
            &Facts {
                server: i + 1,
                tool: i + 1,
                hosts: vec![i + 1],
            },
            false,
        );
    }
    let bytes = std::mem::size_of::<Baseline>()
        + 8 * (base.servers.capacity() + base.tools.capacity() + base.hosts.capacity())
        + 64 // the key
        + 64; // the map's bookkeeping
    assert!(
        bytes as u64 <= warden_config::model::Table::Baselines.entry_bytes(),
        "{bytes}"
    );
}

/// The cache key holds the whole note: two notes that differ in any
/// part differ in their bytes.
#[test]
fn key_bytes_tell_notes_apart() {
    let n = |learning, kind, strength: f64, detail: &str| {
        let mut b = Vec::new();
        AnomalyNote {
            learning,
            signals: vec![Signal {
                kind,
                strength,
                detail: detail.into(),
            }],
            facts: Facts::default(),
        }
        .key_bytes(&mut b);
        b
    };
    let base = n(false, Kind::FirstTool, 1.0, "mock/purge");
    assert_ne!(base, n(true, Kind::FirstTool, 1.0, "mock/purge"));
    assert_ne!(base, n(false, Kind::FirstServer, 1.0, "mock/purge"));
    assert_ne!(base, n(false, Kind::FirstTool, 2.0, "mock/purge"));
    assert_ne!(base, n(false, Kind::FirstTool, 1.0, "mock/echo"));
}
