//! The cost a record carries, as the store indexes it: a priced call's
//! `"cost": {"amount": "0.022000", "currency": "EUR", "units": 40,
//! "team": "data"}` read into millionths (exactly: no float), its currency
//! and the caller's team.
//!
//! A `cost` member the store cannot read (not an object, an amount that is
//! not a decimal with at most six places below [`MAX_WHOLE`], a currency
//! that is not three capital letters, an object with neither an amount nor
//! `"priced": false`) never refuses the line: the record is stored
//! unpriced and counted ([`Costed::unreadable`]). The PostgreSQL
//! migration that fills the columns of records stored before them
//! (`migrations/0007_spend.sql`) applies the same rules in SQL.

use serde_json::Value;

/// An amount's whole units are below `10^MAX_WHOLE` (twelve digits at
/// most): a record's millionths fit an `i64` with room for sums.
pub(crate) const MAX_WHOLE: usize = 12;

/// What a record's `cost` member makes of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Costed {
    /// The amount in millionths and its currency; `None`: unpriced.
    pub(crate) priced: Option<(i64, String)>,
    /// The caller's team (`cost.team`, a non-empty string).
    pub(crate) team: Option<String>,
    /// A `cost` member was there and could not be read.
    pub(crate) unreadable: bool,
}

/// The cost of the line `raw` (a JSON object already checked as a
/// record). Only a line that names `cost` (or holds an escape, which may
/// spell it) is read again.
pub(crate) fn cost_in(raw: &str) -> Costed {
    if !raw.contains("cost") && !raw.contains("\\u") {
        return Costed::default();
    }
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(default)]
        cost: Option<Value>,
    }
    match serde_json::from_str::<Line>(raw) {
        Ok(l) => costed(l.cost.as_ref()),
        // `cost` twice: which one would be the call's?
        Err(_) => Costed {
            unreadable: true,
            ..Costed::default()
        },
    }
}

/// A `cost` member's value read.
pub(crate) fn costed(cost: Option<&Value>) -> Costed {
    let unreadable = Costed {
        unreadable: true,
        ..Costed::default()
    };
    let o = match cost {
        None | Some(Value::Null) => return Costed::default(),
        Some(Value::Object(o)) => o,
        Some(_) => return unreadable,
    };
    let team = o
        .get("team")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let priced = match o.get("amount") {
        None if o.get("priced") == Some(&Value::Bool(false)) => None,
        None => return Costed { team, ..unreadable },
        Some(a) => {
            let micros = a.as_str().and_then(micros_of);
            let currency = o
                .get("currency")
                .and_then(Value::as_str)
                .filter(|c| currency_ok(c));
            match (micros, currency) {
                (Some(m), Some(c)) => Some((m, c.to_owned())),
                _ => return Costed { team, ..unreadable },
            }
        }
    };
    Costed {
        priced,
        team,
        unreadable: false,
    }
}

/// A currency as the gateways' catalog takes it: an ISO 4217 code.
fn currency_ok(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

/// `12.345` as 12345000 millionths: digits, then optionally a point and
/// one to six digits; at most [`MAX_WHOLE`] whole digits.
pub(crate) fn micros_of(s: &str) -> Option<i64> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > MAX_WHOLE {
        return None;
    }
    let frac = match frac {
        None => 0,
        Some(f) if digits(f) && f.len() <= 6 => format!("{f:0<6}").parse::<i64>().ok()?,
        Some(_) => return None,
    };
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(frac)
}

/// Millionths as a decimal with six places (`22000` → `0.022000`).
pub fn amount(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn amounts_are_read_exactly_or_not_at_all() {
        assert_eq!(micros_of("0.022000"), Some(22_000));
        assert_eq!(micros_of("12"), Some(12_000_000));
        assert_eq!(micros_of("12.5"), Some(12_500_000));
        assert_eq!(micros_of("0.000001"), Some(1));
        assert_eq!(
            micros_of("999999999999.999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            "",
            ".5",
            "5.",
            "-1.000000",
            "+1",
            "1e3",
            "0.0000001",
            "1.2.3",
            " 1",
            "1,5",
            "1000000000000",
            "0x10",
            "1.00000a",
        ] {
            assert_eq!(micros_of(bad), None, "{bad}");
        }
        assert_eq!(amount(22_000), "0.022000");
        assert_eq!(amount(0), "0.000000");
        assert_eq!(amount(12_345_678_901), "12345.678901");
        assert_eq!(amount(-5), "-0.000005");
    }

    #[test]
    fn a_cost_member_is_priced_unpriced_or_unreadable() {
        let c = |raw: &str| cost_in(raw);
        let priced = c(
            r#"{"seq":1,"cost":{"amount":"0.022000","currency":"EUR","units":40,"team":"data"}}"#,
        );
        assert_eq!(priced.priced, Some((22_000, "EUR".into())));
        assert_eq!(priced.team.as_deref(), Some("data"));
        assert!(!priced.unreadable);
        assert_eq!(c(r#"{"seq":1}"#), Costed::default());
        assert_eq!(c(r#"{"seq":1,"cost":null}"#), Costed::default());
        let free = c(r#"{"cost":{"priced":false,"team":"ops"}}"#);
        assert_eq!((free.priced, free.unreadable), (None, false));
        assert_eq!(free.team.as_deref(), Some("ops"));
        // The member's name escaped is the same member.
        assert_eq!(
            c(r#"{"co\u0073t":{"amount":"1","currency":"USD"}}"#).priced,
            Some((1_000_000, "USD".into()))
        );
        for bad in [
            r#"{"cost":"0.02"}"#,
            r#"{"cost":{}}"#,
            r#"{"cost":{"amount":0.02,"currency":"EUR"}}"#,
            r#"{"cost":{"amount":"0.02"}}"#,
            r#"{"cost":{"amount":"0.02","currency":"eur"}}"#,
            r#"{"cost":{"amount":"-0.02","currency":"EUR"}}"#,
            r#"{"cost":{"amount":"1e9","currency":"EUR"}}"#,
            r#"{"cost":{"amount":"1","currency":"EUR"},"cost":{"amount":"2","currency":"EUR"}}"#,
        ] {
            let got = c(bad);
            assert!(got.unreadable && got.priced.is_none(), "{bad}: {got:?}");
        }
        // An unreadable amount keeps its team.
        assert_eq!(
            c(r#"{"cost":{"amount":"x","currency":"EUR","team":"t"}}"#)
                .team
                .as_deref(),
            Some("t")
        );
    }
}
