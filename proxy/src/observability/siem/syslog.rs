//! The syslog sink: RFC 5424 messages, RFC 6587 octet counting over TCP,
//! or TLS as RFC 5425 has it. TCP accepts bytes a receiver that dies never
//! reads: the records of the last 30 seconds on a connection are kept and
//! sent again on the next one, marked (`resent="1"`), and a connection whose
//! data stays unacknowledged for 20 seconds is given up.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_config::model::SyslogExport;

use super::{metrics, Sink};

/// How long records stay ready to be sent again after a connection fails:
/// longer than bytes may stay unacknowledged before the kernel gives the
/// connection up (`UNACKED`), so whatever a dead receiver swallowed is
/// still here to send again.
const RESEND_WINDOW: Duration = Duration::from_secs(30);
/// Data the receiver has not acknowledged for this long ends the connection
/// (TCP_USER_TIMEOUT; with keepalive probes for a quiet one).
const UNACKED: Duration = Duration::from_secs(20);
/// The most records kept ready to be sent again, and their most bytes.
const RESEND_MAX: usize = 10_000;
const RESEND_MAX_BYTES: usize = 8 << 20;
/// The structured data's id: the documentation enterprise number of
/// RFC 5612 (Warden has none of its own).
const SD_ID: &str = "warden@32473";

pub(super) struct Syslog {
    cfg: SyslogExport,
    tls: Option<Arc<rustls::ClientConfig>>,
    hostname: String,
    conn: Option<Conn>,
    window: VecDeque<Sent>,
    window_bytes: usize,
}

impl Syslog {
    pub(super) fn new(cfg: SyslogExport, hostname: String) -> std::io::Result<Syslog> {
        let tls = match &cfg.tls {
            Some(t) => {
                // A name that can never match fails the start, not each connect.
                rustls::pki_types::ServerName::try_from(t.server_name.clone())
                    .map_err(|e| std::io::Error::other(format!("tls.server_name: {e}")))?;
                Some(tls_config(&t.ca_file)?)
            }
            None => None,
        };
        Ok(Syslog {
            cfg,
            tls,
            hostname,
            conn: None,
            window: VecDeque::new(),
            window_bytes: 0,
        })
    }

    /// Sends one record, reconnecting (and sending the recent ones again)
    /// until it leaves. `false`: the exporter is stopping.
    fn send(&mut self, seq: u64, line: &[u8], resent: bool, stop: &dyn Fn() -> bool) -> bool {
        let m = metrics();
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.conn.as_mut().is_some_and(Conn::closed) {
                self.conn = None;
                m.connected.with_label_values(&["syslog"]).set(0);
            }
            if self.conn.is_none() {
                match self.connect() {
                    Ok(mut c) => {
                        // What the last connection may have lost.
                        let mut ok = true;
                        for s in &self.window {
                            if c.write_all(&self.frame(s.seq, &s.line, true)).is_err() {
                                ok = false;
                                break;
                            }
                            m.records.with_label_values(&["syslog", "resent"]).inc();
                        }
                        if ok {
                            self.conn = Some(c);
                            m.connected.with_label_values(&["syslog"]).set(1);
                        }
                    }
                    Err(e) => {
                        m.connected.with_label_values(&["syslog"]).set(0);
                        tracing::warn!(receiver = %self.cfg.address, "audit export: {e}");
                    }
                }
            }
            let framed = self.frame(seq, line, resent);
            if let Some(c) = self.conn.as_mut() {
                if c.write_all(&framed).is_ok() {
                    let now = Instant::now();
                    self.window.push_back(Sent {
                        at: now,
                        seq,
                        line: line.to_vec(),
                    });
                    self.window_bytes += line.len();
                    while self.window.len() > RESEND_MAX
                        || self.window_bytes > RESEND_MAX_BYTES
                        || self
                            .window
                            .front()
                            .is_some_and(|s| now - s.at > RESEND_WINDOW)
                    {
                        if let Some(s) = self.window.pop_front() {
                            self.window_bytes -= s.line.len();
                        }
                    }
                    m.pending
                        .with_label_values(&["syslog"])
                        .set(self.window_bytes as i64);
                    return true;
                }
                self.conn = None;
                m.connected.with_label_values(&["syslog"]).set(0);
            }
            if stop() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn connect(&self) -> std::io::Result<Conn> {
        let mut last = std::io::Error::other("the address names no host");
        let mut stream = None;
        for addr in std::net::ToSocketAddrs::to_socket_addrs(&self.cfg.address)? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let s = stream.ok_or(last)?;
        // A receiver that vanished without a reset (its host down, a
        // partition) is noticed within UNACKED, not after minutes.
        let sock = socket2::SockRef::from(&s);
        sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(10))
                .with_interval(Duration::from_secs(5)),
        )?;
        sock.set_tcp_user_timeout(Some(UNACKED))?;
        // The handshake is bounded too: a receiver that never answers it
        // must not hold the exporter (and the gateway's stop) for ever.
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        match (&self.tls, &self.cfg.tls) {
            (Some(cfg), Some(t)) => {
                let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
                    .map_err(std::io::Error::other)?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                // The handshake now, so a bad certificate is an error here.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Ok(Conn::Tls(Box::new(tls)))
            }
            _ => Ok(Conn::Tcp(s)),
        }
    }

    /// The record as the receiver can take it: the line itself, or its
    /// stub (with the full line's SHA-256, the short members, then only
    /// the chain's) when the message would be longer than the receiver's
    /// `max_message_size`. A longer one is never sent: rsyslog splits it,
    /// and the rest of it, text the caller chose, would read as messages
    /// of their own (a forged record), or breaks the framing of every
    /// later one.
    fn fitted<'l>(&self, seq: u64, line: &'l [u8]) -> std::borrow::Cow<'l, [u8]> {
        let max = self.cfg.max_message_size;
        // The header's longest (the `resent` mark included).
        let fits = |l: &[u8]| self.header(seq, l, true).len() + l.len() <= max;
        if fits(line) {
            return line.into();
        }
        let why = format!(
            "{} bytes, more than the syslog receiver's {max}",
            line.len()
        );
        tracing::warn!(receiver = %self.cfg.address, seq, bytes = line.len(), "audit export to syslog: a record longer than the receiver takes is sent as a stub (the full line stays in the trail)");
        metrics()
            .records
            .with_label_values(&["syslog", "stubbed"])
            .inc();
        [true, false]
            .into_iter()
            .filter_map(|small| super::agent::stub(line, &why, small))
            .find(|s| fits(s))
            .unwrap_or_else(|| {
                serde_json::json!({"elided": {
                    "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line)),
                    "bytes": line.len(),
                    "why": why,
                }})
                .to_string()
                .into_bytes()
            })
            .into()
    }

    /// One record as an RFC 5424 message, octet-counted (RFC 6587).
    fn frame(&self, seq: u64, line: &[u8], resent: bool) -> Vec<u8> {
        let mut msg = self.header(seq, line, resent);
        let line = if msg.len() + line.len() <= self.cfg.max_message_size {
            std::borrow::Cow::Borrowed(line)
        } else {
            let stub = self.fitted(seq, line);
            msg = self.header(seq, &stub, resent);
            stub
        };
        let mut out = Vec::with_capacity(msg.len() + line.len() + 12);
        out.extend_from_slice((msg.len() + line.len()).to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(msg.as_bytes());
        out.extend_from_slice(&line);
        out
    }

    /// The RFC 5424 header and structured data of the record `line`.
    fn header(&self, seq: u64, line: &[u8], resent: bool) -> String {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            ts: Option<&'a str>,
            #[serde(borrow)]
            outcome: Option<&'a str>,
            #[serde(borrow)]
            direction: Option<&'a str>,
        }
        let head: Option<Head<'_>> = serde_json::from_slice(line).ok();
        let outcome = head.as_ref().and_then(|h| h.outcome).unwrap_or("-");
        // Severity (RFC 5424 6.2.1) from the decision.
        let severity = match outcome {
            "failed" => 3,
            "forwarded" | "mutated" => 6,
            _ if head.as_ref().and_then(|h| h.direction) == Some("approval") => 5,
            _ => 4,
        };
        let pri = u32::from(self.cfg.facility) * 8 + severity;
        let ts = head
            .as_ref()
            .and_then(|h| h.ts)
            .filter(|t| t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("-");
        let sd_outcome: String = outcome
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        format!(
            "<{pri}>1 {ts} {} {} {} audit [{SD_ID} seq=\"{seq}\" outcome=\"{sd_outcome}\"{}] ",
            self.hostname,
            self.cfg.app_name,
            std::process::id(),
            if resent { " resent=\"1\"" } else { "" },
        )
    }
}

