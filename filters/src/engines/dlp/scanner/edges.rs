//! Personal data and markers glued to the text around them (`id123-45-6789`,
//! `cc4111111111111111`, `user_passport: X1234567`). A `\b` fails wherever
//! the byte beside the token is a word character, though a reader still
//! sees the token whole. Every built-in detector that is not a secret (the
//! secrets have `glued`) and has a boundary is rewritten here to read its
//! token where the token's own class ends:
//!
//! - a digit edge (an SSN, a card, a phone number, an address, a value
//!   after its keyword) is bounded by any character but a digit: glued to
//!   letters or `_` it is found; glued to digits it is part of a longer
//!   number, another number (`1234123-45-6789`, `41111111111111111`);
//! - an edge in a run of letters and digits (an IBAN's tail, a passport
//!   value, a NINO, a SWIFT code) is bounded by any character outside
//!   that run's class (`_`, punctuation, a digit after a letter-only
//!   run): a longer run is another token;
//! - a keyword (`passport`, `routing`, `sin`, `dob` …) starts after any
//!   character but a letter or digit, so after `_` too
//!   (`user_passport`), and its words may be joined by `_`
//!   (`routing_number`, `date_of_birth`); a keyword inside a longer word
//!   is another word (`public`, `using`, `database` hold `bic`, `sin`,
//!   `aba`).
//!
//! The patterns read their edges by consuming the byte beside the token
//! (there is no look-behind); group 1 is the finding, and the next search
//! starts where the finding ends. Validators still apply (Luhn, SSN area
//! rules, mod-97 …), and [`glue_ok`] keeps two shapes apart that glue
//! would otherwise make findings: bare digits inside a token of hex
//! digits (a hash, a commit id) and a version (`v1.2.3.4`).

