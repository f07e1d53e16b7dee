//! The agent's state on PostgreSQL (`serve --database URL`), so that two
//! or more agents can run on one database, each answering every route.
//!
//! - [`Db`]: one connection, owned by a thread of its own; callers hand it
//!   work and wait for the answer (the store's and the approvals' methods
//!   are synchronous, and a synchronous client may not run on a Tokio
//!   worker). Each user of the database opens its own, so that one's
//!   transaction never holds another's statements.
//! - Turns: a change to shared state runs inside [`Db::begin`] …
//!   [`Db::commit`]: one transaction holding the fleet-wide lock of its
//!   domain, which returns the domain's generation so that an agent whose
//!   memory is older reloads first; a commit that wrote anything bumps the
//!   generation and notifies the other agents.
//! - [`listen`]: a thread of its own that hears those notifications (and
//!   looks anyway every few seconds, and after a reconnect) so that readers
//!   catch up without a change of their own.
//! - [`migrate`]: the schema, from `control-agent/migrations/`, applied in
//!   order once, under a lock (two agents starting together apply it once).
//! - [`Lease`]: the jobs that must run on one agent at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

mod lease;
pub use lease::Lease;

/// A real PostgreSQL server for the tests (the integration tests' own).
#[cfg(test)]
#[path = "../../../tests/src/postgres.rs"]
pub(crate) mod testing;

/// The advisory-lock class of Warden's locks (`pg_advisory_xact_lock(class,
/// key)`): "WARD".
const LOCK_CLASS: i32 = 0x5741_5244;
/// The channel the agents notify each other on (payload: the domain).
pub const CHANNEL: &str = "warden_changes";
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`listen`] looks at the generations without a notification.
const CATCH_UP_EVERY: Duration = Duration::from_secs(2);

/// The schema's steps, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "store and approvals",
        include_str!("../../migrations/0001_store.sql"),
    ),
    (2, "fleet", include_str!("../../migrations/0002_fleet.sql")),
    (3, "audit", include_str!("../../migrations/0003_audit.sql")),
    (
        4,
        "approvals",
        include_str!("../../migrations/0004_approvals.sql"),
    ),
    (
        5,
        "console sessions",
        include_str!("../../migrations/0005_console.sql"),
    ),
    (6, "vault", include_str!("../../migrations/0006_vault.sql")),
    (7, "spend", include_str!("../../migrations/0007_spend.sql")),
    (
        8,
        "budget alerts",
        include_str!("../../migrations/0008_budget_alerts.sql"),
    ),
];

/// A database error as the store reports its failures.
pub fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("PostgreSQL: {e}"))
}

/// The connection settings of `url` with Warden's timeouts: a connection
/// attempt gives up after 5 s, and a connection whose peer vanished is
/// noticed within about 30 s (TCP keepalives) rather than never.
pub fn config(url: &str) -> anyhow::Result<postgres::Config> {
    let mut c: postgres::Config = url
        .parse()
        .with_context(|| "--database: not a PostgreSQL URL (postgres://user@host:port/db)")?;
    c.connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    if c.get_application_name().is_none() {
        c.application_name("warden-agent");
    }
    Ok(c)
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// Where a connection stands with turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    None,
    /// A transaction holds the domain's lock; `dirty`: it wrote.
    Open {
        dirty: bool,
    },
    /// The connection broke during a turn: the database undid it, and
    /// nothing more may be written until the turn is ended (written now,
    /// it would be kept without the lock, outside the turn).
    Lost,
}

