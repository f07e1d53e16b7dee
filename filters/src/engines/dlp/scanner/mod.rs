//! The scanner: the detector library (built-in and custom) compiled once,
//! and the scan of one text — prefilter candidates, confirming regexes in
//! windows around them, the normalised view, overlaps resolved.

use std::collections::HashSet;

use aho_corasick::AhoCorasick;
use regex_automata::meta::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input};

use super::detectors::{self, Category, SPECS};
use super::prefilter::{Cand, Prefilter, Seen, DIGIT_GROUP};
use super::{encoded, grouped, normalise};

mod edges;
mod glued;
mod memo;
mod starts;
use glued::{glued_secrets, tail_glued, GluedAnchors};

/// One detector ready to run.
pub struct Detector {
    pub name: String,
    pub category: Category,
    regex: Regex,
    /// The pattern has a capture group; group 1 is the finding.
    group: bool,
    validate: Option<fn(&str) -> bool>,
    /// Longest possible match in bytes, when bounded.
    max_len: Option<usize>,
    /// Every match begins where one of its candidates begins (a `\b` and
    /// one of its word anchors): each candidate is tried with one anchored
    /// search instead of a window.
    at_anchor: bool,
    /// Exact-match dictionary of SHA-256 hex digests of lower-cased tokens.
    dictionary: Option<HashSet<String>>,
    /// Its pattern reads the token glued to a word (see [`edges`]): a
    /// match is also asked whether its glue stands ([`edges::glue_ok`]).
    glued: bool,
}

/// A match inside one string (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: usize,
    pub start: usize,
    pub end: usize,
}

/// Custom detectors' anchors and keywords: found anywhere, any case.
struct CustomAnchors {
    ac: AhoCorasick,
    owner: Vec<u16>,
}

pub struct Scanner {
    /// Secrets glued to a word character before them (see `glued_secrets`).
    glued: Option<GluedAnchors>,
    /// Fixed once built: the memo's "clean" holds only for these.
    pub(in crate::engines::dlp) detectors: Vec<Detector>,
    pre: Prefilter,
    custom: Option<CustomAnchors>,
    /// Detectors that run on every string (no usable anchor).
    pub(super) always: Vec<usize>,
    /// The digit detectors and the windows each searches.
    digit_set: Option<Vec<DigitSearch>>,
    /// All of their patterns as one search, and their longest match (see
    /// [`starts`]).
    digit_starts: Option<(Regex, usize)>,
    /// Short texts already scanned clean (see [`memo`]).
    memo: memo::Memo,
}

impl Detector {
    /// Built-in detector `s` with its compiled pattern (see [`compile`]).
    fn builtin(
        s: &detectors::Spec,
        (regex, group, max_len): (Regex, bool, Option<usize>),
        at_anchor: bool,
    ) -> Detector {
        Detector {
            name: s.name.to_owned(),
            category: s.category,
            regex,
            group,
            validate: s.validate,
            max_len,
            at_anchor,
            dictionary: None,
            glued: false,
        }
    }
}

fn compile(name: &str, pattern: &str) -> Result<(Regex, bool, Option<usize>), String> {
    let regex = Regex::new(pattern).map_err(|e| format!("detector {name}: {e}"))?;
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("detector {name}: {e}"))?;
    let max_len = hir.properties().maximum_len();
    let group = regex
        .group_info()
        .group_len(regex_automata::PatternID::ZERO)
        > 1;
    Ok((regex, group, max_len))
}

/// A built-in pattern with ASCII digits and word boundaries: what the
/// validators and the prefilter understand (a Unicode digit is not a card
/// digit).
/// Where a detector woken by a run of digits searches: around each run of
/// at least `need` digits, `reach` bytes past it, windows closer than
/// `gap` searched as one.
#[derive(Debug, Clone, Copy)]
pub(super) struct DigitSearch {
    pub(super) det: usize,
    pub(super) need: usize,
    pub(super) reach: usize,
    pub(super) gap: usize,
    /// No finding of it holds a digit of a run [`edges::Glue::sealed`]
    /// says is sealed in hex: such runs wake it nowhere.
    pub(super) sealed: bool,
}

/// How close two windows of one digit detector are searched as one:
/// starting a search costs more than reading a few bytes that hold no
/// match.
const JOIN_GAP: usize = 128;

fn ascii_pattern(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)").replace(r"\d", "[0-9]")
}

