//! Stage 3, the plan: pure data that says everything nvhook will do to a container (the
//! device nodes, mounts, links, files, cgroup rules and the loader cache update). Nothing
//! before the plan touches the container and nothing after it decides anything, so
//! `nvhook plan`, CDI and the tests all share this one function.
//!
//! Takes: a `container::request::Request`, the `host::driver::Driver` and the image's
//! `container::image::ImageFacts`. Gives: a `Plan`, which `apply` carries out. Uses
//! `container` and `host`, never the stages after it.

use crate::container::image::ImageFacts;
use crate::container::request::{Capability, Devices, Request};
use crate::host::driver::{DeviceNode, Driver, FileWrite, Gpu, Mig};
use crate::host::ldcache::Arch;
use crate::host::procfs::BusId;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown GPU {0:?} in NVIDIA_VISIBLE_DEVICES (this host has {1})")]
    UnknownDevice(String, String),
    #[error("unknown GPU {1:?} in {0} (this host has {2})")]
    UnknownManaged(&'static str, String, String),
    #[error(
        "GPU {index} ({uuid}) has no usable device node /dev/nvidia{minor} under the dev root"
    )]
    NoNode {
        index: u32,
        uuid: String,
        minor: u32,
    },
    #[error("device node /dev/nvidiactl not found under the dev root")]
    NoControl,
    #[error("unknown MIG device {0:?} in NVIDIA_VISIBLE_DEVICES ({1})")]
    UnknownMig(String, String),
    #[error("{0} was asked for, but the driver shows no MIG {1} capability")]
    NoMigCapability(&'static str, &'static str),
    #[error("IMEX channel {0} in NVIDIA_IMEX_CHANNELS has no node /dev/nvidia-caps-imex-channels/channel{0} under the dev root")]
    NoImexChannel(u32),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The container's view of `/proc/driver/nvidia`: a read-only tmpfs holding copies of
/// these files (relative paths), so only the visible GPUs show and `ModifyDeviceFiles`
/// is 0 (libraries in the container never try to create device nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ProcDriver {
    pub files: Vec<FileWrite>,
}

/// Where the driver's procfs directory is, inside a container.
pub const PROC_DRIVER_NVIDIA: &str = "/proc/driver/nvidia";

/// Rewrites the driver's `params` with `ModifyDeviceFiles: 0`.
pub fn params_without_device_files(params: &str) -> String {
    let mut out = String::new();
    let mut seen = false;
    for l in params.lines() {
        if l.trim_start().starts_with("ModifyDeviceFiles:") {
            out.push_str("ModifyDeviceFiles: 0\n");
            seen = true;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !seen {
        out.push_str("ModifyDeviceFiles: 0\n");
    }
    out
}

/// The ldconfig drop-in that makes the image's newer CUDA compat libraries win.
pub const CUDA_COMPAT_CONF: &str = "/etc/ld.so.conf.d/00-nvhook-cuda-compat.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Library,
    Binary,
    Firmware,
    Socket,
    /// Loader configuration (ICD and vendor JSON files).
    Config,
    /// An IPC directory, bound read-write.
    IpcDir,
}

/// A property of a mount nvhook makes: the closed set `apply` turns into mount
/// attributes (shown in `nvhook plan` as `mount(8)` spells them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountFlag {
    /// Read-only.
    Ro,
    /// Set-user-id and file capabilities ignored.
    Nosuid,
    /// Device nodes cannot be opened through it.
    Nodev,
    /// Nothing executes from it.
    Noexec,
}

/// A read-only (or, for sockets, read-write) bind mount of a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    pub source: PathBuf,
    pub target: String,
    pub flags: Vec<MountFlag>,
}

