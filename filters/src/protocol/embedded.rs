//! Server→client requests a message carries inside it: the entries of an
//! `inputRequests` map (a 2026-07-28 `InputRequiredResult`, a task waiting
//! for input in a `tasks/get` reply, a status notification, a listed task),
//! wherever a server puts one — at any depth of a result, of a request's
//! or notification's params, of an error, inside another embedded
//! request's params — under any name a folding client reads as
//! `inputRequests` (`InputRequests`, `\u0069nputRequests`).
//!
//! A client acts on every such request it reads, so every guard that
//! judges them reads the same maps: the policy (each request meets the
//! decision the same request sent on a stream meets), egress (URL-mode
//! elicitations) through [`in_message`], and the task input binding, which
//! seals the keys of a task's maps, through [`maps_mut`]. Both walks share
//! [`is_input_requests`], [`DEPTH`] and where they descend, so no map one
//! of them reads is missed by the other (`tests` holds them to it).

use serde_json::{Map, Value as Json};

/// The member that holds embedded requests.
pub const INPUT_REQUESTS: &str = "inputRequests";

/// How deep embedded requests are looked for: as deep as a message can be
/// read into a value (serde_json's limit), so never reached by a message
/// the parser accepted. A deeper value is unreadable, never skipped.
pub const DEPTH: usize = 128;

/// Whether raw `bytes` hold `inputRequests` written as a peer may read
/// it where it reaches a filter: as it is, or all in lower case (which a
/// case-insensitive client reads as it, and which the parser lets
/// through). Any other ASCII case (`InputRequests`) is a near-name of
/// MCP's vocabulary, refused by the parser wherever MCP's structure is
/// read (`protocol::names`); in a tool's payload no peer reads requests.
/// Escapes and bytes a decoder drops or folds are looked for by the caller
/// (`Message::may_embed_requests`).
pub fn named_in(bytes: &[u8]) -> bool {
    static EXACT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(INPUT_REQUESTS));
    static LOWER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("inputrequests"));
    EXACT.find(bytes).is_some() || LOWER.find(bytes).is_some()
}

/// Whether some peer reads member `k` as `inputRequests`.
pub fn is_input_requests(k: &str) -> bool {
    k == INPUT_REQUESTS || crate::protocol::names::same_name(k, INPUT_REQUESTS)
}

/// What a walk finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'a> {
    /// One entry of an `inputRequests` map: its key, its method (read as
    /// every peer reads it), and the whole request.
    Request {
        key: &'a str,
        method: &'a str,
        request: &'a Json,
    },
    /// Something a client may take for embedded requests that the gateway
    /// cannot read: a map that is no object, an entry whose method a peer
    /// reads otherwise (`Elicitation/Create`, `method\u0000`) or whose
    /// params are no object, a value deeper than [`DEPTH`].
    Unreadable,
}

/// Every embedded request of a server's message `msg` (a whole JSON-RPC
/// message), at any depth of its `params`, its `result` and its `error`
/// (see the module documentation).
pub fn in_message<'a>(msg: &'a Json, f: &mut dyn FnMut(Found<'a>)) {
    for part in ["params", "result", "error"] {
        if let Some(x) = msg.get(part) {
            walk(x, f, DEPTH);
        }
    }
}

fn walk<'a>(v: &'a Json, f: &mut dyn FnMut(Found<'a>), depth: usize) {
    match v {
        Json::Object(o) => {
            if depth == 0 {
                return f(Found::Unreadable);
            }
            for (k, x) in o {
                if is_input_requests(k) {
                    let Json::Object(reqs) = x else {
                        f(Found::Unreadable);
                        continue;
                    };
                    for (key, r) in reqs {
                        match crate::protocol::jsonrpc::nested_request_method(r) {
                            Some(method) => f(Found::Request {
                                key,
                                method,
                                request: r,
                            }),
                            None => f(Found::Unreadable),
                        }
                        // A request's params may carry requests of their own.
                        walk(r, f, depth - 1);
                    }
                } else {
                    walk(x, f, depth - 1);
                }
            }
        }
        Json::Array(a) => {
            if depth == 0 {
                return f(Found::Unreadable);
            }
            for x in a {
                walk(x, f, depth - 1);
            }
        }
        _ => {}
    }
}

