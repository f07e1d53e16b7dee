//! Virtual servers: several MCP servers behind one endpoint.
//!
//! A server with `virtual:` is served by an aggregator the gateway runs for
//! it: a Streamable HTTP endpoint on a loopback port of its own (on its own
//! thread), which the request path forwards to like any upstream, carrying
//! the caller's credentials and a secret only the gateway knows. The
//! aggregator merges and routes; it judges nothing itself. It reaches each
//! member **through the gateway**, on a route the gateway made for that
//! member (`/.warden/virtual/<virtual>/<member>`, answered only with the
//! aggregator's own secret) and as the same caller: so each member call is
//! authenticated, judged, rate-limited, DLP-scanned and audited exactly as
//! a direct call to that member would be — policy, catalog, pins, schemas,
//! quotas, kill switch and DLP rules see the underlying server and tool,
//! and audit records name the virtual server in `via`.
//!
//! - **Sessions.** `initialize` fans out to every member with the client's
//!   own parameters; the client gets one session id that opens each
//!   member's session, bound to the principal that opened it (and sealed by
//!   the gateway like any other, when `sessions.seal_key_*` is set). A
//!   member whose session is gone (404) is initialised again, once, on the
//!   request that found out; if that fails, that request gets an error
//!   naming the member, and the other members go on. DELETE ends every
//!   member session.
//! - **Lists** are merged in member order. Tool and prompt names get the
//!   member's prefix (`<prefix>_<name>`): `always`, `never`, or on
//!   `conflict` (only when an earlier member has the same name, so adding a
//!   member at the end renames nothing). A name two members would still
//!   share is served by the earlier one. Pages: the cursor the client gets
//!   is sealed (ChaCha20-Poly1305), bound to its session and list, and
//!   carries each member's own cursor. A member that fails is left out of
//!   the listing (reported in `/status` and metrics), never the whole list.
//! - **Routing.** Calls, prompts and completions by name; reads,
//!   subscriptions and resource completions by URI (the URIs and templates
//!   the member listed). Each request goes to its member with the client's
//!   own id and progress token; what the member says while it works
//!   (progress, sampling, elicitation, roots) comes back on the same
//!   stream, server→client requests with an id of the aggregator's (two
//!   members may use the same one), restored when the client answers.
//!   Cancellations follow the request they cancel. The GET stream merges
//!   the members' streams; a `list_changed` makes the aggregator learn that
//!   member's names again.
//! - **Tool views.** Per member tool: an alias (the name the client sees),
//!   a title or description of the bundle's, hidden arguments (removed from
//!   the schema the client sees; always the bundle's values, and refused if
//!   the client sends them) and defaults (used when the client leaves the
//!   argument out). The member's leg judges the real name and arguments.
//! - **Not supported:** JSON-RPC batches (one message per POST), tasks,
//!   2026-07-28 stateless requests (`server/discover` gets -32601, so
//!   clients fall back to `initialize`), `Last-Event-ID` resumption, and
//!   callers authenticated by a client certificate (the aggregator calls
//!   the gateway with the caller's header credentials).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warden_config::model::{Config, Prefixing, Server, VirtualMember};
use warden_filters::engines::token::{TokenKey, NONCE_LEN};
use warden_filters::snapshot::VIRTUAL_PREFIX;

use crate::loopback::{lock, member, session_not_found as not_found, Body, Members};

mod endpoint;
mod members;
mod names;
#[cfg(test)]
mod tests;
mod wire;

use endpoint::serve;
use wire::*;

