//! The byte-level work under [`super::encoded`]: decoding base64 and hex
//! into a buffer the caller keeps, and finding what of decoded bytes a
//! reader can read as text.
//!
//! Every run of base64 characters is decoded from several alignments and in
//! several encodings, so this is the DLP engine's inner loop on content that
//! is not prose (file contents, images, tokens, hashes). Both are written to
//! read random bytes cheaply, which is what most decodings are:
//! - the decoders are table lookups into a reused buffer, without an
//!   allocation per decoding;
//! - [`readable`] finds stretches of text of at least [`MIN_SEGMENT`]
//!   bytes by looking ahead for a byte no text holds (a control character,
//!   `0xC0`, `0xC1`, `0xF5`–`0xFF`): such a byte within the next nine
//!   bytes ends any stretch that could be read there, so the bytes before
//!   it are not walked one by one. Bytes that may be text are still
//!   checked character by character, as UTF-8 without control characters.
//!
//! Each is held equal to the plain implementation it replaces by property
//! tests (the base64 crate's decoder, the hex crate's, the standard
//! library's UTF-8 chunks split at controls).

/// The least length of a readable part of decoded bytes that is read
/// when the bytes are not text as a whole (a bare nine-digit SSN).
pub(super) const MIN_SEGMENT: usize = 9;

/// The base64 alphabets a run is decoded in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Alphabet {
    /// `+` and `/` (RFC 4648 §4).
    Standard,
    /// `-` and `_` (RFC 4648 §5).
    UrlSafe,
}

const INVALID: u8 = 0xff;

const fn decode_table(url: bool) -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0u8;
    while i < 26 {
        t[(b'A' + i) as usize] = i;
        t[(b'a' + i) as usize] = 26 + i;
        i += 1;
    }
    let mut d = 0u8;
    while d < 10 {
        t[(b'0' + d) as usize] = 52 + d;
        d += 1;
    }
    if url {
        t[b'-' as usize] = 62;
        t[b'_' as usize] = 63;
    } else {
        t[b'+' as usize] = 62;
        t[b'/' as usize] = 63;
    }
    t
}

static STANDARD: [u8; 256] = decode_table(false);
static URL_SAFE: [u8; 256] = decode_table(true);

/// Set in a shifted table's entry for a byte outside the alphabet.
const BAD_BIT: u32 = 1 << 31;

/// The decode table's values shifted to their place in a group of four
/// characters (18, 12, 6 and 0 bits), [`BAD_BIT`] for a byte outside.
const fn shifted_tables(table: &[u8; 256]) -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut pos = 0;
    while pos < 4 {
        let mut b = 0;
        while b < 256 {
            t[pos][b] = if table[b] == INVALID {
                BAD_BIT
            } else {
                (table[b] as u32) << (18 - 6 * pos)
            };
            b += 1;
        }
        pos += 1;
    }
    t
}

static STANDARD_SHIFTED: [[u32; 256]; 4] = shifted_tables(&STANDARD);
static URL_SAFE_SHIFTED: [[u32; 256]; 4] = shifted_tables(&URL_SAFE);

/// Decodes unpadded base64 `input` into `out` (cleared first), as the
/// base64 crate's decoder with padding indifferent and trailing bits
/// allowed decodes it: `false` (and `out` unspecified) for a character
/// outside the alphabet, a `=`, or a length of one more than a multiple of
/// four.
pub(super) fn base64_into(alphabet: Alphabet, input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if input.len() % 4 == 1 {
        return false;
    }
    let table = match alphabet {
        Alphabet::Standard => &STANDARD,
        Alphabet::UrlSafe => &URL_SAFE,
    };
    let shifted = match alphabet {
        Alphabet::Standard => &STANDARD_SHIFTED,
        Alphabet::UrlSafe => &URL_SAFE_SHIFTED,
    };
    let groups = input.chunks_exact(4);
    let whole = groups.len();
    out.resize(whole * 3, 0);
    for (g, o) in groups.zip(out.chunks_exact_mut(3)) {
        // Each character's six bits already in place; a character outside
        // the alphabet sets the top bit.
        let n = shifted[0][g[0] as usize]
            | shifted[1][g[1] as usize]
            | shifted[2][g[2] as usize]
            | shifted[3][g[3] as usize];
        if n & BAD_BIT != 0 {
            return false;
        }
        o.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let groups = input.chunks_exact(4);
    let rest = groups.remainder();
    let mut n = 0u32;
    for (k, &ch) in rest.iter().enumerate() {
        let v = table[ch as usize];
        if v == INVALID {
            return false;
        }
        n |= u32::from(v) << (18 - 6 * k);
    }
    match rest.len() {
        2 => out.push((n >> 16) as u8),
        3 => out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]),
        _ => {}
    }
    true
}

