//! Step-up authorisation: a tool whose catalog entry lists OAuth scopes is
//! called only with a token that carries them all.

use std::collections::HashMap;

use warden_config::access::ServerCatalog;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::jsonrpc::Kind;

/// The scopes of `needed` the principal's token does not carry.
pub(crate) fn missing_scopes(
    needed: &[String],
    who: &crate::engines::identity::Principal,
) -> Vec<String> {
    needed
        .iter()
        .filter(|s| !who.scopes.contains(s))
        .cloned()
        .collect()
}

/// Step-up authorization from the catalog: a tool listing `scopes` is called
/// only with a token that carries them all; otherwise the caller is told
/// which (403 `insufficient_scope`), so it can re-authorise for that call.
pub struct ScopeFilter {
    catalog: HashMap<String, ServerCatalog>,
}

impl ScopeFilter {
    /// `None` when no tool of the catalog needs a scope.
    pub fn new(catalog: &HashMap<String, ServerCatalog>) -> Option<Self> {
        catalog
            .values()
            .any(|c| c.tools.values().any(|t| !t.scopes.is_empty()))
            .then(|| ScopeFilter {
                catalog: catalog.clone(),
            })
    }
}

impl std::fmt::Debug for ScopeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScopeFilter")
    }
}

impl McpFilter for ScopeFilter {
    fn name(&self) -> &'static str {
        "scopes"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&[
                "tools/call",
                "tasks/get",
                "tasks/result",
                "tasks/update",
                "tasks/cancel",
            ]),
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request {
            return Decision::Pass;
        }
        // A task's requests need what its creating tool needs.
        let name = match env.method.as_deref() {
            Some("tools/call") => env.name.as_deref(),
            _ => notes.task.as_ref().and_then(|t| t.tool.as_deref()),
        };
        let Some(tool) = name.and_then(|n| self.catalog.get(ctx.server)?.tools.get(n)) else {
            return Decision::Pass;
        };
        let missing = missing_scopes(&tool.scopes, ctx.principal);
        if missing.is_empty() {
            Decision::Pass
        } else {
            Decision::Reject(Denial::insufficient_scope(missing))
        }
    }
}
