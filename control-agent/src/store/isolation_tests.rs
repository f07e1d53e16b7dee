//! Attacks of one tenant on another through the store: a layer that would
//! leave another tenant's served layer out, growth of a tenant's history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::layer_tests::{layer, org_store, rego};
use super::*;

fn with_server(tenant: &str, server: &str, prefix: &str) -> Files {
    let mut f = layer(tenant, &rego(tenant, "decision := {\"allow\": true}"));
    f.insert(
        "tenant.yaml".into(),
        format!(
            "version: 1\ntenant: {tenant}\nservers:\n  - name: {server}\n    upstreams: [\"127.0.0.1:9\"]\nroutes:\n  - prefix: {prefix}\n    server: {server}\n"
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
