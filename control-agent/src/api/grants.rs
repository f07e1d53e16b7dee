//! Just-in-time grants: a person asks a role or a tool for a principal for
//! a stated time (`POST /v1/grants`), approvers decide it like a held call
//! (`/v1/approvals/{id}/approve`, the console), and gateways read the
//! grants that hold (`GET /v1/grants`, signed with the bundle key when
//! the agent has one) into `input.principal.grants`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Agent;
use crate::approvals::jit::GRANT_SERVER;
use crate::approvals::Claim;
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::JsonBody;

/// The longest a grant may be asked for.
pub const MAX_GRANT: Duration = Duration::from_secs(24 * 3600);
/// How long a request waits for its approvers.
pub const REQUEST_PENDING: Duration = Duration::from_secs(3600);

/// A request of a grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub tenant: String,
    pub principal: String,
    /// `role` or `tool`.
    pub kind: String,
    pub name: String,
    /// A tool's server (none: the tool on any server).
    #[serde(default)]
    pub server: Option<String>,
    /// `30m`, `2h` (at most 24 h).
    pub duration: String,
    pub justification: String,
}

/// One grant that holds, as gateways read it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListedGrant {
    pub id: String,
    pub tenant: String,
    pub principal: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub expires_at: u64,
}

/// What the signed list holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrantList {
    pub grants: Vec<ListedGrant>,
    /// Seconds since the epoch: a gateway refuses a list much older.
    pub issued_at: u64,
}

fn plain_name(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control() || c == ':') {
        return Err(ApiError::bad_request(format!(
            "{what}: 1-128 characters, no control character or `:`"
        )));
    }
    Ok(())
}

/// Whether `caller` may ask a grant for `tenant`/`principal`: an org
/// admin for anyone, a tenant admin within their tenant, an approver for
/// the principals they are (their agent; they never approve it).
fn may_ask(agent: &Agent, caller: &Caller, tenant: &str, principal: &str) -> Result<(), String> {
    match caller {
        Caller::Admin(a) if a.is_org_admin() => Ok(()),
        Caller::Admin(a) => match a.tenant() {
            Some(t) if crate::admins::same_tenant(t, tenant) => Ok(()),
            Some(t) => Err(format!(
                "a tenant admin of `{t}` asks grants for its principals only"
            )),
            None => Err("an org reviewer asks no grant".into()),
        },
        Caller::Approver {
            name, signed_in, ..
        } => {
            let mine: Vec<String> = match signed_in {
                Some(s) => s.principals.clone(),
                None => agent
                    .approvals
                    .approvers
                    .get(name)
                    .map(|w| w.principals.clone())
                    .unwrap_or_default(),
            };
            let mine = std::iter::once(name.as_str()).chain(mine.iter().map(String::as_str));
            if is_one_of(mine, tenant, principal) {
                Ok(())
            } else {
                Err(
                    "an approver asks grants for the principals they are only (named `tenant/id`)"
                        .into(),
                )
            }
        }
        _ => Err("gateways ask no grant".into()),
    }
}

/// Whether one of `names` (an approver's name and the principals they
/// are, `tenant/id` as the approvers file or the identity provider lists
/// them) is the principal `tenant`/`principal` a grant would reach: the
/// key gateways hold the grant under
/// ([`warden_filters::engines::grants::holder_key`]) is that name's.
///
/// Not the person comparison that stops an approver approving their own
/// call: that one merges spellings (`ａｌｉｃｅ`, `alicé` are `alice`) and
/// reads a bare `alice` as `alice` of every tenant, which is stricter
/// there but would here let an approver ask access for a principal they
/// are not (another tenant's `alice`, a look-alike the gateway keeps
/// apart). A bare id names no principal a grant could be for; a name
/// whose slash only a compatibility form makes (`acme／alice`) is read
/// two ways and is none.
fn is_one_of<'a>(names: impl IntoIterator<Item = &'a str>, tenant: &str, principal: &str) -> bool {
    use warden_config::person::Person;
    use warden_filters::engines::grants::holder_key;
    if Person::of(tenant, principal).is_err() {
        return false;
    }
    let wanted = holder_key(tenant, principal);
    names.into_iter().any(|n| {
        let Some((t, id)) = n.split_once('/') else {
            return false;
        };
        // Read as the approvers' principals are read (after compatibility
        // normalisation) and as written: one person both ways, or none.
        let one_reading = matches!(
            (Person::parse(n), Person::of(t, id)),
            (Ok(a), Ok(b)) if a == b
        );
        one_reading && holder_key(t, id) == wanted
    })
}

