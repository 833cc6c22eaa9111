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
    #[error("{0} must be \"all\" (or unset); nvhook does not take device lists there")]
    MigManagement(&'static str),
    #[error("{0} is only allowed in a privileged container (CAP_SYS_ADMIN)")]
    Unprivileged(&'static str),
    #[error("bad IMEX channel {0:?} in NVIDIA_IMEX_CHANNELS (numbers, comma separated)")]
    Imex(String),
}

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
    /// `NVIDIA_IMEX_CHANNELS`: channel numbers (`all` is ignored, as NVIDIA does).
    pub imex_channels: Vec<u32>,
    /// `NVIDIA_MIG_CONFIG_DEVICES=all` / `NVIDIA_MIG_MONITOR_DEVICES=all` (privileged only).
    pub mig_config: bool,
    pub mig_monitor: bool,
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
    pub mount_destinations: Vec<String>,
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
            mount_destinations: v
                .get("mounts")
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["destination"].as_str().map(str::to_owned))
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

    fn volume_mount_ids(&self) -> Vec<String> {
        self.mount_destinations
            .iter()
            .filter_map(|d| d.strip_prefix(DEVICE_LIST_DIR)?.strip_prefix('/'))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    fn cdi_annotation_ids(&self) -> Vec<String> {
        self.annotations
            .iter()
            .filter(|(k, _)| k.starts_with(CDI_ANNOTATION_PREFIX))
            .flat_map(|(_, v)| v.split(','))
            .filter_map(|d| d.trim().strip_prefix("nvidia.com/gpu="))
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
        if !self.privileged && !policy.accept_envvar_when_unprivileged {
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
        let mut imex_channels = Vec::new();
        for c in getenv(env, "NVIDIA_IMEX_CHANNELS")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
        {
            if c.is_empty() || c == "all" || c == "none" {
                continue;
            }
            let n: u32 = c.parse().map_err(|_| Error::Imex(c.into()))?;
            if !imex_channels.contains(&n) {
                imex_channels.push(n);
            }
        }
        let mut mig = [false; 2];
        for (i, var) in ["NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"]
            .into_iter()
            .enumerate()
        {
            match getenv(env, var).map(str::trim) {
                None | Some("") | Some("none") | Some("void") => {}
                Some("all") if src.privileged => mig[i] = true,
                Some("all") => return Err(Error::Unprivileged(var)),
                Some(_) => return Err(Error::MigManagement(var)),
            }
        }
        Ok(Some(Request {
            devices,
            capabilities,
            legacy_cuda,
            imex_channels,
            mig_config: mig[0],
            mig_monitor: mig[1],
        }))
    }
}

fn default_caps() -> BTreeSet<Capability> {
    [Capability::Utility, Capability::Compute]
        .into_iter()
        .collect()
}

fn parse_devices(v: &str) -> Result<Devices> {
    let mut ids: Vec<String> = Vec::new();
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d {
            "all" => return Ok(Devices::All),
            "none" => continue,
            _ => {
                if !ids.iter().any(|x| x == d) {
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
        assert!(
            Request::from_source(&privileged, &Policy::default())
                .unwrap()
                .unwrap()
                .mig_config
        );
        let unpriv = Source {
            privileged: false,
            ..privileged.clone()
        };
        assert_eq!(
            Request::from_source(&unpriv, &Policy::default()).unwrap_err(),
            Error::Unprivileged("NVIDIA_MIG_CONFIG_DEVICES")
        );
        let list = Source::from_env(&env(&[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_MIG_MONITOR_DEVICES=0",
        ]));
        assert!(Request::from_source(&list, &Policy::default()).is_err());
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
                .map(|i| format!("{DEVICE_LIST_DIR}/{i}"))
                .collect::<Vec<_>>()
        };
        let src = Source {
            env: env(&["NVIDIA_VISIBLE_DEVICES=void"]),
            mount_destinations: mounts(&["1", "GPU-x"]),
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
                "nvidia.com/gpu=0,nvidia.com/gpu=GPU-y,other.com/x=1".to_string(),
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
            Devices::List(vec!["0".into(), "GPU-y".into()])
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
            "mounts": [{"destination": "/var/run/nvidia-container-devices/0"}], "annotations": {"a": "b"}});
        let s = Source::from_config(&v);
        assert!(s.privileged);
        assert_eq!(s.volume_mount_ids(), ["0"]);
        assert_eq!(s.annotations["a"], "b");
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
