//! Copies everything one backend keeps into another, empty one: how an
//! agent's files move into PostgreSQL (`warden-agent migrate`), and how
//! the embedded store is backed up (`warden-agent backup`). The copy runs
//! inside one turn of the destination: whole or not at all, and no agent
//! on it changes anything meanwhile.

use anyhow::{bail, Context};

use super::backend::{Archive, Backend};

/// What was copied.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub revisions: usize,
    pub history: usize,
    pub tenants: usize,
    pub layer_revisions: usize,
    pub changes: usize,
    pub registry_events: usize,
}

/// Copies what `from` keeps into `to`, which must keep nothing yet (no
/// history, nothing served, no registry, no tenant): a copy never mixes
/// two control planes.
pub fn copy_kept(from: &dyn Backend, to: &dyn Backend) -> anyhow::Result<Copied> {
    to.begin().context("taking the destination's turn")?;
    let res = copy_in_turn(from, to);
    match res {
        Ok(c) => {
            to.commit().context("keeping the copy")?;
            Ok(c)
        }
        Err(e) => {
            to.rollback();
            Err(e)
        }
    }
}

fn copy_in_turn(from: &dyn Backend, to: &dyn Backend) -> anyhow::Result<Copied> {
    if !to.load_history()?.is_empty()
        || to.load_served()?.is_some()
        || to.load_registry()?.is_some()
        || !to.load_layers()?.is_empty()
    {
        bail!("the destination already keeps a control plane: copy only into an empty one");
    }
    let mut c = Copied::default();
    if let Some(seq) = from.sequence() {
        to.save_sequence(seq)?;
    }
    let history = from.load_history()?;
    for h in &history {
        // A revision pruned from the files is pruned here too.
        let built = match from.read_revision(h.seq, Archive::Built) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("revision {}", h.seq)),
        };
        // Revisions from before sources were kept have none: the built
        // archive stands for it, as the store reads it.
        let source = from
            .read_revision(h.seq, Archive::Source)
            .unwrap_or_else(|_| built.clone());
        to.save_revision(h.seq, &built, &source)?;
        c.revisions += 1;
    }
    to.rewrite_history(&history)?;
    c.history = history.len();
    if let Some(served) = from.load_served()? {
        to.save_served(&served, from.load_rollout()?.as_ref())?;
    }
    to.save_kill(&from.load_kill()?)?;
    to.save_kill_log(&from.load_kill_log())?;
    if let Some(r) = from.load_registry()? {
        to.save_registry(&r)?;
    }
    for (server, event) in from.registry_events()? {
        to.append_registry_event(&server, &event)?;
        c.registry_events += 1;
    }
    for (tenant, t) in from.load_layers()? {
        for e in &t.history {
            match from.read_layer(&tenant, e.seq) {
                Ok(src) => {
                    to.save_layer(&tenant, e.seq, &src)?;
                    c.layer_revisions += 1;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("{tenant} layer {}", e.seq)),
            }
        }
        to.rewrite_layer_history(&tenant, &t.history)?;
        to.save_layer_state(&tenant, &t.state)?;
        c.tenants += 1;
    }
    for line in from.all_changes()? {
        to.append_change(&line, u64::MAX)?;
        c.changes += 1;
    }
    Ok(c)
}
