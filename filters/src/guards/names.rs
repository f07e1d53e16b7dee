//! Names a peer reads as another name: the tool of a `tools/call`, the
//! prompt of a `prompts/get` or of a completion's `ref/prompt`, and the
//! names of listed tools and prompts.
//!
//! Every guard judges a name exactly as it is written: the policy, the
//! catalog, the kill switch, quotas. A server that looks names up ignoring
//! case, stops at a NUL or drops invisible characters (see
//! `protocol::names`) runs `purge` for `PURGE`, `purge\u0000` or
//! `pur\u200bge`. So a name is refused when some peer reads it as another
//! spelling the gateway knows of: a name the bundle writes (the policy's
//! string literals, `data.json`, the catalog, the kill switch, quotas,
//! session budgets), or one the server listed — hidden ones included,
//! which is why the server's lists are read here, before the policy
//! filters them. A listed entry so read is not shown: two entries one
//! name to a folding peer (`purge` beside `Purge`) are both hidden, as
//! is one that a bundle's name shadows (`Purge` when the policy denies
//! `purge`), whatever the policy says of the spelling itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value as Json;
use smallvec::SmallVec;
use unicase::UniCase;

use crate::chain::filter::{
    unreadable_reply, Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes,
};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;
use crate::protocol::names::{fold, readings};
use warden_config::model::{MemoryBudget, Table};

/// Spellings recorded of one server's tools or prompts, at most (and at
/// most a quarter of the table: one server cannot take all the room);
/// later ones are not recorded, and a list entry that could not be is not
/// shown.
const MAX_LISTED: usize = 10_000;
/// Longer names are never recorded (nor shown, when listed).
const MAX_NAME: usize = 1024;
/// What a key costs beside its strings: an entry in each of the two maps
/// (the key's and the spellings' headers, the map's slot and control byte
/// at its load factor).
const KEY_OVERHEAD: usize = 160;

/// Spellings of names, found by every reading some peer makes of them:
/// per character folding (Go, Java, .NET) and full case folding, after
/// dropping what some decoder drops or stops at.
#[derive(Default, Debug)]
pub struct Spellings {
    folded: HashMap<String, SmallVec<[String; 1]>>,
    cased: HashMap<UniCase<String>, SmallVec<[String; 1]>>,
    len: usize,
}

