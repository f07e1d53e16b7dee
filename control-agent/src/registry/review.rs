//! What a reviewer approves: the definition they read, named by its
//! digest. Between a reviewer reading a server's entry and moving it to
//! `approved` (or approving sharing it), its registrant could register
//! another definition, which the approval then pinned (or offered to every
//! tenant) unseen; an approval carries the digest the reviewer read
//! (`reviewed`), and is refused when it is not the current one.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::{Json, Refusal, Server};

impl Server {
    /// The digest of the registered definition (the one under review while
    /// the server is in `testing`): `sha256:` and the hex SHA-256 over one
    /// line `<tool name> <fingerprint>\n` per tool the definition lists, in
    /// name order, the fingerprint being the tool's candidate where one is
    /// under review, else its approved one. Every field of a tool is in its
    /// fingerprint, and tool names hold no space or newline, so two
    /// definitions share a digest only when they are the same.
    pub fn definition_digest(&self) -> String {
        let names: BTreeSet<&str> = self
            .definition
            .iter()
            .filter_map(|t| t.get("name").and_then(Json::as_str))
            .collect();
        let mut h = Sha256::new();
        for n in names {
            let f = self
                .tools
                .get(n)
                .and_then(|p| p.candidate.as_deref().or(p.approved.as_deref()))
                .unwrap_or("");
            h.update(n.as_bytes());
            h.update(b" ");
            h.update(f.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// An approval (`what`: "approving `ledger`", "approving sharing of
    /// `ledger`") names the definition its reviewer read: without it 400
    /// ([`Refusal::Invalid`]); another than the current one 409
    /// ([`Refusal::Changed`], code `definition_changed`).
    pub(super) fn check_reviewed(
        &self,
        what: &str,
        server: &str,
        reviewed: Option<&str>,
    ) -> Result<(), Refusal> {
        match reviewed.filter(|r| !r.is_empty()) {
            None => Err(Refusal::Invalid(format!(
                "{what} needs `reviewed`: the definition_digest of the definition you reviewed (GET /v1/registry/{server}, `registry show {server}`)"
            ))),
            Some(r) => self.check_reviewed_if_named(server, Some(r)),
        }
    }

    /// A `reviewed` digest, when one is named (a console form sends the
    /// one its page showed with every move), is the current definition's.
    pub(super) fn check_reviewed_if_named(
        &self,
        server: &str,
        reviewed: Option<&str>,
    ) -> Result<(), Refusal> {
        let now = self.definition_digest();
        match reviewed.filter(|r| !r.is_empty()) {
            Some(r) if r != now => Err(Refusal::Changed(format!(
                "the definition changed since you reviewed it: you reviewed {}, `{server}`'s is now {now}; read it again",
                r.chars().take(80).collect::<String>().escape_debug()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the server is offered to every tenant: shared, in the
    /// definition the org approved for sharing (the bundle's `shared`).
    pub fn share_current(&self) -> bool {
        self.shared && self.share_reviewed.as_deref() == Some(self.definition_digest().as_str())
    }

    /// Tools served in a version the digest does not name: a changed tool
    /// whose approved version stays beside its candidate, a tool the
    /// definition no longer lists that keeps its approved pin (testers
    /// may use either while the change is reviewed).
    pub(super) fn pending_beside_approved(&self) -> Vec<String> {
        let listed: BTreeSet<&str> = self
            .definition
            .iter()
            .filter_map(|t| t.get("name").and_then(Json::as_str))
            .collect();
        self.tools
            .iter()
            .filter(|(n, p)| {
                p.approved.is_some() && (p.candidate.is_some() || !listed.contains(n.as_str()))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}
