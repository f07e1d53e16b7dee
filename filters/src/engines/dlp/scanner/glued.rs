//! Secrets glued to the text around them: twins of the secret detectors
//! without their leading word boundary (`x_AKIA…`), and patterns that end
//! where the token's class ends rather than at a word boundary
//! (`AKIA…EXAMPLEx`).

use aho_corasick::AhoCorasick;

use super::{ascii_pattern, compile, Detector};
use crate::engines::dlp::detectors::{self, Category, SPECS};
use crate::engines::dlp::prefilter::Cand;

/// The literals of the secret detectors' twins (see `glued_secrets`).
pub(super) struct GluedAnchors {
    /// Teddy (SIMD) where the CPU has it: the automaton below scans byte
    /// by byte, which costs a 1 KB call several microseconds.
    pub(super) packed: Option<aho_corasick::packed::Searcher>,
    ac: AhoCorasick,
    lits: Vec<String>,
    owner: Vec<u16>,
    /// Every twin's match is at least `run - 1` bytes of letters, digits
    /// and `-._=`, glued to a word character: the pass runs only where the
    /// prefilter saw a run of `run` such bytes (0: always).
    pub(super) run: usize,
}

impl GluedAnchors {
    /// Every position where a literal starts, each tried for every literal
    /// that starts there (a search that runs on the SIMD prefilter and
    /// resumes one byte after each hit, so a literal inside another's
    /// match is still seen).
    pub(super) fn candidates(&self, hay: &[u8], out: &mut Vec<Cand>) {
        let mut at = 0;
        while at < hay.len() {
            let found = match &self.packed {
                Some(t) => t.find_in(hay, aho_corasick::Span::from(at..hay.len())),
                None => self
                    .ac
                    .find(aho_corasick::Input::new(hay).span(at..hay.len())),
            };
            let Some(m) = found else { break };
            let p = m.start();
            for (lit, &det) in self.lits.iter().zip(&self.owner) {
                if hay[p..].starts_with(lit.as_bytes()) {
                    out.push(Cand {
                        det,
                        start: p,
                        end: p + lit.len(),
                    });
                }
            }
            at = p + 1;
        }
    }
}

/// Secret detectors whose pattern begins at a word boundary (`\bAKIA…`)
/// miss a secret glued to a word character before it (`x_AKIA…`,
/// `1AKIA…`, `keyAKIA…`), which a reader of the text still sees whole. Each
/// gets a twin without that boundary, woken by its literals anywhere (one
/// Aho-Corasick pass) and tried anchored where a literal starts: the twin
/// reports under the detector's own name, and a match both find is one
/// finding once overlaps are resolved. Literals of two letters (`SK`,
/// `AC`) are too common inside words to wake a detector anywhere. The pass
/// is case-sensitive, as the secrets' formats are.
pub(super) fn glued_secrets(detectors: &mut Vec<Detector>) -> Result<Option<GluedAnchors>, String> {
    let mut anchors: Vec<String> = Vec::new();
    let mut owner: Vec<u16> = Vec::new();
    // The shortest run of word-class bytes a glued twin's match makes (with
    // the word character before it); `None` once a twin can match another
    // byte, which leaves the pass ungated.
    let mut run: Option<usize> = Some(usize::MAX);
    for s in SPECS {
        if s.category != Category::Secret {
            continue;
        }
        let (flags, body) = match s.pattern.strip_prefix("(?i)") {
            Some(rest) => ("(?i)", rest),
            None => ("", s.pattern),
        };
        if !body.starts_with(r"\b") {
            continue;
        }
        if !flags.is_empty() {
            // A case-insensitive secret would need a case-insensitive pass.
            continue;
        }
        // Each trigger literal in the case the pattern spells it (the
        // triggers are lower case; the pass is case-sensitive, which keeps
        // it on the SIMD searcher): found in the pattern's text, or, where
        // the pattern spells it through a class or an alternation
        // (`gh[us]_`, `xox[baprs]-`), lower case as the pattern writes it.
        let text = body.replace('\\', "");
        let lower = text.to_ascii_lowercase();
        let lits: Vec<String> = s
            .triggers
            .iter()
            .flat_map(|t| match t {
                detectors::Trigger::Word(l) => l.to_vec(),
                detectors::Trigger::WordThen(l, _) | detectors::Trigger::WordExact(l, _) => {
                    l.to_vec()
                }
                _ => Vec::new(),
            })
            .filter(|l| l.len() >= 3)
            .map(|l| match lower.find(l) {
                Some(at) => text[at..at + l.len()].to_owned(),
                None => l.to_owned(),
            })
            .collect();
        if lits.is_empty() {
            continue;
        }
        // Every alternative loses its leading boundary.
        let unglued = format!("{flags}{}", body[2..].replace(r"|\b", "|"));
        let hir = regex_syntax::Parser::new()
            .parse(&ascii_pattern(&unglued))
            .map_err(|e| format!("detector {}: {e}", s.name))?;
        // The run gate reads the token itself; the twin also takes a
        // character glued after it (see `tail_glued`).
        let twin = tail_glued(&unglued).unwrap_or(unglued);
        let compiled = compile(s.name, &ascii_pattern(&twin))?;
        if compiled.2.is_none() {
            continue;
        }
        run = match (run, hir.properties().minimum_len()) {
            (Some(r), Some(min)) if run_bytes_only(&hir) => Some(r.min(min + 1)),
            _ => None,
        };
        let idx = detectors.len() as u16;
        detectors.push(Detector::builtin(s, compiled, true));
        for l in lits {
            anchors.push(l);
            owner.push(idx);
        }
    }
    if anchors.is_empty() {
        return Ok(None);
    }
    Ok(Some(GluedAnchors {
        packed: aho_corasick::packed::Searcher::new(anchors.iter()),
        ac: AhoCorasick::builder()
            .build(&anchors)
            .map_err(|e| e.to_string())?,
        lits: anchors,
        owner,
        run: run.unwrap_or(0),
    }))
}

