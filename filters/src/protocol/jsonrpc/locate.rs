//! [`locate`]: the byte spans of `params`, `params.arguments`,
//! `params._meta`, `result` and `error` in a message the parser validated —
//! a structural scan that unescapes nothing but member names.

use std::ops::Range;

use super::envelope::Spans;

/// Finds the spans of `params`, `params.arguments`, `params._meta`,
/// `result` and `error` in one message that [`parse`] has validated. A
/// structural scan: strings are skipped with `memchr`, nothing is unescaped
/// but member names that carry an escape. `None` only if the bytes are not
/// the valid JSON object the validator accepted.
pub fn locate(msg: &[u8]) -> Option<Spans> {
    let mut c = Cursor { b: msg, i: 0 };
    let mut out = Spans::default();
    c.ws();
    c.eat(b'{')?;
    c.members(|c, key| {
        let start = c.i;
        match key {
            b"params" if c.peek() == Some(b'{') => {
                c.i += 1;
                c.members(|c, key| {
                    let start = c.i;
                    c.skip_value()?;
                    match key {
                        b"arguments" => out.arguments = Some(start..c.i),
                        b"_meta" => out.meta = Some(start..c.i),
                        _ => {}
                    }
                    Some(())
                })?;
                out.params = Some(start..c.i);
            }
            _ => {
                c.skip_value()?;
                match key {
                    b"params" => out.params = Some(start..c.i),
                    b"result" => out.result = Some(start..c.i),
                    b"error" => out.error = Some(start..c.i),
                    _ => {}
                }
            }
        }
        Some(())
    })?;
    Some(out)
}

/// Visits each top-level member of the JSON object `obj` (text the
/// parser validated, such as the `params.arguments` span of a parsed
/// message): its name, unescaped, and the span of its value. The same
/// structural scan as [`locate`]: a long string value is skipped with
/// `memchr`, not read. `None` if `obj` is not an object.
pub fn object_members(obj: &[u8], mut f: impl FnMut(&[u8], Range<usize>)) -> Option<()> {
    let mut c = Cursor { b: obj, i: 0 };
    c.ws();
    c.eat(b'{')?;
    c.members(|c, key| {
        let start = c.i;
        c.skip_value()?;
        f(key, start..c.i);
        Some(())
    })?;
    c.ws();
    (c.i == obj.len()).then_some(())
}

struct Cursor<'b> {
    b: &'b [u8],
    i: usize,
}

impl<'b> Cursor<'b> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// Past the closing quote of the string whose opening quote is at `i`.
    fn skip_string(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            let at = memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)? + self.i;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(());
            }
            self.i = at + 2; // an escape: the next byte is never the end
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// Visits each member of the object whose `{` was just consumed, with
    /// the cursor on the member's value; `f` must consume the value. Ends
    /// past the closing `}`.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let k0 = self.i;
            self.skip_string()?;
            let raw = &self.b[k0 + 1..self.i - 1];
            let unescaped;
            let key: &[u8] = if memchr::memchr(b'\\', raw).is_some() {
                unescaped = serde_json::from_slice::<String>(&self.b[k0..self.i]).ok()?;
                unescaped.as_bytes()
            } else {
                raw
            };
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}
