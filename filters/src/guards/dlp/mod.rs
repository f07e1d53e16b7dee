//! The DLP guard: applies the bundle's DLP rules to messages in both
//! directions — per rule, per direction, per risk: block, redact (mask or
//! keyed hash token), strip, or log — and judges request metadata (header
//! values, URL). What the detectors find is the scanner's
//! (`engines::dlp`).

use warden_config::access::{Risk, ServerCatalog};
use warden_config::guards::{Dlp, DlpAction, DlpDirection};

use crate::chain::filter::{Decision, Denial, Direction, Exchange, McpFilter, Message, Notes};
use crate::engines::dlp::normalise;
use crate::engines::dlp::{Hit, Scanner, Uninspectable};
use crate::protocol::error::{codes, JsonRpcError};

pub use crate::chain::notes::FindingNote;

/// What DLP makes of a request's metadata (header values, URL): text that
/// cannot be redacted in place. A blocking rule refuses the request; a
/// redacting or stripping rule withholds the item (a header is not sent
/// on; a URL cannot go without it, so the caller refuses); a logging rule
/// only records.
#[derive(Debug, Default)]
pub struct MetadataVerdict {
    /// The blocking rules that matched.
    pub blocked: Vec<String>,
    /// Positions (in the items judged) of those a redacting rule matched,
    /// with the rule.
    pub withheld: Vec<(usize, String)>,
    /// Each finding with the position of its item; the caller names the
    /// place in `path`.
    pub findings: Vec<(usize, FindingNote)>,
}

/// How many times the text the rules made is read again before a message
/// whose text keeps changing is refused.
const MAX_PASSES: usize = 4;

/// Applies the bundle's DLP rules to messages in both directions.
pub struct DlpFilter {
    scanner: Scanner,
    dlp: Dlp,
    catalog: std::collections::HashMap<String, ServerCatalog>,
    hash_key: ring::hmac::Key,
}

impl std::fmt::Debug for DlpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpFilter")
            .field("detectors", &self.scanner.detectors().len())
            .finish()
    }
}

/// Replaces the spans of `hits` (sorted by start) in `s` with their
/// replacement text; a span inside an earlier one is already replaced.
/// Where a private key that starts with the header at `..end` of `s`
/// ends: after its END line when one follows within 64 KiB, else after the
/// run of base64 and white space that follows the header. A key redacted
/// by its header alone would leave its body.
fn key_body(s: &str, end: usize) -> usize {
    const REACH: usize = 64 * 1024;
    let rest = &s[end..];
    let lower = rest[..rest.floor_char_boundary(REACH)].to_ascii_lowercase();
    // `-----END … PRIVATE KEY-----`: the dashes before END, the words,
    // the dashes after them (an `end` inside the body is no END line).
    let line = lower
        .match_indices("end")
        .map(|(at, _)| at)
        .find(|&at| lower[..at].trim_end_matches([' ', '\t']).ends_with("---"));
    if let Some(k) = line.and_then(|at| Some(at + lower[at..].find("key")? + 3)) {
        let after = lower[k..].trim_start();
        let after = after.strip_prefix("block").unwrap_or(after).trim_start();
        let dashes = after.bytes().take_while(|&b| b == b'-').count();
        return end + lower.len() - after.len() + dashes;
    }
    let body = rest
        .bytes()
        .take_while(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b'\n')
        })
        .count();
    end + body
}