/// The glued reading of built-in detector `name`, if it has a boundary.
pub(super) fn pattern(name: &str) -> Option<&'static str> {
    Some(match name {
        // The local part with `_` in it (`john_doe@…`) from the first
        // character of its run; the top-level domain's letters run as far
        // as they go, and end before anything else (`….com_x`, `….com9`).
        "email" => r"(?i)[a-z0-9_.%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,24}",
        "phone_e164" => r"(\+[1-9](?:[ .-]?\d){7,14})(?:[^0-9]|$)",
        "phone_us" => r"(?:^|[^0-9])((?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4})(?:[^0-9]|$)",
        "phone_uk" => r"(?:^|[^0-9])(0(?:7\d{3}\s?\d{6}|20\s?\d{4}\s?\d{4}))(?:[^0-9]|$)",
        "phone_de" => r"(?:^|[^0-9])(01[5-7]\d[ /-]?\d{7,8})(?:[^0-9]|$)",
        "phone_fr" => r"(?:^|[^0-9])(0[1-9](?:[ .]\d{2}){4})(?:[^0-9]|$)",
        "us_ssn" => {
            r"(?:^|[^0-9])(\d{3}(?:-\d{2}-|\x20\d{2}\x20|\.\d{2}\.|\d{2}|\x20{2,3}\d{2}\x20{2,3}|\x20-\x20\d{2}\x20-\x20)\d{4})(?:[^0-9]|$)"
        }
        "us_itin" => {
            r"(?:^|[^0-9])(9\d{2}-(?:5[0-9]|6[0-5]|7\d|8[0-8]|9[0-24-9])-\d{4})(?:[^0-9]|$)"
        }
        "card_visa" => {
            r"(?:^|[^0-9])(4\d{3}(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3})(?:[^0-9]|$)"
        }
        "card_mastercard" => {
            r"(?:^|[^0-9])((?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3})(?:[^0-9]|$)"
        }
        "card_amex" => {
            r"(?:^|[^0-9])(3[47]\d{2}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{6}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{5})(?:[^0-9]|$)"
        }
        "card_discover" => {
            r"(?:^|[^0-9])(6(?:011|5\d{2})(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3})(?:[^0-9]|$)"
        }
        "card_jcb" => {
            r"(?:^|[^0-9])(35(?:2[89]|[3-8]\d)(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3})(?:[^0-9]|$)"
        }
        "card_diners" => {
            r"(?:^|[^0-9])(3(?:0[0-5]|[68]\d)\d(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{6}(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4})(?:[^0-9]|$)"
        }
        "card_unionpay" => {
            r"(?:^|[^0-9])(62\d{2}(?:(?:[\x20./_\t|-]|\x20{2,3}|\x20-\x20|\x20\|\x20|\r?\n|\r)?\d{4}){3})(?:[^0-9]|$)"
        }
        // The country code and check digits open the token wherever they
        // stand (letters then digits: one place only); its tail runs to
        // the end of its run of letters and digits.
        "iban" => {
            concat!(
                r"(?i)((?:",
                iban_countries!(),
                r")\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?)(?:[^A-Z0-9]|$)"
            )
        }
        "us_bank_routing" => {
            r"(?i)(?:^|[^a-z0-9])(?:routing|aba)(?:[\s_]*(?:no|number|#))?[\W_]{0,5}(\d{9})(?:[^0-9]|$)"
        }
        "swift_bic" => {
            r"(?i)(?:^|[^a-z0-9])(?:swift|bic)(?:[\s_]*code)?[\W_]{0,5}([A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)(?:[^A-Z0-9]|$)"
        }
        "date_of_birth" => {
            r"(?i)(?:^|[^a-z0-9])(?:dob|d\.o\.b\.|date[ _]of[ _]birth|birth[ _]?date|born(?:[ _]on)?)[\W_]{0,5}(\d{1,4}[./-]\d{1,2}[./-]\d{1,4})"
        }
        "ipv4_address" => {
            r"(?:^|[^0-9])((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})(?:[^0-9]|$)"
        }
        "passport_number" => {
            r"(?i)(?:^|[^a-z0-9])passport(?:[\s_]*(?:no|number|num|#))?[\W_]{0,5}([A-Z0-9]{6,9})(?:[^A-Z0-9]|$)"
        }
        "national_id" => {
            r"(?i)(?:^|[^a-z0-9])(?:national[ _]id|id[ _]number|personalausweis(?:nummer)?|identity[ _]card|cedula|dni)(?:[\s_]*(?:no|number|#))?[\W_]{0,5}([A-Z0-9]{8,12})(?:[^A-Z0-9]|$)"
        }
        "uk_nino" => {
            r"(?:^|[^A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])(?:[^A-Za-z]|$)"
        }
        "spain_dni" => r"(?:^|[^0-9])(\d{8}[A-HJ-NP-TV-Z])(?:[^A-Za-z]|$)",
        "canada_sin" => {
            r"(?i)(?:^|[^a-z0-9])(?:sin|social[ _]insurance(?:[ _]number)?)[\W_]{0,5}(\d{3}[ -]?\d{3}[ -]?\d{3})(?:[^0-9]|$)"
        }
        "india_aadhaar" => {
            r"(?i)(?:^|[^a-z0-9])aadha?ar(?:[\s_]*(?:no|number))?[\W_]{0,5}([2-9]\d{3}\s?\d{4}\s?\d{4})(?:[^0-9]|$)"
        }
        "us_driver_license" => {
            r"(?i)(?:^|[^a-z0-9])driver'?s?[\s_]*licen[cs]e(?:[\s_]*(?:no|number|#))?[\W_]{0,5}([A-Z0-9]{5,13})(?:[^A-Z0-9]|$)"
        }
        // Markers: after `_` too; their ends keep their boundary (`you are
        // now another` is no persona switch).
        "injection_instruction_override" => {
            r"(?i)(?:^|[^a-z0-9])((?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|preceding)\s+(?:instructions|prompts|messages|rules|directions))"
        }
        "injection_new_persona" => {
            r"(?i)(?:^|[^a-z0-9])(you are now (?:a|an|the|in)\b|new instructions\s*:|act as (?:an? )?(?:unrestricted|jailbroken|dan)\b)"
        }
        _ => return None,
    })
}

