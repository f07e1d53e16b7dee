//! The headers that mirror the body (2026-07-28): `Mcp-Method`, `Mcp-Name`
//! and `Mcp-Param-*`, in one place. Read once at admission (each
//! unambiguous, each value decoded); checked against the parsed message
//! (the method and name it carries, the arguments its tool's listed
//! definition mirrors); and, after the chain, set on the upstream request
//! from the body that is forwarded, so a header never carries a value the
//! guards did not judge.

use pingora::http::RequestHeader;
use warden_filters::protocol::mcp::{self, ParamDecl};
use warden_filters::protocol::version::ProtocolVersion;
use warden_filters::{Envelope, Message, Refusal, Snapshot};

use crate::hub::state::Gateway;

/// What the client's mirrored headers said, and what goes upstream.
#[derive(Default)]
pub struct Mirrored {
    /// `Mcp-Method` and `Mcp-Name` as the client sent them.
    pub method: Option<Vec<u8>>,
    pub name: Option<Vec<u8>>,
    /// The request's `Mcp-Param-*` headers: lower-cased name after the
    /// prefix, decoded value.
    pub params_in: Vec<(String, String)>,
    /// The declarations of the called tool's listed definition.
    decls: Vec<ParamDecl>,
    /// Headers no declaration covers that go upstream (name, encoded value).
    kept: Vec<(String, String)>,
    /// When set, every `Mcp-Param-*` header is replaced by these (name after
    /// the prefix, encoded value) on the way upstream.
    pub params_out: Option<Vec<(String, String)>>,
    /// When set, the `Mcp-Name` that goes upstream (the forwarded body's).
    pub name_out: Option<String>,
}

impl Mirrored {
    /// Whether the client sent any mirrored header (a batch may carry none).
    pub fn any(&self) -> bool {
        self.method.is_some() || self.name.is_some() || !self.params_in.is_empty()
    }
}

/// Admission: reads the mirrored headers. `Mcp-Method` and `Mcp-Name` are
/// checked for repeats with the other headers that scope the body.
pub fn read(req: &RequestHeader) -> Result<Mirrored, Refusal> {
    if mcp::duplicate_param_header(req.headers.iter().map(|(k, _)| k.as_str())).is_some() {
        return Err(Refusal::bad_header("Mcp-Param-*", "sent more than once"));
    }
    let mut m = Mirrored::default();
    // `Mcp-Param-*` mirror arguments into headers: each must decode to one
    // value, or it cannot be compared with the body (2026-07-28).
    for (name, value) in req.headers.iter() {
        let n = name.as_str();
        // `Mcp_Name` and the like: servers behind CGI-style stacks read
        // them as the real header (both become HTTP_MCP_NAME).
        if n.contains('_') && n.replace('_', "-").starts_with("mcp-") {
            return Err(Refusal::bad_header(
                "Mcp-*",
                "a name spelled with `_` is ambiguous",
            ));
        }
        if n.len() > mcp::H_PARAM_PREFIX.len() && n.starts_with(mcp::H_PARAM_PREFIX) {
            let Some(v) = mcp::decode_header_value(value.as_bytes()) else {
                return Err(Refusal::header_mismatch(
                    None,
                    "an Mcp-Param-* header value is not valid".into(),
                ));
            };
            m.params_in
                .push((n[mcp::H_PARAM_PREFIX.len()..].to_owned(), v));
        }
    }
    m.method = req
        .headers
        .get(mcp::H_METHOD)
        .map(|v| v.as_bytes().to_vec());
    m.name = req.headers.get(mcp::H_NAME).map(|v| v.as_bytes().to_vec());
    Ok(m)
}

/// A single message: its method and name against `Mcp-Method` and
/// `Mcp-Name`, and a `tools/call`'s `Mcp-Param-*` headers against the
/// arguments its tool's listed definition mirrors.
pub fn check_message(
    gw: &Gateway,
    m: &mut Mirrored,
    protocol_version: Option<&str>,
    env: &Envelope,
    msg: Option<&Message<'_>>,
    server: &str,
) -> Result<(), Refusal> {
    mcp::check_headers(m.method.as_deref(), m.name.as_deref(), env)?;
    let modern = m.method.is_some()
        || ProtocolVersion::at_least(protocol_version, ProtocolVersion::V2026_07_28);
    let Some(msg) = msg.filter(|_| env.method.as_deref() == Some("tools/call")) else {
        return Ok(());
    };
    let decls = env
        .name
        .as_deref()
        .and_then(|tool| gw.shared.params.get(server, tool));
    match decls.as_deref() {
        Some(Ok(d)) if !d.is_empty() => {
            mcp::check_params(d, msg.arguments(), &m.params_in, modern)
                .map_err(|e| Refusal::header_mismatch(env.id.clone(), e))?;
            m.decls = d.clone();
        }
        Some(Ok(_)) => {}
        // A call whose tool's declarations are unknown here (no
        // `tools/list` seen since start, or one another replica saw, or a
        // definition refused): its `Mcp-Param-*` headers cannot be checked
        // against the arguments, so none goes upstream (a server that needs
        // them answers for itself; what it reads is never a value policy
        // did not judge). Judged by DLP either way (see [`keep_undeclared`]):
        // a secret in a header is refused, not just left behind.
        _ => m.params_out = Some(Vec::new()),
    }
    Ok(())
}

/// `Mcp-Param-*` headers no declaration covers: DLP-scanned like an
/// argument (a finding refuses the request) and kept, or stripped, as the
/// bundle says.
pub fn keep_undeclared(m: &mut Mirrored, snap: &Snapshot) -> Result<(), Refusal> {
    let mut kept = Vec::new();
    for (name, value) in &m.params_in {
        if m.decls.iter().any(|d| d.header == *name) {
            continue;
        }
        if snap.config.undeclared_params == warden_config::model::UndeclaredParams::Strip {
            continue;
        }
        let mut hits = Vec::new();
        snap.redactor.scan_str(value, &mut hits);
        // Names arrive lower-cased; detectors are case-sensitive.
        snap.redactor.scan_str(name, &mut hits);
        snap.redactor
            .scan_str(&name.to_ascii_uppercase(), &mut hits);
        if !hits.is_empty() {
            return Err(Refusal::bad_header(
                "Mcp-Param-*",
                "carries data DLP refuses in a header",
            ));
        }
        kept.push((name.clone(), mcp::encode_header_value(value)));
    }
    // Unchecked declarations: nothing goes upstream (see `check_message`).
    if m.params_out.is_none() {
        m.kept = kept;
    }
    Ok(())
}

/// After the chain: the mirrored headers that go upstream, as the message
/// that is forwarded says (a redacted argument never travels on in its
/// header). `forwarded` is that message: the one that arrived, or the
/// chain's rewrite of it (`rewritten`); `None` for a batch.
pub fn outbound(m: &mut Mirrored, forwarded: Option<&Message<'_>>, rewritten: bool) {
    // `Mcp-Name` follows a rewritten body (a task id the gateway unsealed,
    // say), as the upstream checks it there.
    if rewritten && m.name.is_some() {
        m.name_out = forwarded
            .and_then(|msg| mcp::expected_name(msg.envelope))
            .map(mcp::encode_header_value);
    }
    if m.params_out.is_some() || (m.decls.is_empty() && m.params_in.is_empty()) {
        return;
    }
    let mut out = mcp::mirrored_headers(&m.decls, forwarded.and_then(Message::arguments));
    out.append(&mut m.kept);
    m.params_out = Some(out);
}
