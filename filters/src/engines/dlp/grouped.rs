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
#[cfg(test)]
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
#[cfg(test)]
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
    drops_of(b, json, &GroupMasks::of(b, json).groups())
}

/// [`drops`] with the groups of `b` found (see [`GroupMasks::groups`]).
fn drops_of(b: &[u8], json: bool, gs: &[(usize, usize)]) -> (Vec<usize>, Vec<usize>) {
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
            g.len().is_multiple_of(2) && super::masks::all_hex(g)
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
            // A last group shorter than the run's may begin a run of its
            // own length (`<digest> <digest> AKIA IOSF ODNN …`: `AKIA`
            // ends the digests' run and begins the key's).
            let (s, e) = gs[j];
            i = if e - s < len { j } else { j + 1 };
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

/// [`may_hold_run_in`] of `b` (tests).
#[cfg(test)]
fn may_hold_run(b: &[u8], json: bool) -> bool {
    may_hold_run_in(b, json, &GroupMasks::of(b, json)).is_some()
}

/// Whether `b` may hold a run [`drops`] reads joined: `false` only when
/// none can be there, which holds for most prose. A run read joined has
/// three groups or more, and a letter next to a digit, inside a group or
/// across a gap (see `marked`); that digit is in a group of the run, and
/// any group of such a run is one of three groups in a row of it, the
/// first two of one length of two or more, the third no longer, set apart
/// by as many separators twice (how `drops` extends a run). So with no
/// three groups in a row of that shape holding a digit beside a letter,
/// no run is read. `true` says only that `drops` must look.
///
/// `m` holds the masks of `b`; the groups of `b` are returned when a run
/// may be there. Two ways of looking, each exact: [`by_rows`] walks every
/// group off the masks' edges, three in a row, asking cheap questions
/// first ([`row`]); [`by_digits`] starts from each digit near a letter
/// (which the masks mark) and looks up the groups around it one mask
/// search at a time. The walk costs per group, the lookups per marked
/// digit: prose with dates and ids (a digit near a letter every few
/// words) is walked, where the lookups were about half of a scan of 1 KiB
/// and of every event a stream's text is read joined; rows of numbers
/// (hundreds of groups, few letters) are looked up.
/// `may_hold_run_bytewise` (tests) is the same look a byte at a time.
fn may_hold_run_in(b: &[u8], json: bool, m: &GroupMasks) -> Option<Vec<(usize, usize)>> {
    // Digits in a group near a letter of one: each is a place a pair may be.
    let marked: usize = m.blocks.iter().map(|x| x.1.count_ones() as usize).sum();
    if marked == 0 {
        return None;
    }
    // Looking up the groups around each such digit costs about five
    // groups walked (measured under callgrind: prose, about 80 such
    // digits among 200 groups, is walked; numeric rows, 13 among 250,
    // looked up).
    let found = if 5 * marked < m.count_groups() {
        by_digits(b, json, m)
    } else {
        by_rows(b, json, m)
    };
    found.then(|| m.groups())
}

/// [`may_hold_run_in`] by walking every group, three in a row, read off
/// the edges of the masks (a bit where a byte's being a group byte
/// differs from the byte before's is a group's start, set, or its end,
/// clear; what [`GroupMasks::groups`] lists).
fn by_rows(b: &[u8], json: bool, m: &GroupMasks) -> bool {
    // The last three groups; the first two start empty, which no shape
    // takes (its first group is two bytes or more).
    let mut g = [(0, 0); 3];
    let mut start = 0;
    let mut before = 0u64;
    for (k, &(mask, _)) in m.blocks.iter().enumerate() {
        let mut edges = mask ^ ((mask << 1) | before);
        before = mask >> 63;
        while edges != 0 {
            let i = edges.trailing_zeros();
            edges &= edges - 1;
            let at = 64 * k + i as usize;
            if mask >> i & 1 == 1 {
                start = at;
            } else {
                g = [g[1], g[2], (start, at)];
                if row(b, json, m, &g) {
                    return true;
                }
            }
        }
    }
    // A group to the last bit ends where the blocks do.
    before == 1 && {
        g = [g[1], g[2], (start, 64 * m.blocks.len())];
        row(b, json, m, &g)
    }
}

/// Whether three groups in a row `g` hold a pair and may be three of
/// one run: `shaped`'s lengths asked first (most rows fail them), then
/// whether a digit near a letter lies among them (the masks say it; rows
/// of numbers pass the lengths and fail this), then the gaps, and only
/// then are the bytes read for the pair.
#[inline(always)]
fn row(b: &[u8], json: bool, m: &GroupMasks, g: &[(usize, usize); 3]) -> bool {
    let len = |k: usize| g[k].1 - g[k].0;
    len(0) >= 2
        && len(1) == len(0)
        && len(2) <= len(0)
        && m.digit_in(g[0].0, g[2].1)
        && shaped(b, g, json)
        && paired(b, g)
}

/// [`may_hold_run_in`] from each digit near a letter: the rows of three
/// groups around its group, found by searching the masks.
fn by_digits(b: &[u8], json: bool, m: &GroupMasks) -> bool {
    let mut pos = 0;
    while let Some(d) = m.next_digit(pos) {
        let k = m.group_at(d);
        pos = k.1;
        // A letter next to a digit of this group: inside it, or across
        // the gap before or after it (`ab 12`, `12 ab`, `12 0xab`). The
        // byte before and the group after are looked for only when this
        // group's edge is a digit.
        let inside = mixed_inside(&b[k.0..k.1]);
        let with_prev = b[k.0].is_ascii_digit()
            && m.prev(k.0, |x| x.0)
                .is_some_and(|q| b[q].is_ascii_alphabetic());
        let mut next = None;
        let mut with_next = false;
        if b[k.1 - 1].is_ascii_digit() {
            if let Some(n0) = m.next(k.1, |x| x.0) {
                // A hex prefix begins with `x` (a letter) or `0`: only then
                // is the group's end needed to read past it.
                with_next = b[n0].is_ascii_alphabetic() || {
                    next = m.after(k);
                    b[n0] == b'0' && next.is_some_and(|n| crossed(b, k, n))
                };
            }
        }
        if !(inside || with_prev || with_next) {
            continue;
        }
        let prev = m.before(k);
        let next = next.or_else(|| m.after(k));
        let len = |g: (usize, usize)| g.1 - g.0;
        // The rows of three groups that hold the pair: those with this
        // group, or with it and the one before or after it. A row's first
        // two groups are of one length of two or more and its third no
        // longer (see `shaped`): the group two away is looked for only
        // when the two nearer ones allow it.
        if inside || with_prev {
            if let Some(p) = prev.filter(|&p| len(p) >= 2 && len(k) <= len(p)) {
                if let Some(pp) = m.before(p).filter(|&pp| len(pp) == len(p)) {
                    if shaped(b, &[pp, p, k], json) {
                        return true;
                    }
                }
            }
        }
        if let (Some(p), Some(n)) = (prev, next) {
            if shaped(b, &[p, k, n], json) {
                return true;
            }
        }
        if inside || with_next {
            if let Some(n) = next.filter(|&n| len(k) >= 2 && len(n) == len(k)) {
                if let Some(nn) = m.after(n).filter(|&nn| len(nn) <= len(k)) {
                    if shaped(b, &[k, n, nn], json) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Whether three groups in a row hold a letter next to a digit, inside
/// one of them or across the gap between two (`ab 12`, `12 ab`, `12 0xab`).
fn paired(b: &[u8], g: &[(usize, usize); 3]) -> bool {
    let cross = |x: (usize, usize), y: (usize, usize)| {
        let (p, q) = (b[x.1 - 1], b[y.0]);
        (p.is_ascii_alphabetic() && q.is_ascii_digit()) || crossed(b, x, y)
    };
    g.iter().any(|&(s, e)| mixed_inside(&b[s..e])) || cross(g[0], g[1]) || cross(g[1], g[2])
}

/// The most bytes between two groups of one run: [`MAX_GAP`] separators,
/// each a byte or, in raw JSON, an escape's two.
const GAP_BYTES: usize = 2 * MAX_GAP;

/// Bit masks of a text, 64 bytes a block: its group bytes (as [`groups`]
/// reads them: in raw JSON, no byte of an escape) and its digits.
struct GroupMasks {
    /// `(group bytes, digits in groups near a letter of a group)` of each
    /// block; bit k is byte `64 * i + k`.
    blocks: Vec<(u64, u64)>,
}

impl GroupMasks {
    fn of(b: &[u8], json: bool) -> GroupMasks {
        use super::masks::{eq, lanes, range};
        use wide::u8x32 as V;
        let mut blocks = Vec::with_capacity(b.len().div_ceil(64));
        let mut letters = Vec::with_capacity(b.len().div_ceil(64));
        // In raw JSON, where the escapes met so far end.
        let mut skip_until = 0usize;
        for (k, chunk) in b.chunks(64).enumerate() {
            let mut c = [0u8; 72];
            c[..chunk.len()].copy_from_slice(chunk);
            let [group, digit, slash] = lanes(&c, |x| {
                let alpha = range(x | V::splat(0x20), b'a', b'z');
                let digit = range(x, b'0', b'9');
                let extra = eq(x, b'+') | eq(x, b'/') | eq(x, b'=');
                [alpha | digit | extra, digit, eq(x, b'\\')]
            });
            let mut group = group;
            if json {
                // Each backslash `groups` meets (not one an escape before
                // it covers) opens an escape of two bytes, six for `\u`:
                // none of them is a group byte.
                let base = 64 * k;
                let mut skipped = 0u64;
                let cover = |from: usize, to: usize| -> u64 {
                    let (lo, hi) = (from.max(base), to.min(base + 64));
                    if lo >= hi {
                        0
                    } else {
                        super::masks::span_mask((lo - base) as u32, (hi - base) as u32)
                    }
                };
                skipped |= cover(base, skip_until);
                let mut s = slash;
                while s != 0 {
                    let p = base + s.trailing_zeros() as usize;
                    s &= s - 1;
                    if p >= skip_until {
                        skip_until = p + if b.get(p + 1) == Some(&b'u') { 6 } else { 2 };
                        skipped |= cover(p, skip_until);
                    }
                }
                group &= !skipped;
            }
            blocks.push((group, digit & group));
            // Letters, and `+/=` with them (a few more digits looked at).
            letters.push(group & !digit);
        }
        // Only a digit with a letter of a group at most `NEAR` bytes from
        // it can be in a letter-digit pair `may_hold_run_in` looks for: beside
        // it in its group, across a gap of at most `GAP_BYTES` to the next
        // or last group, or after that group's hex prefix (`0x`).
        const NEAR: u32 = GAP_BYTES as u32 + 3;
        const _: () = assert!(NEAR > 7 && NEAR <= 15);
        let letter = |k: usize| letters.get(k).copied().unwrap_or(0);
        for (k, block) in blocks.iter_mut().enumerate() {
            if block.1 == 0 {
                continue;
            }
            let (prev, here, next) = (k.checked_sub(1).map_or(0, letter), letter(k), letter(k + 1));
            // Each letter spread `NEAR` bytes up and down (1 + 2 + 4 + 2),
            // across the block's edges.
            let mut up = (here as u128) << 64 | prev as u128;
            let mut down = (next as u128) << 64 | here as u128;
            for s in [1, 2, 4, NEAR - 7] {
                up |= up << s;
                down |= down >> s;
            }
            block.1 &= (up >> 64) as u64 | down as u64;
        }
        GroupMasks { blocks }
    }

    /// The first set bit of `pick` of the blocks at or after `pos`.
    fn next(&self, pos: usize, pick: impl Fn(&(u64, u64)) -> u64) -> Option<usize> {
        let mut k = pos / 64;
        let mut m = pick(self.blocks.get(k)?) & (u64::MAX << (pos % 64));
        while m == 0 {
            k += 1;
            m = pick(self.blocks.get(k)?);
        }
        Some(64 * k + m.trailing_zeros() as usize)
    }

    /// The last set bit of `pick` of the blocks before `pos`.
    fn prev(&self, pos: usize, pick: impl Fn(&(u64, u64)) -> u64) -> Option<usize> {
        if pos == 0 {
            return None;
        }
        let mut k = (pos - 1) / 64;
        let below = (pos - 1) % 64;
        let keep = if below == 63 {
            u64::MAX
        } else {
            (1u64 << (below + 1)) - 1
        };
        let mut m = pick(&self.blocks[k]) & keep;
        while m == 0 {
            k = k.checked_sub(1)?;
            m = pick(&self.blocks[k]);
        }
        Some(64 * k + 63 - m.leading_zeros() as usize)
    }

    /// Every group `(start, end)`, in order: each maximal run of group
    /// bytes (what `groups` lists a byte at a time; a property test holds
    /// the two equal), read off the edges of the masks as [`by_rows`]
    /// reads them.
    fn groups(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.count_groups());
        let mut start = 0;
        let mut before = 0u64;
        for (k, &(g, _)) in self.blocks.iter().enumerate() {
            let mut edges = g ^ ((g << 1) | before);
            before = g >> 63;
            while edges != 0 {
                let i = edges.trailing_zeros();
                edges &= edges - 1;
                let at = 64 * k + i as usize;
                if g >> i & 1 == 1 {
                    start = at;
                } else {
                    out.push((start, at));
                }
            }
        }
        if before == 1 {
            out.push((start, 64 * self.blocks.len()));
        }
        out
    }

    /// How many groups there are: their starts, counted a block at a time.
    fn count_groups(&self) -> usize {
        let mut before = 0u64;
        let mut n = 0;
        for &(g, _) in &self.blocks {
            n += (g & !((g << 1) | before)).count_ones() as usize;
            before = g >> 63;
        }
        n
    }

    /// The first digit in a group at or after `pos`.
    fn next_digit(&self, pos: usize) -> Option<usize> {
        self.next(pos, |b| b.1)
    }

    /// The group `(start, end)` that holds group byte `p`.
    fn group_at(&self, p: usize) -> (usize, usize) {
        (self.start_of(p), self.end_of(p))
    }

    /// Where the group holding group byte `p` begins.
    fn start_of(&self, p: usize) -> usize {
        self.prev(p, |b| !b.0).map_or(0, |z| z + 1)
    }

    /// Where the group holding group byte `p` ends.
    fn end_of(&self, p: usize) -> usize {
        // Bits past the text are no group bytes, but a text ending with a
        // full block has none past it.
        self.next(p, |b| !b.0).unwrap_or(64 * self.blocks.len())
    }

    /// The group before the group `g`, if any: its last byte is the last
    /// group byte before `g`.
    fn before(&self, g: (usize, usize)) -> Option<(usize, usize)> {
        let last = self.prev(g.0, |b| b.0)?;
        Some((self.start_of(last), last + 1))
    }

    /// The group after the group `g`, if any: it begins at the first group
    /// byte after `g`.
    fn after(&self, g: (usize, usize)) -> Option<(usize, usize)> {
        let start = self.next(g.1, |b| b.0)?;
        Some((start, self.end_of(start)))
    }

    /// Whether a digit of a group near a letter of one lies in `lo..hi`
    /// (only the blocks of `lo..hi` are read: three groups in a row are
    /// asked once each, so a text is read about three times at most).
    fn digit_in(&self, lo: usize, hi: usize) -> bool {
        if lo >= hi {
            return false;
        }
        let (first, last) = (lo / 64, (hi - 1) / 64);
        (first..=last.min(self.blocks.len().saturating_sub(1))).any(|k| {
            let mut m = self.blocks[k].1;
            if k == first {
                m &= u64::MAX << (lo % 64);
            }
            if k == last && !hi.is_multiple_of(64) {
                m &= (1u64 << (hi % 64)) - 1;
            }
            m != 0
        })
    }
}

/// [`may_hold_run`] a byte at a time, as the rule reads: three groups
/// in a row of the shape, with a letter next to a digit inside one of
/// them or across a gap between two of them.
#[cfg(test)]
fn may_hold_run_bytewise(b: &[u8], json: bool) -> bool {
    let gs = groups(b, json);
    gs.windows(3).any(|w| {
        let g = [w[0], w[1], w[2]];
        shaped(b, &g, json) && paired(b, &g)
    })
}

/// Whether three groups in a row can be three of one run (see
/// [`may_hold_run_in`]).
fn shaped(b: &[u8], g: &[(usize, usize); 3], json: bool) -> bool {
    let len = |k: usize| g[k].1 - g[k].0;
    len(0) >= 2
        && len(1) == len(0)
        && len(2) <= len(0)
        && gap(b, g[0].1, g[1].0, json).is_some_and(|n| gap(b, g[1].1, g[2].0, json) == Some(n))
}

/// Whether the last byte of group `k` is a digit and the next group `n`
/// begins (after a hex prefix or not) with a letter: `7 ab`, `7 0xab`.
fn crossed(b: &[u8], k: (usize, usize), n: (usize, usize)) -> bool {
    b[k.1 - 1].is_ascii_digit()
        && [n.0, n.0 + hex_prefix(&b[n.0..n.1])]
            .iter()
            .any(|&f| f < n.1 && b[f].is_ascii_alphabetic())
}

/// Whether `g` holds a letter next to a digit.
fn mixed_inside(g: &[u8]) -> bool {
    g.windows(2).any(|w| {
        (w[0].is_ascii_digit() && w[1].is_ascii_alphabetic())
            || (w[0].is_ascii_alphabetic() && w[1].is_ascii_digit())
    })
}

/// The views of `s` with the groups of each run joined (`AKIA IOSF ODNN
/// 7EXA MPLE` reads as `AKIAIOSFODNN7EXAMPLE`, `\x41\x4b…` as `414b…`),
/// and, when a run holds a hex dump beside other groups, with only the
/// dump joined. Empty when `s` holds no run.
pub(crate) fn views(s: &str) -> Vec<View> {
    // (No quick look first: the views are asked for where a gate already
    // looked, most often at this very text, and found a run may be there.)
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
    holds_run(b, false)
}

/// Whether `b` (raw JSON with `json`) holds a run `drops` reads: the
/// quick look first, `drops` where it cannot say no.
fn holds_run(b: &[u8], json: bool) -> bool {
    let Some(gs) = may_hold_run_in(b, json, &GroupMasks::of(b, json)) else {
        return false;
    };
    let (whole, dump) = drops_of(b, json, &gs);
    !whole.is_empty() || !dump.is_empty()
}

/// [`may_be_grouped`] of a raw JSON message, whose escapes (`\n`, `\\`)
/// are separators.
pub(crate) fn may_be_grouped_json(b: &[u8]) -> bool {
    holds_run(b, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
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

    /// Review (bypass): a key in groups right after a run of longer
    /// groups read joined (hex digests) lost its first group to that run
    /// as its shorter last one, and the rest (`IOSF ODNN …`) is no key.
    /// The last group now begins the next run too.
    #[test]
    fn a_short_last_group_also_begins_the_next_run() {
        let scanner = crate::engines::dlp::Scanner::new(&[]).expect("scanner");
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        for before in [
            format!("{digest} {digest} "),
            format!("{digest}\n{digest}\n{digest}\n"),
            "ab12cd34ef56 ab12cd34ef56 ".to_owned(),
        ] {
            for key in [
                "AKIA IOSF ODNN 7EXA MPLE",
                "41 4b 49 41 49 4f 53 46 4f 44 4e 4e 37 45 58 41 4d 50 4c 45",
            ] {
                let t = format!("{before}{key}");
                let mut out = Vec::new();
                scanner.scan_str(&t, &mut out);
                assert!(
                    out.iter()
                        .any(|h| scanner.detectors()[h.detector].name == "aws_access_key_id"),
                    "{t:?}: {out:?}"
                );
            }
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// The quick look says no only where `drops` reads no run: in
        /// text made of groups of few lengths, digits beside letters, hex
        /// prefixes, separators of every kind and JSON escapes.
        #[test]
        fn the_quick_look_misses_no_run(
            parts in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::string::string_regex("[0-9]{4}").unwrap(),
                        proptest::string::string_regex("[a-z]{4}").unwrap(),
                        proptest::string::string_regex("[a-f0-9]{4}").unwrap(),
                        proptest::string::string_regex("[0-9a-z]{2}").unwrap(),
                        proptest::string::string_regex("0x[0-9a-f]{2}").unwrap(),
                        proptest::string::string_regex("x[0-9a-f]{2}").unwrap(),
                        proptest::string::string_regex("[a-zA-Z0-9+/=]{1,5}").unwrap(),
                    ],
                    proptest::prop_oneof![
                        4 => proptest::string::string_regex("( |  |, |:)").unwrap(),
                        1 => proptest::string::string_regex("[ :,.|;_\\\\-]{1,4}").unwrap(),
                        1 => proptest::string::string_regex("\\\\([nu\\\\\"]|u00[0-9a-f]{2})").unwrap(),
                        1 => proptest::string::string_regex("(\\\\[n\"]){2,3}").unwrap(),
                        1 => proptest::string::string_regex("[é\"!]?").unwrap(),
                    ],
                ),
                0..60,
            ),
        ) {
            let text: String = parts.iter().map(|(g, s)| format!("{g}{s}")).collect();
            for json in [false, true] {
                let (whole, dump) = drops(text.as_bytes(), json);
                proptest::prop_assert_eq!(
                    GroupMasks::of(text.as_bytes(), json).groups(),
                    groups(text.as_bytes(), json),
                    "{:?} json={}", text, json
                );
                let quick = may_hold_run(text.as_bytes(), json);
                let reference = may_hold_run_bytewise(text.as_bytes(), json);
                proptest::prop_assert_eq!(quick, reference, "{:?} json={}", text, json);
                // Both ways of looking, whichever the text's digits choose.
                let m = GroupMasks::of(text.as_bytes(), json);
                let marked = m.blocks.iter().any(|x| x.1 != 0);
                proptest::prop_assert_eq!(marked && by_rows(text.as_bytes(), json, &m), reference, "rows {:?} json={}", text, json);
                proptest::prop_assert_eq!(marked && by_digits(text.as_bytes(), json, &m), reference, "digits {:?} json={}", text, json);
                if !whole.is_empty() || !dump.is_empty() {
                    proptest::prop_assert!(quick, "{:?} json={}", text, json);
                }
            }
        }
    }

    /// Prose with numbers is told apart without listing its words; a key
    /// in groups is not.
    #[test]
    fn the_quick_look_passes_prose() {
        let prose = "deploy the billing service to eu-west-1 with 3 replicas and a canary; ";
        assert!(!may_hold_run(prose.repeat(20).as_bytes(), true));
        assert!(may_hold_run(b"key AKIA IOSF ODNN 7EXA MPLE", false));
        assert!(may_hold_run(b"41 4b 49 41 49 4f", false));
        // Across 64-byte blocks, after groups longer than a block, and
        // in raw JSON with escaped line breaks between the groups.
        for at in [0, 1, 60, 63, 64, 65, 127, 200] {
            let key = format!(
                "{} {} AKIA IOSF ODNN 7EXA MPLE",
                "x".repeat(at),
                "ab".repeat(70)
            );
            assert!(may_hold_run(key.as_bytes(), false), "{at}");
            assert!(may_be_grouped(key.as_bytes()), "{at}");
            let raw = format!("\"{}\\nAKIA\\nIOSF\\nODNN\\n7EXA\\nMPLE\"", "y".repeat(at));
            assert!(may_hold_run(raw.as_bytes(), true), "{at} {raw}");
            assert!(may_be_grouped_json(raw.as_bytes()), "{at} {raw}");
        }
    }

    #[test]
    fn json_escapes_are_separators() {
        assert!(may_be_grouped_json(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
        assert!(!may_be_grouped(br#""QUtJQUlP\nU0ZPRE5O\nN0VYQU1Q""#));
    }
}
