//! Assembling the Pingora server from a bundle: listeners, admin, health checks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora_core::apps::HttpServerOptions;
use warden_filters::Snapshot;

use crate::app::admin::AdminApp;
use crate::hub::runtime::{HealthChecker, Runtime};
use crate::hub::state::Gateway;
use crate::observability::audit::{AuditSink, AuditWriter};
use crate::pipeline::service::WardenProxy;

pub struct RunOptions {
    pub source: crate::hub::bundles::SourceOptions,
    /// Overrides the bundle's listeners with one plaintext listener.
    pub listen: Vec<String>,
    pub admin: Option<String>,
    /// SHA-256 of the token the admin listener's writes need.
    pub admin_token: Option<[u8; 32]>,
    pub threads: usize,
    pub audit: Option<PathBuf>,
    /// Receive the listening sockets from the running process (SIGQUIT it).
    pub upgrade: bool,
    /// `None`: the default under the state directory (see `handover`).
    pub upgrade_sock: Option<PathBuf>,
    /// OTLP/HTTP collector base URL (spans go to `<url>/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// Where held calls are claimed (the control agent).
    pub approvals: Option<crate::hub::approval_client::ApprovalClient>,
    /// Where credentials kept in the vault are fetched: the agents held
    /// calls are claimed at, and their token.
    pub vault: Option<(Arc<crate::hub::agents::Agents>, Option<String>)>,
    /// The control agent the gateway runs on (`--agent`): its audit
    /// records are shipped there (`audit.export.agent`, default on).
    pub agent: Option<crate::observability::siem::AgentTarget>,
}

