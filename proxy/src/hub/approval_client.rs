//! Held calls: the gateway's side of human approval.
//!
//! A call the chain held (`RequestPlan::held`) is claimed at the control
//! agent, which keeps every approval of the fleet (see `warden-agent`'s
//! `approvals`). The answer decides the call:
//! - **approved**: the approval is taken (single use, fleet-wide) and the
//!   held bytes — exactly what every guard passed — are forwarded. When the
//!   gateway verifies bundles, the agent's grant must carry a valid
//!   signature by the same key naming this call's binding, this claim's
//!   one-time nonce and at least the approvers the call needs (the audit
//!   names the approvers the grant names); otherwise the call is refused.
//! - **pending**: the caller is told the approval id and where approvers act:
//!   a URL-mode elicitation (JSON-RPC error -32042) when its session declared
//!   `elicitation.url`, otherwise a tool error the model can read. Retrying
//!   the same call after approval goes through.
//! - **denied**: a tool error naming the approver.
//! - **no agent, or it cannot answer**: refused (`approval_unavailable`);
//!   a held call never goes on unapproved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_config::archive::Verifier;

use super::agents::{Agents, Clients, Use};
use warden_filters::guards::approval::ApprovalNeed;

use warden_config::archive::APPROVAL_GRANT_TYP as GRANT_TYP;

/// The oldest list of grants a gateway takes.
pub const GRANTS_MAX_AGE: Duration = Duration::from_secs(60);

/// Where this gateway claims held calls: the agent in use, and the next
/// one when it fails (see `agents`).
pub struct ApprovalClient {
    agents: Arc<Agents>,
    token: Option<String>,
    gateway_id: String,
    verifier: Option<Verifier>,
    clients: Clients,
}

/// One agent's answer to a claim.
enum Step {
    /// The agent's answer (its body, read as a claim).
    Answer(Claimed),
    /// The agent refused the claim (a 4xx with its error): final.
    Refused(String),
    /// Unreachable, timed out, 5xx, or not the agent's protocol: the next
    /// agent is asked the same claim.
    Failed(String),
}

/// One approver's answer, as the agent reports it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct ApproverDecision {
    pub approver: String,
    pub verdict: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What the agent answered for a held call.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Claimed {
    Approved {
        id: String,
        approvers: Vec<ApproverDecision>,
        #[serde(default)]
        grant: Option<String>,
    },
    Pending {
        id: String,
        required: u8,
        approvals: usize,
        expires_at: String,
        #[serde(default)]
        created: bool,
    },
    Denied {
        id: String,
        by: ApproverDecision,
    },
    /// Not an agent answer: why the gateway could not get one.
    #[serde(skip)]
    Unavailable(String),
}

#[derive(serde::Deserialize)]
struct Grant {
    id: String,
    binding: String,
    approvers: Vec<ApproverDecision>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Who asks, for the agent's record.
pub struct Caller<'a> {
    pub tenant: &'a str,
    pub principal: &'a str,
    pub server: &'a str,
    pub justification: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

impl ApprovalClient {
    pub fn new(
        agents: Arc<Agents>,
        token: Option<String>,
        gateway_id: &str,
        verifier: Option<Verifier>,
    ) -> anyhow::Result<ApprovalClient> {
        let clients = Clients::for_agents(&agents, || {
            // No proxy from the environment and no redirects: a claim
            // carries the call's arguments, an answer releases a call.
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        });
        Ok(ApprovalClient {
            agents,
            token,
            gateway_id: gateway_id.to_owned(),
            verifier,
            clients,
        })
    }

    /// The page approvers are pointed to for approval `id` (at the agent
    /// in use, which answered the claim).
    pub fn approval_url(&self, template: Option<&str>, id: &str) -> String {
        match template {
            Some(t) => t.replace("{id}", id),
            None => format!("{}/v1/approvals/{id}", self.agents.base_in_use()),
        }
    }

