//! Loaded cgroup v2 device programs kept between container starts, pinned in bpffs.
//!
//! Loading the extended program (the verifier and the JIT over runc's instructions and
//! nvhook's rules) is most of what a v2 start pays for its devices, and containers with
//! the same device list get the same program. So a program, once loaded, is pinned under
//! a name derived from its instructions, and the next start with the same instructions
//! attaches the pinned one instead of loading it again.
//!
//! Nothing is trusted from the cache: a pinned program is used only if the kernel's own
//! copy of its instructions equals, instruction for instruction, what nvhook would load
//! now (a loaded program is immutable, and the check is made on the descriptor that is
//! then attached). A name collision, a stale or planted program just misses. The
//! directory must be on bpffs, owned by root and not writable by others, reached
//! without a symbolic link; anything else turns the cache off for that start (with a
//! warning; only a debug line where no bpffs is mounted at all, the default on hosts
//! without systemd), and the program is loaded as without it. Errors of the cache never
//! fail a start.

use crate::apply::bpf::{self, Insn};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The most programs kept; past it the directory is emptied and refills with what is
/// in use (a node runs few distinct device lists).
pub const MAX_PINS: usize = 256;

const BPF_FS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0xcafe_4a11);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device program cache {path}: {what}: {source}")]
    Sys {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("device program cache {path} is not on a bpf filesystem (mount one there, or set device-program-cache = \"\")")]
    NotBpffs { path: PathBuf },
    #[error(transparent)]
    Untrusted(#[from] crate::common::trust::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// An opened cache directory.
pub struct Cache {
    dir: OwnedFd,
    path: PathBuf,
}

/// What a lookup found.
pub enum Lookup {
    /// A pinned program with exactly these instructions.
    Hit(OwnedFd),
    /// None under the name: load, then `put`.
    Miss,
    /// Something else under the name (a collision, a program the kernel rewrote): load,
    /// then `put` replaces it.
    Stale,
}

impl Cache {
    /// Opens (creating, mode 0700, when its parent is on bpffs) the cache directory.
    pub fn open(path: &Path) -> Result<Cache> {
        let err = |what| {
            let path = path.to_path_buf();
            move |source| Error::Sys { path, what, source }
        };
        let not_bpffs = || Error::NotBpffs { path: path.into() };
        // Opened whole, without a symbolic link anywhere on the way; created (mode 0700)
        // only in a parent that is on bpffs.
        let open = |dir: BorrowedFd<'_>, p: &Path| {
            crate::common::sys::openat2(
                dir,
                p,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                crate::common::sys::RESOLVE_NO_SYMLINKS | crate::common::sys::RESOLVE_NO_MAGICLINKS,
            )
        };
        let dir = match open(nix::fcntl::AT_FDCWD, path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = path.parent().unwrap_or(Path::new("/"));
                let name = path.file_name().ok_or_else(not_bpffs)?;
                let pfd = match open(nix::fcntl::AT_FDCWD, parent) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(not_bpffs()),
                    r => r.map_err(err("open parent"))?,
                };
                if !on_bpffs(&pfd) {
                    return Err(not_bpffs());
                }
                let cname = CString::new(name.as_encoded_bytes()).map_err(|_| not_bpffs())?;
                match crate::common::sys::mkdirat(pfd.as_fd(), &cname, 0o700) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                        return Err(err("create")(e))
                    }
                    _ => open(pfd.as_fd(), Path::new(name)).map_err(err("open"))?,
                }
            }
            r => r.map_err(err("open"))?,
        };
        if !on_bpffs(&dir) {
            return Err(not_bpffs());
        }
        let st = crate::common::sys::fstat(dir.as_fd()).map_err(err("stat"))?;
        crate::common::trust::check_entry("device program cache", path, dir.as_fd(), &st, false)?;
        Ok(Cache {
            dir,
            path: path.into(),
        })
    }

    /// The pinned program for `insns`, if it is one nvhook loaded (its name, no BTF, so
    /// nothing can have replaced its code through an extension) and its instructions are
    /// exactly these. The entry is looked at without following a link first: a planted
    /// link would make the kernel look up any host path.
    pub fn get(&self, insns: &[Insn]) -> Lookup {
        let name = name_of(insns);
        let Ok(st) = nix::sys::stat::fstatat(
            self.dir.as_fd(),
            name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            return Lookup::Miss;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Lookup::Stale;
        }
        let Ok(fd) = bpf::obj_get(&self.pin_path(insns)) else {
            return Lookup::Stale;
        };
        match bpf::program_of(&fd, insns.len()) {
            Ok(p) if is_ours(&p, insns) => Lookup::Hit(fd),
            _ => Lookup::Stale,
        }
    }

    /// Pins `prog` (loaded from `insns`) for the next start, replacing a stale entry.
    pub fn put(&self, insns: &[Insn], prog: &OwnedFd, stale: bool) -> Result<()> {
        let name = name_of(insns);
        let cname = CString::new(name.as_str()).expect("no NUL in a hex name");
        if stale {
            let _ = crate::common::sys::unlinkat(self.dir.as_fd(), &cname, false);
        } else {
            self.make_room()?;
        }
        match bpf::obj_pin(prog, &self.pin_path(insns)) {
            // Another start pinned the same instructions meanwhile: as good.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|source| Error::Sys {
                path: self.path.join(&name),
                what: "pin",
                source,
            }),
        }
    }

    /// Empties the directory of nvhook's pins when it holds `MAX_PINS` of them (or more
    /// entries than it can list).
    fn make_room(&self) -> Result<()> {
        let names =
            match crate::common::sys::read_dir(self.dir.as_fd(), 4 * MAX_PINS, &is_pin_name) {
                Ok(n) if n.len() < MAX_PINS => return Ok(()),
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                    crate::common::sys::read_dir(self.dir.as_fd(), usize::MAX, &is_pin_name)
                        .map_err(|source| Error::Sys {
                            path: self.path.clone(),
                            what: "list",
                            source,
                        })?
                }
                Err(source) => {
                    return Err(Error::Sys {
                        path: self.path.clone(),
                        what: "list",
                        source,
                    })
                }
            };
        for n in names {
            if let Ok(c) = CString::new(n) {
                let _ = crate::common::sys::unlinkat(self.dir.as_fd(), &c, false);
            }
        }
        Ok(())
    }

    /// The pin's path through the opened directory, so nothing on the way is looked up
    /// again by name (the bpf calls take a path, not a directory descriptor, on the
    /// kernels nvhook supports).
    fn pin_path(&self, insns: &[Insn]) -> CString {
        CString::new(format!(
            "/proc/self/fd/{}/{}",
            self.dir.as_raw_fd(),
            name_of(insns)
        ))
        .expect("no NUL in a number or a hex name")
    }
}

