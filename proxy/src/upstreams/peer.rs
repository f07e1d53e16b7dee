//! The Pingora peer for one replica of a server: TLS, timeouts, HTTP
//! version. Which replica serves a request is `Runtime::select` (see
//! `hub::runtime`).

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use warden_config::model::Server;

/// Builds the Pingora peer for one upstream address of `server`.
pub fn peer(server: &Server, addr: SocketAddr, streaming: bool) -> HttpPeer {
    let (tls, sni) = match &server.tls {
        Some(t) => (true, t.sni.clone()),
        None => (false, String::new()),
    };
    let mut p = HttpPeer::new(addr, tls, sni);
    let t = &server.timeouts;
    p.options.connection_timeout = Some(t.connect);
    p.options.total_connection_timeout = Some(t.connect + Duration::from_secs(1));
    p.options.read_timeout = Some(if streaming { t.stream_idle } else { t.read });
    p.options.write_timeout = Some(t.write);
    p.options.idle_timeout = Some(t.idle);
    if let Some(tls) = &server.tls {
        p.options.verify_cert = tls.verify;
        p.options.verify_hostname = tls.verify;
        if tls.h2 {
            p.options.set_http_version(2, 1);
        }
    }
    p
}
