//! Where a message names tasks, and the walks that seal or open every such
//! name (see `tasks`): a member some peer reads as `taskId`, and
//! related-task metadata (`io.modelcontextprotocol/related-task`).
//!
//! Related-task metadata is the protocol's own wherever it sits: in the
//! `_meta` of a message's params or result, of a content block, of a task
//! in a list, of a tool's structured content or of a sampling message. A
//! peer that reads it in any of those places acts on the id it names, so
//! every entry is judged at every depth ([`Reach::Related`]). A bare
//! `taskId` member is judged at every depth only where nothing but task ids
//! are expected to be named that way (an error, a task's inline error:
//! [`Reach::All`], [`Reach::Ids`]); elsewhere it may be a tool's own
//! payload, and only the protocol's own positions are read (see `tasks`).

use serde_json::Value as Json;

pub(super) const RELATED: &str = "io.modelcontextprotocol/related-task";

/// What a walk over task ids did.
#[derive(Default, Clone, Copy)]
pub(super) struct Walk {
    /// Some id was replaced or some member removed.
    pub(super) changed: bool,
    /// Some member was removed: an id `f` did not map.
    pub(super) removed: bool,
}

impl std::ops::BitOrAssign for Walk {
    fn bitor_assign(&mut self, o: Walk) {
        self.changed |= o.changed;
        self.removed |= o.removed;
    }
}

/// Which task names a walk maps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Reach {
    /// Every member read as `taskId` and every related-task entry.
    All,
    /// Every member read as `taskId` outside related-task entries, which
    /// are left to a [`Reach::Related`] walk of an enclosing value (so
    /// that no entry is mapped twice).
    Ids,
    /// Every related-task entry, and every id in it.
    Related,
}

/// Whether some peer reads member `key` as `name`: itself, or a name a
/// case-insensitive or lenient decoder takes for it (`TaskId`, `TASKID`,
/// `taſkId`). Escapes (`\u0074askId`) are decoded before this is asked.
pub(super) fn named(key: &str, name: &str) -> bool {
    key == name || crate::protocol::names::same_name(key, name)
}

/// Whether `v` holds, at any depth, a member some peer reads as the
/// related-task key.
pub(super) fn has_related(v: &Json) -> bool {
    match v {
        Json::Object(o) => o.iter().any(|(k, x)| named(k, RELATED) || has_related(x)),
        Json::Array(a) => a.iter().any(has_related),
        _ => false,
    }
}

/// Whether `v` holds, at any depth, a member some peer reads as `taskId`
/// or as the related-task key.
pub(super) fn names_task_id(v: &Json) -> bool {
    match v {
        Json::Object(o) => o
            .iter()
            .any(|(k, x)| named(k, "taskId") || named(k, RELATED) || names_task_id(x)),
        Json::Array(a) => a.iter().any(names_task_id),
        _ => false,
    }
}

/// Maps every task name under `v` that `reach` covers, at any depth (error
/// data, nested arrays, related-task metadata wherever it sits): each
/// member some peer reads as `taskId` becomes `f` of its id, and is removed
/// when `f` gives `None` or its value is no string. A related-task entry
/// that is no object, or from which an id was removed, is removed whole.
pub(super) fn walk(v: &mut Json, f: &mut dyn FnMut(&str) -> Option<String>, reach: Reach) -> Walk {
    let mut walk = Walk::default();
    match v {
        Json::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let Some(x) = o.get_mut(&k) else { continue };
                let (w, keep) = member(&k, x, f, reach);
                walk |= w;
                if !keep {
                    o.remove(&k);
                }
            }
        }
        Json::Array(a) => {
            for x in a {
                walk |= self::walk(x, f, reach);
            }
        }
        _ => {}
    }
    walk
}

/// Every task id under `v` (see [`walk`], [`Reach::All`]).
pub(super) fn task_ids(v: &mut Json, f: &mut dyn FnMut(&str) -> Option<String>) -> Walk {
    walk(v, f, Reach::All)
}

/// Every related-task entry under `v`, at any depth (see [`walk`],
/// [`Reach::Related`]).
pub(super) fn related(v: &mut Json, f: &mut dyn FnMut(&str) -> Option<String>) -> Walk {
    walk(v, f, Reach::Related)
}

/// One member `k: x` of an object [`walk`] walks, and whether it is kept.
fn member(
    k: &str,
    x: &mut Json,
    f: &mut dyn FnMut(&str) -> Option<String>,
    reach: Reach,
) -> (Walk, bool) {
    const GONE: Walk = Walk {
        changed: true,
        removed: true,
    };
    if reach != Reach::Related && named(k, "taskId") {
        let Some(id) = x.as_str() else {
            return (GONE, false);
        };
        return match f(id) {
            Some(t) => {
                let changed = t != id;
                *x = Json::String(t);
                (
                    Walk {
                        changed,
                        removed: false,
                    },
                    true,
                )
            }
            None => (GONE, false),
        };
    }
    if named(k, RELATED) {
        if reach == Reach::Ids {
            // Left to the related walk of the value this one is part of.
            return (Walk::default(), true);
        }
        if !x.is_object() {
            return (GONE, false);
        }
        // Inside an entry, every member read as `taskId` is the entry's.
        let w = walk(x, f, Reach::All);
        return if w.removed { (GONE, false) } else { (w, true) };
    }
    (walk(x, f, reach), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reach maps what it covers and nothing else; no entry is mapped
    /// twice by an ids walk and a related walk of the same value.
    #[test]
    fn each_reach_maps_its_own_names_once() {
        let base = serde_json::json!({
            "taskId": "a",
            "x": [{"TaskId": "b"}, {"_meta": {RELATED: {"taskId": "c"}}}],
            "content": [{"type": "text", "_meta": {RELATED: {"taskId": "d"}}}],
        });
        let seen = |reach: Reach| {
            let mut v = base.clone();
            let mut got = Vec::new();
            walk(
                &mut v,
                &mut |id| {
                    got.push(id.to_owned());
                    Some(format!("<{id}>"))
                },
                reach,
            );
            got.sort();
            got
        };
        assert_eq!(seen(Reach::All), ["a", "b", "c", "d"]);
        assert_eq!(seen(Reach::Ids), ["a", "b"]);
        assert_eq!(seen(Reach::Related), ["c", "d"]);
        let mut v = base.clone();
        let mut n = 0;
        walk(
            &mut v,
            &mut |_| {
                n += 1;
                None
            },
            Reach::Related,
        );
        assert_eq!(n, 2);
        assert_eq!(v["taskId"], "a", "a bare id is no related entry: {v}");
        assert_eq!(v["x"][1]["_meta"], serde_json::json!({}), "{v}");
        assert_eq!(v["content"][0]["_meta"], serde_json::json!({}), "{v}");
        assert!(has_related(&base) && !has_related(&base["x"][0]));
    }
}