fn rewrite(s: &str, hits: &[(Hit, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (h, r) in hits {
        if h.end <= at {
            continue;
        }
        out.push_str(&s[at..h.start.max(at)]);
        out.push_str(r);
        at = h.end;
    }
    out.push_str(&s[at..]);
    out
}

impl DlpFilter {
    pub fn new(
        dlp: Dlp,
        catalog: std::collections::HashMap<String, ServerCatalog>,
    ) -> Result<Self, String> {
        let scanner = Scanner::new(&dlp.custom)?;
        let key_bytes = match &dlp.hash_key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => {
                let mut k = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                    .map_err(|_| "no randomness for the DLP hash key".to_owned())?;
                k.to_vec()
            }
        };
        Ok(DlpFilter {
            scanner,
            dlp,
            catalog,
            hash_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
        })
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// The highest risk a call to `server` can run at, for rules with
    /// `min_risk`: its catalog's default (what an unrated tool runs at) or
    /// its riskiest tool; `MEDIUM` without a catalog, as for its messages.
    pub fn server_risk(&self, server: &str) -> Risk {
        self.catalog.get(server).map_or(Risk::Medium, |c| {
            c.tools
                .values()
                .filter_map(|t| t.risk)
                .fold(c.default_risk, Risk::max)
        })
    }

    /// Judges text that travels to the upstream beside the messages: the
    /// client's header values and the URL's path and query (see
    /// [`MetadataVerdict`]). `risk` is the riskiest call the request carries
    /// (`LOW` when it carries none).
    pub fn judge_metadata(&self, texts: &[&str], risk: Risk) -> MetadataVerdict {
        let mut v = MetadataVerdict::default();
        let mut hits = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            hits.clear();
            self.scanner.scan_str_all(text, &mut hits);
            for h in &hits {
                let d = &self.scanner.detectors()[h.detector];
                let Some(rule) =
                    self.dlp
                        .rule_for(&d.name, d.category.as_str(), DlpDirection::Request, risk)
                else {
                    continue;
                };
                v.findings.push((
                    i,
                    FindingNote {
                        detector: d.name.clone(),
                        rule: rule.name.clone(),
                        path: String::new(),
                        action: rule.action.as_str(),
                    },
                ));
                match rule.action {
                    DlpAction::Block => {
                        if !v.blocked.contains(&rule.name) {
                            v.blocked.push(rule.name.clone());
                        }
                    }
                    DlpAction::Redact | DlpAction::Strip => {
                        if !v.withheld.iter().any(|(j, r)| *j == i && *r == rule.name) {
                            v.withheld.push((i, rule.name.clone()));
                        }
                    }
                    DlpAction::Log => {}
                }
            }
        }
        v
    }

    /// The refusal of a request whose metadata a blocking rule matched.
    pub fn metadata_refusal(blocked: &[String]) -> crate::protocol::error::Refusal {
        let d = dlp_blocked(blocked);
        crate::protocol::error::Refusal::new(403, "dlp_blocked", d.error)
    }

    fn judge(
        &self,
        msg: &Message<'_>,
        ctx: &Exchange<'_>,
        dir: DlpDirection,
        sink: &mut Notes,
    ) -> Decision {
        let env = msg.envelope;
        // The part that carries content: params of requests, result of responses.
        // The whole message: `params`, `result`, an error's `message` and
        // `data`, and any member a peer may read beside them.
        let sampling = env.kind == crate::protocol::jsonrpc::Kind::Request
            && env.method.as_deref() == Some("sampling/createMessage");
        // A reply's id matched to the client's request is the client's own
        // text; one matched to nothing (a stream's unknown reply) is the
        // server's, and is judged.
        let echoed_id = env.kind == crate::protocol::jsonrpc::Kind::Response && msg.id_matched;
        let mut risk = None;
        let mut current: Option<Vec<u8>> = None;
        // Cutting a match out joins the text on either side of it
        // (`AKIA…<|im_start|>…` stripped is a key; `<|im_<|im_start|>start|>`
        // a marker), and a mask may complete what surrounds it: the text
        // a rule made is judged again, as a reader will read it, until no
        // rule changes it. Text that keeps changing is refused.
        for _ in 0..MAX_PASSES {
            let bytes = current.as_deref().unwrap_or(msg.bytes);
            match self.pass(bytes, msg, ctx, dir, sampling, echoed_id, &mut risk, sink) {
                Err(refused) => return refused,
                Ok(None) => {
                    return match current {
                        Some(out) => Decision::Mutated(out),
                        None => Decision::Pass,
                    }
                }
                // A mask the rules find again, unchanged, is done.
                Ok(Some(out)) if out == bytes => return Decision::Mutated(out),
                Ok(Some(out)) => current = Some(out),
            }
        }
        let rules: Vec<String> = sink
            .findings
            .iter()
            .filter(|f| f.action != "log")
            .map(|f| f.rule.clone())
            .fold(Vec::new(), |mut v, r| {
                if !v.contains(&r) {
                    v.push(r);
                }
                v
            });
        Decision::Reject(dlp_blocked(&rules))
    }

    /// One reading of `bytes` by the rules: `None` when no rule changes
    /// them, the text the rules made otherwise, or the refusal.
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &self,
        bytes: &[u8],
        msg: &Message<'_>,
        ctx: &Exchange<'_>,
        dir: DlpDirection,
        sampling: bool,
        echoed_id: bool,
        risk: &mut Option<Risk>,
        sink: &mut Notes,
    ) -> Result<Option<Vec<u8>>, Decision> {
        let env = msg.envelope;
        // The text the message shows, read by the caller: of these bytes
        // only while no rule has rewritten them.
        let shown = msg.stream_shown.filter(|_| std::ptr::eq(bytes, msg.bytes));
        let found =
            match self
                .scanner
                .locate(bytes, None, sampling, echoed_id, msg.stream_before, shown)
            {
                Ok(f) => f,
                Err(Uninspectable) => return Err(uninspectable()),
            };
        if found.is_empty() {
            return Ok(None);
        }
        let risk = *risk.get_or_insert_with(|| {
            let tool = if env.method.as_deref() == Some("tools/call") {
                env.name.as_deref()
            } else {
                msg.request_target
            };
            // A message that names no tool (a notification, a server's
            // sampling or elicitation request, a reply to an unknown request)
            // is judged at the server's risk, so `min_risk` rules reach it.
            match tool {
                Some(t) => self
                    .catalog
                    .get(ctx.server)
                    .map_or(Risk::Medium, |c| c.risk(t)),
                None => self.server_risk(ctx.server),
            }
        });
        let mut blocked: Vec<String> = Vec::new();
        // (string index in `found`, hits with their replacement text)
        let mut redactions: Vec<(usize, Vec<(Hit, String)>)> = Vec::new();
        let mut redacting: Vec<String> = Vec::new();
        let mut notes = Vec::new();
        for (li, loc) in found.iter().enumerate() {
            let mut reps = Vec::new();
            for h in &loc.hits {
                let d = &self.scanner.detectors()[h.detector];
                let Some(rule) = self.dlp.rule_for(&d.name, d.category.as_str(), dir, risk) else {
                    continue;
                };
                notes.push(FindingNote {
                    detector: d.name.clone(),
                    rule: rule.name.clone(),
                    path: loc.path.strip_prefix('.').unwrap_or(&loc.path).to_owned(),
                    action: rule.action.as_str(),
                });
                match rule.action {
                    DlpAction::Block => {
                        if !blocked.contains(&rule.name) {
                            blocked.push(rule.name.clone());
                        }
                    }
                    DlpAction::Redact | DlpAction::Strip => {
                        if !redacting.contains(&rule.name) {
                            redacting.push(rule.name.clone());
                        }
                        let text = if rule.action == DlpAction::Strip {
                            String::new()
                        } else if rule.hash {
                            // The token of what a reader sees: the same for
                            // a value however it was disguised.
                            let s = normalise::normalised(&loc.text[h.start..h.end]);
                            let tag = ring::hmac::sign(&self.hash_key, s.as_bytes());
                            format!("[{}:{}]", d.name, hex::encode(&tag.as_ref()[..6]))
                        } else {
                            rule.mask
                                .replace("{detector}", &d.name)
                                .replace("{rule}", &rule.name)
                        };
                        let mut h = h.clone();
                        if d.name == "pem_private_key" {
                            h.end = key_body(&loc.text, h.end);
                        }
                        reps.push((h, text));
                    }
                    DlpAction::Log => {}
                }
            }
            if !reps.is_empty() {
                redactions.push((li, reps));
            }
        }
        // A later reading finds again what a rule only logs (and the chain
        // judges a rewrite again, a tenant's rules the org's text): each
        // finding is recorded once.
        for n in notes {
            if !sink.findings.contains(&n) {
                sink.findings.push(n);
            }
        }
        if !blocked.is_empty() {
            return Err(Decision::Reject(dlp_blocked(&blocked)));
        }
        if redactions.is_empty() {
            return Ok(None);
        }
        // Splice: each changed string literal is replaced by its new
        // literal; every other byte is forwarded as it came.
        redactions.sort_by_key(|(li, _)| found[*li].start);
        let raw = bytes;
        let mut out = Vec::with_capacity(raw.len());
        let mut at = 0;
        let mut keys_changed = false;
        for (li, reps) in &redactions {
            let loc = &found[*li];
            // A string literal is replaced with its quotes; a number by a
            // string (its redacted text).
            let quote = usize::from(!loc.number);
            out.extend_from_slice(&raw[at..loc.start - quote]);
            let new = rewrite(&loc.text, reps);
            if serde_json::to_writer(&mut out, &new).is_err() {
                return Err(uninspectable());
            }
            at = loc.end + quote;
            keys_changed |= loc.is_key;
            // A key with part of it cut out reads as another name
            // (`pa\u200bth` as `path`, `_m…eta` as `_meta`) that the guards
            // before DLP never judged: refused, never forwarded renamed.
            if loc.is_key && reps.iter().any(|(_, text)| text.is_empty()) {
                return Err(Decision::Reject(dlp_blocked(&redacting)));
            }
        }
        out.extend_from_slice(&raw[at..]);
        // Two keys redacted to the same text would make a duplicate member,
        // which parsers resolve differently: refuse rather than forward an
        // ambiguous message.
        if keys_changed
            && crate::protocol::jsonrpc::parse(
                &out,
                crate::protocol::jsonrpc::ParseLimits::default(),
            )
            .is_err()
        {
            return Err(Decision::Reject(dlp_blocked(&redacting)));
        }
        Ok(Some(out))
    }
}

