//! The agent's state moved and kept safe: `backup` and `restore` of the
//! embedded store (a state directory), and `migrate`, which moves one
//! into PostgreSQL. A database is backed up with its own tools
//! (`pg_dump`; see docs/operations.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::store::backend::StateDir;
use crate::store::copy::{copy_kept, Copied};

/// What `backup`, `restore` and `migrate` are told.
#[derive(clap::Subcommand)]
pub enum StateCmd {
    /// Write a backup of a state directory (the agent may be running):
    /// revisions, history, what is served, the kill switch, the registry,
    /// tenants' layers, the change record, approvals and the audit store.
    Backup {
        /// The agent's `--state` directory.
        #[arg(long)]
        state: PathBuf,
        /// The backup to write (a .tar.gz; refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new, empty state directory.
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// The state directory to make (it must not exist, or be empty).
        #[arg(long)]
        state: PathBuf,
    },
    /// Move a state directory's store, approvals and audit store into a
    /// PostgreSQL database that keeps no control plane yet (the agent
    /// stopped).
    Migrate {
        #[arg(long)]
        state: PathBuf,
        #[arg(long, env = "WARDEN_AGENT_DATABASE", hide_env_values = true)]
        database: String,
    },
}

/// The approvals file and the audit store, beside the store's own files.
const APPROVALS: &str = "approvals.json";
const AUDIT: &str = "audit.sqlite3";

pub fn run(cmd: StateCmd) -> anyhow::Result<bool> {
    match cmd {
        StateCmd::Backup { state, out } => {
            let c = backup(&state, &out)?;
            println!("{}: {}", out.display(), summary(&c));
        }
        StateCmd::Restore { from, state } => {
            let n = restore(&from, &state)?;
            println!("{}: {n} files restored", state.display());
        }
        StateCmd::Migrate { state, database } => {
            let (c, approvals, audit) = migrate(&state, &database)?;
            println!(
                "moved into the database: {}, {approvals} approvals, {audit} audit lines",
                summary(&c)
            );
        }
    }
    Ok(true)
}

fn summary(c: &Copied) -> String {
    format!(
        "{} revisions ({} in the history), {} tenants ({} layer revisions), {} change-record lines, {} registry events",
        c.revisions, c.history, c.tenants, c.layer_revisions, c.changes, c.registry_events
    )
}

fn existing_state(state: &Path) -> anyhow::Result<StateDir> {
    if !state.join("revisions").is_dir() {
        bail!("{}: not an agent's state directory", state.display());
    }
    Ok(StateDir::open(state)?)
}

/// Copies the store through its backend (each file as the agent last
/// wrote it whole), the approvals file, and the audit store as one
/// snapshot (`VACUUM INTO`), into a temporary directory packed as `out`.
pub fn backup(state: &Path, out: &Path) -> anyhow::Result<Copied> {
    let from = existing_state(state)?;
    if out.exists() {
        bail!("{}: exists; a backup is never written over", out.display());
    }
    let tmp = tempfile::tempdir()?;
    let to = StateDir::open(tmp.path())?;
    let copied = copy_kept(&from, &to)?;
    if let Ok(b) = std::fs::read(state.join(APPROVALS)) {
        write_private(&tmp.path().join(APPROVALS), &b)?;
    }
    if state.join(AUDIT).exists() {
        let src = rusqlite::Connection::open_with_flags(
            state.join(AUDIT),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        // One consistent snapshot, whatever the agent writes meanwhile.
        let to = tmp.path().join(AUDIT);
        src.execute("VACUUM INTO ?1", [to.to_string_lossy()])
            .context("copying the audit store")?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", tmp.path())?;
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(copied)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(bytes)
}

/// Unpacks a backup into `state` (new or empty): regular files and
/// directories only, each inside `state`.
pub fn restore(from: &Path, state: &Path) -> anyhow::Result<usize> {
    if state.exists() && std::fs::read_dir(state)?.next().is_some() {
        bail!(
            "{}: not empty; restore into a new directory",
            state.display()
        );
    }
    std::fs::create_dir_all(state)?;
    let mut bytes = Vec::new();
    std::fs::File::open(from)?.read_to_end(&mut bytes)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    archive.set_preserve_permissions(false);
    let mut n = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "{}: holds {} (`{}`), which no backup has",
                from.display(),
                if kind.is_symlink() {
                    "a link"
                } else {
                    "an odd entry"
                },
                entry.path()?.display()
            );
        }
        if !entry.unpack_in(state)? {
            bail!(
                "{}: `{}` points outside the directory",
                from.display(),
                entry.path()?.display()
            );
        }
        if kind.is_file() {
            n += 1;
        }
    }
    #[cfg(unix)]
    if state.join(APPROVALS).exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            state.join(APPROVALS),
            std::fs::Permissions::from_mode(0o600),
        )?;
    }
    existing_state(state).context("the backup restored is not a state directory")?;
    Ok(n)
}

