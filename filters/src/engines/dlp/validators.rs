//! The validators that confirm what a detector's regex matched: Luhn,
//! mod-97 (IBAN), SSN rules, entropy, JWT header, phone numbers, routing
//! numbers, national ids, dates.

/// Luhn checksum over the digits of `s`.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 12 || digits.len() > 19 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn(s: &str) -> bool {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    if d.len() != 9 {
        return false;
    }
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// The IBAN length of each country of the IBAN registry.
pub(super) const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// IBAN: the country's length and mod-97 == 1, read as a bank reads it
/// (any case; spaces and dashes between groups are not part of it).
pub fn iban(s: &str) -> bool {
    let c: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let Some(country) = c.get(0..2) else {
        return false;
    };
    let len_ok = IBAN_LENGTHS
        .iter()
        .find(|(k, _)| *k == country)
        .map_or(0, |&(_, n)| n);
    if len_ok == 0 || c.len() != len_ok {
        return false;
    }
    let re = format!("{}{}", &c[4..], &c[..4]);
    let mut rem: u64 = 0;
    for ch in re.chars() {
        let v = match ch {
            '0'..='9' => ch as u64 - '0' as u64,
            'A'..='Z' => ch as u64 - 'A' as u64 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

pub(super) fn secret_like(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "xxxx", "changeme", "password", "example", "<", "${", "{{", "redacted", "****",
    ];
    s.len() >= 8 && entropy(s) >= 3.0 && !PLACEHOLDERS.iter().any(|p| lower.contains(p))
}

pub(super) fn jwt(s: &str) -> bool {
    use base64::Engine;
    let head = s.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<Alg>(&b).ok())
        .is_some_and(|a| a.0)
}

/// Whether a JSON document is an object with an `alg` member (a JWT's
/// header), read without building it: its keys as they unescape, every
/// value passed over (a header that parsed into a `serde_json::Value`
/// allocated a map of strings for each token read).
struct Alg(bool);

impl<'de> serde::Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Alg, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Alg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Alg, M::Error> {
                let mut alg = false;
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    alg |= key == "alg";
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(Alg(alg))
            }
        }
        d.deserialize_map(Members)
    }
}

pub(super) fn phone(s: &str) -> bool {
    let n = s.chars().filter(char::is_ascii_digit).count();
    (8..=15).contains(&n)
}

pub(super) fn ipv4(s: &str) -> bool {
    // Version-like strings (1.2.3.4 inside "v1.2.3.4") are excluded by the
    // pattern's boundaries; all-small octets like 1.0.0.1 are still addresses.
    s.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| !ip.is_unspecified())
}

pub(super) fn ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok() && s.matches(':').count() >= 2
}

pub(super) fn routing(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    d.len() == 9
        && (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8])
            .is_multiple_of(10)
}

pub(super) fn dni(s: &str) -> bool {
    const L: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let (num, letter) = s.split_at(8);
    num.parse::<u32>()
        .is_ok_and(|n| letter.as_bytes().first() == Some(&L[(n % 23) as usize]))
}

pub(super) fn sin(s: &str) -> bool {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    d.len() == 9 && {
        let digits: Vec<u32> = d.chars().filter_map(|c| c.to_digit(10)).collect();
        let sum: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i % 2 == 1 {
                    let y = x * 2;
                    if y > 9 {
                        y - 9
                    } else {
                        y
                    }
                } else {
                    x
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }
}

pub(super) fn date(s: &str) -> bool {
    let parts: Vec<u32> = s
        .split(['.', '/', '-'])
        .filter_map(|p| p.parse().ok())
        .collect();
    parts.len() == 3 && parts.iter().any(|&p| (1900..=2100).contains(&p) || p <= 31)
}

pub(super) fn has_digit(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_digit())
}

pub(super) fn zero_width_run(s: &str) -> bool {
    s.chars().count() >= 3
}

#[cfg(test)]
mod jwt_tests {
    use base64::Engine;

    /// The header read as a `serde_json::Value` was (the reference).
    fn by_value(head: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(head)
            .ok()
            .is_some_and(|v| v.get("alg").is_some())
    }

    fn token(head: &[u8]) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.eyJzdWIiOiIxIn0.c2ln", enc.encode(head))
    }

    /// A header is a JWT's where it was: an object holding `alg` (escaped
    /// or not, twice, among other members), and not a list, a string, an
    /// object without it, or broken JSON.
    #[test]
    fn a_header_with_alg_is_read_as_before() {
        for head in [
            &br#"{"alg":"HS256","typ":"JWT"}"#[..],
            br#"{"typ":"JWT","alg":null}"#,
            br#"{"al\u0067":"none"}"#,
            br#"{"alg":"a","alg":"b"}"#,
            br#" {"kid":{"x":[1,2,{"alg":1}]},"alg":{}} "#,
            br#"{"typ":"JWT"}"#,
            br#"{"kid":{"alg":"HS256"}}"#,
            br#"["alg"]"#,
            br#""alg""#,
            br#"{"alg":"HS256""#,
            br#"{"alg":"HS256"} x"#,
            br#"{"ALG":"HS256"}"#,
            b"",
        ] {
            assert_eq!(
                super::jwt(&token(head)),
                by_value(head),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert!(super::jwt(&token(br#"{"alg":"HS256"}"#)));
        assert!(super::jwt(&token(br#"{"a\u006cg":"none"}"#)));
        assert!(!super::jwt(&token(br#"{"kid":{"alg":"HS256"}}"#)));
    }
}
