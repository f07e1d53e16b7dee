//! SIEM export: every audit record reaches a real rsyslog (RFC 5424 over TCP,
//! octet-counted), across a restart of the receiver, with the records that
//! may have been lost sent again and marked; the export resumes where it
//! stopped when the gateway restarts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden_tests::{free_port, mock_bundle, openssl, post_json, Gateway, Mock, Proc};

use super::call;

/// A real rsyslogd on a loopback port, writing every message it receives,
/// as received, one per line; over TLS (its certificate `dir/cert.pem`)
/// when `tls`.
fn rsyslog(dir: &Path, port: u16, tls: bool) -> Proc {
    let conf = dir.join("rsyslog.conf");
    let d = dir.display();
    let (global, module) = if tls {
        (
            format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
                 defaultNetstreamDriverCertFile=\"{d}/cert.pem\" defaultNetstreamDriverKeyFile=\"{d}/key.pem\""
            ),
            " streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\"",
        )
    } else {
        (String::new(), "")
    };
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{d}\"{global})\n\
             module(load=\"imtcp\"{module})\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             action(type=\"omfile\" file=\"{d}/received.log\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n"
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
    receiving(child, "rsyslogd", port)
}

/// A receiver process, once it accepts connections on `port`.
pub(super) fn receiving(child: std::process::Child, name: &str, port: u16) -> Proc {
    let mut proc = Proc {
        child,
        name: name.into(),
    };
    if let Err(e) = warden_tests::wait_listening(&mut proc, &[port], Duration::from_secs(10)) {
        panic!("{e}");
    }
    proc
}

/// A CA (`dir/ca.pem`) and a server certificate it signed for 127.0.0.1
/// (`dir/cert.pem`, `dir/key.pem`).
pub(super) fn server_cert(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=siem-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.csr",
        ],
    );
    std::fs::write(
        dir.join("cert.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "cert.pem",
            "-extfile",
            "cert.ext",
        ],
    );
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

/// `gw` started again (after it stopped) on the same bundle, trail and
/// state directory (its export cursor among others).
fn restarted(gw: &Gateway, yaml: &str) -> Gateway {
    let audit = gw.dir.path().join("audit.jsonl");
    Gateway::start_with(
        yaml,
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
    .expect("gateway again")
}

/// Calls `echo` through `gw` once for each id in `ids`, each answered 200.
pub(super) async fn calls(gw: &Gateway, ids: std::ops::Range<u64>) {
    for i in ids {
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
    }
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
    let mut receiver = rsyslog(syslog.path(), port, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n      app_name: warden-test\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..10).await;
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
    let before = got.len();
    calls(&gw, 10..20).await;
    let _receiver = rsyslog(syslog.path(), port, false);
    let got = all_received(syslog.path(), 20);
    // On the new connection the records of the last one go again, marked
    // (the dead one may have swallowed them): the whole run is within the
    // window, so at least the last record the old receiver got is among
    // them, and nothing is marked that was never sent before.
    let again: Vec<u64> = got[before..]
        .iter()
        .filter(|(_, resent)| *resent)
        .map(|(s, _)| *s)
        .collect();
    assert!(again.contains(&9), "{again:?}");
    assert!(again.iter().all(|s| *s < 20), "{again:?}");

    // A gateway restart resumes where the export stopped (the cursor in
    // its state dir): nothing is lost.
    let mut gw = gw;
    gw.proc.terminate();
    assert!(gw.proc.wait_exit(Duration::from_secs(20)).is_some());
    // What the stopped exporter had not known delivered: `<from> <next>`,
    // the records from `from` are sent again, marked.
    let cursor = std::fs::read_to_string(gw.state.path().join("export-syslog.seq"))
        .expect("the export's cursor");
    let nums: Vec<u64> = cursor
        .split_whitespace()
        .map(|w| w.parse().expect("a seq"))
        .collect();
    let [from, next] = nums[..] else {
        panic!("cursor {cursor:?}")
    };
    assert_eq!(next, 20, "{cursor:?}");
    assert!(from < next, "nothing to send again: {cursor:?}");
    let before = received(syslog.path()).len();
    let gw2 = restarted(&gw, &yaml);
    calls(&gw2, 20..25).await;
    let got = all_received(syslog.path(), 25);
    // What the last connection may not have delivered (its last seconds:
    // here the whole run) goes again after the restart: each of `from..20`
    // arrives again, and every record of before the restart that arrives
    // again is marked.
    let again: Vec<&(u64, bool)> = got[before..].iter().filter(|(s, _)| *s < 20).collect();
    assert!(again.iter().all(|(_, resent)| *resent), "{again:?}");
    for s in from..next {
        assert!(
            again.iter().any(|(g, _)| *g == s),
            "seq {s} was not sent again: {again:?}"
        );
    }
    // What was written after the restart goes once, unmarked.
    assert!(
        got[before..]
            .iter()
            .filter(|(s, _)| *s >= 20)
            .all(|(_, resent)| !resent),
        "{got:?}"
    );
}

/// A gateway killed (SIGKILL) while it exports, under load: after its
/// restart, every record that arrives a second time is marked `resent`
/// (the cursor saved before the crash bounds what may have been sent past
/// it), and nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_every_record_sent_again_is_marked() {
    let syslog = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _receiver = rsyslog(syslog.path(), port, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n"),
    );
    let mut gw = Gateway::start(&yaml, false).expect("gateway");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (gw.url("/mock/mcp"), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = post_json(&url, call(i, "echo"), &[]).await;
                i += 1;
            }
        })
    };
    // Killed while records flow, some sent after the cursor's last save.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(syslog.path()).len() < 300 {
        assert!(Instant::now() < deadline, "the export never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.proc.child.kill().expect("kill");
    let _ = gw.proc.child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;
    let before = received(syslog.path());
    assert!(before.iter().all(|(_, resent)| !resent), "{before:?}");
    let gw2 = restarted(&gw, &yaml);
    let audit = gw.dir.path().join("audit.jsonl");
    calls(&gw2, 0..5).await;
    let last = std::fs::read_to_string(&audit)
        .expect("trail")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .expect("records");
    let got = all_received(syslog.path(), last + 1);
    let mut seen = std::collections::HashSet::new();
    let mut again = 0;
    for (seq, resent) in &got {
        if !seen.insert(*seq) {
            again += 1;
            assert!(
                *resent,
                "seq {seq} arrived again unmarked (received: {})",
                got.len()
            );
        }
    }
    // Records sent before the crash were sent again (the syslog window
    // alone guarantees some).
    assert!(again > 0, "nothing sent again");
}

