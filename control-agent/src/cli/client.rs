//! The HTTP client the subcommands speak to a running agent with, and how
//! they print its answers.

use std::time::Duration;

use anyhow::{bail, Context};

/// A running agent and the admin token it is called with.
#[derive(clap::Args)]
pub struct Client {
    /// Base URL of a running agent.
    #[arg(
        long,
        env = "WARDEN_AGENT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub agent: String,
    /// Admin token (or WARDEN_AGENT_ADMIN_TOKEN).
    #[arg(long, env = "WARDEN_AGENT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// A running agent and the approver's token it is called with.
#[derive(clap::Args)]
pub struct ApproverClient {
    /// Base URL of a running agent.
    #[arg(
        long,
        env = "WARDEN_AGENT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub agent: String,
    /// The approver's token (or WARDEN_APPROVER_TOKEN); `list` and `show`
    /// also take the admin token.
    #[arg(long, env = "WARDEN_APPROVER_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// The runtime a subcommand runs on (two workers).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Calls the agent with a JSON body (or none); its JSON answer, or an
/// error naming the status and the answer.
pub async fn call(
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

/// As [`call`], `body` setting the request's body (and its headers).
pub async fn call_with(
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

/// An answer, pretty-printed on stdout.
pub fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
