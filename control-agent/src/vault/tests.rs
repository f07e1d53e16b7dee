//! The vault's tests: master keys (parsing, wrapping, reloading), and the
//! same vault tests on both backends — the file and a real PostgreSQL
//! server (`tests/src/postgres.rs`): round trips with nothing in clear in
//! what is kept, a row moved under another principal that does not open,
//! master-key rotation and rewrap, the compare-and-set of writes and
//! refresh marks under races, and removal by tenant, principal, server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use super::file::VaultFile;
use super::keys::{self, KeyWrap};
use super::postgres::PgVault;
use super::*;
use crate::pg::testing::PgServer;

// ---- helpers ------------------------------------------------------------

/// A keys-file line: `id` and a new random key.
fn key_line(id: &str) -> String {
    format!("{id}:{}", keys::generate().unwrap())
}

fn master(text: &str) -> Arc<dyn KeyWrap> {
    Arc::new(MasterKeys::parse(text).unwrap())
}

fn ck(tenant: &str, principal: &str, server: &str) -> ConnKey {
    ConnKey {
        tenant: tenant.into(),
        principal: principal.into(),
        server: server.into(),
    }
}

/// A connection's metadata, nothing sealed yet.
fn meta(key: &ConnKey) -> SealedConn {
    SealedConn {
        key: key.clone(),
        id: format!("conn-{}-{}-{}", key.tenant, key.principal, key.server),
        provider: "github-oauth".into(),
        scopes: vec!["repo".into(), "user".into()],
        person: format!("https://idp.example|{}", key.principal),
        created: 1_700_000_000,
        refreshed: 1_700_000_000,
        expires_at: 1_700_003_600,
        dek_version: 0,
        tokens: Vec::new(),
        version: 0,
        refreshing: None,
    }
}

