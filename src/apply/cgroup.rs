//! The container's device cgroup: found from `/proc/<pid>/cgroup` and the mount
//! table (never by guessing paths), then widened for exactly the planned devices.
//! cgroup v1 takes `devices.allow` lines; v2 needs the eBPF program extended (`bpf`).

use crate::plan::CgroupRule;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container cgroup: {0}")]
    NotFound(String),
    #[error("cannot write {rule:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        rule: String,
        source: std::io::Error,
    },
    #[error("{node} stays denied in {path} by the device program of {by}: allow it there (a systemd unit: DeviceAllow={node} rw), or ask for no GPU")]
    AncestorDenies {
        node: PathBuf,
        path: PathBuf,
        by: String,
    },
    #[error("cannot check device access in {path}: {source}")]
    Probe {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup v2 device filter in {path}: {source}")]
    Bpf {
        path: PathBuf,
        source: crate::apply::bpf::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let h = it.next()?.parse().ok()?;
            let c = it.next()?;
            let p = it.next()?;
            Some(Membership {
                hierarchy: h,
                controllers: c
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: p.to_string(),
            })
        })
        .collect()
}

/// One line of `mountinfo`, the fields nvhook uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            if f.len() < 6 {
                return None;
            }
            let mut p = post.split(' ');
            let fstype = p.next()?.to_string();
            let _source = p.next()?;
            let sopts = p.next().unwrap_or("");
            Some(MountEntry {
                root: unescape(f[3]),
                mount_point: unescape(f[4]),
                fstype,
                super_options: sopts.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Joins a cgroup path to the mount that shows its hierarchy, allowing for a mount
/// of a sub-tree (`root` not `/`).
fn dir_under(mount: &MountEntry, cg_path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        cg_path.strip_prefix('/')?
    } else {
        let r = cg_path.strip_prefix(&mount.root)?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        r.trim_start_matches('/')
    };
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(Path::new(&mount.mount_point).join(rel))
}

/// The device cgroup of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// Finds the device cgroup of `pid`. `unified` says whether `/sys/fs/cgroup` is a
/// cgroup2 mount (decided by `statfs`, as runc does).
pub fn locate(proc_cgroup: &str, mountinfo: &str, unified: bool) -> Result<DeviceCgroup> {
    let members = parse_proc_cgroup(proc_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    if unified {
        let m = members
            .iter()
            .find(|m| m.hierarchy == 0 && m.controllers.is_empty())
            .ok_or_else(|| Error::NotFound("no cgroup v2 entry in /proc/<pid>/cgroup".into()))?;
        // The last cgroup2 mount listed is the one on top.
        let mount = mounts
            .iter()
            .rev()
            .find(|e| e.fstype == "cgroup2" && e.mount_point == "/sys/fs/cgroup")
            .or_else(|| mounts.iter().rev().find(|e| e.fstype == "cgroup2"))
            .ok_or_else(|| Error::NotFound("no cgroup2 mount".into()))?;
        let dir = dir_under(mount, &m.path).ok_or_else(|| {
            Error::NotFound(format!(
                "{} is outside the cgroup2 mount of {}",
                m.path, mount.root
            ))
        })?;
        return Ok(DeviceCgroup::V2(dir));
    }
    let m = members
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == "devices"))
        .ok_or_else(|| Error::NotFound("no devices controller in /proc/<pid>/cgroup".into()))?;
    let mount = mounts
        .iter()
        .rev()
        .find(|e| e.fstype == "cgroup" && e.super_options.iter().any(|o| o == "devices"))
        .ok_or_else(|| Error::NotFound("the devices controller is not mounted".into()))?;
    let dir = dir_under(mount, &m.path).ok_or_else(|| {
        Error::NotFound(format!(
            "{} is outside the devices mount of {}",
            m.path, mount.root
        ))
    })?;
    Ok(DeviceCgroup::V1(dir))
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| Error::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// Whether `/sys/fs/cgroup` is cgroup v2 in this mount namespace.
pub fn is_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Finds `pid`'s device cgroup in the caller's (host) namespaces.
pub fn for_pid(pid: i32) -> Result<DeviceCgroup> {
    let mi = read(Path::new("/proc/self/mountinfo"))?;
    for_pid_in(pid, &mi)
}

/// As [`for_pid`], with the caller's `mountinfo` already read.
pub fn for_pid_in(pid: i32, mountinfo: &str) -> Result<DeviceCgroup> {
    let pc = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    locate(&pc, mountinfo, is_unified())
}

/// Allows the planned devices in the container's cgroup; on v2 through the device
/// program cache at `program_cache`, when one is configured and usable. Gives how many
/// device programs came from that cache.
pub fn allow(
    cg: &DeviceCgroup,
    rules: &[CgroupRule],
    program_cache: Option<&Path>,
) -> Result<usize> {
    if rules.is_empty() {
        return Ok(0);
    }
    match cg {
        DeviceCgroup::V1(dir) => {
            use std::io::Write;
            let path = dir.join("devices.allow");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
            for r in rules {
                // One write per rule: the kernel parses each write as one rule.
                let line = r.v1_line();
                f.write_all(line.as_bytes())
                    .map_err(|source| Error::Write {
                        path: path.clone(),
                        rule: line.clone(),
                        source,
                    })?;
            }
            Ok(0)
        }
        DeviceCgroup::V2(dir) => {
            let cache = program_cache.and_then(|p| {
                crate::apply::bpf_cache::Cache::open(p)
                    .map_err(|e| match e {
                        // The default where no bpffs is mounted: nothing is wrong.
                        crate::apply::bpf_cache::Error::NotBpffs { .. } => {
                            crate::common::log::debug(&e.to_string())
                        }
                        e => crate::common::log::warn(&format!("{e}; loading without it")),
                    })
                    .ok()
            });
            // Two attached programs that extend to the same instructions must not get
            // the same (cached) program: one cannot replace another with a program
            // already attached. The second gets a fresh load.
            let mut served: Vec<Vec<crate::apply::bpf::Insn>> = Vec::new();
            let mut hits = 0;
            crate::apply::bpf::allow_devices(dir, rules, &mut |insns| {
                if served.iter().any(|s| s == insns) {
                    return crate::apply::bpf::load(insns);
                }
                served.push(insns.to_vec());
                let (fd, hit) = crate::apply::bpf_cache::load_cached(insns, cache.as_ref())?;
                hits += usize::from(hit);
                Ok(fd)
            })
            .map_err(|source| Error::Bpf {
                path: dir.clone(),
                source,
            })?;
            Ok(hits)
        }
    }
}

/// Whether the device nodes at `nodes` (host paths) open for reading and writing from
/// inside the cgroup `dir`: the index of the first one its device programs deny.
///
/// The only way to know what a program on a parent cgroup allows (systemd's, or an
/// engine's) is to ask the kernel: a child born in the cgroup (`clone3` with
/// `CLONE_INTO_CGROUP`, no migration of a running process) calls `access(R_OK|W_OK)`,
/// which runs the cgroup's device check without opening the device (so no driver code
/// runs); `EPERM` is the device cgroup's answer. Kernels before 5.7: a forked child
/// moves itself in through `cgroup.procs`.
pub fn first_denied(dir: &Path, nodes: &[&Path]) -> std::io::Result<Option<usize>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cg = crate::common::sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)
    };
    let paths = nodes
        .iter()
        .map(|p| c(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let procs = c(&dir.join("cgroup.procs"))?;
    // In the child: only async-signal-safe calls on memory prepared above.
    let check = |join_by_procs: bool| {
        // SAFETY: raw system calls on valid NUL-terminated strings; _exit never returns.
        unsafe {
            if join_by_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(255);
                }
            }
            for (i, p) in paths.iter().enumerate().take(250) {
                if libc::faccessat(libc::AT_FDCWD, p.as_ptr(), libc::R_OK | libc::W_OK, 0) != 0
                    && *libc::__errno_location() == libc::EPERM
                {
                    libc::_exit(1 + i as i32);
                }
            }
            libc::_exit(0)
        }
    };
    let pid = spawn_in(&cg, &|by_procs| check(by_procs))?;
    match wait_exit(pid)? {
        0 => Ok(None),
        n @ 1..=250 => Ok(Some(n as usize - 1)),
        _ => Err(std::io::Error::other("the device check child failed")),
    }
}

