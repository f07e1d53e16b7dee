//! Who administers what (`serve --admins FILE`): org admins, org reviewers
//! and tenant admins, each with a token of their own (see
//! docs/governance.md, "Who is who at the agent").
//!
//! ```yaml
//! alice: {token_sha256: "<hex>", role: org_admin}
//! rita:  {token_sha256: "<hex>", role: org_reviewer}
//! fiona: {token_sha256: "<hex>", role: tenant_admin, tenant: finance}
//! ```
//!
//! Names are compared in their canonical form
//! ([`warden_config::person::canonical`]): two entries that are one person
//! under two spellings are refused, and a registrant who reviews under
//! another spelling is still the registrant. A tenant admin's tenant is
//! kept as its canonical name, but what they may read and change is
//! decided by the stricter tenant scope key ([`same_tenant`]).

use std::collections::BTreeMap;

use sha2::Digest;
use warden_config::names::{name_key, same_name, Name};
use warden_config::person;

/// What an administrator may do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Everything: the org layer, every tenant, the registry, the kill switch.
    OrgAdmin,
    /// Reads everything; reviews registry entries and shares.
    OrgReviewer,
    /// Only their tenant (its canonical name, [`tenant_name`]; compared
    /// as [`same_tenant`] compares).
    TenantAdmin(String),
}

/// One entry of the admins file.
#[derive(Debug, Clone)]
pub struct Admin {
    pub token: [u8; 32],
    pub kind: Kind,
}

/// The prefix of every name a sign-in through the identity provider gives
/// (`oidc:<sub>`): no people file may name anyone so ([`check_names`]).
pub const OIDC_PREFIX: &str = "oidc:";

/// A person acting through the API: the admin token (`admin`) or an entry
/// of the admins file (`admin:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    /// The name the file gives them (`admin` for the admin token).
    pub name: String,
    pub kind: Kind,
}

impl Actor {
    /// The admin token's bearer.
    pub fn root() -> Actor {
        Actor {
            name: "admin".into(),
            kind: Kind::OrgAdmin,
        }
    }

    /// How the change record names them.
    pub fn label(&self) -> String {
        if self.name == "admin" && self.kind == Kind::OrgAdmin {
            "admin".into()
        } else {
            format!("admin:{}", self.name)
        }
    }

    /// The canonical person (for "not the registrant" checks).
    pub fn person(&self) -> String {
        name_key(Name::Person, &self.name)
    }

    pub fn is_org_admin(&self) -> bool {
        self.kind == Kind::OrgAdmin
    }

    /// Org admins and org reviewers: they read every tenant.
    pub fn is_org(&self) -> bool {
        matches!(self.kind, Kind::OrgAdmin | Kind::OrgReviewer)
    }

    /// The tenant a tenant admin is confined to.
    pub fn tenant(&self) -> Option<&str> {
        match &self.kind {
            Kind::TenantAdmin(t) => Some(t),
            _ => None,
        }
    }

    /// Whether they may read `tenant`'s things (org roles: every tenant).
    pub fn reads(&self, tenant: &str) -> bool {
        match &self.kind {
            Kind::TenantAdmin(t) => same_tenant(t, tenant),
            _ => true,
        }
    }

    /// Whether they may change `tenant`'s layer or servers (org admins and
    /// the tenant's own admins).
    pub fn writes(&self, tenant: &str) -> bool {
        match &self.kind {
            Kind::OrgAdmin => true,
            Kind::OrgReviewer => false,
            Kind::TenantAdmin(t) => same_tenant(t, tenant),
        }
    }
}

/// Whether two tenant names are one tenant for what an administrator may
/// read and change: compared by the tenant scope key
/// ([`warden_config::person::tenant_key`]), ASCII case folded and nothing
/// else, so `FINANCE` is `finance` while `ﬁnance`, `ｆｉｎａｎｃｅ` or
/// `financé` (a principal's tenant claim, perhaps another organisation's
/// name) are not; a name with invisible characters matches nothing but
/// itself.
pub fn same_tenant(a: &str, b: &str) -> bool {
    same_name(Name::Tenant, a, b)
}

/// A tenant name as the agent keeps it: canonical, and safe as a directory
/// name (`a-z`, `0-9`, `-`, `_`, 1-63 characters, starting with a letter
/// or digit).
pub fn tenant_name(t: &str) -> Result<String, String> {
    // not a name comparison: spells a tenant as written, refused unless
    // its canonical form is a plain tenant name (compared by same_tenant).
    let c = person::canonical(t).map_err(|e| format!("tenant `{}` {e}", t.escape_debug()))?;
    let ok = !c.is_empty()
        && c.len() <= 63
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && c.as_bytes()[0].is_ascii_alphanumeric();
    if ok && c == person::NO_TENANT {
        Err(format!(
            "tenant `{}`: `{}` is the tenant of anonymous callers and of credentials that name none, no tenant to administer, approve for or own servers",
            t.escape_debug(),
            person::NO_TENANT
        ))
    } else if ok {
        Ok(c)
    } else {
        Err(format!(
            "tenant `{}`: a tenant is 1-63 of a-z, 0-9, - and _, starting with a letter or digit",
            t.escape_debug()
        ))
    }
}

