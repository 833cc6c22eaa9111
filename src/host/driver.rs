//! Host driver discovery: what the installed NVIDIA driver offers, found from files
//! alone (procfs, `/dev`, `ld.so.cache`), so no NVML or child process is needed.

use crate::common::sys;
use crate::container::request::Capability;
use crate::host::ldcache::{self, Arch};
use crate::host::procfs::{self, BusId};
use serde::Serialize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A small file nvhook writes inside the container (a `/proc/driver/nvidia` copy, the
/// loader's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileWrite {
    pub path: String,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NVIDIA driver not found: cannot read {path}: {source}")]
    NoDriver {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Proc(#[from] procfs::Error),
    #[error("{path}: {source}")]
    Cache {
        path: PathBuf,
        source: ldcache::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where discovery looks; all three are configuration keys.
#[derive(Debug, Clone)]
pub struct Roots {
    pub driver_root: PathBuf,
    pub dev_root: PathBuf,
    pub proc_root: PathBuf,
    /// The MPS pipe directory, a path under the driver root.
    pub mps_pipe_dir: String,
    /// Where `module/firmware_class/parameters/path` (the kernel's custom firmware
    /// search path) is read: `/sys`.
    pub sys_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Path inside a container (`/dev/nvidia0`).
    pub path: String,
    pub host_path: PathBuf,
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// NVML-style index: position in PCI bus order.
    pub index: u32,
    pub minor: u32,
    pub uuid: String,
    pub bus_id: BusId,
    pub model: String,
    pub node: Option<DeviceNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Library {
    pub capability: Capability,
    pub arch: Arch,
    /// The real file (symlinks resolved), whose name ends in the driver version.
    pub host_path: PathBuf,
    pub file_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binary {
    pub capability: Capability,
    pub name: String,
    pub host_path: PathBuf,
}

/// A socket, loader file or IPC directory of the driver, bound into containers that
/// ask for `capability` at `path` (its conventional host path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    pub capability: Capability,
    /// Path inside the container (the conventional host path).
    pub path: String,
    pub host_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firmware {
    /// Path inside the container, same as on a host with `/` as driver root.
    pub path: String,
    pub host_path: PathBuf,
}

/// A MIG device: a compute instance of a GPU instance of a parent GPU, reached through
/// the parent's node and two `nvidia-caps` capability nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mig {
    pub parent_index: u32,
    pub parent_minor: u32,
    /// Position among the parent's MIG devices (`GPU:MIG` syntax).
    pub index: u32,
    pub gi: u32,
    pub ci: u32,
    pub gi_cap: DeviceNode,
    pub ci_cap: DeviceNode,
    /// Known only from NVML (filled in when a `MIG-` id is asked for).
    pub uuid: Option<String>,
    /// The capability files, as (path under /proc/driver/nvidia, content).
    pub access_files: Vec<(String, String)>,
}

/// Everything discovered about the host driver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Driver {
    pub version: String,
    pub gpus: Vec<Gpu>,
    pub nvidiactl: Option<DeviceNode>,
    pub uvm: Option<DeviceNode>,
    pub uvm_tools: Option<DeviceNode>,
    pub modeset: Option<DeviceNode>,
    pub libraries: Vec<Library>,
    pub binaries: Vec<Binary>,
    pub firmware: Vec<Firmware>,
    pub sockets: Vec<HostFile>,
    /// The driver's `/proc/driver/nvidia` files a container's masked view copies:
    /// `params`, `version`, `registry`, `gpus/<bus id>/information` (relative paths).
    pub proc_files: Option<Vec<FileWrite>>,
    /// Vendor and ICD files (GLVND, Vulkan, EGL platforms, OpenCL) the driver installs.
    pub config_files: Vec<HostFile>,
    /// IPC directories (the MPS pipe dir), bound read-write.
    pub ipc_dirs: Vec<HostFile>,
    /// `/dev/nvidia-caps-imex-channels/channel<N>`, by channel number.
    pub imex_channels: Vec<(u32, DeviceNode)>,
    pub migs: Vec<Mig>,
    /// MIG management capabilities (`NVIDIA_MIG_CONFIG_DEVICES`, `..._MONITOR_...`).
    pub mig_config: Option<(DeviceNode, String)>,
    pub mig_monitor: Option<(DeviceNode, String)>,
    /// Things found but not usable, for `nvhook info` and the debug log.
    pub warnings: Vec<String>,
}

/// Files the driver installs for loaders, by capability, at the same path in containers.
const CONFIG_FILES: &[(Capability, &str)] = &[
    (
        Capability::Graphics,
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
    ),
    (Capability::Graphics, "/etc/vulkan/icd.d/nvidia_icd.json"),
    (
        Capability::Graphics,
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
    ),
    (
        Capability::Graphics,
        "/etc/vulkan/implicit_layer.d/nvidia_layers.json",
    ),
    (
        Capability::Graphics,
        "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
    ),
    (
        Capability::Graphics,
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
    ),
    (
        Capability::Graphics,
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
    ),
    (Capability::Compute, "/etc/OpenCL/vendors/nvidia.icd"),
];

/// Finds the MPS pipe directory, which containers get read-write: every component is
/// opened under the driver root without following links, and it and every directory
/// above it must be root-owned and not writable by group or others (a root-owned
/// sticky directory such as `/tmp` aside, where others cannot replace what root owns).
/// A local user who owns the directory, or plants a link on its path, must not get a
/// host directory into containers: such a one is left out, with a warning.
fn find_mps_dir(
    root: &std::os::fd::OwnedFd,
    path: &str,
    warnings: &mut Vec<String>,
) -> Option<HostFile> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut warn = |why: String| {
        warnings.push(format!(
            "MPS pipe directory {path} left out: {why} (containers get it read-write)"
        ))
    };
    if comps.is_empty() || comps.contains(&"..") {
        warn("not a plain absolute path".into());
        return None;
    }
    let mut cur = root.try_clone().ok()?;
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let fd = match sys::openat2(
            cur.as_fd(),
            Path::new(c),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
            sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None, // no MPS here
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                warn(format!("{c} is a symbolic link"));
                return None;
            }
            Err(e) => {
                warn(format!("cannot open {c}: {e}"));
                return None;
            }
        };
        let st = match sys::fstat(fd.as_fd()) {
            Ok(st) => st,
            Err(e) => {
                warn(format!("cannot stat {c}: {e}"));
                return None;
            }
        };
        if !is_type(&st, libc::S_IFDIR) {
            warn(format!("{c} is not a directory"));
            return None;
        }
        if let Err(e) =
            crate::common::trust::check_entry("directory", Path::new(c), fd.as_fd(), &st, !last)
        {
            warn(e.to_string());
            return None;
        }
        cur = fd;
    }
    Some(HostFile {
        capability: Capability::Compute,
        path: format!("/{}", comps.join("/")),
        host_path: sys::fd_path(cur.as_fd()).ok()?,
    })
}

/// Driver libraries by capability (file names are `lib<name>.so.<version>`).
pub const LIBRARIES: &[(Capability, &[&str])] = &[
    (
        Capability::Utility,
        &["nvidia-ml", "nvidia-cfg", "nvidia-nscq"],
    ),
    (
        Capability::Compute,
        &[
            "cuda",
            "cudadebugger",
            "nvidia-opencl",
            "nvidia-gpucomp",
            "nvidia-ptxjitcompiler",
            "nvidia-fatbinaryloader",
            "nvidia-allocator",
            "nvidia-compiler",
            "nvidia-pkcs11",
            "nvidia-pkcs11-openssl3",
            "nvidia-nvvm",
        ],
    ),
    (
        Capability::Video,
        &[
            "vdpau_nvidia",
            "nvidia-encode",
            "nvidia-opticalflow",
            "nvcuvid",
        ],
    ),
    (
        Capability::Graphics,
        &[
            "nvidia-eglcore",
            "nvidia-glcore",
            "nvidia-tls",
            "nvidia-glsi",
            "nvidia-fbc",
            "nvidia-ifr",
            "nvidia-rtcore",
            "nvoptix",
            "GLX_nvidia",
            "EGL_nvidia",
            "GLESv2_nvidia",
            "GLESv1_CM_nvidia",
            "nvidia-glvkspirv",
            "nvidia-cbl",
        ],
    ),
    (Capability::Ngx, &["nvidia-ngx"]),
];

/// Driver binaries by capability.
pub const BINARIES: &[(Capability, &[&str])] = &[
    (
        Capability::Utility,
        &[
            "nvidia-smi",
            "nvidia-debugdump",
            "nvidia-persistenced",
            "nv-fabricmanager",
        ],
    ),
    (
        Capability::Compute,
        &["nvidia-cuda-mps-control", "nvidia-cuda-mps-server"],
    ),
];

const SOCKETS: &[(Capability, &str)] = &[
    (Capability::Utility, "/var/run/nvidia-persistenced/socket"),
    (Capability::Utility, "/var/run/nvidia-fabricmanager/socket"),
];

/// Where the driver's tools are looked for under the driver root, after the `bin/`
/// beside its libraries.
pub const BIN_DIRS: &[&str] = &["usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin"];

/// The character device `dev/<name>` if it is one, with the expected major and minor
/// where known (a node that is something else is left out, with a warning).
fn char_node(
    dev: &Path,
    name: &str,
    major: Option<u32>,
    minor: Option<u32>,
    warnings: &mut Vec<String>,
) -> Option<DeviceNode> {
    let host_path = dev.join(name);
    let fd = sys::open(&host_path, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
    let st = sys::fstat(fd.as_fd()).ok()?;
    let (ma, mi) = sys::dev_split(st.st_rdev);
    if !is_type(&st, libc::S_IFCHR)
        || major.is_some_and(|m| m != ma)
        || minor.is_some_and(|m| m != mi)
    {
        warnings.push(format!(
            "{} is not the expected character device ({ma}:{mi})",
            host_path.display()
        ));
        return None;
    }
    Some(DeviceNode {
        path: format!("/dev/{name}"),
        host_path,
        major: ma,
        minor: mi,
    })
}

/// Those of `wanted` that exist under the driver root as files of type `kind`.
fn find_host_files(
    root: &std::os::fd::OwnedFd,
    wanted: &[(Capability, &str)],
    kind: libc::mode_t,
) -> Vec<HostFile> {
    wanted
        .iter()
        .filter_map(|(cap, path)| {
            let (host_path, st) = resolve_in(root, path).ok()?;
            is_type(&st, kind).then(|| HostFile {
                capability: *cap,
                path: path.to_string(),
                host_path,
            })
        })
        .collect()
}

/// The numbers N of entries `<prefix>N` in `dir`.
fn numbered(dir: &Path, prefix: &str) -> Vec<u32> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The capability a library file belongs to, if it is a driver library of `version`.
pub fn classify_library(file_name: &str, version: &str) -> Option<Capability> {
    let stem = file_name
        .strip_prefix("lib")?
        .strip_suffix(version)?
        .strip_suffix(".so.")?;
    LIBRARIES
        .iter()
        .find(|(_, names)| names.contains(&stem))
        .map(|(c, _)| *c)
}

/// Whether a library name (a cache entry or a directory entry: `libcuda.so.1`, a
/// versioned real name, `libcuda.so`) has the stem of a driver library. Checked before
/// anything is resolved, so a host cache of thousands of other libraries costs a string
/// compare each, not a path walk.
pub fn may_be_driver_library(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("lib") else {
        return false;
    };
    let Some(i) = rest.find(".so") else {
        return false;
    };
    let (stem, tail) = rest.split_at(i);
    (tail == ".so" || tail.starts_with(".so."))
        && LIBRARIES.iter().any(|(_, names)| names.contains(&stem))
}

/// Resolves `path` (absolute, as seen from inside `root`) with every symlink kept
/// inside `root`, and returns the real host path and the file's `stat`.
fn resolve_in(root: &OwnedFd, path: &str) -> std::io::Result<(PathBuf, libc::stat)> {
    let fd = sys::openat2(
        root.as_fd(),
        Path::new(path.trim_start_matches('/')),
        libc::O_PATH,
        0,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    )?;
    let st = sys::fstat(fd.as_fd())?;
    Ok((sys::fd_path(fd.as_fd())?, st))
}

fn is_type(st: &libc::stat, t: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == t
}

/// The version of the driver the kernel has loaded, and the text of
/// `driver/nvidia/version` (under the proc root) it was read from.
pub fn loaded_version(proc_root: &Path) -> Result<(String, String)> {
    let vpath = proc_root.join("driver/nvidia/version");
    let vtext = std::fs::read_to_string(&vpath).map_err(|source| Error::NoDriver {
        path: vpath,
        source,
    })?;
    Ok((procfs::parse_version(&vtext)?, vtext))
}

impl Driver {
    pub fn discover(roots: &Roots) -> Result<Driver> {
        let proc_nv = roots.proc_root.join("driver/nvidia");
        let (version, vtext) = loaded_version(&roots.proc_root)?;
        let mut warnings = Vec::new();
        let majors = Majors::read(&roots.proc_root);
        let nv_major = majors.of(&["nvidia-frontend", "nvidia"]).unwrap_or(195);
        let uvm_major = majors.of(&["nvidia-uvm"]);
        let dev = roots.dev_root.join("dev");
        let (gpus, info_files, excluded) = read_gpus(&proc_nv, &dev, nv_major, &mut warnings)?;
        let mut node = |name: &str, major: Option<u32>, minor: Option<u32>| {
            char_node(&dev, name, major, minor, &mut warnings)
        };
        let nvidiactl = node("nvidiactl", Some(nv_major), Some(255));
        let modeset = node("nvidia-modeset", Some(nv_major), Some(254));
        let uvm = node("nvidia-uvm", uvm_major, None);
        let uvm_tools = node("nvidia-uvm-tools", uvm_major, None);
        warnings.extend(excluded);

        let root =
            sys::open(&roots.driver_root, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
                Error::Read {
                    path: roots.driver_root.clone(),
                    source,
                }
            })?;
        let (libraries, lib_dirs) = find_libraries(&root, &roots.driver_root, &version)?;
        let binaries = find_binaries(&root, &lib_dirs);
        let firmware = find_firmware(&root, &roots.sys_root, &version);
        let sockets = find_host_files(&root, SOCKETS, libc::S_IFSOCK);
        let config_files = find_host_files(&root, CONFIG_FILES, libc::S_IFREG);
        let ipc_dirs: Vec<HostFile> = find_mps_dir(&root, &roots.mps_pipe_dir, &mut warnings)
            .into_iter()
            .collect();
        let imex_major = majors.of(&["nvidia-caps-imex-channels"]);
        let imex_channels = find_imex_channels(&dev, imex_major, &mut warnings);
        let caps = MigCaps {
            proc_nv: &proc_nv,
            dev: &dev,
            major: majors.of(&["nvidia-caps"]),
        };
        let migs = find_migs(&caps, &gpus, &mut warnings);
        let mig_config = caps.node("mig/config", &mut warnings);
        let mig_monitor = caps.node("mig/monitor", &mut warnings);
        let proc_files = proc_view(&proc_nv, vtext, info_files);

        Ok(Driver {
            version,
            gpus,
            proc_files: Some(proc_files),
            nvidiactl,
            uvm,
            uvm_tools,
            modeset,
            libraries,
            binaries,
            firmware,
            sockets,
            config_files,
            ipc_dirs,
            imex_channels,
            migs,
            mig_config,
            mig_monitor,
            warnings,
        })
    }
}

/// The character device majors the kernel lists in `/proc/devices`.
struct Majors(Vec<(u32, String)>);

impl Majors {
    fn read(proc_root: &Path) -> Majors {
        Majors(
            std::fs::read_to_string(proc_root.join("devices"))
                .map(|t| procfs::parse_char_majors(&t))
                .unwrap_or_default(),
        )
    }

    /// The major of the first of `names` the kernel registered.
    fn of(&self, names: &[&str]) -> Option<u32> {
        self.0
            .iter()
            .find(|(_, n)| names.contains(&n.as_str()))
            .map(|(m, _)| *m)
    }
}

/// The GPUs the driver shows under `/proc/driver/nvidia/gpus`, ordered by bus id (their
/// index), each with its node; the information files, kept for the containers' `/proc`
/// view; and a warning for each GPU the driver excludes.
fn read_gpus(
    proc_nv: &Path,
    dev: &Path,
    nv_major: u32,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Gpu>, Vec<FileWrite>, Vec<String>)> {
    let mut infos = Vec::new();
    let mut excluded = Vec::new();
    if let Ok(rd) = std::fs::read_dir(proc_nv.join("gpus")) {
        for ent in rd.flatten() {
            let p = ent.path().join("information");
            let text = std::fs::read_to_string(&p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            let info = procfs::parse_gpu_information(&text, &p.display().to_string())?;
            if info.excluded {
                excluded.push(format!("GPU {} is excluded by the driver", info.uuid));
                continue;
            }
            infos.push((info, text));
        }
    }
    infos.sort_by_key(|(g, _)| g.bus_id);
    let mut info_files = Vec::new();
    let gpus = infos
        .into_iter()
        .enumerate()
        .map(|(i, (g, text))| {
            info_files.push(FileWrite {
                path: format!("gpus/{}/information", g.bus_id),
                content: text,
            });
            Gpu {
                index: i as u32,
                minor: g.minor,
                node: char_node(
                    dev,
                    &format!("nvidia{}", g.minor),
                    Some(nv_major),
                    Some(g.minor),
                    warnings,
                ),
                uuid: g.uuid,
                bus_id: g.bus_id,
                model: g.model,
            }
        })
        .collect();
    Ok((gpus, info_files, excluded))
}

/// The driver's tools, ELF executables only (a script cannot run in an image that lacks
/// what it calls). A driver in its own tree keeps them in the `bin/` beside its library
/// dir (`/usr/local/nvidia/{lib64,bin}`), and hosts often put wrapper scripts on PATH:
/// those dirs are looked in first.
fn find_binaries(root: &OwnedFd, lib_dirs: &[String]) -> Vec<Binary> {
    let mut bin_dirs: Vec<String> = Vec::new();
    for d in lib_dirs {
        if let Some(parent) = Path::new(d).parent() {
            let b = parent.join("bin").display().to_string();
            if !bin_dirs.contains(&b) {
                bin_dirs.push(b);
            }
        }
    }
    bin_dirs.extend(BIN_DIRS.iter().map(|d| format!("/{d}")));
    let mut binaries = Vec::new();
    for (cap, names) in BINARIES {
        for name in *names {
            let found = bin_dirs.iter().find_map(|d| {
                let (p, st) = resolve_in(root, &format!("{d}/{name}")).ok()?;
                (is_type(&st, libc::S_IFREG) && is_elf_executable(&p)).then_some(p)
            });
            if let Some(host_path) = found {
                binaries.push(Binary {
                    capability: *cap,
                    name: name.to_string(),
                    host_path,
                });
            }
        }
    }
    binaries
}

/// The GSP firmware of this driver version. The kernel looks in its custom search path
/// first (a driver in its own tree points it there), then in `/lib/firmware`: so does
/// nvhook, taking the first dir that has any.
fn find_firmware(root: &OwnedFd, sys_root: &Path, version: &str) -> Vec<Firmware> {
    let mut fw_dirs = Vec::new();
    let custom = sys_root.join("module/firmware_class/parameters/path");
    if let Ok(text) = std::fs::read_to_string(&custom) {
        let p = text.trim();
        if p.starts_with('/') && p.len() > 1 {
            fw_dirs.push(format!("{}/nvidia/{version}", p.trim_end_matches('/')));
        }
    }
    fw_dirs.push(format!("/lib/firmware/nvidia/{version}"));
    for fw_dir in &fw_dirs {
        let Ok((real_dir, st)) = resolve_in(root, fw_dir) else {
            continue;
        };
        if !is_type(&st, libc::S_IFDIR) {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(&real_dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("gsp") && n.ends_with(".bin"))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        names.sort();
        return names
            .into_iter()
            .map(|n| Firmware {
                path: format!("{fw_dir}/{n}"),
                host_path: real_dir.join(&n),
            })
            .collect();
    }
    Vec::new()
}

/// The IMEX channel nodes under `/dev/nvidia-caps-imex-channels`, by channel number.
fn find_imex_channels(
    dev: &Path,
    major: Option<u32>,
    warnings: &mut Vec<String>,
) -> Vec<(u32, DeviceNode)> {
    let mut channels = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dev.join("nvidia-caps-imex-channels")) {
        for e in rd.flatten() {
            let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("channel"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let name = format!("nvidia-caps-imex-channels/channel{n}");
            if let Some(node) = char_node(dev, &name, major, None, warnings) {
                channels.push((n, node));
            }
        }
    }
    channels.sort_by_key(|(n, _)| *n);
    channels
}

/// Where MIG capabilities are: their files under `/proc/driver/nvidia/capabilities`,
/// their nodes under `/dev/nvidia-caps`.
struct MigCaps<'a> {
    proc_nv: &'a Path,
    dev: &'a Path,
    major: Option<u32>,
}

impl MigCaps<'_> {
    /// The node of the capability file `rel` names (`DeviceFileMinor:`), and its text.
    fn node(&self, rel: &str, warnings: &mut Vec<String>) -> Option<(DeviceNode, String)> {
        let text = std::fs::read_to_string(self.proc_nv.join("capabilities").join(rel)).ok()?;
        let minor: u32 = text
            .lines()
            .find_map(|l| l.strip_prefix("DeviceFileMinor:"))?
            .trim()
            .parse()
            .ok()?;
        let name = format!("nvidia-caps/nvidia-cap{minor}");
        Some((
            char_node(self.dev, &name, self.major, Some(minor), warnings)?,
            text,
        ))
    }
}

/// Each GPU's MIG instances (GPU instance, compute instance), numbered per GPU in
/// (gi, ci) order, with both capability nodes; an instance missing either is left out.
fn find_migs(caps: &MigCaps<'_>, gpus: &[Gpu], warnings: &mut Vec<String>) -> Vec<Mig> {
    let mut migs = Vec::new();
    for g in gpus {
        let mut pairs = Vec::new();
        let base = caps
            .proc_nv
            .join(format!("capabilities/gpu{}/mig", g.minor));
        for gi in numbered(&base, "gi") {
            for ci in numbered(&base.join(format!("gi{gi}")), "ci") {
                pairs.push((gi, ci));
            }
        }
        pairs.sort();
        for (i, (gi, ci)) in pairs.into_iter().enumerate() {
            let gi_rel = format!("gpu{}/mig/gi{gi}/access", g.minor);
            let ci_rel = format!("gpu{}/mig/gi{gi}/ci{ci}/access", g.minor);
            let (Some((gi_cap, gi_text)), Some((ci_cap, ci_text))) =
                (caps.node(&gi_rel, warnings), caps.node(&ci_rel, warnings))
            else {
                continue;
            };
            migs.push(Mig {
                parent_index: g.index,
                parent_minor: g.minor,
                index: i as u32,
                gi,
                ci,
                gi_cap,
                ci_cap,
                uuid: None,
                access_files: vec![
                    (format!("capabilities/{gi_rel}"), gi_text),
                    (format!("capabilities/{ci_rel}"), ci_text),
                ],
            });
        }
    }
    migs
}

/// The host's `/proc/driver/nvidia` files a container's view is made from: `version`,
/// `params` and `registry` where readable, and the GPUs' information files.
fn proc_view(proc_nv: &Path, vtext: String, info_files: Vec<FileWrite>) -> Vec<FileWrite> {
    let mut files = vec![FileWrite {
        path: "version".into(),
        content: vtext,
    }];
    for name in ["params", "registry"] {
        if let Ok(t) = std::fs::read_to_string(proc_nv.join(name)) {
            files.push(FileWrite {
                path: name.into(),
                content: t,
            });
        }
    }
    files.extend(info_files);
    files
}

/// True when the file at `p` starts like an ELF executable or shared object (the
/// driver's tools are ELF; a `#!` wrapper is not).
pub fn is_elf_executable(p: &Path) -> bool {
    elf_head(p).is_some_and(|h| crate::host::elf::is_elf_executable_header(&h))
}

/// The first 20 bytes of the file at `p` (an ELF header's identification, type and
/// machine), `None` for a shorter or unreadable one. `p` is a resolved path: no link
/// is followed, and nothing that blocks an open is waited on.
fn elf_head(p: &Path) -> Option<[u8; 20]> {
    let fd = sys::open(p, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK).ok()?;
    let mut head = [0u8; 20];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::from(fd), &mut head, 0).ok()?;
    Some(head)
}

