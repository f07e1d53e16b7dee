//! Where config becomes a runtime value: one immutable [`Snapshot`] compiled
//! from a bundle (routes, authentication, the policy engine, the DLP scanner
//! and the filter chain with every guard in order). The proxy swaps it
//! atomically; each request loads it once and uses it from start to end.

use std::sync::Arc;

use warden_config::model::{Route, Server};
use warden_config::{Bundle, Config};

use warden_config::error::Problem;

use crate::chain::filter::{FilterChain, McpFilter};
use crate::engines::identity::Authenticator;
use crate::engines::policy::PolicyEngine;
use crate::guards::kill_switch::KillSwitchFilter;
use crate::guards::policy::PolicyFilter;
use crate::protocol::jsonrpc::ParseLimits;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("route {0}: unknown server `{1}`")]
    UnknownServer(usize, String),
    #[error("{0}")]
    Invalid(Problem),
}

impl BuildError {
    fn at(file: impl Into<String>, path: impl Into<String>, message: impl Into<String>) -> Self {
        BuildError::Invalid(Problem {
            file: file.into(),
            path: path.into(),
            message: message.into(),
        })
    }
}

/// A route resolved against its server.
#[derive(Debug, Clone)]
pub struct ResolvedRoute {
    pub index: usize,
    pub prefix: String,
    pub host: Option<String>,
    pub upstream_prefix: String,
    pub server: usize,
    /// A route the gateway made for a virtual server to reach one of its
    /// members (`VIRTUAL_PREFIX/<virtual>/<member>`): served only to that
    /// virtual server's aggregator. Names the virtual server.
    pub via: Option<String>,
    /// The upstream prefixes (as the loosest server reads a path, see
    /// [`loose_path`]) of other servers that share an upstream address
    /// with this route's server and lie below this route's own upstream
    /// prefix: a path of this route that reaches one of them would reach
    /// another server's endpoint under this server's name and labels.
    pub others: Vec<String>,
}

/// Where the member routes of virtual servers live.
pub const VIRTUAL_PREFIX: &str = "/.warden/virtual";

impl ResolvedRoute {
    /// Maps a downstream path to the upstream path (`/jira/mcp` → `/mcp`).
    pub fn upstream_path(&self, path: &str) -> String {
        join(&self.upstream_prefix, self.below_prefix(path))
    }

    /// The part of a downstream path this route matched that is forwarded
    /// as the client wrote it (`/jira/mcp/x` → `/mcp/x`).
    pub fn below_prefix<'p>(&self, path: &'p str) -> &'p str {
        if self.prefix == "/" {
            path
        } else {
            path.get(self.prefix.len()..).unwrap_or(path)
        }
    }

    /// Whether an upstream path of this route reaches another server's
    /// endpoint on a shared upstream (see `others`), read as the loosest
    /// server reads it (escapes decoded, any case, `;` parameters and
    /// trailing dots dropped).
    pub fn reaches_other(&self, upstream_path: &str) -> bool {
        if self.others.is_empty() {
            return false;
        }
        let p = loose_path(upstream_path);
        self.others.iter().any(|o| prefix_matches(o, &p))
    }

    /// Maps an upstream path back to the gateway's (`/messages/` → `/jira/messages/`);
    /// `None` when it is not under the upstream prefix.
    pub fn downstream_path(&self, upstream: &str) -> Option<String> {
        let rest = if self.upstream_prefix == "/" {
            upstream
        } else {
            let r = upstream.strip_prefix(self.upstream_prefix.as_str())?;
            if !(r.is_empty() || r.starts_with('/') || r.starts_with('?')) {
                return None;
            }
            r
        };
        Some(join(&self.prefix, rest))
    }
}

/// Accepts the bundle's behaviours (`anomaly.accept`) into the baselines
/// (on every build: a bundle swap applies them). One the table has no
/// room for is left out (its calls are still flagged).
pub fn accept_behaviours(
    baselines: &crate::engines::anomaly::Baselines,
    accept: &[warden_config::anomaly::Accept],
) {
    for a in accept {
        let _ = baselines.accept(
            &crate::engines::grants::holder_key(&a.tenant, &a.principal),
            std::time::SystemTime::now(),
            &accepted_facts(a),
            true,
        );
    }
}

/// The facts an accepted behaviour names (0: none of that kind).
pub fn accepted_facts(a: &warden_config::anomaly::Accept) -> crate::engines::anomaly::Facts {
    use crate::engines::anomaly::{host_hash, server_hash, tool_hash, Facts};
    Facts {
        server: a.server.as_deref().map_or(0, server_hash),
        tool: match (&a.server, &a.tool) {
            (Some(s), Some(t)) => tool_hash(s, t),
            _ => 0,
        },
        hosts: a.host.as_deref().map(host_hash).into_iter().collect(),
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix == "/" {
        if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        }
    } else if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}/{rest}")
    }
}

