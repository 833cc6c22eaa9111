//! Facts only NVML knows (the driver's CUDA version, each GPU's compute capability and
//! brand), asked from the host's `libnvidia-ml.so.1` in a short-lived child: it drops to
//! `nobody` with `no_new_privs` before loading the library, and is killed after a
//! timeout, so a slow or hung NVML cannot wedge the hook. Only used when a requirement
//! needs one of these facts.

use crate::container::require::{brand_name, GpuFacts};
use crate::host::procfs::BusId;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::io::{self, Read};
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

/// Runs in the child, unprivileged: loads NVML and asks it.
fn ask(lib: &CString, bus_ids: &[CString], want_migs: bool) -> std::result::Result<Answer, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols are cast to NVML's
    // documented signatures.
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
        let mut a = Answer::default();
        if let Some(f) = sym(c"nvmlSystemGetCudaDriverVersion_v2")
            .or_else(|| sym(c"nvmlSystemGetCudaDriverVersion"))
        {
            let f: CudaVersionFn = std::mem::transmute(f);
            let mut v = 0;
            if f(&mut v) == 0 && v > 0 {
                a.cuda = Some(format!("{}.{}", v / 1000, (v % 1000) / 10));
            }
        }
        let handle: Option<HandleFn> =
            sym(c"nvmlDeviceGetHandleByPciBusId_v2").map(|p| std::mem::transmute(p));
        let cap: Option<CapFn> =
            sym(c"nvmlDeviceGetCudaComputeCapability").map(|p| std::mem::transmute(p));
        let brand: Option<BrandFn> = sym(c"nvmlDeviceGetBrand").map(|p| std::mem::transmute(p));
        let mig_fns = (
            sym(c"nvmlDeviceGetMaxMigDeviceCount")
                .map(|p| std::mem::transmute::<*mut c_void, CountFn>(p)),
            sym(c"nvmlDeviceGetMigDeviceHandleByIndex")
                .map(|p| std::mem::transmute::<*mut c_void, MigHandleFn>(p)),
            sym(c"nvmlDeviceGetUUID").map(|p| std::mem::transmute::<*mut c_void, UuidFn>(p)),
            sym(c"nvmlDeviceGetGpuInstanceId").map(|p| std::mem::transmute::<*mut c_void, IdFn>(p)),
            sym(c"nvmlDeviceGetComputeInstanceId")
                .map(|p| std::mem::transmute::<*mut c_void, IdFn>(p)),
        );
        for (gpu_i, b) in bus_ids.iter().enumerate() {
            let mut g = GpuFacts {
                bus_id: b.to_string_lossy().into_owned(),
                ..Default::default()
            };
            let mut dev: *mut c_void = std::ptr::null_mut();
            if let Some(hf) = handle {
                if hf(b.as_ptr(), &mut dev) == 0 {
                    if let Some(cf) = cap {
                        let (mut ma, mut mi) = (0, 0);
                        if cf(dev, &mut ma, &mut mi) == 0 {
                            g.arch = Some(format!("{ma}.{mi}"));
                        }
                    }
                    if let Some(bf) = brand {
                        let mut n = 0;
                        if bf(dev, &mut n) == 0 {
                            g.brand = Some(brand_name(n).to_string());
                        }
                    }
                    if let (
                        true,
                        (Some(count), Some(handle), Some(uuid), Some(gi_id), Some(ci_id)),
                    ) = (want_migs, mig_fns)
                    {
                        let mut n = 0;
                        if count(dev, &mut n) == 0 {
                            for i in 0..n.min(64) {
                                let mut m: *mut c_void = std::ptr::null_mut();
                                if handle(dev, i, &mut m) != 0 {
                                    continue;
                                }
                                let mut buf = [0 as c_char; 96];
                                let (mut gi, mut ci) = (0, 0);
                                if uuid(m, buf.as_mut_ptr(), buf.len() as c_uint) == 0
                                    && gi_id(m, &mut gi) == 0
                                    && ci_id(m, &mut ci) == 0
                                {
                                    let u = std::ffi::CStr::from_ptr(buf.as_ptr())
                                        .to_string_lossy()
                                        .into_owned();
                                    a.migs.push((gpu_i, gi, ci, u));
                                }
                            }
                        }
                    }
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
            let out = match ask(&clib, &ids, want_migs) {
                Ok(a) => serde_json::to_string(&a).unwrap_or_default(),
                Err(e) => format!("!{e}"),
            };
            let mut f = std::fs::File::from(wr);
            let _ = io::Write::write_all(&mut f, out.as_bytes());
            // SAFETY: leave the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
    };
    drop(wr);
    drop(lib_fd);
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut f = std::fs::File::from(rd);
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut p = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let r = poll(&mut p, ms).unwrap_or(1);
        if r == 0 || left.is_zero() {
            timed_out = true;
            break;
        }
        let mut chunk = [0u8; 4096];
        match f.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) if buf.len() < 1 << 20 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
        }
    }
    if timed_out {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    }
    let st = nix::sys::wait::waitpid(child, None);
    if timed_out {
        return Err(Error::Timeout {
            lib: label,
            timeout,
        });
    }
    let text = String::from_utf8_lossy(&buf);
    if let Some(msg) = text.strip_prefix('!') {
        return Err(Error::Failed {
            lib: label,
            message: msg.to_string(),
        });
    }
    if !matches!(st, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
        return Err(Error::Failed {
            lib: label,
            message: format!("child ended: {st:?}"),
        });
    }
    let mut a: Answer = serde_json::from_str(&text).map_err(|e| Error::Failed {
        lib: label.clone(),
        message: format!("bad answer: {e}"),
    })?;
    if a.gpus.len() != bus_ids.len() {
        return Err(Error::Failed {
            lib: label,
            message: "answer for the wrong number of GPUs".into(),
        });
    }
    for (g, b) in a.gpus.iter_mut().zip(bus_ids) {
        g.bus_id = b.to_string(); // nvhook's own spelling in messages
    }
    Ok(a)
}
