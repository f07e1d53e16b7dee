//! DLP and content safety: a detector library scanned over what the JSON
//! means (string values and object keys after unescaping), with per-rule,
//! per-direction, per-risk actions — block, redact (mask or keyed hash
//! token), strip, or log.
//!
//! Speed comes from not looking: one Aho-Corasick pass over the raw message
//! for every detector's anchor literals plus one byte loop for digit runs
//! decide which detectors could match at all; a message with no trigger and
//! no `\u` escape (which could hide one) is clean without being parsed.
//! Otherwise the message is parsed once and only the triggered detectors'
//! regexes run, over the unescaped strings.

pub mod detectors;

use std::collections::HashSet;

use aho_corasick::AhoCorasick;
use regex::Regex;
use serde_json::Value as Json;
use warden_config::access::{Risk, ServerCatalog};
use warden_config::guards::{Dlp, DlpAction, DlpDirection};

use crate::error::{codes, JsonRpcError};
use crate::filter::{Decision, Denial, Direction, FilterContext, McpFilter, MessageView};
use crate::jsonrpc::Kind;
use detectors::{Category, Trigger, SPECS};

/// One detector ready to run.
pub struct Detector {
    pub name: String,
    pub category: Category,
    regex: Regex,
    validate: Option<fn(&str) -> bool>,
    /// Digits-triggered: the shortest digit run that can match, and whether
    /// only spaces may separate the digits.
    min_digits: Option<(usize, bool)>,
    /// Runs on every string (custom detectors without anchors).
    always: bool,
    /// Exact-match dictionary of SHA-256 hex digests of lower-cased tokens.
    dictionary: Option<HashSet<String>>,
}

/// A match inside one string (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: usize,
    pub start: usize,
    pub end: usize,
}

pub struct Scanner {
    pub detectors: Vec<Detector>,
    /// Leftmost-longest (prefilter-accelerated) search for anchors …
    ac: AhoCorasick,
    /// … and an overlapping search run only around each match, so an anchor
    /// that overlaps another is never missed.
    ac_overlapping: AhoCorasick,
    max_anchor: usize,
    /// Aho-Corasick pattern → detector.
    ac_owner: Vec<usize>,
    /// Case-sensitive anchors.
    exact: AhoCorasick,
    exact_owner: Vec<usize>,
    dotted: Vec<usize>,
    hexcolon: Vec<usize>,
}

fn dotted_quad(t: &[u8]) -> bool {
    // digit . digit . digit . digit, each group 1–3 digits.
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'.', &t[i..]) {
        let at = i + p;
        let mut groups = 0;
        let mut j = at;
        // Walk forward over `.d+` groups.
        while j < t.len() && t[j] == b'.' && j + 1 < t.len() && t[j + 1].is_ascii_digit() {
            j += 1;
            while j < t.len() && t[j].is_ascii_digit() {
                j += 1;
            }
            groups += 1;
        }
        if groups >= 3 && at > 0 && t[at - 1].is_ascii_digit() {
            return true;
        }
        i = at + 1;
    }
    false
}

fn hex_colons(t: &[u8]) -> bool {
    // Look only around colons: `h:h:h` needs three colons within 15 bytes,
    // each after 1–4 hex digits (or `::`).
    let mut last: [usize; 2] = [usize::MAX; 2];
    for at in memchr::memchr_iter(b':', t) {
        if at + 1 < t.len() && t[at + 1] == b':' {
            return true;
        }
        let hex_before = t[..at]
            .iter()
            .rev()
            .take(5)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if !(1..=4).contains(&hex_before) {
            last = [usize::MAX; 2];
            continue;
        }
        if last[0] != usize::MAX
            && at - last[0] <= 10
            && last[1] != usize::MAX
            && last[0] - last[1] <= 5
        {
            return true;
        }
        last = [at, last[0]];
    }
    false
}

/// Longest digit runs: `(separators -./() and spaces allowed, spaces only)`.
fn digit_runs(text: &[u8]) -> (usize, usize) {
    let (mut best, mut cur, mut best_plain, mut plain) = (0usize, 0usize, 0usize, 0usize);
    for &b in text {
        if b.is_ascii_digit() {
            cur += 1;
            plain += 1;
            best = best.max(cur);
            best_plain = best_plain.max(plain);
        } else if b == b' ' {
        } else if matches!(b, b'-' | b'.' | b'/' | b'(' | b')') {
            plain = 0;
        } else {
            cur = 0;
            plain = 0;
        }
    }
    (best, best_plain)
}

