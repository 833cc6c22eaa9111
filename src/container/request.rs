//! What a container asks for, read from its `process.env` with the meaning NVIDIA's
//! toolkit gives these variables, so existing images keep working.

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

pub const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
pub const DRIVER_CAPABILITIES: &str = "NVIDIA_DRIVER_CAPABILITIES";
pub const REQUIRE_CUDA: &str = "NVIDIA_REQUIRE_CUDA";
pub const CUDA_VERSION: &str = "CUDA_VERSION";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown driver capability {0:?} in NVIDIA_DRIVER_CAPABILITIES (known: compute, compat32, display, graphics, ngx, utility, video, all)")]
    UnknownCapability(String),
    #[error("bad device list in {0}: {1}")]
    MigManagement(&'static str, String),
    #[error("{0} is only allowed in a privileged container (CAP_SYS_ADMIN)")]
    Unprivileged(&'static str),
    #[error("bad IMEX channel {0:?} in NVIDIA_IMEX_CHANNELS (numbers, comma separated)")]
    Imex(String),
    #[error("more than {max} {what} asked for: refused (a host has far fewer)")]
    TooManyIds { what: &'static str, max: usize },
}

/// The most IMEX channels a list may name (the driver makes 2048 channel nodes).
pub const MAX_IMEX_CHANNELS: usize = 4096;

pub type Result<T> = std::result::Result<T, Error>;

/// A driver capability: which part of the driver a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Compute,
    Compat32,
    Display,
    Graphics,
    Ngx,
    Utility,
    Video,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Compute,
        Capability::Compat32,
        Capability::Display,
        Capability::Graphics,
        Capability::Ngx,
        Capability::Utility,
        Capability::Video,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Compute => "compute",
            Capability::Compat32 => "compat32",
            Capability::Display => "display",
            Capability::Graphics => "graphics",
            Capability::Ngx => "ngx",
            Capability::Utility => "utility",
            Capability::Video => "video",
        }
    }

    fn from_name(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which GPUs the container asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "ids")]
pub enum Devices {
    /// Driver files only, no GPU (`none`).
    None,
    All,
    /// Indices, UUIDs or PCI bus ids, as written, deduplicated, in order.
    List(Vec<String>),
}

/// A container's GPU request; `None` from [`Request::from_env`] means "leave it alone".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub devices: Devices,
    pub capabilities: BTreeSet<Capability>,
    /// Set for an image with `CUDA_VERSION` but no `NVIDIA_REQUIRE_CUDA`.
    pub legacy_cuda: bool,
    /// IMEX channel numbers, from `NVIDIA_IMEX_CHANNELS` (`all` is ignored, as NVIDIA
    /// does) or from `/dev/null` mounts at `imex/<N>` under [`DEVICE_LIST_DIR`], under the
    /// same policy as the device list.
    pub imex_channels: Vec<u32>,
    /// `NVIDIA_MIG_CONFIG_DEVICES` / `NVIDIA_MIG_MONITOR_DEVICES` (privileged only): the
    /// GPUs (`all` or a list, as in `NVIDIA_VISIBLE_DEVICES`) whose MIG configuration or
    /// monitoring the container may use; `None` when unset.
    pub mig_config: Option<Devices>,
    pub mig_monitor: Option<Devices>,
}

/// Looks a variable up as the container will see it: the last assignment wins.
pub fn getenv<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn is_legacy_cuda(env: &[String]) -> bool {
    getenv(env, CUDA_VERSION).is_some() && getenv(env, REQUIRE_CUDA).is_none()
}

/// The cheap check the shim makes: does this environment ask for the driver at all?
pub fn wants_gpus(env: &[String]) -> bool {
    match getenv(env, VISIBLE_DEVICES) {
        None => is_legacy_cuda(env),
        Some(v) => !is_void(v),
    }
}

fn is_void(v: &str) -> bool {
    v.trim().is_empty() || v.split(',').any(|d| d.trim() == "void")
}

