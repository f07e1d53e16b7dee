//! Drives the real Rust MCP SDK client (`rmcp`) through Warden.
//! usage: rmcp-client URL ECHO_TOOL PROGRESS_TOOL — prints a JSON report, exits 0 on success.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, NumberOrString, ProgressNotificationParam, ProgressToken,
    ReadResourceRequestParams, RequestMetaObject,
};
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl ClientHandler for Counter {
    async fn on_progress(&self, _: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn run(
    url: &str,
    echo_tool: &str,
    progress_tool: &str,
    report: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let counter = Counter::default();
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    let client = counter.clone().serve(transport).await?;
    report.insert(
        "server".into(),
        json!(client
            .peer_info()
            .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))),
    );
    let tools = client.list_all_tools().await?;
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    report.insert("tools".into(), json!(names));
    let tool = tools
        .iter()
        .find(|t| t.name == echo_tool)
        .ok_or_else(|| anyhow::anyhow!("no {echo_tool} tool"))?;
    let arg = tool
        .input_schema
        .get("required")
        .and_then(|r| r.get(0))
        .and_then(Value::as_str)
        .or_else(|| {
            tool.input_schema
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.keys().next().map(String::as_str))
        })
        .unwrap_or("text")
        .to_owned();
    let mut args = serde_json::Map::new();
    args.insert(arg, json!("through warden"));
    let r = client
        .call_tool(CallToolRequestParams::new(echo_tool.to_owned()).with_arguments(args))
        .await?;
    let echo = serde_json::to_value(&r.content)?;
    if !echo.to_string().contains("through warden") {
        anyhow::bail!("echo did not come back: {echo}");
    }
    report.insert("echo".into(), echo);
    let pargs = if progress_tool == "count" {
        json!({"steps": 3})
    } else {
        json!({"duration": 1, "steps": 3})
    };
    let mut params = CallToolRequestParams::new(progress_tool.to_owned())
        .with_arguments(pargs.as_object().cloned().unwrap_or_default());
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::String("warden-progress".into()),
    )));
    let r = client.call_tool(params).await?;
    report.insert("progress_result".into(), serde_json::to_value(&r.content)?);
    // rmcp runs notification handlers on spawned tasks, so the call's result can
    // be returned before the handler for a progress event that arrived earlier on
    // the same stream has run. Give the handlers a bounded moment to catch up.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while counter.0.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let n = counter.0.load(Ordering::SeqCst);
    report.insert("progress_events".into(), json!(n));
    if n == 0 {
        anyhow::bail!("no progress notification arrived");
    }
    if let Ok(res) = client.list_resources(None).await {
        if let Some(first) = res.resources.first() {
            let rr = client
                .read_resource(ReadResourceRequestParams::new(first.uri.clone()))
                .await?;
            report.insert("read".into(), json!(rr.contents.len()));
        }
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_default();
    let echo = args.get(2).cloned().unwrap_or_else(|| "echo".into());
    let progress = args.get(3).cloned().unwrap_or_else(|| "count".into());
    let mut report = serde_json::Map::new();
    report.insert("url".into(), json!(url));
    report.insert("client".into(), json!("rmcp"));
    let res = run(&url, &echo, &progress, &mut report).await;
    report.insert("ok".into(), json!(res.is_ok()));
    if let Err(e) = res {
        report.insert("error".into(), json!(format!("{e:#}")));
    }
    let ok = report.get("ok").and_then(Value::as_bool).unwrap_or(false);
    println!("{}", Value::Object(report));
    std::process::exit(if ok { 0 } else { 1 });
}