/// A custom keyword detector's pattern: its keywords (escaped) after any
/// character but a letter or digit and before one (`project_bluebird_x`).
pub(super) fn keywords(alts: &[String]) -> String {
    format!(
        r"(?i)(?:^|[^a-z0-9])((?:{}))(?:[^a-z0-9]|$)",
        alts.join("|")
    )
}

/// Whether a match of detector `name` over `s[start..end]` stands as a
/// finding where it is glued: bare digits glued to letters inside a token
/// of hex digits only (`3f78…5123456789ed…`, `deadbeef123456789`) are
/// that token's (a hash, a commit id, part of a UUID), unless they are as
/// long as a card number (a Luhn-valid run of twelve digits or more in
/// hex is rare); an address glued after a lone `v` is a version
/// (`v1.2.3.4`).
#[cfg(test)]
pub(super) fn glue_ok(name: &str, s: &str, start: usize, end: usize) -> bool {
    let b = s.as_bytes();
    glue_decision(name, b, start, end, || {
        let (lo, hi) = run_around(b, start, end);
        b[lo..hi].iter().all(u8::is_ascii_hexdigit)
    })
}

/// [`glue_ok`] with `hex_run` saying whether the whole run of letters and
/// digits around `start..end` is hex digits (asked last, and only of a
/// match of digits glued to a letter or digit).
fn glue_decision(
    name: &str,
    b: &[u8],
    start: usize,
    end: usize,
    hex_run: impl FnOnce() -> bool,
) -> bool {
    let before = start.checked_sub(1).map(|i| b[i]);
    let after = b.get(end).copied();
    let word = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !word(before) && !word(after) {
        return true;
    }
    if name == "ipv4_address" {
        let lone_v = matches!(before, Some(b'v' | b'V'))
            && !start
                .checked_sub(2)
                .is_some_and(|i| b[i].is_ascii_alphanumeric());
        return !lone_v;
    }
    let token = &b[start..end];
    if !token.iter().all(u8::is_ascii_digit) || token.len() >= HEX_GLUED_DIGITS {
        return true;
    }
    !hex_run()
}

/// Bare digits glued inside a token of hex digits stand as a finding from
/// this many on (see [`glue_decision`]).
pub(super) const HEX_GLUED_DIGITS: usize = 12;

/// Whether no finding of built-in detector `name` (run as `pattern`, its
/// glued reading) can hold a digit of a run of fewer than
/// [`HEX_GLUED_DIGITS`] bare digits set between two letters inside a
/// token of hex digits (`…e3f1234567a9…`). Such a finding holds no letter
/// (its token, group 1 or the whole match, matches none), so it lies
/// inside that run: bare digits glued to a letter in hex, which
/// [`glue_decision`] refuses to every detector but the IPv4 address's
/// (whose glue is a lone `v`). The digit detectors' searches pass such
/// runs over (hex digests are full of them). Their windows still hold
/// every finding, and the searches resume in step: a match that holds a
/// digit of such a run lies inside it (with its boundary letters, as
/// every such pattern reads a byte that is no digit before its token),
/// so no search begins inside one and runs past its end.
pub(super) fn sealed_in_hex(name: &str, pattern: &str) -> bool {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn letters(h: &Hir) -> bool {
        let letter = |lo: u32, hi: u32| {
            [(b'A', b'Z'), (b'a', b'z')]
                .iter()
                .any(|&(a, z)| lo <= u32::from(z) && hi >= u32::from(a))
        };
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => false,
            HirKind::Literal(l) => l.0.iter().any(|&c| c.is_ascii_alphabetic()),
            HirKind::Class(Class::Unicode(c)) => {
                c.iter().any(|r| letter(r.start() as u32, r.end() as u32))
            }
            HirKind::Class(Class::Bytes(c)) => c
                .iter()
                .any(|r| letter(u32::from(r.start()), u32::from(r.end()))),
            HirKind::Repetition(r) => letters(&r.sub),
            HirKind::Capture(c) => letters(&c.sub),
            HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(letters),
        }
    }
    // Group 1 where every match holds it (not under an alternation or a
    // repetition): a finding is then always its span. Otherwise the
    // finding may be the whole match, boundary bytes and all, and the
    // whole pattern is read.
    fn group(h: &Hir) -> Option<&Hir> {
        match h.kind() {
            HirKind::Capture(c) if c.index == 1 => Some(h),
            HirKind::Capture(c) => group(&c.sub),
            HirKind::Concat(v) => v.iter().find_map(group),
            _ => None,
        }
    }
    if name == "ipv4_address" {
        return false;
    }
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .unicode(false)
        .build()
        .parse(pattern)
    else {
        return false;
    };
    !letters(group(&hir).unwrap_or(&hir))
}

