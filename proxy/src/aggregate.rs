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
use warden_filters::snapshot::VIRTUAL_PREFIX;
use warden_filters::token::{TokenKey, NONCE_LEN};

use crate::loopback::Body;

/// The gateway's secret between its request path and an aggregator, and
/// between an aggregator and its member routes.
pub const SECRET_HEADER: &str = "x-warden-virtual";
/// The client's address, for the member legs (policy, audit).
pub const SOURCE_HEADER: &str = "x-warden-virtual-source";
/// A digest of the principal, to which a virtual session is bound.
pub const OWNER_HEADER: &str = "x-warden-virtual-owner";
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
enum Kind {
    Tools = 0,
    Prompts = 1,
    Resources = 2,
    Templates = 3,
}

impl Kind {
    fn of(method: &str) -> Option<Kind> {
        Some(match method {
            "tools/list" => Kind::Tools,
            "prompts/list" => Kind::Prompts,
            "resources/list" => Kind::Resources,
            "resources/templates/list" => Kind::Templates,
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
    fn changed(method: &str) -> &'static [Kind] {
        match method {
            "notifications/tools/list_changed" => &[Kind::Tools],
            "notifications/prompts/list_changed" => &[Kind::Prompts],
            "notifications/resources/list_changed" => &[Kind::Resources, Kind::Templates],
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    principal: &warden_filters::identity::Principal,
    source: Option<std::net::IpAddr>,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(principal.owner().as_bytes());
    if principal.auth == warden_filters::identity::AuthMethod::Anonymous {
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
    std::thread::Builder::new()
        .name(format!("virtual-{}", server.name))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("virtual server runtime: {e}");
                    return;
                }
            };
            rt.block_on(serve(listener, run));
        })?;
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
    legs: Vec<tokio::sync::Mutex<Leg>>,
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
    caller: Mutex<Caller>,
    last_used: Mutex<Instant>,
}

#[derive(Clone, Default)]
struct Leg {
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
struct Caller {
    headers: Vec<(HeaderName, HeaderValue)>,
    owner: String,
}

impl Caller {
    fn of(req: &Request<Incoming>, api_key: Option<&str>) -> Caller {
        let mut headers = Vec::new();
        let names = [
            Some("authorization"),
            api_key,
            Some("x-warden-justification"),
            Some("traceparent"),
            Some(SOURCE_HEADER),
        ];
        for n in names.into_iter().flatten() {
            if let (Ok(name), Some(v)) =
                (HeaderName::from_bytes(n.as_bytes()), req.headers().get(n))
            {
                headers.push((name, v.clone()));
            }
        }
        let owner = req
            .headers()
            .get(OWNER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Caller { headers, owner }
    }
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

/// One JSON-RPC message's members, each kept as the text it arrived as.
type Members = BTreeMap<String, Box<RawValue>>;

fn member<T: serde::de::DeserializeOwned>(m: &Members, name: &str) -> Option<T> {
    serde_json::from_str(m.get(name)?.get()).ok()
}

fn raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

fn is_response(v: &Value) -> bool {
    v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some())
}

fn error_value(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// Text for the log (bounded, one line).
fn loggable(s: &str) -> String {
    s.chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Incremental SSE reader: the `data` of each complete event, framed as
/// the gateway's own decoder frames a stream (every line ending, a BOM, an
/// event split anywhere), so a member leg's events are read here as they
/// were judged there.
struct SseReader {
    dec: warden_filters::sse::SseDecoder,
}

impl Default for SseReader {
    fn default() -> Self {
        SseReader {
            dec: warden_filters::sse::SseDecoder::new(MAX_EVENT),
        }
    }
}

impl SseReader {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, ()> {
        let events = self.dec.push(chunk).map_err(|_| ())?;
        Ok(events
            .into_iter()
            .filter_map(|e| e.data)
            .filter(|d| !d.trim().is_empty())
            .collect())
    }
}

/// A member leg's SSE response, read message by message.
struct MemberStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    reader: SseReader,
}

impl MemberStream {
    fn new(resp: reqwest::Response) -> Self {
        use futures_util::StreamExt;
        MemberStream {
            body: resp.bytes_stream().boxed(),
            reader: SseReader::default(),
        }
    }

    /// The messages that arrived with the next chunk (an event that is not
    /// JSON is skipped: the member's leg already judged every event);
    /// `Err` once the stream ends or breaks, or an event outgrows
    /// `MAX_EVENT`. Cancel-safe (a chunk is taken whole or not at all).
    async fn next(&mut self) -> Result<Vec<Value>, String> {
        use futures_util::StreamExt;
        let chunk = match self.body.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the stream ended".into()),
        };
        let events = self
            .reader
            .push(&chunk)
            .map_err(|()| "an event over 16 MiB".to_owned())?;
        Ok(events
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }
}

fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

/// The fixed beginning of a URI template, when it names more than a
/// scheme (`file:///{path}` or `h{x}` route nothing by themselves).
fn template_head(t: &str) -> Option<&str> {
    let fixed = t.split('{').next()?;
    let (_, rest) = fixed.split_once(':')?;
    let after = rest.trim_start_matches('/');
    (!after.is_empty()).then_some(fixed)
}

/// The member a URI belongs to, by what each member learned: (it listed
/// the URI, its templates). Every member that claims the URI (lists it, or
/// has a template whose fixed beginning, more than a scheme, it has): one
/// is the answer, several are refused (no member takes another's URIs). A
/// template that is only a scheme (`file:///{path}`) routes nothing by
/// itself, but the URIs it covers are its member's too: another member's
/// narrower claim on one of them is ambiguous, not a takeover.
fn claimant(uri: &str, members: &[(bool, Vec<&str>)]) -> Result<Option<usize>, &'static str> {
    let claims: Vec<usize> = (0..members.len())
        .filter(|&i| {
            let (listed, templates) = &members[i];
            *listed
                || templates
                    .iter()
                    .filter_map(|t| template_head(t))
                    .any(|h| uri.starts_with(h))
        })
        .collect();
    let broad = |j: usize| {
        members[j]
            .1
            .iter()
            .filter(|t| template_head(t).is_none())
            .filter_map(|t| t.split('{').next())
            .any(|fixed| uri.starts_with(fixed))
    };
    match claims.as_slice() {
        [i] if (0..members.len()).any(|j| j != *i && broad(j)) => {
            Err("the URI is claimed by several members")
        }
        [i] => Ok(Some(*i)),
        [] => Ok(None),
        _ => Err("the URI is claimed by several members"),
    }
}

impl Aggregator {
    fn url(&self, i: usize) -> String {
        let m = &self.members[i];
        format!(
            "{}{VIRTUAL_PREFIX}/{}/{}{}",
            self.base, self.name, m.server, m.path
        )
    }

    fn health(&self, i: usize, result: Result<(), &str>) {
        let key = (self.name.clone(), self.members[i].server.clone());
        let mut h = lock(&registry().health);
        let e = h.entry(key).or_default();
        match result {
            Ok(()) => e.healthy = true,
            Err(why) => {
                e.healthy = false;
                e.failures += 1;
                e.last_error = Some(loggable(why));
                e.last_error_at = Some(SystemTime::now());
            }
        }
    }

    fn failed(&self, i: usize, what: &str, why: &str) {
        tracing::warn!(server = %self.name, member = %self.members[i].server, "virtual server member: {what}: {}", loggable(why));
        crate::metrics::metrics()
            .member_failures
            .with_label_values(&[&self.name, &self.members[i].server, what])
            .inc();
        self.health(i, Err(why));
    }

