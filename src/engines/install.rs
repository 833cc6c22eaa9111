//! `nvhook install` / `uninstall`: set an engine up to use nvhook by editing its
//! configuration. Every edit keeps the rest of the file, is idempotent, is computed
//! first as a [`Change`] (so `--dry-run` prints a diff and writes nothing), and is
//! written atomically with a backup of the previous file.

use serde_json::{json, Map, Value};
use std::os::unix::fs::OpenOptionsExt;
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
    #[error("{path}: {source}")]
    Containerd {
        path: PathBuf,
        source: crate::engines::containerd_config::Error,
    },
    #[error("{path}: a runtime named {name:?} exists already and is not nvhook's (path {found:?}); pass --force to replace it, or --runtime-name to install under another name")]
    Taken {
        path: PathBuf,
        name: String,
        found: String,
    },
    #[error("{path}: containerd's own view of the edited file ({what}) does not have the {name:?} runtime: {why}")]
    NotInEffect {
        path: PathBuf,
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("runtime name {0:?}: letters, digits, '-' and '_' only, and not runc or crun")]
    BadName(String),
    #[error("{path}: the default runtime is {current:?}; pass --force to make {name:?} the default instead (uninstall then leaves Docker's own default, runc)")]
    DefaultTaken {
        path: PathBuf,
        name: String,
        current: String,
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

/// What to install, beyond where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The runtime's name in the engine (and the RuntimeClass handler): `nvidia`.
    pub runtime_name: String,
    /// Make it the engine's default runtime (Docker, containerd).
    pub set_default: bool,
    /// Replace a runtime of that name that is not nvhook's, or a default runtime that
    /// is not runc.
    pub force: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runtime_name: RUNTIME_NAME.into(),
            set_default: false,
            force: false,
        }
    }
}

