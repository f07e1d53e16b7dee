//! Attacks of one tenant on another through the store: a layer that would
//! leave another tenant's served layer out, growth of a tenant's history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::layer_tests::{layer, org_store, rego};
use super::*;
use warden_config::archive::Files;

/// A layer of `tenant` with `server` at the address the org grants the
/// tenant (`layer_tests::ORG`), routed at `prefix`.
fn with_server(tenant: &str, server: &str, prefix: &str) -> Files {
    let mut f = layer(tenant, &rego(tenant, "decision := {\"allow\": true}"));
    let upstream = match tenant {
        "finance" => "127.0.0.1:2",
        _ => "127.0.0.1:3",
    };
    f.insert(
        "tenant.yaml".into(),
        format!(
            "version: 1\ntenant: {tenant}\nservers:\n  - name: {server}\n    upstreams: [\"{upstream}\"]\nroutes:\n  - prefix: {prefix}\n    server: {server}\n"
        )
        .into_bytes(),
    );
    f
}

/// Finance (first in tenant order) publishes a server named as hr's: the
/// composition would keep finance's and leave hr's served layer out. The
/// publish is refused and hr keeps being served.
#[test]
fn a_layer_that_would_leave_another_tenants_layer_out_is_refused() {
    let (_d, s) = org_store();
    let h = s
        .publish_layer(
            "admin:harry",
            "hr",
            with_server("hr", "hrdb", "/hr/db"),
            None,
        )
        .unwrap();
    let err = s
        .publish_layer(
            "admin:fiona",
            "finance",
            with_server("finance", "hrdb", "/finance/db"),
            None,
        )
        .expect_err("finance's layer takes hr's server name");
    assert!(err.to_string().contains("hr"), "{err}");
    let last = s.history().last().unwrap().clone();
    assert_eq!(last.layers.get("hr"), Some(&h.revision));
    assert!(!last.layers.contains_key("finance"));
    assert!(s.layer_history_view("hr").last_error.is_none());
    let files = archive::unpack(&s.current().unwrap().archive).unwrap();
    assert!(files.contains_key("tenants/hr/tenant.yaml"));
}

/// Finance's layer defining `servers` (a tenant admin registers only
/// the servers its layer defines).
pub(crate) fn finance_defines(s: &Store, servers: &[&str]) {
    let mut f = with_server("finance", servers[0], "/finance/s0");
    let mut y = String::from_utf8(f["tenant.yaml"].clone()).unwrap();
    for (i, n) in servers.iter().enumerate().skip(1) {
        y = y.replace(
            "routes:\n",
            &format!("  - name: {n}\n    upstreams: [\"127.0.0.1:2\"]\nroutes:\n  - prefix: /finance/s{i}\n    server: {n}\n"),
        );
    }
    f.insert("tenant.yaml".into(), y.into_bytes());
    s.publish_layer("admin:fiona", "finance", f, None).unwrap();
}

pub(crate) fn fiona() -> crate::admins::Actor {
    crate::admins::Actor {
        name: "fiona".into(),
        kind: crate::admins::Kind::TenantAdmin("finance".into()),
    }
}

/// A definition as the API reads it (`serde_json`, 128 levels at most):
/// the deepest one it accepts, nested in its first tool's inputSchema.
fn deepest_definition() -> serde_json::Value {
    (1..200)
        .rev()
        .find_map(|depth| {
            let mut schema = String::from("{}");
            for _ in 0..depth {
                schema = format!("{{\"properties\":{schema}}}");
            }
            let body = format!(
                "{{\"server\":\"ledger\",\"definition\":{{\"tools\":[{{\"name\":\"t\",\"inputSchema\":{schema}}}]}}}}"
            );
            serde_json::from_str::<serde_json::Value>(&body).ok()
        })
        .expect("some depth is read")["definition"]
        .clone()
}

/// A definition the API accepts sits deeper in `registry.json` than in
/// the request: one nested to the parser's limit made the state file
/// unreadable, and the agent refused to start (a tenant admin's persistent
/// denial of service). Registering it is refused; the agent restarts.
#[test]
fn a_registered_definition_never_stops_the_agent_from_starting() {
    let (d, s) = org_store();
    finance_defines(&s, &["ledger"]);
    let def = deepest_definition();
    let res = s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &def, taken, SystemTime::now())
    });
    drop(s);
    Store::open(&d.path().join("state"), &d.path().join("source"), None)
        .expect("the agent starts again");
    assert!(res.is_err(), "a definition nested this deep is refused");
}

