//! The state machine: a gateway's claim of a held call (a new pending
//! approval, or the one in play taken, single use, with its signed grant)
//! and an approver's decision, each made in a turn and kept before it is
//! answered.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use warden_config::archive::APPROVAL_GRANT_TYP as GRANT_TYP;
use warden_config::person::Person;

use crate::build::Signer;

use super::turn::undo;
use super::{
    new_id, Approval, ApprovalView, Approvals, Approver, Claim, ClaimAnswer, ClaimRefused, Decider,
    Decision, Grant, Refused, State, Unavailable, Verdict, MAX_CLAIM_NAME, MAX_CLAIM_TENANTS,
    MAX_CLAIM_TEXT, MAX_PENDING, MAX_PENDING_PER_PRINCIPAL, MAX_SHOWN_ARGS,
};

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

impl Approvals {
    /// A gateway's claim of a held call (see the module docs).
    pub fn claim(
        &self,
        mut c: Claim,
        signer: Option<&Signer>,
        now: SystemTime,
    ) -> Result<ClaimAnswer, ClaimRefused> {
        // `~grant` is the server of just-in-time grants' requests, which
        // no gateway claims (a bundle's server names never begin so).
        if c.server.starts_with('~') {
            return Err(ClaimRefused::Malformed("server"));
        }
        let binding = Self::check_claim(&mut c)?;
        // With a shared backend, every other agent's claims wait until this
        // one is kept, and this one sees what they (and their approvers)
        // did: one approval serves one call fleet-wide.
        let mut turn = self.write()?;
        let all = &mut turn.inner.all;
        // The newest approval of this binding still in play.
        let open = all
            .values()
            .filter(|a| a.binding == binding && a.in_play(now))
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
    pub(super) fn check_claim(c: &mut Claim) -> Result<String, ClaimRefused> {
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
        // The highest risk any claim of this call named (a bundle that now
        // tiers the tool higher): approvals given for the lower tier no
        // longer count, since a CRITICAL one asks more of its approvers (a
        // recent sign-in) than a LOW one did.
        let rank = |r: &str| {
            ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
                .iter()
                .position(|x| x.eq_ignore_ascii_case(r)) // not a name comparison: risk tiers
        };
        if rank(&c.risk) > rank(&a.risk) {
            raised = true;
            a.risk = c.risk.clone();
            a.decisions.retain(|d| d.verdict != Verdict::Approve);
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
                        || match (self.approvers.get(&d.approver), &d.decider) {
                            (Some(w), _) => w.decides(a),
                            (None, Some(x)) => Approver {
                                tenants: x.tenants.clone(),
                                ..Approver::default()
                            }
                            .decides(a),
                            (None, None) => false,
                        }
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
    pub(super) fn claim_new(
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
                notified: Vec::new(),
                jit: false,
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
        self.decision_by(id, approver, None, verdict, comment, now)
    }

    /// The people an earlier decision's approver was: those the approvers
    /// file gives the name, else the name and the principals the decision
    /// kept (an approver signed in through the provider).
    fn people_of(&self, d: &Decision) -> Vec<Person> {
        match (self.approvers.get(&d.approver), &d.decider) {
            (Some(w), _) => w.people(&d.approver),
            (None, Some(x)) => Approver {
                principals: x.principals.clone(),
                ..Approver::default()
            }
            .people(&d.approver),
            (None, None) => Person::parse(&d.approver).into_iter().collect(),
        }
    }

    /// As [`Approvals::decision`], by `signed_in` when given: an approver
    /// the approvers file does not hold, whom the identity provider made
    /// one (their principals and tenants), kept with the decision.
    pub fn decision_by(
        &self,
        id: &str,
        approver: &str,
        signed_in: Option<&Approver>,
        verdict: Verdict,
        comment: Option<String>,
        now: SystemTime,
    ) -> Result<ApprovalView, Refused> {
        // A name the approvers file does not hold sees nothing: were it
        // taken as a default approver it would see every tenant.
        let file = self.approvers.get(approver).cloned();
        let Some(who) = signed_in.cloned().or(file) else {
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
        // Whoever asked a just-in-time grant does not approve it: one
        // person would otherwise widen a principal's access alone (a tenant
        // admin who is also an approver of the tenant, say).
        if a.jit
            && super::jit::asked_by(a).is_some_and(|asker| {
                use warden_config::names::{name_key, Name};
                name_key(Name::Person, asker) == name_key(Name::Person, approver)
            })
        {
            return Err(Refused::SelfApproval);
        }
        match a.state(now) {
            State::Pending => {}
            // A granted but unused approval may still be withdrawn.
            State::Approved if verdict == Verdict::Deny => {}
            s => return Err(Refused::Finished(s.as_str())),
        }
        // Distinct approvers are distinct people: by name, and by every
        // person each is (the file's principals, a signed-in approver's),
        // so one person with a token and a sign-in counts once.
        let me = who.people(approver);
        if verdict == Verdict::Approve
            && a.decisions
                .iter()
                .filter(|d| d.verdict == Verdict::Approve)
                .any(|d| {
                    d.approver == approver
                        || self
                            .people_of(d)
                            .iter()
                            .any(|o| me.iter().any(|m| m.same(o)))
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
            decider: signed_in.map(|w| Decider {
                principals: w.principals.clone(),
                tenants: w.tenants.clone(),
            }),
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
}
