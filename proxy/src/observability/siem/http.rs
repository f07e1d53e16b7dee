//! The HTTP sink: records as JSON events in the OCSF API Activity shape
//! (class 6003), POSTed in batches; or the same events wrapped for a Splunk
//! HTTP Event Collector. A batch is delivered when the receiver answers
//! 2xx; until then it is sent again, its events marked `resent`.

use std::time::Duration;

use serde_json::{json, Value};
use warden_config::model::{HttpExport, HttpExportFormat};

use super::{metrics, Sink};

/// Records per POST at most, and about the most bytes (below the 1 MB a
/// Splunk HEC takes by default).
const BATCH: usize = 100;
const BATCH_BYTES: usize = 800 << 10;

pub(super) struct Http {
    cfg: HttpExport,
    hostname: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// Events not yet delivered, by seq.
    batch: Vec<(u64, Value)>,
    batch_bytes: usize,
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;

/// What the receiver said to a POST.
enum Posted {
    Delivered,
    /// A refusal of these events themselves (4xx but 408 and 429): sending
    /// them again would be refused again.
    Refused(u16),
    /// Down, slow, or refusing for now: try again.
    Failed,
}

impl Http {
    pub(super) fn new(cfg: HttpExport, hostname: String) -> std::io::Result<Http> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            // A redirect could turn the POST into a GET that "succeeds".
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            // The CA file only: no public CA vouches for the receiver.
            let pem = std::fs::read(ca)?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(std::io::Error::other)?;
            if certs.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{}: no certificate",
                    ca.display()
                )));
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(std::io::Error::other)?;
        Ok(Http {
            cfg,
            hostname,
            rt,
            client,
            batch: Vec::new(),
            batch_bytes: 0,
        })
    }

    /// The receiver as logs name it: scheme, host and port (never a
    /// credential in the URL).
    fn receiver(&self) -> String {
        match url::Url::parse(&self.cfg.url) {
            Ok(u) => format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or("-"),
                u.port_or_known_default().unwrap_or(0)
            ),
            Err(_) => "-".into(),
        }
    }

    fn post(&self, events: &[(u64, Value)]) -> Posted {
        let (body, content_type) = self.body(events);
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = &self.cfg.token {
            req = match self.cfg.format {
                HttpExportFormat::SplunkHec => {
                    req.header("authorization", format!("Splunk {}", t.expose()))
                }
                HttpExportFormat::Ocsf => req.bearer_auth(t.expose()),
            };
        }
        match self.rt.block_on(async { req.send().await }) {
            Ok(r) if r.status().is_success() => Posted::Delivered,
            Ok(r) => {
                let st = r.status().as_u16();
                tracing::warn!(receiver = %self.receiver(), status = st, "audit export: the receiver refused a batch");
                // Only a refusal of the events themselves (malformed, too
                // large, unprocessable) drops them. Anything else — a
                // rotated or revoked token (401, 403), a route that is
                // down (404), a proxy's answer — is the receiver's state,
                // and the batch waits for it, retried with backoff.
                if matches!(st, 400 | 413 | 422) {
                    Posted::Refused(st)
                } else {
                    Posted::Failed
                }
            }
            Err(e) => {
                tracing::warn!(receiver = %self.receiver(), "audit export: {}", e.without_url());
                Posted::Failed
            }
        }
    }

    /// POSTs the pending batch until the receiver takes it. A batch the
    /// receiver refuses as such (too large, say) goes event by event, and
    /// an event refused alone is dropped, counted. `false`: stopping.
    fn flush(&mut self, stop: &dyn Fn() -> bool) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let m = metrics();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.post(&self.batch) {
                Posted::Delivered => {
                    m.connected.with_label_values(&["http"]).set(1);
                    for (_, e) in &self.batch {
                        let label = if e["unmapped"]["resent"] == true {
                            "resent"
                        } else {
                            "sent"
                        };
                        m.records.with_label_values(&["http", label]).inc();
                    }
                    self.batch.clear();
                    self.batch_bytes = 0;
                    m.pending.with_label_values(&["http"]).set(0);
                    return true;
                }
                Posted::Refused(_) if self.batch.len() > 1 => {
                    m.connected.with_label_values(&["http"]).set(1);
                    let batch = std::mem::take(&mut self.batch);
                    self.batch_bytes = 0;
                    m.pending.with_label_values(&["http"]).set(0);
                    for one in batch {
                        self.batch = vec![one];
                        if !self.flush(stop) {
                            return false;
                        }
                    }
                    return true;
                }
                Posted::Refused(st) => {
                    m.connected.with_label_values(&["http"]).set(1);
                    // One event refused: it goes as its stub (the chain's
                    // members and the line's SHA-256), as the other sinks
                    // send a record too long for them. A receiver that
                    // refuses even the stub is in a state of its own (a
                    // missing channel, a wrong index): the event waits
                    // for it, never dropped for it.
                    match self.as_stub(st) {
                        Some(true) => {
                            self.batch.clear();
                            self.batch_bytes = 0;
                            m.pending.with_label_values(&["http"]).set(0);
                            return true;
                        }
                        Some(false) => {}
                        None => {
                            let seq = self.batch.first().map_or(0, |(s, _)| *s);
                            self.batch.clear();
                            self.batch_bytes = 0;
                            m.pending.with_label_values(&["http"]).set(0);
                            m.records.with_label_values(&["http", "dropped"]).inc();
                            tracing::error!(receiver = %self.receiver(), status = st, seq, "audit export: the receiver refused a record and it has no smaller form; it is dropped");
                            return true;
                        }
                    }
                }
                Posted::Failed => {
                    m.connected.with_label_values(&["http"]).set(0);
                }
            }
            // A POST that timed out may have arrived: what is sent again
            // says so.
            for (_, e) in &mut self.batch {
                e["unmapped"]["resent"] = json!(true);
            }
            if stop() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends the one pending event as its stub (see [`super::agent::stub`]):
    /// `Some(true)` delivered, `Some(false)` refused or failed too (the
    /// receiver's state: the event waits), `None` no smaller form (the
    /// event is a stub already, or carries no line).
    fn as_stub(&self, status: u16) -> Option<bool> {
        let (seq, e) = self.batch.first()?;
        let line = e["unmapped"]["audit_line"].as_str()?;
        let why = format!("the receiver refused the record (HTTP {status})");
        let stub = super::agent::stub(line.as_bytes(), &why, true)?;
        let mut event = ocsf(&stub, &self.hostname);
        event["unmapped"]["resent"] = e["unmapped"]["resent"].clone();
        match self.post(&[(*seq, event)]) {
            Posted::Delivered => {
                metrics().records.with_label_values(&["http", "sent"]).inc();
                tracing::warn!(receiver = %self.receiver(), status, seq, "audit export: the receiver refused a record; its stub was sent in its place");
                Some(true)
            }
            Posted::Refused(_) | Posted::Failed => Some(false),
        }
    }

    fn body(&self, events: &[(u64, Value)]) -> (Vec<u8>, &'static str) {
        match self.cfg.format {
            HttpExportFormat::Ocsf => {
                let list: Vec<&Value> = events.iter().map(|(_, e)| e).collect();
                (
                    serde_json::to_vec(&list).unwrap_or_default(),
                    "application/json",
                )
            }
            // HEC takes events one after another in one body.
            HttpExportFormat::SplunkHec => {
                let mut out = Vec::new();
                for (_, e) in events {
                    let wrapped = json!({
                        "time": e["time"].as_i64().map(|ms| ms as f64 / 1000.0),
                        "host": self.hostname,
                        "source": "warden",
                        "sourcetype": "warden:audit:ocsf",
                        "event": e,
                    });
                    let _ = serde_json::to_writer(&mut out, &wrapped);
                    out.push(b'\n');
                }
                (out, "application/json")
            }
        }
    }
}

