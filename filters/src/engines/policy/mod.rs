//! Rego policy, compiled once per bundle with regorus, behind a decision cache.
//!
//! The cache is sound by construction: the bundle's Rego text is read to find
//! every `input` path it can reach (a path reached through a dynamic index,
//! an alias or a bare `input` widens to the whole subtree), and the cache key
//! holds the value of each such path — exactly, not a hash. A policy that
//! calls a builtin whose result is not a function of its input (`time.now_ns`,
//! `rand.intn`, `http.send` …) is never cached. Each snapshot has its own
//! cache, so a key never crosses bundle revisions.
//!
//! Where things are: the Rego text analysis (which `input` paths a policy
//! reads) in `analysis.rs`; the input document in `input.rs`, its clock in
//! `clock.rs`; the cache key in `cache_key.rs`; the engine (compile,
//! evaluate, cache) in `engine.rs`; a Rego value read as a decision in
//! `decision.rs`; what the modules declare and whether every call and
//! `data.` reference resolves (checked at build) in `resolve.rs`; compile
//! diagnostics in `diagnostics.rs`.

mod analysis;
mod cache_key;
mod clock;
mod decision;
mod diagnostics;
mod engine;
mod input;
mod resolve;

#[cfg(test)]
mod tests;

pub use analysis::{
    argument_paths, argument_reads, key_plan, near_named_argument, near_named_read,
    string_literals, ArgumentReads, KeyPlan,
};
pub use clock::{Clock, Moment};
pub use decision::{ApprovalAsk, PolicyDecision};
pub use engine::{PolicyCompileError, PolicyEngine};
pub use input::{input_value, PolicyInput};
