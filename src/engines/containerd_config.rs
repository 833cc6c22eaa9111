//! nvhook's runtime in containerd's own configuration file, edited as text.
//!
//! A drop-in under `imports` is not safe: containerd merges an imported file's plugin
//! tables over the main file's by replacing them whole, so a drop-in that names the CRI
//! plugin's runtimes wipes the main file's `runc` runtime, CNI and sandbox settings
//! (what every Kubernetes node needs). nvhook therefore appends one marked block to the
//! main file (and, for `--set-as-default`, changes the one `default_runtime_name` line,
//! keeping the original beside it), checks the result parses to what was meant, and
//! removes exactly that on uninstall: the file comes back byte for byte.

use toml::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not valid TOML: {0}")]
    Parse(String),
    #[error("config version {0} is not one nvhook knows (1, 2 or 3)")]
    Version(i64),
    #[error("a runtime named {name:?} exists already and is not nvhook's (BinaryName {found:?}); pass --force to replace it, or --runtime-name to install under another name")]
    Taken { name: String, found: String },
    #[error("the edited file does not say what was meant ({0}); add the runtime by hand:\n{1}")]
    Unsure(String, String),
    #[error("nvhook's runtime is installed as {0:?} already: uninstall it first (nvhook uninstall containerd --runtime-name {0})")]
    OtherName(String),
}

pub type Result<T> = std::result::Result<T, Error>;

const BEGIN: &str = "# nvhook begin:";
const END: &str = "# nvhook end";
const REPLACED: &str = "# nvhook replaced: ";
/// Marks a line nvhook added, which `remove` drops.
pub const ADDED: &str = "# nvhook added";
const REMOVED: &str = "# nvhook removed: ";

/// What to add.
#[derive(Debug, Clone)]
pub struct Runtime<'a> {
    pub name: &'a str,
    pub binary: &'a str,
    pub set_default: bool,
    pub force: bool,
}

/// The config version a text declares (`version = N`); containerd 1.x reads a file
/// without one as version 1, and nvhook writes version 2 into an empty file.
pub fn version(text: &str) -> Result<i64> {
    let t: toml::Table = toml::from_str(text).map_err(|e| Error::Parse(e.message().into()))?;
    match t.get("version").and_then(Value::as_integer) {
        Some(v @ 1..=3) => Ok(v),
        Some(v) => Err(Error::Version(v)),
        None if t.is_empty() => Ok(2),
        None => Ok(1),
    }
}

/// The table of the CRI plugin's containerd settings, as keys, for a config version.
fn cri_path(version: i64) -> [&'static str; 3] {
    match version {
        1 => ["plugins", "cri", "containerd"],
        2 => ["plugins", "io.containerd.grpc.v1.cri", "containerd"],
        _ => ["plugins", "io.containerd.cri.v1.runtime", "containerd"],
    }
}