impl Sink for Http {
    fn deliver(&mut self, seq: u64, line: &[u8], resent: bool, stop: &dyn Fn() -> bool) -> bool {
        let mut event = ocsf(line, &self.hostname);
        if resent {
            event["unmapped"]["resent"] = json!(true);
        }
        // The record's bytes stand for the event's (it carries the record,
        // parsed and as its exact line).
        self.batch_bytes += line.len() * 3;
        self.batch.push((seq, event));
        metrics()
            .pending
            .with_label_values(&["http"])
            .set(self.batch_bytes as i64);
        (self.batch.len() < BATCH && self.batch_bytes < BATCH_BYTES) || self.flush(stop)
    }

    fn idle(&mut self, stop: &dyn Fn() -> bool) -> bool {
        self.flush(stop)
    }

    fn pending_from(&self) -> Option<u64> {
        self.batch.first().map(|(seq, _)| *seq)
    }
}

/// One audit record as an OCSF API Activity event (class 6003). The mapping
/// is written down in docs/audit.md; the whole record rides along in
/// `unmapped.audit`, hash chain included.
pub(super) fn ocsf(line: &[u8], hostname: &str) -> Value {
    let rec: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let s = |k: &str| rec.get(k).and_then(Value::as_str);
    let outcome = s("outcome").unwrap_or("");
    let method = s("method");
    let success = matches!(outcome, "forwarded" | "mutated" | "approved");
    let activity_id = match method {
        Some(m) if m.ends_with("/list") || m == "resources/read" || m == "prompts/get" => 2,
        None => 0,
        _ => 99,
    };
    // Severity (OCSF severity_id) from the decision and the risk tier.
    let base: i64 = match outcome {
        "forwarded" | "mutated" | "approved" => 1,
        "failed" => 4,
        _ => 3,
    };
    let bump = match s("risk") {
        Some("CRITICAL") => 2,
        Some("HIGH") => 1,
        _ => 0,
    };
    let severity_id = (base + bump).min(5);
    let time_ms = s("ts")
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond());
    json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": method.unwrap_or("Unknown"),
        "type_uid": 600300 + activity_id,
        "time": time_ms,
        "severity_id": severity_id,
        "status_id": if success { 1 } else { 2 },
        "status": outcome,
        "status_detail": s("reason"),
        "message": format!("{} {} {}", s("direction").unwrap_or("-"), method.unwrap_or("-"), outcome),
        "api": {
            "operation": method,
            "service": {"name": s("server")},
            "request": {"uid": rec.get("request_id")},
        },
        "actor": {
            "user": {"uid": s("principal"), "org": {"uid": s("tenant")}},
        },
        "src_endpoint": {"ip": s("source_ip")},
        "dst_endpoint": {"hostname": hostname},
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "Warden", "vendor_name": "Warden"},
            "uid": rec.get("seq").map(|v| v.to_string()),
            "correlation_uid": s("trace_id"),
            "log_name": "audit",
        },
        "unmapped": {
            "tool": s("tool"),
            "risk": s("risk"),
            "decided_by": s("decided_by"),
            "direction": s("direction"),
            "via": s("via"),
            // The exact line, whose SHA-256 the next record's `prev` is:
            // `audit` is its members re-serialised (key order, number
            // forms and escapes may differ).
            "audit_line": String::from_utf8_lossy(line),
            "audit": rec,
        },
    })
}
