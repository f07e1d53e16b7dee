//! MCP protocol revisions, compared as the dates they are.

/// An MCP protocol revision (`YYYY-MM-DD`). Only a well-formed date is a
/// revision: a header of any other shape is no revision at all, and is
/// never "at least" one (`"9"` is not later than `2026-07-28`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(u32);

impl ProtocolVersion {
    pub const V2024_11_05: ProtocolVersion = ProtocolVersion(20241105);
    pub const V2025_03_26: ProtocolVersion = ProtocolVersion(20250326);
    pub const V2025_06_18: ProtocolVersion = ProtocolVersion(20250618);
    pub const V2025_11_25: ProtocolVersion = ProtocolVersion(20251125);
    /// Stateless requests, `Mcp-Method`/`Mcp-Name`, multi-round-trip input,
    /// tasks as an extension.
    pub const V2026_07_28: ProtocolVersion = ProtocolVersion(20260728);

    /// Parses `YYYY-MM-DD` (ASCII digits, month 1–12, day 1–31).
    pub fn parse(s: &str) -> Option<ProtocolVersion> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        ((1..=12).contains(&m) && (1..=31).contains(&d))
            .then_some(ProtocolVersion(y * 10_000 + m * 100 + d))
    }

    /// Whether `header` names this revision or a later one.
    pub fn at_least(header: Option<&str>, min: ProtocolVersion) -> bool {
        header.and_then(Self::parse).is_some_and(|v| v >= min)
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.0 / 10_000,
            self.0 / 100 % 100,
            self.0 % 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_compare_as_dates_and_nothing_else_is_one() {
        let v = ProtocolVersion::V2026_07_28;
        assert_eq!(ProtocolVersion::parse("2026-07-28"), Some(v));
        assert_eq!(v.to_string(), "2026-07-28");
        assert!(ProtocolVersion::at_least(Some("2026-07-28"), v));
        assert!(ProtocolVersion::at_least(Some("2027-01-01"), v));
        assert!(!ProtocolVersion::at_least(Some("2025-11-25"), v));
        assert!(!ProtocolVersion::at_least(None, v));
        for bad in [
            "9",
            "9999-99-99",
            "2026-7-28",
            "2026-07-28 ",
            " 2026-07-28",
            "2026-13-01",
            "2026-07-00",
            "２026-07-28",
            "2026_07_28",
            "zzzz-zz-zz",
        ] {
            assert!(
                !ProtocolVersion::at_least(Some(bad), ProtocolVersion::V2024_11_05),
                "{bad:?}"
            );
        }
    }
}