/// The kind of library the file at `p` is by its ELF header: `Some(Some(_))` a kind this
/// host runs (native, i386), `Some(None)` another architecture's, `None` no ELF file.
fn library_arch(p: &Path) -> Option<Option<Arch>> {
    let head = elf_head(p)?;
    (head[..4] == *b"\x7fELF").then(|| crate::host::elf::arch_of_header(&head))
}

/// The driver's libraries, and the dirs (paths under the driver root) its native
/// libraries were listed in, most used first.
fn find_libraries(
    root: &OwnedFd,
    root_path: &Path,
    version: &str,
) -> Result<(Vec<Library>, Vec<String>)> {
    let mut out: Vec<Library> = Vec::new();
    let mut dirs: Vec<(String, usize)> = Vec::new();
    // Every candidate already has a driver library's name (picked from the cache or the
    // directory listing before anything was copied or resolved).
    for (path, listed) in library_candidates(root_path)? {
        let Ok((host_path, st)) = resolve_in(root, &path) else {
            continue;
        };
        if !is_type(&st, libc::S_IFREG) {
            continue;
        }
        // The file's own header has the last word: another architecture's build (an
        // x86-64 copy on an arm64 host, a cache entry that lies) is never a library. A
        // file that is no ELF at all keeps the cache's word: loading it (NVML) then
        // names what is wrong with it, where leaving it out would hide it.
        let arch = match (library_arch(&host_path), listed) {
            (Some(Some(a)), l) if l.is_none_or(|l| l == a) => a,
            (Some(_), _) => continue,
            (None, Some(l)) => l,
            (None, None) => continue,
        };
        let Some(file_name) = host_path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(capability) = classify_library(&file_name, version) else {
            continue;
        };
        // One file per name and arch: the cache lists the preferred one first.
        if out
            .iter()
            .any(|l| l.host_path == host_path || (l.file_name == file_name && l.arch == arch))
        {
            continue;
        }
        if arch == Arch::Native {
            if let Some(d) = Path::new(&path).parent().and_then(Path::to_str) {
                match dirs.iter_mut().find(|(x, _)| x == d) {
                    Some((_, n)) => *n += 1,
                    None => dirs.push((d.to_owned(), 1)),
                }
            }
        }
        out.push(Library {
            capability,
            arch,
            host_path,
            file_name,
        });
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.1));
    // Stable, readable order for plans and `info` (the cache's order is a hash order).
    out.sort_by(|a, b| {
        (a.capability, a.arch as u8, &a.file_name).cmp(&(b.capability, b.arch as u8, &b.file_name))
    });
    Ok((out, dirs.into_iter().map(|(d, _)| d).collect()))
}

