//! The `schema` guard: a call's arguments checked against the input schema
//! of the tool as pinned, and its result against the output schema.

use super::*;

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
