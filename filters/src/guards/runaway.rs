//! Runaway agents: budgets per MCP session and loop detection, on top of the
//! per-principal quotas.
//!
//! - **Session budget** (`runaway.session`): tool calls per session, calls of
//!   one tool per session, and how long after its first call a session may
//!   still call tools. Counted per (principal, session id): another
//!   principal presenting the id (which session binding refuses anyway)
//!   would have its own count, never eat into this one's. A request without
//!   a session (2026-07-28 has none) is bound by the quotas alone.
//! - **Loops** (`runaway.loops`): the same principal calling the same tool of
//!   the same server with the same arguments more than `max_repeats` times
//!   within `window` is refused until the oldest of those calls leaves the
//!   window. Arguments are compared as JSON values (member order and
//!   whitespace do not make a call new). Keyed by principal, not session, so
//!   a new session does not reset it.
//!
//! Refused calls do not count. Both answer a `tools/call` with a tool error
//! the model can read (or a JSON-RPC error, as `policy.denial` says), code
//! -31012 in the error, reason `session_budget_exceeded:<what>` or
//! `loop_detected`. Counters live in bounded tables shared across bundle
//! swaps, in this process (replicas count separately).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use warden_config::access::DenialStyle;
use warden_config::guards::Runaway;

use crate::chain::filter::{Acts, Decision, Denial, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::jsonrpc::Kind;

#[derive(Default)]
struct SessionUse {
    first: Option<SystemTime>,
    calls: u64,
    tools: HashMap<String, u64>,
}

/// Counters that outlive one snapshot.
pub struct RunawayTables {
    sessions: moka::sync::Cache<[u8; 32], Arc<Mutex<SessionUse>>>,
    loops: moka::sync::Cache<[u8; 32], Arc<Mutex<VecDeque<SystemTime>>>>,
}

impl RunawayTables {
    /// Session budgets and loop counters kept now.
    pub fn len(&self) -> u64 {
        self.sessions.entry_count() + self.loops.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn new(capacity: u64) -> RunawayTables {
        RunawayTables {
            // A session idle for a day is gone; its budget with it.
            sessions: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            loops: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
        }
    }
}

impl std::fmt::Debug for RunawayTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunawayTables").finish_non_exhaustive()
    }
}

pub struct RunawayFilter {
    cfg: Runaway,
    tables: Arc<RunawayTables>,
    style: DenialStyle,
}

impl RunawayFilter {
    /// `None` when the bundle sets no runaway guard.
    pub fn new(cfg: &Runaway, tables: Arc<RunawayTables>, style: DenialStyle) -> Option<Self> {
        (cfg.session.is_some() || cfg.loops.is_some()).then(|| RunawayFilter {
            cfg: cfg.clone(),
            tables,
            style,
        })
    }

    fn denial(&self, reason: String, text: String) -> Denial {
        let error = JsonRpcError::new(codes::QUOTA_EXCEEDED, text.clone())
            .with_data(serde_json::json!({ "reason": reason }));
        Denial::readable(error, reason, &text, self.style == DenialStyle::ToolError)
    }

