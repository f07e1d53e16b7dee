//! The policy filter: the bundle's Rego policy decides every request and
//! notification (and every server→client request, on a stream or carried
//! inside any other message: `inputRequests` at any depth of a result, a
//! status notification, a listed task or an error), and list results are
//! filtered to what the principal may use. The kill switch and step-up
//! scopes, its neighbours in authorisation, are `kill_switch` and `scopes`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;
use warden_config::access::{DenialStyle, Risk, ServerCatalog};

use crate::chain::filter::{
    unreadable_reply, Decision, Denial, Exchange, McpFilter, Message, Notes,
};
use crate::engines::policy::{PolicyDecision, PolicyEngine, PolicyInput};
use crate::protocol::embedded::Found;
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

use crate::guards::scopes::missing_scopes;

pub use crate::chain::notes::ShadowNote;

/// Decides every client→server request and notification, and every
/// server→client request, with the bundle's Rego policy; filters list results.
pub struct PolicyFilter {
    engine: Arc<PolicyEngine>,
    /// A candidate rule evaluated beside `engine`, never enforced.
    shadow: Option<Arc<PolicyEngine>>,
    catalog: HashMap<String, ServerCatalog>,
    denial: DenialStyle,
    /// Tenants' Rego, each composed with the org's for calls in its scope.
    tenants: Option<Arc<crate::guards::tenants::TenantPolicies>>,
    /// The input schemas servers listed (`tools` pins): whether a tool's
    /// argument types are known (see `PolicyFilter::types_unknown`).
    pins: Option<Arc<crate::guards::tools::ToolPins>>,
    /// The fleet's just-in-time grants (`input.principal.grants`).
    grants: Option<Arc<crate::engines::grants::Grants>>,
}

impl std::fmt::Debug for PolicyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFilter")
            .field("engine", &self.engine)
            .finish()
    }
}

/// The most resources one server message may carry or link (see
/// `judge_carried`).
const MAX_CARRIED_URIS: usize = 10_000;

/// The most values a completion may offer (MCP's own bound).
const MAX_COMPLETION_VALUES: usize = 100;

/// The most items one list page may hold to be judged (see `filter_list`).
const MAX_LIST_ITEMS: usize = 10_000;

/// What a list result holds and how each item is judged.
struct ListShape {
    array: &'static str,
    key: &'static str,
    as_method: &'static str,
}

/// What completion request `msg` of template `template` completes: its
/// argument's name and the other variables' values, read under every name
/// a folding peer reads as those; `None` when one reading does not agree
/// (a name that is no string, two of them, a value that is no string), the
/// template is not well formed, or the argument is none of its variables.
fn completing_of(msg: &Message<'_>, template: String) -> Option<crate::chain::notes::Completing> {
    let one = |v, name| crate::protocol::names::only_member(v, name).ok();
    let params = msg.value()?.get("params")?;
    let argument = one(params, "argument")??;
    let name = one(argument, "name")??.as_str()?.to_owned();
    // The argument completed must be one of the template's variables, or
    // its values would be judged as a URI they are not in.
    let vars = crate::protocol::uri_template::variables(&template)?;
    if !vars.contains(&name) {
        return None;
    }
    let mut context = Vec::new();
    if let Some(ctx) = one(params, "context")? {
        if let Some(args) = one(ctx, "arguments")? {
            for (k, x) in args.as_object()? {
                let x = x.as_str()?;
                // Only what the template reads is kept.
                if *k != name && vars.contains(k) {
                    context.push((k.clone(), x.to_owned()));
                }
            }
        }
    }
    Some(crate::chain::notes::Completing {
        template,
        argument: name,
        context,
    })
}

fn list_shape(method: &str) -> Option<ListShape> {
    Some(match method {
        "tools/list" => ListShape {
            array: "tools",
            key: "name",
            as_method: "tools/call",
        },
        "prompts/list" => ListShape {
            array: "prompts",
            key: "name",
            as_method: "prompts/get",
        },
        "resources/list" => ListShape {
            array: "resources",
            key: "uri",
            as_method: "resources/read",
        },
        "resources/templates/list" => ListShape {
            array: "resourceTemplates",
            key: "uriTemplate",
            as_method: "resources/read",
        },
        _ => return None,
    })
}

impl PolicyFilter {
    pub fn new(
        engine: Arc<PolicyEngine>,
        catalog: HashMap<String, ServerCatalog>,
        denial: DenialStyle,
    ) -> Self {
        PolicyFilter {
            engine,
            shadow: None,
            catalog,
            denial,
            tenants: None,
            pins: None,
            grants: None,
        }
    }

