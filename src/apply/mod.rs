//! Stage 4, applying a plan. Host sources are opened and cloned into detached mounts
//! while nvhook is still in the host's mount namespace; then it joins the container's
//! mount namespace, resolves every target inside the container root and attaches the
//! mounts through file descriptors. On any failure, what was mounted and created is
//! undone. Beside the mounts: the device cgroup (`cgroup`: v1 `devices.allow`, v2 the
//! eBPF program of `bpf`, with loaded programs kept by `bpf_cache`), the container's
//! loader cache (`ldcache_update` over the format writer `ldcache_write`, or the
//! sandboxed `ldconfig`), and the capability sets (`caps`).
//!
//! Takes: a `plan::Plan` and the container's pid and root. Gives: a container with its
//! GPUs, and the phases' timings. Uses every stage above it; none uses it but the
//! pipeline.

pub mod bpf;
pub mod bpf_cache;
pub mod caps;
pub mod cgroup;
pub mod ldcache_stale;
pub mod ldcache_update;
pub mod ldcache_write;
pub mod ldconfig;
pub mod systemd;

use crate::common::rootfs::{self, Root, TargetKind};
use crate::common::sys;
use crate::plan::{MountFlag, MountKind, Plan};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {what}: {source}")]
    Source {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{path} is {found}, expected {expected}")]
    SourceType {
        path: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path} is device {found}, expected {expected}")]
    DeviceNumber {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot join the mount namespace of pid {pid}: {source}")]
    Namespace { pid: i32, source: io::Error },
    #[error("cannot open container root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Target(#[from] rootfs::Error),
    #[error("cannot mount {source_path} on {target}: {source}")]
    Mount {
        source_path: PathBuf,
        target: String,
        source: io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(
        "internal error (a bug, please report it): {0}; what was done in the container is undone"
    )]
    Panic(String),
    #[error(transparent)]
    Ldconfig(#[from] ldconfig::Error),
    #[error(transparent)]
    Untrusted(#[from] crate::common::trust::Error),
    #[error(transparent)]
    Userns(#[from] crate::common::userns::Error),
    #[error("ld.so.cache: {0}")]
    LdCache(#[from] ldcache_update::Error),
    #[error("{path}: a rootless container could not open it (mode {mode:04o}, not readable and writable by the user running the container): the host must make the NVIDIA device nodes readable and writable by that user (the driver's default is 0666; NVreg_DeviceFileMode and NVreg_DeviceFileGID change it)")]
    RootlessDevice { path: PathBuf, mode: u32 },
    #[error("nvhook cannot mount into the container: it runs without CAP_SYS_ADMIN{where_}; it must run as the engine's hook, as root or inside a rootless engine's user namespace (Podman runs hooks there)")]
    NoMountCapability { where_: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A host file cloned into a detached mount, ready to attach.
struct Prepared {
    mnt: OwnedFd,
    source: PathBuf,
    target: String,
}

fn src_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Source {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Opens a host source without following a final symlink, checks its type (and for a
/// device, its number), and clones it into a detached mount with `attrs` set.
fn prepare(
    path: &Path,
    want: libc::mode_t,
    rdev: Option<(u32, u32)>,
    attrs: u64,
    target: &str,
) -> Result<Prepared> {
    let fd = sys::open(path, libc::O_PATH | libc::O_NOFOLLOW).map_err(src_err(path, "open"))?;
    let st = sys::fstat(fd.as_fd()).map_err(src_err(path, "stat"))?;
    if st.st_mode & libc::S_IFMT != want {
        return Err(Error::SourceType {
            path: path.into(),
            found: rootfs::type_name(st.st_mode),
            expected: rootfs::type_name(want),
        });
    }
    // A directory is bound read-write (the MPS pipe dir): checked again on the fd that
    // is mounted, as discovery checked its path.
    if want == libc::S_IFDIR {
        crate::common::trust::check_stat("directory", path, fd.as_fd(), &st)?;
    }
    if want == libc::S_IFCHR && !crate::common::userns::is_initial() {
        rootless_can_open(path, fd.as_fd(), &st)?;
    }
    if let Some((ma, mi)) = rdev {
        let (fa, fi) = sys::dev_split(st.st_rdev);
        if (fa, fi) != (ma, mi) {
            return Err(Error::DeviceNumber {
                path: path.into(),
                found: format!("{fa}:{fi}"),
                expected: format!("{ma}:{mi}"),
            });
        }
    }
    let mnt = sys::clone_tree(fd.as_fd(), false).map_err(src_err(path, "clone mount"))?;
    // A device node must stay usable even where the host's /dev copy sits on a nodev
    // mount; everything else keeps whatever restrictions its source had.
    let clear = if want == libc::S_IFCHR {
        sys::MOUNT_ATTR_NODEV
    } else {
        0
    };
    sys::mount_setattr(mnt.as_fd(), attrs, clear).map_err(src_err(path, "set mount flags"))?;
    Ok(Prepared {
        mnt,
        source: path.into(),
        target: target.into(),
    })
}

/// For a rootless container (nvhook in a user namespace other than the host's), checks
/// that the user can open the device node at host path `path`; nothing otherwise. The
/// CDI hook's check on the nodes the engine bound from the spec's `deviceNodes`.
pub fn check_rootless_device(path: &Path) -> Result<()> {
    if crate::common::userns::is_initial() {
        return Ok(());
    }
    let fd = sys::open(path, libc::O_PATH | libc::O_NOFOLLOW).map_err(src_err(path, "open"))?;
    let st = sys::fstat(fd.as_fd()).map_err(src_err(path, "stat"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return Ok(());
    }
    rootless_can_open(path, fd.as_fd(), &st)
}

/// A rootless container reaches a device only through the host's permissions on its
/// node (no device cgroup, no capability over an inode of an unmapped owner). A node
/// others may read and write is fine. One only the hook's user may open through a
/// supplementary group is kept, with a warning: the container's processes hold that
/// group only where the engine keeps it (`--group-add keep-groups`). One the user cannot
/// open at all fails the start.
fn rootless_can_open(path: &Path, fd: std::os::fd::BorrowedFd<'_>, st: &libc::stat) -> Result<()> {
    if st.st_mode & 0o006 == 0o006 {
        return Ok(());
    }
    if sys::may_access(fd, libc::R_OK | libc::W_OK) {
        crate::common::log::warn(&format!(
            "{}: mode {:04o}: a rootless container's processes open it only if they keep the user's groups (podman --group-add keep-groups)",
            path.display(),
            st.st_mode & 0o7777
        ));
        return Ok(());
    }
    Err(Error::RootlessDevice {
        path: path.into(),
        mode: st.st_mode & 0o7777,
    })
}

/// Mounting into the container needs CAP_SYS_ADMIN over its mount namespace: the host's
/// root has it, and so does the root of a rootless engine's user namespace. A hook run
/// by hand as a plain user has not; it is told so in one line, up front.
fn can_mount() -> Result<()> {
    let admin = caps::mask(&[::caps::Capability::CAP_SYS_ADMIN]);
    match caps::effective() {
        Ok(eff) if eff & admin != 0 => Ok(()),
        _ => Err(Error::NoMountCapability {
            where_: if crate::common::userns::is_initial() {
                ""
            } else {
                " in its user namespace"
            },
        }),
    }
}

/// The mount attributes (`mount_setattr`) of the plan's flags.
fn attrs(flags: &[MountFlag]) -> u64 {
    flags.iter().fold(0, |a, f| {
        a | match f {
            MountFlag::Ro => sys::MOUNT_ATTR_RDONLY,
            MountFlag::Nosuid => sys::MOUNT_ATTR_NOSUID,
            MountFlag::Nodev => sys::MOUNT_ATTR_NODEV,
            MountFlag::Noexec => sys::MOUNT_ATTR_NOEXEC,
        }
    })
}

/// Where and how to apply a plan.
pub struct Target<'a> {
    pub pid: i32,
    pub rootfs: &'a Path,
    pub ldconfig_timeout: Duration,
    /// Run ldconfig in a user namespace of its own (`ldconfig-user-namespace`).
    pub ldconfig_userns: bool,
    /// Where loaded cgroup v2 device programs are pinned for reuse (`device-program-cache`).
    pub device_program_cache: Option<&'a Path>,
    /// systemd's private socket (`systemd-socket`): where a container's scope is told
    /// of its device nodes.
    pub systemd_socket: Option<&'a Path>,
    pub faults: Faults,
}

/// Failures injected on purpose, to prove that a failure at any step leaves nothing
/// behind (`nvhook prestart --fail-at`, hidden; tests only). Injecting can only make
/// the hook fail, never do more.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Faults {
    /// Opening the Nth host source (0-based) fails as if it were missing.
    pub source: Option<usize>,
    /// Attaching the Nth mount (0-based) fails.
    pub mount: Option<usize>,
    pub cgroup: bool,
    pub ldconfig: bool,
    /// A panic in the loader cache's update, after the mounts.
    pub panic: bool,
}

impl Faults {
    /// `source:N`, `mount:N`, `cgroup`, `ldconfig` or `panic`.
    pub fn parse(s: &str) -> std::result::Result<Faults, String> {
        let mut f = Faults::default();
        let n = |v: &str| v.parse::<usize>().map_err(|_| format!("bad fault {s:?}"));
        match s.split_once(':') {
            Some(("source", v)) => f.source = Some(n(v)?),
            Some(("mount", v)) => f.mount = Some(n(v)?),
            None if s == "cgroup" => f.cgroup = true,
            None if s == "ldconfig" => f.ldconfig = true,
            None if s == "panic" => f.panic = true,
            _ => {
                return Err(format!(
                    "unknown fault {s:?} (source:N, mount:N, cgroup, ldconfig, panic)"
                ))
            }
        }
        Ok(f)
    }
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

/// Timings of the phases, for the debug log and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    pub prepare: Duration,
    pub cgroup: Duration,
    pub mount: Duration,
    pub ldconfig: Duration,
    /// cgroup v2 device programs attached from the device program cache (logged with
    /// the timings, not during the phase).
    pub cached_programs: usize,
}

/// Applies `plan` to the container. Must run single-threaded (it calls `setns`).
pub fn apply(plan: &Plan, t: &Target<'_>) -> Result<Timings> {
    crate::common::userns::check_not_foreign()?;
    can_mount()?;
    let mut times = Timings::default();
    // 1. Everything from the host, while still in the host's mount namespace.
    let clock = std::time::Instant::now();
    let host = HostSide::prepare(plan, t)?;
    times.prepare = clock.elapsed();
    // 2. The device cgroup, found through the host's view of /proc and mounts.
    let clock = std::time::Instant::now();
    times.cached_programs = allow_devices(plan, t, &host.mountinfo)?;
    times.cgroup = clock.elapsed();
    // 3. Into the container's mount namespace; from here on no host path is opened.
    let clock = std::time::Instant::now();
    let mut root = enter_container(t, &host)?;
    let mut mounted: Vec<OwnedFd> = Vec::new();
    // A panic (a bug; no input may cause one) must not leave mounts and files in the
    // image either: it is caught here and undone as any error is.
    let hook = std::process::id();
    // Whether the image's loader cache is stale is judged on the image as it came, before
    // nvhook's own mount targets and drop-in make its directories newer than its cache.
    let judged = plan
        .ldconfig
        .as_ref()
        .filter(|l| l.by_nvhook)
        .map(|l| ldcache_stale::judge(&root, &l.dirs));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let result = fill(
            plan,
            t,
            &mut root,
            host.sources,
            host.proc_view,
            &host.id_maps,
            &mut mounted,
        );
        times.mount = clock.elapsed();
        // 4. The container's loader cache.
        let clock = std::time::Instant::now();
        let result = result.and_then(|()| {
            update_loader_cache(plan, t, &mut root, &host.ld_libs, &host.id_maps, judged)?;
            run_ldconfig(
                plan,
                t,
                &mut root,
                host.exe.as_ref(),
                host.proc.as_fd(),
                &host.id_maps,
            )
        });
        times.ldconfig = clock.elapsed();
        result
    }))
    .unwrap_or_else(|p| {
        if std::process::id() != hook {
            // a forked child (ldconfig's, NVML's) never runs the parent's undo
            // SAFETY: _exit ends this process at once.
            unsafe { libc::_exit(127) }
        }
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Panic(what))
    });
    match result {
        Ok(()) => {
            root.commit();
            Ok(times)
        }
        Err(e) => {
            for m in mounted.iter().rev() {
                let _ = sys::umount_fd(m.as_fd());
            }
            root.undo();
            Err(e)
        }
    }
}

/// What is taken from the host before nvhook joins the container.
struct HostSide {
    /// Every device node and driver file, cloned into a detached mount.
    sources: Vec<(TargetKind, Prepared)>,
    /// The container's `/proc/driver/nvidia`, on a detached tmpfs.
    proc_view: Option<OwnedFd>,
    /// What nvhook's own cache update needs of the mounted libraries.
    ld_libs: Vec<ldcache_update::Mounted>,
    /// The ldconfig to run, when one runs.
    exe: Option<ldconfig::Exe>,
    /// The host's /proc, for the ldconfig child's user namespace maps: inside the
    /// container's mount namespace /proc may be the container's own.
    proc: OwnedFd,
    id_maps: ldconfig::IdMaps,
    /// The container's mount namespace.
    ns: OwnedFd,
    /// The host's mount table, read once: for the device cgroup's mount, and for the
    /// file systems nvhook writes on none of in the container (an image's link into a
    /// host volume leads nowhere).
    mountinfo: String,
}

impl HostSide {
    /// In the order the hook always took these: the sources, the `/proc` view, the
    /// libraries' ELF facts, ldconfig sealed, then the namespaces.
    fn prepare(plan: &Plan, t: &Target<'_>) -> Result<HostSide> {
        let sources = prepare_sources(plan, t.faults.source)?;
        let proc_view = plan
            .proc_driver
            .as_ref()
            .map(proc_driver_view)
            .transpose()?;
        let ld_libs = mounted_libraries(plan);
        let exe = ldconfig_exe(plan)?;
        let proc = sys::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|source| Error::Namespace { pid: t.pid, source })?;
        let id_maps = ldconfig::IdMaps::of_process(proc.as_fd(), t.pid);
        let ns = sys::open(
            Path::new(&format!("/proc/{}/ns/mnt", t.pid)),
            libc::O_RDONLY,
        )
        .map_err(|source| Error::Namespace { pid: t.pid, source })?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| Error::Namespace { pid: t.pid, source })?;
        Ok(HostSide {
            sources,
            proc_view,
            ld_libs,
            exe,
            proc,
            id_maps,
            ns,
            mountinfo,
        })
    }
}

/// Each device node and mounted file of the plan, opened on the host and cloned into a
/// detached mount with its flags (`fail_at`: the Nth source fails, for tests).
fn prepare_sources(plan: &Plan, fail_at: Option<usize>) -> Result<Vec<(TargetKind, Prepared)>> {
    let mut prepared = Vec::new();
    let mut nth = 0usize;
    let mut fail_source = |path: &Path| -> Result<()> {
        let n = nth;
        nth += 1;
        if fail_at == Some(n) {
            return Err(src_err(path, "open")(io::Error::from_raw_os_error(
                libc::ENOENT,
            )));
        }
        Ok(())
    };
    for d in &plan.devices {
        fail_source(&d.host_path)?;
        prepared.push((
            TargetKind::File,
            prepare(
                &d.host_path,
                libc::S_IFCHR,
                Some((d.major, d.minor)),
                attrs(&d.flags),
                &d.path,
            )?,
        ));
    }
    for m in &plan.mounts {
        fail_source(&m.source)?;
        let (want, kind) = match m.kind {
            MountKind::Socket => (libc::S_IFSOCK, TargetKind::File),
            MountKind::IpcDir => (libc::S_IFDIR, TargetKind::Dir),
            _ => (libc::S_IFREG, TargetKind::File),
        };
        prepared.push((
            kind,
            prepare(&m.source, want, None, attrs(&m.flags), &m.target)?,
        ));
    }
    Ok(prepared)
}

/// What nvhook's own cache update needs of the libraries: their ELF kind and SONAME,
/// read from the host's files (never the container's). Nothing when ldconfig makes the
/// cache.
fn mounted_libraries(plan: &Plan) -> Vec<ldcache_update::Mounted> {
    if !plan.ldconfig.as_ref().is_some_and(|l| l.by_nvhook) {
        return Vec::new();
    }
    plan.mounts
        .iter()
        .filter(|m| m.kind == MountKind::Library)
        .filter_map(|m| {
            let (dir, file) = m.target.rsplit_once('/')?;
            let f = std::fs::File::open(&m.source).ok()?;
            Some(ldcache_update::Mounted {
                dir: dir.to_string(),
                file: file.to_string(),
                elf: crate::host::elf::info(&f)?,
            })
        })
        .collect()
}

/// The ldconfig that will run: the host's, sealed in memory now (so what runs is what
/// was checked), or a path in the container; none when nvhook makes the cache.
fn ldconfig_exe(plan: &Plan) -> Result<Option<ldconfig::Exe>> {
    Ok(match &plan.ldconfig {
        Some(l) if l.by_nvhook => None,
        Some(l) if l.host => Some(ldconfig::seal_host(&l.path)?),
        Some(l) => Some(ldconfig::Exe::InContainer(
            std::ffi::CString::new(l.path.as_str())
                .map_err(|_| ldconfig::Error::NotStatic(l.path.clone(), String::new()))?,
        )),
        None => None,
    })
}

/// The plan's cgroup rules, in the container's device cgroup; how many v2 device
/// programs came from the cache.
fn allow_devices(plan: &Plan, t: &Target<'_>, mountinfo: &str) -> Result<usize> {
    if plan.cgroup.is_empty() {
        return Ok(0);
    }
    let cg = cgroup::for_pid_in(t.pid, mountinfo)?;
    if t.faults.cgroup {
        return Err(cgroup::Error::Write {
            path: "devices cgroup".into(),
            rule: plan.cgroup[0].v1_line(),
            source: injected(),
        }
        .into());
    }
    let hits = cgroup::allow(&cg, &plan.cgroup, t.device_program_cache)?;
    let nodes: Vec<&Path> = plan.devices.iter().map(|d| d.host_path.as_path()).collect();
    keep_and_check(&cg, &nodes, t)?;
    Ok(hits)
}

/// After the container's own cgroup allows `nodes`: systemd is told of them where a
/// scope owns the cgroup (so a reload keeps them), and on v2, where a parent cgroup
/// has device programs of its own (systemd's, on the scope above crun's `container`),
/// the kernel is asked whether the container can now open each node. A start never
/// succeeds with a GPU that stays denied.
pub fn keep_and_check(cg: &cgroup::DeviceCgroup, nodes: &[&Path], t: &Target<'_>) -> Result<()> {
    let dir = match cg {
        cgroup::DeviceCgroup::V1(d) | cgroup::DeviceCgroup::V2(d) => d,
    };
    let told = systemd::keep_devices(t.systemd_socket, dir, nodes);
    let cgroup::DeviceCgroup::V2(dir) = cg else {
        // v1 checks a parent's rules when devices.allow is written: a refusal failed above.
        return Ok(());
    };
    let bpf_err = |source| cgroup::Error::Bpf {
        path: dir.clone(),
        source,
    };
    let (own, effective) = bpf::program_counts(dir).map_err(bpf_err)?;
    if effective <= own || nodes.is_empty() {
        return Ok(());
    }
    // systemd applies a unit's new DeviceAllow= just after it answers: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_millis(if told { 1000 } else { 0 });
    let mut pause = Duration::from_millis(1);
    loop {
        let denied = cgroup::first_denied(dir, nodes).map_err(|source| cgroup::Error::Probe {
            path: dir.clone(),
            source,
        })?;
        let Some(i) = denied else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(cgroup::Error::AncestorDenies {
                node: nodes[i].to_path_buf(),
                path: dir.clone(),
                by: cgroup::nearest_with_program(dir)
                    .map_or_else(|| "a parent cgroup".into(), |p| p.display().to_string()),
            }
            .into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Joins the container's mount namespace and opens its root there.
fn enter_container(t: &Target<'_>, host: &HostSide) -> Result<Root> {
    // Run by hand on a created container (`runc create`, then the hook, then `runc
    // start`), the container has already pivoted into its root: inside its mount
    // namespace the bundle's path is gone and `/` is the container root.
    let pivoted = has_pivoted(t.pid, t.rootfs);
    sys::setns_mnt(host.ns.as_fd()).map_err(|source| Error::Namespace { pid: t.pid, source })?;
    let root_path = if pivoted { Path::new("/") } else { t.rootfs };
    let mut root = Root::open(root_path).map_err(|source| Error::Root {
        path: t.rootfs.into(),
        source,
    })?;
    root.set_proc(
        host.proc
            .try_clone()
            .map_err(|source| Error::Namespace { pid: t.pid, source })?,
    );
    root.keep_off_host_mounts(rootfs::mounted_devices(&host.mountinfo))
        .map_err(|source| Error::Root {
            path: t.rootfs.into(),
            source,
        })?;
    Ok(root)
}

/// The mounts, the links, the `/proc` view and the plan's files, in the container.
/// What it creates belongs to the container's root where it has a user namespace of its
/// own (its /dev is a tmpfs of that namespace, where host root's ids do not exist).
fn fill(
    plan: &Plan,
    t: &Target<'_>,
    root: &mut Root,
    sources: Vec<(TargetKind, Prepared)>,
    proc_view: Option<OwnedFd>,
    id_maps: &ldconfig::IdMaps,
    mounted: &mut Vec<OwnedFd>,
) -> Result<()> {
    let _as_container_root = FsIds::container_root(id_maps);
    attach_all(plan, root, sources, mounted, t.faults.mount)?;
    if let Some(view) = proc_view {
        attach_proc_view(root, view, mounted)?;
    }
    for f in &plan.files {
        root.write_file(&f.path, f.content.as_bytes())?;
    }
    Ok(())
}

/// The loader cache written by nvhook (`ld-cache = "nvhook"`), or `/etc` made ready for
/// ldconfig; as the container's root.
fn update_loader_cache(
    plan: &Plan,
    t: &Target<'_>,
    root: &mut Root,
    ld_libs: &[ldcache_update::Mounted],
    id_maps: &ldconfig::IdMaps,
    judged: Option<ldcache_stale::Judgement>,
) -> Result<()> {
    let _as_container_root = FsIds::container_root(id_maps);
    // The loader cache's update fails here when a test asks, whichever way it is made.
    if t.faults.panic {
        panic!("injected panic");
    }
    if t.faults.ldconfig && plan.ldconfig.is_some() {
        return Err(ldconfig::Error::Failed {
            status: "not started".into(),
            stderr: "injected fault".into(),
        }
        .into());
    }
    match &plan.ldconfig {
        Some(l) if l.by_nvhook => {
            ldcache_update::update(
                root,
                &ldcache_update::Update {
                    dirs: &l.dirs,
                    libs: ld_libs,
                    links: &plan.symlinks,
                    rescan: &l.rescan,
                    driver_named: &l.driver_named,
                    judged,
                },
            )?;
        }
        Some(_) => {
            root.mkdir_all("/etc")?;
        }
        None => {}
    }
    Ok(())
}

/// The sandboxed ldconfig, where one runs (`ld-cache = "ldconfig"`).
fn run_ldconfig(
    plan: &Plan,
    t: &Target<'_>,
    root: &mut Root,
    exe: Option<&ldconfig::Exe>,
    host_proc: std::os::fd::BorrowedFd<'_>,
    id_maps: &ldconfig::IdMaps,
) -> Result<()> {
    let (Some(l), Some(exe)) = (&plan.ldconfig, exe) else {
        return Ok(());
    };
    ldconfig::run(
        exe,
        root.fd(),
        host_proc,
        t.ldconfig_userns.then_some(id_maps),
        &l.args,
        t.ldconfig_timeout,
    )?;
    // ldconfig deletes a link whose target it only makes in the same run
    // (`libGLX_indirect.so.0 -> libGLX_nvidia.so.0`, before the SONAME link exists):
    // made again, as the container's root.
    let _as_root = FsIds::container_root(id_maps);
    for s in &plan.symlinks {
        root.symlink(&s.path, &s.target)?;
    }
    Ok(())
}

/// The process's filesystem ids set to a container's root for as long as it lives, and
/// host root's again after (which also gives back the file capabilities the kernel
/// clears while they are not 0).
struct FsIds;

impl FsIds {
    /// The container's mapped root, where it has a user namespace of its own; nothing
    /// (host root stays) where it has not.
    fn container_root(maps: &ldconfig::IdMaps) -> Option<FsIds> {
        let (uid, gid) = maps.root_owner()?;
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        Some(FsIds)
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
    }
}

/// Whether the process `pid` already has the container root as its `/` (same device
/// and inode as the bundle's root, seen from the host).
fn has_pivoted(pid: i32, rootfs: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (
        std::fs::metadata(format!("/proc/{pid}/root")),
        std::fs::metadata(rootfs),
    ) else {
        return false;
    };
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Builds the masked `/proc/driver/nvidia` as a detached tmpfs: files written through
/// the mount's own descriptor, then made read-only.
pub fn proc_driver_view(p: &crate::plan::ProcDriver) -> Result<OwnedFd> {
    let here = Path::new(crate::plan::PROC_DRIVER_NVIDIA);
    let err = |what| {
        move |source| Error::Source {
            path: here.into(),
            what,
            source,
        }
    };
    let mnt = sys::new_tmpfs_with(c"1m", false).map_err(err("create tmpfs"))?;
    for f in &p.files {
        let rel = Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let mut dir = mnt.try_clone().map_err(err("dup"))?;
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len() - 1] {
            let name = std::ffi::CString::new(c.as_os_str().as_encoded_bytes())
                .map_err(|_| err("name")(io::ErrorKind::InvalidInput.into()))?;
            match sys::mkdirat(dir.as_fd(), &name, 0o555) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(err("mkdir")(e)),
                _ => {}
            }
            dir = sys::openat2(
                dir.as_fd(),
                Path::new(c.as_os_str()),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(err("open dir"))?;
        }
        let leaf = comps[comps.len() - 1].as_os_str();
        let fd = sys::openat2(
            dir.as_fd(),
            Path::new(leaf),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o444,
            sys::RESOLVE_NO_SYMLINKS,
        )
        .map_err(err("create file"))?;
        io::Write::write_all(&mut std::fs::File::from(fd), f.content.as_bytes())
            .map_err(err("write"))?;
    }
    sys::mount_setattr(mnt.as_fd(), sys::MOUNT_ATTR_RDONLY, 0).map_err(err("make read-only"))?;
    Ok(mnt)
}

/// Puts the view over the container's `/proc/driver/nvidia`, where the kernel shows one
/// (a kernel without the NVIDIA module has none to mask).
fn attach_proc_view(root: &Root, view: OwnedFd, mounted: &mut Vec<OwnedFd>) -> Result<()> {
    let Some((target, st)) = root.stat(crate::plan::PROC_DRIVER_NVIDIA)? else {
        crate::common::log::debug("no /proc/driver/nvidia in the container: nothing to mask");
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(());
    }
    sys::move_mount_to(view.as_fd(), target.as_fd()).map_err(|source| Error::Mount {
        source_path: "tmpfs".into(),
        target: crate::plan::PROC_DRIVER_NVIDIA.into(),
        source,
    })?;
    mounted.push(view);
    Ok(())
}

fn attach_all(
    plan: &Plan,
    root: &mut Root,
    prepared: Vec<(TargetKind, Prepared)>,
    mounted: &mut Vec<OwnedFd>,
    fail_at: Option<usize>,
) -> Result<()> {
    for (i, (kind, p)) in prepared.into_iter().enumerate() {
        let target = root.mount_target(&p.target, kind)?;
        let attached = if fail_at == Some(i) {
            Err(injected())
        } else {
            sys::move_mount_to(p.mnt.as_fd(), target.as_fd())
        };
        attached.map_err(|source| Error::Mount {
            source_path: p.source.clone(),
            target: p.target.clone(),
            source,
        })?;
        mounted.push(p.mnt);
    }
    for s in &plan.symlinks {
        root.symlink(&s.path, &s.target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::driver::FileWrite;
    use crate::plan::ProcDriver;

    /// The view is built on a detached tmpfs (needs CAP_SYS_ADMIN: the suite runs as root).
    #[test]
    fn proc_view_holds_exactly_the_files() {
        let p = ProcDriver {
            files: vec![
                FileWrite {
                    path: "params".into(),
                    content: "ModifyDeviceFiles: 0\n".into(),
                },
                FileWrite {
                    path: "gpus/0000:3b:00.0/information".into(),
                    content: "Model: x\n".into(),
                },
                FileWrite {
                    path: "../escape".into(),
                    content: "no".into(),
                },
            ],
        };
        let mnt = proc_driver_view(&p).expect("tmpfs (run the tests as root)");
        let base = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&mnt));
        assert_eq!(
            std::fs::read_to_string(format!("{base}/params")).unwrap(),
            "ModifyDeviceFiles: 0\n"
        );
        assert_eq!(
            std::fs::read_to_string(format!("{base}/gpus/0000:3b:00.0/information")).unwrap(),
            "Model: x\n"
        );
        let names: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // read-only once built
        assert!(std::fs::write(format!("{base}/params"), "x").is_err());
        assert!(std::fs::File::create(format!("{base}/new")).is_err());
    }
}
