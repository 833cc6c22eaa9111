//! Facts about the image that decide where driver files go, read through the
//! scoped resolver so a hostile image cannot point the checks at the host.

use crate::common::arch::NATIVE;
use crate::common::rootfs::{self, Root};
use serde::Serialize;

/// What nvhook needs to know about the image to place files (read safely by `read`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFacts {
    /// The image's library dir for the architecture nvhook is built for.
    pub lib_dir: String,
    /// The image's i386 library dir, if it has one that is not the 64-bit one (never
    /// on arm64: it has no 32-bit driver libraries).
    pub lib32_dir: Option<String>,
    /// Version of the newest CUDA forward-compatibility `libcuda.so` the image ships.
    pub cuda_compat: Option<String>,
}

impl ImageFacts {
    pub fn debian() -> ImageFacts {
        ImageFacts {
            lib_dir: NATIVE.debian_lib_dir.into(),
            lib32_dir: NATIVE.compat32.as_ref().map(|c| c.debian_lib_dir.into()),
            cuda_compat: None,
        }
    }
    pub fn rhel() -> ImageFacts {
        ImageFacts {
            lib_dir: "/usr/lib64".into(),
            lib32_dir: NATIVE.compat32.as_ref().map(|_| "/usr/lib".into()),
            cuda_compat: None,
        }
    }
}

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
    let cuda_compat = cuda_compat_version(root);
    if is_file("/etc/debian_version")? {
        return Ok(ImageFacts {
            cuda_compat,
            ..ImageFacts::debian()
        });
    }
    let lib32_dir = if NATIVE.compat32.is_none() {
        None
    } else if dir("/usr/lib32")?.is_some() {
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
        cuda_compat,
    })
}

/// Where CUDA images ship forward-compatibility libraries.
pub const CUDA_COMPAT_DIR: &str = "/usr/local/cuda/compat";

/// The newest `libcuda.so.<version>` in the image's compat dir, read through the scoped
/// resolver (the files are only looked at, never mounted or run).
pub fn cuda_compat_version(root: &Root) -> Option<String> {
    let fd = crate::common::sys::openat2(
        std::os::fd::AsFd::as_fd(&root.fd()),
        std::path::Path::new(CUDA_COMPAT_DIR.trim_start_matches('/')),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        crate::common::sys::RESOLVE_IN_ROOT | crate::common::sys::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let dir = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("libcuda.so.").map(str::to_owned))
        .filter(|v| crate::container::require::is_version(v))
        .max_by(|a, b| {
            crate::container::require::compare_versions(a, b).unwrap_or(std::cmp::Ordering::Equal)
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
        let compat = t.path().join("usr/local/cuda/compat");
        std::fs::create_dir_all(&compat).unwrap();
        for f in [
            "libcuda.so.1",
            "libcuda.so.545.23.08",
            "libcuda.so.560.28.03",
            "libcuda.so.560.x",
        ] {
            std::fs::write(compat.join(f), "").unwrap();
        }
        assert_eq!(
            inspect(&r).unwrap().cuda_compat.as_deref(),
            Some("560.28.03")
        );
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
