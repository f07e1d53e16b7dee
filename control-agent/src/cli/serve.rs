//! `warden-agent serve`: the agent itself. Its flags are checked, its
//! actor files read, its state opened (approvals, audit records, bundle
//! store), then the API served and the background jobs ([`crate::jobs`])
//! started beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::client::runtime;
use super::keys::{signer, Signing};
use crate::approvals::Approvals;
use crate::audit::AuditStore;
use crate::caller::People;
use crate::server::{Api, Tokens};
use crate::store::Store;

// The flags of `serve` (no doc comment: the subcommand's help is its
// variant's in `Cmd`).
#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    source: PathBuf,
    /// The agent's state (history, what is served, the kill switch,
    /// approvals, the audit store, the change record) lives here, unless
    /// `--database` keeps it.
    #[arg(long, required_unless_present = "database")]
    state: Option<PathBuf>,
    /// Address to listen on; port 0 picks one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    #[command(flatten)]
    signing: Signing,
    /// Admin token (publish, rollback, kill, fleet).
    #[arg(long, env = "WARDEN_AGENT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Fleet token (gateways: fetch bundles, report status).
    #[arg(long, env = "WARDEN_AGENT_FLEET_TOKEN", hide_env_values = true)]
    fleet_token: String,
    /// How often the source directory is checked for changes, each
    /// change published to every gateway; `0` publishes only on
    /// `publish` (what a canary workflow wants).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    watch_interval: Duration,
    /// Members not heard from for this long are shown as stale.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    stale_after: Duration,
    /// Audit records shipped by the gateways are kept this long
    /// (`<state>/audit.sqlite3`).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    audit_retention: Duration,
    /// At most this many audit records are kept (the oldest go first).
    #[arg(long, default_value_t = 5_000_000)]
    audit_max_rows: u64,
    /// At most this many bytes of audit records (lines and indexes;
    /// `8GiB`, `500MiB`), the oldest deleted first.
    #[arg(long, default_value = "8GiB", value_parser = parse_bytes)]
    audit_max_bytes: u64,
    /// Approvers: a people file (name → SHA-256 (hex) of their token, or
    /// `{token_sha256, principals, tenants}`; any role may be named, see
    /// docs/governance.md). Without approvers, held calls wait and nobody
    /// can approve them.
    #[arg(long)]
    approvers: Option<PathBuf>,
    /// Console viewers (read-only): a people file (name → SHA-256 (hex)
    /// of their token, or `{token_sha256, tenants}`).
    #[arg(long)]
    viewers: Option<PathBuf>,
    /// Administrators: a people file whose entries name their role
    /// (`{token_sha256, role: org_admin|org_reviewer|tenant_admin, tenant}`,
    /// see docs/governance.md). The admin token stays an org admin.
    #[arg(long)]
    admins: Option<PathBuf>,
    /// Gateways with a token of their own: a YAML map of gateway id →
    /// SHA-256 (hex) of its token. Such an id is spoken for by its
    /// token alone (bundle fetches, reports, audit, approval claims),
    /// never by the shared fleet token nor another gateway's.
    #[arg(long)]
    gateways: Option<PathBuf>,
    /// A host name the console answers to (repeatable), beside IP
    /// literals and `localhost`: the name operators type to reach it.
    #[arg(long = "console-host")]
    console_hosts: Vec<String>,
    /// The token `/metrics` asks for (`Authorization: Bearer`; the
    /// admin token works too). Without it `/metrics` is open to anyone
    /// who reaches the agent.
    #[arg(long, env = "WARDEN_AGENT_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// PostgreSQL URL (`postgres://user:password@host:5432/warden`): the
    /// agent's state is kept there, and every agent given the same
    /// database serves the same control plane (active-active behind any
    /// load balancer; the background jobs run on one of them at a time).
    /// Without it, the state is files under `--state`.
    #[arg(long, env = "WARDEN_AGENT_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Serve HTTPS with this certificate (PEM, the chain after it), read
    /// again when the file changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Ask clients for a certificate signed by this CA (PEM): a gateway's
    /// names its gateway id (a URI SAN `spiffe://…/gateway/<id>`, else its
    /// first DNS name), and its connection then speaks for that gateway
    /// alone, whatever token it sends. People and the CLI present none.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Refuse gateways' requests that come without a client certificate
    /// naming a gateway.
    #[arg(long, requires = "tls_client_ca")]
    require_gateway_certs: bool,
    /// People sign in to the console through this OpenID Connect
    /// provider: a provider file (issuer, client, redirect URL, role
    /// rules over claims; see docs/identity.md).
    #[arg(long)]
    oidc: Option<PathBuf>,
    /// Announce held calls to webhooks (generic signed JSON, Slack,
    /// Teams): a notifications file (see docs/console.md).
    #[arg(long)]
    notify: Option<PathBuf>,
    /// The vault's master keys: a file (mode 0600) of `id:base64` lines,
    /// 32 random bytes each, the first the current one (older ones still
    /// open what they wrapped). Re-read when it changes. See
    /// docs/identity.md ("Each person's own account").
    #[arg(long, conflicts_with = "vault_keys_env")]
    vault_keys: Option<PathBuf>,
    /// The vault's master keys from this environment variable instead
    /// (same format; not re-read).
    #[arg(long)]
    vault_keys_env: Option<String>,
    /// Providers at which people connect their own accounts (per-user
    /// credentials): a connections file. Needs the vault's keys and
    /// `--oidc` (who opens a consent link).
    #[arg(long, requires = "oidc")]
    connections: Option<PathBuf>,
}

