//! Every rule a tenant layer must keep to narrow and never widen what the
//! org allows. Each refusal is a problem in the layer's file naming the
//! rule it breaks.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use crate::access::PrincipalKind;
use crate::archive::{layer_digest, Files};
use crate::error::{Problem, Problems};
use crate::host::{place, place_of, Place};
use crate::model::{Config, Route};
use crate::raw;
use crate::risk::Risk;

pub use crate::model::valid_tenant_name;

use super::{Grant, TenantLayer, LAYER_FILE, LAYER_META_FILE, TENANTS_DIR};

/// Whether a route (`host`, path `prefix`, already a valid route prefix)
/// lies inside the grant: a host route for one of its hosts, or a path
/// under one of its prefixes on a segment boundary (`/finance` covers
/// `/finance` and `/finance/x`, never `/financex`). Paths compare
/// byte-for-byte, as routes match requests: `/Finance` is not `/finance`.
pub fn grant_covers_route(grant: &Grant, host: Option<&str>, prefix: &str) -> bool {
    if let Some(h) = host {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        if grant.hosts.contains(&h) {
            return true;
        }
    }
    grant.path_prefixes.iter().any(|g| under(prefix, g))
}

/// `prefix` equals `base` or lies below it on a segment boundary.
fn under(prefix: &str, base: &str) -> bool {
    base == "/"
        || prefix == base
        || prefix
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a module's package path (its components, as regorus reads
/// them: `package warden.tenants["finance"].x` is `warden`, `tenants`,
/// `finance`, `x`) is `warden.tenants.<tenant>` or below it.
pub fn package_in_tenant(components: &[String], tenant: &str) -> bool {
    components.len() >= 3
        && components[0] == "warden"
        && components[1] == "tenants"
        && components[2] == tenant
}

/// Two routes' host scopes overlap (a host-agnostic route takes every
/// host). Hosts compare as the router matches them: without ASCII case or
/// trailing dots (an org route for `Finance.Example.` is one for
/// `finance.example`).
fn hosts_overlap(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x
            .trim_end_matches('.')
            .eq_ignore_ascii_case(y.trim_end_matches('.')),
        _ => true,
    }
}

/// Whether two server names are one: the one name function
/// ([`crate::names::same_name`]), as the registry, the kill switch and the
/// gateway compare them (`CRM` is the org's `crm`). A layer may take no
/// name the org or another layer has in this comparison: the registry
/// would hold the two as one server, and rules written for one name would
/// be read against the other.
pub fn same_server_name(a: &str, b: &str) -> bool {
    crate::names::same_name(crate::names::Name::Server, a, b)
}

/// Moves problems of a section read by the org's code (named as in
/// `warden.yaml`) to where the layer writes it.
fn relabel(from: Problems, old: &str, new: &str, into: &mut Problems) {
    for pr in from.into_vec() {
        let path = match pr.path.strip_prefix(old) {
            Some(rest) => format!("{new}{rest}"),
            None => pr.path,
        };
        into.push(path, pr.message);
    }
}