/// The gateway's secret between its request path and an aggregator, and
/// between an aggregator and its member routes.
pub const SECRET_HEADER: &str = "x-warden-virtual";
/// The client's address, for the member legs (policy, audit).
pub const SOURCE_HEADER: &str = "x-warden-virtual-source";
/// A digest of the principal, to which a virtual session is bound.
pub const OWNER_HEADER: &str = "x-warden-virtual-owner";
/// The client's session of the virtual server (a digest), which member
/// legs track information flow by (set by the gateway on the virtual
/// server's leg, passed on to each member leg).
pub const FLOW_HEADER: &str = "x-warden-virtual-flow";
const MAX_BODY: usize = 64 << 20;
const MAX_EVENT: usize = 16 << 20;
const STREAM_DEPTH: usize = 256;
/// Pages read from one member when learning its names.
const MAX_PAGES: usize = 100;
/// A virtual session unused this long ends (and its member sessions).
const IDLE: Duration = Duration::from_secs(3600);
/// Virtual sessions one principal may hold at once, and in all.
const MAX_SESSIONS_PER_PRINCIPAL: usize = 64;
const MAX_SESSIONS: usize = 10_000;
/// Server→client requests a session may have waiting for the client, and
/// client requests it may have in flight.
const MAX_ASKED: usize = 1024;
const MAX_INFLIGHT: usize = 1024;
/// The longest JSON-RPC id (as text) taken from a client or a member.
const MAX_ID: usize = 256;
/// The longest `initialize` params kept to open member sessions again.
const MAX_INIT: usize = 64 << 10;
/// The prefix of the ids server→client requests get (never a number: a
/// client's answer cannot be taken for anything else).
const ASK_PREFIX: &str = "wv-ask-";
/// Names learned of one member's list (longer names are not served).
const MAX_NAMES: usize = 10_000;
const MAX_NAME_LEN: usize = 1024;
/// An unknown name makes the lists be read again at most this often.
const RELEARN_EVERY: Duration = Duration::from_secs(5);
const CURSOR_PREFIX: &str = "wvc1.";
const CURSOR_AAD: &[u8] = b"warden virtual cursor v1";

/// The lists a virtual server merges.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ListKind {
    Tools = 0,
    Prompts = 1,
    Resources = 2,
    Templates = 3,
}

impl ListKind {
    fn of(method: &str) -> Option<ListKind> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            _ => return None,
        })
    }
    fn method(self) -> &'static str {
        [
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
        ][self as usize]
    }
    /// The result member holding the items.
    fn items(self) -> &'static str {
        ["tools", "prompts", "resources", "resourceTemplates"][self as usize]
    }
    /// What names an item (and routes to it).
    fn key(self) -> &'static str {
        ["name", "name", "uri", "uriTemplate"][self as usize]
    }
    /// The capability a member must declare to be asked.
    fn capability(self) -> &'static str {
        ["tools", "prompts", "resources", "resources"][self as usize]
    }
    /// Which list a `…/list_changed` notification concerns.
    fn changed(method: &str) -> &'static [ListKind] {
        match method {
            "notifications/tools/list_changed" => &[ListKind::Tools],
            "notifications/prompts/list_changed" => &[ListKind::Prompts],
            "notifications/resources/list_changed" => &[ListKind::Resources, ListKind::Templates],
            _ => &[],
        }
    }
}

struct Registry {
    by_server: Mutex<HashMap<String, Arc<Aggregator>>>,
    /// Aggregators of an earlier setup: they serve the sessions they have
    /// (and any runtime still routed to them).
    retired: Mutex<Vec<Arc<Aggregator>>>,
    health: Mutex<BTreeMap<(String, String), MemberHealth>>,
}

#[derive(Default, Clone)]
struct MemberHealth {
    healthy: bool,
    failures: u64,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        by_server: Mutex::new(HashMap::new()),
        retired: Mutex::new(Vec::new()),
        health: Mutex::new(BTreeMap::new()),
    })
}

/// The addresses the gateway listens on (fixed at start: a bundle's
/// listener changes take effect on restart), as (address, TLS, client
/// certificate required).
static LISTEN: OnceLock<Vec<(String, bool, bool)>> = OnceLock::new();

