//! Writes the benchmark corpus (`warden_benches::corpus`) to stdout, for
//! the end-to-end benchmarks and for looking at it.
//!
//! `warden-corpus text CLASS BYTES [--secrets]`: the text of one class.
//! `warden-corpus call|result CLASS BYTES [--secrets]`: the text inside a
//! `tools/call` of `echo`, or inside a tool result.
//! `warden-corpus sse CLASS BYTES EVENTS [--secrets]`: a tool result as an
//! SSE stream of `EVENTS - 1` progress notifications and the result.
//! `warden-corpus classes`: the class names, one per line.

use std::io::Write;

use warden_benches::corpus::{self, Class};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secrets = args.iter().any(|a| a == "--secrets");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--secrets")
        .collect();
    let usage = || -> ! {
        eprintln!(
            "usage: warden-corpus classes | text|call|result CLASS BYTES [--secrets] | sse CLASS BYTES EVENTS [--secrets]"
        );
        std::process::exit(2)
    };
    if args.first() == Some(&"classes") {
        for c in Class::ALL {
            println!("{}", c.name());
        }
        return;
    }
    let (Some(kind), Some(class), Some(size)) = (
        args.first(),
        args.get(1).and_then(|n| Class::from_name(n)),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        usage()
    };
    let text = corpus::sample(class, size, secrets);
    let out = match *kind {
        "text" => text.into_bytes(),
        "call" => corpus::call(&text),
        "result" => corpus::result(&text),
        "sse" => {
            let events = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
            corpus::sse(&text, events)
        }
        _ => usage(),
    };
    if std::io::stdout().write_all(&out).is_err() {
        std::process::exit(1);
    }
}
