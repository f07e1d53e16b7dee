//! A change's turn and what it keeps: the memory taken (with a shared
//! backend, inside a transaction holding the approvals' fleet-wide lock,
//! brought up to date first), the approvals written (finished ones past
//! their keep time dropped), then committed; a turn dropped before its
//! commit ends undone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;
use std::time::SystemTime;

use super::{Approval, Approvals, Changes, Inner, State, Unavailable, KEEP_FINISHED, MAX_KEPT};

impl Approvals {
    /// The memory, taken to change the approvals: with a shared backend,
    /// inside a turn (every other agent's change waits), brought up to
    /// date first when another agent changed the approvals since. Fails
    /// when the backend cannot give the turn or bring the memory up to
    /// date: nothing may change then.
    pub(super) fn write(&self) -> Result<Turn<'_>, Unavailable> {
        let turn = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.backend.begin().map_err(Unavailable::of)?;
        let mut inner = self.lock();
        if let Some(g) = g {
            if inner.loaded != Some(g) {
                let since = inner.loaded;
                if let Err(e) = self.backend.reload(&mut inner.all, since) {
                    self.backend.rollback();
                    inner.loaded = None;
                    return Err(Unavailable::of(e));
                }
                inner.loaded = Some(g);
            }
        }
        Ok(Turn {
            ap: self,
            inner,
            _turn: turn,
            shared: g.is_some(),
            wrote: false,
        })
    }

    /// Brings the memory up to date when the backend is shared and another
    /// agent changed the approvals since it was loaded: how an agent that
    /// changes nothing itself lists what the others decided (called when
    /// another agent says it changed the approvals, and every few seconds).
    pub fn catch_up(&self) -> anyhow::Result<()> {
        let Some(g) = self.backend.generation()? else {
            return Ok(());
        };
        if self.lock().loaded == Some(g) {
            return Ok(());
        }
        // A turn loads again; it writes nothing, so it bumps nothing.
        self.write()?.commit()?;
        Ok(())
    }

    /// Keeps every approval, dropping finished ones past their keep time;
    /// `changed`: the approvals this change added or changed. When it
    /// cannot be kept, the memory is as it was (the dropped ones back).
    pub(super) fn keep(
        &self,
        turn: &mut Turn<'_>,
        changed: &[&str],
        now: SystemTime,
    ) -> std::io::Result<()> {
        let all = &mut turn.inner.all;
        let mut gone: BTreeSet<String> = all
            .values()
            .filter(|a| {
                !(matches!(a.state(now), State::Pending | State::Approved)
                    || now.duration_since(a.requested_at).unwrap_or_default() < KEEP_FINISHED)
            })
            .map(|a| a.id.clone())
            .collect();
        let left = all.len() - gone.len();
        if left > MAX_KEPT {
            let mut finished: Vec<(SystemTime, String)> = all
                .values()
                .filter(|a| !matches!(a.state(now), State::Pending | State::Approved))
                .filter(|a| !gone.contains(&a.id))
                .map(|a| (a.requested_at, a.id.clone()))
                .collect();
            finished.sort();
            gone.extend(finished.into_iter().take(left - MAX_KEPT).map(|(_, id)| id));
        }
        let dropped: Vec<Approval> = gone.iter().filter_map(|id| all.remove(id)).collect();
        let changes = Changes {
            changed: changed
                .iter()
                .filter(|id| all.contains_key(**id))
                .map(|id| (*id).to_owned())
                .collect(),
            removed: gone.into_iter().collect(),
        };
        turn.wrote |= !changes.is_empty();
        let res = self.backend.save(&turn.inner.all, &changes);
        if res.is_err() {
            for a in dropped {
                turn.inner.all.insert(a.id.clone(), a);
            }
        }
        res
    }
}

/// Puts approval `id` back as it was before a change that was not kept
/// (`None`: it did not exist).
pub(super) fn undo(all: &mut BTreeMap<String, Approval>, id: &str, before: Option<Approval>) {
    match before {
        Some(a) => {
            all.insert(a.id.clone(), a);
        }
        None => {
            all.remove(id);
        }
    }
}

/// The approvals' memory held for a change (see [`Approvals::write`]):
/// ended by [`Turn::commit`]; dropped before, the turn ends undone.
pub(super) struct Turn<'a> {
    ap: &'a Approvals,
    pub(super) inner: MutexGuard<'a, Inner>,
    _turn: MutexGuard<'a, ()>,
    /// A turn of a shared backend is open.
    pub(super) shared: bool,
    /// The turn wrote something.
    wrote: bool,
}

impl Turn<'_> {
    /// Ends the turn keeping what it wrote; the memory then holds the
    /// generation the commit made. A commit that fails leaves the memory
    /// to be loaded again at the next turn (whether the database kept the
    /// change is not known: an approval is then lost, never given twice).
    pub(super) fn commit(&mut self) -> Result<(), Unavailable> {
        if !std::mem::take(&mut self.shared) {
            return Ok(());
        }
        #[cfg(test)]
        if self.wrote {
            let hook = self
                .ap
                .before_commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        match self.ap.backend.commit() {
            Ok(g) => {
                self.inner.loaded = g;
                Ok(())
            }
            Err(e) => {
                self.inner.loaded = None;
                Err(Unavailable::of(e))
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !std::mem::take(&mut self.shared) {
            return;
        }
        self.ap.backend.rollback();
        // What was written is undone by the database; the memory too, by
        // the caller, but for a panic: then it is loaded again.
        if self.wrote || std::thread::panicking() {
            self.inner.loaded = None;
        }
    }
}
