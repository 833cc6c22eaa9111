//! Facts about the image that decide where driver files go, read through the
//! scoped resolver so a hostile image cannot point the checks at the host.

use crate::plan::ImageFacts;
use crate::rootfs::{self, Root};

/// Debian-family images (with `/etc/debian_version`) use the multiarch dirs; all
/// others `/usr/lib64`, with `/usr/lib32` or a distinct `/usr/lib` for i386.
pub fn inspect(root: &Root) -> rootfs::Result<ImageFacts> {
    let is_file = |p: &str| -> rootfs::Result<bool> {
        Ok(root
            .stat(p)?
            .is_some_and(|(_, st)| st.st_mode & libc::S_IFMT == libc::S_IFREG))
    };
    let dir = |p: &str| -> rootfs::Result<Option<libc::stat>> {
        Ok(root
            .stat(p)?
            .map(|(_, st)| st)
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR))
    };
    if is_file("/etc/debian_version")? {
        return Ok(ImageFacts::debian());
    }
    let lib32_dir = if dir("/usr/lib32")?.is_some() {
        Some("/usr/lib32".to_string())
    } else {
        match (dir("/usr/lib")?, dir("/usr/lib64")?) {
            (Some(a), Some(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino => None,
            (Some(_), _) => Some("/usr/lib".to_string()),
            (None, _) => None,
        }
    };
    Ok(ImageFacts {
        lib_dir: "/usr/lib64".into(),
        lib32_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_rhel() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib64")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        let r = Root::open(t.path()).unwrap();
        assert_eq!(inspect(&r).unwrap(), ImageFacts::rhel());
        std::fs::write(t.path().join("etc/debian_version"), "12.5\n").unwrap();
        assert_eq!(inspect(&r).unwrap(), ImageFacts::debian());
    }

    #[test]
    fn debian_version_link_to_host_is_not_followed_out() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        // The host has /etc/os-release; a link to it must resolve inside the root, where
        // it does not exist.
        assert!(std::path::Path::new("/etc/os-release").exists());
        std::os::unix::fs::symlink("/etc/os-release", t.path().join("etc/debian_version")).unwrap();
        let r = Root::open(t.path()).unwrap();
        assert_eq!(inspect(&r).unwrap().lib_dir, "/usr/lib64");
    }
}
