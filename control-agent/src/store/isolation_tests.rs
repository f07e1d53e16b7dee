//! Attacks of one tenant on another through the store: a layer that would
//! leave another tenant's served layer out, growth of a tenant's history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::layer_tests::{layer, org_store, rego};
use super::*;

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
    assert!(s.layer_history("hr")["last_error"].is_null());
    let files = archive::unpack(&s.current().unwrap().archive).unwrap();
    assert!(files.contains_key("tenants/hr/tenant.yaml"));
}

fn fiona() -> crate::admins::Actor {
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
    let def = deepest_definition();
    let res = s.registry_change(&fiona(), "registry.register", |r, taken| {
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
    let now = SystemTime::now();
    let tools = |desc: &str| serde_json::json!({"tools": [{"name": "t", "description": desc, "inputSchema": {"type": "object"}}]});
    let big = "x".repeat(crate::registry::MAX_DEFINITION_BYTES + 1);
    let res = s.registry_change(&fiona(), "registry.register", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools(&big), taken, now)
    });
    assert!(res.is_err(), "a definition past the bound is refused");
    let ok = s.registry_change(&fiona(), "registry.register", |r, taken| {
        r.register(&fiona(), "ledger", None, &tools("ok"), taken, now)
    });
    assert!(ok.is_ok(), "{ok:?}");
    let note = "n".repeat(crate::registry::MAX_NOTE + 1);
    let res = s.registry_change(&fiona(), "registry.move", |r, _| {
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
    let nobody = |_: &str| None;
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
    let tools = serde_json::json!({"tools": [{"name": "t", "inputSchema": {}}]});
    s.registry_change(&fiona(), "registry.register", |r, taken| {
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
    let h = s.layer_history("finance");
    let kept = h["history"].as_array().unwrap();
    assert_eq!(kept.len(), 4);
    assert_eq!(h["current"], kept.last().unwrap()["revision"]);
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
    assert_eq!(
        s.layer_history("finance")["history"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// A tenant cannot register another spelling of a server the org defines.
#[test]
fn a_tenant_cannot_register_an_org_servers_name_in_another_case() {
    let (_d, s) = org_store();
    let tools = serde_json::json!({"tools": [{"name": "t", "inputSchema": {}}]});
    for name in ["mock", "MOCK", "Mock"] {
        let res = s.registry_change(&fiona(), "registry.register", |r, taken| {
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
