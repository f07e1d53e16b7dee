//! What the policy reads is what the server reads: a resource rule written
//! in one spelling of a URI judges every spelling servers read as the same
//! resource, and arguments Rego cannot read are never judged absent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;
use crate::engines::identity::Principal;
use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

/// Two rules, one in each spelling: the encoded one and the raw one.
const REGO: &str = r#"package warden.authz

default decision := {"allow": true, "reason": "ok"}

decision := {"allow": false, "reason": "board_only"} if startswith(input.request.resource_uri, "file:///Board%20Minutes/")
decision := {"allow": false, "reason": "payroll"} if startswith(input.request.resource_uri, "file:///pay roll/")
decision := {"allow": false, "reason": "cafe"} if input.request.resource_uri == "note://café/menu"
decision := {"allow": false, "reason": "board"} if startswith(input.request.resource_uri, "https://files.example.com/Board Minutes/")
decision := {"allow": false, "reason": "reports"} if startswith(input.request.resource_uri, "file:///data/Reports%20%282024%29/")
decision := {"allow": false, "reason": "finance"} if startswith(input.request.resource_uri, "mail://finance%40corp/")
decision := {"allow": false, "reason": "menus"} if startswith(input.request.resource_uri, "file:///caf%C3%A9/")
decision := {"allow": false, "reason": "alice"} if startswith(input.request.resource_uri, "file:///Users/alice/secret/")
decision := {"allow": false, "reason": "crème"} if contains(input.request.resource_uri, "/crème/")
decision := {"allow": false, "reason": "delete"} if contains(input.request.resource_uri, "action=delete")
decision := {"allow": false, "reason": "listed"} if data.blocked[input.request.resource_uri]
not_a_place := sprintf("%s", ["N/A"])
"#;

fn filter() -> PolicyFilter {
    filter_of(REGO)
}

fn filter_of(rego: &str) -> PolicyFilter {
    filter_with(rego, HashMap::new())
}

/// The filter of `rego` (with the test's data) over `catalog`.
fn filter_with(
    rego: &str,
    catalog: HashMap<String, warden_config::access::ServerCatalog>,
) -> PolicyFilter {
    let modules = BTreeMap::from([("authz.rego".to_owned(), rego.to_owned())]);
    let data = serde_json::json!({
        "blocked": {"hr://payroll/2026": true},
        "notes": ["N/A", "n/a", "a/r", "%d"]
    });
    let engine = PolicyEngine::compile(&modules, &data, "data.warden.authz.decision", "UTC", 1000)
        .expect("rego");
    PolicyFilter::new(Arc::new(engine), catalog, DenialStyle::Error)
}

fn verdict(f: &PolicyFilter, method: &str, uri: &str) -> Decision {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"uri": uri}})
            .to_string();
    verdict_on(f, &body)
}

fn verdict_on(f: &PolicyFilter, body: &str) -> Decision {
    let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
        panic!("parse {body}");
    };
    let p = Principal::anonymous();
    let msg = Message::new(&env, body.as_bytes());
    f.on_request(&msg, &Exchange::new(&p, "s"), &mut Notes::default())
}

#[test]
fn every_spelling_of_a_denied_resource_is_denied() {
    let f = filter();
    for method in ["resources/read", "resources/subscribe"] {
        for uri in [
            "file:///Board%20Minutes/2026.txt",
            "file:///Board Minutes/2026.txt",
            "file:///pay roll/march.csv",
            "file:///pay%20roll/march.csv",
            "note://café/menu",
            "note://caf%C3%A9/menu",
        ] {
            assert!(
                matches!(verdict(&f, method, uri), Decision::Reject(_)),
                "{method} {uri}"
            );
        }
        // A spelling no reading reaches, read loosely, holds a text the
        // policy writes: refused as ambiguous, or denied by a reading.
        for uri in [
            "https://files.example.com/Board%20Minutes/q3.pdf#%",
            "https://files.example.com/Board%20Minutes/q3.pdf?%FF",
            "file:///data/Reports%20(2024)/q.txt",
            "file:///data/Reports (2024)/q.txt",
            "mail://finance@corp/inbox",
            "file:///caf%c3%a9/x",
            "file:///Users/alice/SECRET/keys.txt",
            "file:///Users/Alice/secret/keys.txt",
            "file:///menus/cre\u{300}me/x",
            "file:///menus/cr%C3%A8me/x",
            "file:///menus/CRÈME/x",
            // A copy as written elsewhere in the URI stands for nothing.
            "file:///Users/alice/SECRET/keys.txt#file:///Users/alice/secret/",
            "mail://finance@corp/inbox?mail://finance%40corp/",
            // Case folds a byte-wise lower-casing misses.
            "file:///Users/alice/ſecret/keys.txt",
            "file:///Users/alıce/secret/keys.txt",
        ] {
            assert!(
                matches!(verdict(&f, method, uri), Decision::Reject(_)),
                "{method} {uri}"
            );
        }
        // A query with an escape that is no UTF-8 still has its decoded
        // reading; an object key of the data is a text the policy writes.
        for uri in [
            "https://api.example.com/orders?x=%FF&%61ction=delete",
            "hr://PAYROLL/2026",
        ] {
            assert!(
                matches!(verdict(&f, method, uri), Decision::Reject(_)),
                "{method} {uri}"
            );
        }
        // Ordinary URIs beside short texts with a slash (`N/A`) or a
        // format string (`%d`) in the bundle.
        for uri in [
            "https://example.com/en/about",
            "file:///usr/bin/awk",
            "file:///home/user/Plan/Agenda.md",
            "file:///srv/data/Reports/q1.csv",
            "file:///home/user/docs/50%25Discount.pdf",
            "https://drive.example.com/files/Design/Notes",
        ] {
            assert!(
                matches!(verdict(&f, method, uri), Decision::Pass),
                "{method} {uri}"
            );
        }
        for uri in [
            "file:///Board%20Agenda/2026.txt",
            "file:///Users/alice/public/a.txt",
            "file:///data/Reports%20%282025%29/q.txt",
            "file:///Board Agenda/2026.txt",
            "file:///public/a.txt",
            "note://tea/menu",
        ] {
            assert!(
                matches!(verdict(&f, method, uri), Decision::Pass),
                "{method} {uri}"
            );
        }
    }
}

