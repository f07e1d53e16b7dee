//! Warden's bundle and configuration model.
//!
//! A bundle is a directory in OPA's bundle layout (`.manifest`, `data.json`,
//! `*.rego`) plus Warden's own `warden.yaml`. [`Bundle::load`] reads it, parses
//! `warden.yaml` into the raw serde types of [`raw`] (which deny unknown fields)
//! and validates them into the typed [`model::Config`], collecting every
//! problem with the file and field path it concerns.

pub mod access;
pub mod anomaly;
pub mod archive;
pub mod budgets;
pub mod error;
pub mod flows;
pub mod guards;
pub mod model;
pub mod names;
pub mod person;
pub mod raw;
pub mod tenants;

// Leaves the sections share; their items are re-exported where they have
// always been (`access::Risk`, `guards::HostPattern`, `model::parse_duration` …).
// Imports run one way: leaves (these, `error`, `person`, `raw`) ← `access`,
// `guards` ← `model` ← this file.
mod denial;
mod fields;
pub mod host;
pub mod rego_bounds;
mod risk;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use error::{BundleError, Problem, Problems};
pub use model::Config;

pub const CONFIG_FILE: &str = "warden.yaml";
pub const MANIFEST_FILE: &str = ".manifest";
pub const DATA_FILE: &str = "data.json";

/// The OPA bundle manifest (`.manifest`), fields Warden reads.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    /// OPA allows further fields (metadata, wasm, rego_version); they are kept, not judged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub config: Config,
    pub manifest: Manifest,
    /// `data.json`, or an empty object.
    pub data: serde_json::Value,
    /// Rego modules by path relative to the bundle root, in path order.
    pub policies: BTreeMap<String, String>,
    /// The manifest's revision, or `sha256:<digest of every file>` when it has none.
    pub revision: String,
    /// Hex SHA-256 over every file the bundle is made of (names and bytes).
    pub digest: String,
    /// The tenant layers (already composed into `config`: their servers,
    /// routes, catalog entries and keys) and the registry.
    pub tenants: tenants::Tenants,
}

impl Bundle {
    /// Loads and validates the bundle directory at `root`.
    pub fn load(root: &Path) -> Result<Bundle, BundleError> {
        let io = |path: &Path, source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(root).map_err(|e| io(root, e))?;
        if !meta.is_dir() {
            return Err(io(
                root,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "a bundle is a directory"),
            ));
        }
        let mut problems = Problems::new(CONFIG_FILE);
        let mut hasher = Sha256::new();

