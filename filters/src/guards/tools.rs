//! Tool definitions as servers advertise them: fingerprints, pinning and
//! quarantine (rug-pull defence), and the argument / output schemas that go
//! with them.
//!
//! Each definition a server lists is fingerprinted over its name, title,
//! description, input and output schema and annotations, and, when it has
//! them, its `execution`, `icons` and `_meta` (canonical JSON, SHA-256):
//! members a client acts on (task support, an app's UI resource), so a
//! change in them is a changed definition. A definition without them has
//! the fingerprint it had before those were covered. The first definition seen (or one the bundle approves) is pinned;
//! a later, different one — after `list_changed`, a restart, or a rename — is
//! quarantined: hidden from lists and refused on call until the bundle lists
//! its fingerprint. Names outside MCP's `[A-Za-z0-9_.-]{1,128}` (look-alike
//! Unicode included) and names that collide ignoring case are refused.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use warden_config::access::ServerCatalog;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

/// A compiled JSON Schema (draft 2020-12 by default, or the one `$schema` names).
pub type Schema = Arc<jsonschema::Validator>;

/// Compiles a schema once; `None` when it does not compile.
pub fn compile(schema: &Json) -> Option<Schema> {
    jsonschema::validator_for(schema).ok().map(Arc::new)
}

#[derive(Clone)]
pub struct Pinned {
    pub fingerprint: String,
    /// The fingerprint without `execution`, `icons` and `_meta`, as
    /// gateways before they were covered recorded it in the fleet's store:
    /// a fleet pin of that form agrees with this definition.
    pub legacy: String,
    /// Fingerprint of the definition without its name (to spot renames).
    pub body: String,
    /// Set when a different definition was seen and not approved.
    pub quarantined: Option<String>,
    pub input: Option<Schema>,
    pub output: Option<Schema>,
    /// The advertised input schema (its `format`s mark URL arguments).
    pub input_json: Option<Arc<Json>>,
}

/// server → tool → pinned definition.
type PinMap = HashMap<String, HashMap<String, Arc<Pinned>>>;

/// Pinned definitions of every server, shared by all snapshots of a gateway.
/// Read on every `tools/call` (a lookup by `&str`, no allocation); replaced
/// whole when a `tools/list` reply changes it.
#[derive(Default)]
pub struct ToolPins {
    map: ArcSwap<PinMap>,
    /// server → tool → the fingerprint the fleet pinned first (shared store).
    fleet: ArcSwap<HashMap<String, HashMap<String, String>>>,
}

impl ToolPins {
    /// Whether any pinned tool of `server` declares an output schema.
    pub fn any_output(&self, server: &str) -> bool {
        self.map
            .load()
            .get(server)
            .is_some_and(|tools| tools.values().any(|p| p.output.is_some()))
    }

    /// Every unquarantined pin: `(server, tool, fingerprint)`.
    pub fn pinned(&self) -> Vec<(String, String, String)> {
        let map = self.map.load();
        let mut out = Vec::new();
        for (s, tools) in map.iter() {
            for (t, p) in tools {
                if p.quarantined.is_none() && !p.fingerprint.is_empty() {
                    out.push((s.clone(), t.clone(), p.fingerprint.clone()));
                }
            }
        }
        out
    }

    /// The fleet's pin of `tool` on `server`, when the shared store has one.
    pub fn fleet_pin(&self, server: &str, tool: &str) -> Option<String> {
        self.fleet.load().get(server)?.get(tool).cloned()
    }

    /// Adopts the fleet's pins (first seen by any replica). A local pin that
    /// disagrees with the fleet's is quarantined: two replicas saw different
    /// definitions of one tool, which is what a rug pull looks like.
    pub fn set_fleet(&self, fleet: HashMap<String, HashMap<String, String>>) {
        self.map.rcu(|m| {
            let mut m = (**m).clone();
            for (server, tools) in m.iter_mut() {
                for (tool, p) in tools.iter_mut() {
                    let Some(f) = fleet.get(server).and_then(|t| t.get(tool)) else {
                        continue;
                    };
                    if p.quarantined.is_none()
                        && !p.fingerprint.is_empty()
                        && &p.fingerprint != f
                        && &p.legacy != f
                    {
                        let local = p.fingerprint.clone();
                        let pin = Arc::make_mut(p);
                        pin.fingerprint = f.clone();
                        pin.quarantined = Some(local);
                    }
                }
            }
            m
        });
        self.fleet.store(Arc::new(fleet));
    }

