//! MCP result shapes the parser checks inside a `result`: the members that
//! decide how a peer reads a result, the lists it carries (`tools`,
//! `prompts`, …) and the members of each listed item — no duplicates and no
//! near-names, so no peer reads a member the gateway's judges did not.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::jsonrpc::check::{Checked, KeySeed, KeySet, Violation};
use super::names::near_name;

/// Members of a result that decide how a peer reads it (2026-07-28): a
/// near-name of one (`ResultType`, `InputRequests`, `requeſtState`) is what
/// a case-insensitive peer reads while the gateway's judge would not.
pub(crate) const RESULT_NAMES: [&str; 16] = [
    "resultType",
    "inputRequests",
    "requestState",
    "taskId",
    "structuredContent",
    "isError",
    "content",
    "contents",
    "messages",
    "tools",
    "prompts",
    "resources",
    "resourceTemplates",
    "nextCursor",
    "task",
    "completion",
];

/// The bit of a result's `lists` (after [`LIST_NAMES`]'s) that says it
/// holds a `completion`: only a completion's reply may.
pub(crate) const COMPLETION_BIT: u8 = 1 << LIST_NAMES.len();

/// Forwards the scalar visits of a seed to its plain [`Checked`].
macro_rules! scalars_checked {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            self.0.visit_bool(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.0.visit_i64(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.0.visit_u64(v)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.0.visit_f64(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.0.visit_str(v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.0.visit_unit()
        }
    };
}

/// A `result`: when an object (every MCP result is one), its members are
/// checked like the envelope's: no duplicates, no near-names of
/// [`RESULT_NAMES`]. Any other JSON value is checked as any value is.
/// The second field records which of [`LIST_NAMES`] the result holds (a
/// bit each, in that order).
pub(crate) struct ResultSeed<'v>(pub(crate) Checked<'v>, pub(crate) &'v std::cell::Cell<u8>);

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result")
    }
    scalars_checked!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        named_members(self.0, map, &RESULT_NAMES, Some(self.1))
    }
}

/// The members of an object whose names the gateway reads: no duplicates,
/// no near-names of `names`; with `lists` (a result's), its lists are
/// checked item by item ([`ListSeed`]) and recorded there.
pub(crate) fn named_members<'de, A: MapAccess<'de>>(
    c: Checked<'_>,
    mut map: A,
    names: &[&str],
    lists: Option<&std::cell::Cell<u8>>,
) -> Result<(), A::Error> {
    let inner = c.descend()?;
    let mut keys = KeySet::default();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        if keys.insert_is_dup(&key) {
            c.violation.set(Some(Violation::DuplicateKey));
            return Err(de::Error::custom("duplicate member"));
        }
        if near_name(&key, names) {
            c.violation.set(Some(Violation::NearName));
            return Err(de::Error::custom("near-name member"));
        }
        let value = inner.member(&key)?;
        let listed = lists.and_then(|l| Some((l, LIST_NAMES.iter().position(|n| *n == key)?)));
        if let Some((l, i)) = listed {
            l.set(l.get() | 1 << i);
            map.next_value_seed(ListSeed(value))?;
        } else {
            if let (Some(l), "completion") = (lists, &*key) {
                l.set(l.get() | COMPLETION_BIT);
            }
            map.next_value_seed(value)?;
        }
    }
    Ok(())
}

/// The lists a result carries, whose items the gateway filters and pins.
pub(crate) const LIST_NAMES: [&str; 4] = ["tools", "prompts", "resources", "resourceTemplates"];

/// Members of a listed tool, prompt, resource or template that the gateway
/// reads (filtering, pinning, mirrored-header declarations): a near-name of
/// one (`Description`, `inputſchema`) is what a case-insensitive client
/// reads while the pin's fingerprint would not.
pub(crate) const ITEM_NAMES: [&str; 12] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
    "arguments",
    "uri",
    "uriTemplate",
    "mimeType",
    "execution",
    "_meta",
];

/// A list of a result (`tools`, …): each object item is checked by
/// [`ItemSeed`]; any other value as any value is.
pub(crate) struct ListSeed<'v>(pub(crate) Checked<'v>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    scalars_checked!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.0.descend()?.item();
        while seq.next_element_seed(ItemSeed(inner))?.is_some() {}
        Ok(())
    }
}

/// One listed item: no duplicates, no near-names of [`ITEM_NAMES`].
pub(crate) struct ItemSeed<'v>(pub(crate) Checked<'v>);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a listed item")
    }
    scalars_checked!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        named_members(self.0, map, &ITEM_NAMES, None)
    }
}
