//! Text written in groups: a key set out in blocks (`AKIA IOSF ODNN 7EXA
//! MPLE`), a hex dump (`41 4b 49 41 …`, `41:4b:…`, `\x41\x4b…`, `0x41,
//! 0x4b, …`), base64 wrapped in lines shorter than a run or set apart in
//! groups by spaces. A reader (or the model) reads the groups as one word,
//! so the scanner reads them joined: a run of at least [`MIN_GROUPS`]
//! groups of one length (the last may be shorter), at least two characters
//! each, each set apart from the next by as many (one to [`MAX_GAP`])
//! separators, joined at least [`MIN_JOINED`] characters long, with a
//! letter next to a digit somewhere, in a group or across a gap (prose
//! has few). The joined text is scanned as it is and for the encodings it
//! may be (hex, base64); a run holding a hex dump beside other groups is
//! also read with only the dump joined.

use super::normalise::View;

/// The fewest groups in a run.
pub(crate) const MIN_GROUPS: usize = 3;

/// The most separators between two groups (`41 4b`, `41, 4b`, `41 , 4b`).
pub(crate) const MAX_GAP: usize = 3;

/// The least length of a run's groups joined (a key's shortest form).
pub(crate) const MIN_JOINED: usize = 12;

/// A byte of a group: letters, digits and base64's `+/=`.
fn group_byte(b: u8) -> bool {
    CLASS[b as usize] == GROUP
}

/// A byte between groups.
fn separator(b: u8) -> bool {
    CLASS[b as usize] == SEPARATOR
}

const GROUP: u8 = 1;
const SEPARATOR: u8 = 2;

/// Each byte's class, looked up once per byte of every message (the
/// groups of prose are its words).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
            GROUP
        } else if matches!(
            b,
            b' ' | b'\t' | b'\n' | b'\r' | b':' | b',' | b'.' | b'-' | b'_' | b'|' | b';' | b'\\'
        ) {
            SEPARATOR
        } else {
            0
        };
        i += 1;
    }
    t
};

/// The length of a hex group's prefix (`x41` after a backslash, `0x41`).
fn hex_prefix(g: &[u8]) -> usize {
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_hexdigit);
    match g {
        [b'0', b'x' | b'X', d @ ..] if digits(d) => 2,
        [b'x' | b'X', d @ ..] if digits(d) => 1,
        _ => 0,
    }
}