    pub fn get(&self, server: &str, tool: &str) -> Option<Arc<Pinned>> {
        self.map.load().get(server)?.get(tool).cloned()
    }

    /// Whether `server` listed a tool whose name is `tool` only ignoring
    /// case (tool names are ASCII): a server that looks tools up that way
    /// runs it.
    pub fn near(&self, server: &str, tool: &str) -> bool {
        self.map.load().get(server).is_some_and(|tools| {
            !tools.contains_key(tool) && tools.keys().any(|t| t.eq_ignore_ascii_case(tool))
        })
    }

    /// `(server, tool, new fingerprint)` of every quarantined tool.
    pub fn quarantined(&self) -> Vec<(String, String, String)> {
        let map = self.map.load();
        let mut out = Vec::new();
        for (s, tools) in map.iter() {
            for (t, p) in tools {
                if let Some(f) = &p.quarantined {
                    out.push((s.clone(), t.clone(), f.clone()));
                }
            }
        }
        out
    }
}

fn canonical_hash(v: &Json) -> String {
    // serde_json without `preserve_order` writes object keys sorted.
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(serde_json::to_vec(v).unwrap_or_default()))
    )
}

/// The fingerprint of a tool definition (what `warden tools fingerprint` prints).
pub fn fingerprint(tool: &Json) -> String {
    let mut covered = legacy_members(tool);
    for k in ["execution", "icons", "_meta"] {
        if let Some(v) = tool.get(k) {
            covered.insert(k.to_owned(), v.clone());
        }
    }
    canonical_hash(&Json::Object(covered))
}

/// The fingerprint of `tool` in the form an approval names: its
/// fingerprint, unless `approved` holds only the form it had before
/// `execution`, `icons` and `_meta` were covered (an approval taken by an
/// earlier version, which stays valid for the definition it named).
pub fn fingerprint_as_approved<'a>(
    tool: &Json,
    approved: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let fp = fingerprint(tool);
    if approved.clone().into_iter().any(|a| a == fp) {
        return fp;
    }
    let legacy = legacy_fingerprint(tool);
    if approved.into_iter().any(|a| a == legacy) {
        legacy
    } else {
        fp
    }
}

/// The fingerprint as it was before `execution`, `icons` and `_meta`
/// were covered.
fn legacy_fingerprint(tool: &Json) -> String {
    canonical_hash(&Json::Object(legacy_members(tool)))
}

fn legacy_members(tool: &Json) -> serde_json::Map<String, Json> {
    let pick = |k: &str| tool.get(k).cloned().unwrap_or(Json::Null);
    [
        "name",
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), pick(k)))
    .collect()
}

fn body_fingerprint(tool: &Json) -> String {
    let mut t = tool.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("name");
    }
    fingerprint(&t)
}

/// MCP tool names: 1–128 of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Pins tool definitions from `tools/list` results and refuses quarantined tools.
pub struct PinFilter {
    pins: Arc<ToolPins>,
    catalog: HashMap<String, ServerCatalog>,
}

impl std::fmt::Debug for PinFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinFilter")
    }
}

impl PinFilter {
    pub fn new(pins: Arc<ToolPins>, catalog: HashMap<String, ServerCatalog>) -> Self {
        PinFilter { pins, catalog }
    }

    fn approved(&self, server: &str, tool: &str) -> &[String] {
        self.catalog
            .get(server)
            .and_then(|c| c.tool(tool))
            .map_or(&[], |t| t.fingerprints.as_slice())
    }

