//! A corpus that looks like MCP traffic, made here with no download: the
//! classes of content real tool calls and results carry, each at any size,
//! as the text of a `tools/call` argument or of a tool result, and with or
//! without planted secrets. The criterion DLP bench reads it per class;
//! `warden-corpus` writes it out for the end-to-end benchmarks
//! (`benches/e2e.sh --corpus`).

use std::fmt::Write as _;

/// One class of content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// English prose (the project's long-standing bench body).
    Prose,
    /// Chinese, Japanese and Korean text with Latin words and digits mixed in.
    Cjk,
    /// Base64 of random bytes (a file, an image as MCP sends it).
    Base64Random,
    /// Base64 of a real, small PNG made here (zlib-compressed pixels).
    Base64Png,
    /// Base64 of a real, small PDF made here (text objects).
    Base64Pdf,
    /// Hex digests (SHA-256-like), one per line or space separated.
    HexHashes,
    /// Base64url tokens and JWT-shaped triples.
    Tokens,
    /// One long run of letters (minified identifiers, a hash without breaks).
    LetterRun,
    /// Minified JSON (an API response serialised compactly).
    MinifiedJson,
    /// Minified HTML.
    MinifiedHtml,
    /// Numeric rows: CSV lines of numbers and JSON arrays of numbers.
    NumericRows,
    /// Log lines with timestamps, IPs, levels and request ids.
    Logs,
    /// Emoji and symbols between words.
    Emoji,
}

impl Class {
    /// Every class, prose first.
    pub const ALL: [Class; 13] = [
        Class::Prose,
        Class::Cjk,
        Class::Base64Random,
        Class::Base64Png,
        Class::Base64Pdf,
        Class::HexHashes,
        Class::Tokens,
        Class::LetterRun,
        Class::MinifiedJson,
        Class::MinifiedHtml,
        Class::NumericRows,
        Class::Logs,
        Class::Emoji,
    ];

    /// The class's name in bench ids and file names.
    pub fn name(self) -> &'static str {
        match self {
            Class::Prose => "prose",
            Class::Cjk => "cjk",
            Class::Base64Random => "base64_random",
            Class::Base64Png => "base64_png",
            Class::Base64Pdf => "base64_pdf",
            Class::HexHashes => "hex_hashes",
            Class::Tokens => "tokens",
            Class::LetterRun => "letter_run",
            Class::MinifiedJson => "minified_json",
            Class::MinifiedHtml => "minified_html",
            Class::NumericRows => "numeric_rows",
            Class::Logs => "logs",
            Class::Emoji => "emoji",
        }
    }

    /// The class of `name`.
    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A small deterministic generator (xorshift64*): the corpus is the same
