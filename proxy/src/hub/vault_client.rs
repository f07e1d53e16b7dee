//! Credentials from the control agent's vault, per call: a principal's
//! own (`credentials: {per_user: …}`) or a static secret
//! (`credentials: {vault: name}`).
//!
//! - **Ready**: the value goes into the upstream request only (never a
//!   log, an audit record or a reply: the audit names the connection).
//!   It is cached in memory, never on disk, for at most [`CACHE_FOR`]
//!   and never past the token's own end, keyed by the principal's strict
//!   key, its tenant, the server and what was asked: no principal ever
//!   gets another's. A revocation reaches every gateway within
//!   [`CACHE_FOR`].
//! - **Consent needed**: the caller is answered with the agent's consent
//!   link (a URL-mode elicitation when its session declared one,
//!   otherwise an error naming the URL); the call is not made.
//! - **No agent, or it cannot answer**: refused; a call that needs a
//!   credential never goes on without it.
//!
//! Every agent is asked in turn, as for held calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use warden_config::access::{VaultCredential, VaultSource};
use warden_filters::engines::identity::AuthMethod;
use warden_filters::{codes, JsonRpcError, Principal, Refusal};

use super::agents::{Agents, Clients, Use};
use crate::identity::outbound::refuse;

/// How long a fetched credential is used without asking again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// How long the agent is given to answer (a refresh at the provider
/// included).
const TIMEOUT: Duration = Duration::from_secs(15);

/// A credential the agent gave.
struct Cached {
    /// The header value (prefix + value).
    value: String,
    /// What the audit record names (`vault:<connection>`, `vault-secret:<name>`).
    reference: String,
    until: Instant,
}

/// The credential of a call, or why there is none.
pub enum Fetched {
    /// `(header, value, reference)`.
    Ready(String, String, String),
    /// The person must consent at `url` first.
    Consent { id: String, url: String },
}

/// Where this gateway fetches credentials.
pub struct VaultClient {
    agents: Arc<Agents>,
    token: Option<String>,
    gateway_id: String,
    clients: Clients,
    cache: moka::sync::Cache<[u8; 32], Arc<Cached>>,
}

#[derive(serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum Answer {
    Ready {
        token: String,
        #[serde(default)]
        expires_at: u64,
        connection: String,
    },
    Consent {
        id: String,
        url: String,
    },
}

