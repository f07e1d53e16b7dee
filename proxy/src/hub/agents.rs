//! Several control agents (`--agent URL,URL…`): which one a gateway talks
//! to, and when it turns to another.
//!
//! The agents of one fleet are active-active on one store and sign with one
//! bundle key, so any of them answers any request: bundle polls, fleet
//! reports, audit batches and approval claims all go to the agent that
//! answered last, and to the next one when it cannot be reached (connect
//! refused, a connect or read timeout, a 5xx, or a reply that is not the
//! agent's protocol). An agent that failed is left alone for a while (one
//! second, doubling to 30 s), then tried again like the others; the agent
//! in use stays in use while it answers. A host name that resolves to
//! several addresses is one agent per address (each is tried; the `Host`
//! header and TLS name stay the name), resolved again every 30 s.
//!
//! What an agent answers is judged as before whichever agent it is: a
//! bundle must verify, be proven current for the request and be no older
//! than the newest applied (`freshness`); an approval must carry a grant
//! for this claim's nonce. Failing over changes where a request goes, never
//! what is accepted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

use super::agent_tls::AgentTls;

/// The most agent URLs one list may name.
pub const MAX_AGENTS: usize = 16;
/// The most addresses one host name counts for.
const MAX_ADDRESSES: usize = 16;
/// How long a name's addresses are kept before it is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How long resolving a name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an agent that failed is left alone at first, and at most.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Splits and checks agent base URLs as `flag` gave them: each value a
/// comma-separated list (the flag may also be repeated; the lists add up).
/// Refuses an empty entry, anything but an `http://` or `https://` URL
/// with a host, credentials, a query or a fragment in the URL, a URL given
/// twice and more than [`MAX_AGENTS`]. Answers the base URLs without a
/// trailing `/`.
pub fn parse_urls(flag: &str, values: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        for entry in value.split(',') {
            let entry = entry.trim_matches(' ');
            if entry.is_empty() {
                return Err(format!(
                    "{flag} `{value}`: an empty entry (give base URLs separated by commas, \
                     e.g. http://agent-1:7070,http://agent-2:7070)"
                ));
            }
            if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{flag} `{entry}`: a URL holds no space"));
            }
            let u = url::Url::parse(entry).map_err(|e| {
                format!("{flag} `{entry}`: not a URL ({e}); give scheme://host[:port][/path]")
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!(
                    "{flag} `{entry}`: an agent is reached over http:// or https://, not {}:",
                    u.scheme()
                ));
            }
            // `http:agent` parses as `http://agent/`: say what is meant.
            if !entry.contains("://") || u.host_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "{flag} `{entry}`: not a base URL (scheme://host[:port][/path])"
                ));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(format!(
                    "{flag} `{entry}`: credentials do not go in the URL (it is logged and \
                     labels metrics); give the token with --agent-token"
                ));
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err(format!(
                    "{flag} `{entry}`: a base URL has no query or fragment"
                ));
            }
            let base = u.as_str().trim_end_matches('/').to_owned();
            if out.contains(&base) {
                return Err(format!("{flag}: {base} is given twice"));
            }
            out.push(base);
        }
    }
    if out.is_empty() {
        return Err(format!("{flag}: no agent URL"));
    }
    if out.len() > MAX_AGENTS {
        return Err(format!(
            "{flag}: {} agents, at most {MAX_AGENTS}",
            out.len()
        ));
    }
    Ok(out)
}

/// One agent to try: a base URL and, for a host name, one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The base URL as given (no trailing `/`).
    pub base: String,
    /// The URL's host, as a client resolves it (no brackets).
    host: String,
    /// The address this endpoint pins the name to (`None`: an IP literal,
    /// or a name that could not be resolved, left to the client).
    pub addr: Option<SocketAddr>,
}

impl Endpoint {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How logs name it: the URL, and the address for a name.
    pub fn name(&self) -> String {
        match self.addr {
            Some(a) => format!("{} ({a})", self.base),
            None => self.base.clone(),
        }
    }

    /// The address label of its metrics.
    fn address(&self) -> String {
        self.addr.map(|a| a.to_string()).unwrap_or_default()
    }

    /// Pins `b` to this endpoint's address (the name stays in `Host` and
    /// in TLS).
    pub fn pin(&self, b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match self.addr {
            Some(a) => b.resolve(&self.host, a),
            None => b,
        }
    }
}

/// A configured base URL.
#[derive(Debug)]
struct Base {
    url: String,
    host: String,
    port: u16,
    /// An IP address in the URL: nothing to resolve.
    literal: bool,
}

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    /// Left alone until then.
    until: Option<Instant>,
    why: String,
}