/// The whole run of letters and digits `start..end` sits in.
fn run_around(b: &[u8], start: usize, end: usize) -> (usize, usize) {
    use crate::engines::dlp::masks::{every, CHUNK};
    let word = |c: &u8| c.is_ascii_alphanumeric();
    // Whole chunks of the run are passed over 32 bytes at a time (the
    // grouped reading joins hex digests into runs of a kilobyte or more).
    let mut lo = start;
    while lo >= CHUNK && every(&b[lo - CHUNK..lo], word) {
        lo -= CHUNK;
    }
    let lo = b[..lo].iter().rposition(|c| !word(c)).map_or(0, |i| i + 1);
    let mut hi = end;
    while hi + CHUNK <= b.len() && every(&b[hi..hi + CHUNK], word) {
        hi += CHUNK;
    }
    let hi = b[hi..]
        .iter()
        .position(|c| !word(c))
        .map_or(b.len(), |i| hi + i);
    (lo, hi)
}

/// [`glue_ok`] for the matches of one text, each run of letters and
/// digits read once: in a text that is one long run (hex digests joined
/// by the grouped reading) every glued number asked about its whole run
/// made the scan quadratic (a second for 256 KiB).
pub(super) struct Glue<'a> {
    b: &'a [u8],
    /// Runs already read: start → (end, all hex digits).
    runs: std::cell::RefCell<std::collections::BTreeMap<usize, (usize, bool)>>,
    /// How many runs were read whole (each at most once).
    #[cfg(test)]
    reads: std::cell::Cell<usize>,
}

