//! The typed views answer the JSON the store answered before they
//! existed: each `legacy_*` function is the code path the view replaced,
//! kept here verbatim, and compared with the view on a populated store
//! (the same `serde_json::Value`, so the same bytes once written).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use super::fleet_tests::{plan, report, stats};
use super::layer_tests::{layer, org_store, rego};
use super::*;
use crate::admins::{tenant_name, Actor, Kind};
use crate::rollout::{Selector, Stats};

fn legacy_rollout(s: &Store) -> serde_json::Value {
    let inner = s.lock();
    let Some(r) = &inner.rollout else {
        return serde_json::json!({"state": "none"});
    };
    let mut v = serde_json::to_value(r).unwrap_or_default();
    let stats = |s: &Stats| {
        serde_json::json!({
            "calls": s.calls,
            "denial_rate": s.denial_rate(),
            "replies": s.replies,
            "withheld_rate": s.withheld_rate(),
            "error_rate": s.error_rate(),
            "p99_ms": s.p99().map(|p| p * 1000.0),
        })
    };
    v["canary"] = stats(&r.canary_stats);
    v["rest"] = stats(&r.rest_stats);
    v["baseline"] = match &r.baseline {
        Some(b) => serde_json::json!({
            "gateways": b.gateways,
            "denial_rate": b.denial,
            "error_rate": b.error,
            "withheld_rate": b.withheld,
            "p99_ms": b.p99.map(|p| p * 1000.0),
            "disputed": b.disputed,
            "absent": b.absent,
        }),
        None => serde_json::Value::Null,
    };
    v["elapsed_secs"] = serde_json::json!(r.started.elapsed().unwrap_or_default().as_secs());
    v
}

/// The fleet as JSON, but for `last_seen_secs` (a clock read apart).
fn legacy_fleet(s: &Store) -> serde_json::Value {
    let current = s.current().map(|p| p.revision.clone());
    let inner = s.lock();
    let mut conflicts = Vec::new();
    let members: Vec<serde_json::Value> = inner
        .fleet
        .values()
        .map(|m| {
            let age = m.seen.elapsed();
            let due = Store::pick_for(&inner.served, &m.report.id, &m.report.labels);
            let conflict = Store::conflict_in(&inner.sightings, &m.report.id, s.stale_after);
            if conflict.is_some() {
                conflicts.push(m.report.id.clone());
            }
            serde_json::json!({
                "id": m.report.id,
                "instance": m.report.instance,
                "conflict": conflict.is_some(),
                "instances": conflict.unwrap_or_default(),
                "restarts": m.restarts,
                "jumps": m.jumps,
                "served": Store::served_what_it_reports(&inner.fetched, &m.report),
                "labels": m.report.labels,
                "revision": m.report.revision,
                "due": due.as_ref().map(|p| p.revision.clone()),
                "why": due.as_ref().map(|p| p.target.why()),
                "current": due.as_ref().map(|p| &p.revision) == Some(&m.report.revision),
                "healthy": m.report.healthy,
                "last_error": m.report.last_error,
                "calls": m.report.stats.calls,
                "calls_per_sec": m.rate,
                "upstreams": m.report.upstreams,
                "last_seen_secs": age.as_secs_f64(),
                "stale": age > s.stale_after,
            })
        })
        .collect();
    let served: Vec<serde_json::Value> = inner
        .served
        .iter()
        .map(|p| serde_json::json!({"revision": p.revision, "target": p.target, "why": p.target.why()}))
        .collect();
    serde_json::json!({
        "current": current,
        "served": served,
        "rollout": inner.rollout.as_ref().map(|r| serde_json::json!({"revision": r.revision, "state": r.state})),
        "last_build_error": inner.last_error,
        "kill_switch": inner.kill,
        "members": members,
        "conflicts": conflicts,
    })
}

fn legacy_upstream_health(s: &Store, servers: &BTreeSet<String>) -> Vec<serde_json::Value> {
    let inner = s.lock();
    let mut out = Vec::new();
    for m in inner.fleet.values() {
        for u in m
            .report
            .upstreams
            .iter()
            .filter(|u| servers.contains(&u.server))
        {
            out.push(serde_json::json!({
                "gateway": m.report.id,
                "server": u.server,
                "replicas": u.replicas,
                "healthy": u.healthy,
                "stale": m.seen.elapsed() > s.stale_after,
            }));
        }
    }
    out
}

fn legacy_layer_history(s: &Store, tenant: &str) -> serde_json::Value {
    let inner = s.lock();
    let t = tenant_name(tenant)
        .ok()
        .and_then(|t| inner.layers.get(&t).cloned());
    let t = t.unwrap_or_default();
    let current = t
        .state
        .current
        .and_then(|s| t.history.iter().find(|e| e.seq == s))
        .map(|e| e.revision.clone());
    let canary = inner
        .rollout
        .as_ref()
        .filter(|r| r.layer.as_ref().is_some_and(|l| crate::admins::same_tenant(&l.tenant, tenant)))
        .map(|r| serde_json::json!({"revision": r.layer.as_ref().map(|l| &l.revision), "state": r.state, "reason": r.reason}));
    serde_json::json!({
        "tenant": tenant,
        "current": current,
        "last_error": t.state.last_error,
        "canary": canary,
        "history": t.history,
    })
}

