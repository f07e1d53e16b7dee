//! The approvers file: who each approver is (their token's digest, the
//! principals they also are) and which tenants' calls they see.

use std::collections::BTreeMap;

use sha2::Digest;
use warden_config::person::Person;

use super::types::Approval;

/// One approver: who their token makes them, whose calls they may never
/// approve, and which tenants' calls they see.
#[derive(Debug, Clone, Default)]
pub struct Approver {
    pub token: [u8; 32],
    /// Principal ids (`id` or `tenant/id`) this approver also is.
    pub principals: Vec<String>,
    /// Tenants whose calls this approver sees (empty: every tenant).
    pub tenants: Vec<String>,
}

impl Approver {
    /// Whether the call of `tenant`/`principal` is this approver's own.
    pub(super) fn is(&self, name: &str, tenant: &str, principal: &str) -> bool {
        // The holder a gateway names (`alice~layer` for a key a tenant's
        // layer minted, `a~b~principal` for a token's `a~b`) is the
        // principal of that name too: an approver never approves a call
        // made under their own name, whoever minted the credential.
        let plain = principal
            .strip_suffix("~layer")
            .or_else(|| principal.strip_suffix("~principal"))
            .unwrap_or(principal);
        let mine = self.people(name);
        [principal, plain].into_iter().any(|p| {
            // A caller whose name has no canonical form is nobody's to approve.
            let Ok(caller) = Person::of(tenant, p) else {
                return true;
            };
            // Nor one whose id reads with a slash (`acme/alice` as an id, or
            // `a℅b`, which is `ac/ob` once folded): a name of the approvers
            // file with that slash is a tenant's person, so no approver's
            // principals could ever be found equal to it, and an approver
            // who is that caller would not be stopped.
            if caller.id.contains('/') {
                return true;
            }
            mine.iter().any(|m| m.same(&caller))
        })
    }

    /// Every person this approver is: their name and the principals the
    /// file lists for them (a name with no canonical form is refused when
    /// the file is read).
    pub fn people(&self, name: &str) -> Vec<Person> {
        std::iter::once(name)
            .chain(self.principals.iter().map(String::as_str))
            .filter_map(|n| Person::parse(n).ok())
            .collect()
    }

    /// Whether this approver sees the calls of `tenant`
    /// ([`warden_config::person::in_scope`]).
    pub fn sees(&self, tenant: &str) -> bool {
        warden_config::person::in_scope(&self.tenants, tenant)
    }

    /// Whether this approver is shown `a`: it sees the caller's tenant, or
    /// a tenant whose rules asked for it.
    pub fn shown(&self, a: &Approval) -> bool {
        self.sees(&a.tenant) || a.for_tenants.iter().any(|t| self.sees(t))
    }

    /// Whether this approver may decide `a`: when tenants' own rules asked
    /// for it, it sees every one of them (the owner's approvers decide
    /// what the owner's layer holds, not the caller's); otherwise it sees
    /// the caller's tenant.
    pub fn decides(&self, a: &Approval) -> bool {
        if a.for_tenants.is_empty() {
            self.sees(&a.tenant)
        } else {
            a.for_tenants.iter().all(|t| self.sees(t))
        }
    }
}

/// Approvers (or viewers) from their entries, `(name, token digest hex,
/// principals, tenants)`: each name and principal with a canonical form,
/// a token of 64 hex that is not the empty token's, and one entry per
/// person.
pub(crate) fn parse_approvers(
    raw: impl IntoIterator<Item = (String, String, Vec<String>, Vec<String>)>,
) -> Result<BTreeMap<String, Approver>, String> {
    let empty: [u8; 32] = sha2::Sha256::digest(b"").into();
    let mut out: BTreeMap<String, Approver> = BTreeMap::new();
    for (name, hexd, principals, tenants) in raw {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("approver name `{name}` is empty or has spaces"));
        }
        let token: [u8; 32] = hex::decode(hexd.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!("`{name}` must map to the SHA-256 (64 hex) of the approver's token")
            })?;
        if token == empty {
            return Err(format!("`{name}` has the digest of an empty token"));
        }
        let entry = Approver {
            token,
            principals,
            tenants,
        };
        // One entry per person: `alice` and `ALICE` (or `alice` and
        // `acme/alice`) with a token each would count twice for CRITICAL.
        for n in std::iter::once(name.as_str()).chain(entry.principals.iter().map(String::as_str)) {
            if let Err(e) = Person::parse(n) {
                return Err(format!("`{}` (approver `{name}`) {e}", n.escape_debug()));
            }
        }
        one_person(&out, &name, &entry)?;
        out.insert(name, entry);
    }
    Ok(out)
}

/// Refuses `entry` when it is a person `out` holds already (by name or
/// by a principal).
fn one_person(
    out: &BTreeMap<String, Approver>,
    name: &str,
    entry: &Approver,
) -> Result<(), String> {
    let mine = entry.people(name);
    for (other_name, other) in out {
        if other
            .people(other_name)
            .iter()
            .any(|o| mine.iter().any(|m| m.same(o)))
        {
            return Err(format!(
                "approvers `{other_name}` and `{name}` are one person: give one entry one token"
            ));
        }
    }
    Ok(())
}

/// Refuses approvers (of several files) of whom two are one person.
pub(crate) fn check_one_person(
    approvers: impl IntoIterator<Item = (String, Approver)>,
) -> Result<(), String> {
    let mut out = BTreeMap::new();
    for (name, entry) in approvers {
        one_person(&out, &name, &entry)?;
        out.insert(name, entry);
    }
    Ok(())
}
