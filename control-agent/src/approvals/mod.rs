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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::build::Signer;
use warden_config::person::Person;

use warden_config::archive::APPROVAL_GRANT_TYP as GRANT_TYP;

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

/// What a gateway sends when a call needs approval.
#[derive(Debug, Clone, Deserialize)]
pub struct Claim {
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub tool: String,
    pub args_digest: String,
    /// Canonical arguments after the gateway's redactions.
    #[serde(default)]
    pub arguments: String,
    pub risk: String,
    pub reason: String,
    #[serde(default)]
    pub justification: Option<String>,
    pub required: u8,
    /// How long the approval may wait for approvers, in seconds.
    pub pending_secs: u64,
    /// How long an approved call stays usable, in seconds.
    pub grant_secs: u64,
    pub gateway: String,
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The gateway's one-time value, echoed in the signed grant.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The tenants whose own rules asked for this approval (a tenant's
    /// layer on the server it owns, when another tenant's principal calls
    /// it): only approvers who see each of them decide it.
    #[serde(default)]
    pub for_tenants: Vec<String>,
}

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
    fn is(&self, name: &str, tenant: &str, principal: &str) -> bool {
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
    fn people(&self, name: &str) -> Vec<Person> {
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub approver: String,
    pub verdict: Verdict,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One approval, from the first claim to its use or end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub binding: String,
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub tool: String,
    pub args_digest: String,
    pub arguments: String,
    pub risk: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub required: u8,
    #[serde(with = "rfc3339")]
    pub requested_at: SystemTime,
    /// Pending until then; afterwards it lapses.
    #[serde(with = "rfc3339")]
    pub pending_until: SystemTime,
    pub grant_secs: u64,
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// See [`Claim::for_tenants`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_tenants: Vec<String>,
    pub decisions: Vec<Decision>,
    /// When enough approvers said yes.
    #[serde(default, with = "opt_rfc3339")]
    pub approved_at: Option<SystemTime>,
    /// When a gateway took it (single use), and which.
    #[serde(default, with = "opt_rfc3339")]
    pub used_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
    /// A denial is told to the caller once; the next claim starts anew.
    #[serde(default)]
    pub denial_told: bool,
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Used,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Used => "used",
            State::Expired => "expired",
        }
    }
}

impl Approval {
    pub fn state(&self, now: SystemTime) -> State {
        if self.used_at.is_some() {
            State::Used
        } else if self.decisions.iter().any(|d| d.verdict == Verdict::Deny) {
            State::Denied
        } else if let Some(at) = self.approved_at {
            if now > at + Duration::from_secs(self.grant_secs) {
                State::Expired
            } else {
                State::Approved
            }
        } else if now > self.pending_until {
            State::Expired
        } else {
            State::Pending
        }
    }

    fn approvers(&self) -> Vec<&str> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .map(|d| d.approver.as_str())
            .collect()
    }

    /// The view approvers and gateways see.
    pub fn view(&self, now: SystemTime) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("state".into(), self.state(now).as_str().into());
            o.insert("approvals".into(), self.approvers().len().into());
            if let Some(at) = self.approved_at {
                o.insert(
                    "usable_until".into(),
                    fmt(at + Duration::from_secs(self.grant_secs)).into(),
                );
            }
            o.insert(
                "waiting_secs".into(),
                now.duration_since(self.requested_at)
                    .unwrap_or_default()
                    .as_secs()
                    .into(),
            );
        }
        v
    }
}

/// The signed answer a gateway forwards a held call on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub binding: String,
    pub approvers: Vec<Decision>,
    #[serde(with = "rfc3339")]
    pub used_at: SystemTime,
    pub gateway: String,
    /// The claim's nonce: a grant answers one claim only.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// The answer to a claim.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ClaimAnswer {
    /// Taken: forward the call. `grant` is the signed [`Grant`] (absent
    /// when the agent has no signing key, like its bundles).
    Approved {
        id: String,
        approvers: Vec<Decision>,
        grant: Option<String>,
    },
    Pending {
        id: String,
        required: u8,
        approvals: usize,
        #[serde(with = "rfc3339")]
        expires_at: SystemTime,
        created: bool,
    },
    Denied {
        id: String,
        by: Decision,
    },
}

/// Why an approver's answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("no such approval")]
    NotFound,
    #[error("the approval could not be recorded; try again")]
    Unrecorded,
    #[error("approvers may not approve their own calls")]
    SelfApproval,
    #[error("this approval is {0} and can no longer be decided")]
    Finished(&'static str),
    #[error("{0} already approved this call; another approver is needed")]
    Already(String),
    #[error("this call is held by the rules of a tenant you do not approve for")]
    NotTheirs,
}

