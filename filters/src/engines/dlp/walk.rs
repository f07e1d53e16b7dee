//! A span-aware walk over a JSON message: every string value, object key and
//! number, with its JSON path and its byte span in the raw message, without
//! building a tree. Numbers are text to whoever reads them (a card number
//! sent as `4111111111111111` is the card number), so DLP reads them too. DLP scans strings where they lie and redacts by splicing new
//! string literals into the raw bytes, so nothing it did not change is
//! re-serialised.
//!
//! Paths go to audit records and logs, so they never spell out a key that
//! could be data: a key that is not a plain identifier (`[A-Za-z_]` then up
//! to 63 of `[A-Za-z0-9_-]`), or that the visitor reports as holding a
//! finding, is written [`KEY`].

use std::borrow::Cow;

/// A key segment of a path that is not spelled out.
pub(crate) const KEY: &str = "[key]";

/// One string of the message.
pub(crate) struct Str<'p> {
    /// `.key` / `[i]` segments from the walked root.
    pub path: &'p str,
    /// For a key, the length of its object's path (`path` is that, `.` and
    /// the key's segment).
    pub parent: usize,
    /// Bytes between the quotes.
    pub start: usize,
    pub end: usize,
    /// Holds a backslash escape (its text must be decoded).
    pub escaped: bool,
    pub is_key: bool,
    /// A number literal (`start..end` is the literal itself, unquoted).
    pub number: bool,
    /// Base64 binary content where MCP carries it (an image's or audio
    /// item's `data`, a resource's `blob`): read only for the text it
    /// may decode to.
    pub binary: bool,
}

/// The message is not the JSON the gateway accepted (or nests deeper than
/// `MAX_DEPTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

const MAX_DEPTH: usize = 512;

/// Decodes one string literal's content (`raw[start..end]`).
pub(crate) fn decode(raw: &[u8], start: usize, end: usize, escaped: bool) -> Option<Cow<'_, str>> {
    if !escaped {
        return simdutf8::basic::from_utf8(&raw[start..end])
            .ok()
            .map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw.get(start - 1..end + 1)?)
        .ok()
        .map(Cow::Owned)
}

/// Whether a key may be spelled out in a path.
fn plain_key(k: &str) -> bool {
    let b = k.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

/// The path of a key holding a finding: its own segment masked.
pub(crate) fn masked_key(st: &Str<'_>) -> String {
    format!("{}.{KEY}", &st.path[..st.parent])
}

/// Whether an object at `path` (below the root member `part`, if the walk
/// has one) is where MCP carries binary content: an item of a result's
/// `content`, `contents` or `messages` list, or (`sampling`: the message
/// is a `sampling/createMessage` request) of its `params.messages`; never
/// inside structured content, `_meta`, arguments or errors. An object-valued
/// `result.content` (an elicitation's answers) is not a list of items.
fn binary_place(part: Option<&str>, path: &str, sampling: bool) -> bool {
    let lists = [".content[", ".contents[", ".messages["];
    let placed = match part {
        None => {
            path.strip_prefix(".result")
                .is_some_and(|p| lists.iter().any(|l| p.starts_with(l)))
                || (sampling && path.starts_with(".params.messages["))
        }
        Some("result") => lists.iter().any(|l| path.starts_with(l)),
        Some("params") => sampling && path.starts_with(".messages["),
        Some(_) => false,
    };
    placed
        && !path
            .split(['.', '['])
            .any(|seg| matches!(seg, "structuredContent" | "_meta" | "arguments" | "error"))
}

/// Whether `s` is base64 as MCP's binary fields carry it (standard
/// alphabet, padded to a multiple of four).
fn base64(s: &[u8]) -> bool {
    if !s.len().is_multiple_of(4) {
        return false;
    }
    let body = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    body.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'))
}

struct Walker<'a, F> {
    b: &'a [u8],
    part: Option<&'a str>,
    sampling: bool,
    i: usize,
    path: String,
    f: F,
}

