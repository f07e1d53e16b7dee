//! Who may call: principals, API keys, JWT verification and mTLS rules,
//! validated from `identity:`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Problems;
use crate::fields::parse_duration;
use crate::raw;

/// Who a credential stands for, as written in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalSpec {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub kind: PrincipalKind,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    Agent,
    User,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Agent => "agent",
            PrincipalKind::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(PrincipalKind::Agent),
            "user" => Some(PrincipalKind::User),
            _ => None,
        }
    }
}

/// An API key as the bundle stores it: never the key, only a salted digest.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub principal: PrincipalSpec,
    pub salt: Vec<u8>,
    /// SHA-256 of `salt ‖ key`.
    pub digest: [u8; 32],
    /// The tenant whose layer minted the key; `None`: the org's. The
    /// gateway keeps such a principal apart from the org's and from a
    /// token's subject of the same tenant and id (its own auth method,
    /// its own owner key), which the org alone vouches for.
    pub layer: Option<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("principal", &self.principal.id)
            .finish_non_exhaustive()
    }
}

/// Where JWT verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// The file's contents, read when the bundle was loaded.
    File { path: PathBuf, json: String },
    /// Fetched in the background and refreshed.
    Url { url: String, refresh: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks: JwksSource,
    pub clock_skew: Duration,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub kind_claim: Option<String>,
    pub attribute_claims: Vec<String>,
    /// Accepted clients (`client_id`/`azp`): exact ids or `https://host/` prefixes.
    pub allowed_clients: Vec<String>,
    /// A granted scope implies these narrower ones.
    pub scope_implies: std::collections::BTreeMap<String, Vec<String>>,
}

/// What part of a client certificate a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMatch {
    SpiffeId(String),
    Dns(String),
    SubjectCn(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsRule {
    pub matches: CertMatch,
    pub principal: PrincipalSpec,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub required_scopes: Vec<String>,
    pub allow_anonymous: bool,
    /// Lower-case header name.
    pub api_key_header: String,
    pub api_keys: Vec<ApiKey>,
    pub jwt: Option<Jwt>,
    pub mtls: Vec<MtlsRule>,
}

/// The principal fields shared by API-key and certificate entries.
struct Fields<'a> {
    id: &'a str,
    tenant: &'a str,
    roles: &'a [String],
    kind: Option<&'a str>,
    attributes: &'a BTreeMap<String, String>,
}

fn principal(
    p: &mut Problems,
    base: &str,
    f: Fields<'_>,
    default_kind: PrincipalKind,
) -> PrincipalSpec {
    let Fields {
        id,
        tenant,
        roles,
        kind,
        attributes,
    } = f;
    if id.is_empty() {
        p.push(format!("{base}.id"), "must not be empty");
    }
    if tenant.is_empty() {
        p.push(format!("{base}.tenant"), "must not be empty");
    }
    let kind = match kind {
        None => default_kind,
        Some(k) => PrincipalKind::parse(k).unwrap_or_else(|| {
            p.push(
                format!("{base}.kind"),
                format!("`{k}` is not a principal kind (agent or user)"),
            );
            default_kind
        }),
    };
    PrincipalSpec {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        roles: roles.to_vec(),
        kind,
        attributes: attributes.clone(),
    }
}

/// Parses `sha256:<salt hex>:<digest hex>`.
pub fn parse_key_hash(s: &str) -> Result<(Vec<u8>, [u8; 32]), String> {
    let mut it = s.splitn(3, ':');
    let (Some("sha256"), Some(salt), Some(digest)) = (it.next(), it.next(), it.next()) else {
        return Err(
            "must look like `sha256:<salt hex>:<digest hex>` (see `warden apikey hash`)".into(),
        );
    };
    let salt = hex::decode(salt).map_err(|_| "salt is not hex".to_string())?;
    if salt.len() < 8 {
        return Err("salt must be at least 8 bytes".into());
    }
    let d = hex::decode(digest).map_err(|_| "digest is not hex".to_string())?;
    let digest: [u8; 32] = d
        .try_into()
        .map_err(|_| "digest must be 32 bytes (64 hex digits)".to_string())?;
    Ok((salt, digest))
}

/// The stored form of an API key: `sha256:<salt hex>:<hex of sha256(salt ‖ key)>`.
pub fn hash_api_key(key: &str, salt: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt);
    h.update(key.as_bytes());
    format!("sha256:{}:{}", hex::encode(salt), hex::encode(h.finalize()))
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