        let cfg_path = root.join(CONFIG_FILE);
        let cfg_text = match read_own(root, &cfg_path).and_then(|b| {
            String::from_utf8(b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push("", "missing: every bundle needs a warden.yaml");
                return Err(BundleError::Invalid(problems.into_vec()));
            }
            Err(e) => return Err(io(&cfg_path, e)),
        };
        hash_file(&mut hasher, CONFIG_FILE, cfg_text.as_bytes());
        let raw = parse_config(&cfg_text, &mut problems);

        let mut other = Problems::new(MANIFEST_FILE);
        let manifest = match read_own(root, &root.join(MANIFEST_FILE)) {
            Ok(b) => {
                hash_file(&mut hasher, MANIFEST_FILE, &b);
                match serde_json::from_slice::<Manifest>(&b) {
                    Ok(m) => m,
                    Err(e) => {
                        other.push("", format!("not a valid manifest: {e}"));
                        Manifest::default()
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io(&root.join(MANIFEST_FILE), e)),
        };
        other.set_file(DATA_FILE);
        let data = match read_own(root, &root.join(DATA_FILE)) {
            Ok(b) => {
                hash_file(&mut hasher, DATA_FILE, &b);
                match serde_json::from_slice::<serde_json::Value>(&b) {
                    Ok(v @ serde_json::Value::Object(_)) => v,
                    Ok(_) => {
                        other.push("", "must hold a JSON object");
                        serde_json::json!({})
                    }
                    Err(e) => {
                        other.push("", format!("not valid JSON: {e}"));
                        serde_json::json!({})
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
            Err(e) => return Err(io(&root.join(DATA_FILE), e)),
        };
        let mut policies = BTreeMap::new();
        collect_rego(root, root, &mut policies, &mut other).map_err(|e| io(root, e))?;
        for (name, text) in &policies {
            hash_file(&mut hasher, name, text.as_bytes());
            let mut p = Problems::new(name.clone());
            for message in rego_bounds::unbounded_calls(name, text) {
                p.push("", message);
            }
            problems.extend(p);
        }
        problems.extend(other);
        let layer_files = read_layers(root).map_err(|e| io(&root.join(tenants::TENANTS_DIR), e))?;
        for (t, files) in &layer_files {
            for (name, bytes) in files {
                hash_file(
                    &mut hasher,
                    &format!("{}/{t}/{name}", tenants::TENANTS_DIR),
                    bytes,
                );
            }
        }
        let registry_bytes = match read_own(root, &root.join(tenants::REGISTRY_FILE)) {
            Ok(b) => {
                hash_file(&mut hasher, tenants::REGISTRY_FILE, &b);
                Some(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&root.join(tenants::REGISTRY_FILE), e)),
        };

        let config = raw.map(|r| {
            let mut p = Problems::new(CONFIG_FILE);
            let c = Config::from_raw(&r, root, &mut p);
            problems.extend(p);
            c
        });
        let mut tenants = tenants::Tenants::default();
        if let Some(config) = &config {
            let mut out = Vec::new();
            tenants = load_tenants(config, &layer_files, registry_bytes.as_deref(), &mut out);
            let mut w = Problems::new(MANIFEST_FILE);
            tenants.withheld = tenants::withheld(&manifest.extra, &tenants.layers, &mut w);
            problems.extend(w);
            for pr in out {
                let mut one = Problems::new(pr.file);
                one.push(pr.path, pr.message);
                problems.extend(one);
            }
        }
        let config = config.map(|mut c| {
            tenants::compose(&mut c, &tenants.layers);
            // What the kill switch pauses is a server, under every name
            // the composed bundle gives it.
            let servers = std::mem::take(&mut c.servers);
            c.kill_switch.compose(&servers);
            c.servers = servers;
            c
        });
        match config {
            Some(config) if problems.is_empty() => {
                let digest = hex::encode(hasher.finalize());
                let revision = manifest
                    .revision
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| format!("sha256:{digest}"));
                Ok(Bundle {
                    root: root.to_path_buf(),
                    config,
                    manifest,
                    data,
                    policies,
                    revision,
                    digest,
                    tenants,
                })
            }
            _ => Err(BundleError::Invalid(problems.into_vec())),
        }
    }
}

impl Bundle {
    /// The revision shown for a directory nobody signed, which anyone may
    /// edit in place: the manifest's name plus the first 12 hex digits of the
    /// content digest (`example-sidecar-1+3fa9c2d81b7e`), so every edit shows
    /// as a new revision even when the hidden `.manifest` is copied along. A
    /// signed bundle keeps its manifest's revision: an edit would break its
    /// signature, and the control agent names each build itself.
    pub fn with_content_revision(mut self) -> Bundle {
        // Decided by where the revision came from, not by how it looks: a
        // manifest may spell an old digest. Built from the manifest's name,
        // so applying it twice changes nothing.
        if let Some(name) = self.manifest.revision.as_deref().filter(|r| !r.is_empty()) {
            self.revision = format!("{name}+{}", &self.digest[..self.digest.len().min(12)]);
        }
        self
    }
}

/// A bundle file's bytes; a symbolic link out of the bundle is refused (a bundle never
/// reaches outside itself, and `archive::read_dir`, which signatures and
/// content revisions are taken over, refuses it too).
fn read_own(root: &Path, path: &Path) -> std::io::Result<Vec<u8>> {
    if std::fs::symlink_metadata(path)?.file_type().is_symlink()
        && !archive::link_inside(root, path)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a symbolic link in a bundle",
        ));
    }
    std::fs::read(path)
}

fn hash_file(h: &mut Sha256, name: &str, bytes: &[u8]) {
    h.update((name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Parses `warden.yaml` into its raw form; problems carry the YAML field path.
pub fn parse_config(text: &str, problems: &mut Problems) -> Option<raw::WardenConfig> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, raw::WardenConfig>(de) {
        Ok(c) => Some(c),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut message = e.into_inner().to_string();
            // The YAML error may name the path itself (`a.b: unknown field
            // …`): the problem already carries it, once is enough.
            if let Some((head, rest)) = message.split_once(": ") {
                if !head.is_empty() && !head.contains(' ') && path.starts_with(head) {
                    message = rest.to_owned();
                }
            }
            problems.push(path, message);
            None
        }
    }
}

/// The files of each directory under `tenants/` (by tenant, paths
/// relative to its directory), symlinks left out.
fn read_layers(root: &Path) -> std::io::Result<BTreeMap<String, archive::Files>> {
    let dir = root.join(tenants::TENANTS_DIR);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() || archive::skipped(&name) {
            continue;
        }
        let files =
            archive::read_dir(&entry.path()).map_err(|e| std::io::Error::other(e.to_string()))?;
        out.insert(name, files);
    }
    Ok(out)
}

/// Checks every tenant layer against the org's config (in directory
/// order, each against the ones accepted before it) and reads the registry.
fn load_tenants(
    config: &Config,
    layer_files: &BTreeMap<String, archive::Files>,
    registry: Option<&[u8]>,
    problems: &mut Vec<Problem>,
) -> tenants::Tenants {
    let mut out = tenants::Tenants::default();
    for (dir, files) in layer_files {
        let others: Vec<&tenants::TenantLayer> = out.layers.values().collect();
        match tenants::check_layer(config, &others, dir, files) {
            Ok(layer) => {
                for s in &layer.servers {
                    out.owners.insert(s.name.clone(), layer.tenant.clone());
                }
                out.layers.insert(dir.clone(), layer);
            }
            Err(ps) => problems.extend(ps),
        }
    }
    if let Some(bytes) = registry {
        let mut p = Problems::new(tenants::REGISTRY_FILE);
        out.registry = tenants::registry(bytes, &mut p);
        if let Some(reg) = &mut out.registry {
            // Entries are read in the one form names are compared in: an
            // entry is the bundle's server of its name in any case
            // (`OldAPI` gates the org's `oldapi`), kept under the
            // server's own spelling, so every lookup by name finds it.
            let defined: Vec<&str> = config
                .servers
                .iter()
                .map(|s| s.name.as_str())
                .chain(out.owners.keys().map(String::as_str))
                .collect();
            let mut read: std::collections::HashMap<String, tenants::RegisteredServer> =
                std::collections::HashMap::new();
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            let mut entries: Vec<_> = std::mem::take(&mut reg.servers).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, s) in entries {
                let key = names::name_key(names::Name::Server, &name);
                if let Some(first) = seen.insert(key, name.clone()) {
                    p.push(
                        format!("servers.{name}"),
                        format!("`{first}` is registered too: one name, one entry"),
                    );
                    continue;
                }
                let spelled = defined
                    .iter()
                    .find(|d| names::same_name(names::Name::Server, d, &name))
                    .map_or(name, |d| (*d).to_owned());
                // The org takes a name back: a tenant's entry for a name
                // the org's own `warden.yaml` defines (one a tenant
                // registered before the org used it, retired or not) is
                // about another server, and gates nothing of the org's.
                if s.tenant.is_some()
                    && !out.owners.contains_key(&spelled)
                    && config.server(&spelled).is_some()
                {
                    continue;
                }
                read.insert(spelled, s);
            }
            reg.servers = read;
            for (name, s) in &reg.servers {
                let owner = out.owners.get(name);
                let defined = owner.is_some() || config.server(name).is_some();
                if defined && s.tenant.as_ref() != owner {
                    p.push(
                        format!("servers.{name}.tenant"),
                        format!(
                            "says `{}` but the bundle's `{name}` is {}",
                            s.tenant.as_deref().unwrap_or("(the org)"),
                            owner.map_or("the org's".to_owned(), |t| format!("tenant `{t}`'s"))
                        ),
                    );
                }
            }
        }
        problems.extend(p.into_vec());
    }
    out
}

