//! The vault's routes: gateways fetch the credential a call needs
//! (`POST /v1/vault/token`: a person's own, or the consent link to get
//! it; `GET /v1/vault/secrets/{name}`: a static secret), org admins keep
//! static secrets (`POST /v1/vault/secrets/{name}`), administrators list
//! and revoke connections (`GET /v1/vault/connections`,
//! `POST /v1/vault/connections/revoke`; a tenant admin, within their
//! tenant). Nothing here returns a token to anyone but a gateway.

use std::sync::Arc;

use axum::extract::Path;
use serde::{Deserialize, Serialize};

use super::{blocking, Agent};
use crate::caller::Caller;
use crate::connect::{Answer, Ask, Connect, Failed};
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{JsonBody, QueryPairs};
use crate::vault::{Filter, SealedConn};

fn connect_of(agent: &Agent) -> Result<Arc<Connect>, ApiError> {
    agent.connect.clone().ok_or_else(|| {
        ApiError::coded(
            http::StatusCode::NOT_FOUND,
            "this agent keeps no credentials (serve --connections and --vault-keys)",
            "no_vault",
        )
    })
}

/// `POST /v1/vault/token`: a gateway asks the credential of a call. The
/// gateway it names (shown to the person on the consent page, sealed in
/// the link) is the one whose token asks, as for every fleet request.
pub async fn token(agent: Agent, caller: Caller, JsonBody(ask): JsonBody<Ask>) -> ApiResult {
    agent
        .tokens
        .speaks_for(&caller, &ask.gateway)
        .map_err(ApiError::forbidden)?;
    let c = connect_of(&agent)?;
    match c.token(&ask).await {
        Ok(a @ Answer::Ready { .. }) | Ok(a @ Answer::Consent { .. }) => ok(&a),
        Err(Failed::NoProvider(p)) => Err(ApiError::coded(
            http::StatusCode::NOT_FOUND,
            format!("no provider `{p}` in this agent's --connections file"),
            "no_provider",
        )),
        Err(Failed::Refused(why)) => Err(ApiError::bad_request(why)),
        Err(e @ (Failed::Vault(_) | Failed::Busy)) => Err(ApiError::coded(
            http::StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
            "vault_unavailable",
        )),
        Err(e @ Failed::Provider(..)) => Err(ApiError::coded(
            http::StatusCode::BAD_GATEWAY,
            e.to_string(),
            "provider_unreachable",
        )),
    }
}

#[derive(Serialize)]
struct SecretAnswer {
    value: String,
    version: u64,
}

fn vault_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::coded(
        http::StatusCode::SERVICE_UNAVAILABLE,
        e.to_string(),
        "vault_unavailable",
    )
}

