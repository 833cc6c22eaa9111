//! Thin, checked wrappers over the Linux system calls nvhook needs and `std` lacks:
//! scoped path resolution (`openat2`), the fd-based mount API and namespaces.
//!
//! Every wrapper returns `io::Result` with the OS error; callers add what they were doing.

use std::ffi::{CStr, CString};
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

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
pub struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

impl OpenHow {
    pub fn new(flags: i32, resolve: u64) -> OpenHow {
        OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve,
        }
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
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
    let c = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    for _ in 0..16 {
        // SAFETY: valid fd, NUL-terminated path, and a correctly sized open_how.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match owned(r) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            other => return other,
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Plain `open(2)` of a host path.
pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: NUL-terminated path.
    owned(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } as libc::c_long)?;
    Ok(st)
}

/// `fstatat(2)` of `path` under `dir`, following a final link (an nsfs link, here).
pub fn fstatat(dir: BorrowedFd<'_>, path: &Path) -> io::Result<libc::stat> {
    let c = cstr(path)?;
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, NUL-terminated path and out-pointer.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, 0) } as libc::c_long)?;
    Ok(st)
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
    let p = CString::new(format!("/proc/self/fd/{}", mnt.as_raw_fd())).expect("no NUL");
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } as libc::c_long)?;
    Ok(())
}

/// Joins the mount namespace `ns` refers to. The caller must be single-threaded.
pub fn setns_mnt(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } as libc::c_long)?;
    Ok(())
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } as libc::c_long)?;
    Ok(())
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated strings.
    check(
        unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } as libc::c_long,
    )?;
    Ok(())
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, dirflag: bool) -> io::Result<()> {
    let flags = if dirflag { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } as libc::c_long)?;
    Ok(())
}

/// `renameat(2)`: atomically replaces `to` (a file or link, never written through).
pub fn renameat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names.
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
        )
    } as libc::c_long)
    .map(drop)
}

/// The target of symlink `name` in `dir`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd, NUL-terminated name, and a buffer of the length given.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in directory `dir` (an fd opened with `O_RDONLY | O_DIRECTORY`), without
/// `.` and `..`, with each one's `d_type`.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u8)>> {
    // fdopendir takes the descriptor over: give it a duplicate.
    // SAFETY: valid fd.
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; on success the DIR owns it.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: still ours on failure.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    // SAFETY: rewinding a fresh DIR (a duplicate shares the offset of `dir`).
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a valid DIR until closedir.
        let e = unsafe { libc::readdir64(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: readdir returns a valid entry with a NUL-terminated name.
        let (name, t) = unsafe { (CStr::from_ptr((*e).d_name.as_ptr()), (*e).d_type) };
        let name = name.to_bytes();
        if name != b"." && name != b".." {
            out.push((name.to_vec(), t));
        }
    }
    // SAFETY: closes the DIR and its fd.
    unsafe { libc::closedir(d) };
    Ok(out)
}

/// An anonymous, sealable in-memory file.
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated name.
    owned(
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) }
            as libc::c_long,
    )
}

/// The path the kernel knows for `fd` (`/proc/self/fd/N` read back).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Major and minor numbers of a device number.
pub fn dev_split(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
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