/// The connection a [`Db`]'s thread owns: made again when it broke.
struct Conn {
    config: postgres::Config,
    client: Option<Client>,
    turn: Turn,
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client, std::io::Error> {
        if self.turn == Turn::Lost {
            return Err(io_error(
                "the connection broke during a change; it was undone",
            ));
        }
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            if matches!(self.turn, Turn::Open { .. }) {
                self.turn = Turn::Lost;
                return Err(io_error(
                    "the connection broke during a change; it was undone",
                ));
            }
            self.client = Some(self.config.connect(NoTls).map_err(io_error)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Forgets a connection that failed (the next job connects again), and
    /// the turn it held (the database ended it with the connection).
    fn failed(&mut self, e: &postgres::Error) {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) || e.as_db_error().is_none() {
            self.client = None;
            if matches!(self.turn, Turn::Open { .. }) {
                self.turn = Turn::Lost;
            }
        }
    }

    /// Runs `f`, which writes nothing, once more on a new connection when
    /// the one it ran on had broken (a server restarted since): outside a
    /// turn, nothing is lost by trying again.
    fn read<T>(
        &mut self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> std::io::Result<T> {
        let outside = self.turn == Turn::None;
        match self.run(false, &mut f) {
            Err(_) if outside && self.client.is_none() => self.run(false, f),
            r => r,
        }
    }

    /// Runs `f` on the connection; `wrote`: it changes what is kept.
    fn run<T>(
        &mut self,
        wrote: bool,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> std::io::Result<T> {
        let r = f(self.client()?);
        match r {
            Ok(v) => {
                if let Turn::Open { dirty } = &mut self.turn {
                    *dirty |= wrote;
                }
                Ok(v)
            }
            Err(e) => {
                self.failed(&e);
                Err(io_error(e))
            }
        }
    }
}

/// One connection to the database, on a thread of its own.
pub struct Db {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// What this connection is for (thread name, errors).
    pub name: &'static str,
}

impl Db {
    /// Connects (the schema must be there: [`migrate`]).
    pub fn connect(url: &str, name: &'static str) -> anyhow::Result<Db> {
        let config = config(url)?;
        let client = config
            .connect(NoTls)
            .with_context(|| format!("cannot reach PostgreSQL ({name})"))?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("pg-{name}"))
            .spawn(move || {
                let mut conn = Conn {
                    config,
                    client: Some(client),
                    turn: Turn::None,
                };
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Db {
            jobs: Mutex::new(tx),
            name,
        })
    }

    fn on_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| io_error("the connection's thread is gone"))?;
        rx.recv()
            .map_err(|_| io_error("the connection's thread is gone"))?
    }

    /// Runs `f` on the connection (inside the open turn, if one is).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> std::io::Result<T> {
        self.on_thread(move |c| c.read(f))
    }

    /// Runs `f`, which writes: the open turn (if one is) then bumps its
    /// domain's generation when it commits.
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> std::io::Result<T> {
        self.on_thread(move |c| c.run(true, f))
    }

    /// Opens a turn on `domain`: a transaction holding the domain's
    /// fleet-wide lock (another agent's turn on it waits). The domain's
    /// generation now: what an agent must have loaded to change it.
    pub fn begin(&self, domain: &'static str) -> std::io::Result<u64> {
        self.on_thread(move |c| {
            if c.turn != Turn::None {
                return Err(io_error("a turn is already open on this connection"));
            }
            let g = c.read(|cl| {
                cl.batch_execute("BEGIN")?;
                let r = cl
                    .execute(
                        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                        &[&LOCK_CLASS, &domain],
                    )
                    .and_then(|_| generation(cl, domain));
                if r.is_err() {
                    let _ = cl.batch_execute("ROLLBACK");
                }
                r
            })?;
            c.turn = Turn::Open { dirty: false };
            Ok(g)
        })
    }