pub struct Snapshot {
    pub revision: String,
    pub config: Config,
    pub routes: Vec<ResolvedRoute>,
    pub chain: FilterChain,
    /// The chain of a virtual server's own leg: none of the guards, which
    /// judge each message where it reaches a member (see `chain_for`).
    pub outer_chain: FilterChain,
    pub parse_limits: ParseLimits,
    /// `None`: the bundle has no identity section; every caller is anonymous.
    pub auth: Option<Authenticator>,
    /// `None`: the bundle has no Rego; every message is allowed.
    pub policy: Option<Arc<PolicyEngine>>,
    /// The time zone money budgets' periods run in (`budgets.timezone`).
    pub budget_clock: crate::guards::budget::BudgetClock,
    /// Redacts free text the gateway itself writes (audit fields): the
    /// bundle's DLP detectors, or the built-in ones.
    pub redactor: Arc<crate::engines::dlp::Scanner>,
    /// The chain's DLP filter, which also judges what travels beside the
    /// messages (header values, the URL): `None` without a `dlp` section.
    pub dlp: Option<Arc<crate::guards::dlp::DlpFilter>>,
    /// Each tenant's DLP filter, which judges the metadata of calls in the
    /// tenant's scope beside the org's (see [`Snapshot::metadata_dlp`]).
    pub tenant_dlp: Vec<(String, Arc<crate::guards::dlp::DlpFilter>)>,
    /// Seals the handles relayed to one client (cursors, event ids).
    pub handle_sealer: Arc<crate::guards::cursor::HandleSealer>,
    /// Seals and opens task ids (the task filter's), for the fleet's check
    /// of a task request before the chain runs.
    pub task_sealer: Arc<crate::guards::task_binding::TaskSealer>,
    /// Which tenant layers apply to a call (owners of servers, layers'
    /// revisions), for the audit record.
    pub tenants: Arc<crate::guards::tenants::Scope>,
    /// The registry's gate, also asked where no message is judged (a GET
    /// stream, a DELETE): `None` when nothing is registered or tenant-owned.
    pub registry: Option<Arc<crate::guards::registry::RegistryFilter>>,
    /// The catalog as the flow guard reads it (tenants' servers as sinks):
    /// what decides whether a message needs the fleet's flow state.
    pub flow_catalog: Arc<std::collections::HashMap<String, warden_config::access::ServerCatalog>>,
    /// The flow guard, also asked where no message is judged (a GET
    /// stream, a DELETE to a server that is a sink): `None` without
    /// `flows`.
    pub flow: Option<Arc<crate::guards::flow::FlowFilter>>,
}

impl Snapshot {
    /// A JSON value with every string and member name DLP-redacted (see
    /// [`Snapshot::redact_text`]), for full call logging.
    pub fn redact_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.redact_text(s, usize::MAX)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact_json(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (self.redact_text(k, usize::MAX), self.redact_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `raw` when DLP finds nothing in `read` (how a reader reads `raw`,
    /// often `raw` itself); otherwise `read` redacted (see
    /// [`Snapshot::redact_text`]), cut to 256 characters. Copies nothing
    /// when the text is clean.
    pub fn redacted<'a>(&self, raw: &'a str, read: &str) -> std::borrow::Cow<'a, str> {
        let mut hits = Vec::new();
        self.redactor.scan_str(read, &mut hits);
        if hits.is_empty() {
            std::borrow::Cow::Borrowed(raw)
        } else {
            std::borrow::Cow::Owned(self.redact_text(read, 256))
        }
    }

    /// `text` with every DLP match replaced by `[REDACTED:<detector>]`, cut
    /// to `max` characters: safe to write into an audit record.
    pub fn redact_text(&self, text: &str, max: usize) -> String {
        redact_with(&self.redactor, text, max)
    }
}

/// `text` with every match of `scanner` replaced by `[REDACTED]`, cut to
/// `max` characters (see [`Snapshot::redact_text`]).
pub fn redact_with(scanner: &crate::engines::dlp::Scanner, text: &str, max: usize) -> String {
    let mut hits = Vec::new();
    scanner.scan_str(text, &mut hits);
    let mut out = String::with_capacity(text.len().min(max));
    if hits.is_empty() {
        out.push_str(text);
    } else {
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        let mut at = 0;
        for h in hits {
            if h.start < at {
                continue;
            }
            out.push_str(&text[at..h.start]);
            out.push_str("[REDACTED]");
            at = h.end;
        }
        out.push_str(&text[at..]);
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect();
    }
    out
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("routes", &self.routes)
            .field("chain", &self.chain)
            .finish()
    }
}

