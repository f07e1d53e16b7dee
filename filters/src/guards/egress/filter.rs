//! [`EgressFilter`]: judges the URL- and host-valued arguments of a call
//! and URIs wherever MCP carries them, against the global and per-server
//! allowlists.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;
use warden_config::access::{ServerCatalog, ToolEntry};
use warden_config::guards::HostPattern;

use super::detect::url_like;
use super::found::{declared_value, walk, walk_outside, Found};
use super::readers::{check, check_found, AMBIGUOUS};
use super::schema::{
    declared_at, declares_url, near_named, schema_steps, schema_too_complex, URL_FORMATS,
};
use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::guards::tools::ToolPins;
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

pub struct EgressFilter {
    global: Vec<HostPattern>,
    pub(super) catalog: HashMap<String, ServerCatalog>,
    pins: Arc<ToolPins>,
    detect: bool,
}

impl std::fmt::Debug for EgressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressFilter")
    }
}

impl EgressFilter {
    pub fn new(
        global: Vec<HostPattern>,
        catalog: HashMap<String, ServerCatalog>,
        pins: Arc<ToolPins>,
        detect: bool,
    ) -> Self {
        EgressFilter {
            global,
            catalog,
            pins,
            detect,
        }
    }
}

impl McpFilter for EgressFilter {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn judges_again(&self) -> bool {
        true
    }

    /// A URL a reply's DLP rewrite made (a strip that joins a host) is judged.
    fn judges_reply_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::All,
            // Server→client messages: the URLs a server asks the client to
            // open (URL-mode elicitation), wherever they arrive, the URIs
            // it sends (resource links, contents, updates …), and the
            // icons and website links the client fetches or opens.
            responses: Methods::All,
        }
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        match super::elicitation::judge(msg, || self.exceptions(ctx)) {
            Decision::Pass => {}
            d => return d,
        }
        match super::links::judge(msg, || self.exceptions(ctx)) {
            Decision::Pass => super::icons::judge(msg, || self.exceptions(ctx)),
            d => d,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // URIs wherever MCP carries them, outside a call's arguments.
        let outside = self.judge_outside_arguments(msg, ctx);
        if !matches!(outside, Decision::Pass) {
            return outside;
        }
        if env.kind != Kind::Request {
            return Decision::Pass;
        }
        match env.method.as_deref() {
            Some("tools/call") => {}
            // A prompt's arguments are free text a prompt server may fetch
            // ("summarise this page"): URL detection judges them.
            Some("prompts/get") if self.detect => {
                let Some(args) = msg.arguments() else {
                    return Decision::Pass;
                };
                let mut values = Vec::new();
                walk(args, None, &mut values);
                let server_cat = self.catalog.get(ctx.server);
                return self.verdict(values, server_cat, None);
            }
            _ => return Decision::Pass,
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let server_cat = self.catalog.get(ctx.server);
        let tool_cat = server_cat.and_then(|c| c.tool(tool));
        // Declared URL arguments: the catalog's names and the schema's formats.
        let mut declared: Vec<String> = tool_cat
            .map(|t| t.url_arguments.clone())
            .unwrap_or_default();
        let schema_props = tool_cat.and_then(|t| t.input_schema.clone()).or_else(|| {
            // The server's own advertised schema, as pinned from tools/list.
            self.pins
                .get(ctx.server, tool)
                .and_then(|p| p.input_json.clone())
        });
        let props = schema_props
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object);
        for (k, p) in props.into_iter().flatten() {
            if p.get("format")
                .and_then(Json::as_str)
                .is_some_and(|f| URL_FORMATS.contains(&f))
            {
                declared.push(k.clone());
            }
        }
        // Nothing to judge: no declared URL argument, no schema and
        // detection off. The arguments are then never materialised.
        let nested = schema_props.as_deref().is_some_and(|s| declares_url(s, 0));
        if declared.is_empty() && !self.detect && schema_props.is_none() {
            return Decision::Pass;
        }
        let Some(args) = msg.arguments() else {
            return Decision::Pass;
        };
        // An argument whose name differs from a declared one only by case
        // or Unicode folding (`URL`, `hoſt`, `loc.Region`) is what a
        // case-insensitive server (Go's encoding/json) reads as the declared
        // one, while policy, schema and the lookups below would not see it:
        // refused at any depth the schema declares, never judged by a guess.
        let top: Vec<&str> = declared.iter().map(String::as_str).collect();
        // One budget per schema walk, counted once per call.
        let budget = schema_steps(args);
        let mut steps = budget;
        let near = near_named(
            schema_props.as_deref(),
            args,
            schema_props.as_deref(),
            &top,
            0,
            &mut steps,
        );
        if steps == 0 {
            return schema_too_complex();
        }
        if near {
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INVALID_PARAMS,
                    "An argument's name differs from one the tool declares only by case or \
                     Unicode folding; send the declared name exactly",
                )
                .with_data(serde_json::json!({"reason": "argument_near_name"})),
                "argument_near_name",
            ));
        }
        if declared.is_empty() && !self.detect && !nested {
            return Decision::Pass;
        }
        // Names a denial may quote: declared by the catalog or the schema.
        let known =
            |k: &str| declared.iter().any(|d| d == k) || props.is_some_and(|p| p.contains_key(k));
        let mut values: Vec<Found> = Vec::new();
        for name in &declared {
            match args.get(name) {
                Some(Json::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        let at = format!("{name}[{i}]");
                        match declared_value(at.clone(), x) {
                            Some(f) => values.push(f),
                            None => walk(x, Some(&at), &mut values),
                        }
                    }
                }
                Some(x) => match declared_value(name.clone(), x) {
                    Some(f) => values.push(f),
                    None => walk(x, Some(name), &mut values),
                },
                None => {}
            }
        }
        if self.detect {
            match &args {
                Json::Object(o) => {
                    for (k, x) in o {
                        // The key itself is content unless declared.
                        if url_like(k) {
                            values.push(Found {
                                argument: None,
                                value: k.as_str().into(),
                                whole: false,
                            });
                        }
                        walk(x, known(k).then_some(k.as_str()), &mut values);
                    }
                }
                x => walk(x, None, &mut values),
            }
        }
        if nested {
            if let Some(schema) = schema_props.as_deref() {
                let mut steps = budget;
                declared_at(schema, args, schema, "", &mut values, 0, &mut steps);
                if steps == 0 {
                    return schema_too_complex();
                }
            }
        }
        self.verdict(values, server_cat, tool_cat)
    }
}

