//! Virtual servers (`virtual:`): members of this bundle behind one endpoint,
//! and how each member's tools look to the client.

use crate::error::Problems;
use crate::fields::valid_name;
use crate::raw;

/// A virtual server: members reached through the gateway itself (each call
/// judged as a call to the member), their lists merged.
#[derive(Debug, Clone)]
pub struct Virtual {
    pub members: Vec<VirtualMember>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefixing {
    Always,
    Never,
    /// Only when an earlier member already exposes the name.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct VirtualMember {
    pub server: String,
    /// The member's MCP endpoint path.
    pub path: String,
    pub prefixing: Prefixing,
    pub prefix: String,
    /// By the tool's upstream name.
    pub tools: std::collections::BTreeMap<String, ToolView>,
}

/// How a member's tool looks to the client of a virtual server.
#[derive(Debug, Clone, Default)]
pub struct ToolView {
    pub alias: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub hidden: serde_json::Map<String, serde_json::Value>,
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

impl Virtual {
    /// A digest of the composition (the aggregator is rebuilt when it changes).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for m in &self.members {
            h.update(format!("{:?}", m).as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

pub(super) fn virtual_server(raw: &raw::VirtualConfig, base: &str, p: &mut Problems) -> Virtual {
    if raw.members.is_empty() {
        p.push(
            format!("{base}.members"),
            "a virtual server needs at least one member",
        );
    }
    let mut members = Vec::new();
    for (i, m) in raw.members.iter().enumerate() {
        let mb = format!("{base}.members[{i}]");
        let prefixing = match m.prefix.as_deref() {
            None | Some("conflict") => Prefixing::Conflict,
            Some("always") => Prefixing::Always,
            Some("never") => Prefixing::Never,
            Some(o) => {
                p.push(
                    format!("{mb}.prefix"),
                    format!("`{o}` is not `always`, `never` or `conflict`"),
                );
                Prefixing::Conflict
            }
        };
        let prefix = m.prefix_name.clone().unwrap_or_else(|| m.server.clone());
        if !valid_name(&prefix) {
            p.push(
                format!("{mb}.prefix_name"),
                "must be a name ([A-Za-z0-9._-], 1-64 chars)",
            );
        }
        let path = m.path.clone().unwrap_or_else(|| "/mcp".into());
        // Plain segments only: nothing a URL parser would resolve elsewhere.
        let dots = path.split('/').any(|seg| seg == "." || seg == "..");
        if !path.starts_with('/')
            || path.starts_with("//")
            || dots
            || path
                .bytes()
                .any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#' | b'%' | b'\\'))
        {
            p.push(format!("{mb}.path"), "must be a plain path such as `/mcp`");
        }
        let mut tools = std::collections::BTreeMap::new();
        for (name, t) in &m.tools {
            let tb = format!("{mb}.tools.{name}");
            if let Some(a) = &t.alias {
                if !valid_tool_name(a) {
                    p.push(
                        format!("{tb}.alias"),
                        "must be a tool name ([A-Za-z0-9_.-], 1-128 chars)",
                    );
                }
            }
            let hidden: serde_json::Map<String, serde_json::Value> = t
                .hidden
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let defaults: serde_json::Map<String, serde_json::Value> = t
                .defaults
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for k in hidden.keys() {
                if defaults.contains_key(k) {
                    p.push(
                        format!("{tb}.defaults.{k}"),
                        "is also hidden: a hidden argument has one fixed value",
                    );
                }
            }
            tools.insert(
                name.clone(),
                ToolView {
                    alias: t.alias.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    hidden,
                    defaults,
                },
            );
        }
        members.push(VirtualMember {
            server: m.server.clone(),
            path,
            prefixing,
            prefix,
            tools,
        });
    }
    Virtual { members }
}

/// MCP's tool name characters (SEP-986).
fn valid_tool_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
