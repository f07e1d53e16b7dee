//! The process around the pipeline: the Pingora server assembled from a
//! bundle, the admin listener, and the offline commands
//! (`warden init`, `warden policy …`, `warden top`).

pub mod admin;
pub mod cli;
pub mod handover;
pub mod init;
pub mod server;
pub mod top;
