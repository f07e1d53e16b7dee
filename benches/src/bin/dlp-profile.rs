//! Scans one corpus sample many times with every built-in detector: the
//! loop to profile (`valgrind --tool=callgrind`, `perf record`) when a class
//! of content is slow. `dlp-profile CLASS SIZE ITERATIONS [call|result]`;
//! `DLP_PROFILE_ID=N` sets the message's JSON-RPC id;
//! `DLP_PROFILE_FILE=PATH` scans that file's text instead of a class.

use std::time::Instant;

use warden_benches::corpus::{self, Class};
use warden_filters::engines::dlp::Scanner;

#[global_allocator]
static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let class = args
        .get(1)
        .and_then(|n| Class::from_name(n))
        .unwrap_or(Class::Base64Random);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    // DLP_PROFILE_FILE=PATH: the text is that file's (a hostile shape
    // no class has), cut to SIZE bytes at a character's edge.
    let text = match std::env::var_os("DLP_PROFILE_FILE") {
        Some(path) => {
            let mut t = std::fs::read_to_string(path).unwrap_or_default();
            let mut cut = size.min(t.len());
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
            t
        }
        None => corpus::sample(class, size, false),
    };
    // DLP_PROFILE_ONE_LINE=1: the text without its line breaks, quotes
    // and backslashes, as benches/ab.sh sends a class (one line of logs
    // reads differently from many).
    let text = if std::env::var_os("DLP_PROFILE_ONE_LINE").is_some() {
        text.replace(['\n', '"', '\\'], "")
    } else {
        text
    };
    let body = if args.get(1).map(String::as_str) == Some("near_misses") {
        // The criterion bench's clean text that keeps waking detectors up
        // (ids, SHAs, order numbers, timestamps).
        warden_benches::tool_result_near_misses(size)
    } else if args.get(4).map(String::as_str) == Some("result") {
        corpus::result(&text)
    } else {
        corpus::call(&text)
    };
    // DLP_PROFILE_ID=N: the message's JSON-RPC id is N instead of 42 (a
    // client's ids can be long numbers, which the digit detectors read).
    let body = match std::env::var("DLP_PROFILE_ID") {
        Ok(id) => String::from_utf8_lossy(&body)
            .replacen("\"id\":42", &format!("\"id\":{id}"), 1)
            .into_bytes(),
        Err(_) => body,
    };
    let scanner = match Scanner::new(&[]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scanner: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let mut findings = 0;
    for _ in 0..n {
        findings += scanner
            .scan_json(std::hint::black_box(&body))
            .map(|f| f.len())
            .unwrap_or(0);
    }
    let per = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "{} {} bytes: {:.2} us/scan, {:.1} MB/s, {} findings",
        class.name(),
        body.len(),
        per * 1e6,
        body.len() as f64 / per / 1e6,
        findings / n.max(1)
    );
}