fn tokens(access: &str) -> Tokens {
    Tokens {
        access: access.into(),
        refresh: Some(format!("{access}-REFRESH")),
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Where a backend's tests run: backends opened on one store, what the
/// store holds as bytes, and changes an attacker with write access to it
/// could make.
trait Store: Sync {
    fn open(&self) -> Box<dyn VaultBackend>;
    /// Everything kept, as raw bytes.
    fn raw(&self) -> Vec<u8>;
    /// Moves the connection under `from` to principal `to`.
    fn move_principal(&self, from: &ConnKey, to: &str);
    /// Whether two backends opened on it see each other's writes (a
    /// database; a file is one agent's).
    fn shared(&self) -> bool;
}

struct FileStore {
    dir: tempfile::TempDir,
}

impl FileStore {
    fn new() -> FileStore {
        FileStore {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(file::FILE_NAME)
    }
}

impl Store for FileStore {
    fn open(&self) -> Box<dyn VaultBackend> {
        Box::new(VaultFile::open(self.dir.path()).unwrap())
    }

    fn raw(&self) -> Vec<u8> {
        std::fs::read(self.path()).unwrap()
    }

    fn move_principal(&self, from: &ConnKey, to: &str) {
        let mut v: serde_json::Value = serde_json::from_slice(&self.raw()).unwrap();
        let from = serde_json::to_value(from).unwrap();
        let mut moved = 0;
        for c in v["connections"].as_array_mut().unwrap() {
            if c["key"] == from {
                c["key"]["principal"] = to.into();
                moved += 1;
            }
        }
        assert_eq!(moved, 1);
        std::fs::write(self.path(), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn shared(&self) -> bool {
        false
    }
}

struct PgStore {
    url: String,
}

impl PgStore {
    /// Database `db` on `pg`, migrated.
    fn new(pg: &PgServer, db: &str) -> PgStore {
        let url = pg.database(db);
        crate::pg::migrate(&url).unwrap();
        PgStore { url }
    }

    fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url, ::postgres::NoTls).unwrap()
    }
}

impl Store for PgStore {
    fn open(&self) -> Box<dyn VaultBackend> {
        Box::new(PgVault::connect(&self.url).unwrap())
    }

    /// Every row as text, and every bytea column's bytes.
    fn raw(&self) -> Vec<u8> {
        let rows = self
            .client()
            .query(
                "SELECT convert_to(t::text, 'UTF8') FROM warden_vault_connections t
                 UNION ALL SELECT tokens FROM warden_vault_connections
                 UNION ALL SELECT convert_to(t::text, 'UTF8') FROM warden_vault_secrets t
                 UNION ALL SELECT value FROM warden_vault_secrets
                 UNION ALL SELECT convert_to(t::text, 'UTF8') FROM warden_vault_keys t
                 UNION ALL SELECT wrapped FROM warden_vault_keys",
                &[],
            )
            .unwrap();
        rows.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect()
    }

    fn move_principal(&self, from: &ConnKey, to: &str) {
        let n = self
            .client()
            .execute(
                "UPDATE warden_vault_connections SET principal = $4
                 WHERE tenant = $1 AND principal = $2 AND server = $3",
                &[&from.tenant, &from.principal, &from.server, &to],
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    fn shared(&self) -> bool {
        true
    }
}

/// Two vaults on `store` for a race: on two backends when it is shared
/// (two agents), else the same vault twice (two threads of one agent).
fn two_vaults(store: &dyn Store, keys: &Arc<dyn KeyWrap>) -> (Arc<Vault>, Arc<Vault>) {
    let a = Arc::new(Vault::new(store.open(), keys.clone()).unwrap());
    let b = if store.shared() {
        Arc::new(Vault::new(store.open(), keys.clone()).unwrap())
    } else {
        a.clone()
    };
    (a, b)
}

/// Runs `f(0)` and `f(1)` at once; their answers.
fn race<T: Send>(f: impl Fn(usize) -> T + Sync) -> [T; 2] {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let run = |i| {
            let (start, f) = (&start, &f);
            s.spawn(move || {
                start.wait();
                f(i)
            })
        };
        let (a, b) = (run(0), run(1));
        [a.join().unwrap(), b.join().unwrap()]
    })
}

// ---- the backend tests, run on both --------------------------------------

fn round_trip(store: &dyn Store) {
    let keys = master(&key_line("k1"));
    let vault = Vault::new(store.open(), keys.clone()).unwrap();
    let alice = ck("acme", "alice", "github");
    let t = tokens("gho_ACCESSalice1234");
    assert!(vault.store(meta(&alice), &t, None).unwrap());
    vault
        .put_secret("db-password", "acme", "s3cr3t-Value-9876")
        .unwrap();

    let (c, opened) = vault.connection(&alice).unwrap().unwrap();
    assert_eq!(opened, t);
    assert_eq!((c.version, c.dek_version), (1, 1));
    assert_eq!(c.provider, "github-oauth");
    let (s, value) = vault.secret("db-password").unwrap().unwrap();
    assert_eq!(value, "s3cr3t-Value-9876");
    assert_eq!((s.tenant.as_str(), s.version), ("acme", 1));
    assert!(vault
        .connection(&ck("acme", "bob", "github"))
        .unwrap()
        .is_none());
    assert!(vault.secret("nope").unwrap().is_none());

    // What is kept: metadata in clear (the search works), no token.
    let raw = store.raw();
    assert!(
        contains(&raw, "github-oauth"),
        "the search finds clear text"
    );
    for secret in ["gho_ACCESSalice1234", "-REFRESH", "s3cr3t-Value-9876"] {
        assert!(!contains(&raw, secret), "{secret} is kept in clear");
    }

    // Another vault on what was kept (a restart) opens it too.
    let again = Vault::new(store.open(), keys).unwrap();
    assert_eq!(again.connection(&alice).unwrap().unwrap().1, t);
    assert_eq!(
        again.secret("db-password").unwrap().unwrap().1,
        "s3cr3t-Value-9876"
    );
    let names: Vec<String> = again
        .secret_names()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["db-password"]);
    again.put_secret("db-password", "acme", "rotated").unwrap();
    let (s, value) = again.secret("db-password").unwrap().unwrap();
    assert_eq!((value.as_str(), s.version), ("rotated", 2));
    assert!(again.remove_secret("db-password").unwrap());
    assert!(!again.remove_secret("db-password").unwrap());
    assert!(again.secret("db-password").unwrap().is_none());
}

fn moved_under_another_principal_does_not_open(store: &dyn Store) {
    let keys = master(&key_line("k1"));
    let vault = Vault::new(store.open(), keys.clone()).unwrap();
    let alice = ck("acme", "alice", "github");
    assert!(vault
        .store(meta(&alice), &tokens("gho_alice"), None)
        .unwrap());
    store.move_principal(&alice, "mallory");

    let vault = Vault::new(store.open(), keys).unwrap();
    let mallory = ck("acme", "mallory", "github");
    match vault.connection(&mallory) {
        Err(VaultError::Sealed(what)) => {
            assert!(what.contains("mallory"), "{what}");
            assert!(!what.contains("gho_alice"), "{what}");
        }
        other => panic!("a moved row opened: {other:?}"),
    }
    assert!(vault.connection(&alice).unwrap().is_none());
    // Removed all the same, its tokens not opened.
    let gone = vault.remove(&Filter {
        principal: Some("mallory".into()),
        ..Filter::default()
    });
    let gone = gone.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0.key, mallory);
    assert!(gone[0].1.is_none());
}

fn rotation_and_rewrap(store: &dyn Store) {
    let (old, new) = (key_line("old"), key_line("new"));
    let alice = ck("acme", "alice", "github");
    let bob = ck("acme", "bob", "github");
    {
        let vault = Vault::new(store.open(), master(&old)).unwrap();
        assert!(vault
            .store(meta(&alice), &tokens("gho_alice"), None)
            .unwrap());
    }
    // `new` first: what `old` sealed still opens; a write makes version 2.
    let both = master(&format!("# rotated\n{new}\n\n{old}\n"));
    let vault = Vault::new(store.open(), both).unwrap();
    assert_eq!(
        vault.connection(&alice).unwrap().unwrap().1,
        tokens("gho_alice")
    );
    assert!(vault.store(meta(&bob), &tokens("gho_bob"), None).unwrap());
    let (b, _) = vault.connection(&bob).unwrap().unwrap();
    assert_eq!(b.dek_version, 2);
    let kept: Vec<(u32, String)> = store
        .open()
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.master))
        .collect();
    assert_eq!(kept, [(1, "old".to_owned()), (2, "new".to_owned())]);
    // A second write for the tenant keeps using version 2.
    let (a, _) = vault.connection(&alice).unwrap().unwrap();
    assert!(vault.store(a, &tokens("gho_alice2"), Some(1)).unwrap());
    assert_eq!(vault.connection(&alice).unwrap().unwrap().0.dek_version, 2);

    // Before the rewrap, `new` alone does not open data key 1.
    let err = format!("{:#}", Vault::new(store.open(), master(&new)).unwrap_err());
    for part in ["data key 1", "\"acme\"", "`old`"] {
        assert!(err.contains(part), "{err} lacks {part}");
    }

    assert_eq!(vault.rewrap().unwrap(), 1);
    assert_eq!(vault.rewrap().unwrap(), 0);
    assert!(store
        .open()
        .keys()
        .unwrap()
        .iter()
        .all(|k| k.master == "new"));
    let only_new = Vault::new(store.open(), master(&new)).unwrap();
    assert_eq!(
        only_new.connection(&alice).unwrap().unwrap().1,
        tokens("gho_alice2")
    );
    assert_eq!(
        only_new.connection(&bob).unwrap().unwrap().1,
        tokens("gho_bob")
    );

    // Keys lacking the master of a kept data key: refused, naming it.
    let err = format!("{:#}", Vault::new(store.open(), master(&old)).unwrap_err());
    assert!(err.contains("`new`") && err.contains("acme"), "{err}");
    assert!(!err.contains(new.split(':').nth(1).unwrap()), "{err}");
}