/// What an operator must do after the files are written for `engine` to use them.
pub fn restart_hint(engine: Engine) -> &'static str {
    match engine {
        Engine::Docker => "restart dockerd to use it: systemctl restart docker",
        Engine::Containerd => "restart containerd to use it: systemctl restart containerd",
        Engine::Crio => "restart CRI-O to use it: systemctl restart crio",
        Engine::Podman => {
            "nothing to restart: Podman reads hooks.d at every container start (CRI-O in hook mode re-reads its hooks dirs when they change)"
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
/// First line of a containerd config that nvhook created: uninstall removes the file.
const CREATED_MARK: &str = "# nvhook created this file";

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
pub fn install(engine: Engine, p: &Paths, o: &Options) -> Result<Vec<Change>> {
    let n = o.runtime_name.as_str();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || ["runc", "crun"].contains(&n)
    {
        return Err(Error::BadName(n.into()));
    }
    let rt = p.runtime_path.display().to_string();
    let changes = match engine {
        Engine::Docker => vec![docker(p, o, Some(&rt))?],
        Engine::Containerd => containerd(p, Some(o))?,
        Engine::Crio => {
            let dropin = p.crio_dropin_dir.join(DROPIN);
            let text = format!(
                "# nvhook: the \"{name}\" runtime for CRI-O (RuntimeClass \"{name}\").\n\
                 [crio.runtime.runtimes.{name}]\n\
                 runtime_path = {}\n\
                 runtime_type = \"oci\"\n",
                toml_str(&rt),
                name = o.runtime_name
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

/// Checks an edited containerd config with containerd itself (`containerd --config F
/// config dump`, on a copy beside it so relative `imports` resolve the same): the
/// runtime must be there with the shim as `BinaryName`. An imported file that defines
/// the CRI plugin replaces the main file's table in containerd 1.x, and only containerd
/// knows every such rule. `Ok(false)` when containerd is not installed (nothing to ask).
pub fn verify_containerd(change: &Change, p: &Paths, o: &Options) -> Result<bool> {
    let Some(text) = &change.new else {
        return Ok(true);
    };
    let dir = change.path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.nvhook-check",
        change
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let not_in_effect = |why: String| Error::NotInEffect {
        path: change.path.clone(),
        what: "containerd config dump",
        name: o.runtime_name.clone(),
        why,
    };
    std::fs::write(&tmp, text).map_err(|source| Error::Write {
        path: tmp.clone(),
        source,
    })?;
    let out = std::process::Command::new("containerd")
        .arg("--config")
        .arg(&tmp)
        .args(["config", "dump"])
        .output();
    let _ = std::fs::remove_file(&tmp);
    let out = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(not_in_effect(format!("cannot run containerd: {e}"))),
        Ok(o) => o,
    };
    if !out.status.success() {
        return Err(not_in_effect(format!(
            "containerd refuses it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let dump: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| not_in_effect(format!("unreadable dump: {}", e.message())))?;
    let want = p.runtime_path.display().to_string();
    let found = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]
        .iter()
        .filter_map(|plugin| {
            let key = [
                "plugins",
                plugin,
                "containerd",
                "runtimes",
                o.runtime_name.as_str(),
                "options",
                "BinaryName",
            ];
            crate::engines::containerd_config::lookup(&dump, &key)?
                .as_str()
                .map(str::to_owned)
        })
        .next();
    match found {
        Some(b) if b == want => Ok(true),
        Some(b) => Err(not_in_effect(format!("its BinaryName is {b:?}, not {want:?}"))),
        None => Err(not_in_effect(
            "an imported file (imports = [...]) defines the CRI plugin and replaces the main file's table in containerd 1.x: add the runtime to that file instead".into(),
        )),
    }
}

/// The changes that undo [`install`].
pub fn uninstall(engine: Engine, p: &Paths, o: &Options) -> Result<Vec<Change>> {
    let changes = match engine {
        Engine::Docker => vec![docker(p, o, None)?],
        Engine::Containerd => containerd(p, None)?,
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

/// Whether a runtime path is nvhook's shim (this one, or one installed elsewhere).
fn is_ours(path: &str, ours: &str) -> bool {
    path == ours
        || Path::new(path)
            .file_name()
            .is_some_and(|n| n == "nvhook-runtime")
}

/// The indent a JSON text uses (its first indented line's), or two spaces.
fn json_indent(text: &str) -> String {
    text.lines()
        .skip(1)
        .map(|l| {
            l.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .find(|i| !i.is_empty())
        .unwrap_or_else(|| "  ".into())
}

/// daemon.json with nvhook's runtime set (`Some`) or removed (`None`): every other key
/// kept in its order, the file's indent kept; someone else's runtime of that name, or
/// default runtime, only replaced with `--force`; uninstall removes only what is
/// nvhook's, and never leaves `default-runtime` naming a runtime it removed.
fn docker(p: &Paths, o: &Options, runtime: Option<&str>) -> Result<Change> {
    let path = &p.docker_config;
    let ours_path = p.runtime_path.display().to_string();
    let old = read_opt(path)?;
    let parse_err = |message: String| Error::Parse {
        path: path.clone(),
        message,
    };
    let mut v: Value = match &old {
        Some(t) if !t.trim().is_empty() => {
            serde_json::from_str(t).map_err(|e| parse_err(e.to_string()))?
        }
        _ => Value::Object(Map::new()),
    };
    let obj = v
        .as_object_mut()
        .ok_or_else(|| parse_err("not a JSON object".into()))?;
    let name = o.runtime_name.as_str();
    match runtime {
        Some(rt) => docker_add(obj, path, o, rt, &ours_path)?,
        None => match docker_remove(obj, name, &ours_path) {
            Removal::NotOurs => {
                // absent, or not nvhook's: leave it
                return Ok(Change {
                    path: path.clone(),
                    old: old.clone(),
                    new: old,
                });
            }
            // Nothing but nvhook's entry was there: an absent daemon.json is the same.
            Removal::Emptied => {
                return Ok(Change {
                    path: path.clone(),
                    old,
                    new: None,
                })
            }
            Removal::Done => {}
        },
    }
    let indent = json_indent(old.as_deref().unwrap_or(""));
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&v, &mut ser).expect("serializable");
    let new = format!("{}\n", String::from_utf8(buf).expect("JSON is UTF-8"));
    Ok(Change {
        path: path.clone(),
        old,
        new: Some(new),
    })
}

/// nvhook's runtime (at `rt`) in daemon.json's `runtimes`, and as `default-runtime` when
/// asked: someone else's runtime of that name, or default runtime, only with `--force`.
fn docker_add(
    obj: &mut Map<String, Value>,
    path: &Path,
    o: &Options,
    rt: &str,
    ours_path: &str,
) -> Result<()> {
    let name = o.runtime_name.as_str();
    let runtimes = obj.entry("runtimes").or_insert_with(|| json!({}));
    let r = runtimes.as_object_mut().ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        message: "runtimes is not an object".into(),
    })?;
    let found = r
        .get(name)
        .map(|x| x["path"].as_str().unwrap_or("").to_string());
    if let Some(found) = found.filter(|f| !is_ours(f, ours_path) && !o.force) {
        return Err(Error::Taken {
            path: path.to_path_buf(),
            name: name.into(),
            found,
        });
    }
    r.insert(name.into(), json!({"path": rt}));
    if o.set_default {
        let current = obj
            .get("default-runtime")
            .and_then(Value::as_str)
            .unwrap_or("runc")
            .to_string();
        if current != name && current != "runc" && !o.force {
            return Err(Error::DefaultTaken {
                path: path.to_path_buf(),
                name: name.into(),
                current,
            });
        }
        obj.insert("default-runtime".into(), json!(name));
    }
    Ok(())
}

/// What removing nvhook's runtime from daemon.json did.
enum Removal {
    /// The runtime is absent, or not nvhook's: nothing was touched.
    NotOurs,
    /// Removed, with `default-runtime` where it named it; other keys are left.
    Done,
    /// Removed, and nothing is left in the file.
    Emptied,
}

/// Takes nvhook's runtime `name` out of daemon.json, and `default-runtime` where it
/// named it; never someone else's runtime of that name.
fn docker_remove(obj: &mut Map<String, Value>, name: &str, ours_path: &str) -> Removal {
    let ours = obj
        .get("runtimes")
        .and_then(|r| r.get(name))
        .is_some_and(|x| is_ours(x["path"].as_str().unwrap_or(""), ours_path));
    let Some(r) = obj
        .get_mut("runtimes")
        .and_then(Value::as_object_mut)
        .filter(|_| ours)
    else {
        return Removal::NotOurs;
    };
    r.shift_remove(name);
    if r.is_empty() {
        obj.shift_remove("runtimes");
    }
    if obj.get("default-runtime").and_then(Value::as_str) == Some(name) {
        obj.shift_remove("default-runtime");
    }
    if obj.is_empty() {
        Removal::Emptied
    } else {
        Removal::Done
    }
}

/// containerd's main config with nvhook's runtime added (`Some`) or removed (`None`),
/// in place (see `containerd_config`); a drop-in and `imports` line that an earlier
/// nvhook wrote are removed either way.
fn containerd(p: &Paths, o: Option<&Options>) -> Result<Vec<Change>> {
    let path = &p.containerd_config;
    let old = read_opt(path)?;
    let base = without_old_imports(old.as_deref().unwrap_or(""), p);
    let created = old
        .as_deref()
        .is_none_or(|t| t.lines().any(|l| l.starts_with(CREATED_MARK)));
    let new = match o {
        Some(o) => {
            let rt = p.runtime_path.display().to_string();
            let mark = if created {
                format!(
                    "{CREATED_MARK}  {}\n",
                    crate::engines::containerd_config::ADDED
                )
            } else {
                String::new()
            };
            Some(
                mark + &crate::engines::containerd_config::add(
                    &base,
                    &crate::engines::containerd_config::Runtime {
                        name: &o.runtime_name,
                        binary: &rt,
                        set_default: o.set_default,
                        force: o.force,
                    },
                )
                .map_err(|source| Error::Containerd {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => {
            let restored = crate::engines::containerd_config::remove(&base);
            // A file nvhook created (and that holds nothing else) goes, as it came.
            if restored.trim().is_empty() && created {
                None
            } else {
                Some(restored)
            }
        }
    };
    let dropin = p.containerd_dropin_dir.join(DROPIN);
    Ok(vec![
        Change {
            path: path.clone(),
            old,
            new,
        },
        Change {
            path: dropin.clone(),
            old: read_opt(&dropin)?,
            new: None,
        },
    ])
}

/// `text` without the `imports` line for the drop-in dir that nvhook up to 0.1 wrote
/// (nvhook now edits the main file itself).
fn without_old_imports(text: &str, p: &Paths) -> String {
    let glob = format!("{}/*.toml", p.containerd_dropin_dir.display());
    let ours = format!("imports = [{}]  {IMPORTS_MARK}", toml_str(&glob));
    text.split_inclusive('\n')
        .filter(|l| l.trim_end() != ours)
        .collect()
}

/// The unified diff of one change, for `--dry-run` (an absent file is `/dev/null`, as
/// `diff -N` writes it).
pub fn diff(c: &Change) -> String {
    let path = c.path.display().to_string();
    let label = |present: bool| {
        if present {
            path.clone()
        } else {
            "/dev/null".into()
        }
    };
    crate::engines::unified_diff::unified(
        &label(c.old.is_some()),
        &label(c.new.is_some()),
        c.old.as_deref().unwrap_or(""),
        c.new.as_deref().unwrap_or(""),
    )
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
            // The backup gets the original's mode (a config may hold credentials).
            let bak = PathBuf::from(format!("{}.nvhook.bak", c.path.display()));
            let mode = std::fs::metadata(&c.path).map_or(0o600, |m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777
            });
            let _ = std::fs::remove_file(&bak);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&bak)
                .map_err(werr)?;
            std::io::Write::write_all(&mut f, old.as_bytes()).map_err(werr)?;
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
        let ch = install(engine, p, &Options::default()).unwrap();
        assert!(!ch.is_empty());
        apply(&ch).unwrap();
        assert!(
            install(engine, p, &Options::default()).unwrap().is_empty(),
            "{engine:?}: install is idempotent"
        );
        apply(&uninstall(engine, p, &Options::default()).unwrap()).unwrap();
        assert!(
            uninstall(engine, p, &Options::default())
                .unwrap()
                .is_empty(),
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
        let ch = install(Engine::Docker, &p, &Options::default()).unwrap();
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
        apply(&uninstall(Engine::Docker, &p, &Options::default()).unwrap()).unwrap();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p.docker_config).unwrap()).unwrap();
        assert!(v["runtimes"].get("nvidia").is_none());
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        let e = Paths {
            docker_config: d.path().join("bad.json"),
            ..p.clone()
        };
        std::fs::write(&e.docker_config, "{oops").unwrap();
        assert!(install(Engine::Docker, &e, &Options::default())
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
        roundtrip(Engine::Containerd, &p, &[&p.containerd_config]);
        roundtrip(Engine::Crio, &p, &[&p.crio_dropin_dir.join(DROPIN)]);
        roundtrip(Engine::Podman, &p, &[&p.hooks_dir.join(HOOK_JSON)]);
    }

    #[test]
    fn containerd_in_place_and_migration() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("containerd")).unwrap();
        let stock = "version = 2\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    default_runtime_name = \"runc\"\n";
        std::fs::write(&p.containerd_config, stock).unwrap();
        let o = Options {
            set_default: true,
            ..Options::default()
        };
        apply(&install(Engine::Containerd, &p, &o).unwrap()).unwrap();
        let main = std::fs::read_to_string(&p.containerd_config).unwrap();
        let t: toml::Table = toml::from_str(&main).unwrap();
        let c = &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(
            c["runtimes"]["nvidia"]["options"]["BinaryName"].as_str(),
            Some("/opt/nvhook/nvhook-runtime")
        );
        assert_eq!(c["default_runtime_name"].as_str(), Some("nvidia"));
        assert!(!p.containerd_dropin_dir.join(DROPIN).exists(), "no drop-in");
        apply(&uninstall(Engine::Containerd, &p, &o).unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p.containerd_config).unwrap(),
            stock
        );
        // what nvhook 0.1 wrote (a drop-in and an imports line) is taken back
        let glob = format!("{}/*.toml", p.containerd_dropin_dir.display());
        let old_main = format!("version = 2\nimports = [{glob:?}]  {IMPORTS_MARK}\n[plugins]\n");
        std::fs::write(&p.containerd_config, &old_main).unwrap();
        std::fs::create_dir_all(&p.containerd_dropin_dir).unwrap();
        std::fs::write(p.containerd_dropin_dir.join(DROPIN), "version = 2\n").unwrap();
        apply(&install(Engine::Containerd, &p, &Options::default()).unwrap()).unwrap();
        assert!(!p.containerd_dropin_dir.join(DROPIN).exists());
        let main = std::fs::read_to_string(&p.containerd_config).unwrap();
        assert!(!main.contains(IMPORTS_MARK), "{main}");
        // a config nvhook created is gone again after uninstall, installed twice or not
        let fresh = Paths {
            containerd_config: d.path().join("containerd/fresh.toml"),
            ..p.clone()
        };
        apply(&install(Engine::Containerd, &fresh, &Options::default()).unwrap()).unwrap();
        assert!(fresh.containerd_config.exists());
        assert!(install(Engine::Containerd, &fresh, &Options::default())
            .unwrap()
            .is_empty());
        apply(&uninstall(Engine::Containerd, &fresh, &Options::default()).unwrap()).unwrap();
        assert!(!fresh.containerd_config.exists());
    }

    #[test]
    fn backups_keep_the_original_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("docker")).unwrap();
        std::fs::write(&p.docker_config, "{\"registry-mirrors\": [\"secret\"]}\n").unwrap();
        std::fs::set_permissions(&p.docker_config, std::fs::Permissions::from_mode(0o600)).unwrap();
        apply(&install(Engine::Docker, &p, &Options::default()).unwrap()).unwrap();
        let bak = PathBuf::from(format!("{}.nvhook.bak", p.docker_config.display()));
        assert_eq!(
            std::fs::metadata(&bak).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&p.docker_config)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn docker_refuses_someone_elses_runtime_and_default() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(d.path().join("docker")).unwrap();
        let theirs = "{\n\t\"runtimes\": {\n\t\t\"nvidia\": {\n\t\t\t\"path\": \"nvidia-container-runtime\"\n\t\t}\n\t},\n\t\"default-runtime\": \"crun\"\n}\n";
        std::fs::write(&p.docker_config, theirs).unwrap();
        let e = install(Engine::Docker, &p, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        // under another name: theirs kept, tabs kept
        let o = Options {
            runtime_name: "nvhook".into(),
            ..Options::default()
        };
        let ch = install(Engine::Docker, &p, &o).unwrap();
        let new = ch[0].new.clone().unwrap();
        assert!(new.contains("\t\t\"nvhook\": {\n\t\t\t\"path\""), "{new}");
        assert!(new.contains("nvidia-container-runtime"));
        // a default that is not runc is not taken without --force
        let e = install(
            Engine::Docker,
            &p,
            &Options {
                set_default: true,
                ..o.clone()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"crun\""), "{e}");
        // uninstall never removes what is not nvhook's
        assert!(uninstall(Engine::Docker, &p, &Options::default())
            .unwrap()
            .is_empty());
        // set as default, then uninstalled: default-runtime goes with the runtime
        std::fs::write(&p.docker_config, "{\n  \"log-level\": \"warn\"\n}\n").unwrap();
        let o = Options {
            set_default: true,
            ..Options::default()
        };
        apply(&install(Engine::Docker, &p, &o).unwrap()).unwrap();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p.docker_config).unwrap()).unwrap();
        assert_eq!(v["default-runtime"], "nvidia");
        apply(&uninstall(Engine::Docker, &p, &o).unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p.docker_config).unwrap(),
            "{\n  \"log-level\": \"warn\"\n}\n"
        );
    }

    #[test]
    fn crio_and_hooks_content() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        apply(&install(Engine::Crio, &p, &Options::default()).unwrap()).unwrap();
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
