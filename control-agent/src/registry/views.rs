//! What the API reads of the registry, as typed views: each serialises
//! (through `serde_json::Value`, whose keys are sorted) to the JSON the
//! agent has always answered.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Pin, Registry, Server, State};
use crate::admins::Actor;

/// One server with its events, tools and definition
/// (`GET /v1/registry/<server>`).
#[derive(Debug, Clone, Serialize)]
pub struct RegistryEntry {
    pub server: String,
    /// See [`Server::definition_digest`].
    pub definition_digest: String,
    #[serde(flatten)]
    pub entry: Server,
}

impl RegistryEntry {
    pub fn of(name: &str, s: &Server) -> RegistryEntry {
        RegistryEntry {
            server: name.to_owned(),
            definition_digest: s.definition_digest(),
            entry: s.clone(),
        }
    }
}

/// One server without its definition and events (`GET /v1/registry`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub server: String,
    pub tenant: Option<String>,
    pub state: State,
    pub since: String,
    pub shared: bool,
    pub share_reviewed: Option<String>,
    pub share_requested_by: Option<String>,
    pub retired_at: Option<String>,
    pub tools: BTreeMap<String, Pin>,
}

impl ServerSummary {
    pub fn of(name: &str, s: &Server) -> ServerSummary {
        ServerSummary {
            server: name.to_owned(),
            tenant: s.tenant.clone(),
            state: s.state,
            since: s.since.clone(),
            shared: s.shared,
            share_reviewed: s.share_reviewed.clone(),
            share_requested_by: s.share_requested_by.clone(),
            retired_at: s.retired_at.clone(),
            tools: s.tools.clone(),
        }
    }
}

impl Registry {
    /// The servers `actor` may read, without their definitions and events.
    pub fn summary_view(&self, actor: &Actor) -> Vec<ServerSummary> {
        self.servers
            .iter()
            .filter(|(_, s)| Self::readable(actor, s))
            .map(|(n, s)| ServerSummary::of(n, s))
            .collect()
    }
}
