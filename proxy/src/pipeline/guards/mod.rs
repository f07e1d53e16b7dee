//! The fleet-wide halves of the guards that share state across replicas,
//! each in a file named as the guard's own in `warden_filters::guards`,
//! where its local half decides: what the shared store or the control
//! agent says, asked before the chain runs (and, for a stream, at
//! admission). The chain itself does no I/O.

pub mod anomaly;
pub mod approval;
pub mod budget;
pub mod flow;
pub mod quota;
pub mod task_binding;
