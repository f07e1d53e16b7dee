//! The checks every JSON value in a message gets while it is read: the
//! depth budget, duplicate members (compared as a case-insensitive peer
//! reads names) and, where MCP's own structure is read, near-names of its
//! vocabulary; and the seeds that keep an id's or a version's scalar.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::protocol::names::Names;

/// Why the structure (not the syntax) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    DuplicateKey,
    /// A member name that folds to one the gateway reads but is not it.
    NearName,
    TooDeep,
    /// A value of a type the message shape does not allow (never quoted).
    Shape,
}

/// The largest integer id every peer reads exactly (JavaScript's 2^53 − 1).
pub(crate) const MAX_SAFE_ID: u64 = (1 << 53) - 1;

/// A value whose scalar form we keep; compound values are validated and dropped.
pub(crate) enum Scalar {
    Str(String),
    Num(serde_json::Number),
    Null,
    Other,
}

/// Remembers the keys of one object to refuse duplicates, compared after
/// Unicode case folding (what a case-insensitive peer reads as one name).
/// Small objects (the common case) use a linear scan; larger ones switch to a
/// hash set of folded keys.
#[derive(Default)]
pub(crate) struct KeySet<'de> {
    /// Each key, and whether it is printable ASCII (two such keys are one
    /// name exactly when they are equal but for ASCII case).
    small: smallvec::SmallVec<[(Cow<'de, str>, bool); 8]>,
    large: Option<std::collections::HashSet<unicase::UniCase<Cow<'de, str>>>>,
}

impl<'de> KeySet<'de> {
    #[allow(clippy::ptr_arg)] // the Cow is stored, so borrowing it whole avoids a copy
    pub(crate) fn insert_is_dup(&mut self, key: &Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.large {
            // One encoding for every entry, so equal folds hash alike; a
            // name some decoder reads two ways is entered under both.
            let forms = crate::protocol::names::folded_readings(key);
            if forms
                .iter()
                .any(|f| set.contains(&unicase::UniCase::unicode(f.clone())))
            {
                return true;
            }
            for f in forms {
                set.insert(unicase::UniCase::unicode(Cow::Owned(f.into_owned())));
            }
            return false;
        }
        let printable = crate::protocol::names::printable_ascii(key);
        if self.small.iter().any(|(s, p)| {
            if printable && *p {
                s.len() == key.len() && s.eq_ignore_ascii_case(key)
            } else {
                crate::protocol::names::same_name(s.as_ref(), key)
            }
        }) {
            return true;
        }
        self.small.push((key.clone(), printable));
        if self.small.len() > 16 {
            self.large = Some(
                self.small
                    .drain(..)
                    .flat_map(|(k, _)| {
                        crate::protocol::names::folded_readings(&k)
                            .into_iter()
                            .map(|f| unicase::UniCase::unicode(Cow::Owned(f.into_owned())))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            );
        }
        false
    }
}

/// A member name, borrowed from the message unless it holds an escape
/// (serde's own `Cow<str>` always copies, one allocation per member).
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// `jsonrpc`: whether it is the string `"2.0"` (any other value is checked
/// like any value, and is not).
pub(crate) struct VersionSeed<'v>(pub(crate) Checked<'v>);

impl<'de> DeserializeSeed<'de> for VersionSeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for VersionSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"2.0\"")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == "2.0")
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        self.0.visit_seq(seq).map(|_| false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        self.0.visit_map(map).map(|_| false)
    }
}

/// Validates any JSON value: depth budget, duplicate keys and, where MCP's
/// own structure is read, near-names of its vocabulary; nothing kept.
#[derive(Clone, Copy)]
pub(crate) struct Checked<'v> {
    pub(crate) budget: u32,
    pub(crate) violation: &'v Cell<Option<Violation>>,
    /// How member names at this level are read.
    pub(crate) names: Names,
}

impl Checked<'_> {
    pub(crate) fn descend<E: de::Error>(self) -> Result<Self, E> {
        if self.budget == 0 {
            self.violation.set(Some(Violation::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(Checked {
            budget: self.budget - 1,
            ..self
        })
    }

    /// The checker for the value of member `key` of an object read at this
    /// level (`self` is already descended into the object); a near-name of
    /// MCP's vocabulary where its structure is read is refused.
    pub(crate) fn member<E: de::Error>(self, key: &str) -> Result<Self, E> {
        if self.names.refuses(key) {
            self.violation.set(Some(Violation::NearName));
            return Err(E::custom("near-name member"));
        }
        Ok(Checked {
            names: self.names.member(key),
            ..self
        })
    }

    /// The checker for the items of an array read at this level.
    pub(crate) fn item(self) -> Self {
        Checked {
            names: self.names.item(),
            ..self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.descend()?.item();
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.descend()?;
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if keys.insert_is_dup(&key) {
                self.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value_seed(inner.member(&key)?)?;
        }
        Ok(())
    }
}

pub(crate) struct ScalarSeed<'v>(pub(crate) Checked<'v>);

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        // Beyond 2^53 a JavaScript peer reads another id.
        Ok(if v.unsigned_abs() <= MAX_SAFE_ID {
            Scalar::Num(v.into())
        } else {
            Scalar::Other
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(if v <= MAX_SAFE_ID {
            Scalar::Num(v.into())
        } else {
            Scalar::Other
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        // A fraction, an exponent or an integer beyond 64 bits: no id MCP
        // allows, and one the gateway could not echo byte for byte.
        Ok(Scalar::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        self.0.visit_seq(seq).map(|_| Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        self.0.visit_map(map).map(|_| Scalar::Other)
    }
}
