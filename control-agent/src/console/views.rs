//! The console's views: the `askama` templates' data, one struct per page,
//! and the small helpers that turn records into what a page shows. Values
//! reach HTML only through the templates' escaping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use askama::Template;
use http::StatusCode;
use serde::Serialize;

use super::session::{Session, User};
use super::{html, plain, Resp};
use crate::build::KillState;

/// What every page shows around its content.
pub(super) struct Frame {
    pub(super) title: String,
    pub(super) active: &'static str,
    pub(super) user: Option<UserView>,
    pub(super) csrf: String,
    pub(super) flash: Option<String>,
}

pub(super) struct UserView {
    pub(super) name: String,
    pub(super) role: &'static str,
    pub(super) scope: String,
    /// An administrator (the tenants and registry pages are theirs).
    pub(super) governs: bool,
}

impl Frame {
    pub(super) fn new(
        title: impl Into<String>,
        active: &'static str,
        s: &Session,
        flash: Option<String>,
    ) -> Frame {
        Frame {
            title: title.into(),
            active,
            user: Some(UserView {
                name: match &s.user.oidc {
                    Some(o) if o.shown != o.sub => format!("{} ({})", o.shown, s.user.name),
                    _ => s.user.name.clone(),
                },
                role: s.user.role_label(),
                scope: if s.user.tenants.is_empty() {
                    "all tenants".into()
                } else {
                    s.user.tenants.join(", ")
                },
                governs: s.user.actor.is_some(),
            }),
            csrf: s.csrf.clone(),
            flash,
        }
    }
}