pub(super) fn layer(
    org: &Config,
    others: &[&TenantLayer],
    dir: &str,
    files: &Files,
) -> Result<TenantLayer, Vec<Problem>> {
    let file = format!("{TENANTS_DIR}/{dir}/{LAYER_FILE}");
    let mut p = Problems::new(&file);
    if let Err(e) = valid_tenant_name(dir) {
        p.push(
            "",
            format!("directory `{TENANTS_DIR}/{}`: {e}", dir.escape_debug()),
        );
        return Err(p.into_vec());
    }
    let Some(grant) = org.tenants.get(dir) else {
        p.push(
            "",
            format!("tenant `{dir}` is not granted by the org (`tenants:` in warden.yaml)"),
        );
        return Err(p.into_vec());
    };
    let Some(text) = files.get(LAYER_FILE) else {
        p.push("", format!("missing: a tenant layer needs a {LAYER_FILE}"));
        return Err(p.into_vec());
    };
    let Ok(text) = std::str::from_utf8(text) else {
        p.push("", "not UTF-8");
        return Err(p.into_vec());
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let raw = match serde_path_to_error::deserialize::<_, raw::TenantLayerConfig>(de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            p.push(path, e.into_inner().to_string());
            return Err(p.into_vec());
        }
    };
    if raw.version != 1 {
        p.push(
            "version",
            format!("unsupported version {} (only 1 exists)", raw.version),
        );
    }
    // The one comparison of tenants: canonical forms (`Finance`, `ﬁnance`
    // and `finance` are one tenant).
    if crate::person::canonical(&raw.tenant).ok().as_deref() != Some(dir) {
        p.push(
            "tenant",
            format!(
                "`{}` is not the tenant of this directory (`{dir}`)",
                raw.tenant.escape_debug()
            ),
        );
    }

    let servers = servers(org, others, grant, dir, &raw.servers, &mut p);
    let names: HashSet<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let routes = routes(org, others, grant, &raw.routes, &names, &mut p);
    let catalog = catalog(org, &raw.catalog, &names, &mut p);
    let api_keys = api_keys(org, others, grant, dir, raw.identity.as_ref(), &mut p);
    let quotas = quotas(dir, &raw.quotas, &names, &mut p);
    let dlp = raw.dlp.as_ref().map(|d| {
        let mut sub = Problems::new(&file);
        let dlp = crate::guards::dlp(
            &raw::DlpConfig {
                rules: d.rules.clone(),
                custom: d.custom.clone(),
                hash_key_env: None,
            },
            &mut sub,
        );
        p.extend(sub);
        dlp
    });
    let egress_allow = raw
        .egress
        .as_ref()
        .map(|e| crate::host::host_patterns(&e.allow, "egress.allow", &mut p));
    let approvals = match &raw.approvals {
        Some(a) => {
            crate::guards::approvals(
                Some(&raw::ApprovalsConfig {
                    require: a.require.clone(),
                    ..raw::ApprovalsConfig::default()
                }),
                &mut p,
            )
            .require
        }
        None => [0; 4],
    };
    let mut problems = p.into_vec();
    let policies = policies(dir, files, &mut problems);
    let digest = layer_digest(files);
    let meta = meta(dir, files, &digest, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let revision = meta
        .as_ref()
        .map(|m| m.revision.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("sha256:{digest}"));
    Ok(TenantLayer {
        tenant: dir.to_owned(),
        revision,
        digest,
        meta,
        servers,
        routes,
        catalog,
        api_keys,
        quotas,
        dlp,
        egress_allow,
        approvals,
        policies,
    })
}

fn servers(
    org: &Config,
    others: &[&TenantLayer],
    grant: &Grant,
    dir: &str,
    raw: &[raw::ServerConfig],
    p: &mut Problems,
) -> Vec<crate::model::Server> {
    // Every address another owner's server (or the gateway itself) is
    // reached at: a layer's server there would be that server under a
    // name no org rule (catalog, flow labels, kill switch, Rego on
    // `input.server.name`) is written for.
    let mut taken: Vec<(Place, String)> = Vec::new();
    for o in &org.servers {
        for a in &o.upstreams {
            taken.push((place(*a), format!("the org's server `{}`", o.name)));
        }
    }
    for l in &org.listeners {
        if let Some(pl) = place_of(&l.address) {
            taken.push((pl, format!("the gateway's listener `{}`", l.name)));
        }
    }
    if let Some(pl) = org.admin.as_deref().and_then(place_of) {
        taken.push((pl, "the gateway's admin endpoint".to_owned()));
    }
    for other in others {
        for o in &other.servers {
            for a in &o.upstreams {
                taken.push((
                    place(*a),
                    format!("tenant `{}`'s server `{}`", other.tenant, o.name),
                ));
            }
        }
    }
    if !raw.is_empty() && !grant.grants_upstreams() {
        p.push(
            "servers",
            format!("the org grants tenant `{dir}` no upstreams (`tenants.{dir}.upstreams` in warden.yaml): a layer's servers live only where the org says they may"),
        );
    }
    for (i, s) in raw.iter().enumerate() {
        let base = format!("servers[{i}]");
        if let Some(o) = org
            .servers
            .iter()
            .find(|o| same_server_name(&o.name, &s.name))
        {
            p.push(
                format!("{base}.name"),
                format!(
                    "server `{}` is already the org's (`{}`: names compare without case)",
                    s.name, o.name
                ),
            );
        }
        if let Some(o) = others
            .iter()
            .find(|o| o.servers.iter().any(|x| same_server_name(&x.name, &s.name)))
        {
            p.push(
                format!("{base}.name"),
                format!(
                    "server `{}` is already tenant `{}`'s (names compare without case)",
                    s.name, o.tenant
                ),
            );
        }
        if let Some(j) = raw[..i]
            .iter()
            .position(|x| x.name != s.name && same_server_name(&x.name, &s.name))
        {
            p.push(
                format!("{base}.name"),
                format!(
                    "`{}` is `servers[{j}]` (`{}`) of this layer: names compare without case",
                    s.name, raw[j].name
                ),
            );
        }
        for (field, set) in [
            ("stdio", s.stdio.is_some()),
            ("virtual", s.virtual_server.is_some()),
            ("credentials", s.credentials.is_some()),
            ("identity_assertion", s.identity_assertion.is_some()),
            ("oauth", s.oauth.is_some()),
            ("caller_token", s.caller_token.is_some()),
        ] {
            if set {
                p.push(
                    format!("{base}.{field}"),
                    format!("`{field}` is org-only: a tenant layer has HTTP servers only, without credentials or token settings"),
                );
            }
        }
        if s.upstreams.is_empty() {
            p.push(
                format!("{base}.upstreams"),
                "an HTTP server needs upstreams",
            );
        }
        for (ui, u) in s.upstreams.iter().enumerate() {
            if let Ok(a) = u.parse::<SocketAddr>() {
                if grant.grants_upstreams() && !grant.upstream_allowed(a) {
                    p.push(
                        format!("{base}.upstreams[{ui}]"),
                        format!("`{a}` is outside the tenant's grant (`tenants.{dir}.upstreams`)"),
                    );
                }
                if let Some((_, whose)) = taken.iter().find(|(pl, _)| *pl == place(a)) {
                    p.push(
                        format!("{base}.upstreams[{ui}]"),
                        format!("`{a}` already reaches {whose}: a layer's server needs an upstream of its own (addresses compare as the network reaches them: 127.0.0.1, ::1 and 0.0.0.0 are one host)"),
                    );
                }
                if !org.egress.upstream_allowed(a) {
                    p.push(
                        format!("{base}.upstreams[{ui}]"),
                        format!("`{a}` is outside egress.upstreams"),
                    );
                }
            }
        }
    }
    if raw.is_empty() {
        return Vec::new();
    }
    let group = raw::ServiceGroupConfig {
        name: format!("tenant.{dir}"),
        servers: raw.to_vec(),
    };
    let mut sub = Problems::new(p_file(p));
    let (_, servers, _) =
        crate::model::service_groups(&[group], Path::new("."), org.timeouts, &mut sub);
    relabel(sub, "service_groups[0].servers", "servers", p);
    // A layer's server holds the gateway's connections and streams no
    // longer than the org's own timeouts say: the capacity is shared.
    let o = &org.timeouts;
    for (i, s) in servers.iter().enumerate() {
        let t = &s.timeouts;
        for (field, mine, theirs) in [
            ("connect", t.connect, o.connect),
            ("read", t.read, o.read),
            ("write", t.write, o.write),
            ("idle", t.idle, o.idle),
            ("stream_idle", t.stream_idle, o.stream_idle),
            ("drain", t.drain, o.drain),
            ("request_body", t.request_body, o.request_body),
            ("request_header", t.request_header, o.request_header),
        ] {
            if mine > theirs {
                p.push(
                    format!("servers[{i}].timeouts.{field}"),
                    format!(
                        "{mine:?} is longer than the org's {theirs:?}: a layer's servers wait no longer than the org's"
                    ),
                );
            }
        }
    }
    servers
}

/// The file a problem list reports in (set by the caller).
fn p_file(p: &Problems) -> String {
    p.file().to_owned()
}

fn routes(
    org: &Config,
    others: &[&TenantLayer],
    grant: &Grant,
    raw: &[raw::TenantRouteConfig],
    servers: &HashSet<&str>,
    p: &mut Problems,
) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let base = format!("routes[{i}]");
        let prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
        let host = r
            .host
            .as_ref()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        if !crate::model::valid_route_prefix(&prefix) {
            p.push(
                format!("{base}.path_prefix"),
                format!("`{prefix}` must start with `/`, have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`"),
            );
            continue;
        }
        // The org's routes may not live there either (`model::routes`).
        if crate::model::gateway_own_prefix(&prefix) {
            p.push(
                format!("{base}.path_prefix"),
                format!("`{prefix}` is the gateway's own (`/.warden`, in any case or spelling a peer reads as it: virtual servers reach their members there)"),
            );
            continue;
        }
        let up = r.upstream_prefix.clone().unwrap_or_else(|| "/".to_owned());
        if !crate::model::valid_route_prefix(&up) {
            p.push(
                format!("{base}.upstream_prefix"),
                format!("`{up}` must start with `/` and have no trailing `/`, `//`, `.`/`..` segments, `%`, `?` or `#`"),
            );
        }
        if !servers.contains(r.server.as_str()) {
            p.push(
                format!("{base}.server"),
                format!("`{}` is not a server of this layer", r.server),
            );
        }
        if !grant_covers_route(grant, host.as_deref(), &prefix) {
            p.push(
                format!("{base}.path_prefix"),
                format!(
                    "`{}{prefix}` is outside the tenant's grant (path_prefixes {:?}, hosts {:?})",
                    host.as_deref().unwrap_or(""),
                    grant.path_prefixes,
                    grant.hosts
                ),
            );
        }
        // Nothing another owner routes today changes hands: not the same
        // route, nor a part of another's route (the longer prefix wins),
        // except below the org's catch-all `/` — one for every host, or
        // for a host the grant names. An org site (`ops.example` at `/`)
        // is no catch-all: a path granted elsewhere does not carve it.
        let catch_all = |o: &Route| {
            o.prefix == "/"
                && o.host.as_deref().is_none_or(|h| {
                    grant
                        .hosts
                        .contains(&h.trim_end_matches('.').to_ascii_lowercase())
                })
        };
        let taken = |o: &Route, org_route: bool| {
            hosts_overlap(o.host.as_deref(), host.as_deref())
                && (o.prefix == prefix
                    || (under(&prefix, &o.prefix) && !(org_route && catch_all(o))))
        };
        if let Some(o) = org.routes.iter().find(|o| taken(o, true)) {
            p.push(
                format!("{base}.path_prefix"),
                format!(
                    "`{prefix}` would take requests of the org's route `{}`",
                    o.prefix
                ),
            );
        }
        for other in others {
            if let Some(o) = other.routes.iter().find(|o| taken(o, false)) {
                p.push(
                    format!("{base}.path_prefix"),
                    format!(
                        "`{prefix}` would take requests of tenant `{}`'s route `{}`",
                        other.tenant, o.prefix
                    ),
                );
            }
        }
        if out.iter().any(|o| o.prefix == prefix && o.host == host) {
            p.push(
                format!("{base}.path_prefix"),
                format!("another route of this layer already uses `{prefix}` for this host"),
            );
        }
        out.push(Route {
            prefix,
            host,
            server: r.server.clone(),
            upstream_prefix: up,
        });
    }
    out
}

