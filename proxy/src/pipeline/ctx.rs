//! Per-request state carried through Pingora's phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use warden_filters::{MessageRecord, Principal, Refusal, RequestPlan, SseDecoder};

use crate::hub::runtime::{Runtime, ServerId};

/// What kind of MCP exchange this HTTP request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// POST carrying JSON-RPC message(s).
    Post,
    /// GET: the server's event stream (Streamable HTTP) or a legacy `/sse` stream.
    Get,
    /// DELETE: end of a session.
    Delete,
}

/// How the response body is being handled.
pub enum ResponseMode {
    /// Not decided yet (no response header seen).
    Pending,
    /// Nothing to judge (204, 304, an empty body): forwarded as it comes.
    Passthrough,
    /// `application/json`: buffered up to the limit, judged, then forwarded.
    /// The chunks are kept as they came: a reply read in one chunk and
    /// passed unchanged leaves as the very bytes that arrived.
    /// `ends` follows the chunks that are not the last, so a second JSON
    /// value is refused when it begins, not when the server ends the body.
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        ends: JsonEnds,
    },
    /// `text/event-stream`: decoded and judged event by event.
    Sse { decoder: SseDecoder, injected: bool },
    /// The upstream said 202 but the gateway has answers of its own to send.
    AnswersOnly,
    /// A body the gateway cannot judge (not a type MCP defines): dropped, and
    /// replaced at the end by a JSON-RPC error when anything arrived.
    /// `status`: what the server answered (the client may get another).
    Withheld {
        received: bool,
        always: bool,
        status: u16,
    },
    /// A session's end (a DELETE's 2xx): the status says it all and MCP
    /// defines no body for it, so whatever body came is dropped.
    Discarded,
}

/// A request this exchange forwarded, and whether its reply has come.
#[derive(Debug, Clone)]
pub struct PendingReply {
    pub id: warden_filters::Id,
    /// What the request asked (its reply is judged by it).
    /// Shared with the ledger and the reply that answers it.
    pub asked: std::sync::Arc<crate::sessions::ledger::Asked>,
    pub answered: bool,
}

/// A credential the gateway puts into the upstream request: its header,
/// the value (a prefix such as `Bearer `, then the secret), and where the
/// secret begins, which is what a reply must never hold (a short secret
/// behind a prefix of the bundle's choosing, `token `, say, would not be
/// seen if the prefix were looked for with it).
pub struct Injected {
    pub header: String,
    pub value: String,
    pub secret_at: usize,
}

impl Injected {
    /// The secret, without its prefix.
    pub fn secret(&self) -> &str {
        self.value.get(self.secret_at..).unwrap_or(&self.value)
    }
}

/// The exchange with the upstream: which replicas were tried, what the
/// chosen one answered, and what the gateway sent it beside the body.
pub struct UpstreamLeg {
    /// The upstream identity fetched for this call (header, value): see `outbound`.
    pub outbound_auth: Option<(String, String)>,
    /// A credential from the vault for this call: see
    /// `hub::vault_client`.
    pub vault_auth: Option<Injected>,
    /// What the audit record names of it (`vault:<connection>`,
    /// `vault-secret:<name>@<version>`): a reference, never the value.
    pub credential: Option<String>,
    /// Upstream path and query.
    pub uri: String,
    /// The session id (or legacy query) came sealed: the upstream replica it
    /// named, and the upstream's own id goes upstream instead of the token.
    pub sealed: Option<std::net::SocketAddr>,
    pub tried: Vec<SocketAddr>,
    pub chosen: Option<SocketAddr>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// The reply on its way back: how its body is handled, the requests it
/// answers and the server messages recorded.
pub struct ReplyState {
    pub mode: ResponseMode,
    pub bytes: usize,
    /// Server→client messages recorded on the response path.
    pub records: Vec<MessageRecord>,
    /// The requests this POST forwarded, by id (their replies are judged by them).
    pub pending: Vec<PendingReply>,
    /// Server messages that could not be judged and were not passed on.
    pub unjudgeable: u32,
    /// What judged replies added to their flows, to write to the shared
    /// store before they leave (`reply::share_flows`).
    pub flow_outs: Vec<warden_filters::engines::flow::FlowOut>,
    /// The tail of the text this SSE stream showed its client so far
    /// (progress and log messages, partial results; at most
    /// `warden_filters::engines::dlp::STREAM_CARRY` bytes): DLP reads each
    /// next message's text after it (see `reply::messages::judge_event`).
    pub stream_tail: String,
    /// New tasks judged replies hand out, to claim in the shared store
    /// before they leave (`reply::share_flows`).
    pub task_claims: Vec<warden_filters::chain::notes::TaskClaim>,
    /// The session key of a GET stream (its `Mcp-Session-Id`, or the legacy
    /// endpoint once its `endpoint` event was seen).
    pub stream_session: Option<String>,
    /// An event (not a bare comment) went by on this stream: only the
    /// first may be a legacy `endpoint`.
    pub endpoint_seen: bool,
    /// The newest bundle this reply was found still allowed under, when
    /// one was applied after the exchange began (`reply::still_allowed`).
    pub allowed_under: Option<Arc<Runtime>>,
}

/// Where admission routed a request: the bundle it is judged under, the
/// route and the server it names. Admission returns it (`Admitted`) and
/// hands it to every phase after it; the context keeps a copy for the
/// record of an exchange that may end anywhere (`RequestCtx::server`).
#[derive(Clone)]
pub struct Routed {
    /// The request's runtime (`RequestCtx::rt`), held here so that a phase
    /// reads the server while it changes the context.
    pub rt: Arc<Runtime>,
    /// Index into `rt.snap.routes`.
    pub route: usize,
    pub server_id: ServerId,
}

impl Routed {
    /// The bundle's definition of the server.
    pub fn server(&self) -> &warden_config::model::Server {
        self.rt.server(self.server_id)
    }

