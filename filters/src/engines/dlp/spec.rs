//! What a built-in detector is: its [`Spec`] (name, category, pattern,
//! validator) and the [`Trigger`]s that wake it before its regex runs.

/// What wakes a detector up before its regex runs. Every trigger is a
/// superset of where the detector's pattern can match: the prefilter may wake
/// a detector for nothing, never sleep through a match. A "word start" is a
/// letter not preceded by a letter or digit (nor by a JSON escape letter such
/// as the `n` of `\n`), which every regex `\b` before a letter is.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// One of these literals (ASCII case-insensitive) whose first letter
    /// begins a word; a literal may start with punctuation (`[inst]`).
    Word(&'static [&'static str]),
    /// `Word`, then a cheap check on what follows the literal.
    WordThen(&'static [&'static str], After),
    /// `WordThen` with the literal's case significant.
    WordExact(&'static [&'static str], After),
    /// A run of at least this many digits, joined only by spaces, `-./()`,
    /// whitespace or non-ASCII bytes (`\s` may be a Unicode space).
    Digits(usize),
    /// At least this many consecutive digits.
    ConsecutiveDigits(usize),
    /// A digit run holding three dots (IPv4).
    DottedQuad,
    /// Two upper-case letters beginning a word, then an optional space and
    /// two digits (UK National Insurance numbers).
    UpperPair,
    /// A byte-level marker, see [`Special`].
    Byte(Special),
}

/// Checks after a word literal (each over-approximates its regex: JSON
/// escapes and Unicode whitespace are skipped as whitespace).
#[derive(Debug, Clone, Copy)]
pub enum After {
    /// A digit within this many non-space bytes.
    DigitWithin(usize),
    /// This literal (ASCII case-insensitive) starts within this many
    /// non-space bytes.
    Near(&'static str, usize),
    /// Optional quote, whitespace, then `:` or `=`.
    Assignment,
    /// Whitespace, then `:`.
    Colon,
    /// At least this many token bytes `[A-Za-z0-9_-]`.
    Token(usize),
    /// Exactly this many lower-case hex digits.
    LowerHex(usize),
    /// Whitespace, an optional `all`/`any`/`the`, then
    /// `previous|prior|above|earlier|preceding`.
    OverridePhrase,
}

/// Byte-level triggers, checked only where that byte occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `@`.
    At,
    /// `+` and a digit 1–9.
    PlusDigit,
    /// `::`, or a colon starting a chain of seven `:hex` groups.
    Ipv6Colon,
    /// A digit, `:`, `AA`.
    TelegramColon,
    /// `=` after `AccountKey` (any case).
    AccountKeyEq,
    /// `![`.
    BangBracket,
    /// `<` before `|`, `s`, `S` or `/`.
    AngleMarker,
    /// `###`.
    HashMarker,
    /// U+200B–U+200D, U+2060, U+FEFF.
    ZeroWidth,
    /// A Unicode tag character (U+E0000–U+E007F).
    TagChar,
}

impl Special {
    /// How many there are (each indexes a table by `as usize`).
    pub const COUNT: usize = Special::TagChar as usize + 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Pii,
    Secret,
    Injection,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Pii => "pii",
            Category::Secret => "secret",
            Category::Injection => "injection",
        }
    }
}

pub struct Spec {
    pub name: &'static str,
    pub category: Category,
    pub triggers: &'static [Trigger],
    pub pattern: &'static str,
    /// Checks the matched text (or capture group 1 when the pattern has one).
    pub validate: Option<fn(&str) -> bool>,
}
