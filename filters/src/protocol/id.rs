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

impl Id {
    /// Whether some peer reads this id as a number that it does not spell
    /// as an integer literal: `7.0` and `7e0` (JavaScript reads 7), `"7"`,
    /// `" 7"`, `"+7"`, `"0x7"`, `"7e0"`, `""` (the TypeScript SDK
    /// correlates a reply by `Number(id)`), `"7_0"`, `"٧"` (the Python SDK
    /// by `int(id)` when it can). A reply with such an id answers, to the
    /// client, a request it was not matched to by the gateway, which
    /// matches ids exactly.
    pub fn read_as_number(&self) -> bool {
        match self {
            Id::Num(n) => !(n.is_u64() || n.is_i64()),
            Id::Str(s) => {
                let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
                if t.is_empty() {
                    return true;
                }
                let body = t.strip_prefix(['+', '-']).unwrap_or(t);
                let radix = body.get(..2).map(str::to_ascii_lowercase);
                (body.len() > 2 && matches!(radix.as_deref(), Some("0x" | "0o" | "0b")))
                    || t.parse::<f64>().is_ok()
                    || (body.chars().any(char::is_numeric)
                        && body.chars().all(|c| c.is_numeric() || c == '_'))
            }
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

#[cfg(test)]
mod tests {
    use super::Id;

    #[test]
    fn ids_a_peer_reads_as_another_number() {
        let num = |v: serde_json::Value| match v {
            serde_json::Value::Number(n) => Id::Num(n),
            _ => unreachable!(),
        };
        for s in [
            "7", " 7", "7 ", "+7", "-7", "7.0", "7e0", "0x7", "0X7", "0b111", "0o7", "", " ",
            "7_0", "\u{0667}",
        ] {
            assert!(Id::Str(s.into()).read_as_number(), "{s:?}");
        }
        assert!(num(serde_json::json!(7.0)).read_as_number());
        assert!(num(serde_json::json!(1.5)).read_as_number());
        for s in ["abc", "s-1", "7a", "req-7", "0x", "x7"] {
            assert!(!Id::Str(s.into()).read_as_number(), "{s:?}");
        }
        assert!(!num(serde_json::json!(7)).read_as_number());
        assert!(!num(serde_json::json!(-7)).read_as_number());
    }
}
