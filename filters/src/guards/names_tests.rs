//! Names read as another name: a call or a prompt named in a spelling a
//! folding server reads as a name the gateway judged otherwise, list
//! entries that shadow one another, and completions of what is hidden.

use serde_json::{json, Value};

use crate::chain::filter::Verdict;
use crate::guards::tenant_fixture::*;

/// Everything is allowed but the tool `purge`, any tool whose name starts
/// with `admin_`, the prompt `secret` and `vault://` resources.
const REGO: &str = r#"package warden.authz
import rego.v1
default decision := {"allow": true, "reason": "ok"}
decision := {"allow": false, "reason": "no_purge"} if input.request.tool == "purge"
decision := {"allow": false, "reason": "no_admin"} if startswith(input.request.tool, "admin_")
decision := {"allow": false, "reason": "no_secret"} if input.request.prompt == "secret"
decision := {"allow": false, "reason": "no_vault"} if startswith(input.request.resource_uri, "vault://")
"#;

fn snap() -> crate::snapshot::Snapshot {
    snapshot(&[("policies/authz.rego", REGO)])
}

fn get_prompt(name: &str) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":name}}).to_string()
}

fn list_reply(array: &str, names: &[&str]) -> String {
    let items: Vec<Value> = names
        .iter()
        // Each its own definition (alike ones are a rename to the pins).
        .map(|n| json!({"name": n, "description": format!("{n:?}"), "inputSchema": {"type": "object"}}))
        .collect();
    json!({"jsonrpc":"2.0","id":1,"result":{array: items}}).to_string()
}

/// The names a list reply shows the client after the chain.
fn shown(v: &Verdict, original: &str, array: &str) -> Vec<String> {
    let bytes = match v {
        Verdict::Forward => original.as_bytes().to_vec(),
        Verdict::ForwardMutated(b, _) => b.clone(),
        Verdict::Reject { .. } => return Vec::new(),
    };
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    v["result"][array]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// A tool the policy denies by name, called in another case before any
/// list was seen: a server that looks tools up ignoring case runs it.
#[test]
fn a_denied_tool_in_another_case_is_refused() {
    let s = snap();
    let p = principal("", "alice", &[]);
    assert!(refused(&request(&s, &p, "crm", &call("echo", "{}")).0).is_none());
    assert!(refused(&request(&s, &p, "crm", &call("purge", "{}")).0).is_some());
    for name in ["PURGE", "Purge", "puRge"] {
        let v = request(&s, &p, "crm", &call(name, "{}")).0;
        assert!(
            refused(&v).is_some(),
            "{name} reached a case-insensitive server"
        );
    }
}

/// A tool hidden from the principal's list (by a rule no literal names)
/// is still the tool a folding server runs for another spelling of it.
#[test]
fn a_hidden_listed_tool_in_another_case_is_refused() {
    let s = snap();
    let p = principal("", "alice", &[]);
    let list = list_reply("tools", &["echo", "admin_wipe"]);
    let v = reply(&s, &p, "crm", "tools/list", &list);
    assert_eq!(shown(&v, &list, "tools"), ["echo"]);
    for name in ["ADMIN_wipe", "Admin_Wipe"] {
        let v = request(&s, &p, "crm", &call(name, "{}")).0;
        assert!(refused(&v).is_some(), "{name} reached the server");
    }
}

/// A prompt the policy denies, asked for in another case.
#[test]
fn a_denied_prompt_in_another_spelling_is_refused() {
    let s = snap();
    let p = principal("", "alice", &[]);
    assert!(refused(&request(&s, &p, "crm", &get_prompt("hello")).0).is_none());
    assert!(refused(&request(&s, &p, "crm", &get_prompt("secret")).0).is_some());
    for name in [
        "Secret",
        "SECRET",
        "ſecret",
        "secret\u{0}",
        "se\u{200b}cret",
    ] {
        let v = request(&s, &p, "crm", &get_prompt(name)).0;
        assert!(refused(&v).is_some(), "{name:?} reached the server");
    }
}

/// A list where a visible entry is another spelling of a hidden one: a
/// folding client or server reads the visible one as the hidden one.
#[test]
fn list_entries_that_shadow_a_hidden_one_are_hidden() {
    let s = snap();
    let p = principal("", "alice", &[]);
    let list = list_reply("tools", &["echo", "purge", "Purge", "admin_x", "ADMIN_x"]);
    let v = reply(&s, &p, "crm", "tools/list", &list);
    assert_eq!(shown(&v, &list, "tools"), ["echo"]);
    let list = list_reply("prompts", &["hello", "secret", "Secret", "ſecret"]);
    let v = reply(&s, &p, "crm", "prompts/list", &list);
    assert_eq!(shown(&v, &list, "prompts"), ["hello"]);
    // Two spellings of one name, neither hidden by the policy: which one a
    // folding peer means is not known, so neither is shown.
    let list = list_reply("prompts", &["hello", "greet", "Greet"]);
    let v = reply(&s, &p, "crm", "prompts/list", &list);
    assert_eq!(shown(&v, &list, "prompts"), ["hello"]);
}

/// A completion names a prompt or a resource: one the principal may not
/// see is unknown to him, as a `prompts/get` of it would be.
#[test]
fn a_completion_of_a_hidden_prompt_or_resource_is_refused() {
    let s = snap();
    let p = principal("", "alice", &[]);
    let complete = |r: Value| {
        json!({"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{
            "ref": r, "argument": {"name": "a", "value": "x"}}})
        .to_string()
    };
    let ok = complete(json!({"type":"ref/prompt","name":"hello"}));
    assert!(refused(&request(&s, &p, "crm", &ok).0).is_none());
    let ok = complete(json!({"type":"ref/resource","uri":"file:///{a}"}));
    assert!(refused(&request(&s, &p, "crm", &ok).0).is_none());
    // The argument completed must be one of the template's variables.
    let other = complete(json!({"type":"ref/resource","uri":"file:///{path}"}));
    assert!(refused(&request(&s, &p, "crm", &other).0).is_some());
    for r in [
        json!({"type":"ref/prompt","name":"secret"}),
        json!({"type":"ref/prompt","name":"Secret"}),
        json!({"type":"ref/prompt","name":["secret"]}),
        json!({"type":"ref/resource","uri":"vault://keys/{id}"}),
        json!({"type":"ref/resource","uri":"file:///a/../b"}),
    ] {
        let v = request(&s, &p, "crm", &complete(r.clone())).0;
        assert!(refused(&v).is_some(), "{r}: {v:?}");
    }
}