/// Every registry table a tenant admin writes is bounded: servers per
/// tenant, a definition's size, a move's note.
#[test]
fn the_registry_is_bounded() {
    let (_d, s) = org_store();
    finance_defines(&s, &["ledger"]);
    let now = SystemTime::now();
    let tools = |desc: &str| serde_json::json!({"tools": [{"name": "t", "description": desc, "inputSchema": {"type": "object"}}]});
    let big = "x".repeat(crate::registry::MAX_DEFINITION_BYTES + 1);
    let res = s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools(&big), taken, now)
    });
    assert!(res.is_err(), "a definition past the bound is refused");
    let ok = s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools("ok"), taken, now)
    });
    assert!(ok.is_ok(), "{ok:?}");
    let note = "n".repeat(crate::registry::MAX_NOTE + 1);
    let res = s.registry_apply(&fiona(), "registry.move", "", |r, _| {
        r.transition(
            &fiona(),
            "ledger",
            crate::registry::State::Testing,
            None,
            &note,
            now,
        )
    });
    assert!(res.is_err(), "a note past the bound is refused");
    let mut r = crate::registry::Registry::default();
    // Every name is finance's layer's.
    let nobody = |n: &str| Some((n.to_owned(), Some("finance".to_owned())));
    for i in 0..crate::registry::MAX_SERVERS_PER_TENANT {
        r.register(&fiona(), &format!("s{i}"), None, &tools("ok"), &nobody, now)
            .unwrap();
    }
    assert!(r
        .register(&fiona(), "one-more", None, &tools("ok"), &nobody, now)
        .is_err());
}

/// The registry's events file is bounded on disk: full, it is moved aside.
#[test]
fn the_registry_events_file_is_bounded() {
    let (d, s) = org_store();
    let state = d.path().join("state");
    let f = std::fs::File::create(state.join("registry-events.jsonl")).unwrap();
    f.set_len(super::registry::MAX_EVENTS_FILE).unwrap();
    finance_defines(&s, &["ledger"]);
    let tools = serde_json::json!({"tools": [{"name": "t", "inputSchema": {}}]});
    s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools, taken, SystemTime::now())
    })
    .unwrap();
    let now = std::fs::metadata(state.join("registry-events.jsonl")).unwrap();
    assert!(now.len() < 4096, "started again: {}", now.len());
    assert!(state.join("registry-events.jsonl.1").exists());
}

/// A tenant admin who publishes again and again fills neither the disk nor
/// the history: past the bound the oldest revisions go, the current stays,
/// and the agent starts again.
#[test]
fn a_tenants_layer_history_is_bounded() {
    let (d, mut s) = org_store();
    s.layer_revisions = 4;
    let mut first = None;
    for i in 0..s.layer_revisions + 3 {
        let e = s
            .publish_layer(
                "admin:fiona",
                "finance",
                layer(
                    "finance",
                    &rego(
                        "finance",
                        &format!("decision := {{\"allow\": true, \"n\": {i}}}"),
                    ),
                ),
                None,
            )
            .unwrap();
        first.get_or_insert(e.revision);
    }
    let h = s.layer_history_view("finance");
    let kept = &h.history;
    assert_eq!(kept.len(), 4);
    assert_eq!(h.current.as_ref(), Some(&kept.last().unwrap().revision));
    let dir = d.path().join("state").join("tenants").join("finance");
    let tars = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".src.tar.gz")
        })
        .count();
    assert_eq!(tars, 4);
    assert!(s
        .rollback_layer("admin:fiona", "finance", &first.unwrap())
        .is_err());
    drop(s);
    let s = Store::open(&d.path().join("state"), &d.path().join("source"), None).unwrap();
    assert_eq!(s.layer_history_view("finance").history.len(), 4);
}

/// A tenant cannot register another spelling of a server the org defines.
#[test]
fn a_tenant_cannot_register_an_org_servers_name_in_another_case() {
    let (_d, s) = org_store();
    let tools = serde_json::json!({"tools": [{"name": "t", "inputSchema": {}}]});
    for name in ["mock", "MOCK", "Mock"] {
        let res = s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
            r.register(&fiona(), name, None, &tools, taken, SystemTime::now())
        });
        assert!(
            matches!(
                res,
                Err(RegistryError::Refused(crate::registry::Refusal::Forbidden(
                    _
                )))
            ),
            "{name}: {res:?}"
        );
    }
}

