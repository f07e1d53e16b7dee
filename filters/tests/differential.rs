//! Differential test of the JSON-RPC parser against the peers it stands
//! between: "one reading of every message, the strictest one" means that
//! whenever `warden_filters::parse` accepts a message, every mainstream peer
//! must accept it too and read the same `jsonrpc`, `method`, `id` (exact
//! value), `params.name` and `params.uri`. When the gateway refuses, anything
//! goes.
//!
//! Messages are generated as raw text (not through serde), mixing duplicate
//! members, ASCII case variants of names, Unicode near-names (U+017F `ſ`,
//! U+212A Kelvin sign, U+0131 `ı`, U+0130 `İ`, Cyrillic and fullwidth
//! lookalikes, combining marks), `\u` escapes in names and values, lone and
//! paired surrogate escapes, odd numbers, NaN/Infinity, BOMs, invalid UTF-8,
//! nested objects and batches.
//!
//! The references:
//! 1. CPython's `json.loads` on the raw bytes (as `request.json()` in
//!    Starlette does): accepts NaN/Infinity and lone surrogates, detects a
//!    BOM, keeps the last duplicate.
//! 2. Node's `JSON.parse` on the UTF-8 decoded body: last duplicate wins,
//!    numbers are doubles (an id is compared by its exact value as a double).
//! 3. Go's `encoding/json` field matching, emulated here (Go need not be
//!    installed) for `struct{JSONRPC, ID, Method any; Params *struct{Name,
//!    URI, Arguments any}}`: a key selects the field whose name it equals,
//!    else the field whose name it equals under Unicode simple case folding
//!    (Go's `foldName`/`bytes.EqualFold`, a fold of our own, see
//!    [`go_fold_rune`]: `ſ`≡`s` and Kelvin sign≡`k` fold to ASCII, `ı` and
//!    `İ` do not); the last matching key wins; several keys matching
//!    `params` are decoded into the same struct (merged), `null` resets it.
//!    Leaves are typed as raw values so that a type mismatch, which Go would
//!    report as an error, does not hide which key Go read.
//!
//! A `null` `params.name`/`params.uri` counts as absent (the SDKs read both
//! alike); everywhere else values are compared exactly.
//!
//! Python and Node each run once, as one process reading base64 messages, one
//! a line, and printing one JSON reading a line. A missing interpreter skips
//! that reference with a message. The corpus size is `PROPTEST_CASES`
//! (default 3000) and the seed `PROPTEST_RNG_SEED` (default fixed), so a run
//! is reproducible. All disagreements are collected, grouped and printed,
//! shortest examples first, before the test fails. `DIFF_VERBOSE=1` also
//! prints why the gateway refused the rest, to tune the generator.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use base64::Engine as _;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use warden_filters::{parse, Envelope, Id, ParseLimits, Parsed};

// ---------------------------------------------------------------- generation

/// Stand-ins for bytes a `String` cannot hold, replaced when the message is
/// turned into bytes: a CESU-8 surrogate (Python's `surrogatepass` decodes
/// it), a stray 0xFF and a truncated two-byte sequence.
const BAD_SURROGATE: char = '\u{10FFFD}';
const BAD_FF: char = '\u{10FFFC}';
const BAD_TRUNCATED: char = '\u{10FFFB}';

fn to_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            BAD_SURROGATE => out.extend_from_slice(b"\xED\xA0\x80"),
            BAD_FF => out.push(0xFF),
            BAD_TRUNCATED => out.push(0xC3),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

fn escape_char(c: char, upper_hex: bool) -> String {
    let mut buf = [0u16; 2];
    c.encode_utf16(&mut buf)
        .iter()
        .map(|u| {
            if upper_hex {
                format!("\\u{u:04X}")
            } else {
                format!("\\u{u:04x}")
            }
        })
        .collect()
}

/// Non-ASCII characters near the ASCII letter `c`: some fold to it under
/// simple case folding (Go and `unicase`), some only under Turkic or full
/// folding, some not at all.
fn fold_variants(c: char) -> &'static [char] {
    match c {
        's' => &['\u{17F}'],             // ſ: both fold to s
        'k' => &['\u{212A}'],            // Kelvin sign: both fold to k
        'i' => &['\u{131}', '\u{130}'],  // ı, İ: only Turkic/full folding reaches i
        'a' => &['\u{430}', '\u{FF41}'], // Cyrillic а, fullwidth: no folding
        'e' => &['\u{435}', '\u{FF45}'],
        'o' => &['\u{43E}'],
        'p' => &['\u{440}'],
        'c' => &['\u{441}'],
        'm' => &['\u{FF4D}', '\u{FF2D}'],
        'd' => &['\u{FF44}'],
        'n' => &['\u{FF4E}'],
        'r' => &['\u{FF52}'],
        _ => &[],
    }
}

