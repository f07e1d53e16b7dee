//! Authentication: API keys (salted digests), JWT bearer tokens (JWKS file or
//! URL) and mTLS client certificates, each turned into a [`Principal`].
//!
//! Pure: the JWKS URL is fetched by the proxy, which installs the key set here
//! through [`JwksStore::install`]; everything else is computation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use warden_config::access::{CertMatch, Identity, JwksSource, Jwt, PrincipalKind, PrincipalSpec};

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Anonymous,
    /// A key of the org's `identity.api_keys`.
    ApiKey,
    /// A key a tenant's layer minted (`ApiKey::layer`): a principal of that
    /// tenant the org did not define, kept apart from the org's principals
    /// and from a token's subject of the same tenant and id (its owner key
    /// differs; policies see `auth: "layer_api_key"`).
    LayerKey,
    Jwt,
    Mtls,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::LayerKey => "layer_api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Mtls => "mtls",
        }
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub kind: PrincipalKind,
    pub auth: AuthMethod,
    /// Extra string attributes (from the bundle, or copied JWT claims).
    pub attributes: BTreeMap<String, String>,
    /// The OAuth scopes the caller's token carries (none for other methods).
    pub scopes: Vec<String>,
    /// The person and owner keys, worked out once per principal (an API
    /// key's or a certificate's principal lives as long as its bundle).
    pub canonical: CanonicalOnce,
}

/// A principal's person key, owner key and shared id and tenant, computed
/// on first use. Not part of what a principal is: two principals compare
/// equal whatever their caches hold.
#[derive(Debug, Clone, Default)]
pub struct CanonicalOnce(
    std::sync::OnceLock<String>,
    std::sync::OnceLock<String>,
    std::sync::OnceLock<(Arc<str>, Arc<str>)>,
);

impl PartialEq for CanonicalOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CanonicalOnce {}

/// The owner key of the unauthenticated caller.
static ANONYMOUS_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use warden_config::person::strict_key as k;
    let a = Principal::anonymous();
    format!("{}\0{}", k(&a.tenant), k(&a.id))
});

impl Principal {
    /// The key things are bound to this principal by (sessions, task ids,
    /// cursors, multi-round-trip state, minted credentials): tenant and id
    /// in their strict form, so `ALICE` and `alice` of one tenant own the
    /// same handles and `alicé` or `ａｌｉｃｅ` none of them.
    pub fn owner_key(&self) -> String {
        self.owner().to_owned()
    }

    /// [`Principal::owner_key`], borrowed: the strict key of tenant and id
    /// (`warden_config::person::strict_key`), what every handle is bound
    /// to, so that no spelling another reader merges with this one opens
    /// it. A principal a tenant's layer minted ([`AuthMethod::LayerKey`])
    /// has a key of its own (a third part no strict key holds, as none
    /// holds a NUL): a tenant admin who mints `finance/alice` does not
    /// open the handles of the org's or the identity provider's
    /// `finance/alice`.
    pub fn owner(&self) -> &str {
        use warden_config::person::strict_key as k;
        self.canonical.1.get_or_init(|| {
            let key = format!("{}\0{}", k(&self.tenant), k(&self.id));
            match self.auth {
                AuthMethod::LayerKey => format!("{key}\0layer"),
                // A credential whose principal is named as the
                // unauthenticated caller is (a token with `sub:
                // anonymous` and no tenant) opens none of that caller's
                // handles, nor they its.
                AuthMethod::Anonymous => key,
                _ if key == *ANONYMOUS_KEY => format!("{key}\0named"),
                _ => key,
            }
        })
    }

    /// The person this principal is, in canonical form (`tenant\0id`,
    /// spellings a reader takes for one merged): what rules that compare
    /// people (quotas, budgets, the audit trail) key on.
    pub fn person(&self) -> &str {
        use warden_config::person::canonical_or_marked as c;
        self.canonical
            .0
            .get_or_init(|| format!("{}\0{}", c(&self.tenant), c(&self.id)))
    }

    /// The id and tenant as written, as shared strings made once per
    /// principal: every audit record of its calls names them without
    /// copying them (an API key's principal lives as long as its bundle).
    pub fn shared_names(&self) -> &(Arc<str>, Arc<str>) {
        self.canonical
            .2
            .get_or_init(|| (self.id.as_str().into(), self.tenant.as_str().into()))
    }

