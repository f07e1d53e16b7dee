use super::*;
use crate::archive::Files;

const ORG: &str = r#"
version: 1
service_groups:
  - name: g
    servers:
      - {name: crm, upstreams: ["127.0.0.1:9000"]}
routes:
  - {prefix: /crm, server: crm}
  - {prefix: /finance/reports, server: crm}
identity:
  resource: https://gw.example/
  api_keys:
    - {id: alice, tenant: acme, hash: "sha256:0011223344556677:0000000000000000000000000000000000000000000000000000000000000000"}
catalog:
  crm:
    default_risk: MEDIUM
    tools:
      wire: {risk: HIGH}
tenants:
  finance:
    path_prefixes: ["/finance/"]
    hosts: ["ledger.example"]
    upstreams: ["10.20.0.0/16", "127.0.0.1:9100"]
  hr:
    path_prefixes: ["/hr/"]
"#;

const HASH: &str =
    "sha256:0011223344556677:1111111111111111111111111111111111111111111111111111111111111111";

fn org() -> Config {
    let mut p = Problems::new("warden.yaml");
    let raw = crate::parse_config(ORG, &mut p).expect("parses");
    let c = Config::from_raw(&raw, Path::new("."), &mut p);
    assert!(p.is_empty(), "{:?}", p.into_vec());
    c
}

fn files(yaml: &str) -> Files {
    let mut f = Files::new();
    f.insert(LAYER_FILE.into(), yaml.as_bytes().to_vec());
    f
}

const BASE: &str = "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"10.20.0.5:8080\"]}\nroutes:\n  - {path_prefix: /finance/ledger, server: ledger}\n";

fn check(dir: &str, f: &Files) -> Result<TenantLayer, Vec<Problem>> {
    check_with(dir, f, &[])
}

fn check_with(dir: &str, f: &Files, others: &[&TenantLayer]) -> Result<TenantLayer, Vec<Problem>> {
    super::layer(&org(), others, dir, f)
}

/// The refusal names `needle` (the rule) in the layer's file.
fn refused(dir: &str, f: &Files, needle: &str) {
    let ps = check(dir, f).expect_err("refused");
    assert!(
        ps.iter()
            .any(|p| p.file.starts_with(&format!("tenants/{dir}/"))
                && format!("{}: {}", p.path, p.message).contains(needle)),
        "no problem mentions `{needle}`: {ps:?}"
    );
}

#[test]
fn a_layer_inside_its_grant_is_accepted() {
    let l = check("finance", &files(BASE)).expect("accepted");
    assert_eq!(l.tenant, "finance");
    assert_eq!(l.servers[0].name, "ledger");
    assert_eq!(l.routes[0].prefix, "/finance/ledger");
    assert!(l.revision.starts_with("sha256:"));
}

#[test]
fn tenant_names_and_grants() {
    refused(
        "legal",
        &files(&BASE.replace("finance", "legal")),
        "not granted",
    );
    // The directory is in canonical form; `tenant:` compares canonically.
    refused("Finance", &files(BASE), "not a tenant name");
    assert!(check(
        "finance",
        &files(&BASE.replace("tenant: finance", "tenant: FINANCE"))
    )
    .is_ok());
    assert!(check(
        "finance",
        &files(&BASE.replace("tenant: finance", "tenant: \"\u{FB01}nance\""))
    )
    .is_ok());
    refused(
        "finance",
        &files(&BASE.replace("tenant: finance", "tenant: hr")),
        "tenant",
    );
    refused(
        "finance",
        &files(&BASE.replace("tenant: finance", "tenant: \"fin\u{200b}ance\"")),
        "not the tenant",
    );
    for bad in [
        "", "fin-ance", "1fin", "fin.ance", "finance/", "ﬁnance", "default",
    ] {
        assert!(valid_tenant_name(bad).is_err(), "{bad}");
    }
    refused(
        "finance",
        &files(&format!("{BASE}bogus: 1\n")),
        "unknown field",
    );
}

#[test]
fn server_rules() {
    refused(
        "finance",
        &files(
            &BASE
                .replace("name: ledger", "name: crm")
                .replace("server: ledger", "server: crm"),
        ),
        "already the org's",
    );
    for (field, yaml) in [
        ("stdio", "stdio: {command: /bin/true}"),
        ("credentials", "credentials: {header: x, value: {env: X}}"),
        ("caller_token", "caller_token: {audience: x}"),
    ] {
        let y = BASE.replace(
            "upstreams: [\"10.20.0.5:8080\"]}",
            &format!("upstreams: [\"10.20.0.5:8080\"], {yaml}}}"),
        );
        let ps = check("finance", &files(&y)).expect_err(field);
        assert!(
            ps.iter()
                .any(|p| p.path.contains(field) || p.message.contains(field)),
            "{field}: {ps:?}"
        );
    }
    refused(
        "finance",
        &files(&BASE.replace("10.20.0.5:8080", "10.30.0.5:8080")),
        "outside the tenant's grant",
    );
    // An exact ip:port of the grant is inside it.
    assert!(check(
        "finance",
        &files(&BASE.replace("10.20.0.5:8080", "127.0.0.1:9100"))
    )
    .is_ok());
    refused(
        "finance",
        &files(&BASE.replace("10.20.0.5:8080", "127.0.0.1:9101")),
        "outside the tenant's grant",
    );
    // Another tenant's server name.
    let fin = check("finance", &files(BASE)).expect("finance");
    let hr = BASE
        .replace("tenant: finance", "tenant: hr")
        .replace("/finance/ledger", "/hr/ledger");
    let ps = check_with("hr", &files(&hr), &[&fin]).expect_err("taken");
    assert!(
        ps.iter()
            .any(|p| p.message.contains("already tenant `finance`'s")),
        "{ps:?}"
    );
}