/// The groups of `b`: `(start, end)` of each maximal run of group bytes.
/// With `json`, `b` is raw JSON: the byte after a backslash is an escape's
/// letter, no part of a group, and the pair is one separator.
fn groups(b: &[u8], json: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if json && b[i] == b'\\' {
            i += if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
            continue;
        }
        if !group_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && group_byte(b[i]) {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

/// The number of separators from the end of one group to the start of
/// the next, when it is one to [`MAX_GAP`] (an escape pair of raw JSON
/// counting as one, as the character it stands for does in the string).
fn gap(b: &[u8], from: usize, to: usize, json: bool) -> Option<usize> {
    let g = &b[from..to];
    let mut n = 0;
    let mut i = 0;
    while i < g.len() {
        if json && g[i] == b'\\' {
            i += 2;
        } else if separator(g[i]) {
            i += 1;
        } else {
            return None;
        }
        n += 1;
    }
    (1..=MAX_GAP).contains(&n).then_some(n)
}

/// Whether the groups `run` of `b` hold a letter next to a digit, inside
/// a group or across the gap between two (`AKIA 2345 …` reads
/// `AKIA2345…`); `skip` is the length of each group's prefix.
fn marked(b: &[u8], run: &[(usize, usize)], skip: impl Fn(usize, usize) -> usize) -> bool {
    let mixed = |x: u8, y: u8| {
        (x.is_ascii_digit() && y.is_ascii_alphabetic())
            || (x.is_ascii_alphabetic() && y.is_ascii_digit())
    };
    run.iter()
        .any(|&(s, e)| b[s..e].windows(2).any(|w| mixed(w[0], w[1])))
        || run
            .windows(2)
            .any(|w| mixed(b[w[0].1 - 1], b[w[1].0 + skip(w[1].0, w[1].1)]))
}

/// The byte offsets of `b` joined readings leave out: the separators
/// between the groups of each run and the prefixes of hex groups. The
/// first reading joins each run whole; the second, where a run holds a
/// hex dump beside other groups, only the dump (`is 41 4b …` would not
/// decode as hex from `is`; `AKIA 2345 6723 4567 QRST` must not lose its
/// `AKIA`). The second is empty when it is the first.
fn drops(b: &[u8], json: bool) -> (Vec<usize>, Vec<usize>) {
    let gs = groups(b, json);
    let (mut whole, mut dump) = (Vec::new(), Vec::new());
    let mut split = false;
    // The drops of `run` when it is read joined.
    let joined = |run: &[(usize, usize)], out: &mut Vec<usize>| {
        let hex = run.iter().all(|&(s, e)| hex_prefix(&b[s..e]) > 0);
        let prefix = |s: usize, e: usize| if hex { hex_prefix(&b[s..e]) } else { 0 };
        let len: usize = run.iter().map(|&(s, e)| e - s - prefix(s, e)).sum();
        if run.len() < MIN_GROUPS || len < MIN_JOINED || !marked(b, run, prefix) {
            return false;
        }
        for (k, &(s, e)) in run.iter().enumerate() {
            out.extend(s..s + prefix(s, e));
            if let Some(&(next, _)) = run.get(k + 1) {
                out.extend(e..next);
            }
        }
        true
    };
    let mut i = 0;
    while i + 1 < gs.len() {
        let (s0, e0) = gs[i];
        let len = e0 - s0;
        let pairs = |&(s, e): &(usize, usize)| {
            let g = &b[s + hex_prefix(&b[s..e])..e];
            g.len().is_multiple_of(2) && g.iter().all(u8::is_ascii_hexdigit)
        };
        if len < 2 {
            i += 1;
            continue;
        }
        let Some(sep) = gap(b, e0, gs[i + 1].0, json) else {
            i += 1;
            continue;
        };
        // Groups of `len` set apart by as many separators as `sep`
        // (`AKIA-IOSF ODNN-…`, a period the prefilter sees); the last may
        // be shorter.
        let mut j = i + 1;
        loop {
            let (s, e) = gs[j];
            if e - s > len {
                j -= 1;
                break;
            }
            let next = gs
                .get(j + 1)
                .filter(|_| e - s == len)
                .and_then(|&(s1, _)| gap(b, e, s1, json));
            if next != Some(sep) {
                break;
            }
            j += 1;
        }
        if j + 1 - i < MIN_GROUPS {
            // Too few groups to be read joined, or to hold a dump that is
            // (words of one length in prose): nothing more to look at.
            i = j.max(i + 1);
            continue;
        }
        let run = &gs[i..=j];
        // The longest stretch of hex pairs in the run: a word before or
        // after a hex dump (`is 41 4b …`, `… 4c 45 x`) is no part of it.
        let mut best = (0, 0);
        let mut from = 0;
        for (k, g) in run.iter().enumerate() {
            if !pairs(g) {
                from = k + 1;
            } else if k + 1 - from > best.1 - best.0 {
                best = (from, k + 1);
            }
        }
        let sub = (best.1 - best.0 >= MIN_GROUPS && best.1 - best.0 < run.len())
            .then(|| &run[best.0..best.1]);
        let n = whole.len();
        let read = joined(run, &mut whole);
        match sub {
            Some(sub) if joined(sub, &mut dump) => split = true,
            // No dump of its own: the run as the first reading joins it.
            _ => dump.extend_from_slice(&whole[n..]),
        }
        if read || sub.is_some() {
            i = j + 1;
        } else {
            // A run starting inside this one is part of it, and no more
            // of a run: the next may start at its last group, which may
            // be of another length. (Linear in the groups, whatever the
            // text.)
            i = j.max(i + 1);
        }
    }
    if !split {
        dump.clear();
    }
    (whole, dump)
}

/// The views of `s` with the groups of each run joined (`AKIA IOSF ODNN
/// 7EXA MPLE` reads as `AKIAIOSFODNN7EXAMPLE`, `\x41\x4b…` as `414b…`),
/// and, when a run holds a hex dump beside other groups, with only the
/// dump joined. Empty when `s` holds no run.
pub(crate) fn views(s: &str) -> Vec<View> {
    let (whole, dump) = drops(s.as_bytes(), false);
    let mut out = Vec::new();
    for d in [whole, dump] {
        if !d.is_empty() {
            out.push(View::without(s, &d));
        }
    }
    out
}

/// Whether `b` may hold a run of groups (see [`views`]).
pub(crate) fn may_be_grouped(b: &[u8]) -> bool {
    let (whole, dump) = drops(b, false);
    !whole.is_empty() || !dump.is_empty()
}

/// [`may_be_grouped`] of a raw JSON message, whose escapes (`\n`, `\\`)
/// are separators.
pub(crate) fn may_be_grouped_json(b: &[u8]) -> bool {
    let (whole, dump) = drops(b, true);
    !whole.is_empty() || !dump.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(s: &str) -> Option<String> {
        views(s).into_iter().next().map(|v| v.text)
    }

    fn all(s: &str) -> Vec<String> {
        views(s).into_iter().map(|v| v.text).collect()
    }

    /// Review (bypass): a run holding a stretch of hex-looking groups
    /// (`2345 6723 4567`) was cut down to that stretch, which lost the
    /// key's `AKIA`; and groups each all letters or all digits had no
    /// letter next to a digit inside one group, so the key was not read
    /// at all. The run is read whole, and the dump beside a word too.
    #[test]
    fn a_key_with_hex_looking_groups_is_read_whole() {
        assert_eq!(
            all("key AKIA 2345 6723 4567 QRST end"),
            ["key AKIA234567234567QRSTend"]
        );
        assert_eq!(
            all("AK IA 23 45 67 23 45 67 QR ST"),
            ["AKIA234567234567QRST"]
        );
        assert_eq!(
            all("is 41 4b 49 41 49 4f"),
            ["is414b4941494f", "is 414b4941494f"]
        );
    }

    /// A run whose gaps are as many separators written differently
    /// (`\n ` then two spaces) is one run, in a string and in raw JSON
    /// (where `\n` is two bytes).
    #[test]
    fn gaps_are_counted_in_separators() {
        assert_eq!(
            joined("AKIA\n IOSF  ODNN\n 7EXA  MPLE").as_deref(),
            Some("AKIAIOSFODNN7EXAMPLE")
        );
        assert!(may_be_grouped_json(br#""AKIA\n IOSF  ODNN\n 7EXA  MPLE""#));
    }

    #[test]
    fn runs_of_groups_are_read_joined() {
        for (s, want) in [
            (
                "key AKIA IOSF ODNN 7EXA MPLE, end",
                "key AKIAIOSFODNN7EXAMPLE, end",
            ),
            // A last group no longer than the others is one of them.
            (
                "key AKIA IOSF ODNN 7EXA MPLE end",
                "key AKIAIOSFODNN7EXAMPLEend",
            ),
            ("41 4b 49 41 49 4f 53 46", "414b4941494f5346"),
            ("41:4b:49:41:49:4f", "414b4941494f"),
            ("\\x41\\x4b\\x49\\x41\\x49\\x4f", "\\414b4941494f"),
            ("0x41, 0x4b, 0x49, 0x41, 0x49, 0x4f", "414b4941494f"),
            ("AKIA-IOSF ODNN-7EXA MPLE", "AKIAIOSFODNN7EXAMPLE"),
            (
                "QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q\nTEU=",
                "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=",
            ),
        ] {
            assert_eq!(joined(s).as_deref(), Some(want), "{s:?}");
        }
    }

    #[test]
    fn prose_dates_and_ids_are_not_runs() {
        for s in [
            "the cat sat on the mat",
            "and the cat was here",
            "2024-01-15 12:30:45",
            "call 555 123 4567",
            "A B C D E F G H I J K L M",
            "one two six ten",
        ] {
            assert_eq!(joined(s), None, "{s:?}");
        }
    }

    /// Hundreds of thousands of groups that are no run (no letter beside
    /// a digit) or one long run: each group is looked at a bounded number
    /// of times (this took minutes when every group started a new look).
    #[test]
    fn long_texts_of_groups_are_read_in_one_pass() {
        let plain = "ab ".repeat(200_000);
        assert!(!may_be_grouped(plain.as_bytes()));
        let marked = format!("{plain}a1");
        assert!(may_be_grouped(marked.as_bytes()));
        let hex = "4b ".repeat(200_000);
        assert_eq!(joined(&hex).map(|t| t.len()), Some(400_000 + 1));
    }

    #[test]
    fn json_escapes_are_separators() {
        assert!(may_be_grouped_json(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
        assert!(!may_be_grouped(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
    }
}