    /// Reads the input schemas servers listed from `pins`.
    pub fn with_pins(mut self, pins: Arc<crate::guards::tools::ToolPins>) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Hands the policy the caller's just-in-time grants from `grants`.
    pub fn with_grants(mut self, grants: Arc<crate::engines::grants::Grants>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Whether `tool`'s argument types are unknown to this gateway (no
    /// catalog `input_schema`, no schema the server listed here) while an
    /// argument the policy (or an applicable tenant's) reads holds a
    /// string a lax reader takes for a boolean, a number, a list or an
    /// object (see `analysis::coercible`): a rule on the
    /// typed value (`force == true`) would judge the string and the
    /// server act on the value it coerces. Once the schema is known, the
    /// schema guard refuses a string where it says `boolean`, and passes
    /// one where it says `string`, which the server then reads as such.
    fn types_unknown(&self, ctx: &Exchange<'_>, tool: &str, args: &Json) -> bool {
        let reads = |e: &PolicyEngine| e.reads_coercible_argument(args);
        if !(reads(&self.engine)
            || self
                .tenants
                .as_ref()
                .is_some_and(|t| t.applicable(ctx).any(|(_, e)| reads(e))))
        {
            return false;
        }
        let cataloged = self
            .catalog
            .get(ctx.server)
            .and_then(|c| c.tools.get(tool))
            .is_some_and(|t| t.input_schema.is_some());
        let listed = self
            .pins
            .as_ref()
            .and_then(|p| p.get(ctx.server, tool))
            .is_some_and(|p| p.input.is_some());
        !(cataloged || listed)
    }

    /// Composes the tenants' decisions with the org's on every message
    /// (a call is allowed only when the org and every applicable tenant allow it).
    pub fn with_tenants(
        mut self,
        tenants: Option<Arc<crate::guards::tenants::TenantPolicies>>,
    ) -> Self {
        self.tenants = tenants.filter(|t| !t.engines.is_empty());
        self
    }

    /// Evaluates `shadow` beside the enforced rule on every request.
    pub fn with_shadow(mut self, shadow: Option<Arc<PolicyEngine>>) -> Self {
        self.shadow = shadow;
        self
    }

    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }

    fn risk(&self, server: &str, tool: &str) -> Risk {
        self.catalog
            .get(server)
            .map_or(ServerCatalog::default().default_risk, |c| c.risk(tool))
    }

    /// The decision for `method` on `name` (a tool or prompt name, or a
    /// resource URI) as the policy sees it.
    fn decide(
        &self,
        ctx: &Exchange<'_>,
        seen: Option<&Notes>,
        method: &str,
        name: Option<&str>,
        args: Option<&str>,
        listing: bool,
    ) -> PolicyDecision {
        self.decide_with(&self.engine, ctx, seen, method, name, args, listing)
    }

