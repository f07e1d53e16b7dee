//! How the gateway proves who calls to an upstream, beyond static
//! credentials: identity assertions it signs (`identity_assertion:`,
//! `assertions:`), tokens from an OAuth server (`oauth:`) and the caller's
//! own token (`caller_token:`).

use std::time::Duration;

use crate::access::outbound_header;
use crate::error::Problems;
use crate::fields::duration;
use crate::raw;
use crate::secret::{secret_ref, Secret};

/// How the gateway gets an upstream token from an authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthGrant {
    /// RFC 8693: the caller's validated token, exchanged for one scoped to
    /// this server.
    TokenExchange,
    /// OAuth 2.0 client credentials: the gateway's own service token.
    ClientCredentials,
}

#[derive(Debug, Clone)]
pub struct OutboundOAuth {
    pub grant: OAuthGrant,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub audience: String,
    pub scope: Option<String>,
    /// Lower-case header name; `authorization` carries `Bearer <token>`.
    pub header: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerToken {
    pub audience: String,
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityAssertion {
    pub audience: String,
    pub ttl: Duration,
    /// Lower-case header name; `authorization` carries `Bearer <jwt>`.
    pub header: String,
}

/// Signing settings for identity assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertions {
    pub issuer: String,
    pub rotate: Duration,
}

pub(super) fn identity_assertion(
    raw: &raw::IdentityAssertionConfig,
    base: &str,
    p: &mut Problems,
) -> Option<IdentityAssertion> {
    if raw.audience.trim().is_empty() {
        p.push(
            format!("{base}.audience"),
            "must name the upstream (its resource URL)",
        );
        return None;
    }
    let ttl = duration(p, &format!("{base}.ttl"), &raw.ttl, Duration::from_secs(60));
    if ttl > Duration::from_secs(300) {
        p.push(
            format!("{base}.ttl"),
            "at most 5m: an assertion is a bearer token for its lifetime, and one call needs seconds",
        );
    }
    let header = outbound_header(raw.header.as_deref(), base, p)?;
    Some(IdentityAssertion {
        audience: raw.audience.clone(),
        ttl,
        header,
    })
}

pub(super) fn outbound_oauth(
    raw: &raw::OutboundOAuthConfig,
    root: &std::path::Path,
    base: &str,
    p: &mut Problems,
) -> Option<OutboundOAuth> {
    let grant = match raw.grant.as_str() {
        "token_exchange" => OAuthGrant::TokenExchange,
        "client_credentials" => OAuthGrant::ClientCredentials,
        g => {
            p.push(
                format!("{base}.grant"),
                format!("`{g}` is not `token_exchange` or `client_credentials`"),
            );
            return None;
        }
    };
    let e = &raw.token_endpoint;
    if !(e.starts_with("https://") || e.starts_with("http://"))
        || e.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        p.push(format!("{base}.token_endpoint"), "must be an http(s) URL");
        return None;
    }
    // The caller's token and the client secret travel to it: TLS, unless
    // the authorization server is on this host.
    // Read as the HTTP client will read it (WHATWG URL parsing).
    let Ok(parsed) = url::Url::parse(e) else {
        p.push(format!("{base}.token_endpoint"), "must be an http(s) URL");
        return None;
    };
    if parsed.scheme() == "http" {
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        };
        if !loopback || !parsed.username().is_empty() || parsed.password().is_some() {
            p.push(
                format!("{base}.token_endpoint"),
                "must be https (the caller's token and the client secret go there); plain http only on loopback",
            );
            return None;
        }
    }
    for (field, v) in [("client_id", &raw.client_id), ("audience", &raw.audience)] {
        if v.trim().is_empty() || v.chars().any(char::is_control) {
            p.push(format!("{base}.{field}"), "must not be empty");
            return None;
        }
    }
    let client_secret = secret_ref(
        raw.client_secret.env.as_deref(),
        raw.client_secret.file.as_deref(),
        root,
        &format!("{base}.client_secret"),
        p,
    )?;
    let timeout = duration(
        p,
        &format!("{base}.timeout"),
        &raw.timeout,
        Duration::from_secs(5),
    );
    let header = outbound_header(raw.header.as_deref(), base, p)?;
    Some(OutboundOAuth {
        grant,
        token_endpoint: e.clone(),
        client_id: raw.client_id.clone(),
        client_secret,
        audience: raw.audience.clone(),
        scope: raw.scope.clone().filter(|s| !s.trim().is_empty()),
        header,
        timeout,
    })
}

pub(super) fn assertions(
    raw: Option<&raw::AssertionsConfig>,
    identity: Option<&raw::IdentityConfig>,
    p: &mut Problems,
) -> Assertions {
    let issuer = raw.and_then(|r| r.issuer.clone()).unwrap_or_else(|| {
        identity
            .and_then(|i| url::Url::parse(&i.resource).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .unwrap_or_else(|| "urn:warden".into())
    });
    let rotate = duration(
        p,
        "assertions.rotate",
        &raw.and_then(|r| r.rotate.clone()),
        Duration::from_secs(3600),
    );
    if rotate < Duration::from_secs(60) {
        p.push("assertions.rotate", "at least 1m");
    }
    Assertions { issuer, rotate }
}
