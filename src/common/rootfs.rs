//! Safe work inside a container root: every path is resolved by the kernel with the
//! root as `/` (`openat2(RESOLVE_IN_ROOT)`), held as a file descriptor, and new
//! entries are made relative to their parent's descriptor, one component at a time.
//! A hostile image's symlinks can only lead to other places inside its own root.

use crate::common::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} in the container: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("{path} in the container is {found}, expected {expected}")]
    WrongType {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{0:?} is not a clean absolute container path")]
    BadPath(String),
    /// A write that would land on a host file system mounted into the container (an
    /// engine's volume, or a mount nvhook made), e.g. through an image's symlink.
    #[error("{path} in the container resolves onto a mount from the host, not the container's own file system: nvhook writes nothing there")]
    HostMount { path: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a mount target must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    File,
    Dir,
}

/// Something nvhook created, to be removed again if applying fails.
#[derive(Debug)]
struct Created {
    parent: OwnedFd,
    name: CString,
    dir: bool,
}

/// A container root held open, with a log of what was created in it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    created: Vec<Created>,
    /// The host's `/proc`: an entry checked through an `O_PATH` descriptor is opened
    /// for reading or writing through `self/fd/N`, the very inode checked, so a device
    /// node or FIFO the image put there is never opened. Set by [`Root::set_proc`];
    /// else `/proc` is opened when first needed (a root used from the host's view).
    proc: Option<OwnedFd>,
    /// Set by [`Root::keep_off_host_mounts`]: the root's own mount and the devices of
    /// the host's file systems; a directory nvhook writes in must be on the first, or
    /// on a file system the host does not have (the container's own `/dev` tmpfs).
    guard: Option<MountGuard>,
}

#[derive(Debug)]
struct MountGuard {
    root_mnt: u64,
    host_devs: std::collections::HashSet<u64>,
}

/// The mount id and device of an open file (`statx`, Linux 5.8 for the mount id).
fn mount_of(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx fills the zeroed buffer; the fd and the empty path are valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok((
        stx.stx_mnt_id,
        libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
    ))
}

/// The devices (`st_dev`) of the file systems mounted in the caller's mount namespace,
/// from its `mountinfo` text (field 3, `major:minor`).
pub fn mounted_devices(mountinfo: &str) -> std::collections::HashSet<u64> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .filter_map(|d| {
            let (a, b) = d.split_once(':')?;
            Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

const RESOLVE: u64 = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;
const BENEATH_NOFOLLOW: u64 = sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS | 0x08; // RESOLVE_BENEATH

pub fn type_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        _ => "an unknown file type",
    }
}

/// Splits a clean absolute path into its components; `..`, `.` and empty names are
/// refused so a plan can never name a place outside the root by itself.
fn components(path: &str) -> Result<Vec<&str>> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::BadPath(path.into()))?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(Error::BadPath(path.into()));
    }
    Ok(parts)
}