    /// Judges one listed tool against `pins` (this server's); returns whether it may be shown.
    fn judge(&self, server: &str, tool: &Json, pins: &mut HashMap<String, Arc<Pinned>>) -> bool {
        let Some(name) = tool.get("name").and_then(Json::as_str) else {
            return false;
        };
        let fp = fingerprint(tool);
        let legacy = legacy_fingerprint(tool);
        let body = body_fingerprint(tool);
        let approved = self.approved(server, name);
        // An approval of the definition's earlier form (taken before
        // `execution`, `icons` and `_meta` were covered) pins it once; a
        // later change of those members is then a change like any other.
        let ok_by_bundle = approved.contains(&fp)
            || (approved.contains(&legacy)
                && pins
                    .get(name)
                    .is_none_or(|p| p.fingerprint == fp || p.fingerprint.is_empty()));
        let schemas = || {
            (
                tool.get("inputSchema").and_then(compile),
                tool.get("outputSchema").and_then(compile),
            )
        };
        match pins.get_mut(name) {
            Some(p) if p.fingerprint == fp => p.quarantined.is_none(),
            Some(p) if ok_by_bundle => {
                let (input, output) = schemas();
                *p = Arc::new(Pinned {
                    fingerprint: fp,
                    legacy,
                    body,
                    quarantined: None,
                    input,
                    output,
                    input_json: tool.get("inputSchema").cloned().map(Arc::new),
                });
                true
            }
            Some(p) => {
                Arc::make_mut(p).quarantined = Some(fp);
                false
            }
            None => {
                // Unseen name: quarantined when the bundle pinned something
                // else up front, or when it is a known tool under a new name.
                let renamed = pins.iter().any(|(n, p)| n != name && p.body == body);
                // Another replica pinned a different definition first.
                // (A fleet pin recorded before `execution`, `icons` and
                // `_meta` were covered agrees with its legacy form.)
                let fleet_differs = self
                    .pins
                    .fleet_pin(server, name)
                    .is_some_and(|f| f != fp && f != legacy);
                // An approval of the earlier form does not speak for
                // `execution`, `icons` and `_meta`: the fleet's pin of them
                // still does.
                let by_earlier_form = ok_by_bundle && !approved.contains(&fp);
                let bad = (!ok_by_bundle && (!approved.is_empty() || renamed || fleet_differs))
                    || (by_earlier_form && fleet_differs);
                let (input, output) = schemas();
                pins.insert(
                    name.to_owned(),
                    Arc::new(Pinned {
                        fingerprint: if bad { String::new() } else { fp.clone() },
                        legacy,
                        body,
                        quarantined: bad.then_some(fp),
                        input,
                        output,
                        input_json: tool.get("inputSchema").cloned().map(Arc::new),
                    }),
                );
                !bad
            }
        }
    }
}

impl McpFilter for PinFilter {
    fn name(&self) -> &'static str {
        "tool_pinning"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call", "tasks/get", "tasks/result"]),
            responses: Methods::Only(&["tools/list"]),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request {
            return Decision::Pass;
        }
        // A task's status and result are its tool's output: a tool
        // quarantined since the call started gives none of it.
        let tool = match env.method.as_deref() {
            Some("tools/call") => env.name.as_deref(),
            Some("tasks/get" | "tasks/result") => {
                notes.task.as_ref().and_then(|t| t.tool.as_deref())
            }
            _ => None,
        };
        let Some(tool) = tool else {
            return Decision::Pass;
        };
        let cataloged_near = || {
            self.catalog.get(ctx.server).is_some_and(|c| {
                c.tool(tool).is_none() && c.tools.keys().any(|t| t.eq_ignore_ascii_case(tool))
            })
        };
        let refused = if !valid_name(tool) {
            Some("tool_name_invalid")
        } else if self.pins.near(ctx.server, tool) || cataloged_near() {
            // `WIRE` for a listed `wire`: the policy judged another name
            // than a case-insensitive server runs.
            Some("tool_name_near")
        } else if self
            .pins
            .get(ctx.server, tool)
            .is_some_and(|p| p.quarantined.is_some())
        {
            Some("tool_quarantined")
        } else {
            None
        };
        match refused {
            None => Decision::Pass,
            Some(reason) => Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::TOOL_QUARANTINED,
                    format!("Tool `{}` is quarantined: its definition changed or its name is not allowed", tool.escape_default()),
                )
                .with_data(serde_json::json!({"reason": reason})),
                reason,
            )),
        }
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.is_error || msg.request_method != Some("tools/list") {
            return Decision::Pass;
        }
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
        // Names that some peer reads as one are all refused.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in tools.iter() {
            if let Some(n) = t.get("name").and_then(Json::as_str) {
                *seen
                    .entry(crate::protocol::names::fold(n).into_owned())
                    .or_default() += 1;
            }
        }
        let before = tools.len();
        // Read-copy-update: a pin another request recorded meanwhile (another
        // server's list, an approval) is never overwritten; on a conflict the
        // list is judged again against the newer pins.
        let mut keep: Vec<bool> = Vec::new();
        self.pins.map.rcu(|m| {
            let mut map = (**m).clone();
            let pins = map.entry(ctx.server.to_owned()).or_default();
            keep = tools
                .iter()
                .map(|t| {
                    t.get("name").and_then(Json::as_str).is_some_and(|n| {
                        valid_name(n)
                            && seen.get(&*crate::protocol::names::fold(n)) == Some(&1)
                            && self.judge(ctx.server, t, pins)
                    })
                })
                .collect();
            map
        });
        let mut verdicts = keep.into_iter();
        tools.retain(|_| verdicts.next().unwrap_or(false));
        if tools.len() == before {
            return Decision::Pass;
        }
        Decision::rewrite(&v)
    }
}

