//! CDI (Container Device Interface) spec generation: the host's GPUs as
//! `nvidia.com/gpu=<index>|<uuid>|all`, with their device nodes, the driver files as
//! mounts at their host paths, and a createRuntime hook that runs nvhook's sandboxed
//! ldconfig. Engines with CDI support (Podman, containerd, CRI-O) apply the edits
//! themselves; nvhook only runs ldconfig.

use crate::host::driver::{DeviceNode, Driver};
use crate::host::ldcache::Arch;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

pub const KIND: &str = "nvidia.com/gpu";
pub const CDI_VERSION: &str = "0.5.0";
/// CDI versions whose rules `validate` knows.
const VERSIONS: &[&str] = &["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"];
const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid CDI spec: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What goes into the hook entry of the spec.
#[derive(Debug, Clone)]
pub struct Options {
    /// Absolute path of `nvhook` on the host.
    pub hook_path: String,
    /// Configuration file the hook should read, if not the default.
    pub config_path: Option<String>,
    pub driver_root: std::path::PathBuf,
}

fn node(n: &DeviceNode) -> Value {
    json!({
        "path": n.path,
        "hostPath": n.host_path.display().to_string(),
        "type": "c",
        "major": n.major,
        "minor": n.minor,
        "permissions": "rw",
    })
}

/// Host path as seen from `/` when the driver lives under another root.
fn container_path(driver_root: &Path, host: &Path) -> String {
    match host.strip_prefix(driver_root) {
        Ok(rel) if driver_root != Path::new("/") => format!("/{}", rel.display()),
        _ => host.display().to_string(),
    }
}

/// Builds the spec for every GPU and every capability the driver offers. Names follow
/// NVIDIA's `nvidia-ctk cdi generate` (index and UUID): a GPU in MIG mode is offered only
/// through its MIG devices (`<gpu>:<mig>` and their UUIDs), never whole; `all` has
/// every GPU and MIG device.
pub fn generate(driver: &Driver, opts: &Options) -> Value {
    let (mounts, folders, links) = driver_mounts(driver, opts);
    json!({
        "cdiVersion": CDI_VERSION,
        "kind": KIND,
        "devices": spec_devices(driver),
        "containerEdits": {
            // A prestart nvhook configured as well must not inject a second time.
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": common_nodes(driver),
            "mounts": mounts,
            "hooks": [{
                "hookName": "createRuntime",
                "path": opts.hook_path,
                "args": hook_args(driver, opts, &folders, &links),
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            }],
        },
    })
}

/// The spec's devices: each whole GPU by index and UUID (not those in MIG mode), each
/// MIG instance as `<gpu>:<mig>` and by UUID, and `all`.
fn spec_devices(driver: &Driver) -> Vec<Value> {
    let mut devices = Vec::new();
    let in_mig_mode = |index: u32| driver.migs.iter().any(|m| m.parent_index == index);
    for g in &driver.gpus {
        let Some(n) = &g.node else { continue };
        if in_mig_mode(g.index) {
            continue;
        }
        let edits = json!({"deviceNodes": [node(n)]});
        devices.push(json!({"name": g.index.to_string(), "containerEdits": edits.clone()}));
        devices.push(json!({"name": g.uuid, "containerEdits": edits}));
    }
    for m in &driver.migs {
        let parent = driver.gpus.iter().find(|g| g.index == m.parent_index);
        let Some(parent) = parent.and_then(|g| g.node.as_ref()) else {
            continue;
        };
        let edits = json!({"deviceNodes": [node(parent), node(&m.gi_cap), node(&m.ci_cap)]});
        let name = format!("{}:{}", m.parent_index, m.index);
        devices.push(json!({"name": name, "containerEdits": edits.clone()}));
        if let Some(u) = &m.uuid {
            devices.push(json!({"name": u, "containerEdits": edits}));
        }
    }
    let all: Vec<Value> = driver
        .gpus
        .iter()
        .filter_map(|g| g.node.as_ref())
        .chain(driver.migs.iter().flat_map(|m| [&m.gi_cap, &m.ci_cap]))
        .map(node)
        .collect();
    devices.push(json!({"name": "all", "containerEdits": {"deviceNodes": all}}));
    devices
}

/// The nodes every device needs: control, UVM, and nvidia-modeset too where the host
/// has it, as NVIDIA does (display needs it).
fn common_nodes(driver: &Driver) -> Vec<Value> {
    [
        &driver.nvidiactl,
        &driver.uvm,
        &driver.uvm_tools,
        &driver.modeset,
    ]
    .into_iter()
    .flatten()
    .map(node)
    .collect()
}

