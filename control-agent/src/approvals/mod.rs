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
//! Several agents may keep the approvals together on one PostgreSQL
//! database ([`Approvals::on_database`]). Then every change (a claim, a
//! decision) runs in a turn: a transaction holding the approvals'
//! fleet-wide lock, in which the memory is brought up to date first when
//! another agent changed the approvals since, then changed, written and
//! committed; a change whose turn cannot be taken or committed is refused
//! ([`Unavailable`], 503) and leaves nothing behind. So claims are
//! serialised fleet-wide, and an approval is handed out once whichever
//! agents its claims reach. Reads (lists, one approval, what waits) serve
//! the memory, which [`Approvals::catch_up`] brings up to date when
//! another agent says it changed the approvals.
//!
//! The queue's parts: `types` (claims, approvals, decisions, grants),
//! `approvers` (the approvers file), `file` (where approvals are kept, and
//! what a backend is), `postgres` (kept on a shared database), `error`
//! (why a claim or an answer was refused); this module is the state
//! machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use warden_config::archive::APPROVAL_GRANT_TYP as GRANT_TYP;
use warden_config::person::Person;

use crate::build::Signer;

mod approvers;
mod error;
mod file;
pub mod postgres;
mod types;

pub use approvers::Approver;
pub(crate) use approvers::{check_one_person, parse_approvers};
pub use error::{ClaimRefused, Refused, Unavailable};
pub use file::{ApprovalBackend, Changes, JsonFile};
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

/// The approvals in memory.
struct Inner {
    all: BTreeMap<String, Approval>,
    /// The backend's generation this memory holds (`None`: unknown, or
    /// the backend is this agent's alone): another agent changed the
    /// approvals when the backend's differs, and they are loaded again.
    loaded: Option<u64>,
}

/// A test's code run inside a claim's or a decision's turn, after it wrote
/// and before it commits.
#[cfg(test)]
pub(crate) type TestHook = Box<dyn FnOnce() + Send>;

pub struct Approvals {
    backend: Box<dyn ApprovalBackend>,
    /// Held for a whole change (its turn), taken before `inner`: readers,
    /// who take `inner` alone, never wait for another agent's turn.
    turns: Mutex<()>,
    inner: Mutex<Inner>,
    pub approvers: BTreeMap<String, Approver>,
    /// Run once in the next turn that wrote, before it commits.
    #[cfg(test)]
    pub(crate) before_commit: Mutex<Option<TestHook>>,
}

impl Approvals {
    /// Opens the approvals kept in `dir` (`approvals.json`), with the
    /// approvers' token digests.
    pub fn open(dir: &Path, approvers: BTreeMap<String, Approver>) -> anyhow::Result<Approvals> {
        Self::with_backend(Box::new(JsonFile::new(dir)), approvers)
    }

    /// Opens the approvals kept on the PostgreSQL database at `url`
    /// (migrated: [`crate::pg::migrate`]), shared with the other agents on
    /// it, with the approvers' token digests.
    pub fn on_database(
        url: &str,
        approvers: BTreeMap<String, Approver>,
    ) -> anyhow::Result<Approvals> {
        Self::with_backend(Box::new(postgres::Postgres::connect(url)?), approvers)
    }

