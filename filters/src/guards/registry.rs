//! The registry at the gateway (`registry.json`, `docs/governance.md`):
//! who may call a registered server in its lifecycle state, and which of
//! its tools' definitions may be listed and called.
//!
//! Everything is read at snapshot build into one map by server name; a
//! message costs one lookup (none for a server the registry does not
//! list and no tenant owns). The guard acts on every client message to a
//! registered server, whatever its method or transport (the chain runs per
//! message: batches, SSE, virtual servers' member legs, stdio), and on
//! `tools/list` replies.
//!
//! - `draft`: refused to everyone; `testing`, `approved`: principals with
//!   role `tester` only; `deployed`: as the policy says; `deprecated`:
//!   served, each message noted (`notice`, counted by the gateway);
//!   `retired`: refused with [`codes::SERVER_RETIRED`] naming the date.
//! - A tenant's server the registry does not list is refused; one not
//!   `shared` is callable by principals of its tenant only.
//! - Tools: `tools/list` shows only tools whose live definition's
//!   fingerprint ([`fingerprint`]) is the approved one (testers: or the
//!   candidate); `tools/call` of any other tool, or of one whose last
//!   listed definition differs, is refused.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value as Json;
use warden_config::raw::RegistryState;
use warden_config::tenants::{RegisteredServer, Registry};

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::guards::tenants::Scope;
use crate::guards::tools::fingerprint_as_approved;
use crate::protocol::error::{codes, JsonRpcError, Refusal};
use crate::protocol::jsonrpc::Kind;

/// The role that may use servers and definitions under review (the org's
/// alone: a tenant's layer never gives it, `warden_config::tenants`).
pub const TESTER_ROLE: &str = warden_config::tenants::TESTER_ROLE;

/// The definitions registered servers listed last, by server and tool
/// (fingerprints); shared by the snapshots of one gateway.
///
/// Bounded by the registry: only a tool the registry lists for the server
/// is remembered (a hostile server listing a million names adds nothing),
/// and a server's entry keeps only the tools its registration names now.
/// One per gateway, not per principal or session: it tells whether the
/// server's live definition has drifted from the approved one, which is a
/// property of the server; what each client sees is the reply filtered
/// for it, always an approved (testers: or candidate) definition.
#[derive(Default)]
pub struct LiveTools {
    map: ArcSwap<HashMap<String, HashMap<String, String>>>,
}

impl LiveTools {
    pub fn get(&self, server: &str, tool: &str) -> Option<String> {
        self.map.load().get(server)?.get(tool).cloned()
    }

    /// How many definitions are remembered, over every server.
    pub fn len(&self) -> usize {
        self.map.load().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, server: &str, registered: &RegisteredServer, tools: &[(String, String)]) {
        let tools: Vec<&(String, String)> = tools
            .iter()
            .filter(|(n, _)| registered.tools.contains_key(n))
            .collect();
        let unchanged = {
            let m = self.map.load();
            m.get(server).is_some_and(|t| {
                t.keys().all(|n| registered.tools.contains_key(n))
                    && tools.iter().all(|(n, f)| t.get(n) == Some(f))
            })
        };
        if unchanged {
            return;
        }
        self.map.rcu(|m| {
            let mut m = (**m).clone();
            let e = m.entry(server.to_owned()).or_default();
            e.retain(|n, _| registered.tools.contains_key(n));
            for (n, f) in &tools {
                e.insert(n.clone(), f.clone());
            }
            m
        });
    }
}

/// What the registry says of one server, ready to judge with.
#[derive(Debug, Clone)]
enum Gate {
    /// A tenant's server the registry does not list.
    Unregistered {
        tenant: String,
    },
    Registered(RegisteredServer),
}

pub struct RegistryFilter {
    gates: HashMap<String, Gate>,
    scope: Arc<Scope>,
    live: Arc<LiveTools>,
}

impl std::fmt::Debug for RegistryFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFilter")
            .field("servers", &self.gates.len())
            .finish()
    }
}

fn refuse(code: i32, reason: &str, message: String) -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(code, message).with_data(serde_json::json!({"reason": reason})),
        reason,
    ))
}