const fn hex_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0u8;
    while i < 10 {
        t[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i = 0u8;
    while i < 6 {
        t[(b'a' + i) as usize] = 10 + i;
        t[(b'A' + i) as usize] = 10 + i;
        i += 1;
    }
    t
}

static HEX: [u8; 256] = hex_table();

/// Decodes hex digits `input` (either case, even length) into `out`
/// (cleared first); `false` for an odd length or a byte that is no digit.
pub(super) fn hex_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if !input.len().is_multiple_of(2) {
        return false;
    }
    out.reserve(input.len() / 2);
    for pair in input.chunks_exact(2) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        if (hi | lo) & 0xf0 != 0 {
            return false;
        }
        out.push(hi << 4 | lo);
    }
    true
}

/// Each base32 character's five bits (RFC 4648 §6: `A`–`Z` and `2`–`7`,
/// either case), [`INVALID`] for any other byte.
static BASE32: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0u8;
    while i < 26 {
        t[(b'A' + i) as usize] = i;
        t[(b'a' + i) as usize] = i;
        i += 1;
    }
    let mut d = 0u8;
    while d < 6 {
        t[(b'2' + d) as usize] = 26 + d;
        d += 1;
    }
    t
};

/// Decodes unpadded base32 `input` (either case) into `out` (cleared
/// first), as a lenient reader does: the bits left over after the last
/// whole byte are dropped whatever they are (a strict decoder refuses a
/// run whose last character carries a set bit there, which is only one
/// more character glued after the text). `false` (and `out` unspecified)
/// for a byte outside the alphabet or a length no encoder writes (1, 3 or
/// 6 more than a multiple of eight).
pub(super) fn base32_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if matches!(input.len() % 8, 1 | 3 | 6) {
        return false;
    }
    let groups = input.chunks_exact(8);
    let rest = groups.remainder();
    out.resize(groups.len() * 5, 0);
    for (g, o) in groups.zip(out.chunks_exact_mut(5)) {
        let (mut n, mut bad) = (0u64, 0u8);
        for &c in g {
            let v = BASE32[c as usize];
            bad |= v;
            n = n << 5 | u64::from(v & 31);
        }
        // Every value is below 32; INVALID sets the top bits.
        if bad & 0xe0 != 0 {
            return false;
        }
        o.copy_from_slice(&n.to_be_bytes()[3..]);
    }
    let (mut n, mut bits) = (0u64, 0u32);
    for &c in rest {
        let v = BASE32[c as usize];
        if v == INVALID {
            return false;
        }
        n = n << 5 | u64::from(v);
        bits += 5;
    }
    while bits >= 8 {
        bits -= 8;
        out.push((n >> bits) as u8);
    }
    true
}

/// Decodes base64 `input` (no padding) into the bit stream its characters
/// carry, all of them: `out` (cleared first) holds `6 × input.len()` bits,
/// the last byte's unused low bits zero. Every alignment of the run is a
/// slice of this stream ([`phase`]): one decoding serves all four.
/// `false` for a character outside the alphabet.
pub(super) fn base64_stream(alphabet: Alphabet, input: &[u8], out: &mut Vec<u8>) -> bool {
    let whole = input.len() / 4 * 4;
    if !base64_into(alphabet, &input[..whole], out) {
        return false;
    }
    let table = match alphabet {
        Alphabet::Standard => &STANDARD,
        Alphabet::UrlSafe => &URL_SAFE,
    };
    push_tail(&input[whole..], table, 6, out)
}

/// [`base64_stream`] for base32 (five bits a character, either case).
pub(super) fn base32_stream(input: &[u8], out: &mut Vec<u8>) -> bool {
    let whole = input.len() / 8 * 8;
    if !base32_into(&input[..whole], out) {
        return false;
    }
    push_tail(&input[whole..], &BASE32, 5, out)
}

