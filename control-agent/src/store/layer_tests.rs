//! Tenant layers in the store: publish, version, rollback, canary per
//! layer, composition with the org, isolation of a broken layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::rollout::{Selector, Stats};
use warden_config::archive::Files;

/// The org (its server `mock` at 127.0.0.1:9) grants finance and hr a path
/// prefix each and addresses of their own for their servers: finance
/// 127.0.0.1:2 (and :4, :5 for later revisions of its layer), hr
/// 127.0.0.1:3.
pub(crate) const ORG: &str = "version: 1\nservice_groups:\n  - name: tools\n    servers:\n      - name: mock\n        upstreams: [\"127.0.0.1:9\"]\nroutes:\n  - prefix: /mock\n    server: mock\ntenants:\n  finance: {path_prefixes: [/finance/], upstreams: [\"127.0.0.1:2\", \"127.0.0.1:4\", \"127.0.0.1:5\"]}\n  hr: {path_prefixes: [/hr/], upstreams: [\"127.0.0.1:3\"]}\n";

pub(crate) fn layer(tenant: &str, rego: &str) -> Files {
    let mut f = Files::new();
    f.insert(
        "tenant.yaml".into(),
        format!("version: 1\ntenant: {tenant}\n").into_bytes(),
    );
    f.insert(format!("{tenant}.rego"), rego.as_bytes().to_vec());
    f
}

pub(crate) fn rego(tenant: &str, body: &str) -> String {
    format!("package warden.tenants.{tenant}\n\n{body}\n")
}

/// A store with the org source published.
pub(crate) fn org_store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    let s = Store::open(&d.path().join("state"), &src, None).unwrap();
    s.publish_source("test", true).unwrap();
    (d, s)
}

fn served_files(p: &Published) -> Files {
    archive::unpack(&p.archive).unwrap()
}