/// The program for `insns`: the cache's when it holds exactly these (then `true`), else
/// loaded now (and pinned for the next start; a cache that fails only costs the load).
/// Nothing is logged on a hit: the caller counts hits into the start's debug record, so
/// no log write lands inside the timed cgroup phase.
pub fn load_cached(insns: &[Insn], cache: Option<&Cache>) -> bpf::Result<(OwnedFd, bool)> {
    let Some(cache) = cache else {
        return Ok((bpf::load(insns)?, false));
    };
    let stale = match cache.get(insns) {
        Lookup::Hit(fd) => return Ok((fd, true)),
        Lookup::Miss => false,
        Lookup::Stale => true,
    };
    let fd = bpf::load(insns)?;
    // Pinned only when the kernel's copy reads back as loaded: where it rewrites
    // instructions (zero-extension on some architectures) no pin could ever hit.
    if !bpf::program_of(&fd, insns.len()).is_ok_and(|p| is_ours(&p, insns)) {
        crate::common::log::debug("device program not cached: the kernel's copy differs");
        return Ok((fd, false));
    }
    if let Err(e) = cache.put(insns, &fd, stale) {
        crate::common::log::warn(&e.to_string());
    }
    Ok((fd, false))
}

/// A program nvhook loaded from exactly `insns`, with nothing that could change what it
/// runs (no BTF, so no `freplace` extension can attach to it).
fn is_ours(p: &bpf::Program, insns: &[Insn]) -> bool {
    p.kind == bpf::PROG_TYPE_CGROUP_DEVICE
        && p.name == bpf::PROGRAM_NAME
        && p.btf_id == 0
        && p.nr_func_info == 0
        && p.insns == insns
}

