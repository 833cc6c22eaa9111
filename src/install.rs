//! `nvhook install` / `uninstall`: set an engine up to use nvhook by editing its
//! configuration. Every edit keeps the rest of the file, is idempotent, is computed
//! first as a [`Change`] (so `--dry-run` prints a diff and writes nothing), and is
//! written atomically with a backup of the previous file.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Containerd,
    Crio,
    Podman,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Engine, String> {
        match s {
            "docker" => Ok(Engine::Docker),
            "containerd" => Ok(Engine::Containerd),
            "crio" | "cri-o" => Ok(Engine::Crio),
            "podman" => Ok(Engine::Podman),
            _ => Err(format!(
                "unknown engine {s:?} (docker, containerd, crio, podman)"
            )),
        }
    }
}

/// Where things are; every path can be changed so tests run on temp dirs.
#[derive(Debug, Clone)]
pub struct Paths {
    pub runtime_path: PathBuf,
    pub hook_path: PathBuf,
    pub docker_config: PathBuf,
    pub containerd_config: PathBuf,
    pub containerd_dropin_dir: PathBuf,
    pub crio_dropin_dir: PathBuf,
    pub hooks_dir: PathBuf,
    /// nvhook configuration the hooks.d entry passes to the hook (`None`: its default).
    pub nvhook_config: Option<PathBuf>,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            runtime_path: "/usr/local/bin/nvhook-runtime".into(),
            hook_path: "/usr/local/bin/nvhook".into(),
            docker_config: "/etc/docker/daemon.json".into(),
            containerd_config: "/etc/containerd/config.toml".into(),
            containerd_dropin_dir: "/etc/containerd/conf.d".into(),
            crio_dropin_dir: "/etc/crio/crio.conf.d".into(),
            hooks_dir: "/usr/share/containers/oci/hooks.d".into(),
            nvhook_config: None,
        }
    }
}

/// One file's before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Change {
    pub fn is_noop(&self) -> bool {
        self.old == self.new
    }
}

/// Name of the runtime / drop-in / hook nvhook registers.
pub const RUNTIME_NAME: &str = "nvidia";
const DROPIN: &str = "99-nvhook.toml";
const HOOK_JSON: &str = "oci-nvhook.json";
const IMPORTS_MARK: &str = "# added by nvhook";

fn read_opt(p: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: p.into(),
            source,
        }),
    }
}

/// A TOML basic string (JSON's string escapes are valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The changes that install nvhook for `engine`.
pub fn install(engine: Engine, p: &Paths) -> Result<Vec<Change>> {
    let rt = p.runtime_path.display().to_string();
    let changes = match engine {
        Engine::Docker => vec![docker(p, Some(&rt))?],
        Engine::Containerd => {
            let dropin = p.containerd_dropin_dir.join(DROPIN);
            let text = format!(
                "# nvhook: the \"{RUNTIME_NAME}\" runtime for containerd's CRI plugin (RuntimeClass \"{RUNTIME_NAME}\").\n\
                 version = 2\n\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{RUNTIME_NAME}]\n\
                 \x20 runtime_type = \"io.containerd.runc.v2\"\n\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{RUNTIME_NAME}.options]\n\
                 \x20 BinaryName = {}\n",
                toml_str(&rt)
            );
            vec![
                Change {
                    path: dropin.clone(),
                    old: read_opt(&dropin)?,
                    new: Some(text),
                },
                containerd_imports(p, true)?,
            ]
        }
        Engine::Crio => {
            let dropin = p.crio_dropin_dir.join(DROPIN);
            let text = format!(
                "# nvhook: the \"{RUNTIME_NAME}\" runtime for CRI-O (RuntimeClass \"{RUNTIME_NAME}\").\n\
                 [crio.runtime.runtimes.{RUNTIME_NAME}]\n\
                 runtime_path = {}\n\
                 runtime_type = \"oci\"\n",
                toml_str(&rt)
            );
            vec![Change {
                path: dropin.clone(),
                old: read_opt(&dropin)?,
                new: Some(text),
            }]
        }
        Engine::Podman => {
            let path = p.hooks_dir.join(HOOK_JSON);
            vec![Change {
                path: path.clone(),
                old: read_opt(&path)?,
                new: Some(hooks_json(&p.hook_path, p.nvhook_config.as_deref())),
            }]
        }
    };
    Ok(changes.into_iter().filter(|c| !c.is_noop()).collect())
}

