//! A server's moves through its lifecycle, and sharing a tenant's server
//! with every tenant.

use serde_json::Value as Json;

use super::{check_note, now_text, Done, Event, Refusal, Registry, State};
use crate::admins::Actor;
use warden_config::names::Name;

impl Registry {
    /// Moves a server to `to`: draft→testing, testing→approved (a reviewer
    /// other than the registrant, naming the definition they reviewed by
    /// its digest: `reviewed`), approved→deployed, deployed→deprecated,
    /// any→retired. The moves that put a definition in front of more
    /// principals (to `testing`, `approved`, `deployed`) are refused when
    /// they name a `reviewed` digest that is no longer the definition's (a
    /// console form read before another registration); `approved` must
    /// name one. Deprecating and retiring never wait on a stale page.
    pub fn transition(
        &mut self,
        actor: &Actor,
        server: &str,
        to: State,
        reviewed: Option<&str>,
        note: &str,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        check_note(note)?;
        let (name, s) = self.get_mut(server)?;
        if !Self::readable(actor, s) {
            // Another tenant's server is as good as absent, but refused.
            return Err(Refusal::Forbidden(format!(
                "server `{server}` is not of {}'s tenant",
                actor.label()
            )));
        }
        let from = s.state;
        let legal = matches!(
            (from, to),
            (State::Draft, State::Testing)
                | (State::Testing, State::Approved)
                | (State::Approved, State::Deployed)
                | (State::Deployed, State::Deprecated)
        ) || (to == State::Retired && from != State::Retired);
        if !legal {
            return Err(Refusal::Conflict(format!(
                "server `{server}` is {}: it cannot move to {} (draft → testing → approved → deployed → deprecated; retired from any state but retired)",
                from.as_str(),
                to.as_str()
            )));
        }
        let at = now_text(now);
        if to == State::Approved {
            if !Self::may_review(actor, s) {
                return Err(Refusal::Forbidden(format!(
                    "{} may not review server `{server}`",
                    actor.label()
                )));
            }
            if actor.person() == s.registrant {
                return Err(Refusal::Forbidden(format!(
                    "{} registered the definition under review of `{server}`: a second person approves it",
                    actor.label()
                )));
            }
            s.check_reviewed(&format!("approving `{server}`"), server, reviewed)?;
            for p in s.tools.values_mut() {
                if p.candidate.is_some() {
                    p.approved = p.candidate.take();
                }
            }
            // Tools the approved definition no longer lists lose their pin.
            let listed: std::collections::BTreeSet<String> = s
                .definition
                .iter()
                .filter_map(|t| t.get("name").and_then(Json::as_str).map(str::to_owned))
                .collect();
            s.tools.retain(|n, _| listed.contains(n));
            s.approved_by = Some(actor.label());
            s.approved_at = Some(at.clone());
        } else if !Self::writable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "{} may not move server `{server}`",
                actor.label()
            )));
        } else if matches!(to, State::Testing | State::Deployed) {
            s.check_reviewed_if_named(server, reviewed)?;
        }
        // A server moved back to testing by a re-registration may have been
        // deployed: it returns to deployed through approval.
        let e = Event {
            at: at.clone(),
            actor: actor.label(),
            from: Some(from),
            to,
            note: note.to_owned(),
        };
        if to == State::Retired {
            s.retired_at = Some(at.clone());
        }
        s.state = to;
        s.since = at;
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// A tenant admin (or an org admin) asks to offer a tenant's server to
    /// every tenant.
    pub fn request_share(
        &mut self,
        actor: &Actor,
        server: &str,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        let (name, s) = self.get_mut(server)?;
        if !Self::writable(actor, s) {
            return Err(Refusal::Forbidden(format!(
                "{} may not offer server `{server}`",
                actor.label()
            )));
        }
        if s.tenant.is_none() {
            return Err(Refusal::Conflict(format!(
                "`{server}` is an org server: it is every tenant's already"
            )));
        }
        if s.shared || s.share_requested_by.is_some() || s.state == State::Retired {
            return Err(Refusal::Conflict(format!(
                "`{server}` is {}",
                if s.shared {
                    "shared already"
                } else if s.state == State::Retired {
                    "retired"
                } else {
                    "waiting for an org reviewer to approve sharing"
                }
            )));
        }
        s.share_requested_by = Some(actor.label());
        let e = Event {
            at: now_text(now),
            actor: actor.label(),
            from: Some(s.state),
            to: s.state,
            note: "asked to share with every tenant".into(),
        };
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// An org reviewer or org admin approves a share request, naming the
    /// definition they reviewed by its digest (`reviewed`, as a move to
    /// `approved` does): refused ([`Refusal::Changed`]) when the server's
    /// definition is another one by then, and while a changed definition
    /// is under review (its tools would be served to testers of every
    /// tenant in versions the digest does not name). The approver is
    /// neither who asked nor who registered the definition. The share is
    /// of that definition: registering another withdraws it.
    pub fn approve_share(
        &mut self,
        actor: &Actor,
        server: &str,
        reviewed: Option<&str>,
        now: std::time::SystemTime,
    ) -> Result<Done, Refusal> {
        if !actor.is_org() {
            return Err(Refusal::Forbidden(format!(
                "{}: only an org reviewer or org admin approves sharing `{server}`",
                actor.label()
            )));
        }
        let (name, s) = self.get_mut(server)?;
        let Some(asked) = s.share_requested_by.as_deref() else {
            return Err(Refusal::Conflict(format!(
                "nobody asked to share `{server}`"
            )));
        };
        // A second person: an org admin who asked does not approve it too
        // (under any spelling of their name).
        let asker = asked.strip_prefix("admin:").unwrap_or(asked);
        if warden_config::names::name_key(Name::Person, asker) == actor.person() {
            return Err(Refusal::Forbidden(format!(
                "{} asked to share `{server}`: a second person approves it",
                actor.label()
            )));
        }
        // Nor does whoever registered the definition shared (an org admin
        // may register a tenant's server).
        if actor.person() == s.registrant {
            return Err(Refusal::Forbidden(format!(
                "{} registered the definition of `{server}`: a second person approves sharing it",
                actor.label()
            )));
        }
        s.check_reviewed(
            &format!("approving sharing of `{server}`"),
            server,
            reviewed,
        )?;
        let pending = s.pending_beside_approved();
        if !pending.is_empty() {
            return Err(Refusal::Conflict(format!(
                "a changed definition of `{server}` is under review (tools {pending:?} keep an approved version beside it): approve or withdraw the change first, so that every tenant is offered the definition you reviewed and no other"
            )));
        }
        let digest = s.definition_digest();
        s.shared = true;
        s.share_reviewed = Some(digest.clone());
        s.share_requested_by = None;
        let e = Event {
            at: now_text(now),
            actor: actor.label(),
            from: Some(s.state),
            to: s.state,
            note: format!("shared with every tenant: definition {digest}"),
        };
        Self::push(s, e.clone());
        Ok((name, e))
    }

    /// Settles shares recorded before shares named their definition
    /// (`share_reviewed`): one whose approval is among the server's events
    /// with no definition registered after it keeps its share, now bound
    /// to the current definition; any other (the definition changed after
    /// the org approved sharing, or the approval is no longer in the
    /// events) is withdrawn, to be asked for and approved again. Returns
    /// the events appended (the servers whose share was withdrawn).
    pub fn settle_shares(&mut self, now: std::time::SystemTime) -> Vec<Done> {
        let mut out = Vec::new();
        for (name, s) in &mut self.servers {
            if !s.shared || s.share_reviewed.is_some() {
                continue;
            }
            // The org's approval as an older agent wrote it. A move's
            // note is free text a tenant admin types, but a move always
            // changes the state and an approval of sharing never does.
            let approval = s
                .events
                .iter()
                .rposition(|e| e.from == Some(e.to) && e.note == "shared with every tenant");
            let changed_since = approval.is_none_or(|i| {
                s.events[i + 1..]
                    .iter()
                    .any(|e| e.note.starts_with("definition changed"))
            });
            if !changed_since {
                s.share_reviewed = Some(s.definition_digest());
                continue;
            }
            s.shared = false;
            let e = Event {
                at: now_text(now),
                actor: "agent".into(),
                from: Some(s.state),
                to: s.state,
                note: "the share is withdrawn: the definition may have changed since the org approved sharing (recorded before approvals named the definition); ask, and an org reviewer approves, again".into(),
            };
            Self::push(s, e.clone());
            out.push((name.clone(), e));
        }
        out
    }
}
