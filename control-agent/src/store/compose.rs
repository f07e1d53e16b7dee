//! Composing what is served: the org source, each tenant's layer under
//! `tenants/<tenant>/` beside its `.layer.json`, and `registry.json`. A
//! layer that does not compose with the org (and the layers accepted
//! before it, in tenant order) is left out alone; the rest is served, and
//! the bundle names the layer withheld (`.manifest`'s `withheld_layers`),
//! so that every gateway refuses its tenant's principals until it composes
//! again.

use std::collections::BTreeMap;

use warden_config::archive::{self, Files};
use warden_config::error::Problem;

use super::layers::{Composed, LayerPick, Release};
use super::Store;
use crate::build::{self, BuildFailure, KillState, Signer};

fn problem(file: &str, message: String) -> Problem {
    Problem {
        file: file.into(),
        path: String::new(),
        message,
    }
}

/// Why a layer is withheld, as `.manifest` carries it: the build's
/// problems, cut to a bound.
fn withheld_why(e: &BuildFailure) -> String {
    const MAX: usize = 2048;
    let mut why = e.to_string();
    if why.len() > MAX {
        let mut end = MAX;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push('…');
    }
    why
}

/// The org source with `with` layers and the registry placed in it, the
/// layers named in `.manifest`, and the tenants whose layer is `withheld`
/// (left out: their principals are refused until it composes again)
/// named there too (`warden_config::tenants::WITHHELD_MEMBER`; the agent
/// alone writes it).
fn assemble(
    base: &Files,
    with: &[&LayerPick],
    signer: Option<&Signer>,
    withheld: &BTreeMap<String, String>,
) -> Result<Files, BuildFailure> {
    let mut files = base.clone();
    let mut names = serde_json::Map::new();
    for l in with {
        let t = &l.entry.tenant;
        for (n, d) in l.files.iter() {
            files.insert(format!("tenants/{t}/{n}"), d.clone());
        }
        let signature = match signer {
            Some(s) => Some(
                archive::sign_layer(&l.entry.digest, &s.pem, s.alg, &s.keyid)
                    .map_err(|e| BuildFailure(vec![problem(".layer.json", e)]))?,
            ),
            None => None,
        };
        let meta = serde_json::json!({
            "tenant": t,
            "revision": l.entry.revision,
            "seq": l.entry.seq,
            "digest": l.entry.digest,
            "published_at": humantime::format_rfc3339_millis(l.entry.published_at).to_string(),
            "actor": l.entry.actor,
            "signature": signature,
        });
        files.insert(
            format!("tenants/{t}/.layer.json"),
            serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        );
        names.insert(t.clone(), l.entry.revision.clone().into());
    }
    let member = warden_config::tenants::WITHHELD_MEMBER;
    let org_names_it = files
        .get(".manifest")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .is_some_and(|m| m.get(member).is_some());
    if !names.is_empty() || !withheld.is_empty() || org_names_it {
        // A `.manifest` that is not an object is refused by the build.
        let mut m: serde_json::Map<String, serde_json::Value> = match files.get(".manifest") {
            Some(b) => match serde_json::from_slice(b) {
                Ok(m) => m,
                Err(_) => return Ok(files),
            },
            None => serde_json::Map::new(),
        };
        if !names.is_empty() {
            m.insert("layers".into(), serde_json::Value::Object(names));
        }
        m.remove(member);
        if !withheld.is_empty() {
            m.insert(member.into(), serde_json::json!(withheld));
        }
        files.insert(
            ".manifest".into(),
            serde_json::to_vec_pretty(&m).unwrap_or_default(),
        );
    }
    Ok(files)
}

impl Store {
    /// Builds the org source `org` with `layers` and `registry`, released
    /// as `release` says. The org source may not carry what the agent
    /// composes (`tenants/`, `registry.json`). When the whole does not build, each layer is
    /// tried in turn with the org and the layers accepted so far; one that
    /// breaks it is left out. Fails only when the org (with the registry)
    /// does not build on its own.
    pub(super) fn compose_build(
        &self,
        org: &Files,
        layers: &[LayerPick],
        registry: &[u8],
        release: Release<'_>,
        kill: &KillState,
        signer: Option<&Signer>,
    ) -> Result<Composed, BuildFailure> {
        let Release { revision, audience } = release;
        let owned: Vec<Problem> = org
            .keys()
            .filter(|n| n.starts_with("tenants/") || n.as_str() == "registry.json")
            .map(|n| {
                problem(
                    n,
                    "the agent composes tenants/ and registry.json: publish a tenant's layer with `warden-agent tenant publish`, change the registry through the registry API".into(),
                )
            })
            .collect();
        if !owned.is_empty() {
            return Err(BuildFailure(owned));
        }
        let mut base = org.clone();
        base.insert("registry.json".into(), registry.to_vec());
        let attempt =
            |with: &[&LayerPick], signer: Option<&Signer>, withheld: &BTreeMap<String, String>| {
                build::build(
                    &assemble(&base, with, signer, withheld)?,
                    revision,
                    kill,
                    signer,
                    audience,
                )
            };
        let names = |with: &[&LayerPick]| -> BTreeMap<String, String> {
            with.iter()
                .map(|l| (l.entry.tenant.clone(), l.entry.revision.clone()))
                .collect()
        };
        let all: Vec<&LayerPick> = layers.iter().collect();
        let none = BTreeMap::new();
        match attempt(&all, signer, &none) {
            Ok(files) => {
                return Ok(Composed {
                    files,
                    layers: names(&all),
                    left_out: BTreeMap::new(),
                })
            }
            Err(e) if layers.is_empty() => return Err(e),
            Err(_) => {}
        }
        // The org alone must build; then each layer on top of it.
        attempt(&[], None, &none)?;
        let mut ok: Vec<&LayerPick> = Vec::new();
        let mut left_out = BTreeMap::new();
        for l in layers {
            let mut with = ok.clone();
            with.push(l);
            match attempt(&with, None, &none) {
                Ok(_) => ok = with,
                Err(e) => {
                    left_out.insert(l.entry.tenant.clone(), e);
                }
            }
        }
        // Each layer left out is withheld: the gateways refuse its
        // tenant's principals rather than judge them by the org's rules
        // alone (fewer rules than the tenant asked for).
        let withheld: BTreeMap<String, String> = left_out
            .iter()
            // A name no grant could have (the agent's tenant names are
            // wider) never had a layer served, and would break the build.
            .filter(|(t, _)| warden_config::tenants::valid_tenant_name(t).is_ok())
            .map(|(t, e)| (t.clone(), withheld_why(e)))
            .collect();
        Ok(Composed {
            files: attempt(&ok, signer, &withheld)?,
            layers: names(&ok),
            left_out,
        })
    }
}