impl Scanner {
    /// The built-in library plus the bundle's custom detectors.
    // One regex per custom detector, compiled once per bundle, not per call.
    #[allow(clippy::regex_creation_in_loops)]
    pub fn new(custom: &[warden_config::guards::CustomDetector]) -> Result<Scanner, String> {
        let mut detectors = Vec::new();
        let mut anchors: Vec<String> = Vec::new();
        let mut ac_owner = Vec::new();
        let (mut exact, mut exact_owner, mut dotted, mut hexcolon) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in SPECS {
            // ASCII word boundaries keep every pattern on the regex crate's DFAs.
            let pattern = s.pattern.replace(r"\b", r"(?-u:\b)");
            let regex = Regex::new(&pattern).map_err(|e| format!("detector {}: {e}", s.name))?;
            let idx = detectors.len();
            let min_digits = match s.trigger {
                Trigger::Literal(lits) => {
                    for l in lits {
                        anchors.push((*l).to_owned());
                        ac_owner.push(idx);
                    }
                    None
                }
                Trigger::Exact(lits) => {
                    for l in lits {
                        exact.push((*l).to_owned());
                        exact_owner.push(idx);
                    }
                    None
                }
                Trigger::Digits(n) => Some((n, false)),
                Trigger::PlainDigits(n) => Some((n, true)),
                Trigger::DottedQuad => {
                    dotted.push(idx);
                    None
                }
                Trigger::HexColons => {
                    hexcolon.push(idx);
                    None
                }
            };
            detectors.push(Detector {
                name: s.name.to_owned(),
                category: s.category,
                regex,
                validate: s.validate,
                min_digits,
                always: false,
                dictionary: None,
            });
        }
        for c in custom {
            let idx = detectors.len();
            let (regex, always) = match (&c.regex, c.keywords.is_empty()) {
                (Some(r), _) => (
                    Regex::new(r).map_err(|e| format!("custom detector {}: {e}", c.name))?,
                    c.anchors.is_empty(),
                ),
                (None, false) => {
                    let alts: Vec<String> = c.keywords.iter().map(|k| regex::escape(k)).collect();
                    (
                        Regex::new(&format!(r"(?i)\b(?:{})\b", alts.join("|")))
                            .map_err(|e| e.to_string())?,
                        false,
                    )
                }
                (None, true) => (
                    Regex::new(r"[A-Za-z0-9_-]{4,}").map_err(|e| e.to_string())?,
                    true,
                ),
            };
            for l in c.anchors.iter().chain(c.keywords.iter()) {
                anchors.push(l.clone());
                ac_owner.push(idx);
            }
            detectors.push(Detector {
                name: c.name.clone(),
                category: if c.secret {
                    Category::Secret
                } else {
                    Category::Pii
                },
                regex,
                validate: None,
                min_digits: None,
                always: always || !c.dictionary_sha256.is_empty(),
                dictionary: (!c.dictionary_sha256.is_empty()).then(|| {
                    c.dictionary_sha256
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect()
                }),
            });
        }
        let max_anchor = anchors.iter().map(String::len).max().unwrap_or(0);
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&anchors)
            .map_err(|e| e.to_string())?;
        let exact_ac = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&exact)
            .map_err(|e| e.to_string())?;
        let ac_overlapping = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&anchors)
            .map_err(|e| e.to_string())?;
        Ok(Scanner {
            detectors,
            ac,
            ac_overlapping,
            max_anchor,
            ac_owner,
            exact: exact_ac,
            exact_owner,
            dotted,
            hexcolon,
        })
    }

    /// Which detectors could match somewhere in `text`.
    fn triggered(&self, text: &[u8]) -> Vec<bool> {
        let mut on = vec![false; self.detectors.len()];
        for m in self.ac.find_iter(text) {
            on[self.ac_owner[m.pattern().as_usize()]] = true;
            let window = &text[m.start()..(m.end() + self.max_anchor).min(text.len())];
            for o in self.ac_overlapping.find_overlapping_iter(window) {
                on[self.ac_owner[o.pattern().as_usize()]] = true;
            }
        }
        for m in self.exact.find_iter(text) {
            on[self.exact_owner[m.pattern().as_usize()]] = true;
        }
        if !self.dotted.is_empty() && dotted_quad(text) {
            for &i in &self.dotted {
                on[i] = true;
            }
        }
        if !self.hexcolon.is_empty() && hex_colons(text) {
            for &i in &self.hexcolon {
                on[i] = true;
            }
        }
        let (run, plain) = digit_runs(text);
        for (i, d) in self.detectors.iter().enumerate() {
            let digits = match d.min_digits {
                Some((n, false)) => run >= n,
                Some((n, true)) => plain >= n,
                None => false,
            };
            if d.always || digits {
                on[i] = true;
            }
        }
        on
    }

    /// Whether a raw JSON message certainly holds nothing any detector finds:
    /// no trigger in its bytes and no `\u` escape that could hide one.
    pub fn clean(&self, raw: &[u8]) -> bool {
        memchr::memmem::find(raw, b"\\u").is_none() && !self.triggered(raw).iter().any(|&b| b)
    }

    /// Every validated match in one (unescaped) string.
    pub fn scan_str(&self, s: &str, out: &mut Vec<Hit>) {
        let on = self.triggered(s.as_bytes());
        for (i, d) in self.detectors.iter().enumerate() {
            if !on[i] {
                continue;
            }
            if let Some(dict) = &d.dictionary {
                use sha2::Digest;
                for m in d.regex.find_iter(s) {
                    let h = hex::encode(sha2::Sha256::digest(m.as_str().to_lowercase().as_bytes()));
                    if dict.contains(&h) {
                        out.push(Hit {
                            detector: i,
                            start: m.start(),
                            end: m.end(),
                        });
                    }
                }
                continue;
            }
            for c in d.regex.captures_iter(s) {
                let m = c.get(1).or_else(|| c.get(0));
                let Some(m) = m else { continue };
                if d.validate.is_none_or(|v| v(m.as_str())) {
                    out.push(Hit {
                        detector: i,
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        // Overlapping hits: secrets win over injection markers over personal
        // data (a password in a URL is not an e-mail address), then the longer.
        let rank = |h: &Hit| match self.detectors[h.detector].category {
            Category::Secret => 0,
            Category::Injection => 1,
            Category::Pii => 2,
        };
        out.sort_by_key(|h| (rank(h), std::cmp::Reverse(h.end - h.start), h.start));
        let mut kept: Vec<Hit> = Vec::with_capacity(out.len());
        for h in out.drain(..) {
            if kept.iter().all(|k| h.end <= k.start || h.start >= k.end) {
                kept.push(h);
            }
        }
        kept.sort_by_key(|h| h.start);
        *out = kept;
    }
}

impl Scanner {
    /// Every finding in a raw JSON message: `(JSON path, hit)`. Clean
    /// messages are judged on their bytes without being parsed.
    pub fn scan_json(&self, raw: &[u8]) -> Vec<(String, Hit)> {
        if self.clean(raw) {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_slice::<Json>(raw) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut path = String::new();
        walk(&v, &mut path, self, &mut found);
        found
            .into_iter()
            .flat_map(|l| {
                let p = l.path;
                l.hits.into_iter().map(move |h| (p.clone(), h))
            })
            .collect()
    }
}

/// One finding as the audit records it: never the matched text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingNote {
    pub detector: String,
    pub rule: String,
    pub path: String,
    pub action: &'static str,
}

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
            .field("detectors", &self.scanner.detectors.len())
            .finish()
    }
}

struct Located {
    path: String,
    /// The string (value or key) the hits are in.
    text: String,
    hits: Vec<Hit>,
    is_key: bool,
}

fn walk(v: &Json, path: &mut String, scanner: &Scanner, out: &mut Vec<Located>) {
    match v {
        Json::String(s) => {
            let mut hits = Vec::new();
            scanner.scan_str(s, &mut hits);
            if !hits.is_empty() {
                out.push(Located {
                    path: path.clone(),
                    text: s.clone(),
                    hits,
                    is_key: false,
                });
            }
        }
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let l = path.len();
                path.push_str(&format!("[{i}]"));
                walk(x, path, scanner, out);
                path.truncate(l);
            }
        }
        Json::Object(o) => {
            // Binary payloads (images, audio, blobs) are not text.
            let binary = matches!(
                o.get("type").and_then(Json::as_str),
                Some("image" | "audio")
            );
            for (k, x) in o {
                let l = path.len();
                path.push('.');
                path.push_str(k);
                let mut hits = Vec::new();
                scanner.scan_str(k, &mut hits);
                if !hits.is_empty() {
                    out.push(Located {
                        path: path.clone(),
                        text: k.clone(),
                        hits,
                        is_key: true,
                    });
                }
                if !((binary && k == "data") || k == "blob") {
                    walk(x, path, scanner, out);
                }
                path.truncate(l);
            }
        }
        _ => {}
    }
}

