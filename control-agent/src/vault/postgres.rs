//! The vault on PostgreSQL (`serve --database`), shared by the agents on
//! one database: the tables of `migrations/0006_vault.sql`, a row per data
//! key, connection and secret.
//!
//! No turns: each compare-and-set is one statement whose `WHERE` holds
//! the condition (`version = expected`, no other holder's live mark), and
//! the row count says whether it took; a new row is an `INSERT … ON
//! CONFLICT DO NOTHING`. The database serialises the statements on a row,
//! so of two agents racing exactly one wins.

use postgres::types::{FromSql, ToSql};
use postgres::Row;

use crate::pg::{io_error, Db};

use super::backend::{ConnKey, Filter, SealedConn, SealedSecret, VaultBackend, WrappedKey};

/// The connections' columns, in the order [`conn_of`] reads them.
const CONN_COLUMNS: &str = "tenant, principal, server, id, provider, scopes, person, created, \
     refreshed, expires_at, dek_version, tokens, version, refresh_holder, refresh_until";

/// Which connections a filter names: `$1`–`$3` (tenant, principal,
/// server), each `NULL` for any.
const FILTER: &str = "($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR principal = $2) \
     AND ($3::text IS NULL OR server = $3)";

/// The vault's rows on one connection of their own.
pub struct PgVault {
    db: Db,
}

impl std::fmt::Debug for PgVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgVault")
    }
}

impl PgVault {
    /// Connects to the database at `url` (migrated: [`crate::pg::migrate`]).
    pub fn connect(url: &str) -> anyhow::Result<PgVault> {
        Ok(PgVault {
            db: Db::connect(url, "vault")?,
        })
    }
}

/// A number for a `bigint` column.
fn big(v: u64, what: &str) -> std::io::Result<i64> {
    i64::try_from(v).map_err(|_| io_error(format!("{what} {v} is past a bigint")))
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, col: &str) -> std::io::Result<T> {
    row.try_get(col)
        .map_err(|e| io_error(format!("warden_vault column {col}: {e}")))
}

/// A `bigint` column that holds a number ≥ 0.
fn unsigned<T: TryFrom<i64>>(row: &Row, col: &str) -> std::io::Result<T> {
    let v: i64 = get(row, col)?;
    T::try_from(v).map_err(|_| io_error(format!("warden_vault column {col} holds {v}")))
}

fn key_of(row: &Row) -> std::io::Result<WrappedKey> {
    Ok(WrappedKey {
        tenant: get(row, "tenant")?,
        version: unsigned(row, "version")?,
        master: get(row, "master")?,
        wrapped: get(row, "wrapped")?,
    })
}

fn conn_of(row: &Row) -> std::io::Result<SealedConn> {
    let holder: Option<String> = get(row, "refresh_holder")?;
    let until: Option<i64> = get(row, "refresh_until")?;
    let refreshing = match (holder, until) {
        (Some(h), Some(u)) => Some((h, u64::try_from(u).unwrap_or(0))),
        _ => None,
    };
    Ok(SealedConn {
        key: ConnKey {
            tenant: get(row, "tenant")?,
            principal: get(row, "principal")?,
            server: get(row, "server")?,
        },
        id: get(row, "id")?,
        provider: get(row, "provider")?,
        scopes: get(row, "scopes")?,
        person: get(row, "person")?,
        created: unsigned(row, "created")?,
        refreshed: unsigned(row, "refreshed")?,
        expires_at: unsigned(row, "expires_at")?,
        dek_version: unsigned(row, "dek_version")?,
        tokens: get(row, "tokens")?,
        version: unsigned(row, "version")?,
        refreshing,
    })
}

fn secret_of(row: &Row) -> std::io::Result<SealedSecret> {
    Ok(SealedSecret {
        name: get(row, "name")?,
        tenant: get(row, "tenant")?,
        dek_version: unsigned(row, "dek_version")?,
        value: get(row, "value")?,
        updated: unsigned(row, "updated")?,
        version: unsigned(row, "version")?,
    })
}

/// A connection's columns as bound to a statement.
struct ConnRow {
    tenant: String,
    principal: String,
    server: String,
    id: String,
    provider: String,
    scopes: Vec<String>,
    person: String,
    created: i64,
    refreshed: i64,
    expires_at: i64,
    dek_version: i64,
    tokens: Vec<u8>,
}