/// The driver's files as mounts at their host paths (binaries in `/usr/bin`), with the
/// library folders the spec's hook updates the loader cache for and the development
/// link CUDA programs may load by (`libcuda.so`, as the hook makes it and NVIDIA's spec
/// has a hook for).
fn driver_mounts(driver: &Driver, opts: &Options) -> (Vec<Value>, BTreeSet<String>, Vec<String>) {
    let ro = json!(["ro", "nosuid", "nodev", "bind"]);
    let mount = |host: &Path, container: &str, options: &Value| json!({"hostPath": host.display().to_string(), "containerPath": container, "options": options});
    let mut mounts = Vec::new();
    let mut folders = BTreeSet::new();
    let mut links = Vec::new();
    for l in driver.libraries.iter().filter(|l| l.arch == Arch::Native) {
        let c = container_path(&opts.driver_root, &l.host_path);
        if let Some(dir) = Path::new(&c).parent() {
            folders.insert(dir.display().to_string());
            if l.file_name.starts_with("libcuda.so.") {
                links.push(format!("{}/libcuda.so=libcuda.so.1", dir.display()));
            }
        }
        mounts.push(mount(&l.host_path, &c, &ro));
    }
    for b in &driver.binaries {
        mounts.push(mount(&b.host_path, &format!("/usr/bin/{}", b.name), &ro));
    }
    for f in &driver.firmware {
        mounts.push(mount(&f.host_path, &f.path, &ro));
    }
    for c in &driver.config_files {
        mounts.push(mount(&c.host_path, &c.path, &ro));
    }
    let ipc = json!(["nosuid", "nodev", "noexec", "bind"]);
    for d in &driver.ipc_dirs {
        mounts.push(mount(&d.host_path, &d.path, &ipc));
    }
    // Read-only, as in the hook's own plan: a socket still connects, and the container
    // cannot chmod the host's inode.
    let socket = json!(["ro", "nosuid", "nodev", "noexec", "bind"]);
    for s in &driver.sockets {
        mounts.push(mount(&s.host_path, &s.path, &socket));
    }
    (mounts, folders, links)
}

/// The arguments of the spec's createRuntime hook: nvhook's loader cache update for the
/// library folders, with the links to make.
fn hook_args(
    driver: &Driver,
    opts: &Options,
    folders: &BTreeSet<String>,
    links: &[String],
) -> Vec<String> {
    let mut args = vec!["nvhook".to_string()];
    if let Some(c) = &opts.config_path {
        args.extend(["--config".to_string(), c.clone()]);
    }
    args.extend([
        "cdi-hook".to_string(),
        "update-ldcache".to_string(),
        "--driver-version".to_string(),
        driver.version.clone(),
    ]);
    for f in folders {
        args.extend(["--folder".to_string(), f.clone()]);
    }
    for l in links {
        args.extend(["--link".to_string(), l.clone()]);
    }
    args
}

/// The fully qualified device names a spec offers (`nvidia.com/gpu=0`), in its order.
pub fn device_names(spec: &Value) -> Result<Vec<String>> {
    let kind = spec["kind"]
        .as_str()
        .ok_or_else(|| Error::Invalid("no kind".into()))?;
    let devices = spec["devices"]
        .as_array()
        .ok_or_else(|| Error::Invalid("no devices".into()))?;
    devices
        .iter()
        .map(|d| {
            d["name"]
                .as_str()
                .map(|n| format!("{kind}={n}"))
                .ok_or_else(|| Error::Invalid("a device without a name".into()))
        })
        .collect()
}

fn is_name(s: &str, extra: &[char]) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|ch| ch.is_ascii_alphanumeric() || extra.contains(&ch))
}

fn abs(v: &Value, what: &str) -> Result<()> {
    match v.as_str() {
        Some(p) if p.starts_with('/') => Ok(()),
        _ => Err(Error::Invalid(format!(
            "{what} must be an absolute path, got {v}"
        ))),
    }
}

fn check_edits(e: &Value, at: &str) -> Result<()> {
    if e.is_null() {
        return Ok(());
    }
    let obj = e
        .as_object()
        .ok_or_else(|| Error::Invalid(format!("{at}: containerEdits is not an object")))?;
    for n in obj
        .get("deviceNodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        abs(&n["path"], &format!("{at}: deviceNodes.path"))?;
        if let Some(t) = n.get("type").and_then(Value::as_str) {
            if !["b", "c", "u", "p"].contains(&t) {
                return Err(Error::Invalid(format!("{at}: device type {t:?}")));
            }
        }
    }
    for m in obj
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        abs(&m["containerPath"], &format!("{at}: mounts.containerPath"))?;
        if m["hostPath"].as_str().is_none_or(str::is_empty) {
            return Err(Error::Invalid(format!("{at}: mount without hostPath")));
        }
    }
    for h in obj
        .get("hooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = h["hookName"].as_str().unwrap_or("");
        if !HOOK_NAMES.contains(&name) {
            return Err(Error::Invalid(format!("{at}: hook name {name:?}")));
        }
        abs(&h["path"], &format!("{at}: hooks.path"))?;
    }
    for v in obj
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !v.as_str().is_some_and(|s| s.contains('=')) {
            return Err(Error::Invalid(format!(
                "{at}: env entry {v} is not KEY=VALUE"
            )));
        }
    }
    Ok(())
}

