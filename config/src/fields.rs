//! Scalar fields as `warden.yaml` spells them: durations, sizes, non-zero
//! counts and names, parsed, or reported as problems at their field path.
//! A leaf: every section (access, guards, model) reads its fields with these.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::Problems;

/// Parses sizes such as `4MiB`, `512KiB`, `1048576`, `16MB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try `4MiB`)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); try `5s` or `250ms`"))
}

pub(crate) fn size(p: &mut Problems, path: &str, v: &Option<String>, default: usize) -> usize {
    match v {
        None => default,
        Some(s) => match parse_size(s) {
            Ok(0) => {
                p.push(path, "must be greater than zero");
                default
            }
            Ok(n) => n,
            Err(e) => {
                p.push(path, e);
                default
            }
        },
    }
}

pub(crate) fn duration(
    p: &mut Problems,
    path: &str,
    v: &Option<String>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                p.push(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                p.push(path, e);
                default
            }
        },
    }
}

pub(crate) fn nonzero(p: &mut Problems, path: &str, v: Option<u32>, default: u32) -> NonZeroU32 {
    let d = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
    match v {
        None => d,
        Some(n) => NonZeroU32::new(n).unwrap_or_else(|| {
            p.push(path, "must be greater than zero");
            d
        }),
    }
}

pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
