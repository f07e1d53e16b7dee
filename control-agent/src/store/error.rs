//! Why the store refused a gateway's report or a read of a revision: each
//! with the HTTP status the API answers it with, and the text it always
//! answered.

use crate::rollout::InputError;

use super::types::{MAX_REPORTED_REVISION, MAX_REPORTED_UPSTREAMS};
use super::MAX_FLEET;

/// Why a gateway's report was refused (422, as the API answers).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("a revision is at most {MAX_REPORTED_REVISION} bytes, without control characters")]
    Revision,
    #[error("a gateway id is 1-128 visible ASCII characters")]
    Id,
    #[error("an instance id is 1-64 letters, digits, - or _")]
    Instance,
    /// Its labels or its counters.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(
        "upstreams: at most {MAX_REPORTED_UPSTREAMS}, each named (1-256 bytes) with healthy <= replicas"
    )]
    Upstreams,
    /// A new gateway while the fleet table is full.
    #[error("the fleet table holds {MAX_FLEET} gateways")]
    FleetFull,
    /// The shared database could not keep it: the gateway should take
    /// its report to another agent, where it counts (the canary judge
    /// and every agent's fleet view read the database, not this agent's
    /// memory).
    #[error(transparent)]
    Unavailable(#[from] super::Unavailable),
}

impl ReportError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ReportError::Unavailable(_) => 503,
            _ => 422,
        }
    }
}

/// Why the files of an org revision or a tenant's layer revision could not
/// be read (404, as the API and the console answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// Not in the history: `pruned` when its number is below the newest
    /// one's (numbers run without gaps).
    #[error("{}", if *pruned {
        format!("no such revision (pruned): `{revision}` is older than the org revisions the agent keeps")
    } else {
        format!("no revision `{revision}` in the history")
    })]
    NoRevision { revision: String, pruned: bool },
    /// Not a tenant name.
    #[error("{0}")]
    Tenant(String),
    #[error("tenant `{tenant}` has no layer revision `{revision}`")]
    NoLayerRevision { tenant: String, revision: String },
    /// Kept, but its files could not be read.
    #[error("{revision}: {why}")]
    Unreadable { revision: String, why: String },
    /// A layer revision kept whose files could not be read.
    #[error("{0}")]
    LayerUnreadable(String),
}

impl RevisionError {
    /// The HTTP status the API answers with (404 for every one today).
    pub fn status(&self) -> u16 {
        404
    }
}
