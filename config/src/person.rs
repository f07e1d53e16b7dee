//! One identity per person: the form in which principals and approvers are
//! compared wherever the gateway or the agent asks "is this the same
//! person?" (self-approval, distinct approvers, the approvers file, the
//! principals a bundle defines, quotas, budgets, bindings, audit).
//!
//! Two spellings are one person when a reader would take them for one:
//! compatibility normalisation (NFKD: `ｏｌａｆ` is `olaf`), combining marks
//! removed (`Ö` is `O` + a mark), case folded per character both ways
//! (`ß`/`SS`, `ı`/`I`, `K`), and recomposed. Invisible characters (controls
//! and Unicode's default-ignorable code points) are refused, not removed:
//! a name that carries them is not a name anyone types. The form errs
//! towards merging: two people whose names differ only by an accent are
//! treated as one for every rule that compares people, which can only make
//! those rules stricter.
//!
//! Tenants are *scoped* by a stricter key ([`tenant_key`], [`in_scope`]):
//! what a tenant admin, an approver or a viewer reads. There merging would
//! widen what someone sees, so only ASCII case is folded; `financé`,
//! `ﬁnance` or `ｆｉｎａｎｃｅ` (another organisation's name, perhaps, at an
//! identity provider that lets customers pick one) are never `finance`.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Why a name cannot stand for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonError {
    #[error("is empty")]
    Empty,
    #[error("holds an invisible or control character (U+{0:04X})")]
    Invisible(u32),
    /// A line or paragraph separator, or a noncharacter: no part of a name
    /// anyone types, and read otherwise by each reader.
    #[error("holds a character that is not part of a name (U+{0:04X})")]
    NotText(u32),
    /// Nothing is left to compare once the name is folded (combining marks
    /// alone): every such name would be one person.
    #[error("holds nothing to compare (combining marks alone)")]
    Unfoldable,
}

/// Whether `c` is no part of any name, though visible to some readers: the
/// line and paragraph separators, and Unicode's noncharacters.
fn not_text(c: char) -> bool {
    let u = u32::from(c);
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{fdd0}'..='\u{fdef}') || u & 0xfffe == 0xfffe
}

/// Whether `c` is invisible to a reader: a control, or a default-ignorable
/// code point (zero-width characters, joiners, bidi marks, variation
/// selectors, tags, the soft hyphen, BOM).
pub fn invisible(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}') || default_ignorable(c)
}

/// Whether `c` is a default-ignorable code point (Unicode's list, which
/// IDNA maps to nothing in a host): zero-width characters, joiners, bidi
/// marks, variation selectors, tags, the soft hyphen, BOM.
pub fn default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{ad}'
        | '\u{34f}'
        | '\u{61c}'
        | '\u{115f}'..='\u{1160}'
        | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{3164}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{feff}'
        | '\u{ffa0}'
        | '\u{fff0}'..='\u{fff8}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

/// The canonical form of one part of a name (a tenant or an id).
pub fn canonical(name: &str) -> Result<String, PersonError> {
    if let Some(c) = name.chars().find(|c| invisible(*c)) {
        return Err(PersonError::Invisible(c as u32));
    }
    if let Some(c) = name.chars().find(|c| not_text(*c)) {
        return Err(PersonError::NotText(c as u32));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err(PersonError::Empty);
    }
    if name.is_ascii() {
        return Ok(name.to_ascii_lowercase());
    }
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        for u in c.to_uppercase() {
            folded.extend(u.to_lowercase());
        }
    }
    // Folding can make new compatibility forms and marks (`İ` → `i̇`).
    let folded: String = folded
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .nfc()
        .collect();
    if folded.trim().is_empty() {
        return Err(PersonError::Unfoldable);
    }
    Ok(folded)
}

/// Whether `name` (a principal's id or tenant, from any credential) can be
/// compared with other names at all: [`canonical`] has a form for it. A
/// name that cannot (invisible characters, controls, bidi controls,
/// separators, nothing but marks or spaces) is refused where a caller is
/// admitted, and in a bundle's principals at load: every rule that
/// compares people (self-approval, distinct approvers, quotas) would
/// otherwise read it as someone else, or as no one.
pub fn comparable(name: &str) -> Result<(), PersonError> {
    canonical(name).map(|_| ())
}

/// The canonical form of `name`, or the name itself with its invisible
/// characters shown as escapes when it has none (never equal to a
/// canonical form: for comparisons that must not fail, such as a token's
/// subject, where the name cannot be refused).
pub fn canonical_or_marked(name: &str) -> String {
    canonical(name).unwrap_or_else(|_| format!("{MARKED}{}", name.escape_unicode()))
}