/// Over TLS (RFC 5425): the receiver's certificate is checked against the
/// CA file the bundle names, and every record arrives.
#[tokio::test(flavor = "multi_thread")]
async fn records_reach_rsyslog_over_tls() {
    let syslog = tempfile::tempdir().expect("tmp");
    server_cert(syslog.path());
    let port = free_port();
    let _receiver = rsyslog(syslog.path(), port, true);
    let mock = Mock::start(&[]).expect("mock");
    let ca = syslog.path().join("ca.pem");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "audit:\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n      tls: {{ca_file: {}}}\n",
            ca.display()
        ),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..5).await;
    all_received(syslog.path(), 5);

    // A receiver whose certificate the CA file does not vouch for gets
    // nothing: the handshake fails, and the export waits.
    let other = tempfile::tempdir().expect("tmp");
    server_cert(other.path());
    let port2 = free_port();
    let _impostor = rsyslog(other.path(), port2, true);
    let yaml2 = mock_bundle(
        &[mock.addr],
        &format!(
            "audit:\n  export:\n    syslog:\n      address: 127.0.0.1:{port2}\n      tls: {{ca_file: {}}}\n",
            ca.display()
        ),
    );
    let gw2 = Gateway::start(&yaml2, false).expect("gateway");
    let (s, _, _) = post_json(&gw2.url("/mock/mcp"), call(1, "echo"), &[])
        .await
        .expect("post");
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        received(other.path()).is_empty(),
        "sent to an unverified receiver"
    );
    assert!(
        gw2.metrics()
            .await
            .contains("warden_audit_export_connected{exporter=\"syslog\"} 0"),
        "not connected"
    );
}

/// The trail rotates under the export (every few records here): the
/// exporter follows each file to its end and on to the next, and nothing
/// is lost or counted as dropped.
#[tokio::test(flavor = "multi_thread")]
async fn every_record_reaches_rsyslog_across_rotations() {
    let syslog = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _receiver = rsyslog(syslog.path(), port, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "audit:\n  rotate_size: 3KiB\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n"
        ),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    for i in 0..40 {
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
        if i % 7 == 0 {
            // Now and then the export catches up between rotations.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let rotated = std::fs::read_dir(gw.dir.path())
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("audit.jsonl.0"))
        })
        .count();
    assert!(rotated >= 3, "the trail rotated {rotated} times");
    all_received(syslog.path(), 40);
    let m = gw.metrics().await;
    assert!(!m.contains("result=\"dropped\""), "{m}");
}

/// A record longer than the receiver takes (here a call's arguments,
/// logged in full) is sent as its stub, never split: rsyslog splits an
/// octet-counted message past its `maxMessageSize`, and the rest, text
/// the caller chose, would read as a message of its own (a forged
/// record). Every record after it arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_longer_than_the_receiver_takes_arrives_as_its_stub() {
    let syslog = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _receiver = rsyslog(syslog.path(), port, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  include_arguments: true\n  export:\n    syslog:\n      address: 127.0.0.1:{port}\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..2).await;
    // Filler, then what would be a forged record where rsyslog cut the
    // message, at every offset a header might land on.
    let forged = "<13>1 - gw1 warden - audit [warden@32473 seq=\"999999\" outcome=\"forwarded\"] {\"seq\":999999}";
    let text = format!("{}{}", "x".repeat(8000), forged.repeat(400));
    let body = serde_json::json!({"jsonrpc":"2.0","id":99,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text": text}}})
    .to_string();
    let (s, _, _) = post_json(&gw.url("/mock/mcp"), body, &[])
        .await
        .expect("post");
    assert_eq!(s, 200);
    calls(&gw, 100..103).await;
    let got = all_received(syslog.path(), 6);
    let log = std::fs::read_to_string(syslog.path().join("received.log")).expect("log");
    assert!(
        !got.iter().any(|(s, _)| *s == 999_999) && !log.contains("seq=\"999999\""),
        "a forged record reached the receiver"
    );
    let stubs: Vec<&str> = log.lines().filter(|l| l.contains("{\"elided\":")).collect();
    assert_eq!(stubs.len(), 1, "{log}");
    assert!(
        stubs[0].contains("more than the syslog receiver's 8192"),
        "{}",
        stubs[0]
    );
    assert!(stubs[0].len() <= 8192, "{}", stubs[0].len());
    // Every message whole: one per line, each a record.
    for l in log.lines() {
        let json = &l[l.find('{').expect("a record")..];
        serde_json::from_str::<serde_json::Value>(json).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..got.len() as u64).collect::<Vec<_>>()
    );
}