    /// [`PolicyFilter::decide`] by `engine` (the enforced rule or the shadow).
    // The input's parts, each from where it lives (the exchange, the
    // flow note, the message): a struct would only be built to be taken apart.
    //
    // A resource URI is judged in every spelling servers read as the same
    // resource (`Reports 2024` and `Reports%202024`): a rule written on
    // any of them sees the call, and the strictest decision stands.
    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        engine: &PolicyEngine,
        ctx: &Exchange<'_>,
        seen: Option<&Notes>,
        method: &str,
        name: Option<&str>,
        args: Option<&str>,
        listing: bool,
    ) -> PolicyDecision {
        let d = self.decide_one(engine, ctx, seen, method, name, args, listing);
        let resource = matches!(
            method,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe"
        );
        match name {
            Some(uri) if resource => {
                crate::protocol::resource_uri::readings(uri)
                    .iter()
                    .fold(d, |d, r| {
                        d.stricter(self.decide_one(
                            engine,
                            ctx,
                            seen,
                            method,
                            Some(r),
                            args,
                            listing,
                        ))
                    })
            }
            _ => d,
        }
    }

    /// [`PolicyFilter::decide_with`] on one spelling of what is named.
    #[allow(clippy::too_many_arguments)]
    fn decide_one(
        &self,
        engine: &PolicyEngine,
        ctx: &Exchange<'_>,
        seen: Option<&Notes>,
        method: &str,
        name: Option<&str>,
        args: Option<&str>,
        listing: bool,
    ) -> PolicyDecision {
        let (tool, prompt, uri) = match method {
            // A task's requests are judged as its creating tool's.
            "tools/call" => (name, None, None),
            m if crate::guards::task_binding::names_task(m) => (name, None, None),
            "prompts/get" => (None, name, None),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                (None, None, name)
            }
            _ => (None, None, None),
        };
        // The caller's grants that hold now: one that expired is no
        // longer in the input, so no decision cached with it answers.
        let grants = self
            .grants
            .as_ref()
            .map(|g| g.of(ctx.principal, ctx.now))
            .unwrap_or_default();
        let input = PolicyInput {
            principal: ctx.principal,
            grants: &grants,
            server: ctx.server,
            group: ctx.group,
            via: ctx.via,
            method,
            tool,
            prompt,
            resource_uri: uri,
            arguments: args,
            risk: tool.map(|t| self.risk(ctx.server, t)),
            listing,
            now: ctx.now,
            source_ip: ctx.source_ip,
            justification: ctx.justification,
            session_id: ctx.session_id,
            flow: seen.and_then(|n| n.flow.as_ref()),
            anomaly: seen.and_then(|n| n.anomaly.as_ref()),
        };
        let d = engine.decide(&input);
        match &self.tenants {
            Some(t) => t.compose(d, &input, ctx),
            None => d,
        }
    }

    /// The refusal of a server's message (a result of any request, lists
    /// included, an error's data, a request, a notification) carrying or
    /// linking a resource the principal may not read (or a URI the policy
    /// cannot judge), if it does. The resource a read asked for was judged
    /// on its request.
    fn judge_carried(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Option<Decision> {
        let Some(result) = msg.said() else {
            return msg.value().is_none().then(unreadable_reply);
        };
        let asked = (msg.request_method == Some("resources/read"))
            .then_some(msg.request_target)
            .flatten();
        let mut hidden = false;
        // Each URI costs policy decisions (distinct ones miss the cache):
        // a message naming more than any reply needs is refused.
        let mut named = 0usize;
        let deep = crate::protocol::mcp::named_uris(result, 0, &mut |uri| {
            named += 1;
            if hidden || Some(uri) == asked || named > MAX_CARRIED_URIS {
                return;
            }
            hidden = self.unjudgeable_uri(ctx, uri)
                || !self
                    .decide(ctx, None, "resources/read", Some(uri), None, true)
                    .allow;
        });
        if named > MAX_CARRIED_URIS {
            return Some(Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INTERNAL_ERROR,
                    format!(
                        "The server's message names more than {MAX_CARRIED_URIS} resources; the gateway judges at most that many"
                    ),
                ),
                "too_many_resources",
            )));
        }
        (deep || hidden).then(|| {
            Decision::Reject(Denial::error(
                JsonRpcError::new(codes::DENIED, "Denied by policy"),
                "resource_hidden",
            ))
        })
    }

    /// Whether resource URI `uri` cannot be judged as the server reads it:
    /// a server could read it as another resource (`ambiguous_uri`), or a
    /// text the org's policy (or an applicable tenant's) writes is in it
    /// only when read loosely (another case, escapes, a compatibility
    /// form), so a rule would judge one resource while the server reads
    /// another.
    fn unjudgeable_uri(&self, ctx: &Exchange<'_>, uri: &str) -> bool {
        crate::protocol::mcp::ambiguous_uri(uri)
            || self.engine.near_uri_literal(uri)
            || self
                .tenants
                .as_ref()
                .is_some_and(|t| t.applicable(ctx).any(|(_, e)| e.near_uri_literal(uri)))
    }

    /// Whether `args` holds a near-name of an argument the org's policy, or
    /// that of a tenant applying to the call, reads by name.
    fn near_named(&self, ctx: &Exchange<'_>, args: &Json) -> bool {
        (self.engine.reads_arguments() && self.engine.near_named_argument(args))
            || self.tenants.as_ref().is_some_and(|t| {
                t.applicable(ctx)
                    .any(|(_, e)| e.reads_arguments() && e.near_named_argument(args))
            })
    }

    fn denial(
        &self,
        ctx: &Exchange<'_>,
        method: &str,
        name: Option<&str>,
        d: PolicyDecision,
    ) -> Denial {
        let reason = d.reason.to_string();
        // A name the principal may not even see is answered as if it did not exist.
        let hidden = matches!(method, "tools/call" | "prompts/get" | "resources/read")
            && !self.decide(ctx, None, method, name, None, true).allow;
        let name_s = name.unwrap_or_default();
        if hidden {
            let error = match method {
                "tools/call" => {
                    JsonRpcError::new(codes::INVALID_PARAMS, format!("Unknown tool: {name_s}"))
                }
                "prompts/get" => {
                    JsonRpcError::new(codes::INVALID_PARAMS, format!("Unknown prompt: {name_s}"))
                }
                _ => resource_not_found(ctx, name_s),
            };
            return Denial::error(error, reason);
        }
        let text = format!("Denied by policy: {reason}");
        let error = JsonRpcError::new(codes::DENIED, text.clone())
            .with_data(serde_json::json!({"reason": reason}));
        Denial::readable(
            error,
            reason,
            &text,
            method == "tools/call" && self.denial == DenialStyle::ToolError,
        )
    }

    /// The resources a `subscriptions/listen` request follows
    /// (`notifications.resourceSubscriptions`): every one must be a
    /// resource the principal may subscribe to, or the stream is refused
    /// as that subscription would be, a hidden one as unknown. A filter the
    /// gateway cannot read is refused.
    fn judge_listen(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Option<Decision> {
        let Some(v) = msg.value() else {
            return Some(unreadable_request());
        };
        let uris = match v
            .get("params")
            .and_then(|p| p.get("notifications"))
            .and_then(|n| n.get("resourceSubscriptions"))
        {
            None => return None,
            Some(Json::Array(a)) => a,
            Some(_) => return Some(unreadable_request()),
        };
        for uri in uris {
            let Some(uri) = uri.as_str() else {
                return Some(unreadable_request());
            };
            if let Some(refused) = self.judge_subscription(ctx, uri) {
                return Some(refused);
            }
        }
        None
    }

    /// A completion names a prompt (`ref/prompt`) or a resource or
    /// template (`ref/resource`): one the principal may not see is
    /// answered as unknown, as a `prompts/get` or `resources/read` of it
    /// is, so no completion tells what it holds, nor that it exists. A
    /// reference whose name or URI is not a string is refused.
    fn judge_completion(
        &self,
        msg: &Message<'_>,
        ctx: &Exchange<'_>,
        notes: &mut Notes,
    ) -> Option<Decision> {
        use crate::guards::names::{completion_ref, CompletionRef};
        match completion_ref(msg) {
            CompletionRef::Prompt(name) => {
                if self
                    .decide(ctx, None, "prompts/get", Some(&name), None, true)
                    .allow
                {
                    return None;
                }
                Some(Decision::Reject(Denial::error(
                    JsonRpcError::new(codes::INVALID_PARAMS, format!("Unknown prompt: {name}")),
                    "prompt_hidden",
                )))
            }
            CompletionRef::Resource(uri) => {
                if self.unjudgeable_uri(ctx, &uri) {
                    return Some(ambiguous_resource());
                }
                if let Some(hidden) = self.hidden_resource(ctx, &uri) {
                    return Some(hidden);
                }
                // The values the server offers are judged as the URIs they
                // make of the template (see `filter_completion`).
                // What the ledger cannot keep is refused before any work on
                // it (the template is parsed only when short).
                let too_long = || {
                    Some(Decision::Reject(Denial::error(
                        JsonRpcError::new(
                            codes::INVALID_PARAMS,
                            format!(
                                "A completion of a resource template is judged by the URIs its values make: its template, argument name and context.arguments may take at most {} bytes",
                                crate::chain::notes::Completing::MAX_TEXT
                            ),
                        ),
                        "completion_too_long",
                    )))
                };
                if uri.len() > crate::chain::notes::Completing::MAX_TEXT {
                    return too_long();
                }
                let Some(completing) = completing_of(msg, uri) else {
                    return Some(Decision::Reject(Denial::error(
                        JsonRpcError::new(
                            codes::INVALID_PARAMS,
                            "Invalid params: a completion of a resource template needs an argument.name that is one of the template's variables, and string context.arguments",
                        ),
                        "params_unreadable",
                    )));
                };
                let Some(text) = completing.to_text() else {
                    return too_long();
                };
                notes.completing = Some(text);
                None
            }
            CompletionRef::Unreadable => Some(unreadable_request()),
        }
    }

    /// A completion reply to a resource template's argument: each value
    /// it offers makes a URI of the template (as RFC 6570 expands it, and
    /// as a client joining strings makes it), and a value whose URI the
    /// principal may not read, or that cannot be judged, is taken out, as
    /// a list's hidden items are: a completion must not tell that a hidden
    /// resource exists. The reply is always rewritten in one form, its
    /// `total` the number of values kept. Values that are not an array of
    /// at most 100 strings are refused. A value is taken out when another
    /// variable of the template has no value in the request's context
    /// (the URI the server completed in is unknown), and every value is
    /// without `c` (a reply to a request this replica does not know).
    fn filter_completion(
        &self,
        msg: &Message<'_>,
        ctx: &Exchange<'_>,
        c: Option<&crate::chain::notes::Completing>,
    ) -> Decision {
        use crate::protocol::names::{members_named, same_name};
        let Some(result) = msg.value().and_then(|v| v.get("result")) else {
            return unreadable_reply();
        };
        if c.is_none() && members_named(result, "completion").next().is_none() {
            return Decision::Pass;
        }
        let Some(mut v) = msg.value().cloned() else {
            return unreadable_reply();
        };
        let Some(result) = v.get_mut("result").and_then(Json::as_object_mut) else {
            return unreadable_reply();
        };
        let visible = |value: &str| {
            c.and_then(|c| c.uris(value)).is_some_and(|uris| {
                uris.iter().all(|uri| {
                    !self.unjudgeable_uri(ctx, uri)
                        && self
                            .decide(ctx, None, "resources/read", Some(uri), None, true)
                            .allow
                })
            })
        };
        for (k, completion) in result.iter_mut() {
            if !same_name(k, "completion") {
                continue;
            }
            let Some(completion) = completion.as_object_mut() else {
                return unreadable_reply();
            };
            let mut kept: Vec<Json> = Vec::new();
            for (k, values) in completion.iter() {
                if !same_name(k, "values") {
                    continue;
                }
                let Some(values) = values.as_array() else {
                    return unreadable_reply();
                };
                // MCP allows 100 values; each costs policy decisions.
                if values.len() + kept.len() > MAX_COMPLETION_VALUES
                    || values.iter().any(|x| !x.is_string())
                {
                    return unreadable_reply();
                }
                kept.extend(
                    values
                        .iter()
                        .filter(|x| x.as_str().is_some_and(&visible))
                        .cloned(),
                );
            }
            // Always the same form, whether a value was taken out or not,
            // and nothing else the server said beside the values: a
            // `total` or `hasMore` counting values the client does not
            // get, or a reply rewritten only when one was, would tell
            // that a hidden resource matched.
            let total = kept.len();
            *completion = serde_json::Map::from_iter([
                ("values".to_owned(), Json::Array(kept)),
                ("total".to_owned(), Json::from(total)),
            ]);
        }
        Decision::rewrite(&v)
    }

    /// A subscription must be to a resource the principal may see at all,
    /// since every update names it: a hidden one is answered as unknown.
    fn hidden_resource(&self, ctx: &Exchange<'_>, uri: &str) -> Option<Decision> {
        let visible = self
            .decide(ctx, None, "resources/read", Some(uri), None, true)
            .allow;
        (!visible).then(|| {
            Decision::Reject(Denial::error(
                resource_not_found(ctx, uri),
                "resource_hidden",
            ))
        })
    }

    /// One URI of a listen stream's filter: visible, and allowed as a
    /// `resources/subscribe` of it would be.
    fn judge_subscription(&self, ctx: &Exchange<'_>, uri: &str) -> Option<Decision> {
        if self.unjudgeable_uri(ctx, uri) {
            return Some(ambiguous_resource());
        }
        if let Some(hidden) = self.hidden_resource(ctx, uri) {
            return Some(hidden);
        }
        let d = self.decide(ctx, None, "resources/subscribe", Some(uri), None, false);
        if d.allow {
            return None;
        }
        let reason = d.reason.to_string();
        Some(Decision::Reject(Denial::error(
            JsonRpcError::new(codes::DENIED, format!("Denied by policy: {reason}"))
                .with_data(serde_json::json!({"reason": reason})),
            reason,
        )))
    }

    /// Server→client requests carried inside a message (`inputRequests`:
    /// an `InputRequiredResult`, a task waiting for input in a `tasks/get`
    /// or `tasks/list` reply or a status notification, or any other place a
    /// server puts them, at any depth of a result, params or error; see
    /// `protocol::embedded`) get the decision the same requests get on a
    /// stream. One denied request refuses the whole message: a reply is
    /// answered with the denial for the client's request id (so nothing
    /// waits on an answer it may not give), a notification or request is
    /// dropped, as a denied request on a stream is. A message carrying a
    /// request the gateway cannot read is refused, never passed as is.
    fn judge_embedded(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Decision {
        let Some(v) = msg.value() else {
            return unreadable_reply();
        };
        let mut found = Vec::new();
        crate::protocol::embedded::in_message(v, &mut |f| found.push(f));
        if found.contains(&Found::Unreadable) {
            // A method or params the client reads otherwise than the rule
            // (`Elicitation/Create`, positional params), a map that is no
            // object: unreadable.
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::UPSTREAM_PROTOCOL,
                    "The server asked for input the gateway cannot read",
                ),
                "input_request_unreadable",
            ));
        }
        // One decision per method (a task list may repeat one many times).
        let mut judged: Vec<&str> = Vec::new();
        for f in found {
            let Found::Request { method, .. } = f else {
                continue;
            };
            if judged.contains(&method) {
                continue;
            }
            judged.push(method);
            let d = self.decide(ctx, None, method, None, None, false);
            if !d.allow {
                // The method is the server's text: named only when it is one
                // the revision defines.
                let known = matches!(
                    method,
                    "sampling/createMessage" | "elicitation/create" | "roots/list"
                );
                let mut data = serde_json::json!({"reason": d.reason.to_string()});
                if known {
                    data["inputRequest"] = Json::from(method);
                }
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(codes::DENIED, format!("Denied by policy: {}", d.reason))
                        .with_data(data),
                    d.reason.to_string(),
                ));
            }
        }
        Decision::Pass
    }

    /// A URL elicitation the server asks for in an error (-32042,
    /// `data.elicitations`, 2025-11-25) is a server→client request carried
    /// in a reply: it gets the policy an `elicitation/create` on a stream
    /// gets, or the error would open a URL the policy refuses to open.
    fn judge_error_elicitations(&self, msg: &Message<'_>, ctx: &Exchange<'_>) -> Decision {
        let Some(error) = msg.value().and_then(|v| v.get("error")) else {
            return Decision::Pass;
        };
        // Any error that carries elicitations (whatever spelling of the
        // code, or name a folding client reads as `elicitations`).
        let asks = crate::protocol::error::code_of(error)
            == Some(i64::from(codes::URL_ELICITATION_REQUIRED))
            || error.get("data").is_some_and(|d| {
                crate::protocol::names::members_named(d, "elicitations")
                    .next()
                    .is_some()
            });
        if !asks {
            return Decision::Pass;
        }
        let d = self.decide(ctx, None, "elicitation/create", None, None, false);
        if d.allow {
            return Decision::Pass;
        }
        Decision::Reject(Denial::error(
            JsonRpcError::new(codes::DENIED, format!("Denied by policy: {}", d.reason)).with_data(
                serde_json::json!({"reason": d.reason.to_string(), "inputRequest": "elicitation/create"}),
            ),
            d.reason.to_string(),
        ))
    }

    /// Removes the items of a list result the principal may not use.
    fn filter_list(&self, reply: &Message<'_>, ctx: &Exchange<'_>, shape: &ListShape) -> Decision {
        let Some(mut msg) = reply.value().cloned() else {
            return unreadable_reply();
        };
        let items = match crate::protocol::mcp::list_items(&mut msg, shape.array) {
            crate::protocol::mcp::ListItems::Items(items) => items,
            crate::protocol::mcp::ListItems::NotAList => return Decision::Pass,
            crate::protocol::mcp::ListItems::Unreadable => return unreadable_reply(),
        };
        let before = items.len();
        // Each item costs a policy decision (distinct names miss the
        // decision cache): a page longer than any server needs is refused
        // rather than judged, as the names guard refuses it for tools and
        // prompts.
        if before > MAX_LIST_ITEMS {
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INTERNAL_ERROR,
                    format!("The server's list holds more than {MAX_LIST_ITEMS} items in one page"),
                ),
                "list_too_long",
            ));
        }
        // A resource's URI (or a template's) that servers read as another
        // resource than its text: the rule would judge the text, so the
        // entry is hidden, as an update naming it is.
        let uris = shape.as_method == "resources/read";
        items.retain(|item| {
            let name = item.get(shape.key).and_then(Json::as_str);
            name.is_some_and(|n| !(uris && self.unjudgeable_uri(ctx, n)))
                && self
                    .decide(ctx, None, shape.as_method, name, None, true)
                    .allow
        });
        let filtered = items.len() != before;
        // The list was judged for this principal: a shared cache must not
        // hand it to another (2026-07-28 `cacheScope`, SEP-2549).
        if !privately_cached(&mut msg, ctx) && !filtered {
            return Decision::Pass;
        }
        Decision::rewrite(&msg)
    }
}

