//! The normalised view of a string: what a reader sees, which is what the
//! detectors must match too. Text can hide a secret from byte-level
//! patterns without hiding it from a person or a model: a zero-width space
//! inside a card number, a no-break space between its groups, full-width or
//! mathematical digits, letters written as compatibility forms.
//!
//! The view drops invisible characters (general category Cf, e.g. U+200B,
//! U+00AD, U+2060, U+FEFF, the tag characters U+E0000–U+E007F, and the rest
//! of the default-ignorable code points such as variation selectors), turns
//! every Unicode space (Zs) into an ASCII space and every Unicode hyphen or
//! dash into `-`, and applies NFKC to everything else (full-width `４`,
//! mathematical `𝟒`, superscript `⁴` → `4`; `ＡＫＩＡ` → `AKIA`); the
//! decimal digits of every other script (Arabic-Indic `٤`, Devanagari `४`,
//! Bengali `৪` …), which NFKC keeps, read as their ASCII digits.
//!
//! Each byte of the view remembers the original character it came from, so
//! a match in the view maps back to the whole original span, invisible
//! characters inside it included, and redaction replaces exactly that.
//! Control characters (C0 but tab, line feed and carriage return; DEL) are
//! dropped, and so are terminal escape sequences (`ESC [ … final`), which a
//! terminal renders as nothing; combining marks (Mn, Me) are dropped, as a
//! reader copying the text past an accent would; ideographic full stops
//! (`。`, `｡`) read as `.`.
//!
//! Letters drawn like ASCII ones (Cyrillic `А`, Greek `Ο`: the Unicode
//! confusables whose skeleton is one ASCII character) read as that ASCII
//! character, and CJK numerals (`四一一一`) as digits.
//!
//! Printable ASCII text has no view: only strings holding characters that
//! change are normalised.

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// A string's normalised text and where each of its bytes came from.
pub(crate) struct View {
    pub text: String,
    /// For each byte of `text`, the offset in the original of the character
    /// that produced it; one more entry, the original's length, at the end.
    from: Vec<usize>,
}

/// What the view makes of one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Keep,
    Drop,
    Space,
    Dash,
    Dot,
    /// A decimal digit of another script (`٤`, `४`, `৪`) or a CJK
    /// numeral (`四`): its ASCII digit.
    Digit(u8),
    /// A character drawn like one ASCII character (Cyrillic `А`, Greek
    /// `Ο`, Armenian `օ`): that character.
    Ascii(u8),
    Nfkc,
}

/// An ASCII byte the view changes: a control character but tab, line feed
/// and carriage return, or DEL.
pub(crate) fn unseen_ascii(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f
}