/// The characters after a stream's last whole group (`bits` each, looked
/// up in `table`), appended to `out` as the bytes they reach, the last
/// one's unused low bits zero; `false` for a character outside the table.
fn push_tail(rest: &[u8], table: &[u8; 256], bits: u32, out: &mut Vec<u8>) -> bool {
    // From the top of a word: fewer than eight characters of six bits.
    let mut n = 0u64;
    for (k, &ch) in rest.iter().enumerate() {
        let v = table[ch as usize];
        if v == INVALID {
            return false;
        }
        n |= u64::from(v) << (64 - bits * (k as u32 + 1));
    }
    out.extend_from_slice(&n.to_be_bytes()[..(bits as usize * rest.len()).div_ceil(8)]);
    true
}

/// The whole bytes of `stream` (`bits` long) from bit `from` on, into `out`
/// (cleared first): what a lenient decoder reads of the run from the
/// character that starts at that bit, its leftover bits dropped.
pub(super) fn phase(stream: &[u8], bits: usize, from: usize, out: &mut Vec<u8>) {
    out.clear();
    let count = bits.saturating_sub(from) / 8;
    let src = &stream[(from / 8).min(stream.len())..];
    let p = (from % 8) as u32;
    if p == 0 {
        out.extend_from_slice(&src[..count]);
        return;
    }
    // The stream holds `bits` bits, so a shifted byte's low part is always
    // in it: `src` has at least `count + 1` bytes. Eight bytes at a time
    // while nine are there to read, then one at a time.
    out.resize(count, 0);
    let mut j = 0;
    while j + 9 <= src.len() && j + 8 <= count {
        let mut word = [0u8; 8];
        word.copy_from_slice(&src[j..j + 8]);
        let w = u64::from_be_bytes(word) << p | u64::from(src[j + 8] >> (8 - p));
        out[j..j + 8].copy_from_slice(&w.to_be_bytes());
        j += 8;
    }
    for k in j..count {
        out[k] = src[k] << p | src[k + 1] >> (8 - p);
    }
}

/// For each byte, the length of the character it begins when that may be
/// text: 1 for printable ASCII, tab and line breaks, 2 to 4 for the lead
/// byte of a multi-byte character (its other bytes still to check), 0 for
/// a control character or a byte no character begins with.
static TEXT_WIDTH: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'\t' | b'\n' | b'\r' | 0x20..=0x7e => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// The bytes no text holds anywhere: control characters but tab and line
/// breaks, DEL, and the bytes UTF-8 never uses (`0xC0`, `0xC1`,
/// `0xF5`–`0xFF`). A continuation byte (`0x80`–`0xBF`) is not one of
/// them: it is text after its lead.
static NEVER_TEXT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f | 0xc0 | 0xc1 | 0xf5..=0xff);
        b += 1;
    }
    t
};

/// The length of the valid, non-control character at `bytes[i]`, or 0
/// (RFC 3629: no overlong form, no surrogate, nothing past U+10FFFF).
#[inline]
fn char_width(bytes: &[u8], i: usize) -> usize {
    let lead = bytes[i];
    let width = TEXT_WIDTH[lead as usize] as usize;
    if width <= 1 {
        return width;
    }
    let Some(rest) = bytes.get(i + 1..i + width) else {
        return 0;
    };
    let second = match lead {
        0xe0 => 0xa0..=0xbf,
        0xed => 0x80..=0x9f,
        0xf0 => 0x90..=0xbf,
        0xf4 => 0x80..=0x8f,
        _ => 0x80..=0xbf,
    };
    if second.contains(&rest[0]) && rest[1..].iter().all(|&c| c & 0xc0 == 0x80) {
        width
    } else {
        0
    }
}