impl RegistryFilter {
    /// `None` when nothing is registered and no tenant owns a server.
    pub fn new(
        registry: Option<&Registry>,
        scope: Arc<Scope>,
        live: Arc<LiveTools>,
    ) -> Option<Self> {
        let mut gates: HashMap<String, Gate> = HashMap::new();
        if let Some(r) = registry {
            for (name, s) in &r.servers {
                gates.insert(name.clone(), Gate::Registered(s.clone()));
            }
        }
        // A tenant's server must be registered to be callable at all.
        let owned: Vec<(String, String)> = scope
            .owners()
            .map(|(s, t)| (s.to_owned(), t.to_owned()))
            .collect();
        for (server, tenant) in owned {
            gates.entry(server).or_insert(Gate::Unregistered { tenant });
        }
        (!gates.is_empty()).then_some(RegistryFilter { gates, scope, live })
    }

    /// The fingerprints of `tool` this principal may use.
    fn acceptable<'a>(s: &'a RegisteredServer, tool: &str, tester: bool) -> Vec<&'a str> {
        let Some(t) = s.tools.get(tool) else {
            return Vec::new();
        };
        let mut v: Vec<&str> = t.approved.as_deref().into_iter().collect();
        if tester {
            v.extend(t.candidate.as_deref());
        }
        v
    }

    /// Who may reach the server at all.
    fn gate(
        &self,
        server: &str,
        ex: &Exchange<'_>,
        notes: &mut Notes,
    ) -> Result<Option<&RegisteredServer>, Decision> {
        let Some(g) = self.gates.get(server) else {
            return Ok(None);
        };
        let s = match g {
            Gate::Unregistered { tenant } => {
                return Err(refuse(
                    codes::SERVER_NOT_RELEASED,
                    "server_unregistered",
                    format!(
                    "server `{server}` of tenant `{tenant}` is not registered: it cannot be called"
                ),
                ))
            }
            Gate::Registered(s) => s,
        };
        let tester = ex.principal.roles.iter().any(|r| r == TESTER_ROLE);
        match s.state {
            RegistryState::Retired => {
                let when = s
                    .retired_at
                    .as_deref()
                    .or(s.since.as_deref())
                    .unwrap_or("an unknown date");
                return Err(refuse(
                    codes::SERVER_RETIRED,
                    "server_retired",
                    format!("server `{server}` was retired on {when}"),
                ));
            }
            RegistryState::Draft => {
                return Err(refuse(
                    codes::SERVER_NOT_RELEASED,
                    "server_draft",
                    format!("server `{server}` is a draft: nobody may call it yet"),
                ))
            }
            RegistryState::Testing | RegistryState::Approved if !tester => {
                return Err(refuse(
                    codes::SERVER_NOT_RELEASED,
                    "server_testing",
                    format!(
                        "server `{server}` is {}: only principals with role `{TESTER_ROLE}` may call it",
                        s.state.as_str()
                    ),
                ))
            }
            _ => {}
        }
        // A tenant's server serves its own tenant until it is shared.
        let owner = self
            .scope
            .owner(server)
            .map(str::to_owned)
            .or_else(|| s.tenant.clone());
        if let Some(owner) = owner {
            if !s.shared && !member_of(&ex.principal.tenant, &owner) {
                return Err(refuse(
                    codes::DENIED,
                    "server_not_shared",
                    format!("server `{server}` belongs to tenant `{owner}` and is not shared"),
                ));
            }
        }
        if s.state == RegistryState::Deprecated && notes.notice.is_none() {
            notes.notice = Some(format!("server `{server}` is deprecated"));
        }
        Ok(Some(s))
    }
}

impl RegistryFilter {
    /// Whether the exchange's principal may reach its server at all, for
    /// an exchange that carries no message the chain judges (a GET stream,
    /// legacy SSE's included, a DELETE): the server's state and sharing,
    /// as for every message.
    pub fn admit(&self, ex: &Exchange<'_>) -> Result<(), Refusal> {
        match self.gate(ex.server, ex, &mut Notes::default()) {
            Ok(_) => Ok(()),
            Err(Decision::Reject(d)) => {
                let reason = match d.reason.as_str() {
                    "server_retired" => "server_retired",
                    "server_draft" => "server_draft",
                    "server_testing" => "server_testing",
                    "server_not_shared" => "server_not_shared",
                    _ => "server_unregistered",
                };
                Err(Refusal::new(403, reason, d.error))
            }
            Err(_) => Err(Refusal::new(
                403,
                "server_unregistered",
                JsonRpcError::new(codes::SERVER_NOT_RELEASED, "server not callable"),
            )),
        }
    }
}