fn legacy_layers_summary(s: &Store) -> serde_json::Value {
    let inner = s.lock();
    serde_json::Value::Array(
        inner
            .layers
            .iter()
            .map(|(name, t)| {
                serde_json::json!({
                    "tenant": name,
                    "current": t.state.current.and_then(|s| t.history.iter().find(|e| e.seq == s)).map(|e| e.revision.clone()),
                    "last_error": t.state.last_error,
                })
            })
            .collect(),
    )
}

fn legacy_layer_diff(s: &Store, tenant: &str, a: &str, b: &str) -> serde_json::Value {
    let (fa, fb) = (
        s.layer_revision_files(tenant, a).unwrap(),
        s.layer_revision_files(tenant, b).unwrap(),
    );
    let names: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut files = Vec::new();
    for n in names {
        let (x, y) = (fa.get(n), fb.get(n));
        if x == y {
            continue;
        }
        let change = match (x, y) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        let text =
            |v: Option<&Vec<u8>>| String::from_utf8_lossy(v.map_or(&[][..], |v| v)).into_owned();
        let (tx, ty) = (text(x), text(y));
        let diff = similar::TextDiff::from_lines(&tx, &ty)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{a}/{n}"), &format!("{b}/{n}"))
            .to_string();
        files.push(serde_json::json!({"file": n, "change": change, "diff": diff}));
    }
    serde_json::json!({"tenant": tenant, "from": a, "to": b, "files": files})
}

fn legacy_registry_entry(s: &Store, server: &str) -> serde_json::Value {
    let inner = s.lock();
    inner
        .registry
        .servers
        .get(server)
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["server"] = server.into();
            v["definition_digest"] = s.definition_digest().into();
            v
        })
        .unwrap_or_default()
}

fn legacy_registry_list(s: &Store, actor: &Actor) -> serde_json::Value {
    let inner = s.lock();
    serde_json::Value::Array(
        inner
            .registry
            .servers
            .iter()
            .filter(|(_, s)| crate::registry::Registry::readable(actor, s))
            .map(|(n, s)| {
                serde_json::json!({
                    "server": n, "tenant": s.tenant, "state": s.state,
                    "since": s.since, "shared": s.shared,
                    "share_reviewed": s.share_reviewed,
                    "share_requested_by": s.share_requested_by,
                    "retired_at": s.retired_at, "tools": s.tools,
                })
            })
            .collect(),
    )
}

