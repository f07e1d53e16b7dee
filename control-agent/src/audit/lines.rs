//! One ingested line: the fields the store checks and indexes, read from
//! the raw bytes a gateway sent (kept verbatim for the hash chain).

use sha2::{Digest, Sha256};

use super::MAX_LINE;

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
}

/// One line, checked, ready to store.
pub(super) struct Parsed<'a> {
    pub(super) raw: &'a str,
    pub(super) hash: [u8; 32],
    pub(super) prev: [u8; 32],
    pub(super) ts_us: i64,
    pub(super) dlp: Option<String>,
    pub(super) approval_id: Option<String>,
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
        hash: Sha256::digest(line).into(),
        prev,
        ts_us,
        dlp,
        approval_id,
        f,
    })
}

/// A gateway's name as the agent takes it: 1–128 visible ASCII.
pub fn valid_gateway(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}
