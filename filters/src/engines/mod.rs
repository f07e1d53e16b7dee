//! The engines guards are built on, each usable (and testable) without the
//! chain: the Rego policy engine, the DLP scanner, authentication (API keys,
//! JWT, mTLS → a `Principal`) and the sealed tokens the gateway hands out.

pub mod anomaly;
pub mod budget;
pub mod dlp;
pub mod flow;
pub mod grants;
pub mod identity;
pub mod policy;
pub mod token;