impl Mount {
    pub fn readonly(&self) -> bool {
        self.flags.contains(&MountFlag::Ro)
    }
    pub fn noexec(&self) -> bool {
        self.flags.contains(&MountFlag::Noexec)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub path: String,
    pub host_path: PathBuf,
    pub major: u32,
    pub minor: u32,
    pub flags: Vec<MountFlag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

/// The kind of device a cgroup rule is about (`c` and `b` in the kernel's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceKind {
    #[serde(rename = "c")]
    Char,
    #[serde(rename = "b")]
    Block,
}

/// What a cgroup rule allows on its device. nvhook only ever grants reading and
/// writing: never `mknod` (the nodes are bind-mounted, not made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceAccess {
    #[serde(rename = "rw")]
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupRule {
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
    pub access: DeviceAccess,
}

impl CgroupRule {
    /// The rule in `devices.allow` syntax.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let access = match self.access {
            DeviceAccess::ReadWrite => "rw",
        };
        format!("{kind} {}:{} {access}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ldconfig {
    /// Path of the binary: on the host when `host`, else inside the container.
    pub path: String,
    pub host: bool,
    pub args: Vec<String>,
    /// The library directories, in the order ldconfig is given them.
    pub dirs: Vec<String>,
    /// nvhook writes the cache itself (`ld-cache = "nvhook"`): no ldconfig runs.
    pub by_nvhook: bool,
    /// Directories nvhook's configuration brings in whole (the CUDA compat dir): scanned.
    pub rescan: Vec<String>,
    /// Directories where the engine mounted the driver (a CDI spec's): scanned for the
    /// driver's library names only.
    pub driver_named: Vec<String>,
}

impl Ldconfig {
    /// ldconfig as configured (`@/host/path` or a container path), rebuilding the
    /// container's own cache from its own configuration plus `dirs`.
    pub fn new(setting: &str, dirs: Vec<String>) -> Ldconfig {
        let (host, path) = crate::container::config::split_ldconfig(setting);
        let mut args: Vec<String> = ["-f", "/etc/ld.so.conf", "-C", "/etc/ld.so.cache"]
            .map(String::from)
            .to_vec();
        args.extend(dirs.iter().cloned());
        Ldconfig {
            path: path.to_string(),
            host,
            args,
            dirs,
            by_nvhook: false,
            rescan: Vec::new(),
            driver_named: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedGpu {
    pub index: u32,
    pub minor: u32,
    pub uuid: String,
    pub bus_id: BusId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedMig {
    pub parent_index: u32,
    pub index: u32,
    pub gi: u32,
    pub ci: u32,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Plan {
    pub driver_version: String,
    pub capabilities: Vec<Capability>,
    pub gpus: Vec<SelectedGpu>,
    pub migs: Vec<SelectedMig>,
    pub devices: Vec<Device>,
    pub mounts: Vec<Mount>,
    pub symlinks: Vec<Symlink>,
    pub cgroup: Vec<CgroupRule>,
    /// Files written in the container before ldconfig runs.
    pub files: Vec<FileWrite>,
    /// The masked `/proc/driver/nvidia` (when the host driver's files could be read).
    pub proc_driver: Option<ProcDriver>,
    pub ldconfig: Option<Ldconfig>,
}

const LIB_FLAGS: &[MountFlag] = &[MountFlag::Ro, MountFlag::Nosuid, MountFlag::Nodev];
/// Read-only, as NVIDIA mounts them: a read-only bind of a device node still opens for
/// writing, and it stops the container from changing the host inode's mode or owner.
const DEV_FLAGS: &[MountFlag] = &[MountFlag::Ro, MountFlag::Nosuid, MountFlag::Noexec];
/// Sockets connect through a read-only bind, which stops the container from changing
/// the host inode's mode or owner.
const SOCK_FLAGS: &[MountFlag] = &[
    MountFlag::Ro,
    MountFlag::Nosuid,
    MountFlag::Nodev,
    MountFlag::Noexec,
];
/// The MPS pipe directory, read-only: clients open the daemon's FIFOs and connect to its
/// sockets there, which a read-only mount allows, and no container writes a file on
/// the host (a set-uid binary there is set-uid on the host's file system, whatever
/// the container's mount says; a full directory is a full host disk).
const IPC_DIR_FLAGS: &[MountFlag] = &[
    MountFlag::Ro,
    MountFlag::Nosuid,
    MountFlag::Nodev,
    MountFlag::Noexec,
];

/// Options that come from configuration rather than the container.
#[derive(Debug, Clone)]
pub struct Options {
    pub ldconfig: String,
    pub no_cgroups: bool,
    /// nvhook updates the loader cache itself (`ld-cache = "nvhook"`), not ldconfig.
    pub ld_cache_by_nvhook: bool,
}

type Selection<'a> = (Vec<&'a Gpu>, Vec<&'a Mig>);

fn select<'a>(req: &Devices, gpus: &'a [Gpu], migs: &'a [Mig]) -> Result<Selection<'a>> {
    let ids = match req {
        Devices::None => return Ok((Vec::new(), Vec::new())),
        Devices::All => return Ok((gpus.iter().collect(), Vec::new())),
        Devices::List(ids) => ids,
    };
    let mut out: Vec<&Gpu> = Vec::new();
    let mut out_migs: Vec<&Mig> = Vec::new();
    let add_gpu = |g: &'a Gpu, out: &mut Vec<&'a Gpu>| {
        if !out.iter().any(|o| o.minor == g.minor) {
            out.push(g);
        }
    };
    for id in ids {
        let mig = if crate::container::request::is_mig_uuid(id) {
            let m = migs.iter().find(|m| {
                m.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(id))
            });
            Some(m.ok_or_else(|| {
                Error::UnknownMig(
                    id.clone(),
                    format!("{} MIG devices on this host", migs.len()),
                )
            })?)
        } else if crate::container::request::is_mig_index(id) {
            let (g, m) = id.split_once(':').expect("checked");
            let (g, m): (u32, u32) = (g.parse().unwrap_or(u32::MAX), m.parse().unwrap_or(u32::MAX));
            let found = migs.iter().find(|x| x.parent_index == g && x.index == m);
            Some(found.ok_or_else(|| {
                let n = migs.iter().filter(|x| x.parent_index == g).count();
                Error::UnknownMig(id.clone(), format!("GPU {g} has {n} MIG devices"))
            })?)
        } else {
            None
        };
        if let Some(m) = mig {
            if let Some(parent) = gpus.iter().find(|g| g.index == m.parent_index) {
                add_gpu(parent, &mut out);
            }
            if !out_migs.iter().any(|x| std::ptr::eq(*x, m)) {
                out_migs.push(m);
            }
            continue;
        }
        let found = if id.bytes().all(|c| c.is_ascii_digit()) {
            id.parse::<u32>()
                .ok()
                .and_then(|i| gpus.iter().find(|g| g.index == i))
        } else if crate::container::request::is_gpu_uuid(id) {
            gpus.iter().find(|g| g.uuid.eq_ignore_ascii_case(id))
        } else {
            BusId::parse(id).and_then(|b| gpus.iter().find(|g| g.bus_id == b))
        };
        let g = found.ok_or_else(|| {
            let have = if gpus.is_empty() {
                "no GPUs".to_string()
            } else {
                format!("GPUs 0-{}", gpus.len() - 1)
            };
            Error::UnknownDevice(id.clone(), have)
        })?;
        add_gpu(g, &mut out);
    }
    Ok((out, out_migs))
}

fn device(n: &DeviceNode) -> Device {
    Device {
        path: n.path.clone(),
        host_path: n.host_path.clone(),
        major: n.major,
        minor: n.minor,
        flags: DEV_FLAGS.to_vec(),
    }
}

/// Builds the plan. Pure: same inputs, same plan.
pub fn build(req: &Request, driver: &Driver, image: &ImageFacts, opts: &Options) -> Result<Plan> {
    let caps = Caps(&req.capabilities);
    let (chosen, chosen_migs) = select(&req.devices, &driver.gpus, &driver.migs)?;
    let mut devices = gpu_devices(driver, &chosen, &chosen_migs, caps)?;
    let mig_files = managed_mig_devices(req, driver, &chosen_migs, &mut devices)?;
    devices.extend(imex_channels(req, driver)?);
    let mut mounts = driver_mounts(driver, image, caps);
    // The MPS pipe directory serves clients of a GPU: a container given none gets no
    // way to reach (or fill) the host's directory.
    if chosen.is_empty() && chosen_migs.is_empty() {
        mounts.retain(|m| m.kind != MountKind::IpcDir);
    }
    let symlinks = library_links(&mounts, image, caps);
    let cgroup = cgroup_rules(&devices, opts);
    let compat = cuda_compat(image, driver, caps);
    Ok(Plan {
        driver_version: driver.version.clone(),
        capabilities: req.capabilities.iter().copied().collect(),
        gpus: chosen.iter().map(|g| selected_gpu(g)).collect(),
        ldconfig: loader_cache(&mounts, image, compat, opts, caps),
        devices,
        mounts,
        symlinks,
        cgroup,
        files: compat_files(compat),
        proc_driver: proc_driver_view(driver, &chosen, mig_files),
        migs: chosen_migs.iter().map(|m| selected_mig(m)).collect(),
    })
}

/// The driver capabilities a container asked for.
#[derive(Clone, Copy)]
struct Caps<'a>(&'a std::collections::BTreeSet<Capability>);

impl Caps<'_> {
    fn has(self, c: Capability) -> bool {
        self.0.contains(&c)
    }
}

/// The device nodes of the chosen GPUs and MIG instances: the control node, each GPU's
/// node, each MIG instance's capability nodes, and the nodes the capabilities need
/// (UVM for compute, modeset for display). None without a GPU.
fn gpu_devices(driver: &Driver, chosen: &[&Gpu], migs: &[&Mig], caps: Caps) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    if chosen.is_empty() {
        return Ok(devices);
    }
    devices.push(device(driver.nvidiactl.as_ref().ok_or(Error::NoControl)?));
    for g in chosen {
        let n = g.node.as_ref().ok_or_else(|| Error::NoNode {
            index: g.index,
            uuid: g.uuid.clone(),
            minor: g.minor,
        })?;
        devices.push(device(n));
    }
    for m in migs {
        devices.push(device(&m.gi_cap));
        devices.push(device(&m.ci_cap));
    }
    if caps.has(Capability::Compute) {
        devices.extend(driver.uvm.iter().map(device));
        devices.extend(driver.uvm_tools.iter().map(device));
    }
    if caps.has(Capability::Display) {
        devices.extend(driver.modeset.iter().map(device));
    }
    Ok(devices)
}

/// The MIG capability nodes of `NVIDIA_MIG_CONFIG_DEVICES` and
/// `NVIDIA_MIG_MONITOR_DEVICES` (added to `devices`), and the `/proc` capability files
/// the chosen MIG instances and these need to be seen.
fn managed_mig_devices(
    req: &Request,
    driver: &Driver,
    chosen_migs: &[&Mig],
    devices: &mut Vec<Device>,
) -> Result<Vec<FileWrite>> {
    let mut files: Vec<FileWrite> = chosen_migs
        .iter()
        .flat_map(|m| m.access_files.iter())
        .map(|(p, c)| FileWrite {
            path: p.clone(),
            content: c.clone(),
        })
        .collect();
    for (want, cap, var, name) in [
        (
            &req.mig_config,
            &driver.mig_config,
            "NVIDIA_MIG_CONFIG_DEVICES",
            "config",
        ),
        (
            &req.mig_monitor,
            &driver.mig_monitor,
            "NVIDIA_MIG_MONITOR_DEVICES",
            "monitor",
        ),
    ] {
        let Some(list) = want else { continue };
        // Every GPU the list names must exist, as in NVIDIA_VISIBLE_DEVICES; the
        // capability itself is one for the whole host.
        let (gpus, _) = select(list, &driver.gpus, &driver.migs).map_err(|e| match e {
            Error::UnknownDevice(id, have) => Error::UnknownManaged(var, id, have),
            e => e,
        })?;
        if gpus.is_empty() {
            continue;
        }
        let (n, text) = cap.as_ref().ok_or(Error::NoMigCapability(var, name))?;
        devices.push(device(n));
        files.push(FileWrite {
            path: format!("capabilities/mig/{name}"),
            content: text.clone(),
        });
    }
    Ok(files)
}

/// The nodes of the IMEX channels asked for; each must exist.
fn imex_channels(req: &Request, driver: &Driver) -> Result<Vec<Device>> {
    req.imex_channels
        .iter()
        .map(|ch| {
            driver
                .imex_channels
                .iter()
                .find(|(c, _)| c == ch)
                .map(|(_, n)| device(n))
                .ok_or(Error::NoImexChannel(*ch))
        })
        .collect()
}

/// The driver's files the capabilities select, at their places in the image:
/// libraries in its library dirs (i386 ones only with `compat32` and a 32-bit dir),
/// binaries in `/usr/bin`, firmware (compute, utility), loader configuration, IPC dirs
/// and sockets at their host paths.
fn driver_mounts(driver: &Driver, image: &ImageFacts, caps: Caps) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for lib in driver.libraries.iter().filter(|l| caps.has(l.capability)) {
        let dir = match lib.arch {
            Arch::Native => &image.lib_dir,
            Arch::I386 if caps.has(Capability::Compat32) => match &image.lib32_dir {
                Some(d) => d,
                None => continue,
            },
            Arch::I386 => continue,
        };
        mounts.push(Mount {
            kind: MountKind::Library,
            source: lib.host_path.clone(),
            target: format!("{dir}/{}", lib.file_name),
            flags: LIB_FLAGS.to_vec(),
        });
    }
    for b in driver.binaries.iter().filter(|b| caps.has(b.capability)) {
        mounts.push(Mount {
            kind: MountKind::Binary,
            source: b.host_path.clone(),
            target: format!("/usr/bin/{}", b.name),
            flags: LIB_FLAGS.to_vec(),
        });
    }
    if caps.has(Capability::Compute) || caps.has(Capability::Utility) {
        for f in &driver.firmware {
            mounts.push(Mount {
                kind: MountKind::Firmware,
                source: f.host_path.clone(),
                target: f.path.clone(),
                flags: LIB_FLAGS.to_vec(),
            });
        }
    }
    for (files, kind, flags) in [
        (&driver.config_files, MountKind::Config, LIB_FLAGS),
        (&driver.ipc_dirs, MountKind::IpcDir, IPC_DIR_FLAGS),
        (&driver.sockets, MountKind::Socket, SOCK_FLAGS),
    ] {
        for f in files.iter().filter(|f| caps.has(f.capability)) {
            mounts.push(Mount {
                kind,
                source: f.host_path.clone(),
                target: f.path.clone(),
                flags: flags.to_vec(),
            });
        }
    }
    mounts
}

/// The development and vendor-neutral names NVIDIA's toolkit makes beside the mounted
/// 64-bit libraries: `libcuda.so`, `libnvidia-opticalflow.so`, `libGLX_indirect.so.0`.
fn library_links(mounts: &[Mount], image: &ImageFacts, caps: Caps) -> Vec<Symlink> {
    let in_lib_dir = format!("{}/", image.lib_dir);
    let lib_has = |prefix: &str| {
        mounts.iter().any(|m| {
            m.kind == MountKind::Library
                && m.target
                    .strip_prefix(&in_lib_dir)
                    .is_some_and(|n| n.starts_with(prefix))
        })
    };
    [
        (
            Capability::Compute,
            "libcuda.so.",
            "libcuda.so",
            "libcuda.so.1",
        ),
        (
            Capability::Video,
            "libnvidia-opticalflow.so.",
            "libnvidia-opticalflow.so",
            "libnvidia-opticalflow.so.1",
        ),
        (
            Capability::Graphics,
            "libGLX_nvidia.so.",
            "libGLX_indirect.so.0",
            "libGLX_nvidia.so.0",
        ),
    ]
    .into_iter()
    .filter(|(cap, lib, _, _)| caps.has(*cap) && lib_has(lib))
    .map(|(_, _, name, target)| Symlink {
        path: format!("{}/{name}", image.lib_dir),
        target: target.into(),
    })
    .collect()
}

/// Read-write access to every planned device node, unless cgroups are left alone.
fn cgroup_rules(devices: &[Device], opts: &Options) -> Vec<CgroupRule> {
    if opts.no_cgroups {
        return Vec::new();
    }
    devices
        .iter()
        .map(|d| CgroupRule {
            kind: DeviceKind::Char,
            major: d.major,
            minor: d.minor,
            access: DeviceAccess::ReadWrite,
        })
        .collect()
}

/// CUDA forward compatibility: the version of the image's compat libcuda when it is
/// newer (by major) than the host driver and compute is asked for. It is preferred by
/// loader configuration, never by mounting it.
fn cuda_compat<'a>(image: &'a ImageFacts, driver: &Driver, caps: Caps) -> Option<&'a str> {
    let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    image.cuda_compat.as_deref().filter(|v| {
        caps.has(Capability::Compute) && major(v).is_some() && major(v) > major(&driver.version)
    })
}