/// on every machine and every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 (the corpus makes its own, so that the benches
/// measure the gateway's decoder, not the corpus's).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A real PNG of about `size` bytes: a greyscale gradient with noise, in
/// zlib "stored" blocks (valid, if uncompressed), with a `tEXt` chunk as
/// image tools write one.
fn png(size: usize, rng: &mut Rng) -> Vec<u8> {
    let width = 64usize;
    let rows = (size / (width + 1)).max(1);
    let mut raw = Vec::with_capacity(rows * (width + 1));
    for y in 0..rows {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.push(((x * 4 + y * 2) as u8).wrapping_add((rng.next() & 7) as u8));
        }
    }
    let mut z = vec![0x78, 0x01];
    for (i, block) in raw.chunks(65535).enumerate() {
        let last = (i + 1) * 65535 >= raw.len();
        z.push(u8::from(last));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(rows as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"tEXt", b"Software\0warden corpus");
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

/// A real PDF of about `size` bytes: pages of text objects, an xref table
/// and a trailer.
fn pdf(size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    let mut n = 1;
    while out.len() + 200 < size {
        offsets.push(out.len());
        let line = PROSE[rng.below(PROSE.len())];
        let stream = format!("BT /F1 11 Tf 72 720 Td ({line}) Tj ET");
        let _ = write!(
            out,
            "{n} 0 obj\n<< /Length {} >>\nstream\n{stream}\nendstream\nendobj\n",
            stream.len()
        );
        n += 1;
    }
    let xref = out.len();
    let _ = write!(out, "xref\n0 {n}\n0000000000 65535 f \n");
    for o in &offsets {
        let _ = writeln!(out, "{o:010} 00000 n ");
    }
    let _ = write!(out, "trailer\n<< /Size {n} >>\nstartxref\n{xref}\n%%EOF\n");
    out.into_bytes()
}

const PROSE: [&str; 6] = [
    "The quarterly review on 2026-11-02 covered 14 projects across 3 regions.",
    "Build 4821 passed after retrying 2 flaky tests; version 1.8.3 ships Friday.",
    "Latency p99 dropped from 240 ms to 180 ms once the cache warmed up.",
    "Please see the attached notes from the design meeting and reply by Monday.",
    "Ticket OPS-2291 tracks the migration; 87 percent of tenants are done.",
    "The deploy to eu-west-1 finished with 3 replicas and the team was notified.",
];

const CJK: [&str; 6] = [
    "会议记录：第三季度的项目进展顺利，共完成了14个任务。",
    "デプロイは金曜日に予定されています。バージョン1.8.3をリリースします。",
    "분기별 검토에서 3개 지역의 프로젝트를 다루었습니다.",
    "请在周一之前回复设计会议的记录，谢谢 team。",
    "キャッシュが温まるとレイテンシは240msから180msに下がりました。",
    "티켓 OPS-2291에서 마이그레이션을 추적합니다; 87% 완료.",
];

const EMOJI: [&str; 8] = [
    "🚀 shipped",
    "✅ tests green",
    "🔥 hot path",
    "👍🏽 approved",
    "🎉🎉 release",
    "⚠️ careful",
    "👨‍👩‍👧 family plan",
    "🇪🇺 region",
];

/// The text of class `class`, about `size` bytes long (UTF-8).
pub fn text(class: Class, size: usize) -> String {
    let mut rng = Rng::new(class as u64 + 1);
    let mut t = String::with_capacity(size + 64);
    match class {
        Class::Prose => {
            while t.len() < size {
                t.push_str(PROSE[rng.below(PROSE.len())]);
                t.push(' ');
            }
        }
        Class::Cjk => {
            while t.len() < size {
                t.push_str(CJK[rng.below(CJK.len())]);
            }
        }
        Class::Base64Random => t = base64(&rng.bytes(size * 3 / 4)),
        Class::Base64Png => t = base64(&png(size * 3 / 4, &mut rng)),
        Class::Base64Pdf => t = base64(&pdf(size * 3 / 4, &mut rng)),
        Class::HexHashes => {
            while t.len() < size {
                for b in rng.bytes(32) {
                    let _ = write!(t, "{b:02x}");
                }
                t.push(if rng.below(2) == 0 { '\n' } else { ' ' });
            }
        }
        Class::Tokens => {
            while t.len() < size {
                if rng.below(2) == 0 {
                    let _ = write!(
                        t,
                        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{} ",
                        base64url(
                            format!(
                                "{{\"sub\":\"user{}\",\"iat\":{}}}",
                                rng.below(1_000_000),
                                1_700_000_000 + rng.below(10_000_000)
                            )
                            .as_bytes()
                        ),
                        base64url(&rng.bytes(32))
                    );
                } else {
                    let _ = write!(t, "tok_{} ", base64url(&rng.bytes(24)));
                }
            }
        }
        Class::LetterRun => {
            while t.len() < size {
                t.push((b'a' + rng.below(26) as u8) as char);
            }
        }
        Class::MinifiedJson => {
            t.push('[');
            while t.len() < size {
                let _ = write!(
                    t,
                    "{{\"id\":{},\"name\":\"item-{}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b\"],\"ok\":true}},",
                    rng.below(100_000),
                    rng.below(1000),
                    rng.below(500),
                    rng.below(100)
                );
            }
            t.pop();
            t.push(']');
        }
        Class::MinifiedHtml => {
            t.push_str("<!doctype html><html><head><title>Report</title></head><body>");
            while t.len() < size {
                let _ = write!(
                    t,
                    "<div class=\"row r{}\"><a href=\"/items/{}\">{}</a><span>{}</span></div>",
                    rng.below(10),
                    rng.below(100_000),
                    PROSE[rng.below(PROSE.len())],
                    rng.below(1000)
                );
            }
            t.push_str("</body></html>");
        }
        Class::NumericRows => {
            while t.len() < size {
                if rng.below(2) == 0 {
                    let _ = writeln!(
                        t,
                        "{},{},{}.{},{},{}",
                        rng.below(100_000),
                        rng.below(1000),
                        rng.below(100),
                        rng.below(1000),
                        rng.below(10),
                        rng.below(1_000_000)
                    );
                } else {
                    let _ = writeln!(
                        t,
                        "[{},{},{},{},{}]",
                        rng.below(1000),
                        rng.below(1000),
                        rng.below(1000),
                        rng.below(1000),
                        rng.below(1000)
                    );
                }
            }
        }
        Class::Logs => {
            let levels = ["INFO", "WARN", "DEBUG", "ERROR"];
            while t.len() < size {
                let _ = writeln!(
                    t,
                    "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z {} 10.{}.{}.{} GET /api/v1/items/{} 200 {}ms req={:016x}",
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60),
                    rng.below(60),
                    rng.below(1000),
                    levels[rng.below(levels.len())],
                    rng.below(256),
                    rng.below(256),
                    rng.below(256),
                    rng.below(100_000),
                    rng.below(900),
                    rng.next()
                );
            }
        }
        Class::Emoji => {
            while t.len() < size {
                t.push_str(EMOJI[rng.below(EMOJI.len())]);
                t.push(' ');
            }
        }
    }
    // Whole characters only.
    let mut cut = size.min(t.len());
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    t.truncate(cut);
    t
}

