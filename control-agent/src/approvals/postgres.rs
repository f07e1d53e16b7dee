//! Approvals kept in PostgreSQL (`serve --database`), shared by the agents
//! on one database: a row of `warden_approvals` each (`migrations/
//! 0001_store.sql`, `0004_approvals.sql`), the approval's JSON and the
//! generation whose turn last wrote it.
//!
//! Every change runs inside a turn on the domain [`DOMAIN`] (see
//! [`crate::pg`]): the queue begins one, brings its memory up to date when
//! another agent changed the approvals since it last loaded, changes what
//! it must, writes the rows that changed (an upsert for each approval
//! added or changed, a delete for those dropped) and commits. Turns are
//! serialised by the domain's fleet-wide lock, so a row written in the
//! turn that began at generation G carries G + 1, the generation its
//! commit makes, and an agent whose memory is of generation G reads back
//! only the rows of a higher one (and the ids, for what was dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::Context;

use crate::pg::{io_error, Db};

use super::file::{ApprovalBackend, Changes};
use super::types::Approval;

/// The approvals' domain (their lock and generation).
pub const DOMAIN: &str = "approvals";

/// The approvals' rows on one connection of their own.
pub struct Postgres {
    db: Db,
    /// The generation the open turn began at (`None`: no turn is open).
    turn: Mutex<Option<u64>>,
}

impl Postgres {
    /// Connects to the database at `url` (migrated: [`crate::pg::migrate`]).
    pub fn connect(url: &str) -> anyhow::Result<Postgres> {
        Ok(Postgres {
            db: Db::connect(url, "approvals")?,
            turn: Mutex::new(None),
        })
    }

    fn open_turn(&self) -> Option<u64> {
        *self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_turn(&self, g: Option<u64>) {
        *self.turn.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }
}

/// Rows `(id, JSON)` read back: each approval under its row's id (a row
/// whose approval names another id is refused: it would be kept twice).
fn parse(rows: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, Approval>> {
    rows.into_iter()
        .map(|(id, json)| {
            let a: Approval = serde_json::from_str(&json)
                .with_context(|| format!("approval {id} in the database is not readable"))?;
            anyhow::ensure!(
                a.id == id,
                "the database's row {id} holds approval {}",
                a.id
            );
            Ok((id, a))
        })
        .collect()
}

fn generation(g: u64) -> std::io::Result<i64> {
    i64::try_from(g).map_err(|_| io_error("a generation past i64"))
}

impl ApprovalBackend for Postgres {
    fn load(&self) -> anyhow::Result<BTreeMap<String, Approval>> {
        let rows = self.db.run(|c| {
            Ok(c.query("SELECT id, approval FROM warden_approvals", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        parse(rows)
    }

    fn save(&self, all: &BTreeMap<String, Approval>, changes: &Changes) -> std::io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let Some(g) = self.open_turn() else {
            // Written outside a turn, it would be kept without the lock,
            // and no other agent would hear of it.
            return Err(io_error("approvals are written inside a turn only"));
        };
        let written = generation(g + 1)?;
        let rows: Vec<(String, String)> = changes
            .changed
            .iter()
            .map(|id| {
                let a = all
                    .get(id)
                    .ok_or_else(|| io_error(format!("approval {id} changed but is not kept")))?;
                Ok((id.clone(), serde_json::to_string(a).map_err(io_error)?))
            })
            .collect::<std::io::Result<_>>()?;
        let removed = changes.removed.clone();
        self.db.write(move |c| {
            if !removed.is_empty() {
                c.execute(
                    "DELETE FROM warden_approvals WHERE id = ANY($1)",
                    &[&removed],
                )?;
            }
            if !rows.is_empty() {
                let upsert = c.prepare(
                    "INSERT INTO warden_approvals (id, approval, gen) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET approval = $2, gen = $3",
                )?;
                for (id, json) in &rows {
                    c.execute(&upsert, &[id, json, &written])?;
                }
            }
            Ok(())
        })
    }

    fn begin(&self) -> std::io::Result<Option<u64>> {
        let g = self.db.begin(DOMAIN)?;
        self.set_turn(Some(g));
        Ok(Some(g))
    }

    fn commit(&self) -> std::io::Result<Option<u64>> {
        self.set_turn(None);
        self.db.commit(DOMAIN).map(Some)
    }

    fn rollback(&self) {
        self.set_turn(None);
        self.db.rollback()
    }

    fn generation(&self) -> std::io::Result<Option<u64>> {
        self.db.generation(DOMAIN).map(Some)
    }

    /// The rows written after generation `since`, and the ids kept: what
    /// another agent dropped goes. Everything is read again when `since`
    /// is not known, is ahead of the database (a database restored from
    /// a copy, or another one), or the memory lacks a row it should hold.
    fn reload(
        &self,
        all: &mut BTreeMap<String, Approval>,
        since: Option<u64>,
    ) -> anyhow::Result<()> {
        let now = self.open_turn();
        let since = match (since, now) {
            (Some(s), Some(g)) if s <= g => generation(s)?,
            _ => {
                *all = self.load()?;
                return Ok(());
            }
        };
        type Rows = (Vec<(String, String)>, Vec<String>);
        let (rows, ids): Rows = self.db.run(move |c| {
            let rows = c
                .query(
                    "SELECT id, approval FROM warden_approvals WHERE gen > $1",
                    &[&since],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let ids = c
                .query("SELECT id FROM warden_approvals", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok((rows, ids))
        })?;
        let changed = parse(rows)?;
        let ids: BTreeSet<String> = ids.into_iter().collect();
        if ids
            .iter()
            .any(|id| !all.contains_key(id) && !changed.contains_key(id))
        {
            *all = self.load()?;
            return Ok(());
        }
        all.retain(|id, _| ids.contains(id));
        all.extend(changed);
        Ok(())
    }
}
