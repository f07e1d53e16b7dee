//! The right to run the background jobs, held by one agent of those on a
//! database at a time: a session-level advisory lock on a connection of
//! its own. The database gives the lock up when the session ends (the
//! agent died, or its connection did), and another agent, which asks every
//! [`TRY_EVERY`], takes it. The holder checks its connection as often: one
//! that no longer answers stops holding at once, so two agents never both
//! believe they hold it for longer than that check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::NoTls;

use super::{config, LOCK_CLASS};

/// How often an agent without the lease asks for it, and the holder checks
/// its connection.
pub const TRY_EVERY: Duration = Duration::from_millis(500);

/// One agent's side of a lease.
pub struct Lease {
    held: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    name: &'static str,
}

impl Lease {
    /// A lease always held: one agent on its own files.
    pub fn alone(name: &'static str) -> Lease {
        Lease {
            held: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            name,
        }
    }

    /// Contends for lease `name` on the database at `url`, as `holder`
    /// (shown in `warden_leases`).
    pub fn contend(url: &str, name: &'static str, holder: String) -> anyhow::Result<Lease> {
        let config = config(url)?;
        let held = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (held.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("lease-{name}"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let mut cl = match config.connect(NoTls) {
                        Ok(c) => c,
                        Err(_) => {
                            std::thread::sleep(TRY_EVERY);
                            continue;
                        }
                    };
                    while !s.load(Ordering::Relaxed) {
                        let ok = if h.load(Ordering::Relaxed) {
                            cl.simple_query("SELECT 1").is_ok()
                        } else {
                            match cl.query_one(
                                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                                &[&LOCK_CLASS, &name],
                            ) {
                                Ok(row) => {
                                    if row.get::<_, bool>(0) {
                                        h.store(true, Ordering::Relaxed);
                                        tracing::info!(lease = name, holder = %holder, "this agent runs the {name} now");
                                        let _ = cl.execute(
                                            "INSERT INTO warden_leases (name, holder, since) VALUES ($1, $2, now())
                                             ON CONFLICT (name) DO UPDATE SET holder = $2, since = now()",
                                            &[&name, &holder],
                                        );
                                    }
                                    true
                                }
                                Err(_) => false,
                            }
                        };
                        if !ok {
                            if h.swap(false, Ordering::Relaxed) {
                                tracing::warn!(lease = name, "lost the database connection: this agent stops running the {name}");
                            }
                            break;
                        }
                        std::thread::sleep(TRY_EVERY);
                    }
                    h.store(false, Ordering::Relaxed);
                }
            })?;
        Ok(Lease { held, stop, name })
    }

    /// Whether this agent holds the lease now.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
