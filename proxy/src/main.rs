//! `warden`: the MCP gateway binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc malloc showed up as ~17 % of the proxy's CPU under load (much of it
/// `malloc_consolidate` around Pingora's 64 KiB buffers); mimalloc does not.
/// `warden_alloc` asks it for plain blocks wherever they are aligned enough
/// (see that crate).
#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "MCP gateway: governs every agent tool call at wire speed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The gateway's options (`warden run`).
#[derive(clap::Args)]
struct RunArgs {
    /// Bundle directory (warden.yaml, *.rego, data.json, .manifest) or .tar.gz file, watched for changes.
    #[arg(long, env = "WARDEN_BUNDLE", conflicts_with_all = ["agent", "bundle_url"])]
    bundle: Option<PathBuf>,
    /// Control agent base URL(s): bundles from `/v1/bundles/current`
    /// (long-poll), status reported to `/v1/fleet/report`, audit shipped,
    /// held calls claimed. Several agents of one fleet: separate them with
    /// commas (`http://a:7070,http://b:7070`) and/or repeat the flag; the
    /// gateway talks to the one that answered last and fails over to the
    /// next. A host name with several addresses is one agent per address.
    #[arg(long, env = "WARDEN_AGENT", conflicts_with = "bundle_url")]
    agent: Vec<String>,
    /// Any HTTP(S) URL serving a bundle tar.gz (polled with ETag).
    #[arg(long)]
    bundle_url: Option<String>,
    /// Bearer token for the agent / bundle URL.
    #[arg(long, env = "WARDEN_AGENT_FLEET_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// Control agent(s) that hold approvals of held calls (default:
    /// `--agent`), reached with `--agent-token`; a list as `--agent`.
    #[arg(long, env = "WARDEN_APPROVALS_AGENT")]
    approvals_agent: Vec<String>,
    /// PEM bundle of the CA certificates the `https://` agents'
    /// certificates must chain to, instead of the built-in roots (for
    /// `--agent` and `--approvals-agent`). Read again when it changes.
    #[arg(long, env = "WARDEN_AGENT_CA")]
    agent_ca: Option<PathBuf>,
    /// PEM client certificate (leaf first, then any intermediates) this
    /// gateway presents to its agents. It must name this gateway's
    /// `--gateway-id`: a URI SAN `spiffe://<trust domain>/gateway/<id>`, or
    /// else its first DNS SAN (checked at start). Read again when it
    /// changes. Needs `--agent-client-key`.
    #[arg(long, env = "WARDEN_AGENT_CLIENT_CERT")]
    agent_client_cert: Option<PathBuf>,
    /// PEM private key of `--agent-client-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WARDEN_AGENT_CLIENT_KEY")]
    agent_client_key: Option<PathBuf>,
    /// PEM public key: bundles must carry a valid `.signatures.json` made with its private key.
    #[arg(long)]
    bundle_public_key: Option<PathBuf>,
    /// Signature algorithm of `--bundle-public-key`: EdDSA (default), ES256, RS256, PS256.
    #[arg(long, default_value = "EdDSA")]
    bundle_key_alg: String,
    /// Take signed bundles whose manifest names no `expires` (built
    /// before expiry existed, or with `warden-agent build --valid-for
    /// never`). Such a bundle never stops being good: anyone holding an old
    /// one can serve it to a gateway that starts with no state.
    #[arg(long)]
    allow_unexpiring_bundles: bool,
    /// Where fetched bundles and the last good one are kept.
    #[arg(long, default_value = "warden-state")]
    state_dir: PathBuf,
    /// This gateway's name in the fleet (default: host name and pid).
    #[arg(long)]
    gateway_id: Option<String>,
    /// How often a bundle directory (or a static URL) is checked.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    bundle_poll: std::time::Duration,
    /// A label this gateway reports to the agent (`env=prod`,
    /// repeatable): bundles published to a selector reach the gateways
    /// whose labels match it.
    #[arg(long = "label", value_parser = warden_proxy::hub::bundles::parse_label)]
    labels: Vec<(String, String)>,
    /// How often status and counters are reported to the agent (a
    /// canary is judged on them).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    report_interval: std::time::Duration,
    /// Listen on this address instead of the bundle's listeners (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// Admin listener address (overrides the bundle's).
    #[arg(long)]
    admin: Option<String>,
    /// A file holding the bearer token the admin listener's writes
    /// (`POST /anomaly/accept`) need; without one they are refused.
    #[arg(long, env = "WARDEN_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Worker threads (default: one per core); one runs a single-threaded
    /// event loop, several share a work-stealing runtime.
    #[arg(long)]
    threads: Option<usize>,
    /// Audit log path (`-` for stdout), overriding the bundle's.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Take over the listening sockets of a running Warden (binary
    /// upgrade): start this, then send the old process SIGQUIT.
    #[arg(long)]
    upgrade: bool,
    /// Unix socket the listening sockets are handed over on (the same
    /// path for the old and the new process; default
    /// `<state-dir>/upgrade/upgrade.sock`). Its directory must be one only
    /// this user can enter (mode 0700).
    #[arg(long)]
    upgrade_sock: Option<PathBuf>,
    /// Export a span per MCP message to this OTLP/HTTP collector
    /// (`<url>/v1/traces`, JSON) and propagate `traceparent` upstream.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// What `warden init` writes and for which server.
#[derive(clap::Args)]
struct InitArgs {
    /// The directory to create (must be new or empty).
    dir: PathBuf,
    /// Your server's MCP endpoint, e.g. http://127.0.0.1:3000/mcp
    #[arg(long)]
    upstream: String,
    /// Name of the server and of its route (default: from the URL's host).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: String,
    /// Principal id of the generated key.
    #[arg(long, default_value = "my-agent")]
    id: String,
    #[arg(long, default_value = "default")]
    tenant: String,
}

// Parsed once at start; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway on a bundle.
    Run(RunArgs),
    /// Check a bundle and print every problem; exits non-zero if there are any.
    Validate { bundle: PathBuf },
    /// Work with a bundle's Rego policy offline.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Write a working bundle for your own MCP server: one generated key
    /// (printed once), RBAC policy with tests, DLP, audit to a file.
    Init(InitArgs),
    /// A running gateway in the terminal, refreshed in place: calls per
    /// second, decisions, top tools and principals, latency, upstream
    /// health, bundle revision (from the admin listener).
    Top {
        /// The gateway's admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        /// Time between refreshes.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Print this many screens one after another, then exit (for scripts).
        #[arg(long, default_value_t = 0)]
        frames: u64,
    },
    /// Work with audit logs.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// API keys for the bundle's `identity.api_keys`.
    Apikey {
        #[command(subcommand)]
        cmd: ApikeyCmd,
    },
    /// Data-loss prevention, offline.
    Dlp {
        #[command(subcommand)]
        cmd: DlpCmd,
    },
    /// Tool definitions of live servers.
    Tools {
        #[command(subcommand)]
        cmd: ToolsCmd,
    },
}

