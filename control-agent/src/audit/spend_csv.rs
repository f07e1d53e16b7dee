//! A spend report as CSV (RFC 4180: CRLF line ends, a cell quoted when it
//! holds a comma, a quote or a line break, its quotes doubled), safe to
//! open in a spreadsheet: a cell a spreadsheet would read as a formula
//! (starting `=`, `+`, `-`, `@`, a tab or a carriage return) is written
//! after a `'`.
//!
//! The first column says what a line is: `group` (one group in one
//! currency), `total` (every matching record in one currency, the groups
//! left out included), `truncated` (more groups matched than were
//! written).

use super::cost::amount;
use super::spend::{Spend, SpendQuery};

/// One cell, neutralised and quoted as needed.
pub fn cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn line(out: &mut String, cells: &[&str]) {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// The report: a header, a line per group, a line per currency's total,
/// and a `truncated` line when groups were left out.
pub fn csv(q: &SpendQuery, s: &Spend) -> String {
    let mut out = String::new();
    let keys = q.by.len();
    let mut header = vec!["row"];
    header.extend(q.by.iter().map(|k| k.name()));
    header.extend(["calls", "amount", "currency"]);
    line(&mut out, &header);
    for r in &s.rows {
        let (calls, amt) = (r.calls.to_string(), amount(r.micros));
        let mut cells = vec!["group"];
        cells.extend(r.keys.iter().map(|k| k.as_deref().unwrap_or("")));
        cells.extend([calls.as_str(), amt.as_str(), r.currency.as_str()]);
        line(&mut out, &cells);
    }
    for t in &s.totals {
        let (calls, amt) = (t.calls.to_string(), amount(t.micros));
        let mut cells = vec!["total"];
        cells.extend(std::iter::repeat_n("", keys));
        cells.extend([calls.as_str(), amt.as_str(), t.currency.as_str()]);
        line(&mut out, &cells);
    }
    if s.truncated {
        let mut cells = vec!["truncated"];
        cells.extend(std::iter::repeat_n("", keys + 3));
        line(&mut out, &cells);
    }
    out
}
