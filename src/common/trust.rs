//! Checks that a binary nvhook will run as root could not have been planted by
//! someone else: the file and every directory above it owned by root and not writable
//! by group or others. A root-owned sticky directory (like `/tmp`) is accepted above
//! the file: others cannot rename or remove what root owns there. In a rootless user
//! namespace "root" is the owner host root's files show as there (see `userns`).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Stat {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not trusted: {reason}")]
    Untrusted {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The rule for one entry: root-owned, not writable by group or others, except a
/// root-owned sticky directory above the entry checked (`ancestor`). `fd` is the entry
/// opened (for the rootless rules), `st` its stat.
///
/// In a rootless user namespace host root's files show as the overflow uid, like every
/// other unmapped owner's, so two more rules hold there: no sticky exception (another
/// host user's directory under `/tmp` would pass as root's), and the entry must not be
/// writable from this namespace (a mapped id such as the containers' `nobody` can show
/// as the overflow uid too, and the namespace's root can write what it owns).
pub fn check_entry(
    what: &'static str,
    p: &Path,
    fd: BorrowedFd<'_>,
    st: &libc::stat,
    ancestor: bool,
) -> Result<()> {
    let (uid, mode) = (st.st_uid, st.st_mode);
    let untrusted = |reason: String| Error::Untrusted {
        what,
        path: p.into(),
        reason,
    };
    let root = crate::common::userns::host_root_shows_as();
    if uid != root {
        return Err(untrusted(if root == 0 {
            format!("owned by uid {uid}, not root")
        } else {
            format!("owned by uid {uid}, not root (in this user namespace root's files show as uid {root})")
        }));
    }
    let rootless = !crate::common::userns::is_initial();
    let sticky_dir = ancestor && mode & libc::S_ISVTX != 0 && !rootless;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(untrusted(format!(
            "writable by group or others (mode {:o})",
            mode & 0o7777
        )));
    }
    if rootless && crate::common::sys::may_access(fd, libc::W_OK) {
        return Err(untrusted(
            "writable from this user namespace: its owner is an id mapped here, not host root"
                .into(),
        ));
    }
    Ok(())
}

/// Checks `path` (symlinks resolved) and all its ancestors.
pub fn check_root_owned(what: &'static str, path: &Path) -> Result<()> {
    let real = path.canonicalize().map_err(|source| Error::Stat {
        what,
        path: path.into(),
        source,
    })?;
    let mut cur: Option<&Path> = Some(&real);
    while let Some(p) = cur {
        let stat_err = |source| Error::Stat {
            what,
            path: p.into(),
            source,
        };
        let fd = crate::common::sys::open(p, libc::O_PATH).map_err(stat_err)?;
        let st = crate::common::sys::fstat(fd.as_fd()).map_err(stat_err)?;
        check_entry(what, p, fd.as_fd(), &st, p != real)?;
        cur = p.parent();
    }
    Ok(())
}

/// The same checks on an already opened file (`fd`, its stat `st`), for the file itself.
pub fn check_stat(
    what: &'static str,
    path: &Path,
    fd: BorrowedFd<'_>,
    st: &libc::stat,
) -> Result<()> {
    check_entry(what, path, fd, st, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn system_binaries_are_trusted() {
        check_root_owned("ldconfig", Path::new("/sbin/ldconfig")).unwrap();
    }

    #[test]
    fn writable_or_foreign_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tool");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o757)).unwrap();
        let fd = std::fs::File::open(&f).unwrap();
        let as_if = |uid: u32, mode: u32| {
            let mut st = crate::common::sys::fstat(fd.as_fd()).unwrap();
            (st.st_uid, st.st_mode) = (uid, mode);
            st
        };
        let e = check_entry("hook", &f, fd.as_fd(), &as_if(0, 0o100757), false).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let e = check_entry("hook", &f, fd.as_fd(), &as_if(1000, 0o100755), false).unwrap_err();
        assert!(e.to_string().contains("uid 1000"), "{e}");
        // a world-writable ancestor is refused, a root-owned sticky one (/tmp) is not
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join("tool"), "x").unwrap();
        std::fs::set_permissions(open.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let e = check_root_owned("hook", &open.join("tool")).unwrap_err();
        assert!(e.to_string().contains("open"), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_root_owned("hook", &open.join("tool")).unwrap();
        // the file itself may never be writable by others, sticky or not
        assert!(check_root_owned("hook", Path::new("/tmp")).is_err());
    }
}
