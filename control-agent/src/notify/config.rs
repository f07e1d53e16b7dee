//! The notifications file (`serve --notify FILE`): where a held call is
//! announced.
//!
//! ```yaml
//! console_url: https://warden.example.com      # links point at {console_url}/console/approvals/<id>
//! webhooks:
//!   - name: ops                                # in the change record and the metrics
//!     kind: generic                            # generic (signed JSON), slack or teams
//!     url: https://hooks.example.com/warden
//!     secret_env: WARDEN_HOOK_SECRET           # or secret_file: the HMAC key (generic: required)
//!     tenants: [acme]                          # only these tenants' calls (none: every tenant)
//!     risks: [HIGH, CRITICAL]                  # only these risk tiers (none: every tier)
//!     events: [held_calls, budget_alerts]      # what it hears (default: held_calls)
//!   - {name: approvers-slack, kind: slack, url_env: SLACK_WEBHOOK_URL}
//! ```
//!
//! `events` chooses what a webhook is sent: `held_calls` (calls waiting
//! for approval, the default, so a file written before budget alerts keeps
//! its meaning) and `budget_alerts` (a money budget crossing one of its
//! alert thresholds, read from the audit records the gateways ship). A
//! webhook's `tenants` scope both; `risks` only held calls (an alert has
//! no risk tier).
//!
//! A webhook URL may be a secret itself (Slack's and Teams' are): give it
//! with `url_env` or `url_file` instead of `url`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The body a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Warden's own JSON, signed (`X-Warden-Signature`).
    Generic,
    /// A Slack incoming webhook's `text` and `blocks`.
    Slack,
    /// A Microsoft Teams incoming webhook's adaptive card.
    Teams,
}

/// What a webhook may hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A call waits for approval.
    HeldCalls,
    /// A money budget crossed one of its alert thresholds.
    BudgetAlerts,
}

/// One webhook, checked.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub kind: Kind,
    pub url: url::Url,
    /// The HMAC-SHA256 key of the signature (required for `generic`).
    pub secret: Option<Vec<u8>>,
    pub tenants: Vec<String>,
    pub risks: Vec<String>,
    /// What it hears of (never empty; default: held calls).
    pub events: Vec<Event>,
}

impl Webhook {
    /// Whether it hears of `e`.
    pub fn hears(&self, e: Event) -> bool {
        self.events.contains(&e)
    }
}

/// The notifications file, checked.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The console's address as approvers reach it (no trailing slash).
    pub console_url: String,
    pub webhooks: Vec<Webhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    console_url: String,
    webhooks: Vec<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    name: String,
    kind: Kind,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    risks: Vec<String>,
    #[serde(default)]
    events: Option<Vec<Event>>,
}

