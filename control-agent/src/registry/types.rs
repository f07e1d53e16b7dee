//! The registry's domain types: a server's lifecycle state, its entry
//! (tools, pins, events), and why an operation was refused; serialised as
//! `registry.json` has always held them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Draft,
    Testing,
    Approved,
    Deployed,
    Deprecated,
    Retired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Testing => "testing",
            State::Approved => "approved",
            State::Deployed => "deployed",
            State::Deprecated => "deprecated",
            State::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        // not a name comparison: a lifecycle state, in any case.
        serde_json::from_value(Json::String(s.trim().to_ascii_lowercase())).ok()
    }
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not the actor's to do (403 `forbidden`; recorded as `refused`).
    #[error("{0}")]
    Forbidden(String),
    /// Not from this state (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// An approval names a definition that is no longer the registered
    /// one (409 `definition_changed`): nothing is approved.
    #[error("{0}")]
    Changed(String),
    /// A malformed request (400 `invalid`).
    #[error("{0}")]
    Invalid(String),
    /// (404 `not_found`)
    #[error("{0}")]
    NotFound(String),
}

impl Refusal {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Forbidden(_) => 403,
            Refusal::Conflict(_) | Refusal::Changed(_) => 409,
            Refusal::Invalid(_) => 400,
            Refusal::NotFound(_) => 404,
        }
    }

    /// The machine-readable code the API answers with (`code`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Forbidden(_) => "forbidden",
            Refusal::Conflict(_) => "conflict",
            Refusal::Changed(_) => "definition_changed",
            Refusal::Invalid(_) => "invalid",
            Refusal::NotFound(_) => "not_found",
        }
    }
}

/// One step of a server's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub at: String,
    pub actor: String,
    pub from: Option<State>,
    pub to: State,
    #[serde(default)]
    pub note: String,
}

/// A tool's pins: the fingerprint approved for everyone, and the one under
/// review (testers may use it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pin {
    pub approved: Option<String>,
    pub candidate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    /// `None`: an org server.
    pub tenant: Option<String>,
    pub state: State,
    pub since: String,
    #[serde(default)]
    pub shared: bool,
    /// The `definition_digest` the org reviewer approved for sharing: the
    /// server is offered to every tenant in this definition only (a new
    /// one withdraws the share, see `Registry::register`).
    #[serde(default)]
    pub share_reviewed: Option<String>,
    /// Who asked to offer it to every tenant (waiting for an org reviewer).
    #[serde(default)]
    pub share_requested_by: Option<String>,
    #[serde(default)]
    pub retired_at: Option<String>,
    /// Who registered the definition under review (as recorded), and the
    /// canonical person (compared with the reviewer's).
    pub registered_by: String,
    pub registrant: String,
    pub registered_at: String,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub approved_at: Option<String>,
    /// The tools as last registered.
    pub definition: Vec<Json>,
    pub tools: BTreeMap<String, Pin>,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    pub servers: BTreeMap<String, Server>,
}
