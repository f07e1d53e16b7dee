//! Who a person signed in through the provider is to the agent: their
//! name (`oidc:<sub>`, the provider's subject under the one configured
//! issuer), the role the first matching rule gives them, and the
//! principals they also are (never approving those principals' calls).

use serde_json::{Map, Value};
use warden_config::person::Person;

use super::config::{GrantedRole, OidcConfig};
use crate::admins::{Actor, Kind};
use crate::console::user::{Role, SignedIn, User};

/// The prefix of every name a provider's sign-in gives (kept with the
/// people files' rules: no file may name anyone so).
pub use crate::admins::OIDC_PREFIX as PREFIX;

/// Whether a claim holds `value`: a string equal to it, or an array
/// holding such a string (compared exactly: the provider's group names).
fn holds(claim: Option<&Value>, value: &str) -> bool {
    match claim {
        Some(Value::String(s)) => s == value,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(value)),
        _ => false,
    }
}

/// The names a claim holds (one, or those of an array, however nested):
/// strings, and numbers as written (an employee number the gateway knows
/// a person by is a principal all the same). Whatever is dropped here the
/// person could approve their own calls under, so nothing that can name
/// a principal is.
fn strings(claim: Option<&Value>) -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(v) = claim {
        collect(v, &mut out);
    }
    out
}

/// What a sign-in gave, before the role.
pub struct Signed<'a> {
    pub sub: &'a str,
    pub claims: &'a Map<String, Value>,
    pub auth_time: Option<u64>,
    pub acr: Option<String>,
    /// Seconds since the epoch.
    pub now: u64,
}

/// The console user a sign-in makes, or (`None`) nobody: no rule matches.
pub fn user_of(cfg: &OidcConfig, s: &Signed<'_>) -> Option<User> {
    let rule = cfg
        .roles
        .iter()
        .find(|r| holds(s.claims.get(&r.claim), &r.value))?;
    let name = format!("{PREFIX}{}", s.sub);
    let actor = |kind| {
        Some(Actor {
            name: name.clone(),
            kind,
        })
    };
    let (role, tenants, actor) = match &rule.role {
        GrantedRole::OrgAdmin => (Role::Admin, Vec::new(), actor(Kind::OrgAdmin)),
        GrantedRole::OrgReviewer => (Role::Viewer, Vec::new(), actor(Kind::OrgReviewer)),
        GrantedRole::TenantAdmin(t) => (
            Role::Viewer,
            vec![t.clone()],
            actor(Kind::TenantAdmin(t.clone())),
        ),
        GrantedRole::Approver(t) => (Role::Approver, t.clone(), None),
        GrantedRole::Viewer(t) => (Role::Viewer, t.clone(), None),
    };
    let Identity {
        sub: _,
        shown,
        principals,
    } = identity_of(cfg, s);
    Some(User {
        name,
        role,
        tenants,
        actor,
        oidc: Some(SignedIn {
            sub: s.sub.to_owned(),
            shown,
            principals,
            auth_time: known_auth_time(s.auth_time, s.now, cfg.clock_skew.as_secs()),
            acr: s.acr.clone(),
            recheck_at: s.now + cfg.recheck.as_secs(),
        }),
        cli: false,
    })
}

/// When the provider last authenticated the person, as a CRITICAL
/// approval may trust it: a token that names no `auth_time` (a provider
/// names it only when asked: `max_age`, a claims request) says nothing of
/// it — the login behind a recheck's `prompt=none` may be days old — so
/// it is no time at all (0: never fresh), not now. One in the future is
/// now at most, and past the clock skew no time either (a clock or a
/// provider gone wrong does not keep a sign-in fresh until then).
fn known_auth_time(auth_time: Option<u64>, now: u64, skew: u64) -> u64 {
    match auth_time {
        Some(at) if at <= now.saturating_add(skew) => at.min(now),
        _ => 0,
    }
}

/// Who a signed-in person is, whatever their role: their subject, the
/// name shown for them and the principals their claims name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub sub: String,
    pub shown: String,
    pub principals: Vec<String>,
}