/// A size: a number of bytes, or with `KiB`, `MiB`, `GiB` (or `KB`,
/// `MB`, `GB`: powers of ten); at least 1 MiB.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: a size such as 8GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}`: too large"))?;
    if v < 1 << 20 {
        return Err(format!("`{s}`: at least 1MiB"));
    }
    Ok(v)
}

/// Runs the agent until its server stops (or fails to start).
pub fn serve(a: ServeArgs) -> anyhow::Result<bool> {
    check_tokens(&a)?;
    let people = read_people(&a)?;
    let gateway_tokens = match &a.gateways {
        Some(p) => crate::server::read_gateway_tokens(p)?,
        None => Default::default(),
    };
    check_distinct(&a, &people, &gateway_tokens)?;
    let People {
        approvers,
        viewers,
        admins,
    } = people;
    if let Some(url) = &a.database {
        let done = crate::pg::migrate(url)?;
        if !done.is_empty() {
            eprintln!("warden-agent: database schema steps applied: {done:?}");
        }
    }
    let limits = crate::audit::Limits {
        retention: a.audit_retention,
        max_rows: a.audit_max_rows.max(1),
        max_bytes: a.audit_max_bytes,
    };
    let (approvals, audit) = match &a.database {
        Some(url) => (
            Approvals::on_database(url, approvers)?,
            AuditStore::on_database(url, limits)?,
        ),
        None => (
            Approvals::open(state_dir(&a)?, approvers)?,
            AuditStore::open(&state_dir(&a)?.join("audit.sqlite3"), limits)?,
        ),
    };
    let (approvals, audit) = (Arc::new(approvals), Arc::new(audit));
    let store = open_store(&a)?;
    let (lease, _listening) = match &a.database {
        Some(url) => {
            let holder = format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "agent".into()),
                std::process::id()
            );
            let lease = crate::pg::Lease::contend(url, "jobs", holder)?;
            // Another agent's change is loaded when it says so (and every
            // few seconds, and after a reconnect).
            let (s, ap) = (store.clone(), approvals.clone());
            let listening = crate::pg::listen(url, move |domain| {
                let res = match domain {
                    "store" => s.catch_up(),
                    "approvals" => ap.catch_up(),
                    "*" => s.catch_up().and(ap.catch_up()),
                    _ => Ok(()),
                };
                if let Err(e) = res {
                    tracing::warn!(error = %e, "cannot load what another agent changed");
                }
            })?;
            (Arc::new(lease), Some(listening))
        }
        None => (Arc::new(crate::pg::Lease::alone("jobs")), None),
    };
    let mut console = crate::console::state::Console::new(viewers, a.console_hosts.clone());
    if let Some(path) = &a.oidc {
        let cfg = crate::oidc::config::read(path)?;
        console.oidc = Some(Arc::new(crate::oidc::Oidc::new(cfg)?));
    }
    if let Some(url) = &a.database {
        console
            .sessions
            .share(crate::console::shared::SharedSessions::connect(url)?);
    }
    let notify = a
        .notify
        .as_deref()
        .map(crate::notify::config::read)
        .transpose()?;
    let connect = open_vault(&a, &store, console.oidc.as_deref())?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(crate::server::tls::Tls::open(
            crate::server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: a.tls_client_ca.clone(),
            },
        )?),
        _ => None,
    };
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen).await?;
        println!(
            "listening on {}{}",
            listener.local_addr()?,
            if tls.is_some() { " (https)" } else { "" }
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        let _jobs = crate::jobs::start(&store, &audit, a.watch_interval, &lease)?;
        let api = Arc::new(Api {
            store,
            tokens: Tokens::new(&a.admin_token, &a.fleet_token)
                .with_gateways(gateway_tokens)
                .with_metrics_token(a.metrics_token.as_deref())
                .requiring_gateway_certs(a.require_gateway_certs),
            approvals,
            metrics: crate::server::Metrics::with_lease(lease.clone()),
            audit,
            console,
            admins,
            connect,
        });
        let _notifier = match notify {
            Some(cfg) => {
                // Budget alerts are queued at ingest only for webhooks
                // that hear of them.
                if cfg
                    .webhooks
                    .iter()
                    .any(|h| h.hears(crate::notify::config::Event::BudgetAlerts))
                {
                    api.audit.queue_alerts(crate::audit::alerts::MAX_QUEUED);
                }
                Some(crate::notify::start(api.clone(), cfg, lease.clone())?)
            }
            None => None,
        };
        crate::server::serve(listener, api, tls).await
    })?;
    Ok(true)
}