    fn session(&self, ex: &Exchange<'_>, tool: &str) -> Option<Denial> {
        let (Some(b), Some(sid)) = (&self.cfg.session, ex.session_id) else {
            return None;
        };
        // A digest of the length-prefixed parts: a fixed-size key whatever
        // the session id's length, and no two tuples spell the same.
        let mut h = Sha256::new();
        let owner = ex.principal.owner_key();
        for part in [owner.as_str(), sid] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let key: [u8; 32] = h.finalize().into();
        let entry = self.tables.sessions.get_with(key, Default::default);
        let mut u = entry.lock().unwrap_or_else(|p| p.into_inner());
        let first = *u.first.get_or_insert(ex.now);
        if let Some(d) = b.duration {
            if ex.now.duration_since(first).unwrap_or_default() > d {
                return Some(self.denial(
                    "session_budget_exceeded:duration".into(),
                    format!(
                        "Refused: this session may call tools for {} after its first call, and that time is over (session_budget_exceeded). Start a new session.",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        if let Some(limit) = b.calls {
            if u.calls >= limit {
                return Some(self.denial(
                    "session_budget_exceeded:calls".into(),
                    format!(
                        "Refused: this session used its budget of {limit} tool calls (session_budget_exceeded)."
                    ),
                ));
            }
        }
        if let Some(limit) = b.per_tool.get(tool) {
            if u.tools.get(tool).copied().unwrap_or(0) >= *limit {
                return Some(self.denial(
                    format!("session_budget_exceeded:tool:{tool}"),
                    format!(
                        "Refused: this session used its budget of {limit} calls of `{tool}` (session_budget_exceeded)."
                    ),
                ));
            }
            *u.tools.entry(tool.to_owned()).or_default() += 1;
        }
        u.calls += 1;
        None
    }

    fn repeated(&self, msg: &Message<'_>, ex: &Exchange<'_>, tool: &str) -> Option<Denial> {
        let l = self.cfg.loops?;
        let mut h = Sha256::new();
        // Anonymous callers all share one principal: one caller's loop must
        // not refuse the others, so theirs is kept per session or address.
        let who = match (ex.principal.auth, ex.session_id, ex.source_ip) {
            (crate::engines::identity::AuthMethod::Anonymous, Some(s), _) => format!("session {s}"),
            (crate::engines::identity::AuthMethod::Anonymous, None, Some(ip)) => {
                format!("address {ip}")
            }
            _ => String::new(),
        };
        // A rule about a person: spellings a reader merges count as one.
        let owner = ex.principal.person();
        for part in [owner, who.as_str(), ex.server, tool] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // As a canonical JSON value: members sorted, integral numbers one
        // way (1 and 1.0), absent or null arguments as {}, so spacing,
        // member order or spelling do not make the same call look new.
        let args = match msg.arguments() {
            None | Some(serde_json::Value::Null) => b"{}".to_vec(),
            Some(v) => serde_json::to_vec(&canonical(v)).unwrap_or_default(),
        };
        h.update(&args);
        let key: [u8; 32] = h.finalize().into();
        let entry = self.tables.loops.get_with(key, Default::default);
        let mut times = entry.lock().unwrap_or_else(|p| p.into_inner());
        while times
            .front()
            .is_some_and(|t| ex.now.duration_since(*t).unwrap_or_default() >= l.window)
        {
            times.pop_front();
        }
        if times.len() as u64 >= l.max_repeats {
            let retry = times
                .front()
                .map(|t| {
                    l.window
                        .saturating_sub(ex.now.duration_since(*t).unwrap_or_default())
                })
                .unwrap_or(l.window);
            let mut d = self.denial(
                "loop_detected".into(),
                format!(
                    "Refused: `{tool}` was called with these same arguments {} times in the last {} (loop_detected). Change the arguments, or wait {} s.",
                    l.max_repeats,
                    humantime::format_duration(l.window),
                    retry.as_secs().max(1)
                ),
            );
            d.error = d.error.with_data(serde_json::json!({
                "reason": "loop_detected",
                "retry_after": retry.as_secs().max(1),
            }));
            return Some(d);
        }
        times.push_back(ex.now);
        None
    }
}

/// Integral floats as integers, recursively (members are already sorted:
/// `serde_json` keeps objects in a sorted map here).
fn canonical(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), canonical(x))).collect())
        }
        other => other.clone(),
    }
}

