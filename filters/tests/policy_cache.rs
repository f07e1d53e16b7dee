//! The decision cache never changes a decision: for random policies (built
//! from fragments that read the input in every way Rego allows — static paths,
//! dynamic indexes, aliases, imports, bracket literals, whole subtrees) and
//! random inputs from small domains (so that keys repeat and the cache hits),
//! the cached decision always equals a fresh evaluation, and the VM the data
//! plane uses agrees with regorus' interpreter.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use warden_config::access::{PrincipalKind, Risk};
use warden_filters::engines::identity::{AuthMethod, Principal};
use warden_filters::engines::policy::{input_value, PolicyEngine, PolicyInput};

/// Conditions over the input; each is one Rego body line.
const FRAGMENTS: &[&str] = &[
    r#"input.principal.id == "p1""#,
    r#"some r in input.principal.roles; r == "admin""#,
    r#"input.request.arguments.region == input.principal.attributes.region"#,
    r#"some k; input.request.arguments[k] == "secret""#,
    r#"req := input.request; req.tool == "t1""#,
    r#"ctx.hour < 12"#,
    r#"input["request"]["risk"] == "HIGH""#,
    r#"input.context.weekday == "Monday""#,
    r#"endswith(input.context.time, "5Z")"#,
    r#"count(input.context.justification) > 10"#,
    r#"object.get(input.principal.attributes, "team", "none") == "red""#,
    r#"count(input.request.arguments) > 1"#,
    r#"input.context.source_ip == "10.1.2.3""#,
    r#"input.request.listing"#,
    r#"input.server.group == "g1""#,
    r#"p := input.principal; p.tenant == "t2""#,
    r#"input.context.session_id == "s1""#,
    r#"is_null(input.request.tool)"#,
    r#"input.request.prompt == "pr""#,
    r#"x := input; x.request.method == "tools/call""#,
];

fn policy(conds: &[(usize, bool)], joiner_or: bool) -> String {
    // Each fragment once: two `req := …` in one body would not compile.
    let mut seen = std::collections::BTreeSet::new();
    let conds: Vec<(usize, bool)> = conds
        .iter()
        .copied()
        .filter(|(i, _)| seen.insert(*i))
        .collect();
    let conds = conds.as_slice();
    let line = |(i, neg): &(usize, bool)| {
        let f = FRAGMENTS[*i];
        if *neg {
            // Negate through a helper rule so `some` stays scoped.
            format!("not h{i}")
        } else {
            f.to_owned()
        }
    };
    let mut out = String::from("package t\nimport rego.v1\nimport input.context as ctx\n\n");
    for (i, _) in conds {
        out.push_str(&format!("h{i} if {{ {} }}\n", FRAGMENTS[*i]));
    }
    if joiner_or {
        for c in conds {
            out.push_str(&format!("ok if {{ {} }}\n", line(c)));
        }
    } else {
        let body: Vec<String> = conds.iter().map(line).collect();
        out.push_str(&format!("ok if {{\n  {}\n}}\n", body.join("\n  ")));
    }
    out.push_str("decision := {\"allow\": true, \"reason\": \"ok\"} if ok\nelse := {\"allow\": false, \"reason\": \"no\"}\n");
    out
}

