//! The HTTP sink: records as JSON events in the OCSF API Activity shape
//! (class 6003), POSTed in batches; or the same events wrapped for a Splunk
//! HTTP Event Collector. A batch is delivered when the receiver answers
//! 2xx; until then it is sent again, its events marked `resent`.

use std::time::Duration;

use serde_json::{json, Value};
use warden_config::model::{HttpExport, HttpExportFormat};

use super::{metrics, Sink};

/// Records per POST at most.
const BATCH: usize = 100;

pub(super) struct Http {
    cfg: HttpExport,
    hostname: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    batch: Vec<Value>,
}

impl Http {
    pub(super) fn new(cfg: HttpExport, hostname: String) -> std::io::Result<Http> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(std::io::Error::other)?;
            b = b.add_root_certificate(cert);
        }
        let client = b.build().map_err(std::io::Error::other)?;
        Ok(Http {
            cfg,
            hostname,
            rt,
            client,
            batch: Vec::new(),
        })
    }

    /// POSTs the pending batch until the receiver takes it. `false`: the
    /// exporter is stopping.
    fn flush(&mut self, stop: &dyn Fn() -> bool) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let m = metrics();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                // A POST that timed out may have arrived: what is sent again
                // says so.
                for e in &mut self.batch {
                    e["unmapped"]["resent"] = json!(true);
                }
            }
            let (body, content_type) = self.body();
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
            let sent = self.rt.block_on(async { req.send().await });
            match sent {
                Ok(r) if r.status().is_success() => {
                    m.connected.with_label_values(&["http"]).set(1);
                    let n = self.batch.len() as u64;
                    let label = if attempt > 0 { "resent" } else { "sent" };
                    m.records.with_label_values(&["http", label]).inc_by(n);
                    self.batch.clear();
                    return true;
                }
                Ok(r) => {
                    m.connected.with_label_values(&["http"]).set(0);
                    tracing::warn!(url = %self.cfg.url, status = r.status().as_u16(), "audit export: the receiver refused a batch");
                }
                Err(e) => {
                    m.connected.with_label_values(&["http"]).set(0);
                    tracing::warn!(url = %self.cfg.url, "audit export: {e}");
                }
            }
            attempt += 1;
            if stop() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn body(&self) -> (Vec<u8>, &'static str) {
        match self.cfg.format {
            HttpExportFormat::Ocsf => (
                serde_json::to_vec(&self.batch).unwrap_or_default(),
                "application/json",
            ),
            // HEC takes events one after another in one body.
            HttpExportFormat::SplunkHec => {
                let mut out = Vec::new();
                for e in &self.batch {
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
    fn deliver(&mut self, _seq: u64, line: &[u8], stop: &dyn Fn() -> bool) -> bool {
        self.batch.push(ocsf(line, &self.hostname));
        self.batch.len() < BATCH || self.flush(stop)
    }

    fn idle(&mut self, stop: &dyn Fn() -> bool) -> bool {
        self.flush(stop)
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
            "audit": rec,
        },
    })
}