fn put_compare_and_set(store: &dyn Store) {
    let keys = master(&key_line("k1"));
    let (a, b) = two_vaults(store, &keys);
    let vaults = [a, b];
    // A new connection: one of two creators wins.
    let key = ck("acme", "alice", "github");
    let won = race(|i| {
        vaults[i]
            .store(meta(&key), &tokens(&format!("first-{i}")), None)
            .unwrap()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    for round in 1..=10u64 {
        let won = race(|i| {
            vaults[i]
                .store(meta(&key), &tokens(&format!("r{round}-{i}")), Some(round))
                .unwrap()
        });
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
        let winner = won.iter().position(|w| *w).unwrap();
        let (c, t) = vaults[0].connection(&key).unwrap().unwrap();
        assert_eq!(c.version, round + 1);
        assert_eq!(t, tokens(&format!("r{round}-{winner}")));
    }
    // A stale version never writes.
    assert!(!vaults[1]
        .store(meta(&key), &tokens("late"), Some(3))
        .unwrap());
    assert!(!vaults[1].store(meta(&key), &tokens("late"), None).unwrap());
}

fn claim_refresh_compare_and_set(store: &dyn Store) {
    let keys = master(&key_line("k1"));
    let (a, b) = two_vaults(store, &keys);
    let vaults = [a, b];
    let holders = ["agent-a", "agent-b"];
    let key = ck("acme", "alice", "github");
    assert!(vaults[0].store(meta(&key), &tokens("t0"), None).unwrap());

    let got = race(|i| {
        vaults[i]
            .claim_refresh(&key, 1, holders[i], 1_000, 500)
            .unwrap()
    });
    assert_eq!(got.iter().filter(|g| g.is_some()).count(), 1, "{got:?}");
    let w = got.iter().position(Option::is_some).unwrap();
    let (c, t) = got[w].clone().unwrap();
    assert_eq!(c.refreshing, Some((holders[w].to_owned(), 1_000)));
    assert_eq!((c.version, t), (1, tokens("t0")));

    // The loser waits while the mark runs; the holder may renew it.
    let (l, other) = (1 - w, holders[1 - w]);
    assert!(vaults[l]
        .claim_refresh(&key, 1, other, 1_100, 999)
        .unwrap()
        .is_none());
    assert!(vaults[w]
        .claim_refresh(&key, 1, holders[w], 1_200, 999)
        .unwrap()
        .is_some());
    // A wrong version is never marked.
    assert!(vaults[w]
        .claim_refresh(&key, 2, holders[w], 1_200, 999)
        .unwrap()
        .is_none());
    // Lapsed (until ≤ now): another holder takes it.
    let (c, _) = vaults[l]
        .claim_refresh(&key, 1, "agent-c", 1_800, 1_200)
        .unwrap()
        .unwrap();
    assert_eq!(c.refreshing, Some(("agent-c".to_owned(), 1_800)));
    // The refreshed tokens written: version 2, the mark cleared.
    assert!(vaults[l].store(c, &tokens("t1"), Some(1)).unwrap());
    let (c, t) = vaults[0].connection(&key).unwrap().unwrap();
    assert_eq!((c.version, c.refreshing, t), (2, None, tokens("t1")));
    assert!(vaults[w]
        .claim_refresh(&key, 2, holders[w], 2_000, 1_300)
        .unwrap()
        .is_some());
    assert!(vaults[w]
        .claim_refresh(&ck("acme", "nobody", "github"), 1, holders[w], 2_000, 1_300)
        .unwrap()
        .is_none());
}

fn remove_by_filter(store: &dyn Store) {
    let vault = Vault::new(store.open(), master(&key_line("k1"))).unwrap();
    let all = [
        ck("t1", "alice", "github"),
        ck("t1", "alice", "jira"),
        ck("t1", "bob", "github"),
        ck("t2", "alice", "github"),
    ];
    for k in &all {
        assert!(vault.store(meta(k), &tokens(&k.server), None).unwrap());
    }
    let filter = |t: Option<&str>, p: Option<&str>, s: Option<&str>| Filter {
        tenant: t.map(str::to_owned),
        principal: p.map(str::to_owned),
        server: s.map(str::to_owned),
    };
    assert_eq!(
        vault.list(&filter(Some("t1"), None, None)).unwrap().len(),
        3
    );
    assert_eq!(
        vault
            .list(&filter(None, Some("alice"), Some("github")))
            .unwrap()
            .len(),
        2
    );

    let removed = |f: Filter| -> Vec<ConnKey> {
        let gone = vault.remove(&f).unwrap();
        for (c, t) in &gone {
            assert_eq!(t.as_ref(), Some(&tokens(&c.key.server)));
        }
        gone.into_iter().map(|(c, _)| c.key).collect()
    };
    assert_eq!(removed(filter(None, None, Some("jira"))), [all[1].clone()]);
    assert_eq!(
        removed(filter(Some("t1"), Some("bob"), None)),
        [all[2].clone()]
    );
    assert_eq!(removed(filter(Some("t2"), None, None)), [all[3].clone()]);
    assert!(removed(filter(Some("t3"), None, None)).is_empty());
    let left: Vec<ConnKey> = vault
        .list(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(left, [all[0].clone()]);
    // Kept so: a restart sees the same.
    let again = Vault::new(store.open(), master(&key_line("k1")));
    assert!(
        again.is_err(),
        "another master key must not open the data key"
    );
    assert_eq!(store.open().list(&Filter::default()).unwrap().len(), 1);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_file {
            $(#[test]
            fn $name() {
                super::$name(&super::FileStore::new());
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                let pg = super::PgServer::start();
                super::$name(&super::PgStore::new(&pg, stringify!($name)));
            })*
        }
    };
}

on_both_backends!(
    round_trip,
    moved_under_another_principal_does_not_open,
    rotation_and_rewrap,
    put_compare_and_set,
    claim_refresh_compare_and_set,
    remove_by_filter,
);

// ---- master keys ---------------------------------------------------------

#[test]
fn master_keys_parse_the_first_as_current() {
    let text = format!(
        "# the vault's keys\n\n{}\n  {}  \n# old\n",
        key_line("k-2024.b"),
        key_line("k_2023")
    );
    let k = MasterKeys::parse(&text).unwrap();
    assert_eq!(k.current().unwrap(), "k-2024.b");
    assert_eq!(k.ids(), ["k-2024.b", "k_2023"]);
    assert_eq!(k.mac_keys().len(), 2);
}

#[test]
fn master_key_errors_name_the_line_and_never_the_key() {
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let good = key_line("a");
    let short = b64(16);
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{good}\n{short}"), "line 2", "not `id:base64`"),
        (format!("{good}\nb:{short}"), "line 2", "16 bytes"),
        (
            format!("\n{good}\na:{}", b64(32)),
            "line 3",
            "already on line 2",
        ),
        (format!("bad id!:{}", b64(32)), "line 1", "the id must be"),
        (format!(":{}", b64(32)), "line 1", "the id must be"),
        (
            format!("{}:{}", "x".repeat(65), b64(32)),
            "line 1",
            "the id must be",
        ),
        (
            "a:@@@not-base64@@@".to_owned(),
            "line 1",
            "not standard base64",
        ),
        ("# nothing\n\n".to_owned(), "no master key", "no master key"),
    ];
    for (text, line, why) in cases {
        let err = format!("{:#}", MasterKeys::parse(&text).unwrap_err());
        assert!(err.contains(line) && err.contains(why), "{text:?}: {err}");
        let long = b64(32);
        for secret in [
            short.as_str(),
            long.as_str(),
            good.split(':').nth(1).unwrap(),
        ] {
            assert!(!err.contains(secret), "{err} shows key material");
        }
    }
    let k = MasterKeys::parse(&format!("{good}\n{}", key_line("b"))).unwrap();
    let shown = format!("{k:?}");
    assert!(
        shown.contains("\"a\"") && shown.contains("\"b\""),
        "{shown}"
    );
    assert!(!shown.contains(good.split(':').nth(1).unwrap()), "{shown}");
}

#[test]
fn a_wrapped_key_opens_with_its_master_and_aad_only() {
    let (a, b) = (key_line("a"), key_line("b"));
    let k = MasterKeys::parse(&format!("{a}\n{b}")).unwrap();
    let dek = keys::random_key().unwrap();
    let aad = seal::dek_aad("acme", 1);
    let (id, wrapped) = k.wrap(&dek, &aad).unwrap();
    assert_eq!(id, "a");
    assert_eq!(wrapped.len(), 12 + 32 + 16);
    assert!(!wrapped.windows(32).any(|w| w == dek));
    assert_eq!(k.unwrap("a", &wrapped, &aad).unwrap(), dek);
    // Another tenant, another version, another master, a changed byte.
    assert!(k.unwrap("a", &wrapped, &seal::dek_aad("other", 1)).is_err());
    assert!(k.unwrap("a", &wrapped, &seal::dek_aad("acme", 2)).is_err());
    assert!(k.unwrap("b", &wrapped, &aad).is_err());
    let mut bent = wrapped.clone();
    bent[20] ^= 1;
    assert!(k.unwrap("a", &bent, &aad).is_err());
    let err = k.unwrap("gone", &wrapped, &aad).unwrap_err().to_string();
    assert!(err.contains("`gone` is not listed"), "{err}");
    // The same master keys in another order: b current, a still opens.
    let k2 = MasterKeys::parse(&format!("{b}\n{a}")).unwrap();
    assert_eq!(k2.current().unwrap(), "b");
    assert_eq!(k2.unwrap("a", &wrapped, &aad).unwrap(), dek);
    assert_eq!(k2.mac_keys(), [k.mac_keys()[1], k.mac_keys()[0]]);
}

#[test]
fn the_associated_data_tells_fields_apart() {
    let a = seal::conn_aad(&ck("ab", "c", "d"), "x");
    let b = seal::conn_aad(&ck("a", "bc", "d"), "x");
    assert_ne!(a, b);
    assert_ne!(seal::secret_aad("n", "t"), seal::secret_aad("t", "n"));
    assert_ne!(seal::dek_aad("a", 1), seal::dek_aad("a", 2));
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Changes the file's modification time, as a rewrite a moment later would.
fn touch(path: &Path, secs_ahead: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(secs_ahead))
        .unwrap();
}

#[test]
fn a_keys_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.keys");
    let line = key_line("a");
    write_private(&path, &line);
    assert!(MasterKeys::from_file(&path).is_ok());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = format!("{:#}", MasterKeys::from_file(&path).unwrap_err());
    assert!(
        err.contains("chmod 600") && err.contains("master.keys"),
        "{err}"
    );
    assert!(!err.contains(line.split(':').nth(1).unwrap()), "{err}");
    let err = format!(
        "{:#}",
        MasterKeys::from_file(&dir.path().join("none")).unwrap_err()
    );
    assert!(err.contains("none"), "{err}");
}

