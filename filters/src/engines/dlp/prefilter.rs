//! The prefilter: one pass over the bytes that finds every place where some
//! detector could match, so that confirming regexes run only on small windows
//! around those places and a clean message is judged without being parsed.
//!
//! The pass works on 64-byte blocks. For each block, SIMD compares (through
//! `wide`: AVX2 in x86-64-v3 builds, SSE2 otherwise) yield bit masks —
//! letters, digits, anchor bytes, dots and a handful of "special" bytes;
//! separators and backslashes only where needed — and everything after that
//! is bit arithmetic on those masks:
//!
//! - word starts are looked up in a 16384-bit filter keyed by their first three
//!   case-folded bytes; the few that pass are compared with the anchor
//!   literals hashed there;
//! - digit runs (digits joined by separators) are measured with popcounts and
//!   carried across blocks, in blocks whose digits could reach a threshold;
//! - special bytes (`@`, `+`, `:`, `=`, `!`, `<`, `#`, `\`, UTF-8 leads of
//!   zero-width and tag characters) get a short look around.
//!
//! It runs over raw JSON too: a JSON escape (`\n`, `\"` …) counts as a
//! separator, and `\u` or `\/` (which can hide anything) is reported so the
//! caller decodes and rescans the strings that hold one. Non-ASCII bytes
//! are reported too (their strings have a normalised view to scan).

use super::masks::{
    at_least, backslashes, has_run, joinable, lone_tail, masks, mixed, mixed_through, periodic,
    run_starts, separators, spaced_chain, span_mask,
};
use super::spec::{After, Special, Trigger};

/// Where a detector could match: a span inside the match it may confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cand {
    pub det: u16,
    pub start: usize,
    pub end: usize,
}

/// What a pass saw besides its candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// A `\u` or `\/` escape (raw JSON whose strings must be decoded first).
    pub escaped: bool,
    /// A byte outside ASCII.
    pub non_ascii: bool,
    /// A run of at least [`Prefilter::watch_runs`] bytes of letters, digits
    /// and `-._=` (not part of `plain`: it wakes one pass, it is no finding).
    pub long_run: bool,
    /// Six single letters or digits in a row, each up to six bytes
    /// apart: maybe a spaced-out word (`A K I A …`, see
    /// `normalise::spaced`).
    pub spaced: bool,
    /// Three groups of two or more letters or digits, each starting the
    /// same distance after the last, the first two ending so too: maybe
    /// a run of groups (`AKIA IOSF ODNN …`, `41 4b 49 …`, see
    /// `grouped`). Not looked for past a `long_run`, which every reader
    /// of this one takes as a reason to look for groups too.
    pub grouped: bool,
    /// A digit followed by an exponent (`1.2345678e8`): a number a reader
    /// prints in other digits than it is written in (see `engines::dlp::json`).
    pub exponent: bool,
}

impl Seen {
    /// Neither escapes nor non-ASCII bytes.
    pub fn plain(&self) -> bool {
        !self.escaped && !self.non_ascii
    }
}

/// Whether an exponent starts at `at` (after a digit): `e` or `E`, an
/// optional sign, a digit.
fn exponent_at(hay: &[u8], at: usize) -> bool {
    let b = |i: usize| hay.get(at + i).copied().unwrap_or(0);
    matches!(b(0), b'e' | b'E')
        && (b(1).is_ascii_digit() || (matches!(b(1), b'+' | b'-') && b(2).is_ascii_digit()))
}

/// The candidate of every `Digits` detector at once.
pub(crate) const DIGIT_GROUP: u16 = u16::MAX;

/// One word-start anchor literal.
struct Anchor {
    /// Lower-cased unless `exact`.
    lit: Box<[u8]>,
    /// Index of the literal's first letter (where the word starts).
    word: usize,
    exact: bool,
    after: Option<After>,
    det: u16,
    /// Up to eight bytes from the word start, case-folded (`| 0x20`), and
    /// the mask of those present: a one-compare rejection (eight, not
    /// four: prose is full of words that begin like an anchor, `service`
    /// like `service_account`).
    head: u64,
    head_mask: u64,
}

