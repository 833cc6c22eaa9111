//! Running ldconfig for the container without trusting the container.
//!
//! The host binary is copied into a sealed memfd before nvhook enters the container,
//! so the image cannot swap it; it must be static, because a dynamic one would load
//! the image's loader and libc. The child runs in new user (its ids mapped as the
//! container's, so its capabilities hold over nothing outside), PID, IPC, mount, network
//! and UTS namespaces, chroots into the container root, gets an empty environment,
//! `no_new_privs` and a seccomp filter that allows only the system calls ldconfig
//! makes, and is killed after a timeout.

use crate::common::sys;
use crate::host::elf::is_static_elf;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ldconfig {path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("ldconfig {0} is not a statically linked ELF executable (a dynamic one would run the image's libc){1}")]
    NotStatic(String, String),
    #[error("ldconfig failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("ldconfig did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error(transparent)]
    Untrusted(#[from] crate::common::trust::Error),
    #[error("cannot build the ldconfig seccomp filter: {0}")]
    Seccomp(String),
    #[error("cannot set up the ldconfig sandbox's user namespace ({what}): {source}; the sandbox needs user namespaces (sysctl user.max_user_namespaces > 0, and no security module refusing them to root), or set ldconfig-user-namespace = false")]
    UserNs {
        what: &'static str,
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Resource limits of the ldconfig child: CPU seconds, address space, file size, open
/// files, no core dumps.
const LIMITS: &[(libc::__rlimit_resource_t, libc::rlim_t)] = &[
    (libc::RLIMIT_CPU, 10),
    (libc::RLIMIT_AS, 1 << 30),
    (libc::RLIMIT_FSIZE, 64 << 20),
    (libc::RLIMIT_NOFILE, 256),
    (libc::RLIMIT_CORE, 0),
];

/// The system calls ldconfig makes (glibc's, static or dynamic: loader start-up, reading
/// directories and ELF headers, writing the cache and the SONAME links), and nothing
/// else: no sockets, no `mknod`, no mounts, no new processes, no `ptrace`, no BPF, no
/// `open_by_handle_at`. Everything else fails with `EPERM`; a call from another
/// architecture's table (an `int 0x80` on x86-64) kills the process.
const ALLOWED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdirat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_symlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_getrandom,
    libc::SYS_futex,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_capget,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // The exec that starts ldconfig itself happens under the filter.
    libc::SYS_execve,
    libc::SYS_execveat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_symlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
];

/// The seccomp program for the ldconfig child, built before it is started (the child
/// only installs it). `ioctl` is allowed for `TCGETS` alone (`isatty`), `prctl` only to
/// read no_new_privs and the bounding set.
pub fn seccomp_program() -> Result<seccompiler::BpfProgram> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let err = |e: seccompiler::BackendError| Error::Seccomp(e.to_string());
    #[cfg(target_arch = "x86_64")]
    let arch = seccompiler::TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    let arch = seccompiler::TargetArch::aarch64;
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED_SYSCALLS.iter().map(|n| (*n, Vec::new())).collect();
    let tcgets = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::TCGETS)
        .map_err(err)?;
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![tcgets]).map_err(err)?],
    );
    // prctl only to read: no_new_privs and the bounding set.
    let mut prctl = Vec::new();
    for op in [libc::PR_GET_NO_NEW_PRIVS, libc::PR_CAPBSET_READ] {
        let c = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, op as u64)
            .map_err(err)?;
        prctl.push(SeccompRule::new(vec![c]).map_err(err)?);
    }
    rules.insert(libc::SYS_prctl, prctl);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(err)?;
    filter.try_into().map_err(err)
}

/// The uid and gid maps of the ldconfig child's user namespace: the container's own
/// (so ldconfig is the container's root, over the files the container's root owns), or
/// for a container without a user namespace every id to itself (its capabilities then
/// hold over the container's files as before, and over nothing outside its namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: String,
    pub gid: String,
}

impl IdMaps {
    /// Every id of nvhook's own user namespace to itself: all ids under a root
    /// engine, only the user's own and subordinate ids under rootless Podman (a nested
    /// namespace cannot map more).
    pub fn identity() -> IdMaps {
        let (uid, gid) = crate::common::userns::own_identity_maps();
        IdMaps { uid, gid }
    }

