//! What every request reads and shares: the gateway hub (`state`), the
//! compiled runtime of the current bundle, where bundles come from and how
//! they swap, and the clients of shared services (the Redis quota store, the
//! control agent's approval queue).

pub mod agent_tls;
pub mod agents;
pub mod anomaly_store;
pub mod approval_client;
pub mod bundles;
pub mod freshness;
pub mod grants;
pub mod quota_store;
pub mod runtime;
pub mod source;
pub mod state;
pub mod vault_client;
