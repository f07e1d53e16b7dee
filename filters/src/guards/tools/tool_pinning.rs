//! The `tool_pinning` guard: a tool definition a server lists is pinned
//! by its fingerprint; a changed one is quarantined (hidden from lists,
//! refused on call) until the bundle approves it (see `tools`).

use super::*;

/// Pins tool definitions from `tools/list` results and refuses quarantined tools.
pub struct PinFilter {
    pins: Arc<ToolPins>,
    pub(super) catalog: HashMap<String, ServerCatalog>,
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
