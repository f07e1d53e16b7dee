//! The front door: listeners (address, TLS, client certificates), the admin
//! address, and the `security:` checks on incoming requests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::Problems;
use crate::raw;

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub tls: Option<ListenerTls>,
    pub h2c: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake without a valid client certificate.
    pub client_auth_required: bool,
}

/// What happens to an `Mcp-Param-*` header that mirrors no declared argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UndeclaredParams {
    /// DLP-scanned like an argument; a finding refuses the request (400).
    #[default]
    Scan,
    /// Removed before the request goes upstream.
    Strip,
}

pub(super) fn listeners(
    raw: &[raw::ListenerConfig],
    root: &Path,
    p: &mut Problems,
) -> Vec<Listener> {
    let mut listeners = Vec::new();
    let mut listener_names = HashSet::new();
    for (i, l) in raw.iter().enumerate() {
        let base = format!("listeners[{i}]");
        if !listener_names.insert(l.name.clone()) {
            p.push(
                format!("{base}.name"),
                format!("duplicate listener name `{}`", l.name),
            );
        }
        if l.address.parse::<SocketAddr>().is_err() {
            p.push(
                format!("{base}.address"),
                format!("`{}` is not an ip:port address", l.address),
            );
        }
        let tls = l.tls.as_ref().map(|t| {
            let cert = root.join(&t.cert);
            let key = root.join(&t.key);
            if !cert.is_file() {
                p.push(
                    format!("{base}.tls.cert"),
                    format!("file `{}` not found in the bundle", t.cert),
                );
            }
            if !key.is_file() {
                p.push(
                    format!("{base}.tls.key"),
                    format!("file `{}` not found in the bundle", t.key),
                );
            }
            let client_ca = t.client_ca.as_ref().map(|c| {
                let f = root.join(c);
                if !f.is_file() {
                    p.push(
                        format!("{base}.tls.client_ca"),
                        format!("file `{c}` not found in the bundle"),
                    );
                }
                f
            });
            let client_auth_required = match t.client_auth.as_deref() {
                None | Some("optional") => false,
                Some("required") => true,
                Some(o) => {
                    p.push(
                        format!("{base}.tls.client_auth"),
                        format!("`{o}` is not `optional` or `required`"),
                    );
                    false
                }
            };
            if t.client_auth.is_some() && client_ca.is_none() {
                p.push(format!("{base}.tls.client_auth"), "needs `client_ca`");
            }
            ListenerTls {
                cert,
                key,
                client_ca,
                client_auth_required,
            }
        });
        listeners.push(Listener {
            name: l.name.clone(),
            address: l.address.clone(),
            tls,
            h2c: l.h2c.unwrap_or(true),
        });
    }
    listeners
}

pub(super) fn admin(raw: Option<&raw::AdminConfig>, p: &mut Problems) -> Option<String> {
    raw.map(|a| {
        if a.address.parse::<SocketAddr>().is_err() {
            p.push(
                "admin.address",
                format!("`{}` is not an ip:port address", a.address),
            );
        }
        a.address.clone()
    })
}

pub(super) fn allowed_hosts(raw: &raw::SecurityConfig, p: &mut Problems) -> HashSet<String> {
    let mut allowed_hosts = HashSet::new();
    for (i, h) in raw.allowed_hosts.iter().enumerate() {
        let name = h.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['/', ':', ' ']) && !name.starts_with('[') {
            p.push(
                format!("security.allowed_hosts[{i}]"),
                "a host name or address without scheme, port or path",
            );
        } else {
            allowed_hosts.insert(name);
        }
    }
    allowed_hosts
}

pub(super) fn undeclared_params(raw: &raw::SecurityConfig, p: &mut Problems) -> UndeclaredParams {
    match raw.undeclared_param_headers.as_deref() {
        None | Some("scan") => UndeclaredParams::Scan,
        Some("strip") => UndeclaredParams::Strip,
        Some(other) => {
            p.push(
                "security.undeclared_param_headers",
                format!("`{other}` is not one of scan, strip"),
            );
            UndeclaredParams::Scan
        }
    }
}