    /// The route the request came by.
    pub fn route(&self) -> &warden_filters::snapshot::ResolvedRoute {
        &self.rt.snap.routes[self.route]
    }
}

/// One priced call's reservation.
#[derive(Debug)]
pub struct Reservation {
    pub id: warden_filters::Id,
    /// The price per call taken from every budget in `demands`.
    pub cost: u64,
    pub demands: Vec<warden_filters::guards::budget::BudgetDemand>,
    /// The global budgets' share was taken in the shared store.
    pub in_store: bool,
    pub alerts: Vec<warden_filters::guards::budget::BudgetAlert>,
    /// Its reply came back on this exchange.
    pub answered: bool,
    pub given_back: bool,
}

/// A price per unit a reply owes.
#[derive(Debug)]
pub struct UnitCharge {
    pub id: Option<warden_filters::Id>,
    pub tool: String,
    pub micros: u64,
}

/// A request's money-budget business (`RequestCtx::budget`, kept by
/// `guards::budget`).
#[derive(Debug, Default)]
pub struct BudgetLeg {
    pub reservations: Vec<Reservation>,
    pub units: Vec<UnitCharge>,
}

pub struct RequestCtx {
    pub start: Instant,
    pub request_id: u64,
    /// The W3C trace id when no span is recorded (`trace` is `None`), set at
    /// admission: the caller's `traceparent`'s, or a fresh one; the audit
    /// record and an identity assertion name the same one.
    pub trace_id: Option<crate::pipeline::headers::TraceHex>,
    /// The runtime (bundle) this request reads from arrival to its audit
    /// record, loaded once: it never sees two generations.
    pub rt: Arc<Runtime>,
    /// Where admission routed the request (none: refused before routing).
    pub routed: Option<Routed>,
    /// POST (messages), GET (the server's stream) or DELETE.
    pub kind: ExchangeKind,
    pub principal: std::sync::Arc<Principal>,
    /// When the request arrived (the clock policy sees).
    pub now: std::time::SystemTime,
    pub source_ip: Option<std::net::IpAddr>,
    /// The virtual server this request came through (a member route).
    pub via: Option<String>,
    /// The `x-warden-justification` header.
    pub justification: Option<String>,
    /// The control agent's answer for this request's held call.
    pub approval: Option<crate::hub::approval_client::Claimed>,
    /// The flow state read from the shared store before the chain (see
    /// `warden_filters::guards::flow`); `None`: this process's table.
    pub flow: Option<warden_filters::engines::flow::Loaded>,
    /// On a virtual server's member leg: the client's session of the
    /// virtual server (a digest), which flows are tracked by.
    pub flow_session: Option<String>,
    /// An `initialize` whose client declared URL-mode elicitation.
    pub url_elicitation: bool,
    pub session_id: Option<String>,
    pub session_sealed: bool,
    /// A legacy (HTTP+SSE) POST to a message endpoint some `endpoint`
    /// event named, with the query of a session its principal opened
    /// (checked at admission): only then is its query a session key, this
    /// one (`sticky::legacy_key`).
    pub legacy_session: Option<String>,
    /// When the session the client's sealed id names was opened (its
    /// token's `issued`; 0 when none was opened or it predates the field).
    pub session_issued: u64,
    /// The server's own event id a `Last-Event-ID` resumes from, opened
    /// for this principal, server and session (see `guards::cursor`).
    pub resume_from: Option<String>,
    /// A refused POST's message as far as it could be read: method and
    /// target, for the audit record.
    pub refused_message: Option<(String, Option<String>)>,
    /// Set when spans are exported: this request's trace and Warden's span.
    pub trace: Option<crate::observability::otel::TraceIds>,
    pub protocol_version: Option<String>,
    /// The exact bytes that were judged and will be forwarded.
    pub body: Option<Bytes>,
    pub body_len_in: usize,
    pub plan: Option<RequestPlan>,
    /// Set when the gateway answered by itself.
    pub refusal: Option<Refusal>,
    /// Status the gateway answered with itself (refusal, or answers-only).
    pub local_status: Option<u16>,
    /// The method of the single request this exchange carries, for response context.
    pub request_method: Option<String>,
    /// The tool (prompt, resource) that single request named.
    pub request_target: Option<String>,
    pub counted_inflight: bool,
    /// The client speaks HTTP/2 to the gateway.
    pub downstream_h2: bool,
    /// The reply was cut short (`forwarding::cut_short`): the exchange is
    /// not finished as if it were whole (on HTTP/2 the stream is reset, not
    /// ended; on HTTP/1 the connection closes without a final chunk).
    pub undelivered: bool,
    /// What this HTTP/2 stream owes the read-rate floor (`forwarding::h2_write`).
    pub h2_owed: std::time::Duration,
    /// The headers that mirror the body (`Mcp-Method`, `Mcp-Name`,
    /// `Mcp-Param-*`): see `mirrored`.
    pub mirrored: crate::pipeline::mirrored::Mirrored,
    /// What the client left out that Streamable HTTP requires (an `Accept`
    /// naming both types, a session for a GET stream): named in the error
    /// if the server then refuses the request.
    pub missing: Option<&'static str>,
    /// DLP's findings in the request's header values and URL (see
    /// `metadata`), recorded with the exchange's first record.
    pub metadata_findings: Vec<warden_filters::chain::notes::FindingNote>,
    /// Client headers DLP withheld from the upstream.
    pub withheld_headers: Vec<http::HeaderName>,
    /// The exchange with the upstream (`forwarding`).
    pub upstream: UpstreamLeg,
    /// The reply on its way back (`reply`).
    pub reply: ReplyState,
    /// Money budgets: what this request's priced calls reserved, and the
    /// prices per unit its replies owe (`guards::budget`).
    pub budget: BudgetLeg,
}

impl RequestCtx {
    pub fn new(rt: Arc<Runtime>) -> Self {
        RequestCtx {
            start: Instant::now(),
            request_id: 0,
            trace_id: None,
            via: None,
            rt,
            routed: None,
            upstream: UpstreamLeg {
                tried: Vec::new(),
                chosen: None,
                status: None,
                error: None,
                uri: String::new(),
                outbound_auth: None,
                vault_auth: None,
                credential: None,
                sealed: None,
            },
            reply: ReplyState {
                mode: ResponseMode::Pending,
                bytes: 0,
                records: Vec::new(),
                pending: Vec::new(),
                unjudgeable: 0,
                flow_outs: Vec::new(),
                stream_tail: String::new(),
                task_claims: Vec::new(),
                stream_session: None,
                endpoint_seen: false,
                allowed_under: None,
            },
            budget: Default::default(),
            kind: ExchangeKind::Post,
            principal: Principal::shared_anonymous(),
            now: std::time::SystemTime::now(),
            source_ip: None,
            justification: None,
            approval: None,
            flow: None,
            flow_session: None,
            url_elicitation: false,
            session_id: None,
            session_sealed: false,
            legacy_session: None,
            session_issued: 0,
            resume_from: None,
            refused_message: None,
            trace: None,
            protocol_version: None,
            body: None,
            body_len_in: 0,
            plan: None,
            refusal: None,
            local_status: None,
            request_method: None,
            request_target: None,
            counted_inflight: false,
            downstream_h2: false,
            undelivered: false,
            h2_owed: std::time::Duration::ZERO,
            mirrored: Default::default(),
            missing: None,
            metadata_findings: Vec::new(),
            withheld_headers: Vec::new(),
        }
    }