impl Spellings {
    /// The keys a name is found by.
    fn keys(name: &str) -> impl Iterator<Item = (String, UniCase<String>)> + '_ {
        readings(name)
            .into_iter()
            .map(|r| (fold(&r).into_owned(), UniCase::unicode(r.into_owned())))
    }

    /// Records `name`; `false` when it was recorded already.
    pub fn insert(&mut self, name: &str) -> bool {
        self.insert_within(name, usize::MAX)
            .is_some_and(|cost| cost > 0)
    }

    /// Records `name` when what it costs (bytes, its keys included) is at
    /// most `room`: the cost (0 when it was recorded already), or `None`
    /// when it does not fit.
    fn insert_within(&mut self, name: &str, room: usize) -> Option<usize> {
        if self.contains(name) {
            return Some(0);
        }
        let keys: Keys = Self::keys(name).collect();
        let cost = keys
            .iter()
            .map(|(f, c)| f.len() + c.len() + 2 * name.len() + KEY_OVERHEAD)
            .sum::<usize>();
        if cost > room {
            return None;
        }
        for (f, c) in keys {
            let a = self.folded.entry(f).or_default();
            if !a.iter().any(|s| s == name) {
                a.push(name.to_owned());
            }
            let b = self.cased.entry(c).or_default();
            if !b.iter().any(|s| s == name) {
                b.push(name.to_owned());
            }
        }
        self.len += 1;
        Some(cost)
    }

    /// Whether `name` itself is recorded.
    pub fn contains(&self, name: &str) -> bool {
        self.folded
            .get(&*fold(&readings(name)[0]))
            .is_some_and(|s| s.iter().any(|x| x == name))
    }

    /// Whether some peer reads `name` as a recorded spelling other than
    /// `name` itself.
    pub fn other_than(&self, name: &str) -> bool {
        let keys: Keys = Self::keys(name).collect();
        self.other_than_keys(name, &keys)
    }

    /// [`Spellings::other_than`] with the keys of `name` found already.
    fn other_than_keys(&self, name: &str, keys: &Keys) -> bool {
        if self.len == 0 {
            return false;
        }
        let other =
            |s: Option<&SmallVec<[String; 1]>>| s.is_some_and(|s| s.iter().any(|x| x != name));
        keys.iter()
            .any(|(f, c)| other(self.folded.get(f)) || other(self.cased.get(c)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The keys a name is found by (one per reading, most names have one).
type Keys = SmallVec<[(String, UniCase<String>); 1]>;

/// Which names a list or a request is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Named {
    Tool,
    Prompt,
}

/// The tool and prompt names each server listed, hidden ones included;
/// shared by every snapshot of a gateway (a bundle swap forgets nothing).
/// Bounded by its share of the memory budget (`Table::Names`), in
/// spellings and in bytes, and per server and kind by [`MAX_LISTED`].
#[derive(Debug)]
pub struct ListedNames {
    map: RwLock<HashMap<String, [Spellings; 2]>>,
    /// The most spellings held, over every server.
    limit: usize,
    /// The most bytes they may take (`limit` entries of the table's size).
    byte_limit: usize,
    held: AtomicUsize,
    bytes: AtomicUsize,
}

impl Default for ListedNames {
    fn default() -> Self {
        ListedNames::new(MemoryBudget::default().entries(Table::Names) as usize)
    }
}

impl Named {
    fn at(self) -> usize {
        match self {
            Named::Tool => 0,
            Named::Prompt => 1,
        }
    }
}

impl ListedNames {
    /// A record of at most `limit` spellings (and `limit` entries' bytes).
    pub fn new(limit: usize) -> Self {
        ListedNames {
            map: RwLock::default(),
            limit,
            byte_limit: limit.saturating_mul(Table::Names.entry_bytes() as usize),
            held: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Spellings recorded, over every server (the `names` table gauge).
    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the recorded spellings take, as [`ListedNames`] counts them.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether `server` listed `name` itself (as this replica saw).
    fn listed(&self, server: &str, named: Named, name: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(server)
            .is_some_and(|s| s[named.at()].contains(name))
    }

    fn other_than(&self, server: &str, named: Named, name: &str, keys: &Keys) -> bool {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(server)
            .is_some_and(|s| s[named.at()].other_than_keys(name, keys))
    }

    /// Records `names`; returns which of them are recorded (now or before).
    pub(crate) fn record<'n>(
        &self,
        server: &str,
        named: Named,
        names: impl Iterator<Item = &'n str>,
    ) -> Vec<bool> {
        let per_server = MAX_LISTED.min(self.limit / 4);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let set = &mut map.entry(server.to_owned()).or_default()[named.at()];
        names
            .map(|n| {
                if set.contains(n) {
                    return true;
                }
                let held = self.held.load(Ordering::Relaxed);
                if n.len() > MAX_NAME || set.len() >= per_server || held >= self.limit {
                    return false;
                }
                let room = self
                    .byte_limit
                    .saturating_sub(self.bytes.load(Ordering::Relaxed));
                let Some(cost) = set.insert_within(n, room) else {
                    return false;
                };
                self.held.store(held + 1, Ordering::Relaxed);
                self.bytes.fetch_add(cost, Ordering::Relaxed);
                true
            })
            .collect()
    }
}

/// The names a bundle writes: its policy's string literals,
/// the strings of `data.json` (keys and values), the catalog's tools, the
/// kill switch's, quotas' and session budgets'.
pub fn bundle_names<'a>(
    config: &warden_config::model::Config,
    policies: impl Iterator<Item = &'a str>,
    data: &Json,
) -> Spellings {
    let mut s = Spellings::default();
    let mut add = |n: &str| {
        if !n.is_empty() && n.len() <= MAX_NAME {
            s.insert(n);
        }
    };
    let modules: Vec<&str> = policies.collect();
    for lit in crate::engines::policy::string_literals(&modules) {
        add(&lit);
    }
    fn walk(v: &Json, depth: usize, add: &mut dyn FnMut(&str)) {
        if depth == 0 {
            return;
        }
        match v {
            Json::String(x) => add(x),
            Json::Array(a) => a.iter().for_each(|x| walk(x, depth - 1, add)),
            Json::Object(o) => o.iter().for_each(|(k, x)| {
                add(k);
                walk(x, depth - 1, add);
            }),
            _ => {}
        }
    }
    walk(data, 64, &mut add);
    for c in config.catalog.values() {
        c.tools.keys().for_each(|t| add(t));
    }
    let k = &config.kill_switch;
    k.tools.iter().for_each(|t| add(t));
    k.server_tools.iter().for_each(|(_, t)| add(t));
    config
        .quotas
        .iter()
        .flat_map(|q| &q.tools)
        .for_each(|t| add(t));
    if let Some(b) = &config.runaway.session {
        b.per_tool.keys().for_each(|t| add(t));
    }
    s
}

/// The names a tenant's Rego writes (its string literals).
pub fn policy_names<'a>(policies: impl Iterator<Item = &'a str>) -> Spellings {
    let mut s = Spellings::default();
    let modules: Vec<&str> = policies.collect();
    for lit in crate::engines::policy::string_literals(&modules) {
        if !lit.is_empty() && lit.len() <= MAX_NAME {
            s.insert(&lit);
        }
    }
    s
}

/// Refuses a call or a prompt named in a spelling some peer reads as
/// another known name, and hides list entries so read (see the module).
pub struct TargetFilter {
    bundle: Arc<Spellings>,
    listed: Arc<ListedNames>,
    /// Whether this filter notes a name it knows of no other way
    /// ([`Notes::unlisted_name`]): the org's does, a tenant's (which knows
    /// only its own names) does not.
    notes_unlisted: bool,
}

impl std::fmt::Debug for TargetFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetFilter")
    }
}