/// The vault and the consent flow, when the agent has master keys.
fn open_vault(
    a: &ServeArgs,
    store: &Arc<Store>,
    oidc: Option<&crate::oidc::Oidc>,
) -> anyhow::Result<Option<Arc<crate::connect::Connect>>> {
    use crate::vault::{KeyWrap, MasterKeys, Vault, VaultBackend};
    let keys: Arc<dyn KeyWrap> = match (&a.vault_keys, &a.vault_keys_env) {
        (Some(f), _) => Arc::new(MasterKeys::from_file(f)?),
        (None, Some(var)) => Arc::new(MasterKeys::from_env(var)?),
        (None, None) if a.connections.is_some() => {
            bail!(
                "--connections keeps tokens in the vault: give --vault-keys (or --vault-keys-env)"
            )
        }
        (None, None) => return Ok(None),
    };
    let backend: Box<dyn VaultBackend> = match &a.database {
        Some(url) => Box::new(crate::vault::postgres::PgVault::connect(url)?),
        None => Box::new(crate::vault::file::VaultFile::open(state_dir(a)?)?),
    };
    let vault = Arc::new(Vault::new(backend, keys)?);
    let config = match &a.connections {
        Some(p) => crate::connect::config::read(p)?,
        None => crate::connect::config::Connections::none(),
    };
    // Consent links point at the console, where the provider sends people
    // back after signing in.
    let origin = match oidc {
        Some(o) => {
            let mut u = o.config().redirect_url.clone();
            u.set_path("/");
            u.set_query(None);
            u
        }
        None => url::Url::parse(&format!("http://{}/", a.listen))?,
    };
    Ok(Some(Arc::new(crate::connect::Connect::new(
        config,
        vault,
        origin,
        store.clone(),
    )?)))
}