    /// The principal's tenant in canonical form (how tenant layers'
    /// scopes compare it).
    pub fn canonical_tenant(&self) -> &str {
        self.person().split('\0').next().unwrap_or_default()
    }

    /// The caller when the bundle has no identity section (or allows
    /// anonymous calls), one shared value.
    pub fn shared_anonymous() -> Arc<Principal> {
        static ANONYMOUS: std::sync::LazyLock<Arc<Principal>> =
            std::sync::LazyLock::new(|| Arc::new(Principal::anonymous()));
        ANONYMOUS.clone()
    }

    /// The caller when the bundle has no identity section (or allows anonymous calls).
    pub fn anonymous() -> Self {
        Principal {
            id: "anonymous".into(),
            tenant: warden_config::person::NO_TENANT.into(),
            roles: Vec::new(),
            kind: PrincipalKind::User,
            auth: AuthMethod::Anonymous,
            attributes: BTreeMap::new(),
            scopes: Vec::new(),
            canonical: CanonicalOnce::default(),
        }
    }

    fn from_spec(s: &PrincipalSpec, auth: AuthMethod) -> Self {
        Principal {
            id: s.id.clone(),
            tenant: s.tenant.clone(),
            roles: s.roles.clone(),
            kind: s.kind,
            auth,
            attributes: s.attributes.clone(),
            scopes: Vec::new(),
            canonical: CanonicalOnce::default(),
        }
    }
}

/// The identities a verified client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub subject_cn: Option<String>,
    /// DNS SANs, lower-cased.
    pub dns: Vec<String>,
    /// URI SANs (SPIFFE IDs among them).
    pub uris: Vec<String>,
}

impl ClientCert {
    /// Reads the leaf certificate (DER). The TLS layer has already verified
    /// the chain against the listener's `client_ca`.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut out = ClientCert {
            subject_cn,
            ..ClientCert::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => out.uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Some(out)
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header value.
    pub authorization: Option<&'a str>,
    /// The API-key header value.
    pub api_key: Option<&'a str>,
    pub client_cert: Option<&'a ClientCert>,
}

/// Why authentication failed; each maps to the MCP authorization spec's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential and anonymous calls are not allowed → 401 without `error=`.
    Missing,
    /// A credential was presented and is not valid → 401 `error="invalid_token"`.
    Invalid(&'static str),
    /// A valid token lacks required scopes → 403 `error="insufficient_scope"`.
    InsufficientScope(Vec<String>),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "credentials_missing",
            AuthError::Invalid(r) => r,
            AuthError::InsufficientScope(_) => "insufficient_scope",
        }
    }
}

/// Verification keys from a JWKS, swapped whole when the set is fetched again.
#[derive(Default)]
pub struct JwksStore {
    keys: ArcSwap<KeySet>,
    /// Set when a token names a key id the store lacks: the fetcher should refresh early.
    wanted: AtomicBool,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a `kid`, tried in order when a token has none.
    anonymous: Vec<DecodingKey>,
    loaded: bool,
}

impl JwksStore {
    /// Replaces the key set with the JWKS document `json`.
    pub fn install(&self, json: &str) -> Result<usize, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut ks = KeySet {
            loaded: true,
            ..KeySet::default()
        };
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    ks.by_kid.insert(kid.clone(), key);
                }
                None => ks.anonymous.push(key),
            }
        }
        let n = ks.by_kid.len() + ks.anonymous.len();
        if n == 0 {
            return Err("the JWKS holds no usable key".into());
        }
        self.keys.store(Arc::new(ks));
        self.wanted.store(false, Ordering::Relaxed);
        Ok(n)
    }

    pub fn is_loaded(&self) -> bool {
        self.keys.load().loaded
    }

    /// Whether a token asked for a key the store does not have (and clears the flag).
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }
}