fn collect_rego(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    p: &mut Problems,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let ft = entry.file_type()?;
        // What `archive::read_dir` leaves out (and so what a signature and
        // the content revision never cover) is left out here too.
        if archive::skipped(&entry.file_name().to_string_lossy()) {
            continue;
        }
        if ft.is_symlink() && !archive::link_inside(root, &path) {
            // A bundle never reaches outside itself.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: a symbolic link in a bundle", path.display()),
            ));
        }
        if ft.is_dir() {
            // Tenant layers' Rego is theirs, compiled apart (`tenants`).
            if dir == root && entry.file_name() == tenants::TENANTS_DIR {
                continue;
            }
            collect_rego(root, &path, out, p)?;
        } else if path.extension().is_some_and(|e| e == "rego") {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            match std::fs::read_to_string(&path) {
                Ok(t) => {
                    out.insert(rel, t);
                }
                Err(e) => {
                    p.set_file(rel);
                    p.push("", format!("unreadable: {e}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(manifest: &str, yaml: &str) -> Bundle {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest).expect("manifest");
        std::fs::write(dir.path().join(CONFIG_FILE), yaml).expect("yaml");
        Bundle::load(dir.path()).expect("loads")
    }

    const YAML: &str = "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: s, upstreams: [\"127.0.0.1:1\"]}\nroutes:\n  - {prefix: /s, server: s}\n";

    /// A bundle of servers (`name`, `upstream`) each routed at `/<name>`,
    /// and `more` YAML.
    fn servers_bundle(servers: &[(&str, &str)], more: &str) -> Result<Bundle, BundleError> {
        let mut yaml = "version: 1\nservice_groups:\n  - name: g\n    servers:\n".to_owned();
        for (n, u) in servers {
            yaml.push_str(&format!("      - {{name: {n}, upstreams: [\"{u}\"]}}\n"));
        }
        yaml.push_str("routes:\n");
        for (n, _) in servers {
            yaml.push_str(&format!("  - {{prefix: /{n}, server: {n}}}\n"));
        }
        yaml.push_str(more);
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(CONFIG_FILE), yaml).expect("yaml");
        Bundle::load(dir.path())
    }

    /// A paused server is paused under every name the bundle gives what it
    /// reaches: its name in any case, and any server at the same place
    /// (the address in another form: IPv4-mapped, loopback or unspecified
    /// for this host at the same port), and an address recorded when it was
    /// paused. Other servers are not.
    #[test]
    fn a_pause_covers_every_name_of_the_paused_upstream() {
        let servers = [
            ("ledger", "10.20.0.5:8080"),
            ("ledger_alive", "[::ffff:10.20.0.5]:8080"),
            ("other_port", "10.20.0.5:8081"),
            ("elsewhere", "10.20.0.6:8080"),
            ("local", "127.0.0.1:9100"),
            ("local_v6", "[::1]:9100"),
            ("local_any", "0.0.0.0:9100"),
            ("gone_to", "10.9.9.9:443"),
        ];
        for (more, paused, not) in [
            (
                "kill_switch: {servers: [LEDGER]}\n",
                vec!["ledger", "ledger_alive"],
                vec!["other_port", "elsewhere", "local", "gone_to"],
            ),
            (
                "kill_switch: {servers: [Local]}\n",
                vec!["local", "local_v6", "local_any"],
                vec!["ledger", "elsewhere"],
            ),
            (
                "kill_switch: {servers: [vanished], upstreams: {vanished: [\"10.9.9.9:443\", \"LOCALHOST.:9100\"]}}\n",
                vec!["gone_to", "local", "local_v6", "local_any"],
                vec!["ledger", "elsewhere", "other_port"],
            ),
            (
                "kill_switch: {tools: [\"Ledger/post\"]}\n",
                vec![],
                vec!["ledger", "ledger_alive", "elsewhere"],
            ),
        ] {
            let b = servers_bundle(&servers, more).expect("loads");
            let k = &b.config.kill_switch;
            for s in &paused {
                assert_eq!(k.pauses("hr", "bob", s, None, None), Some("server"), "{more}: {s}");
                // Through a virtual server too.
                assert_eq!(k.pauses("hr", "bob", "m", Some(s), None), Some("server"), "{more}: via {s}");
            }
            for s in &not {
                assert_eq!(k.pauses("hr", "bob", s, None, None), None, "{more}: {s}");
            }
        }
        // A `server/tool` pause follows its server to another name.
        let b =
            servers_bundle(&servers, "kill_switch: {tools: [\"Ledger/POST\"]}\n").expect("loads");
        let k = &b.config.kill_switch;
        for s in ["ledger", "ledger_alive"] {
            assert_eq!(
                k.pauses("hr", "bob", s, None, Some("post")),
                Some("tool"),
                "{s}"
            );
        }
        assert_eq!(k.pauses("hr", "bob", "elsewhere", None, Some("post")), None);
        // An address that is no address is refused.
        assert!(servers_bundle(
            &servers,
            "kill_switch: {upstreams: {x: [\"ledger.internal\"]}}\n"
        )
        .is_err());
    }

    /// A credential from the vault: a person's own (`per_user`, scopes
    /// sorted once) or a static secret by name; mixed with a secret the
    /// bundle reads, or with a name or scope a header or a provider could
    /// not take, refused where it is written.
    #[test]
    fn credentials_from_the_vault_are_read_and_checked() {
        let load = |creds: &str| {
            let dir = tempfile::tempdir().expect("tmp");
            std::fs::write(
                dir.path().join(CONFIG_FILE),
                format!("version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {{name: s, upstreams: [\"127.0.0.1:1\"], credentials: {creds}}}\nroutes:\n  - {{prefix: /s, server: s}}\n"),
            )
            .expect("yaml");
            Bundle::load(dir.path())
        };
        let b =
            load("{per_user: {provider: github, scopes: [repo, read.user, repo]}}").expect("loads");
        let s = &b.config.servers[0];
        assert!(s.credentials.is_none());
        let v = s.vault.as_ref().expect("a vault credential");
        assert_eq!(
            (v.header.as_str(), v.prefix.as_str()),
            ("authorization", "Bearer ")
        );
        assert_eq!(
            v.source,
            access::VaultSource::PerUser {
                provider: "github".into(),
                scopes: vec!["read.user".into(), "repo".into()]
            }
        );
        let b = load("{vault: jira-token, header: x-api-token}").expect("loads");
        let v = b.config.servers[0].vault.as_ref().expect("vault");
        assert_eq!(v.prefix, "");
        assert_eq!(
            v.source,
            access::VaultSource::Secret {
                name: "jira-token".into()
            }
        );
        for bad in [
            "{vault: jira, env: HOME}",
            "{vault: jira, per_user: {provider: p}}",
            "{vault: \"a b\"}",
            "{per_user: {provider: \"p/q\"}}",
            "{per_user: {provider: p, scopes: [\"a b\"]}}",
            "{per_user: {provider: p, scopes: [\"q\\\"\"]}}",
            "{vault: x, header: host}",
        ] {
            assert!(load(bad).is_err(), "{bad}");
        }
    }

    /// Two servers of one name in two cases are refused: every reader
    /// would take them for one.
    #[test]
    fn one_name_in_two_cases_is_refused() {
        assert!(servers_bundle(&[("crm", "10.0.0.1:1"), ("CRM", "10.0.0.2:1")], "").is_err());
        assert!(servers_bundle(&[("crm", "10.0.0.1:1"), ("crm2", "10.0.0.2:1")], "").is_ok());
    }

    /// The registry is read in the one form: an entry gates the bundle's
    /// server of its name in any case; a tenant's entry for a name the
    /// org defines gates nothing of the org's (the org took it back); two
    /// entries of one name are refused.
    #[test]
    fn registry_entries_are_read_by_the_one_name_form() {
        let load = |registry: &str| {
            let dir = tempfile::tempdir().expect("tmp");
            std::fs::write(
                dir.path().join(CONFIG_FILE),
                "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: oldapi, upstreams: [\"10.0.0.1:1\"]}\nroutes:\n  - {prefix: /o, server: oldapi}\ntenants:\n  finance: {path_prefixes: [/finance/]}\n",
            )
            .expect("yaml");
            std::fs::write(dir.path().join(tenants::REGISTRY_FILE), registry).expect("registry");
            Bundle::load(dir.path())
        };
        let entry = |name: &str, tenant: &str| {
            format!(
                r#""{name}": {{"tenant": {tenant}, "state": "retired", "since": "2026-11-01T00:00:00Z", "tools": {{}}}}"#
            )
        };
        for spelled in ["OldAPI", "OLDAPI", "oldapi"] {
            let b = load(&format!(
                r#"{{"version": 1, "servers": {{{}}}}}"#,
                entry(spelled, "null")
            ))
            .expect("loads");
            let reg = b.tenants.registry.as_ref().expect("registry");
            assert!(
                reg.servers.contains_key("oldapi"),
                "{spelled}: {:?}",
                reg.servers.keys()
            );
            assert_eq!(reg.servers.len(), 1);
        }
        let b = load(&format!(
            r#"{{"version": 1, "servers": {{{}}}}}"#,
            entry("OldApi", "\"finance\"")
        ))
        .expect("loads");
        assert!(b
            .tenants
            .registry
            .as_ref()
            .expect("registry")
            .servers
            .is_empty());
        assert!(load(&format!(
            r#"{{"version": 1, "servers": {{{}, {}}}}}"#,
            entry("oldapi", "null"),
            entry("OldAPI", "null")
        ))
        .is_err());
    }

    #[test]
    fn an_unsigned_edit_always_shows_in_the_revision() {
        let a = bundle(r#"{"revision": "copied-1"}"#, YAML).with_content_revision();
        let b = bundle(r#"{"revision": "copied-1"}"#, &format!("{YAML}# edited\n"))
            .with_content_revision();
        assert!(a.revision.starts_with("copied-1+") && b.revision.starts_with("copied-1+"));
        assert_ne!(a.revision, b.revision);
        // A manifest spelling a digest does not pass for one.
        let spoof = bundle(r#"{"revision": "sha256:0123"}"#, YAML).with_content_revision();
        assert!(
            spoof.revision.starts_with("sha256:0123+"),
            "{}",
            spoof.revision
        );
        // No manifest revision: the digest itself; applying twice changes nothing.
        let plain = bundle("{}", YAML);
        assert_eq!(plain.revision, format!("sha256:{}", plain.digest));
        let twice = a.clone().with_content_revision();
        assert_eq!(twice.revision, a.revision);
    }

    #[test]
    fn audit_records_go_to_the_agent_unless_turned_off() {
        assert!(bundle("{}", YAML).config.audit.agent_export);
        let off = bundle(
            "{}",
            &format!("{YAML}audit:\n  export:\n    agent: false\n"),
        );
        assert!(!off.config.audit.agent_export);
    }

    #[test]
    fn an_org_policy_that_allocates_by_a_request_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(CONFIG_FILE), YAML).expect("yaml");
        std::fs::create_dir(dir.path().join("policies")).expect("dir");
        std::fs::write(
            dir.path().join("policies/authz.rego"),
            "package warden.authz\nimport rego.v1\ndecision := {\"allow\": true} if { count(numbers.range(1, input.n)) > 0 }\n",
        )
        .expect("rego");
        match Bundle::load(dir.path()) {
            Err(error::BundleError::Invalid(ps)) => {
                assert!(
                    ps.iter()
                        .any(|p| p.file == "policies/authz.rego"
                            && p.message.contains("numbers.range")),
                    "{ps:?}"
                )
            }
            other => panic!("loaded: {:?}", other.map(|b| b.revision)),
        }
    }
}