fn dlp_blocked(rules: &[String]) -> Denial {
    let error = JsonRpcError::new(
        codes::DLP_BLOCKED,
        format!("Blocked by data-loss prevention: {}", rules.join(", ")),
    )
    .with_data(serde_json::json!({"reason": "dlp_blocked", "rules": rules}));
    Denial::error(error, format!("dlp_blocked:{}", rules.join(",")))
}

/// A message DLP cannot walk is refused, never forwarded unchecked.
fn uninspectable() -> Decision {
    let error = JsonRpcError::new(
        codes::DLP_BLOCKED,
        "Blocked by data-loss prevention: the message could not be inspected",
    )
    .with_data(serde_json::json!({"reason": "dlp_uninspectable"}));
    Decision::Reject(Denial::error(error, "dlp_uninspectable".to_owned()))
}

impl McpFilter for DlpFilter {
    fn name(&self) -> &'static str {
        "dlp"
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        self.judge(msg, ctx, DlpDirection::Request, notes)
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        debug_assert_eq!(msg.direction, Direction::Response);
        self.judge(msg, ctx, DlpDirection::Response, notes)
    }

    /// A request another DLP rule set rewrote (a tenant's, after the
    /// org's) is judged by these rules again: a strip that joins a secret
    /// these rules block is refused, a mask of theirs is applied.
    fn judges_again(&self) -> bool {
        true
    }

    /// Its strip and masks make text: on a reply the content judges
    /// before it (egress, the policy's lists, names) judge it again.
    fn rewrites_content(&self) -> bool {
        true
    }

    /// A reply another rule set rewrote (the org's after a tenant's) is
    /// judged by these rules again; a rewrite of theirs is applied.
    fn judges_reply_again(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod normalisation;
#[cfg(test)]
mod redaction;