#[derive(Debug, Default)]
struct State {
    /// Per base: its addresses and when they were resolved.
    resolved: Vec<Option<(Vec<SocketAddr>, Instant)>>,
    /// The endpoint that answered last.
    in_use: Option<Endpoint>,
    health: HashMap<Endpoint, Health>,
    /// Endpoints whose metrics were set (to zero them when they change).
    labelled: Vec<Endpoint>,
}

/// The agents of one list (`--agent`, or `--approvals-agent` when given
/// apart), shared by everything that talks to them.
#[derive(Debug)]
pub struct Agents {
    /// `agent` (`--agent`) or `approvals` (`--approvals-agent`): the
    /// `role` label of the metrics.
    role: &'static str,
    bases: Vec<Base>,
    state: Mutex<State>,
    resolving: tokio::sync::Mutex<()>,
    /// `--agent-ca`, `--agent-client-cert`: the TLS of every client to them.
    tls: Option<Arc<AgentTls>>,
}

/// What a request to an agent is for: the `use` label of the failures.
#[derive(Debug, Clone, Copy)]
pub enum Use {
    Bundles,
    Reports,
    Audit,
    Approvals,
}

impl Use {
    fn as_str(self) -> &'static str {
        match self {
            Use::Bundles => "bundles",
            Use::Reports => "reports",
            Use::Audit => "audit",
            Use::Approvals => "approvals",
        }
    }
}

struct AgentMetrics {
    in_use: IntGaugeVec,
    failovers: IntCounterVec,
    failures: IntCounterVec,
}

#[allow(clippy::expect_used)]
fn metrics() -> &'static AgentMetrics {
    static M: std::sync::OnceLock<AgentMetrics> = std::sync::OnceLock::new();
    M.get_or_init(|| AgentMetrics {
        in_use: register_int_gauge_vec!(
            "warden_control_agent_in_use",
            "1 for the control agent the gateway talks to (the one that answered last), 0 for the others it knows",
            &["role", "agent", "address"]
        )
        .expect("registers once"),
        failovers: register_int_counter_vec!(
            "warden_control_agent_failovers_total",
            "Times the gateway turned away from this control agent, the one in use, because it failed",
            &["role", "agent", "address"]
        )
        .expect("registers once"),
        failures: register_int_counter_vec!(
            "warden_control_agent_failures_total",
            "Requests to this control agent that failed (unreachable, timed out, 5xx, not the agent's protocol), by use",
            &["role", "agent", "address", "use"]
        )
        .expect("registers once"),
    })
}

impl Agents {
    /// The agents at `urls` (checked by [`parse_urls`]).
    pub fn new(role: &'static str, urls: &[String]) -> Result<Arc<Agents>, String> {
        Agents::with_tls(role, urls, None)
    }

