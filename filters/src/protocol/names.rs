//! Member names as every mainstream peer reads them.
//!
//! The gateway reads member names exactly; some peers do not. Go's
//! `encoding/json` matches struct fields with Unicode simple folding (`K`
//! is `k`, `ſ` is `s`), .NET's case-insensitive options and Java's
//! `equalsIgnoreCase` compare upper-cased characters (`ı` is `i`). A name
//! that one of them takes for a name MCP defines, while the gateway does
//! not, is a second reading of the message: refused wherever MCP's own
//! structure is read (see [`Names`]), never guessed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

/// The member names MCP defines in its own structures (every revision from
/// 2024-11-05 to 2026-07-28): envelopes, params, results, errors, list
/// items, content blocks, tasks, capabilities, multi-round-trip requests,
/// and the JSON Schema keywords the gateway and peers read in tool schemas.
const VOCABULARY: &[&str] = &[
    // JSON-RPC
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
    "code",
    "message",
    "data",
    // common
    "_meta",
    "progressToken",
    "cursor",
    "nextCursor",
    "name",
    "title",
    "description",
    "icons",
    "src",
    "sizes",
    "theme",
    "mimeType",
    "size",
    "uri",
    "uriTemplate",
    "type",
    "text",
    "blob",
    "resource",
    "annotations",
    "audience",
    "priority",
    "lastModified",
    // tools, prompts, resources
    "tools",
    "prompts",
    "resources",
    "resourceTemplates",
    "inputSchema",
    "outputSchema",
    "arguments",
    "required",
    "content",
    "contents",
    "isError",
    "structuredContent",
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
    "execution",
    "taskSupport",
    "cacheScope",
    // lifecycle and discovery
    "protocolVersion",
    "supportedVersions",
    "capabilities",
    "serverInfo",
    "clientInfo",
    "instructions",
    "version",
    "websiteUrl",
    "experimental",
    "listChanged",
    "subscribe",
    "roots",
    "sampling",
    "elicitation",
    "logging",
    "completions",
    "tasks",
    // notifications
    "progress",
    "total",
    "requestId",
    "reason",
    "level",
    "logger",
    // sampling and elicitation
    "messages",
    "role",
    "model",
    "modelPreferences",
    "hints",
    "costPriority",
    "speedPriority",
    "intelligencePriority",
    "systemPrompt",
    "includeContext",
    "temperature",
    "maxTokens",
    "stopSequences",
    "metadata",
    "stopReason",
    "toolChoice",
    "toolUseId",
    "input",
    "requestedSchema",
    "action",
    "mode",
    "url",
    "elicitationId",
    // completion
    "ref",
    "argument",
    "value",
    "values",
    "hasMore",
    "completion",
    "context",
    // tasks and multi-round-trip requests
    "task",
    "taskId",
    "status",
    "statusMessage",
    "createdAt",
    "lastUpdatedAt",
    "ttl",
    "pollInterval",
    "resultType",
    "inputRequests",
    "inputResponses",
    "requestState",
    // subscriptions/listen (2026-07-28)
    "notifications",
    "resourceSubscriptions",
    "toolsListChanged",
    "promptsListChanged",
    "resourcesListChanged",
    // JSON Schema keywords read in tool and elicitation schemas
    "properties",
    "items",
    "format",
    "additionalProperties",
    "enum",
    "const",
    "default",
    "anyOf",
    "oneOf",
    "allOf",
    "x-mcp-header",
];

static EXACT: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| VOCABULARY.iter().copied().collect());

static FOLDED: LazyLock<HashSet<String>> =
    LazyLock::new(|| VOCABULARY.iter().map(|n| fold(n).into_owned()).collect());

/// Whether some mainstream decoder drops `c` from a name, or stops at it:
/// C0 and C1 controls (NUL among them: C-string decoders end the name
/// there) and DEL, and Unicode's default-ignorable code points (zero-width
/// characters, joiners, bidi marks, variation selectors, tags, the soft
/// hyphen and BOM), which normalising and "invisible-stripping" readers
/// remove.
pub(crate) fn dropped_by_some(c: char) -> bool {
    // The characters a person's name may not hold are the same set.
    warden_config::person::invisible(c)
}

