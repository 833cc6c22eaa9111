//! The shim's one edit to config.json: add nvhook's hook entry.
//!
//! The file is edited as a JSON value with key order preserved, never through typed
//! structs, so fields a newer runtime spec adds survive. The write is atomic: a
//! temporary file in the bundle, fsync, rename, fsync of the directory.

use crate::container::config::Stage;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI config: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is a symbolic link: nvhook adds its hook only to a config.json that is a regular file (replacing the link would hide the hook from its target)")]
    Symlink(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Basenames of hooks that already give a container its GPUs: with one of these
/// present, nothing is added (Docker's `--gpus` inserts the first).
pub const GPU_HOOK_NAMES: &[&str] = &[
    "nvidia-container-runtime-hook",
    "nvidia-container-toolkit",
    "nvhook",
];

/// The hook entry the shim inserts.
#[derive(Debug, Clone)]
pub struct HookEntry {
    pub path: String,
    pub args: Vec<String>,
    /// Always explicit: a hook without `env` would inherit the runtime's environment.
    pub env: Vec<String>,
}

fn is_gpu_hook(h: &Value, our_path: &str) -> bool {
    let Some(p) = h.get("path").and_then(Value::as_str) else {
        return false;
    };
    p == our_path || GPU_HOOK_NAMES.contains(&p.rsplit('/').next().unwrap_or(p))
}

/// Adds `entry` to `hooks.<stage>` unless a GPU hook is present in any stage.
/// Returns whether the config changed.
pub fn add_hook(
    config: &mut Value,
    stage: Stage,
    entry: &HookEntry,
) -> std::result::Result<bool, String> {
    let obj = config.as_object_mut().ok_or("not a JSON object")?;
    let hooks = obj
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    if hooks.is_null() {
        *hooks = Value::Object(Map::new());
    }
    let hooks = hooks.as_object_mut().ok_or("hooks is not an object")?;
    for (_, list) in hooks.iter() {
        if let Some(a) = list.as_array() {
            if a.iter().any(|h| is_gpu_hook(h, &entry.path)) {
                return Ok(false);
            }
        }
    }
    let list = hooks
        .entry(stage.spec_key())
        .or_insert_with(|| Value::Array(Vec::new()));
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    let list = list.as_array_mut().ok_or("hooks stage is not an array")?;
    list.push(json!({ "path": entry.path, "args": entry.args, "env": entry.env }));
    Ok(true)
}

/// Reads `<bundle>/config.json`.
pub fn read(bundle: &Path) -> Result<(Value, std::fs::Metadata)> {
    let path = bundle.join("config.json");
    let p = || path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|source| Error::Read { path: p(), source })?;
    let meta = std::fs::metadata(&path).map_err(|source| Error::Read { path: p(), source })?;
    let v = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
        path: p(),
        message: e.to_string(),
    })?;
    Ok((v, meta))
}

/// Replaces `<bundle>/config.json` atomically, keeping its mode and owner.
pub fn write_atomic(bundle: &Path, value: &Value, meta: &std::fs::Metadata) -> Result<()> {
    let path = bundle.join("config.json");
    // One fixed name: a shim killed mid-write leaves at most this file, which the next
    // write replaces.
    let tmp = bundle.join(".config.json.nvhook-tmp");
    let werr = |source| Error::Write {
        path: path.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(&path)
        .map_err(werr)?
        .file_type()
        .is_symlink()
    {
        return Err(Error::Symlink(path.display().to_string()));
    }
    // Numbers are kept as written (serde_json's arbitrary_precision): `-0` and integers
    // beyond 64 bits would otherwise come back as floats, which Go's decoder rejects.
    let bytes = serde_json::to_vec(value).map_err(|e| werr(std::io::Error::other(e)))?;
    let result = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o7777)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(bundle)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HookEntry {
        HookEntry {
            path: "/usr/bin/nvhook".into(),
            args: vec!["nvhook".into(), "prestart".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
        }
    }

    #[test]
    fn adds_once_and_keeps_everything() {
        let text = r#"{"ociVersion":"1.2.0","zFuture":{"x":1},"process":{"env":["A=1"]},"aField":true,"hooks":{"poststop":[{"path":"/x"}]}}"#;
        let mut v: Value = serde_json::from_str(text).unwrap();
        assert!(add_hook(&mut v, Stage::Prestart, &entry()).unwrap());
        assert!(!add_hook(&mut v, Stage::Prestart, &entry()).unwrap());
        assert!(!add_hook(&mut v, Stage::CreateRuntime, &entry()).unwrap());
        let out = serde_json::to_string(&v).unwrap();
        // key order and unknown fields survive
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["ociVersion", "zFuture", "process", "aField", "hooks"]
        );
        assert!(out.contains(r#""zFuture":{"x":1}"#));
        assert_eq!(v["hooks"]["prestart"].as_array().unwrap().len(), 1);
        assert_eq!(v["hooks"]["prestart"][0]["env"][0], "PATH=/usr/bin:/bin");
        assert_eq!(v["hooks"]["poststop"][0]["path"], "/x");
    }

    #[test]
    fn docker_gpus_hook_means_no_second() {
        let mut v = json!({"hooks":{"prestart":[{"path":"/usr/bin/nvidia-container-runtime-hook","args":["x","prestart"]}]}});
        assert!(!add_hook(&mut v, Stage::Prestart, &entry()).unwrap());
        let mut v = json!({"hooks":null});
        assert!(add_hook(&mut v, Stage::CreateRuntime, &entry()).unwrap());
        assert_eq!(v["hooks"]["createRuntime"][0]["path"], "/usr/bin/nvhook");
        let mut v = json!({"hooks":[]});
        assert!(add_hook(&mut v, Stage::Prestart, &entry()).is_err());
    }

    #[test]
    fn numbers_survive_exactly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let nums = r#"{"a":-0,"b":123456789012345678901234567890,"c":-9223372036854775809,"d":1.50,"f":18446744073709551615}"#;
        std::fs::write(&p, nums).unwrap();
        let (mut v, meta) = read(d.path()).unwrap();
        add_hook(&mut v, Stage::Prestart, &entry()).unwrap();
        write_atomic(d.path(), &v, &meta).unwrap();
        let out = std::fs::read_to_string(&p).unwrap();
        assert!(out.starts_with(&nums[..nums.len() - 1]), "{out}");
    }

    #[test]
    fn symlinked_config_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("real.json");
        std::fs::write(&target, r#"{"process":{}}"#).unwrap();
        std::os::unix::fs::symlink("real.json", d.path().join("config.json")).unwrap();
        let (mut v, meta) = read(d.path()).unwrap();
        add_hook(&mut v, Stage::Prestart, &entry()).unwrap();
        let e = write_atomic(d.path(), &v, &meta).unwrap_err();
        assert!(matches!(e, Error::Symlink(_)), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(d.path().join("config.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            r#"{"process":{}}"#
        );
    }

    #[test]
    fn atomic_write_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, r#"{"b":1,"a":2}"#).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (mut v, meta) = read(d.path()).unwrap();
        add_hook(&mut v, Stage::Prestart, &entry()).unwrap();
        write_atomic(d.path(), &v, &meta).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(r#"{"b":1,"a":2,"hooks""#), "{text}");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