/// The changes that undo [`install`].
pub fn uninstall(engine: Engine, p: &Paths) -> Result<Vec<Change>> {
    let changes = match engine {
        Engine::Docker => vec![docker(p, None)?],
        Engine::Containerd => {
            let dropin = p.containerd_dropin_dir.join(DROPIN);
            vec![
                Change {
                    path: dropin.clone(),
                    old: read_opt(&dropin)?,
                    new: None,
                },
                containerd_imports(p, false)?,
            ]
        }
        Engine::Crio => {
            let dropin = p.crio_dropin_dir.join(DROPIN);
            vec![Change {
                path: dropin.clone(),
                old: read_opt(&dropin)?,
                new: None,
            }]
        }
        Engine::Podman => {
            let path = p.hooks_dir.join(HOOK_JSON);
            vec![Change {
                path: path.clone(),
                old: read_opt(&path)?,
                new: None,
            }]
        }
    };
    Ok(changes.into_iter().filter(|c| !c.is_noop()).collect())
}

/// The oci-hooks JSON (schema 1.0.0) for Podman and CRI-O: runs for every container and
/// the hook itself decides (a container without a GPU request costs a parse).
pub fn hooks_json(hook: &Path, config: Option<&Path>) -> String {
    let mut args = vec!["nvhook".to_string()];
    if let Some(c) = config {
        args.extend(["--config".to_string(), c.display().to_string()]);
    }
    args.push("prestart".into());
    let v = json!({
        "version": "1.0.0",
        "hook": {
            "path": hook.display().to_string(),
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "when": {"always": true},
        "stages": ["prestart"],
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&v).expect("serializable")
    )
}

/// daemon.json with `runtimes.nvidia` set (`Some`) or removed (`None`).
fn docker(p: &Paths, runtime: Option<&str>) -> Result<Change> {
    let path = &p.docker_config;
    let old = read_opt(path)?;
    let mut v: Value = match &old {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t).map_err(|e| Error::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?,
        _ => Value::Object(Map::new()),
    };
    let obj = v.as_object_mut().ok_or_else(|| Error::Parse {
        path: path.clone(),
        message: "not a JSON object".into(),
    })?;
    match runtime {
        Some(rt) => {
            let runtimes = obj.entry("runtimes").or_insert_with(|| json!({}));
            let r = runtimes.as_object_mut().ok_or_else(|| Error::Parse {
                path: path.clone(),
                message: "runtimes is not an object".into(),
            })?;
            if r.get(RUNTIME_NAME).and_then(|x| x["path"].as_str()) == Some(rt) {
                return Ok(Change {
                    path: path.clone(),
                    old: old.clone(),
                    new: old,
                });
            }
            r.insert(RUNTIME_NAME.into(), json!({"path": rt}));
        }
        None => {
            let Some(r) = obj.get_mut("runtimes").and_then(Value::as_object_mut) else {
                return Ok(Change {
                    path: path.clone(),
                    old: old.clone(),
                    new: old,
                });
            };
            if r.shift_remove(RUNTIME_NAME).is_none() {
                return Ok(Change {
                    path: path.clone(),
                    old: old.clone(),
                    new: old,
                });
            }
            if r.is_empty() {
                obj.shift_remove("runtimes");
            }
            if obj.is_empty() {
                // Nothing but nvhook's entry was there: an absent daemon.json is the same.
                return Ok(Change {
                    path: path.clone(),
                    old,
                    new: None,
                });
            }
        }
    }
    let new = format!(
        "{}\n",
        serde_json::to_string_pretty(&v).expect("serializable")
    );
    Ok(Change {
        path: path.clone(),
        old,
        new: Some(new),
    })
}

/// containerd's main config with (or without) nvhook's `imports` line for the drop-in dir.
fn containerd_imports(p: &Paths, add: bool) -> Result<Change> {
    let path = &p.containerd_config;
    let old = read_opt(path)?;
    let text = old.clone().unwrap_or_default();
    let glob = format!("{}/*.toml", p.containerd_dropin_dir.display());
    let ours = format!("imports = [{}]  {IMPORTS_MARK}", toml_str(&glob));
    let has_ours = text.lines().any(|l| l.trim_end() == ours);
    let new = if add {
        if has_ours {
            text.clone()
        } else if text.lines().any(|l| l.trim_start().starts_with("imports")) {
            // An imports list of the user's own: add our glob to it, on that line only.
            let mut out = String::new();
            for l in text.split_inclusive('\n') {
                if l.trim_start().starts_with("imports") && !l.contains(&glob) {
                    let (k, v) = l.split_once('=').ok_or_else(|| Error::Parse {
                        path: path.clone(),
                        message: "imports line without '='".into(),
                    })?;
                    let arr: toml::Value =
                        toml::from_str::<toml::Table>(&format!("x = {}", v.trim()))
                            .ok()
                            .and_then(|t| t.get("x").cloned())
                            .ok_or_else(|| Error::Parse {
                                path: path.clone(),
                                message:
                                    "imports is not a one-line array; add the drop-in dir by hand"
                                        .into(),
                            })?;
                    let mut items: Vec<String> = arr
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str().map(toml_str)).collect())
                        .unwrap_or_default();
                    items.push(toml_str(&glob));
                    out.push_str(&format!("{}= [{}]\n", k, items.join(", ")));
                } else {
                    out.push_str(l);
                }
            }
            out
        } else {
            // Top-level keys must come before the first table: put it after `version`.
            let mut out = String::new();
            let mut done = false;
            for l in text.split_inclusive('\n') {
                out.push_str(l);
                if !done && l.trim_start().starts_with("version") {
                    if !l.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(&ours);
                    out.push('\n');
                    done = true;
                }
            }
            if !done {
                out = format!("{ours}\n{text}");
            }
            out
        }
    } else {
        text.split_inclusive('\n')
            .filter(|l| l.trim_end() != ours)
            .collect()
    };
    let new = if new.is_empty() && old.is_none() {
        None
    } else {
        Some(new)
    };
    Ok(Change {
        path: path.clone(),
        old,
        new,
    })
}