const TABLE_BITS: u32 = 14;
const TABLE: usize = 1 << TABLE_BITS;

/// What the pass looks for, built once per detector set.
pub(crate) struct Prefilter {
    filter: Box<[u64; TABLE / 64]>,
    /// CSR index: anchors hashed to slot `h` are `items[heads[h]..heads[h + 1]]`.
    heads: Box<[u16]>,
    items: Box<[u16]>,
    anchors: Vec<Anchor>,
    special: [Vec<u16>; Special::COUNT],
    any_special: bool,
    /// Detectors woken by digit runs, each with its count; `min_digits` is
    /// their least count.
    digits: Vec<(u16, usize)>,
    min_digits: usize,
    consecutive: Vec<u16>,
    min_consecutive: usize,
    dotted: Vec<u16>,
    upper_pair: Vec<u16>,
    /// Report runs of this many `word` bytes (0: never; at most 64).
    long_run: u32,
}

#[inline(always)]
fn fold(b: u8) -> u32 {
    (b | 0x20) as u32
}

#[inline(always)]
fn slot(b0: u8, b1: u8, b2: u8) -> usize {
    let key = fold(b0) | fold(b1) << 8 | fold(b2) << 16;
    (key.wrapping_mul(0x9E37_79B1) >> (32 - TABLE_BITS)) as usize
}

#[inline(always)]
fn word_at(block: &[u8; 72], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&block[i..i + 4]);
    u32::from_le_bytes(w)
}

/// The eight bytes from `block[i]` (`i < 64`).
#[inline(always)]
fn head_at(block: &[u8; 72], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&block[i..i + 8]);
    u64::from_le_bytes(w)
}

/// The table slot of the word starting at `block[i]` (`i < 64`).
#[inline(always)]
fn key_slot(block: &[u8; 72], i: usize) -> usize {
    let key = (word_at(block, i) | 0x2020_2020) & 0x00FF_FFFF;
    (key.wrapping_mul(0x9E37_79B1) >> (32 - TABLE_BITS)) as usize
}

#[inline(always)]
fn at(h: &[u8], i: usize) -> u8 {
    h.get(i).copied().unwrap_or(0)
}