fn cname(s: &str) -> CString {
    CString::new(s).expect("components hold no NUL")
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        Ok(Root {
            fd: sys::open(path, libc::O_PATH | libc::O_DIRECTORY)?,
            created: Vec::new(),
            proc: None,
            guard: None,
        })
    }

    /// From now on, nothing is created or written in a directory that is not on the
    /// root's own mount, unless its file system is none of `host_devs` (those mounted
    /// in the host's namespace, read before joining the container's).
    pub fn keep_off_host_mounts(
        &mut self,
        host_devs: std::collections::HashSet<u64>,
    ) -> io::Result<()> {
        let (root_mnt, _) = mount_of(self.fd.as_fd())?;
        self.guard = Some(MountGuard {
            root_mnt,
            host_devs,
        });
        Ok(())
    }

    /// Whether writing in directory `dir` (open) keeps to the container's own file
    /// systems; `path` names the entry in the error.
    fn check_own(&self, dir: &OwnedFd, path: &str) -> Result<()> {
        let Some(g) = &self.guard else {
            return Ok(());
        };
        let (mnt, dev) = mount_of(dir.as_fd()).map_err(io_err(path, "statx"))?;
        if mnt == g.root_mnt || !g.host_devs.contains(&dev) {
            return Ok(());
        }
        Err(Error::HostMount { path: path.into() })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Uses `proc` (the host's `/proc`, opened before joining the container's mount
    /// namespace) to reopen checked entries.
    pub fn set_proc(&mut self, proc: OwnedFd) {
        self.proc = Some(proc);
    }

    /// Opens the inode behind `O_PATH` descriptor `fd` with `flags`, once its type is
    /// known to be a regular file.
    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32, path: &str) -> Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        let err = |source| Error::Io {
            path: path.into(),
            what: "reopen",
            source,
        };
        let opened;
        let proc = match &self.proc {
            Some(p) => p.as_fd(),
            None => {
                opened =
                    sys::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY).map_err(err)?;
                opened.as_fd()
            }
        };
        sys::openat2(
            proc,
            Path::new(&format!("self/fd/{}", fd.as_raw_fd())),
            flags | libc::O_NOCTTY,
            0,
            0,
        )
        .map_err(err)
    }

    /// Opens regular file `path` (links followed inside the root) with `flags`; `None`
    /// when absent; anything else there is an error naming its type, and is never
    /// opened (a device's open can act, a FIFO's can hang).
    pub fn open_regular(&self, path: &str, flags: i32) -> Result<Option<(OwnedFd, libc::stat)>> {
        let Some((fd, st)) = self.stat(path)? else {
            return Ok(None);
        };
        expect_type(path, &st, libc::S_IFREG, "a regular file")?;
        Ok(Some((self.reopen(fd.as_fd(), flags, path)?, st)))
    }

    /// Opens `path` (inside the root) as `O_PATH` and returns its stat; `None` when absent.
    pub fn stat(&self, path: &str) -> Result<Option<(OwnedFd, libc::stat)>> {
        self.stat_with(path, libc::O_PATH)
    }

    /// As [`Root::stat`], of the entry itself when it is a symlink.
    pub fn stat_nofollow(&self, path: &str) -> Result<Option<(OwnedFd, libc::stat)>> {
        self.stat_with(path, libc::O_PATH | libc::O_NOFOLLOW)
    }

    fn stat_with(&self, path: &str, flags: i32) -> Result<Option<(OwnedFd, libc::stat)>> {
        let parts = components(path)?;
        match sys::openat2(
            self.fd.as_fd(),
            Path::new(&parts.join("/")),
            flags,
            0,
            RESOLVE,
        ) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_fd()).map_err(io_err(path, "stat"))?;
                Ok(Some((fd, st)))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.into(),
                what: "resolve",
                source,
            }),
        }
    }

    /// Makes sure directory `dir` exists (creating what is missing, mode 0755) and
    /// returns it open as `O_PATH`.
    pub fn mkdir_all(&mut self, dir: &str) -> Result<OwnedFd> {
        let parts = if dir == "/" {
            Vec::new()
        } else {
            components(dir)?
        };
        // Deepest existing ancestor, resolved in the root.
        let mut have = parts.len();
        let mut cur = loop {
            let p = parts[..have].join("/");
            let p = if p.is_empty() { ".".to_string() } else { p };
            match sys::openat2(
                self.fd.as_fd(),
                Path::new(&p),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                RESOLVE,
            ) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && have > 0 => have -= 1,
                Err(source) => {
                    return Err(Error::Io {
                        path: format!("/{p}"),
                        what: "open directory",
                        source,
                    })
                }
            }
        };
        for (i, name) in parts.iter().enumerate().skip(have) {
            let path = format!("/{}", parts[..=i].join("/"));
            let c = cname(name);
            self.check_own(&cur, &path)?;
            match sys::mkdirat(cur.as_fd(), &c, 0o755) {
                Ok(()) => self.created.push(Created {
                    parent: dup(&cur, &path)?,
                    name: c.clone(),
                    dir: true,
                }),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Made meanwhile, or a symlink the scoped lookup found dangling:
                    // resolve it inside the root again; a dangling link stays an error.
                    cur = sys::openat2(
                        self.fd.as_fd(),
                        Path::new(path.trim_start_matches('/')),
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                        RESOLVE,
                    )
                    .map_err(|source| Error::Io {
                        path: path.clone(),
                        what: "resolve existing entry (dangling symlink?)",
                        source,
                    })?;
                    continue;
                }
                Err(source) => {
                    return Err(Error::Io {
                        path,
                        what: "create directory",
                        source,
                    })
                }
            }
            // The new entry must be a plain directory: a symlink swapped in meanwhile fails.
            cur = sys::openat2(
                cur.as_fd(),
                Path::new(name),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                BENEATH_NOFOLLOW,
            )
            .map_err(|source| Error::Io {
                path,
                what: "open new directory",
                source,
            })?;
        }
        Ok(cur)
    }

    /// The directory that holds `path` (made if missing) and the last component's name.
    fn parent_of<'p>(&mut self, path: &'p str) -> Result<(OwnedFd, &'p str)> {
        let parts = components(path)?;
        let (name, parent_parts) = parts.split_last().expect("components are never empty");
        let parent = self.mkdir_all(&format!("/{}", parent_parts.join("/")))?;
        self.check_own(&parent, path)?;
        Ok((parent, name))
    }

    /// Makes `path` exist as an empty file or directory to mount on, and returns it
    /// open as `O_PATH` without following a final symlink. An existing entry of the
    /// wrong type is an error naming both types.
    pub fn mount_target(&mut self, path: &str, kind: TargetKind) -> Result<OwnedFd> {
        let (parent, name) = self.parent_of(path)?;
        let c = cname(name);
        let made = match kind {
            TargetKind::Dir => sys::mkdirat(parent.as_fd(), &c, 0o755),
            TargetKind::File => sys::openat2(
                parent.as_fd(),
                Path::new(name),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                0o644,
                BENEATH_NOFOLLOW,
            )
            .map(drop),
        };
        match made {
            Ok(()) => self.created.push(Created {
                parent: dup(&parent, path)?,
                name: c,
                dir: kind == TargetKind::Dir,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(Error::Io {
                    path: path.into(),
                    what: "create mount target",
                    source,
                })
            }
        }
        let (fd, st) = entry(
            &parent,
            name,
            path,
            ("open mount target", "stat mount target"),
        )?;
        let (want, expected) = match kind {
            TargetKind::File => (libc::S_IFREG, "a regular file"),
            TargetKind::Dir => (libc::S_IFDIR, "a directory"),
        };
        expect_type(path, &st, want, expected)?;
        Ok(fd)
    }

    /// Creates symlink `path -> target` unless something already exists at `path`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<bool> {
        let (parent, name) = self.parent_of(path)?;
        let c = cname(name);
        let t = CString::new(target).map_err(|_| Error::BadPath(target.into()))?;
        match sys::symlinkat(&t, parent.as_fd(), &c) {
            Ok(()) => {
                self.created.push(Created {
                    parent,
                    name: c,
                    dir: false,
                });
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(source) => Err(Error::Io {
                path: path.into(),
                what: "create symlink",
                source,
            }),
        }
    }

    /// Writes a small file (created 0644, or an existing regular file replaced in place),
    /// never following a symlink and never opening a FIFO or device for writing.
    pub fn write_file(&mut self, path: &str, content: &[u8]) -> Result<()> {
        let (parent, name) = self.parent_of(path)?;
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let fd = match sys::openat2(
            parent.as_fd(),
            Path::new(name),
            flags | libc::O_CREAT | libc::O_EXCL,
            0o644,
            BENEATH_NOFOLLOW,
        ) {
            Ok(fd) => {
                self.created.push(Created {
                    parent: dup(&parent, path)?,
                    name: cname(name),
                    dir: false,
                });
                fd
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Checked through O_PATH first: an existing device node or FIFO is
                // never opened for writing.
                let (p, st) = entry(&parent, name, path, ("open", "stat"))?;
                expect_type(path, &st, libc::S_IFREG, "a regular file")?;
                self.reopen(p.as_fd(), libc::O_WRONLY, path)?
            }
            Err(e) => return Err(io_err(path, "create")(e)),
        };
        let st = sys::fstat(fd.as_fd()).map_err(io_err(path, "stat"))?;
        expect_type(path, &st, libc::S_IFREG, "a regular file")?;
        let mut f = std::fs::File::from(fd);
        f.set_len(0).map_err(io_err(path, "truncate"))?;
        std::io::Write::write_all(&mut f, content).map_err(io_err(path, "write"))?;
        Ok(())
    }

    /// Opens directory `path` (links followed inside the root) for listing; `None` when
    /// absent. `O_DIRECTORY` refuses anything else before it is opened.
    pub fn open_dir(&self, path: &str) -> Result<Option<OwnedFd>> {
        let parts = components(path)?;
        match sys::openat2(
            self.fd.as_fd(),
            Path::new(&parts.join("/")),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            RESOLVE,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.into(),
                what: "open directory",
                source,
            }),
        }
    }

    /// Reads regular file `path` (links followed inside the root), at most `limit`
    /// bytes; `None` when absent. A FIFO or device is never opened.
    pub fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let Some((fd, st)) = self.open_regular(path, libc::O_RDONLY)? else {
            return Ok(None);
        };
        if st.st_size as u64 > limit as u64 {
            return Err(io_err(path, "read")(std::io::Error::from_raw_os_error(
                libc::EFBIG,
            )));
        }
        let mut buf = Vec::with_capacity(st.st_size.max(0) as usize);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::fs::File::from(fd), limit as u64 + 1),
            &mut buf,
        )
        .map_err(io_err(path, "read"))?;
        if buf.len() > limit {
            return Err(io_err(path, "read")(std::io::Error::from_raw_os_error(
                libc::EFBIG,
            )));
        }
        Ok(Some(buf))
    }

    /// Replaces `path` with a new regular file holding `content` (mode 0644), as
    /// ldconfig does: written beside it, then renamed over it, so a reader sees the
    /// old file or the new one, and a link or hard link there is replaced, never
    /// written through.
    pub fn replace_file(&mut self, path: &str, content: &[u8]) -> Result<()> {
        let (parent, name) = self.parent_of(path)?;
        let tmp = format!(".{name}.nvhook-tmp");
        let ctmp = cname(&tmp);
        let _ = sys::unlinkat(parent.as_fd(), &ctmp, false);
        let fd = sys::openat2(
            parent.as_fd(),
            Path::new(&tmp),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o644,
            BENEATH_NOFOLLOW,
        )
        .map_err(io_err(path, "create"))?;
        let mut f = std::fs::File::from(fd);
        let written = std::io::Write::write_all(&mut f, content)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o644))
            })
            .map_err(io_err(path, "write"))
            .and_then(|()| {
                sys::renameat(parent.as_fd(), &ctmp, parent.as_fd(), &cname(name))
                    .map_err(io_err(path, "rename"))
            });
        if written.is_err() {
            let _ = sys::unlinkat(parent.as_fd(), &ctmp, false);
        }
        written
    }

    /// Makes `path` a symlink to `target` as ldconfig makes a library's SONAME link:
    /// created where nothing is, a link to something else replaced, anything that is
    /// not a link left alone (`false`).
    pub fn set_link(&mut self, path: &str, target: &str) -> Result<bool> {
        if self.symlink(path, target)? {
            return Ok(true);
        }
        let (parent, name) = self.parent_of(path)?;
        let c = cname(name);
        let (_, st) = entry(&parent, name, path, ("open", "stat"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Ok(false);
        }
        if sys::readlinkat(parent.as_fd(), &c).ok().as_deref() == Some(target.as_bytes()) {
            return Ok(true);
        }
        let tmp = cname(&format!(".{name}.nvhook-tmp"));
        let _ = sys::unlinkat(parent.as_fd(), &tmp, false);
        let t = CString::new(target).map_err(|_| Error::BadPath(target.into()))?;
        sys::symlinkat(&t, parent.as_fd(), &tmp).map_err(io_err(path, "create symlink"))?;
        sys::renameat(parent.as_fd(), &tmp, parent.as_fd(), &c).map_err(io_err(path, "rename"))?;
        Ok(true)
    }

    /// Removes everything this `Root` created, newest first. Best effort: used on the
    /// failure path, after the mounts on top have been taken down.
    pub fn undo(&mut self) {
        while let Some(c) = self.created.pop() {
            let _ = sys::unlinkat(c.parent.as_fd(), &c.name, c.dir);
        }
    }

    /// Forgets the creation log: what was made now belongs to the container.
    pub fn commit(&mut self) {
        self.created.clear();
    }

    /// Host path of the root (for messages).
    pub fn describe(&self) -> String {
        sys::fd_path(self.fd.as_fd())
            .map(|p| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned())
            .unwrap_or_default()
    }
}