/// The same table as a TOML header key (`plugins."io.containerd.grpc.v1.cri".containerd`).
fn cri_header(version: i64) -> String {
    cri_path(version)
        .iter()
        .map(|k| {
            if k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                k.to_string()
            } else {
                format!("\"{k}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The value at `path` (keys) in a TOML table.
pub fn lookup<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = t.get(*first)?;
    for k in rest {
        v = v.get(*k)?;
    }
    Some(v)
}

/// A table header line's key, normalised (no spaces, `'` quotes as `"`), for `[a.b]` and
/// also `[[a.b]]` (an array of tables, a boundary all the same); a trailing comment is
/// allowed. `None` for any other line.
fn header_key(line: &str) -> Option<String> {
    let l = line.trim();
    if !l.starts_with('[') {
        return None;
    }
    let end = l.rfind(']')?;
    let rest = l[end + 1..].trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return None;
    }
    let body = &l[..=end];
    let inner = body
        .strip_prefix("[[")
        .and_then(|b| b.strip_suffix("]]"))
        .or_else(|| body.strip_prefix('[')?.strip_suffix(']'))?;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().replace('\'', "\""))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The runtime name in nvhook's block, if the text has one.
fn installed_name(text: &str) -> Option<String> {
    let l = text.lines().find(|l| l.starts_with(BEGIN))?;
    let start = l.find('"')? + 1;
    let len = l[start..].find('"')?;
    Some(l[start..start + len].to_string())
}

/// A TOML key: bare where it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_str(k)
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `text` with nvhook's runtime added (and made the default when asked); unchanged when
/// it is there already.
pub fn add(text: &str, rt: &Runtime<'_>) -> Result<String> {
    if let Some(other) = installed_name(text).filter(|n| n != rt.name) {
        return Err(Error::OtherName(other));
    }
    let base = remove(text);
    let version = version(&base)?;
    let table: toml::Table = toml::from_str(&base).map_err(|e| Error::Parse(e.message().into()))?;
    let path = cri_path(version);
    check_name_free(&table, &path, rt)?;
    let default_name = default_runtime(&table, &path);
    let mut d_path: Vec<&str> = path.to_vec();
    d_path.extend(["runtimes", default_name.as_str()]);
    // The CRI plugin's runtimes table, once the file names one runtime, replaces
    // containerd's built-in one: without the default runtime written out too, a file
    // that relied on the built-in `runc` would lose it.
    let add_default = default_name != rt.name && lookup(&table, &d_path).is_none();
    let header = cri_header(version);
    let mut lines: Vec<String> = base.split_inclusive('\n').map(str::to_owned).collect();
    if rt.force {
        drop_runtime_tables(&mut lines, &format!("{header}.runtimes.{}", rt.name));
    }
    let default_done = !rt.set_default || set_default_in_place(&mut lines, &header, rt.name);
    let mut out = lines.concat();
    if table.is_empty() {
        // Nothing but comments (or nothing): containerd would read the file as
        // version 1 and ignore a version 2 block.
        out = format!("version = 2  {ADDED}\n{out}");
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&nvhook_block(
        &header,
        rt,
        !default_done,
        add_default.then_some(default_name.as_str()),
    ));
    check(&out, version, rt).map_err(|why| Error::Unsure(why, block(version, rt)))?;
    Ok(out)
}

/// Refuses a runtime of nvhook's name that is someone else's (unless forced).
fn check_name_free(table: &toml::Table, path: &[&str], rt: &Runtime<'_>) -> Result<()> {
    let mut rt_path: Vec<&str> = path.to_vec();
    rt_path.extend(["runtimes", rt.name]);
    match lookup(table, &rt_path) {
        Some(existing) if !rt.force => Err(Error::Taken {
            name: rt.name.into(),
            found: existing
                .get("options")
                .and_then(|o| o.get("BinaryName"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        _ => Ok(()),
    }
}

/// The CRI plugin's default runtime (containerd's built-in `runc` when unset).
fn default_runtime(table: &toml::Table, path: &[&str]) -> String {
    let mut default_path: Vec<&str> = path.to_vec();
    default_path.push("default_runtime_name");
    lookup(table, &default_path)
        .and_then(Value::as_str)
        .unwrap_or("runc")
        .to_string()
}

/// Makes `name` the default runtime where the CRI plugin's table is in the file: its
/// `default_runtime_name` line replaced (the old one kept as a marked comment), or one
/// added under the table's header. False when the file has no such table.
fn set_default_in_place(lines: &mut Vec<String>, header: &str, name: &str) -> bool {
    let mut current: Option<String> = None;
    let mut header_at = None;
    for (i, l) in lines.iter().enumerate() {
        if let Some(k) = header_key(l) {
            if k == header && header_at.is_none() {
                header_at = Some(i);
            }
            current = Some(k);
            continue;
        }
        let is_default = l.trim_start().starts_with("default_runtime_name")
            && l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "default_runtime_name");
        if is_default && current.as_deref() == Some(header) {
            let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
            lines[i] = format!(
                "{REPLACED}{}\n{indent}default_runtime_name = {}\n",
                l.trim_end_matches('\n'),
                toml_str(name)
            );
            return true;
        }
    }
    let Some(i) = header_at else { return false };
    lines.insert(
        i + 1,
        format!("default_runtime_name = {}  {ADDED}\n", toml_str(name)),
    );
    true
}

/// nvhook's marked block: the default runtime setting (where the file had no place for
/// it), the default runtime's own table (where the file relied on the built-in one),
/// and nvhook's runtime.
fn nvhook_block(
    header: &str,
    rt: &Runtime<'_>,
    set_default: bool,
    keep_default: Option<&str>,
) -> String {
    let mut out = format!(
        "\n{BEGIN} the {name:?} runtime (RuntimeClass {name:?}); `nvhook uninstall containerd` removes this block\n",
        name = rt.name
    );
    if set_default {
        out.push_str(&format!(
            "[{header}]\n  default_runtime_name = {}\n",
            toml_str(rt.name)
        ));
    }
    if let Some(default_name) = keep_default {
        let k = toml_key(default_name);
        out.push_str(&format!(
            "[{header}.runtimes.{k}]\n  runtime_type = \"io.containerd.runc.v2\"\n[{header}.runtimes.{k}.options]\n"
        ));
    }
    out.push_str(&format!(
        "[{header}.runtimes.{name}]\n  runtime_type = \"io.containerd.runc.v2\"\n[{header}.runtimes.{name}.options]\n  BinaryName = {bin}\n{END}\n",
        name = rt.name,
        bin = toml_str(rt.binary)
    ));
    out
}

/// Takes out (with `--force`) an existing runtime's own tables of that name, kept as
/// marked comments so uninstall puts them back.
fn drop_runtime_tables(lines: &mut [String], key: &str) {
    let mut dropping = false;
    for l in lines.iter_mut() {
        if let Some(k) = header_key(l) {
            dropping = k == key || k.starts_with(&format!("{key}."));
        }
        if dropping {
            *l = format!("{REMOVED}{l}");
            if !l.ends_with('\n') {
                l.push('\n');
            }
        }
    }
}

/// The block to add by hand where nvhook could not.
fn block(version: i64, rt: &Runtime<'_>) -> String {
    let h = cri_header(version);
    format!(
        "[{h}.runtimes.{n}]\n  runtime_type = \"io.containerd.runc.v2\"\n[{h}.runtimes.{n}.options]\n  BinaryName = {b}\n",
        n = rt.name,
        b = toml_str(rt.binary)
    )
}

/// The edited text parses, and says what was meant.
fn check(text: &str, version: i64, rt: &Runtime<'_>) -> std::result::Result<(), String> {
    let t: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let mut p: Vec<&str> = cri_path(version).to_vec();
    p.extend(["runtimes", rt.name, "options", "BinaryName"]);
    if lookup(&t, &p).and_then(Value::as_str) != Some(rt.binary) {
        return Err("the runtime's BinaryName".into());
    }
    if rt.set_default {
        let mut d: Vec<&str> = cri_path(version).to_vec();
        d.push("default_runtime_name");
        if lookup(&t, &d).and_then(Value::as_str) != Some(rt.name) {
            return Err("default_runtime_name".into());
        }
    }
    Ok(())
}

/// `text` without anything nvhook added: the marked block, and the default it changed
/// or added, restored byte for byte.
pub fn remove(text: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with(BEGIN) {
            in_block = true;
            // the blank line nvhook put before its block
            if out.ends_with("\n\n") || out == "\n" {
                out.pop();
            }
        } else if in_block {
            if l.trim_end() == END {
                in_block = false;
            }
        } else if let Some(orig) = l.strip_prefix(REMOVED) {
            out.push_str(orig);
        } else if let Some(orig) = l.strip_prefix(REPLACED) {
            out.push_str(orig);
            if !orig.ends_with('\n') {
                out.push('\n');
            }
            i += 1; // the replacement line that follows
        } else if !l.trim_end().ends_with(ADDED) {
            out.push_str(l);
        }
        i += 1;
    }
    out
}

/// Whether `text` holds nvhook's block.
pub fn has_ours(text: &str) -> bool {
    text.lines().any(|l| l.starts_with(BEGIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK_V2: &str = r#"disabled_plugins = []
imports = []
version = 2

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
"#;

    fn rt(set_default: bool) -> Runtime<'static> {
        Runtime {
            name: "nvidia",
            binary: "/usr/local/bin/nvhook-runtime",
            set_default,
            force: false,
        }
    }

    fn get<'a>(t: &'a toml::Table, p: &[&str]) -> Option<&'a Value> {
        lookup(t, p)
    }

    #[test]
    fn adds_keeps_everything_and_removes_exactly() {
        for set_default in [false, true] {
            let new = add(STOCK_V2, &rt(set_default)).unwrap();
            let t: toml::Table = toml::from_str(&new).unwrap();
            let c = ["plugins", "io.containerd.grpc.v1.cri"];
            assert_eq!(
                get(
                    &t,
                    &[
                        c[0],
                        c[1],
                        "containerd",
                        "runtimes",
                        "runc",
                        "options",
                        "SystemdCgroup"
                    ]
                ),
                Some(&Value::Boolean(true))
            );
            assert_eq!(
                get(&t, &[c[0], c[1], "cni", "bin_dir"]).and_then(Value::as_str),
                Some("/usr/lib/cni")
            );
            assert_eq!(
                get(&t, &[c[0], c[1], "containerd", "default_runtime_name"])
                    .and_then(Value::as_str),
                Some(if set_default { "nvidia" } else { "runc" })
            );
            assert_eq!(add(&new, &rt(set_default)).unwrap(), new, "idempotent");
            assert_eq!(remove(&new), STOCK_V2, "uninstall gives the file back");
        }
    }

    #[test]
    fn versions_and_empty_files() {
        let new = add("", &rt(true)).unwrap();
        assert!(new.starts_with("version = 2  # nvhook added\n"), "{new}");
        assert_eq!(remove(&new), "");
        let t: toml::Table = toml::from_str(&new).unwrap();
        // the built-in runc, written out: naming one runtime replaces the built-in table
        assert!(get(
            &t,
            &[
                "plugins",
                "io.containerd.grpc.v1.cri",
                "containerd",
                "runtimes",
                "runc"
            ]
        )
        .is_some());
        assert_eq!(
            get(
                &t,
                &[
                    "plugins",
                    "io.containerd.grpc.v1.cri",
                    "containerd",
                    "default_runtime_name"
                ]
            )
            .and_then(Value::as_str),
            Some("nvidia")
        );
        let v3 = "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n";
        let new = add(v3, &rt(true)).unwrap();
        let t: toml::Table = toml::from_str(&new).unwrap();
        let base = ["plugins", "io.containerd.cri.v1.runtime", "containerd"];
        assert_eq!(
            get(
                &t,
                &[
                    base[0],
                    base[1],
                    base[2],
                    "runtimes",
                    "nvidia",
                    "options",
                    "BinaryName"
                ]
            )
            .and_then(Value::as_str),
            Some("/usr/local/bin/nvhook-runtime")
        );
        assert_eq!(
            get(&t, &[base[0], base[1], base[2], "default_runtime_name"]).and_then(Value::as_str),
            Some("nvidia")
        );
        assert_eq!(remove(&new), v3);
        assert_eq!(version("version = 7\n"), Err(Error::Version(7)));
        let v1 = "root = \"/var/lib/containerd\"\n";
        assert!(add(v1, &rt(false))
            .unwrap()
            .contains("[plugins.cri.containerd.runtimes.nvidia]"));
    }

    #[test]
    fn someone_elses_nvidia_runtime_is_not_replaced_silently() {
        let theirs = format!(
            "{STOCK_V2}\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n          runtime_type = \"io.containerd.runc.v2\"\n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n            BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
        );
        let e = add(&theirs, &rt(false)).unwrap_err();
        assert!(e.to_string().contains("nvidia-container-runtime"), "{e}");
        let forced = add(
            &theirs,
            &Runtime {
                force: true,
                ..rt(false)
            },
        )
        .unwrap();
        let t: toml::Table = toml::from_str(&forced).unwrap();
        let path = [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
            "nvidia",
            "options",
            "BinaryName",
        ];
        assert_eq!(
            get(&t, &path).and_then(Value::as_str),
            Some("/usr/local/bin/nvhook-runtime"),
            "{forced}"
        );
        assert_eq!(remove(&forced), theirs, "uninstall puts theirs back");
        let other = add(
            &theirs,
            &Runtime {
                name: "nvhook",
                ..rt(false)
            },
        )
        .unwrap();
        assert!(
            other.contains("/usr/bin/nvidia-container-runtime")
                && other.contains("runtimes.nvhook]")
        );
        // a second install under another name is refused, not a silent swap
        let e = add(&other, &rt(false)).unwrap_err();
        assert_eq!(e, Error::OtherName("nvhook".into()));
    }

    #[test]
    fn force_stops_at_every_table_and_comment_only_files_get_a_version() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]  # theirs\n  runtime_type = \"x\"\n[[plugins.\"io.containerd.grpc.v1.cri\".registry.configs]]\n  a = 1\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]  # cache\n  endpoint = [\"https://m\"]\n";
        let forced = add(
            text,
            &Runtime {
                force: true,
                ..rt(false)
            },
        )
        .unwrap();
        assert!(
            forced.contains(
                "\n[[plugins.\"io.containerd.grpc.v1.cri\".registry.configs]]\n  a = 1\n"
            ),
            "{forced}"
        );
        assert!(
            forced.contains("\n  endpoint = [\"https://m\"]\n"),
            "{forced}"
        );
        assert_eq!(remove(&forced), text);
        let comments = "# containerd config\n# nothing yet\n";
        let new = add(comments, &rt(false)).unwrap();
        assert!(
            new.starts_with("version = 2  # nvhook added\n# containerd config"),
            "{new}"
        );
        assert_eq!(remove(&new), comments);
    }

    #[test]
    fn layouts_that_cannot_take_a_table_are_refused_with_the_block_to_add() {
        // dotted keys take a table header after them (containerd reads it the same way)
        let dotted = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd.runtimes.runc.runtime_type = \"io.containerd.runc.v2\"\n";
        let t: toml::Table = toml::from_str(&add(dotted, &rt(false)).unwrap()).unwrap();
        let r = [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ];
        assert!(get(&t, &[r[0], r[1], r[2], r[3], "runc"]).is_some());
        assert!(get(&t, &[r[0], r[1], r[2], r[3], "nvidia"]).is_some());
        // an inline table cannot be extended
        let inline = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = { runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } } }\n";
        let e = add(inline, &rt(false)).unwrap_err();
        assert!(matches!(e, Error::Unsure(..)), "{e}");
        assert!(e
            .to_string()
            .contains("BinaryName = \"/usr/local/bin/nvhook-runtime\""));
    }
}
