//! The agent sink: the raw audit lines, byte for byte, POSTed in batches to
//! the control agent the gateway runs on (`<agent>/v1/audit/ingest`,
//! NDJSON, the fleet token, `X-Warden-Gateway`). The agent keeps them in an
//! indexed store for search, live figures and chain verification: since
//! the lines are unchanged, the hash chain (`prev`) can be checked there.
//! A batch is delivered when the agent answers 2xx; until then it is sent
//! again (the agent drops lines it already holds, by their hash).
//!
//! No record is left out of the agent's copy of the chain: one longer than
//! the agent takes ([`MAX_LINE`]; a caller's large arguments logged in
//! full can make one), or refused alone for any other reason, is sent as a
//! **stub** ([`stub`]): its `seq`, `prev`, `ts` (and, for a long one, its
//! other small members), and the SHA-256 and size of the full line, which
//! stays in the trail.
//! The agent takes the stub's hash for the line's, so the next record's
//! `prev` still links to it there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::agents::{Agents, Clients, Use};

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{metrics, Sink};

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;

/// Records per POST at most, and about the most bytes (the agent takes
/// bodies up to 8 MiB and lines up to 1 MiB).
const BATCH: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;
/// The longest line the agent takes (its `audit::MAX_LINE`): a longer one
/// is sent as a stub.
const MAX_LINE: usize = 1 << 20;
/// A member of a record a stub keeps at most this long (its JSON text):
/// the indexed ones (tenant, principal, tool, outcome…) are short; the
/// arguments and results that make a line large are not kept.
const STUB_MEMBER: usize = 1024;

/// A stub of the audit line `line` (without its newline): `elided` first,
/// with the full line's SHA-256, its size, the members left out and why,
/// then `seq`, `prev`, `ts` and, with `small`, every other member whose
/// JSON text is at most [`STUB_MEMBER`] (without: none, for a line the
/// agent refused for what it holds, which a member kept could hold again).
/// `None` when the line is not a record (no JSON object with `seq`, `prev`
/// and `ts`) or is a stub already.
pub(super) fn stub(line: &[u8], why: &str, small: bool) -> Option<Vec<u8>> {
    if line.starts_with(b"{\"elided\":") {
        return None;
    }
    let members: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(line).ok()?;
    const CHAIN: [&str; 3] = ["seq", "prev", "ts"];
    if CHAIN.iter().any(|k| !members.contains_key(*k)) {
        return None;
    }
    let left_out: Vec<&str> = members
        .iter()
        .filter(|(k, v)| !CHAIN.contains(&k.as_str()) && (!small || v.get().len() > STUB_MEMBER))
        .map(|(k, _)| k.as_str())
        .collect();
    let elided = serde_json::json!({
        "sha256": hex::encode(Sha256::digest(line)),
        "bytes": line.len(),
        "fields": left_out,
        "why": why.chars().take(200).collect::<String>(),
    });
    let mut out = format!("{{\"elided\":{elided}");
    let kept = CHAIN
        .iter()
        .filter_map(|k| members.get_key_value(*k))
        .chain(members.iter().filter(|(k, v)| {
            !CHAIN.contains(&k.as_str()) && small && v.get().len() <= STUB_MEMBER
        }));
    for (k, v) in kept {
        out.push(',');
        out.push_str(&serde_json::to_string(k).ok()?);
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    Some(out.into_bytes())
}

/// Where the records go: the agents (`--agent`, one or several: a batch
/// goes to the one in use, and to the next when it fails), the fleet token
/// (`--agent-token`) and this gateway's id (`--gateway-id`).
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub agents: Arc<Agents>,
    pub token: Option<String>,
    pub gateway_id: String,
}

pub(super) struct Agent {
    target: AgentTarget,
    rt: tokio::runtime::Runtime,
    clients: Clients,
    /// The pending lines, each followed by `\n`.
    body: Vec<u8>,
    /// Per pending line: its seq, where it ends in `body` (after its
    /// newline), and whether it may have been delivered before.
    lines: Vec<(u64, usize, bool)>,
    /// When a run of failures started and when it was last logged.
    failing: Option<(Instant, Instant)>,
}

/// What the agent said to a POST.
enum Posted {
    /// `true`: after another agent failed in a way that may have taken
    /// the batch (a read timed out, a 5xx): counted as resent.
    Delivered(bool),
    /// The batch itself was refused (a malformed or too large line):
    /// sending it again would be refused again.
    Refused(u16, String),
    /// Down, restarting, or refusing for now (a token it does not take
    /// yet, say): try again, the records wait in the trail.
    Failed(String),
}