/// Administrators from their entries, `(name, token digest hex, role,
/// tenant)`.
pub(crate) fn parse(
    raw: impl Iterator<Item = (String, String, String, Option<String>)>,
) -> Result<BTreeMap<String, Admin>, String> {
    let empty: [u8; 32] = sha2::Sha256::digest(b"").into();
    let mut out: BTreeMap<String, Admin> = BTreeMap::new();
    let mut people: BTreeMap<String, String> = BTreeMap::new();
    for (name, hexd, role, tenant) in raw {
        // not a name comparison: a name without a canonical form is refused.
        let canon = person::canonical(&name)
            .map_err(|e| format!("admin name `{}` {e}", name.escape_debug()))?;
        if name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "admin name `{}` has a slash or spaces",
                name.escape_debug()
            ));
        }
        if canon == "admin" {
            return Err(format!(
                "`{name}`: the name `admin` is the admin token's; choose another"
            ));
        }
        if let Some(other) = people.insert(canon, name.clone()) {
            return Err(format!(
                "admins `{other}` and `{name}` are one person: give one person one entry"
            ));
        }
        let token: [u8; 32] = hex::decode(hexd.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!("`{name}`: token_sha256 must be the SHA-256 (64 hex) of the token")
            })?;
        if token == empty {
            return Err(format!("`{name}` has the digest of an empty token"));
        }
        let kind = match (role.as_str(), tenant) {
            ("org_admin", None) => Kind::OrgAdmin,
            ("org_reviewer", None) => Kind::OrgReviewer,
            ("org_admin" | "org_reviewer", Some(_)) => {
                return Err(format!(
                    "`{name}`: an org role has no tenant (a tenant admin is role: tenant_admin)"
                ))
            }
            ("tenant_admin", Some(t)) => Kind::TenantAdmin(tenant_name(&t)?),
            ("tenant_admin", None) => {
                return Err(format!("`{name}`: a tenant_admin needs a tenant"));
            }
            (other, _) => {
                return Err(format!(
                    "`{name}`: unknown role `{}` (org_admin, org_reviewer or tenant_admin)",
                    other.escape_debug()
                ))
            }
        };
        if let Some((other, _)) = out.iter().find(|(_, a)| a.token == token) {
            return Err(format!("admins `{other}` and `{name}` have one token"));
        }
        out.insert(name, Admin { token, kind });
    }
    Ok(out)
}

/// Refuses one token for two roles: the admin and fleet tokens, every
/// admin, approver and viewer must each have a token of their own (a token
/// found twice would make its bearer whichever role is looked up first).
pub fn check_distinct<'a>(
    tokens: impl IntoIterator<Item = (String, &'a [u8; 32])>,
) -> Result<(), String> {
    let mut seen: BTreeMap<[u8; 32], String> = BTreeMap::new();
    for (who, t) in tokens {
        if let Some(first) = seen.insert(*t, who.clone()) {
            return Err(format!(
                "{first} and {who} have one token: give each role a token of its own"
            ));
        }
    }
    Ok(())
}