/// Moves the store, the approvals and the audit store of `state` into the
/// database (its schema made first).
pub fn migrate(state: &Path, database: &str) -> anyhow::Result<(Copied, usize, u64)> {
    let from = existing_state(state)?;
    crate::pg::migrate(database)?;
    let to = crate::store::postgres::Postgres::connect(database)?;
    let copied = copy_kept(&from, &to)?;
    let approvals = copy_approvals(state, database)?;
    let audit = copy_audit(state, database)?;
    Ok((copied, approvals, audit))
}

/// Lines sent to the database's audit store per batch.
const AUDIT_BATCH: usize = 1000;

/// The audit store's lines, byte for byte, shipped into the database's
/// as the gateways shipped them (each gateway's in the order they were
/// kept, so that its chain verifies there as it did here); a line already
/// there is not stored twice. The number of lines stored.
fn copy_audit(state: &Path, database: &str) -> anyhow::Result<u64> {
    let path = state.join(AUDIT);
    if !path.exists() {
        return Ok(0);
    }
    let src =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let to = crate::audit::AuditStore::on_database(database, crate::audit::Limits::default())?;
    let mut stmt = src.prepare(
        "SELECT r.gateway, l.raw FROM records r JOIN lines l ON l.id = r.id ORDER BY r.id",
    )?;
    let mut rows = stmt.query([])?;
    let (mut stored, mut batch, mut of) = (0u64, Vec::<u8>::new(), String::new());
    let mut n = 0usize;
    let mut flush = |gateway: &str, batch: &mut Vec<u8>, n: &mut usize| -> anyhow::Result<()> {
        if *n > 0 {
            let got = to
                .ingest(gateway, batch)
                .map_err(|e| anyhow::anyhow!("audit lines of `{gateway}`: {e}"))?;
            stored += got.accepted;
            batch.clear();
            *n = 0;
        }
        Ok(())
    };
    while let Some(row) = rows.next()? {
        let (gateway, raw): (String, String) = (row.get(0)?, row.get(1)?);
        if gateway != of || n >= AUDIT_BATCH {
            flush(&of, &mut batch, &mut n)?;
            of = gateway;
        }
        batch.extend_from_slice(raw.as_bytes());
        batch.push(b'\n');
        n += 1;
    }
    flush(&of, &mut batch, &mut n)?;
    Ok(stored)
}

/// The approvals file's approvals, each into the database's table (which
/// must hold none).
fn copy_approvals(state: &Path, database: &str) -> anyhow::Result<usize> {
    let all: std::collections::BTreeMap<String, serde_json::Value> =
        match std::fs::read(state.join(APPROVALS)) {
            Ok(b) => serde_json::from_slice(&b).context("approvals.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
    let mut c = crate::pg::config(database)?.connect(postgres::NoTls)?;
    let mut t = c.transaction()?;
    let held: i64 = t
        .query_one("SELECT count(*) FROM warden_approvals", &[])?
        .get(0);
    if held > 0 {
        bail!("the database already keeps approvals: copy only into an empty one");
    }
    for (id, a) in &all {
        // As the approvals' own backend keeps them: JSON text, of the
        // generation before any turn.
        t.execute(
            "INSERT INTO warden_approvals (id, approval, gen) VALUES ($1, $2, 0)",
            &[id, &a.to_string()],
        )?;
    }
    t.commit()?;
    Ok(all.len())
}