/// The loader drop-in that puts the compat dir first, when compat libraries win.
fn compat_files(compat: Option<&str>) -> Vec<FileWrite> {
    compat
        .map(|_| FileWrite {
            path: CUDA_COMPAT_CONF.into(),
            content: format!("{}\n", crate::container::image::CUDA_COMPAT_DIR),
        })
        .into_iter()
        .collect()
}

/// The loader cache update, when libraries are mounted: the dirs in the order that
/// ranks libraries of one name (the compat dir first when it wins, then the 64-bit dir,
/// then the 32-bit one where i386 libraries went).
fn loader_cache(
    mounts: &[Mount],
    image: &ImageFacts,
    compat: Option<&str>,
    opts: &Options,
    caps: Caps,
) -> Option<Ldconfig> {
    let libs_under = |d: &str| {
        let prefix = format!("{d}/");
        mounts
            .iter()
            .any(|m| m.kind == MountKind::Library && m.target.starts_with(&prefix))
    };
    if !mounts.iter().any(|m| m.kind == MountKind::Library) {
        return None;
    }
    let compat_dir = compat.map(|_| crate::container::image::CUDA_COMPAT_DIR.to_string());
    let mut dirs: Vec<String> = compat_dir.iter().cloned().collect();
    dirs.push(image.lib_dir.clone());
    if caps.has(Capability::Compat32) {
        if let Some(d) = image.lib32_dir.as_ref().filter(|d| libs_under(d)) {
            dirs.push(d.clone());
        }
    }
    let mut l = Ldconfig::new(&opts.ldconfig, dirs);
    if opts.ld_cache_by_nvhook {
        l.by_nvhook = true;
        l.rescan = compat_dir.into_iter().collect();
    }
    Some(l)
}

