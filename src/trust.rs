//! Checks that a binary nvhook will run as root could not have been planted by
//! someone else: the file and every directory above it owned by root and not writable
//! by group or others. A root-owned sticky directory (like `/tmp`) is accepted above
//! the file: others cannot rename or remove what root owns there. In a rootless user
//! namespace "root" is the owner host root's files show as there (see `userns`).

use std::os::unix::fs::MetadataExt;
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

fn check_one(what: &'static str, p: &Path, uid: u32, mode: u32) -> Result<()> {
    check_entry(what, p, uid, mode, false)
}

/// The rule for one entry: root-owned, not writable by group or others, except a
/// root-owned sticky directory above the entry checked (`ancestor`).
pub fn check_entry(
    what: &'static str,
    p: &Path,
    uid: u32,
    mode: u32,
    ancestor: bool,
) -> Result<()> {
    let root = crate::userns::host_root_shows_as();
    if uid != root {
        let reason = if root == 0 {
            format!("owned by uid {uid}, not root")
        } else {
            format!("owned by uid {uid}, not root (in this user namespace root's files show as uid {root})")
        };
        return Err(Error::Untrusted {
            what,
            path: p.into(),
            reason,
        });
    }
    let sticky_dir = ancestor && mode & libc::S_ISVTX != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(Error::Untrusted {
            what,
            path: p.into(),
            reason: format!("writable by group or others (mode {:o})", mode & 0o7777),
        });
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
        let m = std::fs::metadata(p).map_err(|source| Error::Stat {
            what,
            path: p.into(),
            source,
        })?;
        check_entry(what, p, m.uid(), m.mode(), p != real)?;
        cur = p.parent();
    }
    Ok(())
}

/// The same checks on an already opened file (its stat), for the file itself.
pub fn check_stat(what: &'static str, path: &Path, st: &libc::stat) -> Result<()> {
    check_one(what, path, st.st_uid, st.st_mode)
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
        let e = check_one("hook", &f, 0, 0o100757).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let e = check_one("hook", &f, 1000, 0o100755).unwrap_err();
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