#[derive(Debug, Clone)]
struct Case {
    principal: Principal,
    server: &'static str,
    group: &'static str,
    method: &'static str,
    tool: Option<&'static str>,
    prompt: Option<&'static str>,
    args: Option<String>,
    risk: Option<Risk>,
    listing: bool,
    now: SystemTime,
    ip: Option<IpAddr>,
    justification: Option<&'static str>,
    session: Option<&'static str>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let principal = (
        prop::sample::select(vec!["p1", "p2", "p3"]),
        prop::sample::select(vec!["t1", "t2"]),
        prop::sample::subsequence(vec!["admin", "dev"], 0..=2),
        prop::option::of(prop::sample::select(vec!["eu", "us"])),
        prop::option::of(prop::sample::select(vec!["red", "blue"])),
    )
        .prop_map(|(id, tenant, roles, region, team)| {
            let mut attributes = BTreeMap::new();
            if let Some(r) = region {
                attributes.insert("region".to_owned(), r.to_owned());
            }
            if let Some(t) = team {
                attributes.insert("team".to_owned(), t.to_owned());
            }
            Principal {
                id: id.into(),
                tenant: tenant.into(),
                roles: roles.into_iter().map(str::to_owned).collect(),
                kind: PrincipalKind::Agent,
                auth: AuthMethod::ApiKey,
                attributes,
                scopes: Vec::new(),
                canonical: Default::default(),
            }
        });
    let args = prop::option::of(prop::collection::btree_map(
        prop::sample::select(vec!["region", "text", "k"]),
        prop::sample::select(vec!["eu", "us", "secret", "x"]),
        0..3,
    ))
    .prop_map(|m| m.map(|m| serde_json::to_string(&m).unwrap_or_default()));
    (
        principal,
        prop::sample::select(vec![("s1", "g1"), ("s2", "g2")]),
        prop::sample::select(vec!["tools/call", "prompts/get", "tools/list"]),
        prop::option::of(prop::sample::select(vec!["t1", "t2"])),
        prop::option::of(Just("pr")),
        args,
        prop::option::of(prop::sample::select(vec![Risk::Low, Risk::High])),
        any::<bool>(),
        // Seconds within a few hours across a day boundary: hour, weekday and time vary.
        prop::sample::select(vec![0u64, 5, 15, 3600 * 11, 3600 * 13, 3600 * 24 + 5]),
        prop::option::of(prop::sample::select(vec!["10.1.2.3", "192.168.0.1"])),
        prop::option::of(prop::sample::select(vec![
            "short",
            "a long enough justification",
        ])),
        prop::option::of(Just("s1")),
    )
        .prop_map(
            |(
                principal,
                (server, group),
                method,
                tool,
                prompt,
                args,
                risk,
                listing,
                secs,
                ip,
                justification,
                session,
            )| {
                // 2026-11-16 is a Monday.
                let base = 1_795_305_600u64;
                Case {
                    principal,
                    server,
                    group,
                    method,
                    tool,
                    prompt,
                    args,
                    risk,
                    listing,
                    now: UNIX_EPOCH + Duration::from_secs(base + secs),
                    ip: ip.and_then(|s| s.parse().ok()),
                    justification,
                    session,
                }
            },
        )
}

fn input(c: &Case) -> PolicyInput<'_> {
    PolicyInput {
        grants: &[],
        principal: &c.principal,
        server: c.server,
        group: c.group,
        via: None,
        method: c.method,
        tool: c.tool,
        prompt: c.prompt,
        resource_uri: None,
        arguments: c.args.as_deref(),
        risk: c.risk,
        listing: c.listing,
        now: c.now,
        source_ip: c.ip,
        justification: c.justification,
        session_id: c.session,
        flow: None,
        anomaly: None,
    }
}

fn compile(src: &str) -> PolicyEngine {
    let mut m = BTreeMap::new();
    m.insert("p.rego".to_owned(), src.to_owned());
    PolicyEngine::compile(&m, &serde_json::json!({}), "data.t.decision", "UTC", 10_000)
        .unwrap_or_else(|e| panic!("{}\n{src}", e.message))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn cached_decision_equals_fresh_evaluation(
        conds in prop::collection::vec((0..FRAGMENTS.len(), any::<bool>()), 1..4),
        joiner_or in any::<bool>(),
        cases in prop::collection::vec(arb_case(), 60),
    ) {
        let src = policy(&conds, joiner_or);
        let engine = compile(&src);
        prop_assert!(engine.compiled_to_vm(), "policy not compiled to the VM:\n{}", src);
        for c in &cases {
            let cached = engine.decide(&input(c));
            let fresh = engine.evaluate(&input(c));
            prop_assert_eq!(&cached, &fresh, "policy:\n{}\ninput: {:?}", src, c);
            // The VM the data plane runs agrees with regorus' interpreter.
            let interpreted = engine.evaluate_interpreted(input_value(&input(c), engine.clock()));
            // (The interpreter aborts on a builtin type error where the VM,
            // like OPA, treats that expression as undefined: nothing to compare.)
            if &*interpreted.reason != "policy_error" {
                prop_assert_eq!(&fresh, &interpreted, "VM vs interpreter, policy:\n{}\ninput: {:?}", src, c);
            }
        }
    }
}

#[test]
fn repeated_inputs_hit_the_cache() {
    let engine = compile(&policy(&[(2, false), (6, false)], false));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let case = arb_case().new_tree(&mut runner).expect("case").current();
    for _ in 0..10 {
        engine.decide(&input(&case));
    }
    assert_eq!(engine.cache_stats(), (9, 1));
}

