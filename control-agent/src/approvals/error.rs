//! Why an approver's answer or a gateway's claim was refused, with the
//! HTTP status the API answers it with (503 when the approvals' database
//! is unavailable: [`Unavailable`]).

use super::{MAX_PENDING, MAX_PENDING_PER_PRINCIPAL, MAX_SHOWN_ARGS};

/// Why an approver's answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("no such approval")]
    NotFound,
    #[error("the approval could not be recorded; try again")]
    Unrecorded,
    #[error("approvers may not approve their own calls (nor a caller whose name cannot be told from theirs)")]
    SelfApproval,
    #[error("this approval is {0} and can no longer be decided")]
    Finished(&'static str),
    #[error("{0} already approved this call; another approver is needed")]
    Already(String),
    #[error("this call is held by the rules of a tenant you do not approve for")]
    NotTheirs,
    #[error("{0}")]
    Unavailable(Unavailable),
}

impl Refused {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Refused::NotFound => 404,
            Refused::SelfApproval | Refused::NotTheirs => 403,
            Refused::Unrecorded | Refused::Finished(_) | Refused::Already(_) => 409,
            Refused::Unavailable(_) => 503,
        }
    }
}

/// Why a claim was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimRefused {
    #[error("the binding's parts are malformed: {0}")]
    Malformed(&'static str),
    #[error("this principal already has {MAX_PENDING_PER_PRINCIPAL} approvals waiting")]
    TooMany,
    #[error("{MAX_PENDING} approvals are waiting; no more are taken until some are answered")]
    Full,
    #[error("the arguments do not match their digest")]
    DigestMismatch,
    #[error("the arguments are {0} bytes: approvers must see them whole, and at most {MAX_SHOWN_ARGS} can be shown")]
    TooLarge(usize),
    #[error("the approval could not be recorded: {0}")]
    Unrecorded(String),
    #[error("signing the grant failed: {0}")]
    Signing(String),
    #[error("{0}")]
    Unavailable(Unavailable),
}

impl ClaimRefused {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ClaimRefused::TooMany | ClaimRefused::Full => 429,
            ClaimRefused::Malformed(_)
            | ClaimRefused::DigestMismatch
            | ClaimRefused::TooLarge(_) => 400,
            ClaimRefused::Unrecorded(_) | ClaimRefused::Signing(_) => 500,
            ClaimRefused::Unavailable(_) => 503,
        }
    }
}

/// The approvals could not take their turn on the database they share
/// with other agents, bring their memory up to date, or keep the change
/// (the database unreachable, or a row unreadable): nothing changed, and
/// the caller may try again (on this agent or another).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the approvals are unavailable, nothing changed: {0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    pub(super) fn of(e: impl std::fmt::Display) -> Unavailable {
        Unavailable(e.to_string())
    }
}

impl From<Unavailable> for Refused {
    fn from(e: Unavailable) -> Refused {
        Refused::Unavailable(e)
    }
}

impl From<Unavailable> for ClaimRefused {
    fn from(e: Unavailable) -> ClaimRefused {
        ClaimRefused::Unavailable(e)
    }
}