/// Who a virtual session belongs to: a digest of the principal (and, for
/// an anonymous caller, of its address too: anonymous callers are not one
/// principal). The aggregator binds sessions and bounds to it, and each
/// member leg must authenticate the same one.
pub fn owner_digest(
    principal: &warden_filters::engines::identity::Principal,
    source: Option<std::net::IpAddr>,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(principal.owner().as_bytes());
    if principal.auth == warden_filters::engines::identity::AuthMethod::Anonymous {
        h.update(b"\0");
        // `::ffff:a.b.c.d` and `a.b.c.d` are one caller.
        h.update(
            source
                .map(|ip| ip.to_canonical().to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    hex::encode(&h.finalize()[..16])
}

/// Records where this gateway listens: the `--listen` addresses (plain),
/// else the bundle's listeners at start.
pub fn listening_on(overrides: &[String], bundle: &[warden_config::model::Listener]) {
    let list = if overrides.is_empty() {
        bundle
            .iter()
            .map(|l| {
                (
                    l.address.clone(),
                    l.tls.is_some(),
                    l.tls.as_ref().is_some_and(|t| t.client_auth_required),
                )
            })
            .collect()
    } else {
        overrides
            .iter()
            .map(|a| (a.clone(), false, false))
            .collect()
    };
    let _ = LISTEN.set(list);
}

fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Where the gateway can call itself: its first listener that needs no
/// client certificate.
fn gateway_base(cfg: &Config) -> std::io::Result<(String, bool)> {
    let from_bundle: Vec<(String, bool, bool)> = cfg
        .listeners
        .iter()
        .map(|l| {
            (
                l.address.clone(),
                l.tls.is_some(),
                l.tls.as_ref().is_some_and(|t| t.client_auth_required),
            )
        })
        .collect();
    let listeners = LISTEN.get().unwrap_or(&from_bundle);
    for (address, tls, client_auth) in listeners {
        if *client_auth {
            continue;
        }
        let Ok(addr) = address.parse::<SocketAddr>() else {
            continue;
        };
        let scheme = if *tls { "https" } else { "http" };
        return Ok((format!("{scheme}://{}", reachable(addr)), *tls));
    }
    Err(std::io::Error::other(
        "a virtual server needs a listener the gateway can call itself on (plain, or TLS without required client certificates)",
    ))
}

/// The loopback address of `server`'s aggregator, started on first use and
/// kept while its composition is unchanged.
pub fn aggregator_for(server: &Server, cfg: &Config) -> std::io::Result<SocketAddr> {
    let Some(v) = &server.composed else {
        return Err(std::io::Error::other("not a virtual server"));
    };
    let (base, tls) = gateway_base(cfg)?;
    let api_key = cfg.identity.as_ref().map(|i| i.api_key_header.clone());
    // Each member's own read timeout bounds the aggregator's own requests.
    let timeouts: Vec<Duration> = v
        .members
        .iter()
        .map(|m| {
            cfg.servers
                .iter()
                .find(|s| s.name == m.server)
                .map_or(Duration::from_secs(60), |s| s.timeouts.read)
        })
        .collect();
    let fingerprint = format!("{}|{base}|{api_key:?}|{timeouts:?}", v.fingerprint());
    let r = registry();
    let mut map = lock(&r.by_server);
    if let Some(a) = map.get(&server.name) {
        if a.fingerprint == fingerprint {
            return Ok(a.addr);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        // The gateway's own listener, reached on this host: its
        // certificate names the gateway's public name, not this address.
        .danger_accept_invalid_certs(tls)
        .build()
        .map_err(std::io::Error::other)?;
    let agg = Arc::new(Aggregator {
        name: server.name.clone(),
        fingerprint,
        addr,
        outer_secret: hex::encode(rand::random::<[u8; 24]>()),
        inner_secret: hex::encode(rand::random::<[u8; 24]>()),
        base,
        members: v.members.clone(),
        timeouts,
        aliases: v
            .members
            .iter()
            .flat_map(|m| m.tools.values().filter_map(|t| t.alias.clone()))
            .collect(),
        api_key,
        client,
        cursor_key: TokenKey::new(&rand::random::<[u8; 32]>()),
        sessions: Mutex::new(HashMap::new()),
        opening: Mutex::new(HashMap::new()),
    });
    {
        let mut h = lock(&r.health);
        for m in &v.members {
            h.entry((server.name.clone(), m.server.clone()))
                .or_insert_with(|| MemberHealth {
                    healthy: true,
                    ..MemberHealth::default()
                });
        }
    }
    let run = agg.clone();
    crate::loopback::spawn(
        format!("virtual-{}", server.name),
        "virtual server",
        listener,
        move |l| serve(l, run),
    )?;
    if let Some(old) = map.insert(server.name.clone(), agg) {
        lock(&r.retired).push(old);
    }
    Ok(addr)
}

/// The secret the request path sends to the aggregator at `addr`.
pub fn outer_secret_for(addr: SocketAddr) -> Option<String> {
    let r = registry();
    crate::loopback::find_endpoint(&r.by_server, &r.retired, |a| a.addr == addr)
        .map(|a| a.outer_secret.clone())
}

/// Whether `secret` is the one `virtual_server`'s aggregator calls its
/// members with.
pub fn is_inner_secret(virtual_server: &str, secret: &str) -> bool {
    let r = registry();
    crate::loopback::find_endpoint(&r.by_server, &r.retired, |a| {
        a.name == virtual_server
            && crate::loopback::same(a.inner_secret.as_bytes(), secret.as_bytes())
    })
    .is_some()
}

/// Each virtual server's members as last seen (for `/status`).
pub fn status() -> Value {
    let h = lock(&registry().health);
    let mut out: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for ((v, m), s) in h.iter() {
        out.entry(v.as_str()).or_default().push(json!({
            "member": m,
            "healthy": s.healthy,
            "failures": s.failures,
            "last_error": s.last_error,
            "last_error_at": s.last_error_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        }));
    }
    Value::from(
        out.into_iter()
            .map(|(v, members)| json!({"server": v, "members": members}))
            .collect::<Vec<_>>(),
    )
}

struct Aggregator {
    name: String,
    fingerprint: String,
    addr: SocketAddr,
    outer_secret: String,
    inner_secret: String,
    /// `http://127.0.0.1:<port>` of the gateway's own listener.
    base: String,
    members: Vec<VirtualMember>,
    /// Each member's read timeout: bounds the aggregator's own requests.
    timeouts: Vec<Duration>,
    aliases: std::collections::HashSet<String>,
    api_key: Option<String>,
    client: reqwest::Client,
    cursor_key: TokenKey,
    sessions: Mutex<HashMap<String, Arc<VSession>>>,
    /// Sessions being opened, by owner (counted against the bounds).
    opening: Mutex<HashMap<String, usize>>,
}

/// One client session and its member sessions.
struct VSession {
    id: String,
    owner: String,
    /// The client's `initialize` params, to open a member's session again.
    init: Box<RawValue>,
    legs: Vec<tokio::sync::Mutex<MemberSession>>,
    learned: Mutex<Learned>,
    /// Server→client requests by the id the client sees: (member, its id).
    asked: Mutex<HashMap<u64, (usize, Value)>>,
    /// The client's requests in flight (by the client's id, as text): the
    /// member that has it and the id it has there.
    inflight: Mutex<HashMap<String, (usize, u64)>>,
    next: AtomicU64,
    /// Ends the session's current GET stream when another one opens.
    get_stop: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// The credentials of the session's latest request (to end the member
    /// sessions when it goes idle).
    caller: Mutex<CallerCredentials>,
    last_used: Mutex<Instant>,
}

#[derive(Clone, Default)]
struct MemberSession {
    sid: Option<String>,
    version: String,
    capabilities: Value,
    /// Why this member's session could not be opened (then `sid` is None;
    /// the next request that needs the member tries again).
    failed: Option<String>,
}

/// What the aggregator knows of each member's lists, and the names the
/// client sees, decided once for all of them.
struct Learned {
    /// Per list kind, per member: the keys of its whole list (names, URIs,
    /// templates), once read.
    sets: [Vec<Option<Vec<String>>>; 4],
    /// Per list kind, per member: announced as changed (read it again; the
    /// old names serve until that succeeds).
    stale: [Vec<bool>; 4],
    /// Tools and prompts: the names the client sees.
    tables: [Option<Arc<NameTable>>; 2],
    /// Tools and prompts: every name served in this session and what it
    /// stood for; a name never moves to another member or tool.
    bound: [HashMap<String, (usize, String)>; 2],
    relearned: [Option<Instant>; 4],
    /// Per list kind, per member: when reading its list last failed (it is
    /// not tried again sooner than `RELEARN_EVERY`).
    failed_at: [Vec<Option<Instant>>; 4],
}

impl Learned {
    fn new(n: usize) -> Learned {
        Learned {
            sets: std::array::from_fn(|_| vec![None; n]),
            stale: std::array::from_fn(|_| vec![false; n]),
            tables: [None, None],
            bound: [HashMap::new(), HashMap::new()],
            relearned: [None; 4],
            failed_at: std::array::from_fn(|_| vec![None; n]),
        }
    }
}

/// The client's names for tools (or prompts) and what each stands for.
#[derive(Default)]
struct NameTable {
    by_name: HashMap<String, (usize, String)>,
    by_real: HashMap<(usize, String), String>,
}

/// A session being opened: counted against the bounds until dropped.
struct Opening<'a> {
    agg: &'a Aggregator,
    owner: String,
}

impl<'a> Opening<'a> {
    /// (The count was raised where the bounds were checked.)
    fn new(agg: &'a Aggregator, owner: &str) -> Self {
        Opening {
            agg,
            owner: owner.to_owned(),
        }
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut o = lock(&self.agg.opening);
        if let Some(n) = o.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.remove(&self.owner);
            }
        }
    }
}

/// A client request in flight, forgotten when this is dropped (armed).
struct InFlight {
    s: Arc<VSession>,
    key: String,
    armed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.s.inflight).remove(&self.key);
        }
    }
}

