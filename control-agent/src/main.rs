//! `warden-agent`: the control agent binary. See the crate docs and the README.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use warden_agent::build::{self, KillState, Signer};
use warden_agent::server::{Api, Tokens};
use warden_agent::store::Store;
use warden_config::archive;

mod governance_cli;
use governance_cli::{registry_cmd, tenant_cmd, RegistryCmd, TenantCmd};

#[derive(Parser)]
#[command(name = "warden-agent", version, about = "Warden control agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Client {
    /// Base URL of a running agent.
    #[arg(
        long,
        env = "WARDEN_AGENT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    agent: String,
    /// Admin token (or WARDEN_AGENT_ADMIN_TOKEN).
    #[arg(long, env = "WARDEN_AGENT_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(clap::Args)]
struct ApproverClient {
    /// Base URL of a running agent.
    #[arg(
        long,
        env = "WARDEN_AGENT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    agent: String,
    /// The approver's token (or WARDEN_APPROVER_TOKEN); `list` and `show`
    /// also take the admin token.
    #[arg(long, env = "WARDEN_APPROVER_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum ApprovalCmd {
    /// Calls waiting for approvers, and approved ones not yet used.
    List {
        /// Every approval kept (used, denied and expired too).
        #[arg(long)]
        all: bool,
    },
    /// One approval, with the arguments it binds.
    Show { id: String },
    /// Approve a held call (as the approver the token names).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a held call.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(clap::Args)]
struct Signing {
    /// PEM private key that signs bundles (see `keygen`).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// EdDSA (default), ES256, RS256 or PS256.
    #[arg(long, default_value = "EdDSA")]
    signing_alg: String,
    /// How long a signed bundle stays good (its manifest's `expires`):
    /// gateways refuse it after that, so an old bundle served again to a
    /// new gateway is refused. `serve` re-signs what it serves at half of
    /// it (default 7d, at least 10m); `build` defaults to 30d. `never`
    /// makes bundles gateways refuse unless run with
    /// `--allow-unexpiring-bundles`.
    #[arg(long, value_parser = parse_validity)]
    valid_for: Option<Validity>,
}

#[derive(Clone, Copy, Debug)]
enum Validity {
    For(Duration),
    Never,
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

/// The longest a signed bundle may stay good.
const MAX_VALIDITY: Duration = Duration::from_secs(366 * 86_400);

fn parse_validity(s: &str) -> Result<Validity, String> {
    if s == "never" {
        return Ok(Validity::Never);
    }
    match humantime::parse_duration(s) {
        // Gateways refuse an expiry further ahead than that (`fresh`).
        Ok(d) if d > MAX_VALIDITY => Err("a validity is at most 366d (or `never`)".into()),
        Ok(d) if !d.is_zero() => Ok(Validity::For(d)),
        Ok(_) => Err("a validity must be above zero (or `never`)".into()),
        Err(e) => Err(format!("{e} (a duration such as 7d, or `never`)")),
    }
}

// Parsed once at start and matched once: the size of `serve`'s variant
// costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve bundles built from a source directory; watch it and publish changes.
    Serve {
        #[arg(long)]
        source: PathBuf,
        /// History, kill-switch state and the change record live here.
        #[arg(long)]
        state: PathBuf,
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
        /// Approvers: a YAML map of name → SHA-256 (hex) of their token.
        /// Without it, held calls wait and nobody can approve them.
        #[arg(long)]
        approvers: Option<PathBuf>,
        /// Console viewers (read-only): a YAML map of name → SHA-256 (hex)
        /// of their token, or `{token_sha256, tenants}` (the approvers
        /// file's format).
        #[arg(long)]
        viewers: Option<PathBuf>,
        /// Administrators: a YAML map of name → `{token_sha256, role:
        /// org_admin|org_reviewer|tenant_admin, tenant}` (see
        /// docs/governance.md). The admin token stays an org admin.
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
    },
    /// Held calls: list them, approve or deny one (an approver's token).
    Approvals {
        #[command(flatten)]
        client: ApproverClient,
        #[command(subcommand)]
        cmd: ApprovalCmd,
    },
    /// Build (validate, sign) a bundle archive offline.
    Build {
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "manual")]
        revision: String,
        #[command(flatten)]
        signing: Signing,
    },
    /// Make an Ed25519 key pair for signing (private and public PEM).
    Keygen {
        #[arg(long)]
        private: PathBuf,
        #[arg(long)]
        public: PathBuf,
    },
    /// Build and publish the agent's source now: to every gateway, to those
    /// carrying `--select` labels, or as a `--canary` watched against the rest.
    Publish {
        #[command(flatten)]
        client: Client,
        /// Only gateways carrying these labels (`env=prod,region=eu`).
        #[arg(long, default_value = "")]
        select: String,
        /// Publish to this share of the selected gateways first (`10%`).
        #[arg(long)]
        canary: Option<String>,
        /// How long the canary is watched before it is promoted.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        watch: Duration,
        /// Roll back when the canary's denied share of calls exceeds the
        /// rest's by more than this (0.05: five points).
        #[arg(long, default_value_t = 0.05)]
        max_denial_increase: f64,
        /// Likewise for its share of 5xx answers.
        #[arg(long, default_value_t = 0.05)]
        max_error_increase: f64,
        /// Roll back when its p99 exceeds the rest's times this (plus 50 ms).
        #[arg(long, default_value_t = 2.0)]
        max_p99_ratio: f64,
        /// Calls the canary must see to be judged (fewer by the end of the
        /// watch rolls it back).
        #[arg(long, default_value_t = 20)]
        min_calls: u64,
    },
    /// Promote the canary being watched to every gateway it was selected from.
    Promote {
        #[command(flatten)]
        client: Client,
        /// The canary revision you judged (`rollout status` prints it):
        /// refused when the canary watched is another by then.
        #[arg(long)]
        revision: String,
    },
    /// Without a revision: roll back the canary being watched. With one:
    /// publish that earlier revision's content again to every gateway (the kill switch stays as it is).
    Rollback {
        #[command(flatten)]
        client: Client,
        revision: Option<String>,
    },
    /// The canary being watched (or the last one): its members, figures
    /// against the rest, and how it ended.
    Rollout {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Pause calls: `--all`, or a tenant, principal, server or tool (`tool` or `server/tool`).
    Kill {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        target: Target,
    },
    /// Undo a kill.
    Revive {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        target: Target,
    },
    /// Show the fleet: who runs which revision, who is stale, the last build error.
    Status(Client),
    /// Published revisions.
    History(Client),
    /// A tenant's layer: publish (or canary), history, diff, rollback.
    Tenant {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// The registry of servers: register, move through the lifecycle, share, show.
    Registry {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// Validate bundle directories; prints every problem, exits non-zero on any.
    Validate {
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// Show the canary and its figures.
    Status,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    #[arg(long)]
    all: bool,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    principal: Option<String>,
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    tool: Option<String>,
}

impl Target {
    fn scope(&self) -> (&'static str, String) {
        match self {
            Target { all: true, .. } => ("all", String::new()),
            Target {
                tenant: Some(v), ..
            } => ("tenant", v.clone()),
            Target {
                principal: Some(v), ..
            } => ("principal", v.clone()),
            Target {
                server: Some(v), ..
            } => ("server", v.clone()),
            Target { tool: Some(v), .. } => ("tool", v.clone()),
            _ => ("all", String::new()),
        }
    }
}

/// The signer `s` names, its bundles good for `--valid-for` (else
/// `default`).
fn signer(s: &Signing, default: Duration) -> anyhow::Result<Option<Signer>> {
    let Some(path) = &s.signing_key else {
        if s.valid_for.is_some() {
            bail!("--valid-for needs --signing-key: an unsigned bundle carries no expiry a gateway could trust");
        }
        return Ok(None);
    };
    let valid_for = match s.valid_for {
        None => Some(default),
        Some(Validity::For(d)) => Some(d),
        Some(Validity::Never) => None,
    };
    let alg = archive::algorithm(&s.signing_alg)
        .with_context(|| format!("unsupported signing algorithm `{}`", s.signing_alg))?;
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    use sha2::Digest;
    let keyid = hex::encode(&sha2::Sha256::digest(&pem)[..8]);
    Ok(Some(Signer {
        pem,
        alg,
        keyid,
        valid_for,
    }))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn keygen(private: &Path, public: &Path) -> anyhow::Result<()> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410).
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    std::fs::write(private, pem("PRIVATE KEY", pkcs8.as_ref()))?;
    std::fs::write(public, pem("PUBLIC KEY", &spki))?;
    println!(
        "private key: {}\npublic key:  {}",
        private.display(),
        public.display()
    );
    Ok(())
}

async fn call(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    call_with(c, method, path, |r| match body {
        Some(b) => r.json(&b),
        None => r,
    })
    .await
}

async fn call_with(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let req = body(
        client
            .request(method, format!("{}{path}", c.agent.trim_end_matches('/')))
            .bearer_auth(&c.token),
    );
    let resp = req
        .send()
        .await
        .with_context(|| format!("reaching the agent at {}", c.agent))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
    }
    Ok(v)
}

/// An approval id as a path segment (ids are `ap_` and base32).
fn url_part(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("`{id}` is not an approval id");
    }
    Ok(id)
}