/// The first byte of `b` that is not ASCII or is a control character
/// other than tab and line breaks (or DEL): eight bytes at a time over
/// printable ASCII.
#[inline]
pub(super) fn first_unusual(b: &[u8]) -> Option<usize> {
    let unusual =
        |c: u8| c >= 0x80 || (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f;
    let mut i = 0;
    while i < b.len() {
        if eight_printable(b, i) {
            i += 8;
            continue;
        }
        let end = (i + 8).min(b.len());
        if let Some(p) = b[i..end].iter().position(|&c| unusual(c)) {
            return Some(i + p);
        }
        i = end;
    }
    None
}

/// Whether the eight bytes at `bytes[i..]` are all printable ASCII.
#[inline]
fn eight_printable(bytes: &[u8], i: usize) -> bool {
    let Some(chunk) = bytes.get(i..i + 8) else {
        return false;
    };
    let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // No byte at 0x80 or above, none below 0x20, none equal to 0x7F.
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let del = w ^ (ONES * 0x7f);
    let is_del = del.wrapping_sub(ONES) & !del & HIGH;
    (w & HIGH) | below_space | is_del == 0
}

/// What a reader can read of decoded bytes: all of them when they are
/// text (UTF-8 without control characters but tab and line breaks);
/// otherwise every such stretch of at least [`MIN_SEGMENT`] bytes (text
/// beside a NUL, colour codes or binary bytes).
///
/// Most decodings are random bytes, which hold no such stretch: a first
/// pass marks, 64 bytes at a time and without a branch per byte, the bytes
/// that can be inside text at all given their neighbours ([`may_be_text`]),
/// and only a run of at least [`MIN_SEGMENT`] such bytes is read character
/// by character ([`stretches`]). A byte outside every such run is in no
/// stretch of text that long, and no character of text crosses it.
pub(super) fn readable(bytes: &[u8]) -> Vec<String> {
    let n = bytes.len();
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.bytes().any(|b| NEVER_TEXT[b as usize]));
    if let Some(t) = text {
        // Text as a whole, however short: the run is what it encodes.
        return vec![t.to_owned()];
    }
    let mut out = Vec::new();
    if n < MIN_SEGMENT {
        return out;
    }
    // Not text as a whole: the stretches inside the runs of bytes that may
    // be text.
    let mut from = 0;
    while from < n {
        let Some((s, e)) = next_run(bytes, from) else {
            break;
        };
        stretches(&bytes[s..e], &mut out);
        from = e;
    }
    out
}

/// The runs of at least [`MIN_SEGMENT`] bytes of `bytes` that may be text
/// ([`may_be_text`]), whole and in order: `(start, end)`. Every stretch
/// [`readable`] reads lies inside one, and a slice of `bytes` with none of
/// its own reads as nothing unless it is shorter than [`MIN_SEGMENT`]
/// (see [`super::encoded`]'s joined runs).
pub(super) fn text_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((s, e)) = next_run(bytes, from) {
        out.push((s, e));
        from = e;
    }
    out
}

/// Whether each byte of `b[1..65]` may be inside text given its
/// neighbours, as the bits of a `u64` (bit k for `b[k + 1]`): not a byte
/// text never holds, not a continuation byte after an ASCII one or one
/// text never holds, not a lead byte without a continuation byte after it.
#[cfg(test)]
fn may_be_text(b: &[u8; 66]) -> u64 {
    let mut block = [0u8; 64];
    block.copy_from_slice(&b[1..65]);
    good_bits(&block, b[0], b[65])
}

/// [`may_be_text`] of the 64 bytes of `block`, the byte before it `prev`
/// and the byte after it `next` (`0xFF`, a byte text never holds, where
/// there is none). The block is classified where it lies, 32 bytes at a
/// time; its neighbours are two table lookups.
#[inline(always)]
fn good_bits(block: &[u8; 64], prev: u8, next: u8) -> u64 {
    use super::masks::{at_or_above, eq, range};
    use wide::u8x32 as V;
    // Three masks of the block's bytes: bytes text never holds, ASCII
    // bytes, continuation bytes. Each byte's verdict then needs its
    // neighbours' bits only.
    let (mut never, mut high, mut cont) = (0u64, 0u64, 0u64);
    for (k, part) in block.chunks_exact(32).enumerate() {
        let mut lane = [0u8; 32];
        lane.copy_from_slice(part);
        let x = V::new(lane);
        let n = (range(x, 0, 0x1f) & !(eq(x, b'\t') | eq(x, b'\n') | eq(x, b'\r')))
            | eq(x, 0x7f)
            | range(x, 0xc0, 0xc1)
            | at_or_above(x, 0xf5);
        let c = range(x, 0x80, 0xbf);
        never |= (n.to_bitmask() as u64) << (32 * k);
        // The top bit of each byte: not ASCII.
        high |= (x.to_bitmask() as u64) << (32 * k);
        cont |= (c.to_bitmask() as u64) << (32 * k);
    }
    let ascii = !high;
    // The byte before each: ASCII or a byte text never holds.
    let prev_plain = (ascii | never) << 1 | u64::from(prev < 0x80 || NEVER_TEXT[prev as usize]);
    let next_cont = cont >> 1 | u64::from(next & 0xc0 == 0x80) << 63;
    let bad = never | (cont & prev_plain) | (high & !cont & !next_cont);
    !bad
}