/// Marks the result of `reply`, judged for one principal, `cacheScope:
/// "private"` where a shared cache could take it as public: a scope other
/// than `private`, or none on a 2026-07-28 session (the schema's default is
/// public) or beside a lifetime (`ttlMs`). Whether it changed.
fn privately_cached(reply: &mut Json, ctx: &Exchange<'_>) -> bool {
    let Some(r) = reply.get_mut("result").and_then(Json::as_object_mut) else {
        return false;
    };
    let modern = crate::protocol::version::ProtocolVersion::at_least(
        ctx.protocol_version,
        crate::protocol::version::ProtocolVersion::V2026_07_28,
    );
    let shared = match r.get("cacheScope") {
        Some(c) => c != "private",
        None => modern || r.contains_key("ttlMs"),
    };
    if shared {
        r.insert("cacheScope".into(), Json::from("private"));
    }
    shared
}

/// The one answer for a resource the principal cannot read, hidden by
/// policy or unknown to the server alike: the server's own not-found
/// answers are rewritten to it, so that no difference of code, message or
/// data tells a hidden resource from one that does not exist. 2026-07-28
/// moved resource-not-found to -32602.
/// Whether `v` holds, at any depth, a member named as serde_json's
/// private big-number marker.
fn number_marker(v: &Json, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match v {
        Json::Object(o) => o
            .iter()
            .any(|(k, x)| k == "$serde_json::private::Number" || number_marker(x, depth - 1)),
        Json::Array(a) => a.iter().any(|x| number_marker(x, depth - 1)),
        _ => false,
    }
}

