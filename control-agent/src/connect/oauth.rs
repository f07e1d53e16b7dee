//! The agent as an OAuth client of a provider people connect their
//! accounts at: the authorization URL (code + PKCE S256), the code
//! exchanged, a refresh, a revocation (RFC 7009). No proxy from the
//! environment and no redirects (a redirect would take the client secret
//! and the tokens elsewhere); the provider's answer is read up to 64 KiB.

use std::time::Duration;

use super::config::Provider;

/// The most of a provider's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// Tokens a provider issued.
#[derive(Clone)]
pub struct Issued {
    pub access: String,
    pub refresh: Option<String>,
    /// Seconds the access token lives (`None`: not said).
    pub expires_in: Option<u64>,
    /// The scopes granted, when the provider said (RFC 6749 5.1).
    pub scope: Option<Vec<String>>,
}

/// Why a provider gave no tokens.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The provider refused the grant (`invalid_grant`, …): a refresh that
    /// gets this asks the person for consent again.
    #[error("the provider refused: {0}")]
    Grant(String),
    /// The provider could not be reached, or did not answer as OAuth says.
    #[error("the provider cannot be reached: {0}")]
    Unreachable(String),
}

/// A client for the providers.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // A provider's keep-alive may close an idle connection under us.
        .pool_max_idle_per_host(0)
        .build()?)
}

/// Where the person's browser goes to consent.
pub fn authorize_url(p: &Provider, scopes: &[String], state: &str, challenge: &str) -> String {
    let mut url = p.authorization_endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &p.client_id)
            .append_pair("redirect_uri", p.redirect_url.as_str())
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        if let Some(r) = &p.resource {
            q.append_pair("resource", r);
        }
    }
    url.into()
}

/// A form sent to the token endpoint, with the client's authentication.
async fn token_call(
    http: &reqwest::Client,
    p: &Provider,
    form: &[(&str, &str)],
) -> Result<Issued, Refused> {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("client_id", &p.client_id));
    if let Some(r) = &p.resource {
        fields.push(("resource", r));
    }
    let mut req = http
        .post(p.token_endpoint.clone())
        .timeout(p.timeout)
        .header(http::header::ACCEPT, "application/json")
        .form(&fields);
    if let Some(s) = &p.client_secret {
        req = req.basic_auth(form_encode(&p.client_id), Some(form_encode(s)));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Refused::Unreachable(e.without_url().to_string()))?;
    let status = resp.status();
    let body = read_bounded(resp).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| Refused::Unreachable(format!("status {status}, not JSON")))?;
    if !status.is_success() {
        // RFC 6749 5.2: `error` and `error_description` are ASCII without
        // quotes or backslashes; what else a provider writes is dropped.
        let said = |k: &str, max: usize| -> String {
            v[k].as_str()
                .unwrap_or("")
                .chars()
                .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
                .take(max)
                .collect()
        };
        let mut code = said("error", 64);
        let described = said("error_description", 200);
        if !code.is_empty() && !described.is_empty() {
            code = format!("{code} ({described})");
        }
        return Err(if status.is_client_error() && !code.is_empty() {
            Refused::Grant(code)
        } else {
            Refused::Unreachable(format!("status {status}"))
        });
    }
    let access = v["access_token"]
        .as_str()
        .filter(|t| {
            !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| (0x21..0x7f).contains(&b))
        })
        .ok_or_else(|| Refused::Unreachable("no usable access_token in the answer".into()))?
        .to_owned();
    if let Some(t) = v["token_type"].as_str() {
        // RFC 6749 7.1: token types are case-insensitive.
        let bearer = t.eq_ignore_ascii_case("bearer"); // not a name comparison: a token type
        if !bearer {
            return Err(Refused::Unreachable(format!(
                "token_type `{}` is not Bearer",
                t.escape_debug()
            )));
        }
    }
    Ok(Issued {
        access,
        refresh: v["refresh_token"]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= 16 * 1024)
            .map(str::to_owned),
        expires_in: v["expires_in"].as_u64(),
        scope: v["scope"].as_str().map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
    })
}

/// RFC 6749 2.3.1: the client id and secret are form-encoded before
/// they go into HTTP Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, Refused> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Refused::Unreachable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Refused::Unreachable("the answer is over 64 KiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The code of the callback exchanged (with the PKCE verifier).
pub async fn exchange(
    http: &reqwest::Client,
    p: &Provider,
    code: &str,
    verifier: &str,
) -> Result<Issued, Refused> {
    token_call(
        http,
        p,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", p.redirect_url.as_str()),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// A refresh of `refresh_token`.
pub async fn refresh(
    http: &reqwest::Client,
    p: &Provider,
    refresh_token: &str,
) -> Result<Issued, Refused> {
    token_call(
        http,
        p,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Revokes `token` at the provider (RFC 7009), when it has an endpoint:
/// whether the provider said it was done.
pub async fn revoke(http: &reqwest::Client, p: &Provider, token: &str, hint: &str) -> bool {
    let Some(endpoint) = &p.revocation_endpoint else {
        return false;
    };
    let mut req = http.post(endpoint.clone()).timeout(p.timeout).form(&[
        ("token", token),
        ("token_type_hint", hint),
        ("client_id", &p.client_id),
    ]);
    if let Some(s) = &p.client_secret {
        req = req.basic_auth(form_encode(&p.client_id), Some(form_encode(s)));
    }
    matches!(req.send().await, Ok(r) if r.status().is_success())
}