/// Whether `name` is printable ASCII: every peer reads it as it is, and
/// another such name is the same name only by ASCII case.
pub(crate) fn printable_ascii(name: &str) -> bool {
    name.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Whether every peer reads `name` with all its characters: none is one a
/// decoder drops or stops at.
fn plain(name: &str) -> bool {
    // One pass in the common case: printable ASCII.
    if printable_ascii(name) {
        return true;
    }
    !name.is_ascii() && !name.chars().any(dropped_by_some)
}

/// The names decoders read `name` as: itself when [`plain`]; otherwise
/// without the characters some decoder drops, and, for one that stops at
/// NUL, what comes before it.
pub(crate) fn readings(name: &str) -> smallvec::SmallVec<[Cow<'_, str>; 2]> {
    let mut out = smallvec::SmallVec::new();
    if plain(name) {
        out.push(Cow::Borrowed(name));
        return out;
    }
    let strip = |s: &str| -> String { s.chars().filter(|c| !dropped_by_some(*c)).collect() };
    out.push(Cow::Owned(strip(name)));
    if let Some(cut) = name.find('\0') {
        let before = strip(&name[..cut]);
        if before != out[0] {
            out.push(Cow::Owned(before));
        }
    }
    out
}

/// The form two names share when some mainstream peer reads them as one,
/// character by character with simple (one-character) case mappings: Go's
/// `encoding/json` folds a rune as upper(lower(r)), Java compares upper and
/// then lower cases, .NET upper cases. So `ı`, `İ`, `ſ` and `K` fall in
/// with `i`, `i`, `s` and `k`. ASCII names are only lower-cased. (Full
/// case folding, `ß` as `ss`, is compared beside this: [`same_name`].)
/// Characters a decoder drops are dropped first (see [`readings`], whose
/// first reading this folds).
pub(crate) fn fold(name: &str) -> Cow<'_, str> {
    if !plain(name) {
        let first = readings(name).swap_remove(0).into_owned();
        return Cow::Owned(fold(&first).into_owned());
    }
    if name.is_ascii() {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        }
    } else {
        Cow::Owned(name.chars().map(fold_char).collect())
    }
}

/// Every folded reading of `name` (see [`readings`] and [`fold`]).
pub(crate) fn folded_readings(name: &str) -> smallvec::SmallVec<[Cow<'_, str>; 2]> {
    readings(name)
        .into_iter()
        .map(|r| match r {
            Cow::Borrowed(b) => fold(b),
            Cow::Owned(o) => Cow::Owned(fold(&o).into_owned()),
        })
        .collect()
}

/// One character's simple mapping (the first of a full mapping, as the
/// simple one is for `İ`), or the character itself when its upper case is
/// more than one character (`ß`).
fn simple(mut mapped: impl Iterator<Item = char>, c: char, first_only: bool) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(m), None) => m,
        (Some(m), Some(_)) if first_only => m,
        _ => c,
    }
}

fn fold_char(c: char) -> char {
    let lower = simple(c.to_lowercase(), c, true);
    let upper = simple(lower.to_uppercase(), lower, false);
    simple(upper.to_lowercase(), upper, true)
}

/// Whether two names with every character read are one name to some peer.
fn same_plain(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        // The common case, and the only reading two ASCII names share.
        return a.eq_ignore_ascii_case(b);
    }
    unicase::UniCase::new(a) == unicase::UniCase::new(b) || fold(a) == fold(b)
}

/// Whether some mainstream peer reads `a` and `b` as the same name:
/// Unicode case folding (Go, Python's `casefold`) or upper-then-lower
/// per character (.NET, Java), after dropping what some decoder drops or
/// stops at (`method\u0000` is `method` to a C-string reader).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    if plain(a) && plain(b) {
        return same_plain(a, b);
    }
    let rb = readings(b);
    readings(a)
        .iter()
        .any(|x| rb.iter().any(|y| same_plain(x, y)))
}

/// The members of `v` (an object) some mainstream peer reads as `name`:
/// the member itself and every near-name of it (`URL`, `Elicitations`,
/// `elıcitations`), for a concern that must judge whatever a folding
/// client would take.
pub(crate) fn members_named<'a>(
    v: &'a serde_json::Value,
    name: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(move |(k, _)| k.as_str() == name || same_name(k, name))
        .map(|(_, x)| x)
}

/// The one member of `v` some mainstream peer reads as `name` (see
/// [`members_named`]): `Ok(None)` when there is none, `Err` when there
/// are several (peers would disagree on which is meant).
pub(crate) fn only_member<'a>(
    v: &'a serde_json::Value,
    name: &'a str,
) -> Result<Option<&'a serde_json::Value>, ()> {
    let mut all = members_named(v, name);
    let first = all.next();
    match all.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// Whether `key` is read by some peer as one of `names` without being it.
