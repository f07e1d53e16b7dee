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
        ALL_PRINCIPAL.len() + ALL_SERVER.len() + ALL_REQUEST.len() + ALL_CONTEXT.len() + 2,
        "the whole input, `flow` and `anomaly` included"
    );
    assert_eq!(plan("x := input.flow.session.rank"), vec![Field::Flow]);
    assert_eq!(
        plan("x := input.anomaly.signals[_].kind"),
        vec![Field::Anomaly]
    );
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

/// Compiles `modules` (path, text) deciding `data.warden.authz.decision`
/// with `data`: the error's message, or `None` when it compiles.
fn compile_error(modules: &[(&str, &str)], data: serde_json::Value) -> Option<String> {
    let modules: std::collections::BTreeMap<String, String> = modules
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    super::PolicyEngine::compile(&modules, &data, "data.warden.authz.decision", "UTC", 0)
        .err()
        .map(|e| format!("{}: {}", e.file, e.message))
}

/// `body` in package `warden.authz` beside a default decision (its
/// leading `import` lines first).
fn module_of(body: &str) -> String {
    let (imports, rest): (Vec<&str>, Vec<&str>) =
        body.lines().partition(|l| l.starts_with("import "));
    format!(
        "package warden.authz\nimport rego.v1\n{}\ndefault decision := {{\"allow\": false, \"reason\": \"no\"}}\n{}\n",
        imports.join("\n"),
        rest.join("\n")
    )
}