impl TargetFilter {
    pub fn new(bundle: Arc<Spellings>, listed: Arc<ListedNames>) -> Self {
        TargetFilter {
            bundle,
            listed,
            notes_unlisted: true,
        }
    }

    /// A filter of a tenant's names: it leaves [`Notes::unlisted_name`] to
    /// the org's.
    pub fn scoped(bundle: Arc<Spellings>, listed: Arc<ListedNames>) -> Self {
        TargetFilter {
            notes_unlisted: false,
            ..TargetFilter::new(bundle, listed)
        }
    }

    fn near(&self, server: &str, named: Named, name: &str) -> bool {
        let keys: Keys = Spellings::keys(name).collect();
        self.bundle.other_than_keys(name, &keys)
            || self.listed.other_than(server, named, name, &keys)
    }
}

/// What a completion request's `ref` names, read under every name a
/// folding peer reads as `ref`, `type`, `name` and `uri`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompletionRef {
    /// `ref/prompt` and its prompt's name.
    Prompt(String),
    /// `ref/resource` and its resource (template) URI.
    Resource(String),
    /// No reference one reading agrees on: none, not an object, a `type`
    /// that is neither kind exactly, a name or URI that is no string, two
    /// of them, or a prompt reference with a URI (and the reverse), which
    /// a server picking the kind by the members present reads as the
    /// other kind.
    Unreadable,
}

/// The reference of completion request `msg` (see [`CompletionRef`]).
pub(crate) fn completion_ref(msg: &Message<'_>) -> CompletionRef {
    use crate::protocol::names::members_named;
    let Some(params) = msg.value().and_then(|v| v.get("params")) else {
        return CompletionRef::Unreadable;
    };
    let refs: Vec<&Json> = members_named(params, "ref").collect();
    let [r] = refs.as_slice() else {
        return CompletionRef::Unreadable;
    };
    if !r.is_object() {
        return CompletionRef::Unreadable;
    }
    fn one<'a>(r: &'a Json, name: &'a str) -> Result<Option<&'a str>, ()> {
        match crate::protocol::names::only_member(r, name)? {
            None => Ok(None),
            Some(x) => x.as_str().map(Some).ok_or(()),
        }
    }
    let r: &Json = r;
    match (one(r, "type"), one(r, "name"), one(r, "uri")) {
        (Ok(Some("ref/prompt")), Ok(Some(name)), Ok(None)) => {
            CompletionRef::Prompt(name.to_owned())
        }
        (Ok(Some("ref/resource")), Ok(None), Ok(Some(uri))) => {
            CompletionRef::Resource(uri.to_owned())
        }
        _ => CompletionRef::Unreadable,
    }
}

