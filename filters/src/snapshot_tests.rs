use super::*;

fn route(prefix: &str, up: &str) -> ResolvedRoute {
    ResolvedRoute {
        index: 0,
        prefix: prefix.into(),
        host: None,
        upstream_prefix: up.into(),
        server: 0,
        via: None,
        others: Vec::new(),
    }
}

#[test]
fn path_mapping() {
    let r = route("/jira", "/");
    assert_eq!(r.upstream_path("/jira/mcp"), "/mcp");
    assert_eq!(r.upstream_path("/jira"), "/");
    assert_eq!(
        r.downstream_path("/messages/?session_id=1").as_deref(),
        Some("/jira/messages/?session_id=1")
    );
    let r = route("/a", "/v1");
    assert_eq!(r.upstream_path("/a/mcp"), "/v1/mcp");
    assert_eq!(
        r.downstream_path("/v1/messages?x=1").as_deref(),
        Some("/a/messages?x=1")
    );
    assert_eq!(r.downstream_path("/v10/messages"), None);
    assert_eq!(r.downstream_path("/other"), None);
    let r = route("/", "/");
    assert_eq!(r.upstream_path("/mcp"), "/mcp");
}

#[test]
fn prefix_on_segment_boundary() {
    assert!(prefix_matches("/jira", "/jira/mcp"));
    assert!(prefix_matches("/jira", "/jira"));
    assert!(!prefix_matches("/jira", "/jiramcp"));
    assert!(prefix_matches("/", "/x"));
    assert_eq!(strip_port("Example.com:8080"), "Example.com");
    assert_eq!(strip_port("[::1]:80"), "::1");
}

/// A tenant's host route is found whatever the spelling of the `Host`
/// header a peer reads as its host: case, port, a trailing dot (which
/// would fall through to a host-agnostic route, the org's catch-all).
#[test]
fn host_routes_match_the_host_as_peers_read_it() {
    let org = "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: crm, upstreams: [\"127.0.0.1:1\"]}\nroutes:\n  - {prefix: /, server: crm}\ntenants:\n  finance: {hosts: [finance.example], upstreams: [\"127.0.0.1:2\"]}\n";
    let fin = "version: 1\ntenant: finance\nservers:\n  - {name: ledger, upstreams: [\"127.0.0.1:2\"]}\nroutes:\n  - {host: finance.example, path_prefix: /mcp, server: ledger}\n";
    let s =
        crate::guards::tenant_fixture::snapshot_with(org, &[("tenants/finance/tenant.yaml", fin)]);
    let server = |host: &str| {
        let r = s.route(Some(host), "/mcp").expect("route");
        s.server(r).name.clone()
    };
    for h in [
        "finance.example",
        "Finance.Example",
        "finance.example:443",
        "finance.example.",
        "FINANCE.EXAMPLE.:8443",
    ] {
        assert_eq!(server(h), "ledger", "{h}");
    }
    assert_eq!(server("other.example"), "crm");
}

/// Two servers on one upstream address are told apart by path alone: a
/// route whose upstream space holds another server's prefix cannot reach
/// it, however the path spells it (case, escapes, `;` parameters, a
/// trailing dot). Found by session 55's review: `/docs/mail/mcp` reached
/// `mail`'s endpoint under `docs`'s labels.
#[test]
fn a_route_cannot_reach_another_servers_endpoint_on_a_shared_upstream() {
    let org = "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: docs, upstreams: [\"127.0.0.1:9\"]}\n      - {name: mail, upstreams: [\"127.0.0.2:9\"]}\n      - {name: other, upstreams: [\"127.0.0.1:10\"]}\nroutes:\n  - {prefix: /docs, server: docs, upstream_prefix: /}\n  - {prefix: /mail, server: mail, upstream_prefix: /mail}\n  - {prefix: /other, server: other, upstream_prefix: /}\n";
    let s = crate::guards::tenant_fixture::snapshot_with(org, &[]);
    let reaches = |path: &str| {
        let r = s.route(None, path).expect("route");
        r.reaches_other(&r.upstream_path(path))
    };
    for p in [
        "/docs/mail/mcp",
        "/docs/mail",
        "/docs/MAIL/mcp",
        "/docs/%6dail/mcp",
        "/docs/%256dail/mcp",
        "/docs/mail;x=1/mcp",
        "/docs/mail./mcp",
    ] {
        assert!(reaches(p), "{p}");
    }
    for p in [
        "/docs/mcp",
        "/docs/mailbox/mcp",
        "/mail/mcp",
        "/mail",
        "/other/mail/mcp",
    ] {
        assert!(!reaches(p), "{p}");
    }
    assert_eq!(loose_path("/A/%2e/b;c/d./"), "/a/b/d");
}

/// This host's interface addresses are this host, as loopback is: a
/// server at eth0's address and one at 127.0.0.1 on the same port are one
/// upstream (one process bound to every address answers both).
#[test]
fn this_hosts_own_addresses_and_loopback_are_one_upstream() {
    let Some(own) = warden_config::host::own_addresses()
        .into_iter()
        .find(|ip| !ip.is_loopback() && ip.is_ipv4())
    else {
        return;
    };
    let org = format!("version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {{name: docs, upstreams: [\"{own}:9\"]}}\n      - {{name: mail, upstreams: [\"127.0.0.1:9\"]}}\nroutes:\n  - {{prefix: /docs, server: docs, upstream_prefix: /}}\n  - {{prefix: /mail, server: mail, upstream_prefix: /mail}}\n");
    let s = crate::guards::tenant_fixture::snapshot_with(&org, &[]);
    let r = s.route(None, "/docs/mail/mcp").expect("route");
    assert!(r.reaches_other(&r.upstream_path("/docs/mail/mcp")));
}
