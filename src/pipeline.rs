//! Stage 5, the hook's pipeline end to end: state → spec → request → driver → plan →
//! apply, and the CDI spec's hook (the loader cache update alone). Binaries call these;
//! each phase's error says which phase failed.
//!
//! Takes: the configuration and the runtime's state. Gives: the decision (what was
//! asked, the plan) and the phases' timings, for the log. Uses every stage but
//! `engines`.

use crate::apply::{self, Timings};
use crate::common::rootfs::{self, Root};
use crate::container::config::Config;
use crate::container::image;
use crate::container::request::{self, Request};
use crate::container::state::{self, Spec, State};
use crate::host::driver::{self, Driver, Roots};
use crate::plan::{self, Plan};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the container state: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Request(#[from] request::Error),
    #[error(transparent)]
    Driver(#[from] driver::Error),
    #[error(transparent)]
    Plan(#[from] plan::Error),
    #[error("container root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] rootfs::Error),
    #[error("the container state has no pid; the hook must run at prestart or createRuntime")]
    NoPid,
    #[error(transparent)]
    Apply(#[from] apply::Error),
    #[error(transparent)]
    Require(#[from] crate::container::require::Error),
    #[error(transparent)]
    Nvml(#[from] crate::host::nvml::Error),
    #[error("requirements need NVML, but the driver has no libnvidia-ml.so")]
    NoNvml,
    #[error(transparent)]
    Config(#[from] crate::container::config::Error),
    #[error("the CDI spec was generated for driver {spec}, but the host runs driver {host}: regenerate it (nvhook cdi generate --output /var/run/cdi/nvidia.json, or enable the nvhook-cdi-refresh units)")]
    StaleSpec { spec: String, host: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads the state from `file`, or stdin when `None`.
pub fn read_state(file: Option<&Path>) -> Result<State> {
    let bytes = match file {
        Some(f) => std::fs::read(f).map_err(Error::Stdin)?,
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .lock()
                .take(16 << 20)
                .read_to_end(&mut b)
                .map_err(Error::Stdin)?;
            b
        }
    };
    Ok(State::parse(&bytes)?)
}

pub fn roots(cfg: &Config) -> Roots {
    Roots {
        driver_root: cfg.driver_root.clone(),
        dev_root: cfg.dev_root.clone(),
        proc_root: cfg.proc_root.clone(),
        mps_pipe_dir: cfg.mps_pipe_directory.clone(),
        sys_root: cfg.sys_root.clone(),
    }
}

/// Everything decided for one container.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub container: ContainerInfo,
    pub request: Option<Request>,
    /// The `NVIDIA_REQUIRE_*` constraints checked (all held, or there is no plan).
    pub requirements: Vec<crate::container::require::Requirement>,
    pub plan: Option<Plan>,
}

#[derive(Debug, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// Phase timings, logged at debug level and read by the benchmark.
#[derive(Debug, Default, Clone)]
pub struct PhaseTimes {
    pub parse: Duration,
    pub discover: Duration,
    pub plan: Duration,
    pub apply: Timings,
}

/// Runs the pipeline up to the plan. Changes nothing.
pub fn decide(cfg: &Config, state: &State, times: &mut PhaseTimes) -> Result<Decision> {
    let clock = Instant::now();
    let spec = Spec::load(&state.bundle)?;
    let request = Request::from_source(&spec.source, &cfg.policy()?)?;
    times.parse = clock.elapsed();
    let container = ContainerInfo {
        id: state.id.clone(),
        pid: state.pid(),
        bundle: state.bundle.clone(),
        rootfs: spec.rootfs.clone(),
    };
    let Some(req) = request else {
        return Ok(Decision {
            container,
            request: None,
            requirements: Vec::new(),
            plan: None,
        });
    };
    let clock = Instant::now();
    let mut driver = Driver::discover(&roots(cfg))?;
    // NVML is asked at most once: for MIG UUIDs here, and its answer reused below for
    // requirements that need its facts.
    let mut nvml = None;
    if let crate::container::request::Devices::List(ids) = &req.devices {
        if ids
            .iter()
            .any(|i| crate::container::request::is_mig_uuid(i))
        {
            nvml = Some(fill_mig_uuids(&mut driver)?);
        }
    }
    for w in &driver.warnings {
        crate::common::log::warn(w);
    }
    times.discover = clock.elapsed();
    let clock = Instant::now();
    let root = Root::open(&spec.rootfs).map_err(|source| Error::Root {
        path: spec.rootfs.clone(),
        source,
    })?;
    let facts = image::inspect(&root)?;
    let plan = plan::build(
        &req,
        &driver,
        &facts,
        &plan::Options {
            ldconfig: cfg.ldconfig_for_plan()?.to_owned(),
            no_cgroups: cfg.no_cgroups || rootless_without_device_cgroup(),
            ld_cache_by_nvhook: cfg.ld_cache == crate::container::config::LdCache::Nvhook,
        },
    )?;
    let requirements = if cfg.disable_require {
        Vec::new()
    } else {
        crate::container::require::from_env(&spec.source.env, req.legacy_cuda)?
    };
    if !requirements.is_empty() {
        check_requirements(&requirements, &driver, &plan, nvml)?;
    }
    times.plan = clock.elapsed();
    Ok(Decision {
        container,
        request: Some(req),
        requirements,
        plan: Some(plan),
    })
}

/// In a user namespace other than the host's (rootless Podman) no device cgroup can be
/// changed: v1's `devices.allow` and v2's device programs need host root's
/// capabilities, and the engine set none up. Access is then the host's device node
/// permissions, which the bind mounts keep.
fn rootless_without_device_cgroup() -> bool {
    if crate::common::userns::is_initial() {
        return false;
    }
    crate::common::log::debug(
        "device cgroup left alone: nvhook runs in a user namespace (rootless), where no device cgroup can be changed",
    );
    true
}

/// How long NVML may take before it is killed.
const NVML_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the driver's own `libnvidia-ml.so` (see `nvml`).
pub fn ask_nvml(
    driver: &Driver,
    bus: &[crate::host::procfs::BusId],
    migs: bool,
) -> Result<crate::host::nvml::Answer> {
    let lib = driver
        .libraries
        .iter()
        .find(|l| {
            l.arch == crate::host::ldcache::Arch::Native
                && l.file_name.starts_with("libnvidia-ml.so.")
        })
        .ok_or(Error::NoNvml)?;
    Ok(crate::host::nvml::query(
        &lib.host_path,
        bus,
        migs,
        NVML_TIMEOUT,
    )?)
}

/// MIG UUIDs are known only to NVML: ask it (unprivileged child, timeout) about every
/// GPU and attach them to the MIG devices found in `/proc`. Returns NVML's answer.
pub fn fill_mig_uuids(driver: &mut Driver) -> Result<crate::host::nvml::Answer> {
    let bus: Vec<crate::host::procfs::BusId> = driver.gpus.iter().map(|g| g.bus_id).collect();
    let a = ask_nvml(driver, &bus, true)?;
    for (gpu_i, gi, ci, uuid) in &a.migs {
        let (gpu_i, gi, ci) = (*gpu_i, *gi, *ci);
        let Some(parent) = driver.gpus.get(gpu_i).map(|g| g.index) else {
            continue;
        };
        if let Some(m) = driver
            .migs
            .iter_mut()
            .find(|m| m.parent_index == parent && m.gi == gi && m.ci == ci)
        {
            m.uuid = Some(uuid.clone());
        }
    }
    Ok(a)
}

/// Checks the requirements against the driver and the chosen GPUs; NVML is asked only
/// when a requirement needs a fact that `/proc` does not give, and only if `nvml` does not
/// already hold its answer (about every GPU).
fn check_requirements(
    reqs: &[crate::container::require::Requirement],
    driver: &Driver,
    plan: &Plan,
    nvml: Option<crate::host::nvml::Answer>,
) -> Result<()> {
    use crate::container::require::{Facts, GpuFacts};
    let mut facts = Facts {
        driver: driver.version.clone(),
        ..Default::default()
    };
    let bus: Vec<crate::host::procfs::BusId> = plan.gpus.iter().map(|g| g.bus_id).collect();
    if crate::container::require::needs_nvml(reqs) {
        let a = match nvml {
            Some(a) => a,
            None => ask_nvml(driver, &bus, false)?,
        };
        facts.cuda = a.cuda;
        // The chosen GPUs' facts, in plan order.
        facts.gpus = bus
            .iter()
            .map(|b| {
                let id = b.to_string();
                a.gpus
                    .iter()
                    .find(|g| g.bus_id == id)
                    .cloned()
                    .unwrap_or(GpuFacts {
                        bus_id: id,
                        ..Default::default()
                    })
            })
            .collect();
    } else {
        facts.gpus = bus
            .iter()
            .map(|b| GpuFacts {
                bus_id: b.to_string(),
                ..Default::default()
            })
            .collect();
    }
    crate::container::require::check(reqs, &facts)?;
    Ok(())
}

/// The whole hook: decide, then apply inside the container.
pub fn run_hook(
    cfg: &Config,
    state: &State,
    faults: apply::Faults,
) -> Result<(Decision, PhaseTimes)> {
    let mut times = PhaseTimes::default();
    let d = decide(cfg, state, &mut times)?;
    if let Some(plan) = &d.plan {
        let pid = state.pid().ok_or(Error::NoPid)?;
        times.apply = apply::apply(plan, &target(cfg, pid, &d.container.rootfs, faults))?;
    }
    Ok((d, times))
}

/// Where and how to apply a plan to the container of `pid`, as the configuration says.
fn target<'a>(
    cfg: &'a Config,
    pid: i32,
    rootfs: &'a Path,
    faults: apply::Faults,
) -> apply::Target<'a> {
    apply::Target {
        pid,
        rootfs,
        ldconfig_timeout: cfg.ldconfig_deadline(),
        ldconfig_userns: cfg.ldconfig_user_namespace,
        device_program_cache: cfg.device_program_cache(),
        systemd_socket: cfg.systemd_socket(),
        faults,
    }
}

/// A CDI spec is true only for the driver it was generated for: a start on another
/// version fails, saying what to do, instead of mounting files that are gone.
pub fn check_driver_version(cfg: &Config, want: &str) -> Result<()> {
    let (have, _) = driver::loaded_version(&cfg.proc_root)?;
    if have != want {
        return Err(Error::StaleSpec {
            spec: want.into(),
            host: have,
        });
    }
    Ok(())
}

/// A CDI hook's `--link PATH=NAME`: an absolute path and a plain file name beside it
/// (the spec is the operator's, but a link may only point within its directory).
pub fn parse_link(arg: &str) -> std::result::Result<plan::Symlink, String> {
    let bad = || format!("--link {arg:?}: want an absolute path, '=', and a file name");
    let (path, target) = arg.split_once('=').ok_or_else(bad)?;
    let plain = |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains('/');
    let name = path.rsplit('/').next().unwrap_or("");
    if !path.starts_with('/') || !plain(name) || !plain(target) || path.contains("/../") {
        return Err(bad());
    }
    Ok(plan::Symlink {
        path: path.to_string(),
        target: target.to_string(),
    })
}

/// The CDI hook: only the loader cache over `folders` (the engine has applied the
/// spec's mounts and device nodes already): nvhook's own update over the driver's
/// library names there, or the sandboxed ldconfig (`ld-cache = "ldconfig"`).
pub fn run_ldconfig_only(
    cfg: &Config,
    state: &State,
    folders: &[String],
    links: &[plan::Symlink],
) -> Result<()> {
    let spec = Spec::load(&state.bundle)?;
    let pid = state.pid().ok_or(Error::NoPid)?;
    // Rootless, the engine bound the spec's device nodes from the host's /dev whatever
    // their permissions (Podman turns them into bind mounts, runc binds `linux.devices`
    // from the same path): a node the user cannot open is said here, not by CUDA later.
    let nodes = spec.devices.iter().map(|d| d.as_path()).chain(
        spec.source
            .mounts
            .iter()
            .filter(|m| m.destination.starts_with("/dev/nvidia"))
            .map(|m| Path::new(&m.source)),
    );
    let nodes: Vec<&Path> = nodes
        .filter(|d| d.to_str().is_some_and(|p| p.starts_with("/dev/nvidia")))
        .collect();
    for d in &nodes {
        apply::check_rootless_device(d)?;
    }
    let target = target(cfg, pid, &spec.rootfs, apply::Faults::default());
    // The engine allowed the spec's nodes in the container's own cgroup; systemd is told
    // of them too (runc leaves out of a scope's DeviceAllow= a node that has no
    // /sys/dev/char entry, as NVIDIA's), and a parent's program must not deny them.
    if !nodes.is_empty() && !cfg.no_cgroups && !rootless_without_device_cgroup() {
        let cg = apply::cgroup::for_pid(pid).map_err(apply::Error::from)?;
        apply::keep_and_check(&cg, &nodes, &target)?;
    }
    let mut l = plan::Ldconfig::new(cfg.ldconfig_for_plan()?, folders.to_vec());
    if cfg.ld_cache == crate::container::config::LdCache::Nvhook {
        // the engine mounted the files: nvhook reads their names where it put them
        l.by_nvhook = true;
        l.driver_named = folders.to_vec();
    }
    let plan = Plan {
        symlinks: links.to_vec(),
        ldconfig: Some(l),
        ..Plan::default()
    };
    apply::apply(&plan, &target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdi_link_arguments() {
        let l = parse_link("/usr/lib/x86_64-linux-gnu/libcuda.so=libcuda.so.1").unwrap();
        assert_eq!(
            (l.path.as_str(), l.target.as_str()),
            ("/usr/lib/x86_64-linux-gnu/libcuda.so", "libcuda.so.1")
        );
        for bad in [
            "rel/libcuda.so=libcuda.so.1",
            "/usr/lib/libcuda.so=../x",
            "/usr/lib/libcuda.so=/etc/passwd",
            "/usr/lib/=x",
            "/usr/../etc/x=y",
            "/usr/lib/libcuda.so",
            "/usr/lib/libcuda.so=",
        ] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
    }
}
