//! Personal data glued to a word (issue 88, item 6): every detector with a
//! boundary reads its token where the token's own class ends.

use super::*;

fn scanner() -> &'static Scanner {
    static S: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    S.get_or_init(|| Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}")))
}

/// `(detector, matched text)` of every finding in `text`.
fn found(text: &str) -> Vec<(String, String)> {
    let s = scanner();
    let mut h = Vec::new();
    s.scan_str(text, &mut h);
    h.iter()
        .map(|h| {
            (
                s.detectors[h.detector].name.clone(),
                text[h.start..h.end].to_owned(),
            )
        })
        .collect()
}

/// The detectors that find something in a raw JSON message.
fn in_json(text: &str) -> Vec<String> {
    let raw = serde_json::json!({"result": {"content": [{"type": "text", "text": text}]}});
    let s = scanner();
    s.scan_json(raw.to_string().as_bytes())
        .unwrap_or_default()
        .into_iter()
        .map(|(_, h)| s.detectors[h.detector].name.clone())
        .collect()
}

/// `(glued text, detector, the token a reader sees)`: glued before, after
/// and on both sides, to letters, digits (where the token's edge is no
/// digit) and underscores.
const GLUED: &[(&str, &str, &str)] = &[
    ("id123-45-6789", "us_ssn", "123-45-6789"),
    ("SSN123-45-6789", "us_ssn", "123-45-6789"),
    ("x_123-45-6789", "us_ssn", "123-45-6789"),
    ("123-45-6789x", "us_ssn", "123-45-6789"),
    ("ssn123-45-6789_end", "us_ssn", "123-45-6789"),
    ("SSN123456789", "us_ssn", "123456789"),
    ("id123 45 6789z", "us_ssn", "123 45 6789"),
    ("tin912-70-1234x", "us_itin", "912-70-1234"),
    ("cc4111111111111111", "card_visa", "4111111111111111"),
    (
        "card4111 1111 1111 1111",
        "card_visa",
        "4111 1111 1111 1111",
    ),
    ("x_4111111111111111", "card_visa", "4111111111111111"),
    ("4111111111111111exp", "card_visa", "4111111111111111"),
    (
        "pan5500000000000004_",
        "card_mastercard",
        "5500000000000004",
    ),
    ("amex378282246310005x", "card_amex", "378282246310005"),
    ("disc6011111111111117z", "card_discover", "6011111111111117"),
    ("tel555-123-4567x", "phone_us", "555-123-4567"),
    ("call+14155552671now", "phone_e164", "+14155552671"),
    ("mob07700900123x", "phone_uk", "07700900123"),
    ("host10.0.0.5x", "ipv4_address", "10.0.0.5"),
    ("ip_192.168.1.10", "ipv4_address", "192.168.1.10"),
    ("nif12345678Z_", "spain_dni", "12345678Z"),
    ("x_12345678Z", "spain_dni", "12345678Z"),
    (
        "ibanDE89370400440532013000",
        "iban",
        "DE89370400440532013000",
    ),
    (
        "acct_DE89370400440532013000_x",
        "iban",
        "DE89370400440532013000",
    ),
    ("nino_AB123456C_x", "uk_nino", "AB123456C"),
    ("mail john_doe@example.com", "email", "john_doe@example.com"),
    (
        "to:x_bob@corp.example.com_",
        "email",
        "x_bob@corp.example.com",
    ),
    ("user_passport: X1234567", "passport_number", "X1234567"),
    ("passport_no_X1234567_", "passport_number", "X1234567"),
    (
        "bank_routing_number: 011000015",
        "us_bank_routing",
        "011000015",
    ),
    ("routing 011000015x", "us_bank_routing", "011000015"),
    ("my_sin: 046 454 286", "canada_sin", "046 454 286"),
    ("user_national_id: AB1234567", "national_id", "AB1234567"),
    ("swift_code_DEUTDEFF_x", "swift_bic", "DEUTDEFF"),
];

/// Found glued, as a string and inside a message, and the finding is the
/// token, not its glue.
#[test]
fn personal_data_glued_to_a_word_is_found() {
    for &(text, want, token) in GLUED {
        let got = found(text);
        assert!(
            got.iter().any(|(d, t)| d == want && t == token),
            "{text:?}: {got:?}"
        );
        let j = in_json(text);
        assert!(j.iter().any(|d| d == want), "json {text:?}: {j:?}");
    }
}

/// Digits glued to digits are another, longer number; a longer run of a
/// token's own class is another token; a keyword inside a longer word is
/// another word; validators still apply.
#[test]
fn longer_tokens_and_invalid_values_are_not_found() {
    for (text, not) in [
        ("1234123-45-6789", "us_ssn"),
        ("123-45-67890", "us_ssn"),
        ("41111111111111111", "card_visa"),
        ("cc4111111111111112", "card_visa"),
        ("id666-45-6789", "us_ssn"),
        ("id000-12-3456x", "us_ssn"),
        ("passport X1234567abc", "passport_number"),
        ("public settings ABCDEF12", "swift_bic"),
        ("using 046 454 286", "canada_sin"),
        ("database 011000015", "us_bank_routing"),
        ("version v1.2.3.4", "ipv4_address"),
        ("build V10.0.0.1", "ipv4_address"),
        ("AB123456Cx", "uk_nino"),
        // A hash or commit id: bare digits inside a token of hex digits.
        ("3f786850e3875123456789ed7e6dc881de23001b", "us_ssn"),
        ("deadbeef123456789cafe", "us_ssn"),
    ] {
        let got = found(text);
        assert!(
            !got.iter().any(|(d, _)| d == not),
            "{text:?}: {got:?} holds {not}"
        );
    }
}

/// Two glued tokens one character apart are both found, each over its
/// own bytes.
#[test]
fn glued_tokens_side_by_side_are_each_found() {
    let text = "a123-45-6789b123-45-6788c";
    let got = found(text);
    let ssns: Vec<&str> = got
        .iter()
        .filter(|(d, _)| d == "us_ssn")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(ssns, ["123-45-6789", "123-45-6788"], "{got:?}");
}