/// What a marked name starts with: a control character, which no canonical
/// form and no [`strict_key`] of a name without invisible characters can
/// hold, so a name typed to look like a marked one (`\u{61}\u{200b}`
/// written out) is never equal to it.
const MARKED: char = '\u{1}';

/// The tenant of anonymous callers and of credentials that name none: no
/// tenant the org may grant (see `model::valid_tenant_name`).
pub const NO_TENANT: &str = "default";

/// What the [`tenant_key`] of a name that is not plain ASCII starts with:
/// never the start of an ASCII name's key, nor of a marked one.
const UNFOLDED: &str = "\u{fffd}nfc:";

/// The key a tenant is scoped by: a record's or an approval's tenant claim,
/// a tenant admin's, an approver's or a viewer's tenants. Stricter than the
/// canonical form (which decides whose *rules* apply, where merging
/// spellings only adds rules), as the gateway's tenant membership is:
///
/// - a name of ASCII characters only: its canonical form, lower case and
///   without spaces around (`ACME` and ` acme` are `acme`), the key it has
///   always had;
/// - a name with any other character: the name itself without spaces
///   around, in NFC (a precomposed `é` and `e` + U+0301 are one), behind a
///   mark no ASCII name's key has. Nothing is folded: not accents,
///   ligatures, full-width or other compatibility forms, nor case, so
///   `financé`, `ﬁnance`, `ｆｉｎａｎｃｅ` or a name with the Kelvin sign
///   (U+212A, whose NFC is an ASCII `K`) for a `k` are never an ASCII
///   tenant, nor one another;
/// - a name with invisible characters, or an empty one: marked as
///   [`canonical_or_marked`] marks it, equal to nothing but itself.
pub fn tenant_key(tenant: &str) -> String {
    strict_key(tenant)
}

/// The strict form of a name, which merges only spellings no one could
/// tell apart: ASCII case and surrounding spaces, and NFC. It is what a
/// tenant is scoped by ([`tenant_key`]) and what a handle is bound to (a
/// task, a cursor, a session, a round's state): there merging `rené` with
/// `rene`, or `ａｌｉｃｅ` with `alice`, would hand one person's handles to
/// another, where for rules (quotas, approvals) it only adds strictness.
pub fn strict_key(name: &str) -> String {
    if name.is_ascii() || name.chars().any(invisible) {
        return canonical_or_marked(name);
    }
    let mut key = String::from(UNFOLDED);
    key.extend(name.trim_matches(' ').nfc());
    key
}

/// Whether `tenant` is one of the tenants of `scope` (an approver's, a
/// console user's, a tenant admin's, an audit search's), compared by
/// [`tenant_key`]; an empty scope holds every tenant. The one comparison
/// of a tenant against a scope, wherever the agent makes it.
pub fn in_scope<S: AsRef<str>>(scope: &[S], tenant: &str) -> bool {
    if scope.is_empty() {
        return true;
    }
    let t = tenant_key(tenant);
    scope.iter().any(|mine| tenant_key(mine.as_ref()) == t)
}

/// A person as named somewhere: `id`, or `tenant/id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Person {
    /// `None`: the name did not say (it matches the id in any tenant).
    pub tenant: Option<String>,
    pub id: String,
}

impl Person {
    /// The person `tenant`/`id` of a principal.
    pub fn of(tenant: &str, id: &str) -> Result<Person, PersonError> {
        Ok(Person {
            tenant: Some(canonical(tenant)?),
            id: canonical(id)?,
        })
    }

