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
//! (why a claim or an answer was refused), `claims` (the state machine:
//! claims and approvers' decisions), `turn` (a change's turn: the memory
//! brought up to date, kept, committed or undone); this module holds the
//! queue, its bounds and its reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

mod approvers;
mod claims;
mod error;
mod file;
pub mod jit;
pub mod postgres;
mod turn;
mod types;

pub use approvers::Approver;
pub(crate) use approvers::{check_one_person, parse_approvers};
pub use error::{ClaimRefused, Refused, Unavailable};
pub use file::{ApprovalBackend, Changes, JsonFile};
pub use types::{
    Approval, ApprovalView, Claim, ClaimAnswer, Decider, Decision, Grant, State, Verdict,
};

/// Open approvals one principal may have waiting at once.
const MAX_PENDING_PER_PRINCIPAL: usize = 50;

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

    /// Pending and approved-but-unused approvals (`all`: every kept one),
    /// oldest first, those `who` is shown: an approver the approvers file
    /// does not hold, whom the identity provider made one.
    pub fn list_shown_to(&self, who: &Approver, all: bool, now: SystemTime) -> Vec<ApprovalView> {
        let guard = self.lock();
        let mut v: Vec<&Approval> = guard
            .all
            .values()
            .filter(|a| all || matches!(a.state(now), State::Pending | State::Approved))
            .filter(|a| who.shown(a))
            .collect();
        v.sort_by_key(|a| a.requested_at);
        v.into_iter().map(|a| a.view_of(now)).collect()
    }

    /// One approval, if `who` (as [`Approvals::list_shown_to`]) is shown it.
    pub fn get_shown_to(&self, id: &str, who: &Approver, now: SystemTime) -> Option<ApprovalView> {
        self.lock()
            .all
            .get(id)
            .filter(|a| who.shown(a))
            .map(|a| a.view_of(now))
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

    /// Keeps that webhook `hook` took the notification of approval `id`
    /// (no approval of that id: nothing to keep).
    pub fn mark_notified(&self, id: &str, hook: &str, now: SystemTime) -> Result<(), Unavailable> {
        let mut turn = self.write()?;
        let Some(a) = turn.inner.all.get_mut(id) else {
            return Ok(());
        };
        if a.notified.iter().any(|h| h == hook) {
            return Ok(());
        }
        let before = a.clone();
        a.notified.push(hook.to_owned());
        let kept = self.keep(&mut turn, &[id], now).map_err(Unavailable::of);
        match kept.and_then(|()| turn.commit()) {
            Ok(()) => Ok(()),
            Err(e) => {
                turn::undo(&mut turn.inner.all, id, Some(before));
                Err(e)
            }
        }
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
