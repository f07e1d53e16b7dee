//! Why a reply is withheld: the typed cause a reply stage raises, which
//! forwarding maps to the client's answer in one place.

use super::*;

/// Why an upstream reply is withheld. Carried as the cause of the error
/// that stops the reply, and mapped to its answer in one place
/// (`forwarding::refusal_for`), so that no reason can fall through to a
/// generic internal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRefusal {
    ProtocolSwitch,
    DuplicateSessionHeader,
    BadSessionHeader,
    UnsupportedCharset,
    DuplicateContentType,
    SeveralJsonValues,
    BadSse,
    EndpointRefused,
    EndpointOutsidePrefix,
    Compressed,
    TooLarge,
    /// What the reply adds to its flow could not be written to the shared
    /// store: the reply is withheld (another replica would not know).
    FlowUnrecorded,
    /// The reply hands this caller, as new, a task the server handed
    /// another holder first through another replica (the fleet's store
    /// says so): withheld, as one replica withholds it.
    TaskNotOwned,
    /// A new task the reply hands out could not be claimed in the shared
    /// store: withheld (another replica may know it as another's).
    TaskUnrecorded,
    /// A bundle applied while the reply was under way pauses it (the kill
    /// switch): nothing more of it reaches the client.
    Paused,
    /// A bundle applied while the reply was under way withdrew its server
    /// (removed, retired, or no longer released to this principal).
    Withdrawn,
    /// What the client would get outside the judged messages (a header:
    /// a session id, `Vary`; a legacy stream's endpoint) holds the
    /// credential the gateway sent upstream for this call.
    CredentialInReply,
}

impl ReplyRefusal {
    pub const ALL: [ReplyRefusal; 17] = [
        ReplyRefusal::ProtocolSwitch,
        ReplyRefusal::DuplicateSessionHeader,
        ReplyRefusal::BadSessionHeader,
        ReplyRefusal::UnsupportedCharset,
        ReplyRefusal::DuplicateContentType,
        ReplyRefusal::SeveralJsonValues,
        ReplyRefusal::BadSse,
        ReplyRefusal::EndpointRefused,
        ReplyRefusal::EndpointOutsidePrefix,
        ReplyRefusal::Compressed,
        ReplyRefusal::TooLarge,
        ReplyRefusal::FlowUnrecorded,
        ReplyRefusal::TaskNotOwned,
        ReplyRefusal::TaskUnrecorded,
        ReplyRefusal::Paused,
        ReplyRefusal::Withdrawn,
        ReplyRefusal::CredentialInReply,
    ];

    /// The metric label (`warden_upstream_errors_total{kind}`) and the
    /// refusal's reason.
    pub fn code(self) -> &'static str {
        match self {
            ReplyRefusal::ProtocolSwitch => "protocol_switch",
            ReplyRefusal::DuplicateSessionHeader => "duplicate_session_header",
            ReplyRefusal::BadSessionHeader => "bad_session_header",
            ReplyRefusal::UnsupportedCharset => "unsupported_charset",
            ReplyRefusal::DuplicateContentType => "duplicate_content_type",
            ReplyRefusal::SeveralJsonValues => "several_json_values",
            ReplyRefusal::BadSse => "bad_sse",
            ReplyRefusal::EndpointRefused => "endpoint_refused",
            ReplyRefusal::EndpointOutsidePrefix => "endpoint_outside_prefix",
            ReplyRefusal::Compressed => "compressed_response",
            ReplyRefusal::TooLarge => "response_too_large",
            ReplyRefusal::FlowUnrecorded => "flow_unrecorded",
            ReplyRefusal::TaskNotOwned => "task_not_owned",
            ReplyRefusal::TaskUnrecorded => "task_unrecorded",
            ReplyRefusal::Paused => "paused_mid_reply",
            ReplyRefusal::Withdrawn => "server_withdrawn_mid_reply",
            ReplyRefusal::CredentialInReply => "credential_in_reply",
        }
    }

    /// The error that stops the reply (counted once, here).
    pub fn raise<T>(self, server: &str, why: impl Into<String>) -> Result<T> {
        metrics()
            .upstream_errors
            .with_label_values(&[server, self.code()])
            .inc();
        Err(Error::because(
            ErrorType::Custom(self.code()),
            why.into(),
            self,
        ))
    }

    /// The refusal carried by `e`, however deep Pingora wrapped it.
    pub fn of(e: &Error) -> Option<ReplyRefusal> {
        e.root_cause().downcast_ref::<ReplyRefusal>().copied()
    }
}

impl std::fmt::Display for ReplyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for ReplyRefusal {}

/// Refuses an upstream reply the gateway cannot pass on (502, -31003).
pub(super) fn refuse_reply(server: &str, reason: ReplyRefusal) -> Result<()> {
    reason.raise(
        server,
        "the upstream reply is not one the gateway can judge",
    )
}