impl EgressFilter {
    /// Network URIs outside a call's or prompt's arguments (a resource's
    /// URI, a completion's value, `_meta`, a root a client lists, anything
    /// a method carries): judged by the SSRF rules and the allowlists'
    /// exceptions to them, never by the allowlists alone, which are for
    /// what tools are sent. Other schemes name resources.
    fn judge_outside_arguments(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Decision {
        let env = msg.envelope;
        let mut values = Vec::new();
        // A client's answer to a server's request (a form's answers, a
        // sampled text, roots) goes to the server as a call's arguments do:
        // its URIs always, and with detection anything that reads as an
        // address.
        let detect = self.detect;
        let meta;
        match (env.method.as_deref(), env.kind) {
            // Their arguments are judged on their own; every other member of
            // `params` (`_meta`, a retry's `inputResponses` and
            // `requestState` …) here, read without the arguments (which are
            // not materialised twice).
            (Some("tools/call" | "prompts/get"), Kind::Request) => {
                meta = msg.params_raw().and_then(|p| {
                    let mut rest = serde_json::Map::new();
                    let mut bad = false;
                    let read =
                        crate::protocol::jsonrpc::object_members(p.as_bytes(), |key, span| {
                            if key == b"arguments" {
                                return;
                            }
                            match (
                                std::str::from_utf8(key),
                                serde_json::from_str::<Json>(&p[span]),
                            ) {
                                (Ok(k), Ok(v)) => {
                                    rest.insert(k.to_owned(), v);
                                }
                                _ => bad = true,
                            }
                        });
                    // The parser validated `params`: a member that cannot be
                    // read again is judged with the whole of it.
                    if bad || read.is_none() {
                        return serde_json::from_str::<Json>(p).ok();
                    }
                    Some(Json::Object(rest))
                });
                if let Some(m) = &meta {
                    walk_outside(m, detect, &mut values);
                }
            }
            // A client's error answer to a server's request goes to the
            // server too: its `data` is read as a result is.
            (_, Kind::Response) => {
                let part = msg
                    .value()
                    .and_then(|v| v.get(if env.is_error { "error" } else { "result" }));
                if let Some(r) = part {
                    walk_outside(r, detect, &mut values);
                }
            }
            _ => {
                if let Some(p) = msg.value().and_then(|v| v.get("params")) {
                    walk_outside(p, detect, &mut values);
                }
            }
        }
        if values.is_empty() {
            return Decision::Pass;
        }
        let allow = self.exceptions(ctx);
        for found in values {
            let verdict = if found.whole {
                check(&found.value, &allow)
            } else {
                check_found(&found.value, &allow, false)
            };
            match verdict {
                Ok(()) | Err("egress_not_allowlisted") => {}
                Err(rule) => {
                    return Decision::Reject(Denial::error(
                        JsonRpcError::new(
                            codes::EGRESS_DENIED,
                            format!(
                                "A URI in the request points at an address this gateway does not allow ({rule})"
                            ),
                        )
                        .with_data(serde_json::json!({"reason": "egress_denied", "rule": rule})),
                        format!("egress_denied:{rule}"),
                    ))
                }
            }
        }
        Decision::Pass
    }

    /// The global and the server's allowlists, for the exceptions they make
    /// to the SSRF rules where what is judged is not sent to a tool.
    fn exceptions(&self, ctx: &Exchange<'_>) -> Vec<&HostPattern> {
        self.allowlists(self.catalog.get(ctx.server))
    }

    /// The global allowlist and `server_cat`'s.
    fn allowlists<'s>(&'s self, server_cat: Option<&'s ServerCatalog>) -> Vec<&'s HostPattern> {
        self.global
            .iter()
            .chain(
                server_cat
                    .map(|c| c.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .collect()
    }

    /// The first value of `values` the allowlists (global, the server's,
    /// the tool's) refuse, as a denial that names only a declared argument.
    fn verdict(
        &self,
        values: Vec<Found<'_>>,
        server_cat: Option<&ServerCatalog>,
        tool_cat: Option<&ToolEntry>,
    ) -> Decision {
        if values.is_empty() {
            return Decision::Pass;
        }
        let mut allow = self.allowlists(server_cat);
        allow.extend(tool_cat.into_iter().flat_map(|t| t.egress_allow.iter()));
        for found in values {
            let verdict = if found.whole {
                check(&found.value, &allow)
            } else {
                check_found(&found.value, &allow, true)
            };
            let Err(rule) = verdict else { continue };
            // Never the value itself, nor a path through the arguments'
            // own keys: only a declared name.
            let what = if rule == AMBIGUOUS {
                "holds a URL that HTTP clients do not all read with the same host"
            } else {
                "points at an address this gateway does not allow"
            };
            let (message, data) = match &found.argument {
                Some(arg) => (
                    format!("Argument `{arg}` {what} ({rule})"),
                    serde_json::json!({"reason": "egress_denied", "rule": rule, "argument": arg}),
                ),
                None => (
                    format!("An argument {what} ({rule})"),
                    serde_json::json!({"reason": "egress_denied", "rule": rule}),
                ),
            };
            return Decision::Reject(Denial::error(
                JsonRpcError::new(codes::EGRESS_DENIED, message).with_data(data),
                format!("egress_denied:{rule}"),
            ));
        }
        Decision::Pass
    }
}
