//! The DLP scanner and redactor never panic, and a redacted message is
//! always valid JSON (and still one JSON-RPC message).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden_config::guards::{Dlp, DlpAction, DlpRule};
use warden_filters::guards::dlp::DlpFilter;
use warden_filters::{Decision, Exchange, McpFilter, Notes, Principal};

fn filter() -> &'static DlpFilter {
    static F: OnceLock<DlpFilter> = OnceLock::new();
    F.get_or_init(|| {
        let rule = |name: &str, action| DlpRule {
            name: name.into(),
            detectors: vec!["*".into()],
            request: true,
            response: true,
            min_risk: None,
            action,
            mask: "[{detector}]".into(),
            hash: false,
        };
        let dlp = Dlp {
            rules: vec![rule("redact-all", DlpAction::Redact)],
            custom: Vec::new(),
            hash_key: None,
        };
        DlpFilter::new(dlp, Default::default()).expect("filter")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = filter().scanner().scan_json(data);
    let Ok(warden_filters::Parsed::Single(env)) =
        warden_filters::parse(data, warden_filters::ParseLimits::default())
    else {
        return;
    };
    let p = Principal::anonymous();
    let ctx = Exchange {
        now: std::time::SystemTime::UNIX_EPOCH,
        ..Exchange::new(&p, "s")
    };
    let view = warden_filters::Message::from_server(&env, data, Some("tools/call"), Some("t"));
    if let Decision::Mutated(out) = filter().on_response(&view, &ctx, &mut Notes::default()) {
        let v: serde_json::Value = serde_json::from_slice(&out).expect("redacted output is JSON");
        assert_eq!(v.get("id"), serde_json::from_slice::<serde_json::Value>(data).ok().as_ref().and_then(|o| o.get("id")));
    }
});
