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
        assert!(!is_principal(&alice, "acme", other), "{other}");
    }
    let kim = person(&["kim"]);
    assert!(!is_principal(&kim, "acme", "\u{212a}im"));
    for claim in ["ａｌｉｃｅ", "alicé", "acme/ａｌｉｃｅ", "ａｃｍｅ/alice"] {
        assert!(!is_principal(&person(&[claim]), "acme", "alice"), "{claim}");
    }
    // Spellings no one tells apart are one principal, as the connection's
    // key has it: ASCII case, spaces around, NFC.
    assert!(is_principal(&alice, "acme", "ALICE"));
    assert!(is_principal(&alice, "ACME", " alice "));
    assert!(is_principal(&person(&["rene\u{301}"]), "acme", "ren\u{e9}"));
    // A tenant-qualified claim is that tenant's alone; a bare id, any
    // tenant's (as documented).
    assert!(is_principal(&person(&["ACME/alice"]), "acme", "alice"));
    assert!(is_principal(&person(&["acme／alice"]), "acme", "alice"));
    assert!(!is_principal(&person(&["globex/alice"]), "acme", "alice"));
    assert!(is_principal(&alice, "globex", "alice"));
    // A slash only a reader sees names nobody.
    assert!(!is_principal(&person(&["a℅b"]), "ac", "ob"));
    assert!(!is_principal(&person(&["a℅b"]), "acme", "a℅b"));
}

/// A person lists (and may revoke) the connections kept under the keys
/// of the principals they are, whatever the principal's script; never a
/// look-alike's.
#[test]
fn a_person_owns_the_connections_of_their_principals_keys() {
    let k = |t: &str, p: &str| conn_key(t, p, "saas");
    let rene = person(&["rené"]);
    let kept = k("acme", "rené");
    assert!(owns(&rene, &kept.tenant, &kept.principal));
    let other = k("acme", "rene");
    assert!(!owns(&rene, &other.tenant, &other.principal));
    let alice = person(&["acme/alice"]);
    let kept = k("ACME", "Alice");
    assert!(owns(&alice, &kept.tenant, &kept.principal));
    let look_alike = k("acme", "ａｌｉｃｅ");
    assert!(!owns(&alice, &look_alike.tenant, &look_alike.principal));
    let elsewhere = k("globex", "alice");
    assert!(!owns(&alice, &elsewhere.tenant, &elsewhere.principal));
}