/// Builds everything and runs until a shutdown signal. SIGTERM drains:
/// listeners close at once, requests and streams in flight get the bundle's
/// `timeouts.drain` to finish. SIGINT stops at once. SIGQUIT hands the
/// listening sockets to a process started with `--upgrade`, then drains:
/// the new binary accepts from the same sockets while the old one finishes
/// what it has (the audit file stays one chain: see `audit`).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let (bundle, etag, why) = crate::hub::bundles::initial(&opts.source)?;
    // Where virtual servers call the gateway: `--listen`, else the
    // bundle's listeners at start.
    warden_local_servers::aggregate::listening_on(&opts.listen, &bundle.config.listeners);
    // One sealing secret for every process of this install (see `seal`).
    // Every table that grows with sessions or calls takes its bound from
    // one budget (`limits.memory`, read at start).
    let budget = bundle.config.limits.memory;
    let shared = match crate::sessions::seal::load_install_secret(&opts.source.state_dir) {
        Ok(secret) => {
            warden_filters::snapshot::Shared::for_install(Some(secret.as_bytes()), budget)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot keep this install's sealing key: sessions and handles end with this process"
            );
            warden_filters::snapshot::Shared::for_install(None, budget)
        }
    };
    keep_flows(&shared.flows, &opts.source.state_dir);
    let snap = Snapshot::build_shared(&bundle, Vec::new(), &shared).context("compiling bundle")?;
    let cfg = snap.config.clone();
    let rt = Runtime::new(snap).context("building upstream pools")?;
    let audit_path = opts.audit.clone().or(cfg.audit.path.clone());
    let (audit, writer): (AuditSink, AuditWriter) =
        AuditSink::start(crate::observability::audit::AuditOptions {
            path: audit_path.clone(),
            queue: cfg.audit.queue,
            mode: cfg.audit.fail_mode,
            rotate_size: cfg.audit.rotate_size,
            rotate_interval: cfg.audit.rotate_interval,
        })
        .with_context(|| {
            format!(
                "opening audit log {}",
                audit_path
                    .as_ref()
                    .map_or("stdout".into(), |p| p.display().to_string())
            )
        })?;
    // The SIEM export reads the trail the writer writes (see `siem`).
    let mut exports = Vec::new();
    if cfg.audit.syslog.is_some() || cfg.audit.http.is_some() {
        let Some(path) = &audit_path else {
            anyhow::bail!("audit.export needs the audit trail in a file (audit.path or --audit)");
        };
        // Reading a pipe or a terminal would take records from their reader
        // or block for ever.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            anyhow::bail!(
                "audit.export reads the audit trail back: {} must be a regular file",
                path.display()
            );
        }
        use crate::observability::siem::{hostname, Exporter};
        if let Some(s) = &cfg.audit.syslog {
            exports.push(
                Exporter::syslog(s.clone(), path.clone(), &opts.source.state_dir, hostname())
                    .context("starting the syslog audit export")?,
            );
        }
        if let Some(h) = &cfg.audit.http {
            exports.push(
                Exporter::http(h.clone(), path.clone(), &opts.source.state_dir, hostname())
                    .context("starting the HTTP audit export")?,
            );
        }
    }
    // The agent's audit store gets the raw lines (see `siem::agent`).
    match (&opts.agent, &audit_path) {
        (Some(target), Some(path)) if cfg.audit.agent_export => {
            if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
                tracing::warn!(
                    audit = %path.display(),
                    "the audit trail is not a regular file: its records are not shipped to the agent"
                );
            } else {
                exports.push(
                    crate::observability::siem::Exporter::agent(
                        target.clone(),
                        path.clone(),
                        &opts.source.state_dir,
                    )
                    .context("starting the audit export to the agent")?,
                );
            }
        }
        (Some(_), None) if cfg.audit.agent_export => tracing::warn!(
            "the audit trail goes to stdout: its records are not shipped to the agent (set audit.path or --audit; audit.export.agent: false silences this)"
        ),
        _ => {}
    }
    let source_desc = opts.source.source.describe();
    let gateway = Arc::new(Gateway::new(rt, audit.clone(), source_desc, shared));
    if opts.source.verifier.is_some() {
        gateway
            .bundles
            .set_expires(crate::hub::bundles::expires_of(&bundle).ok().flatten());
    }
    gateway.bundles.set_rollout(why, &opts.source.labels);
    if let Some(a) = opts.approvals {
        let _ = gateway.approvals.set(a);
    }
    if let Some((agents, token)) = opts.vault {
        let units = gateway
            .budget
            .entries(warden_config::model::Table::Credentials);
        let _ = gateway
            .vault
            .set(crate::hub::vault_client::VaultClient::new(
                agents,
                token,
                &opts.source.gateway_id,
                units,
            ));
    }
    if let Some(url) = &opts.otlp_endpoint {
        let t = crate::observability::otel::Telemetry::new(url, &opts.source.gateway_id)
            .map_err(|e| anyhow::anyhow!(e))?;
        let _ = gateway.telemetry.set(t);
    }

    let conf = ServerConf {
        threads: opts.threads.max(1),
        // One worker: a single-threaded event loop, without the
        // work-stealing scheduler's atomics and hand-offs on every wake-up
        // (there is nothing to steal from). Several workers share one
        // work-stealing runtime: Pingora's other mode runs every accept
        // loop on one worker, whose event loop would then watch every
        // client socket for all of them (BENCHMARKS.md, session 44).
        work_stealing: opts.threads > 1,
        grace_period_seconds: Some(cfg.timeouts.drain.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: crate::app::handover::socket_path(
            opts.upgrade_sock.as_deref(),
            &opts.source.state_dir,
            opts.upgrade,
        )?
        .display()
        .to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    // Every address must be free before anything starts: a busy port is one
    // clear line and a non-zero exit, not retries and a panic (an upgrade
    // receives its sockets from the running process instead).
    let addresses: Vec<String> = if opts.listen.is_empty() {
        cfg.listeners.iter().map(|l| l.address.clone()).collect()
    } else {
        opts.listen.clone()
    };
    let admin_addr = opts.admin.clone().or(cfg.admin.clone());
    if let Some(id) = &cfg.identity {
        if let Some(w) = resource_port_warning(&id.resource, &addresses) {
            tracing::warn!("{w}");
        }
    }
    if !opts.upgrade {
        for a in addresses.iter().chain(&admin_addr) {
            bindable(a)?;
        }
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut app = WardenProxy::new(gateway.clone(), opts.threads);
    let mut o = HttpServerOptions::default();
    o.h2c = true;
    // An HTTP/2 connection with no stream in progress (a preface and then
    // silence, say) is closed after as long as an idle HTTP/1.1 one.
    o.h2_idle_timeout = Some(crate::pipeline::service::DOWNSTREAM_KEEPALIVE);
    app.server_options = Some(o);
    // Every accepted stream gets a whole-header deadline first (see `conn`).
    let mut proxy = Service::new(
        "warden".to_string(),
        crate::pipeline::conn::Guarded {
            app: Arc::new(app),
            current: gateway.current.clone(),
        },
    );
    if !opts.listen.is_empty() {
        for l in &opts.listen {
            proxy.add_tcp(l);
        }
    } else {
        if cfg.listeners.is_empty() {
            bail!("the bundle defines no listeners; pass --listen ADDR");
        }
        for l in &cfg.listeners {
            match &l.tls {
                Some(t) => {
                    let tls = crate::identity::tls::settings(&l.name, t)?;
                    proxy.add_tls_with_settings(&l.address, None, tls);
                }
                None => proxy.add_tcp(&l.address),
            }
        }
    }
    server.add_service(proxy);

    if let Some(addr) = opts.admin.clone().or(cfg.admin.clone()) {
        let mut admin = Service::new(
            "warden admin".to_string(),
            AdminApp {
                gateway: gateway.clone(),
                started: std::time::SystemTime::now(),
                token: opts.admin_token,
            },
        );
        admin.add_tcp(&addr);
        server.add_service(admin);
    }
    server.add_service(background_service(
        "bundle watcher",
        crate::hub::bundles::BundleWatcher {
            target: gateway.publisher(),
            opts: opts.source.clone(),
            etag,
        },
    ));
    server.add_service(background_service(
        "jwks refresh",
        crate::identity::auth::JwksRefresher {
            current: gateway.current.clone(),
        },
    ));
    server.add_service(background_service(
        "quota store probe",
        crate::hub::runtime::StoreProbe {
            current: gateway.current.clone(),
            pins: gateway.shared.pins.clone(),
        },
    ));
    server.add_service(background_service(
        "hand-over watch",
        LeavingWatch {
            phases: std::sync::Mutex::new(Some(server.watch_execution_phase())),
            gateway: gateway.clone(),
        },
    ));
    server.add_service(background_service(
        "just-in-time grants",
        crate::hub::grants::GrantsWatcher {
            gateway: gateway.clone(),
        },
    ));
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            current: gateway.current.clone(),
        },
    ));

    tracing::info!(
        revision = %gateway.runtime().snap.revision,
        listen = %addresses.join(", "),
        admin = admin_addr.as_deref().unwrap_or("none"),
        "warden starting"
    );
    server.run(pingora::server::RunArgs::default());
    // All request runtimes have stopped: write what is queued, then exit.
    if let Some(t) = gateway.telemetry.get() {
        t.shutdown();
    }
    audit.stop_blocking();
    writer.join();
    // What the writer wrote last is exported before the process ends.
    for e in exports {
        e.stop();
    }
    Ok(())
}