/// Replaces the spans of `hits` in `s` with `repl(hit)`.
fn rewrite(s: &str, hits: &[(&Hit, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (h, r) in hits {
        out.push_str(&s[at..h.start]);
        out.push_str(r);
        at = h.end;
    }
    out.push_str(&s[at..]);
    out
}

fn redact_at(v: &mut Json, path: &str, is_key: bool, f: &dyn Fn(&str) -> String) {
    // Paths were built by `walk`: `.key` and `[i]` segments.
    let mut cur = v;
    let mut segs: Vec<String> = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            segs.push(format!("[{}", &r[..end]));
            rest = &r[(end + 1).min(r.len())..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            segs.push(r[..end].to_owned());
            rest = &r[end..];
        } else {
            return;
        }
    }
    let Some((last, parents)) = segs.split_last() else {
        if let Json::String(s) = cur {
            *s = f(s);
        }
        return;
    };
    for s in parents {
        cur = match (s.strip_prefix('['), cur) {
            (Some(i), Json::Array(a)) => match i.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            (None, Json::Object(o)) => match o.get_mut(s.as_str()) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    match (last.strip_prefix('['), cur) {
        (Some(i), Json::Array(a)) => {
            if let Some(Json::String(s)) = i.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *s = f(s);
            }
        }
        (None, Json::Object(o)) if is_key => {
            if let Some(x) = o.remove(last.as_str()) {
                o.insert(f(last), x);
            }
        }
        (None, Json::Object(o)) => {
            if let Some(Json::String(s)) = o.get_mut(last.as_str()) {
                *s = f(s);
            }
        }
        _ => {}
    }
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

    fn judge(&self, msg: MessageView<'_>, ctx: &FilterContext<'_>, dir: DlpDirection) -> Decision {
        if self.scanner.clean(msg.bytes) {
            return Decision::Pass;
        }
        let Ok(mut v) = serde_json::from_slice::<Json>(msg.bytes) else {
            return Decision::Pass;
        };
        let env = msg.envelope;
        // The part that carries content: params of requests, result of responses.
        let part = if v.get("params").is_some() {
            "params"
        } else {
            "result"
        };
        let mut found = Vec::new();
        if let Some(p) = v.get(part) {
            let mut path = String::new();
            walk(p, &mut path, &self.scanner, &mut found);
        }
        if found.is_empty() {
            return Decision::Pass;
        }
        let tool = if env.method.as_deref() == Some("tools/call") {
            env.name.as_deref()
        } else {
            ctx.request_target
        };
        let risk = tool
            .map(|t| {
                self.catalog
                    .get(ctx.server)
                    .map_or(Risk::Medium, |c| c.risk(t))
            })
            .unwrap_or(Risk::Low);
        let mut blocked: Vec<String> = Vec::new();
        // (JSON path, is an object key, hits with their replacement text)
        type Edit = (String, bool, Vec<(Hit, String)>);
        let mut redactions: Vec<Edit> = Vec::new();
        let mut notes = Vec::new();
        for loc in &found {
            let mut reps = Vec::new();
            for h in &loc.hits {
                let d = &self.scanner.detectors[h.detector];
                let Some(rule) = self.dlp.rule_for(&d.name, d.category.as_str(), dir, risk) else {
                    continue;
                };
                notes.push(FindingNote {
                    detector: d.name.clone(),
                    rule: rule.name.clone(),
                    path: format!("{part}{}", loc.path),
                    action: rule.action.as_str(),
                });
                match rule.action {
                    DlpAction::Block => {
                        if !blocked.contains(&rule.name) {
                            blocked.push(rule.name.clone());
                        }
                    }
                    DlpAction::Redact | DlpAction::Strip => {
                        let text = if rule.action == DlpAction::Strip {
                            String::new()
                        } else if rule.hash {
                            let s = &loc.text[h.start..h.end];
                            let tag = ring::hmac::sign(&self.hash_key, s.as_bytes());
                            format!("[{}:{}]", d.name, hex::encode(&tag.as_ref()[..6]))
                        } else {
                            rule.mask
                                .replace("{detector}", &d.name)
                                .replace("{rule}", &rule.name)
                        };
                        reps.push((h.clone(), text));
                    }
                    DlpAction::Log => {}
                }
            }
            if !reps.is_empty() {
                redactions.push((loc.path.clone(), loc.is_key, reps));
            }
        }
        if let Some(cell) = ctx.findings {
            cell.borrow_mut().extend(notes);
        }
        if !blocked.is_empty() {
            let error = JsonRpcError::new(
                codes::DLP_BLOCKED,
                format!("Blocked by data-loss prevention: {}", blocked.join(", ")),
            )
            .with_data(serde_json::json!({"reason": "dlp_blocked", "rules": blocked}));
            return Decision::Reject(Denial::error(
                error,
                format!("dlp_blocked:{}", blocked.join(",")),
            ));
        }
        if redactions.is_empty() {
            return Decision::Pass;
        }
        if let Some(p) = v.get_mut(part) {
            for (path, is_key, reps) in &redactions {
                let refs: Vec<(&Hit, String)> = reps.iter().map(|(h, r)| (h, r.clone())).collect();
                redact_at(p, path, *is_key, &|s: &str| rewrite(s, &refs));
            }
        }
        match serde_json::to_vec(&v) {
            Ok(b) => Decision::Mutated(b),
            Err(_) => Decision::Pass,
        }
    }
}

impl McpFilter for DlpFilter {
    fn name(&self) -> &'static str {
        "dlp"
    }

    fn on_request(&self, msg: MessageView<'_>, ctx: &FilterContext<'_>) -> Decision {
        self.judge(msg, ctx, DlpDirection::Request)
    }

    fn on_response(&self, msg: MessageView<'_>, ctx: &FilterContext<'_>) -> Decision {
        if msg.envelope.kind == Kind::Response && msg.envelope.is_error {
            return Decision::Pass;
        }
        debug_assert_eq!(ctx.direction, Direction::Response);
        self.judge(msg, ctx, DlpDirection::Response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &Scanner, text: &str) -> Vec<String> {
        let mut h = Vec::new();
        s.scan_str(text, &mut h);
        h.iter()
            .map(|h| s.detectors[h.detector].name.clone())
            .collect()
    }

    #[test]
    fn library_size_and_basic_hits() {
        let s = Scanner::new(&[]).expect("scanner");
        let non_injection = s
            .detectors
            .iter()
            .filter(|d| d.category != Category::Injection)
            .count();
        assert!(non_injection >= 50, "{non_injection} detectors");
        assert_eq!(names(&s, "card 4111 1111 1111 1111 ok"), ["card_visa"]);
        assert!(
            names(&s, "order 4111 1111 1111 1112").is_empty(),
            "fails Luhn"
        );
        assert_eq!(names(&s, "AKIAIOSFODNN7EXAMPLE"), ["aws_access_key_id"]);
        assert_eq!(names(&s, "mail bob@example.com now"), ["email"]);
        assert_eq!(names(&s, "ssn 123-45-6789"), ["us_ssn"]);
        assert!(names(&s, "ssn 666-45-6789").is_empty());
        assert_eq!(names(&s, "DE89 3704 0044 0532 0130 00"), ["iban"]);
        assert!(s.clean(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"all good here"}]}}"#));
        assert!(
            !s.clean(br#"{"text":"\u0034111"}"#),
            "escapes force a parse"
        );
    }
}
