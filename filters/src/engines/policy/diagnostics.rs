//! Diagnostics: why an entrypoint names nothing the modules define (with
//! the nearest rule name), and the few evaluation errors shown on stderr.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why `entrypoint` (`data.<package>.<rule>`) names nothing the modules
/// define, if it does not.
pub(super) fn missing_entrypoint(
    modules: &BTreeMap<String, String>,
    entrypoint: &str,
) -> Option<String> {
    let path = entrypoint.strip_prefix("data.")?;
    let (package, rule) = path.rsplit_once('.')?;
    let mut rules: Vec<String> = Vec::new();
    let mut packages: Vec<String> = Vec::new();
    for text in modules.values() {
        let declared = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim().to_owned());
        let Some(declared) = declared else { continue };
        if declared != package {
            packages.push(declared);
            continue;
        }
        for line in text.lines() {
            // A rule head starts a line: `name :=`, `name if`, `name contains` …
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !matches!(name.as_str(), "package" | "import" | "default") {
                rules.push(name);
            } else if let Some(rest) = line.strip_prefix("default ") {
                let n: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rules.push(n);
            }
        }
        if rules.iter().any(|r| r == rule) {
            return None;
        }
    }
    if rules.is_empty() && !packages.iter().any(|p| p == package) {
        let mut known = packages;
        known.sort();
        known.dedup();
        return Some(format!(
            "policy.entrypoint `{entrypoint}`: no module declares package `{package}` (declared: {})",
            known.join(", ")
        ));
    }
    let near = rules
        .iter()
        .filter(|r| edit_distance(r, rule) <= 2)
        .min_by_key(|r| edit_distance(r, rule));
    Some(match near {
        Some(n) => format!(
            "policy.entrypoint `{entrypoint}`: package `{package}` defines no rule `{rule}`; did you mean `{n}`?"
        ),
        None => format!("policy.entrypoint `{entrypoint}`: package `{package}` defines no rule `{rule}`"),
    })
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Evaluation errors are policy bugs; they deny, and the first few details go
/// to stderr (filters have no logging dependency; the audit has the reason).
pub(super) fn tracing_free_log(msg: &str) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 32 {
        eprintln!("warden: policy evaluation error (denied): {msg}");
    }
}
