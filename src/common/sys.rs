//! The Linux system calls nvhook needs and `std` lacks: scoped path resolution
//! (`openat2`), descriptor-relative file operations, namespaces (through `nix`), and
//! thin `libc` wrappers for what `nix` does not cover: the fd-based mount API
//! (`open_tree`, `move_mount`, `mount_setattr`, `fsopen`/`fsmount`) and `faccessat2`
//! on a descriptor.
//!
//! Every wrapper returns `io::Result` with the OS error; callers add what they were doing.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(r)? as RawFd;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)`; retried on `EAGAIN`, which the kernel returns when a rename raced
/// the scoped lookup.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = || {
        OpenHow::new()
            .flags(OFlag::from_bits_retain(flags | libc::O_CLOEXEC))
            .mode(nix::sys::stat::Mode::from_bits_retain(mode))
            .resolve(ResolveFlag::from_bits_retain(resolve))
    };
    for _ in 0..16 {
        match nix::fcntl::openat2(dir, path, how()) {
            Err(nix::Error::EAGAIN) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Plain `open(2)` of a host path.
pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::from_bits_retain(flags | libc::O_CLOEXEC),
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    nix::sys::stat::fstat(fd).map_err(io::Error::from)
}

/// `fstatat(2)` of `path` under `dir`, following a final link (an nsfs link, here).
pub fn fstatat(dir: BorrowedFd<'_>, path: &Path) -> io::Result<libc::stat> {
    nix::sys::stat::fstatat(dir, path, nix::fcntl::AtFlags::empty()).map_err(io::Error::from)
}

/// Whether this process may access the file `fd` refers to with `mode` (`R_OK`,
/// `W_OK`), as the kernel would decide for an open now: effective ids, groups and
/// capabilities (`faccessat2` with `AT_EACCESS`, on the descriptor, no path walked).
pub fn may_access(fd: BorrowedFd<'_>, mode: i32) -> bool {
    // SAFETY: valid fd and an empty NUL-terminated path (AT_EMPTY_PATH).
    unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        ) == 0
    }
}

/// `open_tree(OPEN_TREE_CLONE)` of the file or directory `fd` refers to: a detached
/// bind mount that can be attached later with [`move_mount_to`], even from another
/// mount namespace.
pub fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let empty = c"";
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) })
}

/// Sets and clears mount attributes on a (detached) mount.
pub fn mount_setattr(mnt: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: valid fd, empty path, correctly sized mount_attr.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Attaches the detached mount `mnt` on top of the file or directory `target` refers
/// to: no path is resolved, so nothing can be swapped underneath.
pub fn move_mount_to(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: valid fds, empty paths with the EMPTY_PATH flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Detaches the mount whose root `mnt` refers to (lazily, so a busy mount goes too).
pub fn umount_fd(mnt: BorrowedFd<'_>) -> io::Result<()> {
    let p = format!("/proc/self/fd/{}", mnt.as_raw_fd());
    nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Joins the mount namespace `ns` refers to. The caller must be single-threaded.
pub fn setns_mnt(ns: BorrowedFd<'_>) -> io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).map_err(io::Error::from)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    nix::sys::stat::mkdirat(dir, name, nix::sys::stat::Mode::from_bits_retain(mode))
        .map_err(io::Error::from)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    nix::unistd::symlinkat(target, dir, name).map_err(io::Error::from)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, dirflag: bool) -> io::Result<()> {
    let flags = if dirflag {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(dir, name, flags).map_err(io::Error::from)
}

/// `renameat(2)`: atomically replaces `to` (a file or link, never written through).
pub fn renameat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    nix::fcntl::renameat(from_dir, from, to_dir, to).map_err(io::Error::from)
}

/// The target of symlink `name` in `dir`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    nix::fcntl::readlinkat(dir, name)
        .map(OsStringExt::into_vec)
        .map_err(io::Error::from)
}

/// The names in directory `dir` (an fd opened with `O_RDONLY | O_DIRECTORY`) that
/// `keep` accepts, without `.` and `..`, read as they come. More than `max` entries in
/// all (kept or not) is `E2BIG`: a directory of an image may hold millions.
pub fn read_dir(
    dir: BorrowedFd<'_>,
    max: usize,
    keep: &dyn Fn(&[u8]) -> bool,
) -> io::Result<Vec<Vec<u8>>> {
    // The listing owns its descriptor: a duplicate, from the directory's start.
    let dup = dir.try_clone_to_owned()?;
    nix::unistd::lseek(&dup, 0, nix::unistd::Whence::SeekSet).map_err(io::Error::from)?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for (n, e) in d.iter().enumerate() {
        if n >= max {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        let e = e.map_err(io::Error::from)?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." && keep(name) {
            out.push(name.to_vec());
        }
    }
    Ok(out)
}

/// An anonymous, sealable in-memory file.
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(io::Error::from)
}

/// The path the kernel knows for `fd` (`/proc/self/fd/N` read back).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Major and minor numbers of a device number.
pub fn dev_split(rdev: u64) -> (u32, u32) {
    (
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

/// A new, detached, empty read-only tmpfs mount (`nosuid,nodev,noexec`).
pub fn new_tmpfs() -> io::Result<OwnedFd> {
    new_tmpfs_with(c"4k", true)
}

/// A new, detached tmpfs of `size` (`nosuid,nodev,noexec`, read-only if asked): its fd
/// is the root directory, so files can be made in it before it is attached anywhere.
pub fn new_tmpfs_with(size: &CStr, readonly: bool) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: u32 = 1;
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    const FSMOUNT_CLOEXEC: u32 = 1;
    // SAFETY: literal C strings and valid fds throughout.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            c"size".as_ptr(),
            size.as_ptr(),
            0,
        )
    })?;
    // SAFETY: as above.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })?;
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    if readonly {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    // SAFETY: valid fd.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// A child's output up to EOF (the first `keep` bytes or so kept, the rest read and
/// dropped, so the child never blocks on a full pipe), or `None` when `deadline`
/// passes first: what the ldconfig and NVML children are read with.
pub fn read_until(
    fd: BorrowedFd<'_>,
    deadline: std::time::Instant,
    keep: usize,
) -> Option<Vec<u8>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut pfd, ms) {
            Ok(0) => return None,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Some(out),
            Ok(_) => {}
        }
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) if n > 0 => n,
            _ => return Some(out),
        };
        if out.len() < keep {
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Opens fds 0-2 on `/dev/null` where the caller left one closed, so no file opened
/// later (a replacement config.json, a new ld.so.cache) can become stdin, stdout or
/// stderr. std does this before `main`; nvhook's binaries have no Rust `main` (see
/// their module docs) and call this first.
pub fn open_std_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD on a plain number only asks whether it is an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // The lowest free number is `fd` (the lower ones are open by now). Without
        // O_CLOEXEC: it is for the program exec'd next as much as for this one.
        // SAFETY: a constant path; the descriptor is left open for the process's life.
        if unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } != fd {
            // As std does: going on with stdio closed would let the next file opened
            // become stderr.
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_std_fds_are_opened_on_dev_null() {
        // In a child: the test harness's own fds stay as they are.
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::close(0) };
            unsafe { libc::close(2) };
            open_std_fds();
            let ok = [0, 2].iter().all(|n| {
                std::fs::read_link(format!("/proc/self/fd/{n}"))
                    .is_ok_and(|p| p == Path::new("/dev/null"))
                    // kept across exec, as the caller's own would have been
                    && unsafe { libc::fcntl(*n, libc::F_GETFD) } == 0
            });
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
    }
}