impl ConnRow {
    fn of(c: &SealedConn) -> std::io::Result<ConnRow> {
        Ok(ConnRow {
            tenant: c.key.tenant.clone(),
            principal: c.key.principal.clone(),
            server: c.key.server.clone(),
            id: c.id.clone(),
            provider: c.provider.clone(),
            scopes: c.scopes.clone(),
            person: c.person.clone(),
            created: big(c.created, "created")?,
            refreshed: big(c.refreshed, "refreshed")?,
            expires_at: big(c.expires_at, "expires_at")?,
            dek_version: i64::from(c.dek_version),
            tokens: c.tokens.clone(),
        })
    }

    /// `$1`–`$12`, in [`CONN_COLUMNS`]' order.
    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.tenant,
            &self.principal,
            &self.server,
            &self.id,
            &self.provider,
            &self.scopes,
            &self.person,
            &self.created,
            &self.refreshed,
            &self.expires_at,
            &self.dek_version,
            &self.tokens,
        ]
    }
}

/// A filter's `$1`–`$3`.
fn filter_params(f: &Filter) -> (Option<String>, Option<String>, Option<String>) {
    (f.tenant.clone(), f.principal.clone(), f.server.clone())
}

impl PgVault {
    /// Rows a read returns, each made into a `T`.
    fn rows<T>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<Vec<Row>, postgres::Error> + Send + 'static,
        of: impl Fn(&Row) -> std::io::Result<T>,
    ) -> std::io::Result<Vec<T>> {
        self.db.run(f)?.iter().map(of).collect()
    }

    /// A connection with a new version (`expected` + 1), its mark cleared.
    fn update_conn(&self, row: ConnRow, expected: u64) -> std::io::Result<bool> {
        let (exp, next) = (
            big(expected, "version")?,
            big(expected.saturating_add(1), "version")?,
        );
        let n = self.db.write(move |c| {
            let p = row.params();
            c.execute(
                "UPDATE warden_vault_connections SET id = $4, provider = $5, scopes = $6,
                     person = $7, created = $8, refreshed = $9, expires_at = $10,
                     dek_version = $11, tokens = $12, version = $13,
                     refresh_holder = NULL, refresh_until = NULL
                 WHERE tenant = $1 AND principal = $2 AND server = $3 AND version = $14",
                &[
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                    &next, &exp,
                ],
            )
        })?;
        Ok(n == 1)
    }

    /// A new connection (version 1), unless one is kept under its key.
    fn insert_conn(&self, row: ConnRow) -> std::io::Result<bool> {
        let n = self.db.write(move |c| {
            let p = row.params();
            let first: i64 = 1;
            c.execute(
                &format!(
                    "INSERT INTO warden_vault_connections ({CONN_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, NULL)
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                    &first,
                ],
            )
        })?;
        Ok(n == 1)
    }
}

impl VaultBackend for PgVault {
    fn keys(&self) -> std::io::Result<Vec<WrappedKey>> {
        self.rows(
            |c| {
                c.query(
                    "SELECT tenant, version, master, wrapped FROM warden_vault_keys
                     ORDER BY tenant, version",
                    &[],
                )
            },
            key_of,
        )
    }

