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

/// The digit detectors whose findings hold no letter pass over runs of
/// bare digits sealed between two letters of a hex token; the others
/// (an IBAN's letters, an address's glue) do not.
#[test]
fn detectors_sealed_in_hex_are_those_whose_findings_hold_no_letter() {
    let s = scanner();
    let sealed: Vec<&str> = s
        .digit_set
        .iter()
        .flatten()
        .filter(|g| g.sealed)
        .map(|g| s.detectors[g.det].name.as_str())
        .collect();
    for name in [
        "phone_us",
        "phone_uk",
        "phone_de",
        "phone_fr",
        "us_ssn",
        "us_itin",
        "card_visa",
        "card_mastercard",
        "card_amex",
    ] {
        assert!(sealed.contains(&name), "{name}: {sealed:?}");
    }
    assert!(!sealed.contains(&"iban"), "{sealed:?}");
    for name in ["iban", "ipv4_address", "spain_dni", "uk_nino", "email"] {
        let pattern = edges::pattern(name).unwrap_or_else(|| panic!("{name}"));
        assert!(!edges::sealed_in_hex(name, pattern), "{name}");
    }
    // Group 1 decides, not the bytes read around it.
    assert!(edges::sealed_in_hex(
        "x",
        r"(?:^|[^0-9])(\d{9})(?:[^0-9]|$)"
    ));
    assert!(!edges::sealed_in_hex("x", r"(?:^|[^0-9])(\d{8}[A-Z])"));
    assert!(!edges::sealed_in_hex("x", r"(?i)\d{8}k"));
    // A group 1 some matches skip: their finding is the whole match.
    assert!(!edges::sealed_in_hex("x", r"a(\d{9})?b"));
    assert!(!edges::sealed_in_hex("x", r"(\d{9})|x\d{9}"));
}

/// Inside a digest a run of twelve bare digits is as long as a finding
/// glued in hex may be (a German mobile number): it still wakes the
/// detectors; eleven does not make a finding there.
#[test]
fn twelve_glued_digits_in_hex_still_wake_the_detectors() {
    let digest = |n: &str| format!("3f78a6e0c9d1ab{n}ec7e6dc881de23b1ad");
    let got = found(&digest("015112345678"));
    assert!(got.iter().any(|(d, _)| d == "phone_de"), "{got:?}");
    let got = found(&digest("01511234567"));
    assert!(!got.iter().any(|(d, _)| d == "phone_de"), "{got:?}");
    // Beside a separator the run is no longer sealed: `-45-6789` follows.
    let got = found("3f78a6e0c9d1ab123-45-6789 x");
    assert!(got.iter().any(|(d, _)| d == "us_ssn"), "{got:?}");
}

/// A scanner whose digit detectors search around every run, sealed in
/// hex or not: the reference of the next property.
fn waking_every_run() -> &'static Scanner {
    static S: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        WAKE_SEALED.with(|w| w.set(true));
        let s = Scanner::new(&[]);
        WAKE_SEALED.with(|w| w.set(false));
        s.unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Text of hex tokens (digests with long runs of digits), numbers that are
/// findings (cards, SSNs, phone numbers) glued to them or set apart, and
/// separators.
fn hex_and_numbers() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let hex = proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(b"0123456789".to_vec()),
            2 => proptest::sample::select(b"abcdef".to_vec()),
            1 => proptest::sample::select(b"ABCDEF".to_vec()),
        ],
        1..48,
    )
    .prop_map(|v| String::from_utf8(v).unwrap_or_default());
    let piece = prop_oneof![
        6 => hex,
        1 => proptest::sample::select(vec![
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555555555554444",
            "378282246310005",
            "123-45-6789",
            "123456789",
            "078-05-1120",
            "015112345678",
            "01511234567",
            "(555) 123-4567",
            "555-123-4567",
            "07700 900123",
            "01 23 45 67 89",
            "900-70-1234",
            "12345678Z",
            "DE89370400440532013000",
            "de89 3704 0044 0532 0130 00",
        ])
        .prop_map(str::to_owned),
        3 => proptest::sample::select(vec![" ", "\n", "-", ".", "/", "_", " - ", "x", "g", "Q"])
            .prop_map(str::to_owned),
    ];
    proptest::collection::vec(piece, 1..40).prop_map(|v| v.concat())
}

proptest::proptest! {
    /// Passing over runs sealed in hex finds what waking the digit
    /// detectors around every run finds: in the text as it is, and in a
    /// message (its encoded and grouped readings too).
    #[test]
    fn runs_sealed_in_hex_hide_no_finding(text in hex_and_numbers()) {
        let (fast, full) = (scanner(), waking_every_run());
        let spans = |s: &Scanner| {
            let mut h = Vec::new();
            s.scan_str(&text, &mut h);
            let mut v: Vec<_> = h.iter().map(|h| (h.detector, h.start, h.end)).collect();
            v.sort_unstable();
            v
        };
        proptest::prop_assert_eq!(spans(fast), spans(full));
        proptest::prop_assert_eq!(fast.tool_result_spans(&text), full.tool_result_spans(&text));
    }
}