/// State that outlives one snapshot: quota counters and pinned tool
/// definitions carry over a bundle swap.
pub struct Shared {
    pub quotas: Arc<crate::guards::quota::QuotaTables>,
    /// Session budgets and loop counters (see `runaway`).
    pub runaway: Arc<crate::guards::runaway::RunawayTables>,
    /// Information-flow states (see `flow`).
    pub flows: Arc<crate::engines::flow::FlowTables>,
    pub pins: Arc<crate::guards::tools::ToolPins>,
    /// Which arguments each tool mirrors into `Mcp-Param-*` headers.
    pub params: Arc<crate::guards::mirrored_headers::ParamDecls>,
    /// Who created each task (to filter `tasks/list`).
    pub task_owners: Arc<crate::guards::task_binding::TaskOwners>,
    /// Seals task ids when the bundle has no fleet secret.
    pub task_sealer: Arc<crate::guards::task_binding::TaskSealer>,
    /// Seals multi-round-trip request state when the bundle has no fleet secret.
    pub state_sealer: Arc<crate::guards::input_state::StateSealer>,
    /// Seals cursors and event ids when the bundle has no fleet secret.
    pub handle_sealer: Arc<crate::guards::cursor::HandleSealer>,
    /// The tool definitions registered servers listed last (`registry`).
    pub live_tools: Arc<crate::guards::registry::LiveTools>,
    /// The tool and prompt names each server listed (see `names`).
    pub listed: Arc<crate::guards::names::ListedNames>,
    /// The fleet's just-in-time grants (`input.principal.grants`), as the
    /// control agent last listed them.
    pub grants: Arc<crate::engines::grants::Grants>,
    /// This replica's spend per money budget and holder (see `budget`).
    pub budgets: Arc<crate::guards::budget::BudgetTables>,
    /// Per-principal behaviour baselines (`anomaly`).
    pub baselines: Arc<crate::engines::anomaly::Baselines>,
}

impl Shared {
    /// Shared state whose sealers use `secret` (an install's own, so that a
    /// restarted process opens the handles its predecessor sealed; random
    /// without one) and whose tables take their bounds from `budget`.
    pub fn for_install(
        secret: Option<&[u8]>,
        budget: warden_config::model::MemoryBudget,
    ) -> Arc<Shared> {
        use warden_config::model::Table;
        let mut s = Arc::into_inner(Shared::new()).expect("fresh");
        if let Some(secret) = secret {
            s.task_sealer = Arc::new(crate::guards::task_binding::TaskSealer::new(secret));
            s.state_sealer = Arc::new(crate::guards::input_state::StateSealer::new(secret));
            s.handle_sealer = Arc::new(crate::guards::cursor::HandleSealer::new(secret));
        }
        s.quotas = Arc::new(crate::guards::quota::QuotaTables::new(
            budget.entries(Table::Quotas),
        ));
        // Two caches (budgets and loops) share the runaway share.
        s.runaway = Arc::new(crate::guards::runaway::RunawayTables::new(
            budget.entries(Table::Runaway) / 2,
        ));
        s.task_owners = Arc::new(crate::guards::task_binding::TaskOwners::new(
            budget.entries(Table::Tasks),
        ));
        s.flows = Arc::new(crate::engines::flow::FlowTables::new(
            budget.entries(Table::Flows),
        ));
        s.listed = Arc::new(crate::guards::names::ListedNames::new(
            budget.entries(Table::Names) as usize,
        ));
        s.grants = Arc::new(crate::engines::grants::Grants::new(
            budget.entries(Table::Grants) as usize,
        ));
        s.budgets = Arc::new(crate::guards::budget::BudgetTables::new(
            budget.entries(Table::Budgets),
        ));
        s.baselines = Arc::new(crate::engines::anomaly::Baselines::new(
            budget.entries(Table::Baselines) as usize,
        ));
        Arc::new(s)
    }

    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            quotas: Arc::new(crate::guards::quota::QuotaTables::new(1_000_000)),
            runaway: Arc::new(crate::guards::runaway::RunawayTables::new(200_000)),
            flows: Arc::new(crate::engines::flow::FlowTables::new(100_000)),
            pins: Arc::new(crate::guards::tools::ToolPins::default()),
            params: Arc::new(crate::guards::mirrored_headers::ParamDecls::default()),
            task_owners: Arc::new(crate::guards::task_binding::TaskOwners::default()),
            task_sealer: Arc::new(crate::guards::task_binding::TaskSealer::random()),
            state_sealer: Arc::new(crate::guards::input_state::StateSealer::random()),
            handle_sealer: Arc::new(crate::guards::cursor::HandleSealer::random()),
            live_tools: Arc::new(crate::guards::registry::LiveTools::default()),
            listed: Arc::new(crate::guards::names::ListedNames::default()),
            grants: Arc::new(crate::engines::grants::Grants::default()),
            budgets: Arc::new(crate::guards::budget::BudgetTables::new(100_000)),
            baselines: Arc::new(crate::engines::anomaly::Baselines::default()),
        })
    }
}

