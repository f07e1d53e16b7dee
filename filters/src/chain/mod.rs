//! The filter chain: the seam every guard implements ([`filter::McpFilter`]),
//! what a filter sees and may touch ([`filter::Exchange`],
//! [`filter::Message`]) and what it leaves behind ([`notes::Notes`]); and
//! [`plan`], which judges a whole POST body with the chain and plans what
//! goes upstream. The chain imports no guard: the guards import it.

pub mod filter;
pub mod notes;
pub mod plan;