/// The next run of at least [`MIN_SEGMENT`] bytes that may be text
/// ([`may_be_text`]) at or after `from`, whole: `(start, end)`. `from` is
/// 0 or the end of a run (a byte that may not be text).
fn next_run(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let n = bytes.len();
    let mut base = from;
    // Good bytes at the end of the blocks before, and where they begin.
    let (mut carried, mut run_start) = (0usize, from);
    while base < n {
        // The byte before the block and the byte after it; outside, a
        // byte that text never holds, ending every run.
        let prev = if base >= 1 { bytes[base - 1] } else { 0xff };
        let next = bytes.get(base + 64).copied().unwrap_or(0xff);
        let len = (n - base).min(64);
        let mut good = match bytes[base..].first_chunk::<64>() {
            Some(block) => good_bits(block, prev, next),
            None => {
                let mut block = [0xffu8; 64];
                block[..len].copy_from_slice(&bytes[base..]);
                good_bits(&block, prev, next)
            }
        };
        if len < 64 {
            good &= (1u64 << len) - 1;
        }
        let mut skip = 0;
        if carried > 0 {
            // The run from the blocks before goes on to the first bad byte.
            let low = ((!good).trailing_zeros() as usize).min(len);
            if low == len {
                carried += len;
                base += 64;
                continue;
            }
            if carried + low >= MIN_SEGMENT {
                return Some((run_start, base + low));
            }
            carried = 0;
            skip = low;
        }
        // Where nine good bytes in a row begin inside the block.
        let mut nine = good & (good >> 1);
        nine &= nine >> 2;
        nine &= nine >> 4;
        nine &= good >> 8;
        nine &= !((1u64 << skip) - 1);
        if nine != 0 {
            let k = nine.trailing_zeros() as usize;
            let end = k + ((!(good >> k)).trailing_zeros() as usize).min(len - k);
            if end < len {
                return Some((base + k, base + end));
            }
            carried = len - k;
            run_start = base + k;
        } else {
            // Good bytes at the block's end may go on in the next one.
            let top = if len == 64 {
                good.leading_ones() as usize
            } else {
                (good << (64 - len)).leading_ones() as usize
            };
            if top > 0 && top < len.saturating_sub(skip) + 1 {
                carried = top;
                run_start = base + len - top;
            }
        }
        base += 64;
    }
    (carried >= MIN_SEGMENT).then_some((run_start, n))
}