/// What the caller sent that the member legs need: credentials, the
/// justification, the trace, the client's address.
#[derive(Clone, Default)]
struct CallerCredentials {
    headers: Vec<(HeaderName, HeaderValue)>,
    owner: String,
}

impl CallerCredentials {
    fn of(req: &Request<Incoming>, api_key: Option<&str>) -> CallerCredentials {
        let mut headers = Vec::new();
        let names = [
            Some("authorization"),
            api_key,
            Some("x-warden-justification"),
            Some("traceparent"),
            Some(SOURCE_HEADER),
            Some(FLOW_HEADER),
        ];
        for n in names.into_iter().flatten() {
            if let (Ok(name), Some(v)) =
                (HeaderName::from_bytes(n.as_bytes()), req.headers().get(n))
            {
                headers.push((name, v.clone()));
            }
        }
        let owner = crate::loopback::header_text(req, OWNER_HEADER);
        CallerCredentials { headers, owner }
    }

    /// The same caller in the virtual session `sid`: its member legs
    /// track information flow by the session's digest, whatever the
    /// request said (a client's `initialize` names no session yet).
    fn with_flow(&self, sid: &str) -> CallerCredentials {
        let mut c = self.clone();
        c.headers.retain(|(k, _)| k.as_str() != FLOW_HEADER);
        if let Ok(v) = HeaderValue::from_str(&flow_digest(sid)) {
            c.headers.push((HeaderName::from_static(FLOW_HEADER), v));
        }
        c
    }
}

/// The digest of a virtual session's id that its member legs track
/// information flow by (`FLOW_HEADER`): the gateway sends the same for the
/// client's session of the virtual server.
pub fn flow_digest(sid: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(sid.as_bytes()))
}

/// Why a request of the aggregator's own got no result.
enum Asked {
    /// The member or its leg answered with an error.
    Refused(String),
    /// No answer.
    Broken(String),
}

impl Asked {
    fn text(&self) -> &str {
        match self {
            Asked::Refused(t) | Asked::Broken(t) => t,
        }
    }
}

/// How a member answered.
enum Failure {
    /// Its session is gone (404): initialise again.
    Gone,
    /// Unreachable, too slow, or an answer that is no JSON-RPC message.
    Broken(String),
}
