//! An `rmcp` Streamable-HTTP server for conformance tests:
//! `rmcp-server` binds 127.0.0.1:0 and prints `listening on ADDR`.
//! Tools: `echo {text}`, `count {steps}` (progress notifications). With
//! `RMCP_PAGE_SIZE=1`, `tools/list` pages one tool at a time.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;

#[derive(Clone)]
struct Peer;

fn schema(v: serde_json::Value) -> Arc<serde_json::Map<String, serde_json::Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for Peer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        params: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let all = vec![
            Tool::new(
                "echo",
                "Echo the text back",
                schema(
                    json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}),
                ),
            ),
            Tool::new(
                "count",
                "Report progress, then finish",
                schema(
                    json!({"type":"object","properties":{"steps":{"type":"integer"}},"required":["steps"]}),
                ),
            ),
        ];
        if std::env::var("RMCP_PAGE_SIZE").as_deref() != Ok("1") {
            return Ok(ListToolsResult::with_all_items(all));
        }
        let at: usize = match params.and_then(|p| p.cursor) {
            None => 0,
            Some(c) => c
                .strip_prefix("page-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ErrorData::invalid_params("bad cursor", None))?,
        };
        let n = all.len();
        let mut page = ListToolsResult::with_all_items(all.into_iter().skip(at).take(1).collect());
        if at + 1 < n {
            page.next_cursor = Some(format!("page-{}", at + 1));
        }
        Ok(page)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            "echo" => {
                let text = args
                    .get("text")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
            }
            "count" => {
                let steps = args.get("steps").and_then(|v| v.as_u64()).unwrap_or(3);
                if let Some(token) = context.meta.get_progress_token() {
                    for i in 1..=steps {
                        let p = ProgressNotificationParam::new(token.clone(), i as f64)
                            .with_total(steps as f64);
                        context
                            .peer
                            .notify_progress(p)
                            .await
                            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                    }
                }
                Ok(
                    CallToolResult::success(vec![ContentBlock::text(format!("counted {steps}"))])
                        .into(),
                )
            }
            other => Err(ErrorData::invalid_params(
                format!("unknown tool {other}"),
                None,
            )),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = StreamableHttpServerConfig::default();
    let service: StreamableHttpService<Peer, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(Peer), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