/// A reference that resolves to nothing (a function no module defines and
/// no builtin is, a rule no package of the policy's declares) is refused
/// when the bundle is built, naming it, wherever it stands: a rule the
/// entrypoint reaches, one it does not, a function's body, a comprehension,
/// an `else`, a `with`, a `not`.
#[test]
fn references_that_resolve_to_nothing_are_refused_at_build() {
    let lib = (
        "lib.rego",
        "package lib\nimport rego.v1\nok(x) := x\nflag := true\n",
    );
    for (body, name) in [
        ("decision if { not_defined_anywhere(input.request.method) }", "not_defined_anywhere"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if startswth(input.request.method, \"tools\")", "startswth"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if strings.lowr(input.request.tool) == \"x\"", "strings.lowr"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if count2(input.request.arguments) > 0", "count2"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.warden.authz.helper(input.request.tool)", "data.warden.authz.helper"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.lib.nope(input.request.tool)", "data.lib.nope"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.warden.authz.alow\nallow := true", "data.warden.authz.alow"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.lib.flags", "data.lib.flags"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if data.libb.flag", "data.libb.flag"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if not data.warden.authz.denied", "data.warden.authz.denied"),
        // Not reached from the entrypoint: still a rule that cannot run.
        ("unused if { undefined_fn(1) }", "undefined_fn"),
        ("f(x) := y if { y := missing_helper(x) }", "missing_helper"),
        ("s := {x | some x in input.l; is_gud(x)}", "is_gud"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if { false } else := {\"allow\": false, \"reason\": \"x\"} if { nothing_here(1) }", "nothing_here"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if { count(input.l) > 1 with input.l as unknown_fn2(1) }", "unknown_fn2"),
        ("decision := {\"allow\": true, \"reason\": \"ok\"} if { not nothing_there(input.x) }", "nothing_there"),
        // Through an import alias.
        ("import data.lib\ndecision := {\"allow\": true, \"reason\": \"ok\"} if lib.okk(1)", "lib.okk"),
        ("import data.lib as l\ndecision := {\"allow\": true, \"reason\": \"ok\"} if l.flagg", "l.flagg"),
    ] {
        let text = module_of(body);
        let e = compile_error(&[("authz.rego", &text), lib], serde_json::json!({}))
            .unwrap_or_else(|| panic!("compiled: {body}"));
        assert!(e.contains(name), "{body}: {e}");
        assert!(e.starts_with("authz.rego"), "{body}: names the file: {e}");
    }
}

/// What does resolve compiles: builtins (dotted, `print`), the package's
/// own functions and rules (bare, through `data.`, from another module of
/// the package), another package's through `data.` or an import alias,
/// default functions, rule heads that are references, the data document
/// below a package, and a name a `with` replaces.
#[test]
fn references_that_resolve_compile() {
    let lib = (
        "lib.rego",
        "package lib\nimport rego.v1\nok(x) := x\nflag := true\ndefault g(_) := 1\nnested.deep.value := 3\n",
    );
    let more = (
        "more.rego",
        "package warden.authz\nimport rego.v1\nhelper(x) := x\nsome_rule := 1\n",
    );
    for body in [
        "decision := {\"allow\": true, \"reason\": \"ok\"} if startswith(input.request.method, \"tools\")",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if strings.replace_n({\"a\": \"b\"}, input.x) == \"b\"",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { print(input.x); regex.match(\"a\", input.x) }",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { helper(1) == 1; data.warden.authz.helper(1) == 1; some_rule == 1 }",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { data.lib.ok(1) == 1; data.lib.flag; data.lib.g(2) == 1 }",
        "import data.lib\ndecision := {\"allow\": true, \"reason\": \"ok\"} if { lib.ok(1) == 1; lib.flag; lib.nested.deep.value == 3 }",
        "import data.lib as l\ndecision := {\"allow\": true, \"reason\": \"ok\"} if { l.ok(1) == 1; l.nested.deep == {\"value\": 3}; data.lib.nested.deep.value.x }",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { data.warden.authz.settings.on; data.warden.blocked[_] == input.x; data.other.thing }",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { data.warden.authz[input.name]; data.lib[x] }",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { helper(1) == 2 with helper as mine }\nmine(x) := 2",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { data.lib; data.warden.authz; data.warden }",
        // A member a held document leaves out is an optional setting
        // (undefined, as OPA reads it), not a misspelled rule.
        "decision := {\"allow\": true, \"reason\": \"ok\"} if { not data.warden.authz.settings.off; not data.other.missing }",
    ] {
        let text = module_of(body);
        let data = serde_json::json!({"warden": {"blocked": ["x"], "authz": {"settings": {"on": true}}}, "other": {"thing": true}});
        assert_eq!(
            compile_error(&[("authz.rego", &text), lib, more], data),
            None,
            "{body}"
        );
    }
}

/// Whitespace, comments and layout never decide whether a module declares
/// the entrypoint's package or rule: regorus reads them, and so does the
/// check (a tab before `decision :=` used to read as "no module declares
/// package").
#[test]
fn the_entrypoint_is_found_as_regorus_reads_the_modules() {
    for text in [
        "package warden.authz\nimport rego.v1\n\tdecision := {\"allow\": true, \"reason\": \"ok\"}\n",
        "package warden.authz\nimport rego.v1\n  default decision := {\"allow\": false, \"reason\": \"no\"}\n",
        "# the policy\n   package warden.authz\nimport rego.v1\n\n\t\tdecision := {\"allow\": true, \"reason\": \"ok\"} if {\n\ttrue\n}\n",
        "package warden.authz # comment\nimport rego.v1\n\tdecision contains x if { x := 1 }\n",
        "package warden.authz\nimport rego.v1\ndecision\t:=\t{\"allow\": true, \"reason\": \"ok\"}\n",
        "package\twarden.authz\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n",
        "package warden[\"authz\"]\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n",
        "package warden\nimport rego.v1\nauthz.decision := {\"allow\": true, \"reason\": \"ok\"}\n",
    ] {
        assert_eq!(
            compile_error(&[("authz.rego", text)], serde_json::json!({})),
            None,
            "{text}"
        );
    }
    // And a module that really does not declare it is still told so, with
    // the nearest rule; a commented-out package is none.
    let e = compile_error(
        &[(
            "authz.rego",
            "package warden.authz\nimport rego.v1\n\tdecisions := 1\n",
        )],
        serde_json::json!({}),
    )
    .expect("refused");
    assert!(
        e.contains("defines no rule `decision`; did you mean `decisions`?"),
        "{e}"
    );
    let e = compile_error(
        &[(
            "authz.rego",
            "# package warden.authz\npackage other\nimport rego.v1\ndecision := 1\n",
        )],
        serde_json::json!({}),
    )
    .expect("refused");
    assert!(
        e.contains("no module declares package `warden.authz`"),
        "{e}"
    );
}

/// `input.principal.grants` is what the policy judges and part of the
/// cached decision's key: a call allowed by a grant is denied once the
/// grant is gone (expired grants never reach the input), however many
/// decisions the cache held; a policy that never reads grants keeps one
/// cached decision whatever they are.
#[test]
fn grants_decide_and_key_the_cached_decision() {
    use crate::engines::grants::Grant;
    let modules = std::collections::BTreeMap::from([(
        "authz.rego".to_owned(),
        module_of(
            "decision := {\"allow\": true, \"reason\": \"granted\"} if {\n  some g in input.principal.grants\n  g.kind == \"tool\"\n  g.name == input.request.tool\n}",
        ),
    )]);
    let e = super::PolicyEngine::compile(
        &modules,
        &serde_json::json!({}),
        "data.warden.authz.decision",
        "UTC",
        1_000,
    )
    .expect("rego");
    assert!(e.cacheable());
    let p = crate::guards::tenant_fixture::principal("acme", "alice", &[]);
    let grant = Grant {
        id: "ap_1".into(),
        tenant: "acme".into(),
        principal: "alice".into(),
        kind: "tool".into(),
        name: "deploy".into(),
        server: None,
        expires_at: 4_000_000_000,
    };
    let input = |grants: &'static [Grant]| super::PolicyInput {
        principal: &p,
        grants,
        server: "ops",
        group: "g",
        via: None,
        method: "tools/call",
        tool: Some("deploy"),
        prompt: None,
        resource_uri: None,
        arguments: Some("{}"),
        risk: None,
        listing: false,
        now: std::time::SystemTime::now(),
        source_ip: None,
        justification: None,
        session_id: None,
        flow: None,
        anomaly: None,
    };
    let granted: &'static [Grant] = Box::leak(Box::new([grant.clone()]));
    let other: &'static [Grant] = Box::leak(Box::new([Grant {
        name: "read".into(),
        ..grant
    }]));
    for _ in 0..3 {
        assert!(e.decide(&input(granted)).allow);
        assert!(!e.decide(&input(&[])).allow);
        assert!(!e.decide(&input(other)).allow);
    }
    let (hits, misses) = e.cache_stats();
    assert_eq!((hits, misses), (6, 3));
    // A policy that reads no grant keys no grant.
    let blind = std::collections::BTreeMap::from([(
        "authz.rego".to_owned(),
        module_of(
            "decision := {\"allow\": true, \"reason\": \"ok\"} if input.request.tool == \"deploy\"",
        ),
    )]);
    let b = super::PolicyEngine::compile(
        &blind,
        &serde_json::json!({}),
        "data.warden.authz.decision",
        "UTC",
        1_000,
    )
    .expect("rego");
    assert!(b.decide(&input(granted)).allow);
    assert!(b.decide(&input(&[])).allow);
    assert_eq!(b.cache_stats(), (1, 1));
}

/// However a policy reaches the grants (the principal taken whole, the
/// input taken whole, `object.get`, an import, a walk), a decision made
/// with a grant is never the cached answer once the grant is gone.
#[test]
fn grants_reached_any_way_key_the_cached_decision() {
    use crate::engines::grants::Grant;
    let grant = Grant {
        id: "ap_1".into(),
        tenant: "acme".into(),
        principal: "alice".into(),
        kind: "tool".into(),
        name: "deploy".into(),
        server: None,
        expires_at: 4_000_000_000,
    };
    let granted: &'static [Grant] = Box::leak(Box::new([grant]));
    let p = crate::guards::tenant_fixture::principal("acme", "alice", &[]);
    for body in [
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  p := input.principal\n  some g in p.grants\n  g.name == \"deploy\"\n}",
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  i := input\n  count(i.principal.grants) > 0\n}",
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  count(object.get(input.principal, \"grants\", [])) > 0\n}",
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  some g in input.principal[\"grants\"]\n  g.kind == \"tool\"\n}",
        "import input.principal as who\ndecision := {\"allow\": true, \"reason\": \"g\"} if {\n  count(who.grants) > 0\n}",
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  some path, v\n  walk(input, [path, v])\n  v == \"ap_1\"\n}",
        "decision := {\"allow\": true, \"reason\": \"g\"} if {\n  k := \"grants\"\n  count(input.principal[k]) > 0\n}",
    ] {
        let modules =
            std::collections::BTreeMap::from([("authz.rego".to_owned(), module_of(body))]);
        let e = super::PolicyEngine::compile(
            &modules,
            &serde_json::json!({}),
            "data.warden.authz.decision",
            "UTC",
            1_000,
        )
        .unwrap_or_else(|err| panic!("{body}: {err:?}"));
        let input = |grants: &'static [Grant]| super::PolicyInput {
            principal: &p,
            grants,
            server: "ops",
            group: "g",
            via: None,
            method: "tools/call",
            tool: Some("deploy"),
            prompt: None,
            resource_uri: None,
            arguments: Some("{}"),
            risk: None,
            listing: false,
            now: std::time::SystemTime::now(),
            source_ip: None,
            justification: None,
            session_id: None,
            flow: None,
            anomaly: None,
        };
        for _ in 0..2 {
            assert!(e.decide(&input(granted)).allow, "{body}");
            assert!(!e.decide(&input(&[])).allow, "{body}");
        }
    }
}

/// A policy that reads `input.anomaly` (by path, whole, or through the
/// input taken whole) is cached per anomaly value: an allow cached for a
/// normal call never answers an anomalous one, and the other way round.
#[test]
fn anomaly_keys_the_cached_decision() {
    use crate::engines::anomaly::{AnomalyNote, Facts, Kind, Signal};
    let p = crate::guards::tenant_fixture::principal("acme", "agent", &[]);
    let note = |learning: bool, signals: Vec<Signal>| AnomalyNote {
        learning,
        signals,
        facts: Facts::default(),
    };
    let first = |detail: &str| Signal {
        kind: Kind::FirstTool,
        strength: 1.0,
        detail: detail.into(),
    };
    let normal = note(false, vec![]);
    let new_tool = note(false, vec![first("ops/purge")]);
    let rate = |r: f64| {
        note(
            false,
            vec![Signal {
                kind: Kind::Rate,
                strength: r,
                detail: "x".into(),
            }],
        )
    };
    let (rate6, rate2) = (rate(6.0), rate(2.0));
    for body in [
        "new if {\n  some s in input.anomaly.signals\n  s.kind == \"first_tool\"\n}\nfast if {\n  some s in input.anomaly.signals\n  s.strength > 5\n}\ndecision := {\"allow\": true, \"reason\": \"ok\"} if {\n  not new\n  not fast\n}",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if {\n  a := input.anomaly\n  count([s | some s in a.signals; s.kind == \"first_tool\"]) == 0\n  count([s | some s in a.signals; s.strength > 5]) == 0\n}",
        "decision := {\"allow\": true, \"reason\": \"ok\"} if {\n  i := input\n  count([s | some s in i.anomaly.signals; s.kind == \"first_tool\"]) == 0\n  count([s | some s in i.anomaly.signals; s.strength > 5]) == 0\n}",
    ] {
        let modules =
            std::collections::BTreeMap::from([("authz.rego".to_owned(), module_of(body))]);
        let e = super::PolicyEngine::compile(
            &modules,
            &serde_json::json!({}),
            "data.warden.authz.decision",
            "UTC",
            1_000,
        )
        .expect("rego");
        let input = |a: Option<&'static AnomalyNote>| super::PolicyInput {
            principal: &p,
            grants: &[],
            server: "ops",
            group: "g",
            via: None,
            method: "tools/call",
            tool: Some("purge"),
            prompt: None,
            resource_uri: None,
            arguments: Some("{}"),
            risk: None,
            listing: false,
            now: std::time::SystemTime::now(),
            source_ip: None,
            justification: None,
            session_id: None,
            flow: None,
            anomaly: a,
        };
        let leak = |n: &AnomalyNote| -> &'static AnomalyNote { Box::leak(Box::new(n.clone())) };
        let (normal, new_tool, rate6, rate2) =
            (leak(&normal), leak(&new_tool), leak(&rate6), leak(&rate2));
        for _ in 0..3 {
            let d = e.decide(&input(Some(normal)));
            assert!(d.allow, "{body} {d:?}");
            assert!(!e.decide(&input(Some(new_tool))).allow, "{body}");
            assert!(!e.decide(&input(Some(rate6))).allow, "{body}");
            assert!(e.decide(&input(Some(rate2))).allow, "{body}");
            assert!(e.decide(&input(None)).allow, "{body}");
        }
        let (hits, misses) = e.cache_stats();
        assert_eq!((hits, misses), (10, 5), "{body}");
    }
}
