//! Policy decisions on the example bundle's Rego (config/examples/sidecar):
//! a cached decision, an uncached evaluation of the compiled policy, and the
//! naive baseline of interpreting the modules afresh for every call.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};

/// As in the gateway binary.
#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;
use warden_config::access::{PrincipalKind, Risk};
use warden_config::Bundle;
use warden_filters::engines::identity::{AuthMethod, Principal};
use warden_filters::engines::policy::{input_value, PolicyInput};
use warden_filters::Snapshot;

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/sidecar");
    let bundle = Bundle::load(&dir).expect("example bundle");
    let snap = Snapshot::build(&bundle).expect("snapshot");
    let engine = snap.policy.clone().expect("policy");
    let principal = Principal {
        id: "agent-dev".into(),
        tenant: "acme".into(),
        roles: vec!["developer".into()],
        kind: PrincipalKind::Agent,
        auth: AuthMethod::ApiKey,
        attributes: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        scopes: Vec::new(),
        canonical: Default::default(),
    };
    // Tuesday 2026-11-17 10:00 Europe/Berlin.
    let now = UNIX_EPOCH + Duration::from_secs(1_795_424_400);
    let input = PolicyInput {
        grants: &[],
        principal: &principal,
        server: "mock",
        group: "tools",
        via: None,
        method: "tools/call",
        tool: Some("deploy"),
        prompt: None,
        resource_uri: None,
        arguments: Some(r#"{"service":"web","region":"eu","replicas":3}"#),
        risk: Some(Risk::High),
        listing: false,
        now,
        source_ip: Some("10.0.0.7".parse().expect("ip")),
        justification: None,
        session_id: Some("6f1c2a"),
        flow: None,
        anomaly: None,
    };
    assert!(engine.decide(&input).allow, "the bench input is allowed");
    assert_eq!(engine.evaluate(&input), engine.decide(&input));

    let mut g = c.benchmark_group("policy");
    g.bench_function("build_input_document", |b| {
        b.iter(|| input_value(black_box(&input), engine.clock()))
    });
    g.bench_function("cached_decision", |b| {
        b.iter(|| engine.decide(black_box(&input)))
    });
    g.bench_function("uncached_decision", |b| {
        b.iter(|| engine.evaluate(black_box(&input)))
    });
    {
        use regorus::languages::rego::compiler::Compiler;
        use regorus::rvm::vm::RegoVM;
        let mods: Vec<regorus::PolicyModule> = bundle
            .policies
            .iter()
            .filter(|(p, _)| !p.ends_with("_test.rego"))
            .map(|(p, t)| regorus::PolicyModule {
                id: p.as_str().into(),
                content: t.as_str().into(),
            })
            .collect();
        let cp = regorus::compile_policy_with_entrypoint(
            regorus::Value::from(bundle.data.clone()),
            &mods,
            "data.warden.authz.decision".into(),
        )
        .expect("compile");
        let program =
            Compiler::compile_from_policy(&cp, &["data.warden.authz.decision"]).expect("rvm");
        let mut vm = RegoVM::new();
        vm.load_program(program.clone());
        vm.set_data(regorus::Value::from(bundle.data.clone()))
            .expect("data");
        let iv = input_value(&input, engine.clock());
        vm.set_input(iv.clone());
        assert!(vm.execute().is_ok());
        g.bench_function("vm_only_on_prebuilt_input", |b| {
            b.iter(|| {
                vm.set_input(black_box(iv.clone()));
                black_box(vm.execute().expect("exec"))
            })
        });
    }
    // Naive baseline: no compile step, no cache — a fresh interpreter per call.
    let modules = warden_benches::rego_modules(&bundle);
    let data = regorus::Value::from(bundle.data.clone());
    g.sample_size(20);
    g.bench_function("naive_interpret_per_call", |b| {
        b.iter(|| {
            let mut e = regorus::Engine::new();
            e.add_data(data.clone()).expect("data");
            for (p, t) in &modules {
                e.add_policy(p.clone(), t.clone()).expect("policy");
            }
            e.set_input(input_value(&input, engine.clock()));
            black_box(
                e.eval_rule("data.warden.authz.decision".into())
                    .expect("eval"),
            )
        })
    });
    g.finish();
    flow_keyed(c, &input);
}

/// A policy that reads `input.flow` (information flow): its decisions are
/// cached per flow state, so the key holds the whole `flow` value. What
/// that costs a cached decision, and an evaluation.
fn flow_keyed(c: &mut Criterion, base: &PolicyInput<'_>) {
    use std::sync::Arc;
    use warden_filters::engines::flow::{CallLabels, FlowNote, FlowState, Source};
    use warden_filters::engines::policy::PolicyEngine;
    let mut m = BTreeMap::new();
    m.insert(
        "flow.rego".to_owned(),
        "package t\nimport rego.v1\ndecision := {\"allow\": false, \"reason\": \"flow_blocked\"} if {\n\t\"sink\" in input.flow.call.roles\n\tinput.flow.session.untrusted\n\tinput.flow.session.rank > input.flow.call.rank\n} else := {\"allow\": true, \"reason\": \"ok\"}\n"
            .to_owned(),
    );
    let engine =
        PolicyEngine::compile(&m, &serde_json::json!({}), "data.t.decision", "UTC", 10_000)
            .unwrap_or_else(|e| panic!("{}", e.message));
    let names: Arc<[String]> = ["public", "internal", "confidential", "restricted"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>()
        .into();
    let note = FlowNote {
        state: FlowState {
            level: 3,
            untrusted: true,
            sources: (0..3)
                .map(|i| Source {
                    id: format!("fl_00000000000000{i:02}"),
                    what: format!("hr/get_employee_{i}"),
                    level: 3,
                    untrusted: i == 2,
                })
                .collect(),
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
        clearance: 3,
        names,
    };
    let mut with_flow = *base;
    with_flow.flow = Some(&note);
    assert!(!engine.decide(&with_flow).allow);
    let mut g = c.benchmark_group("policy_flow");
    g.bench_function("cached_decision_no_flow", |b| {
        b.iter(|| engine.decide(black_box(base)))
    });
    g.bench_function("cached_decision_flow_3_sources", |b| {
        b.iter(|| engine.decide(black_box(&with_flow)))
    });
    g.bench_function("uncached_decision_flow_3_sources", |b| {
        b.iter(|| engine.evaluate(black_box(&with_flow)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
