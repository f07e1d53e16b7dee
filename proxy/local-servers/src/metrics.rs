//! The local servers' own Prometheus series, registered in the process's
//! default registry beside the gateway's (the admin listener gathers both).

use std::sync::OnceLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

/// Virtual servers' member failures, by server, member and what failed.
#[allow(clippy::expect_used)]
pub fn member_failures() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        register_int_counter_vec!(
            "warden_virtual_member_failures_total",
            "Virtual servers: a member that could not be reached or initialised, by server, member and what failed",
            &["server", "member", "what"]
        )
        .expect("warden_virtual_member_failures_total registers once")
    })
}