/// Refuses one person named in two entries of the actor files (admins,
/// approvers, viewers: `(file, name)` each), names compared in their
/// canonical form, and the name `admin` in any of them (the admin token's).
/// The console keeps its sessions by name (a user's own oldest ends at
/// the console's `MAX_PER_USER`) and writes its change
/// record as `console:<name>`: a tenant admin and a viewer both named
/// `fiona` would share one session budget, end each other's sessions, and
/// read as one person in the record.
pub fn check_names<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (file, name) in entries {
        let canon = name_key(Name::Person, name);
        if canon == "admin" {
            return Err(format!(
                "{file}: `{}`: the name `admin` is the admin token's in the console and the change record; choose another",
                name.escape_debug()
            ));
        }
        if canon.starts_with(OIDC_PREFIX) {
            return Err(format!(
                "{file}: `{}`: names beginning `{}` are those of people signed in through the identity provider; choose another",
                name.escape_debug(),
                OIDC_PREFIX
            ));
        }
        if let Some((f, n)) = seen.insert(canon, (file, name)) {
            return Err(format!(
                "{f}: `{}` and {file}: `{}` name one person: give each person one entry, in one file, with one token",
                n.escape_debug(),
                name.escape_debug()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn h(t: &str) -> String {
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    }

    fn one(
        name: &str,
        role: &str,
        tenant: Option<&str>,
    ) -> (String, String, String, Option<String>) {
        (
            name.into(),
            h(&format!("tok-{name}")),
            role.into(),
            tenant.map(Into::into),
        )
    }

    /// `default` is the tenant of anonymous callers and of credentials
    /// that name none: no tenant to administer (its admin would read every
    /// one of them), own servers or a layer, however it is spelled.
    #[test]
    fn the_tenant_of_no_tenant_is_no_tenant_to_administer() {
        for t in ["default", "DEFAULT", " Default "] {
            let e = tenant_name(t).expect_err(t);
            assert!(e.contains("anonymous callers"), "{e}");
        }
        assert_eq!(tenant_name("finance").as_deref(), Ok("finance"));
    }

    #[test]
    fn roles_are_read_and_bad_entries_refused() {
        let ok = parse(
            [
                one("alice", "org_admin", None),
                one("rita", "org_reviewer", None),
                one("fiona", "tenant_admin", Some("Finance")),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(ok["fiona"].kind, Kind::TenantAdmin("finance".into()));
        assert_eq!(ok["rita"].kind, Kind::OrgReviewer);
        for (bad, why) in [
            (vec![one("x", "tenant_admin", None)], "needs a tenant"),
            (vec![one("x", "superuser", None)], "unknown role"),
            (
                vec![one("x", "org_admin", Some("hr"))],
                "an org role has no tenant",
            ),
            (vec![one("Admin", "org_admin", None)], "`admin`"),
            (
                vec![
                    one("fiona", "org_admin", None),
                    one("ＦＩＯＮＡ", "org_reviewer", None),
                ],
                "one person",
            ),
            (
                vec![one("x", "tenant_admin", Some("../etc"))],
                "a tenant is",
            ),
        ] {
            let e = parse(bad.into_iter()).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut a = one("a", "org_admin", None);
        let mut b = one("b", "org_reviewer", None);
        a.1 = h("same");
        b.1 = h("same");
        assert!(parse([a, b].into_iter()).unwrap_err().contains("one token"));
    }

    #[test]
    fn one_token_for_two_roles_is_refused() {
        let (x, y) = ([1u8; 32], [2u8; 32]);
        assert!(check_distinct([("admin token".into(), &x), ("fleet token".into(), &y)]).is_ok());
        let e = check_distinct([
            ("admin token".into(), &x),
            ("approver `bob`".into(), &y),
            ("admin `fiona`".into(), &x),
        ])
        .unwrap_err();
        assert!(e.contains("admin token") && e.contains("fiona"), "{e}");
    }

    #[test]
    fn one_name_in_two_actor_files_is_refused() {
        let ok = check_names([
            ("admins.yaml", "fiona"),
            ("approvers.yaml", "frank"),
            ("approvers.yaml", "acme/fiona"),
            ("viewers.yaml", "vic"),
        ]);
        assert_eq!(ok, Ok(()));
        // A tenant admin and a viewer of one name were one console user.
        for (a, b) in [
            (("admins.yaml", "fiona"), ("viewers.yaml", "fiona")),
            (("admins.yaml", "fiona"), ("viewers.yaml", "FIONA")),
            (("admins.yaml", "ﬁona"), ("approvers.yaml", "fiona")),
            (("approvers.yaml", "frank"), ("viewers.yaml", "Frank")),
        ] {
            let e = check_names([a, b]).unwrap_err();
            assert!(
                e.contains(a.0) && e.contains(b.0) && e.contains("one person"),
                "{e}"
            );
        }
        let e = check_names([("viewers.yaml", "ＡＤＭＩＮ")]).unwrap_err();
        assert!(e.contains("viewers.yaml") && e.contains("`admin`"), "{e}");
    }

    #[test]
    fn people_compare_canonically_and_tenants_by_their_scope_key() {
        let fiona = Actor {
            name: "fiona".into(),
            kind: Kind::TenantAdmin("finance".into()),
        };
        assert!(fiona.writes("Finance") && fiona.reads("FINANCE") && fiona.reads(" finance"));
        assert!(!fiona.writes("hr") && !fiona.reads("financ"));
        assert!(!fiona.reads("finance\u{200b}"));
        // Look-alikes of finance are other tenants: neither read nor written.
        for t in ["ＦＩＮＡＮＣＥ", "ﬁnance", "financ\u{e9}", "finance\u{301}"] {
            assert!(!fiona.reads(t) && !fiona.writes(t), "{t:?}");
            assert!(!same_tenant("finance", t), "{t:?}");
        }
        assert!(same_tenant("financ\u{e9}", "finance\u{301}"));
        assert!(!same_tenant("kyc", "\u{212a}yc") && same_tenant("kyc", "KYC"));
        let other = Actor {
            name: "ﬁona".into(),
            kind: Kind::OrgReviewer,
        };
        assert_eq!(fiona.person(), other.person());
        assert_eq!(other.label(), "admin:ﬁona");
        assert_eq!(Actor::root().label(), "admin");
        assert!(!other.writes("finance") && other.reads("hr"));
    }
}