pub(crate) fn near_name(key: &str, names: &[&str]) -> bool {
    if !plain(key) {
        return names.iter().any(|n| *n != key && same_name(key, n));
    }
    if key.is_ascii() {
        // An ASCII name is read as another ASCII name only by case.
        return names
            .iter()
            .any(|n| n.len() == key.len() && *n != key && n.eq_ignore_ascii_case(key));
    }
    names.iter().any(|n| *n != key && same_name(key, n))
}

/// Whether `key` is read by some peer as a name of MCP's vocabulary
/// without being it.
pub(crate) fn near_vocabulary(key: &str) -> bool {
    if EXACT.contains(key) {
        return false;
    }
    if !plain(key) {
        return readings(key)
            .iter()
            .any(|r| EXACT.contains(&**r) || near_vocabulary(r));
    }
    // Python's SDK (pydantic, camelCase aliases with names populated too)
    // reads a member under its snake_case field name as well:
    // `input_responses` is `inputResponses`, `meta` is `_meta`.
    if let Some(camel) = snake_reading(key) {
        if EXACT.contains(&*camel) || FOLDED.contains(&*fold(&camel)) {
            return true;
        }
    }
    if key.is_ascii() {
        // Only a case change can make an ASCII name another ASCII name
        // (`inputrequests` too: a case-insensitive reader takes it).
        return FOLDED.contains(&*fold(key));
    }
    FOLDED.contains(&*fold(key)) || near_name(key, VOCABULARY)
}

/// The camelCase name a snake_case member is read as by readers that
/// accept field names beside their aliases (`request_state` →
/// `requestState`; `meta` → `_meta`), if it is one.
fn snake_reading(key: &str) -> Option<Cow<'_, str>> {
    if key.eq_ignore_ascii_case("meta") {
        return Some(Cow::Borrowed("_meta"));
    }
    let body = key.trim_start_matches('_');
    if !body.contains('_') {
        return None;
    }
    let mut out = String::with_capacity(body.len());
    for (i, part) in body.split('_').filter(|p| !p.is_empty()).enumerate() {
        let mut cs = part.chars();
        match (i, cs.next()) {
            (0, Some(c)) => {
                out.extend(c.to_lowercase());
                out.push_str(cs.as_str());
            }
            (_, Some(c)) => {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
            _ => {}
        }
    }
    Some(Cow::Owned(out))
}

/// How the member names under a value are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Names {
    /// MCP's own structure: a near-name of its vocabulary is refused.
    Protocol,
    /// Payload a tool, user or vendor chose (arguments, structured
    /// content, error data, schema defaults): names are the payload's own.
    Free,
    /// A map whose keys are chosen (schema `properties`, ids of
    /// multi-round-trip requests) and whose values are MCP structure.
    Keyed,
    /// `_meta`: keys are chosen; the values of MCP's own keys
    /// (`io.modelcontextprotocol/…`) are its structure, others are payload.
    Meta,
    /// `content`: a list of content blocks (MCP structure) or, in an
    /// elicitation's answer, an object of the user's answers (payload).
    Content,
    /// A JSON Schema (`inputSchema`, `outputSchema`, `requestedSchema`): a
    /// near-name of a keyword is refused; keywords that hold schemas are
    /// followed; any other keyword's value (`required`, `enum`,
    /// `dependentRequired`, `discriminator`, vendor `x-…`) is payload.
    Schema,
    /// A map of chosen names to schemas (`properties`, `$defs`, …).
    SchemaMap,
}

impl Names {
    /// How the value of member `key` of an object read this way is read.
    pub(crate) fn member(self, key: &str) -> Names {
        match self {
            Names::Free => Names::Free,
            Names::Keyed => Names::Protocol,
            Names::Meta if key.starts_with("io.modelcontextprotocol/") => Names::Protocol,
            Names::Meta => Names::Free,
            Names::Content => Names::Free,
            Names::SchemaMap => Names::Schema,
            Names::Schema => match key {
                "properties" | "patternProperties" | "$defs" | "definitions"
                | "dependentSchemas" => Names::SchemaMap,
                "items"
                | "additionalProperties"
                | "not"
                | "if"
                | "then"
                | "else"
                | "contains"
                | "propertyNames"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "additionalItems"
                | "allOf"
                | "anyOf"
                | "oneOf"
                | "prefixItems" => Names::Schema,
                _ => Names::Free,
            },
            Names::Protocol => match key {
                // `input`: the arguments a model gives a tool in sampling
                // (`tool_use`), payload like a call's `arguments`.
                "arguments" | "input" | "structuredContent" | "experimental" | "data"
                | "default" | "const" | "enum" | "examples" | "metadata" | "requestState"
                | "extensions" => Names::Free,
                "_meta" => Names::Meta,
                "properties" | "patternProperties" | "$defs" | "definitions"
                | "dependentSchemas" | "inputRequests" | "inputResponses" => Names::Keyed,
                "content" => Names::Content,
                "inputSchema" | "outputSchema" | "requestedSchema" => Names::Schema,
                _ => Names::Protocol,
            },
        }
    }