    /// The server admission routed to (an exchange refused before routing
    /// has none).
    pub fn server_id(&self) -> Option<ServerId> {
        self.routed.as_ref().map(|r| r.server_id)
    }

    /// The bundle's definition of the routed server.
    pub fn server(&self) -> Option<&warden_config::model::Server> {
        Some(self.rt.server(self.server_id()?))
    }

    pub fn server_name(&self) -> &str {
        self.server().map_or("-", |s| &s.name)
    }

    pub fn group_name(&self) -> &str {
        self.server().map_or("-", |s| &s.group)
    }
}

impl RequestCtx {
    /// The exchange this request's messages are judged in, both ways: who,
    /// where, when. `keep_arguments` and `global` concern requests only.
    pub fn exchange<'a>(
        &'a self,
        server: &'a warden_config::model::Server,
        keep_arguments: bool,
        global: Option<&'a warden_filters::guards::quota::GlobalVerdicts>,
    ) -> warden_filters::Exchange<'a> {
        warden_filters::Exchange {
            principal: &self.principal,
            server: &server.name,
            group: &server.group,
            via: self.via.as_deref(),
            session_id: self.filter_session(),
            protocol_version: self.protocol_version.as_deref(),
            source_ip: self.source_ip,
            now: self.now,
            justification: self.justification.as_deref(),
            keep_arguments,
            global,
            budget: None,
            flow: self.flow.as_ref(),
            flow_session: self.flow_session.as_deref(),
            asked: None,
            query: self.upstream.uri.split_once('?').map(|(_, q)| q),
        }
    }

    /// The session every guard binds this exchange's handles to: the
    /// Streamable HTTP session, or a legacy (HTTP+SSE) session's key — on
    /// its POSTs, and on its stream once the `endpoint` event named it —
    /// so that two unauthenticated legacy clients behind one address hold
    /// handles of their own.
    pub fn filter_session(&self) -> Option<&str> {
        let sid = self.session_id.as_deref();
        match self.kind {
            ExchangeKind::Get => self.reply.stream_session.as_deref().or(sid),
            ExchangeKind::Post => sid.or(self.legacy_session.as_deref()),
            _ => sid,
        }
    }

    /// The upstream replica that holds this request's session: named in a
    /// sealed session id, or remembered by this process.
    pub fn replica(
        &self,
        sessions: &crate::sessions::sticky::Sessions,
        server: &str,
    ) -> Option<std::net::SocketAddr> {
        self.upstream.sealed.or_else(|| {
            self.session_key()
                .and_then(|k| sessions.replica(server, &k))
        })
    }

    /// The key this request's session is known by: its `Mcp-Session-Id`, or
    /// for a legacy HTTP+SSE POST the endpoint (path and query) it targets.
    pub fn session_key(&self) -> Option<std::borrow::Cow<'_, str>> {
        match &self.session_id {
            Some(sid) => Some(std::borrow::Cow::Borrowed(sid)),
            // Any other query is the URL's, not a session a client may
            // name (it would make an unauthenticated caller's handles and
            // the server's requests owed to it one key for every address).
            None if self.kind == ExchangeKind::Post => self
                .legacy_session
                .as_deref()
                .map(std::borrow::Cow::Borrowed),
            None => None,
        }
    }
}

