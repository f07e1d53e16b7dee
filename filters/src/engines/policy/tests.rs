//! Unit tests of the policy engine: near-named arguments, decisions (step-up
//! scopes, approvers) and the cache key plan.

use regorus::Value;

use super::analysis::*;
use super::decision::*;

#[test]
fn near_names_of_the_arguments_policy_reads_are_found() {
    let rego = r#"package warden.authz
# input.request.arguments.commented is not read
deny if input.request.arguments.region == "us"
deny if input.request.arguments["loc"].zone == "a"
deny if input.principal.id == "x"
"#;
    let paths = argument_paths(&[rego]);
    assert_eq!(
        paths,
        vec![
            vec!["loc".to_owned(), "zone".to_owned()],
            vec!["region".to_owned()]
        ]
    );
    // Through a variable bound to the arguments, or to a part of them.
    let aliased = r#"package warden.authz
deny if {
args := input.request.arguments
args.region == "us"
}
deny if {
loc = input.request.arguments.loc
loc["zone"] == "a"
}
deny if input.request.arguments.n == 1
"#;
    assert_eq!(
        argument_paths(&[aliased]),
        vec![
            vec!["loc".to_owned()],
            vec!["loc".to_owned(), "zone".to_owned()],
            vec!["n".to_owned()],
            vec!["region".to_owned()]
        ]
    );
    for args in [
        serde_json::json!({"Region": "us"}),
        serde_json::json!({"regıon": "us"}),
        serde_json::json!({"loc": {"Zone": "a"}}),
        serde_json::json!({"LOC": {"zone": "a"}}),
    ] {
        assert!(near_named_argument(&paths, &args), "{args}");
    }
    for args in [
        serde_json::json!({"region": "eu", "Other": 1}),
        serde_json::json!({"loc": "flat", "Commented": 1}),
        serde_json::json!([1, 2]),
    ] {
        assert!(!near_named_argument(&paths, &args), "{args}");
    }
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = std::collections::BTreeMap::new();
    for (k, v) in pairs {
        m.insert(Value::from(k), v);
    }
    Value::from(m)
}

#[test]
fn decisions_may_name_step_up_scopes() {
    let arr = |xs: &[&str]| Value::from(xs.iter().map(|x| Value::from(*x)).collect::<Vec<_>>());
    let d = decision_of(&obj(vec![
        ("allow", Value::Bool(true)),
        ("scopes", arr(&["deploy:prod"])),
    ]));
    assert!(d.allow);
    assert_eq!(d.scopes.as_deref(), Some(&["deploy:prod".to_owned()][..]));
    let d = decision_of(&obj(vec![
        ("allow", Value::Bool(true)),
        ("scope", Value::from("a b")),
    ]));
    assert_eq!(d.scopes.as_deref().map(<[String]>::len), Some(2));
    // A scope a header could not carry makes the decision invalid (deny).
    let d = decision_of(&obj(vec![
        ("allow", Value::Bool(true)),
        ("scopes", arr(&["a\"b"])),
    ]));
    assert!(!d.allow);
    assert_eq!(&*d.reason, "policy_invalid_decision");
    let d = decision_of(&obj(vec![
        ("allow", Value::Bool(true)),
        ("scopes", Value::from("x")),
    ]));
    assert!(!d.allow, "scopes must be an array");
}

#[test]
fn decisions_may_ask_for_approvers() {
    let ask = |v: Value| {
        decision_of(&obj(vec![
            ("allow", Value::Bool(true)),
            ("reason", Value::from("granted")),
            ("require_approval", v),
        ]))
    };
    let d = ask(Value::Bool(true));
    assert_eq!(
        d.approval.map(|a| (a.approvers, a.reason)),
        Some((1, "granted".into()))
    );
    let d = ask(Value::from(2u64));
    assert_eq!(d.approval.map(|a| a.approvers), Some(2));
    let d = ask(obj(vec![
        ("approvers", Value::from(2u64)),
        ("reason", Value::from("prod change")),
    ]));
    assert_eq!(
        d.approval.map(|a| (a.approvers, a.reason)),
        Some((2, "prod change".into()))
    );
    assert_eq!(ask(Value::Bool(false)).approval, None);
    // Out of range, or the wrong shape: the decision is invalid (deny).
    for bad in [
        Value::from(0u64),
        Value::from(6u64),
        Value::from("yes"),
        obj(vec![("approvers", Value::from("2"))]),
        obj(vec![("reason", Value::from(3u64))]),
    ] {
        let d = ask(bad);
        assert!(!d.allow && &*d.reason == "policy_invalid_decision", "{d:?}");
    }
    // A denial asks no approver.
    let d = decision_of(&obj(vec![
        ("allow", Value::Bool(false)),
        ("require_approval", Value::Bool(true)),
    ]));
    assert_eq!(d.approval, None);
}

