//! `flows:`: data classification and information flow (read into
//! `crate::flows`), and the labels the catalog gives servers, tools and
//! resources.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsConfig {
    /// Classification levels, lowest first (default `public, internal,
    /// confidential, restricted`).
    #[serde(default)]
    pub levels: Option<Vec<String>>,
    /// `session` (default: each MCP session has its own state; a call
    /// without a session is tracked per principal) or `principal` (one
    /// state per principal: a new session starts where the last left off).
    #[serde(default)]
    pub track: Option<String>,
    /// The clearance of a principal whose `clearance` attribute is absent
    /// (default: the second level, `internal`).
    #[serde(default)]
    pub default_clearance: Option<String>,
    /// The level a result with a DLP finding has at least (default
    /// `confidential`).
    #[serde(default)]
    pub dlp_level: Option<String>,
    /// The flow roles of a tool the catalog gives none (default
    /// `[untrusted]`; a tool with URL arguments or an egress allowance is a
    /// sink too).
    #[serde(default)]
    pub unlabelled: Option<Vec<String>>,
    /// `gateway` (default: the gateway refuses a flow its rules forbid) or
    /// `policy` (the Rego policy decides, reading `input.flow`).
    #[serde(default)]
    pub decide: Option<String>,
    /// `deny` (default) or `approval`: a forbidden flow is held until a
    /// human approves that call.
    #[serde(default)]
    pub on_violation: Option<String>,
    /// Approvers a held flow needs (default 1).
    #[serde(default)]
    pub approvers: Option<u8>,
}

/// A classification and flow roles, as the catalog gives them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLabelConfig {
    /// A resource URI pattern (`*` matches any run of characters).
    pub uri: String,
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    pub flow: Option<Vec<String>>,
}