/// A share an older agent recorded (no `share_reviewed`) and then kept
/// across a new definition (the finding's state) is withdrawn when the
/// agent starts: kept and logged, and what is served rebuilt without it.
/// A share whose definition has not changed since the org approved it is
/// kept, bound to that definition, and nothing is rebuilt.
#[test]
fn a_share_an_older_agent_kept_across_a_new_definition_is_withdrawn_at_start() {
    use crate::admins::{Actor, Kind};
    use crate::registry::State;
    let (d, s) = org_store();
    finance_defines(&s, &["ledger", "journal"]);
    let now = SystemTime::now();
    let felix = Actor {
        name: "felix".into(),
        kind: Kind::TenantAdmin("finance".into()),
    };
    let rita = Actor {
        name: "rita".into(),
        kind: Kind::OrgReviewer,
    };
    let tools = |desc: &str| serde_json::json!({"tools": [{"name": "t", "description": desc, "inputSchema": {"type": "object"}}]});
    let digest = |s: &Store, n: &str| {
        s.registry_show_view(&Actor::root(), n)
            .unwrap()
            .definition_digest
    };
    for server in ["ledger", "journal"] {
        s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
            r.register(&fiona(), server, None, &tools("a"), taken, now)
        })
        .unwrap();
        let d = digest(&s, server);
        for (who, to) in [
            (fiona(), State::Testing),
            (felix.clone(), State::Approved),
            (fiona(), State::Deployed),
        ] {
            s.registry_apply(&who, "registry.move", "", |r, _| {
                r.transition(&who, server, to, Some(&d), "", now)
            })
            .unwrap();
        }
        s.registry_apply(&fiona(), "registry.share", "", |r, _| {
            r.request_share(&fiona(), server, now)
        })
        .unwrap();
        s.registry_apply(&rita, "registry.approve_share", "", |r, _| {
            r.approve_share(&rita, server, Some(&d), now)
        })
        .unwrap();
    }
    // Ledger gets a new definition.
    s.registry_apply(&fiona(), "registry.register", "", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools("evil"), taken, now)
    })
    .unwrap();
    let before = s.current().unwrap().revision.clone();
    drop(s);
    // As an older agent left it: shared without naming the definition.
    let state = d.path().join("state");
    let file = state.join("registry.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for server in ["ledger", "journal"] {
        let e = &mut r["servers"][server];
        e["shared"] = true.into();
        e.as_object_mut().unwrap().remove("share_reviewed");
        for ev in e["events"].as_array_mut().unwrap() {
            if ev["note"]
                .as_str()
                .unwrap()
                .starts_with("shared with every tenant")
            {
                ev["note"] = "shared with every tenant".into();
            }
        }
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    let s = Store::open(&state, &d.path().join("source"), None).unwrap();
    // Rebuilt at start: the revisions kept were built with the share.
    assert_ne!(s.current().unwrap().revision, before);
    let served = archive::unpack(&s.current().unwrap().archive).unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&served["registry.json"]).unwrap();
    assert_eq!(bundle["servers"]["ledger"]["shared"], false, "{bundle}");
    assert_eq!(bundle["servers"]["journal"]["shared"], true, "{bundle}");
    let ledger = s.registry_show_view(&Actor::root(), "ledger").unwrap();
    assert!(!ledger.entry.shared);
    let journal = s.registry_show_view(&Actor::root(), "journal").unwrap();
    assert_eq!(
        journal.entry.share_reviewed.as_deref(),
        Some(digest(&s, "journal").as_str())
    );
    // Kept on disk and logged.
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept["servers"]["ledger"]["shared"], false);
    let events = std::fs::read_to_string(state.join("registry-events.jsonl")).unwrap();
    assert!(
        events
            .lines()
            .last()
            .unwrap()
            .contains("the share is withdrawn"),
        "{events}"
    );
    let changes = std::fs::read_to_string(state.join(changes::FILE)).unwrap();
    assert!(
        changes.contains("registry.share_withdrawn") && changes.contains("ledger:"),
        "{changes}"
    );
    // Settled once: the next start changes nothing.
    let revision = s.current().unwrap().revision.clone();
    drop(s);
    let s = Store::open(&state, &d.path().join("source"), None).unwrap();
    assert_eq!(s.current().unwrap().revision, revision);
}