impl RequestCtx {
    /// The call's W3C trace id (hex), whether or not spans are recorded.
    pub fn trace_hex(&self) -> Option<crate::pipeline::headers::TraceHex> {
        match &self.trace {
            Some(t) => Some(crate::pipeline::headers::TraceHex::of(t.trace)),
            None => self.trace_id,
        }
    }
}

/// Where JSON text fed chunk by chunk stands: whether its first top-level
/// value has ended and another begun. Strings and escapes are followed, so
/// a brace inside a string is no structure. A top-level scalar (`true`, a
/// number) ends at the first byte that cannot continue it: whitespace, or
/// anything else, which is then the second value's first byte (`1{`,
/// `true"x"`: refused there, not when the stream ends).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonEnds {
    depth: u32,
    in_str: bool,
    escaped: bool,
    /// Inside a top-level scalar (`true`, a number).
    scalar: bool,
    ended: bool,
}

/// A byte that can continue a JSON scalar (a literal or a number).
pub(crate) fn scalar_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
}

impl JsonEnds {
    /// Feeds `b`; true once a second top-level value begins.
    pub fn second_begins(&mut self, b: &[u8]) -> bool {
        let mut i = 0;
        while i < b.len() {
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // A string's content up to its next quote or backslash is
                // skipped whole (an MCP reply is mostly string content):
                // nothing in it is structure.
                let Some(k) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
                    return false;
                };
                i += k;
                if b[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_str = false;
                    self.ended |= self.depth == 0;
                }
                i += 1;
                continue;
            }
            let c = b[i];
            i += 1;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    if self.scalar {
                        self.scalar = false;
                        self.ended = true;
                    }
                }
                _ if self.ended => return true,
                _ if self.scalar && !scalar_byte(c) => return true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.ended |= self.depth == 0;
                }
                b'"' => self.in_str = true,
                _ => self.scalar |= self.depth == 0,
            }
        }
        false
    }
}