/// The replies that carry a tool's result: its call's, and its task's.
const RESULT_METHODS: &[&str] = &["tools/call", "tasks/result", "tasks/get"];

/// A tool's (input, output) schemas.
type SchemaPair = (Option<Schema>, Option<Schema>);
/// A map by name with a seeded fast hash.
type Fast<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Validates `tools/call` arguments and `structuredContent` against the
/// catalog's schemas, or those pinned from the server's own definitions.
pub struct SchemaFilter {
    pins: Arc<ToolPins>,
    /// Catalog schemas, compiled at bundle build: server → tool → (input,
    /// output). Keyed by the bundle's names, looked up on every call: a
    /// seeded fast hash, not SipHash.
    catalog: Fast<Fast<SchemaPair>>,
    tool_error: bool,
    validate_output: bool,
}

impl std::fmt::Debug for SchemaFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaFilter")
    }
}

impl SchemaFilter {
    pub fn new(
        pins: Arc<ToolPins>,
        catalog: &HashMap<String, ServerCatalog>,
        tool_error: bool,
        validate_output: bool,
    ) -> Self {
        let mut compiled: Fast<Fast<SchemaPair>> = Fast::default();
        for (server, c) in catalog {
            for (tool, t) in &c.tools {
                let input = t.input_schema.as_deref().and_then(compile);
                let output = t.output_schema.as_deref().and_then(compile);
                if input.is_some() || output.is_some() {
                    compiled
                        .entry(server.clone())
                        .or_default()
                        .insert(tool.clone(), (input, output));
                }
            }
        }
        SchemaFilter {
            pins,
            catalog: compiled,
            tool_error,
            validate_output,
        }
    }

    /// Whether any tool of `server` declares an output schema (catalog or pin).
    fn any_output_schema(&self, server: &str) -> bool {
        self.catalog
            .get(server)
            .is_some_and(|m| m.values().any(|(_, o)| o.is_some()))
            || self.pins.any_output(server)
    }

    fn schemas(&self, server: &str, tool: &str) -> (Option<Schema>, Option<Schema>) {
        let cat = self.catalog.get(server).and_then(|m| m.get(tool));
        let pin = self.pins.get(server, tool);
        (
            cat.and_then(|c| c.0.clone())
                .or_else(|| pin.as_ref().and_then(|p| p.input.clone())),
            cat.and_then(|c| c.1.clone())
                .or_else(|| pin.as_ref().and_then(|p| p.output.clone())),
        )
    }
}

/// Up to five validation messages about a server's output: which keyword
/// of the schema it fails, and nothing else. Neither the output's values and
/// member names nor the schema's own names reach the client inside the
/// gateway's error (where DLP would not see them): both are the server's.
pub fn output_problems(schema: &jsonschema::Validator, v: &Json) -> Vec<String> {
    // The common case, without the error iterator's allocations.
    if schema.is_valid(v) {
        return Vec::new();
    }
    schema
        .iter_errors(v)
        .take(5)
        .map(|e| format!("fails the schema's `{}`", e.kind().keyword()))
        .collect()
}

/// Up to five validation messages about a client's arguments, each with the
/// instance path (the client's own member names). `quote_schema`: the
/// message may quote the schema (enum values, patterns); only for the
/// catalog's schemas, never a server's, whose text DLP may have removed from
/// the list the client saw.
pub fn problems(schema: &jsonschema::Validator, v: &Json, quote_schema: bool) -> Vec<String> {
    if schema.is_valid(v) {
        return Vec::new();
    }
    schema
        .iter_errors(v)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            let what = if quote_schema {
                e.to_string()
            } else {
                format!("fails the schema's `{}`", e.kind().keyword())
            };
            if at.is_empty() {
                what
            } else {
                format!("{at}: {what}")
            }
        })
        .collect()
}

