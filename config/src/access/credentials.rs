//! Warden's own credentials for an upstream (`credentials:`), the header
//! an upstream credential goes in, and the fleet secret that seals session
//! ids (`sessions:`).

use std::path::Path;

use crate::error::Problems;
use crate::raw;
use crate::secret::{secret, secret_ref, Secret};

/// Warden's own credential for an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Lower-case header name.
    pub header: String,
    /// Full header value (prefix + secret).
    pub value: Secret,
}

/// Reads the secret an upstream credential names. Secrets never live in the bundle text.
/// The header an upstream credential goes in (`authorization` unless
/// named), lower-cased; a problem at `<base>.header` when it is no header name.
pub(crate) fn outbound_header(raw: Option<&str>, base: &str, p: &mut Problems) -> Option<String> {
    let header = raw.unwrap_or("authorization").to_ascii_lowercase();
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        p.push(format!("{base}.header"), "must be a header name");
        return None;
    }
    // Headers the gateway sets, strips or frames with: a credential there
    // would be dropped or would change how the request is read.
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "expect",
        "accept-encoding",
        "cookie",
        "origin",
        "traceparent",
        "tracestate",
        "proxy-authorization",
    ];
    if RESERVED.contains(&header.as_str())
        || header.starts_with("mcp-")
        || header.starts_with("x-warden-")
    {
        p.push(
            format!("{base}.header"),
            format!("`{header}` is a header the gateway sets or strips itself"),
        );
        return None;
    }
    Some(header)
}

/// Where a credential the gateway fetches per call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultSource {
    /// The calling principal's own connection at `provider`, with at
    /// least `scopes` granted (sorted, unique).
    PerUser {
        provider: String,
        scopes: Vec<String>,
    },
    /// A static secret kept in the vault under `name`.
    Secret { name: String },
}

/// A credential the gateway fetches from the control agent's vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultCredential {
    /// Lower-case header name.
    pub header: String,
    /// Text put before the value (`Bearer ` for `authorization`).
    pub prefix: String,
    pub source: VaultSource,
}

/// A credential's header and prefix (`Bearer ` for `authorization`
/// unless named).
fn header_and_prefix(
    raw: &raw::CredentialsConfig,
    base: &str,
    p: &mut Problems,
) -> Option<(String, String)> {
    let header = outbound_header(raw.header.as_deref(), base, p)?;
    let prefix = raw.prefix.clone().unwrap_or_else(|| {
        if header == "authorization" {
            "Bearer ".into()
        } else {
            String::new()
        }
    });
    if prefix.bytes().any(|b| b < 0x20 || b == 0x7f) {
        p.push(format!("{base}.prefix"), "holds control characters");
        return None;
    }
    Some((header, prefix))
}

/// Whether `raw` names a credential kept in the vault (`vault:` or
/// `per_user:`) rather than one the bundle reads.
pub(crate) fn from_vault(raw: &raw::CredentialsConfig) -> bool {
    raw.vault.is_some() || raw.per_user.is_some()
}

/// An RFC 6749 scope token: printable ASCII without space, `"` or `\`.
fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// A vault name (a secret, a provider): 1–128 of `[A-Za-z0-9._-]`.
pub fn vault_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `credentials: {vault: name}` or `credentials: {per_user: {…}}`.
pub(crate) fn vault_credential(
    raw: &raw::CredentialsConfig,
    base: &str,
    p: &mut Problems,
) -> Option<VaultCredential> {
    if raw.env.is_some() || raw.file.is_some() || (raw.vault.is_some() && raw.per_user.is_some()) {
        p.push(
            base,
            "set exactly one of `env`, `file`, `vault` and `per_user`",
        );
        return None;
    }
    let (header, prefix) = header_and_prefix(raw, base, p)?;
    let source = match (&raw.vault, &raw.per_user) {
        (Some(name), None) => {
            if !vault_name(name) {
                p.push(
                    format!("{base}.vault"),
                    "a vault secret's name is 1-128 of A-Z a-z 0-9 . _ -",
                );
                return None;
            }
            VaultSource::Secret { name: name.clone() }
        }
        (None, Some(u)) => {
            if !vault_name(&u.provider) {
                p.push(
                    format!("{base}.per_user.provider"),
                    "a provider's name is 1-128 of A-Z a-z 0-9 . _ -",
                );
                return None;
            }
            if let Some(bad) = u.scopes.iter().find(|s| !scope_token(s)) {
                p.push(
                    format!("{base}.per_user.scopes"),
                    format!(
                        "`{}` is not an OAuth scope (printable ASCII, no space, quote or backslash)",
                        bad.escape_debug()
                    ),
                );
                return None;
            }
            let mut scopes = u.scopes.clone();
            scopes.sort();
            scopes.dedup();
            VaultSource::PerUser {
                provider: u.provider.clone(),
                scopes,
            }
        }
        _ => return None,
    };
    Some(VaultCredential {
        header,
        prefix,
        source,
    })
}

pub(crate) fn credentials(
    raw: &raw::CredentialsConfig,
    root: &Path,
    base: &str,
    p: &mut Problems,
) -> Option<Credentials> {
    let (header, prefix) = header_and_prefix(raw, base, p)?;
    let secret = secret_ref(raw.env.as_deref(), raw.file.as_deref(), root, base, p)?;
    let secret = secret.expose();
    let value = format!("{prefix}{secret}");
    if value.is_empty() || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        p.push(base, "the secret is empty or holds control characters");
        return None;
    }
    Some(Credentials {
        header,
        value: Secret::new(value),
    })
}

/// The fleet secret that seals session ids (`sessions:`), if configured.
pub(crate) fn session_seal(
    raw: Option<&raw::SessionsConfig>,
    root: &Path,
    p: &mut Problems,
) -> Option<Secret> {
    let r = raw?;
    let v = match (&r.seal_key_env, &r.seal_key_file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => {
                p.push(
                    "sessions.seal_key_env",
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            }
        },
        (None, Some(f)) => match std::fs::read_to_string(root.join(f)) {
            Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => {
                p.push("sessions.seal_key_file", format!("cannot read `{f}`: {e}"));
                return None;
            }
        },
        // Only `max_age`: the install's own key seals.
        (None, None) if r.max_age.is_some() => return None,
        _ => {
            p.push("sessions", "give one of seal_key_env or seal_key_file");
            return None;
        }
    };
    if v.len() < 32 {
        p.push(
            "sessions",
            "the sealing secret must have at least 32 characters",
        );
        return None;
    }
    Some(secret(v))
}