    /// The host ids of the container's root (uid, gid), where the container has a user
    /// namespace that maps its root elsewhere than host root.
    pub fn root_owner(&self) -> Option<(u32, u32)> {
        let host_of_zero = |map: &str| {
            crate::common::userns::parse_map(map)
                .into_iter()
                .find(|e| e.inside == 0 && e.count > 0)
                .map(|e| e.outside)
        };
        match (host_of_zero(&self.uid), host_of_zero(&self.gid)) {
            (Some(0), Some(0)) | (None, _) | (_, None) => None,
            (Some(u), Some(g)) => Some((u, g)),
        }
    }

    /// The maps of process `pid` (the container's init), read through the host's
    /// `/proc`; the identity where they cannot be read, or where the container shares
    /// nvhook's own user namespace (rootless Podman's default: its map file would show
    /// the ids of the parent namespace, which do not exist in this one).
    pub fn of_process(proc_dir: std::os::fd::BorrowedFd<'_>, pid: i32) -> IdMaps {
        let ns_of = |p: &str| {
            let st = sys::fstatat(proc_dir, Path::new(&format!("{p}/ns/user"))).ok()?;
            Some((st.st_dev, st.st_ino))
        };
        let own = ns_of("self");
        if own.is_some() && own == ns_of(&pid.to_string()) {
            return IdMaps::identity();
        }
        let read = |f: &str| -> Option<String> {
            let fd = sys::openat2(
                proc_dir,
                Path::new(&format!("{pid}/{f}")),
                libc::O_RDONLY,
                0,
                sys::RESOLVE_NO_SYMLINKS,
            )
            .ok()?;
            let mut text = String::new();
            io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).ok()?;
            let lines: Vec<String> = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| !l.is_empty())
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n") + "\n")
        };
        match (read("uid_map"), read("gid_map")) {
            (Some(uid), Some(gid)) => IdMaps { uid, gid },
            _ => IdMaps::identity(),
        }
    }
}