/// The secrets planted in a "with findings" sample: one per 4 KiB (at
/// least one), in turn a card number, an SSN and an AWS key id.
const PLANTED: [&str; 3] = [
    " 4111 1111 1111 1111 ",
    " 123-45-6789 ",
    " AKIAIOSFODNN7EXAMPLE ",
];

/// [`text`] with secrets planted when `secrets`, at about `size` bytes.
pub fn sample(class: Class, size: usize, secrets: bool) -> String {
    let mut t = text(class, size);
    if secrets {
        let n = (size / 4096).max(1);
        for i in 0..n {
            let mut at = (i * size / n + size / (2 * n)).min(t.len());
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            t.insert_str(at, PLANTED[i % PLANTED.len()]);
        }
    }
    t
}

/// A `tools/call` of tool `echo` whose one argument is `text`.
pub fn call(text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}
    }))
    .unwrap_or_default()
}

/// A tool result carrying `text` as one text content block.
pub fn result(text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 42,
        "result": {"content": [{"type": "text", "text": text}], "isError": false}
    }))
    .unwrap_or_default()
}

/// The same result as an SSE stream: `progress` notifications carrying the
/// text in `events - 1` parts as their `message`, then the result (one
/// event when `events` is 1).
pub fn sse(text: &str, events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let parts = events.saturating_sub(1);
    if parts > 0 {
        let mut cuts = vec![0];
        for i in 1..parts {
            let mut at = i * text.len() / parts;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            cuts.push(at);
        }
        cuts.push(text.len());
        for (i, w) in cuts.windows(2).enumerate() {
            let note = serde_json::json!({
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": "p42", "progress": i + 1, "total": parts, "message": &text[w[0]..w[1]]}
            });
            out.extend_from_slice(b"event: message\ndata: ");
            out.extend_from_slice(note.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(&result(text));
    out.extend_from_slice(b"\n\n");
    out
}