/// Marks the gateway as leaving the moment Pingora starts a hand-over
/// (SIGQUIT: the sockets go to the new process, which accepts at once) or a
/// drain (SIGTERM). Pingora itself only stops keep-alive at the end of its
/// five-second hand-over window, when it closes idle connections under
/// clients that may be writing onto them; from the first moment instead,
/// every HTTP/1.1 response closes its connection gracefully.
struct LeavingWatch {
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
    gateway: Arc<Gateway>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LeavingWatch {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            let phase = tokio::select! {
                p = phases.recv() => p,
                _ = shutdown.changed() => {
                    self.gateway.leaving.store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
            };
            match phase {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout
                    | ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::ShutdownStarted,
                ) => {
                    tracing::info!("leaving: responses now close their connections");
                    self.gateway
                        .leaving
                        .store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// A warning when the bundle's `identity.resource` names a port the gateway
/// does not listen on: clients would be sent to the wrong place by the
/// protected-resource metadata, and tokens minted for the listened-on URL
/// would fail the audience check.
pub fn resource_port_warning(resource: &str, listen: &[String]) -> Option<String> {
    let rest = resource
        .strip_prefix("https://")
        .map(|r| (r, 443))
        .or_else(|| resource.strip_prefix("http://").map(|r| (r, 80)));
    let (rest, default) = rest?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let port = match authority.rsplit_once(':') {
        Some((_, p)) if !authority.ends_with(']') => p.parse::<u16>().ok()?,
        _ => default,
    };
    let ports: Vec<u16> = listen
        .iter()
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    (!ports.is_empty() && !ports.contains(&port)).then(|| {
        format!(
            "identity.resource `{resource}` names port {port}, but the gateway listens on {}: \
             set identity.resource to the URL clients use",
            listen.join(", ")
        )
    })
}

/// Whether `addr` can be listened on now; otherwise an error naming the
/// address and, when this machine can tell, the process that holds it.
fn bindable(addr: &str) -> anyhow::Result<()> {
    let resolved: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("cannot listen on {addr}: not an address"))?
        .collect();
    for sa in resolved {
        if let Err(e) = std::net::TcpListener::bind(sa) {
            let holder = if e.kind() == std::io::ErrorKind::AddrInUse {
                holder_of(sa.port())
                    .map(|(pid, name)| format!(" (held by pid {pid}, `{name}`)"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            bail!("cannot listen on {addr}: {e}{holder}");
        }
    }
    Ok(())
}

/// The process listening on TCP `port` (Linux: `/proc/net/tcp*` and each
/// process's open sockets), if it can be found.
fn holder_of(port: u16) -> Option<(u32, String)> {
    let want = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                let name = std::fs::read_to_string(proc_dir.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                return Some((pid, name));
            }
        }
    }
    None
}

/// Keeps what has flowed to each client in the state dir (see
/// `warden_filters::engines::flow`'s journal), and reads, once a second,
/// what another process of this install records there (the other half of
/// a binary upgrade).
fn keep_flows(
    flows: &std::sync::Arc<warden_filters::engines::flow::FlowTables>,
    dir: &std::path::Path,
) {
    use warden_filters::engines::flow::unix_secs;
    if let Err(e) = flows.keep_in(dir, unix_secs(std::time::SystemTime::now())) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot keep the flows table in the state dir: a restart forgets what flowed to each session");
        return;
    }
    let flows = flows.clone();
    let spawned = std::thread::Builder::new()
        .name("warden-flows".into())
        .spawn(move || {
            let mut seen = [0; 3];
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if let Err(e) = flows.follow(unix_secs(std::time::SystemTime::now())) {
                    tracing::warn!(error = %e, "cannot read the flows journal");
                }
                let [failed, skipped, unroomed] = flows.journal_problems();
                if failed > seen[0] {
                    tracing::error!(failed = failed - seen[0], "the flows journal could not record changes: the replies that raised them were withheld");
                }
                if skipped > seen[1] {
                    tracing::warn!(skipped = skipped - seen[1], "flows journal lines that hold no state were skipped");
                }
                if unroomed > seen[2] {
                    tracing::error!(states = unroomed - seen[2], "recorded flow states were not read back: the flows table is full (raise limits.memory)");
                }
                seen = [failed, skipped, unroomed];
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the flows journal reader");
    }
}