impl McpFilter for SchemaFilter {
    fn name(&self) -> &'static str {
        "schema"
    }

    fn judges_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::Only(RESULT_METHODS),
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
        let (Some(schema), _) = self.schemas(ctx.server, tool) else {
            return Decision::Pass;
        };
        let empty = Json::Object(Default::default());
        let args = match msg.arguments_raw() {
            Some(_) => msg.arguments().unwrap_or(&Json::Null),
            None => &empty,
        };
        let from_catalog = self
            .catalog
            .get(ctx.server)
            .and_then(|m| m.get(tool))
            .is_some_and(|c| c.0.is_some());
        let found = problems(&schema, args, from_catalog);
        if found.is_empty() {
            return Decision::Pass;
        }
        let text = format!(
            "Invalid arguments for tool `{tool}`:\n- {}",
            found.join("\n- ")
        );
        let error = JsonRpcError::new(codes::INVALID_PARAMS, text.clone())
            .with_data(serde_json::json!({"reason": "arguments_invalid", "errors": found}));
        Decision::Reject(Denial {
            error,
            reason: "arguments_invalid".into(),
            result: self.tool_error.then(|| {
                serde_json::json!({"content": [{"type": "text", "text": text}], "isError": true})
            }),
            step_up: None,
        })
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if !self.validate_output || env.kind != Kind::Response || env.is_error {
            return Decision::Pass;
        }
        let Some(method) = msg.request_method else {
            // A reply whose request this replica never saw (a server answering
            // on its stream instead): it may be a tool's output, so with
            // output schemas to enforce it is not passed on unchecked.
            if self.any_output_schema(ctx.server) {
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(
                        codes::UPSTREAM_PROTOCOL,
                        "The MCP server sent a reply to no request the gateway knows; it was withheld",
                    ),
                    "output_unjudgeable",
                ));
            }
            return Decision::Pass;
        };
        if !RESULT_METHODS.contains(&method) {
            return Decision::Pass;
        }
        // The schema first: a tool without one (most) costs no parse.
        let schema = match msg.request_target {
            Some(tool) => match self.schemas(ctx.server, tool) {
                (_, Some(schema)) => Some(schema),
                _ => return Decision::Pass,
            },
            None if method != "tools/call" && self.any_output_schema(ctx.server) => None,
            None => return Decision::Pass,
        };
        let Some(v) = msg.value() else {
            return Decision::Pass;
        };
        // The tool's result: the reply itself, or a task's (`tasks/result`
        // answers with it; a 2026-07-28 `tasks/get` of a finished task
        // carries it inline).
        let result = match method {
            "tasks/get" => match v["result"].get("result") {
                Some(r) => r,
                None => return Decision::Pass,
            },
            _ => &v["result"],
        };
        let Some(schema) = schema else {
            // A task whose creating tool this gateway cannot name: its
            // result cannot be checked, so it is not passed on.
            let text = "The task's tool is unknown to this gateway, so its result cannot be checked against an outputSchema";
            return Decision::Reject(Denial {
                error: JsonRpcError::new(codes::INTERNAL_ERROR, text),
                reason: "output_unjudgeable".into(),
                result: None,
                step_up: None,
            });
        };
        let tool = msg.request_target.unwrap_or_default();
        // Not the tool's final result: a task handle, or a multi-round-trip
        // request for input (2026-07-28; an older client reads any other
        // result as final, so only then). The final one is checked when it
        // comes. Any other `resultType` is checked like a final result.
        let modern = crate::protocol::version::ProtocolVersion::at_least(
            ctx.protocol_version,
            crate::protocol::version::ProtocolVersion::V2026_07_28,
        );
        let interim = matches!(
            result.get("resultType").and_then(Json::as_str),
            Some("task" | "input_required")
        );
        // 2025-11-25: a task handle (`task`) carrying nothing a client
        // could read as the tool's output.
        let handle = result.get("task").is_some_and(Json::is_object)
            && result.get("content").is_none()
            && result.get("structuredContent").is_none();
        if result["isError"] == true || (interim && modern) || handle {
            return Decision::Pass;
        }
        let found = match result.get("structuredContent") {
            Some(sc) => output_problems(&schema, sc),
            None => {
                vec!["the tool declares an outputSchema but returned no structuredContent".into()]
            }
        };
        if found.is_empty() {
            return Decision::Pass;
        }
        let text = format!(
            "The output of tool `{tool}` does not match its outputSchema:\n- {}",
            found.join("\n- ")
        );
        Decision::Reject(Denial {
            error: JsonRpcError::new(codes::INTERNAL_ERROR, text.clone()),
            reason: "output_invalid".into(),
            result: Some(
                serde_json::json!({"content": [{"type": "text", "text": text}], "isError": true}),
            ),
            step_up: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_fingerprints() {
        assert!(valid_name("get_weather.v2-beta"));
        assert!(!valid_name("ec\u{ff48}o"), "fullwidth h");
        assert!(!valid_name("e\u{0441}ho"), "Cyrillic es");
        assert!(!valid_name(""));
        let a = serde_json::json!({"name":"x","description":"d","inputSchema":{"type":"object"}});
        let b = serde_json::json!({"inputSchema":{"type":"object"},"description":"d","name":"x"});
        assert_eq!(
            fingerprint(&a),
            fingerprint(&b),
            "key order does not matter"
        );
        let c = serde_json::json!({"name":"x","description":"d!","inputSchema":{"type":"object"}});
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    /// A definition without `execution`, `icons` or `_meta` keeps the
    /// fingerprint gateways gave it before those were covered (pins and
    /// approvals in bundles stay valid); one with them is fingerprinted
    /// over them.
    #[test]
    fn fingerprints_cover_what_clients_act_on() {
        let plain =
            serde_json::json!({"name":"echo","description":"d","inputSchema":{"type":"object"}});
        assert_eq!(
            fingerprint(&plain),
            "sha256:641aa489fda7381b191b6347a0c0a824aff318697233f55d3afd9461e34f8fc6"
        );
        assert_eq!(fingerprint(&plain), legacy_fingerprint(&plain));
        for (k, v) in [
            ("execution", serde_json::json!({"taskSupport": "required"})),
            (
                "icons",
                serde_json::json!([{"src": "https://x.example/i.png"}]),
            ),
            (
                "_meta",
                serde_json::json!({"ui": {"resourceUri": "ui://evil"}}),
            ),
        ] {
            let mut t = plain.clone();
            t[k] = v;
            assert_ne!(fingerprint(&t), fingerprint(&plain), "{k}");
            assert_eq!(legacy_fingerprint(&t), legacy_fingerprint(&plain), "{k}");
        }
    }

    fn list(f: &PinFilter, tool: serde_json::Value) -> bool {
        use crate::chain::filter::{Exchange, McpFilter, Message, Notes};
        use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
        let reply =
            serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"tools":[tool]}}).to_string();
        let Ok(Parsed::Single(env)) = parse(reply.as_bytes(), ParseLimits::default()) else {
            panic!("parse")
        };
        let p = crate::chain::filter::Principal::anonymous();
        let msg = Message::from_server(&env, reply.as_bytes(), Some("tools/list"), None);
        let d = f.on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
        match d {
            Decision::Pass => true,
            Decision::Mutated(out) => String::from_utf8_lossy(&out).contains("\"echo\""),
            other => panic!("{other:?}"),
        }
    }

    /// A server that changes only a tool's `_meta` (an app's UI resource)
    /// or `execution` after the pin has it quarantined; a fleet pin
    /// recorded before those were covered still agrees with the definition.
    #[test]
    fn a_changed_meta_or_execution_is_a_rug_pull() {
        let tool = serde_json::json!({"name":"echo","description":"d","inputSchema":{"type":"object"},"_meta":{"ui":{"resourceUri":"ui://a"}}});
        for (k, v) in [
            (
                "_meta",
                serde_json::json!({"ui": {"resourceUri": "ui://evil"}}),
            ),
            ("execution", serde_json::json!({"taskSupport": "required"})),
        ] {
            let pins = Arc::new(ToolPins::default());
            let f = PinFilter::new(pins.clone(), HashMap::new());
            assert!(list(&f, tool.clone()));
            let mut changed = tool.clone();
            changed[k] = v;
            assert!(!list(&f, changed), "{k}");
            assert!(pins
                .get("s", "echo")
                .is_some_and(|p| p.quarantined.is_some()));
        }
        let pins = Arc::new(ToolPins::default());
        pins.set_fleet(HashMap::from([(
            "s".to_owned(),
            HashMap::from([("echo".to_owned(), legacy_fingerprint(&tool))]),
        )]));
        let f = PinFilter::new(pins.clone(), HashMap::new());
        assert!(list(&f, tool.clone()), "a legacy fleet pin agrees");
        let mut other = tool.clone();
        other["description"] = "changed".into();
        let pins = Arc::new(ToolPins::default());
        pins.set_fleet(HashMap::from([(
            "s".to_owned(),
            HashMap::from([("echo".to_owned(), legacy_fingerprint(&tool))]),
        )]));
        let f = PinFilter::new(pins, HashMap::new());
        assert!(
            !list(&f, other),
            "a legacy fleet pin of another definition disagrees"
        );
    }

    /// A catalog approval taken before `execution`, `icons` and `_meta`
    /// were covered (the TypeScript SDK lists `execution` on every tool)
    /// still pins the definition it named; a later change of those members
    /// is quarantined like any change.
    #[test]
    fn an_earlier_approval_pins_its_definition_once() {
        let tool = serde_json::json!({"name":"echo","description":"d","inputSchema":{"type":"object"},"execution":{"taskSupport":"forbidden"}});
        let catalog = HashMap::from([(
            "s".to_owned(),
            warden_config::access::ServerCatalog {
                tools: HashMap::from_iter([(
                    "echo".to_owned(),
                    warden_config::access::ToolEntry {
                        fingerprints: vec![legacy_fingerprint(&tool)],
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            },
        )]);
        let pins = Arc::new(ToolPins::default());
        let f = PinFilter::new(pins.clone(), catalog);
        assert!(list(&f, tool.clone()), "the approved definition is listed");
        assert!(list(&f, tool.clone()), "and again");
        let mut changed = tool.clone();
        changed["execution"] = serde_json::json!({"taskSupport": "required"});
        assert!(!list(&f, changed), "a changed execution is quarantined");
        assert_eq!(
            fingerprint_as_approved(&tool, [legacy_fingerprint(&tool).as_str()]),
            legacy_fingerprint(&tool)
        );
        assert_eq!(fingerprint_as_approved(&tool, []), fingerprint(&tool));
        // A fresh gateway whose fleet pinned the tool's new form: the earlier
        // approval does not let another `execution` in.
        let catalog = f.catalog.clone();
        let pins = Arc::new(ToolPins::default());
        pins.set_fleet(HashMap::from([(
            "s".to_owned(),
            HashMap::from([("echo".to_owned(), fingerprint(&tool))]),
        )]));
        let fresh = PinFilter::new(pins, catalog);
        let mut other = tool.clone();
        other["execution"] = serde_json::json!({"taskSupport": "required"});
        assert!(!list(&fresh, other), "the fleet's pin still speaks");
        assert!(list(&fresh, tool), "the pinned form passes");
    }

    /// Lists of many servers judged at once: every pin recorded survives
    /// (a load-clone-store update loses the ones written meanwhile).
    #[test]
    fn concurrent_lists_lose_no_pin() {
        use crate::chain::filter::{Exchange, McpFilter, Message, Notes};
        use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
        let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"t","description":"d","inputSchema":{"type":"object"}}]}}"#;
        let Ok(Parsed::Single(env)) = parse(reply.as_bytes(), ParseLimits::default()) else {
            panic!("parse")
        };
        let p = crate::chain::filter::Principal::anonymous();
        for round in 0..300 {
            let pins = Arc::new(ToolPins::default());
            let f = PinFilter::new(pins.clone(), HashMap::new());
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                for i in 0..8 {
                    let (f, start, env, p) = (&f, &start, &env, &p);
                    scope.spawn(move || {
                        let server = format!("s{i}");
                        let ex = Exchange::new(p, &server);
                        let msg =
                            Message::from_server(env, reply.as_bytes(), Some("tools/list"), None);
                        start.wait();
                        f.on_response(&msg, &ex, &mut Notes::default());
                    });
                }
            });
            for i in 0..8 {
                assert!(
                    pins.get(&format!("s{i}"), "t").is_some(),
                    "round {round}: the pin of s{i} was lost"
                );
            }
        }
    }
}