/// Writes `maps` for the child's new user namespace, through the host's `/proc`
/// (`proc_dir`, opened before nvhook entered the container).
fn write_maps(
    proc_dir: std::os::fd::BorrowedFd<'_>,
    pid: libc::pid_t,
    maps: &IdMaps,
) -> Result<()> {
    for (what, text) in [("uid_map", &maps.uid), ("gid_map", &maps.gid)] {
        let path = format!("{pid}/{what}");
        let fd = sys::openat2(
            proc_dir,
            Path::new(&path),
            libc::O_WRONLY,
            0,
            sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|source| Error::UserNs { what, source })?;
        // One write: the kernel takes a map file's whole text at once, or nothing.
        match nix::unistd::write(&fd, text.as_bytes()) {
            Ok(n) if n == text.len() => {}
            Ok(_) => {
                return Err(Error::UserNs {
                    what,
                    source: io::Error::from_raw_os_error(libc::EIO),
                })
            }
            Err(e) => {
                return Err(Error::UserNs {
                    what,
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

/// The executable to run: a sealed copy of a host binary, or a path in the container.
#[derive(Debug)]
pub enum Exe {
    Sealed(OwnedFd),
    InContainer(CString),
}

fn io_err<'a>(path: &'a str, what: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.into(),
        what,
        source,
    }
}

/// Where the refused `path` is a wrapper (Ubuntu's `/sbin/ldconfig` runs
/// `/sbin/ldconfig.real`), names a host ldconfig that would be accepted.
fn static_alternative(path: &str) -> String {
    let candidates = [
        format!("{path}.real"),
        "/sbin/ldconfig.real".into(),
        "/usr/sbin/ldconfig.real".into(),
        "/sbin/ldconfig".into(),
        "/usr/sbin/ldconfig".into(),
    ];
    for c in candidates.iter().filter(|c| c.as_str() != path) {
        let ok = crate::common::trust::check_root_owned("ldconfig", Path::new(c)).is_ok()
            && std::fs::read(c).is_ok_and(|b| is_static_elf(&b));
        if ok {
            return format!("; {c} is: set ldconfig = \"@{c}\"");
        }
    }
    String::new()
}

/// Copies the host binary into a sealed memfd. Must run before entering the container.
pub fn seal_host(path: &str) -> Result<Exe> {
    crate::common::trust::check_root_owned("ldconfig", Path::new(path))?;
    let src = sys::open(Path::new(path), libc::O_RDONLY).map_err(io_err(path, "open"))?;
    let st = sys::fstat(src.as_fd()).map_err(io_err(path, "stat"))?;
    crate::common::trust::check_stat("ldconfig", Path::new(path), src.as_fd(), &st)?;
    // Copied by the kernel (copy_file_range/sendfile), sealed, and only then checked:
    // what is checked is exactly what will run.
    let mfd = sys::memfd(c"nvhook-ldconfig").map_err(io_err(path, "memfd"))?;
    let mut f = std::fs::File::from(mfd);
    io::copy(&mut std::fs::File::from(src), &mut f).map_err(io_err(path, "copy"))?;
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(&f, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| io_err(path, "seal")(e.into()))?;
    // The ELF and program headers sit at the start of the file.
    let mut head = vec![0u8; 64 * 1024];
    let n = std::os::unix::fs::FileExt::read_at(&f, &mut head, 0).map_err(io_err(path, "read"))?;
    if !is_static_elf(&head[..n]) {
        return Err(Error::NotStatic(path.into(), static_alternative(path)));
    }
    Ok(Exe::Sealed(f.into()))
}

/// Runs ldconfig chrooted into `root` (an fd opened inside the container's mount
/// namespace, which the caller has joined), with an empty environment. `proc_dir` is
/// the host's `/proc`, opened before joining. `maps`: the ids of its own user namespace;
/// `None` runs it without one (`ldconfig-user-namespace = false`, for hosts where user
/// namespaces are off: the rest of the sandbox stays).
pub fn run(
    exe: &Exe,
    root: std::os::fd::BorrowedFd<'_>,
    proc_dir: std::os::fd::BorrowedFd<'_>,
    maps: Option<&IdMaps>,
    args: &[String],
    timeout: Duration,
) -> Result<()> {
    // Everything the child uses is made before the clone: between clone and exec it
    // makes system calls only (no allocation: `caps::limit_to_mask` drops capabilities).
    let filter = seccomp_program()?;
    let argv = child_argv(args)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let label = match exe {
        Exe::Sealed(_) => "host ldconfig".to_string(),
        Exe::InContainer(p) => p.to_string_lossy().into_owned(),
    };
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err(&label, "pipe")(e.into()))
    };
    let (rd, wr) = pipe()?;
    let devnull = sys::open(Path::new("/dev/null"), libc::O_RDWR)
        .map_err(io_err(&label, "open /dev/null"))?;
    // The child waits on this pipe until its user namespace maps root.
    let (sync_rd, sync_wr) = pipe()?;

    let (pid, saved_cwd) = clone_sandbox(root, maps.is_some(), &label)?;
    if pid == 0 {
        let io = ChildIo {
            devnull: devnull.as_raw_fd(),
            out: wr.as_raw_fd(),
            sync_rd: sync_rd.as_raw_fd(),
        };
        // SAFETY: the forked child of a single-threaded process; it only makes raw
        // system calls on what was prepared above, and leaves by exec or _exit.
        unsafe { child(io, sync_wr, &filter, exe, &argv_p, &envp) }
    }
    let _ = nix::unistd::fchdir(&saved_cwd);
    drop(wr);
    drop(devnull);
    drop(sync_rd);
    supervise(pid, proc_dir, maps, sync_wr, &rd, timeout)
}

/// `ldconfig` and the arguments, as the C strings exec takes.
fn child_argv(args: &[String]) -> Result<Vec<CString>> {
    let mut argv = vec![c"ldconfig".to_owned()];
    for a in args {
        argv.push(CString::new(a.as_str()).map_err(|_| Error::Failed {
            status: "not started".into(),
            stderr: format!("argument {a:?} holds a NUL"),
        })?);
    }
    Ok(argv)
}

/// Clones the sandbox's process, in the container root, and returns its pid (0 in the
/// child, like fork) and the caller's working directory, to go back to.
///
/// New user (with `userns`), PID, IPC, mount, network and UTS namespaces: ldconfig is
/// pid 1 of an empty PID namespace, its capabilities hold only in its own user namespace
/// (over files of the mapped root), it has no network interface but a loopback that is
/// down, and its tmpfs mounts stay private to it.
fn clone_sandbox(
    root: std::os::fd::BorrowedFd<'_>,
    userns: bool,
    label: &str,
) -> Result<(libc::pid_t, OwnedFd)> {
    // The child starts in the container root: clone() carries the working directory
    // over into the new mount namespace's copy, where file descriptors opened before
    // would still point into the old one.
    let saved_cwd = sys::open(Path::new("."), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(io_err(label, "open working directory"))?;
    nix::unistd::fchdir(root).map_err(|e| io_err(label, "enter container root")(e.into()))?;
    let flags = if userns { libc::CLONE_NEWUSER } else { 0 }
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    // SAFETY: clone without a new stack behaves as fork; nvhook is single-threaded here,
    // and the child only makes raw system calls and leaves by exec or _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) }
        as libc::pid_t;
    if pid >= 0 {
        return Ok((pid, saved_cwd));
    }
    let e = io::Error::last_os_error();
    let _ = nix::unistd::fchdir(&saved_cwd);
    // ENOSPC: user.max_user_namespaces is 0 (or used up); EPERM/EUSERS: refused.
    if userns
        && matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC | libc::EPERM | libc::EUSERS | libc::EINVAL)
        )
    {
        return Err(Error::UserNs {
            what: "clone",
            source: e,
        });
    }
    Err(io_err(label, "clone")(e))
}

/// The child's descriptors: stdin, where stdout and stderr go, the sync pipe's end.
#[derive(Clone, Copy)]
struct ChildIo {
    devnull: libc::c_int,
    out: libc::c_int,
    sync_rd: libc::c_int,
}

/// Leaves the child with exit status 127 after a short message on its output.
fn child_fail(msg: &[u8]) -> ! {
    // SAFETY: raw write and _exit in the forked child.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child, from the clone to ldconfig's exec, in the order the sandbox needs: its
/// stdio, the wait for its user namespace's maps, root of that namespace, a named UTS
/// namespace, private mounts with `/proc`, `/sys` and `/dev` covered, chrooted, limited,
/// then confined. Any failure exits 127 after a short message.
///
/// # Safety
/// Only in the forked child of a single-threaded process: it makes raw system calls on
/// the given descriptors, allocates nothing, and never returns. The `child_*` steps it
/// calls share that contract.
unsafe fn child(
    io: ChildIo,
    sync_wr: OwnedFd,
    filter: &seccompiler::BpfProgram,
    exe: &Exe,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    child_stdio(io);
    // The parent's end: the read below sees EOF if the parent dies.
    drop(sync_wr);
    let mut b = 0u8;
    if libc::read(io.sync_rd, (&mut b as *mut u8).cast(), 1) != 1 {
        child_fail(b"nvhook: the ldconfig user namespace was not set up\n");
    }
    child_become_root();
    child_cover_kernel_dirs();
    if libc::chroot(c".".as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
        child_fail(b"nvhook: cannot chroot into container root\n");
    }
    child_confine(filter);
    match exe {
        Exe::Sealed(fd) => {
            libc::syscall(
                libc::SYS_execveat,
                fd.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
        Exe::InContainer(p) => {
            libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
    }
    child_fail(b"nvhook: cannot execute ldconfig\n");
}

/// stdin from /dev/null, stdout and stderr into the parent's pipe, `SIGPIPE` at its
/// default; killed with the hook.
///
/// # Safety
/// Only in the forked child, from `child` (see there).
unsafe fn child_stdio(io: ChildIo) {
    if libc::dup2(io.devnull, 0) < 0 || libc::dup2(io.out, 1) < 0 || libc::dup2(io.out, 2) < 0 {
        libc::_exit(127);
    }
    // The hook ignores SIGPIPE; ldconfig gets the default, as any program started anew.
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    );
}

/// Root of the sandbox's user namespace (the container's root where it has a user
/// namespace of its own: then files ldconfig creates belong to it), in a UTS namespace
/// named for it, with its mounts private.
///
/// # Safety
/// Only in the forked child, from `child` (see there).
unsafe fn child_become_root() {
    if libc::setgroups(0, std::ptr::null()) != 0
        || libc::setresgid(0, 0, 0) != 0
        || libc::setresuid(0, 0, 0) != 0
    {
        child_fail(b"nvhook: cannot become root of the ldconfig user namespace\n");
    }
    let name = b"nvhook-ldconfig";
    if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
        child_fail(b"nvhook: cannot name the ldconfig UTS namespace\n");
    }
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        child_fail(b"nvhook: cannot make the ldconfig mount namespace private\n");
    }
}

/// tmpfs over the image's /proc, /sys and /dev (where they exist), so nothing under
/// /proc (such as /proc/1/root: runc's init, whose root is still the host's) is
/// reachable.
///
/// # Safety
/// Only in the forked child, from `child` (see there).
unsafe fn child_cover_kernel_dirs() {
    for name in [c"proc", c"sys", c"dev"] {
        let dir = &<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes());
        let t = match sys::openat2(
            nix::fcntl::AT_FDCWD,
            Path::new(dir),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) => child_fail(b"nvhook: /proc, /sys and /dev must be plain directories in the image for the ldconfig sandbox\n"),
        };
        let Ok(m) = sys::new_tmpfs() else {
            child_fail(b"nvhook: cannot create tmpfs for ldconfig\n")
        };
        if sys::move_mount_to(m.as_fd(), t.as_fd()).is_err() {
            child_fail(b"nvhook: cannot cover /proc, /sys or /dev for ldconfig\n");
        }
    }
}