/// The entry `name` in directory `parent` itself (a link not followed), as `O_PATH`,
/// with its stat; `path` and `what` (the open's, the stat's) name it in errors.
fn entry(
    parent: &OwnedFd,
    name: &str,
    path: &str,
    what: (&'static str, &'static str),
) -> Result<(OwnedFd, libc::stat)> {
    let fd = sys::openat2(
        parent.as_fd(),
        Path::new(name),
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        BENEATH_NOFOLLOW,
    )
    .map_err(io_err(path, what.0))?;
    let st = sys::fstat(fd.as_fd()).map_err(io_err(path, what.1))?;
    Ok((fd, st))
}

/// An I/O error on `path` while doing `what`.
fn io_err<'a>(path: &'a str, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.into(),
        what,
        source,
    }
}

/// Refuses an entry that is not of type `want` (`S_IFREG`, ...), naming what it is.
fn expect_type(
    path: &str,
    st: &libc::stat,
    want: libc::mode_t,
    expected: &'static str,
) -> Result<()> {
    if st.st_mode & libc::S_IFMT == want {
        return Ok(());
    }
    Err(Error::WrongType {
        path: path.into(),
        found: type_name(st.st_mode),
        expected,
    })
}

fn dup(fd: &OwnedFd, path: &str) -> Result<OwnedFd> {
    fd.try_clone().map_err(io_err(path, "dup"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn bad_paths_refused() {
        for p in ["rel", "/a/../b", "/a//b", "/a/./b", "/"] {
            assert!(components(p).is_err() || p == "/", "{p}");
        }
    }

    #[test]
    fn symlinks_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("usr")).unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // an absolute link to a host dir (dangling inside the root) and a climbing one
        symlink(&outside, root.join("usr/lib")).unwrap();
        symlink("../../../../../../opt", root.join("usr/bin")).unwrap();
        symlink("/opt", root.join("usr/lib64")).unwrap();
        let mut r = Root::open(&root).unwrap();
        let e = r
            .mount_target("/usr/lib/x86_64-linux-gnu/libcuda.so.1", TargetKind::File)
            .unwrap_err();
        assert!(e.to_string().contains("/usr/lib"), "{e}");
        r.mount_target("/usr/bin/nvidia-smi", TargetKind::File)
            .unwrap();
        r.mount_target("/usr/lib64/sub/libcuda.so.1", TargetKind::File)
            .unwrap();
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing made outside"
        );
        assert!(root.join("opt/nvidia-smi").is_file());
        assert!(root.join("opt/sub/libcuda.so.1").is_file());
        r.undo();
        assert_eq!(
            std::fs::read_dir(root.join("opt")).unwrap().count(),
            0,
            "undo removes what was made"
        );
    }

    #[test]
    fn wrong_types_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev/nvidia0")).unwrap();
        symlink("/etc/passwd", t.path().join("dev/nvidiactl")).unwrap();
        let mut r = Root::open(t.path()).unwrap();
        let e = r
            .mount_target("/dev/nvidia0", TargetKind::File)
            .unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = r
            .mount_target("/dev/nvidiactl", TargetKind::File)
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        std::fs::write(t.path().join("file"), "").unwrap();
        let e = r.mount_target("/file/sub", TargetKind::File).unwrap_err();
        assert!(e.to_string().contains("/file"), "{e}");
    }

    #[test]
    fn symlink_created_once() {
        let t = tempfile::tempdir().unwrap();
        let mut r = Root::open(t.path()).unwrap();
        assert!(r.symlink("/usr/lib64/libcuda.so", "libcuda.so.1").unwrap());
        assert!(!r.symlink("/usr/lib64/libcuda.so", "libcuda.so.1").unwrap());
        assert_eq!(
            std::fs::read_link(t.path().join("usr/lib64/libcuda.so")).unwrap(),
            Path::new("libcuda.so.1")
        );
    }
}
