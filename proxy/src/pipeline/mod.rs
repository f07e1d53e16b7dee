//! The request path, in the order a message travels it: the Pingora phases
//! (`service`), admission from the head, the body judged whole, forwarding to
//! the upstream, the reply judged, the exchange recorded; and the small
//! pieces they share (the request context, headers, answers of the gateway's
//! own, the reply scope, DLP of what travels beside the messages).

pub mod admission;
pub mod answers;
pub mod body;
pub mod conn;
pub mod ctx;
pub mod forwarding;
pub mod guards;
pub mod header_dlp;
pub mod headers;
pub mod judging;
pub mod mirrored;
pub mod recording;
pub mod reply;
pub mod rewrite;
pub mod scope;
pub mod service;