/// Starts a child in the cgroup `cg` that runs `child` (given whether it must join the
/// cgroup itself): born there with `clone3(CLONE_INTO_CGROUP)`, or forked where that
/// is missing (before 5.7). Gives the child's pid.
fn spawn_in(cg: &std::os::fd::OwnedFd, child: &dyn Fn(bool)) -> std::io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is fork with arguments; the child only runs `child`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child(false);
        // SAFETY: a child never returns into the hook's code.
        unsafe { libc::_exit(255) }
    }
    if pid > 0 {
        return Ok(pid as libc::pid_t);
    }
    let e = std::io::Error::last_os_error();
    if !matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
    ) {
        return Err(e);
    }
    // SAFETY: single-threaded (the hook's rule until setns); the child runs `child`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child(true);
        // SAFETY: as above.
        unsafe { libc::_exit(255) }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid)
}

/// The exit status of child `pid` (256 if it did not exit normally).
fn wait_exit(pid: libc::pid_t) -> std::io::Result<i32> {
    loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(pid, &mut st, 0) } >= 0 {
            return Ok(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                256
            });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The nearest cgroup at or above `dir` that has a device program of its own, for a
/// message that says where access is denied.
pub fn nearest_with_program(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .take_while(|d| d.join("cgroup.procs").exists())
        .find(|d| crate::apply::bpf::program_counts(d).is_ok_and(|(own, _)| own > 0))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 0:21 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
25 22 0:24 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
26 22 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 22 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 1 0:29 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw
41 1 0:33 /sub /mnt/with\\040space rw - cgroup cgroup rw,devices
";

    #[test]
    fn v1_devices_dir() {
        let pc = "5:devices:/default/c1\n4:memory:/x\n0::/user.slice\n";
        let mi = MI.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(
            locate(pc, &mi, false).unwrap(),
            DeviceCgroup::V1("/sys/fs/cgroup/devices/default/c1".into())
        );
    }

    #[test]
    fn v2_dir_uses_top_mount() {
        let pc = "0::/c2\n";
        assert_eq!(
            locate(pc, MI, true).unwrap(),
            DeviceCgroup::V2("/sys/fs/cgroup/c2".into())
        );
    }

    #[test]
    fn subtree_mount_and_escapes() {
        let e = parse_mountinfo(MI);
        assert_eq!(e[5].mount_point, "/mnt/with space");
        assert_eq!(
            dir_under(&e[5], "/sub/c3"),
            Some("/mnt/with space/c3".into())
        );
        assert_eq!(dir_under(&e[5], "/subother"), None);
        assert_eq!(dir_under(&e[5], "/other"), None);
        assert_eq!(dir_under(&e[0], "/a/../../etc"), None);
    }

    #[test]
    fn missing_controller_is_error() {
        assert!(locate("4:memory:/x\n", MI, false).is_err());
        assert!(locate("5:devices:/x\n", "", false).is_err());
        assert!(locate("5:devices:/x\n", MI, true).is_err());
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in ["", ":::", "a:b:c", "\\", "1 2 3 4 5 6 - \\777", "x - y"] {
            let _ = parse_proc_cgroup(s);
            let _ = parse_mountinfo(s);
            let _ = unescape(s);
        }
    }
}