    /// A request to member `i`'s route, on its session (`leg`), as the
    /// caller: the aggregator's secret, the principal's digest (the member
    /// leg checks it authenticates the same one), the caller's credentials.
    fn to_member(
        &self,
        method: reqwest::Method,
        i: usize,
        leg: Option<&Leg>,
        caller: &Caller,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .request(method, self.url(i))
            .header(SECRET_HEADER, &self.inner_secret)
            .header(OWNER_HEADER, &caller.owner);
        for (k, v) in &caller.headers {
            rb = rb.header(k, v);
        }
        if let Some(l) = leg {
            if let Some(s) = &l.sid {
                rb = rb.header("mcp-session-id", s);
            }
            if !l.version.is_empty() {
                rb = rb.header("mcp-protocol-version", &l.version);
            }
        }
        rb
    }

    /// A POST to member `i` on its session (`leg`), as the caller.
    async fn post(
        &self,
        i: usize,
        leg: Option<&Leg>,
        caller: &Caller,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let rb = self
            .to_member(reqwest::Method::POST, i, leg, caller)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        rb.body(body).send().await.map_err(|e| {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                s = format!("{s}: {src}");
            }
            s
        })
    }

    /// A request of the aggregator's own to member `i` and the member's
    /// answer to it (read whole, JSON or SSE; what else the member says
    /// meanwhile is dropped), within the member's read timeout; `Null` for
    /// a 202.
    async fn exchange(
        &self,
        i: usize,
        leg: Option<&Leg>,
        caller: &Caller,
        body: Vec<u8>,
        id: &Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let work = async {
            let resp = self
                .post(i, leg, caller, body)
                .await
                .map_err(Failure::Broken)?;
            let sid = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((Self::answer(resp, id).await?, sid))
        };
        match tokio::time::timeout(self.timeouts[i], work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Broken(format!(
                "no answer within {:?}",
                self.timeouts[i]
            ))),
        }
    }