    /// Opens the approvals `backend` keeps, with the approvers' token
    /// digests.
    pub fn with_backend(
        backend: Box<dyn ApprovalBackend>,
        approvers: BTreeMap<String, Approver>,
    ) -> anyhow::Result<Approvals> {
        // Read first: a change another agent makes while this one loads
        // leaves the memory older than the generation, and loaded again.
        let loaded = backend.generation()?;
        let all = backend.load()?;
        Ok(Approvals {
            backend,
            turns: Mutex::new(()),
            inner: Mutex::new(Inner { all, loaded }),
            approvers,
            #[cfg(test)]
            before_commit: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory, taken to change the approvals: with a shared backend,
    /// inside a turn (every other agent's change waits), brought up to
    /// date first when another agent changed the approvals since. Fails
    /// when the backend cannot give the turn or bring the memory up to
    /// date: nothing may change then.
    fn write(&self) -> Result<Turn<'_>, Unavailable> {
        let turn = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.backend.begin().map_err(Unavailable::of)?;
        let mut inner = self.lock();
        if let Some(g) = g {
            if inner.loaded != Some(g) {
                let since = inner.loaded;
                if let Err(e) = self.backend.reload(&mut inner.all, since) {
                    self.backend.rollback();
                    inner.loaded = None;
                    return Err(Unavailable::of(e));
                }
                inner.loaded = Some(g);
            }
        }
        Ok(Turn {
            ap: self,
            inner,
            _turn: turn,
            shared: g.is_some(),
            wrote: false,
        })
    }

    /// Brings the memory up to date when the backend is shared and another
    /// agent changed the approvals since it was loaded: how an agent that
    /// changes nothing itself lists what the others decided (called when
    /// another agent says it changed the approvals, and every few seconds).
    pub fn catch_up(&self) -> anyhow::Result<()> {
        let Some(g) = self.backend.generation()? else {
            return Ok(());
        };
        if self.lock().loaded == Some(g) {
            return Ok(());
        }
        // A turn loads again; it writes nothing, so it bumps nothing.
        self.write()?.commit()?;
        Ok(())
    }

    /// Keeps every approval, dropping finished ones past their keep time;
    /// `changed`: the approvals this change added or changed. When it
    /// cannot be kept, the memory is as it was (the dropped ones back).
    fn keep(&self, turn: &mut Turn<'_>, changed: &[&str], now: SystemTime) -> std::io::Result<()> {
        let all = &mut turn.inner.all;
        let mut gone: BTreeSet<String> = all
            .values()
            .filter(|a| {
                !(matches!(a.state(now), State::Pending | State::Approved)
                    || now.duration_since(a.requested_at).unwrap_or_default() < KEEP_FINISHED)
            })
            .map(|a| a.id.clone())
            .collect();
        let left = all.len() - gone.len();
        if left > MAX_KEPT {
            let mut finished: Vec<(SystemTime, String)> = all
                .values()
                .filter(|a| !matches!(a.state(now), State::Pending | State::Approved))
                .filter(|a| !gone.contains(&a.id))
                .map(|a| (a.requested_at, a.id.clone()))
                .collect();
            finished.sort();
            gone.extend(finished.into_iter().take(left - MAX_KEPT).map(|(_, id)| id));
        }
        let dropped: Vec<Approval> = gone.iter().filter_map(|id| all.remove(id)).collect();
        let changes = Changes {
            changed: changed
                .iter()
                .filter(|id| all.contains_key(**id))
                .map(|id| (*id).to_owned())
                .collect(),
            removed: gone.into_iter().collect(),
        };
        turn.wrote |= !changes.is_empty();
        let res = self.backend.save(&turn.inner.all, &changes);
        if res.is_err() {
            for a in dropped {
                turn.inner.all.insert(a.id.clone(), a);
            }
        }
        res
    }

    /// A gateway's claim of a held call (see the module docs).
    pub fn claim(
        &self,
        mut c: Claim,
        signer: Option<&Signer>,
        now: SystemTime,
    ) -> Result<ClaimAnswer, ClaimRefused> {
        let binding = Self::check_claim(&mut c)?;
        // With a shared backend, every other agent's claims wait until this
        // one is kept, and this one sees what they (and their approvers)
        // did: one approval serves one call fleet-wide.
        let mut turn = self.write()?;
        let all = &mut turn.inner.all;
        // The newest approval of this binding still in play.
        let open = all
            .values()
            .filter(|a| a.binding == binding)
            .filter(|a| match a.state(now) {
                State::Pending | State::Approved => true,
                // A denial holds until its pending time ends.
                State::Denied => now <= a.pending_until,
                State::Used | State::Expired => false,
            })
            .max_by_key(|a| a.requested_at)
            .map(|a| a.id.clone());
        // The approval as it was, to undo a change that is not kept.
        let before = open.as_ref().and_then(|id| all.get(id)).cloned();
        let mut changed = true;
        let answer = match open.as_ref().and_then(|id| all.get_mut(id)) {
            Some(a) => self.claim_open(a, &c, &binding, signer, now, &mut changed),
            None => Self::claim_new(all, c, binding, now),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // Refused: nothing changed (the turn ends undone).
                undo(all, open.as_deref().unwrap_or_default(), before);
                return Err(e);
            }
        };
        // Recorded before it is answered: a used approval stays used.
        let kept = if changed {
            self.keep(&mut turn, &[answer.id()], now).map_err(|e| {
                tracing::error!(error = %e, "cannot persist approvals");
                if turn.shared {
                    ClaimRefused::Unavailable(Unavailable::of(e))
                } else {
                    ClaimRefused::Unrecorded(e.to_string())
                }
            })
        } else {
            Ok(())
        };
        match kept.and_then(|()| turn.commit().map_err(ClaimRefused::from)) {
            Ok(()) => Ok(answer),
            Err(e) => {
                // Not kept: not answered, and the memory as it was (the
                // turn ends undone; the database undid what it wrote).
                undo(&mut turn.inner.all, answer.id(), before);
                Err(e)
            }
        }
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
        // With a shared backend: decided on what every agent kept, and
        // kept before any other agent's claim looks at it.
        let mut turn = self.write()?;
        let all = &mut turn.inner.all;
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
        let before = a.clone();
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
        let kept = self.keep(&mut turn, &[id], now).map_err(|e| {
            tracing::error!(error = %e, "cannot persist approvals");
            if turn.shared {
                Refused::Unavailable(Unavailable::of(e))
            } else {
                Refused::Unrecorded
            }
        });
        match kept.and_then(|()| turn.commit().map_err(Refused::from)) {
            Ok(()) => Ok(view),
            Err(e) => {
                // Not kept: the decision is not made (the turn ends undone).
                undo(&mut turn.inner.all, id, Some(before));
                Err(e)
            }
        }
    }

    /// One approval, if `viewer` sees its tenant (`None`: the admin).
    pub fn get_view(
        &self,
        id: &str,
        viewer: Option<&str>,
        now: SystemTime,
    ) -> Option<ApprovalView> {
        self.lock()
            .all
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
        for a in guard.all.values() {
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
        self.lock().all.get(id).map(|a| a.tenant.clone())
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
            .all
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
            .all
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

/// Puts approval `id` back as it was before a change that was not kept
/// (`None`: it did not exist).
fn undo(all: &mut BTreeMap<String, Approval>, id: &str, before: Option<Approval>) {
    match before {
        Some(a) => {
            all.insert(a.id.clone(), a);
        }
        None => {
            all.remove(id);
        }
    }
}

/// The approvals' memory held for a change (see [`Approvals::write`]):
/// ended by [`Turn::commit`]; dropped before, the turn ends undone.
struct Turn<'a> {
    ap: &'a Approvals,
    inner: MutexGuard<'a, Inner>,
    _turn: MutexGuard<'a, ()>,
    /// A turn of a shared backend is open.
    shared: bool,
    /// The turn wrote something.
    wrote: bool,
}

impl Turn<'_> {
    /// Ends the turn keeping what it wrote; the memory then holds the
    /// generation the commit made. A commit that fails leaves the memory
    /// to be loaded again at the next turn (whether the database kept the
    /// change is not known: an approval is then lost, never given twice).
    fn commit(&mut self) -> Result<(), Unavailable> {
        if !std::mem::take(&mut self.shared) {
            return Ok(());
        }
        #[cfg(test)]
        if self.wrote {
            let hook = self
                .ap
                .before_commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        match self.ap.backend.commit() {
            Ok(g) => {
                self.inner.loaded = g;
                Ok(())
            }
            Err(e) => {
                self.inner.loaded = None;
                Err(Unavailable::of(e))
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !std::mem::take(&mut self.shared) {
            return;
        }
        self.ap.backend.rollback();
        // What was written is undone by the database; the memory too, by
        // the caller, but for a panic: then it is loaded again.
        if self.wrote || std::thread::panicking() {
            self.inner.loaded = None;
        }
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
mod shared_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
