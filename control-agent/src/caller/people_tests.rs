//! The people files: one format for admins, approvers and viewers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::admins::Kind;

fn hex_of(t: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(t.as_bytes()))
}

fn file(d: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = d.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn one_file_holds_everyone_each_as_its_role_says() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "alice: {{token_sha256: {a}, role: org_admin}}\n\
         fiona: {{token_sha256: {f}, role: tenant_admin, tenant: Finance}}\n\
         bob: {{token_sha256: {b}, role: approver, principals: [bob-agent], tenants: [acme]}}\n\
         vera: {{token_sha256: {v}, role: viewer, tenants: [acme]}}\n\
         carol: {c}\n",
        a = hex_of("a"),
        f = hex_of("f"),
        b = hex_of("b"),
        v = hex_of("v"),
        c = hex_of("c"),
    );
    let p = file(&d, "people.yaml", &text);
    let all = read_all(&[(p.as_path(), FileKind::Approvers)]).unwrap();
    assert_eq!(all.admins["alice"].kind, Kind::OrgAdmin);
    assert_eq!(
        all.admins["fiona"].kind,
        Kind::TenantAdmin("finance".into())
    );
    assert_eq!(
        all.approvers["bob"].principals,
        vec!["bob-agent".to_owned()]
    );
    assert_eq!(all.approvers["bob"].tenants, vec!["acme".to_owned()]);
    // Without a role: the file's own (an approver in --approvers).
    assert!(all.approvers.contains_key("carol"));
    assert_eq!(all.viewers["vera"].tenants, vec!["acme".to_owned()]);
    // The same file as --viewers: carol is a viewer there.
    let as_viewers = read_all(&[(p.as_path(), FileKind::Viewers)]).unwrap();
    assert!(as_viewers.viewers.contains_key("carol"));
    assert!(!as_viewers.approvers.contains_key("carol"));
}

#[test]
fn a_field_not_the_roles_or_unknown_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let h = hex_of("x");
    for (text, why) in [
        // An approver's `tenant:` read as nothing would leave them every tenant.
        (
            format!("bob: {{token_sha256: {h}, role: approver, tenant: acme}}\n"),
            "tenant",
        ),
        (
            format!("vera: {{token_sha256: {h}, role: viewer, tenant: acme}}\n"),
            "tenant",
        ),
        (
            format!("rita: {{token_sha256: {h}, role: org_reviewer, tenants: [acme]}}\n"),
            "tenants",
        ),
        (
            format!("alice: {{token_sha256: {h}, role: org_admin, principals: [a]}}\n"),
            "principals",
        ),
        (
            format!("bob: {{token_sha256: {h}, role: approver, tenantz: [acme]}}\n"),
            "unknown",
        ),
        (
            format!("bob: {{token_sha256: {h}, role: superuser}}\n"),
            "role",
        ),
    ] {
        let p = file(&d, "people.yaml", &text);
        let e = read_all(&[(p.as_path(), FileKind::Approvers)])
            .expect_err(&text)
            .to_string();
        assert!(e.contains("people.yaml"), "{why}: {e}");
    }
    // An admins file names every role: a bare digest is refused there.
    let p = file(&d, "admins.yaml", &format!("alice: {h}\n"));
    let e = read_all(&[(p.as_path(), FileKind::Admins)]).expect_err("bare");
    assert!(e.to_string().contains("names its role"), "{e}");
}

#[test]
fn one_person_is_one_entry_across_the_files() {
    let d = tempfile::tempdir().unwrap();
    let admins = file(
        &d,
        "admins.yaml",
        &format!(
            "fiona: {{token_sha256: {}, role: tenant_admin, tenant: finance}}\n",
            hex_of("f")
        ),
    );
    // The same person under another spelling in the approvers file.
    let approvers = file(&d, "approvers.yaml", &format!("FIONA: {}\n", hex_of("g")));
    let e = read_all(&[
        (admins.as_path(), FileKind::Admins),
        (approvers.as_path(), FileKind::Approvers),
    ])
    .expect_err("one person twice");
    assert!(e.to_string().contains("one person"), "{e}");
    // Two approvers in two files of whom one is the other's principal.
    let a1 = file(&d, "a1.yaml", &format!("ann: {}\n", hex_of("a")));
    let a2 = file(
        &d,
        "a2.yaml",
        &format!(
            "bob: {{token_sha256: {}, role: approver, principals: [ann]}}\n",
            hex_of("b")
        ),
    );
    let e = read_all(&[
        (a1.as_path(), FileKind::Approvers),
        (a2.as_path(), FileKind::Admins),
    ])
    .expect_err("ann twice");
    assert!(e.to_string().contains("one person"), "{e}");
    // Apart, they are read.
    let ok = read_all(&[
        (admins.as_path(), FileKind::Admins),
        (a1.as_path(), FileKind::Approvers),
    ])
    .unwrap();
    assert_eq!(ok.admins.len() + ok.approvers.len(), 2);
}
