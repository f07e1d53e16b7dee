//! Unit tests of the aggregator's pure parts.

use super::*;
use warden_config::model::ToolView;

type Spec<'a> = (&'a str, Prefixing, Option<(&'a str, &'a str)>);

fn agg(members: &[Spec<'_>]) -> Aggregator {
    let members: Vec<VirtualMember> = members
        .iter()
        .map(|(name, prefixing, alias)| VirtualMember {
            server: (*name).into(),
            path: "/mcp".into(),
            prefixing: *prefixing,
            prefix: (*name).into(),
            tools: alias
                .iter()
                .map(|(real, a)| {
                    (
                        (*real).to_owned(),
                        ToolView {
                            alias: Some((*a).into()),
                            ..ToolView::default()
                        },
                    )
                })
                .collect(),
        })
        .collect();
    Aggregator {
        name: "v".into(),
        fingerprint: String::new(),
        addr: "127.0.0.1:1".parse().expect("addr"),
        outer_secret: String::new(),
        inner_secret: String::new(),
        base: String::new(),
        aliases: members
            .iter()
            .flat_map(|m| m.tools.values().filter_map(|t| t.alias.clone()))
            .collect(),
        timeouts: vec![Duration::from_secs(1); members.len()],
        members,
        api_key: None,
        client: reqwest::Client::new(),
        cursor_key: TokenKey::new(&[7; 32]),
        sessions: Mutex::new(HashMap::new()),
        opening: Mutex::new(HashMap::new()),
    }
}

fn learned(sets: Vec<Option<Vec<&str>>>) -> Learned {
    let mut l = Learned::new(sets.len());
    l.sets[0] = sets
        .into_iter()
        .map(|s| s.map(|v| v.into_iter().map(str::to_owned).collect()))
        .collect();
    l
}

fn name(t: &NameTable, i: usize, real: &str) -> Option<String> {
    t.by_real.get(&(i, real.to_owned())).cloned()
}

#[test]
fn names_are_decided_in_member_order() {
    use Prefixing::*;
    let a = agg(&[
        ("a", Conflict, None),
        ("b", Conflict, Some(("add", "plus"))),
        ("c", Never, None),
        ("d", Always, None),
    ]);
    let l = learned(vec![
        Some(vec!["echo", "plus", "b_y", "y"]),
        Some(vec!["echo", "add", "y"]),
        Some(vec!["echo", "b_echo", "only_c"]),
        Some(vec!["echo"]),
    ]);
    let t = a.table(&l, ListKind::Tools);
    assert_eq!(name(&t, 0, "echo").as_deref(), Some("echo"));
    // The alias is the aliased tool's alone, whatever comes first.
    assert_eq!(name(&t, 0, "plus").as_deref(), Some("a_plus"));
    assert_eq!(name(&t, 1, "add").as_deref(), Some("plus"));
    assert_eq!(t.by_name.get("plus"), Some(&(1, "add".to_owned())));
    assert_eq!(name(&t, 1, "echo").as_deref(), Some("b_echo"));
    // `y` and `b_y` both taken by the earlier member: not shown.
    assert_eq!(name(&t, 0, "b_y").as_deref(), Some("b_y"));
    assert_eq!(name(&t, 1, "y"), None);
    // `never`: a name already taken is not shown at all.
    assert_eq!(name(&t, 2, "echo"), None);
    assert_eq!(name(&t, 2, "b_echo"), None);
    assert_eq!(name(&t, 2, "only_c").as_deref(), Some("only_c"));
    assert_eq!(name(&t, 3, "echo").as_deref(), Some("d_echo"));
    // One name, one tool.
    assert_eq!(t.by_name.len(), t.by_real.len());
}

#[test]
fn no_bare_name_while_an_earlier_member_is_unknown() {
    use Prefixing::*;
    let a = agg(&[
        ("a", Conflict, None),
        ("b", Conflict, None),
        ("c", Never, None),
    ]);
    let l = learned(vec![None, Some(vec!["send_email"]), Some(vec!["send"])]);
    let t = a.table(&l, ListKind::Tools);
    assert_eq!(name(&t, 1, "send_email").as_deref(), Some("b_send_email"));
    assert_eq!(name(&t, 2, "send"), None);
    assert!(!t.by_name.contains_key("send_email"));
}

#[test]
fn anonymous_callers_are_told_apart_by_address() {
    use warden_filters::engines::identity::{AuthMethod, Principal};
    let a: Option<std::net::IpAddr> = "10.0.0.1".parse().ok();
    let b: Option<std::net::IpAddr> = "10.0.0.2".parse().ok();
    let anon = Principal::anonymous();
    assert_ne!(owner_digest(&anon, a), owner_digest(&anon, b));
    let mapped: Option<std::net::IpAddr> = "::ffff:10.0.0.1".parse().ok();
    assert_eq!(owner_digest(&anon, a), owner_digest(&anon, mapped));
    let key = Principal {
        id: "agent-dev".into(),
        auth: AuthMethod::ApiKey,
        ..Principal::anonymous()
    };
    assert_eq!(owner_digest(&key, a), owner_digest(&key, b));
    // The same caller by another method is another owner only when the
    // principal differs, never by address.
    assert_ne!(owner_digest(&key, a), owner_digest(&anon, a));
}

#[test]
fn templates_route_only_past_their_scheme() {
    assert_eq!(template_head("file:///{path}"), None);
    assert_eq!(template_head("h{x}"), None);
    assert_eq!(template_head("https://{host}/x"), None);
    assert_eq!(
        template_head("https://docs.example/{p}"),
        Some("https://docs.example/")
    );
    assert_eq!(template_head("res://greeting/{x}"), Some("res://greeting/"));
}

#[test]
fn a_narrower_claim_never_takes_a_broad_members_uris() {
    let home = "file:///home/alice/secret.txt";
    // A scheme-wide template and another member's narrower one: ambiguous.
    let members = vec![
        (false, vec![]),
        (false, vec!["file:///{path}"]),
        (false, vec!["file:///home{rest}"]),
    ];
    assert!(claimant(home, &members).is_err());
    // Outside the narrower claim: no claim; the caller falls back to the
    // one member with resources.
    assert_eq!(claimant("file:///tmp/x", &members), Ok(None));
    // Alone, the narrower template routes; a listed URI too.
    assert_eq!(claimant(home, &members[2..]), Ok(Some(0)));
    let listed = vec![(true, vec![]), (false, vec!["res://other/{x}"])];
    assert_eq!(claimant(home, &listed), Ok(Some(0)));
    let two = vec![(true, vec![]), (false, vec!["file:///home/{x}"])];
    assert!(claimant(home, &two).is_err());
}

#[test]
fn sse_events_are_read_across_chunks() {
    let mut r = SseReader::default();
    assert!(r
        .push(b"event: message\ndata: {\"a\"")
        .expect("read")
        .is_empty());
    let got = r
        .push(b":1}\n\n: comment\n\ndata: x\r\n\r\nid: 3\ndata: y\ndata: z\n\n")
        .expect("read");
    assert_eq!(got, vec!["{\"a\":1}".to_owned(), "x".into(), "y\nz".into()]);
    // Bare CR line ends, as a member's server may write them.
    let got = r.push(b"data: {\"b\":2}\r\rdata: w\r\r:").expect("read");
    assert_eq!(got, vec!["{\"b\":2}".to_owned(), "w".into()]);
}