impl Agent {
    pub(super) fn new(target: AgentTarget) -> std::io::Result<Agent> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let clients = Clients::for_agents(&target.agents, || {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                // A redirect could turn the POST into a GET that "succeeds".
                .redirect(reqwest::redirect::Policy::none())
        });
        Ok(Agent {
            target,
            rt,
            clients,
            body: Vec::new(),
            lines: Vec::new(),
            failing: None,
        })
    }

    /// The agent as logs name it: the one in use (its base URL).
    fn receiver(&self) -> String {
        self.target.agents.base_in_use()
    }

    /// POSTs `body` to the agent in use, and to the next one when it
    /// cannot take it (unreachable, timed out, any status but a refusal
    /// of the lines, or an answer that is not the agent's). The same
    /// batch, whole, goes to each: the cursor moves only once one agent
    /// took it, and one that may have taken it before failing is marked
    /// by the caller (resent), as for one agent.
    fn post(&self, body: &[u8]) -> Posted {
        let agents = &self.target.agents;
        self.rt.block_on(async {
            let mut errors = Vec::new();
            let mut maybe_taken = false;
            for ep in agents.candidates().await {
                let client = match self.clients.get(&ep) {
                    Ok(c) => c,
                    Err(e) => {
                        agents.failed(&ep, Use::Audit, &e);
                        errors.push(e);
                        continue;
                    }
                };
                let mut req = client
                    .post(ep.url("/v1/audit/ingest"))
                    .header("content-type", "application/x-ndjson")
                    .header("x-warden-gateway", &self.target.gateway_id)
                    // This process, so that the agent tells two processes
                    // sharing a gateway id apart by their audit too.
                    .header("x-warden-instance", crate::hub::bundles::instance_id())
                    .body(body.to_vec());
                if let Some(t) = &self.target.token {
                    req = req.bearer_auth(t);
                }
                let sent = req.send().await;
                // Refused before any byte was sent: that agent has nothing.
                let unsent = sent.as_ref().is_err_and(reqwest::Error::is_connect);
                match answer(sent).await {
                    Posted::Failed(why) => {
                        agents.failed(&ep, Use::Audit, &why);
                        errors.push(format!("{}: {why}", ep.name()));
                        maybe_taken |= !unsent;
                    }
                    Posted::Delivered(_) => {
                        agents.answered(&ep);
                        return Posted::Delivered(maybe_taken);
                    }
                    refused => {
                        agents.answered(&ep);
                        return refused;
                    }
                }
            }
            Posted::Failed(errors.join("; "))
        })
    }

    fn failed(&mut self, why: &str) {
        metrics().connected.with_label_values(&["agent"]).set(0);
        let now = Instant::now();
        let receiver = self.receiver();
        match &mut self.failing {
            None => {
                tracing::warn!(agent = %receiver, "audit export to the agent: {why}; records wait in the trail and are sent again");
                self.failing = Some((now, now));
            }
            Some((since, logged)) if logged.elapsed() >= Duration::from_secs(60) => {
                tracing::warn!(agent = %receiver, failing_for_s = since.elapsed().as_secs(), "audit export to the agent: {why}");
                *logged = now;
            }
            Some(_) => {}
        }
    }

    fn clear(&mut self) {
        self.body.clear();
        self.lines.clear();
        metrics().pending.with_label_values(&["agent"]).set(0);
    }

    /// POSTs the pending lines until the agent takes them. A batch the
    /// agent refuses as such goes line by line, and a line refused alone is
    /// dropped, counted and logged. `false`: stopping.
    fn flush(&mut self, stop: &dyn Fn() -> bool) -> bool {
        if self.lines.is_empty() {
            return true;
        }
        let m = metrics();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.post(&self.body) {
                Posted::Delivered(after_failure) => {
                    m.connected.with_label_values(&["agent"]).set(1);
                    // Another agent may have taken it before failing.
                    if after_failure {
                        for l in &mut self.lines {
                            l.2 = true;
                        }
                    }
                    if let Some((since, _)) = self.failing.take() {
                        tracing::info!(agent = %self.receiver(), after_s = since.elapsed().as_secs(), "audit export to the agent: delivering again");
                    }
                    let resent = self.lines.iter().filter(|l| l.2).count() as u64;
                    let sent = self.lines.len() as u64 - resent;
                    m.records.with_label_values(&["agent", "sent"]).inc_by(sent);
                    m.records
                        .with_label_values(&["agent", "resent"])
                        .inc_by(resent);
                    self.clear();
                    return true;
                }
                Posted::Refused(st, why) => {
                    m.connected.with_label_values(&["agent"]).set(1);
                    let body = std::mem::take(&mut self.body);
                    let lines = std::mem::take(&mut self.lines);
                    self.clear();
                    if lines.len() == 1 {
                        let (seq, end, resent) = lines[0];
                        let line = &body[..end.saturating_sub(1)];
                        // Refused alone: its stub keeps its place in the
                        // agent's chain. A stub refused too is dropped.
                        if let Some(stub) =
                            stub(line, &format!("the agent refused it: {st} {why}"), false)
                        {
                            tracing::warn!(agent = %self.receiver(), status = st, seq, "audit export to the agent: the agent refused a record ({why}); it is sent as a stub (the full line stays in the trail)");
                            m.records.with_label_values(&["agent", "stubbed"]).inc();
                            self.body.extend_from_slice(&stub);
                            self.body.push(b'\n');
                            self.lines.push((seq, self.body.len(), resent));
                            return self.flush(stop);
                        }
                        m.records.with_label_values(&["agent", "dropped"]).inc();
                        tracing::error!(agent = %self.receiver(), status = st, seq, "audit export to the agent: the agent refused a record ({why}); it is dropped");
                        return true;
                    }
                    let mut start = 0;
                    for (seq, end, resent) in lines {
                        self.body.extend_from_slice(&body[start..end]);
                        self.lines.push((seq, self.body.len(), resent));
                        start = end;
                        if !self.flush(stop) {
                            return false;
                        }
                    }
                    return true;
                }
                Posted::Failed(why) => self.failed(&why),
            }
            // A POST that timed out may have arrived: the agent drops what
            // it holds already; counted as resent.
            for l in &mut self.lines {
                l.2 = true;
            }
            if stop() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// What one agent's answer to a batch says. Delivered is a 2xx with the
/// agent's count (`{"accepted": n, …}`): a proxy's page or a catch-all
/// server answering 200 has taken nothing. A refusal of the lines (400,
/// 413) counts only with the agent's error (`{"error": …}`), since the
/// lines refused alone go as stubs.
async fn answer(sent: reqwest::Result<reqwest::Response>) -> Posted {
    let r = match sent {
        Ok(r) => r,
        Err(e) => return Posted::Failed(crate::hub::agent_tls::why(e)),
    };
    let st = r.status().as_u16();
    let text = match r.text().await {
        Ok(t) => t,
        Err(e) => return Posted::Failed(format!("status {st}: {}", e.without_url())),
    };
    let why: String = text.chars().take(300).collect();
    let json = serde_json::from_str::<serde_json::Value>(&text).ok();
    match st {
        200..=299 if json.as_ref().is_some_and(|v| v["accepted"].is_u64()) => {
            Posted::Delivered(false)
        }
        200..=299 => Posted::Failed(format!("status {st}: not the agent's protocol: {why}")),
        // Only a refusal of the lines themselves is final; a token
        // refused, a missing route, an overloaded agent are waited out.
        400 | 413 if json.as_ref().is_some_and(|v| v["error"].is_string()) => {
            Posted::Refused(st, why)
        }
        _ => Posted::Failed(format!("status {st}: {why}")),
    }
}

impl Sink for Agent {
    fn deliver(&mut self, seq: u64, line: &[u8], resent: bool, stop: &dyn Fn() -> bool) -> bool {
        // A line longer than the agent takes goes as its stub (a line that
        // is not a record goes as it is, and is refused and dropped).
        let stubbed = (line.len() > MAX_LINE)
            .then(|| {
                stub(
                    line,
                    &format!("{} bytes, more than the agent's {MAX_LINE}", line.len()),
                    true,
                )
            })
            .flatten();
        let line = match &stubbed {
            Some(s) => {
                tracing::warn!(agent = %self.receiver(), seq, bytes = line.len(), "audit export to the agent: a record longer than the agent takes is sent as a stub (the full line stays in the trail)");
                metrics()
                    .records
                    .with_label_values(&["agent", "stubbed"])
                    .inc();
                s.as_slice()
            }
            None => line,
        };
        // A line that would take the batch past its bytes goes in the next.
        if !self.lines.is_empty()
            && self.body.len() + line.len() + 1 > BATCH_BYTES
            && !self.flush(stop)
        {
            return false;
        }
        self.body.extend_from_slice(line);
        self.body.push(b'\n');
        self.lines.push((seq, self.body.len(), resent));
        metrics()
            .pending
            .with_label_values(&["agent"])
            .set(self.body.len() as i64);
        (self.lines.len() < BATCH && self.body.len() < BATCH_BYTES) || self.flush(stop)
    }

    fn idle(&mut self, stop: &dyn Fn() -> bool) -> bool {
        self.flush(stop)
    }

    fn pending_from(&self) -> Option<u64> {
        self.lines.first().map(|(seq, _, _)| *seq)
    }
}