fn json(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// `last_seen_secs` is a clock read at each call: compared apart.
fn without_ages(mut v: serde_json::Value) -> serde_json::Value {
    for m in v["members"].as_array_mut().unwrap() {
        assert!(m["last_seen_secs"].as_f64().unwrap() < 60.0);
        m["last_seen_secs"] = serde_json::Value::Null;
    }
    v
}

fn fiona() -> Actor {
    Actor {
        name: "fiona".into(),
        kind: Kind::TenantAdmin("finance".into()),
    }
}

/// A store with a fleet (one gateway with upstreams),
/// a finance layer in two revisions and a registered server.
fn populated() -> (tempfile::TempDir, Store) {
    let (d, s) = org_store();
    let rev = s.current().unwrap().revision.clone();
    report(&s, "edge-1", Some("a"), &rev, stats(10));
    report(&s, "edge-2", Some("x"), &rev, stats(5));
    s.served_to("edge-3", "z", &Labels::new(), &rev);
    s.accept_report(Report {
        id: "edge-3".into(),
        instance: Some("z".into()),
        revision: rev.clone(),
        healthy: false,
        last_error: Some("upstream down".into()),
        labels: Labels::new(),
        stats: stats(3),
        upstreams: vec![UpstreamHealth {
            server: "mock".into(),
            replicas: 2,
            healthy: 1,
        }],
    })
    .unwrap();
    for body in [
        "decision := {\"allow\": true}",
        "decision := {\"allow\": false}",
    ] {
        s.publish_layer(
            "admin:fiona",
            "finance",
            layer("finance", &rego("finance", body)),
            None,
        )
        .unwrap();
    }
    (d, s)
}

#[test]
fn the_views_answer_the_json_the_store_answered() {
    let (_d, s) = populated();
    // No canary yet.
    assert_eq!(json(s.rollout_view()), legacy_rollout(&s));
    assert_eq!(
        without_ages(json(s.fleet_view())),
        without_ages(legacy_fleet(&s))
    );
    let servers: BTreeSet<String> = ["mock".to_owned()].into();
    assert_eq!(
        s.upstream_health_view(&servers)
            .into_iter()
            .map(json)
            .collect::<Vec<_>>(),
        legacy_upstream_health(&s, &servers)
    );
    assert_eq!(s.upstream_health_view(&servers).len(), 1);
    for t in ["finance", "Finance", "hr", "not a tenant"] {
        assert_eq!(
            json(s.layer_history_view(t)),
            legacy_layer_history(&s, t),
            "{t}"
        );
    }
    assert_eq!(json(s.layers_summary_view()), legacy_layers_summary(&s));
    let h = s.layer_history_view("finance");
    let (a, b) = (h.history[0].revision.clone(), h.history[1].revision.clone());
    let diff = s.layer_diff_view("finance", &a, &b).unwrap();
    assert_eq!(diff.files.len(), 1);
    assert_eq!(json(diff), legacy_layer_diff(&s, "finance", &a, &b));
    // A canary being watched, judged once, and a layer canary's history.
    s.publish_canary("admin", Selector::default(), plan(0.5))
        .unwrap();
    s.tick();
    assert_eq!(s.rollout_view().state(), Some(CanaryState::Watching));
    assert_eq!(json(s.rollout_view()), legacy_rollout(&s));
    assert_eq!(
        without_ages(json(s.fleet_view())),
        without_ages(legacy_fleet(&s))
    );
    s.roll_back_canary("admin", None).unwrap();
    assert_eq!(s.rollout_view().state(), Some(CanaryState::RolledBack));
    assert_eq!(json(s.rollout_view()), legacy_rollout(&s));
    let canary = (Selector::default(), plan(0.5));
    s.publish_layer(
        "admin:fiona",
        "finance",
        layer(
            "finance",
            &rego("finance", "decision := {\"allow\": true, \"x\": 1}"),
        ),
        Some(canary),
    )
    .unwrap();
    assert_eq!(
        json(s.layer_history_view("finance")),
        legacy_layer_history(&s, "finance")
    );
    assert!(s.layer_history_view("finance").canary.is_some());
    assert_eq!(json(s.rollout_view()), legacy_rollout(&s));
    assert_eq!(
        without_ages(json(s.fleet_view())),
        without_ages(legacy_fleet(&s))
    );
    // Two processes under one id.
    let rev = s.current().unwrap().revision.clone();
    report(&s, "edge-2", Some("y"), &rev, stats(1));
    report(&s, "edge-2", Some("x"), &rev, stats(6));
    let fleet = s.fleet_view();
    assert_eq!(fleet.conflicts, ["edge-2"]);
    assert_eq!(without_ages(json(fleet)), without_ages(legacy_fleet(&s)));
}

#[test]
fn the_registry_views_answer_the_json_the_store_answered() {
    let (_d, s) = org_store();
    let y = "version: 1\ntenant: finance\nservers:\n  - name: ledger\n    upstreams: [\"127.0.0.1:2\"]\nroutes:\n  - prefix: /finance/ledger\n    server: ledger\n";
    let mut f = layer("finance", &rego("finance", "decision := {\"allow\": true}"));
    f.insert("tenant.yaml".into(), y.as_bytes().to_vec());
    s.publish_layer("admin:fiona", "finance", f, None).unwrap();
    let now = SystemTime::now();
    let tools = serde_json::json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]});
    let changed = s
        .registry_apply(&fiona(), "registry.register", "", |r, taken| {
            r.register(&fiona(), "ledger", None, &tools, taken, now)
        })
        .unwrap();
    assert_eq!(json(changed), legacy_registry_entry(&s, "ledger"));
    let shown = s.registry_show_view(&Actor::root(), "ledger").unwrap();
    assert_eq!(shown.server, "ledger");
    assert_eq!(json(shown), legacy_registry_entry(&s, "ledger"));
    for actor in [Actor::root(), fiona()] {
        assert_eq!(
            json(s.registry_list_view(&actor)),
            legacy_registry_list(&s, &actor)
        );
    }
    assert_eq!(s.registry_list_view(&fiona()).len(), 1);
    let hr = Actor {
        name: "hank".into(),
        kind: Kind::TenantAdmin("hr".into()),
    };
    assert_eq!(
        json(s.registry_list_view(&hr)),
        legacy_registry_list(&s, &hr)
    );
    let e = s.registry_show_view(&hr, "ledger").unwrap_err();
    assert_eq!(e.status(), 403);
}

#[test]
fn errors_keep_their_text_and_carry_a_status() {
    let (_d, s) = org_store();
    let e = s.revision_files("r99-deadbeef").unwrap_err();
    assert_eq!(e.to_string(), "no revision `r99-deadbeef` in the history");
    assert_eq!(e.status(), 404);
    let e = s
        .layer_revision_files("finance", "finance-r1-x")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tenant `finance` has no layer revision `finance-r1-x`"
    );
    let bad = Report {
        id: "edge 1".into(),
        instance: None,
        revision: "r1".into(),
        healthy: true,
        last_error: None,
        labels: Labels::new(),
        stats: Stats::default(),
        upstreams: vec![],
    };
    let e = s.accept_report(bad.clone()).unwrap_err();
    assert_eq!(e, ReportError::Id);
    assert_eq!(e.status(), 422);
    assert_eq!(
        s.accept_report(bad).unwrap_err().to_string(),
        "a gateway id is 1-128 visible ASCII characters"
    );
}
