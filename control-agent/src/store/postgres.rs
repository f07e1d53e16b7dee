//! The store kept in PostgreSQL (`serve --database`): what [`StateDir`]
//! keeps in files, in the tables of `migrations/0001_store.sql`, so that
//! several agents share it. Every change runs inside a turn (see
//! [`crate::pg`]): the store begins one before it changes anything,
//! reloads when another agent changed the store since it last loaded, and
//! commits when done.
//!
//! [`StateDir`]: super::StateDir

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use postgres::Client;

use crate::build::KillState;
use crate::pg::{io_error, Db};
use crate::registry::{Event, Registry};

use super::backend::{Archive, Backend, MAX_EVENTS_FILE};
use super::fleet::shared::{FleetChanges, PgFleet, Reported, Sighted, SightingRow};
use super::layers::{LayerEntry, LayerState, Tenant};
use super::types::{HistoryEntry, KillEvent, Report, Rollout, ServedEntry};
use crate::rollout::Labels;

/// The store's domain (its lock and generation).
pub const DOMAIN: &str = "store";

const SEQUENCE: &str = "sequence";
const SERVED: &str = "served";
const ROLLOUT: &str = "rollout";
const KILL: &str = "kill";
const KILL_LOG: &str = "kill_log";
const REGISTRY: &str = "registry";

/// The store's tables on one connection, and the fleet's on another
/// (see `fleet_shared/`).
pub struct Postgres {
    db: Db,
    fleet: PgFleet,
}

impl Postgres {
    /// Connects to the database at `url` (migrated: [`crate::pg::migrate`]).
    pub fn connect(url: &str) -> anyhow::Result<Postgres> {
        Ok(Postgres {
            db: Db::connect(url, "store")?,
            fleet: PgFleet::connect(url)?,
        })
    }

    fn document<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &'static str,
    ) -> anyhow::Result<Option<T>> {
        let v: Option<String> = self.db.run(move |c| {
            Ok(c.query_opt(
                "SELECT body FROM warden_documents WHERE name = $1",
                &[&name],
            )?
            .map(|r| r.get(0)))
        })?;
        Ok(v.map(|t| serde_json::from_str(&t)).transpose()?)
    }

    fn save_document(&self, name: &'static str, body: String) -> std::io::Result<()> {
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_documents (name, body) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET body = $2",
                &[&name, &body],
            )
            .map(drop)
        })
    }
}

/// JSON as the tables keep it: text (see the schema: jsonb refuses U+0000).
fn json<T: serde::Serialize + ?Sized>(v: &T) -> std::io::Result<String> {
    serde_json::to_string(v).map_err(io_error)
}

fn seq(v: u64) -> std::io::Result<i64> {
    i64::try_from(v).map_err(|_| io_error("a sequence past i64"))
}

/// Keeps at most `limit` bytes of `table`'s newest rows (by `bytes`).
fn trim(c: &mut Client, table: &str, limit: u64) -> Result<(), postgres::Error> {
    c.execute(
        &format!(
            "DELETE FROM {table} WHERE id < (
                 SELECT coalesce(min(id), 0) FROM (
                     SELECT id, sum(bytes) OVER (ORDER BY id DESC) AS upto FROM {table}
                 ) t WHERE upto <= $1)"
        ),
        &[&(limit as i64)],
    )
    .map(drop)
}

impl Backend for Postgres {
    fn sequence(&self) -> Option<u64> {
        self.document::<u64>(SEQUENCE).ok().flatten()
    }

    fn save_sequence(&self, seq: u64) -> std::io::Result<()> {
        self.save_document(SEQUENCE, json(&seq)?)
    }

