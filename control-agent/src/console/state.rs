//! The console's own state, apart from the pages: the sessions, the
//! viewers, the host names it answers to, the redactor, the verification
//! turn. The agent's server holds it; the pages read it.

use std::collections::BTreeMap;

use super::session::Sessions;
use crate::approvals::Approver;

/// The console's own state.
pub struct Console {
    pub sessions: Sessions,
    /// Read-only users: name → token digest and tenants (`--viewers`).
    pub viewers: BTreeMap<String, Approver>,
    /// Host names the console answers to (`--console-host`), beside IP
    /// literals and `localhost`: a page of another name that rebinds its
    /// DNS to the agent is refused.
    pub hosts: Vec<String>,
    /// Redacts what records and approvals show (the built-in detectors).
    redactor: std::sync::OnceLock<Option<warden_filters::engines::dlp::Scanner>>,
    /// One chain verification at a time (each reads up to
    /// [`pages::VERIFY_CAP`] records).
    pub(crate) verifying: tokio::sync::Semaphore,
    /// The organisation's identity provider (`--oidc`), when people sign
    /// in through it.
    pub oidc: Option<std::sync::Arc<crate::oidc::Oidc>>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: Sessions::default(),
            viewers: BTreeMap::new(),
            hosts: Vec::new(),
            redactor: std::sync::OnceLock::new(),
            verifying: tokio::sync::Semaphore::new(1),
            oidc: None,
        }
    }
}

impl Console {
    pub fn new(viewers: BTreeMap<String, Approver>, hosts: Vec<String>) -> Console {
        Console {
            viewers,
            // not a name comparison: the console's host names, as `Host` reads.
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            ..Default::default()
        }
    }

    /// Whether a request's `Host` is one the console answers to.
    pub(super) fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        if let Some(rest) = host.strip_prefix('[') {
            // An IPv6 literal, `[::1]:7070`.
            return rest
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        // not a name comparison: a `Host` header's name, case folded.
        let name = host
            .rsplit_once(':')
            .map_or(host, |(n, _)| n)
            .to_ascii_lowercase();
        name == "localhost"
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || self.hosts.contains(&name)
    }

    /// `text` with every built-in DLP detector's match replaced.
    pub fn redact(&self, text: &str) -> String {
        let scanner = self
            .redactor
            .get_or_init(|| warden_filters::engines::dlp::Scanner::new(&[]).ok());
        match scanner {
            Some(s) => visible(&warden_filters::snapshot::redact_with(s, text, usize::MAX)),
            // No scanner: show nothing rather than something unchecked.
            None => "[not shown: the redactor did not start]".into(),
        }
    }
}

/// `text` with every character a reader cannot see written out as its code
/// point (`⟨U+202E⟩`): a bidi override would show `invoice_\u{202e}fdp.exe`
/// as `invoice_exe.pdf`, a zero-width space would hide in a name. What an
/// approver or auditor reads is what the record holds. Line breaks and
/// tabs stay.
pub(super) fn visible(text: &str) -> String {
    use std::fmt::Write;
    let hidden = |c: char| warden_config::person::invisible(c) && !matches!(c, '\n' | '\t');
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            let _ = write!(out, "⟨U+{:04X}⟩", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod shown_tests {
    /// What an approver reads is what the call holds: characters no one
    /// sees are written out, and arguments are laid out only when that
    /// changes nothing but white space.
    #[test]
    fn the_console_shows_what_the_record_holds() {
        assert_eq!(
            super::visible("invoice_\u{202e}fdp.exe"),
            "invoice_⟨U+202E⟩fdp.exe"
        );
        assert_eq!(super::visible("a\u{200b}b\nc\td"), "a⟨U+200B⟩b\nc\td");
        assert_eq!(super::visible("plain café"), "plain café");
        use super::super::views::laid_out;
        assert_eq!(laid_out(r#"{"a":1}"#.into()), "{\n  \"a\": 1\n}");
        for exact in [
            r#"{"amount":0.1000000000000000000001}"#,
            r#"{"amount":1e2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"p":"\u0041"}"#,
        ] {
            assert_eq!(laid_out(exact.into()), exact);
        }
    }
}