/// Whether a principal whose tenant claim is `claim` belongs to the tenant
/// `owner` for what the tenant's membership grants (its unshared servers).
/// Stricter than the canonical form that decides whose *rules* apply
/// (where merging spellings only adds rules): tenant names are ASCII
/// (`[a-z][a-z0-9_]*`), so a claim matches only as exactly the same ASCII
/// letters in any case, nothing around them and nothing else. `finance `
/// or ` finance` (spaces around), `ﬁnance`, `ｆｉｎａｎｃｅ`, `financé`,
/// `fınance` (a dotless ı), which the canonical form folds into
/// `finance`, may be another organisation's name at an identity provider
/// that lets customers pick one: they never enter finance's servers.
pub fn member_of(claim: &str, owner: &str) -> bool {
    // Byte for byte but ASCII case: a byte that is not ASCII (`owner` is
    // ASCII) or any character more or less is another name.
    claim.is_ascii() && claim.eq_ignore_ascii_case(owner)
}

impl McpFilter for RegistryFilter {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            responses: Methods::Only(&["tools/list"]),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // A client's answer to a server→client request (sampling,
        // elicitation) goes to the server too: a retired, draft or
        // unshared server gets none (a stream opened before the change).
        if !matches!(env.kind, Kind::Request | Kind::Notification) {
            return match self.gate(ex.server, ex, &mut Notes::default()) {
                Err(d) => d,
                Ok(_) => Decision::Pass,
            };
        }
        // Only a request is a call (counted when deprecated).
        let mut noted = Notes::default();
        let gated = self.gate(ex.server, ex, &mut noted);
        if env.kind == Kind::Request {
            notes.notice = noted.notice.take().or(notes.notice.take());
        }
        let s = match gated {
            Err(d) => return d,
            Ok(None) => return Decision::Pass,
            Ok(Some(s)) => s,
        };
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let tester = ex.principal.roles.iter().any(|r| r == TESTER_ROLE);
        let ok = Self::acceptable(s, tool, tester);
        let live = self.live.get(ex.server, tool);
        // Unseen here (listed through another replica): the registered
        // definition is the one the client can have seen through a gateway.
        let passes = !ok.is_empty() && live.as_deref().is_none_or(|f| ok.contains(&f));
        if passes {
            return Decision::Pass;
        }
        refuse(
            codes::TOOL_QUARANTINED,
            "tool_not_approved",
            format!(
                "Tool `{}` is withheld: its definition is not the one approved in the registry",
                tool.escape_default()
            ),
        )
    }

    fn on_response(&self, msg: &Message<'_>, ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.is_error || msg.request_method != Some("tools/list") {
            return Decision::Pass;
        }
        let Some(Gate::Registered(s)) = self.gates.get(ex.server) else {
            return Decision::Pass;
        };
        let Some(mut v) = msg.value().cloned() else {
            return crate::chain::filter::unreadable_reply();
        };
        let tools = match crate::protocol::mcp::list_items(&mut v, "tools") {
            crate::protocol::mcp::ListItems::Items(tools) => tools,
            crate::protocol::mcp::ListItems::NotAList => return Decision::Pass,
            crate::protocol::mcp::ListItems::Unreadable => {
                return crate::chain::filter::unreadable_reply()
            }
        };
        let seen: Vec<(String, String)> = tools
            .iter()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?;
                // Only what the registry names is worth a fingerprint.
                s.tools.get(name).map(|r| {
                    let approved = r.approved.iter().chain(&r.candidate).map(String::as_str);
                    (name.to_owned(), fingerprint_as_approved(t, approved))
                })
            })
            .collect();
        self.live.record(ex.server, s, &seen);
        let tester = ex.principal.roles.iter().any(|r| r == TESTER_ROLE);
        let before = tools.len();
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(Json::as_str) else {
                return false;
            };
            let ok = Self::acceptable(s, name, tester);
            ok.contains(&fingerprint_as_approved(t, ok.iter().copied()).as_str())
        });
        if tools.len() == before {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