pub(crate) fn identity(raw: &raw::IdentityConfig, root: &Path, p: &mut Problems) -> Identity {
    if !is_http_url(&raw.resource) {
        p.push(
            "identity.resource",
            "must be the absolute http(s) URI clients use for this gateway",
        );
    }
    let mut api_keys = Vec::new();
    let mut ids = HashSet::new();
    for (i, k) in raw.api_keys.iter().enumerate() {
        let base = format!("identity.api_keys[{i}]");
        let spec = principal(
            p,
            &base,
            Fields {
                id: &k.id,
                tenant: &k.tenant,
                roles: &k.roles,
                kind: k.kind.as_deref(),
                attributes: &k.attributes,
            },
            PrincipalKind::Agent,
        );
        if !ids.insert(k.id.clone()) {
            p.push(format!("{base}.id"), format!("duplicate key id `{}`", k.id));
        }
        match parse_key_hash(&k.hash) {
            Ok((salt, digest)) => api_keys.push(ApiKey {
                principal: spec,
                salt,
                digest,
                layer: None,
            }),
            Err(e) => p.push(format!("{base}.hash"), e),
        }
    }
    let jwt = raw.jwt.as_ref().map(|j| {
        let base = "identity.jwt";
        let jwks = match (&j.jwks_file, &j.jwks_url) {
            (Some(f), None) => {
                let path = root.join(f);
                match std::fs::read_to_string(&path) {
                    Ok(json) => JwksSource::File { path, json },
                    Err(e) => {
                        p.push(
                            format!("{base}.jwks_file"),
                            format!("cannot read `{f}`: {e}"),
                        );
                        JwksSource::File {
                            path,
                            json: String::new(),
                        }
                    }
                }
            }
            (None, Some(u)) => {
                if !is_http_url(u) {
                    p.push(format!("{base}.jwks_url"), "must be an http(s) URL");
                }
                let refresh = match &j.jwks_refresh {
                    None => Duration::from_secs(300),
                    Some(s) => parse_duration(s).unwrap_or_else(|e| {
                        p.push(format!("{base}.jwks_refresh"), e);
                        Duration::from_secs(300)
                    }),
                };
                JwksSource::Url {
                    url: u.clone(),
                    refresh: refresh.max(Duration::from_secs(1)),
                }
            }
            _ => {
                p.push(base, "set exactly one of `jwks_file` and `jwks_url`");
                JwksSource::File {
                    path: PathBuf::new(),
                    json: String::new(),
                }
            }
        };
        let algorithms = if j.algorithms.is_empty() {
            vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
        } else {
            j.algorithms.clone()
        };
        for (i, a) in algorithms.iter().enumerate() {
            if !matches!(
                a.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                p.push(
                    format!("{base}.algorithms[{i}]"),
                    format!("`{a}` is not an accepted asymmetric algorithm"),
                );
            }
        }
        let clock_skew = match &j.clock_skew {
            None => Duration::from_secs(30),
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                p.push(format!("{base}.clock_skew"), e);
                Duration::from_secs(30)
            }),
        };
        if clock_skew > Duration::from_secs(300) {
            p.push(format!("{base}.clock_skew"), "must be at most 5m");
        }
        if j.issuer.is_empty() {
            p.push(format!("{base}.issuer"), "must not be empty");
        }
        for (i, c) in j.allowed_clients.iter().enumerate() {
            // A Client ID Metadata Document id is an https URL with a path.
            if c.is_empty() || (c.contains("://") && !c.starts_with("https://")) {
                p.push(
                    format!("{base}.allowed_clients[{i}]"),
                    "must be a client id, or an `https://` URL (prefix)",
                );
            }
        }
        Jwt {
            issuer: j.issuer.clone(),
            audiences: if j.audiences.is_empty() {
                vec![raw.resource.clone()]
            } else {
                j.audiences.clone()
            },
            algorithms,
            jwks,
            clock_skew,
            tenant_claim: j.tenant_claim.clone().unwrap_or_else(|| "tenant".into()),
            roles_claim: j.roles_claim.clone().unwrap_or_else(|| "roles".into()),
            kind_claim: j.kind_claim.clone(),
            attribute_claims: j.attribute_claims.clone(),
            allowed_clients: j.allowed_clients.clone(),
            scope_implies: j.scope_implies.clone(),
        }
    });
    let mut mtls = Vec::new();
    for (i, m) in raw.mtls.iter().enumerate() {
        let base = format!("identity.mtls[{i}]");
        let spec = principal(
            p,
            &base,
            Fields {
                id: &m.id,
                tenant: &m.tenant,
                roles: &m.roles,
                kind: m.kind.as_deref(),
                attributes: &m.attributes,
            },
            PrincipalKind::Agent,
        );
        let matches = match (&m.spiffe_id, &m.dns, &m.subject_cn) {
            (Some(s), None, None) => {
                if !s.starts_with("spiffe://") {
                    p.push(format!("{base}.spiffe_id"), "must start with `spiffe://`");
                }
                CertMatch::SpiffeId(s.clone())
            }
            (None, Some(d), None) => CertMatch::Dns(d.to_ascii_lowercase()),
            (None, None, Some(c)) => CertMatch::SubjectCn(c.clone()),
            _ => {
                p.push(
                    base,
                    "set exactly one of `spiffe_id`, `dns` and `subject_cn`",
                );
                continue;
            }
        };
        mtls.push(MtlsRule {
            matches,
            principal: spec,
        });
    }
    // One identity per person: two spellings of one person (`alice` and
    // `ALICE`, `ölaf` and `ÖLAF`) would be one person to approvers and
    // quotas and two to the policy.
    let mut people: std::collections::HashMap<String, (String, String, String)> =
        std::collections::HashMap::new();
    let specs = api_keys
        .iter()
        .map(|k| &k.principal)
        .enumerate()
        .map(|(i, s)| (format!("identity.api_keys[{i}]"), s))
        .chain(
            mtls.iter()
                .enumerate()
                .map(|(i, m)| (format!("identity.mtls[{i}]"), &m.principal)),
        );
    for (base, spec) in specs {
        // Where people are named (approvers, principals, kill switches)
        // a slash separates the tenant from the id: an id that holds one,
        // in any spelling a reader takes for it, could never be named.
        if unicode_normalization::UnicodeNormalization::nfkc(spec.id.as_str()).any(|c| c == '/') {
            p.push(
                format!("{base}.id"),
                format!(
                    "`{}` holds a slash (or a character read as one), which separates a tenant from an id where people are named",
                    spec.id.escape_debug()
                ),
            );
            continue;
        }
        match crate::person::Person::of(&spec.tenant, &spec.id) {
            Err(e) => p.push(
                format!("{base}.id"),
                format!("`{}` {e}", spec.id.escape_debug()),
            ),
            Ok(person) => {
                let raw = (base.clone(), spec.tenant.clone(), spec.id.clone());
                match people.get(&person.key()) {
                    Some((other, t, i)) if (t, i) != (&spec.tenant, &spec.id) => p.push(
                        format!("{base}.id"),
                        format!(
                            "`{}/{}` is the same person as `{t}/{i}` ({other}): spell one person one way",
                            spec.tenant, spec.id
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        people.insert(person.key(), raw);
                    }
                }
            }
        }
    }
    if raw.api_keys.is_empty() && raw.jwt.is_none() && raw.mtls.is_empty() && !raw.allow_anonymous {
        p.push(
            "identity",
            "no credential is configured (api_keys, jwt, mtls) and allow_anonymous is false: nobody could call",
        );
    }
    let api_key_header = raw
        .api_key_header
        .clone()
        .unwrap_or_else(|| "x-api-key".into())
        .to_ascii_lowercase();
    if api_key_header == "authorization" || api_key_header.is_empty() {
        p.push(
            "identity.api_key_header",
            "must be a dedicated header (keys in `Authorization: Bearer` are accepted anyway)",
        );
    }
    Identity {
        resource: raw.resource.clone(),
        authorization_servers: raw.authorization_servers.clone(),
        scopes_supported: raw.scopes_supported.clone(),
        required_scopes: raw.required_scopes.clone(),
        allow_anonymous: raw.allow_anonymous,
        api_key_header,
        api_keys,
        jwt,
        mtls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_round_trip() {
        let stored = hash_api_key("wk_test_123", b"0123456789abcdef");
        let (salt, digest) = parse_key_hash(&stored).expect("test");
        assert_eq!(salt, b"0123456789abcdef");
        assert_eq!(hash_api_key("wk_test_123", &salt), stored);
        assert_ne!(hash_api_key("wk_test_124", &salt), stored);
        assert_eq!(digest.len(), 32);
        assert!(parse_key_hash("plain-text-key").is_err());
        assert!(parse_key_hash("sha256:00:00").is_err());
    }

    /// Two spellings of one person are refused: they would be one person
    /// to approvers and quotas and two to the policy.
    #[test]
    fn one_person_is_spelled_one_way() {
        let key = hash_api_key("k", b"0123456789abcdef");
        let judge = |a: &str, b: &str| {
            let yaml = format!(
                "resource: http://127.0.0.1/mcp\napi_keys:\n  - {{id: \"{a}\", tenant: acme, hash: \"{key}\"}}\n  - {{id: \"{b}\", tenant: acme, hash: \"{key}\"}}\n"
            );
            let raw: raw::IdentityConfig = serde_yaml_ng::from_str(&yaml).expect("yaml");
            let mut p = Problems::new("warden.yaml");
            identity(&raw, std::path::Path::new("."), &mut p);
            p.is_empty()
        };
        assert!(judge("alice", "bob"));
        assert!(!judge("alice", "ALICE"));
        assert!(!judge("ölaf", "ÖLAF"));
        assert!(!judge("alice", "al\\u200bice2"));
        // A slash separates a tenant from an id where people are named:
        // an id that holds one, in any spelling, could never be named.
        assert!(!judge("alice", "acme/bob"));
        assert!(!judge("alice", "acme\\uff0fbob"));
    }
}