/// Reads and checks the notifications file.
pub fn read(path: &Path) -> anyhow::Result<NotifyConfig> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(
        &text,
        |v| std::env::var(v).ok(),
        |p| std::fs::read_to_string(p).ok(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// One value given inline, by an environment variable or by a file.
fn one_of(
    what: &str,
    inline: Option<String>,
    var: Option<String>,
    file: Option<PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
    read: &impl Fn(&Path) -> Option<String>,
) -> Result<Option<String>, String> {
    match (inline, var, file) {
        (None, None, None) => Ok(None),
        (Some(v), None, None) => Ok(Some(v)),
        (None, Some(v), None) => env(&v)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(Some)
            .ok_or_else(|| format!("{what}_env: `{v}` is not set or empty")),
        (None, None, Some(p)) => read(&p)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(Some)
            .ok_or_else(|| format!("{what}_file: `{}` cannot be read or is empty", p.display())),
        _ => Err(format!("give the {what} one way only")),
    }
}

/// Parses the notifications file's text; `env` and `read` resolve the
/// URLs and secrets given by reference.
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&Path) -> Option<String>,
) -> Result<NotifyConfig, String> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let console = crate::oidc::config::secure_url("console_url", &raw.console_url)?;
    let mut names = std::collections::BTreeSet::new();
    let mut webhooks = Vec::new();
    for h in raw.webhooks {
        let name = h.name.clone();
        let bad = |e: String| format!("webhook `{name}`: {e}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("a name is 1-64 letters, digits, `-` or `_`".into()));
        }
        // not a name comparison: webhook names are ASCII
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(bad("named twice".into()));
        }
        let url = one_of("url", h.url, h.url_env, h.url_file, &env, &read)
            .map_err(bad)?
            .ok_or_else(|| bad("no url (url, url_env or url_file)".into()))?;
        let url = crate::oidc::config::secure_url("url", &url).map_err(bad)?;
        let secret = one_of("secret", None, h.secret_env, h.secret_file, &env, &read)
            .map_err(bad)?
            .map(String::into_bytes);
        if h.kind == Kind::Generic && secret.as_ref().is_none_or(|s| s.len() < 16) {
            return Err(bad(
                "a generic webhook is signed: give secret_env or secret_file (16 bytes at least)"
                    .into(),
            ));
        }
        let risks: Vec<String> = h.risks.iter().map(|r| r.to_ascii_uppercase()).collect(); // not a name comparison: risk tiers
        if let Some(r) = risks
            .iter()
            .find(|r| !["LOW", "MEDIUM", "HIGH", "CRITICAL"].contains(&r.as_str()))
        {
            return Err(bad(format!("risk `{r}`: LOW, MEDIUM, HIGH or CRITICAL")));
        }
        let events = h.events.unwrap_or_else(|| vec![Event::HeldCalls]);
        if events.is_empty() {
            return Err(bad(
                "events: none given (held_calls, budget_alerts or both)".into(),
            ));
        }
        webhooks.push(Webhook {
            name,
            kind: h.kind,
            url,
            secret,
            tenants: h.tenants,
            risks,
            events,
        });
    }
    if webhooks.is_empty() {
        return Err("webhooks: none given".into());
    }
    Ok(NotifyConfig {
        console_url: console.as_str().trim_end_matches('/').to_owned(),
        webhooks,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(text: &str) -> Result<NotifyConfig, String> {
        parse(
            text,
            |v| (v == "K").then(|| "0123456789abcdef-key".to_owned()),
            |_| None,
        )
    }

    #[test]
    fn a_notifications_file_reads_as_written_and_refuses_mistakes() {
        let c = p("console_url: https://w.example/\nwebhooks:\n  - {name: ops, kind: generic, url: https://h.example/x, secret_env: K, risks: [critical]}\n  - {name: s, kind: slack, url_env: K2}\n");
        assert!(c.unwrap_err().contains("`K2` is not set"));
        let c = p("console_url: https://w.example/\nwebhooks:\n  - {name: ops, kind: generic, url: https://h.example/x, secret_env: K, risks: [critical], tenants: [acme]}\n").unwrap();
        assert_eq!(c.console_url, "https://w.example");
        assert_eq!(c.webhooks[0].risks, vec!["CRITICAL".to_owned()]);
        // A file written before `events` hears of held calls only.
        assert_eq!(c.webhooks[0].events, vec![Event::HeldCalls]);
        assert!(!c.webhooks[0].hears(Event::BudgetAlerts));
        let c = p("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack, url: https://h/x, events: [budget_alerts]}\n  - {name: b, kind: teams, url: https://h/y, events: [held_calls, budget_alerts]}\n").unwrap();
        assert!(c.webhooks[0].hears(Event::BudgetAlerts) && !c.webhooks[0].hears(Event::HeldCalls));
        assert!(c.webhooks[1].hears(Event::BudgetAlerts) && c.webhooks[1].hears(Event::HeldCalls));
        for (text, want) in [
            ("console_url: https://w.example\nwebhooks:\n  - {name: ops, kind: generic, url: https://h.example/x}\n", "is signed"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: ops, kind: slack, url: http://h.example/x}\n", "must be https"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: 'a b', kind: slack, url: https://h.example/x}\n", "a name is"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack, url: https://h/x}\n  - {name: A, kind: teams, url: https://h/y}\n", "named twice"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: pager, url: https://h/x}\n", "unknown variant"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack, url: https://h/x, risks: [severe]}\n", "risk `SEVERE`"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack}\n", "no url"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack, url: https://h/x, events: []}\n", "events: none given"),
            ("console_url: https://w.example\nwebhooks:\n  - {name: a, kind: slack, url: https://h/x, events: [spend]}\n", "unknown variant"),
            ("console_url: https://w.example\nwebhooks: []\n", "none given"),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