    /// The just-in-time grants that hold, from the first agent whose list
    /// is taken: signed with the bundle key when the gateway checks bundles
    /// (a list unsigned, signed by another key, or issued more than
    /// [`GRANTS_MAX_AGE`] before or after this gateway's clock is refused,
    /// and the next agent asked, so a replayed old list cannot bring back
    /// a revoked grant for long).
    pub async fn grants(&self) -> Result<Vec<warden_filters::engines::grants::Grant>, String> {
        let mut errors = Vec::new();
        for ep in self.agents.candidates().await {
            let client = match self.clients.get(&ep) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut req = client
                .get(ep.url("/v1/grants"))
                .timeout(Duration::from_secs(5));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let body = match req.send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(format!("{}: {}", ep.name(), e.without_url()));
                        continue;
                    }
                },
                Ok(r) => {
                    errors.push(format!("{}: status {}", ep.name(), r.status()));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{}: {}", ep.name(), super::agent_tls::why(e)));
                    continue;
                }
            };
            // A list this gateway cannot take from one agent (not signed,
            // not the agent's protocol, too old: an agent cut off from the
            // others' decisions) is asked of the next one.
            match self.grants_of(&body) {
                Ok(grants) => return Ok(grants),
                Err(e) => errors.push(format!("{}: {e}", ep.name())),
            }
        }
        Err(format!(
            "no control agent's grants were taken: {}",
            errors.join("; ")
        ))
    }

    /// The grants of one agent's answer `body`, checked as [`Self::grants`]
    /// says.
    fn grants_of(
        &self,
        body: &[u8],
    ) -> Result<Vec<warden_filters::engines::grants::Grant>, String> {
        #[derive(serde::Deserialize)]
        struct List {
            grants: Vec<warden_filters::engines::grants::Grant>,
            issued_at: u64,
        }
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not the agent's protocol: {e}"))?;
        let list: List = match (&self.verifier, v.get("jws").and_then(|j| j.as_str())) {
            (Some(verifier), Some(jws)) => verifier
                .verify_claims(jws, warden_config::archive::JIT_GRANTS_TYP)
                .map_err(|e| format!("the grants' signature: {e}"))?,
            (Some(_), None) => {
                return Err("the agent's grants are not signed: none is taken".into())
            }
            (None, _) => {
                serde_json::from_value(v).map_err(|e| format!("not the agent's protocol: {e}"))?
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Its age is what bounds a replay of a list that held a grant since
        // withdrawn: one issued much later than this gateway's now (an
        // agent's clock ahead, or a number near the largest, which would
        // wrap round, or panic a debug build) has no age to judge.
        let max = GRANTS_MAX_AGE.as_secs();
        if list.issued_at.checked_add(max).is_none_or(|t| t < now) {
            return Err("the agent's grants are too old: none is taken".into());
        }
        if list.issued_at > now.saturating_add(max) {
            return Err(format!(
                "the agent's grants are issued {}s ahead of this gateway's clock: none is taken",
                list.issued_at - now
            ));
        }
        Ok(list.grants)
    }

    /// Sends the claim `body` to one agent.
    async fn ask(
        &self,
        client: reqwest::Client,
        url: String,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Step {
        let mut req = client.post(url).timeout(timeout).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Step::Failed(format!("unreachable: {}", super::agent_tls::why(e))),
        };
        let status = resp.status();
        let text = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Step::Failed(format!("its answer was cut: {}", e.without_url())),
        };
        if status.is_server_error() {
            return Step::Failed(format!("status {status}"));
        }
        if !status.is_success() {
            // The agent's refusals name their reason; anything else at
            // that address is not the agent.
            return match serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
            {
                Some(why) => Step::Refused(format!(
                    "the control agent refused the claim ({status}): {why}"
                )),
                None => Step::Failed(format!("status {status}: not the agent's protocol")),
            };
        }
        match serde_json::from_slice(&text) {
            Ok(c) => Step::Answer(c),
            Err(e) => Step::Failed(format!("not the agent's protocol: {e}")),
        }
    }

    /// Claims the held call at the agent (see the module docs).
    pub async fn claim(
        &self,
        need: &ApprovalNeed,
        who: &Caller<'_>,
        cfg: &warden_config::guards::Approvals,
    ) -> Claimed {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let body = serde_json::json!({
            "tenant": who.tenant,
            "principal": who.principal,
            "server": who.server,
            "tool": need.tool,
            "args_digest": need.args_digest,
            "arguments": need.arguments,
            "risk": need.risk.as_str(),
            "reason": need.reason,
            "justification": who.justification,
            "required": need.approvers,
            "pending_secs": cfg.pending.as_secs().max(1),
            "grant_secs": cfg.expires.as_secs().max(1),
            "gateway": self.gateway_id,
            "trace_id": who.trace_id,
            "nonce": nonce,
            "for_tenants": need.for_tenants,
        });
        // The same claim (its binding and its nonce) goes to each agent in
        // turn until one answers: the agents make an approval single use
        // across the fleet, and a grant must name this nonce, so a claim
        // one agent took before failing is never taken twice. Twice the
        // timeout bounds the whole, when there are several.
        let several = self.agents.len() > 1;
        let deadline = Instant::now() + cfg.timeout * if several { 2 } else { 1 };
        let mut errors = Vec::new();
        let mut answered = None;
        for ep in self.agents.candidates().await {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let step = match self.clients.get(&ep) {
                Ok(c) => {
                    self.ask(
                        c,
                        ep.url("/v1/approvals/claim"),
                        &body,
                        cfg.timeout.min(left),
                    )
                    .await
                }
                Err(e) => Step::Failed(e),
            };
            match step {
                Step::Failed(why) => {
                    self.agents.failed(&ep, Use::Approvals, &why);
                    errors.push(format!("{}: {why}", ep.name()));
                }
                Step::Refused(why) => {
                    self.agents.answered(&ep);
                    return Claimed::Unavailable(why);
                }
                Step::Answer(c) => {
                    self.agents.answered(&ep);
                    answered = Some(c);
                    break;
                }
            }
        }
        let Some(mut claimed) = answered else {
            tracing::warn!(
                "claiming a held call: no control agent answered: {}",
                errors.join("; ")
            );
            return Claimed::Unavailable("the control agent is unreachable".into());
        };
        if let Claimed::Approved {
            id,
            grant,
            approvers,
        } = &mut claimed
        {
            match self.check_grant(id, grant.as_deref(), need, &nonce) {
                Ok(Some(signed)) => *approvers = signed,
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(approval = %id, "refusing an approval: {why}");
                    return Claimed::Unavailable(why);
                }
            }
            let distinct: std::collections::BTreeSet<&str> = approvers
                .iter()
                .filter(|d| d.verdict == "approve")
                .map(|d| d.approver.as_str())
                .collect();
            if distinct.len() < usize::from(need.approvers) {
                return Claimed::Unavailable(format!(
                    "the approval names {} approver(s), the call needs {}",
                    distinct.len(),
                    need.approvers
                ));
            }
        }
        claimed
    }

    /// With a bundle key, an approval counts only with the agent's
    /// signature over this call's binding and this claim's nonce; the
    /// approvers are then the grant's.
    fn check_grant(
        &self,
        id: &str,
        grant: Option<&str>,
        need: &ApprovalNeed,
        nonce: &str,
    ) -> Result<Option<Vec<ApproverDecision>>, String> {
        let Some(v) = &self.verifier else {
            return Ok(None);
        };
        let jws = grant.ok_or("the agent's approval carries no signed grant")?;
        let g: Grant = v
            .verify_claims(jws, GRANT_TYP)
            .map_err(|e| format!("the approval grant does not verify: {e}"))?;
        if g.id != id || g.binding != need.binding {
            return Err("the approval grant is for another call".into());
        }
        if g.nonce.as_deref() != Some(nonce) {
            return Err("the approval grant answers another claim (replayed)".into());
        }
        Ok(Some(g.approvers))
    }
}

