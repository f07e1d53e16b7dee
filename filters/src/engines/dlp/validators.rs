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

/// IBAN: country length and mod-97 == 1.
pub fn iban(s: &str) -> bool {
    let c: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let len_ok = match &c.get(0..2).unwrap_or("") {
        &"DE" => 22,
        &"GB" => 22,
        &"FR" | &"IT" | &"MC" => 27,
        &"ES" | &"SE" => 24,
        &"NL" => 18,
        &"BE" => 16,
        &"CH" | &"LI" => 21,
        &"AT" => 20,
        &"PL" => 28,
        &"PT" => 25,
        &"IE" => 22,
        &"DK" | &"FI" => 18,
        &"NO" => 15,
        &"LU" => 20,
        &"CZ" | &"SK" => 24,
        _ => 0,
    };
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
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("alg").is_some())
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
