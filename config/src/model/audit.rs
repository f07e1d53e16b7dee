//! Where audit records go and what they hold (`audit:`).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Problems;
use crate::fields::{parse_duration, parse_size};
use crate::raw;
use crate::risk::Risk;

#[derive(Debug, Clone)]
pub struct Audit {
    /// `None` means stdout.
    pub path: Option<PathBuf>,
    pub queue: usize,
    pub fail_mode: AuditFailMode,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    pub include_arguments: bool,
    /// Risk tiers whose calls are logged in full (arguments and results,
    /// DLP-redacted).
    pub log_io: Vec<Risk>,
}

/// What the gateway does when audit records cannot be written fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailMode {
    /// Refuse new calls while the queue is full.
    Closed,
    /// Keep serving; count and log every lost record.
    Open,
}

pub(super) fn audit(raw: &raw::AuditConfig, p: &mut Problems) -> Audit {
    Audit {
        path: match raw.path.as_deref() {
            None | Some("-") => None,
            Some("") => {
                p.push("audit.path", "must not be empty (use `-` for stdout)");
                None
            }
            Some(s) => Some(PathBuf::from(s)),
        },
        queue: raw.queue.map(|q| q as usize).unwrap_or(65_536).max(1),
        fail_mode: match raw.fail_mode.as_deref() {
            None | Some("closed") => AuditFailMode::Closed,
            Some("open") => AuditFailMode::Open,
            Some(o) => {
                p.push(
                    "audit.fail_mode",
                    format!("`{o}` is not `closed` or `open`"),
                );
                AuditFailMode::Closed
            }
        },
        rotate_size: raw.rotate_size.as_ref().and_then(|s| {
            parse_size(s)
                .map(|n| n as u64)
                .map_err(|e| p.push("audit.rotate_size", e))
                .ok()
        }),
        rotate_interval: raw.rotate_interval.as_ref().and_then(|s| {
            parse_duration(s)
                .map_err(|e| p.push("audit.rotate_interval", e))
                .ok()
        }),
        include_arguments: raw.include_arguments.unwrap_or(false),
        log_io: match &raw.log_io {
            None => vec![Risk::High, Risk::Critical],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let risk = Risk::parse(r);
                    if risk.is_none() {
                        p.push(
                            format!("audit.log_io[{i}]"),
                            format!("`{r}` is not a risk (LOW, MEDIUM, HIGH, CRITICAL)"),
                        );
                    }
                    risk
                })
                .collect(),
        },
    }
}
