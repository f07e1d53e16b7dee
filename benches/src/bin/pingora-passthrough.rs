//! The framework's ceiling for benchmarks: a minimal Pingora `ProxyHttp`
//! that forwards everything to one upstream with no filters at all.
//! usage: pingora-passthrough LISTEN UPSTREAM [THREADS] [steal|nosteal]
//!
//! `steal` (the default) is Pingora's default work-stealing runtime;
//! `nosteal` gives each worker thread its own event loop, as Warden runs a single worker.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use pingora_proxy::{ProxyHttp, Session};

/// Same allocator as `warden`, so the comparison measures Warden's work only.
#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: pingora-passthrough LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let work_stealing = args.get(4).map(String::as_str) != Some("nosteal");
    let mut server = Server::new_with_opt_and_conf(
        Opt::default(),
        ServerConf {
            threads,
            work_stealing,
            ..ServerConf::default()
        },
    );
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: upstream.clone(),
        },
    );
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