/// Every stretch of text of at least [`MIN_SEGMENT`] bytes in `bytes`,
/// read character by character.
pub(super) fn stretches(bytes: &[u8], out: &mut Vec<String>) {
    let n = bytes.len();
    let (mut start, mut i) = (0, 0);
    while i < n {
        if eight_printable(bytes, i) {
            i += 8;
            continue;
        }
        let width = char_width(bytes, i);
        if width > 0 {
            i += width;
            continue;
        }
        if i - start >= MIN_SEGMENT {
            out.extend(
                std::str::from_utf8(&bytes[start..i])
                    .ok()
                    .map(str::to_owned),
            );
        }
        i += 1;
        start = i;
    }
    if n - start >= MIN_SEGMENT {
        out.extend(std::str::from_utf8(&bytes[start..]).ok().map(str::to_owned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    use proptest::prelude::*;

    /// `readable` as it was first written (the standard library's UTF-8
    /// chunks split at control characters).
    fn may_be_text_reference(b: &[u8; 66]) -> u64 {
        let mut flags = [0u8; 64];
        for k in 0..64 {
            let (prev, cur, next) = (b[k], b[k + 1], b[k + 2]);
            let never = |c: u8| {
                (c < 0x20 && c != b'\t' && c != b'\n' && c != b'\r')
                    || c == 0x7f
                    || c == 0xc0
                    || c == 0xc1
                    || c >= 0xf5
            };
            let ascii = |c: u8| c < 0x80;
            let cont = |c: u8| (0x80..0xc0).contains(&c);
            let bad = never(cur)
                || (cont(cur) && (ascii(prev) || never(prev)))
                || (!ascii(cur) && !cont(cur) && !cont(next));
            flags[k] = u8::from(!bad);
        }
        let mut mask = 0u64;
        for (w, group) in flags.chunks_exact(8).enumerate() {
            let x = u64::from_le_bytes(group.try_into().unwrap_or([0; 8]));
            // Gathers the low bit of each byte into eight bits.
            mask |= (x.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * w);
        }
        mask
    }

    proptest! {
        /// The SIMD verdicts are the byte-by-byte ones, on random bytes and
        /// on text with characters of every length beside binary bytes.
        #[test]
        fn may_be_text_is_the_byte_by_byte_verdict(
            bytes in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'a'), Just(b'\n'), Just(0u8), Just(0x7f),
                    0x80u8..0xc0, 0xc2u8..0xf5, 0xc0u8..0xc2, 0xf5u8..=0xff,
                ],
                66,
            ),
        ) {
            let mut w = [0u8; 66];
            w.copy_from_slice(&bytes);
            prop_assert_eq!(may_be_text(&w), may_be_text_reference(&w));
        }
    }

    fn readable_reference(bytes: &[u8]) -> Vec<String> {
        let control = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\x7f';
        if let Ok(t) = std::str::from_utf8(bytes) {
            if !t.chars().any(control) {
                return vec![t.to_owned()];
            }
        }
        let mut out = Vec::new();
        for chunk in bytes.utf8_chunks() {
            for part in chunk.valid().split(control) {
                if part.len() >= MIN_SEGMENT {
                    out.push(part.to_owned());
                }
            }
        }
        out
    }

    fn crate_decode(alphabet: Alphabet, input: &[u8]) -> Option<Vec<u8>> {
        let a = match alphabet {
            Alphabet::Standard => &base64::alphabet::STANDARD,
            Alphabet::UrlSafe => &base64::alphabet::URL_SAFE,
        };
        GeneralPurpose::new(
            a,
            GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        )
        .decode(input)
        .ok()
    }

    /// Base64-ish input: mostly the alphabets' characters, now and then
    /// one of the other alphabet, padding or junk.
    fn b64ish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                20 => proptest::sample::select(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_vec()
                ),
                1 => proptest::sample::select(b"+/-_=. \n\x00\xff".to_vec()),
            ],
            0..80,
        )
    }

    proptest! {
        #[test]
        fn readable_reads_what_utf8_chunks_read(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(readable(&bytes), readable_reference(&bytes));
        }

        /// Mostly text, with controls, cut characters and stray bytes.
        #[test]
        fn readable_reads_text_beside_binary_as_utf8_chunks_do(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("plain text ".as_bytes().to_vec()),
                    Just("12345678".as_bytes().to_vec()),
                    Just("é€😀".as_bytes().to_vec()),
                    Just(vec![0xe2, 0x82]),
                    Just(vec![0x80]),
                    Just(vec![0xed, 0xa0, 0x80]),
                    Just(vec![0xf4, 0x90, 0x80, 0x80]),
                    Just(vec![0xc0, 0xaf]),
                    Just(vec![0, 0x1b, 0x7f]),
                    Just(vec![0xff]),
                    Just(b"\t\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 1..12),
                ],
                0..64,
            )
        ) {
            let bytes = parts.concat();
            prop_assert_eq!(readable(&bytes), readable_reference(&bytes));
        }

        #[test]
        fn base64_decodes_as_the_base64_crate(input in b64ish(), url in any::<bool>()) {
            let alphabet = if url { Alphabet::UrlSafe } else { Alphabet::Standard };
            let mut out = Vec::new();
            let ours = base64_into(alphabet, &input, &mut out).then_some(out);
            let theirs = if input.contains(&b'=') { None } else { crate_decode(alphabet, &input) };
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn hex_decodes_as_the_hex_crate(input in proptest::collection::vec(
            proptest::sample::select(b"0123456789abcdefABCDEFgx \x00\xff".to_vec()), 0..60)
        ) {
            let mut out = Vec::new();
            let ours = hex_into(&input, &mut out).then_some(out);
            prop_assert_eq!(ours, hex::decode(&input).ok());
        }
    }

    /// The data-encoding crate's base32 without its check of the bits
    /// after the last byte, either case.
    fn crate_base32(input: &[u8]) -> Option<Vec<u8>> {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        spec.translate.from.push_str("abcdefghijklmnopqrstuvwxyz");
        spec.translate.to.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        spec.check_trailing_bits = false;
        spec.encoding().ok()?.decode(input).ok()
    }

    proptest! {
        #[test]
        fn base32_decodes_as_the_crate_without_its_trailing_bits_check(
            input in proptest::collection::vec(
                prop_oneof![
                    20 => proptest::sample::select(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz234567".to_vec()
                    ),
                    1 => proptest::sample::select(b"0189=+/ \n\x00\xff".to_vec()),
                ],
                0..90,
            )
        ) {
            let mut out = Vec::new();
            let ours = base32_into(&input, &mut out).then_some(out);
            prop_assert_eq!(ours, crate_base32(&input));
        }
    }

    proptest! {
        /// Every alignment sliced out of one decoding of the whole run is
        /// what decoding the run from that character reads (the last
        /// character dropped where no encoder ends there).
        #[test]
        fn each_alignment_is_a_phase_of_one_decoding(
            input in proptest::collection::vec(
                proptest::sample::select(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz234567".to_vec()
                ),
                0..90,
            ),
            url in any::<bool>(),
        ) {
            let alphabet = if url { Alphabet::UrlSafe } else { Alphabet::Standard };
            let (mut stream, mut sliced, mut direct) = (Vec::new(), Vec::new(), Vec::new());
            prop_assert!(base64_stream(alphabet, &input, &mut stream));
            for k in 0..4.min(input.len()) {
                let mut part = &input[k..];
                if part.len() % 4 == 1 {
                    part = &part[..part.len() - 1];
                }
                prop_assert!(base64_into(alphabet, part, &mut direct));
                phase(&stream, input.len() * 6, k * 6, &mut sliced);
                prop_assert_eq!(&sliced, &direct, "base64 from {}", k);
            }
            prop_assert!(base32_stream(&input, &mut stream));
            for k in 0..8.min(input.len()) {
                let mut part = &input[k..];
                while matches!(part.len() % 8, 1 | 3 | 6) {
                    part = &part[..part.len() - 1];
                }
                prop_assert!(base32_into(part, &mut direct));
                phase(&stream, input.len() * 5, k * 5, &mut sliced);
                prop_assert_eq!(&sliced, &direct, "base32 from {}", k);
            }
        }
    }

    #[test]
    fn base32_keeps_a_text_whose_last_character_carries_set_bits() {
        // "Hello" then "AB": two characters more, their last bit set.
        let mut out = Vec::new();
        assert!(base32_into(b"JBSWY3DPAB", &mut out));
        assert_eq!(out, b"Hello\0");
        assert!(data_encoding::BASE32_NOPAD.decode(b"JBSWY3DPAB").is_err());
    }

    proptest! {
        #[test]
        fn first_unusual_is_the_first_byte_past_printable_text(
            bytes in proptest::collection::vec(
                prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>(), 1 => Just(b'\t')], 0..100)
        ) {
            let plain = bytes.iter().position(|&c| {
                c >= 0x80 || (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f
            });
            prop_assert_eq!(first_unusual(&bytes), plain);
        }
    }

    #[test]
    fn a_nine_byte_stretch_between_bytes_no_text_holds_is_read() {
        let mut b = vec![0xffu8; 20];
        b.extend_from_slice(b"123456789");
        b.extend_from_slice(&[0u8; 5]);
        assert_eq!(readable(&b), ["123456789"]);
        b.truncate(28);
        assert!(readable(&b).is_empty());
    }
}