#[test]
fn routes_stay_inside_the_grant() {
    let route = |r: &str| files(&BASE.replace("{path_prefix: /finance/ledger, server: ledger}", r));
    for bad in [
        "{path_prefix: /hr/x, server: ledger}",
        "{path_prefix: /financex, server: ledger}",
        "{path_prefix: /Finance/x, server: ledger}",
        "{path_prefix: /, server: ledger}",
        "{host: other.example, server: ledger}",
        "{path_prefix: /crm/x, server: ledger}",
    ] {
        refused("finance", &route(bad), "outside the tenant's grant");
    }
    for malformed in [
        "{path_prefix: /finance/../hr, server: ledger}",
        "{path_prefix: /finance/%2e%2e/hr, server: ledger}",
        "{path_prefix: /finance/x/, server: ledger}",
        "{path_prefix: //finance/x, server: ledger}",
        "{path_prefix: finance/x, server: ledger}",
    ] {
        refused("finance", &route(malformed), "must start with");
    }
    // A host route for a granted host, any path; case and a trailing dot do not matter.
    assert!(check("finance", &route("{host: Ledger.Example., server: ledger}")).is_ok());
    // Exactly the granted prefix.
    assert!(check("finance", &route("{path_prefix: /finance, server: ledger}")).is_ok());
    // A route to a server not of this layer (the org's).
    refused(
        "finance",
        &route("{path_prefix: /finance/c, server: crm}"),
        "not a server of this layer",
    );
    // Under an org route inside the grant: it would take the org's requests.
    refused(
        "finance",
        &route("{path_prefix: /finance/reports/x, server: ledger}"),
        "org's route",
    );
    refused(
        "finance",
        &route("{path_prefix: /finance/reports, server: ledger}"),
        "org's route",
    );
    assert!(grant_covers_route(
        &Grant {
            path_prefixes: vec!["/finance".into()],
            ..Grant::default()
        },
        None,
        "/finance/a"
    ));
    assert!(!grant_covers_route(
        &Grant {
            path_prefixes: vec!["/finance".into()],
            ..Grant::default()
        },
        None,
        "/financex"
    ));
}

#[test]
fn catalog_only_narrows() {
    let cat = |c: &str| files(&format!("{BASE}catalog:\n{c}"));
    assert!(check(
        "finance",
        &cat("  ledger:\n    tools:\n      post: {risk: HIGH}\n")
    )
    .is_ok());
    refused(
        "finance",
        &cat("  crm:\n    tools:\n      x: {risk: HIGH}\n"),
        "not a server of this layer",
    );
    refused(
        "finance",
        &cat("  ledger:\n    egress_allow: [\"*.example\"]\n"),
        "egress_allow",
    );
    refused(
        "finance",
        &cat("  ledger:\n    tools:\n      post: {egress_allow: [\"x.example\"]}\n"),
        "egress_allow",
    );
    // Below the org's default (MEDIUM) for a server its catalog does not list.
    refused(
        "finance",
        &cat("  ledger:\n    tools:\n      post: {risk: LOW}\n"),
        "lower than the org",
    );
    refused(
        "finance",
        &cat("  ledger:\n    default_risk: LOW\n"),
        "lower than the org",
    );
}

#[test]
fn principals_of_the_tenant_only() {
    let key = |tenant: &str, id: &str| {
        files(&format!("{BASE}identity:\n  api_keys:\n    - {{id: {id}, tenant: \"{tenant}\", hash: \"{HASH}\"}}\n"))
    };
    let l = check("finance", &key("FINANCE", "bot")).expect("canonical tenant");
    assert_eq!(l.api_keys[0].principal.tenant, "finance");
    refused("finance", &key("hr", "bot"), "not this layer's tenant");
    refused("finance", &key("acme", "bot"), "not this layer's tenant");
    refused(
        "finance",
        &key("fin\u{200b}ance", "bot"),
        "not this layer's tenant",
    );
    // Another tenant's principal spelled otherwise is still theirs.
    let hr_layer = check("hr", &files(&format!(
        "version: 1\ntenant: hr\nidentity:\n  api_keys:\n    - {{id: bot, tenant: hr, hash: \"{}\"}}\n",
        HASH.replace(":1111", ":3333")
    ))).expect("hr");
    assert!(check_with("finance", &key("finance", "bot"), &[&hr_layer]).is_ok());
    // Its key's hash is hr's own: the same secret cannot be finance's too.
    let same = check("hr", &files(&format!(
        "version: 1\ntenant: hr\nidentity:\n  api_keys:\n    - {{id: bot, tenant: hr, hash: \"{HASH}\"}}\n"
    ))).expect("hr");
    let ps = check_with("finance", &key("finance", "bot"), &[&same]).expect_err("same hash");
    assert!(says(&ps, "identity.api_keys", "tenant `hr`"), "{ps:?}");
}

