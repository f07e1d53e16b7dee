//! The kill switch composed over a bundle's servers: a paused server is
//! paused under every name that reaches what it reaches. Here, beside the
//! servers it reads, so that `access` (the switch's settings) never
//! reads the model.

use std::collections::HashSet;

use crate::access::named;
use crate::access::KillSwitch;
use crate::host::{place, Place};
use crate::names::Name;

use super::Server;

/// What a server reaches, for telling whether a renamed server is a paused
/// one: each upstream's place, or the process a stdio server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Place(Place),
    Process(String, Vec<String>),
}

fn reaches(s: &Server) -> Vec<Reach> {
    let mut out: Vec<Reach> = s
        .upstreams
        .iter()
        .map(|a| Reach::Place(place(*a)))
        .collect();
    if let Some(p) = &s.stdio {
        out.push(Reach::Process(p.command.clone(), p.args.clone()));
    }
    out
}

impl KillSwitch {
    /// Pauses, in a composed bundle (`servers`: the org's and every
    /// layer's), every server that is a paused one under another name: one
    /// whose name is a paused name in the one form ([`crate::names`]), or
    /// that reaches what a paused server reaches — an upstream at the same
    /// place (an IPv4-mapped address is its IPv4 address; loopback, an
    /// unspecified address, `localhost` and this host's own addresses are
    /// one host; at the same port), whatever `Host`, TLS name or path it
    /// is reached with, or the same stdio process — or an address the
    /// paused server was reached at when it was paused
    /// (`kill_switch.upstreams`). A `server/tool` pause follows its server
    /// the same way. What the org pauses is a server, wherever a layer
    /// points at it again; a pause is only ever broader than its words.
    pub fn compose(&mut self, servers: &[Server]) {
        let reach_of = |names: &dyn Fn(&str) -> bool| -> Vec<Reach> {
            servers
                .iter()
                .filter(|s| names(&s.name))
                .flat_map(reaches)
                .collect()
        };
        let meets = |s: &Server, paused: &[Reach]| reaches(s).iter().any(|r| paused.contains(r));
        let mut paused = reach_of(&|n| named(&self.servers, Name::Server, n));
        paused.extend(self.upstreams.iter().copied().map(Reach::Place));
        let more: Vec<String> = servers
            .iter()
            .filter(|s| named(&self.servers, Name::Server, &s.name) || meets(s, &paused))
            .map(|s| s.name.clone())
            .collect();
        self.servers.extend(more);
        let mut pairs = Vec::new();
        for (server, tool) in &self.server_tools {
            let one: HashSet<String> = [server.clone()].into();
            let there = reach_of(&|n| named(&one, Name::Server, n));
            for s in servers {
                if named(&one, Name::Server, &s.name) || meets(s, &there) {
                    pairs.push((s.name.clone(), tool.clone()));
                }
            }
        }
        self.server_tools.extend(pairs);
    }
}