/// A value that may go into a header: visible ASCII and spaces.
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 16 * 1024 && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The most of an agent's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// An agent's answer, read up to [`MAX_ANSWER`] (`None`: it is longer;
/// nothing past the bound is read or held).
async fn read_bounded(mut resp: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

impl VaultClient {
    /// `units`: the cache's bound (`Table::Credentials` of the memory
    /// budget: a unit per 512 bytes held).
    pub fn new(
        agents: Arc<Agents>,
        token: Option<String>,
        gateway_id: &str,
        units: u64,
    ) -> VaultClient {
        let clients = Clients::for_agents(&agents, || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        });
        VaultClient {
            agents,
            token,
            gateway_id: gateway_id.to_owned(),
            clients,
            cache: moka::sync::Cache::builder()
                .max_capacity(units.max(16))
                .weigher(|_, c: &Arc<Cached>| {
                    u32::try_from((c.value.len() + c.reference.len() + 128) / 512 + 1)
                        .unwrap_or(u32::MAX)
                })
                .time_to_live(CACHE_FOR)
                .build(),
        }
    }

    /// What the credentials held now weigh (the gauge, in the units of
    /// `Table::Credentials`).
    pub fn weight(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn key(principal: &Principal, server: &str, vc: &VaultCredential) -> [u8; 32] {
        let mut h = Sha256::new();
        let part = |h: &mut Sha256, s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        match &vc.source {
            VaultSource::PerUser { provider, scopes } => {
                part(&mut h, "per_user");
                part(
                    &mut h,
                    &warden_config::person::tenant_key(&principal.tenant),
                );
                part(&mut h, &warden_config::person::strict_key(&principal.id));
                part(&mut h, server);
                part(&mut h, provider);
                for s in scopes {
                    part(&mut h, s);
                }
            }
            VaultSource::Secret { name } => {
                part(&mut h, "secret");
                part(&mut h, name);
            }
        }
        part(&mut h, &vc.prefix);
        h.finalize().into()
    }

    /// The credential `vc` of `principal`'s call to `server`, counted in
    /// `warden_vault_credentials_total`.
    pub async fn fetch(
        &self,
        principal: &Principal,
        server: &str,
        vc: &VaultCredential,
    ) -> Result<Fetched, Refusal> {
        let key = Self::key(principal, server, vc);
        let kind = match vc.source {
            VaultSource::PerUser { .. } => "per_user",
            VaultSource::Secret { .. } => "secret",
        };
        let count = |result: &str| {
            crate::observability::metrics::metrics()
                .vault_credentials
                .with_label_values(&[server, kind, result])
                .inc();
        };
        // An anonymous caller is nobody's account: every such caller is
        // the one principal `anonymous`, and would share whatever a person
        // of that name consented to. Refused before the cache is read.
        if matches!(vc.source, VaultSource::PerUser { .. })
            && (principal.auth == AuthMethod::Anonymous || principal.id.is_empty())
        {
            count("refused");
            return Err(refuse(
                403,
                "credential_needs_principal",
                format!("Server `{server}` acts with each caller's own account: an anonymous caller has none"),
            ));
        }
        if let Some(c) = self.cache.get(&key).filter(|c| c.until > Instant::now()) {
            count("cached");
            return Ok(Fetched::Ready(
                vc.header.clone(),
                c.value.clone(),
                c.reference.clone(),
            ));
        }
        let fetched = self.ask(key, principal, server, vc).await;
        count(match &fetched {
            Ok(Fetched::Ready(..)) => "fetched",
            Ok(Fetched::Consent { .. }) => "consent_required",
            Err(r) if r.status == 403 => "refused",
            Err(_) => "unavailable",
        });
        fetched
    }

    /// Asks the agents in turn.
    async fn ask(
        &self,
        key: [u8; 32],
        principal: &Principal,
        server: &str,
        vc: &VaultCredential,
    ) -> Result<Fetched, Refusal> {
        let (path, body) = match &vc.source {
            VaultSource::PerUser { provider, scopes } => (
                "/v1/vault/token".to_owned(),
                Some(serde_json::json!({
                    "tenant": principal.tenant,
                    "principal": principal.id,
                    "server": server,
                    "provider": provider,
                    "scopes": scopes,
                    "gateway": self.gateway_id,
                })),
            ),
            VaultSource::Secret { name } => (format!("/v1/vault/secrets/{name}"), None),
        };
        let mut errors = Vec::new();
        for ep in self.agents.candidates().await {
            let client = match self.clients.get(&ep) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut req = match &body {
                Some(b) => client.post(ep.url(&path)).json(b),
                None => client.get(ep.url(&path)),
            }
            .timeout(TIMEOUT);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let why = super::agent_tls::why(e);
                    self.agents.failed(&ep, Use::Approvals, &why);
                    errors.push(format!("{}: {why}", ep.name()));
                    continue;
                }
            };
            let status = resp.status();
            let bytes = match read_bounded(resp).await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    errors.push(format!("{}: an answer over 64 KiB", ep.name()));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{}: {}", ep.name(), e.without_url()));
                    continue;
                }
            };
            if status.is_server_error() {
                self.agents
                    .failed(&ep, Use::Approvals, &format!("status {status}"));
                errors.push(format!("{}: status {status}", ep.name()));
                continue;
            }
            self.agents.answered(&ep);
            if !status.is_success() {
                let why = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("status {status}"));
                return Err(refuse(
                    403,
                    "credential_refused",
                    format!(
                        "Server `{server}` needs a credential from the vault, which refused: {why}"
                    ),
                ));
            }
            return self.taken(key, vc, server, &bytes);
        }
        tracing::warn!(
            server,
            "fetching a credential: no control agent answered: {}",
            errors.join("; ")
        );
        Err(refuse(
            502,
            "credential_unavailable",
            format!("Server `{server}` needs a credential from the control agent's vault, which cannot be reached now; the call was not made"),
        ))
    }

    /// An agent's successful answer, read and cached.
    fn taken(
        &self,
        key: [u8; 32],
        vc: &VaultCredential,
        server: &str,
        bytes: &[u8],
    ) -> Result<Fetched, Refusal> {
        let bad = || {
            refuse(
                502,
                "credential_unavailable",
                format!("Server `{server}` needs a credential, and the control agent's answer was not one"),
            )
        };
        let (value, reference, life) = match &vc.source {
            VaultSource::Secret { name } => {
                #[derive(serde::Deserialize)]
                struct S {
                    value: String,
                    version: u64,
                }
                let s: S = serde_json::from_slice(bytes).map_err(|_| bad())?;
                (
                    s.value,
                    format!("vault-secret:{name}@{}", s.version),
                    CACHE_FOR,
                )
            }
            VaultSource::PerUser { .. } => {
                match serde_json::from_slice(bytes).map_err(|_| bad())? {
                    Answer::Consent { id, url } => return Ok(Fetched::Consent { id, url }),
                    Answer::Ready {
                        token,
                        expires_at,
                        connection,
                    } => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        let left = if expires_at == 0 {
                            CACHE_FOR
                        } else {
                            Duration::from_secs(expires_at.saturating_sub(now)).min(CACHE_FOR)
                        };
                        (token, format!("vault:{connection}"), left)
                    }
                }
            }
        };
        // An empty secret would send the prefix alone: the call would go
        // up without the credential it needs.
        let value = format!("{}{value}", vc.prefix);
        if value.len() == vc.prefix.len() || !header_safe(&value) {
            return Err(bad());
        }
        if !life.is_zero() {
            self.cache.insert(
                key,
                Arc::new(Cached {
                    value: value.clone(),
                    reference: reference.clone(),
                    until: Instant::now() + life,
                }),
            );
        }
        Ok(Fetched::Ready(vc.header.clone(), value, reference))
    }
}

