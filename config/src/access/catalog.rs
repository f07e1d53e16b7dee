//! The tool catalog (`catalog:`): risk, cost, schemas, fingerprints, egress
//! allowlist and step-up scopes, per server and per tool.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::Problems;
use crate::host::{host_patterns, HostPattern};
use crate::raw;
use crate::risk::Risk;

/// What the bundle says about one tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolEntry {
    pub risk: Option<Risk>,
    pub cost: u64,
    pub input_schema: Option<std::sync::Arc<serde_json::Value>>,
    pub output_schema: Option<std::sync::Arc<serde_json::Value>>,
    pub fingerprints: Vec<String>,
    pub url_arguments: Vec<String>,
    pub egress_allow: Vec<HostPattern>,
    /// Scopes a caller's token must carry for this tool (step-up).
    pub scopes: Vec<String>,
    /// Classification and flow roles (`flows`).
    pub labels: crate::flows::Labels,
}

/// A catalog entry that says nothing but the defaults (cost 1).
impl Default for ToolEntry {
    fn default() -> Self {
        ToolEntry {
            risk: None,
            cost: 1,
            input_schema: None,
            output_schema: None,
            fingerprints: Vec::new(),
            url_arguments: Vec::new(),
            egress_allow: Vec::new(),
            scopes: Vec::new(),
            labels: crate::flows::Labels::default(),
        }
    }
}

/// A server's tools by name. Looked up several times on every call, so
/// keyed by a seeded fast hash rather than SipHash: the names are the
/// bundle's, fixed when it loads (a client's name is only looked up).
pub type ToolMap = HashMap<String, ToolEntry, foldhash::fast::RandomState>;

/// Risk levels (and schemas, costs, egress, fingerprints) of one server's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCatalog {
    pub default_risk: Risk,
    pub tools: ToolMap,
    pub egress_allow: Vec<HostPattern>,
    /// Labels of every tool of the server the tool's own do not replace.
    pub labels: crate::flows::Labels,
    /// Labels of resources by URI pattern (first match).
    pub resources: Vec<(String, crate::flows::Labels)>,
}

impl Default for ServerCatalog {
    fn default() -> Self {
        ServerCatalog {
            default_risk: Risk::Medium,
            tools: ToolMap::default(),
            egress_allow: Vec::new(),
            labels: crate::flows::Labels::default(),
            resources: Vec::new(),
        }
    }
}

impl ServerCatalog {
    pub fn risk(&self, tool: &str) -> Risk {
        self.tools
            .get(tool)
            .and_then(|t| t.risk)
            .unwrap_or(self.default_risk)
    }

    pub fn tool(&self, tool: &str) -> Option<&ToolEntry> {
        self.tools.get(tool)
    }
}

pub(crate) fn catalog(
    raw: &BTreeMap<String, raw::ServerCatalogConfig>,
    servers: &HashSet<&str>,
    flows: Option<&crate::flows::Flows>,
    p: &mut Problems,
) -> HashMap<String, ServerCatalog> {
    let mut out = HashMap::new();
    for (name, c) in raw {
        let base = format!("catalog.{name}");
        if !servers.contains(name.as_str()) {
            p.push(&base, format!("unknown server `{name}`"));
        }
        let default_risk = match c.default_risk.as_deref() {
            None => Risk::Medium,
            Some(r) => Risk::parse(r).unwrap_or_else(|| {
                p.push(
                    format!("{base}.default_risk"),
                    format!("`{r}` is not a risk level (LOW, MEDIUM, HIGH, CRITICAL)"),
                );
                Risk::Medium
            }),
        };
        let mut tools = ToolMap::default();
        for (tool, t) in &c.tools {
            let tbase = format!("{base}.tools.{tool}");
            let risk = t.risk.as_deref().and_then(|r| {
                Risk::parse(r).or_else(|| {
                    p.push(
                        format!("{tbase}.risk"),
                        format!("`{r}` is not a risk level (LOW, MEDIUM, HIGH, CRITICAL)"),
                    );
                    None
                })
            });
            for (field, schema) in [
                ("input_schema", &t.input_schema),
                ("output_schema", &t.output_schema),
            ] {
                if let Some(s) = schema {
                    if let Err(e) = jsonschema::validator_for(s) {
                        p.push(
                            format!("{tbase}.{field}"),
                            format!("not a valid JSON Schema: {e}"),
                        );
                    }
                }
            }
            for (i, sc) in t.scopes.iter().enumerate() {
                // RFC 6749 scope-token: visible ASCII but `"` and `\`.
                if sc.is_empty()
                    || !sc
                        .bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
                {
                    p.push(
                        format!("{tbase}.scopes[{i}]"),
                        "must be an OAuth scope token (visible ASCII, no quote or backslash)",
                    );
                }
            }
            for (i, f) in t.fingerprints.iter().enumerate() {
                if !f.starts_with("sha256:") || f.len() != 7 + 64 {
                    p.push(
                        format!("{tbase}.fingerprints[{i}]"),
                        "must be `sha256:<64 hex>`",
                    );
                }
            }
            tools.insert(
                tool.clone(),
                ToolEntry {
                    risk,
                    cost: t.cost.unwrap_or(1).max(1),
                    input_schema: t.input_schema.clone().map(std::sync::Arc::new),
                    output_schema: t.output_schema.clone().map(std::sync::Arc::new),
                    fingerprints: t.fingerprints.clone(),
                    url_arguments: t.url_arguments.clone(),
                    egress_allow: host_patterns(
                        &t.egress_allow,
                        &format!("{tbase}.egress_allow"),
                        p,
                    ),
                    scopes: t.scopes.clone(),
                    labels: crate::flows::labels(flows, &t.classification, &t.flow, &tbase, p),
                },
            );
        }
        out.insert(
            name.clone(),
            ServerCatalog {
                default_risk,
                tools,
                egress_allow: host_patterns(&c.egress_allow, &format!("{base}.egress_allow"), p),
                labels: crate::flows::labels(flows, &c.classification, &c.flow, &base, p),
                resources: c
                    .resources
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let at = format!("{base}.resources[{i}]");
                        if r.uri.is_empty() {
                            p.push(format!("{at}.uri"), "a URI pattern is required");
                        }
                        (
                            r.uri.clone(),
                            crate::flows::labels(flows, &r.classification, &r.flow, &at, p),
                        )
                    })
                    .collect(),
            },
        );
    }
    out
}
