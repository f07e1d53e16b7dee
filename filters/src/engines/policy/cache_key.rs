//! The decision cache key: the exact values of every input path the policy
//! can read (not a hash), within a bounded length.

use std::net::IpAddr;

use super::analysis::{Field, KeyPlan};
use super::clock::{Clock, Moment};
use super::input::{pick_members, PolicyInput};

/// Longest cache key kept; larger inputs are evaluated fresh every time.
pub(super) const MAX_KEY: usize = 4096;

pub(super) fn put(key: &mut Vec<u8>, tag: u8, v: Option<&[u8]>) {
    key.push(tag);
    match v {
        None => key.push(0),
        Some(b) => {
            key.push(1);
            key.extend_from_slice(&(b.len() as u32).to_le_bytes());
            key.extend_from_slice(b);
        }
    }
}

impl KeyPlan {
    /// The exact bytes of every input value the policy can read; `None` when
    /// the key would be too large to be worth caching.
    pub(super) fn key(&self, i: &PolicyInput<'_>, clock: &Clock, key: &mut Vec<u8>) -> bool {
        key.clear();
        let picked = match (self.arg_names.is_empty(), i.arguments) {
            (false, Some(raw)) => pick_members(raw, &self.arg_names),
            _ => None,
        };
        let mut next_arg = 0;
        let mut local: Option<Moment> = None;
        for (n, f) in self.fields.iter().enumerate() {
            let tag = n as u8;
            let p = i.principal;
            match f {
                Field::PrincipalId => put(key, tag, Some(p.id.as_bytes())),
                Field::PrincipalTenant => put(key, tag, Some(p.tenant.as_bytes())),
                Field::PrincipalRoles => {
                    key.push(tag);
                    key.extend_from_slice(&(p.roles.len() as u32).to_le_bytes());
                    for r in &p.roles {
                        put(key, 0, Some(r.as_bytes()));
                    }
                }
                Field::PrincipalKind => put(key, tag, Some(p.kind.as_str().as_bytes())),
                Field::PrincipalAuth => put(key, tag, Some(p.auth.as_str().as_bytes())),
                Field::PrincipalAttribute(None) => {
                    key.push(tag);
                    key.extend_from_slice(&(p.attributes.len() as u32).to_le_bytes());
                    for (k, v) in &p.attributes {
                        put(key, 0, Some(k.as_bytes()));
                        put(key, 0, Some(v.as_bytes()));
                    }
                }
                Field::PrincipalAttribute(Some(a)) => {
                    put(key, tag, p.attributes.get(a).map(|v| v.as_bytes()))
                }
                // Every grant that holds, whole: one granted or ended is
                // another key.
                Field::PrincipalGrants => {
                    key.push(tag);
                    key.extend_from_slice(&(i.grants.len() as u32).to_le_bytes());
                    for g in i.grants {
                        put(key, 0, Some(g.id.as_bytes()));
                        put(key, 0, Some(g.kind.as_bytes()));
                        put(key, 0, Some(g.name.as_bytes()));
                        put(key, 0, g.server.as_deref().map(str::as_bytes));
                        put(key, 0, Some(&g.expires_at.to_le_bytes()));
                    }
                }
                Field::ServerName => put(key, tag, Some(i.server.as_bytes())),
                Field::ServerGroup => put(key, tag, Some(i.group.as_bytes())),
                Field::ServerVia => put(key, tag, i.via.map(str::as_bytes)),
                Field::Method => put(key, tag, Some(i.method.as_bytes())),
                Field::Tool => put(key, tag, i.tool.map(str::as_bytes)),
                Field::Prompt => put(key, tag, i.prompt.map(str::as_bytes)),
                Field::ResourceUri => put(key, tag, i.resource_uri.map(str::as_bytes)),
                Field::Argument(None) => put(key, tag, i.arguments.map(str::as_bytes)),
                Field::Argument(Some(_)) => {
                    let n = next_arg;
                    next_arg += 1;
                    match &picked {
                        Some(values) => put(key, tag, values[n].map(str::as_bytes)),
                        // Not an object (or absent): the whole value decides.
                        None => {
                            key.push(0xff);
                            put(key, tag, i.arguments.map(str::as_bytes))
                        }
                    }
                }
                Field::Risk => put(key, tag, i.risk.map(|r| r.as_str().as_bytes())),
                Field::Listing => put(key, tag, Some(&[i.listing as u8])),
                Field::Time => {
                    let m = local.get_or_insert_with(|| clock.moment(i.now));
                    let t = m
                        .time
                        .as_string()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    put(key, tag, Some(t.as_bytes()))
                }
                Field::Hour => {
                    let h = local.get_or_insert_with(|| clock.moment(i.now)).hour;
                    put(key, tag, Some(&[h]))
                }
                Field::Weekday => {
                    let w = local.get_or_insert_with(|| clock.moment(i.now)).weekday;
                    put(key, tag, Some(w.as_bytes()))
                }
                Field::SourceIp => match i.source_ip {
                    Some(IpAddr::V4(a)) => put(key, tag, Some(&a.octets())),
                    Some(IpAddr::V6(a)) => put(key, tag, Some(&a.octets())),
                    None => put(key, tag, None),
                },
                Field::Justification => put(key, tag, i.justification.map(str::as_bytes)),
                Field::SessionId => put(key, tag, i.session_id.map(str::as_bytes)),
                // The whole flow as the policy reads it: the session's
                // state is part of what a decision depends on.
                Field::Flow => match i.flow {
                    Some(f) => {
                        let mut b = Vec::with_capacity(128);
                        f.key_bytes(&mut b);
                        put(key, tag, Some(&b))
                    }
                    None => put(key, tag, None),
                },
                // The whole anomaly value the policy reads: an allow
                // cached for a normal call never answers an anomalous one.
                Field::Anomaly => match i.anomaly {
                    Some(a) => {
                        let mut b = Vec::with_capacity(64);
                        a.key_bytes(&mut b);
                        put(key, tag, Some(&b))
                    }
                    None => put(key, tag, None),
                },
            }
            if key.len() > MAX_KEY {
                return false;
            }
        }
        true
    }
}
