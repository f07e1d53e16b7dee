//! The approvers file: who each approver is (their token's digest, the
//! principals they also are) and which tenants' calls they see.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
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
            mine.iter().any(|m| m.same(&caller))
        })
    }

    /// Every person this approver is: their name and the principals the
    /// file lists for them (a name with no canonical form is refused when
    /// the file is read).
    pub(super) fn people(&self, name: &str) -> Vec<Person> {
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

/// Reads an approvers file (YAML): per approver, the SHA-256 (hex) of their
/// token, either alone or with `principals` they also are and `tenants`
/// they see:
///
/// ```yaml
/// alice: 5e8f…
/// bob: {token_sha256: 9c1d…, principals: [bob-agent, acme/bob], tenants: [acme]}
/// ```
pub fn read_approvers(path: &Path) -> anyhow::Result<BTreeMap<String, Approver>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Hash(String),
        Full {
            token_sha256: String,
            #[serde(default)]
            principals: Vec<String>,
            #[serde(default)]
            tenants: Vec<String>,
        },
    }
    let text = std::fs::read_to_string(path)?;
    let raw: BTreeMap<String, Entry> = serde_yaml_ng::from_str(&text)?;
    let empty: [u8; 32] = sha2::Sha256::digest(b"").into();
    let mut out: BTreeMap<String, Approver> = BTreeMap::new();
    for (name, e) in raw {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            anyhow::bail!(
                "{}: approver name `{name}` is empty or has spaces",
                path.display()
            );
        }
        let (hexd, principals, tenants) = match e {
            Entry::Hash(h) => (h, Vec::new(), Vec::new()),
            Entry::Full {
                token_sha256,
                principals,
                tenants,
            } => (token_sha256, principals, tenants),
        };
        let token: [u8; 32] = hex::decode(hexd.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: `{name}` must map to the SHA-256 (64 hex) of the approver's token",
                    path.display()
                )
            })?;
        if token == empty {
            anyhow::bail!(
                "{}: `{name}` has the digest of an empty token",
                path.display()
            );
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
                anyhow::bail!(
                    "{}: `{}` (approver `{name}`) {e}",
                    path.display(),
                    n.escape_debug()
                );
            }
        }
        let mine = entry.people(&name);
        for (other_name, other) in &out {
            if other
                .people(other_name)
                .iter()
                .any(|o| mine.iter().any(|m| m.same(o)))
            {
                anyhow::bail!(
                    "{}: approvers `{other_name}` and `{name}` are one person: give one entry one token",
                    path.display()
                );
            }
        }
        out.insert(name, entry);
    }
    Ok(out)
}
