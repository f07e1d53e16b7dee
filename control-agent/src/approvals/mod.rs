//! Approvals of held calls: the one place a fleet's gateways ask whether a
//! risky call may go on, and approvers answer.
//!
//! A gateway *claims* a call's binding (principal, server, tool, argument
//! digest). The first claim opens a pending approval; approvers approve or
//! deny it out of band (API and CLI, with their own tokens — never through
//! an MCP session). Once enough distinct approvers said yes, the next claim
//! of the same binding takes the approval: single use, within `expires`
//! of the last approval, and the answer is signed with the bundle key so a
//! gateway trusts it as it trusts bundles. Claims are serialised here, so
//! one approval serves one call across the whole fleet.
//!
//! An approver may not approve a call made by a principal they are (their
//! name, or a principal the approvers file lists for them, compared without
//! case, with or without the tenant), counts once however often they
//! approve, and sees only the tenants the file gives them (all if none); a
//! name the file does not hold sees nothing.
//! The agent checks that the arguments it shows approvers are the ones the
//! digest binds, and refuses arguments too large to show whole. A denial
//! holds for the binding until its pending time ends (a denied agent cannot
//! flood approvers by retrying). Every change is written to disk before it
//! is answered: an approval is never handed out twice, even across a crash.
//!
//! The queue's parts: `types` (claims, approvals, decisions, grants),
//! `approvers` (the approvers file), `file` (where approvals are kept),
//! `error` (why a claim or an answer was refused); this module is the
//! state machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use warden_config::archive::APPROVAL_GRANT_TYP as GRANT_TYP;
use warden_config::person::Person;

use crate::build::Signer;

mod approvers;
mod error;
mod file;
mod types;

pub use approvers::Approver;
pub(crate) use approvers::{check_one_person, parse_approvers};
pub use error::{ClaimRefused, Refused};
pub use file::{ApprovalBackend, JsonFile};
pub use types::{Approval, ApprovalView, Claim, ClaimAnswer, Decision, Grant, State, Verdict};

/// Open approvals one principal may have waiting at once.
const MAX_PENDING_PER_PRINCIPAL: usize = 50;