    fn add_key(&self, key: &WrappedKey) -> std::io::Result<bool> {
        let k = key.clone();
        let n = self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_vault_keys (tenant, version, master, wrapped)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&k.tenant, &i64::from(k.version), &k.master, &k.wrapped],
            )
        })?;
        Ok(n == 1)
    }

    /// All in one transaction.
    fn rewrap_keys(&self, keys: &[WrappedKey]) -> std::io::Result<()> {
        let keys = keys.to_vec();
        self.db.write(move |c| {
            let mut t = c.transaction()?;
            for k in &keys {
                t.execute(
                    "UPDATE warden_vault_keys SET master = $3, wrapped = $4
                     WHERE tenant = $1 AND version = $2",
                    &[&k.tenant, &i64::from(k.version), &k.master, &k.wrapped],
                )?;
            }
            t.commit()
        })
    }

    fn get(&self, key: &ConnKey) -> std::io::Result<Option<SealedConn>> {
        let k = key.clone();
        let sql = format!(
            "SELECT {CONN_COLUMNS} FROM warden_vault_connections
             WHERE tenant = $1 AND principal = $2 AND server = $3"
        );
        let found = self.rows(
            move |c| c.query(&sql, &[&k.tenant, &k.principal, &k.server]),
            conn_of,
        )?;
        Ok(found.into_iter().next())
    }

    fn list(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>> {
        let (t, p, s) = filter_params(filter);
        let sql = format!(
            "SELECT {CONN_COLUMNS} FROM warden_vault_connections WHERE {FILTER}
             ORDER BY tenant, principal, server"
        );
        self.rows(move |c| c.query(&sql, &[&t, &p, &s]), conn_of)
    }

    fn put(&self, conn: &SealedConn, expected: Option<u64>) -> std::io::Result<bool> {
        let row = ConnRow::of(conn)?;
        match expected {
            Some(v) => self.update_conn(row, v),
            None => self.insert_conn(row),
        }
    }

    fn claim_refresh(
        &self,
        key: &ConnKey,
        expected: u64,
        holder: &str,
        until: u64,
        now: u64,
    ) -> std::io::Result<Option<SealedConn>> {
        let k = key.clone();
        let holder = holder.to_owned();
        let (expected, until, now) = (
            big(expected, "version")?,
            big(until, "until")?,
            big(now, "now")?,
        );
        let sql = format!(
            "UPDATE warden_vault_connections SET refresh_holder = $5, refresh_until = $6
             WHERE tenant = $1 AND principal = $2 AND server = $3 AND version = $4
               AND (refresh_holder IS NULL OR refresh_holder = $5 OR refresh_until <= $7)
             RETURNING {CONN_COLUMNS}"
        );
        let rows = self.db.write(move |c| {
            c.query(
                &sql,
                &[
                    &k.tenant,
                    &k.principal,
                    &k.server,
                    &expected,
                    &holder,
                    &until,
                    &now,
                ],
            )
        })?;
        rows.first().map(conn_of).transpose()
    }

    fn remove(&self, filter: &Filter) -> std::io::Result<Vec<SealedConn>> {
        let (t, p, s) = filter_params(filter);
        let sql =
            format!("DELETE FROM warden_vault_connections WHERE {FILTER} RETURNING {CONN_COLUMNS}");
        let rows = self.db.write(move |c| c.query(&sql, &[&t, &p, &s]))?;
        rows.iter().map(conn_of).collect()
    }

    fn secret(&self, name: &str) -> std::io::Result<Option<SealedSecret>> {
        let name = name.to_owned();
        let found = self.rows(
            move |c| {
                c.query(
                    "SELECT name, tenant, dek_version, value, updated, version
                     FROM warden_vault_secrets WHERE name = $1",
                    &[&name],
                )
            },
            secret_of,
        )?;
        Ok(found.into_iter().next())
    }

    fn secrets(&self) -> std::io::Result<Vec<SealedSecret>> {
        self.rows(
            |c| {
                c.query(
                    "SELECT name, tenant, dek_version, value, updated, version
                     FROM warden_vault_secrets ORDER BY name",
                    &[],
                )
            },
            secret_of,
        )
    }

    fn put_secret(&self, s: &SealedSecret) -> std::io::Result<()> {
        let s = s.clone();
        let updated = big(s.updated, "updated")?;
        self.db.write(move |c| {
            c.execute(
                "INSERT INTO warden_vault_secrets (name, tenant, dek_version, value, updated, version)
                 VALUES ($1, $2, $3, $4, $5, 1)
                 ON CONFLICT (name) DO UPDATE SET tenant = $2, dek_version = $3, value = $4,
                     updated = $5, version = warden_vault_secrets.version + 1",
                &[&s.name, &s.tenant, &i64::from(s.dek_version), &s.value, &updated],
            )
        })?;
        Ok(())
    }

    fn remove_secret(&self, name: &str) -> std::io::Result<bool> {
        let name = name.to_owned();
        let n = self.db.write(move |c| {
            c.execute("DELETE FROM warden_vault_secrets WHERE name = $1", &[&name])
        })?;
        Ok(n == 1)
    }
}