/// serde_json reads `$serde_json::private::Number` as any member name;
/// Rego's reader takes it for a big number and fails on the object. Such
/// arguments are refused, never judged as null (absent).
#[test]
fn arguments_rego_cannot_read_are_refused() {
    let nested = r#"package warden.authz

default decision := {"allow": true, "reason": "ok"}

decision := {"allow": false, "reason": "gov"} if input.request.arguments.loc.region == "us-gov"
"#;
    let whole = r#"package warden.authz

default decision := {"allow": true, "reason": "ok"}

decision := {"allow": false, "reason": "shadow"} if {
    some k, v in input.request.arguments
    v == "/etc/shadow"
}
"#;
    let call = |args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"deploy","arguments":{args}}}}}"#
        )
    };
    for (rego, args) in [
        (
            nested,
            r#"{"loc":{"$serde_json::private::Number":"x","region":"us-gov"}}"#,
        ),
        (
            nested,
            r#"{"loc":{"\u0024serde_json::private::Number":"1","region":"us-gov"}}"#,
        ),
        (
            whole,
            r#"{"$serde_json::private::Number":"1","path":"/etc/shadow"}"#,
        ),
        // Alone, the marker makes Rego read a number where there is an object.
        (nested, r#"{"loc":{"$serde_json::private::Number":"1"}}"#),
    ] {
        let d = verdict_on(&filter_of(rego), &call(args));
        assert!(matches!(d, Decision::Reject(_)), "{args}: {d:?}");
    }
    // Ordinary arguments are judged as before.
    let d = verdict_on(&filter_of(nested), &call(r#"{"loc":{"region":"eu"}}"#));
    assert!(matches!(d, Decision::Pass), "{d:?}");
}

/// A string a lax server reads as a boolean or a number (`"true"`, `"1"`)
/// in an argument the policy reads cannot be judged while the tool's
/// input schema is unknown: refused. Once the catalog (or the server's
/// listing) gives the schema, the schema guard decides the type.
#[test]
fn a_string_a_lax_server_coerces_waits_for_the_tools_schema() {
    let rego = r#"package warden.authz

default decision := {"allow": true, "reason": "ok"}

decision := {"allow": false, "reason": "forced"} if input.request.arguments.opts.force == true
decision := {"allow": false, "reason": "big"} if input.request.arguments.amount > 1000
"#;
    let call = |tool: &str, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    };
    let f = filter_of(rego);
    let reason = |d: &Decision| match d {
        Decision::Reject(den) => den.reason.clone(),
        other => format!("{other:?}"),
    };
    for args in [
        r#"{"opts":{"force":"true"}}"#,
        r#"{"opts":{"force":"Yes"}}"#,
        r#"{"opts":{"force":" 1 "}}"#,
        r#"{"amount":"5000"}"#,
        r#"{"amount":"5e3"}"#,
        // The Python SDK decodes a string argument of a non-string
        // parameter as JSON first: a list, an object or `None` (whatever
        // this gateway's parser makes of it: `NaN` is Python's).
        r#"{"opts":"{\"force\": true}"}"#,
        r#"{"opts":{"force":"[true]"}}"#,
        r#"{"opts":{"force":" null "}}"#,
        r#"{"amount":"[5000, NaN]"}"#,
        r#"{"amount":"\n{\"a\":1}\t"}"#,
    ] {
        let d = verdict_on(&f, &call("pay", args));
        assert_eq!(reason(&d), "argument_type_unknown", "{args}");
    }
    // Typed values are judged; strings the policy does not read, or that
    // no reader coerces, pass.
    assert_eq!(
        reason(&verdict_on(&f, &call("pay", r#"{"amount":5000}"#))),
        "big"
    );
    for args in [
        r#"{"amount":10,"note":"true"}"#,
        r#"{"amount":10,"note":"[\"us\"]"}"#,
        r#"{"opts":{"force":"maybe"},"amount":10}"#,
        r#"{"opts":{"force":"[draft] later"},"amount":10}"#,
        r#"{"opts":{"force":"Null"},"amount":10}"#,
    ] {
        assert!(
            matches!(verdict_on(&f, &call("pay", args)), Decision::Pass),
            "{args}"
        );
    }
    // With the tool's schema in the catalog, the types are known.
    let mut catalog = HashMap::new();
    let mut server = warden_config::access::ServerCatalog::default();
    server.tools.insert(
        "pay".to_owned(),
        warden_config::access::ToolEntry {
            input_schema: Some(Arc::new(serde_json::json!({"type": "object"}))),
            ..Default::default()
        },
    );
    catalog.insert("s".to_owned(), server);
    let known = filter_with(rego, catalog);
    assert!(matches!(
        verdict_on(&known, &call("pay", r#"{"opts":{"force":"true"}}"#)),
        Decision::Pass
    ));
}
