//! The JSON-RPC request id, a leaf both the parser and the error objects use.

use std::fmt;

/// A JSON-RPC request id: a string or a number (MCP forbids null).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Num(serde_json::Number),
    Str(String),
}

impl Id {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Id::Num(n) => serde_json::Value::Number(n.clone()),
            Id::Str(s) => serde_json::Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}
