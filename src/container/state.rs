//! The OCI state a runtime hands a hook on stdin, and the bundle's config.json.
//!
//! Both are read leniently (unknown fields allowed, `status` any string) because
//! runtimes add fields over time; only what nvhook needs is required.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed container state: {0}")]
    State(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed {path}: {message}")]
    Spec { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The container state (runtime-spec `state`), lenient.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    #[serde(default, rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub pid: Option<i64>,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl State {
    pub fn parse(bytes: &[u8]) -> Result<State> {
        let s: State = serde_json::from_slice(bytes).map_err(|e| Error::State(e.to_string()))?;
        if s.id.is_empty() {
            return Err(Error::State("empty container id".into()));
        }
        if !s.bundle.is_absolute() {
            return Err(Error::State(format!(
                "bundle path {} is not absolute",
                s.bundle.display()
            )));
        }
        if let Some(pid) = s.pid {
            if pid <= 0 || pid > i64::from(i32::MAX) {
                return Err(Error::State(format!("invalid pid {pid}")));
            }
        }
        Ok(s)
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid.map(|p| p as i32)
    }
}

/// What nvhook reads of the bundle's config.json.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `root.path` resolved against the bundle.
    pub rootfs: PathBuf,
    pub root_readonly: bool,
    /// What can carry a GPU request: `process.env` (validated: strings only, in order),
    /// mount destinations, annotations, privilege.
    pub source: crate::container::request::Source,
    /// `linux.devices[].path`: the nodes the engine creates (or, rootless, binds from
    /// the same path on the host), as a CDI spec's `deviceNodes` put them there.
    pub devices: Vec<PathBuf>,
}

impl Spec {
    pub fn load(bundle: &Path) -> Result<Spec> {
        let path = bundle.join("config.json");
        let bytes = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        Spec::parse(&bytes, bundle).map_err(|message| Error::Spec { path, message })
    }

    /// Parses config.json bytes; errors are plain messages so callers add the path.
    pub fn parse(bytes: &[u8], bundle: &Path) -> std::result::Result<Spec, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let root = obj.get("root").ok_or("no root")?;
        let root_path = root
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or("root.path missing or not a string")?;
        let rootfs = bundle.join(root_path);
        let root_readonly = root
            .get("readonly")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let process = obj.get("process");
        let env = match process.and_then(|p| p.get("env")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .ok_or("process.env holds a non-string")
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(_) => return Err("process.env is not an array".into()),
        };
        let mut source = crate::container::request::Source::from_config(&v);
        source.env = env;
        let devices = v
            .pointer("/linux/devices")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.get("path")?.as_str())
                    .filter(|p| p.starts_with('/'))
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Spec {
            rootfs,
            root_readonly,
            source,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_state() {
        let s = State::parse(
            br#"{"ociVersion":"1.2.0","id":"c1","status":"weird-new-status","pid":42,
                "bundle":"/b","annotations":{"a":"b"},"newField":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(s.id, "c1");
        assert_eq!(s.pid(), Some(42));
        assert_eq!(s.status, "weird-new-status");
        assert_eq!(s.annotations["a"], "b");
    }

    #[test]
    fn bad_states() {
        for bad in [
            &b"not json"[..],
            br#"{"id":"c"}"#,
            br#"{"id":"","bundle":"/b"}"#,
            br#"{"id":"c","bundle":"rel"}"#,
            br#"{"id":"c","bundle":"/b","pid":-1}"#,
            br#"{"id":"c","bundle":"/b","pid":99999999999}"#,
        ] {
            assert!(
                State::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn spec_fields() {
        let s = Spec::parse(
            br#"{"root":{"path":"rootfs","readonly":true},"process":{"env":["A=1","B=2"],
              "capabilities":{"bounding":["CAP_SYS_ADMIN"]}},"mounts":[{"destination":"/proc","source":"proc"}]}"#,
            Path::new("/bundle"),
        )
        .unwrap();
        assert_eq!(s.rootfs, Path::new("/bundle/rootfs"));
        assert!(s.root_readonly);
        assert_eq!(s.source.env, ["A=1", "B=2"]);
        assert_eq!(s.source.mounts[0].destination, "/proc");
        assert!(s.devices.is_empty());
        let d = Spec::parse(
            br#"{"root":{"path":"r"},"linux":{"devices":[{"path":"/dev/nvidia0","type":"c"},{"path":"rel"},{"type":"c"}]}}"#,
            Path::new("/b"),
        )
        .unwrap();
        assert_eq!(d.devices, [PathBuf::from("/dev/nvidia0")]);
        assert!(s.source.privileged, "CAP_SYS_ADMIN in the bounding set");
        let abs = Spec::parse(br#"{"root":{"path":"/abs"}}"#, Path::new("/bundle")).unwrap();
        assert_eq!(abs.rootfs, Path::new("/abs"));
        assert!(Spec::parse(br#"{"root":{}}"#, Path::new("/b")).is_err());
        assert!(Spec::parse(
            br#"{"root":{"path":"r"},"process":{"env":[1]}}"#,
            Path::new("/b")
        )
        .is_err());
    }
}
