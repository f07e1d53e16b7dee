//! Data classification and information flow (`flows:` and the catalog's
//! labels): the typed model. The guard that enforces it is
//! `warden_filters::guards::flow`; `docs/data-flow.md` explains the model.

use crate::error::Problems;
use crate::raw;

/// The levels when a bundle names none, lowest first.
pub const DEFAULT_LEVELS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// What a tool (or resource) does with data, for flow tracking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles {
    /// Reads private data: what it returns carries its classification.
    pub private: bool,
    /// Returns content from outside (a web page, an email, a ticket).
    pub untrusted: bool,
    /// Sends data outward (posts, mails, fetches a URL it is given).
    pub sink: bool,
}

impl Roles {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.private {
            v.push("private");
        }
        if self.untrusted {
            v.push("untrusted");
        }
        if self.sink {
            v.push("sink");
        }
        v
    }
}

/// A classification and flow roles as the catalog gives them (`None`: not
/// given, the defaults apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Index into [`Flows::levels`].
    pub classification: Option<u8>,
    pub roles: Option<Roles>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Track {
    /// Per MCP session; a call without a session per principal.
    #[default]
    Session,
    /// Per principal: a new session cannot launder earlier calls' labels.
    Principal,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Decide {
    /// The gateway's rules refuse a forbidden flow.
    #[default]
    Gateway,
    /// The Rego policy decides (`input.flow`); the gateway only tracks.
    Policy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnViolation {
    #[default]
    Deny,
    /// Held for a human approval bound to that call.
    Approval,
}

/// The principal attribute that holds its clearance (a level's name); a
/// principal without one has `flows.default_clearance`.
pub const CLEARANCE_ATTRIBUTE: &str = "clearance";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flows {
    pub levels: Vec<String>,
    pub track: Track,
    pub default_clearance: u8,
    pub dlp_level: u8,
    pub unlabelled: Roles,
    pub decide: Decide,
    pub on_violation: OnViolation,
    pub approvers: u8,
}

impl Flows {
    /// The index of level `name` (compared without case).
    pub fn level(&self, name: &str) -> Option<u8> {
        self.levels
            .iter()
            .position(|l| l.eq_ignore_ascii_case(name.trim()))
            .map(|i| i as u8)
    }

    /// The name of level `i`.
    pub fn name(&self, i: u8) -> &str {
        self.levels.get(usize::from(i)).map_or("?", String::as_str)
    }
}

fn roles(list: &[String], at: &str, p: &mut Problems) -> Roles {
    let mut r = Roles::default();
    for (i, name) in list.iter().enumerate() {
        match name.as_str() {
            "private" => r.private = true,
            "untrusted" => r.untrusted = true,
            "sink" => r.sink = true,
            other => p.push(
                format!("{at}[{i}]"),
                format!("`{other}` is not a flow role (private, untrusted, sink)"),
            ),
        }
    }
    r
}

/// Reads `flows:`.
pub(crate) fn flows(raw: Option<&raw::FlowsConfig>, p: &mut Problems) -> Option<Flows> {
    let raw = raw?;
    let levels: Vec<String> = match &raw.levels {
        Some(l) => l.iter().map(|s| s.trim().to_owned()).collect(),
        None => DEFAULT_LEVELS.iter().map(|s| (*s).to_owned()).collect(),
    };
    if levels.len() < 2 || levels.len() > 16 {
        p.push("flows.levels", "name between 2 and 16 levels, lowest first");
    }
    for (i, l) in levels.iter().enumerate() {
        if l.is_empty()
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            p.push(
                format!("flows.levels[{i}]"),
                "a level is a word (letters, digits, `_`, `-`)",
            );
        }
        if levels[..i].iter().any(|o| o.eq_ignore_ascii_case(l)) {
            p.push(
                format!("flows.levels[{i}]"),
                format!("`{l}` is named twice"),
            );
        }
    }
    let mut f = Flows {
        levels,
        track: Track::Session,
        default_clearance: 1,
        dlp_level: 2,
        unlabelled: Roles {
            untrusted: true,
            ..Roles::default()
        },
        decide: Decide::Gateway,
        on_violation: OnViolation::Deny,
        approvers: raw.approvers.unwrap_or(1),
    };
    let top = (f.levels.len().max(1) - 1) as u8;
    f.default_clearance = f.default_clearance.min(top);
    f.dlp_level = f.dlp_level.min(top);
    let level = |field: &str, v: &Option<String>, dflt: u8, p: &mut Problems| -> u8 {
        match v {
            None => dflt,
            Some(name) => f.level(name).unwrap_or_else(|| {
                p.push(
                    format!("flows.{field}"),
                    format!("`{name}` is not one of flows.levels"),
                );
                dflt
            }),
        }
    };
    let dc = level(
        "default_clearance",
        &raw.default_clearance,
        f.default_clearance,
        p,
    );
    let dl = level("dlp_level", &raw.dlp_level, f.dlp_level, p);
    f.default_clearance = dc;
    f.dlp_level = dl;
    if let Some(u) = &raw.unlabelled {
        f.unlabelled = roles(u, "flows.unlabelled", p);
    }
    f.track = match raw.track.as_deref() {
        None | Some("session") => Track::Session,
        Some("principal") => Track::Principal,
        Some(o) => {
            p.push("flows.track", format!("`{o}`: session or principal"));
            Track::Session
        }
    };
    f.decide = match raw.decide.as_deref() {
        None | Some("gateway") => Decide::Gateway,
        Some("policy") => Decide::Policy,
        Some(o) => {
            p.push("flows.decide", format!("`{o}`: gateway or policy"));
            Decide::Gateway
        }
    };
    f.on_violation = match raw.on_violation.as_deref() {
        None | Some("deny") => OnViolation::Deny,
        Some("approval") => OnViolation::Approval,
        Some(o) => {
            p.push("flows.on_violation", format!("`{o}`: deny or approval"));
            OnViolation::Deny
        }
    };
    if !(1..=5).contains(&f.approvers) {
        p.push("flows.approvers", "must be between 1 and 5");
    }
    Some(f)
}

/// The labels a catalog entry gives (`at`: its field path).
pub(crate) fn labels(
    flows: Option<&Flows>,
    classification: &Option<String>,
    flow: &Option<Vec<String>>,
    at: &str,
    p: &mut Problems,
) -> Labels {
    if flows.is_none() && (classification.is_some() || flow.is_some()) {
        p.push(
            at,
            "a classification or flow roles need a `flows:` section (they would do nothing)",
        );
        return Labels::default();
    }
    let Some(f) = flows else {
        return Labels::default();
    };
    Labels {
        classification: classification.as_ref().and_then(|c| {
            f.level(c).or_else(|| {
                p.push(
                    format!("{at}.classification"),
                    format!("`{c}` is not one of flows.levels ({})", f.levels.join(", ")),
                );
                None
            })
        }),
        roles: flow.as_ref().map(|r| roles(r, &format!("{at}.flow"), p)),
    }
}

/// Whether `uri` matches `pattern` (`*` matches any run of characters).
pub fn uri_matches(pattern: &str, uri: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == uri;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !uri.starts_with(first) || uri.len() < first.len() + last.len() || !uri.ends_with(last) {
        return false;
    }
    let mut rest = &uri[first.len()..uri.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_patterns() {
        assert!(uri_matches("hr://employees/*", "hr://employees/42"));
        assert!(uri_matches("*", "anything"));
        assert!(uri_matches("a*b*c", "aXXbYYc"));
        assert!(!uri_matches("a*b*c", "aXXc"));
        assert!(!uri_matches("hr://employees/*", "hr://other/1"));
        assert!(uri_matches("exact://x", "exact://x"));
        assert!(!uri_matches("ab*ba", "aba"));
    }

    #[test]
    fn defaults_and_problems() {
        let mut p = Problems::default();
        let f = flows(Some(&raw::FlowsConfig::default()), &mut p).unwrap_or_else(|| unreachable!());
        assert!(p.is_empty());
        assert_eq!(f.levels, DEFAULT_LEVELS);
        assert_eq!(
            (f.name(f.default_clearance), f.name(f.dlp_level)),
            ("internal", "confidential")
        );
        assert!(f.unlabelled.untrusted && !f.unlabelled.sink);
        let bad = raw::FlowsConfig {
            levels: Some(vec!["a".into(), "A".into()]),
            track: Some("tenant".into()),
            ..Default::default()
        };
        let mut p = Problems::default();
        flows(Some(&bad), &mut p);
        assert_eq!(
            p.into_vec().len(),
            2,
            "a level named twice, an unknown track"
        );
    }
}