/// One line per approval: id, state, approvals so far, who asked for what.
fn print_approvals(v: &serde_json::Value) {
    let list = v["approvals"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no approvals waiting");
        return;
    }
    // Names and arguments come from callers: no control or bidi characters
    // reach the approver's terminal.
    let clean = |v: &serde_json::Value| -> String {
        v.as_str()
            .unwrap_or("")
            .chars()
            .map(|c| {
                if c.is_control()
                    || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
                {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect()
    };
    for a in list {
        println!(
            "{}  {:<8}  {}/{}  {:<8}  {}/{} → {}.{}  waiting {}s  {}",
            clean(&a["id"]),
            clean(&a["state"]),
            a["approvals"],
            a["required"],
            clean(&a["risk"]),
            clean(&a["tenant"]),
            clean(&a["principal"]),
            clean(&a["server"]),
            clean(&a["tool"]),
            a["waiting_secs"],
            clean(&a["arguments"]),
        );
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cmd: Cmd) -> anyhow::Result<bool> {
    match cmd {
        Cmd::Serve {
            source,
            state,
            listen,
            signing,
            admin_token,
            fleet_token,
            watch_interval,
            stale_after,
            audit_retention,
            audit_max_rows,
            audit_max_bytes,
            approvers,
            viewers,
            admins,
            gateways,
            console_hosts,
            metrics_token,
        } => {
            let min = warden_agent::server::MIN_TOKEN_LEN;
            if admin_token.len() < min || fleet_token.len() < min {
                bail!("admin and fleet tokens must be at least {min} characters");
            }
            if metrics_token.as_ref().is_some_and(|t| t.len() < min) {
                bail!("the metrics token must be at least {min} characters");
            }
            if admin_token == fleet_token {
                bail!("the admin and fleet tokens must differ");
            }
            let (approvers_file, viewers_file) = (approvers, viewers);
            let approvers = match &approvers_file {
                Some(p) => warden_agent::approvals::read_approvers(p)?,
                None => Default::default(),
            };
            let viewers = match &viewers_file {
                Some(p) => warden_agent::approvals::read_approvers(p)?,
                None => Default::default(),
            };
            let admins_file = admins;
            let admins = match &admins_file {
                Some(p) => warden_agent::admins::read_admins(p)?,
                None => Default::default(),
            };
            // One person, one entry: the console keys sessions and its
            // change record by name across the three files.
            {
                let label = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                };
                let (af, pf, vf) = (
                    label(&admins_file),
                    label(&approvers_file),
                    label(&viewers_file),
                );
                warden_agent::admins::check_names(
                    admins
                        .keys()
                        .map(|n| (af.as_str(), n.as_str()))
                        .chain(approvers.keys().map(|n| (pf.as_str(), n.as_str())))
                        .chain(viewers.keys().map(|n| (vf.as_str(), n.as_str()))),
                )
                .map_err(anyhow::Error::msg)?;
            }
            let gateway_tokens = match &gateways {
                Some(p) => warden_agent::server::read_gateway_tokens(p)?,
                None => Default::default(),
            };
            {
                use sha2::Digest;
                let f: [u8; 32] = sha2::Sha256::digest(fleet_token.as_bytes()).into();
                let a: [u8; 32] = sha2::Sha256::digest(admin_token.as_bytes()).into();
                let all = [
                    ("the admin token".to_owned(), &a),
                    ("the fleet token".to_owned(), &f),
                ]
                .into_iter()
                .chain(
                    gateway_tokens
                        .iter()
                        .map(|(n, d)| (format!("gateway `{n}`"), d)),
                )
                .chain(
                    admins
                        .iter()
                        .map(|(n, e)| (format!("admin `{n}`"), &e.token)),
                )
                .chain(
                    approvers
                        .iter()
                        .map(|(n, e)| (format!("approver `{n}`"), &e.token)),
                )
                .chain(
                    viewers
                        .iter()
                        .map(|(n, e)| (format!("viewer `{n}`"), &e.token)),
                );
                warden_agent::admins::check_distinct(all).map_err(anyhow::Error::msg)?;
            }
            let approvals = Arc::new(warden_agent::approvals::Approvals::open(&state, approvers)?);
            let audit = Arc::new(warden_agent::audit::AuditStore::open(
                &state.join("audit.sqlite3"),
                warden_agent::audit::Limits {
                    retention: audit_retention,
                    max_rows: audit_max_rows.max(1),
                    max_bytes: audit_max_bytes,
                },
            )?);
            let signer = signer(&signing, Duration::from_secs(7 * 86_400))?;
            if let Some(v) = signer.as_ref().and_then(|s| s.valid_for) {
                if v < Duration::from_secs(600) {
                    bail!("--valid-for must be at least 10m for `serve` (what it serves is re-signed at half of it)");
                }
            }
            let mut store = Store::open(&state, &source, signer)?;
            store.stale_after = stale_after;
            let store = Arc::new(store);
            if let Err(e) = store.publish_source("startup", false) {
                eprintln!("warden-agent: the source does not build (keeping the last published revision):\n{e}");
            }
            // What was served before a restart may be near its expiry (or,
            // built by an agent before expiry existed, have none).
            if let Err(e) = store.refresh(std::time::SystemTime::now()) {
                eprintln!("warden-agent: re-signing what is served failed:\n{e}");
            }
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                println!("listening on {}", listener.local_addr()?);
                use std::io::Write;
                std::io::stdout().flush()?;
                if !watch_interval.is_zero() {
                    let watcher = store.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(watch_interval).await;
                            let s = watcher.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                s.publish_source("watcher", false)
                            })
                            .await;
                        }
                    });
                }
                // What is served is re-signed before it expires: checked
                // each minute, and a failure (recorded, counted) tried
                // again after a twentieth of the validity (10 s to 10 min).
                let signer_of = store.clone();
                tokio::spawn(async move {
                    let mut pause = Duration::from_secs(60);
                    loop {
                        tokio::time::sleep(pause).await;
                        let s = signer_of.clone();
                        let retry = s.resign_retry();
                        let res = tokio::task::spawn_blocking(move || {
                            s.refresh(std::time::SystemTime::now()).is_ok()
                        })
                        .await;
                        pause = if matches!(res, Ok(true)) {
                            Duration::from_secs(60).min(retry)
                        } else {
                            retry
                        };
                    }
                });
                // A canary is judged twice a second on what gateways report.
                let judge = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        judge.tick();
                    }
                });
                let api = Arc::new(Api {
                    store,
                    tokens: Tokens::new(&admin_token, &fleet_token)
                        .with_gateways(gateway_tokens)
                        .with_metrics_token(metrics_token.as_deref()),
                    approvals,
                    metrics: Default::default(),
                    audit,
                    console: warden_agent::console::state::Console::new(viewers, console_hosts),
                    admins,
                });
                warden_agent::server::serve(listener, api).await
            })?;
            Ok(true)
        }
        Cmd::Build {
            source,
            out,
            revision,
            signing,
        } => {
            let files = archive::read_dir(&source)?;
            match build::build(
                &files,
                &revision,
                &KillState::default(),
                signer(&signing, Duration::from_secs(30 * 86_400))?.as_ref(),
                &Default::default(),
            ) {
                Ok(built) => {
                    std::fs::write(&out, archive::pack(&built))?;
                    println!(
                        "{}: revision {revision}, {} files",
                        out.display(),
                        built.len()
                    );
                    Ok(true)
                }
                Err(e) => {
                    eprintln!("{}: refused:\n{e}", source.display());
                    Ok(false)
                }
            }
        }
        Cmd::Approvals { client, cmd } => runtime()?.block_on(async {
            let c = Client {
                agent: client.agent,
                token: client.token,
            };
            let (method, path, body) = match &cmd {
                ApprovalCmd::List { all } => (
                    reqwest::Method::GET,
                    format!("/v1/approvals{}", if *all { "?all=1" } else { "" }),
                    None,
                ),
                ApprovalCmd::Show { id } => (
                    reqwest::Method::GET,
                    format!("/v1/approvals/{}", url_part(id)?),
                    None,
                ),
                ApprovalCmd::Approve { id, comment } | ApprovalCmd::Deny { id, comment } => {
                    let verb = if matches!(cmd, ApprovalCmd::Approve { .. }) {
                        "approve"
                    } else {
                        "deny"
                    };
                    (
                        reqwest::Method::POST,
                        format!("/v1/approvals/{}/{verb}", url_part(id)?),
                        Some(serde_json::json!({"comment": comment})),
                    )
                }
            };
            let v = call(&c, method, &path, body).await?;
            match cmd {
                ApprovalCmd::List { .. } => print_approvals(&v),
                _ => print(&v),
            }
            Ok(true)
        }),
        Cmd::Keygen { private, public } => keygen(&private, &public).map(|_| true),
        Cmd::Publish {
            client,
            select,
            canary,
            watch,
            max_denial_increase,
            max_error_increase,
            max_p99_ratio,
            min_calls,
        } => {
            let select =
                warden_agent::rollout::parse_labels(&select).map_err(anyhow::Error::msg)?;
            let mut body = serde_json::json!({"select": select});
            if let Some(share) = canary {
                let share =
                    warden_agent::rollout::parse_share(&share).map_err(anyhow::Error::msg)?;
                body["canary"] = serde_json::json!({
                    "share": share,
                    "watch_secs": watch.as_secs().max(1),
                    "guard": {
                        "max_denial_increase": max_denial_increase,
                        "max_error_increase": max_error_increase,
                        "max_p99_ratio": max_p99_ratio,
                        "p99_slack_ms": 50.0,
                        "min_calls": min_calls,
                    },
                });
            }
            runtime()?.block_on(async {
                print(&call(&client, reqwest::Method::POST, "/v1/publish", Some(body)).await?);
                Ok(true)
            })
        }
        Cmd::Promote { client, revision } => runtime()?.block_on(async {
            let body = serde_json::json!({"revision": revision});
            print(
                &call(
                    &client,
                    reqwest::Method::POST,
                    "/v1/rollout/promote",
                    Some(body),
                )
                .await?,
            );
            Ok(true)
        }),
        Cmd::Rollback { client, revision } => runtime()?.block_on(async {
            let v = match revision {
                Some(revision) => {
                    let body = serde_json::json!({"revision": revision});
                    call(&client, reqwest::Method::POST, "/v1/rollback", Some(body)).await?
                }
                None => call(&client, reqwest::Method::POST, "/v1/rollout/rollback", None).await?,
            };
            print(&v);
            Ok(true)
        }),
        Cmd::Rollout {
            client,
            cmd: RolloutCmd::Status,
        } => runtime()?.block_on(async {
            print(&call(&client, reqwest::Method::GET, "/v1/rollout", None).await?);
            Ok(true)
        }),
        Cmd::Kill { client, target } => kill(&client, &target, "/v1/kill"),
        Cmd::Revive { client, target } => kill(&client, &target, "/v1/revive"),
        Cmd::Status(c) => runtime()?.block_on(async {
            print(&call(&c, reqwest::Method::GET, "/v1/fleet", None).await?);
            Ok(true)
        }),
        Cmd::History(c) => runtime()?.block_on(async {
            print(&call(&c, reqwest::Method::GET, "/v1/history", None).await?);
            Ok(true)
        }),
        Cmd::Tenant { client, cmd } => tenant_cmd(&client, cmd),
        Cmd::Registry { client, cmd } => registry_cmd(&client, cmd),
        Cmd::Validate { bundles } => {
            let mut ok = true;
            for dir in bundles {
                match build::validate_dir(&dir) {
                    Ok(()) => println!("{}: ok", dir.display()),
                    Err(e) => {
                        ok = false;
                        eprintln!("{}: refused:\n{e}", dir.display());
                    }
                }
            }
            Ok(ok)
        }
    }
}

fn kill(c: &Client, t: &Target, path: &str) -> anyhow::Result<bool> {
    let (scope, value) = t.scope();
    runtime()?.block_on(async {
        let body = serde_json::json!({"scope": scope, "value": value});
        print(&call(c, reqwest::Method::POST, path, Some(body)).await?);
        Ok(true)
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warden_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("warden-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