/// Default-ignorable code points that are not Cf (variation selectors,
/// fillers, the combining grapheme joiner, unassigned ignorables, the whole
/// tag and variation-selector supplement block).
fn ignorable(c: char) -> bool {
    matches!(
        c as u32,
        0x034F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Minus signs and hyphen-like symbols outside the dash punctuation
/// category, read as `-`.
fn dash(c: char) -> bool {
    matches!(
        c as u32,
        0x02D7 | 0x2043 | 0x2212 | 0x2796 | 0xFE63 | 0xFF0D | 0x1F5D5
    )
}

/// Digits drawn in circles, with a full stop or comma, or in parentheses,
/// that NFKC leaves alone or expands with punctuation (`❶`, `➀`, `⓵`,
/// `⑴` → `(1)`, `⒈` → `1.`, `🄂` → `1,`): the digit a reader sees.
fn lookalike_digit(c: char) -> Option<u8> {
    let n = c as u32;
    let from = |start: u32, first: u8| Some(first + (n - start) as u8);
    match n {
        0x2776..=0x277E => from(0x2776, 1),
        0x2780..=0x2788 => from(0x2780, 1),
        0x278A..=0x2792 => from(0x278A, 1),
        0x24F5..=0x24FD => from(0x24F5, 1),
        0x24FF | 0x1F10B | 0x1F10C | 0x1F100 => Some(0),
        0x2474..=0x247C => from(0x2474, 1),
        0x2488..=0x2490 => from(0x2488, 1),
        0x1F101..=0x1F10A => from(0x1F101, 0),
        _ => None,
    }
}

fn fold(c: char) -> Fold {
    if c.is_ascii() {
        return if unseen_ascii(c as u8) {
            Fold::Drop
        } else {
            Fold::Keep
        };
    }
    match FOLDS.get(c as usize) {
        Some(&f) => Fold::unpack(f),
        None => fold_of(c),
    }
}

/// Characters below this (the first two planes: every script, symbol and
/// emoji in use) are folded by table.
const FOLDED_BELOW: usize = 0x2_0000;

/// [`fold_of`] of every character below [`FOLDED_BELOW`], packed
/// ([`Fold::pack`]), worked out once per process (about 128 KiB): text in
/// other scripts and emoji is folded by a lookup, not by the category,
/// confusables and NFKC tables each time. [`warm`] builds it before the
/// first message.
static FOLDS: std::sync::LazyLock<Box<[u8]>> = std::sync::LazyLock::new(|| {
    (0..FOLDED_BELOW as u32)
        .map(|u| char::from_u32(u).map_or(0, |c| fold_of(c).pack()))
        .collect()
});

/// Builds the fold table now (at start-up), not on the first message that
/// holds a character outside ASCII.
pub(crate) fn warm() {
    std::sync::LazyLock::force(&FOLDS);
}

impl Fold {
    /// One byte: 0–5 the variants without data, 16 + d a digit, 128 + a
    /// an ASCII character.
    fn pack(self) -> u8 {
        match self {
            Fold::Keep => 0,
            Fold::Drop => 1,
            Fold::Space => 2,
            Fold::Dash => 3,
            Fold::Dot => 4,
            Fold::Nfkc => 5,
            Fold::Digit(d) => 16 + d,
            Fold::Ascii(a) => 128 | a,
        }
    }

    fn unpack(b: u8) -> Fold {
        match b {
            0 => Fold::Keep,
            1 => Fold::Drop,
            2 => Fold::Space,
            3 => Fold::Dash,
            4 => Fold::Dot,
            5 => Fold::Nfkc,
            128.. => Fold::Ascii(b & 0x7f),
            _ => Fold::Digit(b - 16),
        }
    }
}

/// What the view makes of `c` (outside ASCII), from the Unicode tables.
fn fold_of(c: char) -> Fold {
    if let Some(d) = cjk_numeral(c) {
        return Fold::Digit(d);
    }
    // The bulk of CJK and Hangul text is NFKC-stable and visible.
    if matches!(c as u32, 0x4E00..=0x9FFF | 0xAC00..=0xD7A3 | 0x3041..=0x3096 | 0x30A1..=0x30FA) {
        return Fold::Keep;
    }
    match get_general_category(c) {
        GeneralCategory::Format
        | GeneralCategory::NonspacingMark
        | GeneralCategory::SpacingMark
        | GeneralCategory::EnclosingMark
        | GeneralCategory::Control => return Fold::Drop,
        GeneralCategory::SpaceSeparator => return Fold::Space,
        GeneralCategory::DecimalNumber => return Fold::Digit(digit_value(c)),
        GeneralCategory::DashPunctuation => return Fold::Dash,
        _ => {}
    }
    if let Some(d) = lookalike_digit(c) {
        return Fold::Digit(d);
    }
    // The braille blank renders as a space.
    if c == '\u{2800}' {
        return Fold::Space;
    }
    if matches!(c, '\u{3002}' | '\u{FF61}' | '\u{FE12}') {
        return Fold::Dot;
    }
    if ignorable(c) {
        Fold::Drop
    } else if dash(c) {
        Fold::Dash
    } else if is_nfkc_quick(std::iter::once(c)) != IsNormalized::Yes {
        Fold::Nfkc
    } else if let Some(a) = lookalike_ascii(c) {
        Fold::Ascii(a)
    } else {
        Fold::Keep
    }
}

/// The CJK numerals a reader reads as digits (`〇一二三四五六七八九`, `零`).
fn cjk_numeral(c: char) -> Option<u8> {
    Some(match c {
        '〇' | '零' => 0,
        '一' => 1,
        '二' => 2,
        '三' => 3,
        '四' => 4,
        '五' => 5,
        '六' => 6,
        '七' => 7,
        '八' => 8,
        '九' => 9,
        _ => return None,
    })
}

/// The ASCII character a non-ASCII one is drawn like, by the Unicode
/// confusables data (UTS #39): its skeleton is one printable ASCII
/// character. `l` is also the skeleton of `I`, so an upper-case letter
/// drawn like it (Cyrillic `І`, `Ӏ`) reads as `I`.
fn lookalike_ascii(c: char) -> Option<u8> {
    let mut buf = [0u8; 4];
    let mut sk = unicode_security::skeleton(c.encode_utf8(&mut buf));
    let a = sk.next().filter(|a| a.is_ascii_graphic())?;
    if sk.next().is_some() {
        return None;
    }
    Some(if a == 'l' && c.is_uppercase() {
        b'I'
    } else {
        a as u8
    })
}

/// The value of a decimal digit (general category Nd). Unicode encodes
/// each script's digits as one contiguous run from 0 to 9, and runs that
/// touch (the mathematical digits) are whole runs of ten: the value is the
/// distance from the start of the contiguous digits, modulo ten.
fn digit_value(c: char) -> u8 {
    let mut start = c as u32;
    while let Some(p) = start.checked_sub(1).and_then(char::from_u32) {
        if get_general_category(p) != GeneralCategory::DecimalNumber {
            break;
        }
        start -= 1;
    }
    ((c as u32 - start) % 10) as u8
}

/// The normalised view of `s`, if it differs from `s`.
pub(crate) fn view(s: &str) -> Option<View> {
    let first = super::decode::first_unusual(s.as_bytes())?;
    let (changed, _) = s[first..]
        .char_indices()
        .find(|&(_, c)| fold(c) != Fold::Keep)?;
    let changed = first + changed;
    let mut text = String::with_capacity(s.len());
    let mut from = Vec::with_capacity(s.len() + 1);
    let push = |text: &mut String, from: &mut Vec<usize>, at: usize, c: char| {
        let n = text.len();
        text.push(c);
        from.extend(std::iter::repeat_n(at, text.len() - n));
    };
    // Inside a terminal escape sequence (`ESC [` parameters, a final byte
    // in `@`..`~`): nothing of it is seen.
    let mut csi = 0u8;
    // Characters kept as they are, from `kept` on, are copied in one go
    // when something else comes (most of a text in another script is).
    let mut kept = 0;
    let flush = |text: &mut String, from: &mut Vec<usize>, kept: usize, at: usize| {
        text.push_str(&s[kept..at]);
        let mut start = kept;
        from.extend((kept..at).map(|k| {
            if s.is_char_boundary(k) {
                start = k;
            }
            start
        }));
    };
    for (i, c) in s[changed..].char_indices() {
        let at = changed + i;
        if csi == 0 && c != '\u{1b}' && fold(c) == Fold::Keep {
            continue;
        }
        flush(&mut text, &mut from, kept, at);
        kept = at + c.len_utf8();
        match csi {
            1 if c == '[' => {
                csi = 2;
                continue;
            }
            2 if ('\u{20}'..='\u{3f}').contains(&c) => continue,
            2 if ('\u{40}'..='\u{7e}').contains(&c) => {
                csi = 0;
                continue;
            }
            _ => csi = 0,
        }
        if c == '\u{1b}' {
            csi = 1;
        }
        match fold(c) {
            Fold::Keep => push(&mut text, &mut from, at, c),
            Fold::Drop => {}
            Fold::Space => push(&mut text, &mut from, at, ' '),
            Fold::Dash => push(&mut text, &mut from, at, '-'),
            Fold::Dot => push(&mut text, &mut from, at, '.'),
            Fold::Digit(d) => push(&mut text, &mut from, at, char::from(b'0' + d)),
            Fold::Ascii(a) => push(&mut text, &mut from, at, char::from(a)),
            Fold::Nfkc => {
                for d in std::iter::once(c).nfkc() {
                    match fold(d) {
                        Fold::Drop => {}
                        Fold::Space => push(&mut text, &mut from, at, ' '),
                        Fold::Dash => push(&mut text, &mut from, at, '-'),
                        Fold::Dot => push(&mut text, &mut from, at, '.'),
                        Fold::Digit(v) => push(&mut text, &mut from, at, char::from(b'0' + v)),
                        Fold::Ascii(a) => push(&mut text, &mut from, at, char::from(a)),
                        Fold::Keep | Fold::Nfkc => push(&mut text, &mut from, at, d),
                    }
                }
            }
        }
    }
    flush(&mut text, &mut from, kept, s.len());
    from.push(s.len());
    Some(View { text, from })
}

impl View {
    /// The view of `s` without the bytes at the ascending offsets `drop`
    /// (each an ASCII byte).
    pub(crate) fn without(s: &str, drop: &[usize]) -> View {
        let mut text = String::with_capacity(s.len());
        let mut from = Vec::with_capacity(s.len() + 1);
        // The text between two dropped bytes is copied whole; each of its
        // bytes comes from itself when it is ASCII, else from the start of
        // its character.
        let mut keep = |a: usize, b: usize| {
            let part = &s[a..b];
            text.push_str(part);
            if part.is_ascii() {
                from.extend(a..b);
            } else {
                for (at, c) in part.char_indices() {
                    from.extend(std::iter::repeat_n(a + at, c.len_utf8()));
                }
            }
        };
        let mut at = 0;
        for &d in drop {
            debug_assert!(d >= at && s.as_bytes()[d].is_ascii());
            keep(at, d);
            at = d + 1;
        }
        keep(at, s.len());
        from.push(s.len());
        View { text, from }
    }

    /// The original span of the view's bytes `start..end` (`start < end`):
    /// from the first character that produced them to the end of the last,
    /// with everything the view dropped in between. `s` is the original.
    /// How many of the view's first bytes come from the original's bytes
    /// before `floor` (a character's first byte in the original): a span
    /// of the view ending at or before it maps, by [`View::original_tight`],
    /// to one ending at or before `floor`.
    pub(crate) fn bytes_before(&self, floor: usize) -> usize {
        let n = self.from.len() - 1;
        self.from[..n].partition_point(|&o| o < floor)
    }

    /// The most of the view's first bytes whose every span maps, by
    /// [`View::original`], to one ending at or before `floor` (a character's
    /// first byte in the original): its last character begins before
    /// `floor`, and what the view dropped after it ends by then.
    pub(crate) fn bytes_ending_by(&self, floor: usize) -> usize {
        let upto = self.from.partition_point(|&o| o <= floor).saturating_sub(1);
        let before = self.from.partition_point(|&o| o < floor);
        upto.min(before)
    }

    pub(crate) fn original(&self, s: &str, start: usize, end: usize) -> (usize, usize) {
        let last = self.from[end - 1];
        let width = s[last..].chars().next().map_or(0, char::len_utf8);
        // What the view dropped right after the last character (a keycap,
        // an accent, a joiner) belongs to it: up to the next character
        // the view kept.
        let next = self.from[end].max(last + width);
        (self.from[start], next)
    }

    /// Where the view's bytes `start..end` begin in the original when
    /// they are its bytes there, copied one for one with nothing dropped
    /// among them or right after them.
    pub(crate) fn unmoved(&self, start: usize, end: usize) -> Option<usize> {
        let o = *self.from.get(start)?;
        let one_for_one = self
            .from
            .get(start..=end)?
            .iter()
            .zip(o..)
            .all(|(&f, k)| f == k);
        one_for_one.then_some(o)
    }

    /// [`View::original`] ending with the last character that produced
    /// `end - 1`: for views that drop separators between groups, where
    /// what was dropped after a match is the gap before the next group
    /// (which a match glued to that group must not swallow).
    pub(crate) fn original_tight(&self, s: &str, start: usize, end: usize) -> (usize, usize) {
        let last = self.from[end - 1];
        let width = s[last..].chars().next().map_or(0, char::len_utf8);
        (self.from[start], last + width)
    }
}

/// The fewest single characters, each set apart by separators, that
/// read as one spaced-out word (`4 1 1 1 …`, `A-K-I-A-…`): a card number's
/// shortest length less one, fewer than a spaced SSN or a row of a
/// calendar (`1 2 3 4 5 6 7 8 9`).
pub(crate) const SPACED_RUN: usize = 12;

/// A separator between the characters of a spaced-out word.
fn spacer(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b'-' | b'.' | b'_' | b',' | b'/' | b'|' | b'*' | b':' | b'+'
    )
}

/// The most separators between two characters of a spaced-out word
/// (`A  K`, `A, K`, `A - K`, `A\r\nK`).
pub(crate) const SPACED_GAP: usize = 3;

/// The byte offsets of the separators inside the spaced-out words of `b`
/// (see [`spaced`]). With `json`, `b` is a raw JSON message: an escape
/// pair (`\n`, `\t`, `\/` …) is one separator, and its letter is no
/// letter of a word.
fn spaced_drops(b: &[u8], json: bool) -> Vec<usize> {
    let escaped = |i: usize| json && i > 0 && b[i - 1] == b'\\';
    let alnum = |i: usize| b[i].is_ascii_alphanumeric() && !escaped(i);
    let single =
        |i: usize| alnum(i) && (i == 0 || !alnum(i - 1)) && (i + 1 == b.len() || !alnum(i + 1));
    // The separators after the single character at `i`, up to the next
    // single character: `(next, separator bytes)`.
    let gap = |i: usize| -> Option<usize> {
        let mut j = i + 1;
        let mut n = 0;
        while n < SPACED_GAP && j < b.len() {
            if spacer(b[j]) {
                j += 1;
            } else if json && b[j] == b'\\' && j + 1 < b.len() {
                j += 2;
            } else {
                break;
            }
            n += 1;
        }
        (n > 0 && j < b.len() && single(j)).then_some(j)
    };
    let mut drop = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            // Separators, punctuation, other scripts, emoji: passed over
            // a byte at a time without a look at their neighbours.
            i += 1;
            continue;
        }
        if i + 1 < b.len() && alnum(i) && alnum(i + 1) {
            // Inside a word, no letter stands alone: over it at once.
            i += 2;
            while i < b.len() && alnum(i) {
                i += 1;
            }
            continue;
        }
        if !single(i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut n = 1;
        while let Some(j) = gap(i) {
            i = j;
            n += 1;
        }
        if n >= SPACED_RUN {
            let mut k = start;
            while k < i {
                if !alnum(k) || escaped(k) {
                    drop.push(k);
                }
                k += 1;
            }
        }
        i += 1;
    }
    drop
}

