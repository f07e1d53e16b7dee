//! Tenant layers and the registry read by `Bundle::load`.

use crate::raw::RegistryState;
use crate::{Bundle, BundleError};

const ORG: &str = "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: crm, upstreams: [\"127.0.0.1:1\"]}\nroutes:\n  - {prefix: /crm, server: crm}\ntenants:\n  finance: {path_prefixes: [/finance/], upstreams: [\"127.0.0.1:2\", \"127.0.0.1:3\"]}\n  hr: {path_prefixes: [/hr/]}\n";

const FIN: &str = "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:2\"]}\nroutes:\n  - {path_prefix: /finance/ledger, server: ledger}\n";

const FP: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn write(dir: &std::path::Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    std::fs::write(p, text).expect("write");
}

fn load(files: &[(&str, &str)]) -> Result<Bundle, BundleError> {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "warden.yaml", ORG);
    for (n, t) in files {
        write(dir.path(), n, t);
    }
    Bundle::load(dir.path())
}

#[test]
fn a_bundle_without_tenants_is_as_before() {
    let b = load(&[]).expect("loads");
    assert!(b.tenants.is_empty());
    assert_eq!(b.config.servers.len(), 1);
}

#[test]
fn layers_compose_into_the_config() {
    let registry = format!(
        r#"{{"version": 1, "servers": {{"ledger": {{"tenant": "finance", "state": "deployed", "since": "2026-11-25T10:00:00Z", "shared": false, "retired_at": null, "tools": {{"post": {{"approved": "{FP}", "candidate": null}}}}}}, "gone": {{"state": "retired", "retired_at": "2026-01-01T00:00:00Z"}}}}}}"#
    );
    let b = load(&[
        ("tenants/finance/tenant.yaml", FIN),
        (
            "tenants/finance/p.rego",
            "package warden.tenants.finance\ndecision := {\"allow\": true}\n",
        ),
        ("registry.json", &registry),
    ])
    .expect("loads");
    assert!(b.config.server("ledger").is_some());
    assert!(b
        .config
        .routes
        .iter()
        .any(|r| r.prefix == "/finance/ledger"));
    assert_eq!(b.tenants.owner("ledger"), Some("finance"));
    // The layer's Rego is the layer's, never the org's.
    assert!(b.policies.is_empty(), "{:?}", b.policies.keys());
    assert_eq!(b.tenants.layers["finance"].policies.len(), 1);
    let reg = b.tenants.registry.as_ref().expect("registry");
    assert_eq!(reg.servers["ledger"].state, RegistryState::Deployed);
    // A retired server the bundle no longer defines is fine.
    assert_eq!(reg.servers["gone"].state, RegistryState::Retired);
    // The layer is part of the bundle's digest.
    let other = load(&[(
        "tenants/finance/tenant.yaml",
        &FIN.replace("127.0.0.1:2", "127.0.0.1:3"),
    )])
    .expect("loads");
    assert_ne!(b.digest, other.digest);
}

fn problems(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn refusals_name_the_layer_file() {
    let ps = problems(&[(
        "tenants/legal/tenant.yaml",
        &FIN.replace("finance", "legal"),
    )]);
    assert!(
        ps.iter()
            .any(|p| p.starts_with("tenants/legal/tenant.yaml") && p.contains("not granted")),
        "{ps:?}"
    );
    // Two tenants cannot both have a server.
    let hr = FIN
        .replace("tenant: finance", "tenant: hr")
        .replace("/finance/", "/hr/");
    let ps = problems(&[
        ("tenants/finance/tenant.yaml", FIN),
        ("tenants/hr/tenant.yaml", &hr),
    ]);
    assert!(
        ps.iter()
            .any(|p| p.starts_with("tenants/hr/tenant.yaml")
                && p.contains("already tenant `finance`'s")),
        "{ps:?}"
    );
}

#[test]
fn registry_is_checked() {
    for (bad, needle) in [
        (
            r#"{"version": 1, "servers": {"x": {"state": "live"}}}"#,
            "unknown variant",
        ),
        (
            r#"{"version": 1, "servers": {"x": {"state": "deployed", "since": "yesterday"}}}"#,
            "RFC 3339",
        ),
        (
            r#"{"version": 1, "servers": {"x": {"state": "deployed", "tools": {"t": {"approved": "md5:1"}}}}}"#,
            "not a fingerprint",
        ),
        (
            r#"{"version": 1, "servers": {"x": {"state": "deployed", "owner": "y"}}}"#,
            "unknown field",
        ),
    ] {
        let ps = problems(&[("registry.json", bad)]);
        assert!(
            ps.iter()
                .any(|p| p.starts_with("registry.json") && p.contains(needle)),
            "{bad}: {ps:?}"
        );
    }
    // The bundle says crm is the org's: a tenant's entry for it (one a
    // tenant registered before the org used the name) gates nothing of the
    // org's server. The org took the name back.
    let b = load(&[(
        "registry.json",
        r#"{"version": 1, "servers": {"CRM": {"tenant": "finance", "state": "retired", "since": "2026-11-01T00:00:00Z"}}}"#,
    )])
    .expect("loads");
    assert!(b
        .tenants
        .registry
        .as_ref()
        .expect("registry")
        .servers
        .is_empty());
    let ps = problems(&[
        ("tenants/finance/tenant.yaml", FIN),
        (
            "registry.json",
            r#"{"version": 1, "servers": {"ledger": {"tenant": "hr", "state": "deployed"}}}"#,
        ),
    ]);
    assert!(
        ps.iter().any(|p| p.contains("tenant `finance`'s")),
        "{ps:?}"
    );
}

/// `.manifest`'s `withheld_layers` names tenants whose layer the agent
/// left out: read into `tenants.withheld`; anything else is refused.
#[test]
fn withheld_layers_are_read_from_the_manifest() {
    let b = load(&[(
        ".manifest",
        r#"{"revision": "r1", "withheld_layers": {"finance": "tenants/finance/tenant.yaml: outside the grant"}}"#,
    )])
    .expect("loads");
    assert_eq!(
        b.tenants.withheld.get("finance").map(String::as_str),
        Some("tenants/finance/tenant.yaml: outside the grant")
    );
    assert!(!b.tenants.is_empty());
    // A tenant the org no longer grants may be withheld (its grant removed).
    let b = load(&[(
        ".manifest",
        r#"{"withheld_layers": {"sales": "not granted"}}"#,
    )])
    .expect("loads");
    assert!(b.tenants.withheld.contains_key("sales"));
    for (manifest, why) in [
        (r#"{"withheld_layers": ["finance"]}"#, "must be an object"),
        (
            r#"{"withheld_layers": {"Finance": "x"}}"#,
            "not a tenant name",
        ),
        (
            r#"{"withheld_layers": {"fin ance": "x"}}"#,
            "not a tenant name",
        ),
        (r#"{"withheld_layers": {"finance": 1}}"#, "must be a string"),
        (
            r#"{"withheld_layers": {"default": "x"}}"#,
            "no tenant to grant",
        ),
    ] {
        let e = load(&[(".manifest", manifest)])
            .map(|_| ())
            .expect_err(manifest);
        assert!(e.to_string().contains(why), "{manifest}: {e}");
    }
    let e = load(&[
        ("tenants/finance/tenant.yaml", FIN),
        (".manifest", r#"{"withheld_layers": {"finance": "x"}}"#),
    ])
    .map(|_| ())
    .expect_err("served and withheld");
    assert!(e.to_string().contains("cannot be withheld too"), "{e}");
}