/// Visits the strings of `raw` (`sampling`: it is a `sampling/createMessage`
/// request, whose `params.messages` may carry binary content). With `part`,
/// only the root object's member
/// of that name is walked (paths start inside it). The visitor returns
/// whether the string holds a finding; a key that does is masked in the
/// paths of everything under it.
pub(crate) fn walk<F: FnMut(Str<'_>) -> bool>(
    raw: &[u8],
    part: Option<&str>,
    sampling: bool,
    f: F,
) -> Result<(), Malformed> {
    let mut w = Walker {
        b: raw,
        part,
        sampling,
        i: 0,
        path: String::new(),
        f,
    };
    match part {
        None => w.value(0, false),
        Some(part) => w.root_member(part),
    }
}

impl<F: FnMut(Str<'_>) -> bool> Walker<'_, F> {
    fn peek(&mut self) -> Result<u8, Malformed> {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                return Ok(c);
            }
        }
        Err(Malformed)
    }

    fn expect(&mut self, c: u8) -> Result<(), Malformed> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// A string literal at `i`: (content start, content end, escaped).
    fn string(&mut self) -> Result<(usize, usize, bool), Malformed> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        let mut j = start;
        loop {
            let rest = self.b.get(j..).ok_or(Malformed)?;
            let k = memchr::memchr2(b'"', b'\\', rest).ok_or(Malformed)?;
            if rest[k] == b'\\' {
                escaped = true;
                j += k + 2;
            } else {
                self.i = j + k + 1;
                return Ok((start, j + k, escaped));
            }
        }
    }

    fn visit(&mut self, start: usize, end: usize, escaped: bool, parent: Option<usize>) -> bool {
        (self.f)(Str {
            path: &self.path,
            parent: parent.unwrap_or(self.path.len()),
            start,
            end,
            escaped,
            is_key: parent.is_some(),
            number: false,
            binary: false,
        })
    }

    fn visit_binary(&mut self, start: usize, end: usize) {
        (self.f)(Str {
            path: &self.path,
            parent: self.path.len(),
            start,
            end,
            escaped: false,
            is_key: false,
            number: false,
            binary: true,
        });
    }

    fn value(&mut self, depth: usize, skip: bool) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed);
        }
        match self.peek()? {
            b'"' => {
                let (s, e, esc) = self.string()?;
                if !skip {
                    self.visit(s, e, esc, None);
                }
                Ok(())
            }
            b'{' => self.object(depth + 1, skip),
            b'[' => self.array(depth + 1, skip),
            _ => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
                {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(Malformed);
                }
                if !skip && matches!(self.b[start], b'-' | b'0'..=b'9') {
                    (self.f)(Str {
                        path: &self.path,
                        parent: self.path.len(),
                        start,
                        end: self.i,
                        escaped: false,
                        is_key: false,
                        number: true,
                        binary: false,
                    });
                }
                Ok(())
            }
        }
    }

    fn array(&mut self, depth: usize, skip: bool) -> Result<(), Malformed> {
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        let mut n = 0usize;
        loop {
            let l = self.path.len();
            if !skip {
                use std::fmt::Write;
                let _ = write!(self.path, "[{n}]");
            }
            self.value(depth, skip)?;
            self.path.truncate(l);
            n += 1;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn object(&mut self, depth: usize, skip: bool) -> Result<(), Malformed> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        // Binary payloads are not text: the `data` of an image or audio
        // item and the `blob` of a resource, where MCP puts them (a result,
        // a sampling request's messages) and only while they are base64.
        // Anywhere else (arguments, errors, structured content, `_meta`) or
        // as any other text, they are scanned like every string. An
        // object's `type` may come after its `data`, so a string `data` is
        // held back until the object is read.
        let binary_here = !skip && binary_place(self.part, &self.path, self.sampling);
        let mut held: Option<(String, usize, usize, bool)> = None;
        let mut binary = false;
        loop {
            let (ks, ke, kesc) = self.string()?;
            let l = self.path.len();
            if !skip {
                let key = decode(self.b, ks, ke, kesc).ok_or(Malformed)?;
                self.path.push('.');
                let plain = plain_key(&key);
                self.path.push_str(if plain { &key } else { KEY });
                if self.visit(ks, ke, kesc, Some(l)) && plain {
                    self.path.truncate(l + 1);
                    self.path.push_str(KEY);
                }
            }
            self.expect(b':')?;
            let key = &self.b[ks..ke];
            let next = self.peek()?;
            if key == b"data" && next == b'"' && !skip {
                let (s, e, esc) = self.string()?;
                held = Some((self.path.clone(), s, e, esc));
            } else if key == b"type" && next == b'"' {
                let (s, e, esc) = self.string()?;
                binary = matches!(&self.b[s..e], b"image" | b"audio");
                if !skip {
                    self.visit(s, e, esc, None);
                }
            } else if key == b"blob" && next == b'"' && binary_here {
                let (s, e, esc) = self.string()?;
                if esc || !base64(&self.b[s..e]) {
                    self.visit(s, e, esc, None);
                } else {
                    self.visit_binary(s, e);
                }
            } else {
                self.value(depth, skip)?;
            }
            self.path.truncate(l);
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Malformed),
            }
        }
        if let Some((path, s, e, esc)) = held {
            (self.f)(Str {
                path: &path,
                parent: path.len(),
                start: s,
                end: e,
                escaped: esc,
                is_key: false,
                number: false,
                binary: binary && binary_here && !esc && base64(&self.b[s..e]),
            });
        }
        Ok(())
    }

    fn root_member(&mut self, part: &str) -> Result<(), Malformed> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            return Ok(());
        }
        loop {
            let (ks, ke, kesc) = self.string()?;
            let wanted = decode(self.b, ks, ke, kesc).ok_or(Malformed)? == part;
            self.expect(b':')?;
            self.value(0, !wanted)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => return Ok(()),
                _ => return Err(Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings read as text (binary content is visited apart).
    fn strings(raw: &str, part: Option<&str>) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let r = walk(raw.as_bytes(), part, true, |s| {
            if s.binary {
                return false;
            }
            let text = decode(raw.as_bytes(), s.start, s.end, s.escaped)
                .map(|t| t.into_owned())
                .unwrap_or_default();
            out.push((s.path.to_owned(), text, s.is_key));
            false
        });
        assert_eq!(r, Ok(()), "{raw}");
        out
    }

    #[test]
    fn paths_spans_and_binary() {
        let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"data":"AAAA","type":"image"},{"type":"text","text":"a\u0041\"b"},{"blob":"QUJD","uri":"x"}],"n":[1,-2.5e3,true,null]}}"#;
        let got = strings(raw, Some("result"));
        let want = [
            (".content", "content", true),
            (".content[0].data", "data", true),
            (".content[0].type", "type", true),
            (".content[0].type", "image", false),
            (".content[1].type", "type", true),
            (".content[1].type", "text", false),
            (".content[1].text", "text", true),
            (".content[1].text", "aA\"b", false),
            (".content[2].blob", "blob", true),
            (".content[2].uri", "uri", true),
            (".content[2].uri", "x", false),
            (".n", "n", true),
            (".n[0]", "1", false),
            (".n[1]", "-2.5e3", false),
        ];
        let want: Vec<(String, String, bool)> = want
            .iter()
            .map(|(p, t, k)| (p.to_string(), t.to_string(), *k))
            .collect();
        assert_eq!(got, want);
        // Text labelled data is scanned when the item is not binary.
        let got = strings(r#"{"data":"4111","type":"text"}"#, None);
        assert!(got
            .iter()
            .any(|(p, t, k)| p == ".data" && t == "4111" && !k));
    }

    #[test]
    fn binary_is_skipped_only_where_mcp_puts_it_and_only_as_base64() {
        let scanned = |raw: &str| -> Vec<String> {
            strings(raw, None)
                .into_iter()
                .filter(|(.., key)| !key)
                .map(|(_, t, _)| t)
                .collect()
        };
        let secret = "AKIAIOSFODNN7EXAMPLE";
        // Where MCP carries binary content, base64 is not scanned as text:
        // it is visited as binary, to be read for the text it decodes to.
        let binary = |raw: &str| {
            let mut n = 0;
            walk(raw.as_bytes(), None, true, |s| {
                n += usize::from(s.binary);
                false
            })
            .expect("walks");
            n
        };
        for skipped in [
            format!(r#"{{"result":{{"content":[{{"type":"image","data":"{secret}"}}]}}}}"#),
            format!(r#"{{"result":{{"contents":[{{"uri":"u","blob":"{secret}"}}]}}}}"#),
            format!(
                r#"{{"params":{{"messages":[{{"content":{{"data":"{secret}","type":"audio"}}}}]}}}}"#
            ),
        ] {
            assert!(!scanned(&skipped).contains(&secret.to_owned()), "{skipped}");
            assert_eq!(binary(&skipped), 1, "{skipped}");
        }
        // Anywhere else, or as text that is not base64, it is scanned.
        for seen in [
            format!(r#"{{"params":{{"name":"echo","arguments":{{"blob":{{"k":"{secret}"}}}}}}}}"#),
            format!(r#"{{"params":{{"name":"echo","arguments":{{"blob":"{secret}"}}}}}}"#),
            format!(r#"{{"params":{{"arguments":{{"x":{{"type":"image","data":"{secret}"}}}}}}}}"#),
            format!(r#"{{"error":{{"code":1,"message":"m","data":{{"blob":"{secret}"}}}}}}"#),
            format!(r#"{{"result":{{"structuredContent":{{"type":"image","data":"{secret}"}}}}}}"#),
            format!(r#"{{"result":{{"_meta":{{"blob":"{secret}"}}}}}}"#),
            format!(r#"{{"result":{{"content":[{{"type":"image","data":"key {secret}"}}]}}}}"#),
            format!(r#"{{"result":{{"content":[{{"type":"image","data":"{secret}\u0041=="}}]}}}}"#),
            format!(r#"{{"result":{{"contents":[{{"blob":"{secret}="}}]}}}}"#),
            format!(r#"{{"resultx":{{"contents":[{{"blob":"{secret}"}}]}}}}"#),
            // An elicitation's answers are an object, not a content list.
            format!(r#"{{"result":{{"action":"accept","content":{{"blob":"{secret}"}}}}}}"#),
            format!(r#"{{"result":{{"content":{{"type":"image","data":"{secret}"}}}}}}"#),
        ] {
            assert!(scanned(&seen).iter().any(|t| t.contains(secret)), "{seen}");
        }
    }

    #[test]
    fn keys_that_are_not_plain_identifiers_are_masked() {
        let long = "k".repeat(65);
        let raw = format!(
            r#"{{"a b":{{"c":"x"}},"ok_key-2":"y","日本":"z","{long}":"w","$ref":"v","_x":[{{"1st":"u"}}]}}"#
        );
        let paths: Vec<String> = strings(&raw, None)
            .into_iter()
            .filter(|(.., key)| !key)
            .map(|(p, ..)| p)
            .collect();
        assert_eq!(
            paths,
            [
                ".[key].c",
                ".ok_key-2",
                ".[key]",
                ".[key]",
                ".[key]",
                "._x[0].[key]"
            ]
        );
        // A key the visitor reports as holding a finding is masked for
        // everything under it; its own string sees its parent's path.
        let mut seen = Vec::new();
        let r = walk(br#"{"a":{"SECRET":{"b":"x"},"c":"y"}}"#, None, false, |s| {
            let key = s.is_key.then(|| s.path[..s.parent].to_owned());
            seen.push((s.path.to_owned(), key));
            s.is_key && s.path.ends_with("SECRET")
        });
        assert_eq!(r, Ok(()));
        let want = [
            (".a", Some("")),
            (".a.SECRET", Some(".a")),
            (".a.[key].b", Some(".a.[key]")),
            (".a.[key].b", None),
            (".a.c", Some(".a")),
            (".a.c", None),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(p, k)| (p.to_string(), k.map(str::to_owned)))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn malformed_is_refused() {
        for bad in [
            r#"{"a":"#,
            r#"{"a" 1}"#,
            r#"["a",]"#,
            r#"{"a":"x"#,
            "",
            "{",
            r#"{"a":1,}"#,
        ] {
            assert!(
                walk(bad.as_bytes(), None, false, |_| false).is_err(),
                "{bad}"
            );
        }
        let deep = "[".repeat(600) + &"]".repeat(600);
        assert!(walk(deep.as_bytes(), None, false, |_| false).is_err());
    }
}