/// The view of `s` with the separators inside spaced-out words removed
/// (`A K I A I O S F …` reads as `AKIAIOSF…` to a reader): runs of at
/// least [`SPACED_RUN`] single ASCII letters or digits, each set apart
/// from the next by one to [`SPACED_GAP`] separators (spaces, line
/// breaks, tabs, `-._,/|*:+`, mixed). `None` when `s` holds no such run.
pub(crate) fn spaced(s: &str) -> Option<View> {
    let drop = spaced_drops(s.as_bytes(), false);
    if drop.is_empty() {
        return None;
    }
    Some(View::without(s, &drop))
}

/// Whether `b` may hold a spaced-out word (see [`spaced`]).
pub(crate) fn may_be_spaced(b: &[u8]) -> bool {
    !spaced_drops(b, false).is_empty()
}

/// [`may_be_spaced`] of a raw JSON message, whose escapes (`\n`, `\t`)
/// are separators.
pub(crate) fn may_be_spaced_json(b: &[u8]) -> bool {
    !spaced_drops(b, true).is_empty()
}

/// The normalised text of `s` (itself when nothing changes).
pub(crate) fn normalised(s: &str) -> std::borrow::Cow<'_, str> {
    match view(s) {
        Some(v) => std::borrow::Cow::Owned(v.text),
        None => std::borrow::Cow::Borrowed(s),
    }
}