    async fn answer(resp: reqwest::Response, id: &Value) -> Result<Value, Failure> {
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Failure::Gone);
        }
        if status == StatusCode::ACCEPTED {
            return Ok(Value::Null);
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            let b = resp
                .bytes()
                .await
                .map_err(|e| Failure::Broken(e.to_string()))?;
            return match serde_json::from_slice::<Value>(&b) {
                Ok(v) if v.get("jsonrpc").is_some() => Ok(v),
                _ => Err(Failure::Broken(format!("HTTP {status}"))),
            };
        }
        let mut body = MemberStream::new(resp);
        loop {
            let messages = body
                .next()
                .await
                .map_err(|e| Failure::Broken(format!("no answer: {e}")))?;
            if let Some(v) = messages
                .into_iter()
                .find(|v| is_response(v) && v.get("id") == Some(id))
            {
                return Ok(v);
            }
        }
    }

    /// Opens member `i`'s session with the client's `initialize` params.
    async fn open(
        &self,
        i: usize,
        init: &RawValue,
        caller: &Caller,
    ) -> Result<(Leg, Value), Asked> {
        let id = json!("warden-virtual-init");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"warden-virtual-init","method":"initialize","params":{}}}"#,
            init.get()
        );
        let (v, sid) = match self.exchange(i, None, caller, body.into_bytes(), &id).await {
            Ok(x) => x,
            Err(Failure::Gone) => return Err(Asked::Broken("HTTP 404".into())),
            Err(Failure::Broken(why)) => return Err(Asked::Broken(why)),
        };
        let Some(result) = v.get("result") else {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result");
            // Refused for this caller (policy, a quota …): not the member's health.
            return Err(Asked::Refused(format!("initialize: {}", loggable(msg))));
        };
        let leg = Leg {
            sid,
            version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            failed: None,
        };
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
        let _ = self
            .exchange(i, Some(&leg), caller, note, &Value::Null)
            .await;
        Ok((leg, result.clone()))
    }

    /// Member `i`'s session, opened again when it is gone (or never
    /// opened); `stale` is the session id the caller found dead.
    async fn reopen(
        &self,
        s: &VSession,
        i: usize,
        stale: Option<&str>,
        caller: &Caller,
    ) -> Result<Leg, String> {
        let mut leg = s.legs[i].lock().await;
        if leg.sid.is_some() && leg.sid.as_deref() != stale && leg.failed.is_none() {
            return Ok(leg.clone()); // someone else already did
        }
        match self.open(i, &s.init, caller).await {
            Ok((l, _)) => {
                self.health(i, Ok(()));
                tracing::info!(server = %self.name, member = %self.members[i].server, "virtual server member session opened again");
                *leg = l;
                Ok(leg.clone())
            }
            Err(e) => {
                self.setback(i, "reinitialize", &e);
                let why = e.text().to_owned();
                leg.sid = None;
                leg.failed = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Member `i`'s session, opening it if it failed before.
    async fn leg(&self, s: &VSession, i: usize, caller: &Caller) -> Result<Leg, String> {
        let leg = s.legs[i].lock().await.clone();
        if leg.failed.is_none() {
            return Ok(leg);
        }
        self.reopen(s, i, None, caller).await
    }

    /// A request of the aggregator's own to member `i` (a list page):
    /// its result, opening the session again once if it is gone.
    async fn ask_member(
        &self,
        s: &VSession,
        i: usize,
        caller: &Caller,
        method: &str,
        params: Value,
    ) -> Result<Value, Asked> {
        let id = json!(s.next.fetch_add(1, Ordering::Relaxed));
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let mut leg = self.leg(s, i, caller).await.map_err(Asked::Broken)?;
        for attempt in 0..2 {
            match self
                .exchange(i, Some(&leg), caller, body.clone().into_bytes(), &id)
                .await
            {
                Ok((v, _)) => {
                    if let Some(e) = v.get("error") {
                        // The member (or its leg: policy, a quota) said no:
                        // this caller's answer, not the member's health.
                        let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
                        return Err(Asked::Refused(format!("{method}: {}", loggable(msg))));
                    }
                    return v
                        .get("result")
                        .cloned()
                        .ok_or_else(|| Asked::Broken(format!("{method}: no result")));
                }
                Err(Failure::Gone) if attempt == 0 => {
                    leg = self
                        .reopen(s, i, leg.sid.as_deref(), caller)
                        .await
                        .map_err(Asked::Broken)?;
                }
                Err(Failure::Gone) => {
                    return Err(Asked::Broken("the member's session is gone".into()))
                }
                Err(Failure::Broken(why)) => return Err(Asked::Broken(why)),
            }
        }
        Err(Asked::Broken("the member's session is gone".into()))
    }

    /// A request of the aggregator's own that did not succeed: counted
    /// against the member's health only when the member failed (not when
    /// it, or its leg, refused this caller).
    fn setback(&self, i: usize, what: &str, e: &Asked) {
        match e {
            Asked::Broken(why) => self.failed(i, what, why),
            Asked::Refused(why) => {
                tracing::debug!(server = %self.name, member = %self.members[i].server, "virtual server member refused {what}: {why}")
            }
        }
    }

    /// Decides the client's names for tools or prompts, in member order:
    /// the bundle's aliases first; then each member's names, bare or
    /// prefixed as the member says, a name already taken never taken
    /// again. While an earlier member's list is unknown (it is down),
    /// later members get no bare names: a name could otherwise move from
    /// one member to another when it comes back.
    fn table(&self, l: &Learned, kind: Kind) -> NameTable {
        let mut t = NameTable::default();
        let sets = &l.sets[kind as usize];
        let bound = &l.bound[kind as usize];
        let has = |i: usize, real: &str| {
            sets[i]
                .as_ref()
                .is_some_and(|names| names.iter().any(|n| n == real))
        };
        // A name this session was shown keeps its meaning while its tool
        // is there (and is never given to another).
        for (name, (i, real)) in bound {
            if has(*i, real) && !t.by_real.contains_key(&(*i, real.clone())) {
                t.by_name.insert(name.clone(), (*i, real.clone()));
                t.by_real.insert((*i, real.clone()), name.clone());
            }
        }
        if kind == Kind::Tools {
            for (i, m) in self.members.iter().enumerate() {
                for (real, view) in &m.tools {
                    let (Some(alias), Some(names)) = (&view.alias, &sets[i]) else {
                        continue;
                    };
                    if names.contains(real) && !t.by_real.contains_key(&(i, real.clone())) {
                        t.by_name.insert(alias.clone(), (i, real.clone()));
                        t.by_real.insert((i, real.clone()), alias.clone());
                    }
                }
            }
        }
        let taken = |t: &NameTable, n: &str| {
            t.by_name.contains_key(n)
                || bound.contains_key(n)
                || (kind == Kind::Tools && self.aliases.contains(n))
        };
        for (i, m) in self.members.iter().enumerate() {
            let Some(names) = &sets[i] else { continue };
            let earlier_unknown =
                (0..i).any(|j| self.members[j].prefixing != Prefixing::Always && sets[j].is_none());
            for real in names {
                if t.by_real.contains_key(&(i, real.clone())) {
                    continue;
                }
                let prefixed = format!("{}_{real}", m.prefix);
                let candidates: Vec<String> = match (m.prefixing, earlier_unknown) {
                    (Prefixing::Always, _) => vec![prefixed],
                    (Prefixing::Never, false) => vec![real.clone()],
                    (Prefixing::Never, true) => Vec::new(),
                    (Prefixing::Conflict, false) => vec![real.clone(), prefixed],
                    (Prefixing::Conflict, true) => vec![prefixed],
                };
                if let Some(name) = candidates.into_iter().find(|c| !taken(&t, c)) {
                    t.by_name.insert(name.clone(), (i, real.clone()));
                    t.by_real.insert((i, real.clone()), name);
                }
            }
        }
        t
    }

    /// The current names table for tools or prompts.
    fn names(&self, s: &VSession, kind: Kind) -> Arc<NameTable> {
        let mut l = lock(&s.learned);
        let slot = kind as usize;
        if let Some(t) = &l.tables[slot] {
            return t.clone();
        }
        let t = Arc::new(self.table(&l, kind));
        for (name, target) in &t.by_name {
            if l.bound[slot].len() >= MAX_NAMES * 4 {
                break;
            }
            l.bound[slot]
                .entry(name.clone())
                .or_insert_with(|| target.clone());
        }
        l.tables[slot] = Some(t.clone());
        t
    }

    /// Reads the whole `kind` list of each member not known yet, or
    /// announced as changed (or every member's, with `all`). A member that
    /// cannot be read keeps what was known of it.
    async fn learn(&self, s: &VSession, kind: Kind, caller: &Caller, all: bool) {
        let wanted: Vec<usize> = {
            let l = lock(&s.learned);
            (0..self.members.len())
                .filter(|&i| {
                    (all || l.sets[kind as usize][i].is_none() || l.stale[kind as usize][i])
                        && l.failed_at[kind as usize][i]
                            .is_none_or(|t| t.elapsed() >= RELEARN_EVERY)
                })
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let jobs = wanted.into_iter().map(|i| async move {
            let caps = match self.leg(s, i, caller).await {
                Ok(l) => l.capabilities,
                Err(_) => return (i, None),
            };
            if caps.get(kind.capability()).is_none() {
                return (i, Some(Vec::new()));
            }
            let mut names = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let params = match &cursor {
                    Some(c) => json!({"cursor": c}),
                    None => json!({}),
                };
                match self.ask_member(s, i, caller, kind.method(), params).await {
                    Ok(r) => {
                        for item in r
                            .get(kind.items())
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(n) = item.get(kind.key()).and_then(Value::as_str) {
                                if n.len() <= MAX_NAME_LEN && names.len() < MAX_NAMES {
                                    names.push(n.to_owned());
                                }
                            }
                        }
                        cursor = r
                            .get("nextCursor")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        if cursor.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        self.setback(i, "list", &e);
                        return (i, None);
                    }
                }
            }
            (i, Some(names))
        });
        let done = futures_util::future::join_all(jobs).await;
        let mut l = lock(&s.learned);
        for (i, names) in done {
            match names {
                Some(n) => {
                    l.sets[kind as usize][i] = Some(n);
                    l.stale[kind as usize][i] = false;
                    l.failed_at[kind as usize][i] = None;
                }
                None => l.failed_at[kind as usize][i] = Some(Instant::now()),
            }
        }
        l.relearned[kind as usize] = Some(Instant::now());
        if let Some(t) = l.tables.get_mut(kind as usize) {
            *t = None;
        }
    }

    /// Whether an unknown name may make the lists be read again now.
    fn may_relearn(&self, s: &VSession, kind: Kind) -> bool {
        lock(&s.learned).relearned[kind as usize].is_none_or(|t| t.elapsed() >= RELEARN_EVERY)
    }

    /// The member and upstream name behind the name `name` the client used.
    async fn resolve(
        &self,
        s: &VSession,
        kind: Kind,
        name: &str,
        caller: &Caller,
    ) -> Option<(usize, String)> {
        // Served from what is known; a slow member is waited for only when
        // the name is not known yet.
        if let Some(hit) = self.names(s, kind).by_name.get(name) {
            return Some(hit.clone());
        }
        self.learn(s, kind, caller, false).await;
        if let Some(hit) = self.names(s, kind).by_name.get(name) {
            return Some(hit.clone());
        }
        // Unknown: a member's list may have changed unannounced.
        if !self.may_relearn(s, kind) {
            return None;
        }
        self.learn(s, kind, caller, true).await;
        self.names(s, kind).by_name.get(name).cloned()
    }

    /// The member serving resource `uri`: the one member that listed it or
    /// has a template whose fixed beginning it has (several: refused), else
    /// the one member with resources at all.
    async fn resolve_uri(
        &self,
        s: &VSession,
        uri: &str,
        caller: &Caller,
    ) -> Result<usize, &'static str> {
        for pass in 0..2 {
            if pass == 1 {
                if !self.may_relearn(s, Kind::Resources) {
                    break;
                }
                self.learn(s, Kind::Resources, caller, true).await;
                self.learn(s, Kind::Templates, caller, true).await;
            } else {
                self.learn(s, Kind::Resources, caller, false).await;
                self.learn(s, Kind::Templates, caller, false).await;
            }
            let l = lock(&s.learned);
            let members: Vec<(bool, Vec<&str>)> = (0..self.members.len())
                .map(|i| {
                    let listed = |k: Kind| l.sets[k as usize][i].iter().flatten().any(|u| u == uri);
                    (
                        listed(Kind::Resources) || listed(Kind::Templates),
                        l.sets[Kind::Templates as usize][i]
                            .iter()
                            .flatten()
                            .map(String::as_str)
                            .collect(),
                    )
                })
                .collect();
            if let Some(i) = claimant(uri, &members)? {
                return Ok(i);
            }
        }
        let mut with = Vec::new();
        for i in 0..self.members.len() {
            if s.legs[i]
                .lock()
                .await
                .capabilities
                .get("resources")
                .is_some()
            {
                with.push(i);
            }
        }
        match with.as_slice() {
            [i] => Ok(*i),
            _ => Err("Resource not found"),
        }
    }

    /// The client's view of member `i`'s list item; `None`: not shown (a
    /// name no longer its own, or not learned yet).
    fn view(
        &self,
        table: Option<&NameTable>,
        kind: Kind,
        i: usize,
        mut item: Value,
    ) -> Option<(String, Value)> {
        let real = item.get(kind.key())?.as_str()?.to_owned();
        let Some(t) = table else {
            return Some((real, item));
        };
        let name = t.by_real.get(&(i, real.clone()))?.clone();
        item["name"] = json!(name);
        if kind == Kind::Tools {
            if let Some(v) = self.members[i].tools.get(&real) {
                if let Some(x) = &v.title {
                    item["title"] = json!(x);
                }
                if let Some(d) = &v.description {
                    item["description"] = json!(d);
                }
                if let Some(schema) = item.get_mut("inputSchema").and_then(Value::as_object_mut) {
                    let fixed: Vec<&String> = v.hidden.keys().chain(v.defaults.keys()).collect();
                    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut)
                    {
                        for k in v.hidden.keys() {
                            props.remove(k);
                        }
                        for (k, d) in &v.defaults {
                            if let Some(p) = props.get_mut(k).and_then(Value::as_object_mut) {
                                p.insert("default".into(), d.clone());
                            }
                        }
                    }
                    if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
                        req.retain(|r| !fixed.iter().any(|k| r.as_str() == Some(k.as_str())));
                    }
                }
            }
        }
        Some((name, item))
    }

    fn seal_cursor(
        &self,
        s: &VSession,
        kind: Kind,
        state: &[Option<Option<String>>],
    ) -> Option<String> {
        let payload = serde_json::to_vec(&json!({"s": s.id, "k": kind as u8, "c": state})).ok()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.cursor_key
            .seal(CURSOR_PREFIX, CURSOR_AAD, nonce, payload)
    }

    fn open_cursor(
        &self,
        s: &VSession,
        kind: Kind,
        token: &str,
    ) -> Option<Vec<Option<Option<String>>>> {
        let plain = self
            .cursor_key
            .open(CURSOR_PREFIX, CURSOR_AAD, token, 64 << 10)?;
        let v: Value = serde_json::from_slice(&plain).ok()?;
        if v.get("s")?.as_str()? != s.id || v.get("k")?.as_u64()? != kind as u64 {
            return None;
        }
        let c: Vec<Option<Option<String>>> = serde_json::from_value(v.get("c")?.clone()).ok()?;
        (c.len() == self.members.len()).then_some(c)
    }

    /// One merged page of a list.
    async fn list(
        &self,
        s: &VSession,
        kind: Kind,
        params: Option<&Members>,
        id: &Value,
        caller: &Caller,
    ) -> Value {
        let cursor: Option<String> = params.and_then(|p| member(p, "cursor"));
        // Per member: None = done; Some(None) = from the start; Some(Some(c)) = from c.
        let state = match &cursor {
            Some(c) => match self.open_cursor(s, kind, c) {
                Some(st) => st,
                None => return error_value(Some(id), -32602, "Invalid cursor"),
            },
            None => vec![Some(None); self.members.len()],
        };
        self.learn(s, kind, caller, false).await;
        let jobs = state.iter().enumerate().filter_map(|(i, st)| {
            let from = st.clone()?;
            Some(async move {
                let caps = match self.leg(s, i, caller).await {
                    Ok(l) => l.capabilities,
                    Err(why) => return (i, Err(Asked::Broken(why))),
                };
                if caps.get(kind.capability()).is_none() {
                    return (i, Ok(json!({})));
                }
                let params = match &from {
                    Some(c) => json!({"cursor": c}),
                    None => json!({}),
                };
                (
                    i,
                    self.ask_member(s, i, caller, kind.method(), params).await,
                )
            })
        });
        let pages = futures_util::future::join_all(jobs).await;
        let table = matches!(kind, Kind::Tools | Kind::Prompts).then(|| self.names(s, kind));
        let mut next: Vec<Option<Option<String>>> = vec![None; self.members.len()];
        let mut items = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, page) in pages {
            match page {
                Ok(r) => {
                    self.health(i, Ok(()));
                    for item in r
                        .get(kind.items())
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        if let Some((name, item)) = self.view(table.as_deref(), kind, i, item) {
                            if seen.insert(name) {
                                items.push(item);
                            }
                        }
                    }
                    if let Some(c) = r.get("nextCursor").and_then(Value::as_str) {
                        next[i] = Some(Some(c.to_owned()));
                    }
                }
                // Left out of the listing; the others are served.
                Err(e) => self.setback(i, "list", &e),
            }
        }
        let mut result = serde_json::Map::new();
        result.insert(kind.items().into(), Value::from(items));
        if next.iter().any(Option::is_some) {
            if let Some(c) = self.seal_cursor(s, kind, &next) {
                result.insert("nextCursor".into(), json!(c));
            }
        }
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }

    /// A new session: every member's opened with the client's params.
    async fn initialize(&self, m: &Members, caller: &Caller) -> Response<Body> {
        let id: Value = member(m, "id").unwrap_or(Value::Null);
        {
            let sessions = lock(&self.sessions);
            let mut opening = lock(&self.opening);
            let mine = sessions
                .values()
                .filter(|s| s.owner == caller.owner)
                .count()
                + opening.get(&caller.owner).copied().unwrap_or(0);
            let all = sessions.len() + opening.values().sum::<usize>();
            if all < MAX_SESSIONS && mine < MAX_SESSIONS_PER_PRINCIPAL {
                *opening.entry(caller.owner.clone()).or_default() += 1;
            } else {
                return too_many(
                    &id,
                    &format!(
                        "too many sessions of `{}` (end some with DELETE)",
                        self.name
                    ),
                );
            }
        }
        // Counted until the session is in the table (or failed).
        let _opening = Opening::new(self, &caller.owner);
        let init: Box<RawValue> = m.get("params").cloned().unwrap_or_else(|| raw(&json!({})));
        if init.get().len() > MAX_INIT {
            return json_response(
                StatusCode::OK,
                None,
                &error_value(
                    Some(&id),
                    -32602,
                    "Invalid params: initialize params over 64 KiB",
                ),
            );
        }
        let requested = serde_json::from_str::<Value>(init.get())
            .ok()
            .and_then(|p| {
                p.get("protocolVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let opened = futures_util::future::join_all(
            (0..self.members.len()).map(|i| self.open(i, &init, caller)),
        )
        .await;
        let mut legs = Vec::new();
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for (i, r) in opened.into_iter().enumerate() {
            match r {
                Ok((leg, result)) => {
                    self.health(i, Ok(()));
                    results.push((i, result));
                    legs.push(leg);
                }
                Err(e) => {
                    self.setback(i, "initialize", &e);
                    failures.push(self.members[i].server.clone());
                    legs.push(Leg {
                        failed: Some(e.text().to_owned()),
                        ..Leg::default()
                    });
                }
            }
        }
        if results.is_empty() {
            let msg = format!(
                "no member of `{}` could be initialized ({} failed; see the gateway log)",
                self.name,
                failures.join(", ")
            );
            return json_response(StatusCode::OK, None, &error_value(Some(&id), -32603, &msg));
        }
        // The version every member agreed on, else the oldest any chose.
        let versions: Vec<&str> = results
            .iter()
            .filter_map(|(_, r)| r.get("protocolVersion").and_then(Value::as_str))
            .collect();
        let version = match requested.as_deref() {
            Some(v) if versions.iter().all(|x| *x == v) => v.to_owned(),
            _ => versions
                .iter()
                .min()
                .copied()
                .unwrap_or("2025-06-18")
                .to_owned(),
        };
        let mut caps = serde_json::Map::new();
        let any = |path: &str| results.iter().any(|(_, r)| r.pointer(path).is_some());
        let flag = |path: &str| {
            results
                .iter()
                .any(|(_, r)| r.pointer(path) == Some(&Value::Bool(true)))
        };
        if any("/capabilities/tools") {
            caps.insert(
                "tools".into(),
                json!({"listChanged": flag("/capabilities/tools/listChanged")}),
            );
        }
        if any("/capabilities/prompts") {
            caps.insert(
                "prompts".into(),
                json!({"listChanged": flag("/capabilities/prompts/listChanged")}),
            );
        }
        if any("/capabilities/resources") {
            caps.insert(
                "resources".into(),
                json!({
                    "listChanged": flag("/capabilities/resources/listChanged"),
                    "subscribe": flag("/capabilities/resources/subscribe"),
                }),
            );
        }
        if any("/capabilities/logging") {
            caps.insert("logging".into(), json!({}));
        }
        if any("/capabilities/completions") {
            caps.insert("completions".into(), json!({}));
        }
        let instructions: Vec<String> = results
            .iter()
            .filter_map(|(i, r)| {
                r.get("instructions")
                    .and_then(Value::as_str)
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| format!("## {}\n{t}", self.members[*i].server))
            })
            .collect();
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": {"name": self.name, "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n\n"));
        }
        let sid = hex::encode(rand::random::<[u8; 16]>());
        let session = Arc::new(VSession {
            id: sid.clone(),
            owner: caller.owner.clone(),
            init,
            legs: legs.into_iter().map(tokio::sync::Mutex::new).collect(),
            learned: Mutex::new(Learned::new(self.members.len())),
            asked: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            get_stop: Mutex::new(None),
            caller: Mutex::new(caller.clone()),
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.sessions).insert(sid.clone(), session);
        json_response(
            StatusCode::OK,
            Some(&sid),
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
        )
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let authorised = req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| crate::loopback::same(v.as_bytes(), self.outer_secret.as_bytes()));
        if !authorised {
            return plain(StatusCode::FORBIDDEN);
        }
        let caller = Caller::of(&req, self.api_key.as_deref());
        let session = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|sid| lock(&self.sessions).get(sid).cloned())
            // Bound to the principal that opened it.
            .filter(|s| crate::loopback::same(s.owner.as_bytes(), caller.owner.as_bytes()));
        if let Some(s) = &session {
            *lock(&s.last_used) = Instant::now();
            *lock(&s.caller) = caller.clone();
        }
        let has_sid = req.headers().contains_key("mcp-session-id");
        match *req.method() {
            Method::POST => self.post_message(req, session, has_sid, caller).await,
            Method::GET => match session {
                Some(s) => self.get(s, caller),
                None => not_found(),
            },
            Method::DELETE => match session {
                Some(s) => {
                    lock(&self.sessions).remove(&s.id);
                    if let Some(stop) = lock(&s.get_stop).take() {
                        let _ = stop.send(true);
                    }
                    self.end(&s, &caller).await;
                    plain(StatusCode::OK)
                }
                None => not_found(),
            },
            _ => plain(StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    /// Ends every member session of `s`.
    async fn end(&self, s: &VSession, caller: &Caller) {
        let mut jobs = Vec::new();
        for i in 0..self.members.len() {
            let leg = s.legs[i].lock().await.clone();
            if leg.sid.is_none() {
                continue;
            }
            let rb = self
                .to_member(reqwest::Method::DELETE, i, Some(&leg), caller)
                .timeout(self.timeouts[i]);
            jobs.push(rb.send());
        }
        let _ = futures_util::future::join_all(jobs).await;
    }

    async fn post_message(
        self: Arc<Self>,
        req: Request<Incoming>,
        session: Option<Arc<VSession>>,
        has_sid: bool,
        caller: Caller,
    ) -> Response<Body> {
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE),
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(
                    None,
                    -32600,
                    "a virtual server takes one JSON-RPC message per request (no batches)",
                ),
            );
        }
        let Ok(mut m) = serde_json::from_slice::<Members>(&body) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32700, "Parse error"),
            );
        };
        let method: Option<String> = member(&m, "method");
        let id: Option<Value> = member(&m, "id");
        if id.as_ref().is_some_and(|v| v.to_string().len() > MAX_ID) {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32600, "Invalid Request: an id over 256 characters"),
            );
        }
        match (method.as_deref(), &id) {
            (Some("initialize"), Some(_)) => return self.initialize(&m, &caller).await,
            (Some("ping"), Some(id)) if session.is_some() || !has_sid => {
                return json_response(
                    StatusCode::OK,
                    None,
                    &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                );
            }
            (Some("server/discover"), Some(id)) if session.is_none() => {
                // Sessions only: a 2026-07-28 client falls back to initialize.
                return json_response(
                    StatusCode::OK,
                    None,
                    &error_value(
                        Some(id),
                        -32601,
                        "Method not found: server/discover (this virtual server speaks initialize)",
                    ),
                );
            }
            _ => {}
        }
        let Some(s) = session else {
            return if has_sid {
                not_found()
            } else {
                json_response(
                    StatusCode::BAD_REQUEST,
                    None,
                    &error_value(
                        id.as_ref(),
                        -32600,
                        "Bad Request: no valid session ID; initialize first",
                    ),
                )
            };
        };
        match (method, id) {
            (Some(method), Some(id)) => self.request(s, &mut m, &method, id, caller).await,
            (Some(method), None) => {
                self.notification(&s, &mut m, &method, &caller).await;
                plain(StatusCode::ACCEPTED)
            }
            (None, Some(id)) => {
                self.client_answer(&s, &mut m, &id, &caller).await;
                plain(StatusCode::ACCEPTED)
            }
            (None, None) => json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32600, "Invalid Request"),
            ),
        }
    }

    /// Sends a message the client sent on to member `i`, not waiting for
    /// more than the member's acknowledgement.
    async fn pass_on(&self, s: &VSession, i: usize, m: &Members, caller: &Caller) {
        let Ok(body) = serde_json::to_vec(m) else {
            return;
        };
        let leg = s.legs[i].lock().await.clone();
        if leg.sid.is_none() {
            return;
        }
        let _ = self
            .exchange(i, Some(&leg), caller, body, &Value::Null)
            .await;
    }

    /// The client answers a server→client request: to the member that asked.
    async fn client_answer(&self, s: &VSession, m: &mut Members, id: &Value, caller: &Caller) {
        let asked = id
            .as_str()
            .and_then(|t| t.strip_prefix(ASK_PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        let Some((i, original)) = asked.and_then(|b| lock(&s.asked).remove(&b)) else {
            return;
        };
        m.insert("id".into(), raw(&original));
        self.pass_on(s, i, m, caller).await;
    }

    async fn notification(&self, s: &VSession, m: &mut Members, method: &str, caller: &Caller) {
        match method {
            "notifications/cancelled" => {
                let mut params: Members = member(m, "params").unwrap_or_default();
                let Some(wanted) = member::<Value>(&params, "requestId").map(|v| v.to_string())
                else {
                    return;
                };
                // Cancelled: answered by no one (its stream just ends).
                let Some((i, ours)) = lock(&s.inflight).remove(&wanted) else {
                    return;
                };
                params.insert("requestId".into(), raw(&json!(ours)));
                m.insert("params".into(), raw_members(&params));
                self.pass_on(s, i, m, caller).await;
            }
            "notifications/roots/list_changed" => {
                for i in 0..self.members.len() {
                    self.pass_on(s, i, m, caller).await;
                }
            }
            // `initialized` was sent to each member when its session opened;
            // anything else is the client's own business.
            _ => {}
        }
    }

    /// A client request: answered here (lists, logging level) or routed.
    async fn request(
        self: Arc<Self>,
        s: Arc<VSession>,
        m: &mut Members,
        method: &str,
        id: Value,
        caller: Caller,
    ) -> Response<Body> {
        let answer = |v: &Value| json_response(StatusCode::OK, None, v);
        if let Some(kind) = Kind::of(method) {
            let params: Option<Members> = member(m, "params");
            return answer(&self.list(&s, kind, params.as_ref(), &id, &caller).await);
        }
        let mut params: Members = member(m, "params").unwrap_or_default();
        let target = match method {
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    Kind::Tools
                } else {
                    Kind::Prompts
                };
                let Some(name) = member::<String>(&params, "name") else {
                    return answer(&error_value(Some(&id), -32602, "Invalid params: no name"));
                };
                let Some((i, real)) = self.resolve(&s, kind, &name, &caller).await else {
                    let what = if kind == Kind::Tools {
                        "tool"
                    } else {
                        "prompt"
                    };
                    return answer(&error_value(
                        Some(&id),
                        -32602,
                        &format!("Unknown {what}: {}", loggable(&name)),
                    ));
                };
                params.insert("name".into(), raw(&json!(real)));
                if kind == Kind::Tools {
                    if let Some(view) = self.members[i].tools.get(&real) {
                        if !view.hidden.is_empty() || !view.defaults.is_empty() {
                            let mut args: Members =
                                member(&params, "arguments").unwrap_or_default();
                            for (k, v) in &view.hidden {
                                if args.contains_key(k) {
                                    return answer(&error_value(
                                        Some(&id),
                                        -32602,
                                        &format!(
                                            "Invalid params: argument `{k}` is set by the gateway"
                                        ),
                                    ));
                                }
                                args.insert(k.clone(), raw(v));
                            }
                            for (k, v) in &view.defaults {
                                args.entry(k.clone()).or_insert_with(|| raw(v));
                            }
                            params.insert("arguments".into(), raw_members(&args));
                        }
                    }
                }
                i
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let Some(uri) = member::<String>(&params, "uri") else {
                    return answer(&error_value(Some(&id), -32602, "Invalid params: no uri"));
                };
                match self.resolve_uri(&s, &uri, &caller).await {
                    Ok(i) => i,
                    Err(why) => return answer(&error_value(Some(&id), -32602, why)),
                }
            }
            "completion/complete" => {
                let r: Value = member(&params, "ref").unwrap_or(Value::Null);
                match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                        let Some((i, real)) = self.resolve(&s, Kind::Prompts, name, &caller).await
                        else {
                            return answer(&error_value(
                                Some(&id),
                                -32602,
                                "Invalid params: unknown prompt",
                            ));
                        };
                        let mut r = r.clone();
                        r["name"] = json!(real);
                        params.insert("ref".into(), raw(&r));
                        i
                    }
                    Some("ref/resource") => {
                        let uri = r.get("uri").and_then(Value::as_str).unwrap_or("");
                        match self.resolve_uri(&s, uri, &caller).await {
                            Ok(i) => i,
                            Err(why) => return answer(&error_value(Some(&id), -32602, why)),
                        }
                    }
                    _ => {
                        return answer(&error_value(
                            Some(&id),
                            -32602,
                            "Invalid params: unknown completion reference",
                        ))
                    }
                }
            }
            "logging/setLevel" => {
                for i in 0..self.members.len() {
                    let logs = s.legs[i].lock().await.capabilities.get("logging").is_some();
                    if logs {
                        let mut one = m.clone();
                        one.insert(
                            "id".into(),
                            raw(&json!(s.next.fetch_add(1, Ordering::Relaxed))),
                        );
                        self.pass_on(&s, i, &one, &caller).await;
                    }
                }
                return answer(&json!({"jsonrpc": "2.0", "id": id, "result": {}}));
            }
            _ => {
                return answer(&error_value(
                    Some(&id),
                    -32601,
                    &format!("Method not found: {}", loggable(method)),
                ))
            }
        };
        // What the client asks progress about (only that comes back).
        let progress: Option<Value> = member::<Members>(&params, "_meta")
            .and_then(|meta| member::<Value>(&meta, "progressToken"));
        m.insert("params".into(), raw_members(&params));
        self.relay(s, target, m, id, progress, caller).await
    }

    /// Sends a routed request to member `i` under an id of the aggregator's
    /// and passes its answer on with the client's id: a JSON answer whole,
    /// a stream event by event.
    async fn relay(
        self: Arc<Self>,
        s: Arc<VSession>,
        i: usize,
        m: &mut Members,
        id: Value,
        progress: Option<Value>,
        caller: Caller,
    ) -> Response<Body> {
        let unavailable = |why: &str| {
            json_response(
                StatusCode::OK,
                None,
                &error_value(
                    Some(&id),
                    -32603,
                    &format!("`{}` is unavailable: {why}", self.members[i].server),
                ),
            )
        };
        let mut leg = match self.leg(&s, i, &caller).await {
            Ok(l) => l,
            Err(_) => return unavailable("its session could not be opened"),
        };
        let ours = s.next.fetch_add(1, Ordering::Relaxed);
        m.insert("id".into(), raw(&json!(ours)));
        let Ok(body) = serde_json::to_vec(m) else {
            return plain(StatusCode::BAD_REQUEST);
        };
        let key = id.to_string();
        {
            let mut inflight = lock(&s.inflight);
            if inflight.len() >= MAX_INFLIGHT {
                return too_many(&id, "too many requests in flight on this session");
            }
            inflight.insert(key.clone(), (i, ours));
        }
        // Forgotten however this ends (a client that goes away included);
        // a stream hands it to its task.
        let mut guard = InFlight {
            s: s.clone(),
            key: key.clone(),
            armed: true,
        };
        let mut resp = None;
        for attempt in 0..2 {
            match self.post(i, Some(&leg), &caller, body.clone()).await {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    if attempt == 1 {
                        break;
                    }
                    leg = match self.reopen(&s, i, leg.sid.as_deref(), &caller).await {
                        Ok(l) => l,
                        Err(_) => {
                            return unavailable("its session could not be opened again");
                        }
                    };
                }
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(why) => {
                    self.failed(i, "call", &why);
                    return unavailable("not reachable");
                }
            }
        }
        let Some(resp) = resp else {
            return unavailable("its session is gone");
        };
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let ours_v = json!(ours);
        if !ct.starts_with("text/event-stream") {
            let b = resp.bytes().await.unwrap_or_default();
            if status == StatusCode::ACCEPTED {
                return plain(StatusCode::ACCEPTED);
            }
            // The member leg's answer (its error, or the gateway's, included)
            // with the client's id. Members stay as written.
            // A response only: a request or notification in its place is
            // no answer (and never reaches the client under its id).
            let answered = serde_json::from_slice::<Members>(&b).ok().filter(|a| {
                !a.contains_key("method")
                    && (a.contains_key("result") || a.contains_key("error"))
                    && (member::<Value>(a, "id").as_ref() == Some(&ours_v)
                        || member::<Value>(a, "id") == Some(Value::Null))
            });
            let Some(mut a) = answered else {
                self.failed(i, "call", &format!("HTTP {status}: no JSON-RPC answer"));
                return unavailable("it gave no answer");
            };
            a.insert("id".into(), raw(&id));
            let out = serde_json::to_vec(&a).unwrap_or_default();
            // One member down is an error for this call, not for the
            // client's whole session; the client's own faults (401, 403,
            // 429 …) keep their status.
            let status = if status.is_server_error() {
                self.failed(i, "call", &format!("HTTP {status}"));
                StatusCode::OK
            } else {
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
            };
            let mut r = Response::new(Full::new(Bytes::from(out)).boxed());
            *r.status_mut() = status;
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            return r;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
        let me = self.clone();
        guard.armed = false;
        tokio::spawn(async move {
            let mut body = MemberStream::new(resp);
            let mut answered = false;
            'read: loop {
                let messages = tokio::select! {
                    m = body.next() => m,
                    _ = tx.closed() => break 'read,
                };
                let Ok(messages) = messages else { break };
                for mut v in messages {
                    let method = v.get("method").and_then(Value::as_str);
                    if is_response(&v) && v.get("id") == Some(&ours_v) {
                        v["id"] = id.clone();
                        answered = true;
                    } else if method == Some("notifications/progress") {
                        // Only about this call: a member cannot report on
                        // another's.
                        let token = v.pointer("/params/progressToken");
                        if progress.is_none() || token != progress.as_ref() {
                            continue;
                        }
                    } else if !me.member_said(&s, i, &mut v) {
                        continue;
                    }
                    if tx.send(sse_event(&v)).await.is_err() {
                        break 'read;
                    }
                    if answered {
                        break 'read;
                    }
                }
            }
            // Cancelled by the client: answered by no one.
            let cancelled = lock(&s.inflight).remove(&key).is_none();
            if !answered && !cancelled && !tx.is_closed() {
                let _ = tx
                    .send(sse_event(&error_value(
                        Some(&id),
                        -32603,
                        &format!(
                            "`{}` ended its stream without an answer",
                            me.members[i].server
                        ),
                    )))
                    .await;
            }
        });
        sse(rx, None)
    }

    /// A message a member sent on its own (on a call's stream or its GET
    /// stream), made the client's: a server→client request gets an id of
    /// the aggregator's; a cancellation of one of those is translated; a
    /// list change makes its names be read again. `false`: not passed on.
    fn member_said(&self, s: &VSession, i: usize, v: &mut Value) -> bool {
        let Some(method) = v.get("method").and_then(Value::as_str).map(str::to_owned) else {
            // A response to nothing the client asked (here): not passed on.
            return false;
        };
        if let Some(mid) = v.get("id").cloned() {
            let mut asked = lock(&s.asked);
            if asked.len() >= MAX_ASKED || mid.to_string().len() > MAX_ID {
                return false;
            }
            let bid = s.next.fetch_add(1, Ordering::Relaxed);
            asked.insert(bid, (i, mid));
            v["id"] = json!(format!("{ASK_PREFIX}{bid}"));
            return true;
        }
        // Progress goes only with the call it is about (see `relay`).
        if method == "notifications/progress" {
            return false;
        }
        if method == "notifications/cancelled" {
            let Some(mid) = v.pointer("/params/requestId").cloned() else {
                return false;
            };
            let mut asked = lock(&s.asked);
            let Some(bid) = asked
                .iter()
                .find(|(_, (m, x))| *m == i && *x == mid)
                .map(|(b, _)| *b)
            else {
                return false;
            };
            asked.remove(&bid);
            v["params"]["requestId"] = json!(format!("{ASK_PREFIX}{bid}"));
            return true;
        }
        let changed = Kind::changed(&method);
        if !changed.is_empty() {
            let mut l = lock(&s.learned);
            for k in changed {
                l.stale[*k as usize][i] = true;
            }
        }
        true
    }

    /// The merged GET stream of a session (one at a time: a new one ends
    /// the one before).
    fn get(self: Arc<Self>, s: Arc<VSession>, caller: Caller) -> Response<Body> {
        // A stop every task sees, even one not started yet.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        if let Some(old) = lock(&s.get_stop).replace(stop_tx) {
            let _ = old.send(true);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
        for i in 0..self.members.len() {
            let me = self.clone();
            let s = s.clone();
            let tx = tx.clone();
            let caller = caller.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let leg = s.legs[i].lock().await.clone();
                if leg.sid.is_none() {
                    return;
                }
                let rb = me
                    .to_member(reqwest::Method::GET, i, Some(&leg), &caller)
                    .header("accept", "text/event-stream");
                let resp = tokio::select! {
                    r = rb.send() => r,
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|v| *v) => return,
                };
                let Ok(resp) = resp else { return };
                if resp.status() != StatusCode::OK {
                    return;
                }
                let mut body = MemberStream::new(resp);
                loop {
                    let messages = tokio::select! {
                        m = body.next() => m,
                        _ = tx.closed() => return,
                        _ = stop.wait_for(|v| *v) => return,
                    };
                    let Ok(messages) = messages else { return };
                    for mut v in messages {
                        if !me.member_said(&s, i, &mut v) {
                            continue;
                        }
                        // A client that does not read loses the stream.
                        if tx.try_send(sse_event(&v)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        sse(rx, None)
    }
}

fn raw_members(m: &Members) -> Box<RawValue> {
    serde_json::to_string(m)
        .ok()
        .and_then(|t| RawValue::from_string(t).ok())
        .unwrap_or_else(|| raw(&json!({})))
}

fn plain(status: StatusCode) -> Response<Body> {
    crate::loopback::plain(status, "")
}

/// A bound reached: 429 with the request's id and what was exhausted.
fn too_many(id: &Value, message: &str) -> Response<Body> {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        &error_value(Some(id), -32603, message),
    )
}

fn json_response(status: StatusCode, session: Option<&str>, v: &Value) -> Response<Body> {
    crate::loopback::json(status, session, v.to_string())
}

/// An SSE response of the events that arrive on `rx`.
fn sse(rx: mpsc::Receiver<Bytes>, session: Option<&str>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((b, rx))
    });
    crate::loopback::event_stream(stream, session)
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        None,
        &error_value(None, -32001, "Session not found"),
    )
}

