//! Routes (`routes:`): which path prefix (and host) leads to which server.

use std::collections::{HashMap, HashSet};

use crate::error::Problems;
use crate::raw;

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub host: Option<String>,
    pub server: String,
    pub upstream_prefix: String,
}

/// Reads the routes; `server_names` holds every server of the bundle.
pub(super) fn routes(
    raw: &[raw::RouteConfig],
    server_names: &HashMap<String, String>,
    p: &mut Problems,
) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut seen_routes = HashSet::new();
    for (ri, r) in raw.iter().enumerate() {
        let base = format!("routes[{ri}]");
        if !valid_prefix(&r.prefix) {
            p.push(format!("{base}.prefix"), format!("`{}` must start with `/`, have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`", r.prefix));
        }
        // The gateway's own routes (virtual servers' members) live there.
        if gateway_own_prefix(&r.prefix) {
            p.push(
                format!("{base}.prefix"),
                "`/.warden` is the gateway's own (virtual servers reach their members there)",
            );
        }
        let up = r.upstream_prefix.clone().unwrap_or_else(|| "/".to_string());
        if !valid_prefix(&up) {
            p.push(format!("{base}.upstream_prefix"), format!("`{up}` must start with `/` and have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`"));
        }
        if !server_names.contains_key(&r.server) {
            p.push(
                format!("{base}.server"),
                format!("unknown server `{}`", r.server),
            );
        }
        let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
        if !seen_routes.insert((host.clone(), r.prefix.clone())) {
            p.push(
                format!("{base}.prefix"),
                format!(
                    "another route already uses prefix `{}` for this host",
                    r.prefix
                ),
            );
        }
        routes.push(Route {
            prefix: r.prefix.clone(),
            host,
            server: r.server.clone(),
            upstream_prefix: up,
        });
    }
    if raw.is_empty() {
        p.push("routes", "at least one route is needed");
    }
    routes
}

/// Where the gateway's own routes live (virtual servers' member legs).
pub const GATEWAY_PREFIX: &str = "/.warden";

/// Whether a route prefix reaches into [`GATEWAY_PREFIX`] as a peer may
/// read its first segment: in any ASCII case (`/.WARDEN`), with trailing
/// dots (`/.warden.`, which some servers drop), cut at `\` (read as `/`)
/// or at `;` (path parameters). `%` escapes (`/%2ewarden`), `//` and `.`
/// segments are not valid prefixes at all ([`valid_prefix`]), so they
/// never get this far.
pub fn gateway_own_prefix(prefix: &str) -> bool {
    let own = &GATEWAY_PREFIX[1..];
    let Some(rest) = prefix.strip_prefix('/') else {
        return false;
    };
    let first = rest.split(['/', '\\', ';']).next().unwrap_or_default();
    first.trim_end_matches('.').eq_ignore_ascii_case(own)
}

pub(crate) fn valid_prefix(s: &str) -> bool {
    s.starts_with('/')
        && (s == "/" || !s.ends_with('/'))
        && !s.contains("//")
        && !s.split('/').any(|seg| seg == "." || seg == "..")
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(valid_prefix("/"));
        assert!(valid_prefix("/jira"));
        assert!(valid_prefix("/a/b-c"));
        assert!(!valid_prefix("jira"));
        assert!(!valid_prefix("/jira/"));
        assert!(!valid_prefix("/a//b"));
        assert!(!valid_prefix("/a/../b"));
        assert!(!valid_prefix("/a%2e"));
    }

    #[test]
    fn the_gateway_keeps_its_own_prefix_in_every_spelling_a_peer_reads() {
        for own in [
            "/.warden",
            "/.warden/virtual/ws/docs",
            "/.WARDEN/virtual",
            "/.Warden.",
            "/.warden../virtual",
            "/.warden\\virtual",
            "/.warden;x/virtual",
        ] {
            assert!(gateway_own_prefix(own), "{own}");
        }
        for other in ["/", "/warden", "/.wardens", "/finance/.warden", "/x.warden"] {
            assert!(!gateway_own_prefix(other), "{other}");
        }
    }
}
