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

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Why a name cannot stand for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonError {
    #[error("is empty")]
    Empty,
    #[error("holds an invisible or control character (U+{0:04X})")]
    Invisible(u32),
}

/// Whether `c` is invisible to a reader: a control, or a default-ignorable
/// code point (zero-width characters, joiners, bidi marks, variation
/// selectors, tags, the soft hyphen, BOM).
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
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
    Ok(folded
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .nfc()
        .collect())
}

/// The canonical form of `name`, or the name itself with its invisible
/// characters shown as escapes when it has none (never equal to a
/// canonical form: for comparisons that must not fail, such as a token's
/// subject, where the name cannot be refused).
pub fn canonical_or_marked(name: &str) -> String {
    canonical(name).unwrap_or_else(|_| format!("\u{fffd}{}", name.escape_unicode()))
}

/// Whether `tenant` is one of the tenants of `scope` (an approver's, a
/// console user's, an audit search's), compared in canonical form; an
/// empty scope holds every tenant. The one comparison of a tenant against
/// a scope, wherever the agent makes it.
pub fn in_scope<S: AsRef<str>>(scope: &[S], tenant: &str) -> bool {
    if scope.is_empty() {
        return true;
    }
    let t = canonical_or_marked(tenant);
    scope
        .iter()
        .any(|mine| canonical_or_marked(mine.as_ref()) == t)
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

    /// The person a name in a file means: `tenant/id` or a bare `id`.
    pub fn parse(name: &str) -> Result<Person, PersonError> {
        match name.split_once('/') {
            Some((t, i)) => Person::of(t, i),
            None => Ok(Person {
                tenant: None,
                id: canonical(name)?,
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

    #[test]
    fn a_scope_holds_its_tenants_in_any_spelling() {
        let scope = ["acme".to_owned(), "Straße".to_owned()];
        for t in [
            "acme",
            "ACME",
            "\u{ff21}\u{ff43}\u{ff4d}\u{ff45}",
            "A\u{301}cme",
            "STRASSE",
        ] {
            assert!(in_scope(&scope, t), "{t}");
        }
        for t in ["acm", "globex", "ac\u{200b}me", ""] {
            assert!(!in_scope(&scope, t), "{t:?}");
        }
        // An empty scope holds every tenant.
        assert!(in_scope::<String>(&[], "globex"));
    }

    #[test]
    fn tenant_qualification() {
        let bare = Person::parse("Alice").expect("p");
        let acme = Person::parse("acme/alice").expect("p");
        let other = Person::parse("globex/alice").expect("p");
        assert!(bare.same(&acme) && bare.same(&other));
        assert!(!acme.same(&other));
        assert!(Person::of("ACME", "ALICE").expect("p").same(&acme));
    }
}
