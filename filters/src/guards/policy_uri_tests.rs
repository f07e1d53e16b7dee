//! A resource rule written in one spelling of a URI judges every spelling
//! servers read as the same resource.

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
"#;

fn filter() -> PolicyFilter {
    let modules = BTreeMap::from([("authz.rego".to_owned(), REGO.to_owned())]);
    let engine = PolicyEngine::compile(
        &modules,
        &serde_json::json!({}),
        "data.warden.authz.decision",
        "UTC",
        1000,
    )
    .expect("rego");
    PolicyFilter::new(Arc::new(engine), HashMap::new(), DenialStyle::Error)
}

fn verdict(f: &PolicyFilter, method: &str, uri: &str) -> Decision {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"uri": uri}})
            .to_string();
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
        for uri in [
            "file:///Board%20Agenda/2026.txt",
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