/// `dev-<16 hex digits>-<count>`: the names `name_of` gives, and the only entries
/// `make_room` removes.
fn is_pin_name(n: &[u8]) -> bool {
    let Some(rest) = n.strip_prefix(b"dev-") else {
        return false;
    };
    rest.len() > 17
        && rest[..16].iter().all(u8::is_ascii_hexdigit)
        && rest[16] == b'-'
        && rest[17..].iter().all(u8::is_ascii_digit)
}

fn on_bpffs(fd: &OwnedFd) -> bool {
    nix::sys::statfs::fstatfs(fd).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// `dev-<FNV-1a of the instructions>-<count>`: a name to look under, not a proof (the
/// instructions themselves are compared).
pub fn name_of(insns: &[Insn]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in insns {
        let mut b = [0u8; 8];
        b[0] = i.code;
        b[1] = i.regs;
        b[2..4].copy_from_slice(&i.off.to_le_bytes());
        b[4..8].copy_from_slice(&i.imm.to_le_bytes());
        for x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("dev-{h:016x}-{}", insns.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_every_field_of_every_instruction() {
        let base = bpf::allow_rules(&[(195, 0), (195, 255)]);
        let name = name_of(&base);
        assert!(name.starts_with("dev-") && name.ends_with(&format!("-{}", base.len())));
        assert_eq!(name, name_of(&base.clone()));
        for at in [0, base.len() / 2, base.len() - 1] {
            for change in 0..4 {
                let mut v = base.clone();
                match change {
                    0 => v[at].code ^= 1,
                    1 => v[at].regs ^= 0x10,
                    2 => v[at].off ^= 1,
                    _ => v[at].imm ^= 1 << 20,
                }
                assert_ne!(name_of(&v), name, "change {change} at {at}");
            }
        }
    }

    #[test]
    fn pin_names_are_exactly_ours() {
        assert!(is_pin_name(
            name_of(&bpf::allow_rules(&[(195, 0)])).as_bytes()
        ));
        for n in [
            "dev-",
            "dev-0123456789abcdef-",
            "dev-0123456789abcdeg-9",
            "dev-01-9",
            "other",
            "dev-0123456789abcdef-9x",
        ] {
            assert!(!is_pin_name(n.as_bytes()), "{n}");
        }
    }

    /// Needs root (a bpffs mount, CAP_BPF), as the tests here do (scripts/test.sh).
    #[test]
    fn a_full_cache_is_emptied_of_its_own_pins_only() {
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a bpf filesystem");
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _u = Unmount(d.path());
        let cache = Cache::open(&d.path().join("nvhook")).unwrap();
        std::fs::create_dir(d.path().join("nvhook/other")).unwrap();
        let count = || {
            std::fs::read_dir(d.path().join("nvhook"))
                .unwrap()
                .filter(|e| is_pin_name(e.as_ref().unwrap().file_name().as_encoded_bytes()))
                .count()
        };
        let prog = |i: i32| {
            // allow rules for device (1, i), then "deny"
            let mut v = bpf::allow_rules(&[(1, i as u32)]);
            v.extend(bpf::allow_rules(&[]));
            v.push(Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: 0,
            });
            v.push(Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0,
            });
            v
        };
        for i in 0..MAX_PINS as i32 {
            let insns = prog(i);
            let (fd, hit) = load_cached(&insns, Some(&cache)).unwrap();
            assert!(!hit);
            drop(fd);
            assert!(matches!(cache.get(&insns), Lookup::Hit(_)), "pin {i}");
        }
        assert_eq!(count(), MAX_PINS);
        // one more: the directory is emptied of nvhook's pins, then it is pinned
        let insns = prog(MAX_PINS as i32);
        load_cached(&insns, Some(&cache)).unwrap();
        assert_eq!(count(), 1);
        assert!(matches!(cache.get(&insns), Lookup::Hit(_)));
        assert!(
            d.path().join("nvhook/other").exists(),
            "another entry stays"
        );
    }

    #[test]
    fn a_directory_not_on_bpffs_is_refused() {
        let d = tempfile::tempdir().unwrap();
        for p in [d.path().to_path_buf(), d.path().join("nvhook")] {
            assert!(
                matches!(Cache::open(&p), Err(Error::NotBpffs { .. })),
                "{}",
                p.display()
            );
        }
        assert!(
            !d.path().join("nvhook").exists(),
            "nothing created off bpffs"
        );
        assert!(matches!(
            Cache::open(Path::new("/nonexistent-nvhook/x")),
            Err(Error::NotBpffs { .. })
        ));
    }
}