    /// Ends the turn on `domain`, keeping what it wrote: when it wrote
    /// anything, the generation is bumped and the other agents notified.
    /// The generation now.
    pub fn commit(&self, domain: &'static str) -> std::io::Result<u64> {
        self.on_thread(move |c| {
            let dirty = match std::mem::replace(&mut c.turn, Turn::None) {
                Turn::Open { dirty } => dirty,
                Turn::Lost => {
                    return Err(io_error(
                        "the connection broke during a change; it was undone",
                    ))
                }
                Turn::None => return Err(io_error("no turn is open")),
            };
            if c.client.as_ref().is_none_or(|cl| cl.is_closed()) {
                // Connected again now, the commit would run outside the turn.
                c.client = None;
                return Err(io_error(
                    "the connection broke during a change; it was undone",
                ));
            }
            let r = c.run(false, |cl| {
                let g = if dirty {
                    let g: i64 = cl
                        .query_one(
                            "INSERT INTO warden_generation (domain, gen) VALUES ($1, 1)
                             ON CONFLICT (domain) DO UPDATE SET gen = warden_generation.gen + 1
                             RETURNING gen",
                            &[&domain],
                        )?
                        .get(0);
                    cl.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &domain])?;
                    g as u64
                } else {
                    generation(cl, domain)?
                };
                cl.batch_execute("COMMIT")?;
                Ok(g)
            });
            if r.is_err() {
                if let Some(cl) = c.client.as_mut() {
                    let _ = cl.batch_execute("ROLLBACK");
                }
            }
            r
        })
    }

    /// Ends the turn, undoing what it wrote.
    pub fn rollback(&self) {
        let _ = self.on_thread(|c| {
            if matches!(
                std::mem::replace(&mut c.turn, Turn::None),
                Turn::Open { .. }
            ) {
                if let Some(cl) = c.client.as_mut() {
                    let _ = cl.batch_execute("ROLLBACK");
                }
            }
            Ok(())
        });
    }

    /// `domain`'s generation, read outside any turn.
    pub fn generation(&self, domain: &'static str) -> std::io::Result<u64> {
        self.run(move |cl| generation(cl, domain))
    }
}

fn generation(cl: &mut Client, domain: &str) -> Result<u64, postgres::Error> {
    Ok(cl
        .query_opt(
            "SELECT gen FROM warden_generation WHERE domain = $1",
            &[&domain],
        )?
        .map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// Applies the schema's steps not applied yet, in order, under a lock: two
/// agents starting together apply each once. A database whose schema is
/// newer than this agent knows is refused (an older agent must not write
/// to it).
pub fn migrate(url: &str) -> anyhow::Result<Vec<i32>> {
    let mut cl = config(url)?
        .connect(NoTls)
        .context("cannot reach PostgreSQL (migrations)")?;
    let mut t = cl.transaction()?;
    t.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext('migrations'))",
        &[&LOCK_CLASS],
    )?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS warden_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )?;
    let applied: Vec<i32> = t
        .query(
            "SELECT version FROM warden_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        anyhow::bail!(
            "the database's schema is at version {newer}, newer than this agent knows ({known}): upgrade the agent"
        );
    }
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        t.batch_execute(sql)
            .with_context(|| format!("migration {version} ({name})"))?;
        t.execute(
            "INSERT INTO warden_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )?;
        done.push(*version);
    }
    t.commit()?;
    Ok(done)
}

/// What [`listen`] started: stops its thread when dropped.
pub struct Listening {
    stop: Arc<AtomicBool>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Calls `on(domain)` whenever another agent changes `domain` (and, for
/// every domain (`"*"`), every few seconds and after the connection was
/// made again: a notification sent while it was down is never heard).
pub fn listen(url: &str, on: impl Fn(&str) + Send + 'static) -> anyhow::Result<Listening> {
    let config = config(url)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || {
            let mut last_catch_up = std::time::Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                let mut cl = match config.connect(NoTls) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "PostgreSQL unreachable: other agents' changes are not heard until it is back");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                if let Err(e) = cl.batch_execute(&format!("LISTEN {CHANNEL}")) {
                    tracing::warn!(error = %e, "cannot LISTEN on PostgreSQL");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                on("*");
                loop {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let heard = {
                        let mut n = cl.notifications();
                        let mut it = n.timeout_iter(Duration::from_millis(500));
                        it.next().map(|o| o.map(|note| note.payload().to_owned()))
                    };
                    match heard {
                        Ok(Some(domain)) => on(&domain),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the PostgreSQL connection that hears other agents' changes; reconnecting");
                            break;
                        }
                    }
                    if last_catch_up.elapsed() >= CATCH_UP_EVERY {
                        last_catch_up = std::time::Instant::now();
                        // A connection that died quietly says so here.
                        if cl.is_closed() || cl.simple_query("SELECT 1").is_err() {
                            break;
                        }
                        on("*");
                    }
                }
            }
        })?;
    Ok(Listening { stop })
}
