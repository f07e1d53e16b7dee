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
    /// Records exported to a syslog receiver as they are written.
    pub syslog: Option<SyslogExport>,
    /// Records exported to an HTTP receiver as they are written.
    pub http: Option<HttpExport>,
    /// Raw records shipped to the control agent (`--agent`) as they are
    /// written (`audit.export.agent`, default true).
    pub agent_export: bool,
}

/// An HTTP receiver the trail is exported to.
#[derive(Debug, Clone)]
pub struct HttpExport {
    pub url: String,
    pub format: HttpExportFormat,
    pub token: Option<crate::secret::Secret>,
    pub ca_file: Option<std::path::PathBuf>,
    pub max_lag: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpExportFormat {
    /// A JSON array of OCSF API Activity events per POST.
    Ocsf,
    /// Splunk HTTP Event Collector events.
    SplunkHec,
}

fn max_lag(raw: Option<&str>, at: &str, p: &mut Problems) -> Option<u64> {
    match raw.map(parse_size) {
        None => Some(1 << 30),
        Some(Ok(n)) if n > 0 => Some(n as u64),
        Some(Ok(_)) => {
            p.push(format!("{at}.max_lag"), "must be more than 0");
            None
        }
        Some(Err(e)) => {
            p.push(format!("{at}.max_lag"), e);
            None
        }
    }
}

fn http(raw: &raw::HttpExportConfig, p: &mut Problems) -> Option<HttpExport> {
    let at = "audit.export.http";
    let (url, https) = match url::Url::parse(&raw.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            (raw.url.clone(), u.scheme() == "https")
        }
        _ => {
            p.push(format!("{at}.url"), "must be an http:// or https:// URL");
            return None;
        }
    };
    let format = match raw.format.as_deref().unwrap_or("ocsf") {
        "ocsf" => HttpExportFormat::Ocsf,
        "splunk_hec" => HttpExportFormat::SplunkHec,
        f => {
            p.push(
                format!("{at}.format"),
                format!("`{f}` is not ocsf or splunk_hec"),
            );
            return None;
        }
    };
    let token = match raw.token_env.as_deref() {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) => {
                // The scheme as parsed: `HTTP://` is plain HTTP too.
                if !https {
                    p.push(
                        format!("{at}.token_env"),
                        "a token goes only to an https:// receiver (it would travel in clear)",
                    );
                    return None;
                }
                Some(crate::secret::Secret::new(v))
            }
            Ok(v) if !v.is_empty() => {
                p.push(
                    format!("{at}.token_env"),
                    format!("`{var}` holds characters a header cannot carry"),
                );
                return None;
            }
            _ => {
                p.push(
                    format!("{at}.token_env"),
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            }
        },
    };
    Some(HttpExport {
        url,
        format,
        token,
        ca_file: raw.ca_file.as_ref().map(Into::into),
        max_lag: max_lag(raw.max_lag.as_deref(), at, p)?,
    })
}

/// A syslog receiver the trail is exported to (RFC 5424, over TCP or TLS).
#[derive(Debug, Clone)]
pub struct SyslogExport {
    pub address: String,
    pub tls: Option<SyslogTls>,
    pub app_name: String,
    /// The facility's number (RFC 5424 section 6.2.1).
    pub facility: u8,
    /// Bytes of the trail the export may fall behind before it skips ahead.
    pub max_lag: u64,
    /// The longest message (octet count) the receiver takes.
    pub max_message_size: usize,
}

#[derive(Debug, Clone)]
pub struct SyslogTls {
    pub ca_file: std::path::PathBuf,
    pub server_name: String,
}

fn syslog(raw: &raw::SyslogExportConfig, p: &mut Problems) -> Option<SyslogExport> {
    let at = "audit.export.syslog";
    let host = match raw.address.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0) => {
            h.trim_start_matches('[').trim_end_matches(']').to_owned()
        }
        _ => {
            p.push(format!("{at}.address"), "must be `host:port`");
            return None;
        }
    };
    let facility = match raw.facility.as_deref().unwrap_or("local0") {
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        f => match f.strip_prefix("local").and_then(|n| n.parse::<u8>().ok()) {
            Some(n) if n <= 7 => 16 + n,
            _ => {
                p.push(
                    format!("{at}.facility"),
                    format!("`{f}` is not local0..local7, auth, authpriv, daemon or user"),
                );
                return None;
            }
        },
    };
    let app_name = raw.app_name.clone().unwrap_or_else(|| "warden".into());
    // RFC 5424: APP-NAME is 1..48 printable US-ASCII characters, no space.
    if app_name.is_empty()
        || app_name.len() > 48
        || !app_name.bytes().all(|b| (33..=126).contains(&b))
    {
        p.push(
            format!("{at}.app_name"),
            "must be 1 to 48 visible ASCII characters",
        );
        return None;
    }
    Some(SyslogExport {
        address: raw.address.clone(),
        tls: raw.tls.as_ref().map(|t| SyslogTls {
            ca_file: t.ca_file.clone().into(),
            server_name: t.server_name.clone().unwrap_or(host),
        }),
        app_name,
        facility,
        max_lag: max_lag(raw.max_lag.as_deref(), at, p)?,
        max_message_size: match raw.max_message_size.as_deref().map(parse_size) {
            None => 8 << 10,
            Some(Ok(n)) if (2 << 10..=64 << 20).contains(&n) => n,
            Some(Ok(_)) => {
                p.push(
                    format!("{at}.max_message_size"),
                    "must be from 2KiB (what RFC 5425 asks every receiver to take) to 64MiB",
                );
                return None;
            }
            Some(Err(e)) => {
                p.push(format!("{at}.max_message_size"), e);
                return None;
            }
        },
    })
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
    let syslog = raw
        .export
        .as_ref()
        .and_then(|e| e.syslog.as_ref())
        .and_then(|s| syslog(s, p));
    let http = raw
        .export
        .as_ref()
        .and_then(|e| e.http.as_ref())
        .and_then(|h| http(h, p));
    // The export reads the trail's files (`--audit` may name the file
    // instead of `audit.path`; the gateway refuses to start without one).
    if (syslog.is_some() || http.is_some()) && raw.path.as_deref() == Some("-") {
        p.push(
            "audit.export",
            "exports the audit file as it is written: `audit.path` must be a file, not stdout",
        );
    }
    Audit {
        syslog,
        http,
        agent_export: raw.export.as_ref().and_then(|e| e.agent).unwrap_or(true),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A token travels only to a receiver whose URL parses as `https`,
    /// however the scheme is spelled.
    #[test]
    fn a_token_goes_only_to_https_as_parsed() {
        std::env::set_var("WARDEN_AUDIT_TEST_TOKEN", "t0ken");
        for (url, ok) in [
            ("http://siem.example/x", false),
            ("HTTP://siem.example/x", false),
            ("Http://siem.example/x", false),
            ("HTTPS://siem.example/x", true),
            ("https://siem.example/x", true),
        ] {
            let raw = raw::HttpExportConfig {
                url: url.into(),
                token_env: Some("WARDEN_AUDIT_TEST_TOKEN".into()),
                ..Default::default()
            };
            let mut p = Problems::new("warden.yaml");
            assert_eq!(http(&raw, &mut p).is_some(), ok, "{url}");
        }
    }
}
