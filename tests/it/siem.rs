//! SIEM export: every audit record reaches a real rsyslog (RFC 5424 over TCP,
//! octet-counted), across a restart of the receiver, with the records that
//! may have been lost sent again and marked; the export resumes where it
//! stopped when the gateway restarts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden_tests::{free_port, mock_bundle, post_json, Gateway, Mock, Proc};

use super::call;

/// A real rsyslogd on a loopback port, writing every message it receives,
/// as received, one per line.
fn rsyslog(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{d}\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             action(type=\"omfile\" file=\"{d}/received.log\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n",
            d = dir.display()
        ),
    )
    .expect("conf");
    let bin = if Path::new("/usr/sbin/rsyslogd").exists() {
        "/usr/sbin/rsyslogd"
    } else {
        "rsyslogd"
    };
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd (Debian package rsyslog)");
    let proc = Proc {
        child,
        name: "rsyslogd".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rsyslogd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

/// The `seq` and whether it was marked resent, of each message received.
fn received(dir: &Path) -> Vec<(u64, bool)> {
    std::fs::read_to_string(dir.join("received.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let seq = l.split("seq=\"").nth(1)?.split('"').next()?.parse().ok()?;
            Some((seq, l.contains("resent=\"1\"")))
        })
        .collect()
}

/// Waits until every seq in `0..n` was received.
fn all_received(dir: &Path, n: u64) -> Vec<(u64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = received(dir);
        if (0..n).all(|s| got.iter().any(|(g, _)| *g == s)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "not every record reached rsyslog: {} of {n}: {:?}",
            got.len(),
            got.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_reaches_rsyslog_across_a_receiver_restart() {
    let syslog = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut receiver = rsyslog(syslog.path(), port);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n      app_name: warden-test\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    for i in 0..10 {
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
    }
    let got = all_received(syslog.path(), 10);
    // RFC 5424 as sent: priority (local0, info), version 1, the app name,
    // the record itself as the message.
    let text = std::fs::read_to_string(syslog.path().join("received.log")).expect("log");
    let first = text.lines().next().expect("a line");
    assert!(first.starts_with("<134>1 "), "{first}");
    assert!(
        first.contains(" warden-test ") && first.contains("{\"seq\":"),
        "{first}"
    );
    assert!(got.iter().all(|(_, resent)| !resent), "{got:?}");

    // The receiver goes away and comes back; what is written meanwhile,
    // and whatever the dead connection swallowed, arrives after all.
    receiver.child.kill().expect("kill");
    let _ = receiver.child.wait();
    for i in 10..20 {
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
    }
    let _receiver = rsyslog(syslog.path(), port);
    all_received(syslog.path(), 20);

    // A gateway restart resumes after what it exported (the cursor in its
    // state dir): nothing is lost, and nothing before it is sent again.
    let before = received(syslog.path()).len();
    let mut gw = gw;
    gw.proc.terminate();
    assert!(gw.proc.wait_exit(Duration::from_secs(20)).is_some());
    let audit = gw.dir.path().join("audit.jsonl");
    let gw2 = Gateway::start_with(
        &yaml,
        false,
        &[],
        &[
            "--audit",
            audit.to_str().expect("utf-8"),
            "--state-dir",
            gw.state.path().to_str().expect("utf-8"),
        ],
        None,
    )
    .expect("gateway again");
    for i in 20..25 {
        let (s, _, _) = post_json(&gw2.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
    }
    let got = all_received(syslog.path(), 25);
    let again: Vec<u64> = got[before..]
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s < 20)
        .collect();
    assert!(again.is_empty(), "sent again after a restart: {again:?}");
}