/// Mounts under this directory name devices (Kubernetes' volume-mount strategy).
pub const DEVICE_LIST_DIR: &str = "/var/run/nvidia-container-devices";
/// The only mount source that makes a mount under [`DEVICE_LIST_DIR`] a device request:
/// any other (an emptyDir, a host path) is something a pod can mount by itself.
pub const DEVICE_LIST_SOURCE: &str = "/dev/null";

/// Cleans a path lexically, as Go's `filepath.Clean` does (NVIDIA compares cleaned
/// paths): repeated and trailing slashes, `.` and `..` go; `..` never climbs above `/`.
pub fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let body = out.join("/");
    match (abs, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// One entry of the spec's `mounts`, as far as a device request reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecMount {
    pub source: String,
    pub destination: String,
}
/// Annotations under this prefix name CDI devices (`nvidia.com/gpu=<id>`).
pub const CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// Where a device list may come from, with the meaning of NVIDIA's policy keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `accept-nvidia-visible-devices-envvar-when-unprivileged`: when false, the variable
    /// of a container without `CAP_SYS_ADMIN` is not trusted (and ignored).
    pub accept_envvar_when_unprivileged: bool,
    /// `accept-nvidia-visible-devices-as-volume-mounts`: device ids from mounts under
    /// [`DEVICE_LIST_DIR`], taking precedence over the variable.
    pub accept_volume_mounts: bool,
    /// `accept-cdi-annotations`: device ids from `cdi.k8s.io/*` annotations naming
    /// `nvidia.com/gpu=<id>`.
    pub accept_cdi_annotations: bool,
    /// What `all` expands to (`supported-driver-capabilities`).
    pub supported: BTreeSet<Capability>,
    /// `swarm-resource`: variables (Docker Swarm's generic resources, e.g.
    /// `DOCKER_RESOURCE_GPU`) read instead of `NVIDIA_VISIBLE_DEVICES` when present.
    pub swarm_resources: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            accept_envvar_when_unprivileged: true,
            accept_volume_mounts: false,
            accept_cdi_annotations: false,
            supported: Capability::ALL.into_iter().collect(),
            swarm_resources: Vec::new(),
        }
    }
}

/// The parts of a container's config that can carry a GPU request.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub env: Vec<String>,
    pub mounts: Vec<SpecMount>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `CAP_SYS_ADMIN` in the process's bounding set.
    pub privileged: bool,
}

impl Source {
    pub fn from_env(env: &[String]) -> Source {
        Source {
            env: env.to_vec(),
            privileged: true,
            ..Default::default()
        }
    }

