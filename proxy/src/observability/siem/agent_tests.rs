//! The agent sink against a stand-in agent that refuses lines as the real
//! one does (longer than its `MAX_LINE`: 413 for the batch, 400 for a line
//! alone): no record is missing from what it received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::*;

/// `n` chained audit lines; the one at `big` carries `big_bytes` of
/// arguments.
fn trail(n: usize, big: usize, big_bytes: usize) -> Vec<String> {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for seq in 0..n {
        let args = if seq == big {
            "x".repeat(big_bytes)
        } else {
            "hi".into()
        };
        let line = serde_json::json!({
            "seq": seq, "prev": prev, "ts": "2026-01-02T03:04:05.000006Z",
            "principal": "mallory", "tenant": "acme", "server": "bank",
            "tool": "wire_money", "outcome": "forwarded",
            "arguments": {"memo": args},
        })
        .to_string();
        prev = hex::encode(Sha256::digest(line.as_bytes()));
        out.push(line);
    }
    out
}

/// One request read from `conn`: its head (lower-cased) and its body.
fn read_request(conn: &std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let (mut head, mut len) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let h = h.to_ascii_lowercase();
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&h);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// A stand-in agent on a thread: stores the lines of each body it takes,
/// refuses a body holding a line longer than `MAX_LINE` or one `refuses`
/// (413 when the body holds more than that line, 400 when it is the only
/// one).
fn stand_in(refuses: fn(&str) -> bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Some((_, body)) = read_request(&conn) else {
                continue;
            };
            let lines: Vec<String> = String::from_utf8_lossy(&body)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let n = lines.len();
            let (status, answer) = if !lines.iter().any(|l| l.len() > MAX_LINE || refuses(l)) {
                kept.lock().unwrap().extend(lines);
                ("200 OK", format!("{{\"accepted\":{n},\"duplicates\":0}}"))
            } else if n > 1 {
                (
                    "413 Payload Too Large",
                    "{\"error\":\"too large\"}".to_owned(),
                )
            } else {
                (
                    "400 Bad Request",
                    "{\"error\":\"line 1: refused\"}".to_owned(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, got)
}

#[test]
fn a_record_too_long_for_the_agent_arrives_as_a_stub_holding_its_place_in_the_chain() {
    let (url, got) = stand_in(|_| false);
    let mut sink = Agent::new(AgentTarget {
        agents: crate::hub::agents::Agents::new("agent", &[url]).unwrap(),
        token: None,
        gateway_id: "gw-1".into(),
    })
    .unwrap();
    // A caller's 1.2 MB arguments to a HIGH tool, logged in full.
    let lines = trail(4, 1, 1_200_000);
    let stop = || false;
    for (seq, l) in lines.iter().enumerate() {
        assert!(sink.deliver(seq as u64, l.as_bytes(), false, &stop));
    }
    assert!(sink.idle(&stop));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "every record arrives");
    assert_eq!(got[0], lines[0]);
    assert_eq!((&got[2], &got[3]), (&lines[2], &lines[3]));
    let stub: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert!(got[1].starts_with("{\"elided\":"), "{}", got[1]);
    assert!(got[1].len() < 4096);
    // The next record's `prev` is the stub's declared hash.
    let next: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(stub["elided"]["sha256"], next["prev"]);
    assert_eq!(stub["elided"]["bytes"], lines[1].len());
    assert_eq!(stub["elided"]["fields"], serde_json::json!(["arguments"]));
    let full: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    for k in [
        "seq",
        "prev",
        "ts",
        "principal",
        "tenant",
        "tool",
        "outcome",
    ] {
        assert_eq!(stub[k], full[k], "{k}");
    }
    assert!(stub.get("arguments").is_none());
}

#[test]
fn a_stub_is_made_only_of_a_record_and_never_of_a_stub() {
    let lines = trail(1, 0, 5000);
    let s = stub(lines[0].as_bytes(), "test", true).unwrap();
    assert!(s.starts_with(b"{\"elided\":"));
    assert!(
        stub(&s, "again", true).is_none(),
        "a stub stands for a record once"
    );
    assert!(stub(b"not json", "x", true).is_none());
    assert!(stub(b"{\"seq\":1,\"ts\":\"t\"}", "no prev", true).is_none());
}

#[test]
fn a_record_the_agent_refuses_alone_arrives_as_its_stub() {
    // Whatever the agent finds wrong with a line (here: its memo), the
    // record still takes its place in the agent's chain.
    let (url, got) = stand_in(|l| l.contains("refuse-me"));
    let mut sink = Agent::new(AgentTarget {
        agents: crate::hub::agents::Agents::new("agent", &[url]).unwrap(),
        token: None,
        gateway_id: "gw-1".into(),
    })
    .unwrap();
    let mut lines = trail(3, 9, 0);
    lines[1] = lines[1].replace("\"hi\"", "\"refuse-me\"");
    let stop = || false;
    for (seq, l) in lines.iter().enumerate() {
        assert!(sink.deliver(seq as u64, l.as_bytes(), false, &stop));
    }
    assert!(sink.idle(&stop));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.contains(&lines[0]) && got.contains(&lines[2]));
    let stub: serde_json::Value =
        serde_json::from_str(got.iter().find(|l| l.starts_with("{\"elided\":")).unwrap()).unwrap();
    assert_eq!(
        stub["elided"]["sha256"],
        hex::encode(Sha256::digest(lines[1].as_bytes()))
    );
    assert_eq!(stub["seq"], 1);
    assert!(stub["elided"]["why"].as_str().unwrap().contains("400"));
    // Only the chain's members: any other could be what was refused.
    assert_eq!(stub.as_object().unwrap().len(), 4, "{stub}");
}