#[derive(Template)]
#[template(path = "console/cli_token.html")]
pub(super) struct CliTokenPage {
    pub(super) frame: Frame,
    pub(super) token: String,
    pub(super) role: &'static str,
    pub(super) ends: String,
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub(super) struct LoginPage {
    pub(super) frame: Frame,
    pub(super) error: Option<String>,
    /// The identity provider's host, when people sign in through one.
    pub(super) provider: Option<String>,
    /// Whether the token form is open.
    pub(super) tokens: bool,
}

// ---------------------------------------------------------------- fleet

pub(super) struct MemberView {
    pub(super) id: String,
    pub(super) labels: String,
    pub(super) revision: String,
    pub(super) due: String,
    pub(super) why: String,
    pub(super) current: bool,
    pub(super) healthy: bool,
    pub(super) last_error: String,
    pub(super) calls: u64,
    pub(super) rate: String,
    pub(super) last_seen: String,
    pub(super) stale: bool,
    /// Live processes sharing the id (0: it is not shared).
    pub(super) conflict: usize,
    pub(super) upstreams: Vec<(String, u64, u64)>,
}

pub(super) struct ChangeView {
    pub(super) ts: String,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) ok: bool,
    pub(super) detail: String,
    pub(super) revision: String,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
pub(super) struct FleetPage {
    pub(super) frame: Frame,
    pub(super) members: Vec<MemberView>,
    pub(super) current: String,
    pub(super) served: Vec<(String, String)>,
    pub(super) rollout: String,
    pub(super) last_build_error: String,
    pub(super) kill_switch: String,
    pub(super) kill_history: Vec<ChangeView>,
    pub(super) changes: Vec<ChangeView>,
    pub(super) admin: bool,
}

// -------------------------------------------------------------- bundles

pub(super) struct RevisionView {
    pub(super) seq: u64,
    pub(super) revision: String,
    pub(super) published_at: String,
    pub(super) actor: String,
    pub(super) reason: String,
    pub(super) target: String,
    pub(super) current: bool,
}

#[derive(Template)]
#[template(path = "console/bundles.html")]
pub(super) struct BundlesPage {
    pub(super) frame: Frame,
    pub(super) revisions: Vec<RevisionView>,
    pub(super) admin: bool,
    /// A user of some tenants: the fleet's revisions (the org's source,
    /// every tenant's layer) are not listed.
    pub(super) scoped: bool,
    /// They administer a tenant: its layers are on the tenants page.
    pub(super) governs: bool,
}

#[derive(Template)]
#[template(path = "console/diff.html")]
pub(super) struct DiffPage {
    pub(super) frame: Frame,
    pub(super) a: String,
    pub(super) b: String,
    pub(super) files: Vec<super::diff::FileDiff>,
    /// The history the diff came from.
    pub(super) back: String,
    /// Where "roll back to a" posts; empty: no such form for this user.
    pub(super) rollback: String,
}

// ------------------------------------------------------------ approvals

pub(super) struct ApprovalView {
    pub(super) id: String,
    pub(super) state: String,
    pub(super) tenant: String,
    pub(super) principal: String,
    pub(super) server: String,
    pub(super) tool: String,
    pub(super) risk: String,
    pub(super) reason: String,
    pub(super) justification: String,
    pub(super) arguments: String,
    pub(super) args_digest: String,
    pub(super) approvals: u64,
    pub(super) required: u64,
    pub(super) waiting: String,
    pub(super) requested_at: String,
    pub(super) requested_by: String,
    pub(super) trace_id: String,
    pub(super) trace_link: String,
    pub(super) decisions: Vec<(String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
pub(super) struct ApprovalsPage {
    pub(super) frame: Frame,
    pub(super) approvals: Vec<ApprovalView>,
    pub(super) all: bool,
}

#[derive(Template)]
#[template(path = "console/approval.html")]
pub(super) struct ApprovalPage {
    pub(super) frame: Frame,
    pub(super) a: ApprovalView,
    pub(super) can_decide: bool,
}

// ---------------------------------------------------------------- audit

#[derive(Default)]
pub(super) struct AuditForm {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) gateway: String,
    pub(super) principal: String,
    pub(super) tenant: String,
    pub(super) server: String,
    pub(super) tool: String,
    pub(super) outcome: String,
    pub(super) reason: String,
    pub(super) approval_id: String,
    pub(super) trace_id: String,
    pub(super) team: String,
    pub(super) currency: String,
    /// `1`: priced records only (kept from a spend row's link).
    pub(super) priced: String,
    /// The fields the records have none of (kept from a spend row's link).
    pub(super) absent: String,
}

pub(super) struct RowView {
    pub(super) id: i64,
    pub(super) ts: String,
    pub(super) gateway: String,
    pub(super) seq: u64,
    pub(super) tenant: String,
    pub(super) principal: String,
    pub(super) server: String,
    pub(super) tool: String,
    pub(super) method: String,
    pub(super) direction: String,
    pub(super) outcome: String,
    pub(super) reason: String,
    pub(super) latency: String,
    /// `/console/audit?trace_id=…`, encoded.
    pub(super) trace_link: String,
    pub(super) denied: bool,
}

pub(super) struct ChainView {
    pub(super) gateway: String,
    pub(super) records: u64,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) ok: bool,
    /// Records held as stubs (too large to ship whole).
    pub(super) elided: u64,
    pub(super) problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub(super) struct AuditPage {
    pub(super) frame: Frame,
    pub(super) form: AuditForm,
    pub(super) rows: Vec<RowView>,
    pub(super) total: u64,
    pub(super) next: Option<String>,
    pub(super) verify_link: String,
    /// (intact, what was checked, each chain: shown to users of every tenant).
    pub(super) verification: Option<(bool, String, Vec<ChainView>)>,
    pub(super) error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/record.html")]
pub(super) struct RecordPage {
    pub(super) frame: Frame,
    pub(super) row: RowView,
    pub(super) fields: Vec<(String, String)>,
    pub(super) json: String,
}

// ----------------------------------------------------------------- live

pub(super) struct Bar {
    pub(super) label: String,
    pub(super) value: u64,
    pub(super) max: u64,
}

#[derive(Template)]
#[template(path = "console/live.html")]
pub(super) struct LivePage {
    pub(super) frame: Frame,
    pub(super) window: u64,
    pub(super) gateway: String,
    pub(super) gateways: Vec<String>,
    pub(super) calls: u64,
    pub(super) calls_per_sec: String,
    pub(super) p50: String,
    pub(super) p99: String,
    pub(super) timeline: Vec<Bar>,
    /// (title, element id, bars).
    pub(super) panels: Vec<(&'static str, &'static str, Vec<Bar>)>,
}

pub(super) fn render(t: &impl Template) -> Resp {
    match t.render() {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("template: {e}")),
    }
}

/// A call's arguments laid out for reading, only when that changes
/// nothing but white space: a number no f64 holds
/// (`0.1000000000000000000001`), an escape or a duplicate member would
/// read otherwise once parsed again, and is shown as the call carried it
/// (the text its digest binds).
pub(super) fn laid_out(args: String) -> String {
    serde_json::from_str::<serde_json::Value>(&args)
        .ok()
        .filter(|j| serde_json::to_string(j).is_ok_and(|c| c == args))
        .and_then(|j| serde_json::to_string_pretty(&j).ok())
        .unwrap_or(args)
}

/// A value of free-form JSON (a change record's line) as text: a string
/// as it is, `null` as nothing, anything else as JSON.
pub(super) fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn bars(items: &[(String, u64)]) -> Vec<Bar> {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    items
        .iter()
        .map(|(label, value)| Bar {
            label: label.clone(),
            value: *value,
            max,
        })
        .collect()
}

/// Parses a time of a form: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` (UTC).
pub(super) fn parse_time(t: &str) -> Result<Option<i64>, String> {
    let t = t.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let mut owned = t.replace(' ', "T");
    if owned.len() == 16 {
        owned.push_str(":00");
    }
    if !owned.ends_with('Z') && !owned.contains('+') {
        owned.push('Z');
    }
    let at = humantime::parse_rfc3339_weak(&owned)
        .or_else(|_| humantime::parse_rfc3339(&owned))
        .map_err(|e| format!("`{t}` is not a time (YYYY-MM-DDTHH:MM, UTC): {e}"))?;
    Ok(Some(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    ))
}

pub(super) fn fmt_us(us: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time as the agent's records and views write it (RFC 3339, milliseconds).
pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A figure as the store's JSON view carried it: JSON holds no NaN or
/// infinity (they were `null`, shown as 0).
pub(super) fn as_json_f64(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Records one console verification reads at most.
pub(super) const VERIFY_CAP: usize = 20_000;

/// `/console/audit?trace_id=<id>`, the id encoded.
pub(super) fn trace_link(trace_id: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("trace_id", trace_id)
        .finish();
    format!("/console/audit?{q}")
}

/// Whether a kill-switch entry (`scope`, `value`) is one `user` may see.
/// A user of some tenants sees the fleet-wide pause and the entries of
/// their tenants: their tenants, their principals, and the servers and
/// `server/tool`s of `mine` (the servers their tenants own: registered to
/// them or defined by their layers). A server or tool of the org's or of
/// another tenant names what that tenant runs and when it was paused; a
/// bare `tool` (every server's) is the org's. An unknown scope is not shown.
pub(super) fn kill_visible(user: &User, mine: &BTreeSet<String>, scope: &str, value: &str) -> bool {
    match scope {
        _ if user.tenants.is_empty() => true,
        "all" => true,
        "tenant" => user.sees(value),
        "principal" => value.split_once('/').is_some_and(|(t, _)| user.sees(t)),
        "server" => is_mine(mine, value),
        "tool" => value
            .split_once('/')
            .is_some_and(|(server, _)| is_mine(mine, server)),
        _ => false,
    }
}

/// The kill switch as the fleet page shows it: pretty JSON of the entries
/// `user` may see ([`kill_visible`]), its members in the order the page
/// has always shown them (sorted by name), and `upstreams` whenever the
/// switch holds some (empty when none of them is the user's).
pub(super) fn kill_switch_shown(user: &User, mine: &BTreeSet<String>, ks: &KillState) -> String {
    #[derive(Serialize)]
    struct Shown<'a> {
        all: bool,
        principals: Vec<&'a str>,
        servers: Vec<&'a str>,
        tenants: Vec<&'a str>,
        tools: Vec<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstreams: Option<BTreeMap<&'a str, &'a Vec<String>>>,
    }
    // Every field named: one the switch gains is not left off unseen.
    let KillState {
        all,
        tenants,
        principals,
        servers,
        tools,
        upstreams,
    } = ks;
    fn seen<'a>(
        user: &User,
        mine: &BTreeSet<String>,
        scope: &str,
        list: &'a [String],
    ) -> Vec<&'a str> {
        list.iter()
            .map(String::as_str)
            .filter(|v| kill_visible(user, mine, scope, v))
            .collect()
    }
    let seen = |scope, list| seen(user, mine, scope, list);
    let shown = Shown {
        all: *all,
        principals: seen("principal", principals),
        servers: seen("server", servers),
        tenants: seen("tenant", tenants),
        tools: seen("tool", tools),
        // Where each paused server was reached: shown with its server.
        upstreams: (!upstreams.is_empty()).then(|| {
            upstreams
                .iter()
                .filter(|(server, _)| kill_visible(user, mine, "server", server))
                .map(|(server, at)| (server.as_str(), at))
                .collect()
        }),
    };
    serde_json::to_string_pretty(&shown).unwrap_or_default()
}

/// Whether `server` is one of `mine` in the one form server names are
/// compared in (a pause of `LEDGER` is of `ledger`).
fn is_mine(mine: &BTreeSet<String>, server: &str) -> bool {
    mine.contains(server)
        || mine
            .iter()
            .any(|m| warden_config::names::same_name(warden_config::names::Name::Server, m, server))
}

/// One field of a record for display: redacted with its name beside it.
pub(super) fn redact_field(c: &super::state::Console, k: &str, x: &serde_json::Value) -> String {
    let key = serde_json::to_string(k).unwrap_or_default();
    let line = format!("{key}: {}", serde_json::to_string(x).unwrap_or_default());
    let red = c.redact(&line);
    let shown = red.strip_prefix(&format!("{key}: ")).unwrap_or(&red);
    if x.is_string() {
        serde_json::from_str::<String>(shown).unwrap_or_else(|_| shown.to_owned())
    } else {
        shown.to_owned()
    }
}

/// Whether `id` can be an approval's id (`ap_` and base32): anything else
/// never reaches a lookup or a redirect.
pub(super) fn is_id(id: &str) -> bool {
    id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A JSON value with every string (and member name) redacted.
pub(super) fn redact_value(c: &super::state::Console, v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(x) => Value::String(c.redact(x)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(c, x)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (c.redact(k), redact_value(c, x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------- spend

/// One group's spend, as the spend page shows it.
pub(super) struct SpendRowView {
    /// The group's keys, redacted (`(none)`: its records have none).
    pub(super) keys: Vec<String>,
    pub(super) calls: u64,
    pub(super) amount: String,
    pub(super) currency: String,
    /// `/console/audit?…`: exactly the records adding up to the row.
    pub(super) link: String,
}

#[derive(Default)]
pub(super) struct SpendForm {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) by: String,
    pub(super) tenant: String,
    pub(super) team: String,
    pub(super) principal: String,
    pub(super) server: String,
    pub(super) tool: String,
}

#[derive(Template)]
#[template(path = "console/spend.html")]
pub(super) struct SpendPage {
    pub(super) frame: Frame,
    pub(super) form: SpendForm,
    /// (value of `by`, label, chosen).
    pub(super) by_choices: Vec<(String, String, bool)>,
    /// The period shown, `[from, to)`, UTC.
    pub(super) period: String,
    /// The keys' headings.
    pub(super) keys: Vec<&'static str>,
    pub(super) rows: Vec<SpendRowView>,
    /// Each currency's total, its link the records of every group.
    pub(super) totals: Vec<SpendRowView>,
    pub(super) truncated: bool,
    pub(super) limit: usize,
    pub(super) csv_link: String,
    pub(super) this_month: String,
    pub(super) last_month: String,
    pub(super) error: Option<String>,
}