fn plan(src: &str) -> Vec<Field> {
    key_plan(&[src]).expect("test").fields
}

#[test]
fn plan_follows_static_paths() {
    let f = plan(
        "package p\nimport rego.v1\nallow if { input.principal.roles[_] == \"x\"; input.request.arguments.region == input.principal.attributes.region }",
    );
    assert_eq!(
        f,
        vec![
            Field::PrincipalRoles,
            Field::PrincipalAttribute(Some("region".into())),
            Field::Argument(Some("region".into())),
        ]
    );
}

#[test]
fn plan_widens_dynamic_and_bare_references() {
    assert!(plan("x := input.request.arguments[k]").contains(&Field::Argument(None)));
    assert_eq!(
        plan("x := input").len(),
        ALL_PRINCIPAL.len() + ALL_SERVER.len() + ALL_REQUEST.len() + ALL_CONTEXT.len() + 1,
        "the whole input, `flow` included"
    );
    assert_eq!(plan("x := input.flow.session.rank"), vec![Field::Flow]);
    assert_eq!(plan("import input.context as c\n").len(), ALL_CONTEXT.len());
    assert_eq!(plan("x := input[\"request\"][\"tool\"]"), vec![Field::Tool]);
    // Comments and other identifiers do not count.
    assert!(plan("# input.request.tool\nmy_input := 1\ndata.input.x").is_empty());
}

#[test]
fn nondeterministic_builtins_disable_the_cache() {
    assert!(key_plan(&["x := time.now_ns()"]).is_none());
    assert!(key_plan(&["# time.now_ns() in a comment only"]).is_some());
}