impl Snapshot {
    /// Compiles a validated bundle into the runtime snapshot. Everything that
    /// can fail is done here, off the request path.
    pub fn build(bundle: &Bundle) -> Result<Snapshot, BuildError> {
        Self::build_shared(bundle, Vec::new(), &Shared::new())
    }

    /// As [`Snapshot::build`], with extra filters appended to the chain.
    pub fn build_with(
        bundle: &Bundle,
        extra: Vec<Arc<dyn McpFilter>>,
    ) -> Result<Snapshot, BuildError> {
        Self::build_shared(bundle, extra, &Shared::new())
    }

    /// As [`Snapshot::build_with`], continuing the counters and pins of `shared`.
    pub fn build_shared(
        bundle: &Bundle,
        extra: Vec<Arc<dyn McpFilter>>,
        shared: &Arc<Shared>,
    ) -> Result<Snapshot, BuildError> {
        let mut config = bundle.config.clone();
        let tenants = &bundle.tenants;
        let scope = Arc::new(
            crate::guards::tenants::Scope::new(
                tenants.owners.clone(),
                tenants
                    .layers
                    .values()
                    .map(|l| (l.tenant.clone(), l.label()))
                    .collect(),
            )
            .with_withheld(tenants.withheld.clone()),
        );
        // The registry's definitions are the pins of registered servers.
        if let Some(reg) = &tenants.registry {
            for (server, s) in &reg.servers {
                let entry = config.catalog.entry(server.clone()).or_default();
                for (tool, t) in &s.tools {
                    let e = entry.tools.entry(tool.clone()).or_default();
                    for f in t.approved.iter().chain(t.candidate.iter()) {
                        if !e.fingerprints.contains(f) {
                            e.fingerprints.push(f.clone());
                        }
                    }
                }
            }
        }
        let parse_limits = ParseLimits {
            max_depth: config.limits.max_json_depth.get(),
            max_batch_len: config.limits.max_batch_len.get(),
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let server = config
                .servers
                .iter()
                .position(|s| s.name == r.server)
                .ok_or_else(|| BuildError::UnknownServer(i, r.server.clone()))?;
            routes.push(resolve(i, r, server));
        }
        // A virtual server reaches each member through the gateway itself,
        // on a route of its own, so that the member's every guard applies.
        for s in &config.servers {
            let Some(v) = &s.composed else { continue };
            for m in &v.members {
                let Some(server) = config.servers.iter().position(|o| o.name == m.server) else {
                    continue;
                };
                routes.push(ResolvedRoute {
                    index: usize::MAX,
                    prefix: format!("{VIRTUAL_PREFIX}/{}/{}", s.name, m.server),
                    host: None,
                    upstream_prefix: "/".into(),
                    server,
                    via: Some(s.name.clone()),
                    others: Vec::new(),
                });
            }
        }
        fence_shared_upstreams(&mut routes, &config.servers);
        // Longest prefix first; host-specific before host-agnostic at equal length.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        let auth = config
            .identity
            .as_ref()
            .map(Authenticator::new)
            .transpose()
            .map_err(|e| BuildError::at("warden.yaml", "identity.jwt", e))?;
        let policy = if bundle.policies.is_empty() {
            None
        } else {
            let p = &config.policy;
            let engine = PolicyEngine::compile(
                &bundle.policies,
                &bundle.data,
                &p.entrypoint,
                &p.timezone,
                p.cache_capacity,
            )
            .map_err(|e| BuildError::at(e.file, "", e.message))?;
            Some(Arc::new(engine))
        };
        // Each tenant's Rego, compiled on its own: no org modules, no data.
        let mut tenant_engines = Vec::new();
        for layer in tenants.layers.values().filter(|l| !l.policies.is_empty()) {
            let p = &config.policy;
            let engine = PolicyEngine::compile(
                &layer.policies,
                &serde_json::json!({}),
                &layer.entrypoint(),
                &p.timezone,
                p.cache_capacity,
            )
            .map_err(|e| BuildError::at(e.file, "", e.message))?;
            tenant_engines.push((layer.tenant.clone(), Arc::new(engine)));
        }
        let tenant_policies = (!tenant_engines.is_empty()).then(|| {
            Arc::new(crate::guards::tenants::TenantPolicies {
                scope: scope.clone(),
                engines: tenant_engines,
            })
        });
        // A candidate rule beside the enforced one (safe rollout): same
        // modules and data, its own decision cache.
        let shadow = match (&config.policy.shadow, policy.is_some()) {
            (Some(rule), true) => {
                let p = &config.policy;
                let engine = PolicyEngine::compile(
                    &bundle.policies,
                    &bundle.data,
                    rule,
                    &p.timezone,
                    p.cache_capacity,
                )
                .map_err(|e| BuildError::at(e.file, "policy.shadow", e.message))?;
                Some(Arc::new(engine))
            }
            (Some(_), false) => {
                return Err(BuildError::at(
                    "warden.yaml",
                    "policy.shadow",
                    "a shadow rule needs the bundle's policies/ (there is no Rego)".to_owned(),
                ))
            }
            (None, _) => None,
        };
        // Kill switch → quota → policy → tool pinning → schema → egress → (DLP) …
        let mut filters: Vec<Arc<dyn McpFilter>> = Vec::new();
        // A list only in its own list request's reply, whatever else is on.
        filters.push(Arc::new(crate::guards::lists::ForeignListFilter));
        // Task ids: another principal's never reach the server (see `tasks`).
        let task_sealer = match &config.session_seal {
            Some(secret) => Arc::new(crate::guards::task_binding::TaskSealer::new(
                secret.expose().as_bytes(),
            )),
            None => shared.task_sealer.clone(),
        };
        filters.push(Arc::new(crate::guards::task_binding::TaskFilter::new(
            task_sealer.clone(),
            shared.task_owners.clone(),
        )));
        // After task binding, so a paused tool's tasks are paused too.
        if !config.kill_switch.is_empty() {
            filters.push(Arc::new(KillSwitchFilter::new(config.kill_switch.clone())));
        }
        // The registry: who may reach a registered server in its state.
        let registry = crate::guards::registry::RegistryFilter::new(
            tenants.registry.as_ref(),
            scope.clone(),
            shared.live_tools.clone(),
        )
        .map(Arc::new);
        if let Some(f) = &registry {
            filters.push(f.clone());
        }
        // Multi-round-trip input: bound to the principal and the request it
        // answers (see `input_state`).
        let state_sealer = match &config.session_seal {
            Some(secret) => Arc::new(crate::guards::input_state::StateSealer::new(
                secret.expose().as_bytes(),
            )),
            None => shared.state_sealer.clone(),
        };
        filters.push(Arc::new(crate::guards::input_state::InputStateFilter::new(
            state_sealer,
        )));
        // Cursors: another principal's (or session's, or list's) are unknown.
        let handle_sealer = match &config.session_seal {
            Some(secret) => Arc::new(crate::guards::cursor::HandleSealer::new(
                secret.expose().as_bytes(),
            )),
            None => shared.handle_sealer.clone(),
        };
        filters.push(Arc::new(crate::guards::cursor::CursorFilter::new(
            handle_sealer.clone(),
        )));
        // Step-up: tools that need scopes the caller's token lacks.
        if let Some(f) = crate::guards::scopes::ScopeFilter::new(&config.catalog) {
            filters.push(Arc::new(f));
        }
        if !config.quotas.is_empty() {
            filters.push(Arc::new(crate::guards::quota::QuotaFilter::new(
                config.quotas.clone(),
                shared.quotas.clone(),
                config.catalog.clone(),
            )));
        }
        // Each tenant's quotas, for calls in its scope only.
        for layer in tenants.layers.values().filter(|l| !l.quotas.is_empty()) {
            filters.push(scoped(
                &layer.tenant,
                &scope,
                Arc::new(crate::guards::quota::QuotaFilter::new(
                    layer.quotas.clone(),
                    shared.quotas.clone(),
                    config.catalog.clone(),
                )),
            ));
        }
        // Runaway agents: after the quotas, before the policy, so a loop of
        // denied calls is caught too.
        if let Some(f) = crate::guards::runaway::RunawayFilter::new(
            &config.runaway,
            shared.runaway.clone(),
            config.policy.denial,
        ) {
            filters.push(Arc::new(f));
        }
        // Information flow: its request half before the policy (which
        // reads what it notes), its reply half after DLP (below).
        // A tenant's server carries no flow labels (`flow` is the org's to
        // give, and the org's catalog names only its own servers): it is
        // judged as untrusted and a sink, so labelled data never leaves
        // through a server nobody labelled.
        let mut flow_catalog = config.catalog.clone();
        if let Some(f) = config.flows.as_ref() {
            for server in tenants.owners.keys() {
                let entry = flow_catalog.entry(server.clone()).or_default();
                if entry.labels.roles.is_none() {
                    entry.labels.roles = Some(warden_config::flows::Roles {
                        untrusted: true,
                        sink: true,
                        ..f.unlabelled
                    });
                }
            }
        }
        let flow_catalog = Arc::new(flow_catalog);
        let flow = crate::guards::flow::FlowFilter::new(
            config.flows.as_ref(),
            flow_catalog.clone(),
            shared.flows.clone(),
            config.policy.denial,
        )
        .map(Arc::new);
        if let Some(f) = &flow {
            filters.push(f.clone());
        }
        // Without org Rego, tenants' Rego is composed with an org rule
        // that allows everything (what the org says without a policy).
        let enforced = match (&policy, &tenant_policies) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(_)) => Some(Arc::new(allow_all(&config)?)),
            (None, None) => None,
        };
        // Names a peer reads as another: before the policy, which judges
        // each spelling as written and hides what the server listed.
        // The org's names apply to every call; a tenant's Rego names only
        // to calls in its scope (a literal `ECHO` in one tenant's rules
        // must not refuse another's, or the org's, `echo`).
        let written = crate::guards::names::bundle_names(
            &config,
            bundle.policies.values().map(String::as_str),
            &bundle.data,
        );
        filters.push(Arc::new(crate::guards::names::TargetFilter::new(
            Arc::new(written),
            shared.listed.clone(),
        )));
        for layer in tenants.layers.values().filter(|l| !l.policies.is_empty()) {
            let theirs =
                crate::guards::names::policy_names(layer.policies.values().map(String::as_str));
            filters.push(scoped(
                &layer.tenant,
                &scope,
                Arc::new(crate::guards::names::TargetFilter::scoped(
                    Arc::new(theirs),
                    shared.listed.clone(),
                )),
            ));
        }
        // Behaviour baselines: before the policy, which reads the signals.
        if let Some(a) = &config.anomaly {
            accept_behaviours(&shared.baselines, &a.accept);
            filters.push(Arc::new(crate::guards::anomaly::AnomalyFilter::new(
                shared.baselines.clone(),
                a.into(),
            )));
        }
        if let Some(engine) = &enforced {
            filters.push(Arc::new(
                PolicyFilter::new(engine.clone(), config.catalog.clone(), config.policy.denial)
                    .with_shadow(shadow.clone())
                    .with_tenants(tenant_policies.clone())
                    .with_pins(shared.pins.clone())
                    .with_grants(shared.grants.clone()),
            ));
        }
        if config.tool_pinning {
            filters.push(Arc::new(crate::guards::tools::PinFilter::new(
                shared.pins.clone(),
                config.catalog.clone(),
            )));
        }
        filters.push(Arc::new(
            crate::guards::mirrored_headers::MirrorFilter::new(shared.params.clone()),
        ));
        filters.push(Arc::new(crate::guards::tools::SchemaFilter::new(
            shared.pins.clone(),
            &config.catalog,
            config.schemas.invalid_arguments == warden_config::access::DenialStyle::ToolError,
            config.schemas.validate_output,
        )));
        filters.push(Arc::new(crate::guards::egress::EgressFilter::new(
            config.egress.allow.clone(),
            config.catalog.clone(),
            shared.pins.clone(),
            config.egress.detect_urls,
        )));
        // A tenant's egress list narrows: for calls in its scope a URL must
        // pass the org's check above and match the tenant's list (the
        // catalog's own additions do not widen it).
        let no_widening: std::collections::HashMap<_, _> = config
            .catalog
            .iter()
            .map(|(n, c)| {
                let mut c = c.clone();
                c.egress_allow.clear();
                for t in c.tools.values_mut() {
                    t.egress_allow.clear();
                }
                (n.clone(), c)
            })
            .collect();
        for layer in tenants.layers.values() {
            if let Some(allow) = &layer.egress_allow {
                filters.push(scoped(
                    &layer.tenant,
                    &scope,
                    Arc::new(crate::guards::egress::EgressFilter::new(
                        allow.clone(),
                        no_widening.clone(),
                        shared.pins.clone(),
                        config.egress.detect_urls,
                    )),
                ));
            }
        }
        let custom = config.dlp.as_ref().map_or(&[][..], |d| d.custom.as_slice());
        let redactor = Arc::new(
            crate::engines::dlp::Scanner::new(custom)
                .map_err(|e| BuildError::at("warden.yaml", "dlp", e))?,
        );
        let dlp = match &config.dlp {
            Some(d) => {
                let f = Arc::new(
                    crate::guards::dlp::DlpFilter::new(d.clone(), config.catalog.clone())
                        .map_err(|e| BuildError::at("warden.yaml", "dlp", e))?,
                );
                filters.push(f.clone());
                Some(f)
            }
            None => None,
        };
        // Tenants' DLP rules, beside the org's (after it: an org rule is
        // never skipped for a tenant's; the stricter action wins).
        let mut tenant_dlp = Vec::new();
        for layer in tenants.layers.values() {
            if let Some(d) = &layer.dlp {
                let file = format!("tenants/{}/tenant.yaml", layer.tenant);
                let f = crate::guards::dlp::DlpFilter::new(d.clone(), config.catalog.clone())
                    .map_err(|e| BuildError::at(file, "dlp", e))?;
                let f = Arc::new(f);
                filters.push(scoped(&layer.tenant, &scope, f.clone()));
                tenant_dlp.push((layer.tenant.clone(), f));
            }
        }
        if let Some(f) = &flow {
            filters.push(Arc::new(crate::guards::flow::FlowReplyFilter(f.clone())));
        }
        // A cancellation names a request of the caller's own session (after
        // the guards that judge what it carries, so a refusal for that
        // says so).
        filters.push(Arc::new(crate::guards::cancel::CancelFilter));
        filters.extend(extra);
        // Money budgets: after every guard that may refuse the call (their
        // refusals name the real reason, and what a refused call reserved
        // is given back), before a person is asked to approve it.
        if let Some(f) = crate::guards::budget::BudgetFilter::new(&config.budgets, &config.catalog)
        {
            filters.push(Arc::new(f));
        }
        // Last: a held call has passed every other guard, its bytes final.
        let flows_ask = config
            .flows
            .as_ref()
            .is_some_and(|f| f.on_violation == warden_config::flows::OnViolation::Approval);
        if let Some(f) = crate::guards::approval::ApprovalFilter::with_tenants(
            &config.approvals,
            &config.catalog,
            enforced.is_some() || flows_ask,
            tenants
                .layers
                .values()
                .map(|l| (l.tenant.clone(), l.approvals))
                .collect(),
            scope.clone(),
        ) {
            filters.push(Arc::new(f));
        }
        let chain = FilterChain::new(filters, parse_limits);
        let outer_chain = FilterChain::new(Vec::new(), parse_limits);
        let budget_clock = crate::guards::budget::BudgetClock::new(&config.budgets.timezone);
        Ok(Snapshot {
            budget_clock,
            revision: bundle.revision.clone(),
            config,
            routes,
            chain,
            outer_chain,
            parse_limits,
            auth,
            policy,
            redactor,
            handle_sealer,
            task_sealer,
            dlp,
            tenant_dlp,
            tenants: scope,
            registry,
            flow_catalog,
            flow,
        })
    }

    /// Finds the route for a request: host (without port or a trailing
    /// dot, case-insensitive: `Finance.Example.:443` is `finance.example`,
    /// as DNS and the upstream read it) and path.
    /// A prefix matches on a segment boundary only.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&ResolvedRoute> {
        self.route_index(host, path).map(|i| &self.routes[i])
    }

    /// As [`Snapshot::route`], the position in `routes`.
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(|h| strip_port(h).trim_end_matches('.'));
        self.routes.iter().position(|r| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                // `want` equals `got` lower-cased, compared without
                // making the lower-cased copy.
                (Some(want), Some(got)) => {
                    let want = want.trim_end_matches('.');
                    want.len() == got.len()
                        && want
                            .bytes()
                            .zip(got.bytes())
                            .all(|(w, g)| w == g.to_ascii_lowercase())
                }
                (Some(_), None) => false,
            };
            host_ok && prefix_matches(&r.prefix, path)
        })
    }

    /// The chain that judges messages to and from `server`: the whole chain,
    /// except on a virtual server's own leg, where the gateway's aggregator
    /// only merges and routes (each message is judged on its member's leg).
    pub fn chain_for(&self, server: &Server) -> &FilterChain {
        if server.composed.is_some() {
            &self.outer_chain
        } else {
            &self.chain
        }
    }

    /// The DLP filters that judge what travels beside the messages of a
    /// call by `principal` to `server` (header values, the URL): the org's,
    /// then each tenant's whose scope the call is in. Each judges on its
    /// own; a block or a withholding by any stands.
    pub fn metadata_dlp(
        &self,
        principal: &crate::engines::identity::Principal,
        server: &str,
    ) -> smallvec::SmallVec<[&crate::guards::dlp::DlpFilter; 2]> {
        let tenant = principal.canonical_tenant();
        let owner = self.tenants.owner(server);
        self.dlp
            .iter()
            .map(|d| &**d)
            .chain(
                self.tenant_dlp
                    .iter()
                    .filter(|(t, _)| t == tenant || owner == Some(t.as_str()))
                    .map(|(_, d)| &**d),
            )
            .collect()
    }

    pub fn server(&self, route: &ResolvedRoute) -> &Server {
        &self.config.servers[route.server]
    }
}

