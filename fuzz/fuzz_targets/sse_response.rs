//! A server's SSE response, as the gateway reads it: arbitrary bytes cut into
//! chunks at fuzzer-chosen points go through `SseDecoder::push`; each event's
//! data is parsed, and every message the parser accepts runs through a
//! response filter chain holding a redact-everything DLP filter.
//!
//! Asserted: nothing panics; until the decoder reports an error, the raw
//! bytes of the events it returned followed by its pending bytes are exactly
//! the bytes pushed so far (none lost, none duplicated); an event re-encoded
//! with `with_data` decodes, alone, to that data and the same event type; a
//! rewrite the chain forwards is one JSON-RPC message with the same id.
//!
//! Input layout: the first byte gives how many of the following bytes are
//! chunk lengths (at most 15); the rest is the stream, cut at those lengths,
//! its remainder pushed as the last chunk.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use warden_config::guards::{Dlp, DlpAction, DlpRule};
use warden_filters::guards::dlp::DlpFilter;
use warden_filters::{
    Envelope, Exchange, FilterChain, Notes, ParseLimits, Parsed, Principal, SseDecoder,
    SseEvent, Verdict,
};

/// Small enough that the fuzzer reaches the event size bound.
const MAX_EVENT: usize = 4096;

fn chain() -> &'static FilterChain {
    static C: OnceLock<FilterChain> = OnceLock::new();
    C.get_or_init(|| {
        let rule = DlpRule {
            name: "redact-all".into(),
            detectors: vec!["*".into()],
            request: true,
            response: true,
            min_risk: None,
            action: DlpAction::Redact,
            mask: "[{detector}]".into(),
            hash: false,
        };
        let dlp = Dlp {
            rules: vec![rule],
            custom: Vec::new(),
            hash_key: None,
        };
        let f = DlpFilter::new(dlp, Default::default()).expect("filter");
        FilterChain::new(vec![Arc::new(f)], ParseLimits::default())
    })
}

/// Data lines split at CR, LF and CRLF and are joined with LF.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn judge_message(env: &Envelope, bytes: &[u8]) {
    let p = Principal::anonymous();
    let ctx = Exchange {
        now: std::time::SystemTime::UNIX_EPOCH,
        ..Exchange::new(&p, "s")
    };
    let msg = warden_filters::Message::from_server(env, bytes, Some("tools/call"), Some("t"));
    if let Verdict::ForwardMutated(out, _) = chain().run(&msg, &ctx, &mut Notes::default()) {
        match warden_filters::parse(&out, ParseLimits::default()) {
            Ok(Parsed::Single(e)) => assert_eq!(e.id, env.id, "a rewrite keeps the id"),
            other => panic!("the chain forwarded a rewrite that is not one message: {other:?}"),
        }
    }
}

fn judge_event(ev: &SseEvent) {
    let Some(data) = ev.data.as_deref() else {
        return;
    };
    // Re-encoding with the same data must read back as that data.
    let again = ev.with_data(data);
    let mut d = SseDecoder::new(usize::MAX);
    let evs = d.push(&again).expect("a re-encoded event decodes");
    assert_eq!(evs.len(), 1, "a re-encoded event is one event");
    assert!(d.pending().is_empty());
    assert_eq!(evs[0].data.as_deref(), Some(normalised(data).as_str()));
    assert_eq!(evs[0].event_type(), ev.event_type());

    match warden_filters::parse(data.as_bytes(), ParseLimits::default()) {
        Ok(Parsed::Single(env)) => judge_message(&env, data.as_bytes()),
        Ok(Parsed::Batch(items)) => {
            for env in items.into_iter().flatten() {
                judge_message(&env, &data.as_bytes()[env.span.clone()]);
            }
        }
        Err(_) => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let mut chunks = Vec::with_capacity(n + 1);
    let mut at = 0;
    for &c in cuts {
        let end = (at + usize::from(c)).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    chunks.push(&stream[at..]);

    let mut decoder = SseDecoder::new(MAX_EVENT);
    let mut seen: Vec<u8> = Vec::with_capacity(stream.len());
    let mut fed = 0;
    for chunk in chunks {
        fed += chunk.len();
        // After an error the stream is abandoned: the gateway stops reading it.
        let Ok(events) = decoder.push(chunk) else {
            return;
        };
        for ev in &events {
            assert!(!ev.raw.is_empty(), "an event has bytes");
            seen.extend_from_slice(&ev.raw);
            judge_event(ev);
        }
        let mut all = seen.clone();
        all.extend_from_slice(decoder.pending());
        assert_eq!(all, &stream[..fed], "events + pending == bytes pushed");
    }
    seen.extend_from_slice(&decoder.finish());
    assert_eq!(seen, stream);
    assert!(decoder.pending().is_empty());
});