    /// Reads a config.json value leniently (the shim's view).
    pub fn from_config(v: &serde_json::Value) -> Source {
        let strings = |p: &str| -> Vec<String> {
            v.pointer(p)
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Source {
            env: strings("/process/env"),
            mounts: v
                .get("mounts")
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| {
                            Some(SpecMount {
                                source: m.get("source")?.as_str()?.to_owned(),
                                destination: m.get("destination")?.as_str()?.to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            annotations: v
                .get("annotations")
                .and_then(serde_json::Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            privileged: strings("/process/capabilities/bounding")
                .iter()
                .any(|c| c == "CAP_SYS_ADMIN"),
        }
    }

    /// What the `/dev/null` mounts under [`DEVICE_LIST_DIR`] name, relative to it
    /// (`1`, `GPU-...`, `imex/3`), both paths cleaned first, each once, in spec order.
    fn volume_mount_requests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.mounts {
            if clean_path(&m.source) != DEVICE_LIST_SOURCE {
                continue;
            }
            let dest = clean_path(&m.destination);
            let Some(rel) = dest
                .strip_prefix(DEVICE_LIST_DIR)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            if !rel.is_empty() && !out.iter().any(|o| o == rel) {
                out.push(rel.to_owned());
            }
        }
        out
    }

    /// Device ids: plain names, never the `imex` and `cdi` request subdirectories.
    fn volume_mount_ids(&self) -> Vec<String> {
        self.volume_mount_requests()
            .into_iter()
            .filter(|id| !id.contains('/') && id != "imex" && id != "cdi")
            .collect()
    }

    fn volume_mount_imex(&self) -> Vec<String> {
        self.volume_mount_requests()
            .iter()
            .filter_map(|r| r.strip_prefix("imex/"))
            .filter(|c| !c.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    /// Whether this container's own variables may name devices under `policy`.
    fn env_trusted(&self, policy: &Policy) -> bool {
        self.privileged || policy.accept_envvar_when_unprivileged
    }

    /// The IMEX channels asked for: from volume mounts when accepted and present, else
    /// from `NVIDIA_IMEX_CHANNELS` when the container's variables are trusted.
    fn imex_channels(&self, policy: &Policy) -> Result<Vec<u32>> {
        let mut from_mounts = Vec::new();
        if policy.accept_volume_mounts {
            from_mounts = self.volume_mount_imex();
        }
        let list = if !from_mounts.is_empty() {
            from_mounts
        } else if self.env_trusted(policy) {
            getenv(&self.env, "NVIDIA_IMEX_CHANNELS")
                .unwrap_or("")
                .split(',')
                .map(|c| c.trim().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        if list.len() > MAX_IMEX_CHANNELS {
            return Err(Error::TooManyIds {
                what: "IMEX channels",
                max: MAX_IMEX_CHANNELS,
            });
        }
        let mut channels = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in list {
            if c.is_empty() || c == "all" || c == "none" {
                continue;
            }
            let n: u32 = c.parse().map_err(|_| Error::Imex(c.clone()))?;
            if seen.insert(n) {
                channels.push(n);
            }
        }
        Ok(channels)
    }

    fn cdi_annotation_ids(&self) -> Vec<String> {
        self.annotations
            .iter()
            .filter(|(k, _)| k.starts_with(CDI_ANNOTATION_PREFIX))
            .flat_map(|(_, v)| v.split(','))
            .filter_map(|d| {
                // nvhook's own CDI kind, and the device plugin's (its cdi-annotations
                // strategy names `k8s.device-plugin.nvidia.com/gpu=<id>`)
                let d = d.trim();
                d.strip_prefix("nvidia.com/gpu=")
                    .or_else(|| d.strip_prefix("k8s.device-plugin.nvidia.com/gpu="))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The device list this container asks for under `policy`: `None` means no request.
    fn devices(&self, policy: &Policy) -> Result<Option<(Devices, bool)>> {
        let legacy_cuda = is_legacy_cuda(&self.env);
        if policy.accept_volume_mounts {
            let ids = self.volume_mount_ids();
            if !ids.is_empty() {
                return Ok(Some((parse_devices(&ids.join(","))?, legacy_cuda)));
            }
        }
        if policy.accept_cdi_annotations {
            let ids = self.cdi_annotation_ids();
            if !ids.is_empty() {
                return Ok(Some((parse_devices(&ids.join(","))?, legacy_cuda)));
            }
        }
        if !self.env_trusted(policy) {
            return Ok(None);
        }
        let swarm = policy
            .swarm_resources
            .iter()
            .find_map(|k| getenv(&self.env, k));
        Ok(match swarm.or_else(|| getenv(&self.env, VISIBLE_DEVICES)) {
            None if legacy_cuda => Some((Devices::All, true)),
            None => None,
            Some(v) if is_void(v) => None,
            Some(v) => Some((parse_devices(v)?, legacy_cuda)),
        })
    }

    /// The cheap check the shim makes under `policy`.
    pub fn wants_gpus(&self, policy: &Policy) -> bool {
        match self.devices(policy) {
            Ok(d) => d.is_some(),
            // A malformed list still goes to the hook, which refuses it with a message.
            Err(_) => true,
        }
    }
}

impl Request {
    /// The request of a plain environment, under the default policy.
    pub fn from_env(env: &[String]) -> Result<Option<Request>> {
        Request::from_source(&Source::from_env(env), &Policy::default())
    }

    pub fn from_source(src: &Source, policy: &Policy) -> Result<Option<Request>> {
        let Some((devices, legacy_cuda)) = src.devices(policy)? else {
            return Ok(None);
        };
        let env = &src.env;
        let capabilities = match getenv(env, DRIVER_CAPABILITIES) {
            None if legacy_cuda => policy.supported.clone(),
            None => default_caps(),
            Some(v) if v.trim().is_empty() => default_caps(),
            Some(v) => parse_capabilities_with(v, &policy.supported)?,
        };
        let imex_channels = src.imex_channels(policy)?;
        let mig = |var: &'static str| -> Result<Option<Devices>> {
            let Some(v) = getenv(env, var).filter(|v| !is_void(v)) else {
                return Ok(None);
            };
            match parse_devices(v) {
                Ok(Devices::None) => Ok(None),
                Ok(_) if !src.privileged => Err(Error::Unprivileged(var)),
                Ok(d) => Ok(Some(d)),
                Err(e) => Err(Error::MigManagement(var, e.to_string())),
            }
        };
        Ok(Some(Request {
            devices,
            capabilities,
            legacy_cuda,
            imex_channels,
            mig_config: mig("NVIDIA_MIG_CONFIG_DEVICES")?,
            mig_monitor: mig("NVIDIA_MIG_MONITOR_DEVICES")?,
        }))
    }
}

fn default_caps() -> BTreeSet<Capability> {
    [Capability::Utility, Capability::Compute]
        .into_iter()
        .collect()
}

/// The most ids a device list may hold. A host has at most a few dozen GPUs and MIG
/// devices; the bound keeps a hostile list (an image or pod spec is megabytes) from
/// costing root CPU on every start attempt.
pub const MAX_DEVICE_IDS: usize = 1024;

/// Splits a device list, duplicates dropped (first kept), in linear time.
fn parse_devices(v: &str) -> Result<Devices> {
    let mut ids: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, d) in v
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .enumerate()
    {
        if n >= MAX_DEVICE_IDS {
            return Err(Error::TooManyIds {
                what: "device ids",
                max: MAX_DEVICE_IDS,
            });
        }
        match d {
            "all" => return Ok(Devices::All),
            "none" => continue,
            _ => {
                if seen.insert(d) {
                    ids.push(d.to_string())
                }
            }
        }
    }
    Ok(if ids.is_empty() {
        Devices::None
    } else {
        Devices::List(ids)
    })
}

/// `MIG-<uuid>` (case-insensitive prefix; any text, never split inside a character).
pub fn is_mig_uuid(d: &str) -> bool {
    has_prefix(d, "MIG-")
}

/// `GPU-<uuid>`, as [`is_mig_uuid`].
pub fn is_gpu_uuid(d: &str) -> bool {
    has_prefix(d, "GPU-")
}

fn has_prefix(d: &str, prefix: &str) -> bool {
    d.len() > prefix.len()
        && d.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// `GPU:MIG` such as `0:1` (a PCI bus id also has colons but is not all digits).
pub fn is_mig_index(d: &str) -> bool {
    let mut parts = d.split(':');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
}

/// Parses a capability list; `all` expands to every capability, and the implied ones
/// (video → compute, display → graphics) are added.
pub fn parse_capabilities(v: &str) -> Result<BTreeSet<Capability>> {
    parse_capabilities_with(v, &Capability::ALL.into_iter().collect())
}

/// As [`parse_capabilities`], with `all` meaning `supported`.
pub fn parse_capabilities_with(
    v: &str,
    supported: &BTreeSet<Capability>,
) -> Result<BTreeSet<Capability>> {
    let mut caps = BTreeSet::new();
    for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if c == "all" {
            caps.extend(supported.iter().copied());
            continue;
        }
        caps.insert(Capability::from_name(c).ok_or_else(|| Error::UnknownCapability(c.into()))?);
    }
    if caps.contains(&Capability::Video) {
        caps.insert(Capability::Compute);
    }
    if caps.contains(&Capability::Display) {
        caps.insert(Capability::Graphics);
    }
    if caps.is_empty() {
        return Ok(default_caps());
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn req(v: &[&str]) -> Option<Request> {
        Request::from_env(&env(v)).unwrap()
    }

    /// A hostile list (150,000 ids, 830 KB, as fits in a Kubernetes object) is refused
    /// at the bound, before any quadratic work; a list at the bound keeps its order
    /// with duplicates dropped (a hash set, not a scan of what was kept).
    #[test]
    fn long_device_and_imex_lists_are_bounded() {
        let huge: Vec<String> = (0..150_000).map(|i| format!("GPU-{i:08}")).collect();
        let v = format!("NVIDIA_VISIBLE_DEVICES={}", huge.join(","));
        let e = Request::from_env(&env(&[&v])).unwrap_err();
        assert_eq!(
            e,
            Error::TooManyIds {
                what: "device ids",
                max: MAX_DEVICE_IDS
            }
        );
        assert!(e.to_string().contains("more than 1024 device ids"), "{e}");
        // duplicates count toward the bound too: they are what a hostile list repeats
        let dup = format!("NVIDIA_VISIBLE_DEVICES={}", vec!["0"; 2000].join(","));
        assert!(Request::from_env(&env(&[&dup])).is_err());
        let mut ok: Vec<String> = (0..MAX_DEVICE_IDS / 2).map(|i| i.to_string()).collect();
        ok.extend((0..MAX_DEVICE_IDS / 2).rev().map(|i| i.to_string()));
        let v = format!("NVIDIA_VISIBLE_DEVICES={}", ok.join(","));
        let r = Request::from_env(&env(&[&v])).unwrap().unwrap();
        let want: Vec<String> = (0..MAX_DEVICE_IDS / 2).map(|i| i.to_string()).collect();
        assert_eq!(r.devices, Devices::List(want));

        let chans: Vec<String> = (0..150_000).map(|i| i.to_string()).collect();
        let v = format!("NVIDIA_IMEX_CHANNELS={}", chans.join(","));
        let e = Request::from_env(&env(&["NVIDIA_VISIBLE_DEVICES=0", &v])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooManyIds {
                    what: "IMEX channels",
                    ..
                }
            ),
            "{e}"
        );
        let v = "NVIDIA_IMEX_CHANNELS=3,1,3,2,1";
        let r = Request::from_env(&env(&["NVIDIA_VISIBLE_DEVICES=0", v]))
            .unwrap()
            .unwrap();
        assert_eq!(r.imex_channels, vec![3, 1, 2]);
    }

    #[test]
    fn visible_devices_forms() {
        assert_eq!(req(&["PATH=/bin"]), None);
        assert_eq!(req(&["NVIDIA_VISIBLE_DEVICES="]), None);
        assert_eq!(req(&["NVIDIA_VISIBLE_DEVICES=void"]), None);
        assert_eq!(req(&["NVIDIA_VISIBLE_DEVICES=0,void"]), None);
        assert_eq!(
            req(&["NVIDIA_VISIBLE_DEVICES=none"]).unwrap().devices,
            Devices::None
        );
        assert_eq!(
            req(&["NVIDIA_VISIBLE_DEVICES=all"]).unwrap().devices,
            Devices::All
        );
        assert_eq!(
            req(&["NVIDIA_VISIBLE_DEVICES= 1, GPU-abc ,1,0000:3b:00.0"])
                .unwrap()
                .devices,
            Devices::List(vec!["1".into(), "GPU-abc".into(), "0000:3b:00.0".into()])
        );
        // last assignment wins, as in the container
        assert_eq!(
            req(&["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=0"])
                .unwrap()
                .devices,
            Devices::List(vec!["0".into()])
        );
    }

    #[test]
    fn mig_forms_and_management() {
        let r = req(&["NVIDIA_VISIBLE_DEVICES=0:1,MIG-abc"]).unwrap();
        assert_eq!(
            r.devices,
            Devices::List(vec!["0:1".into(), "MIG-abc".into()])
        );
        assert!(is_mig_index("0:1") && !is_mig_index("0000:3b:00.0"));
        let privileged = Source::from_env(&env(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_MIG_CONFIG_DEVICES=all",
        ]));
        assert_eq!(
            Request::from_source(&privileged, &Policy::default())
                .unwrap()
                .unwrap()
                .mig_config,
            Some(Devices::All)
        );
        let unpriv = Source {
            privileged: false,
            ..privileged.clone()
        };
        assert_eq!(
            Request::from_source(&unpriv, &Policy::default()).unwrap_err(),
            Error::Unprivileged("NVIDIA_MIG_CONFIG_DEVICES")
        );
        // `none` asks for nothing, privileged or not
        let none = Source {
            env: env(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=none"]),
            privileged: false,
            ..Default::default()
        };
        let r = Request::from_source(&none, &Policy::default())
            .unwrap()
            .unwrap();
        assert_eq!(r.mig_config, None);
        // a device list, as NVIDIA takes it
        let list = Source::from_env(&env(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_MIG_MONITOR_DEVICES=0,GPU-abc",
            "NVIDIA_MIG_CONFIG_DEVICES=none",
        ]));
        let r = Request::from_source(&list, &Policy::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            r.mig_monitor,
            Some(Devices::List(vec!["0".into(), "GPU-abc".into()]))
        );
        assert_eq!(r.mig_config, None);
    }

    #[test]
    fn capabilities() {
        let r = req(&["NVIDIA_VISIBLE_DEVICES=0"]).unwrap();
        assert_eq!(r.capabilities, [Compute, Utility].into());
        let r = req(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES="]).unwrap();
        assert_eq!(r.capabilities, [Compute, Utility].into());
        let r = req(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=video",
        ])
        .unwrap();
        assert_eq!(r.capabilities, [Compute, Video].into());
        let r = req(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=display",
        ])
        .unwrap();
        assert_eq!(r.capabilities, [Display, Graphics].into());
        let r = req(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"]).unwrap();
        assert_eq!(r.capabilities.len(), Capability::ALL.len());
        let e = Request::from_env(&env(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=compute,gaming",
        ]))
        .unwrap_err();
        assert_eq!(e, Error::UnknownCapability("gaming".into()));
        assert!(e.to_string().contains("gaming"));
    }

    #[test]
    fn legacy_cuda_image() {
        let r = req(&["CUDA_VERSION=9.0"]).unwrap();
        assert_eq!(r.devices, Devices::All);
        assert!(r.legacy_cuda);
        assert_eq!(r.capabilities.len(), Capability::ALL.len());
        assert_eq!(
            req(&["CUDA_VERSION=9.0", "NVIDIA_REQUIRE_CUDA=cuda>=9.0"]),
            None
        );
        assert!(wants_gpus(&env(&["CUDA_VERSION=9.0"])));
        assert!(!wants_gpus(&env(&[
            "CUDA_VERSION=9.0",
            "NVIDIA_REQUIRE_CUDA=cuda>=9"
        ])));
        assert!(!wants_gpus(&env(&[
            "CUDA_VERSION=9.0",
            "NVIDIA_VISIBLE_DEVICES=void"
        ])));
    }

    #[test]
    fn kubernetes_device_lists_and_policy() {
        let mounts = |ids: &[&str]| {
            ids.iter()
                .map(|i| SpecMount {
                    source: "/dev/null".into(),
                    destination: format!("{DEVICE_LIST_DIR}/{i}"),
                })
                .collect::<Vec<_>>()
        };
        let src = Source {
            env: env(&["NVIDIA_VISIBLE_DEVICES=void"]),
            mounts: mounts(&["1", "GPU-x"]),
            ..Default::default()
        };
        // volume mounts only count when accepted, and then win over the variable
        assert_eq!(
            Request::from_source(&src, &Policy::default()).unwrap(),
            None
        );
        let vm = Policy {
            accept_volume_mounts: true,
            ..Policy::default()
        };
        let r = Request::from_source(&src, &vm).unwrap().unwrap();
        assert_eq!(r.devices, Devices::List(vec!["1".into(), "GPU-x".into()]));
        assert!(src.wants_gpus(&vm) && !src.wants_gpus(&Policy::default()));
        // an unprivileged container's variable is not trusted when told so
        let unpriv = Source {
            env: env(&["NVIDIA_VISIBLE_DEVICES=all"]),
            ..Default::default()
        };
        let strict = Policy {
            accept_envvar_when_unprivileged: false,
            ..Policy::default()
        };
        assert_eq!(Request::from_source(&unpriv, &strict).unwrap(), None);
        assert!(Request::from_source(&unpriv, &Policy::default())
            .unwrap()
            .is_some());
        let privileged = Source {
            privileged: true,
            ..unpriv.clone()
        };
        assert!(Request::from_source(&privileged, &strict)
            .unwrap()
            .is_some());
        // CDI annotations
        let ann = Source {
            annotations: [(
                "cdi.k8s.io/nvidia-device-plugin_abc".to_string(),
                "nvidia.com/gpu=0,nvidia.com/gpu=GPU-y,other.com/x=1,k8s.device-plugin.nvidia.com/gpu=GPU-z".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let p = Policy {
            accept_cdi_annotations: true,
            ..Policy::default()
        };
        assert_eq!(
            Request::from_source(&ann, &p).unwrap().unwrap().devices,
            Devices::List(vec!["0".into(), "GPU-y".into(), "GPU-z".into()])
        );
        assert_eq!(
            Request::from_source(&ann, &Policy::default()).unwrap(),
            None
        );
        // swarm-resource variables stand in for NVIDIA_VISIBLE_DEVICES
        let sw = Policy {
            swarm_resources: vec!["DOCKER_RESOURCE_GPU".into()],
            ..Policy::default()
        };
        let s = Source::from_env(&env(&[
            "DOCKER_RESOURCE_GPU=GPU-a,GPU-b",
            "NVIDIA_VISIBLE_DEVICES=void",
        ]));
        assert_eq!(
            Request::from_source(&s, &sw).unwrap().unwrap().devices,
            Devices::List(vec!["GPU-a".into(), "GPU-b".into()])
        );
        assert_eq!(Request::from_source(&s, &Policy::default()).unwrap(), None);
        // supported-driver-capabilities bounds `all`
        let s = Policy {
            supported: [Capability::Utility, Capability::Compute].into(),
            ..Policy::default()
        };
        let r = Request::from_source(
            &Source::from_env(&env(&[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=all",
            ])),
            &s,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.capabilities, [Compute, Utility].into());
        // the shim's reading of config.json
        let v = serde_json::json!({"process": {"env": ["A=1"], "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
            "mounts": [{"destination": "/var/run/nvidia-container-devices/0", "source": "/dev/null"}], "annotations": {"a": "b"}});
        let s = Source::from_config(&v);
        assert!(s.privileged);
        assert_eq!(s.volume_mount_ids(), ["0"]);
        assert_eq!(s.annotations["a"], "b");
    }

    #[test]
    fn clean_path_is_lexical() {
        for (p, want) in [
            ("/dev/null", "/dev/null"),
            ("/dev//null/", "/dev/null"),
            ("/dev/./null", "/dev/null"),
            ("/tmp/../dev/null", "/dev/null"),
            ("/../../dev/null", "/dev/null"),
            ("dev/null", "dev/null"),
            ("../x", "../x"),
            ("", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean_path(p), want, "{p}");
        }
    }

    #[test]
    fn volume_mounts_count_only_from_dev_null() {
        let m = |source: &str, destination: &str| SpecMount {
            source: source.into(),
            destination: destination.into(),
        };
        let vm = Policy {
            accept_volume_mounts: true,
            accept_envvar_when_unprivileged: false,
            ..Policy::default()
        };
        let src = |mounts: Vec<SpecMount>| Source {
            env: env(&["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=0,1"]),
            mounts,
            ..Default::default()
        };
        // an emptyDir (or any directory) at .../all: no request at all
        let s = src(vec![m(
            "/var/lib/kubelet/pods/x/volumes/empty",
            &format!("{DEVICE_LIST_DIR}/all"),
        )]);
        assert_eq!(Request::from_source(&s, &vm).unwrap(), None);
        assert!(!s.wants_gpus(&vm));
        // sources that only look like /dev/null
        for bad in [
            "dev/null",
            "/dev/null2",
            "/dev/nul",
            "/tmp/dev/null",
            "/dev/null/x",
        ] {
            let s = src(vec![m(bad, &format!("{DEVICE_LIST_DIR}/1"))]);
            assert_eq!(Request::from_source(&s, &vm).unwrap(), None, "{bad}");
        }
        // cleaned paths: /dev/./null at .../x/../1 is GPU 1
        let s = src(vec![
            m("/dev/./null", &format!("{DEVICE_LIST_DIR}/x/../1")),
            m("/dev/null", &format!("{DEVICE_LIST_DIR}//1/")),
            m("/dev/null", &format!("{DEVICE_LIST_DIR}-evil/0")),
            m(
                "/dev/null",
                &format!("{DEVICE_LIST_DIR}/../nvidia-container-devices-x/0"),
            ),
        ]);
        let r = Request::from_source(&s, &vm).unwrap().unwrap();
        assert_eq!(r.devices, Devices::List(vec!["1".into()]));
        // the unprivileged container's NVIDIA_IMEX_CHANNELS is ignored like its device list
        assert!(r.imex_channels.is_empty(), "{:?}", r.imex_channels);
        // the volume-mount form of IMEX channels
        let s = src(vec![
            m("/dev/null", &format!("{DEVICE_LIST_DIR}/0")),
            m("/dev/null", &format!("{DEVICE_LIST_DIR}/imex/3")),
            m("/tmp", &format!("{DEVICE_LIST_DIR}/imex/4")),
            m("/dev/null", &format!("{DEVICE_LIST_DIR}/imex")),
        ]);
        let r = Request::from_source(&s, &vm).unwrap().unwrap();
        assert_eq!(r.devices, Devices::List(vec!["0".into()]));
        assert_eq!(r.imex_channels, [3]);
        // a privileged container's variable still counts
        let s = Source {
            privileged: true,
            ..src(vec![])
        };
        let r = Request::from_source(&s, &vm).unwrap().unwrap();
        assert_eq!(r.imex_channels, [0, 1]);
    }

    #[test]
    fn wants_gpus_matches_from_env() {
        for e in [
            &["NVIDIA_VISIBLE_DEVICES=0"][..],
            &["NVIDIA_VISIBLE_DEVICES=none"],
            &["NVIDIA_VISIBLE_DEVICES=all"],
            &["NVIDIA_VISIBLE_DEVICES="],
            &["NVIDIA_VISIBLE_DEVICES=void"],
            &["X=1"],
        ] {
            let e = env(e);
            assert_eq!(
                wants_gpus(&e),
                Request::from_env(&e).unwrap().is_some(),
                "{e:?}"
            );
        }
    }
}
