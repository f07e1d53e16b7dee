//! Who is calling and as whom the gateway calls on: OAuth protected-resource
//! authentication, downstream TLS and mTLS, identity assertions and outbound
//! tokens for upstreams.

pub mod assertion;
pub mod auth;
pub mod outbound;
pub mod tls;
