//! Where a binary upgrade hands the listening sockets over.
//!
//! Pingora's fd transfer binds a Unix socket at the path, makes it
//! world-connectable (0666) and, on SIGQUIT, the old process connects and
//! sends every listening socket to whatever listens there. Whoever can
//! create or connect to that path first can take the listeners (and every
//! later connection's credentials) or hand the new process bogus sockets.
//! So the socket lives in a directory only this process's user can enter:
//! by default `<state-dir>/upgrade/` (created 0700); an explicit
//! `--upgrade-sock` must be in a directory that is owned by this user (or
//! root) and that no other user may read, write or enter. Anything else
//! (`/tmp`, a symlink, another user's directory) is refused at start with
//! the reason, before any socket is bound.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The path to hand sockets over on: `explicit`, or the default inside
/// `state_dir` (its directory created private if missing). Errors say why
/// the directory is unsafe.
pub fn socket_path(explicit: Option<&Path>, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = state_dir.join("upgrade");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            dir.join("upgrade.sock")
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    private_dir(&dir, nix::unistd::geteuid().as_raw()).map_err(|why| {
        anyhow::anyhow!(
            "the upgrade socket {} is unsafe: {why} (use a directory only this user can enter, mode 0700, e.g. the default under --state-dir)",
            path.display()
        )
    })?;
    Ok(path)
}

/// Why `dir` is not a directory only `uid` (or root) controls, if it is not.
fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if m.file_type().is_symlink() {
        return Err(format!("{} is a symbolic link", dir.display()));
    }
    if !m.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if m.uid() != uid && m.uid() != 0 {
        return Err(format!(
            "{} belongs to user {}, not to this process's user {uid}",
            dir.display(),
            m.uid()
        ));
    }
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: other users may enter it",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn the_default_is_a_private_directory_in_the_state_dir() {
        let d = tempfile::tempdir().expect("tmp");
        let state = d.path().join("state");
        let p = socket_path(None, &state).expect("default");
        assert_eq!(p, state.join("upgrade").join("upgrade.sock"));
        let mode = std::fs::metadata(state.join("upgrade"))
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Again: the directory stays as it is.
        assert!(socket_path(None, &state).is_ok());
    }

    #[test]
    fn a_directory_others_may_enter_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        for mode in [0o755, 0o777, 0o1777, 0o710, 0o701, 0o720] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let e = socket_path(Some(&d.path().join("s.sock")), Path::new("/nonexistent"))
                .expect_err("refused");
            assert!(e.to_string().contains("other users may enter"), "{e}");
        }
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(socket_path(Some(&d.path().join("s.sock")), Path::new("/nonexistent")).is_ok());
        // A default path never reaches into /tmp.
        let e = socket_path(Some(Path::new("/tmp/warden-upgrade.sock")), Path::new("/x"))
            .expect_err("/tmp is shared");
        assert!(e.to_string().contains("/tmp"), "{e}");
    }

    #[test]
    fn a_symlink_or_another_users_directory_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let real = d.path().join("real");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&real)
            .expect("dir");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let e = private_dir(&link, uid()).expect_err("symlink");
        assert!(e.contains("symbolic link"), "{e}");
        let other = if uid() == 4242 { 4243 } else { 4242 };
        if uid() != 0 {
            // Owned by this user, judged for another: refused.
            let e = private_dir(&real, other).expect_err("another user's");
            assert!(e.contains("belongs to user"), "{e}");
        } else {
            // Root's directories are trusted by every user; a directory of
            // another user is not.
            nix::unistd::chown(&real, Some(nix::unistd::Uid::from_raw(other)), None)
                .expect("chown");
            let e = private_dir(&real, 0).expect_err("another user's");
            assert!(e.contains("belongs to user"), "{e}");
        }
    }
}