/// A member name spelled as `name` mutated by `sel` (one selector per char),
/// as raw JSON string content.
fn render_key(name: &str, sel: &[u8], decoration: u8) -> String {
    let mut out = String::new();
    match decoration {
        0 => out.push_str("\\u0000"),
        1 => out.push('\u{200B}'),
        2 => out.push('\u{FEFF}'),
        _ => {}
    }
    for (c, &s) in name.chars().zip(sel.iter().chain(std::iter::repeat(&0))) {
        let variants = fold_variants(c);
        match s {
            0..=199 => out.push(c),
            200..=214 => out.push(c.to_ascii_uppercase()),
            215..=219 => out.push_str(&escape_char(c, s % 2 == 0)),
            220..=224 => out.push_str(&escape_char(c.to_ascii_uppercase(), s % 2 == 0)),
            225..=244 if !variants.is_empty() => out.push(variants[s as usize % variants.len()]),
            245..=250 if !variants.is_empty() => out.push_str(&escape_char(
                variants[s as usize % variants.len()],
                s % 2 == 0,
            )),
            251..=252 => {
                out.push(c);
                out.push('\u{307}'); // combining dot above
            }
            253 => {
                out.push(c);
                out.push('\u{1}'); // a raw control character: invalid JSON
            }
            254..=255 => {
                out.push(c);
                out.push_str("\\u0000");
            }
            _ => out.push(c.to_ascii_uppercase()),
        }
    }
    match decoration {
        3 => out.push(' '),
        4 => out.push_str("\\u0000"),
        5 => out.push('s'),
        6 => out.push('\u{17F}'),
        _ => {}
    }
    out
}

/// A key for `name`: mostly exact, often a case, escape or Unicode variant.
fn key(name: &'static str) -> BoxedStrategy<String> {
    let n = name.chars().count();
    prop_oneof![
        9 => Just(name.to_owned()),
        2 => (prop::collection::vec(any::<u8>(), n), prop_oneof![6 => Just(255u8), 1 => 0u8..7])
            .prop_map(move |(sel, d)| render_key(name, &sel, d)),
    ]
    .boxed()
}

const ANY_NAMES: [&str; 22] = [
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
    "name",
    "uri",
    "arguments",
    "_meta",
    "cursor",
    "key",
    "path",
    "Path",
    "x",
    "ids",
    "idx",
    "methods",
    "nam",
    "__proto__",
    "constructor",
    "kelvin",
];

fn any_key() -> BoxedStrategy<String> {
    prop::sample::select(&ANY_NAMES[..])
        .prop_flat_map(key)
        .boxed()
}

/// String content mutated by `sel`: escapes, surrogates, control characters.
fn render_str(base: &str, sel: Option<Vec<u8>>) -> String {
    let Some(sel) = sel else {
        return base.replace('\\', "\\\\").replace('"', "\\\"");
    };
    let mut out = String::new();
    let mut sel = sel.into_iter().cycle();
    for c in base.chars() {
        let s = sel.next().unwrap_or(0);
        match s {
            0..=219 => match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            },
            220..=239 => out.push_str(&escape_char(c, s % 2 == 0)),
            240..=241 => {
                out.push_str("\\ud800");
                out.push(c);
            }
            242 => {
                out.push(c);
                out.push_str("\\udfff");
            }
            243 => {
                out.push_str("\\ude00\\ud83d"); // a pair in the wrong order
                out.push(c);
            }
            244..=246 => {
                out.push_str("\\ud83d\\ude00");
                out.push(c);
            }
            247..=248 => {
                out.push_str(["\\/", "\\b", "\\f", "\\n", "\\r", "\\t"][s as usize % 6]);
                out.push(c);
            }
            249 => {
                out.push('\u{1}'); // raw control character
                out.push(c);
            }
            250 => {
                out.push_str("\\x"); // invalid escape
                out.push(c);
            }
            251 => {
                out.push([BAD_SURROGATE, BAD_FF, BAD_TRUNCATED][s as usize % 3]);
                out.push(c);
            }
            252..=253 => {
                out.push('\u{7F}');
                out.push(c);
            }
            _ => {
                out.push_str("\\u0000");
                out.push(c);
            }
        }
    }
    out
}