fn catalog(
    org: &Config,
    raw: &BTreeMap<String, raw::ServerCatalogConfig>,
    servers: &HashSet<&str>,
    p: &mut Problems,
) -> HashMap<String, crate::access::ServerCatalog> {
    for (name, c) in raw {
        let base = format!("catalog.{name}");
        if !servers.contains(name.as_str()) {
            p.push(&base, format!("`{name}` is not a server of this layer"));
        }
        // What the org says about the server: its catalog entry, or the
        // default every unlisted server gets.
        let org_c = org.catalog.get(name).cloned().unwrap_or_default();
        if !c.egress_allow.is_empty() {
            p.push(
                format!("{base}.egress_allow"),
                "would widen egress: a layer narrows it with `egress.allow` only",
            );
        }
        // A price spends the org's money budgets (an organisation's
        // budget covers every tenant's calls): a layer pricing its own
        // tools would exhaust them for every tenant.
        for (field, set) in [
            ("classification", c.classification.is_some()),
            ("flow", c.flow.is_some()),
            ("resources", !c.resources.is_empty()),
            ("price", c.price.is_some()),
        ] {
            if set {
                p.push(format!("{base}.{field}"), format!("`{field}` is org-only"));
            }
        }
        if let Some(r) = c.default_risk.as_deref().and_then(Risk::parse) {
            if r < org_c.default_risk {
                p.push(
                    format!("{base}.default_risk"),
                    format!(
                        "{} is lower than the org's {}",
                        r.as_str(),
                        org_c.default_risk.as_str()
                    ),
                );
            }
        }
        for (tool, t) in &c.tools {
            let tbase = format!("{base}.tools.{tool}");
            if !t.egress_allow.is_empty() {
                p.push(
                    format!("{tbase}.egress_allow"),
                    "would widen egress: a layer narrows it with `egress.allow` only",
                );
            }
            // A call's cost counts against the org's weighted quotas too:
            // higher, a tenant's call would drain them; lower, it would
            // count for less than the org says.
            for (field, set) in [
                ("classification", t.classification.is_some()),
                ("flow", t.flow.is_some()),
                ("cost", t.cost.is_some()),
                ("price", t.price.is_some()),
            ] {
                if set {
                    p.push(format!("{tbase}.{field}"), format!("`{field}` is org-only"));
                }
            }
            // The tool's risk as the layer would have it (its own, or its
            // default) against the org's.
            let mine = t
                .risk
                .as_deref()
                .and_then(Risk::parse)
                .or_else(|| c.default_risk.as_deref().and_then(Risk::parse));
            let theirs = org_c.risk(tool);
            if let Some(r) = mine {
                if r < theirs {
                    p.push(
                        format!("{tbase}.risk"),
                        format!(
                            "{} is lower than the org catalog's {} for `{name}`/`{tool}`",
                            r.as_str(),
                            theirs.as_str()
                        ),
                    );
                }
            }
        }
    }
    let known: HashSet<&str> = raw
        .keys()
        .map(String::as_str)
        .filter(|n| servers.contains(n))
        .collect();
    let mut sub = Problems::new(p.file().to_owned());
    let out = crate::access::catalog(raw, &known, org.flows.as_ref(), &mut sub);
    // Unknown servers were named above, as not of this layer.
    for pr in sub.into_vec() {
        if !pr.message.starts_with("unknown server") {
            p.push(pr.path, pr.message);
        }
    }
    out
}

