//! The provider file (`serve --oidc FILE`): which provider, which client,
//! which claims make which role, how often roles are read again, and what
//! a CRITICAL approval asks of a sign-in.
//!
//! ```yaml
//! issuer: https://login.example.com/realms/acme   # discovery: {issuer}/.well-known/openid-configuration
//! client_id: warden-console
//! client_secret_env: WARDEN_OIDC_SECRET            # or client_secret_file; neither: a public client (PKCE alone)
//! redirect_url: https://warden.example.com/console/oidc/callback
//! scopes: [openid, profile, email, groups]         # openid is added when missing
//! roles:                                           # the first rule a person matches is their role
//!   - {claim: groups, value: warden-admins, role: org_admin}
//!   - {claim: groups, value: warden-reviewers, role: org_reviewer}
//!   - {claim: groups, value: finance-admins, role: tenant_admin, tenant: finance}
//!   - {claim: groups, value: approvers, role: approver, tenants: [acme]}
//!   - {claim: groups, value: everyone, role: viewer}
//! principal_claims: [sub]                          # the principals a person also is (never approving their calls)
//! principal_tenant_claim: tenant                   # optional: the tenant those principals are of (a bare id is then that tenant's alone)
//! recheck: 5m                                      # roles read again from the provider this often
//! clock_skew: 60s                                  # at most 5m
//! critical: {max_age: 5m, acr: []}                 # a CRITICAL approval needs a sign-in this recent (and one of these acr)
//! token_login: true                                # false: the console's token form is closed (the API keeps its tokens)
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The longest clock skew the agent allows a provider.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The provider file, checked.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer exactly as the provider names itself (no trailing slash
    /// added or removed).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client.
    pub client_secret: Option<String>,
    pub redirect_url: url::Url,
    pub scopes: Vec<String>,
    pub roles: Vec<RoleRule>,
    pub principal_claims: Vec<String>,
    /// The claim naming the tenant of the principals a person is: a bare
    /// id of `principal_claims` is then that tenant's (`tenant/id`), not
    /// an id of every tenant. A consent link is opened only by a person
    /// whose principal names its tenant when this is set.
    pub principal_tenant_claim: Option<String>,
    pub recheck: Duration,
    pub clock_skew: Duration,
    pub critical: Option<Critical>,
    pub token_login: bool,
}

/// What a CRITICAL approval asks of the approver's sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Critical {
    /// The sign-in at the provider is at most this old.
    pub max_age: Duration,
    /// One of these authentication context classes (none: any).
    pub acr: Vec<String>,
}

/// One rule: a person whose `claim` holds `value` (the claim a string
/// equal to it, or an array holding it) is `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    pub claim: String,
    pub value: String,
    pub role: GrantedRole,
}