/// Bytes a JSON escape other than `\u`/`\/` stands for: an anchor holding
/// one may not appear verbatim in the raw message.
fn escapable(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

impl Scanner {
    /// The built-in library plus the bundle's custom detectors.
    pub fn new(custom: &[warden_config::guards::CustomDetector]) -> Result<Scanner, String> {
        // The fold table is built with the first scanner (a bundle load),
        // not by the first message that needs it.
        super::normalise::warm();
        let mut detectors = Vec::new();
        // Each built-in detector's pattern as compiled.
        let mut sources = Vec::new();
        let mut pre = Prefilter::new();
        let mut always = Vec::new();
        // Each built-in pattern as it is run: secrets end where their last
        // run ends (`tail_glued`), the others read their token glued to a
        // word (`edges`).
        for s in SPECS {
            let glued = match s.category {
                Category::Secret => None,
                _ => edges::pattern(s.name),
            };
            let pattern = match (s.category, glued) {
                (Category::Secret, _) => tail_glued(s.pattern),
                (_, g) => g.map(str::to_owned),
            };
            let source = pattern.as_deref().unwrap_or(s.pattern);
            let pattern = ascii_pattern(source);
            let compiled = compile(s.name, &pattern)?;
            sources.push(pattern);
            let idx = detectors.len() as u16;
            for t in s.triggers {
                pre.add(idx, t)
                    .map_err(|e| format!("detector {}: {e}", s.name))?;
            }
            let words_only = s.triggers.iter().all(|t| {
                matches!(
                    t,
                    detectors::Trigger::Word(_)
                        | detectors::Trigger::WordThen(..)
                        | detectors::Trigger::WordExact(..)
                )
            });
            // Only bounded patterns: an anchored attempt then costs at most
            // the longest match, so a string packed with anchors (`sk-sk-sk-…`)
            // stays linear. Unbounded ones use merged windows.
            let at_anchor = words_only
                && compiled.2.is_some()
                && source.trim_start_matches("(?i)").starts_with(r"\b");
            let mut d = Detector::builtin(s, compiled, at_anchor);
            d.glued = glued.is_some();
            detectors.push(d);
        }
        pre.finish()?;
        let glued = glued_secrets(&mut detectors)?;
        // Long runs wake the glued pass and the decoding of encoded text
        // (base64 and hex runs are runs of word bytes, `+` and `/` aside).
        pre.watch_runs(match &glued {
            Some(g) if g.run != 0 => g.run.min(encoded::MIN_RUN),
            _ => encoded::MIN_RUN,
        });
        let counts = pre.digit_counts();
        // The reach of the windows all digit detectors once shared: their
        // longest match (an unbounded pattern, which none of the built-in
        // ones is, reaches over the whole text).
        let widest = counts
            .iter()
            .map(|&(d, _)| detectors[d as usize].max_len.unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        let group: Vec<DigitSearch> = counts
            .iter()
            .map(|&(d, need)| {
                let d = d as usize;
                let own_run = SPECS.get(d).is_some_and(|s| {
                    s.triggers
                        .iter()
                        .all(|t| matches!(t, detectors::Trigger::Digits(_)))
                });
                let sealed = detectors[d].glued
                    && !tests_wake_sealed()
                    && edges::sealed_in_hex(&detectors[d].name, &sources[d]);
                match (own_run, detectors[d].max_len) {
                    // A match holds `need` digits of its run and is no
                    // longer than the longest match: it reaches past the
                    // run by at most the difference.
                    (true, Some(n)) => DigitSearch {
                        det: d,
                        need,
                        reach: n.saturating_sub(need),
                        gap: JOIN_GAP,
                        sealed,
                    },
                    // A detector woken by other triggers too (an IBAN: its
                    // account part's letters break the run of digits) need
                    // not hold its run: it searches the windows every
                    // detector searched before, around every run.
                    _ => DigitSearch {
                        det: d,
                        need: 0,
                        reach: widest,
                        gap: 0,
                        sealed: false,
                    },
                }
            })
            .collect();
        // The set's search must find where any of them starts, so each is
        // in it as it is run alone; the window of one with no bound (none
        // built in) would be the whole text, where the set is no help.
        let digit_starts = if group.is_empty() || widest == usize::MAX {
            None
        } else {
            let pats: Vec<&str> = group
                .iter()
                .filter(|g| g.need > 0)
                .map(|g| sources[g.det].as_str())
                .collect();
            let set = Regex::new_many(&pats).map_err(|e| format!("digit detectors: {e}"))?;
            Some((set, widest))
        };
        let digit_set = (!group.is_empty()).then_some(group);
        let mut anchors: Vec<String> = Vec::new();
        let mut owner = Vec::new();
        for c in custom {
            let idx = detectors.len();
            let pattern = match (&c.regex, c.keywords.is_empty()) {
                (Some(r), _) => r.clone(),
                (None, false) => {
                    let alts: Vec<String> = c.keywords.iter().map(|k| regex::escape(k)).collect();
                    edges::keywords(&alts)
                }
                (None, true) => r"[A-Za-z0-9_-]{4,}".to_owned(),
            };
            let (regex, group, max_len) = compile(&format!("custom {}", c.name), &pattern)?;
            let lits: Vec<&String> = c.anchors.iter().chain(c.keywords.iter()).collect();
            let dictionary = !c.dictionary_sha256.is_empty();
            if lits.is_empty() || dictionary || lits.iter().any(|l| l.is_empty() || escapable(l)) {
                always.push(idx);
            } else {
                for l in lits {
                    anchors.push(l.clone());
                    owner.push(idx as u16);
                }
            }
            detectors.push(Detector {
                name: c.name.clone(),
                category: if c.secret {
                    Category::Secret
                } else {
                    Category::Pii
                },
                regex,
                group,
                validate: None,
                max_len,
                // Keyword detectors read the byte before their keyword
                // (see `edges::keywords`): searched in windows around it.
                at_anchor: false,
                dictionary: dictionary.then(|| {
                    c.dictionary_sha256
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect()
                }),
                glued: false,
            });
        }
        let custom = if anchors.is_empty() {
            None
        } else {
            Some(CustomAnchors {
                ac: AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&anchors)
                    .map_err(|e| e.to_string())?,
                owner,
            })
        };
        Ok(Scanner {
            detectors,
            pre,
            custom,
            glued,
            always,
            digit_set,
            digit_starts,
            memo: memo::Memo::new(),
        })
    }

    /// Candidates in `hay`; whether it holds a `\u` or `\/` escape, and
    /// non-ASCII bytes.
    pub(super) fn candidates(&self, hay: &[u8], out: &mut Vec<Cand>) -> Seen {
        let seen = self.pre.run(hay, out);
        if let Some(g) = &self.glued {
            if seen.long_run || g.run == 0 {
                g.candidates(hay, out);
            }
        }
        if let Some(c) = &self.custom {
            for m in c.ac.find_overlapping_iter(hay) {
                out.push(Cand {
                    det: c.owner[m.pattern().as_usize()],
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
        seen
    }

    /// Whether `raw`, passed through the prefilter with `seen`, may hold
    /// text under an encoding (see [`encoded`]): the prefilter saw a long
    /// run of word bytes, or there is a `%` or a long run of base64 with a
    /// `+` or `/` in it.
    pub(crate) fn may_encode(&self, seen: &Seen, raw: &[u8]) -> bool {
        self.encodings(seen, raw).is_some_and(|d| d.readable)
    }

    /// What the runs of raw JSON message `raw` decode to, when the
    /// prefilter saw a run, a `%` or a run broken by `+` or `/` (see
    /// [`Scanner::may_encode`]); the scan of its strings reads them from
    /// here rather than decoding again.
    pub(crate) fn encodings<'a>(
        &self,
        seen: &Seen,
        raw: &'a [u8],
    ) -> Option<encoded::Decodings<'a>> {
        (seen.long_run || memchr::memchr(b'%', raw).is_some() || encoded::slashed_run(raw))
            .then(|| encoded::Decodings::of_json(raw))
    }

    /// Whether raw JSON message `raw`, passed through the prefilter with
    /// `seen`, may hold groups to read joined (see [`grouped`]).
    pub(crate) fn may_be_grouped(&self, seen: &Seen, raw: &[u8]) -> bool {
        (seen.grouped || seen.long_run || encoded::slashed_run(raw))
            && grouped::may_be_grouped_json(raw)
    }

    /// The detectors, in the order a [`Hit`]'s `detector` counts.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Every validated match in one (unescaped) string: in the string as it
    /// is and in its normalised view, mapped back to the string's bytes.
    pub fn scan_str(&self, s: &str, out: &mut Vec<Hit>) {
        self.remembered(s, memo::Scan::Resolved, out, |out| {
            let mut cands = Vec::new();
            let seen = self.candidates(s.as_bytes(), &mut cands);
            self.scan_with(s, &mut cands, out, Gate::of(&seen, s.as_bytes()));
        });
    }

    /// `scan` of `s` into `out`, skipped when the memo holds `s` as clean
    /// under it, and `s` remembered when it is found clean. Only for a scan
    /// into an empty `out` (the scans resolve what `out` already holds).
    fn remembered(
        &self,
        s: &str,
        how: memo::Scan,
        out: &mut Vec<Hit>,
        scan: impl FnOnce(&mut Vec<Hit>),
    ) {
        let key = if out.is_empty() {
            self.memo.key(s, how)
        } else {
            None
        };
        if key.is_some_and(|k| self.memo.clean(k)) {
            return;
        }
        scan(out);
        if let Some(k) = key.filter(|_| out.is_empty()) {
            self.memo.remember(k);
        }
    }

    /// [`Scanner::scan_str`] keeping the matches of different detectors
    /// that overlap (a card inside an email or a password's value): the
    /// caller decides which apply before any is dropped.
    pub(crate) fn scan_str_all(&self, s: &str, out: &mut Vec<Hit>) {
        self.scan_str_all_with(s, out, None);
    }

    /// [`Scanner::scan_str_all`] of a string of a message whose runs
    /// `memo` holds decoded.
    pub(crate) fn scan_str_all_with(
        &self,
        s: &str,
        out: &mut Vec<Hit>,
        memo: Option<&encoded::Decodings<'_>>,
    ) {
        self.remembered(s, memo::Scan::All, out, |out| {
            let mut cands = Vec::new();
            let seen = self.candidates(s.as_bytes(), &mut cands);
            self.scan_with_all(s, &mut cands, out, Gate::of(&seen, s.as_bytes()), memo);
        });
    }

    /// [`Scanner::scan_with`] keeping overlapping matches of different
    /// detectors (one detector's matches are still one).
    pub(crate) fn scan_with_all(
        &self,
        s: &str,
        cands: &mut [Cand],
        out: &mut Vec<Hit>,
        gate: Gate,
        memo: Option<&encoded::Decodings<'_>>,
    ) {
        self.scan_with_all_from(s, cands, out, gate, memo, 0);
    }

    /// [`Scanner::scan_with_all`] of the matches that end past byte
    /// `floor` of `s` only (a character's first byte): what a stream's
    /// earlier text joined to a new message holds that reaches into the
    /// message. Work whose findings all end at or before `floor` is
    /// skipped: a detector's windows that end there, the runs that do
    /// (a run's finding is the whole run), the joined groups' runs whose
    /// bytes do. Matches ending at or before `floor` are dropped before
    /// one detector's overlapping matches are resolved, so one of them
    /// never hides one that reaches past it. `out` must be empty.
    fn scan_with_all_from(
        &self,
        s: &str,
        cands: &mut [Cand],
        out: &mut Vec<Hit>,
        gate: Gate,
        memo: Option<&encoded::Decodings<'_>>,
        floor: usize,
    ) {
        // (Tests compare it with the same scan skipping nothing.)
        let skip = if tests_skip_nothing() { 0 } else { floor };
        self.confirm_from(s, cands, out, skip);
        self.readings(s, normalise::view(s).as_ref(), out, 0, gate, memo, skip);
        if floor > 0 {
            out.retain(|h| h.end > floor);
        }
        resolve_within_detectors(&self.detectors, out);
    }

    /// [`Scanner::scan_str_all`] of the matches that end past byte `floor`
    /// of `s` (see [`Scanner::scan_with_all_from`]).
    pub(crate) fn scan_str_all_from(&self, s: &str, out: &mut Vec<Hit>, floor: usize) {
        if floor == 0 {
            return self.scan_str_all(s, out);
        }
        let mut cands = Vec::new();
        let seen = self.candidates(s.as_bytes(), &mut cands);
        self.scan_with_all_from(
            s,
            &mut cands,
            out,
            Gate::of(&seen, s.as_bytes()),
            None,
            floor,
        );
    }

    /// The matches in what a reader makes of `s` besides its bytes, as
    /// spans of `s`: its normalised `view`, its spaced-out words read
    /// whole (in `s` and in the view), and the text encoded in it
    /// (`depth` encodings down), each as far as `gate` lets it.
    #[allow(clippy::too_many_arguments)] // each reading's own context, passed down as is
    fn readings(
        &self,
        s: &str,
        view: Option<&normalise::View>,
        out: &mut Vec<Hit>,
        depth: u8,
        gate: Gate,
        memo: Option<&encoded::Decodings<'_>>,
        floor: usize,
    ) {
        if let Some(view) = view {
            // The view read as the text is: its spaced-out words (always),
            // and its groups and encoded text as far as its own gate lets
            // them (`ＡＫＩＡ ＩＯＳＦ …`, base64 cut by a zero-width space
            // or written full-width).
            // (What the view's first `vf` bytes hold ends by `floor`.)
            let vf = if floor > 0 {
                view.bytes_ending_by(floor)
            } else {
                0
            };
            let mut inner = Vec::new();
            let seen = self.scan_as_is_from(&view.text, &mut inner, vf);
            let own = Gate {
                spaced: true,
                ..Gate::of(&seen, view.text.as_bytes())
            };
            self.readings(&view.text, None, &mut inner, depth, own, None, vf);
            mapped(out, inner, |a, b| view.original(s, a, b));
        }
        if let Some(sp) = gate.spaced.then(|| normalise::spaced(s)).flatten() {
            self.view_matches(s, &sp, out);
        }
        if gate.encoded {
            // A run ending at or before `floor` is a finding there, if any.
            self.encoded_matches(s, out, depth, memo, |_, end| end <= floor);
        }
        if gate.grouped && depth < encoded::MAX_DEPTH {
            let views = grouped::views(s);
            // The runs of `s` just read for what they encode. A run of a
            // view that is one of them, byte for byte at the same place,
            // reads as it did there (a run is a finding whole), one
            // encoding less deep: only the runs the joined groups make or
            // change are read again.
            let read = if gate.encoded && !views.is_empty() && !tests_read_all() {
                encoded::run_spans(s)
            } else {
                Vec::new()
            };
            for g in views {
                // The joined groups as they are and for what they encode.
                let mut inner = Vec::new();
                let gf = if floor > 0 { g.bytes_before(floor) } else { 0 };
                self.scan_as_is_from(&g.text, &mut inner, gf);
                let unchanged = |a: usize, b: usize| {
                    g.original_tight(s, a, b).1 <= floor
                        || g.unmoved(a, b)
                            .is_some_and(|o| read.binary_search(&(o, o + b - a)).is_ok())
                };
                self.encoded_matches(&g.text, &mut inner, depth + 1, memo, unchanged);
                mapped(out, inner, |a, b| g.original_tight(s, a, b));
            }
        }
    }

    /// The matches in the text encoded inside `s` (`depth` encodings
    /// down), as spans of `s`: see [`encoded`].
    /// Runs `memo` holds are read from it.
    /// Runs `read` names (`(start, end)`) are passed over.
    fn encoded_matches(
        &self,
        s: &str,
        out: &mut Vec<Hit>,
        depth: u8,
        memo: Option<&encoded::Decodings<'_>>,
        read: impl Fn(usize, usize) -> bool,
    ) {
        if depth >= encoded::MAX_DEPTH {
            return;
        }
        encoded::each(s, memo, read, |d| {
            let mut found = Vec::new();
            let seen = self.scan_as_is(&d.text, &mut found);
            let view = normalise::view(&d.text);
            let gate = Gate::of(&seen, d.text.as_bytes());
            self.readings(&d.text, view.as_ref(), &mut found, depth + 1, gate, None, 0);
            mapped(out, found, |a, b| d.original(a, b));
        });
    }

    /// The matches in binary content (a base64 `data` or `blob`) whose
    /// bytes hold text (an image's text chunk, a blob that is a text
    /// file whatever its `mimeType`): each covers the whole member.
    pub(crate) fn binary_matches(&self, b64: &str, out: &mut Vec<Hit>) {
        let mut seen = HashSet::new();
        for text in encoded::base64_readable(b64.as_bytes()) {
            let mut found = Vec::new();
            self.scan_str_all(&text, &mut found);
            for h in found {
                if seen.insert(h.detector) {
                    out.push(Hit {
                        detector: h.detector,
                        start: 0,
                        end: b64.len(),
                    });
                }
            }
        }
    }

    /// The matches in `view` (of `s`), as spans of `s`.
    fn view_matches(&self, s: &str, view: &normalise::View, out: &mut Vec<Hit>) {
        let mut seen = Vec::new();
        self.scan_as_is(&view.text, &mut seen);
        mapped(out, seen, |a, b| view.original(s, a, b));
    }

    /// Every validated match in `s` as it is (no normalised view), before
    /// overlaps are resolved.
    fn scan_as_is(&self, s: &str, out: &mut Vec<Hit>) -> Seen {
        self.scan_as_is_from(s, out, 0)
    }

    /// [`Scanner::scan_as_is`], a detector's windows that end at or before
    /// byte `floor` passed over (see [`Scanner::scan_with_all_from`]).
    fn scan_as_is_from(&self, s: &str, out: &mut Vec<Hit>, floor: usize) -> Seen {
        let mut cands = Vec::new();
        let seen = self.candidates(s.as_bytes(), &mut cands);
        self.confirm_from(s, &mut cands, out, floor);
        seen
    }

    /// `scan_str` with the candidates in `s` already found.
    ///
    /// A match in the normalised view covers the original from its first
    /// character to its last, the invisible characters in between included.
    /// Matches made only of characters the view drops (runs of zero-width
    /// or tag characters) cannot collide with a match of the view: they are
    /// kept beside the others, and may lie inside one of them.
    pub(super) fn scan_with(&self, s: &str, cands: &mut [Cand], out: &mut Vec<Hit>, gate: Gate) {
        let view = normalise::view(s);
        let Some(view) = view else {
            self.confirm(s, cands, out);
            let before = out.len();
            self.readings(s, None, out, 0, gate, None, 0);
            if out.len() > before {
                resolve_overlaps(&self.detectors, out);
            }
            return;
        };
        self.confirm_raw(s, cands, out);
        self.readings(s, Some(&view), out, 0, gate, None, 0);
        let (invisible, mut kept): (Vec<Hit>, Vec<Hit>) = out
            .drain(..)
            .partition(|h| normalise::invisible(&s[h.start..h.end]));
        if kept.len() > 1 {
            resolve_overlaps(&self.detectors, &mut kept);
        }
        kept.extend(invisible);
        kept.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        *out = kept;
    }

    /// The window a candidate asks detector `d`'s regex to search.
    fn window(d: &Detector, c: &Cand, len: usize) -> (usize, usize) {
        // An unbounded pattern is searched over the whole text: a fixed
        // reach misses a match padded past it (a 5 KB JWT, a key's JSON with
        // 300 spaces before its anchor). The windows of one detector merge,
        // so that is still one pass per detector.
        let (behind, ahead) = match d.max_len {
            Some(n) => (n, n),
            None => (usize::MAX, usize::MAX),
        };
        (
            c.start.saturating_sub(behind),
            c.end.saturating_add(ahead).min(len),
        )
    }

    /// Runs the triggered detectors around their candidates (windows of one
    /// detector merged), then the always-on ones; resolves overlaps.
    fn confirm(&self, s: &str, cands: &mut [Cand], out: &mut Vec<Hit>) {
        self.confirm_raw(s, cands, out);
        if out.len() > 1 {
            resolve_overlaps(&self.detectors, out);
        }
    }

    /// `confirm` before overlaps are resolved.
    fn confirm_raw(&self, s: &str, cands: &mut [Cand], out: &mut Vec<Hit>) {
        self.confirm_from(s, cands, out, 0);
    }

    /// [`Scanner::confirm_raw`] but for the windows of bounded detectors
    /// that end at or before byte `floor`: their matches end there too
    /// (a bounded detector's window reaches its longest match past its
    /// candidate, and a search in it ends inside it).
    fn confirm_from(&self, s: &str, cands: &mut [Cand], out: &mut Vec<Hit>, floor: usize) {
        let len = s.len();
        // Whether a bounded detector's search in a window ending at `w1`
        // can find nothing past `floor`.
        let below = |det: usize, w1: usize| {
            floor > 0 && w1 <= floor && self.detectors[det].max_len.is_some()
        };
        let glue = edges::Glue::new(s);
        cands.sort_unstable_by_key(|c| (c.det, c.start));
        let mut i = 0;
        while i < cands.len() {
            let det = cands[i].det;
            if det != DIGIT_GROUP && self.detectors[det as usize].at_anchor {
                let start = cands[i].start;
                i += 1;
                while cands
                    .get(i)
                    .is_some_and(|c| c.det == det && c.start == start)
                {
                    i += 1;
                }
                let reach = self.detectors[det as usize]
                    .max_len
                    .map_or(len, |n| start.saturating_add(n));
                if !below(det as usize, reach) {
                    self.run_at(det as usize, s, start, &glue, out);
                }
                continue;
            }
            if det == DIGIT_GROUP {
                let from = i;
                while cands.get(i).is_some_and(|c| c.det == DIGIT_GROUP) {
                    i += 1;
                }
                if let Some(group) = &self.digit_set {
                    self.confirm_digits(s, &cands[from..i], group, &glue, out, floor);
                }
                continue;
            }
            let window = |c: &Cand| Self::window(&self.detectors[det as usize], c, len);
            let (w0, mut w1) = window(&cands[i]);
            i += 1;
            while let Some(c) = cands.get(i).filter(|c| c.det == det) {
                let (a, b) = window(c);
                // Windows closer than JOIN_GAP are searched as one (a
                // search costs more to begin than a few bytes cost to
                // read): no match lies in the bytes between them, each
                // holding its candidate. Not one the floor lets pass.
                if a > w1 && (a > w1.saturating_add(JOIN_GAP) || below(det as usize, w1)) {
                    break;
                }
                w1 = w1.max(b);
                i += 1;
            }
            if !self.detectors[det as usize].at_anchor && !below(det as usize, w1) {
                self.run_window(det as usize, s, w0, w1, &glue, out);
            }
        }
        for &det in &self.always {
            self.run_window(det, s, 0, len, &glue, out);
        }
    }

    /// The digit detectors around the prefilter's digit runs `runs` (in
    /// order of their start). A match of a detector woken only by digits
    /// holds a run of at least as many digits as wake it, and is no longer
    /// than its longest match: so it searches only the windows that reach
    /// that far around the runs long enough for it, merged. Its findings
    /// are those of a search over the whole text: no match lies across two
    /// of its windows, and the search in a window begins where the
    /// whole-text search would resume. One woken by other triggers too
    /// searches every window all of them searched before. (The windows of one reach for
    /// all of them, tried by the longest run in each, had every detector
    /// search most of a text of hex digests, in which runs of three or
    /// four digits are everywhere.) Each detector is run on its own: one
    /// search over the set of them in overlapping mode thrashed its lazy
    /// DFA on long windows (hex digests: a second for 256 KiB) and cost
    /// more than these searches on short ones too (measured).
    fn confirm_digits(
        &self,
        s: &str,
        runs: &[Cand],
        group: &[DigitSearch],
        glue: &edges::Glue<'_>,
        out: &mut Vec<Hit>,
        floor: usize,
    ) {
        let len = s.len();
        let digits: Vec<usize> = runs
            .iter()
            .map(|c| {
                let b = s.as_bytes();
                super::prefilter::most_digits_in_a_run(&b[c.start.min(len)..c.end.min(len)])
            })
            .collect();
        // Runs sealed in hex (a digest's digits between two of its
        // letters): only the detectors that may find something there
        // search around them.
        let sealed: Vec<bool> = if group.iter().any(|g| g.sealed) {
            runs.iter()
                .map(|c| glue.sealed(c.start.min(len), c.end.min(len)))
                .collect()
        } else {
            vec![false; runs.len()]
        };
        let mut starts = self
            .digit_starts
            .as_ref()
            .map(|(set, longest)| starts::Starts::new(set, *longest, s.as_bytes()));
        for g in group {
            // A bounded detector's window ending at or before `floor` holds
            // no match past it.
            let below =
                |w1: usize| floor > 0 && w1 <= floor && self.detectors[g.det].max_len.is_some();
            let mut window: Option<(usize, usize)> = None;
            let woken = runs
                .iter()
                .zip(&digits)
                .zip(&sealed)
                .filter(|((_, &n), &shut)| n >= g.need && !(shut && g.sealed))
                .map(|((c, _), _)| c);
            for c in woken {
                let (a, b) = (
                    c.start.saturating_sub(g.reach),
                    c.end.saturating_add(g.reach).min(len),
                );
                match &mut window {
                    Some((_, w1)) if a <= w1.saturating_add(g.gap) => *w1 = (*w1).max(b),
                    _ => {
                        if let Some((w0, w1)) = window.replace((a, b)) {
                            if !below(w1) {
                                let st = starts.as_mut().filter(|_| g.need > 0);
                                self.search_window(g.det, s, (w0, w1), glue, st, out);
                            }
                        }
                    }
                }
            }
            if let Some((w0, w1)) = window.filter(|&(_, w1)| !below(w1)) {
                let st = starts.as_mut().filter(|_| g.need > 0);
                self.search_window(g.det, s, (w0, w1), glue, st, out);
            }
        }
    }

    /// The match of detector `det` beginning at `start`, if any.
    fn run_at(
        &self,
        det: usize,
        s: &str,
        start: usize,
        glue: &edges::Glue<'_>,
        out: &mut Vec<Hit>,
    ) {
        let d = &self.detectors[det];
        let mut caps = d.group.then(|| d.regex.create_captures());
        let input = Input::new(s).range(start..s.len()).anchored(Anchored::Yes);
        if let Some((m, group)) = first_match(d, &input, &mut caps) {
            self.accept(det, s, group.unwrap_or(m), glue, out);
        }
    }

    /// Validates one match and records it.
    fn accept(
        &self,
        det: usize,
        s: &str,
        span: regex_automata::Span,
        glue: &edges::Glue<'_>,
        out: &mut Vec<Hit>,
    ) {
        let d = &self.detectors[det];
        let text = &s[span.start..span.end];
        let ok = match (&d.dictionary, d.validate) {
            (Some(dict), _) => {
                use sha2::Digest;
                dict.contains(&hex::encode(sha2::Sha256::digest(
                    text.to_lowercase().as_bytes(),
                )))
            }
            (None, Some(v)) => v(text),
            (None, None) => true,
        };
        let ok = ok && (!d.glued || glue.ok(&d.name, span.start, span.end));
        if ok && span.end > span.start {
            out.push(Hit {
                detector: det,
                start: span.start,
                end: span.end,
            });
        }
    }

    /// Every validated match of detector `det` in `s[w0..w1]`, looking at the
    /// bytes around the window for boundaries; an unbounded match reaching
    /// the window's end is followed to its real end.
    fn run_window(
        &self,
        det: usize,
        s: &str,
        w0: usize,
        w1: usize,
        glue: &edges::Glue<'_>,
        out: &mut Vec<Hit>,
    ) {
        self.search_window(det, s, (w0, w1), glue, None, out);
    }

    /// [`run_window`](Self::run_window), each search begun where `starts`
    /// says a match of some digit detector may begin, and none where it
    /// says none can (see [`starts`]).
    fn search_window(
        &self,
        det: usize,
        s: &str,
        (w0, w1): (usize, usize),
        glue: &edges::Glue<'_>,
        mut starts: Option<&mut starts::Starts<'_>>,
        out: &mut Vec<Hit>,
    ) {
        let d = &self.detectors[det];
        let hay = s.as_bytes();
        let mut caps = None;
        let mut from = w0;
        // The next place a search may begin after `p` (a character's
        // first byte).
        let after = |p: usize| {
            let mut n = p + 1;
            while n < hay.len() && !s.is_char_boundary(n) {
                n += 1;
            }
            n
        };
        while from <= w1 {
            // Where the set says some digit detector's match begins far
            // into the window, this one's is tried there alone (anchored):
            // its leftmost match from `from` begins there or later, and
            // when none begins there the set is asked again from the next
            // place, rather than this pattern reading the rest of the
            // window (a glued number of another detector's every line of
            // hex digests). A start near `from` is searched from as
            // before: in a text dense in numbers each new question costs
            // more than the search it spares.
            let mut anchored = false;
            if let Some(st) = starts.as_deref_mut().filter(|st| st.worth_asking()) {
                match st.ask(from, w1) {
                    Some(p) => {
                        anchored = p >= from + starts::FAR;
                        from = p;
                    }
                    None => break,
                }
            }
            let caps = caps.get_or_insert_with(|| d.group.then(|| d.regex.create_captures()));
            let input = Input::new(hay).range(from..w1);
            let input = if anchored {
                input.anchored(Anchored::Yes)
            } else {
                input
            };
            let Some((mut m, mut group)) = first_match(d, &input, caps) else {
                if anchored {
                    from = after(from);
                    continue;
                }
                break;
            };
            if d.max_len.is_none() && m.end == w1 && w1 < hay.len() {
                let whole = Input::new(hay)
                    .range(m.start..hay.len())
                    .anchored(Anchored::Yes);
                if let Some((m2, g)) = first_match(d, &whole, caps) {
                    m.end = m2.end;
                    group = g;
                }
            }
            // The next search starts where the finding ends: a pattern that
            // reads one character past its token (`tail_glued`) leaves it to
            // begin the next.
            let (start, end) = (m.start, group.map_or(m.end, |g| g.end));
            let span = group.unwrap_or(m);
            self.accept(det, s, span, glue, out);
            from = if end > start { end } else { after(end) };
        }
    }
}

reference_switch! {
    /// Tests: the views read every run again, as before they passed over
    /// the runs the text read (the reference they are held to).
    pub(super) static READ_ALL;
    fn tests_read_all;
}

reference_switch! {
    /// Tests: a scan from a floor skips nothing below it (the reference
    /// it is held to).
    pub(super) static SKIP_NOTHING;
    fn tests_skip_nothing;
}

reference_switch! {
    /// Tests: runs sealed in hex wake every digit detector (the reference
    /// the searches that pass them over are held to).
    pub(super) static WAKE_SEALED;
    fn tests_wake_sealed;
}

/// The first match of `d` in `input` and its group 1 (`caps` is `Some` for
/// patterns with a group).
fn first_match(
    d: &Detector,
    input: &Input<'_>,
    caps: &mut Option<Captures>,
) -> Option<(regex_automata::Span, Option<regex_automata::Span>)> {
    match caps {
        Some(c) => {
            d.regex.search_captures(input, c);
            c.get_match().map(|m| (m.span(), c.get_group(1)))
        }
        None => d.regex.search(input).map(|m| (m.span(), None)),
    }
}

/// Which of the costlier readings of a string may find anything, as the
/// prefilter saw it: a spaced-out word needs single characters close
/// together, encoded text a long run of word bytes, a `%`, or a long run
/// of base64 broken by `+` or `/` into short runs of word bytes. (The view of
/// a string with non-ASCII characters is always read for spaced-out
/// words: its letters are not ASCII ones to the prefilter.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gate {
    pub(crate) spaced: bool,
    pub(crate) encoded: bool,
    /// Groups to read joined (see [`grouped`]): letters and digits in
    /// groups at one period, or groups of base64 long enough to be runs.
    pub(crate) grouped: bool,
}

impl Gate {
    pub(crate) fn of(seen: &Seen, s: &[u8]) -> Gate {
        let encoded = seen.long_run || memchr::memchr(b'%', s).is_some() || encoded::slashed_run(s);
        Gate {
            spaced: seen.spaced,
            encoded,
            grouped: (seen.grouped || encoded) && grouped::may_be_grouped(s),
        }
    }
}

/// `found` (matches in another text) added to `out` as spans of this one,
/// through `to`, which maps a span of that text back.
fn mapped(out: &mut Vec<Hit>, found: Vec<Hit>, to: impl Fn(usize, usize) -> (usize, usize)) {
    out.extend(found.into_iter().map(|h| {
        let (start, end) = to(h.start, h.end);
        Hit {
            detector: h.detector,
            start,
            end,
        }
    }));
}

/// Overlapping matches of one detector (the same finding in the text and
/// in its view, or by a detector and its glued twin, which share its
/// name) as one: the longest.
fn resolve_within_detectors(detectors: &[Detector], out: &mut Vec<Hit>) {
    let name = |h: &Hit| detectors[h.detector].name.as_str();
    // The longest first, as overlaps across detectors were resolved.
    out.sort_by(|a, b| {
        (name(a), std::cmp::Reverse(a.end - a.start), a.start).cmp(&(
            name(b),
            std::cmp::Reverse(b.end - b.start),
            b.start,
        ))
    });
    let mut kept: Vec<Hit> = Vec::with_capacity(out.len());
    let mut taken = Taken::default();
    let mut current = "";
    for h in out.drain(..) {
        if name(&h) != current {
            current = detectors[h.detector].name.as_str();
            taken = Taken::default();
        }
        if taken.claim(&h) {
            kept.push(h);
        }
    }
    kept.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    *out = kept;
}

/// Overlapping hits: secrets win over injection markers over personal data
/// (a password in a URL is not an e-mail address), then the longer.
fn resolve_overlaps(detectors: &[Detector], out: &mut Vec<Hit>) {
    let rank = |h: &Hit| match detectors[h.detector].category {
        Category::Secret => 0,
        Category::Injection => 1,
        Category::Pii => 2,
    };
    out.sort_by_key(|h| (rank(h), std::cmp::Reverse(h.end - h.start), h.start));
    let mut kept: Vec<Hit> = Vec::with_capacity(out.len());
    let mut taken = Taken::default();
    for h in out.drain(..) {
        if taken.claim(&h) {
            kept.push(h);
        }
    }
    kept.sort_by_key(|h| h.start);
    *out = kept;
}

/// Spans already kept, which never overlap one another: a hit is checked
/// against them in logarithmic time (a text packed with findings stays
/// linear-logarithmic, not quadratic).
#[derive(Default)]
struct Taken(std::collections::BTreeMap<usize, usize>);

impl Taken {
    /// Keeps `h`'s span unless it overlaps one already kept. Of kept spans
    /// starting before `h` ends, only the last can reach into it: they are
    /// disjoint, so their ends grow with their starts.
    fn claim(&mut self, h: &Hit) -> bool {
        let overlaps = self
            .0
            .range(..h.end)
            .next_back()
            .is_some_and(|(_, &end)| end > h.start);
        if !overlaps {
            self.0.insert(h.start, h.end);
        }
        !overlaps
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod edges_tests;
#[cfg(test)]
mod gates;
#[cfg(test)]
mod tests;
