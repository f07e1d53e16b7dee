//! What a `warden.yaml` or a `tenant.yaml` says of servers: their names
//! and where they are reached.

use warden_config::names::{same_name, Name};

/// The upstream addresses (`upstreams`) of every server a `warden.yaml`
/// or a `tenant.yaml` defines whose name is `server` in the one form.
pub fn server_upstreams(yaml: &[u8], server: &str) -> Vec<String> {
    let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(yaml) else {
        return Vec::new();
    };
    let lists = std::iter::once(doc.get("servers")).chain(
        doc.get("service_groups")
            .and_then(|g| g.as_sequence())
            .into_iter()
            .flatten()
            .map(|g| g.get("servers")),
    );
    let mut out = Vec::new();
    for l in lists.flatten().filter_map(|l| l.as_sequence()) {
        for s in l {
            let named = s
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| same_name(Name::Server, n, server));
            if !named {
                continue;
            }
            for u in s
                .get("upstreams")
                .and_then(|u| u.as_sequence())
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
            {
                if !out.iter().any(|o| o == u) {
                    out.push(u.to_owned());
                }
            }
        }
    }
    out
}

/// Server names a `warden.yaml` (`servers`, `service_groups[].servers`)
/// or a `tenant.yaml` (`servers`) defines.
pub fn server_names(yaml: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(yaml) else {
        return Vec::new();
    };
    let names = |v: Option<&serde_yaml_ng::Value>| -> Vec<String> {
        v.and_then(|s| s.as_sequence())
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = names(doc.get("servers"));
    for g in doc
        .get("service_groups")
        .and_then(|g| g.as_sequence())
        .into_iter()
        .flatten()
    {
        out.extend(names(g.get("servers")));
    }
    out
}