/// The answer to a call whose principal must consent first: a URL-mode
/// elicitation (`url_elicitation`: the client declared it), else an error
/// naming the URL. HTTP 200 for a request (a per-message answer), 403
/// for anything without an id to answer.
pub fn consent_answer(
    server: &str,
    id: &str,
    url: &str,
    url_elicitation: bool,
    request: bool,
) -> Refusal {
    let text = format!(
        "Server `{server}` acts with your own account, which is not connected yet. Open {url} to connect it (sign in and consent), then retry the call."
    );
    let status = if request { 200 } else { 403 };
    if url_elicitation && request {
        return Refusal::new(
            status,
            "consent_required",
            JsonRpcError::new(
                codes::URL_ELICITATION_REQUIRED,
                "This call needs your consent",
            )
            .with_data(serde_json::json!({
                "elicitations": [{
                    "mode": "url",
                    "elicitationId": id,
                    "url": url,
                    "message": text,
                }],
                "reason": "consent_required",
            })),
        );
    }
    Refusal::new(
        status,
        "consent_required",
        JsonRpcError::new(codes::FORBIDDEN, text)
            .with_data(serde_json::json!({"reason": "consent_required", "url": url, "id": id})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that declared URL-mode elicitation gets one (-32042, on
    /// HTTP 200, as a per-message answer); one that did not, an error that
    /// names the URL; something with no id to answer, a 403.
    #[test]
    fn consent_is_asked_as_the_client_can_read_it() {
        let url = "https://agent.example/console/connect?link=abc";
        let r = consent_answer("saas", "l1", url, true, true);
        assert_eq!((r.status, r.reason), (200, "consent_required"));
        assert_eq!(r.error.code, codes::URL_ELICITATION_REQUIRED);
        let v = serde_json::to_value(&r.error).expect("json");
        assert_eq!(v["data"]["elicitations"][0]["mode"], "url");
        assert_eq!(v["data"]["elicitations"][0]["url"], url);
        assert_eq!(v["data"]["elicitations"][0]["elicitationId"], "l1");
        let r = consent_answer("saas", "l1", url, false, true);
        assert_eq!(r.status, 200);
        assert_ne!(r.error.code, codes::URL_ELICITATION_REQUIRED);
        assert!(r.error.message.contains(url));
        let r = consent_answer("saas", "l1", url, true, false);
        assert_eq!(r.status, 403);
        assert_ne!(r.error.code, codes::URL_ELICITATION_REQUIRED);
    }

    /// An agent on loopback that answers every request with `head` and
    /// `body` (then holds the connection open `hold`), counting requests.
    async fn agent(
        head: &'static str,
        body: Vec<u8>,
        hold: Duration,
    ) -> (Arc<Agents>, Arc<std::sync::atomic::AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = asked.clone();
        let body = Arc::new(body);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (count, body) = (count.clone(), body.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut b = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&b[..n]),
                        }
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = s.write_all(head.as_bytes()).await;
                    for piece in body.chunks(64 * 1024) {
                        if s.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(hold).await;
                });
            }
        });
        (Agents::new("vault", &[url]).expect("agents"), asked)
    }

    fn per_user() -> VaultCredential {
        VaultCredential {
            header: "authorization".into(),
            prefix: "Bearer ".into(),
            source: VaultSource::PerUser {
                provider: "saas".into(),
                scopes: vec!["read".into()],
            },
        }
    }

    fn ready(token: &str) -> Vec<u8> {
        serde_json::json!({"state": "ready", "token": token, "expires_at": 0, "connection": "c1"})
            .to_string()
            .into_bytes()
    }

    const JSON: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";

    /// An anonymous caller (every such caller is the principal
    /// `anonymous`) has no account of its own: refused before the cache
    /// or an agent is asked, so no caller without credentials ever gets
    /// what a person named `anonymous` connected.
    #[tokio::test]
    async fn an_anonymous_caller_has_no_account_of_its_own() {
        let (agents, asked) = agent(JSON, ready("someone-elses-token-0123"), Duration::ZERO).await;
        let v = VaultClient::new(agents, None, "gw", 1000);
        let anonymous = Principal::anonymous();
        let Err(r) = v.fetch(&anonymous, "saas", &per_user()).await else {
            panic!("an anonymous caller got a credential");
        };
        assert_eq!((r.status, r.reason), (403, "credential_needs_principal"));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A caller who is someone gets their own.
        let alice = Principal {
            id: "alice".into(),
            auth: AuthMethod::ApiKey,
            ..Principal::anonymous()
        };
        assert!(matches!(
            v.fetch(&alice, "saas", &per_user()).await,
            Ok(Fetched::Ready(_, ref value, _)) if value == "Bearer someone-elses-token-0123"
        ));
    }

    /// An answer with an empty token would send the header's prefix alone:
    /// the call is refused, never made without its credential.
    #[tokio::test]
    async fn an_empty_credential_is_no_credential() {
        let (agents, _) = agent(JSON, ready(""), Duration::ZERO).await;
        let v = VaultClient::new(agents, None, "gw", 1000);
        let alice = Principal {
            id: "alice".into(),
            auth: AuthMethod::ApiKey,
            ..Principal::anonymous()
        };
        let Err(r) = v.fetch(&alice, "saas", &per_user()).await else {
            panic!("a credential of nothing was taken");
        };
        assert_eq!((r.status, r.reason), (502, "credential_unavailable"));
    }

    /// An agent's answer past 64 KiB is not read on (nor held): the call
    /// is refused at once, not after the agent's whole answer or the
    /// timeout.
    #[tokio::test]
    async fn an_oversized_answer_is_not_read_past_its_bound() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n";
        let (agents, _) = agent(head, vec![b' '; 8 << 20], Duration::from_secs(60)).await;
        let v = VaultClient::new(agents, None, "gw", 1000);
        let alice = Principal {
            id: "alice".into(),
            auth: AuthMethod::ApiKey,
            ..Principal::anonymous()
        };
        let fetched =
            tokio::time::timeout(Duration::from_secs(5), v.fetch(&alice, "saas", &per_user()))
                .await
                .expect("refused within 5 s, not at the 15 s timeout");
        let Err(r) = fetched else {
            panic!("an oversized answer was taken");
        };
        assert_eq!((r.status, r.reason), (502, "credential_unavailable"));
    }

    /// No two principals, tenants, servers or scope sets share a cached
    /// credential; a static secret is one entry whoever calls.
    #[test]
    fn cached_credentials_are_keyed_by_whose_they_are() {
        let p = |tenant: &str, id: &str| Principal {
            tenant: tenant.into(),
            id: id.into(),
            ..Principal::anonymous()
        };
        let per_user = |scopes: &[&str]| VaultCredential {
            header: "authorization".into(),
            prefix: "Bearer ".into(),
            source: VaultSource::PerUser {
                provider: "saas".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        };
        let k = VaultClient::key;
        let a = k(&p("acme", "alice"), "saas", &per_user(&["r"]));
        assert_eq!(a, k(&p("ACME", "alice"), "saas", &per_user(&["r"])));
        for other in [
            k(&p("acme", "bob"), "saas", &per_user(&["r"])),
            k(&p("globex", "alice"), "saas", &per_user(&["r"])),
            k(&p("acme", "alice"), "crm", &per_user(&["r"])),
            k(&p("acme", "alice"), "saas", &per_user(&["r", "w"])),
            k(&p("acme", "ａｌｉｃｅ"), "saas", &per_user(&["r"])),
        ] {
            assert_ne!(a, other);
        }
        let secret = VaultCredential {
            header: "x-key".into(),
            prefix: String::new(),
            source: VaultSource::Secret {
                name: "jira".into(),
            },
        };
        assert_eq!(
            k(&p("acme", "alice"), "s", &secret),
            k(&p("x", "bob"), "s", &secret)
        );
    }
}