    fn load_history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let rows: Vec<String> = self.db.run(|c| {
            Ok(
                c.query("SELECT entry FROM warden_history ORDER BY pos", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|t| serde_json::from_str(&t))
            .collect::<Result<_, _>>()?)
    }

    fn append_history(&self, entry: &HistoryEntry) -> std::io::Result<()> {
        let (s, e) = (seq(entry.seq)?, json(entry)?);
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_history (seq, entry) VALUES ($1, $2)",
                &[&s, &e],
            )
            .map(drop)
        })
    }

    fn rewrite_history(&self, all: &[HistoryEntry]) -> std::io::Result<()> {
        let rows: Vec<(i64, String)> = all
            .iter()
            .map(|h| Ok((seq(h.seq)?, json(h)?)))
            .collect::<std::io::Result<_>>()?;
        // Inside the store's turn: whole or not at all.
        self.db.write(move |c| {
            c.execute("DELETE FROM warden_history", &[])?;
            for (s, e) in &rows {
                c.execute(
                    "INSERT INTO warden_history (seq, entry) VALUES ($1, $2)",
                    &[s, e],
                )?;
            }
            Ok(())
        })
    }

    fn save_revision(&self, s: u64, built: &[u8], source: &[u8]) -> std::io::Result<()> {
        let (s, built, source) = (seq(s)?, built.to_vec(), source.to_vec());
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_revisions (seq, built, source) VALUES ($1, $2, $3)",
                &[&s, &built, &source],
            )
            .map(drop)
        })
    }

    fn read_revision(&self, s: u64, which: Archive) -> std::io::Result<Vec<u8>> {
        let s = seq(s)?;
        let found: Option<Vec<u8>> = self.db.run(move |c| {
            let sql = match which {
                Archive::Built => "SELECT built FROM warden_revisions WHERE seq = $1",
                Archive::Source => "SELECT source FROM warden_revisions WHERE seq = $1",
            };
            Ok(c.query_opt(sql, &[&s])?.map(|r| r.get(0)))
        })?;
        found.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no revision {s}"))
        })
    }

    fn remove_revision(&self, s: u64) {
        if let Ok(s) = seq(s) {
            let _ = self.db.write(move |c| {
                c.execute("DELETE FROM warden_revisions WHERE seq = $1", &[&s])
                    .map(drop)
            });
        }
    }

    fn load_served(&self) -> anyhow::Result<Option<Vec<ServedEntry>>> {
        self.document(SERVED)
    }

    fn save_served(
        &self,
        served: &[ServedEntry],
        rollout: Option<&Rollout>,
    ) -> std::io::Result<()> {
        self.save_document(SERVED, json(&served)?)?;
        if let Some(r) = rollout {
            self.save_document(ROLLOUT, json(r)?)?;
        }
        Ok(())
    }

    fn load_rollout(&self) -> anyhow::Result<Option<Rollout>> {
        self.document(ROLLOUT)
    }

    fn load_kill(&self) -> anyhow::Result<KillState> {
        Ok(self.document(KILL)?.unwrap_or_default())
    }

    fn save_kill(&self, kill: &KillState) -> std::io::Result<()> {
        self.save_document(KILL, json(kill)?)
    }

    fn load_kill_log(&self) -> VecDeque<KillEvent> {
        self.document(KILL_LOG).ok().flatten().unwrap_or_default()
    }

    fn save_kill_log(&self, log: &VecDeque<KillEvent>) -> std::io::Result<()> {
        self.save_document(KILL_LOG, json(log)?)
    }

    fn append_change(&self, line: &str, limit: u64) -> std::io::Result<()> {
        let line = line.to_owned();
        self.db.write(move |c| {
            let id: i64 = c
                .query_one(
                    "INSERT INTO warden_changes (bytes, line) VALUES ($1, $2) RETURNING id",
                    &[&(line.len() as i32 + 1), &line],
                )?
                .get(0);
            // As the files: the record and the one moved aside, about
            // twice the limit; trimmed every hundred lines.
            if id % 100 == 0 {
                trim(c, "warden_changes", limit.saturating_mul(2))?;
            }
            Ok(())
        })
    }

    fn recent_changes(&self, n: usize) -> Vec<serde_json::Value> {
        let n = n as i64;
        self.db
            .run(move |c| {
                Ok(c.query(
                    "SELECT line FROM warden_changes ORDER BY id DESC LIMIT $1",
                    &[&n],
                )?
                .iter()
                .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
                .collect())
            })
            .unwrap_or_default()
    }

    fn load_registry(&self) -> anyhow::Result<Option<Registry>> {
        self.document(REGISTRY)
    }

    fn save_registry(&self, registry: &Registry) -> std::io::Result<()> {
        self.save_document(REGISTRY, json(registry)?)
    }

    fn append_registry_event(&self, server: &str, event: &Event) -> std::io::Result<()> {
        let (server, event) = (server.to_owned(), json(event)?);
        self.db.write(move |c| {
            let bytes = (server.len() + event.len()) as i32;
            let id: i64 = c
                .query_one(
                    "INSERT INTO warden_registry_events (bytes, server, event) VALUES ($1, $2, $3) RETURNING id",
                    &[&bytes, &server, &event],
                )?
                .get(0);
            if id % 100 == 0 {
                trim(c, "warden_registry_events", MAX_EVENTS_FILE * 2)?;
            }
            Ok(())
        })
    }

    fn load_layers(&self) -> anyhow::Result<BTreeMap<String, Tenant>> {
        type Rows = (Vec<(String, String)>, Vec<(String, String)>);
        let (history, states): Rows = self.db.run(|c| {
            let h = c
                .query(
                    "SELECT tenant, entry FROM warden_layer_history ORDER BY pos",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let s = c
                .query("SELECT tenant, state FROM warden_layer_state", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok((h, s))
        })?;
        let mut out: BTreeMap<String, Tenant> = BTreeMap::new();
        for (tenant, e) in history {
            out.entry(tenant)
                .or_default()
                .history
                .push(serde_json::from_str(&e)?);
        }
        for (tenant, s) in states {
            out.entry(tenant).or_default().state = serde_json::from_str(&s)?;
        }
        Ok(out)
    }

    fn save_layer(&self, tenant: &str, s: u64, source: &[u8]) -> std::io::Result<()> {
        let (tenant, s, source) = (tenant.to_owned(), seq(s)?, source.to_vec());
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_layers (tenant, seq, source) VALUES ($1, $2, $3)",
                &[&tenant, &s, &source],
            )
            .map(drop)
        })
    }

    fn read_layer(&self, tenant: &str, s: u64) -> std::io::Result<Vec<u8>> {
        let (tenant, s) = (tenant.to_owned(), seq(s)?);
        let found: Option<Vec<u8>> = self.db.run(move |c| {
            Ok(c.query_opt(
                "SELECT source FROM warden_layers WHERE tenant = $1 AND seq = $2",
                &[&tenant, &s],
            )?
            .map(|r| r.get(0)))
        })?;
        found.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no layer revision {s}"),
            )
        })
    }

    fn remove_layer(&self, tenant: &str, s: u64) {
        if let Ok(s) = seq(s) {
            let tenant = tenant.to_owned();
            let _ = self.db.write(move |c| {
                c.execute(
                    "DELETE FROM warden_layers WHERE tenant = $1 AND seq = $2",
                    &[&tenant, &s],
                )
                .map(drop)
            });
        }
    }

    fn append_layer_history(&self, tenant: &str, entry: &LayerEntry) -> std::io::Result<()> {
        let (tenant, e) = (tenant.to_owned(), json(entry)?);
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_layer_history (tenant, entry) VALUES ($1, $2)",
                &[&tenant, &e],
            )
            .map(drop)
        })
    }

    fn rewrite_layer_history(&self, tenant: &str, all: &[LayerEntry]) -> std::io::Result<()> {
        let tenant = tenant.to_owned();
        let rows: Vec<String> = all.iter().map(json).collect::<Result<_, _>>()?;
        // Inside the store's turn: whole or not at all.
        self.db.write(move |c| {
            c.execute(
                "DELETE FROM warden_layer_history WHERE tenant = $1",
                &[&tenant],
            )?;
            for e in &rows {
                c.execute(
                    "INSERT INTO warden_layer_history (tenant, entry) VALUES ($1, $2)",
                    &[&tenant, e],
                )?;
            }
            Ok(())
        })
    }

    fn save_layer_state(&self, tenant: &str, state: &LayerState) -> std::io::Result<()> {
        let (tenant, st) = (tenant.to_owned(), json(state)?);
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_layer_state (tenant, state) VALUES ($1, $2)
                 ON CONFLICT (tenant) DO UPDATE SET state = $2",
                &[&tenant, &st],
            )
            .map(drop)
        })
    }

    fn all_changes(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.db.run(|c| {
            Ok(c.query("SELECT line FROM warden_changes ORDER BY id", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })?)
    }

    fn registry_events(&self) -> anyhow::Result<Vec<(String, Event)>> {
        let rows: Vec<(String, String)> = self.db.run(|c| {
            Ok(c.query(
                "SELECT server, event FROM warden_registry_events ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })?;
        rows.into_iter()
            .map(|(s, e)| Ok((s, serde_json::from_str(&e)?)))
            .collect()
    }

    fn begin(&self) -> std::io::Result<Option<u64>> {
        self.db.begin(DOMAIN).map(Some)
    }

    fn commit(&self) -> std::io::Result<Option<u64>> {
        self.db.commit(DOMAIN).map(Some)
    }

    fn rollback(&self) {
        self.db.rollback()
    }

    fn generation(&self) -> std::io::Result<Option<u64>> {
        self.db.generation(DOMAIN).map(Some)
    }

    fn fleet_report(&self, r: &Report, forget: Duration) -> std::io::Result<Option<Reported>> {
        self.fleet.report(r, forget).map(Some)
    }

    fn fleet_sighting(
        &self,
        id: &str,
        instance: &str,
        live: Duration,
        forget: Duration,
    ) -> std::io::Result<Option<Sighted>> {
        self.fleet.sighting(id, instance, live, forget).map(Some)
    }

    fn fleet_sightings_of(&self, id: &str) -> std::io::Result<Option<Vec<SightingRow>>> {
        self.fleet.sightings_of(id).map(Some)
    }

    fn fleet_fetch(
        &self,
        id: &str,
        revision: &str,
        labels: &Labels,
        instance: Option<&str>,
    ) -> std::io::Result<Option<bool>> {
        self.fleet.fetch(id, revision, labels, instance).map(Some)
    }

    fn fleet_changes(&self) -> std::io::Result<Option<FleetChanges>> {
        self.fleet.changes().map(Some)
    }

    fn fleet_version(&self, id: &str) -> Option<u64> {
        self.fleet.version(id)
    }
}