/// The container's `/proc/driver/nvidia`: the host's files with only the chosen GPUs'
/// entries, `ModifyDeviceFiles: 0`, and the MIG capability files.
fn proc_driver_view(
    driver: &Driver,
    chosen: &[&Gpu],
    mig_files: Vec<FileWrite>,
) -> Option<ProcDriver> {
    let host = driver.proc_files.as_ref()?;
    let shown = |f: &&FileWrite| match f.path.strip_prefix("gpus/") {
        Some(rest) => chosen
            .iter()
            .any(|g| rest.starts_with(&format!("{}/", g.bus_id))),
        None => true,
    };
    let files = host
        .iter()
        .filter(shown)
        .map(|f| FileWrite {
            path: f.path.clone(),
            content: if f.path == "params" {
                params_without_device_files(&f.content)
            } else {
                f.content.clone()
            },
        })
        .chain(mig_files)
        .collect();
    Some(ProcDriver { files })
}

fn selected_gpu(g: &Gpu) -> SelectedGpu {
    SelectedGpu {
        index: g.index,
        minor: g.minor,
        uuid: g.uuid.clone(),
        bus_id: g.bus_id,
    }
}

fn selected_mig(m: &Mig) -> SelectedMig {
    SelectedMig {
        parent_index: m.parent_index,
        index: m.index,
        gi: m.gi,
        ci: m.ci,
        uuid: m.uuid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::arch::NATIVE;
    use crate::container::request::Request;
    use crate::host::driver::{Binary, Firmware, Library};

    fn node(name: &str, major: u32, minor: u32) -> DeviceNode {
        DeviceNode {
            path: format!("/dev/{name}"),
            host_path: format!("/h/dev/{name}").into(),
            major,
            minor,
        }
    }

    fn lib(cap: Capability, arch: Arch, name: &str) -> Library {
        let file_name = format!("lib{name}.so.550.54.14");
        Library {
            capability: cap,
            arch,
            host_path: format!("/h/lib/{file_name}").into(),
            file_name,
        }
    }

    fn driver() -> Driver {
        let gpu = |index: u32, minor: u32, bus: &str| Gpu {
            index,
            minor,
            uuid: format!("GPU-0000000{index}-aaaa"),
            bus_id: BusId::parse(bus).unwrap(),
            model: "NVIDIA Synthetic".into(),
            node: Some(node(&format!("nvidia{minor}"), 195, minor)),
        };
        Driver {
            version: "550.54.14".into(),
            gpus: vec![gpu(0, 3, "0000:1a:00.0"), gpu(1, 0, "0000:3b:00.0")],
            nvidiactl: Some(node("nvidiactl", 195, 255)),
            uvm: Some(node("nvidia-uvm", 508, 0)),
            uvm_tools: Some(node("nvidia-uvm-tools", 508, 1)),
            modeset: Some(node("nvidia-modeset", 195, 254)),
            libraries: vec![
                lib(Capability::Compute, Arch::Native, "cuda"),
                lib(Capability::Compute, Arch::I386, "cuda"),
                lib(Capability::Utility, Arch::Native, "nvidia-ml"),
                lib(Capability::Video, Arch::Native, "nvidia-encode"),
                lib(Capability::Graphics, Arch::Native, "GLX_nvidia"),
            ],
            binaries: vec![Binary {
                capability: Capability::Utility,
                name: "nvidia-smi".into(),
                host_path: "/h/bin/nvidia-smi".into(),
            }],
            firmware: vec![Firmware {
                path: "/lib/firmware/nvidia/550.54.14/gsp_ga10x.bin".into(),
                host_path: "/h/fw/gsp_ga10x.bin".into(),
            }],
            ..Driver::default()
        }
    }

    fn opts() -> Options {
        Options {
            ldconfig: "@/sbin/ldconfig".into(),
            no_cgroups: false,
            ld_cache_by_nvhook: false,
        }
    }

    fn plan(env: &[&str], image: ImageFacts) -> Result<Plan> {
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        let req = Request::from_env(&env).unwrap().unwrap();
        build(&req, &driver(), &image, &opts())
    }

    /// Where a Debian image's libraries of this architecture are.
    fn native_lib(name: &str) -> String {
        format!("{}/{name}", NATIVE.debian_lib_dir)
    }

    fn targets(p: &Plan) -> Vec<&str> {
        p.mounts.iter().map(|m| m.target.as_str()).collect()
    }

    #[test]
    fn one_gpu_by_index_default_caps() {
        let p = plan(&["NVIDIA_VISIBLE_DEVICES=1"], ImageFacts::debian()).unwrap();
        let devs: Vec<&str> = p.devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            devs,
            [
                "/dev/nvidiactl",
                "/dev/nvidia0",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools"
            ]
        );
        assert_eq!(p.gpus[0].uuid, "GPU-00000001-aaaa");
        assert_eq!(
            targets(&p),
            [
                native_lib("libcuda.so.550.54.14").as_str(),
                native_lib("libnvidia-ml.so.550.54.14").as_str(),
                "/usr/bin/nvidia-smi",
                "/lib/firmware/nvidia/550.54.14/gsp_ga10x.bin",
            ]
        );
        assert!(p.mounts.iter().all(|m| m.readonly()
            && m.flags.contains(&MountFlag::Nosuid)
            && m.flags.contains(&MountFlag::Nodev)));
        assert!(p
            .devices
            .iter()
            .all(|d| d.flags == [MountFlag::Ro, MountFlag::Nosuid, MountFlag::Noexec]));
        assert_eq!(
            p.symlinks,
            [Symlink {
                path: native_lib("libcuda.so"),
                target: "libcuda.so.1".into()
            }]
        );
        let rules: Vec<String> = p.cgroup.iter().map(CgroupRule::v1_line).collect();
        assert_eq!(
            rules,
            ["c 195:255 rw", "c 195:0 rw", "c 508:0 rw", "c 508:1 rw"]
        );
        let l = p.ldconfig.unwrap();
        assert!(l.host);
        assert_eq!(l.path, "/sbin/ldconfig");
        assert_eq!(l.args.last().unwrap(), NATIVE.debian_lib_dir);
    }

    #[test]
    fn selection_by_uuid_and_bus_id_rhel_image() {
        let p = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=GPU-00000000-AAAA,00000000:3B:00.0",
                "NVIDIA_DRIVER_CAPABILITIES=utility",
            ],
            ImageFacts::rhel(),
        )
        .unwrap();
        let minors: Vec<u32> = p.gpus.iter().map(|g| g.minor).collect();
        assert_eq!(minors, [3, 0]);
        assert_eq!(targets(&p)[0], "/usr/lib64/libnvidia-ml.so.550.54.14");
        assert!(!targets(&p).iter().any(|t| t.contains("libcuda")));
        assert!(p.symlinks.is_empty());
        assert!(!p.devices.iter().any(|d| d.path.contains("uvm")));
    }

    #[test]
    fn unknown_device_is_named() {
        let e = plan(&["NVIDIA_VISIBLE_DEVICES=0,7"], ImageFacts::debian()).unwrap_err();
        assert_eq!(e, Error::UnknownDevice("7".into(), "GPUs 0-1".into()));
        assert!(e.to_string().contains("\"7\""));
        assert!(plan(&["NVIDIA_VISIBLE_DEVICES=GPU-nope"], ImageFacts::debian()).is_err());
        assert!(plan(
            &["NVIDIA_VISIBLE_DEVICES=0000:99:00.0"],
            ImageFacts::debian()
        )
        .is_err());
    }

    #[test]
    fn non_ascii_ids_are_unknown_not_a_panic() {
        for id in ["GPUé1", "MIGé", "é", "GPU-é", "MIG-ü"] {
            let e = plan(
                &[&format!("NVIDIA_VISIBLE_DEVICES={id}")],
                ImageFacts::debian(),
            )
            .unwrap_err();
            assert!(
                matches!(e, Error::UnknownDevice(..) | Error::UnknownMig(..)),
                "{id}: {e}"
            );
        }
    }

    #[test]
    fn none_gives_driver_without_devices() {
        let p = plan(&["NVIDIA_VISIBLE_DEVICES=none"], ImageFacts::debian()).unwrap();
        assert!(p.devices.is_empty() && p.cgroup.is_empty() && p.gpus.is_empty());
        assert!(!p.mounts.is_empty());
        assert!(p.ldconfig.is_some());
    }

    #[test]
    fn all_caps_and_compat32() {
        let p = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=all",
                "NVIDIA_DRIVER_CAPABILITIES=all",
            ],
            ImageFacts::debian(),
        )
        .unwrap();
        assert_eq!(p.gpus.len(), 2);
        assert!(p.devices.iter().any(|d| d.path == "/dev/nvidia-modeset"));
        if NATIVE.compat32.is_some() {
            assert!(targets(&p).contains(&"/usr/lib/i386-linux-gnu/libcuda.so.550.54.14"));
            assert_eq!(
                p.ldconfig.as_ref().unwrap().args.last().unwrap(),
                "/usr/lib/i386-linux-gnu"
            );
        } else {
            // arm64: the driver's i386 files are never mounted, compat32 or not
            assert!(!targets(&p).iter().any(|t| t.contains("i386")));
            assert_eq!(
                p.ldconfig.as_ref().unwrap().args.last().unwrap(),
                NATIVE.debian_lib_dir
            );
        }
        assert!(p
            .symlinks
            .iter()
            .any(|s| s.path.ends_with("libGLX_indirect.so.0")));
    }

    #[test]
    fn proc_driver_view() {
        let mut d = driver();
        d.proc_files = Some(vec![
            FileWrite {
                path: "params".into(),
                content: "ResmanDebugLevel: 1\nModifyDeviceFiles: 1\n".into(),
            },
            FileWrite {
                path: "version".into(),
                content: "NVRM version: x\n".into(),
            },
            FileWrite {
                path: "gpus/0000:1a:00.0/information".into(),
                content: "a".into(),
            },
            FileWrite {
                path: "gpus/0000:3b:00.0/information".into(),
                content: "b".into(),
            },
        ]);
        let env: Vec<String> = vec!["NVIDIA_VISIBLE_DEVICES=1".into()];
        let req = Request::from_env(&env).unwrap().unwrap();
        let p = build(&req, &d, &ImageFacts::debian(), &opts())
            .unwrap()
            .proc_driver
            .unwrap();
        let paths: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["params", "version", "gpus/0000:3b:00.0/information"]
        );
        assert_eq!(
            p.files[0].content,
            "ResmanDebugLevel: 1\nModifyDeviceFiles: 0\n"
        );
    }

    #[test]
    fn cuda_compat_only_when_newer() {
        let newer = ImageFacts {
            cuda_compat: Some("560.28.03".into()),
            ..ImageFacts::debian()
        };
        let p = plan(&["NVIDIA_VISIBLE_DEVICES=0"], newer.clone()).unwrap();
        assert_eq!(p.files[0].path, CUDA_COMPAT_CONF);
        let args = p.ldconfig.unwrap().args;
        assert_eq!(
            &args[4..],
            ["/usr/local/cuda/compat", NATIVE.debian_lib_dir]
        );
        let older = ImageFacts {
            cuda_compat: Some("550.99.01".into()),
            ..ImageFacts::debian()
        };
        assert!(
            plan(&["NVIDIA_VISIBLE_DEVICES=0"], older)
                .unwrap()
                .files
                .is_empty(),
            "same major: host wins"
        );
        let p = plan(
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=utility",
            ],
            newer,
        )
        .unwrap();
        assert!(p.files.is_empty(), "no compute, no compat");
    }

    #[test]
    fn no_cgroups_and_missing_node() {
        let env: Vec<String> = vec!["NVIDIA_VISIBLE_DEVICES=0".into()];
        let req = Request::from_env(&env).unwrap().unwrap();
        let p = build(
            &req,
            &driver(),
            &ImageFacts::debian(),
            &Options {
                ldconfig: "/sbin/ldconfig".into(),
                no_cgroups: true,
                ld_cache_by_nvhook: false,
            },
        )
        .unwrap();
        assert!(p.cgroup.is_empty());
        assert!(!p.ldconfig.unwrap().host);
        let mut d = driver();
        d.gpus[0].node = None;
        let e = build(&req, &d, &ImageFacts::debian(), &opts()).unwrap_err();
        assert!(matches!(e, Error::NoNode { minor: 3, .. }));
    }
}
