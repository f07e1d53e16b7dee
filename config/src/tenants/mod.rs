//! Tenant layers and the registry (`docs/governance.md`).
//!
//! The org's `warden.yaml` grants tenants their space (`tenants:`, read
//! into [`Grant`]s). Each tenant's layer lives in the bundle under
//! `tenants/<tenant>/` (`tenant.yaml`, `*.rego`, `.layer.json`) and may
//! only narrow what the org allows: [`check_layer`] refuses everything
//! that would widen (see `checks`), each refusal a [`Problem`] naming the
//! layer's file and the rule. `registry.json` holds each registered
//! server's lifecycle state ([`Registry`], `registry`).
//!
//! [`Bundle::load`](crate::Bundle::load) runs the same checks; the control
//! agent calls [`check_layer`] to validate one layer against the org's
//! config before it publishes it.

mod checks;
mod registry;

use std::collections::{BTreeMap, HashMap};

use crate::access::{ApiKey, ServerCatalog};
use crate::archive::Files;
use crate::error::Problem;
use crate::guards::{Dlp, HostPattern, Quota};
use crate::model::{Config, Route, Server};
use crate::raw;

pub use checks::{grant_covers_route, package_in_tenant, same_server_name, valid_tenant_name};
pub use registry::{registry, RegisteredServer, RegisteredTool, Registry, REGISTRY_FILE};

pub use crate::archive::{LAYER_META_FILE, TENANTS_DIR};
pub use crate::model::{Grant, ORG_ONLY_ATTRIBUTES, ORG_ONLY_ROLES, TESTER_ROLE};
/// A layer's own file.
pub const LAYER_FILE: &str = "tenant.yaml";

/// One tenant's validated layer.
#[derive(Debug, Clone)]
pub struct TenantLayer {
    /// The tenant (canonical: equal to its directory's name and its grant).
    pub tenant: String,
    /// `.layer.json`'s revision, or `sha256:<digest>` without one.
    pub revision: String,
    /// [`crate::archive::layer_digest`] of the layer's files.
    pub digest: String,
    /// `.layer.json`, when the layer has one.
    pub meta: Option<raw::LayerMetaConfig>,
    /// HTTP servers (their `group` is `tenant:<tenant>`).
    pub servers: Vec<Server>,
    pub routes: Vec<Route>,
    /// Entries for this layer's servers.
    pub catalog: HashMap<String, ServerCatalog>,
    /// Principals of this tenant (each marked as the layer's:
    /// [`ApiKey::layer`]), with the roles, attributes and kind the org's
    /// grant allows and none the org keeps for itself.
    pub api_keys: Vec<ApiKey>,
    /// Named `<tenant>/<name>`; counted for calls in the tenant's scope only.
    pub quotas: Vec<Quota>,
    /// Rules judged beside the org's for calls in scope.
    pub dlp: Option<Dlp>,
    /// `None`: the layer does not narrow egress.
    pub egress_allow: Option<Vec<HostPattern>>,
    /// Approvers per risk tier (0: none asked by the layer).
    pub approvals: [u8; 4],
    /// Rego modules by path relative to the bundle root (`tenants/<t>/x.rego`).
    pub policies: BTreeMap<String, String>,
}

impl TenantLayer {
    /// `data.warden.tenants.<tenant>.decision`.
    pub fn entrypoint(&self) -> String {
        entrypoint(&self.tenant)
    }

    /// How audit records name the layer: `<tenant>@<revision>`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.tenant, self.revision)
    }
}

/// The rule a tenant's Rego must define.
pub fn entrypoint(tenant: &str) -> String {
    format!("data.warden.tenants.{tenant}.decision")
}

/// The `.manifest` member naming the tenants whose layer is withheld:
/// `{"<tenant>": "<why>"}`. The control agent writes it when a tenant's
/// current layer does not compose with the org's config (its grant
/// removed, narrowed or moved, or any other refusal) and is left out of
/// what it serves; the bundle's signature covers it with every other
/// file. The gateway refuses every call of such a tenant's principals
/// until a bundle carries the tenant's layer again: a tenant never has
/// fewer rules than it asked for.
pub const WITHHELD_MEMBER: &str = "withheld_layers";

