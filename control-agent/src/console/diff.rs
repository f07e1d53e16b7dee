//! The difference between two revisions' sources, file by file, as the
//! bundles page shows it (unified, three lines of context).

use warden_config::archive::Files;

pub struct FileDiff {
    pub name: String,
    /// `added`, `removed`, `changed`, `binary`, or why it is not shown.
    pub change: &'static str,
    /// (`+`, `-`, ` ` or `@`, the line's text).
    pub lines: Vec<(char, String)>,
}

/// Whether a file's content may be shown: the configuration, the policy
/// and its data. Anything else in a source (a credentials file the bundle
/// names, a key) is listed as changed, never shown.
pub fn shown(name: &str) -> bool {
    matches!(name, "warden.yaml" | "data.json" | ".manifest")
        || (name.ends_with(".rego") && !name.contains(".."))
}

/// Whether a file of a tenant's layer may be shown: its `tenant.yaml`
/// (keys and approvers appear there as digests only) and its Rego.
pub fn shown_layer(name: &str) -> bool {
    name == "tenant.yaml" || (name.ends_with(".rego") && !name.contains(".."))
}

/// Files that differ between `a` and `b`, in name order. Each file's whole
/// text goes through `redact` before it is compared (detectors that span
/// lines, such as a PEM key, see it whole).
pub fn diff(a: &Files, b: &Files, redact: impl Fn(&str) -> String) -> Vec<FileDiff> {
    diff_shown(a, b, redact, shown)
}

/// As [`diff`], showing the files `shown` allows (the others are listed
/// as changed, never shown).
pub fn diff_shown(
    a: &Files,
    b: &Files,
    redact: impl Fn(&str) -> String,
    shown: fn(&str) -> bool,
) -> Vec<FileDiff> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (old, new) = (a.get(name), b.get(name));
        if old == new {
            continue;
        }
        let change = match (old, new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        if !shown(name) {
            out.push(FileDiff {
                name: name.clone(),
                change: "not shown (only the configuration and Rego are)",
                lines: vec![],
            });
            continue;
        }
        let (Ok(old_text), Ok(new_text)) = (
            std::str::from_utf8(old.map_or(&[][..], |v| v.as_slice())),
            std::str::from_utf8(new.map_or(&[][..], |v| v.as_slice())),
        ) else {
            out.push(FileDiff {
                name: name.clone(),
                change: "binary",
                lines: vec![],
            });
            continue;
        };
        let (old_text, new_text) = (redact(old_text), redact(new_text));
        let d = similar::TextDiff::from_lines(&old_text, &new_text);
        let mut lines = Vec::new();
        for group in d.grouped_ops(3) {
            if let (Some(first), Some(last)) = (group.first(), group.last()) {
                let (o, n) = (first.old_range(), first.new_range());
                lines.push((
                    '@',
                    format!(
                        "@@ -{},{} +{},{} @@",
                        o.start + 1,
                        last.old_range().end - o.start,
                        n.start + 1,
                        last.new_range().end - n.start
                    ),
                ));
            }
            for op in &group {
                for c in d.iter_changes(op) {
                    let tag = match c.tag() {
                        similar::ChangeTag::Insert => '+',
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Equal => ' ',
                    };
                    lines.push((tag, c.value().trim_end_matches('\n').to_owned()));
                }
            }
        }
        out.push(FileDiff {
            name: name.clone(),
            change,
            lines,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_added_and_removed_files() {
        let mut a = Files::new();
        a.insert("warden.yaml".into(), b"a: 1\nb: 2\nc: 3\n".to_vec());
        a.insert("old.rego".into(), b"package x\n".to_vec());
        let mut b = Files::new();
        b.insert("warden.yaml".into(), b"a: 1\nb: 20\nc: 3\n".to_vec());
        b.insert("new.rego".into(), b"package y\n".to_vec());
        b.insert("secrets/upstream.token".into(), b"s3cr3t\n".to_vec());
        let d = diff(&a, &b, |t| t.to_owned());
        let names: Vec<(&str, &str)> = d.iter().map(|f| (f.name.as_str(), f.change)).collect();
        assert_eq!(names[..2], [("new.rego", "added"), ("old.rego", "removed")]);
        assert!(names[2].0 == "secrets/upstream.token" && names[2].1.starts_with("not shown"));
        assert!(
            d[2].lines.is_empty(),
            "a file outside the list is never shown"
        );
        assert_eq!(names[3], ("warden.yaml", "changed"));
        let y = &d[3].lines;
        assert!(y.contains(&('-', "b: 2".into())) && y.contains(&('+', "b: 20".into())));
        assert_eq!(y[0], ('@', "@@ -1,3 +1,3 @@".into()));
    }
}