fn resource_not_found(ctx: &Exchange<'_>, uri: &str) -> JsonRpcError {
    let code = if crate::protocol::version::ProtocolVersion::at_least(
        ctx.protocol_version,
        crate::protocol::version::ProtocolVersion::V2026_07_28,
    ) {
        codes::INVALID_PARAMS
    } else {
        codes::RESOURCE_NOT_FOUND
    };
    JsonRpcError::new(code, "Resource not found").with_data(serde_json::json!({"uri": uri}))
}

/// A resource URI a server could read as another resource: refused before
/// any rule judges its text.
fn ambiguous_resource() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            "The resource URI holds dot segments, empty segments, escaped separators, \
             backslashes or control characters that servers read differently; send it \
             normalised",
        )
        .with_data(serde_json::json!({"reason": "resource_uri_ambiguous"})),
        "resource_uri_ambiguous",
    ))
}

/// A request member a concern must judge but cannot read: refused.
fn unreadable_request() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            "Invalid params: a member the gateway judges has the wrong type",
        ),
        "params_unreadable",
    ))
}

impl McpFilter for PolicyFilter {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn judges_again(&self) -> bool {
        true
    }

    /// A name a reply's DLP rewrite made (a strip that joins `wire`) is judged: hidden, or refused.
    fn judges_reply_again(&self) -> bool {
        true
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // Client answers to server→client requests were judged when the request went by.
        let (Kind::Request | Kind::Notification, Some(method)) = (env.kind, env.method.as_deref())
        else {
            return Decision::Pass;
        };
        let name = if crate::guards::task_binding::names_task(method) {
            // The tool whose call created the task (the task filter opened its id).
            notes.task.as_ref().and_then(|t| t.tool.as_deref())
        } else {
            crate::protocol::mcp::judged_target(env)
        };
        // A resource URI a server could read as another resource: the
        // policy would judge the text, the server read something else.
        if matches!(
            method,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe"
        ) && name.is_some_and(|n| self.unjudgeable_uri(ctx, n))
        {
            return ambiguous_resource();
        }
        let args = match method {
            "tools/call" | "prompts/get" => msg.arguments_raw(),
            _ => None,
        };
        // A member named as serde's private big-number marker: Rego's JSON
        // reader takes the object holding it for a number (or fails on
        // it), the gateway and the server for an object.
        if args.is_some() && msg.arguments().is_some_and(|a| number_marker(a, 128)) {
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INVALID_PARAMS,
                    "An argument holds a member the policy engine cannot read \
                     ($serde_json::private::Number)",
                )
                .with_data(serde_json::json!({"reason": "policy_arguments_unreadable"})),
                "policy_arguments_unreadable",
            ));
        }
        // An argument the policy reads by name, sent under a name a folding
        // server reads as it (`Region` for `region`): the policy would judge
        // it absent while the server acts on it. Refused, never guessed.
        if args.is_some() && msg.arguments().is_some_and(|a| self.near_named(ctx, a)) {
            return Decision::Reject(Denial::error(
                JsonRpcError::new(
                    codes::INVALID_PARAMS,
                    "An argument's name differs from one the policy reads only by case or \
                     Unicode folding; send the exact name",
                )
                .with_data(serde_json::json!({"reason": "argument_near_name"})),
                "argument_near_name",
            ));
        }
        if let (Some(tool), true) = (name, method == "tools/call" && args.is_some()) {
            if msg
                .arguments()
                .is_some_and(|a| self.types_unknown(ctx, tool, a))
            {
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(
                        codes::INVALID_PARAMS,
                        "An argument the policy reads is a string a server may read as a boolean, \
                         a number, a list or an object, and the tool's input schema is not known \
                         to the gateway yet: list the tools first, or send the value in its own \
                         type",
                    )
                    .with_data(serde_json::json!({"reason": "argument_type_unknown"})),
                    "argument_type_unknown",
                ));
            }
        }
        let d = self.decide(ctx, Some(&*notes), method, name, args, false);
        if let Some(shadow) = &self.shadow {
            let s = self.decide_with(shadow, ctx, Some(&*notes), method, name, args, false);
            if s.allow != d.allow {
                notes.shadow = Some(ShadowNote {
                    enforced_allow: d.allow,
                    enforced_reason: d.reason.to_string(),
                    shadow_allow: s.allow,
                    shadow_reason: s.reason.to_string(),
                });
            }
        }
        if !d.allow {
            return Decision::Reject(self.denial(ctx, method, name, d));
        }
        // A name this replica knows of no other way (the bundle does not
        // write it, the server was not seen listing it) may be a spelling
        // a folding server reads as a name the policy hides by a pattern
        // (`ADMIN_purge` for `admin_purge` under a rule on `admin_`): each
        // reading is judged too, and one the policy denies refuses it.
        if notes.unlisted_name && env.kind == Kind::Request {
            let named = match method {
                "tools/call" => Some(crate::guards::names::Named::Tool),
                "prompts/get" => Some(crate::guards::names::Named::Prompt),
                _ => None,
            };
            if let (Some(named), Some(n)) = (named, name) {
                for r in crate::protocol::names::folded_readings(n) {
                    if r != n
                        && !self
                            .decide(ctx, Some(&*notes), method, Some(&r), args, false)
                            .allow
                    {
                        return Decision::Reject(crate::guards::names::near_name_denial(named));
                    }
                }
            }
        }
        // A subscription (a listen stream's of 2026-07-28 names several)
        // must be to a resource the principal may see: every update names it.
        match (method, env.kind, name) {
            ("subscriptions/listen", Kind::Request, _) => {
                if let Some(refused) = self.judge_listen(msg, ctx) {
                    return refused;
                }
            }
            ("completion/complete", Kind::Request, _) => {
                if let Some(refused) = self.judge_completion(msg, ctx, notes) {
                    return refused;
                }
            }
            // Its subscribe decision was made above.
            ("resources/subscribe", Kind::Request, Some(uri)) => {
                if let Some(hidden) = self.hidden_resource(ctx, uri) {
                    return hidden;
                }
            }
            _ => {}
        }
        if let Some(ask) = &d.approval {
            if method != "tools/call" || env.kind != Kind::Request {
                // Only a tool call can be held for approval: anything
                // else the policy asks approvers for is refused.
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(
                        codes::DENIED,
                        format!(
                            "Denied by policy: only tool calls can wait for approvers ({method})"
                        ),
                    )
                    .with_data(serde_json::json!({"reason": "approval_unsupported"})),
                    "approval_unsupported",
                ));
            }
            // The approval filter, last in the chain, holds the call; an
            // ask made before (the flow's) stands beside this one.
            notes.approval_asked = Some(match notes.approval_asked.take() {
                Some(earlier) => earlier.stricter(ask.clone()),
                None => ask.clone(),
            });
        }
        // Step-up: the decision names scopes this call needs.
        match d
            .scopes
            .as_deref()
            .map(|s| missing_scopes(s, ctx.principal))
        {
            Some(missing) if !missing.is_empty() => {
                Decision::Reject(Denial::insufficient_scope(missing))
            }
            _ => Decision::Pass,
        }
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        // Every concern that applies to a message judges it, whatever else
        // it holds: the requests it carries (a result's, a status
        // notification's, a listed task's, an error's, at any depth), then
        // what it is. No concern's pass stands for another's. A message
        // that cannot name them is not read for them.
        if msg.may_embed_requests() {
            let d = self.judge_embedded(msg, ctx);
            if !matches!(d, Decision::Pass) {
                return d;
            }
        }
        // The resources any message carries or links (a read's `contents`,
        // an embedded `resource`, a `resource_link`), wherever they are: a
        // call's or a prompt's result, a list item's `_meta`, an error's
        // data, a sampling request, a log message or an update
        // notification's `_meta`, an `input_required` result's embedded
        // request. A directory read or a symlink must not hand over a
        // hidden one, nor a link tell it exists, as a notification about
        // it would not. What a kind of message names itself is judged
        // below, besides.
        if msg.may_name_uri() {
            if let Some(d) = self.judge_carried(msg, ctx) {
                return d;
            }
        }
        match env.kind {
            // Server→client requests: sampling, elicitation, roots, ping.
            Kind::Request => {
                let method = env.method.as_deref().unwrap_or_default();
                let d = self.decide(ctx, None, method, None, None, false);
                if d.allow {
                    Decision::Pass
                } else {
                    Decision::Reject(Denial::error(
                        JsonRpcError::new(codes::DENIED, format!("Denied by policy: {}", d.reason)),
                        d.reason.to_string(),
                    ))
                }
            }
            // What a server says about a resource reaches only a principal
            // who may see that resource.
            Kind::Notification
                if env.method.as_deref() == Some("notifications/resources/updated") =>
            {
                let uri = msg
                    .value()
                    .and_then(|v| v.get("params")?.get("uri")?.as_str().map(str::to_owned));
                let Some(uri) = uri else {
                    return unreadable_reply();
                };
                if self.unjudgeable_uri(ctx, &uri) {
                    return Decision::Reject(Denial::error(
                        JsonRpcError::new(codes::DENIED, "Denied by policy"),
                        "resource_hidden",
                    ));
                }
                if self
                    .decide(ctx, None, "resources/read", Some(&uri), None, true)
                    .allow
                {
                    Decision::Pass
                } else {
                    Decision::Reject(Denial::error(
                        JsonRpcError::new(codes::DENIED, "Denied by policy"),
                        "resource_hidden",
                    ))
                }
            }
            // A server's "not found" for a resource answers as the gateway
            // answers for a hidden one.
            Kind::Response
                if env.is_error
                    && matches!(
                        msg.request_method,
                        Some("resources/read" | "resources/subscribe" | "resources/unsubscribe")
                    ) =>
            {
                let Some(v) = msg.value() else {
                    return unreadable_reply();
                };
                let code = v.get("error").and_then(crate::protocol::error::code_of);
                if !matches!(code, Some(c) if c == i64::from(codes::RESOURCE_NOT_FOUND) || c == i64::from(codes::INVALID_PARAMS))
                {
                    // Not a not-found: still an error, read for elicitations.
                    return self.judge_error_elicitations(msg, ctx);
                }
                let uri = msg.request_target.unwrap_or_default();
                let mut out = v.clone();
                out["error"] =
                    serde_json::to_value(resource_not_found(ctx, uri)).unwrap_or(Json::Null);
                Decision::rewrite(&out)
            }
            // A completion of a resource template that failed answers as
            // one that found nothing: a server's "unknown department"
            // for a missing one and values (all hidden) for a hidden one
            // would tell the two apart.
            Kind::Response
                if env.is_error
                    && msg.request_method == Some("completion/complete")
                    && msg.request_completion.is_some() =>
            {
                let id = msg
                    .value()
                    .and_then(|v| v.get("id"))
                    .cloned()
                    .unwrap_or(Json::Null);
                Decision::rewrite(&serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "result": {"completion": {"values": [], "total": 0}},
                }))
            }
            // Errors are few: each is read for elicitations however it
            // spells them.
            Kind::Response if env.is_error => self.judge_error_elicitations(msg, ctx),
            // A list result: filtered for the principal (a list in the
            // reply of another request is refused before this, by
            // `lists::ForeignListFilter`).
            Kind::Response => {
                // A list reply's items are filtered.
                match msg.request_method.and_then(list_shape) {
                    Some(shape) => self.filter_list(msg, ctx, &shape),
                    // A resource was read for this principal: no shared
                    // cache may hand it to another.
                    // A completion of a resource template (a prompt's has
                    // nothing to judge).
                    None if msg.request_method == Some("completion/complete") => {
                        match msg.request_completion {
                            Some(t) => self.filter_completion(
                                msg,
                                ctx,
                                crate::chain::notes::Completing::from_text(t).as_ref(),
                            ),
                            None => Decision::Pass,
                        }
                    }
                    // A reply to no request this replica knows (a stream
                    // another replica forwarded the request of) offering
                    // completions: nothing to judge its values by.
                    None if msg.request_method.is_none() => self.filter_completion(msg, ctx, None),
                    None if msg.request_method == Some("resources/read") => {
                        let Some(mut v) = msg.value().cloned() else {
                            return unreadable_reply();
                        };
                        if privately_cached(&mut v, ctx) {
                            Decision::rewrite(&v)
                        } else {
                            Decision::Pass
                        }
                    }
                    None => Decision::Pass,
                }
            }
            _ => Decision::Pass,
        }
    }
}

#[cfg(test)]
#[path = "policy_embedded_tests.rs"]
mod embedded_tests;

#[cfg(test)]
#[path = "policy_readings_tests.rs"]
mod readings_tests;

#[cfg(test)]
#[path = "policy_carried_tests.rs"]
mod carried_tests;
