//! `registry.json`: each registered server's lifecycle state, whether it
//! is offered to every tenant, and the approved (and candidate) definition
//! of each of its tools, by fingerprint. The control agent keeps it; the
//! gateway reads it into its snapshot.

use std::collections::HashMap;

use crate::error::Problems;
use crate::raw::{self, RegistryState};

pub const REGISTRY_FILE: &str = "registry.json";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub servers: HashMap<String, RegisteredServer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredServer {
    /// The owning tenant (canonical); `None` for an org server.
    pub tenant: Option<String>,
    pub state: RegistryState,
    pub since: Option<String>,
    /// Offered to every tenant.
    pub shared: bool,
    /// When it was retired (RFC 3339, as written).
    pub retired_at: Option<String>,
    pub tools: HashMap<String, RegisteredTool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisteredTool {
    pub approved: Option<String>,
    pub candidate: Option<String>,
}

fn fingerprint_ok(f: &str) -> bool {
    f.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Reads `registry.json` (problems in that file).
pub fn registry(bytes: &[u8], p: &mut Problems) -> Option<Registry> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: raw::RegistryConfig = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            p.push(path, e.into_inner().to_string());
            return None;
        }
    };
    if raw.version != 1 {
        p.push(
            "version",
            format!("unsupported version {} (only 1 exists)", raw.version),
        );
    }
    let mut out = Registry::default();
    for (name, s) in raw.servers {
        let base = format!("servers.{name}");
        let tenant = match s.tenant.as_deref().map(crate::person::canonical) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                p.push(format!("{base}.tenant"), format!("{e}"));
                None
            }
        };
        for (field, v) in [("since", &s.since), ("retired_at", &s.retired_at)] {
            if let Some(v) = v {
                if humantime::parse_rfc3339_weak(v).is_err() {
                    p.push(
                        format!("{base}.{field}"),
                        format!("`{v}` is not an RFC 3339 time"),
                    );
                }
            }
        }
        if s.state == RegistryState::Retired && s.retired_at.is_none() && s.since.is_none() {
            p.push(
                format!("{base}.retired_at"),
                "a retired server says when it was retired",
            );
        }
        let mut tools = HashMap::new();
        for (tool, t) in s.tools {
            for (field, v) in [("approved", &t.approved), ("candidate", &t.candidate)] {
                if let Some(v) = v {
                    if !fingerprint_ok(v) {
                        p.push(
                            format!("{base}.tools.{tool}.{field}"),
                            format!("`{v}` is not a fingerprint (`sha256:` and 64 lower-case hex digits)"),
                        );
                    }
                }
            }
            tools.insert(
                tool,
                RegisteredTool {
                    approved: t.approved,
                    candidate: t.candidate,
                },
            );
        }
        out.servers.insert(
            name,
            RegisteredServer {
                tenant,
                state: s.state,
                since: s.since,
                shared: s.shared,
                retired_at: s.retired_at,
                tools,
            },
        );
    }
    Some(out)
}
