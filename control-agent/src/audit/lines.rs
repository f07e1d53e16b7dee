//! One ingested line: the fields the store checks and indexes, read from
//! the raw bytes a gateway sent (kept verbatim for the hash chain).
//!
//! A record too large for [`MAX_LINE`] (or refused alone for any other
//! reason) reaches the agent as a **stub**: a line whose first member is
//! `elided`, carrying the SHA-256 and the size of the line the gateway
//! wrote, then its `seq`, `prev` and `ts` and, when it was only too long,
//! its other members that were small enough (a large `arguments` or
//! `result` never):
//!
//! ```json
//! {"elided":{"sha256":"<64 hex>","bytes":1258291,"fields":["arguments"]},"seq":7,"prev":"…","ts":"…",…}
//! ```
//!
//! The store keeps the stub verbatim and takes the declared SHA-256 as the
//! record's hash, so the next record's `prev` links to it and the chain
//! verifies at the agent; the full line stays in the gateway's trail, where
//! `warden audit verify` checks it against the same hash.

use sha2::{Digest, Sha256};

use super::MAX_LINE;

/// How a stub starts: `elided` is its first member, and only a stub's.
pub(super) const STUB: &str = "{\"elided\":";

/// What a stub says of the line it stands for.
#[derive(serde::Deserialize)]
pub(super) struct Elided {
    sha256: String,
    bytes: u64,
}

impl Elided {
    fn hash(&self) -> Option<[u8; 32]> {
        let mut h = [0u8; 32];
        (self.sha256.len() == 64 && hex::decode_to_slice(&self.sha256, &mut h).is_ok()).then_some(h)
    }
}

/// The hash a stored line stands for in the chain: a stub's declared
/// SHA-256 of the full line, any other line's own SHA-256. A stub whose
/// declaration cannot be read stands for its own bytes (which no `prev`
/// and no stored hash will match: verification reports it).
pub(super) fn line_hash(raw: &str) -> [u8; 32] {
    if raw.starts_with(STUB) {
        #[derive(serde::Deserialize)]
        struct Stub {
            elided: Elided,
        }
        if let Some(h) = serde_json::from_str::<Stub>(raw)
            .ok()
            .and_then(|s| s.elided.hash())
        {
            return h;
        }
    }
    Sha256::digest(raw.as_bytes()).into()
}

/// What a line is checked for and indexed by.
#[derive(serde::Deserialize)]
pub(super) struct Fields {
    pub(super) seq: u64,
    pub(super) prev: String,
    pub(super) ts: String,
    #[serde(default)]
    pub(super) principal: Option<String>,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) server: Option<String>,
    #[serde(default)]
    pub(super) tool: Option<String>,
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) direction: Option<String>,
    #[serde(default)]
    pub(super) outcome: Option<String>,
    #[serde(default)]
    pub(super) decided_by: Option<String>,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) risk: Option<String>,
    #[serde(default)]
    pub(super) trace_id: Option<String>,
    #[serde(default)]
    pub(super) approval: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) dlp: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub(super) latency_us: Option<u64>,
    /// Only on a stub: the line it stands for.
    #[serde(default)]
    pub(super) elided: Option<Elided>,
}

/// One line, checked, ready to store.
pub(super) struct Parsed<'a> {
    pub(super) raw: &'a str,
    pub(super) hash: [u8; 32],
    pub(super) prev: [u8; 32],
    pub(super) ts_us: i64,
    pub(super) dlp: Option<String>,
    pub(super) approval_id: Option<String>,
    /// Its `cost` member (never a reason to refuse the line).
    pub(super) cost: super::cost::Costed,
    pub(super) f: Fields,
}

pub(super) fn parse_line(line: &[u8]) -> Result<Parsed<'_>, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "{} bytes, more than the {MAX_LINE} a line may have",
            line.len()
        ));
    }
    let raw = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    if !raw.starts_with('{') {
        return Err("not a JSON object".into());
    }
    let f: Fields = serde_json::from_str(raw).map_err(|e| format!("not an audit record: {e}"))?;
    let hash: [u8; 32] = match (&f.elided, raw.starts_with(STUB)) {
        (None, false) => Sha256::digest(line).into(),
        (Some(e), true) => {
            if e.bytes == 0 {
                return Err("a stub must give the `bytes` of the line it stands for".into());
            }
            e.hash()
                .ok_or_else(|| "a stub's `elided.sha256` is not 64 hex digits".to_owned())?
        }
        _ => return Err("`elided` is a stub's first member, and only a stub's".into()),
    };
    let mut prev = [0u8; 32];
    if f.prev.len() != 64 || hex::decode_to_slice(&f.prev, &mut prev).is_err() {
        return Err("`prev` is not 64 hex digits".into());
    }
    let ts_us =
        f.ts.parse::<jiff::Timestamp>()
            .map_err(|e| format!("`ts` is not an RFC 3339 time: {e}"))?
            .as_microsecond();
    if f.seq > i64::MAX as u64 {
        return Err("`seq` is too large".into());
    }
    let detectors: Vec<&str> = f
        .dlp
        .iter()
        .flatten()
        .filter_map(|d| d.get("detector").and_then(|v| v.as_str()))
        .collect();
    let dlp =
        (!detectors.is_empty()).then(|| serde_json::to_string(&detectors).unwrap_or_default());
    let approval_id = f
        .approval
        .as_ref()
        .and_then(|a| a.get("id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Ok(Parsed {
        raw,
        hash,
        prev,
        ts_us,
        dlp,
        approval_id,
        cost: super::cost::cost_in(raw),
        f,
    })
}

/// A gateway's name as the agent takes it: 1–128 visible ASCII.
pub fn valid_gateway(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}