/// The state directory (given unless `--database` is).
fn state_dir(a: &ServeArgs) -> anyhow::Result<&Path> {
    a.state
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--state is needed without --database"))
}

/// The admin, fleet and metrics tokens: long enough, and the admin and
/// fleet tokens apart.
fn check_tokens(a: &ServeArgs) -> anyhow::Result<()> {
    let min = crate::server::MIN_TOKEN_LEN;
    if a.admin_token.len() < min || a.fleet_token.len() < min {
        bail!("admin and fleet tokens must be at least {min} characters");
    }
    if a.metrics_token.as_ref().is_some_and(|t| t.len() < min) {
        bail!("the metrics token must be at least {min} characters");
    }
    if a.admin_token == a.fleet_token {
        bail!("the admin and fleet tokens must differ");
    }
    Ok(())
}

/// The people files read (one format, [`crate::caller::people`]), one
/// person one entry across them.
fn read_people(a: &ServeArgs) -> anyhow::Result<People> {
    use crate::caller::people::{read_all, FileKind};
    let files: Vec<(&Path, FileKind)> = [
        (&a.admins, FileKind::Admins),
        (&a.approvers, FileKind::Approvers),
        (&a.viewers, FileKind::Viewers),
    ]
    .into_iter()
    .filter_map(|(p, k)| Some((p.as_deref()?, k)))
    .collect();
    read_all(&files)
}

/// Every token apart: the admin and fleet tokens, each gateway's, each
/// admin's, approver's and viewer's.
fn check_distinct(
    a: &ServeArgs,
    people: &People,
    gateway_tokens: &BTreeMap<String, [u8; 32]>,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let f: [u8; 32] = sha2::Sha256::digest(a.fleet_token.as_bytes()).into();
    let adm: [u8; 32] = sha2::Sha256::digest(a.admin_token.as_bytes()).into();
    let all = [
        ("the admin token".to_owned(), &adm),
        ("the fleet token".to_owned(), &f),
    ]
    .into_iter()
    .chain(
        gateway_tokens
            .iter()
            .map(|(n, d)| (format!("gateway `{n}`"), d)),
    )
    .chain(
        people
            .admins
            .iter()
            .map(|(n, e)| (format!("admin `{n}`"), &e.token)),
    )
    .chain(
        people
            .approvers
            .iter()
            .map(|(n, e)| (format!("approver `{n}`"), &e.token)),
    )
    .chain(
        people
            .viewers
            .iter()
            .map(|(n, e)| (format!("viewer `{n}`"), &e.token)),
    );
    crate::admins::check_distinct(all).map_err(anyhow::Error::msg)
}

/// The bundle store opened and brought up to date: the source published
/// (a source that does not build leaves the last revision served) and
/// what is served re-signed when near its expiry.
fn open_store(a: &ServeArgs) -> anyhow::Result<Arc<Store>> {
    let signer = signer(&a.signing, Duration::from_secs(7 * 86_400))?;
    if let Some(v) = signer.as_ref().and_then(|s| s.valid_for) {
        if v < Duration::from_secs(600) {
            bail!("--valid-for must be at least 10m for `serve` (what it serves is re-signed at half of it)");
        }
    }
    let mut store = match &a.database {
        Some(url) => Store::with_backend(
            Box::new(crate::store::postgres::Postgres::connect(url)?),
            &a.source,
            signer,
        )?,
        None => Store::open(state_dir(a)?, &a.source, signer)?,
    };
    store.stale_after = a.stale_after;
    let store = Arc::new(store);
    if let Err(e) = store.publish_source("startup", false) {
        eprintln!(
            "warden-agent: the source does not build (keeping the last published revision):\n{e}"
        );
    }
    // What was served before a restart may be near its expiry (or,
    // built by an agent before expiry existed, have none).
    if let Err(e) = store.refresh(std::time::SystemTime::now()) {
        eprintln!("warden-agent: re-signing what is served failed:\n{e}");
    }
    Ok(store)
}
