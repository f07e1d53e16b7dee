//! The policy engine's settings (`policy:`) and the kill switch
//! (`kill_switch:`).

use std::collections::HashSet;

use crate::denial::DenialStyle;
use crate::error::Problems;
use crate::host::{place_of, Place};
use crate::names::{name_key, same_name, Name};
use crate::raw;

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub entrypoint: String,
    pub denial: DenialStyle,
    pub timezone: String,
    pub cache_capacity: u64,
    /// A candidate rule path evaluated beside `entrypoint`, never enforced.
    pub shadow: Option<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            entrypoint: "data.warden.authz.decision".into(),
            denial: DenialStyle::ToolError,
            timezone: "UTC".into(),
            cache_capacity: 100_000,
            shadow: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillSwitch {
    pub all: bool,
    pub tenants: HashSet<String>,
    pub principals: HashSet<String>,
    pub servers: HashSet<String>,
    /// Tool names paused on every server.
    pub tools: HashSet<String>,
    /// `(server, tool)` pairs.
    pub server_tools: HashSet<(String, String)>,
    /// Where paused servers were reached when they were paused
    /// (`kill_switch.upstreams`): `KillSwitch::compose` (`model`) pauses every
    /// server reached there.
    pub upstreams: Vec<Place>,
}

/// Whether `who` is in `set` in the one form names of `kind` are compared
/// in ([`crate::names`]). No key is built for a lookup in an empty set:
/// this runs on every message and every reply.
pub(crate) fn named(set: &HashSet<String>, kind: Name, who: &str) -> bool {
    !set.is_empty()
        && (set.contains(who) || {
            let key = name_key(kind, who);
            set.iter().any(|s| name_key(kind, s) == key)
        })
}

impl KillSwitch {
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.tenants.is_empty()
            && self.principals.is_empty()
            && self.servers.is_empty()
            && self.tools.is_empty()
            && self.server_tools.is_empty()
            && self.upstreams.is_empty()
    }

    /// What of the switch pauses a message of `principal` (of `tenant`) to
    /// `server` (reached through the virtual server `via`, if any), naming
    /// `tool` when it is a call or about a call's task: `all`, `tenant`,
    /// `principal`, `server` or `tool`. The one rule, for messages as they
    /// are judged and for replies that outlive the bundle they began under.
    pub fn pauses(
        &self,
        tenant: &str,
        principal: &str,
        server: &str,
        via: Option<&str>,
        tool: Option<&str>,
    ) -> Option<&'static str> {
        if self.all {
            return Some("all");
        }
        // Every spelling the gateway takes as the same tenant or person
        // (case, a padding space, accents and compatibility forms) is
        // paused with it: a pause may only be broader than its words. A
        // tenant's rules are whose the canonical form says (a person's
        // folding), so its pause is too.
        if named(&self.tenants, Name::Person, tenant) {
            return Some("tenant");
        }
        if named(&self.principals, Name::Person, principal) {
            return Some("principal");
        }
        // A paused virtual server pauses what goes through it.
        if named(&self.servers, Name::Server, server)
            || via.is_some_and(|v| named(&self.servers, Name::Server, v))
        {
            return Some("server");
        }
        let tool = tool?;
        (named(&self.tools, Name::Tool, tool)
            || (!self.server_tools.is_empty()
                && (self
                    .server_tools
                    .contains(&(server.to_owned(), tool.to_owned()))
                    || self.server_tools.iter().any(|(s, t)| {
                        same_name(Name::Server, s, server) && same_name(Name::Tool, t, tool)
                    }))))
        .then_some("tool")
    }
}

pub(crate) fn policy(raw: &raw::PolicyConfig, p: &mut Problems) -> PolicySettings {
    let d = PolicySettings::default();
    let entrypoint = raw.entrypoint.clone().unwrap_or(d.entrypoint);
    let rule_path = |path: &str| {
        path.starts_with("data.")
            && path
                .split('.')
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    if !rule_path(&entrypoint) {
        p.push(
            "policy.entrypoint",
            format!("`{entrypoint}` is not a rule path such as `data.warden.authz.decision`"),
        );
    }
    if let Some(shadow) = &raw.shadow {
        if !rule_path(shadow) {
            p.push(
                "policy.shadow",
                format!("`{shadow}` is not a rule path such as `data.candidate.authz.decision`"),
            );
        } else if *shadow == entrypoint {
            p.push("policy.shadow", "is the enforced entrypoint itself");
        }
    }
    let denial = match raw.denial.as_deref() {
        None | Some("tool_error") => DenialStyle::ToolError,
        Some("error") => DenialStyle::Error,
        Some(o) => {
            p.push(
                "policy.denial",
                format!("`{o}` is not a denial style (tool_error or error)"),
            );
            DenialStyle::ToolError
        }
    };
    PolicySettings {
        entrypoint,
        denial,
        timezone: raw.timezone.clone().unwrap_or(d.timezone),
        cache_capacity: raw.cache_capacity.unwrap_or(d.cache_capacity),
        shadow: raw.shadow.clone(),
    }
}

pub(crate) fn kill_switch(raw: &raw::KillSwitchConfig, p: &mut Problems) -> KillSwitch {
    let mut k = KillSwitch {
        all: raw.all,
        tenants: raw.tenants.iter().cloned().collect(),
        principals: raw.principals.iter().cloned().collect(),
        servers: raw.servers.iter().cloned().collect(),
        ..KillSwitch::default()
    };
    for (name, list) in &raw.upstreams {
        for (i, a) in list.iter().enumerate() {
            match place_of(a) {
                Some(pl) => k.upstreams.push(pl),
                None => p.push(
                    format!("kill_switch.upstreams.{name}[{i}]"),
                    format!("`{}` is not an ip:port address", a.escape_debug()),
                ),
            }
        }
    }
    for (i, t) in raw.tools.iter().enumerate() {
        match t.split_once('/') {
            Some((s, tool)) if !s.is_empty() && !tool.is_empty() => {
                k.server_tools.insert((s.to_owned(), tool.to_owned()));
            }
            Some(_) => p.push(
                format!("kill_switch.tools[{i}]"),
                "must be `tool` or `server/tool`",
            ),
            None => {
                k.tools.insert(t.clone());
            }
        }
    }
    k
}

#[cfg(test)]
mod kill_switch_tests {
    use super::KillSwitch;

    #[test]
    fn a_pause_covers_every_spelling_of_its_tenant_and_principal() {
        let mut k = KillSwitch::default();
        k.tenants.insert("finance".into());
        k.principals.insert("alice".into());
        for t in [
            "finance",
            "FINANCE",
            " finance ",
            "Finance",
            "financé",
            "ｆｉｎａｎｃｅ",
        ] {
            assert_eq!(k.pauses(t, "bob", "s", None, None), Some("tenant"), "{t:?}");
        }
        for p in ["alice", "ALICE", "Alice ", "alicé"] {
            assert_eq!(
                k.pauses("hr", p, "s", None, None),
                Some("principal"),
                "{p:?}"
            );
        }
        assert_eq!(k.pauses("hr", "bob", "s", None, None), None);
        assert_eq!(k.pauses("financial", "alicia", "s", None, None), None);
    }
}