fn changes(d: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.path().join("state").join(changes::FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_layer_is_published_versioned_and_rolled_back_on_its_own() {
    let (d, s) = org_store();
    let org_rev = s.current().unwrap();
    let org_digest = s.history().last().unwrap().source.clone();
    let v1 = layer("finance", &rego("finance", "decision := {\"allow\": true}"));
    let e1 = s
        .publish_layer("admin:fiona", "Finance", v1.clone(), None)
        .unwrap();
    assert!(e1.revision.starts_with("finance-r1-"), "{}", e1.revision);
    assert_eq!(e1.digest, archive::layer_digest(&v1));
    let hr = layer("hr", &rego("hr", "decision := {\"allow\": false}"));
    let h1 = s
        .publish_layer("admin:harry", "hr", hr.clone(), None)
        .unwrap();
    let p = s.current().unwrap();
    assert_ne!(p.revision, org_rev.revision);
    // The org's content is unchanged; the layers are carried beside it.
    let last = s.history().last().unwrap().clone();
    assert_eq!(last.source, org_digest);
    assert_eq!(last.layers["finance"], e1.revision);
    assert_eq!(last.layers["hr"], h1.revision);
    let f = served_files(&p);
    assert_eq!(f["tenants/finance/finance.rego"], v1["finance.rego"]);
    assert_eq!(f["tenants/hr/tenant.yaml"], hr["tenant.yaml"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&f["tenants/finance/.layer.json"]).unwrap();
    assert_eq!(meta["revision"], e1.revision.as_str());
    assert_eq!(meta["digest"], e1.digest.as_str());
    assert_eq!(meta["actor"], "admin:fiona");
    let manifest: serde_json::Value = serde_json::from_slice(&f[".manifest"]).unwrap();
    assert_eq!(manifest["layers"]["hr"], h1.revision.as_str());
    assert!(f.contains_key("registry.json"));

    let v2 = layer(
        "finance",
        &rego(
            "finance",
            "decision := {\"allow\": false, \"reason\": \"v2\"}",
        ),
    );
    let e2 = s
        .publish_layer("admin:fiona", "finance", v2.clone(), None)
        .unwrap();
    assert!(e2.revision.starts_with("finance-r2-"));
    let diff = s
        .layer_diff_view("finance", &e1.revision, &e2.revision)
        .unwrap();
    let files = &diff.files;
    assert_eq!(files.len(), 1, "{diff:?}");
    assert_eq!(files[0].file, "finance.rego");
    let text = &files[0].diff;
    assert!(
        text.contains("-decision := {\"allow\": true}") && text.contains("+decision"),
        "{text}"
    );

    // Rolling finance back leaves the org and hr as they are.
    let e3 = s
        .rollback_layer("admin:fiona", "finance", &e1.revision)
        .unwrap();
    assert!(e3.revision.starts_with("finance-r3-") && e3.digest == e1.digest);
    let f = served_files(&s.current().unwrap());
    assert_eq!(f["tenants/finance/finance.rego"], v1["finance.rego"]);
    assert_eq!(f["tenants/hr/tenant.yaml"], hr["tenant.yaml"]);
    assert_eq!(s.history().last().unwrap().source, org_digest);
    assert!(s
        .rollback_layer("admin:fiona", "finance", "hr-r1-x")
        .is_err());

    // An org publish keeps every tenant's current layer.
    std::fs::write(
        d.path().join("source").join("warden.yaml"),
        format!("{ORG}\n# changed\n"),
    )
    .unwrap();
    s.publish_source("test", false).unwrap().unwrap();
    let last = s.history().last().unwrap().clone();
    assert_ne!(last.source, org_digest);
    assert_eq!(last.layers["finance"], e3.revision);
    assert_eq!(last.layers["hr"], h1.revision);
    // And an org rollback too.
    s.rollback("admin", &org_rev.revision).unwrap();
    let last = s.history().last().unwrap().clone();
    assert_eq!(last.source, org_digest);
    assert_eq!(last.layers["finance"], e3.revision);

    // Everything survives a restart.
    let served = s.current().unwrap().revision.clone();
    drop(s);
    let s = Store::open(&d.path().join("state"), &d.path().join("source"), None).unwrap();
    let h = s.layer_history_view("finance");
    assert_eq!(h.current.as_deref(), Some(e3.revision.as_str()));
    assert_eq!(h.history.len(), 3);
    assert_eq!(s.current().unwrap().revision, served);
    s.kill("admin", "all", "", true).unwrap();
    assert_eq!(s.history().last().unwrap().layers["finance"], e3.revision);
    let recorded = changes(&d);
    assert!(recorded
        .iter()
        .any(|c| c["action"] == "layer.rollback" && c["actor"] == "admin:fiona"));
}

#[test]
fn a_layer_that_does_not_compose_is_refused_and_nothing_changes() {
    let (d, s) = org_store();
    let before = s.current().unwrap().revision.clone();
    let n = s.history().len();
    let bad = layer("finance", &rego("finance", "decision := {\"allow\": true"));
    let e = s
        .publish_layer("admin:fiona", "finance", bad, None)
        .unwrap_err();
    assert!(
        e.0.iter().any(|p| p.file.contains("tenants/finance/")),
        "{e}"
    );
    assert_eq!(s.current().unwrap().revision, before);
    assert_eq!(s.history().len(), n);
    assert!(s.layer_history_view("finance").history.is_empty());
    // Not a layer's files, or naming another tenant.
    let mut odd = layer("finance", &rego("finance", "x := 1"));
    odd.insert("warden.yaml".into(), b"version: 1\n".to_vec());
    assert!(s
        .publish_layer("admin:fiona", "finance", odd, None)
        .is_err());
    let other = layer("hr", &rego("hr", "x := 1"));
    let e = s
        .publish_layer("admin:fiona", "finance", other, None)
        .unwrap_err();
    assert!(e.to_string().contains("tenant:"), "{e}");
    assert!(s
        .publish_layer("x", "../etc", layer("x", "x"), None)
        .is_err());
    assert!(!d.path().join("state").join("etc").exists());
    let recorded = changes(&d);
    assert!(recorded
        .iter()
        .any(|c| c["action"] == "layer.publish" && c["ok"] == false));
}

pub(crate) const FIN_LEDGER: &str = "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:2\"]}\nroutes:\n  - {path_prefix: /finance/ledger, server: ledger}\n";

pub(crate) fn yaml_layer(yaml: &str) -> Files {
    Files::from([("tenant.yaml".to_owned(), yaml.as_bytes().to_vec())])
}

#[test]
fn a_layer_that_widens_is_refused() {
    let (_d, s) = org_store();
    for (why, yaml) in [
        ("route outside the grant", "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:2\"]}\nroutes:\n  - {path_prefix: /hr/ledger, server: ledger}\n"),
        ("the org's server", "version: 1\ntenant: finance\nservers:\n  - {name: mock, upstreams: [\"127.0.0.1:2\"]}\n"),
        ("a stdio server", "version: 1\ntenant: finance\nservers:\n  - {name: sh, stdio: {command: /bin/sh}}\n"),
    ] {
        let e = s.publish_layer("admin:fiona", "finance", yaml_layer(yaml), None);
        assert!(e.is_err(), "{why}");
    }
    // A tenant the org does not grant cannot publish.
    let legal = yaml_layer("version: 1\ntenant: legal\n");
    let e = s
        .publish_layer("admin:x", "legal", legal, None)
        .unwrap_err();
    assert!(e.to_string().contains("not granted"), "{e}");
    assert!(s.layer_history_view("finance").history.is_empty());
    s.publish_layer("admin:fiona", "finance", yaml_layer(FIN_LEDGER), None)
        .unwrap();
    // Hr cannot take finance's server name (at an address its grant
    // names: the name is what is refused).
    let hr = "version: 1\ntenant: hr\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:3\"]}\n";
    let e = s
        .publish_layer("admin:harry", "hr", yaml_layer(hr), None)
        .unwrap_err();
    assert!(e.to_string().contains("ledger"), "{e}");
    assert!(!e.to_string().contains("upstreams["), "{e}");
}

#[test]
fn a_layer_the_org_breaks_is_left_out_and_the_rest_served() {
    let (d, s) = org_store();
    let src = d.path().join("source");
    let e = s
        .publish_layer("admin:fiona", "finance", yaml_layer(FIN_LEDGER), None)
        .unwrap();
    let hr = s
        .publish_layer(
            "admin:harry",
            "hr",
            layer("hr", &rego("hr", "decision := {\"allow\": true}")),
            None,
        )
        .unwrap();
    assert_eq!(s.history().last().unwrap().layers.len(), 2);
    // The org moves finance's grant: its layer's route lies outside it.
    std::fs::write(
        src.join("warden.yaml"),
        ORG.replace("/finance/]", "/fin2/]"),
    )
    .unwrap();
    s.publish_source("test", false).unwrap().unwrap();
    let last = s.history().last().unwrap().clone();
    assert_eq!(last.layers.get("hr"), Some(&hr.revision));
    assert!(!last.layers.contains_key("finance"));
    assert!(
        last.left_out["finance"].contains("tenants/finance/tenant.yaml"),
        "{last:?}"
    );
    let f = served_files(&s.current().unwrap());
    assert!(f.contains_key("tenants/hr/hr.rego"));
    assert!(!f.keys().any(|k| k.starts_with("tenants/finance/")));
    // Withheld, not dropped: the bundle names it (gateways refuse its
    // principals), and the publish warns.
    let manifest: serde_json::Value = serde_json::from_slice(&f[".manifest"]).unwrap();
    let withheld = &manifest[warden_config::tenants::WITHHELD_MEMBER];
    assert!(
        withheld["finance"]
            .as_str()
            .is_some_and(|w| w.contains("tenants/finance/tenant.yaml")),
        "{manifest}"
    );
    assert!(withheld.get("hr").is_none(), "{manifest}");
    let warnings = s.warnings_of(last.seq);
    assert!(
        warnings.len() == 1
            && warnings[0].contains("tenant `finance`")
            && warnings[0].contains("refused"),
        "{warnings:?}"
    );
    let h = s.layer_history_view("finance");
    assert_eq!(h.current.as_deref(), Some(e.revision.as_str()));
    assert!(h.last_error.is_some(), "{h:?}");
    assert!(changes(&d).iter().any(|c| c["action"] == "layer.left_out"
        && c["detail"].as_str().unwrap().contains("tenant finance")));
    // A kill switch rebuild leaves it out too, and still serves hr.
    s.kill("admin", "tenant", "x", true).unwrap();
    let last = s.history().last().unwrap().clone();
    assert!(last.left_out.contains_key("finance") && last.layers.contains_key("hr"));
    // The grant back: finance is served again.
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    s.publish_source("test", false).unwrap().unwrap();
    assert_eq!(
        s.history().last().unwrap().layers.get("finance"),
        Some(&e.revision)
    );
    assert!(s.layer_history_view("finance").last_error.is_none());
    assert!(changes(&d).iter().any(|c| c["action"] == "layer.restored"));
    let f = served_files(&s.current().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&f[".manifest"]).unwrap();
    assert!(
        manifest
            .get(warden_config::tenants::WITHHELD_MEMBER)
            .is_none(),
        "{manifest}"
    );
    assert!(s.warnings_of(s.history().last().unwrap().seq).is_empty());
    // The org's source may not carry tenants/ itself.
    std::fs::create_dir_all(src.join("tenants/finance")).unwrap();
    std::fs::write(src.join("tenants/finance/tenant.yaml"), FIN_LEDGER).unwrap();
    assert!(s.publish_source("test", false).is_err());
}

fn report(s: &Store, id: &str) {
    s.accept_report(Report {
        id: id.into(),
        instance: None,
        revision: s.current().unwrap().revision.clone(),
        healthy: true,
        last_error: None,
        labels: Labels::new(),
        stats: Stats::default(),
        upstreams: vec![],
    })
    .unwrap();
}

#[test]
fn a_layer_canary_reaches_its_share_and_promotion_makes_it_current() {
    let (_d, s) = org_store();
    let v1 = layer("finance", &rego("finance", "decision := {\"allow\": true}"));
    let e1 = s
        .publish_layer("admin:fiona", "finance", v1.clone(), None)
        .unwrap();
    for i in 0..10 {
        report(&s, &format!("gw{i}"));
    }
    let v2 = layer(
        "finance",
        &rego("finance", "decision := {\"allow\": false}"),
    );
    let plan: CanaryPlan =
        serde_json::from_value(serde_json::json!({"share": 0.3, "watch_secs": 600})).unwrap();
    let e2 = s
        .publish_layer(
            "admin:fiona",
            "finance",
            v2.clone(),
            Some((Selector::default(), plan.clone())),
        )
        .unwrap();
    let ro = s.rollout_view();
    assert_eq!(ro.state(), Some(CanaryState::Watching));
    let c = ro.canary().unwrap();
    assert_eq!(
        c.rollout.layer.as_ref().map(|l| l.revision.as_str()),
        Some(e2.revision.as_str())
    );
    let members: Vec<String> = c.rollout.members.iter().cloned().collect();
    assert_eq!(members.len(), 3);
    let none = Labels::new();
    for i in 0..10 {
        let id = format!("gw{i}");
        let f = served_files(&s.for_gateway(&id, &none).unwrap());
        let want = if members.contains(&id) { &v2 } else { &v1 };
        assert_eq!(
            f["tenants/finance/finance.rego"], want["finance.rego"],
            "{id}"
        );
    }
    // The tenant's current layer is still v1 until promotion.
    assert_eq!(
        s.layer_history_view("finance").current.as_deref(),
        Some(e1.revision.as_str())
    );
    // A kill switch rebuild keeps the canary's layer for its members.
    s.kill("admin", "all", "", true).unwrap();
    let f = served_files(&s.for_gateway(&members[0], &none).unwrap());
    assert_eq!(f["tenants/finance/finance.rego"], v2["finance.rego"]);
    // The rebuild made the canary another revision: a promotion of the
    // one read before it is refused, nothing promoted.
    let judged = c.rollout.revision.as_str();
    assert!(matches!(
        s.promote("admin:fiona", Some(judged)),
        Err(crate::store::CanaryRefusal::Changed(_))
    ));
    assert_eq!(s.rollout_view().state(), Some(CanaryState::Watching));
    let now = s.rollout_view().canary().unwrap().rollout.revision.clone();
    assert_ne!(now, judged);
    s.promote("admin:fiona", Some(&now)).unwrap();
    assert_eq!(
        s.layer_history_view("finance").current.as_deref(),
        Some(e2.revision.as_str())
    );
    for i in 0..10 {
        let f = served_files(&s.for_gateway(&format!("gw{i}"), &none).unwrap());
        assert_eq!(f["tenants/finance/finance.rego"], v2["finance.rego"]);
    }
    // A canary rolled back leaves the current layer as it was.
    let v3 = layer(
        "finance",
        &rego(
            "finance",
            "decision := {\"allow\": true, \"reason\": \"v3\"}",
        ),
    );
    s.publish_layer(
        "admin:fiona",
        "finance",
        v3,
        Some((Selector::default(), plan)),
    )
    .unwrap();
    s.roll_back_canary("admin:fiona", None).unwrap();
    assert_eq!(
        s.layer_history_view("finance").current.as_deref(),
        Some(e2.revision.as_str())
    );
    for i in 0..10 {
        let f = served_files(&s.for_gateway(&format!("gw{i}"), &none).unwrap());
        assert_eq!(f["tenants/finance/finance.rego"], v2["finance.rego"]);
    }
}

/// The fleet has one canary slot, and it is the org's to lend: a tenant's
/// canary is watched an hour at most, the org's canary rolls a tenant's
/// back and takes the slot, and a tenant waits as long as its last canary
/// held the slot before it starts another (unless another owner's came in
/// between). Found by session 55's review: a tenant admin held the slot
/// for 24 h, again and again, and the org could canary nothing.
#[test]
fn a_tenant_cannot_hold_the_canary_slot_from_the_org() {
    let (_d, s) = org_store();
    s.publish_layer(
        "admin:fiona",
        "finance",
        layer("finance", &rego("finance", "decision := {\"allow\": true}")),
        None,
    )
    .unwrap();
    for i in 0..10 {
        report(&s, &format!("gw{i}"));
    }
    let plan = |watch: u64| -> CanaryPlan {
        serde_json::from_value(serde_json::json!({"share": 0.3, "watch_secs": watch})).unwrap()
    };
    let v = |n: u32| {
        layer(
            "finance",
            &rego(
                "finance",
                &format!("decision := {{\"allow\": true, \"reason\": \"v{n}\"}}"),
            ),
        )
    };
    let refused = |r: Result<crate::store::layers::LayerEntry, crate::build::BuildFailure>| match r
    {
        Ok(_) => panic!("published"),
        Err(e) => e.to_string(),
    };
    let canary = |n: u32, watch: u64| {
        s.publish_layer(
            "admin:fiona",
            "finance",
            v(n),
            Some((Selector::default(), plan(watch))),
        )
    };
    let long = refused(canary(2, 86_400));
    assert!(long.contains("3600 s at most"), "{long}");
    canary(3, 3600).unwrap();
    assert_eq!(s.rollout_view().state(), Some(CanaryState::Watching));
    // The org's canary takes the slot: the tenant's is rolled back.
    std::fs::write(s.source.join("extra.json"), "{}").unwrap();
    s.publish_canary("admin", Selector::default(), plan(600))
        .unwrap();
    let ro = s.rollout_view();
    assert_eq!(ro.state(), Some(CanaryState::Watching));
    assert!(
        ro.canary().is_some_and(|c| c.rollout.layer.is_none()),
        "the org's canary is watched: {ro:?}"
    );
    assert!(
        changes(&_d).iter().any(|c| c
            .to_string()
            .contains("takes the fleet's canary slot from tenant `finance`")),
        "{:?}",
        changes(&_d)
    );
    // Another owner used the slot since: the tenant may canary again.
    s.roll_back_canary("admin", None).unwrap();
    canary(4, 60).unwrap();
    // It ends its own canary after ten minutes: it waits as long again.
    let ten = std::time::Duration::from_secs(600);
    if let Some(r) = s.lock().rollout.as_mut() {
        r.started -= ten;
    }
    s.roll_back_canary("admin:fiona", None).unwrap();
    let again = refused(canary(5, 60));
    assert!(
        again.contains("held the fleet's canary slot 600 s"),
        "{again}"
    );
    // Publishing to all stays open to it, and so does a canary once it
    // has waited.
    s.publish_layer("admin:fiona", "finance", v(6), None)
        .unwrap();
    if let Some(r) = s.lock().rollout.as_mut() {
        r.ended = r.ended.map(|e| e - ten);
        r.started -= ten;
    }
    canary(7, 60).unwrap();
}

pub(crate) fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// An Ed25519 signer whose bundles are good for `valid_for`, and the
/// verifier of its signatures.
pub(crate) fn signer_for(valid_for: Duration) -> (Signer, archive::Verifier) {
    use ring::signature::KeyPair;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let v =
        archive::Verifier::new(&pem("PUBLIC KEY", &spki), jsonwebtoken::Algorithm::EdDSA).unwrap();
    let s = Signer {
        pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        alg: jsonwebtoken::Algorithm::EdDSA,
        keyid: "k1".into(),
        valid_for: Some(valid_for),
    };
    (s, v)
}

/// With a signing key, each layer's `.layer.json` carries a signature
/// the gateway's verifier accepts, and an altered layer file is refused.
#[test]
fn layers_are_signed_with_the_bundle_key() {
    let (mut signer, v) = signer_for(Duration::from_secs(3600));
    // Layers are signed whatever the bundle's validity.
    signer.valid_for = None;
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("warden.yaml"), ORG).unwrap();
    let s = Store::open(&d.path().join("state"), &src, Some(signer)).unwrap();
    s.publish_source("test", true).unwrap();
    let e = s
        .publish_layer("admin:fiona", "finance", yaml_layer(FIN_LEDGER), None)
        .unwrap();
    let mut f = served_files(&s.current().unwrap());
    v.verify(&f).unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&f["tenants/finance/.layer.json"]).unwrap();
    assert_eq!(meta["digest"], e.digest.as_str());
    v.verify_layer(meta["signature"].as_str().unwrap(), &e.digest)
        .unwrap();
    // Another digest does not verify with that signature.
    assert!(v
        .verify_layer(meta["signature"].as_str().unwrap(), &"0".repeat(64))
        .is_err());
    f.insert(
        "tenants/finance/tenant.yaml".into(),
        FIN_LEDGER
            .replace("127.0.0.1:2", "127.0.0.1:4")
            .into_bytes(),
    );
    assert!(v.verify_layers(&f).is_err());
}

/// A layer whose files fit its own bounds but make the composed bundle
/// one a gateway refuses (more files than an archive may hold) is refused
/// at publish: the fleet would otherwise stay on its last bundle, kill
/// switches built after it included.
#[test]
fn a_layer_that_makes_the_bundle_one_gateways_refuse_is_refused() {
    let (_d, s) = org_store();
    let before = s.current().unwrap().revision.clone();
    let mut many = layer("finance", &rego("finance", "decision := {\"allow\": true}"));
    for i in 0..archive::MAX_BUNDLE_FILES - 3 {
        many.insert(
            format!("f/m{i:04}.rego"),
            format!("package warden.tenants.finance.f{i}\n").into_bytes(),
        );
    }
    let e = s
        .publish_layer("admin:fiona", "finance", many, None)
        .unwrap_err();
    assert!(e.to_string().contains("every gateway would refuse"), "{e}");
    assert_eq!(s.current().unwrap().revision, before);
    // What every build serves still unpacks as a gateway unpacks it.
    assert!(archive::unpack(&s.current().unwrap().archive).is_ok());
}