/// Whether a gateway named an unauthenticated caller (`anonymous~` and 16
/// hex digits: see `warden_filters::guards::approval`); no authenticated
/// principal's holder is spelled so.
fn is_anonymous_holder(holder: &str) -> bool {
    holder.strip_prefix("anonymous~").is_some_and(|d| {
        d.len() == 16
            && d.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
/// Approvals kept in all (finished ones are dropped first, oldest first).
const MAX_KEPT: usize = 20_000;
/// Finished approvals are kept this long for `list --all` and audit.
const KEEP_FINISHED: Duration = Duration::from_secs(7 * 86_400);
/// The most argument text a held call may have: approvers see all of it.
const MAX_SHOWN_ARGS: usize = 64 * 1024;
/// Approvals waiting at once, in all.
const MAX_PENDING: usize = 10_000;

/// The longest name a claim may hold (tenant, principal, server, tool …).
pub const MAX_CLAIM_NAME: usize = 1024;
/// The most tenants a claim may name in `for_tenants`.
pub const MAX_CLAIM_TENANTS: usize = 64;
/// The part of a claim's reason or justification that is kept.
pub const MAX_CLAIM_TEXT: usize = 4096;

pub struct Approvals {
    backend: Box<dyn ApprovalBackend>,
    inner: Mutex<BTreeMap<String, Approval>>,
    pub approvers: BTreeMap<String, Approver>,
}

impl Approvals {
    /// Opens the approvals kept in `dir` (`approvals.json`), with the
    /// approvers' token digests.
    pub fn open(dir: &Path, approvers: BTreeMap<String, Approver>) -> anyhow::Result<Approvals> {
        Self::with_backend(Box::new(JsonFile::new(dir)), approvers)
    }

    /// Opens the approvals `backend` keeps, with the approvers' token
    /// digests.
    pub fn with_backend(
        backend: Box<dyn ApprovalBackend>,
        approvers: BTreeMap<String, Approver>,
    ) -> anyhow::Result<Approvals> {
        let kept = backend.load()?;
        Ok(Approvals {
            backend,
            inner: Mutex::new(kept),
            approvers,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Approval>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps every approval, dropping finished ones past their keep time.
    fn save(&self, all: &mut BTreeMap<String, Approval>, now: SystemTime) -> std::io::Result<()> {
        all.retain(|_, a| {
            matches!(a.state(now), State::Pending | State::Approved)
                || now.duration_since(a.requested_at).unwrap_or_default() < KEEP_FINISHED
        });
        if all.len() > MAX_KEPT {
            let mut finished: Vec<(SystemTime, String)> = all
                .values()
                .filter(|a| !matches!(a.state(now), State::Pending | State::Approved))
                .map(|a| (a.requested_at, a.id.clone()))
                .collect();
            finished.sort();
            for (_, id) in finished.into_iter().take(all.len() - MAX_KEPT) {
                all.remove(&id);
            }
        }
        self.backend.save(all)
    }

    /// A gateway's claim of a held call (see the module docs).
    pub fn claim(
        &self,
        mut c: Claim,
        signer: Option<&Signer>,
        now: SystemTime,
    ) -> Result<ClaimAnswer, ClaimRefused> {
        let binding = Self::check_claim(&mut c)?;
        let mut all = self.lock();
        // The newest approval of this binding still in play.
        let open = all
            .values_mut()
            .filter(|a| a.binding == binding)
            .filter(|a| match a.state(now) {
                State::Pending | State::Approved => true,
                // A denial holds until its pending time ends.
                State::Denied => now <= a.pending_until,
                State::Used | State::Expired => false,
            })
            .max_by_key(|a| a.requested_at);
        let mut changed = true;
        let answer = match open {
            Some(a) => self.claim_open(a, &c, &binding, signer, now, &mut changed)?,
            None => Self::claim_new(&mut all, c, binding, now)?,
        };
        if changed {
            // Recorded before it is answered: a used approval stays used.
            if let Err(e) = self.save(&mut all, now) {
                tracing::error!(error = %e, "cannot persist approvals");
                if let ClaimAnswer::Approved { id, .. } = &answer {
                    if let Some(a) = all.get_mut(id) {
                        a.used_at = None;
                        a.used_by = None;
                    }
                }
                return Err(ClaimRefused::Unrecorded(e.to_string()));
            }
        }
        Ok(answer)
    }

    /// Checks a claim's fields (what names the call is refused when longer
    /// than any name; what explains it is cut) and the arguments against
    /// their digest; answers the call's binding.
    fn check_claim(c: &mut Claim) -> Result<String, ClaimRefused> {
        // Every field is bounded: the table holds thousands of approvals and
        // is written whole. What names the call (and binds the grant) is
        // refused when longer than any name; what explains it is cut.
        for (name, v) in [
            ("tenant", &c.tenant),
            ("principal", &c.principal),
            ("server", &c.server),
            ("tool", &c.tool),
            ("risk", &c.risk),
            ("gateway", &c.gateway),
        ] {
            if v.len() > MAX_CLAIM_NAME {
                return Err(ClaimRefused::Malformed(name));
            }
        }
        if [&c.trace_id, &c.nonce]
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_CLAIM_NAME))
        {
            return Err(ClaimRefused::Malformed("trace_id or nonce"));
        }
        if c.for_tenants.len() > MAX_CLAIM_TENANTS
            || c.for_tenants.iter().any(|t| t.len() > MAX_CLAIM_NAME)
        {
            return Err(ClaimRefused::Malformed("for_tenants"));
        }
        crate::cut_bytes(&mut c.reason, MAX_CLAIM_TEXT);
        if let Some(j) = c.justification.as_mut() {
            crate::cut_bytes(j, MAX_CLAIM_TEXT);
        }
        if !c.args_digest.starts_with("sha256:") || c.args_digest.len() != 71 {
            return Err(ClaimRefused::Malformed("args_digest"));
        }
        if c.required == 0 || c.required > warden_config::guards::MAX_APPROVERS {
            return Err(ClaimRefused::Malformed("required"));
        }
        if c.arguments.len() > MAX_SHOWN_ARGS {
            return Err(ClaimRefused::TooLarge(c.arguments.len()));
        }
        // Approvers are shown exactly what the digest binds.
        if warden_filters::chain::plan::args_digest(&c.arguments) != c.args_digest {
            return Err(ClaimRefused::DigestMismatch);
        }
        Ok(warden_filters::guards::approval::binding(
            &c.tenant,
            &c.principal,
            &c.server,
            &c.tool,
            &c.args_digest,
        ))
    }

    /// A claim of a binding whose approval is in play: it takes an
    /// approved one (single use); `changed` says whether the approval
    /// changed (and is kept before the answer).
    fn claim_open(
        &self,
        a: &mut Approval,
        c: &Claim,
        binding: &str,
        signer: Option<&Signer>,
        now: SystemTime,
        changed: &mut bool,
    ) -> Result<ClaimAnswer, ClaimRefused> {
        // The most approvers any claim of this call asked for.
        let mut raised = c.required > a.required;
        if raised {
            a.required = c.required;
        }
        // Every tenant any claim named as deciding (a bundle that
        // now holds the call by the owner's rules too): an
        // approval given by approvers who do not see each of them
        // no longer counts.
        let widened: Vec<String> = c
            .for_tenants
            .iter()
            .filter(|t| !a.for_tenants.contains(t))
            .cloned()
            .collect();
        if !widened.is_empty() {
            raised = true;
            a.for_tenants.extend(widened);
            let keep: Vec<bool> = a
                .decisions
                .iter()
                .map(|d| {
                    d.verdict != Verdict::Approve
                        || self
                            .approvers
                            .get(&d.approver)
                            .is_some_and(|w| w.decides(a))
                })
                .collect();
            let mut k = keep.into_iter();
            a.decisions.retain(|_| k.next().unwrap_or(false));
        }
        if raised && a.approvers().len() < usize::from(a.required) {
            a.approved_at = None;
        }
        Ok(match a.state(now) {
            State::Approved => {
                let approvers: Vec<Decision> = a
                    .decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Approve)
                    .cloned()
                    .collect();
                let grant = match signer {
                    Some(s) => Some(
                        warden_config::archive::sign_claims(
                            &Grant {
                                id: a.id.clone(),
                                binding: binding.to_owned(),
                                approvers: approvers.clone(),
                                used_at: now,
                                gateway: c.gateway.clone(),
                                nonce: c.nonce.clone(),
                            },
                            &s.pem,
                            s.alg,
                            &s.keyid,
                            GRANT_TYP,
                        )
                        .map_err(ClaimRefused::Signing)?,
                    ),
                    None => None,
                };
                a.used_at = Some(now);
                a.used_by = Some(c.gateway.clone());
                ClaimAnswer::Approved {
                    id: a.id.clone(),
                    approvers,
                    grant,
                }
            }
            State::Denied => {
                *changed = raised || !a.denial_told;
                a.denial_told = true;
                let by = a
                    .decisions
                    .iter()
                    .find(|d| d.verdict == Verdict::Deny)
                    .cloned()
                    .expect("a denied approval has a denial");
                ClaimAnswer::Denied {
                    id: a.id.clone(),
                    by,
                }
            }
            _ => {
                *changed = raised;
                ClaimAnswer::Pending {
                    id: a.id.clone(),
                    required: a.required,
                    approvals: a.approvers().len(),
                    expires_at: a.pending_until,
                    created: false,
                }
            }
        })
    }

    /// The first claim of a binding: a new pending approval, within the
    /// bounds of the table and of the principal's share of it.
    fn claim_new(
        all: &mut BTreeMap<String, Approval>,
        c: Claim,
        binding: String,
        now: SystemTime,
    ) -> Result<ClaimAnswer, ClaimRefused> {
        let pending: Vec<&Approval> = all
            .values()
            .filter(|a| a.state(now) == State::Pending)
            .collect();
        if pending.len() >= MAX_PENDING {
            return Err(ClaimRefused::Full);
        }
        // Unauthenticated callers are one holder per session or
        // address (`anonymous~<digest>`): a client opening sessions
        // as fast as it can would otherwise fill the whole table.
        // Together they hold one principal's share of their tenant.
        let anonymous = is_anonymous_holder(&c.principal);
        let waiting = pending
            .iter()
            .filter(|a| {
                a.tenant == c.tenant
                    && (a.principal == c.principal
                        || (anonymous && is_anonymous_holder(&a.principal)))
            })
            .count();
        if waiting >= MAX_PENDING_PER_PRINCIPAL {
            return Err(ClaimRefused::TooMany);
        }
        let id = new_id();
        let pending_until = now + Duration::from_secs(c.pending_secs.clamp(1, 7 * 86_400));
        let arguments = c.arguments;
        all.insert(
            id.clone(),
            Approval {
                id: id.clone(),
                binding,
                tenant: c.tenant,
                principal: c.principal,
                server: c.server,
                tool: c.tool,
                args_digest: c.args_digest,
                arguments,
                risk: c.risk,
                reason: c.reason,
                justification: c.justification,
                required: c.required,
                requested_at: now,
                pending_until,
                grant_secs: c.grant_secs.clamp(1, 86_400),
                requested_by: c.gateway,
                for_tenants: c.for_tenants,
                trace_id: c.trace_id,
                decisions: Vec::new(),
                approved_at: None,
                used_at: None,
                used_by: None,
                denial_told: false,
            },
        );
        Ok(ClaimAnswer::Pending {
            id,
            required: c.required,
            approvals: 0,
            expires_at: pending_until,
            created: true,
        })
    }

    /// An approver's answer to approval `id`: the approval as it stands
    /// after it.
    pub fn decision(
        &self,
        id: &str,
        approver: &str,
        verdict: Verdict,
        comment: Option<String>,
        now: SystemTime,
    ) -> Result<ApprovalView, Refused> {
        // A name the approvers file does not hold sees nothing: were it
        // taken as a default approver it would see every tenant.
        let Some(who) = self.approvers.get(approver).cloned() else {
            return Err(Refused::NotFound);
        };
        let mut all = self.lock();
        let a = all
            .get_mut(id)
            .filter(|a| who.shown(a))
            .ok_or(Refused::NotFound)?;
        if !who.decides(a) {
            return Err(Refused::NotTheirs);
        }
        if who.is(approver, &a.tenant, &a.principal) {
            return Err(Refused::SelfApproval);
        }
        match a.state(now) {
            State::Pending => {}
            // A granted but unused approval may still be withdrawn.
            State::Approved if verdict == Verdict::Deny => {}
            s => return Err(Refused::Finished(s.as_str())),
        }
        // Distinct approvers are distinct people (the file holds no two
        // entries that are one person; compared canonically all the same).
        let me = Person::parse(approver).ok();
        if verdict == Verdict::Approve
            && a.approvers().iter().any(|other| {
                *other == approver
                    || Person::parse(other)
                        .ok()
                        .zip(me.as_ref())
                        .is_some_and(|(o, m)| o.same(m))
            })
        {
            return Err(Refused::Already(approver.to_owned()));
        }
        a.decisions.push(Decision {
            approver: approver.to_owned(),
            verdict,
            at: now,
            comment: comment.map(|c| c.chars().take(500).collect()),
        });
        if a.approved_at.is_none() && a.approvers().len() >= usize::from(a.required) {
            a.approved_at = Some(now);
        }
        let view = a.view_of(now);
        if let Err(e) = self.save(&mut all, now) {
            tracing::error!(error = %e, "cannot persist approvals");
            if let Some(a) = all.get_mut(id) {
                a.decisions.pop();
                if a.approvers().len() < usize::from(a.required) {
                    a.approved_at = None;
                }
            }
            return Err(Refused::Unrecorded);
        }
        Ok(view)
    }

    /// One approval, if `viewer` sees its tenant (`None`: the admin).
    pub fn get_view(
        &self,
        id: &str,
        viewer: Option<&str>,
        now: SystemTime,
    ) -> Option<ApprovalView> {
        self.lock()
            .get(id)
            .filter(|a| self.visible(viewer, a))
            .map(|a| a.view_of(now))
    }

    fn visible(&self, viewer: Option<&str>, a: &Approval) -> bool {
        match viewer {
            None => true,
            Some(name) => self.approvers.get(name).is_some_and(|w| w.shown(a)),
        }
    }

    /// Pending and approved-but-unused approvals, oldest first (`all`: every
    /// kept one), of the tenants `viewer` sees (`None`: the admin, all).
    pub fn list_view(&self, all: bool, viewer: Option<&str>, now: SystemTime) -> Vec<ApprovalView> {
        let mut v: Vec<&Approval> = Vec::new();
        let guard = self.lock();
        for a in guard.values() {
            if (all || matches!(a.state(now), State::Pending | State::Approved))
                && self.visible(viewer, a)
            {
                v.push(a);
            }
        }
        v.sort_by_key(|a| a.requested_at);
        v.into_iter().map(|a| a.view_of(now)).collect()
    }

    /// The tenant of approval `id`, if it is kept.
    pub fn tenant_of(&self, id: &str) -> Option<String> {
        self.lock().get(id).map(|a| a.tenant.clone())
    }

    /// As [`Approvals::list_view`], for a tenant admin: only the approvals of
    /// `tenants` (compared by the tenant scope key,
    /// [`warden_config::person::in_scope`]; never empty here, which would be
    /// every tenant).
    pub fn list_in_view(
        &self,
        all: bool,
        tenants: &[String],
        now: SystemTime,
    ) -> Vec<ApprovalView> {
        if tenants.is_empty() {
            return Vec::new();
        }
        let guard = self.lock();
        let mut v: Vec<&Approval> = guard
            .values()
            .filter(|a| all || matches!(a.state(now), State::Pending | State::Approved))
            .filter(|a| warden_config::person::in_scope(tenants, &a.tenant))
            .collect();
        v.sort_by_key(|a| a.requested_at);
        v.into_iter().map(|a| a.view_of(now)).collect()
    }

    /// Approvals waiting for approvers, and how long the oldest has waited.
    pub fn waiting(&self, now: SystemTime) -> (usize, Duration) {
        let guard = self.lock();
        let waiting: Vec<&Approval> = guard
            .values()
            .filter(|a| a.state(now) == State::Pending)
            .collect();
        let oldest = waiting
            .iter()
            .map(|a| now.duration_since(a.requested_at).unwrap_or_default())
            .max()
            .unwrap_or_default();
        (waiting.len(), oldest)
    }
}

/// `ap_` and 26 base32 characters (128 random bits).
fn new_id() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system's random source");
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("ap_");
    let mut acc: u32 = 0;
    let mut bits = 0;
    for byte in b {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