    /// The agents at `urls`, reached with `tls` (`--agent-ca`,
    /// `--agent-client-cert`): then every one must be an `https://` URL,
    /// or the certificate would silently not be presented (nor the agent's
    /// verified).
    pub fn with_tls(
        role: &'static str,
        urls: &[String],
        tls: Option<Arc<AgentTls>>,
    ) -> Result<Arc<Agents>, String> {
        let mut bases = Vec::new();
        for u in urls {
            let parsed = url::Url::parse(u).map_err(|e| format!("{u}: {e}"))?;
            if tls.is_some() && parsed.scheme() != "https" {
                return Err(format!(
                    "{u}: --agent-ca and --agent-client-cert are for agents reached over \
                     https://; this one is reached over {}://",
                    parsed.scheme()
                ));
            }
            let (host, literal) = match parsed.host() {
                Some(url::Host::Domain(d)) => (d.to_owned(), false),
                Some(url::Host::Ipv4(a)) => (a.to_string(), true),
                Some(url::Host::Ipv6(a)) => (a.to_string(), true),
                None => return Err(format!("{u}: no host")),
            };
            bases.push(Base {
                url: u.trim_end_matches('/').to_owned(),
                host,
                port: parsed.port_or_known_default().unwrap_or(80),
                literal,
            });
        }
        if bases.is_empty() {
            return Err("no agent URL".into());
        }
        let n = bases.len();
        let agents = Agents {
            role,
            bases,
            state: Mutex::new(State {
                resolved: vec![None; n],
                ..State::default()
            }),
            resolving: tokio::sync::Mutex::new(()),
            tls,
        };
        // Every configured agent shows in the metrics, none in use yet.
        {
            let mut st = agents.lock();
            for e in agents.endpoints(&st) {
                agents.label(&mut st, &e, 0);
            }
        }
        Ok(Arc::new(agents))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The base URLs, as `/status` and logs show the source.
    pub fn describe(&self) -> String {
        self.bases
            .iter()
            .map(|b| b.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The base URL of the agent in use (the first one before any
    /// answered): where people are pointed to approve a call.
    pub fn base_in_use(&self) -> String {
        let st = self.lock();
        st.in_use
            .as_ref()
            .map(|e| e.base.clone())
            .unwrap_or_else(|| self.bases[0].url.clone())
    }

    /// Every endpoint, in the configured order.
    fn endpoints(&self, st: &State) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (b, r) in self.bases.iter().zip(&st.resolved) {
            match r {
                Some((addrs, _)) if !b.literal && !addrs.is_empty() => {
                    out.extend(addrs.iter().map(|a| Endpoint {
                        base: b.url.clone(),
                        host: b.host.clone(),
                        addr: Some(*a),
                    }))
                }
                _ => out.push(Endpoint {
                    base: b.url.clone(),
                    host: b.host.clone(),
                    addr: None,
                }),
            }
        }
        out
    }

    fn label(&self, st: &mut State, e: &Endpoint, v: i64) {
        metrics()
            .in_use
            .with_label_values(&[self.role, &e.base, &e.address()])
            .set(v);
        if !st.labelled.contains(e) {
            st.labelled.push(e.clone());
        }
    }

    /// Resolves the host names whose addresses are older than 30 s (or
    /// never resolved); a name that does not resolve keeps what it had.
    async fn refresh(&self) {
        let due: Vec<usize> = {
            let st = self.lock();
            self.bases
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    !b.literal
                        && st.resolved[*i]
                            .as_ref()
                            .is_none_or(|(_, at)| at.elapsed() >= RESOLVE_EVERY)
                })
                .map(|(i, _)| i)
                .collect()
        };
        if due.is_empty() {
            return;
        }
        // One resolution at a time; the others go on with what is known.
        let Ok(_one) = self.resolving.try_lock() else {
            return;
        };
        for i in due {
            let b = &self.bases[i];
            let found = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((b.host.as_str(), b.port)),
            )
            .await;
            let mut addrs: Vec<SocketAddr> = Vec::new();
            if let Ok(Ok(it)) = found {
                for a in it {
                    if !addrs.contains(&a) && addrs.len() < MAX_ADDRESSES {
                        addrs.push(a);
                    }
                }
            }
            let mut st = self.lock();
            let old = st.resolved[i].as_ref().map(|(a, _)| a.clone());
            if addrs.is_empty() {
                tracing::debug!(agent = %b.url, "control agent: its name does not resolve now; keeping what it resolved to before");
                let kept = old.unwrap_or_default();
                st.resolved[i] = Some((kept, Instant::now()));
                continue;
            }
            if old.as_ref() != Some(&addrs) {
                if addrs.len() > 1 {
                    tracing::info!(agent = %b.url, addresses = ?addrs, "control agent: the name resolves to {} addresses, each one tried as an agent", addrs.len());
                }
                // The addresses it no longer has leave the metrics.
                let gone: Vec<Endpoint> = st
                    .labelled
                    .iter()
                    .filter(|e| e.base == b.url && e.addr.is_none_or(|a| !addrs.contains(&a)))
                    .cloned()
                    .collect();
                for e in gone {
                    let _ =
                        metrics()
                            .in_use
                            .remove_label_values(&[self.role, &e.base, &e.address()]);
                    st.labelled.retain(|l| *l != e);
                    st.health.remove(&e);
                }
            }
            st.resolved[i] = Some((addrs, Instant::now()));
            let now: Vec<Endpoint> = self.endpoints(&st);
            let in_use = st.in_use.clone();
            for e in now.iter().filter(|e| e.base == b.url) {
                if !st.labelled.contains(e) {
                    self.label(&mut st, e, i64::from(in_use.as_ref() == Some(e)));
                }
            }
        }
    }

