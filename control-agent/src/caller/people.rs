//! The people files (`--admins`, `--approvers`, `--viewers`): one format,
//! read here and nowhere else. Each maps a person's name to the SHA-256
//! (hex) of their token and what they are:
//!
//! ```yaml
//! alice: {token_sha256: "<hex>", role: org_admin}
//! rita:  {token_sha256: "<hex>", role: org_reviewer}
//! fiona: {token_sha256: "<hex>", role: tenant_admin, tenant: finance}
//! bob:   {token_sha256: "<hex>", role: approver, principals: [bob-agent], tenants: [acme]}
//! vera:  {token_sha256: "<hex>", role: viewer, tenants: [acme]}
//! carol: "<hex>"
//! ```
//!
//! `role` is one of `org_admin`, `org_reviewer`, `tenant_admin`,
//! `approver`, `viewer`. Without it an entry is the file's own role: an
//! approver in `--approvers`, a viewer in `--viewers`; the admins file
//! names every role. A file may hold anyone, so one file can hold
//! everyone. An approver also is the `principals` listed (never approving
//! their calls); approvers and viewers see the `tenants` listed (none:
//! every tenant); a tenant admin administers its one `tenant`. A field
//! that is not the role's is refused (an approver's `tenant:` read as
//! nothing would leave them every tenant), as is an unknown one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::admins::Admin;
use crate::approvals::Approver;

/// Everyone the people files name, by role.
#[derive(Debug, Default, Clone)]
pub struct People {
    /// Org admins, org reviewers and tenant admins.
    pub admins: BTreeMap<String, Admin>,
    /// Approvers of held calls.
    pub approvers: BTreeMap<String, Approver>,
    /// Console viewers (read only).
    pub viewers: BTreeMap<String, Approver>,
}

/// Which flag a file came from: the role of its entries that name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `--admins`: every entry names its role.
    Admins,
    /// `--approvers`: an entry without a role is an approver.
    Approvers,
    /// `--viewers`: an entry without a role is a viewer.
    Viewers,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    /// The token's digest alone: the file's own role.
    Hash(String),
    Full(Full),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    token_sha256: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default)]
    principals: Option<Vec<String>>,
}

/// Reads one people file.
pub fn read(path: &Path, kind: FileKind) -> anyhow::Result<People> {
    let text = std::fs::read_to_string(path)?;
    let raw: BTreeMap<String, Entry> =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(raw, kind).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Approvers' or viewers' entries: `(name, digest, principals, tenants)`.
type Watchers = Vec<(String, String, Vec<String>, Vec<String>)>;

fn parse(raw: BTreeMap<String, Entry>, kind: FileKind) -> Result<People, String> {
    let mut admins = Vec::new();
    let (mut approvers, mut viewers): (Watchers, Watchers) = Default::default();
    for (name, e) in raw {
        let full = match e {
            Entry::Hash(token_sha256) => Full {
                token_sha256,
                role: None,
                tenant: None,
                tenants: None,
                principals: None,
            },
            Entry::Full(f) => f,
        };
        let role = match (full.role.as_deref(), kind) {
            (Some(r), _) => r.to_owned(),
            (None, FileKind::Approvers) => "approver".into(),
            (None, FileKind::Viewers) => "viewer".into(),
            (None, FileKind::Admins) => {
                return Err(format!(
                    "`{name}`: an entry of the admins file names its role (org_admin, org_reviewer or tenant_admin)"
                ))
            }
        };
        let not_theirs = |field: &str| {
            format!(
                "`{name}`: `{field}` is not a{} {role}'s (see the people files' format)",
                if role.starts_with(['a', 'o']) {
                    "n"
                } else {
                    ""
                }
            )
        };
        match role.as_str() {
            "approver" | "viewer" => {
                if full.tenant.is_some() {
                    return Err(not_theirs("tenant"));
                }
                let entry = (
                    name,
                    full.token_sha256,
                    full.principals.unwrap_or_default(),
                    full.tenants.unwrap_or_default(),
                );
                if role == "approver" {
                    approvers.push(entry);
                } else {
                    viewers.push(entry);
                }
            }
            _ => {
                if full.tenants.is_some() {
                    return Err(not_theirs("tenants"));
                }
                if full.principals.is_some() {
                    return Err(not_theirs("principals"));
                }
                admins.push((name, full.token_sha256, role, full.tenant));
            }
        }
    }
    Ok(People {
        admins: crate::admins::parse(admins.into_iter())?,
        approvers: crate::approvals::parse_approvers(approvers)?,
        viewers: crate::approvals::parse_approvers(viewers)?,
    })
}

/// Reads every people file given, one person one entry across them all:
/// each file is read on its own first (its errors name it), then their
/// entries together (a person named in two files, two approvers who are
/// one person, one token twice are refused as within one file).
pub fn read_all(files: &[(&Path, FileKind)]) -> anyhow::Result<People> {
    let mut all: Vec<(String, BTreeMap<String, Entry>, FileKind)> = Vec::new();
    for (path, kind) in files {
        read(path, *kind)?;
        let text = std::fs::read_to_string(path)?;
        let raw: BTreeMap<String, Entry> = serde_yaml_ng::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        all.push((path.display().to_string(), raw, *kind));
    }
    // One person, one entry: the console keys sessions and its change
    // record by name across the files.
    crate::admins::check_names(
        all.iter()
            .flat_map(|(f, raw, _)| raw.keys().map(move |n| (f.as_str(), n.as_str()))),
    )
    .map_err(anyhow::Error::msg)?;
    let mut people = People::default();
    for (_, raw, kind) in all {
        let p = parse(raw, kind).map_err(anyhow::Error::msg)?;
        people.admins.extend(p.admins);
        people.approvers.extend(p.approvers);
        people.viewers.extend(p.viewers);
    }
    // The same rules over the union (names are apart by now).
    let approvers = people.approvers.iter().map(|(n, a)| (n.clone(), a.clone()));
    crate::approvals::check_one_person(approvers)
        .map_err(|e| anyhow::anyhow!("the people files: {e}"))?;
    Ok(people)
}

#[cfg(test)]
#[path = "people_tests.rs"]
mod tests;
