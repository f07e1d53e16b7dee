//! Typed, validated configuration built from the raw serde types.
//!
//! `Config::from_raw` reads the sections in order through the files beside
//! this one (each reporting its problems at their field path), then runs the
//! checks that span sections:
//!
//! - `listeners`: listeners, the admin address, `security:`.
//! - `limits`: request limits, the memory budget, timeouts.
//! - `audit`: the audit log.
//! - `servers`: service groups and servers (with `stdio`,
//!   `virtual_servers` and `upstream_auth` for their parts).
//! - `routes`: routes to servers.
//! - `checks`: the checks across sections.
//!
//! Identity, policy, catalog and kill switch come from `crate::access`;
//! quotas, schemas, egress, DLP, runaway and approvals from `crate::guards`.

mod audit;
mod checks;
mod grants;
mod kill_switch;
mod limits;
mod listeners;
mod routes;
mod servers;
mod stdio;
mod upstream_auth;
mod virtual_servers;

use std::collections::{HashMap, HashSet};

use crate::access::{self, Identity, KillSwitch, PolicySettings, ServerCatalog};
use crate::error::Problems;
use crate::raw;

use audit::audit;
use checks::{caller_tokens, mtls_listener, upstreams_in_egress, virtual_aliases};
use limits::{limits, timeouts};
use listeners::{admin, allowed_hosts, listeners, undeclared_params};
use routes::routes;
use servers::{check_members, outlast_members};
use upstream_auth::assertions;

pub use crate::fields::{parse_duration, parse_size};
pub use audit::{Audit, AuditFailMode, HttpExport, HttpExportFormat, SyslogExport, SyslogTls};
pub(crate) use grants::grants;
pub use grants::{
    reserved, valid_tenant_name, Grant, ORG_ONLY_ATTRIBUTES, ORG_ONLY_ROLES, TESTER_ROLE,
};
pub use limits::{
    Limits, MemoryBudget, Table, Timeouts, DEFAULT_MAX_BATCH_LEN, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY,
    DEFAULT_MAX_SSE_EVENT, DEFAULT_MEMORY,
};
pub use listeners::{Listener, ListenerTls, UndeclaredParams};
pub(crate) use routes::valid_prefix as valid_route_prefix;
pub use routes::{gateway_own_prefix, Route, GATEWAY_PREFIX};
pub(crate) use servers::service_groups;
pub use servers::{Ejection, HealthCheck, Probe, Server, ServiceGroup, UpstreamTls};
pub use stdio::Stdio;
pub use upstream_auth::{Assertions, CallerToken, IdentityAssertion, OAuthGrant, OutboundOAuth};
pub use virtual_servers::{Prefixing, ToolView, Virtual, VirtualMember};

/// How long a sealed session id opens by default: a working day and
/// then some. A server that hands one session id out again (its counter
/// started over) lets the id's first holder into the second holder's
/// session on a replica that did not relay the second `initialize`, for
/// at most this long; a client that holds one session longer is told it
/// is unknown (404) and opens a new one, as the transport requires.
pub const DEFAULT_SESSION_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Option<String>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub audit: Audit,
    pub allowed_origins: HashSet<String>,
    /// `security.allowed_hosts`, lower-cased (DNS-rebinding protection).
    pub allowed_hosts: HashSet<String>,
    /// `Mcp-Param-*` headers no tool declares: scanned or stripped.
    pub undeclared_params: UndeclaredParams,
    pub service_groups: Vec<ServiceGroup>,
    /// Every server of every group, by name.
    pub servers: Vec<Server>,
    pub routes: Vec<Route>,
    /// `None`: no authentication, every caller is `anonymous`.
    pub identity: Option<Identity>,
    pub policy: PolicySettings,
    /// Tool risk levels by server name.
    pub catalog: HashMap<String, ServerCatalog>,
    pub kill_switch: KillSwitch,
    pub quotas: Vec<crate::guards::Quota>,
    /// Shared store of global quotas.
    pub redis: Option<crate::guards::Redis>,
    /// Money budgets over the catalog's prices.
    pub budgets: crate::budgets::Budgets,
    /// Fleet secret that seals session ids (stateless replicas).
    pub session_seal: Option<crate::access::Secret>,
    /// How long a sealed session id opens after the `initialize` that
    /// issued it (`sessions.max_age`, [`DEFAULT_SESSION_MAX_AGE`] unless
    /// set); `None` (`max_age: none`): as long as the server keeps the
    /// session.
    pub session_max_age: Option<std::time::Duration>,
    pub schemas: crate::guards::Schemas,
    pub egress: crate::guards::Egress,
    /// Per-session budgets and loop detection.
    pub runaway: crate::guards::Runaway,
    /// How identity assertions are signed.
    pub assertions: Assertions,
    /// Human approval of risky calls.
    pub approvals: crate::guards::Approvals,
    /// Fingerprint tool definitions and quarantine changes.
    pub tool_pinning: bool,
    /// `None`: no DLP scanning.
    pub dlp: Option<crate::guards::Dlp>,
    /// `None`: no flow tracking (`flows:`).
    pub flows: Option<crate::flows::Flows>,
    /// `None`: no behaviour baselines (`anomaly:`).
    pub anomaly: Option<crate::anomaly::Anomaly>,
    /// What each tenant may own (`tenants:`); their layers are read with
    /// the bundle (`crate::tenants`).
    pub tenants: std::collections::BTreeMap<String, Grant>,
}