async fn serve(listener: std::net::TcpListener, agg: Arc<Aggregator>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("virtual server: {e}");
            return;
        }
    };
    // Idle sessions end, and their member sessions with them.
    let reaper = agg.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let mut idle = Vec::new();
            lock(&reaper.sessions).retain(|_, s| {
                let quiet = lock(&s.last_used).elapsed() >= IDLE;
                if quiet {
                    idle.push(s.clone());
                }
                !quiet
            });
            for s in idle {
                if let Some(stop) = lock(&s.get_stop).take() {
                    let _ = stop.send(true);
                }
                let caller = lock(&s.caller).clone();
                reaper.end(&s, &caller).await;
            }
        }
    });
    crate::loopback::serve(listener, 4096, move |req| {
        let a = agg.clone();
        async move { a.handle(req).await }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_config::model::ToolView;

    type Spec<'a> = (&'a str, Prefixing, Option<(&'a str, &'a str)>);

    fn agg(members: &[Spec<'_>]) -> Aggregator {
        let members: Vec<VirtualMember> = members
            .iter()
            .map(|(name, prefixing, alias)| VirtualMember {
                server: (*name).into(),
                path: "/mcp".into(),
                prefixing: *prefixing,
                prefix: (*name).into(),
                tools: alias
                    .iter()
                    .map(|(real, a)| {
                        (
                            (*real).to_owned(),
                            ToolView {
                                alias: Some((*a).into()),
                                ..ToolView::default()
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        Aggregator {
            name: "v".into(),
            fingerprint: String::new(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            outer_secret: String::new(),
            inner_secret: String::new(),
            base: String::new(),
            aliases: members
                .iter()
                .flat_map(|m| m.tools.values().filter_map(|t| t.alias.clone()))
                .collect(),
            timeouts: vec![Duration::from_secs(1); members.len()],
            members,
            api_key: None,
            client: reqwest::Client::new(),
            cursor_key: TokenKey::new(&[7; 32]),
            sessions: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        }
    }

    fn learned(sets: Vec<Option<Vec<&str>>>) -> Learned {
        let mut l = Learned::new(sets.len());
        l.sets[0] = sets
            .into_iter()
            .map(|s| s.map(|v| v.into_iter().map(str::to_owned).collect()))
            .collect();
        l
    }

    fn name(t: &NameTable, i: usize, real: &str) -> Option<String> {
        t.by_real.get(&(i, real.to_owned())).cloned()
    }

    #[test]
    fn names_are_decided_in_member_order() {
        use Prefixing::*;
        let a = agg(&[
            ("a", Conflict, None),
            ("b", Conflict, Some(("add", "plus"))),
            ("c", Never, None),
            ("d", Always, None),
        ]);
        let l = learned(vec![
            Some(vec!["echo", "plus", "b_y", "y"]),
            Some(vec!["echo", "add", "y"]),
            Some(vec!["echo", "b_echo", "only_c"]),
            Some(vec!["echo"]),
        ]);
        let t = a.table(&l, Kind::Tools);
        assert_eq!(name(&t, 0, "echo").as_deref(), Some("echo"));
        // The alias is the aliased tool's alone, whatever comes first.
        assert_eq!(name(&t, 0, "plus").as_deref(), Some("a_plus"));
        assert_eq!(name(&t, 1, "add").as_deref(), Some("plus"));
        assert_eq!(t.by_name.get("plus"), Some(&(1, "add".to_owned())));
        assert_eq!(name(&t, 1, "echo").as_deref(), Some("b_echo"));
        // `y` and `b_y` both taken by the earlier member: not shown.
        assert_eq!(name(&t, 0, "b_y").as_deref(), Some("b_y"));
        assert_eq!(name(&t, 1, "y"), None);
        // `never`: a name already taken is not shown at all.
        assert_eq!(name(&t, 2, "echo"), None);
        assert_eq!(name(&t, 2, "b_echo"), None);
        assert_eq!(name(&t, 2, "only_c").as_deref(), Some("only_c"));
        assert_eq!(name(&t, 3, "echo").as_deref(), Some("d_echo"));
        // One name, one tool.
        assert_eq!(t.by_name.len(), t.by_real.len());
    }

    #[test]
    fn no_bare_name_while_an_earlier_member_is_unknown() {
        use Prefixing::*;
        let a = agg(&[
            ("a", Conflict, None),
            ("b", Conflict, None),
            ("c", Never, None),
        ]);
        let l = learned(vec![None, Some(vec!["send_email"]), Some(vec!["send"])]);
        let t = a.table(&l, Kind::Tools);
        assert_eq!(name(&t, 1, "send_email").as_deref(), Some("b_send_email"));
        assert_eq!(name(&t, 2, "send"), None);
        assert!(!t.by_name.contains_key("send_email"));
    }

    #[test]
    fn anonymous_callers_are_told_apart_by_address() {
        use warden_filters::identity::{AuthMethod, Principal};
        let a: Option<std::net::IpAddr> = "10.0.0.1".parse().ok();
        let b: Option<std::net::IpAddr> = "10.0.0.2".parse().ok();
        let anon = Principal::anonymous();
        assert_ne!(owner_digest(&anon, a), owner_digest(&anon, b));
        let mapped: Option<std::net::IpAddr> = "::ffff:10.0.0.1".parse().ok();
        assert_eq!(owner_digest(&anon, a), owner_digest(&anon, mapped));
        let key = Principal {
            id: "agent-dev".into(),
            auth: AuthMethod::ApiKey,
            ..Principal::anonymous()
        };
        assert_eq!(owner_digest(&key, a), owner_digest(&key, b));
        // The same caller by another method is another owner only when the
        // principal differs, never by address.
        assert_ne!(owner_digest(&key, a), owner_digest(&anon, a));
    }

    #[test]
    fn templates_route_only_past_their_scheme() {
        assert_eq!(template_head("file:///{path}"), None);
        assert_eq!(template_head("h{x}"), None);
        assert_eq!(template_head("https://{host}/x"), None);
        assert_eq!(
            template_head("https://docs.example/{p}"),
            Some("https://docs.example/")
        );
        assert_eq!(template_head("res://greeting/{x}"), Some("res://greeting/"));
    }

    #[test]
    fn a_narrower_claim_never_takes_a_broad_members_uris() {
        let home = "file:///home/alice/secret.txt";
        // A scheme-wide template and another member's narrower one: ambiguous.
        let members = vec![
            (false, vec![]),
            (false, vec!["file:///{path}"]),
            (false, vec!["file:///home{rest}"]),
        ];
        assert!(claimant(home, &members).is_err());
        // Outside the narrower claim: no claim; the caller falls back to the
        // one member with resources.
        assert_eq!(claimant("file:///tmp/x", &members), Ok(None));
        // Alone, the narrower template routes; a listed URI too.
        assert_eq!(claimant(home, &members[2..]), Ok(Some(0)));
        let listed = vec![(true, vec![]), (false, vec!["res://other/{x}"])];
        assert_eq!(claimant(home, &listed), Ok(Some(0)));
        let two = vec![(true, vec![]), (false, vec!["file:///home/{x}"])];
        assert!(claimant(home, &two).is_err());
    }

    #[test]
    fn sse_events_are_read_across_chunks() {
        let mut r = SseReader::default();
        assert!(r
            .push(b"event: message\ndata: {\"a\"")
            .expect("read")
            .is_empty());
        let got = r
            .push(b":1}\n\n: comment\n\ndata: x\r\n\r\nid: 3\ndata: y\ndata: z\n\n")
            .expect("read");
        assert_eq!(got, vec!["{\"a\":1}".to_owned(), "x".into(), "y\nz".into()]);
        // Bare CR line ends, as a member's server may write them.
        let got = r.push(b"data: {\"b\":2}\r\rdata: w\r\r:").expect("read");
        assert_eq!(got, vec!["{\"b\":2}".to_owned(), "w".into()]);
    }
}