#[derive(Subcommand)]
enum DlpCmd {
    /// Print what the bundle's detectors find in sample files (JSON or text)
    /// and which rule would act on it. Exit status 0 either way.
    Scan {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ToolsCmd {
    /// Print `name<TAB>fingerprint` of every tool a server lists, for the
    /// catalog's `fingerprints:` (approval of pinned definitions).
    Fingerprint {
        /// The server's MCP endpoint (Streamable HTTP), e.g. http://10.0.0.5:8000/mcp
        #[arg(long)]
        url: String,
        /// Extra request headers (`name: value`), e.g. credentials.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Evaluate the entry point for an input document; prints the decision.
    /// Exit status: 0 allowed, 3 denied, 1 error.
    Eval {
        #[arg(long)]
        bundle: PathBuf,
        /// JSON file holding the whole input document (see docs/policy.md).
        #[arg(long)]
        input: PathBuf,
        /// Evaluate as if it were this instant (RFC 3339, e.g.
        /// 2026-11-22T15:00:00+01:00): sets the input's context.time, hour
        /// and weekday in the policy's time zone, as the gateway would.
        #[arg(long)]
        now: Option<String>,
    },
    /// Run the `test_` rules of the bundle's *.rego files.
    Test {
        #[arg(long)]
        bundle: PathBuf,
    },
    /// Judge every client request of audit files again with a candidate
    /// bundle's policy: prints the calls it would newly deny or allow, by
    /// tool, principal and reason, and what the trail cannot replay.
    Replay {
        /// The candidate bundle (a directory).
        #[arg(long)]
        bundle: PathBuf,
        /// Audit files (JSON lines), rotated ones in any order.
        #[arg(long, required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// Print the whole report as JSON (every flipped call).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain of audit files (rotated files in any order).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The record the trail must begin at: 0 (the default) checks the
        /// whole chain from its genesis, so a trail whose head was cut off
        /// fails; name where it begins when older files were rotated away.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

#[derive(Subcommand)]
enum ApikeyCmd {
    /// Print a new random key (or hash `--key`) and the `identity.api_keys`
    /// entry to paste into the bundle.
    Hash {
        #[arg(long)]
        key: Option<String>,
        /// The principal id the entry names.
        #[arg(long, default_value = "my-agent")]
        id: String,
        /// The principal's tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Roles, comma-separated.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("warden: {e:#}");
    ExitCode::FAILURE
}

/// Built for x86-64-v3 (see `.cargo/config.toml`): say so plainly on an
/// older CPU instead of dying on an illegal instruction later.
fn cpu_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        true
    }
}

fn main() -> ExitCode {
    if !cpu_supported() {
        eprintln!(
            "warden: this build needs an x86-64-v3 CPU (AVX2, BMI2); rebuild without the \
             target-cpu setting in .cargo/config.toml for this machine"
        );
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warden=info,pingora_load_balancing=error".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Validate { bundle } => validate(&bundle),
        Cmd::Top {
            admin,
            interval,
            frames,
        } => match warden_proxy::app::top::run(&admin, interval, frames) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Init(args) => init(args),
        Cmd::Policy {
            cmd: PolicyCmd::Eval { bundle, input, now },
        } => match warden_proxy::app::cli::policy_eval(&bundle, &input, now.as_deref()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => fail(e),
        },
        Cmd::Policy {
            cmd:
                PolicyCmd::Replay {
                    bundle,
                    audit,
                    json,
                },
        } => match warden_proxy::app::cli::policy_replay(&bundle, &audit) {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    warden_proxy::app::cli::print_replay(&r);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("warden: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Policy {
            cmd: PolicyCmd::Test { bundle },
        } => match warden_proxy::app::cli::policy_test(&bundle) {
            Ok((_, 0)) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => fail(e),
        },
        Cmd::Audit {
            cmd: AuditCmd::Verify { files, from },
        } => match warden_proxy::app::cli::audit_verify(&files, from) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Dlp {
            cmd: DlpCmd::Scan { bundle, files },
        } => match warden_proxy::app::cli::dlp_scan(&bundle, &files) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Tools {
            cmd: ToolsCmd::Fingerprint { url, headers },
        } => match warden_proxy::app::cli::tools_fingerprint(&url, &headers) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Apikey {
            cmd:
                ApikeyCmd::Hash {
                    key,
                    id,
                    tenant,
                    roles,
                },
        } => {
            warden_proxy::app::cli::apikey_hash(key, &id, &tenant, &roles);
            ExitCode::SUCCESS
        }
        Cmd::Run(args) => run(args),
    }
}

/// `warden validate`: the bundle loads and compiles as the gateway would.
fn validate(bundle: &std::path::Path) -> ExitCode {
    match warden_config::Bundle::load(bundle)
        .map(warden_config::Bundle::with_content_revision)
        .map_err(anyhow::Error::from)
        .and_then(|b| {
            warden_filters::Snapshot::build(&b)?;
            Ok(b)
        }) {
        Ok(b) => {
            let listen: Vec<String> = b
                .config
                .listeners
                .iter()
                .map(|l| l.address.clone())
                .collect();
            if let Some(w) = b.config.identity.as_ref().and_then(|id| {
                warden_proxy::app::server::resource_port_warning(&id.resource, &listen)
            }) {
                eprintln!("{}: warning: {w}", bundle.display());
            }
            println!(
                "{}: ok (revision {}, {} route(s), {} server(s))",
                bundle.display(),
                b.revision,
                b.config.routes.len(),
                b.config.servers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", bundle.display());
            ExitCode::FAILURE
        }
    }
}

/// `warden init`.
fn init(args: InitArgs) -> ExitCode {
    let InitArgs {
        dir,
        upstream,
        name,
        listen,
        admin,
        id,
        tenant,
    } = args;
    let opts = warden_proxy::app::init::InitOptions {
        dir: dir.clone(),
        upstream: upstream.clone(),
        name,
        listen,
        admin,
        id,
        tenant,
    };
    match warden_proxy::app::init::init(&opts) {
        Ok(done) => {
            let d = dir.display();
            match &done.tools {
                Ok(t) => println!(
                    "{upstream} answered: {} tool(s), written into the catalog at MEDIUM risk",
                    t.len()
                ),
                Err(e) => println!(
                    "{upstream} did not answer ({e}); the catalog is empty until you add tools"
                ),
            }
            println!("wrote {d}/ (warden.yaml, .manifest, data.json, policies/)");
            println!();
            println!("Your API key, shown once (only its salted hash is in the bundle):");
            println!("  {}", done.key);
            println!();
            println!("Next:");
            println!("  warden validate {d}");
            println!("  warden policy test --bundle {d}");
            println!("  warden run --bundle {d}");
            println!(
                "  point your MCP client at {} with header `x-api-key: <the key>`",
                done.client_url
            );
            println!("  (the audit trail goes to {d}/audit.jsonl)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `warden run`: the gateway.
fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        bundle,
        agent,
        bundle_url,
        agent_token,
        approvals_agent,
        agent_ca,
        agent_client_cert,
        agent_client_key,
        bundle_public_key,
        bundle_key_alg,
        allow_unexpiring_bundles,
        state_dir,
        gateway_id,
        bundle_poll,
        labels,
        report_interval,
        listen,
        admin,
        admin_token_file,
        threads,
        audit,
        upgrade,
        upgrade_sock,
        otlp_endpoint,
    } = args;
    let admin_token = match admin_token_file
        .as_deref()
        .map(warden_proxy::app::admin::read_token)
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return fail(anyhow::anyhow!(e)),
    };
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let audit = audit.filter(|p| p.as_os_str() != "-");
    let gateway_id = gateway_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    // The agent reads the id from a header and a report: visible
    // ASCII, as it accepts it.
    if gateway_id.is_empty()
        || gateway_id.len() > 128
        || !gateway_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return fail(anyhow::anyhow!(
            "--gateway-id `{gateway_id}`: 1-128 visible ASCII characters"
        ));
    }
    // Every agent URL is checked before anything starts: a list with an
    // empty entry or a URL that is no http(s) base URL is refused.
    use warden_proxy::hub::agents::{parse_urls, Agents};
    let agent_urls = match (!agent.is_empty())
        .then(|| parse_urls("--agent", &agent))
        .transpose()
    {
        Ok(u) => u,
        Err(e) => return fail(anyhow::anyhow!(e)),
    };
    let approvals_urls = match (!approvals_agent.is_empty())
        .then(|| parse_urls("--approvals-agent", &approvals_agent))
        .transpose()
    {
        Ok(u) => u,
        Err(e) => return fail(anyhow::anyhow!(e)),
    };
    // The TLS towards the agents: its files are read and checked before
    // anything starts (a client certificate must name this gateway), for
    // agents reached over https:// only.
    use warden_proxy::hub::agent_tls::{AgentTls, TlsFiles};
    let tls_files = TlsFiles {
        ca: agent_ca,
        cert: agent_client_cert,
        key: agent_client_key,
    };
    if tls_files.any() {
        if agent_urls.is_none() && approvals_urls.is_none() {
            return fail(anyhow::anyhow!(
                "--agent-ca, --agent-client-cert and --agent-client-key are for the control \
                 agents: give --agent (or --approvals-agent)"
            ));
        }
        let plain = agent_urls
            .iter()
            .chain(&approvals_urls)
            .flatten()
            .find(|u| !u.starts_with("https://"));
        if let Some(u) = plain {
            return fail(anyhow::anyhow!(
                "{u}: --agent-ca and --agent-client-cert are for agents reached over https://; \
                 this one is not (the certificate would not be presented, nor the agent's verified)"
            ));
        }
    }
    let tls = match AgentTls::open(tls_files, &gateway_id) {
        Ok(t) => t,
        Err(e) => return fail(anyhow::anyhow!(e)),
    };
    let agents = match agent_urls
        .map(|u| Agents::with_tls("agent", &u, tls.clone()))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return fail(anyhow::anyhow!(e)),
    };
    let approvals_agents = match approvals_urls {
        None => agents.clone(),
        Some(u) => match Agents::with_tls("approvals", &u, tls.clone()) {
            Ok(a) => Some(a),
            Err(e) => return fail(anyhow::anyhow!(e)),
        },
    };
    let approvals_token = agent_token.clone();
    // The agent's audit store: the raw records are shipped there.
    let agent_export = agents.clone().map(|a| (a, agent_token.clone()));
    let source = match (bundle, agents, bundle_url) {
        (Some(dir), None, None) => warden_proxy::hub::bundles::Source::Dir(dir),
        (None, Some(agents), None) => warden_proxy::hub::bundles::Source::Agents {
            agents,
            token: agent_token,
        },
        (None, None, Some(url)) => warden_proxy::hub::bundles::Source::Http {
            url,
            token: agent_token,
        },
        _ => {
            return fail(anyhow::anyhow!(
                "give one of --bundle DIR, --agent URL, --bundle-url URL"
            ))
        }
    };
    let verifier = match bundle_public_key {
        // Bundles over the network without a key to check them: whoever
        // answers for the source (or sits between) sets every rule. Said
        // once, loudly; a local directory is the operator's own.
        None if !matches!(source, warden_proxy::hub::bundles::Source::Dir(_)) => {
            tracing::warn!("bundles are fetched without --bundle-public-key: unsigned bundles are applied as they come, and approvals are taken without a signed grant; give the agent's public key in production");
            None
        }
        None => None,
        Some(p) => {
            let alg = match warden_config::archive::algorithm(&bundle_key_alg) {
                Some(a) => a,
                None => {
                    return fail(anyhow::anyhow!(
                        "unsupported --bundle-key-alg `{bundle_key_alg}`"
                    ))
                }
            };
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|pem| warden_config::archive::Verifier::new(&pem, alg))
            {
                Ok(v) => Some(v),
                Err(e) => return fail(anyhow::anyhow!("{}: {e}", p.display())),
            }
        }
    };
    if report_interval < std::time::Duration::from_millis(100) {
        return fail(anyhow::anyhow!("--report-interval must be at least 100ms"));
    }
    let vault = approvals_agents
        .clone()
        .map(|agents| (agents, approvals_token.clone()));
    let approvals = match approvals_agents.map(|agents| {
        warden_proxy::hub::approval_client::ApprovalClient::new(
            agents,
            approvals_token,
            &gateway_id,
            verifier.clone(),
        )
    }) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return fail(e),
    };
    let agent =
        agent_export.map(
            |(agents, token)| warden_proxy::observability::siem::AgentTarget {
                agents,
                token,
                gateway_id: gateway_id.clone(),
            },
        );
    match warden_proxy::app::server::run(warden_proxy::app::server::RunOptions {
        approvals,
        vault,
        agent,
        source: warden_proxy::hub::bundles::SourceOptions {
            source,
            verifier,
            state_dir,
            gateway_id,
            labels: labels.into_iter().collect(),
            poll: bundle_poll,
            report_every: report_interval,
            allow_unexpiring: allow_unexpiring_bundles,
        },
        listen,
        admin,
        admin_token,
        threads,
        audit,
        upgrade,
        upgrade_sock,
        otlp_endpoint,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::FAILURE
        }
    }
}