    /// How the items of an array read this way are read.
    pub(crate) fn item(self) -> Names {
        match self {
            Names::Free => Names::Free,
            // `allOf: [schema, …]`, tuple `items: [schema, …]`.
            Names::Schema | Names::SchemaMap => Names::Schema,
            _ => Names::Protocol,
        }
    }

    /// Whether a member named `key` of an object read this way is refused.
    pub(crate) fn refuses(self, key: &str) -> bool {
        matches!(self, Names::Protocol | Names::Schema) && near_vocabulary(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reading_of_a_name_is_one_name() {
        for (a, b) in [
            ("taskId", "TaskId"),
            ("taskId", "TASKID"),
            ("status", "ſtatus"),
            ("status", "ﬅatus"),
            ("uri", "urı"),
            ("id", "ıd"),
            ("id", "İd"),
            ("uri", "urİ"),
            ("region", "regİon"),
            ("kind", "\u{212a}ind"),
            ("cacheScope", "cacheſcope"),
        ] {
            assert!(same_name(a, b), "{a} / {b}");
            assert!(near_name(b, &[a]), "{b}");
            assert!(!near_name(a, &[a]));
        }
        // Bytes a decoder drops or stops at, raw or escaped in the JSON.
        for (a, b) in [
            ("method", "method\u{0}"),
            ("method", "meth\u{0}od"),
            ("method", "method\u{0}tools/call"),
            ("name", "na\u{200b}me"),
            ("name", "\u{feff}name"),
            ("name", "name\u{1}"),
            ("name", "nam\u{ad}e"),
            ("result", "result\u{85}"),
            ("result", "re\u{e0041}sult"),
            ("uri", "ur\u{fe0f}I"),
        ] {
            assert!(same_name(a, b), "{a:?} / {b:?}");
            assert!(near_name(b, &[a]), "{b:?}");
            assert!(near_vocabulary(b), "{b:?}");
        }
        assert!(!same_name("id", "idd"));
        assert!(!same_name("name", "nаme"), "Cyrillic а is another letter");
    }

    #[test]
    fn the_vocabulary_is_read_exactly() {
        for k in [
            "CacheScope",
            "TaskId",
            "ſtatus",
            "urı",
            "Properties",
            "X-MCP-Header",
            // A case-insensitive reader, in lower case too.
            "inputrequests",
            "requeststate",
            // Python's SDK reads field names beside the camelCase aliases.
            "input_responses",
            "request_state",
            "resource_subscriptions",
            "task_id",
            "meta",
            "Meta",
            "is_error",
        ] {
            assert!(near_vocabulary(k), "{k}");
        }
        for k in [
            "cacheScope",
            "taskId",
            "status",
            "uri",
            "query",
            "Query",
            "région",
            "resourceSubscriptions",
            "notifications",
            "my_field",
            "_private",
        ] {
            assert!(!near_vocabulary(k), "{k}");
        }
    }

    #[test]
    fn payload_is_read_as_payload() {
        let p = Names::Protocol;
        assert!(p.refuses("Status"));
        assert!(!p.member("arguments").refuses("Status"));
        assert!(!p.member("structuredContent").member("x").refuses("Name"));
        assert!(!p.member("_meta").member("com.example/x").refuses("Status"));
        assert!(p
            .member("_meta")
            .member("io.modelcontextprotocol/related-task")
            .refuses("TaskId"));
        assert!(!p.member("properties").refuses("Name"));
        assert!(p.member("properties").member("Name").refuses("Format"));
        assert!(p.member("content").item().refuses("Type"));
        // In a schema, keywords that hold schemas are followed; the values
        // of others (`dependentRequired`, `discriminator`) are payload.
        let schema = p.member("inputSchema");
        assert!(schema.refuses("Properties"));
        assert!(!schema.member("properties").refuses("Type"));
        assert!(schema.member("properties").member("Type").refuses("Format"));
        assert!(!schema.member("dependentRequired").refuses("Type"));
        assert!(!schema
            .member("discriminator")
            .member("mapping")
            .refuses("Text"));
        assert!(schema.member("anyOf").item().refuses("Format"));
        assert!(schema
            .member("items")
            .member("properties")
            .member("x")
            .refuses("Items"));
        assert!(!p.member("content").member("Name").refuses("Type"));
    }
}
