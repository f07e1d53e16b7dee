//! A bundle with tenant layers and a registry, built into a snapshot, and
//! messages run through its chain: for the tests of `tenants` and `registry`.

use std::collections::BTreeMap;

use warden_config::access::PrincipalKind;

use crate::chain::filter::{Exchange, Message, Notes, Verdict};
use crate::engines::identity::{AuthMethod, Principal};
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};
use crate::snapshot::Snapshot;

pub(crate) const ORG: &str = r#"version: 1
service_groups:
  - name: g
    servers:
      - {name: crm, upstreams: ["127.0.0.1:1"]}
routes:
  - {prefix: /crm, server: crm}
tenants:
  finance: {path_prefixes: [/finance/], upstreams: ["127.0.0.1:2"]}
  hr: {path_prefixes: [/hr/], upstreams: ["127.0.0.1:3"]}
"#;

/// The org's Rego: `wire` is denied to everyone; all else allowed.
pub(crate) const ORG_REGO: &str = "package warden.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false, \"reason\": \"org_no_wire\"} if input.request.tool == \"wire\"\n";

/// A layer of `tenant` with one server, at the address the org grants
/// that tenant (a server of its own: no two layers' servers share one).
pub(crate) fn layer(tenant: &str, server: &str, extra: &str) -> String {
    let port = if tenant == "hr" { 3 } else { 2 };
    format!(
        "version: 1\ntenant: {tenant}\nservers:\n  - {{name: {server}, upstreams: [\"127.0.0.1:{port}\"]}}\nroutes:\n  - {{path_prefix: /{tenant}/{server}, server: {server}}}\n{extra}"
    )
}

pub(crate) fn snapshot(files: &[(&str, &str)]) -> Snapshot {
    snapshot_with(ORG, files)
}

/// As [`snapshot`], with `org` as `warden.yaml`.
pub(crate) fn snapshot_with(org: &str, files: &[(&str, &str)]) -> Snapshot {
    let dir = tempfile::tempdir().expect("tmp");
    let mut all: BTreeMap<&str, &str> = BTreeMap::from([("warden.yaml", org)]);
    all.extend(files.iter().copied());
    for (name, text) in all {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    }
    let bundle = warden_config::Bundle::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(&bundle).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn principal(tenant: &str, id: &str, roles: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        tenant: tenant.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        kind: PrincipalKind::Agent,
        auth: AuthMethod::ApiKey,
        attributes: BTreeMap::new(),
        scopes: Vec::new(),
        canonical: Default::default(),
    }
}

/// The chain's verdict on a client message to `server`, and the notes.
pub(crate) fn request(s: &Snapshot, p: &Principal, server: &str, body: &str) -> (Verdict, Notes) {
    let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
        panic!("parse {body}")
    };
    let ex = Exchange::new(p, server);
    let msg = Message::new(&env, body.as_bytes());
    let mut notes = Notes::default();
    let v = s.chain.run(&msg, &ex, &mut notes);
    (v, notes)
}

/// The chain's verdict on a server reply to a request of `method`.
pub(crate) fn reply(
    s: &Snapshot,
    p: &Principal,
    server: &str,
    method: &str,
    body: &str,
) -> Verdict {
    let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
        panic!("parse {body}")
    };
    let ex = Exchange::new(p, server);
    let msg = Message::from_server(&env, body.as_bytes(), Some(method), None);
    s.chain.run(&msg, &ex, &mut Notes::default())
}

pub(crate) fn call(tool: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    )
}

/// Why the chain refused, or `None` when it forwarded.
pub(crate) fn refused(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Reject { denial, .. } => {
            Some(format!("{} {}", denial.reason, denial.error.message))
        }
        _ => None,
    }
}
