//! The audit trail: hash chain, tamper detection, rotation, exactly one record
//! per decided message, and the fail-closed / fail-open modes.
