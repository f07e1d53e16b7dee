//! Mirrored headers (2026-07-28): learns from each `tools/list` reply which
//! arguments a tool mirrors into `Mcp-Param-*` headers, drops tools whose
//! declarations are invalid, and refuses calls to them. The header rules
//! themselves are `protocol::mcp`.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;
use crate::protocol::mcp::{param_decls, ParamDecl};

/// A tool's mirrored arguments, or why its definition was refused.
pub type Declared = Result<Vec<ParamDecl>, &'static str>;

pub type ToolParams = Arc<Declared>;

/// server → tool → the `x-mcp-header` declarations of its listed definition.
/// Learned from every `tools/list` reply (with or without pinning), read on
/// every `tools/call` that carries or owes `Mcp-Param-*` headers.
#[derive(Default)]
pub struct ParamDecls {
    map: ArcSwap<HashMap<String, HashMap<String, ToolParams>>>,
}

impl ParamDecls {
    pub fn get(&self, server: &str, tool: &str) -> Option<ToolParams> {
        self.map.load().get(server)?.get(tool).cloned()
    }

    fn learn(&self, server: &str, tools: &[(String, Option<Declared>)]) {
        self.map.rcu(|m| {
            let mut m = (**m).clone();
            let s = m.entry(server.to_owned()).or_default();
            for (name, d) in tools {
                match d {
                    Some(d) => {
                        s.insert(name.clone(), Arc::new(d.clone()));
                    }
                    None => {
                        s.remove(name);
                    }
                }
            }
            m
        });
    }
}

/// Learns which arguments each listed tool mirrors into `Mcp-Param-*`
/// headers, drops tools whose declarations are invalid from `tools/list`
/// (as clients must), and refuses calls to such tools.
pub struct MirrorFilter {
    decls: Arc<ParamDecls>,
}

impl MirrorFilter {
    pub fn new(decls: Arc<ParamDecls>) -> Self {
        MirrorFilter { decls }
    }
}

impl McpFilter for MirrorFilter {
    fn name(&self) -> &'static str {
        "mirrored_headers"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::Only(&["tools/list"]),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let Some(tool) = env.name.as_deref() else {
            return Decision::Pass;
        };
        match self.decls.get(ctx.server, tool).as_deref() {
            Some(Err(why)) => Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INVALID_PARAMS,
                    format!("Tool definition refused: {why}"),
                ),
                "tool_header_declaration_invalid",
            )),
            _ => Decision::Pass,
        }
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.is_error || msg.request_method != Some("tools/list") {
            return Decision::Pass;
        }
        let Some(mut v) = msg.value().cloned() else {
            return Decision::Pass;
        };
        let Some(tools) = v
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(serde_json::Value::as_array_mut)
        else {
            return Decision::Pass;
        };
        let mut learned = Vec::with_capacity(tools.len());
        let before = tools.len();
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(serde_json::Value::as_str) else {
                return true;
            };
            // A listed tool with no mirrored argument is known too (an
            // empty list): its `Mcp-Param-*` headers are undeclared, not
            // unchecked.
            let d = match t.get("inputSchema").map(param_decls) {
                None => Some(Ok(Vec::new())),
                Some(r) => Some(r),
            };
            let keep = !matches!(d, Some(Err(_)));
            learned.push((name.to_owned(), d));
            keep
        });
        self.decls.learn(ctx.server, &learned);
        if tools.len() == before {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}