fn api_keys(
    org: &Config,
    others: &[&TenantLayer],
    grant: &Grant,
    dir: &str,
    raw: Option<&raw::TenantIdentityConfig>,
    p: &mut Problems,
) -> Vec<crate::access::ApiKey> {
    let Some(raw) = raw.filter(|r| !r.api_keys.is_empty()) else {
        return Vec::new();
    };
    let Some(org_id) = &org.identity else {
        p.push(
            "identity.api_keys",
            "the org has no `identity` section: every caller is anonymous, a layer cannot add keys",
        );
        return Vec::new();
    };
    for (i, k) in raw.api_keys.iter().enumerate() {
        let base = format!("identity.api_keys[{i}]");
        if crate::person::canonical(&k.tenant).ok().as_deref() != Some(dir) {
            p.push(
                format!("{base}.tenant"),
                format!(
                    "`{}` is not this layer's tenant (`{dir}`): a layer defines principals of its tenant only",
                    k.tenant.escape_debug()
                ),
            );
        }
        // What the org's rules read as granted by the org (a role its Rego
        // allows `purge` for, a clearance, `tester`) a tenant gives only
        // where the org's grant says it may.
        for (j, r) in k.roles.iter().enumerate() {
            if !grant.role_allowed(r) {
                p.push(
                    format!("{base}.roles[{j}]"),
                    if crate::model::reserved(crate::model::ORG_ONLY_ROLES, r) {
                        format!("`{r}` is the org's alone: a tenant's keys never carry it")
                    } else {
                        format!("`{r}` is not a role the org grants tenant `{dir}` (`tenants.{dir}.roles` in warden.yaml)")
                    },
                );
            }
        }
        for a in k.attributes.keys() {
            if !grant.attribute_allowed(a) {
                p.push(
                    format!("{base}.attributes.{a}"),
                    if crate::model::reserved(crate::model::ORG_ONLY_ATTRIBUTES, a) {
                        format!("`{a}` is the org's alone: the gateway reads it as a fact (flow clearance, a token's issuer or client)")
                    } else {
                        format!("`{a}` is not an attribute the org grants tenant `{dir}` (`tenants.{dir}.attributes` in warden.yaml)")
                    },
                );
            }
        }
        if let Some(kind) = k.kind.as_deref().and_then(PrincipalKind::parse) {
            if !grant.kind_allowed(kind) {
                p.push(
                    format!("{base}.kind"),
                    format!("`{}` is not a kind the org grants tenant `{dir}` (`tenants.{dir}.kinds` in warden.yaml; `agent`, the default, always is)", kind.as_str()),
                );
            }
        }
    }
    let synthetic = raw::IdentityConfig {
        resource: "https://tenant.invalid/".into(),
        authorization_servers: Vec::new(),
        scopes_supported: Vec::new(),
        required_scopes: Vec::new(),
        allow_anonymous: false,
        api_key_header: None,
        api_keys: raw.api_keys.clone(),
        jwt: None,
        mtls: Vec::new(),
    };
    let typed = crate::access::identity(&synthetic, Path::new("."), p);
    // One person, one principal: not a spelling of the org's or another
    // tenant's.
    let mut taken: HashMap<String, String> = HashMap::new();
    for k in &org_id.api_keys {
        if let Ok(person) = crate::person::Person::of(&k.principal.tenant, &k.principal.id) {
            taken.insert(person.key(), "the org's".into());
        }
    }
    for m in &org_id.mtls {
        if let Ok(person) = crate::person::Person::of(&m.principal.tenant, &m.principal.id) {
            taken.insert(person.key(), "the org's".into());
        }
    }
    for o in others {
        for k in &o.api_keys {
            if let Ok(person) = crate::person::Person::of(&k.principal.tenant, &k.principal.id) {
                taken.insert(person.key(), format!("tenant `{}`'s", o.tenant));
            }
        }
    }
    // By the raw keys, so that each problem names its own key (a key
    // whose hash does not parse is not among the typed ones).
    for (i, k) in raw.api_keys.iter().enumerate() {
        if let Ok(person) = crate::person::Person::of(&k.tenant, &k.id) {
            match taken.get(&person.key()) {
                Some(whose) => p.push(
                    format!("identity.api_keys[{i}].id"),
                    format!("`{}/{}` is already a principal ({whose})", k.tenant, k.id),
                ),
                None => {
                    taken.insert(
                        person.key(),
                        format!("`identity.api_keys[{i}]` of this layer"),
                    );
                }
            }
        }
    }
    // One secret, one principal: a key whose salt and digest are another
    // key's (the org's, another tenant's, or this layer's) would sign that
    // key's holder in as this layer's principal instead.
    let mut hashes: HashMap<(&[u8], [u8; 32]), String> = HashMap::new();
    for k in &org_id.api_keys {
        hashes.insert((k.salt.as_slice(), k.digest), "an org key's".into());
    }
    for o in others {
        for k in &o.api_keys {
            hashes.insert(
                (k.salt.as_slice(), k.digest),
                format!("a key's of tenant `{}`", o.tenant),
            );
        }
    }
    for k in &typed.api_keys {
        match hashes.get(&(k.salt.as_slice(), k.digest)) {
            Some(whose) => p.push(
                "identity.api_keys",
                format!(
                    "the hash of `{}` is {whose}: one key signs in as one principal",
                    k.principal.id.escape_debug()
                ),
            ),
            None => {
                hashes.insert(
                    (k.salt.as_slice(), k.digest),
                    "another key's of this layer".into(),
                );
            }
        }
    }
    typed
        .api_keys
        .into_iter()
        .map(|mut k| {
            k.principal.tenant = dir.to_owned();
            // The gateway tells its principals from the org's and from a
            // token's subject of the same name (`AuthMethod::LayerKey`).
            k.layer = Some(dir.to_owned());
            k
        })
        .collect()
}