    /// The endpoints in the order to try them: the one in use while it is
    /// not left alone, then the others that are not, in the configured
    /// order, then those left alone, the soonest free first.
    pub async fn candidates(&self) -> Vec<Endpoint> {
        self.refresh().await;
        let st = self.lock();
        let now = Instant::now();
        let resting = |e: &Endpoint| st.health.get(e).and_then(|h| h.until).filter(|u| *u > now);
        let all = self.endpoints(&st);
        let mut out: Vec<Endpoint> = Vec::with_capacity(all.len());
        if let Some(e) = st.in_use.as_ref().filter(|e| all.contains(e)) {
            if resting(e).is_none() {
                out.push(e.clone());
            }
        }
        out.extend(
            all.iter()
                .filter(|e| resting(e).is_none() && !out.contains(e))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut rest: Vec<(Instant, Endpoint)> = all
            .iter()
            .filter_map(|e| resting(e).map(|u| (u, e.clone())))
            .collect();
        rest.sort_by_key(|(u, _)| *u);
        out.extend(rest.into_iter().map(|(_, e)| e));
        out
    }

    /// `e` answered as an agent: it is the one in use from now on (one
    /// line in the log when that changes).
    pub fn answered(&self, e: &Endpoint) {
        let mut st = self.lock();
        if let Some(h) = st.health.get_mut(e) {
            h.failures = 0;
            h.until = None;
        }
        if st.in_use.as_ref() == Some(e) {
            return;
        }
        let previous = st.in_use.replace(e.clone());
        match &previous {
            Some(p) => {
                let why = st
                    .health
                    .get(p)
                    .filter(|h| h.failures > 0)
                    .map(|h| h.why.clone())
                    .unwrap_or_else(|| "it did not answer first".into());
                tracing::warn!(role = self.role, agent = %e.name(), previous = %p.name(), "control agent: now using {} instead of {} ({why})", e.name(), p.name());
                self.label(&mut st, p, 0);
            }
            None if self.bases.len() > 1 || self.endpoints(&st).len() > 1 => {
                tracing::info!(role = self.role, agent = %e.name(), "control agent: using {}", e.name())
            }
            None => {}
        }
        self.label(&mut st, e, 1);
    }

    /// A request to `e` (for `what`) failed: `e` is left alone for a
    /// while, and the next request goes to another agent first.
    pub fn failed(&self, e: &Endpoint, what: Use, why: &str) {
        let m = metrics();
        m.failures
            .with_label_values(&[self.role, &e.base, &e.address(), what.as_str()])
            .inc();
        let mut st = self.lock();
        let several = self.endpoints(&st).len() > 1;
        let in_use = st.in_use.as_ref() == Some(e);
        let h = st.health.entry(e.clone()).or_default();
        h.failures = h.failures.saturating_add(1);
        let pause = FIRST_PAUSE
            .saturating_mul(1u32 << (h.failures - 1).min(5))
            .min(MAX_PAUSE);
        let first = h.until.is_none_or(|u| u <= Instant::now());
        h.until = Some(Instant::now() + pause);
        h.why = why.chars().take(200).collect();
        if in_use && several && first {
            m.failovers
                .with_label_values(&[self.role, &e.base, &e.address()])
                .inc();
            tracing::debug!(role = self.role, agent = %e.name(), r#use = what.as_str(), "control agent failed: {why}; trying another");
        }
    }

    /// The TLS the clients to these agents are built with.
    pub fn tls(&self) -> Option<Arc<AgentTls>> {
        self.tls.clone()
    }

    /// How many endpoints there are now.
    pub fn len(&self) -> usize {
        self.endpoints(&self.lock()).len()
    }

    /// Never: a list holds one agent at least.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// HTTP clients of one user of the agents (the bundle poll, the audit
/// export, approvals), one per endpoint, each pinned to its address and
/// built as `make` says (timeouts, redirects), with the agents' TLS when
/// there is one. A client's connections belong to the runtime that uses
/// it, so each user keeps its own.
pub struct Clients {
    make: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
    built: Mutex<Built>,
    plain: std::sync::OnceLock<reqwest::Client>,
    tls: Option<Arc<AgentTls>>,
}

#[derive(Default)]
struct Built {
    clients: HashMap<Endpoint, reqwest::Client>,
    /// The generation of the TLS files they were built with.
    generation: u64,
}

impl Clients {
    pub fn new(make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static) -> Clients {
        Clients {
            make: Box::new(make),
            built: Mutex::new(Built::default()),
            plain: std::sync::OnceLock::new(),
            tls: None,
        }
    }

    /// The clients to `agents`, with their TLS (`--agent-ca`,
    /// `--agent-client-cert`): when its files are loaded again, the
    /// clients are built again.
    pub fn for_agents(
        agents: &Agents,
        make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Clients {
        Clients {
            tls: agents.tls(),
            ..Clients::new(make)
        }
    }

    /// The client for a URL that is no agent (`--bundle-url`).
    pub fn plain(&self) -> Result<reqwest::Client, String> {
        if let Some(c) = self.plain.get() {
            return Ok(c.clone());
        }
        let c = (self.make)().build().map_err(|e| e.to_string())?;
        Ok(self.plain.get_or_init(|| c).clone())
    }

    /// The client for `e`.
    pub fn get(&self, e: &Endpoint) -> Result<reqwest::Client, String> {
        let tls = self.tls.as_ref().map(|t| t.current());
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, _)) = &tls {
            // The files changed: every client is built again with them
            // (connections open with the old ones close with their client).
            if built.generation != *generation {
                built.clients.clear();
                built.generation = *generation;
            }
        }
        if let Some(c) = built.clients.get(e) {
            return Ok(c.clone());
        }
        let mut b = e.pin((self.make)());
        if let Some((_, config)) = tls {
            b = b.use_preconfigured_tls((*config).clone());
        }
        let c = b.build().map_err(|err| format!("{}: {err}", e.name()))?;
        // Endpoints come and go with DNS: the map stays small.
        if built.clients.len() >= 4 * MAX_AGENTS {
            built.clients.clear();
        }
        built.clients.insert(e.clone(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