impl Claimed {
    /// Stable reason for audit and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Claimed::Approved { .. } => "approved",
            Claimed::Pending { .. } => "approval_pending",
            Claimed::Denied { .. } => "approval_denied",
            Claimed::Unavailable(_) => "approval_unavailable",
        }
    }

    /// The approvers' decisions the answer reports.
    pub fn decisions(&self) -> Vec<ApproverDecision> {
        match self {
            Claimed::Approved { approvers, .. } => approvers.clone(),
            Claimed::Denied { by, .. } => vec![by.clone()],
            _ => Vec::new(),
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Claimed::Approved { id, .. }
            | Claimed::Pending { id, .. }
            | Claimed::Denied { id, .. } => Some(id),
            Claimed::Unavailable(_) => None,
        }
    }

    /// The answer to the held call when it is not forwarded: a URL-mode
    /// elicitation (`url_elicitation`: the client declared it) for a
    /// pending approval, else a tool error the model can read.
    pub fn answer(
        &self,
        need: &ApprovalNeed,
        id: Option<&warden_filters::Id>,
        url: Option<&str>,
        url_elicitation: bool,
    ) -> serde_json::Value {
        use warden_filters::{codes, Denial, JsonRpcError};
        let tool = &need.tool;
        let (code, reason, text, data) = match self {
            Claimed::Pending {
                id: aid,
                required,
                approvals,
                expires_at,
                ..
            } => {
                let url = url.unwrap_or_default();
                let text = format!(
                    "The call to `{tool}` is held for human approval ({approvals} of {required} approver(s) so far; reason: {}). Approval id: {aid}. People approve it out of band at {url}. Retry the same call, with the same arguments, once it is approved; the request lapses at {expires_at}.",
                    need.reason
                );
                if url_elicitation {
                    let err = JsonRpcError::new(
                        codes::URL_ELICITATION_REQUIRED,
                        "This call needs human approval",
                    )
                    .with_data(serde_json::json!({
                        "elicitations": [{
                            "mode": "url",
                            "elicitationId": aid,
                            "url": url,
                            "message": text,
                        }],
                        "reason": "approval_pending",
                        "approval": {"id": aid, "required": required, "approvals": approvals},
                    }));
                    return err.to_response(id);
                }
                (
                    codes::APPROVAL_REQUIRED,
                    "approval_pending",
                    text,
                    serde_json::json!({"id": aid, "required": required, "approvals": approvals, "url": url, "expires_at": expires_at}),
                )
            }
            Claimed::Denied { id: aid, by } => (
                codes::DENIED,
                "approval_denied",
                format!(
                    "The call to `{tool}` was denied by approver {}{}. Approval id: {aid}. Do not retry it unchanged.",
                    by.approver,
                    by.comment
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                ),
                serde_json::json!({"id": aid, "by": by.approver}),
            ),
            Claimed::Unavailable(why) => (
                codes::APPROVAL_REQUIRED,
                "approval_unavailable",
                format!(
                    "The call to `{tool}` needs human approval, and approvals cannot be reached now ({why}). It was not made; try again later."
                ),
                serde_json::Value::Null,
            ),
            Claimed::Approved { .. } => (
                codes::INTERNAL_ERROR,
                "approval_internal",
                "An approved call was not forwarded".to_owned(),
                serde_json::Value::Null,
            ),
        };
        let err = JsonRpcError::new(code, text.clone()).with_data(serde_json::json!({
            "reason": reason,
            "approval": data,
        }));
        Denial::readable(err, reason.to_owned(), &text, true).to_response(id)
    }
}

#[cfg(test)]
#[path = "approval_client_tests.rs"]
mod tests;