#[test]
fn quotas_count_the_layer_only() {
    let q = |body: &str| {
        files(&format!(
            "{BASE}quotas:\n  - {{name: q, per: [principal], limit: 5, window: 1m{body}}}\n"
        ))
    };
    let l = check("finance", &q("")).expect("ok");
    assert_eq!(l.quotas[0].name, "finance/q");
    refused("finance", &q(", tenants: [hr]"), "another tenant");
    refused(
        "finance",
        &q(", servers: [crm]"),
        "not a server of this layer",
    );
    refused("finance", &q(", groups: [g]"), "org-only");
    assert!(check("finance", &q(", tenants: [Finance], servers: [ledger]")).is_ok());
}

#[test]
fn dlp_egress_and_approvals_are_read() {
    let l = check("finance", &files(&format!(
        "{BASE}dlp:\n  rules:\n    - {{name: no-iban, detectors: [iban], action: block, direction: response}}\negress:\n  allow: [\"*.bank.example\"]\napprovals:\n  require: {{HIGH: 2}}\napprovers:\n  frank: {{token_sha256: x, principals: [finance/frank]}}\n"
    ))).expect("ok");
    assert_eq!(l.dlp.as_ref().map(|d| d.rules.len()), Some(1));
    assert_eq!(l.egress_allow.as_ref().map(Vec::len), Some(1));
    assert_eq!(l.approvals[crate::risk::Risk::High as usize], 2);
    refused(
        "finance",
        &files(&format!("{BASE}approvals:\n  require: {{HUGE: 1}}\n")),
        "approvals.require",
    );
}

fn with_rego(text: &str) -> Files {
    let mut f = files(BASE);
    f.insert("policy.rego".into(), text.as_bytes().to_vec());
    f
}

#[test]
fn rego_stays_in_the_tenant_package() {
    let ok = "package warden.tenants.finance\n\ndecision := {\"allow\": true}\n";
    let l = check("finance", &with_rego(ok)).expect("ok");
    assert!(l.policies.contains_key("tenants/finance/policy.rego"));
    // Below the tenant's package; bracket spelling; comments before it.
    let mut two = with_rego(ok);
    two.insert(
        "rules.rego".into(),
        b"package warden.tenants.finance.rules\nx := 1\n".to_vec(),
    );
    two.insert(
        "more.rego".into(),
        b"# package warden.tenants.hr\npackage warden.tenants[\"finance\"].x\ny := 1\n".to_vec(),
    );
    assert!(check("finance", &two).is_ok());
    // Modules that define no decision compile to nothing: refused.
    let ps = check(
        "finance",
        &with_rego("package warden.tenants.finance.rules\nx := 1\n"),
    )
    .expect_err("no decision");
    assert!(
        ps.iter().any(|p| p.message.contains("does not compile")),
        "{ps:?}"
    );
    for bad in [
        "package warden.tenants.financex\ndecision := {\"allow\": true}\n",
        "package warden.tenants\ndecision := {\"allow\": true}\n",
        "package warden.tenants.hr\ndecision := {\"allow\": true}\n",
        "package warden.authz\ndecision := {\"allow\": true}\n",
        "package warden.tenants[\"hr\"].finance\nx := 1\n",
        "package finance\ndecision := {\"allow\": true}\n",
    ] {
        let ps = check("finance", &with_rego(bad)).expect_err(bad);
        assert!(
            ps.iter().any(|p| p.file == "tenants/finance/policy.rego"
                && p.message.contains("outside the tenant's")),
            "{bad}: {ps:?}"
        );
    }
    let ps = check(
        "finance",
        &with_rego("package warden.tenants.finance\ndecision := {"),
    )
    .expect_err("syntax");
    assert!(
        ps.iter().any(|p| p.message.contains("invalid Rego")),
        "{ps:?}"
    );
    // It compiles apart: an org rule it imports is simply not there (undefined, not a widening).
    assert!(check("finance", &with_rego(
        "package warden.tenants.finance\nimport data.warden.authz\ndecision := {\"allow\": authz.decision.allow}\n"
    )).is_ok());
}