impl McpFilter for TargetFilter {
    fn name(&self) -> &'static str {
        "names"
    }

    fn judges_again(&self) -> bool {
        true
    }

    /// A name a reply's DLP rewrite made is judged as a listed one.
    fn judges_reply_again(&self) -> bool {
        true
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call", "prompts/get", "completion/complete"]),
            responses: Methods::Only(&["tools/list", "prompts/list"]),
        }
    }

    fn on_request(&self, msg: &Message<'_>, ctx: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request {
            return Decision::Pass;
        }
        let completed;
        let (named, name) = match env.method.as_deref() {
            Some("tools/call") => (Named::Tool, env.name.as_deref()),
            Some("prompts/get") => (Named::Prompt, env.name.as_deref()),
            Some("completion/complete") => match completion_ref(msg) {
                CompletionRef::Prompt(n) => {
                    completed = n;
                    (Named::Prompt, Some(completed.as_str()))
                }
                // The policy filter judges a resource and refuses a
                // reference it cannot read.
                _ => return Decision::Pass,
            },
            _ => return Decision::Pass,
        };
        let Some(name) = name else {
            return Decision::Pass;
        };
        if !self.near(ctx.server, named, name) {
            if self.notes_unlisted {
                notes.unlisted_name =
                    !self.bundle.contains(name) && !self.listed.listed(ctx.server, named, name);
            }
            return Decision::Pass;
        }
        Decision::Reject(near_name_denial(named))
    }

    fn on_response(&self, msg: &Message<'_>, ctx: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Response || env.is_error {
            return Decision::Pass;
        }
        let (named, array) = match msg.request_method {
            Some("tools/list") => (Named::Tool, "tools"),
            Some("prompts/list") => (Named::Prompt, "prompts"),
            _ => return Decision::Pass,
        };
        let Some(mut v) = msg.value().cloned() else {
            return unreadable_reply();
        };
        let items = match crate::protocol::mcp::list_items(&mut v, array) {
            crate::protocol::mcp::ListItems::Items(items) => items,
            crate::protocol::mcp::ListItems::NotAList => return Decision::Pass,
            crate::protocol::mcp::ListItems::Unreadable => return unreadable_reply(),
        };
        let name = |item: &Json| item.get("name").and_then(Json::as_str).map(str::to_owned);
        let names: Vec<Option<String>> = items.iter().map(name).collect();
        // Every name the server lists, before any is hidden: what it
        // hides from one principal is still what it runs for a spelling.
        let recorded = self.listed.record(
            ctx.server,
            named,
            names.iter().flatten().map(String::as_str),
        );
        let mut recorded = recorded.into_iter();
        let keep: Vec<bool> = names
            .iter()
            .map(|n| match n {
                // Not a name: the concerns that judge names refuse it.
                None => true,
                Some(n) => recorded.next().unwrap_or(false) && !self.near(ctx.server, named, n),
            })
            .collect();
        if keep.iter().all(|k| *k) {
            return Decision::Pass;
        }
        let mut verdicts = keep.into_iter();
        items.retain(|_| verdicts.next().unwrap_or(false));
        Decision::rewrite(&v)
    }
}

/// The refusal of a name some peer reads as another.
pub(crate) fn near_name_denial(named: Named) -> Denial {
    let (what, reason) = match named {
        Named::Tool => ("tool", "tool_name_near"),
        Named::Prompt => ("prompt", "prompt_name_near"),
    };
    Denial::error(
        JsonRpcError::new(
            codes::INVALID_PARAMS,
            // The name is not quoted: the gateway's texts never echo
            // message content.
            format!(
                "The {what} name is read by some servers as another {what}'s name \
                 (it differs only by case, Unicode folding or invisible characters); \
                 send the exact name"
            ),
        )
        .with_data(serde_json::json!({"reason": reason})),
        reason,
    )
}
