//! Facts only NVML knows (the driver's CUDA version, each GPU's compute capability and
//! brand), asked from the host's `libnvidia-ml.so.1` in a short-lived child: it drops to
//! `nobody` with `no_new_privs` before loading the library, and is killed after a
//! timeout, so a slow or hung NVML cannot wedge the hook. Only used when a requirement
//! needs one of these facts.

use crate::container::require::{brand_name, GpuFacts};
use crate::host::procfs::BusId;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NVML ({lib}): {what}: {source}")]
    Io {
        lib: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("NVML ({lib}) failed: {message}")]
    Failed { lib: String, message: String },
    #[error("NVML ({lib}) did not answer within {timeout:?} and was killed")]
    Timeout { lib: String, timeout: Duration },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the child reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub cuda: Option<String>,
    pub gpus: Vec<GpuFacts>,
    /// MIG devices: (index of the GPU in the query, GPU instance, compute instance, UUID).
    pub migs: Vec<(usize, u32, u32, String)>,
}

type InitFn = unsafe extern "C" fn() -> c_int;
type CudaVersionFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type HandleFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type CapFn = unsafe extern "C" fn(*mut c_void, *mut c_int, *mut c_int) -> c_int;
type BrandFn = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_int;
type CountFn = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_int;
type MigHandleFn = unsafe extern "C" fn(*mut c_void, c_uint, *mut *mut c_void) -> c_int;
type UuidFn = unsafe extern "C" fn(*mut c_void, *mut c_char, c_uint) -> c_int;
type IdFn = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_int;

/// The NVML entry points nvhook asks, where the library has them.
struct Nvml {
    handle: Option<HandleFn>,
    cap: Option<CapFn>,
    brand: Option<BrandFn>,
    mig: Option<MigFns>,
}

/// The entry points listing a GPU's MIG devices (all or none).
#[derive(Clone, Copy)]
struct MigFns {
    count: CountFn,
    handle: MigHandleFn,
    uuid: UuidFn,
    gi_id: IdFn,
    ci_id: IdFn,
}

/// Runs in the child, unprivileged: loads NVML and asks it.
fn ask(lib: &CString, bus_ids: &[CString], want_migs: bool) -> std::result::Result<Answer, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols are cast to NVML's
    // documented signatures, and called with the arguments those take.
    unsafe {
        let h = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = libc::dlerror();
            let why = if e.is_null() {
                "no reason given".into()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            };
            return Err(format!("cannot load the library: {why}"));
        }
        let sym = |n: &std::ffi::CStr| {
            let p = libc::dlsym(h, n.as_ptr());
            (!p.is_null()).then_some(p)
        };
        let init: InitFn = std::mem::transmute(sym(c"nvmlInit_v2").ok_or("no nvmlInit_v2")?);
        let r = init();
        if r != 0 {
            return Err(format!("nvmlInit_v2 returned {r}"));
        }
        let nvml = Nvml::resolve(&sym);
        let mut a = Answer {
            cuda: cuda_version(&sym),
            ..Answer::default()
        };
        for (gpu_i, b) in bus_ids.iter().enumerate() {
            let mut g = GpuFacts {
                bus_id: b.to_string_lossy().into_owned(),
                ..Default::default()
            };
            let mut dev: *mut c_void = std::ptr::null_mut();
            if nvml.handle.is_some_and(|hf| hf(b.as_ptr(), &mut dev) == 0) {
                nvml.gpu_facts(dev, &mut g);
                if let (true, Some(m)) = (want_migs, nvml.mig) {
                    a.migs.extend(m.devices(dev, gpu_i));
                }
            }
            a.gpus.push(g);
        }
        if let Some(s) = sym(c"nvmlShutdown") {
            let s: InitFn = std::mem::transmute(s);
            s();
        }
        Ok(a)
    }
}