/// A minimal unified-style diff of one change, for `--dry-run`.
pub fn diff(c: &Change) -> String {
    let old: Vec<&str> = c
        .old
        .as_deref()
        .map(|s| s.lines().collect())
        .unwrap_or_default();
    let new: Vec<&str> = c
        .new
        .as_deref()
        .map(|s| s.lines().collect())
        .unwrap_or_default();
    // Longest common subsequence, fine for configuration files.
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!(
        "--- {}{}\n+++ {}{}\n",
        c.path.display(),
        if c.old.is_none() { " (absent)" } else { "" },
        c.path.display(),
        if c.new.is_none() { " (removed)" } else { "" }
    );
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push_str(&format!(" {}\n", old[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", new[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", old[i]));
            i += 1;
        }
    }
    out
}

/// Writes the changes: each atomically (temporary file + rename), the previous version
/// kept as `<file>.nvhook.bak`; a `None` removes the file (after the same backup).
pub fn apply(changes: &[Change]) -> Result<()> {
    for c in changes {
        let werr = |source| Error::Write {
            path: c.path.clone(),
            source,
        };
        if let Some(old) = &c.old {
            let bak = PathBuf::from(format!("{}.nvhook.bak", c.path.display()));
            std::fs::write(&bak, old).map_err(werr)?;
        }
        match &c.new {
            None => match std::fs::remove_file(&c.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(werr(e)),
                _ => {}
            },
            Some(text) => {
                if let Some(dir) = c.path.parent() {
                    std::fs::create_dir_all(dir).map_err(werr)?;
                }
                let tmp = PathBuf::from(format!("{}.nvhook-tmp", c.path.display()));
                let mode = std::fs::metadata(&c.path).map(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode()
                });
                let res = (|| -> std::io::Result<()> {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(text.as_bytes())?;
                    if let Ok(mode) = mode {
                        use std::os::unix::fs::PermissionsExt;
                        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                    }
                    f.sync_all()?;
                    std::fs::rename(&tmp, &c.path)
                })();
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(werr(e));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(d: &Path) -> Paths {
        Paths {
            runtime_path: "/opt/nvhook/nvhook-runtime".into(),
            hook_path: "/opt/nvhook/nvhook".into(),
            docker_config: d.join("docker/daemon.json"),
            containerd_config: d.join("containerd/config.toml"),
            containerd_dropin_dir: d.join("containerd/conf.d"),
            crio_dropin_dir: d.join("crio/crio.conf.d"),
            hooks_dir: d.join("hooks.d"),
            nvhook_config: None,
        }
    }

    fn roundtrip(engine: Engine, p: &Paths, files: &[&Path]) {
        let before: Vec<Option<String>> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).ok())
            .collect();
        let ch = install(engine, p).unwrap();
        assert!(!ch.is_empty());
        apply(&ch).unwrap();
        assert!(
            install(engine, p).unwrap().is_empty(),
            "{engine:?}: install is idempotent"
        );
        apply(&uninstall(engine, p).unwrap()).unwrap();
        assert!(
            uninstall(engine, p).unwrap().is_empty(),
            "{engine:?}: uninstall is idempotent"
        );
        let after: Vec<Option<String>> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).ok())
            .collect();
        for ((f, b), a) in files.iter().zip(&before).zip(&after) {
            match (b, a) {
                (Some(b), Some(a)) if f.extension().is_some_and(|e| e == "json") => {
                    let b: Value = serde_json::from_str(b).unwrap();
                    let a: Value = serde_json::from_str(a).unwrap();
                    assert_eq!(a, b, "{engine:?}: {} restored", f.display());
                }
                _ => assert_eq!(a, b, "{engine:?}: {} restored", f.display()),
            }
        }
    }

    #[test]
    fn docker_keeps_settings() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("docker")).unwrap();
        std::fs::write(
            &p.docker_config,
            r#"{"log-driver":"json-file","runtimes":{"other":{"path":"/x"}},"zz":1}"#,
        )
        .unwrap();
        let ch = install(Engine::Docker, &p).unwrap();
        let dry = diff(&ch[0]);
        assert!(
            dry.contains("+      \"path\": \"/opt/nvhook/nvhook-runtime\""),
            "{dry}"
        );
        assert!(
            std::fs::read_to_string(&p.docker_config)
                .unwrap()
                .starts_with(r#"{"log-driver""#),
            "dry run writes nothing"
        );
        apply(&ch).unwrap();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p.docker_config).unwrap()).unwrap();
        assert_eq!(
            v["runtimes"]["nvidia"]["path"],
            "/opt/nvhook/nvhook-runtime"
        );
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        assert_eq!(v["zz"], 1);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["log-driver", "runtimes", "zz"]);
        assert!(PathBuf::from(format!("{}.nvhook.bak", p.docker_config.display())).exists());
        apply(&uninstall(Engine::Docker, &p).unwrap()).unwrap();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p.docker_config).unwrap()).unwrap();
        assert!(v["runtimes"].get("nvidia").is_none());
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        let e = Paths {
            docker_config: d.path().join("bad.json"),
            ..p.clone()
        };
        std::fs::write(&e.docker_config, "{oops").unwrap();
        assert!(install(Engine::Docker, &e)
            .unwrap_err()
            .to_string()
            .contains("bad.json"));
    }

    #[test]
    fn every_engine_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("containerd")).unwrap();
        std::fs::write(&p.containerd_config, "version = 2\nroot = \"/var/lib/containerd\"\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n").unwrap();
        roundtrip(Engine::Docker, &p, &[&p.docker_config]);
        roundtrip(
            Engine::Containerd,
            &p,
            &[&p.containerd_config, &p.containerd_dropin_dir.join(DROPIN)],
        );
        roundtrip(Engine::Crio, &p, &[&p.crio_dropin_dir.join(DROPIN)]);
        roundtrip(Engine::Podman, &p, &[&p.hooks_dir.join(HOOK_JSON)]);
    }

    #[test]
    fn containerd_config_and_imports() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("containerd")).unwrap();
        std::fs::write(&p.containerd_config, "version = 2\n[plugins]\n").unwrap();
        apply(&install(Engine::Containerd, &p).unwrap()).unwrap();
        let main = std::fs::read_to_string(&p.containerd_config).unwrap();
        let t: toml::Table = toml::from_str(&main).unwrap();
        assert_eq!(
            t["imports"][0].as_str().unwrap(),
            format!("{}/*.toml", p.containerd_dropin_dir.display())
        );
        let drop: toml::Table =
            toml::from_str(&std::fs::read_to_string(p.containerd_dropin_dir.join(DROPIN)).unwrap())
                .unwrap();
        let rt = &drop["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nvidia"];
        assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(
            rt["options"]["BinaryName"].as_str(),
            Some("/opt/nvhook/nvhook-runtime")
        );
        // a user's own imports list is extended, not replaced
        std::fs::write(
            &p.containerd_config,
            "version = 2\nimports = [\"/etc/mine/*.toml\"]\n",
        )
        .unwrap();
        apply(&install(Engine::Containerd, &p).unwrap()).unwrap();
        let t: toml::Table =
            toml::from_str(&std::fs::read_to_string(&p.containerd_config).unwrap()).unwrap();
        assert_eq!(t["imports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn crio_and_hooks_content() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        apply(&install(Engine::Crio, &p).unwrap()).unwrap();
        let t: toml::Table =
            toml::from_str(&std::fs::read_to_string(p.crio_dropin_dir.join(DROPIN)).unwrap())
                .unwrap();
        assert_eq!(
            t["crio"]["runtime"]["runtimes"]["nvidia"]["runtime_path"].as_str(),
            Some("/opt/nvhook/nvhook-runtime")
        );
        let h: Value =
            serde_json::from_str(&hooks_json(Path::new("/opt/nvhook/nvhook"), None)).unwrap();
        assert_eq!(h["version"], "1.0.0");
        assert_eq!(h["when"]["always"], true);
        assert_eq!(h["stages"][0], "prestart");
        assert!(h["hook"]["env"].as_array().is_some_and(|e| !e.is_empty()));
    }
}
