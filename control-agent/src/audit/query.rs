//! The audit API's query strings read into the store's [`Query`] (and the
//! live window): parsing only, no HTTP.

use std::time::Duration;

use super::Query;

/// A time as the API takes it: RFC 3339, or unix seconds (a fraction
/// allowed); unix microseconds out.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e11 {
            return Ok((secs * 1e6).round() as i64);
        }
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor unix seconds"))
}

/// A query string's filters and paging as a [`Query`] (every tenant).
pub fn parse_query(qs: &str) -> Result<Query, String> {
    let mut q = Query::default();
    let mut absent = String::new();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        let v = v.into_owned();
        if v.is_empty() {
            continue;
        }
        let text = Some(v.clone());
        match k.as_ref() {
            "from" => q.from_us = Some(parse_time(&v)?),
            "to" => q.to_us = Some(parse_time(&v)?),
            "gateway" => q.gateway = text,
            "principal" => q.principal = text,
            "tenant" => q.tenant = text,
            "server" => q.server = text,
            "tool" => q.tool = text,
            "outcome" => q.outcome = text,
            "reason" => q.reason = text,
            "approval_id" | "approval" => q.approval_id = text,
            "trace_id" | "trace" => q.trace_id = text,
            "team" => q.team = text,
            "currency" => q.currency = text,
            "priced" => q.priced = parse_flag("priced", &v)?,
            "absent" => absent = v,
            "before" => {
                q.before_id = Some(
                    v.parse()
                        .map_err(|_| format!("before `{v}` is not a record id"))?,
                )
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .map_err(|_| format!("limit `{v}` is not a number"))?
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    set_absent(&mut q, &absent)?;
    Ok(q)
}

/// `1`/`true` or `0`/`false`.
pub fn parse_flag(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{name} `{v}` is not 1 or 0")),
    }
}

/// The fields a search's `absent=` names (comma-separated: `tenant`,
/// `team`, `principal`, `server`, `tool`): only records without them (an
/// empty value in [`Query`]). A field both given and absent is refused.
pub fn set_absent(q: &mut Query, list: &str) -> Result<(), String> {
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let field = match name {
            "tenant" => &mut q.tenant,
            "team" => &mut q.team,
            "principal" => &mut q.principal,
            "server" => &mut q.server,
            "tool" => &mut q.tool,
            other => {
                return Err(format!(
                    "absent `{other}` is none of tenant, team, principal, server, tool"
                ))
            }
        };
        if field.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(format!("`{name}` is both given and absent"));
        }
        *field = Some(String::new());
    }
    Ok(())
}

/// `window` (seconds, or a duration such as `5m`) and `gateway` of
/// `/v1/audit/live`.
pub fn parse_live(qs: &str) -> Result<(Duration, Option<String>), String> {
    let mut window = Duration::from_secs(300);
    let mut gateway = None;
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        match k.as_ref() {
            "window" => {
                window = match v.parse::<u64>() {
                    Ok(n) => Duration::from_secs(n),
                    Err(_) => humantime::parse_duration(&v)
                        .map_err(|_| format!("window `{v}` is not seconds or a duration"))?,
                }
            }
            "gateway" if !v.is_empty() => gateway = Some(v.into_owned()),
            "gateway" => {}
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok((window, gateway))
}