/// Every `inputRequests` map under `v` that is an object, mutably, with a
/// context computed on the way down: `enter(object, parent's context)` is
/// the context of an object's members (the root's parent context is
/// `root`), and `f(context, map)` sees each map (its keys may be
/// rewritten) before the walk goes on into its requests. The maps are
/// those [`in_message`] reads the entries of; one deeper than [`DEPTH`] is
/// not visited (an [`in_message`] walk finds it unreadable).
pub fn maps_mut<C>(
    v: &mut Json,
    root: &C,
    enter: &mut dyn FnMut(&Map<String, Json>, &C) -> C,
    f: &mut dyn FnMut(&C, &mut Map<String, Json>),
) {
    walk_mut(v, root, enter, f, DEPTH);
}

fn walk_mut<C>(
    v: &mut Json,
    parent: &C,
    enter: &mut dyn FnMut(&Map<String, Json>, &C) -> C,
    f: &mut dyn FnMut(&C, &mut Map<String, Json>),
    depth: usize,
) {
    if depth == 0 {
        return;
    }
    match v {
        Json::Object(o) => {
            let ctx = enter(o, parent);
            for (k, x) in o.iter_mut() {
                if is_input_requests(k) {
                    let Json::Object(reqs) = x else { continue };
                    f(&ctx, reqs);
                    for r in reqs.values_mut() {
                        walk_mut(r, &ctx, enter, f, depth - 1);
                    }
                } else {
                    walk_mut(x, &ctx, enter, f, depth - 1);
                }
            }
        }
        Json::Array(a) => {
            for x in a {
                walk_mut(x, parent, enter, f, depth - 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The keys and methods [`in_message`] reads, and whether it found
    /// something unreadable.
    fn read(v: &Json) -> (Vec<(String, String)>, bool) {
        let mut got = Vec::new();
        let mut bad = false;
        in_message(v, &mut |f| match f {
            Found::Request { key, method, .. } => got.push((key.to_owned(), method.to_owned())),
            Found::Unreadable => bad = true,
        });
        (got, bad)
    }

    /// The keys of every map [`maps_mut`] visits.
    fn visited(v: &Json) -> Vec<String> {
        let mut v = v.clone();
        let mut keys = Vec::new();
        for part in ["params", "result", "error"] {
            if let Some(x) = v.get_mut(part) {
                maps_mut(x, &(), &mut |_, _| (), &mut |_, m| {
                    keys.extend(m.keys().cloned());
                });
            }
        }
        keys
    }

    fn ask(method: &str) -> Json {
        json!({"method": method, "params": {}})
    }

    /// Every place a hostile server can put a request, at every depth, in
    /// every spelling a client reads: found by both walks alike.
    #[test]
    fn both_walks_find_every_embedded_request() {
        let s = ask("sampling/createMessage");
        let shapes = [
            json!({"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"a":s}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"taskId":"t","status":"input_required","inputRequests":{"a":s}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t","inputRequests":{"a":s}}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"u"},{"taskId":"t","inputRequests":{"a":s}}]}}),
            json!({"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t","inputRequests":{"a":s}}}),
            json!({"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t","inputRequests":{"a":s}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"x":[[{"y":{"inputRequests":{"a":s}}}]]}}}),
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"m","data":{"deep":[{"inputRequests":{"a":s}}]}}}),
            json!({"jsonrpc":"2.0","id":"s","method":"roots/list","params":{"_meta":{"inputRequests":{"a":s}}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"InputRequests":{"a":s}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"inputRequeſts":{"a":s}}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"input\u{200b}Requests":{"a":s}}}),
            // A request inside another's params.
            json!({"jsonrpc":"2.0","id":1,"result":{"inputRequests":{"e":{"method":"elicitation/create",
                "params":{"inputRequests":{"a":s}}}}}}),
        ];
        for v in shapes {
            let (got, bad) = read(&v);
            assert!(!bad, "{v}");
            assert!(
                got.contains(&("a".to_owned(), "sampling/createMessage".to_owned())),
                "{v}: {got:?}"
            );
            let mut keys: Vec<String> = got.iter().map(|(k, _)| k.clone()).collect();
            let mut maps = visited(&v);
            keys.sort();
            maps.sort();
            assert_eq!(maps, keys, "{v}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_unreadable() {
        for v in [
            json!({"result":{"inputRequests":[ask("roots/list")]}}),
            json!({"result":{"inputRequests":null}}),
            json!({"result":{"inputRequests":"roots/list"}}),
            json!({"params":{"x":{"inputRequests":{"a":"http://127.0.0.1/"}}}}),
            json!({"result":{"inputRequests":{"a":{"params":{}}}}}),
            json!({"result":{"inputRequests":{"a":{"method":"Sampling/CreateMessage"}}}}),
            json!({"result":{"inputRequests":{"a":{"method":"sampling/createMessage\u{0}"}}}}),
            json!({"result":{"inputRequests":{"a":{"method":"roots/list","params":[1]}}}}),
            json!({"error":{"code":1,"message":"m","data":{"inputRequests":{"a":{"method":7}}}}}),
        ] {
            assert!(read(&v).1, "{v}");
        }
        // Deeper than a message can be read: unreadable, never skipped.
        let mut deep = json!({"inputRequests":{"a":ask("roots/list")}});
        for _ in 0..DEPTH {
            deep = json!([deep]);
        }
        assert!(read(&json!({ "result": deep })).1);
        // Nothing that is no map of requests is read as one.
        let (got, bad) = read(
            &json!({"result":{"content":[{"type":"text","text":"inputRequests"}],
            "inputRequest":{"a":ask("roots/list")}}}),
        );
        assert!(got.is_empty() && !bad);
    }

    /// The word as it is or in lower case, at either end of the bytes;
    /// nothing shorter or merely similar.
    #[test]
    fn the_word_as_written() {
        for hit in [
            "inputRequests",
            "inputrequests",
            r#"{"inputrequests":1}"#,
            "x inputRequests",
        ] {
            assert!(named_in(hit.as_bytes()), "{hit}");
        }
        for miss in [
            "",
            "inputRequest",
            "nputRequests",
            "input_requests",
            "requests inputs",
            "InputRequests",
        ] {
            assert!(!named_in(miss.as_bytes()), "{miss}");
        }
    }

    /// The context of a map is computed from the objects above it, the
    /// nearest first.
    #[test]
    fn each_map_sees_the_context_of_its_nearest_object() {
        let mut v = json!({"taskId":"t1","inputRequests":{"a":{"method":"roots/list",
                "params":{"inputRequests":{"b":{"method":"roots/list"}}}}},
            "sub":{"taskId":"t2","inputRequests":{"c":{"method":"roots/list"}}},
            "other":{"inputRequests":{"d":{"method":"roots/list"}}}});
        let mut seen = Vec::new();
        maps_mut(
            &mut v,
            &None,
            &mut |o, parent: &Option<String>| {
                o.get("taskId")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
                    .or_else(|| parent.clone())
            },
            &mut |ctx, m| {
                for k in m.keys() {
                    seen.push((k.clone(), ctx.clone()));
                }
                let renamed: Map<String, Json> = std::mem::take(m)
                    .into_iter()
                    .map(|(k, x)| (format!("<{k}>"), x))
                    .collect();
                *m = renamed;
            },
        );
        seen.sort();
        let t = |s: &str| Some(s.to_owned());
        assert_eq!(
            seen,
            [
                ("a".into(), t("t1")),
                ("b".into(), t("t1")),
                ("c".into(), t("t2")),
                ("d".into(), t("t1")),
            ]
        );
        assert!(
            v["inputRequests"]["<a>"]["params"]["inputRequests"]["<b>"].is_object(),
            "{v}"
        );
    }
}