/// The [`Identity`] of a signed-in person.
pub fn identity_of(cfg: &OidcConfig, s: &Signed<'_>) -> Identity {
    let tenant = cfg
        .principal_tenant_claim
        .as_ref()
        .and_then(|c| s.claims.get(c))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains(['/', '／']) && Person::parse(t).is_ok())
        .map(str::to_owned);
    let mut principals: Vec<String> = Vec::new();
    for c in &cfg.principal_claims {
        let vals = if c == "sub" {
            vec![s.sub.to_owned()]
        } else {
            strings(s.claims.get(c))
        };
        for v in vals {
            // A bare id is read in the person's tenant when the provider
            // names one (`principal_tenant_claim`): `alice` of `acme`,
            // never `alice` of every tenant.
            let v = match &tenant {
                Some(t) if !v.contains(['/', '／']) => format!("{t}/{v}"),
                _ => v,
            };
            // A value with no canonical form names nobody a call could
            // come from under it (the gateway refuses such names).
            if Person::parse(&v).is_ok() && !principals.contains(&v) {
                principals.push(v);
            }
        }
    }
    let shown: String = ["preferred_username", "email", "name"]
        .iter()
        .find_map(|c| s.claims.get(*c).and_then(Value::as_str))
        // The person's to choose at many providers: no control, bidi
        // override or other invisible character reorders or hides what
        // the console writes around it.
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control() && !warden_config::person::invisible(*c))
                .take(80)
                .collect()
        })
        .unwrap_or_else(|| s.sub.to_owned());
    Identity {
        sub: s.sub.to_owned(),
        shown,
        principals,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> OidcConfig {
        super::super::config::parse(
            "issuer: https://idp.example\nclient_id: w\nredirect_url: https://w.example/console/oidc/callback\n\
             roles:\n  - {claim: groups, value: ops, role: org_admin}\n  - {claim: groups, value: fin, role: tenant_admin, tenant: finance}\n  - {claim: roles, value: approve, role: approver, tenants: [acme]}\n  - {claim: groups, value: all, role: viewer}\n\
             principal_claims: [sub, email]\n",
            |_| None,
            |_| None,
        )
        .unwrap()
    }

    fn sign(claims: Value) -> Option<User> {
        let m = claims.as_object().unwrap().clone();
        user_of(
            &cfg(),
            &Signed {
                sub: "u-1",
                claims: &m,
                auth_time: Some(90),
                acr: None,
                now: 100,
            },
        )
    }

    /// The first rule whose claim holds its value gives the role: a
    /// string or an array holding it, compared exactly; nothing matching
    /// is nobody.
    #[test]
    fn claims_give_the_first_matching_role() {
        let u = sign(serde_json::json!({"groups": ["all", "ops"]})).unwrap();
        assert_eq!((u.role, u.name.as_str()), (Role::Admin, "oidc:u-1"));
        assert_eq!(u.actor.unwrap().kind, Kind::OrgAdmin);
        let u = sign(serde_json::json!({"groups": "fin"})).unwrap();
        assert_eq!(u.role, Role::Viewer);
        assert_eq!(u.tenants, vec!["finance".to_owned()]);
        assert_eq!(u.actor.unwrap().kind, Kind::TenantAdmin("finance".into()));
        let u = sign(serde_json::json!({"roles": ["approve"], "groups": ["all"]})).unwrap();
        assert_eq!(
            (u.role, u.tenants.clone()),
            (Role::Approver, vec!["acme".to_owned()])
        );
        assert!(u.actor.is_none());
        assert!(sign(serde_json::json!({"groups": ["OPS", "op", " ops"]})).is_none());
        assert!(sign(serde_json::json!({"groups": [{"ops": 1}], "roles": "approver"})).is_none());
        assert!(sign(serde_json::json!({})).is_none());
    }

    /// With `principal_tenant_claim`, a person's bare principals are their
    /// tenant's (`acme/u-1`); a qualified one keeps its own tenant; a
    /// tenant claim that is no tenant (a slash, empty) qualifies nothing.
    #[test]
    fn a_tenant_claim_qualifies_the_persons_bare_principals() {
        let mut c = cfg();
        c.principal_tenant_claim = Some("tenant".into());
        let of = |claims: Value| {
            identity_of(
                &c,
                &Signed {
                    sub: "u-1",
                    claims: claims.as_object().unwrap(),
                    auth_time: None,
                    acr: None,
                    now: 100,
                },
            )
            .principals
        };
        assert_eq!(
            of(serde_json::json!({"tenant": "acme", "email": "globex/ann"})),
            vec!["acme/u-1".to_owned(), "globex/ann".to_owned()]
        );
        for no in [
            serde_json::json!({"tenant": "a/b"}),
            serde_json::json!({"tenant": ""}),
            serde_json::json!({}),
        ] {
            assert_eq!(of(no.clone()), vec!["u-1".to_owned()], "{no}");
        }
    }

    /// A person is also the principals their claims name (the subject,
    /// and here their e-mail): the approvals refuse them those calls.
    #[test]
    fn a_person_is_also_the_principals_their_claims_name() {
        let u = sign(serde_json::json!({"groups": "all", "email": "ann@example.com"})).unwrap();
        let o = u.oidc.unwrap();
        assert_eq!(
            o.principals,
            vec!["u-1".to_owned(), "ann@example.com".to_owned()]
        );
        assert_eq!((o.auth_time, o.recheck_at), (90, 400));
        assert_eq!(o.shown, "ann@example.com");
    }
}