/// Whether `s` is made only of characters the view drops.
pub(crate) fn invisible(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| fold(c) == Fold::Drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalised(s).into_owned()
    }

    /// [`view`] as it was first written: character by character.
    fn view_reference(s: &str) -> Option<View> {
        let first = super::super::decode::first_unusual(s.as_bytes())?;
        let (changed, _) = s[first..]
            .char_indices()
            .find(|&(_, c)| fold(c) != Fold::Keep)?;
        let changed = first + changed;
        let mut text = String::with_capacity(s.len());
        let mut from = Vec::with_capacity(s.len() + 1);
        text.push_str(&s[..changed]);
        for (i, c) in s[..changed].char_indices() {
            from.extend(std::iter::repeat_n(i, c.len_utf8()));
        }
        let push = |text: &mut String, from: &mut Vec<usize>, at: usize, c: char| {
            let n = text.len();
            text.push(c);
            from.extend(std::iter::repeat_n(at, text.len() - n));
        };
        // Inside a terminal escape sequence (`ESC [` parameters, a final byte
        // in `@`..`~`): nothing of it is seen.
        let mut csi = 0u8;
        for (i, c) in s[changed..].char_indices() {
            let at = changed + i;
            match csi {
                1 if c == '[' => {
                    csi = 2;
                    continue;
                }
                2 if ('\u{20}'..='\u{3f}').contains(&c) => continue,
                2 if ('\u{40}'..='\u{7e}').contains(&c) => {
                    csi = 0;
                    continue;
                }
                _ => csi = 0,
            }
            if c == '\u{1b}' {
                csi = 1;
            }
            match fold(c) {
                Fold::Keep => push(&mut text, &mut from, at, c),
                Fold::Drop => {}
                Fold::Space => push(&mut text, &mut from, at, ' '),
                Fold::Dash => push(&mut text, &mut from, at, '-'),
                Fold::Dot => push(&mut text, &mut from, at, '.'),
                Fold::Digit(d) => push(&mut text, &mut from, at, char::from(b'0' + d)),
                Fold::Ascii(a) => push(&mut text, &mut from, at, char::from(a)),
                Fold::Nfkc => {
                    for d in std::iter::once(c).nfkc() {
                        match fold(d) {
                            Fold::Drop => {}
                            Fold::Space => push(&mut text, &mut from, at, ' '),
                            Fold::Dash => push(&mut text, &mut from, at, '-'),
                            Fold::Dot => push(&mut text, &mut from, at, '.'),
                            Fold::Digit(v) => push(&mut text, &mut from, at, char::from(b'0' + v)),
                            Fold::Ascii(a) => push(&mut text, &mut from, at, char::from(a)),
                            Fold::Keep | Fold::Nfkc => push(&mut text, &mut from, at, d),
                        }
                    }
                }
            }
        }
        from.push(s.len());
        Some(View { text, from })
    }

    proptest::proptest! {
        #[test]
        fn the_view_is_what_the_character_by_character_view_was(
            s in "([a-zA-Z0-9 .-]{1,4}|[é日한😀️\u{200b}\u{ad}\u{301}\u{1b}\\[0-9;m١２ＡАⅫﬁ\u{a0}\u{3000}。‐\u{e0041}]){0,40}",
        ) {
            let (a, b) = (view(&s), view_reference(&s));
            proptest::prop_assert_eq!(a.is_some(), b.is_some());
            if let (Some(a), Some(b)) = (a, b) {
                proptest::prop_assert_eq!(&a.text, &b.text);
                proptest::prop_assert_eq!(&a.from, &b.from);
            }
        }
    }

    /// [`spaced_drops`] as it was first written: every byte asked whether
    /// it stands alone.
    fn spaced_drops_reference(b: &[u8], json: bool) -> Vec<usize> {
        let escaped = |i: usize| json && i > 0 && b[i - 1] == b'\\';
        let alnum = |i: usize| b[i].is_ascii_alphanumeric() && !escaped(i);
        let single =
            |i: usize| alnum(i) && (i == 0 || !alnum(i - 1)) && (i + 1 == b.len() || !alnum(i + 1));
        let gap = |i: usize| -> Option<usize> {
            let (mut j, mut n) = (i + 1, 0);
            while n < SPACED_GAP && j < b.len() {
                if spacer(b[j]) {
                    j += 1;
                } else if json && b[j] == b'\\' && j + 1 < b.len() {
                    j += 2;
                } else {
                    break;
                }
                n += 1;
            }
            (n > 0 && j < b.len() && single(j)).then_some(j)
        };
        let (mut drop, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if !single(i) {
                i += 1;
                continue;
            }
            let (start, mut n) = (i, 1);
            while let Some(j) = gap(i) {
                i = j;
                n += 1;
            }
            if n >= SPACED_RUN {
                drop.extend((start..i).filter(|&k| !alnum(k) || escaped(k)));
            }
            i += 1;
        }
        drop
    }

    proptest::proptest! {
        #[test]
        fn spaced_drops_are_what_the_byte_by_byte_look_finds(
            s in "([a-zA-Z0-9]{1,3}|[ ,._:/|*+\\-]{1,4}|\\\\[nt\"u/]|[é日😀\t\r\n]){0,60}",
            json in proptest::bool::ANY,
        ) {
            proptest::prop_assert_eq!(
                spaced_drops(s.as_bytes(), json),
                spaced_drops_reference(s.as_bytes(), json)
            );
        }

        /// Mostly single characters apart, so that runs long enough to
        /// be spaced-out words (and their edges) are common.
        #[test]
        fn spaced_words_are_found_as_the_byte_by_byte_look_finds_them(
            s in "([a-zA-Z0-9][ ,.:|-]{1,2}|[a-z0-9]{2}|\\\\[nt]|[ é]){10,80}",
            json in proptest::bool::ANY,
        ) {
            proptest::prop_assert_eq!(
                spaced_drops(s.as_bytes(), json),
                spaced_drops_reference(s.as_bytes(), json)
            );
        }
    }

    /// [`View::without`] as it was first written: character by character.
    /// A view's bytes are unmoved where they are the original's, one for
    /// one, with nothing dropped among them or right after them.
    #[test]
    fn a_floor_maps_to_the_view_bytes_that_end_by_it() {
        // A grouped view: a span ending at view byte 4 ends at 5 in the
        // original (`cd`'s `d`), one ending at 2 at 2 (`b`).
        let v = View::without("ab-cd ef-gh", &[2, 8]);
        assert_eq!(v.bytes_before(5), 4);
        assert_eq!(v.original_tight("ab-cd ef-gh", 0, 4).1, 5);
        assert_eq!(v.bytes_before(3), 2, "the dropped `-` is before no byte");
        assert_eq!(v.bytes_before(0), 0);
        // A normalised view: what it drops after a character (a zero-width
        // space) belongs to that character's span, so a floor right after
        // the character but before the space takes it out.
        let s = "ab\u{200b}cd";
        let n = view(s).expect("a view");
        assert_eq!(n.text, "abcd");
        assert_eq!(n.original(s, 0, 2), (0, 5), "the space goes with `b`");
        assert_eq!(n.bytes_ending_by(2), 1, "`b`'s span ends past 2");
        assert_eq!(n.bytes_ending_by(5), 2);
        for floor in [0, 1, 2, 5, 6, 7] {
            let k = n.bytes_ending_by(floor);
            for end in 1..=k {
                assert!(n.original(s, 0, end).1 <= floor, "{floor} {end}");
            }
        }
    }

    #[test]
    fn unmoved_bytes_are_the_originals_one_for_one() {
        let v = View::without("ab-cd ef-gh", &[2, 8]);
        assert_eq!(v.text, "abcd efgh");
        assert_eq!(v.unmoved(0, 2), None, "a drop right after");
        assert_eq!(v.unmoved(0, 3), None, "a drop among them");
        assert_eq!(v.unmoved(2, 4), Some(3));
        assert_eq!(v.unmoved(3, 6), Some(4));
        assert_eq!(v.unmoved(7, 9), Some(9), "to the end");
        assert_eq!(v.unmoved(7, 10), None, "past the end");
        let w = View::without("é-abc", &[2]);
        assert_eq!(w.unmoved(0, 2), None, "one character's two bytes");
        assert_eq!(w.unmoved(2, 5), Some(3));
    }

    fn without_reference(s: &str, drop: &[usize]) -> (String, Vec<usize>) {
        let (mut text, mut from) = (String::new(), Vec::new());
        let mut next = drop.iter().peekable();
        for (at, c) in s.char_indices() {
            if next.peek() == Some(&&at) {
                next.next();
                continue;
            }
            let n = text.len();
            text.push(c);
            from.extend(std::iter::repeat_n(at, text.len() - n));
        }
        from.push(s.len());
        (text, from)
    }

    proptest::proptest! {
        /// Copying the text between dropped bytes whole makes the view and
        /// its map a character-by-character copy makes.
        #[test]
        fn a_view_without_bytes_is_copied_whole_between_them(
            chars in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec!['a', 'Z', '4', ' ', '-', '.']),
                    proptest::sample::select(vec!['é', '日', '٤', '\u{200b}', '😀']),
                ],
                0..60,
            ),
            picks in proptest::collection::vec(proptest::prelude::any::<bool>(), 60),
        ) {
            let s: String = chars.into_iter().collect();
            let drop: Vec<usize> = s
                .char_indices()
                .filter(|&(at, c)| c.is_ascii() && picks[at % picks.len()])
                .map(|(at, _)| at)
                .collect();
            let v = View::without(&s, &drop);
            let (text, from) = without_reference(&s, &drop);
            proptest::prop_assert_eq!(&v.text, &text);
            proptest::prop_assert_eq!(&v.from, &from);
        }
    }

    /// The table is the fold: every character it holds folds as the
    /// Unicode tables say, and every fold survives packing.
    #[test]
    fn the_fold_table_is_the_fold() {
        for u in 0x80..FOLDED_BELOW as u32 {
            let Some(c) = char::from_u32(u) else {
                continue;
            };
            let slow = fold_of(c);
            assert!(
                !matches!(slow, Fold::Digit(d) if d > 9)
                    && !matches!(slow, Fold::Ascii(a) if a >= 0x80),
                "{u:04X}: {slow:?}"
            );
            assert_eq!(fold(c), slow, "{u:04X}");
        }
        // Past the table: the tables themselves.
        for c in ['\u{e0041}', '\u{20000}', '\u{1d7d2}', '\u{10ffff}'] {
            assert_eq!(fold(c), fold_of(c));
        }
    }

    #[test]
    fn folds_what_a_reader_does_not_see() {
        assert!(view("plain ascii 4111").is_none());
        assert!(
            view("café 日本 한국어 ひらがな").is_none(),
            "nothing changes"
        );
        assert_eq!(
            norm("4111\u{200b}1111\u{200c}1111\u{feff}1111"),
            "4111111111111111"
        );
        assert_eq!(
            norm("AKIA\u{2060}IOSF\u{00ad}ODNN\u{e0041}7EX"),
            "AKIAIOSFODNN7EX"
        );
        assert_eq!(
            norm("a\u{180e}\u{2061}\u{2064}\u{206a}\u{206f}\u{fe0f}b"),
            "ab"
        );
        assert_eq!(
            norm("4111\u{a0}1111\u{2007}1111\u{3000}1111"),
            "4111 1111 1111 1111"
        );
        assert_eq!(
            norm("1\u{1680}2\u{2000}3\u{200a}4\u{202f}5\u{205f}6"),
            "1 2 3 4 5 6"
        );
        assert_eq!(norm("１２３\u{2011}４５\u{2013}６７８９"), "123-45-6789");
        assert_eq!(norm("ＡＫＩＡ𝟒𝟙𝟣𝟭𝟷⁴₄"), "AKIA4111144");
        assert_eq!(norm("ｍａｉｌ＠ｅｘａｍｐｌｅ．ｃｏｍ"), "mail@example.com");
        assert_eq!(norm("ﬁle"), "file");
    }

    #[test]
    fn drops_controls_escapes_and_marks_a_reader_passes_over() {
        assert_eq!(norm("AKIA\u{0}IOSF\u{7f}ODNN"), "AKIAIOSFODNN");
        // A terminal renders the escape sequence as nothing.
        assert_eq!(norm("AKIA\u{1b}[0mIOSF\u{1b}[1;31mODNN"), "AKIAIOSFODNN");
        assert_eq!(norm("AKIA\u{301}IOSF\u{20dd}ODNN"), "AKIAIOSFODNN");
        assert_eq!(norm("alice@example\u{3002}com"), "alice@example.com");
        assert_eq!(norm("alice@example\u{ff61}com"), "alice@example.com");
        // Tabs and line breaks are text, and printable ASCII has no view.
        assert!(view("a\tb\nc\r").is_none());
        assert!(view("plain [0m text").is_none());
        let s = "x AKIA\u{1b}[0mIOSF";
        let v = view(s).expect("changes");
        assert_eq!(v.text, "x AKIAIOSF");
        assert_eq!(v.original(s, 2, 10), (2, s.len()));
    }

    #[test]
    fn maps_back_to_whole_original_characters() {
        let s = "x 4111\u{200b}\u{200b}1111 ４１ ﬁ";
        let v = view(s).expect("changes");
        assert_eq!(v.text, "x 41111111 41 fi");
        // The view's `41111111` is the original from `4` to the last `1`,
        // both zero-width spaces included.
        assert_eq!(v.original(s, 2, 10), (2, 16));
        assert_eq!(&s[2..16], "4111\u{200b}\u{200b}1111");
        // `４１` (three bytes each).
        assert_eq!(v.original(s, 11, 13), (17, 23));
        // A match ending inside an unchanged multi-byte character takes it
        // whole, and the invisible character after it that the view dropped.
        let s2 = "é\u{200b}";
        let v2 = view(s2).expect("changes");
        assert_eq!(v2.original(s2, 0, 2), (0, 5));
        assert_eq!(v2.original(s2, 1, 2), (0, 5));
        // A keycap card leaves no keycap marks behind.
        let s3 = "1\u{fe0f}\u{20e3}2\u{fe0f}\u{20e3} x";
        let v3 = view(s3).expect("changes");
        assert_eq!(v3.text, "12 x");
        assert_eq!(v3.original(s3, 0, 2), (0, 14));
        // Half of an expansion maps to the whole character.
        assert_eq!(v.original(s, 15, 16), (24, 27));
        assert_eq!(v.original(s, 0, v.text.len()), (0, s.len()));
    }

    /// Digits NFKC keeps read as their ASCII digits; the rule that finds a
    /// digit's value agrees with NFKC wherever NFKC gives one.
    #[test]
    fn digits_of_every_script_read_as_ascii() {
        assert_eq!(norm("٤١١١ ١١١١ ١١١١ ١١١١"), "4111 1111 1111 1111");
        assert_eq!(norm("۱۲۳-۴۵-۶۷۸۹"), "123-45-6789");
        assert_eq!(norm("४१११-१११"), "4111-111");
        assert_eq!(norm("৪১১১ ๔๑๑๑ ༤༡ ၄၁"), "4111 4111 41 41");
        // Look-alikes NFKC keeps or expands with punctuation.
        assert_eq!(norm("❹❶❶❶ ➃➀➀➀ ➍➊➊➊ ⓸⓵⓵⓵ ⓿"), "4111 4111 4111 4111 0");
        assert_eq!(norm("⑷⑴⑴⑴ ⒋⒈⒈⒈ 🄅🄂🄂🄂 🄀"), "4111 4111 4111 0");
        // Spacing marks dropped; every dash a `-`; the braille blank a space.
        assert_eq!(norm("४ः१ः१ः१ः"), "4111");
        assert_eq!(norm("1֊2־3〜4➖5˗6⁃7\u{2800}8"), "1-2-3-4-5-6-7 8");
        let mut seen = 0;
        for c in (0x80..=0x10FFFFu32).filter_map(char::from_u32) {
            if get_general_category(c) != GeneralCategory::DecimalNumber {
                continue;
            }
            seen += 1;
            let Fold::Digit(d) = fold(c) else {
                panic!("{:04X} is not read as a digit", c as u32)
            };
            let nfkc: String = std::iter::once(c).nfkc().collect();
            if let [b @ b'0'..=b'9'] = nfkc.as_bytes() {
                assert_eq!(d, b - b'0', "{:04X}", c as u32);
            }
        }
        assert!(seen > 600, "{seen}");
    }

    /// Letters of other scripts drawn like ASCII ones, and CJK numerals.
    #[test]
    fn lookalike_letters_and_numerals_read_as_ascii() {
        // Cyrillic А К І А, Greek Ο, Cyrillic Е, Ѕ, Armenian օ.
        assert_eq!(
            norm("\u{410}\u{41a}\u{406}\u{410}IOSFODNN7EXAMPLE"),
            "AKIAIOSFODNN7EXAMPLE"
        );
        assert_eq!(norm("ΟΕ\u{405}օ"), "OESo");
        assert_eq!(norm("ghр_"), "ghp_");
        assert_eq!(norm("四一一一 一一一一 〇零"), "4111 1111 00");
        // Text of those scripts keeps the letters nothing resembles.
        assert_eq!(norm("Пароль"), "Пapoль");
        assert!(view("日本語のテキスト").is_none());
    }

    #[test]
    fn spaced_out_words_are_read_whole() {
        let s = "key A K I A I O S F O D N N 7 E X A M P L E end";
        let v = spaced(s).expect("spaced");
        assert_eq!(v.text, "key AKIAIOSFODNN7EXAMPLE end");
        // The match maps back over the separators.
        assert_eq!(v.original(s, 4, 24), (4, 43));
        assert_eq!(
            spaced("4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1").map(|v| v.text),
            Some("4111111111111111".into())
        );
        // Too short, words, groups: nothing.
        for plain in [
            "1 2 3 4 5 6 7 8 9 10 11",
            "a b c d e f g h i j k",
            "4111 1111 1111 1111",
            "I am a b c",
        ] {
            assert!(spaced(plain).is_none(), "{plain}");
        }
    }

    /// Review: one to three separators between the characters, mixed,
    /// line breaks and tabs included; a raw message's escapes are
    /// separators to the gate.
    #[test]
    fn spaced_out_words_with_wider_separators() {
        for (s, want) in [
            ("A  K  I  A  I  O  S  F  O  D  N  N", "AKIAIOSFODNN"),
            ("A, K, I, A, I, O, S, F, O, D, N, N", "AKIAIOSFODNN"),
            (
                "A - K - I - A - I - O - S - F - O - D - N - N",
                "AKIAIOSFODNN",
            ),
            ("A\nK\r\nI\tA:I+O S-F.O_D,N/N|7*E", "AKIAIOSFODNN7E"),
        ] {
            assert_eq!(spaced(s).map(|v| v.text), Some(want.to_owned()), "{s:?}");
        }
        // Four separators, or eleven characters: nothing.
        assert!(spaced("A ,  K ,  I ,  A ,  I ,  O ,  S ,  F ,  O ,  D ,  N ,  N").is_none());
        assert!(spaced("a, b, c, d, e, f, g, h, i, j, k").is_none());
        // The raw message writes a line break as `\n`: its `n` is no
        // letter, and the pair is one separator.
        let raw = r#"{"t":"\nA\nK\nI\nA\nI\nO\nS\nF\nO\nD\nN\nN"}"#;
        assert!(may_be_spaced_json(raw.as_bytes()));
        assert!(!may_be_spaced(raw.as_bytes()));
    }

    #[test]
    fn invisible_runs() {
        assert!(invisible("\u{200b}\u{200d}\u{e0041}"));
        assert!(!invisible("\u{200b}a"));
        assert!(!invisible(""));
    }

    /// The tables agree with the Unicode data: every Cf character is
    /// dropped, every Zs one is a space.
    #[test]
    fn categories_are_complete() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if c.is_ascii() {
                continue;
            }
            match get_general_category(c) {
                GeneralCategory::Format => assert_eq!(fold(c), Fold::Drop, "{:04X}", c as u32),
                GeneralCategory::SpaceSeparator => {
                    assert_eq!(fold(c), Fold::Space, "{:04X}", c as u32)
                }
                _ => {}
            }
        }
    }
}
