use super::*;

fn route(prefix: &str, up: &str) -> ResolvedRoute {
    ResolvedRoute {
        index: 0,
        prefix: prefix.into(),
        host: None,
        upstream_prefix: up.into(),
        server: 0,
        via: None,
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
