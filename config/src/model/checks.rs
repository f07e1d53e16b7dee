//! Checks across sections, run once every section is read: rules that name
//! a virtual server's aliases, upstreams outside the egress allowlist,
//! caller-token audiences, and mTLS identities without a listener asking
//! for certificates.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::access::{Identity, KillSwitch, ServerCatalog};
use crate::error::Problems;
use crate::guards::{Egress, Quota};
use crate::raw;

use super::listeners::Listener;
use super::servers::Server;

/// A virtual server's calls are judged as its members' (their own
/// names and tools); rules for it are written for the members: an
/// alias names nothing a guard sees.
pub(super) fn virtual_aliases(
    servers: &[Server],
    quotas: &[Quota],
    kill_switch: &KillSwitch,
    catalog: &HashMap<String, ServerCatalog>,
    p: &mut Problems,
) {
    let aliases: HashSet<&str> = servers
        .iter()
        .filter_map(|s| s.composed.as_ref())
        .flat_map(|v| v.members.iter())
        .flat_map(|m| m.tools.values().filter_map(|t| t.alias.as_deref()))
        .collect();
    for (qi, q) in quotas.iter().enumerate() {
        for t in q.tools.iter().filter(|t| aliases.contains(t.as_str())) {
            p.push(
                format!("quotas[{qi}].tools"),
                format!("`{t}` is a virtual server's alias: name the member's own tool"),
            );
        }
    }
    for t in kill_switch
        .tools
        .iter()
        .filter(|t| aliases.contains(t.as_str()))
    {
        p.push(
            "kill_switch.tools",
            format!("`{t}` is a virtual server's alias: name the member's own tool"),
        );
    }
    for s in servers.iter().filter(|s| s.composed.is_some()) {
        if catalog.contains_key(&s.name) {
            p.push(
                format!("catalog.{}", s.name),
                "is a virtual server: list the tools under each member server (calls are judged as the member's)",
            );
        }
        if kill_switch
            .server_tools
            .iter()
            .any(|(srv, _)| *srv == s.name)
        {
            p.push(
                "kill_switch.tools",
                format!("`{}/…` names a virtual server: pause `<member>/<tool>` (the member's own tool name), or the whole `{}` in kill_switch.servers", s.name, s.name),
            );
        }
    }
}

/// A route can only reach addresses the bundle allows.
pub(super) fn upstreams_in_egress(
    groups: &[raw::ServiceGroupConfig],
    egress: &Egress,
    p: &mut Problems,
) {
    for (gi, g) in groups.iter().enumerate() {
        for (si, s) in g.servers.iter().enumerate() {
            for (ui, u) in s.upstreams.iter().enumerate() {
                if let Ok(a) = u.parse::<SocketAddr>() {
                    if !egress.upstream_allowed(a) {
                        p.push(
                            format!("service_groups[{gi}].servers[{si}].upstreams[{ui}]"),
                            format!("`{a}` is outside egress.upstreams"),
                        );
                    }
                }
            }
        }
    }
}

/// A caller token goes on only to the one server it names, and a
/// token naming the gateway alone never goes on.
pub(super) fn caller_tokens(identity: Option<&Identity>, servers: &[Server], p: &mut Problems) {
    let gateway_auds: Vec<&str> = identity
        .map(|i| {
            let mut v = vec![i.resource.as_str()];
            if let Some(j) = &i.jwt {
                v.extend(j.audiences.iter().map(String::as_str));
            }
            v
        })
        .unwrap_or_default();
    for (i, s) in servers.iter().enumerate() {
        let Some(c) = &s.caller_token else { continue };
        if gateway_auds.contains(&c.audience.as_str()) {
            p.push(
                format!("servers.{}.caller_token.audience", s.name),
                "names the gateway itself: every caller's token would go on to this server",
            );
        }
        if let Some(o) = servers[..i].iter().find(|o| {
            o.caller_token
                .as_ref()
                .is_some_and(|oc| oc.audience == c.audience)
        }) {
            p.push(
                format!("servers.{}.caller_token.audience", s.name),
                format!(
                    "`{}` has the same audience: a token for one would reach both",
                    o.name
                ),
            );
        }
    }
}

/// Identities by client certificate need a listener that asks for one.
pub(super) fn mtls_listener(identity: Option<&Identity>, listeners: &[Listener], p: &mut Problems) {
    let has_mtls_listener = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
    if identity.is_some_and(|i| !i.mtls.is_empty()) && !has_mtls_listener {
        p.push(
            "identity.mtls",
            "no listener asks for client certificates (set `tls.client_ca` on one)",
        );
    }
}
