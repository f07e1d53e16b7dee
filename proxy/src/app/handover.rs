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

/// The path to hand sockets over on: `explicit` (its directory created
/// private if missing), or the default inside `state_dir`. An explicit
/// path in a directory other users can reach is refused for a process
/// that receives sockets (`upgrading`: it would listen there); any other
/// process uses the default instead and says why, so an install whose
/// unit still names a shared directory starts, and hands over safely.
pub fn socket_path(
    explicit: Option<&Path>,
    state_dir: &Path,
    upgrading: bool,
) -> anyhow::Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    if let Some(p) = explicit {
        match checked(p, uid) {
            Ok(()) => return Ok(p.to_path_buf()),
            Err(why) if upgrading => anyhow::bail!(
                "refusing to receive the listening sockets on {}: {why} (other users could reach it first; restart instead, or name a socket in a directory only this user can enter, mode 0700)",
                p.display()
            ),
            Err(why) => tracing::error!(
                socket = %p.display(),
                "the upgrade socket's directory is unsafe ({why}); using the default under --state-dir instead"
            ),
        }
    }
    let p = state_dir.join("upgrade").join("upgrade.sock");
    checked(&p, uid).map_err(|why| {
        anyhow::anyhow!(
            "the upgrade socket {} is unsafe: {why} (use a directory only this user can enter, mode 0700)",
            p.display()
        )
    })?;
    Ok(p)
}

/// Creates the socket's directory (0700) when missing, then says why it
/// is unsafe, if it is: the directory must be this user's (or root's)
/// and closed to others, and no directory above it may let another user
/// swap it (each is this user's or root's, and not writable by others
/// unless sticky, as `/tmp` is).
fn checked(socket: &Path, uid: u32) -> Result<(), String> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(&dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    private_dir(&dir, uid)?;
    let abs = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for up in abs.ancestors().skip(1) {
        let m = std::fs::metadata(up).map_err(|e| format!("{}: {e}", up.display()))?;
        if m.uid() != uid && m.uid() != 0 {
            return Err(format!(
                "{} above it belongs to user {}",
                up.display(),
                m.uid()
            ));
        }
        let mode = m.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{} above it has mode {:04o}: other users may replace what it holds",
                up.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
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
        let p = socket_path(None, &state, false).expect("default");
        assert_eq!(p, state.join("upgrade").join("upgrade.sock"));
        let mode = std::fs::metadata(state.join("upgrade"))
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Again: the directory stays as it is.
        assert!(socket_path(None, &state, true).is_ok());
    }

    #[test]
    fn a_directory_others_may_enter_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let state = d.path().join("state");
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for mode in [0o755, 0o777, 0o1777, 0o710, 0o701, 0o720] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let sock = shared.join("s.sock");
            // Receiving sockets there: refused.
            let e = socket_path(Some(&sock), &state, true).expect_err("refused");
            assert!(e.to_string().contains("other users may enter"), "{e}");
            // Any other start: the private default instead.
            let p = socket_path(Some(&sock), &state, false).expect("default");
            assert_eq!(p, state.join("upgrade").join("upgrade.sock"));
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let sock = shared.join("s.sock");
        assert_eq!(
            socket_path(Some(&sock), &state, true).expect("private"),
            sock
        );
        // A missing directory is made private.
        let fresh = d.path().join("run").join("warden").join("upgrade.sock");
        assert_eq!(
            socket_path(Some(&fresh), &state, true).expect("made"),
            fresh
        );
        // Shared /tmp itself never holds the socket.
        let e = socket_path(Some(Path::new("/tmp/warden-upgrade.sock")), &state, true)
            .expect_err("/tmp is shared");
        assert!(e.to_string().contains("/tmp"), "{e}");
    }

    /// A private directory under one another user may write (and that is
    /// not sticky) could be swapped between the check and the hand-over.
    #[test]
    fn a_directory_above_that_others_may_write_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let open = d.path().join("open");
        let private = open.join("private");
        std::fs::create_dir_all(&private).expect("dirs");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = checked(&private.join("s.sock"), uid()).expect_err("swappable");
        assert!(e.contains("other users may replace"), "{e}");
        // Sticky, as /tmp is: others cannot rename what is not theirs.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        checked(&private.join("s.sock"), uid()).expect("sticky is safe");
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