/// `POST /v1/grants`: a request, pending until approvers decide it (or
/// the one already in play for the same grant).
pub async fn request(
    agent: Agent,
    caller: Caller,
    JsonBody(r): JsonBody<GrantRequest>,
) -> ApiResult {
    plain_name("tenant", &r.tenant)?;
    plain_name("principal", &r.principal)?;
    plain_name("name", &r.name)?;
    let tool = match (r.kind.as_str(), &r.server) {
        ("role", None) => format!("role:{}", r.name),
        ("role", Some(_)) => return Err(ApiError::bad_request("a role grant names no server")),
        ("tool", None) => format!("tool:*/{}", r.name),
        ("tool", Some(s)) => {
            plain_name("server", s)?;
            format!("tool:{s}/{}", r.name)
        }
        _ => return Err(ApiError::bad_request("kind: role or tool")),
    };
    let secs = humantime::parse_duration(&r.duration)
        .map_err(|e| ApiError::bad_request(format!("duration: {e}")))?;
    if secs < Duration::from_secs(1) || secs > MAX_GRANT {
        return Err(ApiError::bad_request("duration: between 1s and 24h"));
    }
    if r.justification.trim().is_empty() {
        return Err(ApiError::bad_request(
            "justification: say why the grant is needed",
        ));
    }
    may_ask(&agent, &caller, &r.tenant, &r.principal).map_err(ApiError::forbidden)?;
    let arguments = serde_json::json!({
        "kind": r.kind, "name": r.name, "server": r.server, "duration_secs": secs.as_secs(),
    })
    .to_string();
    let label = caller.label();
    let c = Claim {
        tenant: r.tenant.clone(),
        principal: r.principal.clone(),
        server: GRANT_SERVER.into(),
        tool: tool.clone(),
        args_digest: warden_filters::chain::plan::args_digest(&arguments),
        arguments,
        risk: "HIGH".into(),
        reason: format!("just-in-time access asked by {label}"),
        justification: Some(r.justification),
        required: 1,
        pending_secs: REQUEST_PENDING.as_secs(),
        grant_secs: secs.as_secs(),
        // Whole: who asked never approves it (a label too long for a
        // claim's name is refused rather than cut).
        gateway: format!("agent:{label}"),
        trace_id: None,
        nonce: None,
        for_tenants: Vec::new(),
    };
    let api = agent.0.clone();
    let v = super::blocking(move || api.approvals.request_grant(c, SystemTime::now())).await??;
    agent.store.record(
        &label,
        "grant.request",
        None,
        true,
        &format!(
            "{} {}/{} {tool} for {}s",
            v.approval.id,
            r.tenant,
            r.principal,
            secs.as_secs()
        ),
    );
    ok(&v)
}

/// `GET /v1/grants`: the grants that hold now, signed when the agent has
/// a key (`{"jws": …}`), else as they are.
pub async fn active(agent: Agent) -> ApiResult {
    let now = SystemTime::now();
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Up to date with the other agents' decisions, or no list (503: the
    // gateway asks another agent).
    let api = agent.0.clone();
    let held = super::blocking(move || api.approvals.current_grants(now))
        .await?
        .map_err(crate::approvals::Refused::from)?;
    let grants = held
        .into_iter()
        .filter_map(|(a, until)| {
            let v: serde_json::Value = serde_json::from_str(&a.arguments).ok()?;
            Some(ListedGrant {
                id: a.id,
                tenant: a.tenant,
                principal: a.principal,
                kind: v["kind"].as_str()?.to_owned(),
                name: v["name"].as_str()?.to_owned(),
                server: v["server"].as_str().map(str::to_owned),
                expires_at: secs(until),
            })
        })
        .collect();
    let list = GrantList {
        grants,
        issued_at: secs(now),
    };
    match agent.store.signer() {
        Some(s) => {
            let jws = warden_config::archive::sign_claims(
                &list,
                &s.pem,
                s.alg,
                &s.keyid,
                warden_config::archive::JIT_GRANTS_TYP,
            )
            .map_err(ApiError::internal)?;
            ok(&serde_json::json!({"jws": jws}))
        }
        None => ok(&list),
    }
}

#[cfg(test)]
#[path = "grants_tests.rs"]
mod tests;
