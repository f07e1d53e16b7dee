//! The validating JSON-RPC parser never panics, and what it accepts is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(warden_filters::Parsed::Single(_)) =
        warden_filters::parse(data, warden_filters::ParseLimits::default())
    {
        assert!(serde_json::from_slice::<serde_json::Value>(data).is_ok());
    }
});