/// Checks a spec against the CDI rules: known version, `vendor/class` kind, device
/// names, unique names, absolute paths, known hook names.
pub fn validate(spec: &Value) -> Result<()> {
    let v = spec["cdiVersion"].as_str().unwrap_or("");
    if !VERSIONS.contains(&v) {
        return Err(Error::Invalid(format!("unknown cdiVersion {v:?}")));
    }
    let kind = spec["kind"].as_str().unwrap_or("");
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| Error::Invalid(format!("kind {kind:?} is not vendor/class")))?;
    if !is_name(vendor, &['.', '-']) || !is_name(class, &['_', '.', '-']) {
        return Err(Error::Invalid(format!(
            "kind {kind:?} has an invalid vendor or class"
        )));
    }
    let devices = spec["devices"]
        .as_array()
        .ok_or_else(|| Error::Invalid("no devices".into()))?;
    if devices.is_empty() {
        return Err(Error::Invalid("no devices".into()));
    }
    let mut seen = BTreeSet::new();
    for d in devices {
        let name = d["name"].as_str().unwrap_or("");
        if !is_name(name, &['_', '.', ':', '-']) {
            return Err(Error::Invalid(format!("device name {name:?}")));
        }
        if !seen.insert(name) {
            return Err(Error::Invalid(format!("device {name:?} listed twice")));
        }
        check_edits(&d["containerEdits"], &format!("device {name}"))?;
    }
    check_edits(&spec["containerEdits"], "spec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::request::Capability;
    use crate::host::driver::{Gpu, Library};
    use crate::host::procfs::BusId;

    fn driver() -> Driver {
        let n = |name: &str, ma, mi| DeviceNode {
            path: format!("/dev/{name}"),
            host_path: format!("/run/nvidia/driver/dev/{name}").into(),
            major: ma,
            minor: mi,
        };
        Driver {
            version: "550.54.14".into(),
            gpus: vec![Gpu {
                index: 0,
                minor: 1,
                uuid: "GPU-aaaa-bbbb".into(),
                bus_id: BusId::parse("0000:3b:00.0").unwrap(),
                model: "x".into(),
                node: Some(n("nvidia1", 195, 1)),
            }],
            nvidiactl: Some(n("nvidiactl", 195, 255)),
            libraries: vec![Library {
                capability: Capability::Compute,
                arch: Arch::Native,
                host_path: "/run/nvidia/driver/usr/lib64/libcuda.so.550.54.14".into(),
                file_name: "libcuda.so.550.54.14".into(),
            }],
            ..Driver::default()
        }
    }

    #[test]
    fn generated_spec_is_valid() {
        let s = generate(
            &driver(),
            &Options {
                hook_path: "/usr/local/bin/nvhook".into(),
                config_path: Some("/etc/nvhook/config.toml".into()),
                driver_root: "/run/nvidia/driver".into(),
            },
        );
        validate(&s).unwrap();
        let names: Vec<&str> = s["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["0", "GPU-aaaa-bbbb", "all"]);
        assert_eq!(
            s["devices"][0]["containerEdits"]["deviceNodes"][0]["path"],
            "/dev/nvidia1"
        );
        let m = &s["containerEdits"]["mounts"][0];
        assert_eq!(m["containerPath"], "/usr/lib64/libcuda.so.550.54.14");
        assert_eq!(
            m["hostPath"],
            "/run/nvidia/driver/usr/lib64/libcuda.so.550.54.14"
        );
        let args: Vec<&str> = s["containerEdits"]["hooks"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "nvhook",
                "--config",
                "/etc/nvhook/config.toml",
                "cdi-hook",
                "update-ldcache",
                "--driver-version",
                "550.54.14",
                "--folder",
                "/usr/lib64",
                "--link",
                "/usr/lib64/libcuda.so=libcuda.so.1"
            ]
        );
        assert_eq!(
            device_names(&s).unwrap(),
            [
                "nvidia.com/gpu=0",
                "nvidia.com/gpu=GPU-aaaa-bbbb",
                "nvidia.com/gpu=all"
            ]
        );
    }

    #[test]
    fn validation_rules() {
        let ok = json!({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {}}]});
        validate(&ok).unwrap();
        let bad = |f: &dyn Fn(&mut Value)| {
            let mut v = ok.clone();
            f(&mut v);
            validate(&v).unwrap_err()
        };
        assert!(bad(&|v| v["cdiVersion"] = "9.9".into())
            .to_string()
            .contains("cdiVersion"));
        assert!(bad(&|v| v["kind"] = "gpu".into())
            .to_string()
            .contains("vendor/class"));
        assert!(bad(&|v| v["kind"] = "nvidia.com/-gpu".into())
            .to_string()
            .contains("kind"));
        assert!(bad(&|v| v["devices"][0]["name"] = "a b".into())
            .to_string()
            .contains("device name"));
        assert!(
            bad(&|v| v["devices"] = json!([{"name": "x"}, {"name": "x"}]))
                .to_string()
                .contains("twice")
        );
        assert!(bad(&|v| v["devices"][0]["containerEdits"] =
            json!({"mounts": [{"hostPath": "/a", "containerPath": "rel"}]}))
        .to_string()
        .contains("absolute"));
        assert!(bad(
            &|v| v["containerEdits"] = json!({"hooks": [{"hookName": "later", "path": "/x"}]})
        )
        .to_string()
        .contains("hook name"));
    }
}