/// The structural scan picks exactly the value text serde_json reads for
/// each wanted member: names with escapes, strings holding braces, quotes
/// and backslashes, nesting, whitespace everywhere, and a non-object.
#[test]
fn picked_members_are_the_values_serde_reads() {
    use super::input::pick_members;
    use serde_json::value::RawValue;
    let wanted: Vec<String> = ["region", "loc", "q\"x", "é", "n", "absent"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let objects = [
        r#"{"region":"us"}"#,
        r#" { "region" : "u\"s}" , "loc" : {"zone":"a\\","x":[1,{"}":"{"}]} } "#,
        r#"{"re\u0067ion":"x","q\"x":[true,false,null],"\u00e9":-1.5e3,"n":0}"#,
        r#"{"text":"a long } ] \" \\ string","n":{"region":"inner"},"region":["a","b"]}"#,
        "{\n\t\"n\"\r\n:\n12 ,\"loc\":\"\\ud83d\\ude00\"}",
        r#"{}"#,
        r#"["region"]"#,
        r#""region""#,
        r#"7"#,
    ];
    for raw in objects {
        let reference: Option<std::collections::BTreeMap<String, &RawValue>> =
            serde_json::from_str(raw).ok();
        let want = reference.map(|m| {
            wanted
                .iter()
                .map(|w| m.get(w).map(|v| v.get()))
                .collect::<Vec<_>>()
        });
        assert_eq!(pick_members(raw, &wanted), want, "{raw}");
    }
}

/// Rego reads the arguments in ways no path names: handed to a function,
/// `object.get`, iterated, indexed by a variable, re-aliased, through
/// `input.request` taken whole. Each is found, and then a key some peer
/// reads as one of the modules' words (`Region` for `"region"`) is refused.
#[test]
fn arguments_read_opaquely_refuse_near_names_of_the_policys_words() {
    let deny = |body: &str| {
        format!(
            "package warden.authz\nimport rego.v1\n{body}\ndecision := {{\"allow\": false, \"reason\": \"us\"}} if {{ us }} else := {{\"allow\": true, \"reason\": \"ok\"}}\n"
        )
    };
    for rego in [
        deny(r#"us if object.get(input.request.arguments, "region", "") == "us""#),
        deny("us if { some k, v in input.request.arguments; k == \"region\"; v == \"us\" }"),
        deny("us if { k := \"region\"; input.request.arguments[k] == \"us\" }"),
        deny("is_us(a) if a.region == \"us\"\nus if is_us(input.request.arguments)"),
        deny("us if { r := input.request; r.arguments.region == \"us\" }"),
        deny("us if { a := input.request.arguments; b := a; b.region == \"us\" }"),
        deny("us if { args := input.request.arguments; loc := args.loc; loc.region == \"us\" }"),
        deny("us if { loc := input.request.arguments.loc; x := loc; x.region == \"us\" }"),
    ] {
        let reads = argument_reads(&[&rego]);
        assert!(reads.opaque.is_some(), "{rego}");
        for args in [
            serde_json::json!({"Region": "us"}),
            serde_json::json!({"loc": {"REGION": "us"}}),
            serde_json::json!({"regıon": "us"}),
        ] {
            assert!(near_named_read(&reads, &args), "{rego}: {args}");
        }
        for args in [
            serde_json::json!({"region": "us"}),
            serde_json::json!({"text": "Region"}),
            serde_json::json!({"Query": 1}),
        ] {
            assert!(!near_named_read(&reads, &args), "{rego}: {args}");
        }
    }
    // Paths alone say it all: no words are kept.
    let plain = deny("us if input.request.arguments.region == \"us\"");
    assert!(argument_reads(&[&plain]).opaque.is_none());
    let aliased = deny("us if { args := input.request.arguments; args.region == \"us\" }");
    assert!(argument_reads(&[&aliased]).opaque.is_none());
}

/// An engine over one module, `authz.rego`, deciding
/// `data.warden.authz.decision`, without a decision cache.
fn engine_of(rego: &str) -> super::PolicyEngine {
    let modules = std::collections::BTreeMap::from([("authz.rego".to_owned(), rego.to_owned())]);
    super::PolicyEngine::compile(
        &modules,
        &serde_json::json!({}),
        "data.warden.authz.decision",
        "UTC",
        0,
    )
    .expect("rego")
}

/// A string a builtin would read as JSON naming serde's private big-number
/// marker (as written, with its letters escaped, or in JSON inside JSON)
/// never reaches the policy: `to_number` would compute ten to the power it
/// names inside one instruction.
#[test]
fn strings_spelling_the_big_number_marker_are_refused() {
    let e = engine_of("package warden.authz\nimport rego.v1\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\ndecision := {\"allow\": true, \"reason\": \"ok\"} if to_number(input.a) > 1\n");
    let run = |a: &str| {
        let started = std::time::Instant::now();
        let d = e.evaluate_value(obj(vec![("a", Value::from(a))]));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{a}");
        d
    };
    assert!(run("5").allow);
    // A backslash that escapes nothing is no marker.
    assert_ne!(&*run(r"C:\Users\x").reason, "policy_arguments_unreadable");
    for a in [
        r#"{"$serde_json::private::Number":"1e9999999"}"#,
        r#"{"$serde_json::\u0070rivate::Number":"1e9999999"}"#,
        r#""{\"$serde_json::\\u0070rivate::Number\":\"1e9999999\"}""#,
        r#"[1, {"\u0024serde_json::priv\u0061te::Number": "1e9999999"}]"#,
        // JSON cut short after the marker: regorus builds the number first.
        r#"{"$serde_json::priv\u0061te::Number":"1e9999999""#,
        r#"{"$serde_json::priv\u0061te::Number":"1e9999999"} trailing"#,
    ] {
        let d = run(a);
        assert!(
            !d.allow && &*d.reason == "policy_arguments_unreadable",
            "{a}: {d:?}"
        );
    }
}

/// A policy the VM cannot compile (`with`) runs on the interpreter, which
/// counts no instructions: the evaluation's time limit still ends it.
#[test]
fn an_interpreted_policy_is_cut_off_in_time() {
    let e = engine_of("package warden.authz\nimport rego.v1\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\nn := count([1 | some a in input.l; some b in input.l; some c in input.l])\ndecision := {\"allow\": true, \"reason\": \"ok\"} if { n with input.z as 1 > 0 }\n");
    assert!(!e.compiled_to_vm(), "`with` runs on the interpreter");
    let l = Value::from((0..1000).map(Value::from).collect::<Vec<_>>());
    let started = std::time::Instant::now();
    let d = e.evaluate_value(obj(vec![("l", l)]));
    assert!(!d.allow, "{d:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A builtin that panics on what a request says (regorus slices a
/// duration's unit inside a multi-byte character) is a denial, and the
/// thread's next evaluation runs normally.
#[test]
fn a_panicking_builtin_is_a_denial() {
    let e = engine_of("package warden.authz\nimport rego.v1\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\ndecision := {\"allow\": true, \"reason\": \"ok\"} if time.parse_duration_ns(input.d) > 0\n");
    let d = e.evaluate_value(obj(vec![("d", Value::from("1µ"))]));
    assert!(!d.allow, "{d:?}");
    assert!(e.evaluate_value(obj(vec![("d", Value::from("5s"))])).allow);
}
