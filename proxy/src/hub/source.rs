//! Where a gateway's bundles come from (a directory, the control agent, a
//! plain URL) and what it tells the source about itself (its id, instance
//! and labels).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::agents::Agents;

use warden_config::archive::Verifier;

#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    /// A plain URL (`--bundle-url`), polled with its ETag.
    Http {
        url: String,
        token: Option<String>,
    },
    /// The control agents (`--agent`): bundles long-polled from
    /// `/v1/bundles/current`, status reported to `/v1/fleet/report`, from
    /// the agent that answered last and the next one when it fails (see
    /// `agents`).
    Agents {
        agents: Arc<Agents>,
        token: Option<String>,
    },
}

impl Source {
    /// The control agent (`--agent`, which takes reports): it proves each
    /// bundle it answers with current (`X-Warden-Freshness`).
    pub fn is_agent(&self) -> bool {
        matches!(self, Source::Agents { .. })
    }

    /// The source as `/status` shows it.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => format!("dir:{}", d.display()),
            Source::Http { url, .. } => url.clone(),
            Source::Agents { agents, .. } => agents
                .describe()
                .split(',')
                .map(|b| format!("{b}/v1/bundles/current"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub source: Source,
    pub verifier: Option<Verifier>,
    /// Fetched bundles and the last good one live here.
    pub state_dir: PathBuf,
    pub gateway_id: String,
    /// Labels this gateway reports (`env=prod`, …): the agent serves it
    /// the newest revision published to a selector they match.
    pub labels: BTreeMap<String, String>,
    /// Directory polling / static-server polling interval.
    pub poll: Duration,
    /// How often status and counters are reported to the agent.
    pub report_every: Duration,
    /// Takes signed bundles whose manifest names no `expires` (built
    /// before expiry existed, or with `--valid-for never`). Off by
    /// default: such a bundle stays good forever, so anyone holding an
    /// old one can serve it to a gateway with no state.
    pub allow_unexpiring: bool,
}

/// This process's instance id: 16 random bytes in hex, drawn once when
/// the process first reports or fetches. It goes beside the gateway id
/// (`--gateway-id`, which an operator may copy into every replica of a
/// Deployment) in each fleet report (`instance`) and bundle fetch
/// (`X-Warden-Instance`), so that the agent tells two live processes under
/// one id (a conflict it shows and refuses canaries on) from one that
/// restarted (a new instance replacing the old).
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| hex::encode(rand::random::<[u8; 16]>()))
}

/// Parses one `key=value` gateway label (letters, digits and `-._/`, 1–63
/// bytes each: what the agent's selectors accept).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 63
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
    };
    match s.split_once('=') {
        Some((k, v)) if ok(k) && ok(v) => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "label `{s}`: key=value, each 1-63 letters, digits or -._/"
        )),
    }
}

/// The labels as the agent reads them (`k=v,k2=v2`).
pub(super) fn labels_header(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