fn is_hex_lower(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Skips whitespace as the confirming regexes' `\s` may see it: ASCII
/// whitespace, JSON escape pairs (`\n`, `\"` …) and any non-ASCII byte.
fn skip_space(h: &[u8], mut i: usize) -> usize {
    while i < h.len() {
        match h[i] {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => i += 1,
            b'\\' => i += 2,
            b if b >= 0x80 => i += 1,
            _ => break,
        }
    }
    i
}

/// Calls `f` at each position within `budget` non-space bytes of `i`.
fn within(h: &[u8], mut i: usize, budget: usize, mut f: impl FnMut(usize) -> bool) -> bool {
    for _ in 0..=budget {
        i = skip_space(h, i);
        if i >= h.len() {
            return false;
        }
        if f(i) {
            return true;
        }
        i += 1;
    }
    false
}

fn starts_with_ci(h: &[u8], i: usize, lit: &[u8]) -> bool {
    h.get(i..i + lit.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(lit))
}

impl After {
    /// Whether what follows position `i` could continue the match.
    fn holds(self, h: &[u8], i: usize) -> bool {
        match self {
            After::DigitWithin(n) => within(h, i, n, |j| h[j].is_ascii_digit()),
            After::Near(lit, n) => within(h, i, n, |j| starts_with_ci(h, j, lit.as_bytes())),
            After::Assignment => {
                // `["']?\s*` over-approximated: any quotes, escape pairs
                // (raw JSON writes the quote as `\"`, a tab as `\t`),
                // whitespace and non-ASCII bytes.
                let mut j = i;
                loop {
                    match at(h, j) {
                        b'"' | b'\'' | b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => j += 1,
                        b'\\' => j += 2,
                        b if b >= 0x80 => j += 1,
                        _ => break,
                    }
                }
                matches!(at(h, j), b':' | b'=')
            }
            After::Colon => at(h, skip_space(h, i)) == b':',
            After::Token(n) => h.get(i..i + n).is_some_and(|s| {
                s.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            }),
            After::LowerHex(n) => h
                .get(i..i + n)
                .is_some_and(|s| s.iter().all(|b| is_hex_lower(*b))),
            After::OverridePhrase => {
                let mut j = skip_space(h, i);
                for filler in [&b"all"[..], b"any", b"the"] {
                    if starts_with_ci(h, j, filler) {
                        j = skip_space(h, j + 3);
                        break;
                    }
                }
                [
                    &b"previous"[..],
                    b"prior",
                    b"above",
                    b"earlier",
                    b"preceding",
                ]
                .iter()
                .any(|w| starts_with_ci(h, j, w))
            }
        }
    }
}

/// A byte that joins the digits on either side into one run (what
/// [`super::masks::separators`] marks in a block, a byte at a time).
pub(crate) fn digit_separator(b: u8) -> bool {
    matches!(
        b,
        b' ' | 0x09..=0x0D | b'(' | b')' | b'-' | b'.' | b'/' | b'_' | b'|' | b'%' | b'\\'
    ) || b >= 0x80
}

/// The most digits in one run of `b` (digits joined by separators).
pub(crate) fn most_digits_in_a_run(b: &[u8]) -> usize {
    let (mut most, mut run) = (0, 0);
    for &c in b {
        if c.is_ascii_digit() {
            run += 1;
        } else if !digit_separator(c) {
            most = most.max(run);
            run = 0;
        }
    }
    most.max(run)
}

/// A digit run still open at the end of a block.
#[derive(Default, Clone, Copy)]
struct Run {
    open: bool,
    start: usize,
    digits: usize,
    dots: usize,
}

/// State carried from one block to the next.
#[derive(Default)]
struct Carry {
    backslash: u64,
    word: u64,
    digit: u64,
    consecutive: u64,
    run: Run,
}

impl Prefilter {
    pub(crate) fn new() -> Prefilter {
        Prefilter {
            filter: Box::new([0; TABLE / 64]),
            heads: vec![0; TABLE + 1].into_boxed_slice(),
            items: Box::new([]),
            anchors: Vec::new(),
            special: Default::default(),
            any_special: false,
            digits: Vec::new(),
            min_digits: usize::MAX,
            consecutive: Vec::new(),
            min_consecutive: usize::MAX,
            dotted: Vec::new(),
            upper_pair: Vec::new(),
            long_run: 0,
        }
    }

    /// Registers detector `det`'s trigger.
    pub(crate) fn add(&mut self, det: u16, t: &Trigger) -> Result<(), String> {
        match *t {
            Trigger::Word(lits) => self.add_words(det, lits, false, None),
            Trigger::WordThen(lits, after) => self.add_words(det, lits, false, Some(after)),
            Trigger::WordExact(lits, after) => self.add_words(det, lits, true, Some(after)),
            Trigger::Digits(n) => {
                self.digits.push((det, n));
                self.min_digits = self.min_digits.min(n);
                Ok(())
            }
            Trigger::ConsecutiveDigits(n) => {
                self.consecutive.push(det);
                self.min_consecutive = self.min_consecutive.min(n);
                Ok(())
            }
            Trigger::DottedQuad => {
                self.dotted.push(det);
                Ok(())
            }
            Trigger::UpperPair => {
                self.upper_pair.push(det);
                Ok(())
            }
            Trigger::Byte(s) => {
                self.special[s as usize].push(det);
                self.any_special = true;
                Ok(())
            }
        }
    }

    /// The digit detectors, each with the count of digits in a run that
    /// wakes it (its `Digits` trigger): every match of it holds a run of
    /// that many digits joined by separators ([`digit_separator`]).
    pub(crate) fn digit_counts(&self) -> &[(u16, usize)] {
        &self.digits
    }

    fn add_words(
        &mut self,
        det: u16,
        lits: &[&str],
        exact: bool,
        after: Option<After>,
    ) -> Result<(), String> {
        for l in lits {
            // `id |number`: the word starts at `|` (the literal is `id number`).
            let marked = l.find('|');
            let joined = l.replace('|', "");
            let bytes = if marked.is_some() {
                joined.as_bytes()
            } else {
                l.as_bytes()
            };
            let Some(word) = marked.or_else(|| bytes.iter().position(u8::is_ascii_alphabetic))
            else {
                return Err(format!("anchor {l:?} has no letter"));
            };
            if word > 0 && bytes[word - 1].is_ascii_alphanumeric() {
                return Err(format!("anchor {l:?} does not start a word"));
            }
            let lit: Box<[u8]> = if exact {
                bytes.into()
            } else {
                bytes.to_ascii_lowercase().into()
            };
            let mut head = [0u8; 8];
            let mut head_mask = [0u8; 8];
            for (k, b) in lit[word..].iter().take(8).enumerate() {
                head[k] = b | 0x20;
                head_mask[k] = 0xFF;
            }
            self.anchors.push(Anchor {
                lit,
                word,
                exact,
                after,
                det,
                head: u64::from_le_bytes(head),
                head_mask: u64::from_le_bytes(head_mask),
            });
        }
        Ok(())
    }

    /// Builds the word-start table once every trigger is in.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        let mut slots: Vec<Vec<u16>> = vec![Vec::new(); TABLE];
        for (i, a) in self.anchors.iter().enumerate() {
            let rest = &a.lit[a.word..];
            let keys: Vec<usize> = match rest.len() {
                0 | 1 => return Err("an anchor needs two letters".into()),
                2 => {
                    // Two-letter anchors (`SK`, `AC`) are keyed on each byte
                    // their check lets follow.
                    let next: &[u8] = match a.after {
                        Some(After::LowerHex(_)) => b"0123456789abcdef",
                        _ => return Err("a two-letter anchor needs a LowerHex check".into()),
                    };
                    next.iter().map(|&c| slot(rest[0], rest[1], c)).collect()
                }
                _ => vec![slot(rest[0], rest[1], rest[2])],
            };
            for k in keys {
                if !slots[k].contains(&(i as u16)) {
                    slots[k].push(i as u16);
                }
            }
        }
        let mut heads = Vec::with_capacity(TABLE + 1);
        let mut items = Vec::new();
        for (k, s) in slots.iter().enumerate() {
            heads.push(items.len() as u16);
            if !s.is_empty() {
                self.filter[k / 64] |= 1 << (k % 64);
            }
            items.extend_from_slice(s);
        }
        heads.push(items.len() as u16);
        self.heads = heads.into_boxed_slice();
        self.items = items.into_boxed_slice();
        Ok(())
    }

    /// Appends every candidate in `hay` to `out`; tells whether `hay` holds
    /// a `\u` or `\/` escape and whether it holds non-ASCII bytes.
    /// Also report (in [`Seen::long_run`]) whether a run of `n` or more
    /// letters, digits and `-._=` occurs (capped at 64: a longer run holds
    /// one of 64).
    pub(crate) fn watch_runs(&mut self, n: usize) {
        self.long_run = n.clamp(1, 64) as u32;
    }

    pub(crate) fn run(&self, hay: &[u8], out: &mut Vec<Cand>) -> Seen {
        let mut carry = Carry::default();
        let mut escaped = false;
        let mut high = 0u64;
        let mut off = 0;
        // `word` bytes ending the previous block, and whether a long run was seen.
        let mut run_before = 0usize;
        let mut long_run = false;
        let mut spaced = false;
        let mut grouped = false;
        let mut exponent = false;
        let (mut prev_cont, mut prev_mixed) = (0u64, 0u64);
        let (mut prev_alpha, mut prev_digit) = (0u64, 0u64);
        let mut prev_gb = 0u64;
        // One block and a few bytes of look-ahead for word keys; the tail is
        // padded with a byte no mask selects.
        let mut tail;
        while off < hay.len() {
            let block: &[u8; 72] = match hay.get(off..off + 64 + 8).map(<&[u8; 72]>::try_from) {
                Some(Ok(b)) => b,
                _ => {
                    let n = (hay.len() - off).min(72);
                    tail = [1u8; 64 + 8];
                    tail[..n].copy_from_slice(&hay[off..off + n]);
                    &tail
                }
            };
            let m = masks(block);
            high |= m.high;
            if self.long_run != 0 && !long_run {
                let n = self.long_run;
                long_run = run_before + m.word.trailing_ones() as usize >= n as usize
                    || has_run(m.word, n);
                run_before = if m.word == u64::MAX {
                    run_before + 64
                } else {
                    m.word.leading_ones() as usize
                };
            }
            let backslash = if m.special == 0 {
                0
            } else {
                backslashes(block)
            };
            // Bytes right after a backslash are escape letters: separators,
            // and they do not continue a word.
            let esc = (backslash << 1) | carry.backslash;
            carry.backslash = backslash >> 63;
            let cont = (m.alpha | m.digit) & !esc;
            if !exponent {
                // A digit then a letter (the last digit's letter may be
                // in the next block): rare in prose, looked at one by one.
                let mut d = m.digit & ((m.alpha >> 1) | 1 << 63);
                while d != 0 && !exponent {
                    exponent = exponent_at(hay, off + d.trailing_zeros() as usize + 1);
                    d &= d - 1;
                }
            }
            if !spaced {
                // Letters and digits with no letter or digit either side
                // (an escape's letter is none), six of them in a row, each
                // two to seven bytes after the last (up to three
                // separators, an escape pair counting as one). Most blocks
                // hold fewer than six such characters.
                let single = cont & !(cont << 1) & !(cont >> 1);
                spaced = spaced_chain(single);
            }
            // Every reader of `grouped` reads the text's groups when it
            // holds a long run anyway (see `Seen::grouped`): once one is
            // seen, the look for groups stops (base64, hashes and tokens
            // pass the cheap test below in almost every block).
            if !grouped && !long_run {
                // In the window of this block and the last (see
                // `mixed_through` and `lone_tail`): letters and digits with
                // no quote or bracket between (the message's `"id":12345`
                // is no run), or a run ending in one digit.
                let mut mixed = mixed(m.alpha, m.digit, prev_alpha, prev_digit);
                if mixed != 0 {
                    let pass = joinable(block) | esc;
                    mixed = mixed_through(m.alpha, m.digit, prev_alpha, prev_digit, pass);
                }
                if mixed | prev_mixed != 0 {
                    grouped = periodic(((cont as u128) << 64) | prev_cont as u128);
                }
                // A digit standing alone among group bytes: none before
                // it, and no letter or digit after it (a `+` or `=` after
                // it, `… Ef 5+`, leaves it the last group's one digit).
                let gb = cont | (m.extra & !esc);
                let lone = m.digit & !(gb << 1 | prev_gb >> 63) & !(cont >> 1);
                if !grouped && lone != 0 {
                    let mut l = lone;
                    while l != 0 && !grouped {
                        grouped = lone_tail(prev_gb, gb, 64 + l.trailing_zeros(), off < 64);
                        l &= l - 1;
                    }
                }
                prev_gb = gb;
                prev_mixed = mixed;
                prev_cont = cont;
                (prev_alpha, prev_digit) = (m.alpha, m.digit);
            }
            let starts = m.alpha & !((cont << 1) | carry.word);
            carry.word = cont >> 63;
            // Anchors span three word bytes from their start (letters,
            // digits, `-._=`), so one- and two-letter words are skipped.
            let long = starts & ((m.word >> 1) | 1 << 63) & ((m.word >> 2) | 3 << 62);
            if long != 0 {
                self.words(hay, block, off, long, out);
            }
            if starts != 0 && !self.upper_pair.is_empty() {
                // Two letters, then a digit two or three bytes on (the last
                // three starts look past the block).
                let near = (m.digit >> 2) | (m.digit >> 3) | (0b111 << 61);
                let pairs = starts & ((m.alpha >> 1) | 1 << 63) & near;
                if pairs != 0 {
                    self.upper_pairs(hay, off, pairs, out);
                }
            }
            // Backslashes are looked at even when no detector wants a
            // special byte: `\u` and `\/` must be reported.
            if m.special != 0 && (self.any_special || backslash != 0) {
                escaped |= self.specials(hay, off, m.special, out);
            }
            // Most blocks of text hold a few short numbers: none can reach a
            // threshold, and none can be joined to a match in the next block
            // (digits within a match are at most four bytes apart; the last
            // eight bytes here hold none).
            let digits_between_dots = m.dot & (m.digit << 1) & (m.digit >> 1);
            if (!self.digits.is_empty() || !self.dotted.is_empty())
                && (carry.run.open
                    || m.digit >> 56 != 0
                    || at_least(m.digit, self.min_digits.min(9))
                    || (!self.dotted.is_empty() && at_least(digits_between_dots, 3)))
            {
                // A backslash at the very end marks the padding after it
                // as its escape's letter: no run goes past the text.
                let sep = separators(block);
                let inside = span_mask(0, (hay.len() - off).min(64) as u32);
                self.runs(
                    off,
                    m.digit,
                    m.dot,
                    (m.digit | sep | esc) & inside,
                    &mut carry.run,
                    out,
                );
            }
            if !self.consecutive.is_empty()
                && (carry.digit >> 63 != 0 || at_least(m.digit, self.min_consecutive))
            {
                self.consecutive(off, m.digit, &mut carry, out);
            } else {
                carry.consecutive = 0;
            }
            carry.digit = m.digit;
            off += 64;
        }
        if carry.run.open {
            self.close_run(carry.run, hay.len(), out);
        }
        Seen {
            escaped,
            non_ascii: high != 0,
            long_run,
            spaced,
            grouped,
            exponent,
        }
    }

    fn upper_pairs(&self, hay: &[u8], off: usize, mut starts: u64, out: &mut Vec<Cand>) {
        while starts != 0 {
            let p = off + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            let b2 = at(hay, p + 2);
            if hay[p].is_ascii_uppercase()
                && at(hay, p + 1).is_ascii_uppercase()
                && (b2.is_ascii_digit() || (b2 == b' ' && at(hay, p + 3).is_ascii_digit()))
            {
                for &det in &self.upper_pair {
                    out.push(Cand {
                        det,
                        start: p,
                        end: p + 2,
                    });
                }
            }
        }
    }

    fn words(
        &self,
        hay: &[u8],
        block: &[u8; 72],
        off: usize,
        mut starts: u64,
        out: &mut Vec<Cand>,
    ) {
        // First, without branches, which word starts pass the filter.
        let mut pass = 0u64;
        while starts != 0 {
            let i = (starts.trailing_zeros() & 63) as usize;
            starts &= starts - 1;
            let h = key_slot(block, i);
            pass |= ((self.filter[h / 64] >> (h % 64)) & 1) << i;
        }
        while pass != 0 {
            let i = pass.trailing_zeros() as usize;
            pass &= pass - 1;
            let h = key_slot(block, i);
            let w = head_at(block, i) | 0x2020_2020_2020_2020;
            let p = off + i;
            for &k in &self.items[self.heads[h] as usize..self.heads[h + 1] as usize] {
                let a = &self.anchors[k as usize];
                if w & a.head_mask != a.head {
                    continue;
                }
                let Some(start) = p.checked_sub(a.word) else {
                    continue;
                };
                let end = start + a.lit.len();
                let Some(text) = hay.get(start..end) else {
                    continue;
                };
                let same = if a.exact {
                    text == &*a.lit
                } else {
                    text.eq_ignore_ascii_case(&a.lit)
                };
                if same && a.after.is_none_or(|x| x.holds(hay, end)) {
                    out.push(Cand {
                        det: a.det,
                        start,
                        end,
                    });
                }
            }
        }
    }

    fn push_special(&self, s: Special, start: usize, end: usize, out: &mut Vec<Cand>) {
        for &det in &self.special[s as usize] {
            out.push(Cand { det, start, end });
        }
    }

    fn specials(&self, hay: &[u8], off: usize, mut bits: u64, out: &mut Vec<Cand>) -> bool {
        let mut escaped = false;
        while bits != 0 {
            let p = off + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let next = at(hay, p + 1);
            match hay[p] {
                b'@' => self.push_special(Special::At, p, p + 1, out),
                b'+' if (b'1'..=b'9').contains(&next) => {
                    self.push_special(Special::PlusDigit, p, p + 2, out)
                }
                b':' => {
                    if next == b':' || ipv6_chain(hay, p) {
                        self.push_special(Special::Ipv6Colon, p, p + 1, out);
                    }
                    if p > 0
                        && hay[p - 1].is_ascii_digit()
                        && next == b'A'
                        && at(hay, p + 2) == b'A'
                    {
                        self.push_special(Special::TelegramColon, p, p + 3, out);
                    }
                }
                b'=' if p >= 10 && hay[p - 10..p].eq_ignore_ascii_case(b"accountkey") => {
                    self.push_special(Special::AccountKeyEq, p - 10, p + 1, out)
                }
                b'!' if next == b'[' => self.push_special(Special::BangBracket, p, p + 2, out),
                b'<' if matches!(next, b'|' | b's' | b'S' | b'/') => {
                    self.push_special(Special::AngleMarker, p, p + 2, out)
                }
                b'#' if next == b'#' && at(hay, p + 2) == b'#' => {
                    self.push_special(Special::HashMarker, p, p + 3, out)
                }
                // `\u`, `\/`, and the controls `\b` and `\f`, which the normalised
                // view drops, joining what they split: the text is decoded.
                b'\\' => escaped |= matches!(next, b'u' | b'/' | b'b' | b'f'),
                0xE2 => {
                    let third = at(hay, p + 2);
                    if (next == 0x80 && (0x8B..=0x8D).contains(&third))
                        || (next == 0x81 && third == 0xA0)
                    {
                        self.push_special(Special::ZeroWidth, p, p + 3, out)
                    }
                }
                0xEF if next == 0xBB && at(hay, p + 2) == 0xBF => {
                    self.push_special(Special::ZeroWidth, p, p + 3, out)
                }
                0xF3 if next == 0xA0 && matches!(at(hay, p + 2), 0x80 | 0x81) => {
                    self.push_special(Special::TagChar, p, p + 4, out)
                }
                _ => {}
            }
        }
        escaped
    }

    /// Digit runs of this block, joined with the run left open by the last.
    fn runs(&self, off: usize, digit: u64, dot: u64, ds: u64, run: &mut Run, out: &mut Vec<Cand>) {
        if run.open {
            let first_gap = (!ds).trailing_zeros();
            if first_gap == 64 {
                run.digits += digit.count_ones() as usize;
                run.dots += dot.count_ones() as usize;
                return;
            }
            if digit & span_mask(0, first_gap) == 0 {
                // The open run ends here without another digit.
                run.dots += (dot & span_mask(0, first_gap)).count_ones() as usize;
                self.close_run(*run, off + first_gap as usize, out);
                run.open = false;
            }
        }
        let mut digits = digit;
        // A number inside the block gives a candidate only when it holds
        // `min_digits` digits, or three dots and four digits: either way
        // it spans `k` bytes of `ds` in a row. So only the numbers in such
        // spans are looked at, and those at the block's edges (the one the
        // last block left open, the one the next block may go on with):
        // most numbers of base64, tokens, numeric rows and prose are short.
        if !tests_full_runs() {
            let k = self.min_digits.min(7) as u32;
            // Bit i: bytes i..i + k all in `ds`; then every byte of those.
            let (mut long, mut have) = (run_starts(ds, k), 1);
            while have < k {
                let step = (k - have).min(have);
                long |= long << step;
                have += step;
            }
            let first = if run.open {
                span_mask(0, (!ds).trailing_zeros())
            } else {
                0
            };
            let last = if ds >> 63 != 0 {
                !span_mask(0, 64 - ds.leading_ones())
            } else {
                0
            };
            digits &= long | first | last;
        }
        while digits != 0 {
            let p = digits.trailing_zeros();
            let end = p + (!(ds >> p)).trailing_zeros().min(64 - p);
            let below = !ds & span_mask(0, p);
            let start = if below == 0 {
                0
            } else {
                64 - below.leading_zeros()
            };
            let bits = span_mask(start, end);
            digits &= !bits;
            let joined = start == 0 && run.open;
            if end < 64 && !joined && !at_least(digit & bits, self.min_digits.min(4)) {
                // A short number inside this block: no threshold is met.
                continue;
            }
            let mut r = Run {
                open: true,
                start: off + start as usize,
                digits: (digit & bits).count_ones() as usize,
                dots: (dot & bits).count_ones() as usize,
            };
            if start == 0 && run.open {
                r.start = run.start;
                r.digits += run.digits;
                r.dots += run.dots;
            }
            run.open = false;
            if end == 64 {
                *run = r;
            } else {
                self.close_run(r, off + end as usize, out);
            }
        }
    }

    fn close_run(&self, r: Run, end: usize, out: &mut Vec<Cand>) {
        if r.digits >= self.min_digits {
            // One candidate for the whole digit group: the scanner asks all
            // their patterns at once which of them match around it.
            out.push(Cand {
                det: DIGIT_GROUP,
                start: r.start,
                end,
            });
        }
        if r.dots >= 3 && r.digits >= 4 {
            for &det in &self.dotted {
                out.push(Cand {
                    det,
                    start: r.start,
                    end,
                });
            }
        }
    }

    /// Positions ending `min_consecutive` consecutive digits.
    fn consecutive(&self, off: usize, digit: u64, carry: &mut Carry, out: &mut Vec<Cand>) {
        let k = self.min_consecutive;
        let ends = if digit == 0 || k > 64 {
            0
        } else {
            let w = ((digit as u128) << 64) | carry.digit as u128;
            let mut x = w;
            for i in 1..k {
                x &= w << i;
            }
            (x >> 64) as u64
        };
        let firsts = ends & !((ends << 1) | carry.consecutive);
        carry.consecutive = ends >> 63;
        let mut f = firsts;
        while f != 0 {
            let p = off + f.trailing_zeros() as usize;
            f &= f - 1;
            for &det in &self.consecutive {
                out.push(Cand {
                    det,
                    start: p + 1 - k,
                    end: p + 1,
                });
            }
        }
    }
}

reference_switch! {
    /// Tests: every number of a block is looked at (the reference the
    /// look at only the numbers that can count is held to).
    pub(super) static FULL_RUNS;
    fn tests_full_runs;
}

/// A colon beginning `h:h:h:h:h:h:h` (seven colons, 1–4 hex digits after
/// each): the shape of an IPv6 address without `::`.
fn ipv6_chain(h: &[u8], p: usize) -> bool {
    let mut i = p;
    let mut colons = 0;
    while at(h, i) == b':' {
        colons += 1;
        if colons == 7 {
            return true;
        }
        let mut n = 0;
        i += 1;
        while n < 5 && at(h, i).is_ascii_hexdigit() {
            i += 1;
            n += 1;
        }
        if n == 0 || n > 4 {
            return false;
        }
    }
    false
}

#[cfg(test)]
#[path = "prefilter_tests.rs"]
mod tests;