/// Every tenant layer of a bundle, and the registry.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    /// By tenant.
    pub layers: BTreeMap<String, TenantLayer>,
    /// The owning tenant of each tenant server, by server name.
    pub owners: HashMap<String, String>,
    /// `registry.json`; `None`: nothing is registered.
    pub registry: Option<Registry>,
    /// Tenants whose layer is withheld ([`WITHHELD_MEMBER`]): why, by
    /// tenant (its name, as a grant names it).
    pub withheld: BTreeMap<String, String>,
}

impl Tenants {
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.registry.is_none() && self.withheld.is_empty()
    }

    /// The tenant owning `server`, if a layer defines it.
    pub fn owner(&self, server: &str) -> Option<&str> {
        self.owners.get(server).map(String::as_str)
    }
}

/// Validates one tenant's layer against the org's config (and the layers
/// of the other tenants already accepted, whose server names and routes
/// it must not reuse). `files` are the layer's files by path relative to
/// the layer's directory (`tenant.yaml`, `policy.rego`, `.layer.json`);
/// `dir` is the directory's name (the tenant). Every refusal is a
/// [`Problem`] whose file is `tenants/<dir>/<file>`.
pub fn check_layer(
    org: &Config,
    others: &[&TenantLayer],
    dir: &str,
    files: &Files,
) -> Result<TenantLayer, Vec<Problem>> {
    checks::layer(org, others, dir, files)
}

/// Composes validated layers into the org's config: their servers,
/// routes, catalog entries and API keys join the org's (the rules that
/// apply by scope — Rego, DLP, egress, quotas, approvals — stay in the
/// layers, for the gateway's snapshot).
pub fn compose(config: &mut Config, layers: &BTreeMap<String, TenantLayer>) {
    for layer in layers.values() {
        if !layer.servers.is_empty() {
            config.service_groups.push(crate::model::ServiceGroup {
                name: format!("tenant:{}", layer.tenant),
                servers: layer.servers.iter().map(|s| s.name.clone()).collect(),
            });
        }
        config.servers.extend(layer.servers.iter().cloned());
        config.routes.extend(layer.routes.iter().cloned());
        for (server, c) in &layer.catalog {
            config.catalog.insert(server.clone(), c.clone());
        }
        if let Some(id) = &mut config.identity {
            id.api_keys.extend(layer.api_keys.iter().cloned());
        }
    }
}

/// Reads [`WITHHELD_MEMBER`] from a manifest's members (problems at the
/// member's path in `.manifest`): an object whose keys are tenant names
/// and whose values are strings, naming no tenant whose layer the bundle
/// carries (a layer cannot be both served and withheld).
pub fn withheld(
    manifest: &BTreeMap<String, serde_json::Value>,
    layers: &BTreeMap<String, TenantLayer>,
    p: &mut crate::error::Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(v) = manifest.get(WITHHELD_MEMBER) else {
        return out;
    };
    let Some(m) = v.as_object() else {
        p.push(
            WITHHELD_MEMBER,
            "must be an object: tenant → why its layer is withheld",
        );
        return out;
    };
    for (t, why) in m {
        let path = format!("{WITHHELD_MEMBER}.{t}");
        if let Err(e) = valid_tenant_name(t) {
            p.push(path, e);
            continue;
        }
        if layers.contains_key(t) {
            p.push(
                path,
                format!("the bundle carries tenant `{t}`'s layer: it cannot be withheld too"),
            );
            continue;
        }
        match why.as_str() {
            Some(w) => {
                out.insert(t.clone(), w.to_owned());
            }
            None => p.push(path, "must be a string: why the layer is withheld"),
        }
    }
    out
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod bundle_tests;