fn string_from(pool: &'static [&'static str]) -> BoxedStrategy<String> {
    (
        prop::sample::select(pool),
        prop::option::weighted(0.2, prop::collection::vec(any::<u8>(), 1..8)),
    )
        .prop_map(|(base, sel)| format!("\"{}\"", render_str(base, sel)))
        .boxed()
}

const METHODS: &[&str] = &[
    "tools/call",
    "ping",
    "resources/read",
    "initialize",
    "tools/list",
    "notifications/initialized",
    "prompts/get",
    "resources/list",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
    "x-acme/custom",
    "Tools/Call",
    "",
];
const NAMES: &[&str] = &[
    "echo",
    "read_file",
    "ECHO",
    "ſecret",
    "évil",
    "😀",
    "a b",
    "delete\"all",
    "x\\y",
];
const URIS: &[&str] = &[
    "file:///etc/passwd",
    "file:///tmp/x",
    "https://example.com/ſ",
    "",
];
const STRINGS: &[&str] = &["x", "2.0", "1", "K", "ı", "ſ", "null", "NaN", "😀", "é"];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "42",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "-9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
];
/// Numbers no gateway-accepted id may be, and text that is no JSON number.
const ODD_NUMBERS: &[&str] = &[
    "123456789012345678901234567890",
    "1e2",
    "1E2",
    "1e+2",
    "-0",
    "0.0",
    "-0.0",
    "1.0",
    "1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "1e9999999999",
    "01",
    "+1",
    ".5",
    "1.",
    "0x10",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "1_000",
];
const LITERALS: &[&str] = &["true", "false", "null", "{}", "[]"];
const BAD_LITERALS: &[&str] = &["nul", "True", "None", "undefined"];

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        10 => prop::sample::select(NUMBERS).prop_map(str::to_owned),
        1 => prop::sample::select(ODD_NUMBERS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (0u64..1 << 20).prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn literal() -> BoxedStrategy<String> {
    prop_oneof![
        30 => prop::sample::select(LITERALS),
        1 => prop::sample::select(BAD_LITERALS),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

fn any_json() -> BoxedStrategy<String> {
    let leaf = prop_oneof![number(), string_from(STRINGS), literal()];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((any_key(), inner), 0..4).prop_map(|m| object(&m)),
        ]
    })
    .boxed()
}

const WS: &[&str] = &["", "", "", "", "", "", " ", "\n", "\t", "\r\n"];
/// Whitespace JSON does not allow.
const BAD_WS: &[&str] = &["\u{A0}", "\u{C}", "\u{B}", "\u{2028}", "\u{FEFF}"];

fn ws() -> BoxedStrategy<&'static str> {
    prop_oneof![
        60 => prop::sample::select(WS),
        1 => prop::sample::select(BAD_WS),
    ]
    .boxed()
}