struct JwtVerifier {
    cfg: Jwt,
    /// One validation per accepted algorithm: jsonwebtoken requires every
    /// algorithm of a validation to match the key's family.
    validations: HashMap<Algorithm, Validation>,
    store: Arc<JwksStore>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

fn algorithm(a: &str) -> Option<Algorithm> {
    Some(match a {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl JwtVerifier {
    fn new(cfg: &Jwt) -> Result<Self, String> {
        let mut validations = HashMap::new();
        for alg in cfg.algorithms.iter().filter_map(|a| algorithm(a)) {
            let mut v = Validation::new(alg);
            v.leeway = cfg.clock_skew.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.set_issuer(&[&cfg.issuer]);
            v.set_audience(&cfg.audiences);
            validations.insert(alg, v);
        }
        if validations.is_empty() {
            return Err("no JWT algorithm".into());
        }
        let store = Arc::new(JwksStore::default());
        if let JwksSource::File { json, path } = &cfg.jwks {
            store
                .install(json)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(JwtVerifier {
            cfg: cfg.clone(),
            validations,
            store,
        })
    }

    fn verify(&self, token: &str) -> Result<(Principal, Vec<String>), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("token_malformed"))?;
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(AuthError::Invalid("token_algorithm_not_allowed"));
        };
        let keys = self.store.keys.load();
        let candidates: Vec<&DecodingKey> = match &header.kid {
            Some(kid) => match keys.by_kid.get(kid) {
                Some(k) => vec![k],
                None => {
                    self.store.wanted.store(true, Ordering::Relaxed);
                    return Err(AuthError::Invalid("token_key_unknown"));
                }
            },
            None => keys.anonymous.iter().collect(),
        };
        let mut last = AuthError::Invalid("token_key_unknown");
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    if !self.client_allowed(&data.claims) {
                        return Err(AuthError::Invalid("token_client_not_allowed"));
                    }
                    return self.principal(data.claims);
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = AuthError::Invalid(match e.kind() {
                        K::ExpiredSignature => "token_expired",
                        K::ImmatureSignature => "token_not_yet_valid",
                        K::InvalidAudience => "token_audience_mismatch",
                        K::InvalidIssuer => "token_issuer_mismatch",
                        K::InvalidSignature => "token_signature_invalid",
                        K::MissingRequiredClaim(_) => "token_claim_missing",
                        K::InvalidAlgorithm => "token_algorithm_not_allowed",
                        _ => "token_invalid",
                    });
                }
            }
        }
        Err(last)
    }

    /// The client the token was issued to (`client_id`, RFC 9068, else `azp`).
    fn client_id(c: &Claims) -> Option<&str> {
        c.rest
            .get("client_id")
            .or_else(|| c.rest.get("azp"))
            .and_then(|v| v.as_str())
    }

    /// Whether the bundle accepts the token's client: any client when no
    /// list is set; otherwise an exact id, or an `https://host/` prefix for
    /// Client ID Metadata Document URLs of one origin (2026-07-28 prefers
    /// them to registered ids).
    fn client_allowed(&self, c: &Claims) -> bool {
        if self.cfg.allowed_clients.is_empty() {
            return true;
        }
        let Some(id) = Self::client_id(c) else {
            return false;
        };
        self.cfg.allowed_clients.iter().any(|a| {
            if a.starts_with("https://") && a.ends_with('/') {
                // An origin prefix: a document URL under it, never the bare origin.
                id.starts_with(a.as_str()) && id.len() > a.len()
            } else {
                id == a
            }
        })
    }

    /// `granted` with every scope the bundle's hierarchy derives from it.
    fn implied(&self, granted: Vec<String>) -> Vec<String> {
        let mut out = granted;
        let mut i = 0;
        while i < out.len() {
            if let Some(more) = self.cfg.scope_implies.get(&out[i]) {
                for m in more {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// The token's principal. Its subject and tenant must be names that
    /// can be compared (`warden_config::person::comparable`): one holding
    /// invisible characters (`mal\u{200d}lory`, `vic\u{ad}tor`), controls,
    /// bidi controls or separators, or nothing to compare, would be another
    /// person to every rule that compares people (self-approval, distinct
    /// approvers, quotas) than to the reader, so the token is refused here
    /// with a reason naming which claim. A tenant claim that is present
    /// must be such a string (`null` is no claim): an array or a number is
    /// no tenant, never the tenant of callers that name none.
    fn principal(&self, c: Claims) -> Result<(Principal, Vec<String>), AuthError> {
        use warden_config::person::comparable;
        if comparable(&c.sub).is_err() {
            return Err(AuthError::Invalid(SUBJECT_NOT_A_NAME));
        }
        let tenant = match c.rest.get(&self.cfg.tenant_claim) {
            None | Some(serde_json::Value::Null) => warden_config::person::NO_TENANT.to_owned(),
            Some(serde_json::Value::String(t)) if comparable(t).is_ok() => t.clone(),
            Some(_) => return Err(AuthError::Invalid(TENANT_NOT_A_NAME)),
        };
        let str_claim = |name: &str| c.rest.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let roles = match c.rest.get(&self.cfg.roles_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let kind = self
            .cfg
            .kind_claim
            .as_deref()
            .and_then(&str_claim)
            .and_then(|k| PrincipalKind::parse(&k))
            .unwrap_or(PrincipalKind::User);
        let mut attributes: BTreeMap<String, String> = self
            .cfg
            .attribute_claims
            .iter()
            .filter_map(|a| str_claim(a).map(|v| (a.clone(), v)))
            .collect();
        // The client the token was issued to, for policy (a Client ID
        // Metadata Document URL, or a registered id).
        if let Some(client) = Self::client_id(&c) {
            attributes.insert("client_id".into(), client.to_owned());
        }
        // Who issued the token (checked above): identity assertions to
        // upstreams carry it as `orig_iss`.
        attributes.insert("iss".into(), self.cfg.issuer.clone());
        let scopes = match (c.rest.get("scope"), c.rest.get("scp")) {
            (Some(serde_json::Value::String(s)), _) => {
                s.split_whitespace().map(str::to_owned).collect()
            }
            (_, Some(serde_json::Value::Array(a))) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let scopes = self.implied(scopes);
        Ok((
            Principal {
                id: c.sub,
                tenant,
                roles,
                kind,
                auth: AuthMethod::Jwt,
                attributes,
                scopes: scopes.clone(),
                canonical: CanonicalOnce::default(),
            },
            scopes,
        ))
    }
}

/// Why a token whose `sub` cannot be compared as a name is refused.
pub const SUBJECT_NOT_A_NAME: &str = "token_subject_not_a_name";
/// Why a token whose tenant claim is no name that can be compared is refused.
pub const TENANT_NOT_A_NAME: &str = "token_tenant_not_a_name";

/// The API keys that share one salt: digest → index into `identity.api_keys`.
type SaltGroup = (Vec<u8>, HashMap<[u8; 32], usize>);

/// Compiled from the bundle's `identity` section; lives in the snapshot.
pub struct Authenticator {
    identity: Identity,
    /// salt → (digest → index into `identity.api_keys`).
    keys: Vec<SaltGroup>,
    /// The principal of each API key and certificate rule, built once:
    /// a call shares it instead of copying its names.
    key_principals: Vec<Arc<Principal>>,
    cert_principals: Vec<Arc<Principal>>,
    jwt: Option<JwtVerifier>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("resource", &self.identity.resource)
            .field("api_keys", &self.identity.api_keys.len())
            .field("jwt", &self.jwt.is_some())
            .field("mtls", &self.identity.mtls.len())
            .finish()
    }
}

impl Authenticator {
    pub fn new(identity: &Identity) -> Result<Self, String> {
        let mut keys: Vec<SaltGroup> = Vec::new();
        for (i, k) in identity.api_keys.iter().enumerate() {
            match keys.iter_mut().find(|(s, _)| *s == k.salt) {
                Some((_, m)) => {
                    // One secret, one principal: never the last one listed.
                    if let Some(first) = m.insert(k.digest, i) {
                        return Err(format!(
                            "identity.api_keys: `{}` and `{}` have the same hash; one key signs in as one principal",
                            identity.api_keys[first].principal.id.escape_debug(),
                            k.principal.id.escape_debug()
                        ));
                    }
                }
                None => keys.push((k.salt.clone(), HashMap::from([(k.digest, i)]))),
            }
        }
        let jwt = identity.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let key_principals = identity
            .api_keys
            .iter()
            .map(|k| {
                let auth = match k.layer {
                    Some(_) => AuthMethod::LayerKey,
                    None => AuthMethod::ApiKey,
                };
                Arc::new(Principal::from_spec(&k.principal, auth))
            })
            .collect();
        let cert_principals = identity
            .mtls
            .iter()
            .map(|r| Arc::new(Principal::from_spec(&r.principal, AuthMethod::Mtls)))
            .collect();
        Ok(Authenticator {
            identity: identity.clone(),
            keys,
            key_principals,
            cert_principals,
            jwt,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Takes over the key store of the authenticator this one replaces when
    /// both fetch the same JWKS URL, so a bundle swap does not drop the keys.
    pub fn adopt_jwks(&mut self, old: &Authenticator) {
        if let (Some(new), Some(prev)) = (self.jwt.as_mut(), old.jwt.as_ref()) {
            if let (JwksSource::Url { url: a, .. }, JwksSource::Url { url: b, .. }) =
                (&new.cfg.jwks, &prev.cfg.jwks)
            {
                if a == b {
                    new.store = prev.store.clone();
                }
            }
        }
    }

    /// The key store a JWKS URL fills, with the URL and refresh period.
    pub fn jwks_url(&self) -> Option<(&str, std::time::Duration, Arc<JwksStore>)> {
        let j = self.jwt.as_ref()?;
        match &j.cfg.jwks {
            JwksSource::Url { url, refresh } => Some((url, *refresh, j.store.clone())),
            JwksSource::File { .. } => None,
        }
    }

    fn api_key(&self, key: &str) -> Option<Arc<Principal>> {
        for (salt, digests) in &self.keys {
            let mut h = Sha256::new();
            h.update(salt);
            h.update(key.as_bytes());
            let d: [u8; 32] = h.finalize().into();
            if let Some(&i) = digests.get(&d) {
                return Some(self.key_principals[i].clone());
            }
        }
        None
    }

    fn cert(&self, c: &ClientCert) -> Option<Arc<Principal>> {
        self.identity
            .mtls
            .iter()
            .zip(&self.cert_principals)
            .find_map(|(r, p)| {
                let hit = match &r.matches {
                    CertMatch::SpiffeId(s) => c.uris.iter().any(|u| u == s),
                    CertMatch::Dns(d) => c.dns.iter().any(|x| x == d),
                    CertMatch::SubjectCn(cn) => c.subject_cn.as_deref() == Some(cn.as_str()),
                };
                hit.then(|| p.clone())
            })
    }

    /// Decides who the caller is. Explicit credentials (bearer token, API key
    /// header) win over a client certificate; a credential that is presented
    /// and invalid is refused even when anonymous calls are allowed.
    pub fn authenticate(
        &self,
        p: Presented<'_>,
        _now: SystemTime,
    ) -> Result<Arc<Principal>, AuthError> {
        if let Some(auth) = p.authorization {
            let Some(token) = bearer(auth) else {
                return Err(AuthError::Invalid("authorization_scheme_unsupported"));
            };
            if token.bytes().filter(|&b| b == b'.').count() == 2 {
                let Some(jwt) = &self.jwt else {
                    return Err(AuthError::Invalid("jwt_not_accepted"));
                };
                let (principal, scopes) = jwt.verify(token)?;
                let missing: Vec<String> = self
                    .identity
                    .required_scopes
                    .iter()
                    .filter(|s| !scopes.contains(s))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(AuthError::InsufficientScope(missing));
                }
                return Ok(Arc::new(principal));
            }
            return self
                .api_key(token)
                .ok_or(AuthError::Invalid("api_key_unknown"));
        }
        if let Some(key) = p.api_key {
            return self
                .api_key(key)
                .ok_or(AuthError::Invalid("api_key_unknown"));
        }
        if let Some(c) = p.client_cert {
            if let Some(pr) = self.cert(c) {
                return Ok(pr);
            }
            if !self.identity.allow_anonymous {
                return Err(AuthError::Invalid("client_certificate_unmapped"));
            }
        }
        if self.identity.allow_anonymous {
            Ok(Principal::shared_anonymous())
        } else {
            Err(AuthError::Missing)
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub fn bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_config::access::{hash_api_key, parse_key_hash, ApiKey, Jwt};

    fn spec(id: &str) -> PrincipalSpec {
        PrincipalSpec {
            id: id.into(),
            tenant: "acme".into(),
            roles: vec!["dev".into()],
            kind: PrincipalKind::Agent,
            attributes: BTreeMap::new(),
        }
    }

    fn identity() -> Identity {
        let mk = |id: &str, key: &str, salt: &[u8]| {
            let (salt, digest) = parse_key_hash(&hash_api_key(key, salt)).expect("test");
            ApiKey {
                principal: spec(id),
                salt,
                digest,
                layer: None,
            }
        };
        Identity {
            resource: "https://gw.example/mcp".into(),
            authorization_servers: vec![],
            scopes_supported: vec![],
            required_scopes: vec![],
            allow_anonymous: false,
            api_key_header: "x-api-key".into(),
            api_keys: vec![
                mk("a", "key-a", b"saltsalt1"),
                mk("b", "key-b", b"saltsalt2"),
                mk("c", "key-c", b"saltsalt1"),
            ],
            jwt: None,
            mtls: vec![warden_config::access::MtlsRule {
                matches: CertMatch::SpiffeId("spiffe://acme/agent/x".into()),
                principal: spec("x"),
            }],
        }
    }

    /// One secret signs in as one principal: two keys with one salt and
    /// digest refuse the identity, never the last one listed winning.
    #[test]
    fn two_keys_with_one_hash_are_refused() {
        let mut id = identity();
        let mut twin = id.api_keys[0].clone();
        twin.principal = spec("a-twin");
        id.api_keys.push(twin);
        let e = Authenticator::new(&id).map(|_| ()).expect_err("same hash");
        assert!(e.contains("`a` and `a-twin` have the same hash"), "{e}");
    }

    #[test]
    fn api_keys_by_header_or_bearer() {
        let a = Authenticator::new(&identity()).expect("test");
        let now = SystemTime::now();
        let p = |auth, key| Presented {
            authorization: auth,
            api_key: key,
            client_cert: None,
        };
        assert_eq!(
            a.authenticate(p(None, Some("key-a")), now)
                .expect("test")
                .id,
            "a"
        );
        assert_eq!(
            a.authenticate(p(None, Some("key-b")), now)
                .expect("test")
                .id,
            "b"
        );
        assert_eq!(
            a.authenticate(p(Some("Bearer key-c"), None), now)
                .expect("test")
                .id,
            "c"
        );
        assert_eq!(
            a.authenticate(p(None, Some("key-d")), now),
            Err(AuthError::Invalid("api_key_unknown"))
        );
        assert_eq!(a.authenticate(p(None, None), now), Err(AuthError::Missing));
        assert_eq!(
            a.authenticate(p(Some("Basic Zm9vOmJhcg=="), None), now),
            Err(AuthError::Invalid("authorization_scheme_unsupported"))
        );
        assert_eq!(
            a.authenticate(p(Some("Bearer a.b.c"), None), now),
            Err(AuthError::Invalid("jwt_not_accepted"))
        );
    }

    #[test]
    fn a_key_a_tenants_layer_minted_opens_nothing_of_the_orgs_principal_of_that_name() {
        let mut id = identity();
        let (salt, digest) = parse_key_hash(&hash_api_key("key-l", b"saltsalt3")).expect("test");
        id.api_keys.push(ApiKey {
            principal: spec("alice"),
            salt,
            digest,
            layer: Some("acme".into()),
        });
        let a = Authenticator::new(&id).expect("test");
        let minted = a
            .authenticate(
                Presented {
                    authorization: None,
                    api_key: Some("key-l"),
                    client_cert: None,
                },
                SystemTime::now(),
            )
            .expect("test");
        assert_eq!(minted.auth, AuthMethod::LayerKey);
        assert_eq!(minted.auth.as_str(), "layer_api_key");
        // The org's key, a token's subject, the id spelled as the marker:
        // each of them the same tenant and id, none the minted key's owner.
        for auth in [AuthMethod::ApiKey, AuthMethod::Jwt, AuthMethod::Mtls] {
            let org = Principal::from_spec(&spec("alice"), auth);
            assert_ne!(org.owner(), minted.owner(), "{auth:?}");
            // Rules that count people still count them as one.
            assert_eq!(org.person(), minted.person(), "{auth:?}");
        }
        for forged in ["alice\0layer", "ALICE\0LAYER"] {
            let jwt = Principal::from_spec(&spec(forged), AuthMethod::Jwt);
            assert_ne!(jwt.owner(), minted.owner(), "{forged:?}");
        }
        // The org's own keys keep the key they always had.
        let org = a
            .authenticate(
                Presented {
                    authorization: None,
                    api_key: Some("key-a"),
                    client_cert: None,
                },
                SystemTime::now(),
            )
            .expect("test");
        assert_eq!((org.auth, org.owner()), (AuthMethod::ApiKey, "acme\0a"));
    }

    fn verifier() -> JwtVerifier {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA","x":"gyBFaLArKfG01iEYWjlRukNkovIryilaEPsqpMA2gNg"}]}"#;
        JwtVerifier::new(&Jwt {
            issuer: "https://idp.example".into(),
            audiences: vec!["https://gw.example/mcp".into()],
            algorithms: vec!["EdDSA".into()],
            jwks: JwksSource::File {
                json: jwks.into(),
                path: "jwks.json".into(),
            },
            clock_skew: std::time::Duration::from_secs(30),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            kind_claim: None,
            attribute_claims: vec![],
            allowed_clients: vec![],
            scope_implies: BTreeMap::new(),
        })
        .expect("verifier")
    }

    fn claims(sub: &str, tenant: Option<serde_json::Value>) -> Claims {
        let mut rest = serde_json::Map::new();
        if let Some(t) = tenant {
            rest.insert("tenant".into(), t);
        }
        Claims {
            sub: sub.into(),
            rest,
        }
    }

    /// A token's subject or tenant that cannot be compared as a name is
    /// refused, naming the claim: invisible characters (a zero-width
    /// joiner, a soft hyphen), bidi controls, controls, separators,
    /// nothing to compare; a tenant claim that is not a string.
    #[test]
    fn a_token_naming_no_comparable_principal_is_refused() {
        let v = verifier();
        let (p, _) = v
            .principal(claims("mallory", Some(serde_json::json!("acme"))))
            .expect("a name");
        assert_eq!((p.id.as_str(), p.tenant.as_str()), ("mallory", "acme"));
        let (p, _) = v.principal(claims("mallory", None)).expect("no tenant");
        assert_eq!(p.tenant, warden_config::person::NO_TENANT);
        let (p, _) = v
            .principal(claims("mallory", Some(serde_json::Value::Null)))
            .expect("null tenant");
        assert_eq!(p.tenant, warden_config::person::NO_TENANT);
        let bad = [
            "mal\u{200d}lory",
            "vic\u{ad}tor",
            "eve\u{202e}",
            "bob\u{200e}",
            "\u{feff}carol",
            "erin\u{7}",
            "gus\u{e0041}",
            "ivy\u{2028}",
            "",
            " ",
            "\u{301}",
        ];
        for sub in bad {
            assert_eq!(
                v.principal(claims(sub, Some(serde_json::json!("acme"))))
                    .map(|_| ()),
                Err(AuthError::Invalid(SUBJECT_NOT_A_NAME)),
                "{sub:?}"
            );
        }
        for t in bad
            .iter()
            .map(|t| serde_json::json!(t))
            .chain([serde_json::json!(["acme"]), serde_json::json!(7)])
        {
            assert_eq!(
                v.principal(claims("mallory", Some(t.clone()))).map(|_| ()),
                Err(AuthError::Invalid(TENANT_NOT_A_NAME)),
                "{t}"
            );
        }
    }

    #[test]
    fn certificates_map_by_spiffe_id() {
        let a = Authenticator::new(&identity()).expect("test");
        let cert = ClientCert {
            subject_cn: Some("x".into()),
            dns: vec![],
            uris: vec!["spiffe://acme/agent/x".into()],
        };
        let other = ClientCert {
            uris: vec!["spiffe://acme/agent/y".into()],
            ..cert.clone()
        };
        let p = |c| Presented {
            authorization: None,
            api_key: None,
            client_cert: Some(c),
        };
        let got = a.authenticate(p(&cert), SystemTime::now()).expect("test");
        assert_eq!((got.id.as_str(), got.auth), ("x", AuthMethod::Mtls));
        assert_eq!(
            a.authenticate(p(&other), SystemTime::now()),
            Err(AuthError::Invalid("client_certificate_unmapped"))
        );
    }
}