/// A listed resource or template whose URI servers read as another
/// resource than its text (dot segments, escaped separators): the policy
/// judged the text, so the entry is not shown, as its update is not.
#[test]
fn listed_uris_a_server_reads_as_another_resource_are_hidden() {
    let s = snap();
    let p = principal("", "alice", &[]);
    let uris = |key: &str, array: &str, list: &[&str]| {
        let items: Vec<Value> = list.iter().map(|u| json!({key: u, "name": u})).collect();
        json!({"jsonrpc":"2.0","id":1,"result":{array: items}}).to_string()
    };
    let list = uris(
        "uri",
        "resources",
        &[
            "file:///a.txt",
            "file:///pub/../vault/x",
            "file:///pub/%2e%2e/x",
            "vault://k",
        ],
    );
    let v = reply(&s, &p, "crm", "resources/list", &list);
    assert_eq!(shown(&v, &list, "resources"), ["file:///a.txt"]);
    let list = uris(
        "uriTemplate",
        "resourceTemplates",
        &["file:///{path}", "file:///pub/..\\{x}", "vault://{k}"],
    );
    let v = reply(&s, &p, "crm", "resources/templates/list", &list);
    assert_eq!(shown(&v, &list, "resourceTemplates"), ["file:///{path}"]);
}

/// The record of listed names keeps to its share of the memory budget:
/// in spellings, in bytes (long names count as several), and one server
/// takes at most a quarter of it. What it could not record is not shown.
#[test]
fn listed_names_stay_in_budget() {
    use super::names::{ListedNames, Named};
    use warden_config::model::Table;
    let l = ListedNames::new(1000);
    let names: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
    let got = l.record("a", Named::Tool, names.iter().map(String::as_str));
    assert_eq!(
        got.iter().filter(|x| **x).count(),
        250,
        "a quarter per server"
    );
    assert!(got[..250].iter().all(|x| *x) && !got[250]);
    for s in ["b", "c", "d", "e", "f"] {
        l.record(s, Named::Prompt, names.iter().map(String::as_str));
    }
    assert_eq!(l.len(), 1000, "the table's bound");
    assert!(l.record("a", Named::Tool, ["t5"].into_iter())[0], "kept");
    assert!(!l.record("g", Named::Tool, ["t5"].into_iter())[0], "full");

    let l = ListedNames::new(1000);
    let long: Vec<String> = (0..250).map(|i| format!("{i:x>1000}")).collect();
    let got = l.record("a", Named::Tool, long.iter().map(String::as_str));
    let kept = got.iter().filter(|x| **x).count();
    let bound = 1000 * Table::Names.entry_bytes() as usize;
    assert!(
        l.bytes() <= bound && l.bytes() > bound * 9 / 10,
        "{}",
        l.bytes()
    );
    assert!((50..250).contains(&kept), "{kept} names of 1 KB");
}

/// A full record hides what it cannot record, through the chain.
#[test]
fn a_list_entry_the_full_record_cannot_hold_is_not_shown() {
    let s = snap();
    let p = principal("", "alice", &[]);
    let filler: Vec<String> = (0..20_000).map(|i| format!("tool{i}")).collect();
    let names: Vec<&str> = filler.iter().map(String::as_str).collect();
    let list = list_reply("tools", &names);
    let v = reply(&s, &p, "crm", "tools/list", &list);
    let shown_now = shown(&v, &list, "tools");
    assert!(!shown_now.is_empty() && shown_now.len() < 20_000);
    let list = list_reply("tools", &["echo", "fresh"]);
    let v = reply(&s, &p, "other", "tools/list", &list);
    assert_eq!(
        shown(&v, &list, "tools"),
        ["echo", "fresh"],
        "another server keeps its room"
    );
}