/// Resource limits, two capabilities, no descriptor of the hook's (a directory of the
/// host, say: everything above stdio closes on exec), `no_new_privs`, and the seccomp
/// filter last.
///
/// # Safety
/// Only in the forked child, from `child` (see there).
unsafe fn child_confine(filter: &seccompiler::BpfProgram) {
    for (res, lim) in LIMITS {
        let r = libc::rlimit {
            rlim_cur: *lim,
            rlim_max: *lim,
        };
        if libc::setrlimit(*res, &r) != 0 {
            child_fail(b"nvhook: cannot set ldconfig resource limits\n");
        }
    }
    if crate::apply::caps::limit_to_mask(crate::apply::caps::mask(crate::apply::caps::LDCONFIG))
        .is_err()
    {
        child_fail(b"nvhook: cannot drop capabilities for ldconfig\n");
    }
    if libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) != 0
    {
        child_fail(b"nvhook: cannot close the hook's descriptors for ldconfig\n");
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        child_fail(b"nvhook: cannot set no_new_privs\n");
    }
    if seccompiler::apply_filter(filter).is_err() {
        child_fail(b"nvhook: cannot install the ldconfig seccomp filter\n");
    }
}

/// The parent's side: writes the child's user namespace maps, lets it go, reads its
/// output until it ends or the deadline (then kills it), and reaps it.
fn supervise(
    pid: libc::pid_t,
    proc_dir: std::os::fd::BorrowedFd<'_>,
    maps: Option<&IdMaps>,
    sync_wr: OwnedFd,
    out: &OwnedFd,
    timeout: Duration,
) -> Result<()> {
    let child = nix::unistd::Pid::from_raw(pid);
    let kill = || {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    };
    let reap = || loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::Error::EINTR) => continue,
            other => return other.ok(),
        }
    };
    if let Err(e) = maps.map_or(Ok(()), |m| write_maps(proc_dir, pid, m)) {
        // it waits on the sync pipe
        kill();
        reap();
        return Err(e);
    }
    let _ = nix::unistd::write(&sync_wr, b"x");
    drop(sync_wr);
    let text = sys::read_until(out.as_fd(), Instant::now() + timeout, 65536);
    if text.is_none() {
        kill();
        reap();
        return Err(Error::Timeout(timeout));
    }
    use nix::sys::wait::WaitStatus;
    let status = match reap() {
        Some(WaitStatus::Exited(_, 0)) => return Ok(()),
        Some(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by signal {}", sig as i32),
        Some(other) => format!("{other:?}"),
        // reaped, but with a signal nix's list does not name (a real-time one)
        None => "ended with a status nvhook cannot name".into(),
    };
    let text = text.unwrap_or_default();
    let stderr: String = String::from_utf8_lossy(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect();
    Err(Error::Failed { status, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        let host = std::fs::read("/sbin/ldconfig").expect("the test host has /sbin/ldconfig");
        assert!(is_static_elf(&host), "Debian's ldconfig is static-pie");
        let dynamic = std::fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&dynamic));
        assert!(!is_static_elf(b"#!/bin/sh\necho hi\n"));
        assert!(!is_static_elf(&[]));
        let mut t = host[..64].to_vec();
        t[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!is_static_elf(&t));
    }

    #[test]
    fn refuses_script_and_untrusted_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ldconfig");
        std::fs::write(&p, "#!/bin/sh\ntouch /pwned\n").unwrap();
        assert!(matches!(
            seal_host(p.to_str().unwrap()),
            Err(Error::NotStatic(..))
        ));
        // the real static ldconfig, but in a world-writable dir: refused
        let t = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let q = t.path().join("ldconfig");
        std::fs::copy("/sbin/ldconfig", &q).unwrap();
        let e = seal_host(q.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not trusted"), "{e}");
        assert!(seal_host("/sbin/ldconfig").is_ok());
    }
}
