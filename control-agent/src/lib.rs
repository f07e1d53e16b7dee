//! The Warden control agent: builds bundles from a source directory,
//! validates them with the gateway's own `Snapshot::build`, signs them,
//! serves them with ETag and long-poll, keeps history for rollback, runs the
//! kill switch and shows the fleet. It talks to gateways over HTTP only.

pub mod admins;
pub mod api;
pub mod approvals;
pub mod audit;
pub mod build;
pub mod caller;
pub mod cli;
pub mod connect;
pub mod console;
pub mod jobs;
pub mod notify;
pub mod oidc;
pub mod pg;
pub mod registry;
pub mod rollout;
pub mod server;
pub mod store;
pub mod vault;

#[cfg(test)]
mod route_matrix_tests;

/// Cuts `t` to at most `max` bytes on a character boundary, marking the
/// cut with ` …(cut)`: how text a peer sends is kept in a bounded table.
pub(crate) fn cut_bytes(t: &mut String, max: usize) {
    if t.len() > max {
        let mut end = max;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push_str(" …(cut)");
    }
}