fn scoped(
    tenant: &str,
    scope: &Arc<crate::guards::tenants::Scope>,
    inner: Arc<dyn McpFilter>,
) -> Arc<dyn McpFilter> {
    Arc::new(crate::guards::tenants::Scoped::new(
        tenant.to_owned(),
        scope.clone(),
        inner,
    ))
}

/// The org's rule when the org has no Rego but tenants do: allow.
fn allow_all(config: &Config) -> Result<PolicyEngine, BuildError> {
    let modules = std::collections::BTreeMap::from([(
        "warden/org_allow.rego".to_owned(),
        "package warden.org_allow\n\ndecision := {\"allow\": true, \"reason\": \"no_org_policy\"}\n"
            .to_owned(),
    )]);
    PolicyEngine::compile(
        &modules,
        &serde_json::json!({}),
        "data.warden.org_allow.decision",
        &config.policy.timezone,
        config.policy.cache_capacity,
    )
    .map_err(|e| BuildError::at("warden.yaml", "policy", e.message))
}

fn resolve(index: usize, r: &Route, server: usize) -> ResolvedRoute {
    ResolvedRoute {
        index,
        prefix: r.prefix.clone(),
        host: r.host.clone(),
        upstream_prefix: r.upstream_prefix.clone(),
        server,
        via: None,
        others: Vec::new(),
    }
}