#[test]
fn layer_meta_digest_must_match() {
    let mut f = files(BASE);
    let digest = crate::archive::layer_digest(&f);
    let meta = |d: &str| format!(r#"{{"tenant": "finance", "revision": "r7", "digest": "{d}"}}"#);
    f.insert(LAYER_META_FILE.into(), meta(&digest).into_bytes());
    let l = check("finance", &f).expect("ok");
    assert_eq!(l.revision, "r7");
    assert_eq!(l.label(), "finance@r7");
    f.insert(LAYER_META_FILE.into(), meta(&"0".repeat(64)).into_bytes());
    refused("finance", &f, "does not match");
    // The digest covers every file but .layer.json.
    let mut g = files(BASE);
    g.insert(
        "x.rego".into(),
        b"package warden.tenants.finance\n".to_vec(),
    );
    assert_ne!(crate::archive::layer_digest(&g), digest);
}

#[test]
fn layer_signatures() {
    // Ed25519 test key.
    let private = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJL4wWCTcbhQT/5IX5tPsWrKdIBoQzVaQcyzCund/WdU\n-----END PRIVATE KEY-----\n";
    let public = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAk+eZta8zXsquyhrg8M8TtTYHVwNV5JVrKD7eP5NRBvc=\n-----END PUBLIC KEY-----\n";
    let alg = jsonwebtoken::Algorithm::EdDSA;
    let sig = crate::archive::sign_layer("abc", private, alg, "k1").expect("signs");
    let v = crate::archive::Verifier::new(public, alg).expect("key");
    v.verify_layer(&sig, "abc").expect("verifies");
    assert!(v.verify_layer(&sig, "abd").is_err());
    assert!(sig.contains(".."), "detached payload");
    // A bundle's layer must carry a matching, signed .layer.json.
    let mut bundle = Files::new();
    bundle.insert("warden.yaml".into(), b"version: 1\n".to_vec());
    bundle.insert(
        "tenants/finance/tenant.yaml".into(),
        BASE.as_bytes().to_vec(),
    );
    let layer = crate::archive::layers(&bundle)
        .remove("finance")
        .expect("layer");
    let digest = crate::archive::layer_digest(&layer);
    assert!(v.verify_layers(&bundle).is_err(), "unsigned layer");
    let meta = |sig: &str| {
        format!(r#"{{"tenant":"finance","revision":"1","digest":"{digest}","signature":"{sig}"}}"#)
    };
    let good = crate::archive::sign_layer(&digest, private, alg, "k1").expect("signs");
    bundle.insert(
        "tenants/finance/.layer.json".into(),
        meta(&good).into_bytes(),
    );
    v.verify_layers(&bundle).expect("signed layer");
    let other = crate::archive::sign_layer(&"0".repeat(64), private, alg, "k1").expect("signs");
    bundle.insert(
        "tenants/finance/.layer.json".into(),
        meta(&other).into_bytes(),
    );
    assert!(
        v.verify_layers(&bundle).is_err(),
        "signature over another digest"
    );
    bundle.insert(
        "tenants/finance/.layer.json".into(),
        meta(&good).into_bytes(),
    );
    bundle.insert(
        "tenants/finance/extra.rego".into(),
        b"package warden.tenants.finance\n".to_vec(),
    );
    assert!(
        v.verify_layers(&bundle).is_err(),
        "a file added after signing"
    );
}

/// The org of these tests with `yaml` appended (or replacing a part of
/// it), and the problems its own `warden.yaml` has.
fn org_from(yaml: &str) -> (Config, Vec<Problem>) {
    let mut p = Problems::new("warden.yaml");
    let raw = crate::parse_config(yaml, &mut p).expect("parses");
    let c = Config::from_raw(&raw, Path::new("."), &mut p);
    (c, p.into_vec())
}

/// The layer checked against `org` (which has no problems of its own).
fn check_in(org: &str, dir: &str, f: &Files) -> Result<TenantLayer, Vec<Problem>> {
    let (c, ps) = org_from(org);
    assert!(ps.is_empty(), "{ps:?}");
    super::layer(&c, &[], dir, f)
}

fn says(ps: &[Problem], path: &str, needle: &str) -> bool {
    ps.iter()
        .any(|p| p.path == path && p.message.contains(needle))
}

#[test]
fn routes_under_the_gateways_own_prefix_are_refused_in_every_spelling() {
    // A host route for the granted host: inside the grant, and on that
    // host it would win over a virtual server's member leg of the same
    // length.
    let route = |r: &str| files(&BASE.replace("{path_prefix: /finance/ledger, server: ledger}", r));
    for own in [
        "/.warden/virtual/ws/docs",
        "/.warden",
        "/.WARDEN/virtual/ws/docs",
        "/.warden./virtual",
        "\"/.warden\\\\virtual\"",
        "/.warden;x/virtual",
    ] {
        let ps = check(
            "finance",
            &route(&format!(
                "{{host: ledger.example, path_prefix: {own}, server: ledger}}"
            )),
        )
        .expect_err(own);
        assert!(
            says(&ps, "routes[0].path_prefix", "gateway's own"),
            "{own}: {ps:?}"
        );
    }
    // And a grant of everything does not reach it.
    let org = ORG.replace(
        "  hr:\n    path_prefixes: [\"/hr/\"]\n",
        "  hr:\n    path_prefixes: [\"/\"]\n",
    );
    let ps = check_in(
        &org,
        "hr",
        &files("version: 1\ntenant: hr\nroutes:\n  - {path_prefix: /.Warden/virtual/ws/docs, server: x}\n"),
    )
    .expect_err("own");
    assert!(
        says(&ps, "routes[0].path_prefix", "gateway's own"),
        "{ps:?}"
    );
    // Nor can the org grant it, nor route there itself in another case.
    let (_, ps) = org_from(&ORG.replace("[\"/hr/\"]", "[\"/.warden/\"]"));
    assert!(
        says(&ps, "tenants.hr.path_prefixes[0]", "gateway's own"),
        "{ps:?}"
    );
    let (_, ps) = org_from(&ORG.replace(
        "{prefix: /crm, server: crm}",
        "{prefix: /.WARDEN/virtual, server: crm}",
    ));
    assert!(says(&ps, "routes[0].prefix", "gateway's own"), "{ps:?}");
}

#[test]
fn names_the_org_has_compare_as_the_registry_compares_them() {
    let named = |name: &str| {
        files(
            &BASE
                .replace("name: ledger", &format!("name: {name}"))
                .replace("server: ledger", &format!("server: {name}")),
        )
    };
    for taken in ["CRM", "Crm", "crm"] {
        let ps = check("finance", &named(taken)).expect_err(taken);
        assert!(
            says(&ps, "servers[0].name", "already the org's (`crm`"),
            "{taken}: {ps:?}"
        );
    }
    // Another tenant's, in another case.
    let (c, _) = org_from(&ORG.replace("  hr:\n", "  hr:\n    upstreams: [\"10.30.0.0/16\"]\n"));
    let fin = super::layer(&c, &[], "finance", &files(BASE)).expect("finance");
    let hr = BASE
        .replace("tenant: finance", "tenant: hr")
        .replace("/finance/ledger", "/hr/ledger")
        .replace("name: ledger", "name: LEDGER")
        .replace("server: ledger", "server: LEDGER")
        .replace("10.20.0.5", "10.30.0.5");
    let ps = super::layer(&c, &[&fin], "hr", &files(&hr)).expect_err("finance's");
    assert!(
        says(&ps, "servers[0].name", "already tenant `finance`'s"),
        "{ps:?}"
    );
    // Two of the layer's own.
    let two = format!(
        "{BASE}  - {{path_prefix: /finance/ledger2, server: Ledger}}\n"
    )
    .replace(
        "servers:\n  - {name: ledger, upstreams: [\"10.20.0.5:8080\"]}\n",
        "servers:\n  - {name: ledger, upstreams: [\"10.20.0.5:8080\"]}\n  - {name: Ledger, upstreams: [\"10.20.0.6:8080\"]}\n",
    );
    let ps = check("finance", &files(&two)).expect_err("twice");
    assert!(
        says(&ps, "servers[1].name", "`servers[0]` (`ledger`)"),
        "{ps:?}"
    );
    // An org host route's host, as the router reads it: `Ledger.Example.`
    // is `ledger.example`, whose requests the layer may not take.
    let org = ORG.replace(
        "  - {prefix: /crm, server: crm}\n",
        "  - {prefix: /crm, server: crm}\n  - {prefix: /books, host: Ledger.Example., server: crm}\n",
    );
    let ps = check_in(
        &org,
        "finance",
        &files(&BASE.replace(
            "{path_prefix: /finance/ledger, server: ledger}",
            "{host: ledger.example, path_prefix: /books/x, server: ledger}",
        )),
    )
    .expect_err("the org's host route");
    assert!(
        says(&ps, "routes[0].path_prefix", "org's route `/books`"),
        "{ps:?}"
    );
}

/// The test org with its finance grant reaching any address, an admin
/// endpoint and a listener.
fn open_org() -> String {
    format!(
        "listeners:\n  - {{name: main, address: \"127.0.0.1:8080\"}}\nadmin: {{address: \"127.0.0.1:9090\"}}\n{}",
        ORG.replace(
            "    upstreams: [\"10.20.0.0/16\", \"127.0.0.1:9100\"]\n",
            "    upstreams: [\"0.0.0.0/0\", \"::/0\"]\n",
        )
    )
}

#[test]
fn a_layers_server_never_reaches_an_address_the_org_or_another_layer_serves() {
    let org = open_org();
    let at = |addr: &str| files(&BASE.replace("10.20.0.5:8080", addr));
    assert!(check_in(&org, "finance", &at("127.0.0.1:9001")).is_ok());
    // The org's `crm` lives at 127.0.0.1:9000: every way of writing this
    // host reaches it.
    for same in [
        "127.0.0.1:9000",
        "127.0.0.2:9000",
        "0.0.0.0:9000",
        "[::1]:9000",
        "[::]:9000",
        "[::ffff:127.0.0.1]:9000",
    ] {
        let ps = check_in(&org, "finance", &at(same)).expect_err(same);
        assert!(
            says(
                &ps,
                "servers[0].upstreams[0]",
                "already reaches the org's server `crm`"
            ),
            "{same}: {ps:?}"
        );
    }
    // This host's own interface addresses are this host too: a server
    // bound to every address answers there (found by session 56's review:
    // a tenant's `mirror` at eth0's address reached the org's `crm`).
    for ip in crate::host::own_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback())
    {
        let same = std::net::SocketAddr::new(ip, 9000).to_string();
        let ps = check_in(&org, "finance", &at(&same)).expect_err(&same);
        assert!(
            says(
                &ps,
                "servers[0].upstreams[0]",
                "already reaches the org's server `crm`"
            ),
            "{same}: {ps:?}"
        );
    }
    for (addr, whose) in [
        ("127.0.0.1:8080", "the gateway's listener `main`"),
        ("[::1]:9090", "the gateway's admin endpoint"),
    ] {
        let ps = check_in(&org, "finance", &at(addr)).expect_err(addr);
        assert!(
            says(&ps, "servers[0].upstreams[0]", whose),
            "{addr}: {ps:?}"
        );
    }
    // Another tenant's server's address, written otherwise.
    let (c, _) = org_from(&org.replace(
        "  hr:\n",
        "  hr:\n    upstreams: [\"0.0.0.0/0\", \"::/0\"]\n",
    ));
    let fin = super::layer(&c, &[], "finance", &files(BASE)).expect("finance");
    let hr = BASE
        .replace("tenant: finance", "tenant: hr")
        .replace("/finance/ledger", "/hr/books")
        .replace("name: ledger", "name: books")
        .replace("server: ledger", "server: books")
        .replace("10.20.0.5:8080", "[::ffff:10.20.0.5]:8080");
    let ps = super::layer(&c, &[&fin], "hr", &files(&hr)).expect_err("finance's");
    assert!(
        says(
            &ps,
            "servers[0].upstreams[0]",
            "tenant `finance`'s server `ledger`"
        ),
        "{ps:?}"
    );
}

#[test]
fn a_layer_has_servers_only_where_its_grant_names_upstreams() {
    // hr's grant names no upstreams: no servers, wherever they are.
    let hr = |yaml: &str| {
        files(
            &yaml
                .replace("tenant: finance", "tenant: hr")
                .replace("/finance/ledger", "/hr/ledger"),
        )
    };
    let ps = check("hr", &hr(BASE)).expect_err("no upstreams granted");
    assert!(
        says(
            &ps,
            "servers",
            "grants tenant `hr` no upstreams (`tenants.hr.upstreams`"
        ),
        "{ps:?}"
    );
    // Its other rules are its own to publish.
    assert!(check(
        "hr",
        &hr("version: 1\ntenant: finance\napprovals:\n  require: {HIGH: 1}\n")
    )
    .is_ok());
    assert!(!Grant::default().upstream_allowed("10.0.0.1:80".parse().expect("addr")));
}

/// The test org, its finance grant letting keys carry `sre`, `region` and
/// kind `user`.
fn granting_org() -> String {
    ORG.replace(
        "    upstreams: [\"10.20.0.0/16\", \"127.0.0.1:9100\"]\n",
        "    upstreams: [\"10.20.0.0/16\", \"127.0.0.1:9100\"]\n    roles: [sre]\n    attributes: [region]\n    kinds: [user]\n",
    )
}

fn key_with(fields: &str) -> Files {
    files(&format!(
        "{BASE}identity:\n  api_keys:\n    - {{id: bot, tenant: finance, hash: \"{HASH}\"{fields}}}\n"
    ))
}

#[test]
fn a_layers_keys_carry_only_the_roles_attributes_and_kind_the_org_grants() {
    // Without a word in the grant, a layer's key is a bare agent.
    let l = check("finance", &key_with("")).expect("a bare key");
    assert!(l.api_keys[0].principal.roles.is_empty());
    assert!(check("finance", &key_with(", kind: agent")).is_ok());
    for (fields, path, needle) in [
        (
            ", roles: [sre]",
            "identity.api_keys[0].roles[0]",
            "not a role the org grants tenant `finance`",
        ),
        (
            ", roles: [tester]",
            "identity.api_keys[0].roles[0]",
            "the org's alone",
        ),
        (
            ", attributes: {clearance: restricted}",
            "identity.api_keys[0].attributes.clearance",
            "the org's alone",
        ),
        (
            ", attributes: {region: eu}",
            "identity.api_keys[0].attributes.region",
            "not an attribute the org grants",
        ),
        (
            ", kind: user",
            "identity.api_keys[0].kind",
            "not a kind the org grants",
        ),
    ] {
        let ps = check("finance", &key_with(fields)).expect_err(fields);
        assert!(says(&ps, path, needle), "{fields}: {ps:?}");
    }
    // What the grant names, the layer's keys may carry; never what the
    // org keeps for itself, nor a role merely spelled like a granted one.
    let org = granting_org();
    let l = check_in(
        &org,
        "finance",
        &key_with(", roles: [sre], attributes: {region: eu}, kind: user"),
    )
    .expect("granted");
    assert_eq!(l.api_keys[0].principal.roles, ["sre"]);
    for (fields, path, needle) in [
        (
            ", roles: [SRE]",
            "identity.api_keys[0].roles[0]",
            "not a role the org grants",
        ),
        (
            ", roles: [sre, Tester]",
            "identity.api_keys[0].roles[1]",
            "the org's alone",
        ),
        (
            ", attributes: {region: eu, iss: \"https://auth.example\"}",
            "identity.api_keys[0].attributes.iss",
            "the org's alone",
        ),
        (
            ", attributes: {client_id: x}",
            "identity.api_keys[0].attributes.client_id",
            "the org's alone",
        ),
        (
            ", attributes: {clearance: restricted}",
            "identity.api_keys[0].attributes.clearance",
            "the org's alone",
        ),
    ] {
        let ps = check_in(&org, "finance", &key_with(fields)).expect_err(fields);
        assert!(says(&ps, path, needle), "{fields}: {ps:?}");
    }
    // Nor can the org's grant hand them out.
    let (_, ps) = org_from(&ORG.replace(
        "  hr:\n",
        "  hr:\n    roles: [tester]\n    attributes: [Clearance, iss]\n    kinds: [robot]\n",
    ));
    assert!(
        says(&ps, "tenants.hr.roles[0]", "the org's alone"),
        "{ps:?}"
    );
    assert!(
        says(&ps, "tenants.hr.attributes[0]", "the org's alone"),
        "{ps:?}"
    );
    assert!(
        says(&ps, "tenants.hr.attributes[1]", "the org's alone"),
        "{ps:?}"
    );
    assert!(
        says(&ps, "tenants.hr.kinds[0]", "not a principal kind"),
        "{ps:?}"
    );
    assert!(ps.iter().all(|p| p.file == "warden.yaml"), "{ps:?}");
}

#[test]
fn a_layers_keys_are_marked_as_the_layers_and_take_no_name_twice() {
    let l = check("finance", &key_with("")).expect("a key");
    // The gateway keeps them apart from the org's and a token's subjects.
    assert_eq!(l.api_keys[0].layer.as_deref(), Some("finance"));
    assert_eq!(org().identity.expect("identity").api_keys[0].layer, None);
    // The org's principal in another spelling is the org's.
    let ps = check(
        "finance",
        &files(&format!(
            "{BASE}identity:\n  api_keys:\n    - {{id: ALICE, tenant: acme, hash: \"{HASH}\"}}\n"
        )),
    )
    .expect_err("the org's");
    assert!(
        says(
            &ps,
            "identity.api_keys[0].id",
            "already a principal (the org's)"
        ),
        "{ps:?}"
    );
    // One person, one key of the layer: `bot` and `BOT` are one owner.
    let ps = check(
        "finance",
        &files(&format!(
            "{BASE}identity:\n  api_keys:\n    - {{id: bot, tenant: finance, hash: \"{HASH}\"}}\n    - {{id: BOT, tenant: finance, hash: \"{HASH}\"}}\n"
        )),
    )
    .expect_err("twice");
    assert!(
        says(&ps, "identity.api_keys[1].id", "identity.api_keys[0]"),
        "{ps:?}"
    );
    // A key whose hash is refused does not move the next key's problem
    // onto another key's path.
    let ps = check(
        "finance",
        &files(&format!(
            "{BASE}identity:\n  api_keys:\n    - {{id: x, tenant: finance, hash: \"md5:1\"}}\n    - {{id: alice, tenant: acme, hash: \"{HASH}\"}}\n"
        )),
    )
    .expect_err("refused");
    assert!(
        says(&ps, "identity.api_keys[1].id", "already a principal"),
        "{ps:?}"
    );
}

#[test]
fn a_layers_rego_may_not_allocate_by_what_a_request_says() {
    // A request's number or string could make these ask for terabytes; the
    // allocation failing aborts the gateway for every tenant.
    for (call, needle) in [
        (
            "count(numbers.range(0, input.request.arguments.n)) >= 0",
            "numbers.range",
        ),
        (
            "count(net.cidr_expand(input.request.arguments.c)) >= 0",
            "net.cidr_expand",
        ),
        (
            "sprintf(input.request.arguments.f, [1]) != \"\"",
            "must be written as a literal",
        ),
        ("sprintf(\"%099999999d\", [1]) != \"\"", "above 999"),
        (
            "concat(input.request.arguments.s, [\"a\", \"b\"]) != \"\"",
            "must be written as a literal",
        ),
    ] {
        let text = format!(
            "package warden.tenants.finance\nimport rego.v1\ndecision := {{\"allow\": true}} if {{ {call} }}\n"
        );
        refused("finance", &with_rego(&text), needle);
    }
}

/// The org's `/` is a catch-all only for every host or a host the grant
/// names: an org site at `ops.example/` keeps its paths, whatever path the
/// grant names elsewhere.
#[test]
fn an_org_site_at_the_root_of_a_host_is_no_catch_all() {
    let with_root = |route: &str| {
        ORG.replace(
            "  - {prefix: /crm, server: crm}\n",
            &format!("  - {{prefix: /crm, server: crm}}\n  - {route}\n"),
        )
    };
    let layer = |r: &str| files(&BASE.replace("{path_prefix: /finance/ledger, server: ledger}", r));
    let site = with_root("{host: ops.example, prefix: /, server: crm}");
    for r in [
        "{host: ops.example, path_prefix: /finance/x, server: ledger}",
        "{host: OPS.example., path_prefix: /finance/x, server: ledger}",
        "{path_prefix: /finance/x, server: ledger}",
    ] {
        let ps = check_in(&site, "finance", &layer(r)).expect_err(r);
        assert!(
            says(&ps, "routes[0].path_prefix", "org's route `/`"),
            "{r}: {ps:?}"
        );
    }
    // The org's catch-all for every host, and one for a host the grant names.
    for root in [
        "{prefix: /, server: crm}",
        "{host: ledger.example, prefix: /, server: crm}",
    ] {
        for r in [
            "{path_prefix: /finance/x, server: ledger}",
            "{host: ledger.example, path_prefix: /finance/x, server: ledger}",
        ] {
            assert!(
                check_in(&with_root(root), "finance", &layer(r)).is_ok(),
                "{root} {r}"
            );
        }
    }
}

/// A layer key with the hash of another key (the org's, or its own
/// other key's) is refused: the secret would sign in as the layer's
/// principal.
#[test]
fn a_layer_key_never_takes_another_keys_hash() {
    let org_hash =
        "sha256:0011223344556677:0000000000000000000000000000000000000000000000000000000000000000";
    let keys = |a: &str, b: &str| {
        files(&format!(
            "{BASE}identity:\n  api_keys:\n    - {{id: x, tenant: finance, hash: \"{a}\"}}\n    - {{id: y, tenant: finance, hash: \"{b}\"}}\n"
        ))
    };
    let other =
        "sha256:0011223344556677:2222222222222222222222222222222222222222222222222222222222222222";
    for (a, b, whose) in [
        (org_hash, other, "an org key's"),
        (other, other, "another key's of this layer"),
    ] {
        let ps = check("finance", &keys(a, b)).expect_err(whose);
        assert!(says(&ps, "identity.api_keys", whose), "{ps:?}");
    }
}

/// A layer's quota counts in a counter of its own: the same definition in
/// two layers (or the org's) is two counters.
#[test]
fn a_layers_quota_is_its_own_counter() {
    let q = "quotas:\n  - {name: budget, limit: 1000, window: 1h}\n";
    let fin = check("finance", &files(&format!("{BASE}{q}"))).expect("finance");
    let hr_base = BASE
        .replace("tenant: finance", "tenant: hr")
        .replace("/finance/ledger", "/hr/ledger")
        .replace("10.20.0.5:8080", "10.30.0.5:8080");
    let org = ORG.replace(
        "    path_prefixes: [\"/hr/\"]\n",
        "    path_prefixes: [\"/hr/\"]\n    upstreams: [\"10.30.0.0/16\"]\n",
    );
    let hr = check_in(&org, "hr", &files(&format!("{hr_base}{q}"))).expect("hr");
    let org_q = crate::guards::quotas(
        &[
            serde_yaml_ng::from_str::<raw::QuotaConfig>("{name: budget, limit: 1000, window: 1h}")
                .expect("q"),
        ],
        false,
        &mut Problems::new("warden.yaml"),
    );
    let defs = [
        fin.quotas[0].definition,
        hr.quotas[0].definition,
        org_q[0].definition,
    ];
    assert!(defs[0] != defs[1] && defs[0] != defs[2] && defs[1] != defs[2]);
}

/// A layer prices no call: a price spends the org's money budgets
/// (`per: organisation`, a budget over every tenant), so a layer pricing its
/// own tools high (or per unit its own server reports, charged whatever the
/// limit) would exhaust them and have every other tenant's calls refused;
/// in another currency, it would be added to them as the org's.
#[test]
fn a_layer_sets_no_price() {
    refused(
        "finance",
        &files(&format!(
            "{BASE}catalog:\n  ledger:\n    price: {{currency: EUR, per_call: \"100000\"}}\n"
        )),
        "`price` is org-only",
    );
    refused(
        "finance",
        &files(&format!(
            "{BASE}catalog:\n  ledger:\n    tools:\n      search: {{price: {{currency: USD, per_call: \"0\", per_unit: {{pointer: /structuredContent/rows, price: \"1000\"}}}}}}\n"
        )),
        "`price` is org-only",
    );
}

/// A layer sets no cost (it counts against the org's weighted quotas) and
/// no timeout longer than the org's (the gateway's capacity is shared).
#[test]
fn a_layer_neither_prices_calls_nor_waits_longer_than_the_org() {
    refused(
        "finance",
        &files(&format!(
            "{BASE}catalog:\n  ledger:\n    tools:\n      search: {{cost: 4294967295}}\n"
        )),
        "`cost` is org-only",
    );
    refused(
        "finance",
        &files(&format!(
            "{BASE}catalog:\n  ledger:\n    tools:\n      search: {{cost: 1}}\n"
        )),
        "`cost` is org-only",
    );
    let with = |t: &str| {
        files(&BASE.replace(
            "{name: ledger, upstreams: [\"10.20.0.5:8080\"]}",
            &format!("{{name: ledger, upstreams: [\"10.20.0.5:8080\"], timeouts: {{{t}}}}}"),
        ))
    };
    for t in ["read: 30d", "stream_idle: 30d", "connect: 1h", "idle: 1d"] {
        refused("finance", &with(t), "longer than the org's");
    }
    assert!(check("finance", &with("read: 5s, connect: 1s")).is_ok());
}