impl Sink for Syslog {
    fn deliver(&mut self, seq: u64, line: &[u8], resent: bool, stop: &dyn Fn() -> bool) -> bool {
        let sent = self.send(seq, line, resent, stop);
        if sent {
            let label = if resent { "resent" } else { "sent" };
            metrics()
                .records
                .with_label_values(&["syslog", label])
                .inc();
        }
        sent
    }

    fn idle(&mut self, _stop: &dyn Fn() -> bool) -> bool {
        // A write that failed inside TLS shows here, or as a closed
        // connection: either way the window goes again on the next one.
        let gone = match self.conn.as_mut() {
            Some(c) => c.flush().is_err() || c.closed(),
            None => false,
        };
        if gone {
            self.conn = None;
            metrics().connected.with_label_values(&["syslog"]).set(0);
        }
        true
    }

    fn pending_from(&self) -> Option<u64> {
        self.window.front().map(|s| s.seq)
    }
}

fn tls_config(ca_file: &Path) -> std::io::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let bad =
        |e: &dyn std::fmt::Display| std::io::Error::other(format!("{}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(std::io::Error::other(format!(
            "{}: no certificate",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A connection to the receiver.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Tls(s) => s.write_all(b),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }

    /// Whether the receiver closed its side. A syslog receiver sends
    /// nothing, so over TCP anything readable (an end of stream) means the
    /// connection is over; over TLS what arrives is read (a TLS 1.3 session
    /// ticket is no close) and only an end of stream, a close_notify or an
    /// alert is.
    fn closed(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let gone = match self {
            Conn::Tcp(s) => {
                let mut b = [0u8; 1];
                match s.peek(&mut b) {
                    Ok(_) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            }
            Conn::Tls(s) => loop {
                match s.conn.read_tls(&mut s.sock) {
                    Ok(0) => break true,
                    Ok(_) => match s.conn.process_new_packets() {
                        Ok(io) if io.peer_has_closed() => break true,
                        Ok(_) => {
                            // Whatever plaintext came is no syslog traffic.
                            let mut sink = [0u8; 4096];
                            while std::io::Read::read(&mut s.conn.reader(), &mut sink)
                                .is_ok_and(|n| n > 0)
                            {}
                        }
                        Err(_) => break true,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            },
        };
        gone || self.tcp().set_nonblocking(false).is_err()
    }
}

/// A record sent on the current connection, kept to be sent again.
struct Sent {
    at: Instant,
    seq: u64,
    line: Vec<u8>,
}