impl McpFilter for RunawayFilter {
    fn name(&self) -> &'static str {
        "runaway"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let tool = env.name.as_deref().unwrap_or_default();
        // A loop is refused before it spends the session's budget.
        if let Some(d) = self.repeated(msg, ex, tool) {
            return Decision::Reject(d);
        }
        match self.session(ex, tool) {
            Some(d) => Decision::Reject(d),
            None => Decision::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::identity::Principal;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
    use warden_config::guards::{LoopDetection, SessionBudget};

    fn run(f: &RunawayFilter, body: &str, ex: &Exchange<'_>) -> Result<(), String> {
        let parsed = parse(body.as_bytes(), ParseLimits::default()).expect("parse");
        let Parsed::Single(env) = parsed else {
            panic!("single")
        };
        let msg = Message::new(&env, body.as_bytes());
        match f.on_request(&msg, ex, &mut Notes::default()) {
            Decision::Reject(d) => Err(d.reason),
            _ => Ok(()),
        }
    }

    fn call(tool: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    }

    #[test]
    fn loops_are_refused_until_the_window_moves_on() {
        let cfg = Runaway {
            session: None,
            loops: Some(LoopDetection {
                max_repeats: 3,
                window: Duration::from_secs(60),
            }),
        };
        let f = RunawayFilter::new(
            &cfg,
            Arc::new(RunawayTables::new(100)),
            DenialStyle::ToolError,
        )
        .expect("filter");
        let p = Principal::anonymous();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ex = |s: u64| Exchange {
            now: t0 + Duration::from_secs(s),
            ..Exchange::new(&p, "mock")
        };
        for i in 0..3 {
            assert_eq!(run(&f, &call("echo", r#"{"a":1,"b":2}"#), &ex(i)), Ok(()));
        }
        // Same value, other spelling: still the same call.
        assert_eq!(
            run(&f, &call("echo", r#"{ "b" : 2, "a":1 }"#), &ex(5)),
            Err("loop_detected".into())
        );
        assert_eq!(
            run(&f, &call("echo", r#"{"a":1.0,"b":2}"#), &ex(5)),
            Err("loop_detected".into()),
            "1.0 is 1"
        );
        // Other arguments, another tool: new calls.
        assert_eq!(run(&f, &call("echo", r#"{"a":2,"b":2}"#), &ex(5)), Ok(()));
        assert_eq!(run(&f, &call("add", r#"{"a":1,"b":2}"#), &ex(5)), Ok(()));
        // Anonymous callers share one principal: their loops are kept per
        // session, so one caller's loop does not refuse another's call.
        let sx = |sid: &'static str| Exchange {
            now: t0 + Duration::from_secs(5),
            session_id: Some(sid),
            ..Exchange::new(&p, "mock")
        };
        for _ in 0..3 {
            assert_eq!(run(&f, &call("ping_db", "{}"), &sx("a")), Ok(()));
        }
        assert_eq!(
            run(&f, &call("ping_db", "{}"), &sx("a")),
            Err("loop_detected".into())
        );
        assert_eq!(run(&f, &call("ping_db", "{}"), &sx("b")), Ok(()));
        // Refused calls did not count: once the first call leaves the window,
        // one more goes through.
        assert_eq!(run(&f, &call("echo", r#"{"a":1,"b":2}"#), &ex(60)), Ok(()));
        assert_eq!(
            run(&f, &call("echo", r#"{"a":1,"b":2}"#), &ex(60)),
            Err("loop_detected".into())
        );
    }

    #[test]
    fn session_budgets_count_per_principal_and_session() {
        let cfg = Runaway {
            session: Some(SessionBudget {
                calls: Some(3),
                duration: Some(Duration::from_secs(600)),
                per_tool: [("deploy".to_owned(), 1)].into_iter().collect(),
            }),
            loops: None,
        };
        let f = RunawayFilter::new(&cfg, Arc::new(RunawayTables::new(100)), DenialStyle::Error)
            .expect("filter");
        let p = Principal::anonymous();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ex = |sid: &'static str, s: u64| Exchange {
            now: t0 + Duration::from_secs(s),
            session_id: Some(sid),
            ..Exchange::new(&p, "mock")
        };
        assert_eq!(run(&f, &call("deploy", "{}"), &ex("s1", 0)), Ok(()));
        assert_eq!(
            run(&f, &call("deploy", r#"{"x":1}"#), &ex("s1", 1)),
            Err("session_budget_exceeded:tool:deploy".into())
        );
        assert_eq!(run(&f, &call("echo", "{}"), &ex("s1", 2)), Ok(()));
        assert_eq!(run(&f, &call("echo", r#"{"x":1}"#), &ex("s1", 3)), Ok(()));
        assert_eq!(
            run(&f, &call("echo", r#"{"x":2}"#), &ex("s1", 4)),
            Err("session_budget_exceeded:calls".into())
        );
        // Another session starts afresh; it ends 600 s after its first call.
        assert_eq!(run(&f, &call("echo", "{}"), &ex("s2", 5)), Ok(()));
        assert_eq!(
            run(&f, &call("echo", r#"{"y":1}"#), &ex("s2", 606)),
            Err("session_budget_exceeded:duration".into())
        );
        // No session: no session budget.
        let none = Exchange {
            now: t0,
            ..Exchange::new(&p, "mock")
        };
        for i in 0..5 {
            assert_eq!(
                run(&f, &call("echo", &format!(r#"{{"z":{i}}}"#)), &none),
                Ok(())
            );
        }
    }
}
