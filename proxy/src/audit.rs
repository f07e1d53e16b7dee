//! The audit trail: one JSON line per MCP message, written off the request path.
//!
//! The request path hands records to a bounded queue and waits (asynchronously)
//! when it is full rather than dropping one: losing audit records silently is
//! worse than slowing down. A dedicated thread writes and flushes them; a write
//! failure is counted in `warden_audit_write_errors_total` and logged.

use std::io::Write;
use std::path::PathBuf;
use std::thread::JoinHandle;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::metrics;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the record was made; formatted (RFC 3339) by the writer thread.
    #[serde(serialize_with = "rfc3339")]
    pub ts: std::time::SystemTime,
    pub revision: String,
    pub request_id: u64,
    pub principal: String,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    pub server: String,
    pub group: String,
    pub http_method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub latency_us: u64,
}

enum AuditMsg {
    Record(Box<AuditRecord>),
    /// Everything queued before this is written; then the writer stops.
    Stop,
}

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditMsg>,
}

pub struct AuditWriter {
    handle: Option<JoinHandle<()>>,
}

impl AuditSink {
    /// Starts the writer thread. `path` `None` writes to stdout.
    pub fn start(path: Option<PathBuf>, queue: usize) -> std::io::Result<(AuditSink, AuditWriter)> {
        let out: Box<dyn Write + Send> = match &path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel(queue);
        let handle = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || write_loop(rx, out))?;
        Ok((
            AuditSink { tx },
            AuditWriter {
                handle: Some(handle),
            },
        ))
    }

    /// Queues a record; waits when the queue is full instead of dropping it.
    pub async fn record(&self, rec: AuditRecord) {
        let m = metrics();
        m.audit_queue.inc();
        if self.tx.send(AuditMsg::Record(Box::new(rec))).await.is_err() {
            // Only after shutdown has closed the writer.
            m.audit_queue.dec();
            m.audit_failed.inc();
            tracing::error!("audit writer is gone; record lost");
        }
    }
}

impl AuditSink {
    /// From outside any runtime: writes everything queued so far and stops the writer.
    pub fn stop_blocking(&self) {
        let _ = self.tx.blocking_send(AuditMsg::Stop);
    }
}

impl AuditWriter {
    /// Waits until the writer has stopped (after [`AuditSink::stop_blocking`]).
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How long the writer sleeps when its queue is empty. Polling instead of
/// parking keeps the request path from paying a cross-thread wake-up per record;
/// a record reaches the file within about this long.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

fn write_loop(mut rx: mpsc::Receiver<AuditMsg>, out: Box<dyn Write + Send>) {
    let m = metrics();
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut line = Vec::with_capacity(512);
    let mut dirty = false;
    loop {
        match rx.try_recv() {
            Ok(AuditMsg::Record(rec)) => {
                m.audit_queue.dec();
                line.clear();
                let ok = serde_json::to_writer(&mut line, &rec).is_ok() && {
                    line.push(b'\n');
                    w.write_all(&line).is_ok()
                };
                if ok {
                    m.audit_written.inc();
                    dirty = true;
                } else {
                    m.audit_failed.inc();
                    tracing::error!(
                        request_id = rec.request_id,
                        "audit record could not be written"
                    );
                }
            }
            Ok(AuditMsg::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if dirty {
                    if w.flush().is_err() {
                        m.audit_failed.inc();
                        tracing::error!("audit log flush failed");
                    }
                    dirty = false;
                }
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
    if w.flush().is_err() {
        m.audit_failed.inc();
        tracing::error!("audit log flush failed at shutdown");
    }
}

fn rfc3339<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}