/// Two servers of one upstream address (the same port on the same IP, or
/// on this host each: loopback, an unspecified address, or one of this
/// host's interface addresses, read at each build) are told apart by path
/// alone: each route learns the upstream prefixes of the other servers
/// that lie below its own (`/` reaches `/mail`), so that `/docs/mail/mcp`
/// cannot reach `mail`'s endpoint under `docs`'s labels. Two servers at
/// the same address and prefix are one endpoint to the gateway (see the
/// limits).
fn fence_shared_upstreams(routes: &mut [ResolvedRoute], servers: &[Server]) {
    if routes.len() < 2 {
        return;
    }
    let own = warden_config::host::own_addresses();
    let this = |ip: std::net::IpAddr| warden_config::host::this_host(ip, &own);
    let same = |x: &std::net::SocketAddr, y: &std::net::SocketAddr| {
        let (a, b) = (x.ip().to_canonical(), y.ip().to_canonical());
        x.port() == y.port() && (a == b || (this(a) && this(b)))
    };
    let shared = |a: &Server, b: &Server| {
        a.upstreams
            .iter()
            .any(|x| b.upstreams.iter().any(|y| same(x, y)))
    };
    let fences: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let mine = loose_path(&r.upstream_prefix);
            let mut others: Vec<String> = routes
                .iter()
                .filter(|o| o.server != r.server && shared(&servers[r.server], &servers[o.server]))
                .map(|o| loose_path(&o.upstream_prefix))
                .filter(|theirs| *theirs != mine && prefix_matches(&mine, theirs))
                .collect();
            others.sort();
            others.dedup();
            others
        })
        .collect();
    for (r, others) in routes.iter_mut().zip(fences) {
        r.others = others;
    }
}

/// A path as the loosest server reads it: percent escapes decoded (twice
/// escaped too), `\` a slash, any case, a segment's `;` parameters,
/// trailing dots and spaces and empty segments dropped.
pub fn loose_path(p: &str) -> String {
    let mut s = p.to_owned();
    for _ in 0..3 {
        let d = percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned();
        if d == s {
            break;
        }
        s = d;
    }
    let s = s.replace('\\', "/").to_lowercase();
    let segments: Vec<&str> = s
        .split('/')
        .map(|seg| {
            seg.split(';')
                .next()
                .unwrap_or("")
                .trim_end_matches(['.', ' '])
        })
        .filter(|seg| !seg.is_empty())
        .collect();
    format!("/{}", segments.join("/"))
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rfind(':') {
        Some(i) if h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
        _ => h,
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