#[test]
fn nondeterministic_policies_are_never_cached() {
    let engine = compile(
        "package t\nimport rego.v1\ndecision := {\"allow\": time.now_ns() > 0, \"reason\": \"clock\"}\n",
    );
    assert!(!engine.cacheable());
}

/// A policy that reads `input.flow` is cached on it: the same call with
/// another flow state is decided again, never answered from the cache.
#[test]
fn the_flow_state_is_part_of_the_cache_key() {
    use std::sync::Arc;
    use warden_filters::engines::flow::{CallLabels, FlowNote, FlowState, Source};
    let engine = compile(
        "package t\nimport rego.v1\ndecision := {\"allow\": false, \"reason\": \"exfiltration\"} if {\n\t\"sink\" in input.flow.call.roles\n\tinput.flow.session.untrusted\n\tinput.flow.session.rank > input.flow.call.rank\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
    );
    assert!(engine.cacheable());
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let case = arb_case().new_tree(&mut runner).expect("case").current();
    let names: Arc<[String]> = ["public", "internal", "confidential", "restricted"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>()
        .into();
    let note = |level: u8, untrusted: bool| FlowNote {
        state: FlowState {
            level,
            untrusted,
            sources: vec![Source {
                id: "fl_1".into(),
                what: "hr/get".into(),
                level,
                untrusted,
            }],
        },
        call: CallLabels {
            what: "web/post".into(),
            level: 0,
            roles: warden_config::flows::Roles {
                sink: true,
                ..Default::default()
            },
        },
        unreadable: false,
        clearance: 1,
        names: names.clone(),
    };
    let clean = note(0, false);
    let tainted = note(3, true);
    let with = |n: &FlowNote| {
        let mut i = input(&case);
        i.flow = Some(n);
        engine.decide(&i)
    };
    for _ in 0..3 {
        let d = with(&clean);
        assert!(d.allow, "{d:?}");
        assert!(!with(&tainted).allow);
    }
    assert_eq!(engine.cache_stats(), (4, 2), "two keys, each hit twice");
}

/// A tenant's policy composed with the org's: the composed decision, with
/// both engines' caches, always equals the composition of fresh
/// evaluations (each tenant engine keys its cache on what its own modules
/// read), and the tenant's rule applies only in its scope.
mod tenants {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use warden_filters::guards::tenants::{compose, Scope, TenantPolicies};
    use warden_filters::Exchange;

    fn tenant_engine(src: &str) -> PolicyEngine {
        let src = src.replacen("package t\n", "package warden.tenants.t1\n", 1);
        let mut m = BTreeMap::new();
        m.insert("tenants/t1/p.rego".to_owned(), src.clone());
        PolicyEngine::compile(
            &m,
            &serde_json::json!({}),
            "data.warden.tenants.t1.decision",
            "UTC",
            10_000,
        )
        .unwrap_or_else(|e| panic!("{}\n{src}", e.message))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn composed_cached_decision_equals_fresh_composition(
            org_conds in prop::collection::vec((0..FRAGMENTS.len(), any::<bool>()), 1..3),
            t_conds in prop::collection::vec((0..FRAGMENTS.len(), any::<bool>()), 1..3),
            cases in prop::collection::vec(arb_case(), 40),
        ) {
            let org = compile(&policy(&org_conds, false));
            let tenant = Arc::new(tenant_engine(&policy(&t_conds, true)));
            // s2 belongs to tenant t1; principals of t1 are in its scope too.
            let scope = Arc::new(Scope::new(
                HashMap::from([("s2".to_owned(), "t1".to_owned())]),
                vec![("t1".to_owned(), "t1@1".to_owned())],
            ));
            let tp = TenantPolicies { scope: scope.clone(), engines: vec![("t1".to_owned(), tenant.clone())] };
            for c in &cases {
                let i = input(c);
                let ex = Exchange::new(&c.principal, c.server);
                let cached = tp.compose(org.decide(&i), &i, &ex);
                let in_scope = c.principal.tenant == "t1" || c.server == "s2";
                let fresh_org = org.evaluate(&i);
                let fresh = if in_scope { compose(fresh_org.clone(), "t1", tenant.evaluate(&i)) } else { fresh_org.clone() };
                prop_assert_eq!(&cached, &fresh, "input: {:?}", c);
                // Narrowing only: never allowed where the org alone denies.
                prop_assert!(!cached.allow || fresh_org.allow);
            }
        }
    }
}