/// The CUDA version the driver supports (`12.4`).
///
/// # Safety
/// `sym` looks symbols up in a loaded, initialised NVML.
unsafe fn cuda_version(sym: &dyn Fn(&std::ffi::CStr) -> Option<*mut c_void>) -> Option<String> {
    let f = sym(c"nvmlSystemGetCudaDriverVersion_v2")
        .or_else(|| sym(c"nvmlSystemGetCudaDriverVersion"))?;
    let f: CudaVersionFn = std::mem::transmute(f);
    let mut v = 0;
    (f(&mut v) == 0 && v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

impl Nvml {
    /// # Safety
    /// `sym` looks symbols up in a loaded NVML; each is cast to its documented type.
    unsafe fn resolve(sym: &dyn Fn(&std::ffi::CStr) -> Option<*mut c_void>) -> Nvml {
        let mig = (|| {
            Some(MigFns {
                count: std::mem::transmute::<*mut c_void, CountFn>(sym(
                    c"nvmlDeviceGetMaxMigDeviceCount",
                )?),
                handle: std::mem::transmute::<*mut c_void, MigHandleFn>(sym(
                    c"nvmlDeviceGetMigDeviceHandleByIndex",
                )?),
                uuid: std::mem::transmute::<*mut c_void, UuidFn>(sym(c"nvmlDeviceGetUUID")?),
                gi_id: std::mem::transmute::<*mut c_void, IdFn>(sym(
                    c"nvmlDeviceGetGpuInstanceId",
                )?),
                ci_id: std::mem::transmute::<*mut c_void, IdFn>(sym(
                    c"nvmlDeviceGetComputeInstanceId",
                )?),
            })
        })();
        Nvml {
            handle: sym(c"nvmlDeviceGetHandleByPciBusId_v2").map(|p| std::mem::transmute(p)),
            cap: sym(c"nvmlDeviceGetCudaComputeCapability").map(|p| std::mem::transmute(p)),
            brand: sym(c"nvmlDeviceGetBrand").map(|p| std::mem::transmute(p)),
            mig,
        }
    }

    /// The GPU's compute capability (`arch`) and brand, where NVML tells them.
    ///
    /// # Safety
    /// `dev` is a handle NVML gave.
    unsafe fn gpu_facts(&self, dev: *mut c_void, g: &mut GpuFacts) {
        if let Some(cf) = self.cap {
            let (mut ma, mut mi) = (0, 0);
            if cf(dev, &mut ma, &mut mi) == 0 {
                g.arch = Some(format!("{ma}.{mi}"));
            }
        }
        if let Some(bf) = self.brand {
            let mut n = 0;
            if bf(dev, &mut n) == 0 {
                g.brand = Some(brand_name(n).to_string());
            }
        }
    }
}

impl MigFns {
    /// The GPU's MIG devices (at most 64): (`gpu_i`, GPU instance, compute instance, UUID).
    ///
    /// # Safety
    /// `dev` is a handle NVML gave.
    unsafe fn devices(self, dev: *mut c_void, gpu_i: usize) -> Vec<(usize, u32, u32, String)> {
        let mut out = Vec::new();
        let mut n = 0;
        if (self.count)(dev, &mut n) != 0 {
            return out;
        }
        for i in 0..n.min(64) {
            let mut m: *mut c_void = std::ptr::null_mut();
            if (self.handle)(dev, i, &mut m) != 0 {
                continue;
            }
            let mut buf = [0 as c_char; 96];
            let (mut gi, mut ci) = (0, 0);
            if (self.uuid)(m, buf.as_mut_ptr(), buf.len() as c_uint) == 0
                && (self.gi_id)(m, &mut gi) == 0
                && (self.ci_id)(m, &mut ci) == 0
            {
                let u = std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                out.push((gpu_i, gi, ci, u));
            }
        }
        out
    }
}

/// Asks NVML at `lib` about the driver and the GPUs at `bus_ids`.
pub fn query(lib: &Path, bus_ids: &[BusId], want_migs: bool, timeout: Duration) -> Result<Answer> {
    let label = lib.display().to_string();
    let io_err = |what| {
        let label = label.clone();
        move |source| Error::Io {
            lib: label,
            what,
            source,
        }
    };
    // NVML's own format: an 8-digit domain, upper case.
    let ids: Vec<CString> = bus_ids
        .iter()
        .map(|b| {
            CString::new(format!(
                "{:08X}:{:02X}:{:02X}.{:X}",
                b.domain, b.bus, b.device, b.function
            ))
            .expect("no NUL")
        })
        .collect();
    // Opened here, as root: the driver may sit under a directory only root can read
    // (a 0700 driver root), and the unprivileged child loads it through this descriptor.
    let lib_fd =
        crate::common::sys::open(lib, libc::O_RDONLY | libc::O_NOFOLLOW).map_err(io_err("open"))?;
    let clib = CString::new(format!("/proc/self/fd/{}", lib_fd.as_raw_fd())).expect("no NUL");
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))?;
    // SAFETY: nvhook is single-threaded; the child runs plain code and leaves by _exit.
    let child = match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(io_err("fork")(e.into())),
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rd);
            answer_as_nobody(&clib, &ids, want_migs, wr)
        }
    };
    drop(wr);
    drop(lib_fd);
    let Some(out) = crate::common::sys::read_until(rd.as_fd(), Instant::now() + timeout, 1 << 20)
    else {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(Error::Timeout {
            lib: label,
            timeout,
        });
    };
    let st = nix::sys::wait::waitpid(child, None);
    let failed = |message: String| Error::Failed {
        lib: label.clone(),
        message,
    };
    let text = String::from_utf8_lossy(&out);
    if let Some(msg) = text.strip_prefix('!') {
        return Err(failed(msg.to_string()));
    }
    if !matches!(st, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
        return Err(failed(format!("child ended: {st:?}")));
    }
    let mut a: Answer =
        serde_json::from_str(&text).map_err(|e| failed(format!("bad answer: {e}")))?;
    if a.gpus.len() != bus_ids.len() {
        return Err(failed("answer for the wrong number of GPUs".into()));
    }
    for (g, b) in a.gpus.iter_mut().zip(bus_ids) {
        g.bus_id = b.to_string(); // nvhook's own spelling in messages
    }
    Ok(a)
}

/// The child: drops to `nobody` with `no_new_privs`, asks NVML, writes the answer as
/// JSON (or `!` and the error) into `out`, and exits.
fn answer_as_nobody(
    lib: &CString,
    ids: &[CString],
    want_migs: bool,
    out: std::os::fd::OwnedFd,
) -> ! {
    use nix::unistd::{Gid, Uid};
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let nobody = 65534;
    if nix::unistd::geteuid().is_root()
        && (nix::unistd::setgroups(&[]).is_err()
            || nix::unistd::setgid(Gid::from_raw(nobody)).is_err()
            || nix::unistd::setuid(Uid::from_raw(nobody)).is_err())
    {
        // SAFETY: leave the child without running the parent's exit handlers.
        unsafe { libc::_exit(3) };
    }
    let _ = nix::sys::prctl::set_no_new_privs();
    let text = match ask(lib, ids, want_migs) {
        Ok(a) => serde_json::to_string(&a).unwrap_or_default(),
        Err(e) => format!("!{e}"),
    };
    let mut f = std::fs::File::from(out);
    let _ = io::Write::write_all(&mut f, text.as_bytes());
    // SAFETY: leave the child without running the parent's exit handlers.
    unsafe { libc::_exit(0) };
}
