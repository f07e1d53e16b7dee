//! The README's five-minute tour, run as written: every command of its
//! first `sh` block runs in bash against a gateway on the example bundle with
//! `warden-mock` behind it, and prints what each `# →` line under it says
//! (`…` stands for anything). Ports are the test's own (the README's :8080,
//! :9090 and :8931 are rewritten); `target/release/*` are this build's
//! binaries. The tour promises its output at any hour: no step may depend on
//! the clock.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use warden_tests::{bin, free_port, root, run_with_timeout, Gateway, Mock};

struct Step {
    command: String,
    expect: Vec<String>,
}

/// `(variable assignments, steps)` of the tour's first `sh` block.
fn tour(readme: &str) -> (Vec<String>, Vec<Step>) {
    let section = readme
        .split("\n## Five-minute tour")
        .nth(1)
        .expect("the README has a five-minute tour");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the tour has an sh block");
    let mut vars = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        if !pending.is_empty() {
            pending.push('\n');
            pending.push_str(line);
            if !line.ends_with('\\') {
                steps.push(Step {
                    command: std::mem::take(&mut pending),
                    expect: Vec::new(),
                });
            }
            continue;
        }
        let t = line.trim();
        if let Some(e) = t.strip_prefix("# →") {
            steps
                .last_mut()
                .expect("an expectation follows a command")
                .expect
                .push(e.trim().to_owned());
        } else if t.is_empty() || t.starts_with('#') {
            continue;
        } else if t
            .split_once('=')
            .is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase()))
        {
            vars.push(line.to_owned());
        } else if line.ends_with('\\') {
            pending = line.to_owned();
        } else {
            steps.push(Step {
                command: line.to_owned(),
                expect: Vec::new(),
            });
        }
    }
    (vars, steps)
}

fn pattern(expect: &str) -> regex::Regex {
    let parts: Vec<String> = expect.split('…').map(regex::escape).collect();
    regex::Regex::new(&parts.join(".*")).expect("pattern")
}

fn link(from: &Path, to: &Path) {
    if let Some(p) = from.parent() {
        std::fs::create_dir_all(p).expect("dir");
    }
    std::os::unix::fs::symlink(to, from).expect("symlink");
}

#[test]
fn the_readme_tour_prints_what_it_promises() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let (vars, steps) = tour(&readme);
    assert!(
        steps.len() >= 15,
        "the tour parsed into {} steps",
        steps.len()
    );
    assert!(vars.len() >= 4, "{vars:?}");

    let mock = Mock::start(&[]).expect("mock");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    link(&w.join("config"), &root().join("config"));
    link(&w.join("target/release/warden"), &bin("warden"));
    link(&w.join("target/release/warden-load"), &bin("warden-load"));
    std::fs::create_dir_all(w.join("target/demo")).expect("demo dir");
    // The example bundle, on the test's ports.
    let bundle = w.join("bundle");
    let example = root().join("config/examples/sidecar");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    copy_dir(&example, &bundle);
    let yaml = std::fs::read_to_string(bundle.join("warden.yaml"))
        .expect("yaml")
        .replace("127.0.0.1:8080", &addr.to_string())
        .replace("127.0.0.1:8931", &mock.addr.to_string());
    std::fs::write(bundle.join("warden.yaml"), yaml).expect("write");
    let audit = w.join("target/demo/audit.jsonl");
    // As `scripts/run-gateway.sh` runs it: the control agent serves the
    // example bundle (signed) and the console; the gateway takes its bundle
    // from the agent and ships its audit records there.
    let (private, public) = warden_tests::keygen(w, "demo");
    let agent = warden_tests::Agent::start_with(
        &bundle,
        &w.join("target/demo/agent"),
        Some(&private),
        &[
            "--admin-token".as_ref(),
            "demo-admin-token-0001".as_ref(),
            "--fleet-token".as_ref(),
            "demo-fleet-token-0001".as_ref(),
        ],
    )
    .expect("agent on the example bundle");
    let gw = Gateway::start_with(
        "unused",
        true,
        &[],
        &[
            "--agent",
            &agent.url,
            "--agent-token",
            "demo-fleet-token-0001",
            "--bundle-public-key",
            public.to_str().expect("utf8"),
            "--gateway-id",
            "demo-1",
            "--audit",
            audit.to_str().expect("utf8"),
        ],
        Some(addr),
    )
    .expect("gateway on the example bundle");
    let agent_port = agent.url.rsplit(':').next().unwrap_or("").to_owned();
    let ports = |s: &str| {
        s.replace(":8080", &format!(":{}", addr.port()))
            .replace(":9090", &format!(":{}", gw.admin.port()))
            .replace(":8931", &format!(":{}", mock.addr.port()))
            .replace(":7070", &format!(":{agent_port}"))
    };
    let prelude = vars.join("\n");
    let mut failures = Vec::new();
    for step in &steps {
        let script = format!("set -o pipefail\n{prelude}\n{}\n", ports(&step.command));
        let (ok, out, err) = run_with_timeout(
            Command::new("bash").arg("-c").arg(&script).current_dir(w),
            Duration::from_secs(120),
        )
        .expect("bash runs");
        if !ok {
            failures.push(format!("`{}` failed:\n{out}{err}", step.command));
            continue;
        }
        for e in &step.expect {
            if !pattern(&ports(e)).is_match(&out) {
                failures.push(format!(
                    "`{}` does not print `{e}`; it printed:\n{out}{err}",
                    step.command
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} tour steps differ from the README:\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
    drop(gw);
    drop(agent);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn the_tour_parser_reads_continuations_and_expectations() {
    let (vars, steps) = tour(
        "x\n## Five-minute tour\n\n```sh\nA='1'\n# c\ncurl a \\\n  -d b\n# → one\n# →  two …\nls\n```\n",
    );
    assert_eq!(vars, ["A='1'"]);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "curl a \\\n  -d b");
    assert_eq!(steps[0].expect, ["one", "two …"]);
    assert!(pattern("a … c").is_match("xx a bbb c"));
    assert!(!pattern("a.c").is_match("abc"));
}
