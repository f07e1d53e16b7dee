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

/// The replies that carry a tool's result: its call's, and its task's.
const RESULT_METHODS: &[&str] = &["tools/call", "tasks/result", "tasks/get"];

/// A tool's (input, output) schemas.
type SchemaPair = (Option<Schema>, Option<Schema>);
/// A map by name with a seeded fast hash.
type Fast<V> = HashMap<String, V, foldhash::fast::RandomState>;

mod schema;
mod tool_pinning;

pub use schema::{output_problems, problems, SchemaFilter};
pub use tool_pinning::PinFilter;

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