#[test]
fn a_keys_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.keys");
    let (a, b) = (key_line("a"), key_line("b"));
    write_private(&path, &a);
    let k = MasterKeys::from_file(&path).unwrap();
    assert_eq!(k.current().unwrap(), "a");
    let aad = seal::dek_aad("acme", 1);
    let dek = keys::random_key().unwrap();
    let (_, under_a) = k.wrap(&dek, &aad).unwrap();

    // Rotated: b first, a kept.
    write_private(&path, &format!("{b}\n{a}\n"));
    touch(&path, 5);
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(k.current().unwrap(), "b");
    assert_eq!(k.unwrap("a", &under_a, &aad).unwrap(), dek);
    assert_eq!(k.mac_keys().len(), 2);

    // A broken file is ignored: the keys before stay.
    write_private(&path, &format!("{b}\na:short\n"));
    touch(&path, 10);
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(k.ids(), ["b", "a"]);

    // Fixed again, `a` gone: it no longer opens.
    write_private(&path, &b);
    touch(&path, 15);
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(k.ids(), ["b"]);
    assert!(k.unwrap("a", &under_a, &aad).is_err());
}

#[test]
fn master_keys_from_the_environment() {
    let var = "WARDEN_VAULT_TEST_MASTER_KEYS_7f3a";
    assert!(MasterKeys::from_env(var).is_err());
    // Only this test sets this variable.
    std::env::set_var(var, format!("{}\n{}", key_line("env1"), key_line("env2")));
    let k = MasterKeys::from_env(var).unwrap();
    assert_eq!(k.ids(), ["env1", "env2"]);
    std::env::remove_var(var);
}

#[test]
fn a_new_master_key_is_32_random_bytes() {
    use base64::Engine;
    let (a, b) = (keys::generate().unwrap(), keys::generate().unwrap());
    assert_ne!(a, b);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert!(MasterKeys::parse(&format!("x:{a}")).is_ok());
}

#[test]
fn tokens_and_the_vault_do_not_show_secrets_in_debug() {
    assert_eq!(format!("{:?}", tokens("gho_secret")), "Tokens(…)");
    let store = FileStore::new();
    let vault = Vault::new(store.open(), master(&key_line("k"))).unwrap();
    assert!(!format!("{vault:?}").contains("k"));
}