#[test]
fn each_batch_names_the_gateway_and_this_process() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let head = read_request(&conn).map(|(h, _)| h).unwrap_or_default();
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-length: 29\r\nconnection: close\r\n\r\n{{\"accepted\":1,\"duplicates\":0}}"
        );
        let _ = tx.send(head);
    });
    let mut sink = Agent::new(AgentTarget {
        agents: crate::hub::agents::Agents::new("agent", &[url]).unwrap(),
        token: None,
        gateway_id: "gw-7".into(),
    })
    .unwrap();
    let stop = || false;
    let line = &trail(1, 9, 0)[0];
    assert!(sink.deliver(0, line.as_bytes(), false, &stop));
    assert!(sink.idle(&stop));
    let head = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(head.contains("x-warden-gateway: gw-7\r\n"), "{head}");
    let instance = crate::hub::bundles::instance_id();
    assert!(
        head.contains(&format!("x-warden-instance: {instance}\r\n")),
        "{head}"
    );
}

/// A server that answers every request `status` with `body` (a proxy's
/// page, a catch-all); counts the requests.
fn impostor(status: &'static str, body: &'static str) -> (String, Arc<Mutex<usize>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if read_request(&conn).is_none() {
                continue;
            }
            *count.lock().unwrap() += 1;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, asked)
}

/// With several agents, a batch the first cannot take (it is down, or it
/// is no agent: a 200 page without the agent's count, a 400 without its
/// error) goes whole to the next one: every record arrives there, none
/// is taken as delivered by what is not an agent, none is split or
/// stubbed because something else said 400.
#[test]
fn a_batch_goes_to_the_next_agent_when_one_cannot_take_it() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (page, page_asked) = impostor("200 OK", "<html>welcome</html>");
    let (bad, bad_asked) = impostor("400 Bad Request", "<html>bad request</html>");
    let (url, got) = stand_in(|_| false);
    let agents = crate::hub::agents::Agents::new(
        "agent",
        &[dead.clone(), page.clone(), bad.clone(), url.clone()],
    )
    .unwrap();
    let mut sink = Agent::new(AgentTarget {
        agents: agents.clone(),
        token: None,
        gateway_id: "gw-1".into(),
    })
    .unwrap();
    let lines = trail(5, 9, 0);
    let stop = || false;
    for (seq, l) in lines.iter().enumerate() {
        assert!(sink.deliver(seq as u64, l.as_bytes(), false, &stop));
    }
    assert!(sink.idle(&stop));
    assert_eq!(*got.lock().unwrap(), lines, "every record, once, in order");
    assert_eq!(*page_asked.lock().unwrap(), 1);
    assert_eq!(*bad_asked.lock().unwrap(), 1);
    assert_eq!(
        agents.base_in_use(),
        url,
        "the agent that took it is in use"
    );
    // The next batch goes straight to it.
    let more = trail(7, 9, 0);
    assert!(sink.deliver(5, more[5].as_bytes(), false, &stop));
    assert!(sink.deliver(6, more[6].as_bytes(), false, &stop));
    assert!(sink.idle(&stop));
    assert_eq!(got.lock().unwrap().len(), 7);
    assert_eq!(*page_asked.lock().unwrap(), 1, "not asked again");
}