/// A secret whose format ends in a run of one class (`AKIA[0-9A-Z]{16}\b`)
/// followed by a word character outside that class (`AKIA…EXAMPLEx`,
/// `ghp_…_`) fails the final boundary, yet a reader sees the token whole.
/// The pattern is rewritten to end where the next character is outside the
/// run's class instead, the token captured as group 1: a longer run of the
/// same class is still a different token, not this one, unless it is the
/// same kind of token glued after it (`ghp_…ghp_…`). `None` for a
/// pattern of another shape (a capture group already, an alternation at
/// the top level, or no class run before its final boundary).
pub(super) fn tail_glued(pattern: &str) -> Option<String> {
    let (flags, body) = match pattern.strip_prefix("(?i)") {
        Some(rest) => ("(?i)", rest),
        None => ("", pattern),
    };
    let token = body.strip_suffix(r"\b")?;
    let quantified = token.strip_suffix('}')?;
    let class = quantified[..quantified.rfind('{')?].strip_suffix(']')?;
    let open = class.rfind('[')?;
    let inner = &class[open + 1..];
    // What the token begins with (`ghp_`, `(?:AKIA|ASIA|…)`): a second
    // token glued right after the first (`ghp_…ghp_…`) ends the first too.
    let prefix = token[..open].trim_start_matches(r"\b");
    let next = if prefix.is_empty() || prefix.contains('{') {
        String::new()
    } else {
        format!("|{prefix}")
    };
    if inner.is_empty() || inner.starts_with('^') || inner.contains('[') {
        return None;
    }
    // No group of its own, no alternation outside a group.
    let mut depth = 0i32;
    let mut bytes = body.bytes().peekable();
    let mut escaped = false;
    while let Some(b) = bytes.next() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'(' if bytes.peek() != Some(&b'?') => return None,
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'|' if depth == 0 => return None,
            _ => {}
        }
    }
    Some(format!("{flags}({token})(?:[^{inner}]|${next})"))
}

/// Whether every byte a pattern can match is a letter, a digit or one of
/// `-._=` (the prefilter's `word` class; look-arounds match no byte).
fn run_bytes_only(hir: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    let byte = |b: u32| {
        b < 0x80
            && (u8::try_from(b).is_ok_and(|b| b.is_ascii_alphanumeric() || b"-._=".contains(&b)))
    };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(l) => l.0.iter().all(|&b| byte(b.into())),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .all(|r| (r.end() as u32) < 0x80 && (r.start() as u32..=r.end() as u32).all(byte)),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .all(|r| (r.start() as u32..=r.end() as u32).all(byte)),
        HirKind::Repetition(r) => run_bytes_only(&r.sub),
        HirKind::Capture(c) => run_bytes_only(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().all(run_bytes_only),
    }
}