impl Config {
    /// Validates raw config into the typed model, collecting every problem.
    /// `root` resolves the relative file paths the config names.
    pub fn from_raw(raw: &raw::WardenConfig, root: &std::path::Path, p: &mut Problems) -> Config {
        if raw.version != 1 {
            p.push(
                "version",
                format!("unsupported version {} (only 1 exists)", raw.version),
            );
        }
        let listeners = listeners(&raw.listeners, root, p);
        let admin = admin(raw.admin.as_ref(), p);
        let limits = limits(&raw.limits, p);
        let timeouts_v = timeouts(p, "timeouts", &raw.timeouts, Timeouts::default());
        let audit = audit(&raw.audit, p);
        let allowed_origins = raw.security.allowed_origins.iter().cloned().collect();
        let allowed_hosts = allowed_hosts(&raw.security, p);
        let undeclared_params = undeclared_params(&raw.security, p);

        let (groups, mut servers, server_names) =
            service_groups(&raw.service_groups, root, timeouts_v, p);
        check_members(&servers, p);
        outlast_members(&mut servers);
        let routes = routes(&raw.routes, &server_names, p);
        let identity = raw.identity.as_ref().map(|i| access::identity(i, root, p));
        let policy = access::policy(&raw.policy, p);
        let known: HashSet<&str> = servers.iter().map(|s: &Server| s.name.as_str()).collect();
        let flows = crate::flows::flows(raw.flows.as_ref(), p);
        let catalog = access::catalog(&raw.catalog, &known, flows.as_ref(), p);
        let kill_switch = access::kill_switch(&raw.kill_switch, p);
        let redis = crate::guards::redis(raw.redis.as_ref(), p);
        let quotas = crate::guards::quotas(&raw.quotas, redis.is_some(), p);
        virtual_aliases(&servers, &quotas, &kill_switch, &catalog, p);
        let budgets = crate::budgets::budgets(
            raw.budgets.as_ref(),
            access::currency(&catalog),
            &policy.timezone,
            redis.is_some(),
            &known,
            p,
        );
        let session_seal = access::session_seal(raw.sessions.as_ref(), root, p);
        let session_max_age = session_max_age(raw.sessions.as_ref(), p);
        let schemas = crate::guards::schemas(&raw.schemas, p);
        let egress = crate::guards::egress(&raw.egress, p);
        let runaway = crate::guards::runaway(raw.runaway.as_ref(), p);
        let approvals = crate::guards::approvals(raw.approvals.as_ref(), p);
        let assertions = assertions(raw.assertions.as_ref(), raw.identity.as_ref(), p);
        upstreams_in_egress(&raw.service_groups, &egress, p);
        caller_tokens(identity.as_ref(), &servers, p);
        mtls_listener(identity.as_ref(), &listeners, p);
        let tenants = grants(&raw.tenants, p);
        Config {
            tenants,
            identity,
            policy,
            catalog,
            kill_switch,
            quotas,
            redis,
            budgets,
            session_seal,
            session_max_age,
            schemas,
            egress,
            runaway,
            assertions,
            approvals,
            tool_pinning: raw.tool_pinning.enabled.unwrap_or(true),
            dlp: raw.dlp.as_ref().map(|d| crate::guards::dlp(d, p)),
            flows,
            anomaly: raw
                .anomaly
                .as_ref()
                .map(|a| crate::anomaly::anomaly(a, &known, p)),
            listeners,
            admin,
            limits,
            timeouts: timeouts_v,
            audit,
            allowed_origins,
            allowed_hosts,
            undeclared_params,
            service_groups: groups,
            servers,
            routes,
        }
    }

    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// `sessions.max_age`: a duration, `none` for no limit, else the default.
fn session_max_age(
    sessions: Option<&raw::SessionsConfig>,
    p: &mut Problems,
) -> Option<std::time::Duration> {
    match sessions.and_then(|s| s.max_age.as_deref()) {
        Some("none") => None,
        v => Some(crate::fields::duration(
            p,
            "sessions.max_age",
            &v.map(str::to_owned),
            DEFAULT_SESSION_MAX_AGE,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed session id expires after a day unless the bundle says
    /// otherwise; `none` is the only way to keep it open without limit.
    #[test]
    fn a_session_opens_for_a_day_unless_the_bundle_says_otherwise() {
        let mut p = Problems::new("warden.yaml");
        let with = |v: Option<&str>| raw::SessionsConfig {
            max_age: v.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(session_max_age(None, &mut p), Some(DEFAULT_SESSION_MAX_AGE));
        assert_eq!(
            session_max_age(Some(&with(None)), &mut p),
            Some(DEFAULT_SESSION_MAX_AGE)
        );
        assert_eq!(
            session_max_age(Some(&with(Some("8h"))), &mut p),
            Some(std::time::Duration::from_secs(8 * 3600))
        );
        assert_eq!(session_max_age(Some(&with(Some("none"))), &mut p), None);
        assert!(p.is_empty());
        assert_eq!(
            session_max_age(Some(&with(Some("forever"))), &mut p),
            Some(DEFAULT_SESSION_MAX_AGE)
        );
        assert!(!p.is_empty());
    }
}