/// The longest name a claim may hold (tenant, principal, server, tool …).
pub const MAX_CLAIM_NAME: usize = 1024;
/// The most tenants a claim may name in `for_tenants`.
pub const MAX_CLAIM_TENANTS: usize = 64;
/// The part of a claim's reason or justification that is kept.
pub const MAX_CLAIM_TEXT: usize = 4096;

/// Why a claim was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimRefused {
    #[error("the binding's parts are malformed: {0}")]
    Malformed(&'static str),
    #[error("this principal already has {MAX_PENDING_PER_PRINCIPAL} approvals waiting")]
    TooMany,
    #[error("{MAX_PENDING} approvals are waiting; no more are taken until some are answered")]
    Full,
    #[error("the arguments do not match their digest")]
    DigestMismatch,
    #[error("the arguments are {0} bytes: approvers must see them whole, and at most {MAX_SHOWN_ARGS} can be shown")]
    TooLarge(usize),
    #[error("the approval could not be recorded: {0}")]
    Unrecorded(String),
    #[error("signing the grant failed: {0}")]
    Signing(String),
}

pub struct Approvals {
    path: PathBuf,
    inner: Mutex<BTreeMap<String, Approval>>,
    pub approvers: BTreeMap<String, Approver>,
}

impl Approvals {
    /// Opens the approvals kept in `dir` (`approvals.json`), with the
    /// approvers' token digests.
    pub fn open(dir: &Path, approvers: BTreeMap<String, Approver>) -> anyhow::Result<Approvals> {
        let path = dir.join("approvals.json");
        let kept: BTreeMap<String, Approval> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Approvals {
            path,
            inner: Mutex::new(kept),
            approvers,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Approval>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every approval (temp file, then rename), dropping finished
    /// ones past their keep time.
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
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                // Held arguments are for approvers only.
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&serde_json::to_vec(&*all)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    /// A gateway's claim of a held call (see the module docs).
    pub fn claim(
        &self,
        mut c: Claim,
        signer: Option<&Signer>,
        now: SystemTime,
    ) -> Result<ClaimAnswer, ClaimRefused> {
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
        if warden_filters::guards::mrtr::args_digest(&c.arguments) != c.args_digest {
            return Err(ClaimRefused::DigestMismatch);
        }
        let binding = warden_filters::guards::approval::binding(
            &c.tenant,
            &c.principal,
            &c.server,
            &c.tool,
            &c.args_digest,
        );
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
            Some(a) => {
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
                match a.state(now) {
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
                                        binding: binding.clone(),
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
                        changed = raised || !a.denial_told;
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
                        changed = raised;
                        ClaimAnswer::Pending {
                            id: a.id.clone(),
                            required: a.required,
                            approvals: a.approvers().len(),
                            expires_at: a.pending_until,
                            created: false,
                        }
                    }
                }
            }
            None => {
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
                ClaimAnswer::Pending {
                    id,
                    required: c.required,
                    approvals: 0,
                    expires_at: pending_until,
                    created: true,
                }
            }
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

    /// An approver's answer to approval `id`.
    pub fn decide(
        &self,
        id: &str,
        approver: &str,
        verdict: Verdict,
        comment: Option<String>,
        now: SystemTime,
    ) -> Result<serde_json::Value, Refused> {
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
        let view = a.view(now);
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
    pub fn get(
        &self,
        id: &str,
        viewer: Option<&str>,
        now: SystemTime,
    ) -> Option<serde_json::Value> {
        self.lock()
            .get(id)
            .filter(|a| self.visible(viewer, a))
            .map(|a| a.view(now))
    }

    fn visible(&self, viewer: Option<&str>, a: &Approval) -> bool {
        match viewer {
            None => true,
            Some(name) => self.approvers.get(name).is_some_and(|w| w.shown(a)),
        }
    }

    /// Pending and approved-but-unused approvals, oldest first (`all`: every
    /// kept one), of the tenants `viewer` sees (`None`: the admin, all).
    pub fn list(&self, all: bool, viewer: Option<&str>, now: SystemTime) -> Vec<serde_json::Value> {
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
        v.into_iter().map(|a| a.view(now)).collect()
    }

    /// The tenant of approval `id`, if it is kept.
    pub fn tenant_of(&self, id: &str) -> Option<String> {
        self.lock().get(id).map(|a| a.tenant.clone())
    }

    /// As [`Approvals::list`], for a tenant admin: only the approvals of
    /// `tenants` (compared by the tenant scope key,
    /// [`warden_config::person::in_scope`]; never empty here, which would be
    /// every tenant).
    pub fn list_in(
        &self,
        all: bool,
        tenants: &[String],
        now: SystemTime,
    ) -> Vec<serde_json::Value> {
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
        v.into_iter().map(|a| a.view(now)).collect()
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

fn fmt(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

mod rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
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

#[cfg(test)]
mod tests;
