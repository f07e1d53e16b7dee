//! The one name function: the form in which servers, tools, tenants and
//! people are compared wherever the gateway or the agent asks "is this the
//! same name?" — the kill switch, the registry (at the agent and in the
//! gateway's snapshot), the layer checks, the agent's roles and scopes and
//! the console. Two readers never disagree on a name because there is one
//! reading: [`name_key`] (and [`same_name`] over it).
//!
//! - A server or a tool: names are written in `A-Z a-z 0-9 _ - .`, and two
//!   that differ only in case are one (`OldAPI` is `oldapi`, `LEDGER` is
//!   `ledger`): some peer, operator or policy reads them alike. Anything
//!   else (a look-alike letter, a full-width form) is folded as a person's
//!   name is, so a pause or a refusal covers it too; such a name is never
//!   a valid server name, so it is refused where it is written.
//! - A person: [`crate::person::canonical_or_marked`] (case, accents and
//!   compatibility forms folded; invisible characters marked).
//! - A tenant: [`crate::person::tenant_key`] (ASCII case folded, nothing
//!   else: look-alikes of a tenant are other tenants).
//!
//! Where a name is first written (a server registered, a layer published,
//! a kill switch pulled), a spelling that has the key of another name in
//! use but is not that name is refused, so that every later reader sees
//! one spelling; readers still compare by key, so a bundle written
//! elsewhere reads alike too.

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Server,
    Tool,
    Tenant,
    Person,
}

/// The one form `name` (of a `kind`) is compared in.
pub fn name_key(kind: Name, name: &str) -> String {
    match kind {
        Name::Tenant => crate::person::tenant_key(name),
        // ASCII names (all valid server and tool names): lower case,
        // without spaces around; any other by the person's folding.
        Name::Server | Name::Tool | Name::Person => crate::person::canonical_or_marked(name),
    }
}

/// Whether `a` and `b` are one name of `kind` ([`name_key`]).
pub fn same_name(kind: Name, a: &str, b: &str) -> bool {
    a == b || name_key(kind, a) == name_key(kind, b)
}

/// Sites the listing test of [`tests`] lets compare in another form, in
/// files other work keeps: (file, the line's text, why).
#[cfg(test)]
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "config/src/tenants/checks.rs",
        "trim_end_matches('.')",
        "a host (a route's, a grant's): compared as the router matches hosts",
    ),
    (
        "config/src/tenants/checks.rs",
        "crate::person::canonical(",
        "a layer's tenant claims (its `tenant:`, its keys', approvers', quotas'): whose rules apply, the canonical form (config::person), kept with the tenant-claims rules",
    ),
    (
        "control-agent/src/store/layers.rs",
        "warden_config::person::canonical(",
        "a layer's `tenant:` read exactly as the gateway's check_layer reads it (the line above in checks.rs)",
    ),
    (
        "filters/src/guards/registry.rs",
        "claim.eq_ignore_ascii_case(owner)",
        "a tenant's membership: stricter than the one form on purpose (tenant names are ASCII; nothing around or inside them folds)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_tools_are_one_name_in_any_case() {
        for kind in [Name::Server, Name::Tool] {
            for (a, b) in [
                ("oldapi", "OldAPI"),
                ("ledger", "LEDGER"),
                ("ledger", " Ledger "),
                ("crm-2.x", "CRM-2.X"),
                ("ledger", "\u{ff4c}edger"),
            ] {
                assert!(same_name(kind, a, b), "{a} / {b}");
            }
            for (a, b) in [
                ("ledger", "ledger2"),
                ("ledger", "ledger_alive"),
                ("a.b", "a_b"),
            ] {
                assert!(!same_name(kind, a, b), "{a} / {b}");
            }
            // Invisible characters are never another name's.
            assert!(!same_name(kind, "ledger", "led\u{200b}ger"));
        }
        assert!(same_name(Name::Tenant, "finance", "FINANCE"));
        assert!(!same_name(Name::Tenant, "finance", "\u{fb01}nance"));
        assert!(same_name(Name::Person, "alice", "\u{ff41}lice"));
    }

    /// The sites that compare names, listed: every file of the agent, the
    /// layer checks, the kill switch and the gateway's registry reads
    /// names through [`name_key`] / [`same_name`] and nothing else. A
    /// comparison in another form (`eq_ignore_ascii_case`,
    /// `to_ascii_lowercase`, `to_lowercase`, `tenant_key`,
    /// `canonical_or_marked`, `same_tenant`, …) fails this test unless its
    /// line (or the one above it) says what it compares that is not a name
    /// (`// not a name comparison: …`: a host, a header, a state, a URL), or
    /// it is one of [`ALLOWED`], each with its reason.
    #[test]
    fn every_name_comparison_goes_through_the_one_function() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .to_path_buf();
        let dirs = [
            "control-agent/src",
            "config/src/tenants",
            "config/src/access/policy.rs",
            "config/src/model/servers.rs",
            "config/src/lib.rs",
            "filters/src/guards/kill_switch.rs",
            "filters/src/guards/registry.rs",
        ];
        let forms = [
            "eq_ignore_ascii_case",
            "to_ascii_lowercase",
            "to_lowercase",
            "to_ascii_uppercase",
            "to_uppercase",
            "UniCase",
            "person::tenant_key(",
            "person::canonical_or_marked(",
            "person::canonical(",
            "person::strict_key(",
        ];
        let mut files = Vec::new();
        for d in dirs {
            let p = root.join(d);
            if p.is_file() {
                files.push(p);
                continue;
            }
            let mut stack = vec![p];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        }
        assert!(files.len() > 40, "the sources were not found: {files:?}");
        let mut bad = Vec::new();
        for f in &files {
            let name = f.to_string_lossy();
            // Tests assert on every spelling on purpose.
            if name.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(f).expect("source");
            // Whether the comment lines just above the current line say
            // what a site compares that is not a name.
            let mut said = false;
            let mut code_seen = false;
            for (i, line) in text.lines().enumerate() {
                if code_seen && line.trim() == "#[cfg(test)]" {
                    // An inline test module ends the file's code.
                    let rest = text.lines().nth(i + 1).unwrap_or("");
                    if rest.trim_start().starts_with("mod ") && rest.trim_end().ends_with('{') {
                        break;
                    }
                }
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    said |= line.contains("not a name comparison:");
                    continue;
                }
                code_seen = true;
                let code = line.split("//").next().unwrap_or("");
                if let Some(form) = forms.iter().find(|f| code.contains(*f)) {
                    let marked = said
                        || line.contains("not a name comparison:")
                        || ALLOWED
                            .iter()
                            .any(|(file, text, _)| name.ends_with(file) && line.contains(text));
                    if !marked {
                        bad.push(format!("{}:{}: {form}: {}", name, i + 1, line.trim()));
                    }
                }
                // A marker covers the statement it stands above.
                if code.trim_end().ends_with(';') || code.trim_end().ends_with('{') {
                    said = false;
                }
            }
        }
        assert!(
            bad.is_empty(),
            "names compared outside warden_config::names (use name_key/same_name, or mark what is not a name with `// not a name comparison: why`):\n{}",
            bad.join("\n")
        );
    }
}