impl<'a> Glue<'a> {
    pub(super) fn new(s: &'a str) -> Glue<'a> {
        Glue {
            b: s.as_bytes(),
            runs: Default::default(),
            #[cfg(test)]
            reads: Default::default(),
        }
    }

    /// [`glue_ok`] of the match `start..end` of this text.
    pub(super) fn ok(&self, name: &str, start: usize, end: usize) -> bool {
        glue_decision(name, self.b, start, end, || self.hex_run(start, end))
    }

    /// Whether the whole run of letters and digits around `start..end`
    /// is hex digits.
    fn hex_run(&self, start: usize, end: usize) -> bool {
        let mut runs = self.runs.borrow_mut();
        if let Some((_, &(hi, hex))) = runs.range(..=start).next_back() {
            if end <= hi {
                return hex;
            }
        }
        let (lo, hi) = run_around(self.b, start, end);
        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
        let hex = crate::engines::dlp::masks::all_hex(&self.b[lo..hi]);
        runs.insert(lo, (hi, hex));
        hex
    }

    /// Whether `start..end` is a run of fewer than [`HEX_GLUED_DIGITS`]
    /// bare digits with a letter on each side, inside a token of hex
    /// digits: no finding of a detector [`sealed_in_hex`] holds a digit
    /// of it.
    pub(super) fn sealed(&self, start: usize, end: usize) -> bool {
        let b = self.b;
        start > 0
            && end < b.len()
            && end - start < HEX_GLUED_DIGITS
            && b[start - 1].is_ascii_alphabetic()
            && b[end].is_ascii_alphabetic()
            && b[start..end].iter().all(u8::is_ascii_digit)
            && self.hex_run(start, end)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::engines::dlp::detectors::{Category, SPECS};

    proptest::proptest! {
        /// The memo answers every match of a text as the look at its
        /// whole run does, in any order.
        #[test]
        fn the_glue_memo_is_the_whole_look(
            text in "[0-9a-fA-Fgz .-]{1,80}",
            spans in proptest::collection::vec((0usize..80, 1usize..14), 1..12),
        ) {
            let memo = super::Glue::new(&text);
            for (start, len) in spans {
                let (start, end) = (start.min(text.len() - 1), (start + len).min(text.len()));
                if start >= end {
                    continue;
                }
                for name in ["us_ssn", "ipv4_address"] {
                    proptest::prop_assert_eq!(
                        memo.ok(name, start, end),
                        super::glue_ok(name, &text, start, end),
                        "{} {}..{}", text, start, end
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The run around a match, found 32 bytes at a time, is the one
        /// found a byte at a time; and the hex look is the plain one.
        #[test]
        fn the_run_around_a_match_is_found_as_bytes_read_one_by_one(
            text in "([0-9a-f]{0,80}[g-z]?[ .-]?){1,8}",
            at in 0usize..700,
            len in 1usize..14,
        ) {
            let b = text.as_bytes();
            let start = at.min(b.len().saturating_sub(1));
            let end = (start + len).min(b.len());
            let word = |c: &u8| c.is_ascii_alphanumeric();
            let lo = b[..start].iter().rposition(|c| !word(c)).map_or(0, |i| i + 1);
            let hi = b[end..].iter().position(|c| !word(c)).map_or(b.len(), |i| end + i);
            proptest::prop_assert_eq!(super::run_around(b, start, end), (lo, hi));
            proptest::prop_assert_eq!(
                crate::engines::dlp::masks::all_hex(&b[lo..hi]),
                b[lo..hi].iter().all(u8::is_ascii_hexdigit)
            );
        }
    }

    /// Review (a second per 256 KiB of hex digests): the grouped reading
    /// joins digests into one run, and each glued number in it read the
    /// whole run again. A run is read once, however many numbers sit in it.
    #[test]
    fn a_long_run_is_read_once_for_all_its_numbers() {
        let text: String = (0..4000)
            .map(|i| if i % 16 < 9 { '7' } else { 'a' })
            .collect();
        let memo = super::Glue::new(&text);
        for start in (0..3900).step_by(16) {
            assert!(!memo.ok("us_ssn", start, start + 9), "{start}");
        }
        assert_eq!(memo.reads.get(), 1);
    }

    /// The IBAN patterns' country alternation is the validator's table:
    /// every pair of letters it takes has a length there, and no other.
    #[test]
    fn the_iban_patterns_begin_with_the_tables_countries() {
        let re = regex::Regex::new(concat!("^(?:", iban_countries!(), ")$")).unwrap();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let pair = String::from_utf8(vec![a, b]).unwrap();
                let known = crate::engines::dlp::validators::IBAN_LENGTHS
                    .iter()
                    .any(|(c, _)| *c == pair);
                assert_eq!(re.is_match(&pair), known, "{pair}");
            }
        }
    }

    /// Every built-in detector with a boundary that is not a secret has
    /// its glued reading (a new detector cannot be forgotten), and each
    /// reading names a detector of the library.
    #[test]
    fn every_bounded_detector_has_a_glued_reading() {
        for s in SPECS {
            if s.category == Category::Secret || !s.pattern.contains(r"\b") {
                continue;
            }
            assert!(super::pattern(s.name).is_some(), "{} has none", s.name);
        }
        for s in SPECS {
            if let Some(p) = super::pattern(s.name) {
                assert!(s.category != Category::Secret, "{}", s.name);
                assert!(
                    regex_syntax::Parser::new().parse(p).is_ok(),
                    "{}: {p}",
                    s.name
                );
            }
        }
    }
}