    /// The person a name in a file means: `tenant/id` or a bare `id`. The
    /// name is split where a reader sees the slash: after compatibility
    /// normalisation, so `acme／alice` (a full-width solidus) is `acme`'s
    /// `alice` as `acme/alice` is, never a bare id `acme/alice` that
    /// matches no one.
    pub fn parse(name: &str) -> Result<Person, PersonError> {
        if let Some(c) = name.chars().find(|c| invisible(*c)) {
            return Err(PersonError::Invisible(c as u32));
        }
        let seen: std::borrow::Cow<'_, str> = if name.is_ascii() {
            name.into()
        } else {
            name.nfkc().collect::<String>().into()
        };
        match seen.split_once('/') {
            Some((t, i)) => Person::of(t, i),
            None => Ok(Person {
                tenant: None,
                id: canonical(&seen)?,
            }),
        }
    }

    /// Whether the two names may mean one person: the same id, and the same
    /// tenant where both say one.
    pub fn same(&self, other: &Person) -> bool {
        self.id == other.id
            && match (&self.tenant, &other.tenant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The key quotas, budgets and bindings are kept by.
    pub fn key(&self) -> String {
        format!("{}\0{}", self.tenant.as_deref().unwrap_or(""), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_person_are_one() {
        for (a, b) in [
            ("ölaf", "ÖLAF"),
            ("alice", "ALICE"),
            ("straße", "STRASSE"),
            ("ıvan", "IVAN"),
            ("İvan", "ivan"),
            ("ｏｌａｆ", "olaf"),
            ("Olaf", "O\u{308}laf"),
            ("\u{212a}im", "kim"),
        ] {
            assert_eq!(canonical(a), canonical(b), "{a} / {b}");
        }
        assert_ne!(canonical("alice"), canonical("alicia"));
        assert_eq!(
            canonical("al\u{200b}ice"),
            Err(PersonError::Invisible(0x200b))
        );
        assert_eq!(canonical("alice\u{0}"), Err(PersonError::Invisible(0)));
        assert_eq!(canonical(" "), Err(PersonError::Empty));
    }

    /// The class: every invisible, control, separator or noncharacter
    /// code point, anywhere in a name, makes it one that cannot be
    /// compared; so does a name with nothing left once folded.
    #[test]
    fn names_that_cannot_be_compared_are_refused() {
        let mut refused = 0u32;
        for c in ('\0'..=char::MAX).filter(|c| invisible(*c) || not_text(*c)) {
            for name in [
                format!("{c}alice"),
                format!("al{c}ice"),
                format!("alice{c}"),
            ] {
                assert!(comparable(&name).is_err(), "{name:?}");
                assert!(Person::of("acme", &name).is_err(), "{name:?}");
                assert!(Person::of(&name, "alice").is_err(), "{name:?}");
            }
            refused += 1;
        }
        assert!(refused > 4000, "{refused}");
        for name in [
            "mal\u{200d}lory",
            "vic\u{ad}tor",
            "eve\u{202e}",
            "dan\u{2066}x",
            "ivy\u{2028}",
            "jo\u{fffe}",
            "x\u{1fffe}",
            "",
            "  ",
            "\u{301}\u{302}",
            " \u{301} ",
        ] {
            assert!(comparable(name).is_err(), "{name:?}");
        }
        for name in [
            "mallory",
            "Ölaf",
            "ｏｌａｆ",
            "\u{212a}im",
            " alice ",
            "a b",
        ] {
            assert!(comparable(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn a_scope_holds_its_tenants_in_ascii_case_only() {
        let scope = ["acme".to_owned(), "Straße".to_owned()];
        for t in ["acme", "ACME", " Acme ", "Straße", "Stra\u{df}e "] {
            assert!(in_scope(&scope, t), "{t}");
        }
        for t in [
            "acm",
            "globex",
            "ac\u{200b}me",
            "",
            // What the canonical form folds into a tenant of the scope:
            // full-width letters, an accent (decomposed), `ß` as `SS`.
            "\u{ff21}\u{ff43}\u{ff4d}\u{ff45}",
            "A\u{301}cme",
            "STRASSE",
            "strasse",
            "STRAẞE",
        ] {
            assert!(!in_scope(&scope, t), "{t:?}");
        }
        // An empty scope holds every tenant.
        assert!(in_scope::<String>(&[], "globex"));
        // A name with invisible characters is in a scope that names it so.
        assert!(in_scope(&["ac\u{200b}me"], "ac\u{200b}me"));
    }

    /// Look-alikes of an ASCII tenant are other tenants: an accent, a
    /// ligature, full-width letters, the Kelvin sign, a dotless `ı`, a
    /// space that is not ASCII.
    #[test]
    fn a_tenant_key_folds_ascii_case_and_nothing_else() {
        let finance = tenant_key("finance");
        assert_eq!(finance, "finance");
        for same in ["FINANCE", "Finance", " finance ", "fInAnCe"] {
            assert_eq!(tenant_key(same), finance, "{same:?}");
        }
        // The keys ASCII names always had: their canonical form.
        for ascii in ["ACME", "acme", "hr_2", " x ", "", " ", "a\u{0}b", "a\u{7f}"] {
            assert_eq!(tenant_key(ascii), canonical_or_marked(ascii), "{ascii:?}");
        }
        assert_eq!(tenant_key("ACME"), tenant_key("acme"));
        let kelvin = "\u{212a}elvin";
        assert_eq!(
            kelvin.nfc().collect::<String>(),
            "Kelvin",
            "NFC alone would make the Kelvin sign ASCII"
        );
        assert_ne!(tenant_key(kelvin), tenant_key("kelvin"));
        assert_ne!(tenant_key(kelvin), tenant_key("Kelvin"));
        let look_alikes = [
            "financ\u{e9}",                                             // financé
            "FINANC\u{c9}",                                             // FINANCÉ
            "finance\u{300}",                                           // financè, decomposed
            "\u{fb01}nance",                                            // ﬁnance
            "\u{ff46}\u{ff49}\u{ff4e}\u{ff41}\u{ff4e}\u{ff43}\u{ff45}", // ｆｉｎａｎｃｅ
            "\u{1d41f}inance",                                          // mathematical bold f
            "fınance",                                                  // dotless ı
            "F\u{130}NANCE",                                            // dotted İ
            "finance\u{a0}",                                            // a no-break space
            "finance\u{3000}",                                          // an ideographic space
        ];
        for t in look_alikes {
            assert_ne!(tenant_key(t), finance, "{t:?}");
            assert!(!in_scope(&["finance"], t), "{t:?}");
            assert!(!in_scope(&[t], "finance"), "{t:?}");
            assert!(in_scope(&[t], t), "{t:?}");
        }
        for (i, a) in look_alikes.iter().enumerate() {
            for b in &look_alikes[i + 1..] {
                assert_ne!(tenant_key(a), tenant_key(b), "{a:?} / {b:?}");
            }
        }
        // Canonical equivalents are one name: NFC and NFD, spaces around.
        let nfc = "Z\u{fc}rich";
        let nfd = "Zu\u{308}rich";
        assert_eq!(tenant_key(nfc), tenant_key(nfd));
        assert_eq!(tenant_key(nfc), tenant_key(" Z\u{fc}rich "));
        assert!(in_scope(&[nfd], nfc));
        assert_ne!(tenant_key(nfc), tenant_key("z\u{fc}rich"));
        // Invisible characters are marked, as before.
        assert_eq!(
            tenant_key("fin\u{200b}ance"),
            canonical_or_marked("fin\u{200b}ance")
        );
        assert_ne!(tenant_key("fin\u{200b}ance"), finance);
        assert_ne!(tenant_key("fin\u{e9}\u{200b}"), tenant_key("fin\u{e9}"));
    }

    /// The class, not the examples: any one visible character that is not
    /// ASCII, in place of the first letter (even code points) or the last
    /// (odd ones), makes a name whose key is no ASCII name's (an ASCII
    /// name's key is ASCII, or marked when it is empty or holds a control).
    #[test]
    fn no_name_with_a_non_ascii_character_is_an_ascii_tenant() {
        let mut checked = 0u32;
        for c in ('\u{80}'..=char::MAX).filter(|c| !invisible(*c)) {
            let name = if u32::from(c) % 2 == 0 {
                format!("{c}inance")
            } else {
                format!("financ{c}")
            };
            let key = tenant_key(&name);
            assert!(
                key.starts_with(UNFOLDED) && !key.is_ascii(),
                "{name:?}: {key:?}"
            );
            checked += 1;
        }
        assert!(checked > 1_000_000);
        for ascii in ["finance", "FINANCE", "hr", "a_1"] {
            assert!(tenant_key(ascii).is_ascii(), "{ascii}");
        }
    }

    #[test]
    fn tenant_qualification() {
        let bare = Person::parse("Alice").expect("p");
        let acme = Person::parse("acme/alice").expect("p");
        let other = Person::parse("globex/alice").expect("p");
        assert!(bare.same(&acme) && bare.same(&other));
        assert!(!acme.same(&other));
        assert!(Person::of("ACME", "ALICE").expect("p").same(&acme));
        // Wherever a reader sees the slash: a full-width solidus (and a
        // full-width tenant) qualify the id as the ASCII slash does.
        for name in [
            "acme\u{ff0f}alice",
            "\u{ff41}\u{ff43}\u{ff4d}\u{ff45}\u{ff0f}ALICE",
            " acme / alice ",
        ] {
            let p = Person::parse(name).expect("p");
            assert_eq!(p, acme, "{name:?}");
            assert!(!p.same(&other), "{name:?}");
        }
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    /// Handles are bound by the strict key: spellings one reader merges
    /// into a person (accents, compatibility forms) own none of each
    /// other's; a marked name is equal to nothing typed.
    #[test]
    fn strict_keys_merge_only_what_no_one_tells_apart() {
        assert_eq!(strict_key("Alice"), strict_key(" alice "));
        assert_eq!(strict_key("ren\u{e9}"), strict_key("rene\u{301}"));
        for (a, b) in [
            ("alice", "alic\u{e9}"),
            ("alice", "\u{ff41}lice"),
            ("rene", "ren\u{e9}"),
            ("kim", "\u{212a}im"),
        ] {
            assert_ne!(strict_key(a), strict_key(b), "{a} / {b}");
        }
        let marked = strict_key("a\u{200b}");
        let typed: String = "a\u{200b}".escape_unicode().collect();
        for lookalike in [typed.clone(), format!("\u{fffd}{typed}")] {
            assert_ne!(strict_key(&lookalike), marked, "{lookalike}");
            assert_ne!(
                canonical_or_marked(&lookalike),
                canonical_or_marked("a\u{200b}")
            );
        }
    }
}
