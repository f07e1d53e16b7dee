//! Who may consent for a link's principal, and whose connections a person
//! lists and revokes: the key the connection is kept under decides, not
//! the looser form that only adds strictness to rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{is_principal, owns};
use crate::connect::conn_key;
use crate::connect::seal::Person;

fn person(principals: &[&str]) -> Person {
    Person {
        sub: "s".into(),
        shown: "s".into(),
        principals: principals.iter().map(|p| (*p).to_owned()).collect(),
        until: u64::MAX,
    }
}

/// A link made for a principal whose id only looks like the person's
/// (an accent, full-width letters, a dotted capital, the Kelvin sign) is
/// another principal's: consenting to it would bind the person's account
/// to that principal, whose agent would then act as them. The reverse
/// too: a claim that only looks like the link's principal is not it.
#[test]
fn a_look_alike_principal_is_not_the_person() {
    let alice = person(&["alice"]);
    for other in ["alicé", "ａｌｉｃｅ", "ALİCE", "al\u{131}ce"] {
        assert!(!is_principal(&alice, "acme", other, false), "{other}");
    }
    let kim = person(&["kim"]);
    assert!(!is_principal(&kim, "acme", "\u{212a}im", false));
    for claim in ["ａｌｉｃｅ", "alicé", "acme/ａｌｉｃｅ", "ａｃｍｅ/alice"] {
        assert!(
            !is_principal(&person(&[claim]), "acme", "alice", false),
            "{claim}"
        );
    }
    // Spellings no one tells apart are one principal, as the connection's
    // key has it: ASCII case, spaces around, NFC.
    assert!(is_principal(&alice, "acme", "ALICE", false));
    assert!(is_principal(&alice, "ACME", " alice ", false));
    assert!(is_principal(
        &person(&["rene\u{301}"]),
        "acme",
        "ren\u{e9}",
        false
    ));
    // A tenant-qualified claim is that tenant's alone; a bare id, any
    // tenant's (as documented).
    assert!(is_principal(
        &person(&["ACME/alice"]),
        "acme",
        "alice",
        false
    ));
    assert!(is_principal(
        &person(&["acme／alice"]),
        "acme",
        "alice",
        false
    ));
    assert!(!is_principal(
        &person(&["globex/alice"]),
        "acme",
        "alice",
        false
    ));
    assert!(is_principal(&alice, "globex", "alice", false));
    // A slash only a reader sees names nobody.
    assert!(!is_principal(&person(&["a℅b"]), "ac", "ob", false));
    assert!(!is_principal(&person(&["a℅b"]), "acme", "a℅b", false));
}

/// A person lists (and may revoke) the connections kept under the keys
/// of the principals they are, whatever the principal's script; never a
/// look-alike's.
#[test]
fn a_person_owns_the_connections_of_their_principals_keys() {
    let k = |t: &str, p: &str| conn_key(t, p, "saas");
    let rene = person(&["rené"]);
    let kept = k("acme", "rené");
    assert!(owns(&rene, &kept.tenant, &kept.principal, false));
    let other = k("acme", "rene");
    assert!(!owns(&rene, &other.tenant, &other.principal, false));
    let alice = person(&["acme/alice"]);
    let kept = k("ACME", "Alice");
    assert!(owns(&alice, &kept.tenant, &kept.principal, false));
    let look_alike = k("acme", "ａｌｉｃｅ");
    assert!(!owns(
        &alice,
        &look_alike.tenant,
        &look_alike.principal,
        false
    ));
    let elsewhere = k("globex", "alice");
    assert!(!owns(
        &alice,
        &elsewhere.tenant,
        &elsewhere.principal,
        false
    ));
}

/// Where the provider names the tenant of a person's principals
/// (`principal_tenant_claim`), a bare id owns nothing: the namesake of
/// every tenant (which a tenant admin could mint) is nobody's.
#[test]
fn with_a_tenant_claim_a_bare_id_is_no_tenants_principal() {
    let bare = person(&["alice"]);
    assert!(!is_principal(&bare, "acme", "alice", true));
    let theirs = person(&["acme/alice"]);
    assert!(is_principal(&theirs, "acme", "alice", true));
    assert!(!is_principal(&theirs, "globex", "alice", true));
    let k = conn_key("globex", "alice", "saas");
    assert!(!owns(&bare, &k.tenant, &k.principal, true));
}