fn quotas(
    dir: &str,
    raw: &[raw::QuotaConfig],
    servers: &HashSet<&str>,
    p: &mut Problems,
) -> Vec<crate::guards::Quota> {
    for (i, q) in raw.iter().enumerate() {
        let base = format!("quotas[{i}]");
        for (j, t) in q.tenants.iter().enumerate() {
            if crate::person::canonical(t).ok().as_deref() != Some(dir) {
                p.push(
                    format!("{base}.tenants[{j}]"),
                    format!(
                        "`{}` is another tenant: a layer's quotas count its own calls only",
                        t.escape_debug()
                    ),
                );
            }
        }
        for (j, s) in q.servers.iter().enumerate() {
            if !servers.contains(s.as_str()) {
                p.push(
                    format!("{base}.servers[{j}]"),
                    format!("`{s}` is not a server of this layer"),
                );
            }
        }
        if !q.groups.is_empty() {
            p.push(format!("{base}.groups"), "`groups` is org-only");
        }
        if q.global {
            p.push(format!("{base}.global"), "global quotas are org-only");
        }
    }
    crate::guards::quotas(raw, false, p)
        .into_iter()
        .map(|mut q| {
            // Counters are keyed by the definition: the tenant is part of
            // it, so a layer copying another's quota (or the org's) counts
            // its own calls in a counter of its own.
            let mut h = Sha256::new();
            h.update(b"tenant|");
            h.update(dir.as_bytes());
            h.update(b"|");
            h.update(q.definition);
            q.definition = h.finalize().into();
            q.name = format!("{dir}/{}", q.name);
            q.tenants = if q.tenants.is_empty() {
                Vec::new()
            } else {
                vec![dir.to_owned()]
            };
            q
        })
        .collect()
}

