//! Who may call and what they may do: `identity:`, `policy:`, `catalog:`
//! and `kill_switch:` (read into `crate::access`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Canonical URI of this protected resource (RFC 9728 `resource`, the JWT audience).
    pub resource: String,
    /// Authorization servers advertised in the protected-resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes a JWT must carry (all of them), else 403 `insufficient_scope`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Let callers without credentials through as principal `anonymous` (default false).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Header carrying an API key (default `x-api-key`); `Authorization: Bearer <key>` works too.
    #[serde(default)]
    pub api_key_header: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Client certificates mapped to principals (the listener needs `tls.client_ca`).
    #[serde(default)]
    pub mtls: Vec<MtlsPrincipalConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// `agent` (default) or `user`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `sha256:<salt hex>:<hex of sha256(salt ‖ key)>` — `warden apikey hash` prints one.
    pub hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (default: the identity `resource`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (default RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// JWKS file, relative to the bundle root.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// JWKS URL fetched in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again (default `5m`).
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// Tolerance on `exp` / `nbf` (default `30s`).
    #[serde(default)]
    pub clock_skew: Option<String>,
    /// Claim holding the tenant (default `tenant`).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Claim holding the roles (default `roles`; an array or a space-separated string).
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim holding `agent` or `user` (default: `user`).
    #[serde(default)]
    pub kind_claim: Option<String>,
    /// String claims copied into `principal.attributes`.
    #[serde(default)]
    pub attribute_claims: Vec<String>,
    /// Clients whose tokens are accepted, by their `client_id` (or `azp`)
    /// claim: exact ids, or an `https://host/` prefix for Client ID Metadata
    /// Document URLs of one origin. Empty: any client.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Scope hierarchy: a granted scope (key) implies the listed narrower ones.
    #[serde(default)]
    pub scope_implies: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsPrincipalConfig {
    /// Match on a URI SAN `spiffe://…`.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Match on a DNS SAN.
    #[serde(default)]
    pub dns: Option<String>,
    /// Match on the subject common name.
    #[serde(default)]
    pub subject_cn: Option<String>,
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rule evaluated per message (default `data.warden.authz.decision`).
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// How a denied `tools/call` is answered: `tool_error` (default, an
    /// `isError` result the model can read) or `error` (a JSON-RPC error).
    #[serde(default)]
    pub denial: Option<String>,
    /// IANA time zone for `context.hour` / `context.weekday` (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Decisions kept in the cache (default 100000; 0 turns the cache off).
    #[serde(default)]
    pub cache_capacity: Option<u64>,
    /// A candidate rule evaluated beside the enforced one on every message
    /// and never enforced: each disagreement is audited and counted.
    #[serde(default)]
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCatalogConfig {
    /// Risk of tools the catalog does not list (default `MEDIUM`).
    #[serde(default)]
    pub default_risk: Option<String>,
    #[serde(default)]
    pub tools: BTreeMap<String, ToolCatalogConfig>,
    /// Hosts URL arguments of this server's tools may reach (adds to `egress.allow`).
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// Classification of what this server's tools return (see `flows`).
    #[serde(default)]
    pub classification: Option<String>,
    /// Flow roles of this server's tools: `private`, `untrusted`, `sink`.
    #[serde(default)]
    pub flow: Option<Vec<String>>,
    /// Labels of resources by URI pattern (first match).
    #[serde(default)]
    pub resources: Vec<super::ResourceLabelConfig>,
    /// What a call of this server's tools costs when the tool names no
    /// price of its own (none: nothing).
    #[serde(default)]
    pub price: Option<PriceConfig>,
}

/// What a call costs: `{currency: USD, per_call: "0.002", per_unit:
/// {pointer: /structuredContent/rows, price: "0.0001"}}`. Amounts are
/// decimal strings (or numbers) with at most six decimals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// ISO 4217 code; one currency per bundle.
    pub currency: String,
    #[serde(default)]
    pub per_call: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub per_unit: Option<UnitPriceConfig>,
}

/// A price per unit of a number the tool's result carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitPriceConfig {
    /// JSON Pointer into the call's `result` (`/structuredContent/rows`).
    pub pointer: String,
    pub price: serde_yaml_ng::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCatalogConfig {
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL` (default: the server's `default_risk`).
    #[serde(default)]
    pub risk: Option<String>,
    /// Cost units a call counts for in `weighted` quotas (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
    /// What a call costs in money (see [`PriceConfig`]).
    #[serde(default)]
    pub price: Option<PriceConfig>,
    /// JSON Schema for the arguments; wins over the server's advertised `inputSchema`.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// Approved definition fingerprints (`warden tools fingerprint`); a
    /// definition matching one is never quarantined.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// Argument names (top level) holding URLs or hosts, checked against the egress allowlist.
    #[serde(default)]
    pub url_arguments: Vec<String>,
    /// Hosts this tool's URL arguments may reach (adds to the server's and the global list).
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// OAuth scopes a caller's token must carry to call this tool (step-up:
    /// without them, 403 `insufficient_scope` naming them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Classification of what this tool returns; for a sink, the highest
    /// it may receive (see `flows`).
    #[serde(default)]
    pub classification: Option<String>,
    /// Flow roles: `private` (reads private data), `untrusted` (returns
    /// content from outside), `sink` (sends data outward).
    #[serde(default)]
    pub flow: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchConfig {
    /// Pause everything.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    /// `tool` (on every server) or `server/tool`.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Where a paused server was reached when it was paused (`ip:port`,
    /// `localhost:port`), by its name: every server reached at one of
    /// these addresses is paused too, whatever a layer calls it. The
    /// agent's `kill --server` writes them; `revive` removes them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub upstreams: std::collections::BTreeMap<String, Vec<String>>,
}

impl KillSwitchConfig {
    /// Adds (`on`) or removes one entry. `kind` is all, tenant, principal, server or tool.
    pub fn set(&mut self, kind: &str, value: &str, on: bool) -> Result<(), String> {
        let list = match kind {
            "all" => {
                self.all = on;
                return Ok(());
            }
            "tenant" => &mut self.tenants,
            "principal" => &mut self.principals,
            "server" => &mut self.servers,
            "tool" => &mut self.tools,
            other => return Err(format!("unknown kill-switch scope `{other}`")),
        };
        if value.is_empty() {
            return Err(format!("`{kind}` needs a value"));
        }
        // One entry per name, in the one form names are compared in: a
        // pause or a revival in another case is of the same name.
        let form = match kind {
            "tenant" => crate::names::Name::Tenant,
            "principal" => crate::names::Name::Person,
            "server" => crate::names::Name::Server,
            _ => crate::names::Name::Tool,
        };
        list.retain(|v| !crate::names::same_name(form, v, value));
        if on {
            list.push(value.to_owned());
            list.sort();
        }
        if kind == "server" {
            self.upstreams
                .retain(|v, _| !crate::names::same_name(form, v, value));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == KillSwitchConfig::default()
    }
}