/// Paths (under the driver root) of files with a driver library's name, with the kind
/// the driver root's `ld.so.cache` gives them; without a cache (a driver unpacked in
/// its own tree), from a listing of the usual library dirs, of no kind yet.
fn library_candidates(root_path: &Path) -> Result<Vec<(String, Option<Arch>)>> {
    let cache_path = root_path.join("etc/ld.so.cache");
    match std::fs::read(&cache_path) {
        Ok(bytes) => Ok(ldcache::parse_matching(&bytes, &may_be_driver_library)
            .map_err(|source| Error::Cache {
                path: cache_path.clone(),
                source,
            })?
            .into_iter()
            .map(|e| (e.path, Some(e.arch)))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut v = Vec::new();
            for d in crate::common::arch::NATIVE.driver_lib_dirs {
                let Ok(rd) = std::fs::read_dir(root_path.join(d)) else {
                    continue;
                };
                for n in rd
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                {
                    if may_be_driver_library(&n) {
                        v.push((format!("/{d}/{n}"), None));
                    }
                }
            }
            Ok(v)
        }
        Err(source) => Err(Error::Read {
            path: cache_path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_library_names_before_resolving() {
        for n in [
            "libcuda.so.1",
            "libcuda.so",
            "libcuda.so.550.54.14",
            "libnvidia-ml.so.1",
            "libGLX_nvidia.so.0",
            "libnvidia-ptxjitcompiler.so.1",
        ] {
            assert!(may_be_driver_library(n), "{n}");
        }
        for n in [
            "libc.so.6",
            "libcudart.so.12",
            "libcuda",
            "cuda.so.1",
            "libnvidia-mlx.so.1",
            "libcuda.sox",
            "libz.so.1",
        ] {
            assert!(!may_be_driver_library(n), "{n}");
        }
    }

    #[test]
    fn classify() {
        let v = "550.54.14";
        assert_eq!(
            classify_library("libcuda.so.550.54.14", v),
            Some(Capability::Compute)
        );
        assert_eq!(
            classify_library("libnvidia-ml.so.550.54.14", v),
            Some(Capability::Utility)
        );
        assert_eq!(
            classify_library("libGLX_nvidia.so.550.54.14", v),
            Some(Capability::Graphics)
        );
        assert_eq!(
            classify_library("libnvcuvid.so.550.54.14", v),
            Some(Capability::Video)
        );
        assert_eq!(classify_library("libcuda.so.1", v), None);
        assert_eq!(classify_library("libcuda.so.550.54.15", v), None);
        assert_eq!(classify_library("libfoo.so.550.54.14", v), None);
        assert_eq!(classify_library("libcuda.so550.54.14", v), None);
    }
}
