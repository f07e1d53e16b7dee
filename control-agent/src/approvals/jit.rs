//! Just-in-time grants' requests: a role or a tool asked for one principal
//! for a stated time, kept as an approval of the reserved server `~grant`
//! (its tool `role:<name>` or `tool:<server>/<name>`), decided by
//! approvers like a held call (the same rules: never by the principal
//! they are, the tenants they see). Once approved it holds until
//! `approved_at + grant_secs` and is listed to gateways
//! ([`Approvals::active_grants`]); a denial withdraws it at any time. No
//! gateway's claim takes it: claims of `~` servers are refused.

use std::time::{Duration, SystemTime};

use super::turn::undo;
use super::{
    Approval, ApprovalView, Approvals, Claim, ClaimAnswer, ClaimRefused, State, Unavailable,
};

/// The reserved server of grants' requests.
pub const GRANT_SERVER: &str = "~grant";

impl Approvals {
    /// Files a request (`c.server` is [`GRANT_SERVER`]): the one of the
    /// same binding still in play (pending, granted, or denied within its
    /// pending time) as it stands, else a new pending one.
    pub fn request_grant(
        &self,
        mut c: Claim,
        now: SystemTime,
    ) -> Result<ApprovalView, ClaimRefused> {
        if c.server != GRANT_SERVER {
            return Err(ClaimRefused::Malformed("server"));
        }
        let binding = Self::check_claim(&mut c)?;
        let mut turn = self.write()?;
        let all = &mut turn.inner.all;
        let open = all
            .values()
            .filter(|a| a.binding == binding && a.jit && a.in_play(now))
            .max_by_key(|a| a.requested_at)
            .map(|a| a.view_of(now));
        if let Some(v) = open {
            return Ok(v);
        }
        let id = match Self::claim_new(all, c, binding, now)? {
            ClaimAnswer::Pending { id, .. } => id,
            other => {
                return Err(ClaimRefused::Unrecorded(format!(
                    "unexpected {}",
                    other.state()
                )))
            }
        };
        if let Some(a) = all.get_mut(&id) {
            a.jit = true;
        }
        let view = all.get(&id).map(|a| a.view_of(now));
        let kept = self
            .keep(&mut turn, &[&id], now)
            .map_err(|e| ClaimRefused::Unavailable(Unavailable::of(e)));
        match kept.and_then(|()| turn.commit().map_err(ClaimRefused::from)) {
            Ok(()) => view.ok_or_else(|| ClaimRefused::Unrecorded("not kept".into())),
            Err(e) => {
                undo(&mut turn.inner.all, &id, None);
                Err(e)
            }
        }
    }

    /// The grants that hold at `now`: approved requests, each with the
    /// moment it ends.
    pub fn active_grants(&self, now: SystemTime) -> Vec<(Approval, SystemTime)> {
        self.lock()
            .all
            .values()
            .filter(|a| a.jit && a.state(now) == State::Approved)
            .filter_map(|a| {
                let at = a.approved_at? + Duration::from_secs(a.grant_secs);
                Some((a.clone(), at))
            })
            .collect()
    }

    /// [`Approvals::active_grants`] as kept now: with a backend shared by
    /// several agents, the memory is first brought up to date (one read of
    /// the generation when nothing changed), and no list is answered when
    /// that fails. An agent cut off from the database would otherwise
    /// list, freshly signed every time, the grants it last saw: one
    /// withdrawn on another agent would hold at every gateway reading this
    /// one until it ends by itself (up to a day), where refused the
    /// gateways ask another agent, or keep what they read last.
    pub fn current_grants(
        &self,
        now: SystemTime,
    ) -> Result<Vec<(Approval, SystemTime)>, Unavailable> {
        self.catch_up().map_err(Unavailable::of)?;
        Ok(self.active_grants(now))
    }
}

/// The name of whoever asked grant request `a` (`requested_by` is
/// `agent:<caller label>`: `admin`, `admin:<name>`, `approver:<name>`).
pub fn asked_by(a: &Approval) -> Option<&str> {
    let label = a.requested_by.strip_prefix("agent:")?;
    Some(
        label
            .strip_prefix("admin:")
            .or_else(|| label.strip_prefix("approver:"))
            .unwrap_or(label),
    )
}
