//! MCP sessions across replicas: sealed session ids, which replica serves a
//! session, and the ledger of which request each reply answers.

pub mod ledger;
pub mod seal;
pub mod sticky;