/// `GET /v1/vault/secrets/{name}`: a gateway reads a static secret.
pub async fn secret(agent: Agent, Path(name): Path<String>) -> ApiResult {
    let c = connect_of(&agent)?;
    let vault = c.vault.clone();
    match blocking(move || vault.secret(&name)).await? {
        Ok(Some((meta, value))) => ok(&SecretAnswer {
            value,
            version: meta.version,
        }),
        Ok(None) => Err(ApiError::not_found("no such secret in the vault")),
        Err(e) => Err(vault_error(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    pub value: String,
}

/// `POST /v1/vault/secrets/{name}`: an org admin keeps a static secret
/// (a new value replaces the old; gateways read it within their cache's
/// few seconds).
pub async fn put_secret(
    agent: Agent,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SecretBody>,
) -> ApiResult {
    let c = connect_of(&agent)?;
    if !warden_config::access::vault_name(&name) {
        return Err(ApiError::bad_request(
            "a vault secret's name is 1-128 of A-Z a-z 0-9 . _ -",
        ));
    }
    if body.value.is_empty()
        || body.value.len() > 16 * 1024
        || body.value.bytes().any(|b| b < 0x20 || b == 0x7f)
    {
        return Err(ApiError::bad_request(
            "a secret is 1-16384 bytes without control characters (it goes into a header)",
        ));
    }
    let vault = c.vault.clone();
    let n = name.clone();
    blocking(move || vault.put_secret(&n, "", &body.value))
        .await?
        .map_err(vault_error)?;
    let who = caller.actor().map_or("-".to_owned(), |a| a.label());
    c.record("vault.secret", true, &format!("{who} set secret {name}"));
    ok(&serde_json::json!({"name": name, "ok": true}))
}

/// A connection as administrators see it (never its tokens).
#[derive(Serialize)]
struct Listed {
    id: String,
    tenant: String,
    principal: String,
    server: String,
    provider: String,
    scopes: Vec<String>,
    person: String,
    created: u64,
    refreshed: u64,
    expires_at: u64,
}

impl From<&SealedConn> for Listed {
    fn from(c: &SealedConn) -> Listed {
        Listed {
            id: c.id.clone(),
            tenant: c.key.tenant.clone(),
            principal: c.key.principal.clone(),
            server: c.key.server.clone(),
            provider: c.provider.clone(),
            scopes: c.scopes.clone(),
            person: c.person.clone(),
            created: c.created,
            refreshed: c.refreshed,
            expires_at: c.expires_at,
        }
    }
}

/// The filter `tenant`, `principal`, `server` name, as the caller may
/// use it: a tenant admin's is their tenant, whatever they asked.
fn scoped(
    caller: &Caller,
    tenant: Option<&str>,
    principal: Option<&str>,
    server: Option<&str>,
) -> Result<Filter, ApiError> {
    let mine = caller.actor().and_then(|a| a.tenant().map(str::to_owned));
    let tenant = match (&mine, tenant) {
        (Some(t), Some(asked)) if !crate::admins::same_tenant(t, asked) => {
            return Err(ApiError::forbidden(format!(
                "a tenant admin of `{t}` reaches their tenant's connections only"
            )))
        }
        (Some(t), _) => Some(t.clone()),
        (None, t) => t.map(str::to_owned),
    };
    let k = crate::connect::conn_key(
        tenant.as_deref().unwrap_or(""),
        principal.unwrap_or(""),
        server.unwrap_or(""),
    );
    Ok(Filter {
        tenant: tenant.map(|_| k.tenant),
        principal: principal.map(|_| k.principal),
        server: server.map(|_| k.server),
    })
}

/// `GET /v1/vault/connections?tenant=&principal=&server=`.
pub async fn connections(agent: Agent, caller: Caller, QueryPairs(q): QueryPairs) -> ApiResult {
    let c = connect_of(&agent)?;
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let filter = scoped(&caller, get("tenant"), get("principal"), get("server"))?;
    let vault = c.vault.clone();
    let all = blocking(move || vault.list(&filter))
        .await?
        .map_err(vault_error)?;
    let listed: Vec<Listed> = all.iter().map(Listed::from).collect();
    ok(&serde_json::json!({ "connections": listed }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
}

/// `POST /v1/vault/connections/revoke`: by tenant, principal, server (at
/// least one); revoked at the provider too where it can.
pub async fn revoke(agent: Agent, caller: Caller, JsonBody(b): JsonBody<RevokeBody>) -> ApiResult {
    if caller
        .actor()
        .is_some_and(|a| a.kind == crate::admins::Kind::OrgReviewer)
    {
        return Err(ApiError::forbidden(
            "an org reviewer reads connections; revoking them is an admin's",
        ));
    }
    let c = connect_of(&agent)?;
    if b.tenant.is_none() && b.principal.is_none() && b.server.is_none() {
        return Err(ApiError::bad_request(
            "name a tenant, a principal or a server: every connection at once is not revoked by accident",
        ));
    }
    if b.principal.is_some()
        && b.tenant.is_none()
        && caller.actor().and_then(|a| a.tenant()).is_none()
    {
        return Err(ApiError::bad_request(
            "a principal is named with its tenant (`tenant`)",
        ));
    }
    let filter = scoped(
        &caller,
        b.tenant.as_deref(),
        b.principal.as_deref(),
        b.server.as_deref(),
    )?;
    let gone = c.revoke(filter).await.map_err(vault_error)?;
    let who = caller.actor().map_or("-".to_owned(), |a| a.label());
    for g in &gone {
        c.record(
            "vault.revoke",
            true,
            &format!(
                "{who} revoked connection {} ({}/{} at {})",
                g.id, g.key.tenant, g.key.principal, g.key.server
            ),
        );
    }
    let listed: Vec<Listed> = gone.iter().map(Listed::from).collect();
    ok(&serde_json::json!({ "revoked": listed }))
}

/// `POST /v1/vault/rewrap`: every data key wrapped again under the
/// current master key (after which an older master key may leave the
/// key file).
pub async fn rewrap(agent: Agent, caller: Caller) -> ApiResult {
    let c = connect_of(&agent)?;
    let vault = c.vault.clone();
    let n = blocking(move || vault.rewrap())
        .await?
        .map_err(vault_error)?;
    let who = caller.actor().map_or("-".to_owned(), |a| a.label());
    c.record(
        "vault.rewrap",
        true,
        &format!("{who} wrapped {n} data key(s) under the current master key"),
    );
    ok(&serde_json::json!({ "rewrapped": n }))
}
