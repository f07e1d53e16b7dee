//! `warden-mock --listen 127.0.0.1:0`: prints `listening on ADDR` once bound.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use warden_loadtest::mock::Mock;

#[derive(Parser)]
#[command(
    name = "warden-mock",
    about = "Fast Streamable-HTTP MCP server for benchmarks and fault tests"
)]
struct Args {
    /// Address to bind; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8931")]
    listen: String,
    /// Answer 404 to requests without a session created by initialize.
    #[arg(long)]
    require_session: bool,
    /// Fault: hand every initialize the same session id (a server whose
    /// session counter started over).
    #[arg(long)]
    reuse_session_ids: bool,
    /// Send the session id on every reply in a session, not only on
    /// initialize's (as some SDK servers do).
    #[arg(long)]
    session_header_always: bool,
    /// Page tools/list results this many tools at a time (0: one page).
    #[arg(long, default_value_t = 0)]
    tools_page_size: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut m = Mock::new(args.require_session);
        if let Some(mm) = Arc::get_mut(&mut m) {
            mm.tools_page_size = args.tools_page_size;
            mm.reuse_session_ids = args.reuse_session_ids;
            mm.session_header_always = args.session_header_always;
        }
        let mock = m;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            mock.stats.connections.fetch_add(1, Ordering::Relaxed);
            let mock = Arc::clone(&mock);
            tokio::spawn(async move {
                let svc = service_fn(move |req| Arc::clone(&mock).handle(req));
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
