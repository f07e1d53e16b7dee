//! Console sessions kept in the database (`serve --database`): a login on
//! one agent is a login on every agent of the database, and a logout (or
//! the end of a session) on one ends it on all. Every request reads its
//! session from the database, so nothing an agent remembers can keep a
//! session alive after another ended it. The database's clock judges
//! `IDLE` and `MAX_AGE`, the same for every agent. A database that does
//! not answer is no session (the login page), never someone's.

use std::time::{Duration, Instant};

use crate::pg::Db;

use super::user::{Session, User, IDLE, MAX_AGE, MAX_PER_USER, MAX_SESSIONS};

/// The sessions table on a connection of its own.
pub struct SharedSessions {
    db: Db,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One person for the per-user budget (as [`User::same_user`]).
fn who(u: &User) -> String {
    serde_json::to_string(&(&u.name, u.role, &u.actor)).unwrap_or_default()
}

impl SharedSessions {
    pub fn connect(url: &str) -> anyhow::Result<SharedSessions> {
        Ok(SharedSessions {
            db: Db::connect(url, "console")?,
        })
    }

    /// Keeps a new session: the user's oldest goes when they hold
    /// [`MAX_PER_USER`]; refused when the table holds [`MAX_SESSIONS`].
    pub fn open(&self, digest: [u8; 32], s: &Session) -> Result<(), String> {
        let (who, person, csrf) = (
            who(&s.user),
            serde_json::to_value(&s.user).map_err(|e| e.to_string())?,
            s.csrf.clone(),
        );
        let (idle, age) = (secs(IDLE), secs(MAX_AGE));
        let res = self.db.write(move |c| {
            c.execute(
                "DELETE FROM warden_console_sessions
                 WHERE used <= now() - make_interval(secs => $1)
                    OR created <= now() - make_interval(secs => $2)",
                &[&idle, &age],
            )?;
            c.execute(
                "DELETE FROM warden_console_sessions WHERE digest IN (
                     SELECT digest FROM warden_console_sessions WHERE who = $1
                     ORDER BY created DESC OFFSET $2)",
                &[&who, &(MAX_PER_USER as i64 - 1)],
            )?;
            let n: i64 = c
                .query_one("SELECT count(*) FROM warden_console_sessions", &[])?
                .get(0);
            if n >= MAX_SESSIONS as i64 {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO warden_console_sessions (digest, who, person, csrf) VALUES ($1, $2, $3, $4)",
                &[&digest.as_slice(), &who, &person, &csrf],
            )?;
            Ok(true)
        });
        match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "the console holds {MAX_SESSIONS} sessions: log in again when some have ended"
            )),
            Err(e) => Err(format!("the console cannot keep a session now: {e}")),
        }
    }

    /// The live session of `digest`, marked used now.
    pub fn get(&self, digest: [u8; 32]) -> Option<Session> {
        let (idle, age) = (secs(IDLE), secs(MAX_AGE));
        let row = self.db.write(move |c| {
            let r = c.query_opt(
                "UPDATE warden_console_sessions SET used = now()
                 WHERE digest = $1
                   AND used > now() - make_interval(secs => $2)
                   AND created > now() - make_interval(secs => $3)
                 RETURNING person, csrf, flash,
                           extract(epoch FROM now() - created)::float8",
                &[&digest.as_slice(), &idle, &age],
            )?;
            if r.is_none() {
                c.execute(
                    "DELETE FROM warden_console_sessions WHERE digest = $1",
                    &[&digest.as_slice()],
                )?;
            }
            Ok(r.map(|r| {
                (
                    r.get::<_, serde_json::Value>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Option<String>>(2),
                    r.get::<_, f64>(3),
                )
            }))
        });
        let (person, csrf, flash, age) = match row {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!(error = %e, "console session not read: the database does not answer");
                return None;
            }
        };
        let user: User = serde_json::from_value(person).ok()?;
        let now = Instant::now();
        let created = now
            .checked_sub(Duration::from_secs_f64(age.max(0.0)))
            .unwrap_or(now);
        Some(Session::restored(user, csrf, flash, created, now))
    }

    pub fn flash(&self, digest: [u8; 32], msg: Option<String>) {
        let _ = self.db.write(move |c| {
            c.execute(
                "UPDATE warden_console_sessions SET flash = $2 WHERE digest = $1",
                &[&digest.as_slice(), &msg],
            )
        });
    }

    pub fn take_flash(&self, digest: [u8; 32]) -> Option<String> {
        self.db
            .write(move |c| {
                Ok(c.query_opt(
                    "UPDATE warden_console_sessions s SET flash = NULL
                     FROM (SELECT digest, flash FROM warden_console_sessions WHERE digest = $1 FOR UPDATE) old
                     WHERE s.digest = old.digest
                     RETURNING old.flash",
                    &[&digest.as_slice()],
                )?
                .and_then(|r| r.get::<_, Option<String>>(0)))
            })
            .ok()
            .flatten()
    }

    pub fn close(&self, digest: [u8; 32]) {
        if let Err(e) = self.db.write(move |c| {
            c.execute(
                "DELETE FROM warden_console_sessions WHERE digest = $1",
                &[&digest.as_slice()],
            )
        }) {
            tracing::error!(error = %e, "a console logout was not kept: the session ends at its idle time");
        }
    }

    pub fn count(&self) -> usize {
        let (idle, age) = (secs(IDLE), secs(MAX_AGE));
        self.db
            .run(move |c| {
                Ok(c.query_one(
                    "SELECT count(*) FROM warden_console_sessions
                     WHERE used > now() - make_interval(secs => $1)
                       AND created > now() - make_interval(secs => $2)",
                    &[&idle, &age],
                )?
                .get::<_, i64>(0) as usize)
            })
            .unwrap_or(0)
    }
}