/// The layer's Rego: every module in the tenant's package, and the whole
/// compiling on its own (no org modules, no data) to its entry point.
fn policies(dir: &str, files: &Files, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut mods = Vec::new();
    for (name, bytes) in files.iter().filter(|(n, _)| n.ends_with(".rego")) {
        let path = format!("{TENANTS_DIR}/{dir}/{name}");
        let mut bad = |message: String| {
            problems.push(Problem {
                file: path.clone(),
                path: String::new(),
                message,
            })
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            bad("not UTF-8".into());
            continue;
        };
        for message in crate::rego_bounds::unbounded_calls(&path, text) {
            bad(message);
        }
        let mut e = regorus::Engine::new();
        if let Err(err) = e.add_policy(path.clone(), text.to_owned()) {
            bad(format!("invalid Rego: {err}"));
            continue;
        }
        match e.get_policy_package_components() {
            Ok(pkgs) if pkgs.iter().all(|k| package_in_tenant(&k.components, dir)) => {}
            Ok(pkgs) => {
                let got = pkgs
                    .first()
                    .map(|k| k.components.join("."))
                    .unwrap_or_default();
                bad(format!(
                    "package `{got}` is outside the tenant's: every module is `warden.tenants.{dir}` or below it"
                ));
                continue;
            }
            Err(err) => {
                bad(format!("cannot read the package: {err}"));
                continue;
            }
        }
        if !name.ends_with("_test.rego") {
            mods.push(regorus::PolicyModule {
                id: path.as_str().into(),
                content: text.into(),
            });
        }
        out.insert(path, text.to_owned());
    }
    if !mods.is_empty() && problems.is_empty() {
        let entry = super::entrypoint(dir);
        if let Err(e) = regorus::compile_policy_with_entrypoint(
            regorus::Value::new_object(),
            &mods,
            entry.as_str().into(),
        ) {
            problems.push(Problem {
                file: mods[0].id.to_string(),
                path: String::new(),
                message: format!("the tenant's Rego does not compile to `{entry}`: {e:#}"),
            });
        }
    }
    out
}

fn meta(
    dir: &str,
    files: &Files,
    digest: &str,
    problems: &mut Vec<Problem>,
) -> Option<raw::LayerMetaConfig> {
    let bytes = files.get(LAYER_META_FILE)?;
    let file = format!("{TENANTS_DIR}/{dir}/{LAYER_META_FILE}");
    let mut bad = |path: &str, message: String| {
        problems.push(Problem {
            file: file.clone(),
            path: path.to_owned(),
            message,
        })
    };
    let m: raw::LayerMetaConfig = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => {
            bad("", format!("not valid: {e}"));
            return None;
        }
    };
    if crate::person::canonical(&m.tenant).ok().as_deref() != Some(dir) {
        bad(
            "tenant",
            format!(
                "`{}` is not this directory's tenant",
                m.tenant.escape_debug()
            ),
        );
    }
    if m.digest != digest {
        bad(
            "digest",
            "does not match the layer's files (they changed after it was published)".into(),
        );
    }
    Some(m)
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