fn object(members: &[(String, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// An object with these members, duplicates of some, extra members (in
/// `extra` of objects), shuffled, with optional whitespace between tokens.
fn object_of(
    members: Vec<BoxedStrategy<Option<(String, String)>>>,
    extra: f64,
) -> BoxedStrategy<String> {
    let extras = prop::collection::vec((any_key(), any_json()), 0..3);
    (members, prop::option::weighted(extra, extras), any::<u64>())
        .prop_flat_map(|(members, extras, dup_sel)| {
            let mut all: Vec<(String, String)> = members.into_iter().flatten().collect();
            // Now and then repeat a member under the same name.
            if dup_sel % 16 == 0 && !all.is_empty() {
                let i = (dup_sel / 16) as usize % all.len();
                let again = (all[i].0.clone(), format!("\"{}\"", dup_sel % 100));
                all.push(again);
            }
            all.extend(extras.unwrap_or_default());
            (
                Just(all).prop_shuffle(),
                ws(),
                prop::option::weighted(0.1, ws()),
            )
        })
        .prop_map(|(members, ws, ws2)| {
            let ws2 = ws2.unwrap_or("");
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{ws}\"{k}\"{ws2}:{ws}{v}{ws2}"))
                .collect();
            format!("{{{}{ws}}}", body.join(","))
        })
        .boxed()
}

fn member(
    p: f64,
    name: &'static str,
    value: BoxedStrategy<String>,
) -> BoxedStrategy<Option<(String, String)>> {
    prop::option::weighted(p, (key(name), value)).boxed()
}

fn params_value() -> BoxedStrategy<String> {
    let name_val = prop_oneof![
        8 => string_from(NAMES),
        1 => number(),
        1 => literal(),
        1 => any_json(),
    ];
    let uri_val = prop_oneof![8 => string_from(URIS), 1 => number(), 1 => literal()];
    prop_oneof![
        16 => object_of(vec![
            member(0.6, "name", name_val.boxed()),
            member(0.3, "uri", uri_val.boxed()),
            member(0.4, "arguments", any_json()),
            member(0.1, "_meta", any_json()),
            member(0.1, "cursor", string_from(STRINGS)),
        ], 0.35),
        1 => prop::collection::vec(any_json(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
        1 => prop_oneof![number(), literal(), string_from(STRINGS)],
    ]
    .boxed()
}

fn envelope() -> BoxedStrategy<String> {
    let jsonrpc = prop_oneof![
        10 => Just("\"2.0\"".to_owned()),
        1 => Just("\"\\u0032.0\"".to_owned()),
        1 => prop::sample::select(&["\"1.0\"", "2.0", "2", "\"2.0 \"", "null"][..]).prop_map(str::to_owned),
    ];
    let id = prop_oneof![
        4 => number(),
        3 => string_from(STRINGS),
        1 => literal(),
    ];
    let method = prop_oneof![
        10 => string_from(METHODS),
        1 => number(),
        1 => literal(),
    ];
    object_of(
        vec![
            member(0.95, "jsonrpc", jsonrpc.boxed()),
            member(0.92, "id", id.boxed()),
            member(0.85, "method", method.boxed()),
            member(0.7, "params", params_value()),
            member(0.1, "result", any_json()),
            member(0.05, "error", any_json()),
        ],
        // A member beside JSON-RPC's own is refused whatever it is: now and
        // then, so that most envelopes can be accepted.
        0.03,
    )
}

/// A whole body: one message or a batch, with optional BOM, surrounding
/// whitespace, trailing bytes or an inserted invalid byte.
fn body() -> BoxedStrategy<Vec<u8>> {
    let one_or_batch = prop_oneof![
        12 => envelope(),
        1 => prop::collection::vec(envelope(), 1..4).prop_map(|v| format!("[{}]", v.join(","))),
    ];
    (
        one_or_batch,
        prop_oneof![
            40 => Just(""),
            3 => prop::sample::select(&[" ", "\n", "\r\n\t"][..]),
            2 => prop::sample::select(&["\u{FEFF}", "\u{FEFF} "][..]),
        ],
        prop_oneof![
            40 => Just(""),
            3 => prop::sample::select(&["\n", " ", "\r\n"][..]),
            2 => prop::sample::select(&[" x", ",", "}", "\u{0}"][..]),
        ],
        prop::option::weighted(0.03, (any::<usize>(), 0usize..3)),
    )
        .prop_map(|(msg, pre, post, bad)| {
            let mut s = format!("{pre}{msg}{post}");
            if let Some((at, which)) = bad {
                let mut at = at % (s.len() + 1);
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                s.insert(at, [BAD_SURROGATE, BAD_FF, BAD_TRUNCATED][which]);
            }
            to_bytes(&s)
        })
        .boxed()
}

/// Inputs kept in every run (disagreements found before, and their neighbours).
const FIXED: &[&str] = &[
    // U+0131 (ı) and U+0130 (İ) fold to `i` only under Turkic or full
    // folding: unknown members for the gateway, Go, Python and Node alike.
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\u{131}d\":2}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\\u0130d\":\"x\"}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"file:///tmp/x\",\"ur\u{130}\":\"file:///etc/passwd\"}}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"ur\\u0131\":\"file:///etc/passwd\"}}",
    // Ids beyond 2^53 are not exact doubles.
    "{\"jsonrpc\":\"2.0\",\"id\":9007199254740993,\"method\":\"ping\"}",
    "{\"jsonrpc\":\"2.0\",\"id\":18446744073709551615,\"method\":\"ping\"}",
    // A name that is not a string is read by every peer, not by the gateway.
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":[\"echo\"]}}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":{\"href\":\"file:///etc/passwd\"}}}",
    // Agreements the generator must keep finding.
    "{\"jsonrpc\":\"2.0\",\"id\":9007199254740991,\"method\":\"tools/call\",\"params\":{\"n\\u0061me\":\"\\ud83d\\ude00\"}}",
    "[{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"},{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"Method\":\"y\"}]",
];

// ---------------------------------------------------------------- readings

/// One field as a peer read it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RVal {
    Str(String),
    /// An integer, by its exact decimal value.
    Int(String),
    /// Anything else: tag and text (`o:null`, `f:1.5`, `bad:"\ud800"` …).
    Other(String),
}

impl RVal {
    fn kind(v: &Option<RVal>) -> &'static str {
        match v {
            None => "absent",
            Some(RVal::Str(_)) => "string",
            Some(RVal::Int(_)) => "integer",
            Some(RVal::Other(_)) => "other",
        }
    }
    fn is_null(&self) -> bool {
        *self == RVal::Other("o:null".into())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    jsonrpc: Option<RVal>,
    id: Option<RVal>,
    method: Option<RVal>,
    name: Option<RVal>,
    uri: Option<RVal>,
}

impl Reading {
    fn fields(&self) -> [(&'static str, &Option<RVal>); 5] {
        [
            ("jsonrpc", &self.jsonrpc),
            ("id", &self.id),
            ("method", &self.method),
            ("params.name", &self.name),
            ("params.uri", &self.uri),
        ]
    }
}

/// What a peer made of one body.
#[derive(Clone, Debug)]
enum Outcome {
    Refused(String),
    Single(Option<Reading>),
    Batch(Vec<Option<Reading>>),
}

fn gateway_reading(e: &Envelope) -> Reading {
    Reading {
        jsonrpc: Some(RVal::Str("2.0".into())),
        id: e.id.as_ref().map(|id| match id {
            Id::Num(n) => RVal::Int(n.to_string()),
            Id::Str(s) => RVal::Str(s.clone()),
        }),
        method: e.method.clone().map(RVal::Str),
        name: e.name.clone().map(RVal::Str),
        uri: e.uri.clone().map(RVal::Str),
    }
}

fn rval_from_json(v: &serde_json::Value) -> Option<RVal> {
    let arr = v.as_array()?;
    let tag = arr.first()?.as_str()?;
    let text = arr.get(1)?.as_str()?.to_owned();
    Some(match tag {
        "s" => RVal::Str(text),
        "n" => RVal::Int(text),
        t => RVal::Other(format!("{t}:{text}")),
    })
}

fn reading_from_json(v: &serde_json::Value) -> Option<Reading> {
    let o = v.as_object()?;
    let f = |k: &str| o.get(k).and_then(rval_from_json);
    Some(Reading {
        jsonrpc: f("jsonrpc"),
        id: f("id"),
        method: f("method"),
        name: f("name"),
        uri: f("uri"),
    })
}

fn outcome_from_line(line: &str) -> Outcome {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Outcome::Refused(format!("unreadable reading ({e}): {line}")),
    };
    if let Some(e) = v.get("err") {
        return Outcome::Refused(e.to_string());
    }
    if let Some(s) = v.get("single") {
        return Outcome::Single(reading_from_json(s));
    }
    match v.get("batch").and_then(|b| b.as_array()) {
        Some(items) => Outcome::Batch(items.iter().map(reading_from_json).collect()),
        None => Outcome::Refused(format!("unexpected reading: {line}")),
    }
}

// ---------------------------------------------------------------- Python, Node

const PYTHON: &str = r#"
import sys, json, base64
def enc(v):
    if v is None or isinstance(v, bool):
        return ["o", json.dumps(v)]
    if isinstance(v, int):
        return ["n", str(v)]
    if isinstance(v, float):
        return ["f", repr(v)]
    if isinstance(v, str):
        try:
            v.encode("utf-8")
            return ["s", v]
        except UnicodeEncodeError:
            return ["bad", ascii(v)]
    return ["o", "compound"]
def field(o, k):
    return enc(o[k]) if isinstance(o, dict) and k in o else None
def reading(m):
    if not isinstance(m, dict):
        return None
    p = m.get("params")
    return {"jsonrpc": field(m, "jsonrpc"), "id": field(m, "id"), "method": field(m, "method"),
            "name": field(p, "name"), "uri": field(p, "uri")}
out = []
for line in sys.stdin:
    try:
        v = json.loads(base64.b64decode(line.strip()))
        r = {"batch": [reading(x) for x in v]} if isinstance(v, list) else {"single": reading(v)}
    except Exception as e:
        r = {"err": type(e).__name__}
    out.append(json.dumps(r))
sys.stdout.write("".join(x + "\n" for x in out))
"#;

const NODE: &str = r#"
const wellFormed = (s) => typeof s.isWellFormed === 'function'
  ? s.isWellFormed() : !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
function enc(v) {
  if (v === null || typeof v === 'boolean') return ['o', JSON.stringify(v)];
  if (typeof v === 'number') return Number.isInteger(v) ? ['n', BigInt(v).toString()] : ['f', String(v)];
  if (typeof v === 'string') return wellFormed(v) ? ['s', v] : ['bad', JSON.stringify(v)];
  return ['o', 'compound'];
}
const isObj = (o) => o !== null && typeof o === 'object' && !Array.isArray(o);
const field = (o, k) => isObj(o) && Object.prototype.hasOwnProperty.call(o, k) ? enc(o[k]) : null;
function reading(m) {
  if (!isObj(m)) return null;
  const p = Object.prototype.hasOwnProperty.call(m, 'params') ? m.params : undefined;
  return {jsonrpc: field(m, 'jsonrpc'), id: field(m, 'id'), method: field(m, 'method'),
          name: field(p, 'name'), uri: field(p, 'uri')};
}
const out = [];
const rl = require('readline').createInterface({input: process.stdin});
rl.on('line', (line) => {
  let r;
  try {
    const v = JSON.parse(Buffer.from(line, 'base64').toString('utf8'));
    r = Array.isArray(v) ? {batch: v.map(reading)} : {single: reading(v)};
  } catch (e) {
    r = {err: e.name};
  }
  out.push(JSON.stringify(r));
});
rl.on('close', () => process.stdout.write(out.map((x) => x + '\n').join('')));
"#;

/// Runs one interpreter over the whole corpus; `None` when it is not installed.
fn run_reference(program: &str, args: &[&str], corpus: &[Vec<u8>]) -> Option<Vec<Outcome>> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("differential: `{program}` is not installed, SKIPPING that reference");
            return None;
        }
        Err(e) => panic!("cannot start {program}: {e}"),
    };
    let mut input = String::new();
    for m in corpus {
        input.push_str(&base64::engine::general_purpose::STANDARD.encode(m));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(input.as_bytes())
            .expect("write to reference");
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read reference output");
    writer.join().expect("writer thread");
    let status = child.wait().expect("wait for reference");
    assert!(status.success(), "{program} failed: {status}");
    let outcomes: Vec<Outcome> = out.lines().map(outcome_from_line).collect();
    assert_eq!(
        outcomes.len(),
        corpus.len(),
        "{program} answered {} readings for {} messages",
        outcomes.len(),
        corpus.len()
    );
    Some(outcomes)
}

// ---------------------------------------------------------------- Go

/// Any JSON value, objects keeping every member in order (duplicates too).
#[derive(Debug)]
enum J {
    Null,
    Bool(bool),
    Int(String),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Int(n.to_string()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Int(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<J, E> {
                Ok(J::Float(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry::<String, J>()? {
                    v.push(kv);
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Go's `encoding/json` folding of one rune, for comparison with an ASCII
/// field name. Go (`fold.go`, 1.21+; `bytes.EqualFold` before) maps every
/// rune to the smallest rune of its `unicode.SimpleFold` orbit, i.e. it uses
/// Unicode *simple* case folding (CaseFolding.txt status C and S). The only
/// non-ASCII runes whose simple folding is ASCII are U+017F `ſ` (to `s`) and
/// U+212A Kelvin sign (to `k`); U+0130 `İ` and U+0131 `ı` reach `i` only
/// through the Turkic (T) and full (F) foldings, which Go does not use. So,
/// against ASCII names (all this emulation compares with), a key matches
/// when it has as many runes and each is the name's letter in either ASCII
/// case, `ſ` for `s` or the Kelvin sign for `k`. Other non-ASCII runes are
/// kept as they are: they never equal an ASCII letter.
fn go_fold_rune(c: char) -> char {
    match c {
        '\u{17F}' => 'S',
        '\u{212A}' => 'K',
        c => c.to_ascii_uppercase(),
    }
}

fn go_fold(s: &str) -> String {
    s.chars().map(go_fold_rune).collect()
}

/// The struct field a key decodes into: an exact name first, else a folded match.
fn go_field(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    if let Some(f) = fields.iter().find(|f| **f == key) {
        return Some(f);
    }
    let k = go_fold(key);
    fields.iter().find(|f| go_fold(f) == k).copied()
}

fn go_rval(v: &J) -> RVal {
    match v {
        J::Str(s) => RVal::Str(s.clone()),
        J::Int(n) => RVal::Int(n.clone()),
        J::Float(f) => RVal::Other(format!("f:{f:?}")),
        J::Null => RVal::Other("o:null".into()),
        J::Bool(b) => RVal::Other(format!("o:{b}")),
        J::Arr(_) | J::Obj(_) => RVal::Other("o:compound".into()),
    }
}

fn go_reading(v: &J) -> Option<Reading> {
    let J::Obj(members) = v else { return None };
    let mut r = Reading::default();
    // `*Params`: nil until a `params` object arrives; later ones merge into it.
    let mut params: Option<(Option<RVal>, Option<RVal>)> = None;
    for (k, v) in members {
        match go_field(k, &["jsonrpc", "id", "method", "params"]) {
            Some("jsonrpc") => r.jsonrpc = Some(go_rval(v)),
            Some("id") => r.id = Some(go_rval(v)),
            Some("method") => r.method = Some(go_rval(v)),
            Some("params") => match v {
                J::Obj(pm) => {
                    let p = params.get_or_insert((None, None));
                    for (pk, pv) in pm {
                        match go_field(pk, &["name", "uri", "arguments"]) {
                            Some("name") => p.0 = Some(go_rval(pv)),
                            Some("uri") => p.1 = Some(go_rval(pv)),
                            _ => {}
                        }
                    }
                }
                J::Null => params = None,
                // A type error Go reports; no name or uri is read from it.
                _ => {}
            },
            _ => {}
        }
    }
    if let Some((name, uri)) = params {
        r.name = name;
        r.uri = uri;
    }
    Some(r)
}

fn go_outcome(body: &[u8]) -> Outcome {
    // Go reads a lone surrogate escape as U+FFFD where serde_json fails, so
    // the elements of a batch are read one by one: one such element (which
    // the gateway refuses) does not keep Go from reading the others.
    if let Ok(items) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
        return Outcome::Batch(
            items
                .iter()
                .map(|raw| {
                    serde_json::from_str::<J>(raw.get())
                        .ok()
                        .and_then(|v| go_reading(&v))
                })
                .collect(),
        );
    }
    match serde_json::from_slice::<J>(body) {
        Err(e) => Outcome::Refused(e.to_string()),
        Ok(J::Arr(items)) => Outcome::Batch(items.iter().map(go_reading).collect()),
        Ok(v) => Outcome::Single(go_reading(&v)),
    }
}

// ---------------------------------------------------------------- comparison

#[derive(Debug)]
struct Disagreement {
    category: String,
    detail: String,
}

/// The gateway's reading of each accepted message of a body (index in a
/// batch, or `None` for a single message); empty when it refused the body.
fn gateway_accepts(body: &[u8]) -> Vec<(Option<usize>, Reading)> {
    match parse(body, ParseLimits::default()) {
        Err(_) => Vec::new(),
        Ok(Parsed::Single(e)) => vec![(None, gateway_reading(&e))],
        Ok(Parsed::Batch(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().ok().map(|e| (Some(i), gateway_reading(e))))
            .collect(),
    }
}

fn compare(
    reference: &str,
    accepted: &[(Option<usize>, Reading)],
    theirs: &Outcome,
    out: &mut Vec<Disagreement>,
) {
    for (index, ours) in accepted {
        let their = match (index, theirs) {
            (_, Outcome::Refused(why)) => {
                out.push(Disagreement {
                    category: format!("{reference}: refuses a message the gateway accepts"),
                    detail: why.clone(),
                });
                continue;
            }
            (None, Outcome::Single(r)) => r.as_ref(),
            (Some(i), Outcome::Batch(items)) => items.get(*i).and_then(Option::as_ref),
            _ => None,
        };
        let Some(their) = their else {
            out.push(Disagreement {
                category: format!("{reference}: reads the body's shape differently"),
                detail: format!("{theirs:?}"),
            });
            continue;
        };
        for ((field, a), (_, b)) in ours.fields().into_iter().zip(their.fields()) {
            let b = match b {
                Some(v) if v.is_null() && field.starts_with("params.") => &None,
                b => b,
            };
            if a != b {
                out.push(Disagreement {
                    category: format!(
                        "{reference}: {field}: gateway reads {}, {reference} reads {}",
                        RVal::kind(a),
                        RVal::kind(b)
                    ),
                    detail: format!("gateway {a:?}, {reference} {b:?}"),
                });
            }
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_D1FF);
    eprintln!(
        "differential: {cases} generated messages, seed {seed} (PROPTEST_CASES, PROPTEST_RNG_SEED)"
    );
    let mut seed_bytes = [0u8; 32];
    for (i, b) in seed_bytes.iter_mut().enumerate() {
        *b = seed.to_le_bytes()[i % 8] ^ (i as u8);
    }
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = body();
    let mut out: Vec<Vec<u8>> = FIXED.iter().map(|s| s.as_bytes().to_vec()).collect();
    for _ in 0..cases {
        out.push(strategy.new_tree(&mut runner).expect("generate").current());
    }
    out
}

#[test]
fn gateway_reads_every_accepted_message_like_python_node_and_go() {
    let started = std::time::Instant::now();
    let corpus = corpus();
    let python = run_reference("python3", &["-c", PYTHON], &corpus);
    let node = run_reference("node", &["-e", NODE], &corpus);

    let mut found: Vec<(usize, Disagreement)> = Vec::new();
    let mut accepted_bodies = 0;
    let mut accepted_messages = 0;
    let mut accepted_non_ascii = 0;
    for (i, body) in corpus.iter().enumerate() {
        let accepted = gateway_accepts(body);
        if accepted.is_empty() {
            continue;
        }
        accepted_bodies += 1;
        accepted_messages += accepted.len();
        if !body.is_ascii() {
            accepted_non_ascii += 1;
        }
        let mut d = Vec::new();
        compare("go", &accepted, &go_outcome(body), &mut d);
        if let Some(p) = &python {
            compare("python", &accepted, &p[i], &mut d);
        }
        if let Some(n) = &node {
            compare("node", &accepted, &n[i], &mut d);
        }
        found.extend(d.into_iter().map(|d| (i, d)));
    }

    let refused_by = |r: &Option<Vec<Outcome>>| {
        r.as_ref().map_or("skipped".to_owned(), |o| {
            let n = o
                .iter()
                .filter(|x| matches!(x, Outcome::Refused(_)))
                .count();
            format!("refuses {n}")
        })
    };
    eprintln!(
        "differential: {} bodies; gateway accepts {accepted_bodies} ({accepted_messages} messages, {accepted_non_ascii} bodies with non-ASCII bytes); python {}; node {}; {:.1?}",
        corpus.len(),
        refused_by(&python),
        refused_by(&node),
        started.elapsed()
    );
    if std::env::var_os("DIFF_VERBOSE").is_some() {
        // Why the gateway refuses, to tune the generator.
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for body in &corpus {
            if let Err((_, e)) = parse(body, ParseLimits::default()) {
                let m: String = e
                    .message
                    .chars()
                    .take_while(|c| !c.is_ascii_digit())
                    .collect();
                *why.entry(m).or_default() += 1;
            }
        }
        for (m, n) in why {
            eprintln!("differential: gateway refuses {n}: {m}");
        }
    }
    // The generator must keep producing both outcomes in useful numbers
    // (about 1 in 11 is accepted; request methods without an id are refused
    // since they were first generated, methods in another case and
    // positional params since session 37, members beside JSON-RPC's own
    // since session 43).
    assert!(
        accepted_bodies * 15 > corpus.len(),
        "too few accepted bodies"
    );
    assert!(
        accepted_bodies * 10 < corpus.len() * 9,
        "too few refused bodies"
    );

    if found.is_empty() {
        return;
    }
    let mut groups: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (i, d) in found {
        groups.entry(d.category).or_default().push((i, d.detail));
    }
    let mut report = String::new();
    for (category, mut cases) in groups {
        cases.sort_by_key(|(i, _)| (corpus[*i].len(), *i));
        cases.dedup_by_key(|(i, _)| *i);
        report.push_str(&format!("\n{category}: {} messages\n", cases.len()));
        for (i, detail) in cases.iter().take(3) {
            report.push_str(&format!(
                "    {}\n      {detail}\n",
                String::from_utf8_lossy(&corpus[*i]).escape_debug()
            ));
        }
    }
    panic!("the gateway accepts messages a peer reads differently:{report}");
}

/// The Go emulation itself: which spellings Go's `encoding/json` reads into
/// which field.
#[test]
fn go_emulation_matches_like_encoding_json() {
    let top = ["jsonrpc", "id", "method", "params"];
    for (key, field) in [
        ("id", Some("id")),
        ("ID", Some("id")),
        ("Method", Some("method")),
        ("METHOD", Some("method")),
        ("param\u{17F}", Some("params")),
        ("PARAM\u{17F}", Some("params")),
        ("j\u{17F}onrpc", Some("jsonrpc")),
        ("\u{131}d", None),
        ("\u{130}d", None),
        ("i\u{307}d", None),
        ("paramss", None),
        ("\u{442}d", None),
    ] {
        assert_eq!(go_field(key, &top), field, "{key:?}");
    }
    assert_eq!(go_field("\u{212A}ey", &["key"]), Some("key"));
    let J::Obj(_) = serde_json::from_str::<J>(r#"{"a":1,"a":2}"#).expect("J") else {
        panic!("object")
    };
    let v: J = serde_json::from_str(
        r#"{"params":{"name":"a"},"Params":{"uri":"u","NAME":"b"},"ID":7,"id":"x"}"#,
    )
    .expect("J");
    let r = go_reading(&v).expect("reading");
    assert_eq!(r.name, Some(RVal::Str("b".into())));
    assert_eq!(r.uri, Some(RVal::Str("u".into())));
    assert_eq!(r.id, Some(RVal::Str("x".into())));
}
