//! `DenialStyle`: how a refusal is answered (`policy.denial`,
//! `schemas.invalid_arguments`). A leaf: access and guards both read it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialStyle {
    /// A `tools/call` denial is an `isError: true` tool result.
    ToolError,
    /// Every denial is a JSON-RPC error.
    Error,
}