/// The roles a rule can give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantedRole {
    OrgAdmin,
    OrgReviewer,
    TenantAdmin(String),
    /// Decides held calls of these tenants (empty: every tenant).
    Approver(Vec<String>),
    /// Reads the console for these tenants (empty: every tenant).
    Viewer(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<std::path::PathBuf>,
    redirect_url: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    roles: Vec<RawRule>,
    #[serde(default)]
    principal_claims: Option<Vec<String>>,
    #[serde(default)]
    principal_tenant_claim: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    recheck: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    clock_skew: Option<Duration>,
    #[serde(default)]
    critical: Option<RawCritical>,
    #[serde(default)]
    token_login: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritical {
    #[serde(with = "humantime_serde_req")]
    max_age: Duration,
    #[serde(default)]
    acr: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    claim: String,
    value: String,
    role: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    tenants: Option<Vec<String>>,
}

mod humantime_serde_opt {
    use serde::Deserialize;
    use std::time::Duration;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod humantime_serde_req {
    use serde::Deserialize;
    use std::time::Duration;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Reads and checks the provider file.
pub fn read(path: &Path) -> anyhow::Result<OidcConfig> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(
        &text,
        |var| std::env::var(var).ok(),
        |p| std::fs::read_to_string(p).ok(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Whether `u` is served on this machine (`http` is accepted only there).
pub(crate) fn loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"), // not a name comparison: a DNS host name
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// An `https` URL, or an `http` one on loopback.
pub(crate) fn secure_url(what: &str, s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{what} `{s}`: {e}"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback(&u) => Ok(u),
        _ => Err(format!(
            "{what} `{s}` must be https (http only on this machine's loopback)"
        )),
    }
}

/// Parses the provider file's text; `env` and `file` read the client
/// secret where the file says it is.
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    file: impl Fn(&Path) -> Option<String>,
) -> Result<OidcConfig, String> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let issuer_url = secure_url("issuer", &raw.issuer)?;
    if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
        return Err(format!(
            "issuer `{}` has a query or fragment: an issuer is a plain URL",
            raw.issuer
        ));
    }
    if raw.client_id.is_empty() || raw.client_id.chars().any(char::is_control) {
        return Err("client_id is empty or holds control characters".into());
    }
    let client_secret = match (&raw.client_secret_env, &raw.client_secret_file) {
        (Some(_), Some(_)) => {
            return Err(
                "name the client secret once: client_secret_env or client_secret_file".into(),
            )
        }
        (Some(var), None) => Some(
            env(var)
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| format!("client_secret_env: `{var}` is not set or empty"))?,
        ),
        (None, Some(p)) => Some(
            file(p)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "client_secret_file: `{}` cannot be read or is empty",
                        p.display()
                    )
                })?,
        ),
        (None, None) => None,
    };
    let redirect_url = secure_url("redirect_url", &raw.redirect_url)?;
    if redirect_url.path() != "/console/oidc/callback" {
        return Err(format!(
            "redirect_url `{}` must end in /console/oidc/callback (the agent's callback, as the provider knows it)",
            raw.redirect_url
        ));
    }
    let mut scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    if let Some(s) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        return Err(format!("scope `{}` is not a scope token", s.escape_debug()));
    }
    if raw.roles.is_empty() {
        return Err("roles: no rule, so nobody could sign in".into());
    }
    let roles = raw
        .roles
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule(r).map_err(|e| format!("roles[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let principal_claims = raw.principal_claims.unwrap_or_else(|| vec!["sub".into()]);
    // No claim would make a person no principal at all: an approver who
    // also calls through the gateway would approve their own held calls.
    if principal_claims.is_empty() || principal_claims.iter().any(String::is_empty) {
        return Err(
            "principal_claims: name at least one claim (sub, say), none empty: the principals a person is are never theirs to approve".into(),
        );
    }
    let recheck = raw.recheck.unwrap_or(Duration::from_secs(300));
    if recheck < Duration::from_secs(1) || recheck > Duration::from_secs(24 * 3600) {
        return Err("recheck: between 1s and 24h".into());
    }
    let clock_skew = raw.clock_skew.unwrap_or(Duration::from_secs(60));
    if clock_skew > MAX_SKEW {
        return Err(format!("clock_skew: at most {}s", MAX_SKEW.as_secs()));
    }
    let critical = raw.critical.map(|c| Critical {
        max_age: c.max_age,
        acr: c.acr,
    });
    if critical
        .as_ref()
        .is_some_and(|c| c.max_age < Duration::from_secs(1))
    {
        return Err("critical.max_age: at least 1s".into());
    }
    Ok(OidcConfig {
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret,
        redirect_url,
        scopes,
        roles,
        principal_claims,
        principal_tenant_claim: raw.principal_tenant_claim.filter(|c| !c.is_empty()),
        recheck,
        clock_skew,
        critical,
        token_login: raw.token_login.unwrap_or(true),
    })
}

fn rule(r: RawRule) -> Result<RoleRule, String> {
    if r.claim.is_empty() || r.value.is_empty() {
        return Err("claim and value must not be empty".into());
    }
    let no = |field: &str| format!("`{field}` is not a {}'s", r.role);
    let role = match r.role.as_str() {
        "org_admin" | "org_reviewer" => {
            if r.tenant.is_some() {
                return Err(no("tenant"));
            }
            if r.tenants.is_some() {
                return Err(no("tenants"));
            }
            if r.role == "org_admin" {
                GrantedRole::OrgAdmin
            } else {
                GrantedRole::OrgReviewer
            }
        }
        "tenant_admin" => {
            if r.tenants.is_some() {
                return Err(no("tenants"));
            }
            let t = r
                .tenant
                .filter(|t| !t.trim().is_empty())
                .ok_or("a tenant_admin rule names its `tenant`")?;
            GrantedRole::TenantAdmin(crate::admins::tenant_name(&t)?)
        }
        "approver" | "viewer" => {
            if r.tenant.is_some() {
                return Err(no("tenant"));
            }
            let t = r.tenants.unwrap_or_default();
            if r.role == "approver" {
                GrantedRole::Approver(t)
            } else {
                GrantedRole::Viewer(t)
            }
        }
        other => {
            return Err(format!(
                "role `{other}`: one of org_admin, org_reviewer, tenant_admin, approver, viewer"
            ))
        }
    };
    Ok(RoleRule {
        claim: r.claim,
        value: r.value,
        role,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(text: &str) -> Result<OidcConfig, String> {
        parse(
            text,
            |v| (v == "SECRET").then(|| "s3cret".to_owned()),
            |_| None,
        )
    }

    const BASE: &str = "issuer: https://idp.example\nclient_id: warden\nredirect_url: https://w.example/console/oidc/callback\n";

    #[test]
    fn a_provider_file_reads_as_written() {
        let c = p(&format!(
            "{BASE}client_secret_env: SECRET\nroles:\n  - {{claim: groups, value: ops, role: org_admin}}\n  - {{claim: groups, value: fin, role: tenant_admin, tenant: Finance}}\n  - {{claim: groups, value: ap, role: approver, tenants: [acme]}}\nrecheck: 2s\ncritical: {{max_age: 5m, acr: [mfa]}}\ntoken_login: false\n"
        ))
        .unwrap();
        assert_eq!(c.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.scopes[0], "openid");
        assert_eq!(c.roles.len(), 3);
        assert_eq!(c.roles[2].role, GrantedRole::Approver(vec!["acme".into()]));
        assert_eq!(c.recheck, Duration::from_secs(2));
        assert_eq!(c.principal_claims, vec!["sub".to_owned()]);
        assert!(!c.token_login);
        assert_eq!(
            c.critical,
            Some(Critical {
                max_age: Duration::from_secs(300),
                acr: vec!["mfa".into()]
            })
        );
    }

    /// Each mistake is refused with what is wrong: an http provider off
    /// this machine, a missing secret, a role field that is not the
    /// role's, an unknown role or key, no rule at all, a skew too wide,
    /// a callback elsewhere.
    #[test]
    fn a_wrong_provider_file_says_what_is_wrong() {
        let rule = "roles:\n  - {claim: groups, value: ops, role: org_admin}\n";
        for (text, want) in [
            (
                format!("issuer: http://idp.example\nclient_id: w\nredirect_url: https://w.example/console/oidc/callback\n{rule}"),
                "must be https",
            ),
            (format!("{BASE}client_secret_env: NOPE\n{rule}"), "not set"),
            (
                format!("{BASE}roles:\n  - {{claim: g, value: v, role: approver, tenant: acme}}\n"),
                "`tenant` is not a approver's",
            ),
            (
                format!("{BASE}roles:\n  - {{claim: g, value: v, role: root}}\n"),
                "role `root`",
            ),
            (format!("{BASE}roles: []\n"), "no rule"),
            (format!("{BASE}{rule}clock_skew: 1h\n"), "clock_skew"),
            (format!("{BASE}{rule}surprise: 1\n"), "unknown field"),
            (
                format!("issuer: https://idp.example\nclient_id: w\nredirect_url: https://w.example/elsewhere\n{rule}"),
                "/console/oidc/callback",
            ),
            (
                format!("{BASE}roles:\n  - {{claim: g, value: v, role: tenant_admin}}\n"),
                "names its `tenant`",
            ),
        ] {
            let e = p(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        // On this machine an http provider is a test's or a developer's.
        assert!(p(&format!(
            "issuer: http://127.0.0.1:9\nclient_id: w\nredirect_url: http://127.0.0.1:1/console/oidc/callback\n{rule}"
        ))
        .is_ok());
    }
}
