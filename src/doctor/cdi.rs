//! CDI specs for NVIDIA devices (nvhook's or NVIDIA's, JSON or YAML): the driver
//! version they were made for against the loaded one (a spec goes stale with every
//! driver upgrade, and engines then mount files that are gone), the hook programs and
//! device nodes they name, and two specs offering the same kind.

use super::{Finding, Host};
use crate::container::config::Config;
use crate::host::driver::Driver;
use std::path::{Path, PathBuf};

/// Appends one finding per NVIDIA spec found (one saying none where there is none),
/// and one when two offer the same kind.
pub fn check(host: &Host, cfg: &Config, driver: Option<&Driver>, out: &mut Vec<Finding>) {
    let specs: Vec<(PathBuf, String, String)> =
        super::files_in(&host.cdi_dirs, &["json", "yaml", "yml"])
            .into_iter()
            .filter_map(|p| Some((p.clone(), super::read_small(&p)?)))
            .filter_map(|(p, t)| Some((p, kind_of(&t).filter(|k| k.contains("nvidia.com/"))?, t)))
            .collect();
    if specs.is_empty() {
        out.push(Finding::ok(
            "cdi.specs",
            format!(
                "no NVIDIA CDI spec in {} (CDI not used)",
                host.cdi_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return;
    }
    let loaded = driver.map(|d| d.version.as_str());
    for (p, _, text) in &specs {
        out.push(spec(p, text, loaded, &cfg.dev_root));
    }
    if let Some(f) = same_names(&specs) {
        out.push(f);
    }
}

/// Two specs that offer the same fully qualified device name (`nvidia.com/gpu=0`): CDI
/// takes the one in the dir of higher precedence, some engines refuse the start. (Specs
/// of one kind with different names, one per claim, are how DRA drivers work.)
fn same_names(specs: &[(PathBuf, String, String)]) -> Option<Finding> {
    let mut seen: Vec<(String, &Path)> = Vec::new();
    let mut clash: Vec<String> = Vec::new();
    for (p, kind, text) in specs {
        for n in device_names(text) {
            let full = format!("{kind}={n}");
            match seen.iter().find(|(f, _)| *f == full) {
                Some((_, other)) if *other != p.as_path() => {
                    clash.push(format!("{full} ({} and {})", other.display(), p.display()))
                }
                Some(_) => {}
                None => seen.push((full, p)),
            }
        }
    }
    (!clash.is_empty()).then(|| {
        Finding::warn(
            "cdi.specs",
            format!(
                "device names offered twice: {}; the spec in the dir of higher precedence wins, and some engines refuse the start",
                clash.join(", ")
            ),
            "keep one spec per name: remove the other (NVIDIA's nvidia-ctk spec, say, once nvhook's is in place)",
        )
    })
}

/// The device names a spec offers: JSON's `devices[].name`, or YAML's `- name:` lines.
fn device_names(text: &str) -> Vec<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
    }
    text.lines()
        .filter_map(|l| {
            let v = l.trim_start().strip_prefix("- name:")?;
            Some(v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A spec's `kind` (JSON's field, or YAML's top-level `kind:` line).
pub fn kind_of(text: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return v.get("kind")?.as_str().map(str::to_owned);
    }
    text.lines().find_map(|l| {
        let v = l
            .strip_prefix("kind:")?
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// The strings a spec holds: JSON's string values, or YAML's plain and quoted scalars
/// (a spec is simple enough for its words to be read without a YAML parser).
fn words(text: &str) -> Vec<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&v, &mut out);
        return out;
    }
    text.split(|c: char| c.is_whitespace() || "\"',[]{}".contains(c))
        .map(|w| w.trim_end_matches(':').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The driver version a spec was made for: nvhook's `--driver-version`, else the version
/// in the name of the `libcuda.so.VERSION` or `libnvidia-ml.so.VERSION` it mounts.
pub fn spec_version(words: &[String]) -> Option<String> {
    if let Some(i) = words.iter().position(|w| w == "--driver-version") {
        return words.get(i + 1).cloned();
    }
    if let Some(v) = words
        .iter()
        .find_map(|w| w.strip_prefix("--driver-version="))
    {
        return Some(v.to_string());
    }
    words.iter().find_map(|w| {
        let name = w.rsplit('/').next()?;
        let v = name
            .strip_prefix("libcuda.so.")
            .or_else(|| name.strip_prefix("libnvidia-ml.so."))?;
        (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .then(|| v.to_string())
    })
}

/// One spec: made for the loaded driver, its hooks and device nodes present.
pub fn spec(path: &Path, text: &str, loaded: Option<&str>, dev_root: &Path) -> Finding {
    let words = words(text);
    let nvidia_tool = words
        .iter()
        .any(|w| w.ends_with("/nvidia-ctk") || w.ends_with("/nvidia-cdi-hook"));
    let fix = if nvidia_tool {
        format!(
            "nvidia-ctk cdi generate --output={} (or replace it: nvhook cdi generate --output {0})",
            path.display()
        )
    } else {
        format!("nvhook cdi generate --output {} (the package's nvhook-cdi-refresh units keep it current)", path.display())
    };
    let version = spec_version(&words);
    if let (Some(v), Some(l)) = (&version, loaded) {
        if v != l {
            return Finding::fail(
                "cdi.spec",
                format!("{} was made for driver {v}, the loaded driver is {l}: containers using it fail", path.display()),
                fix,
            );
        }
    }
    let hooks: Vec<&String> = words
        .iter()
        .filter(|w| {
            w.starts_with('/')
                && ["/nvhook", "/nvidia-ctk", "/nvidia-cdi-hook"]
                    .iter()
                    .any(|t| w.ends_with(t))
        })
        .collect();
    if let Some(h) = hooks.iter().find(|h| !Path::new(h.as_str()).is_file()) {
        return Finding::fail(
            "cdi.spec",
            format!(
                "{} runs the hook {h}, which does not exist: containers using it fail",
                path.display()
            ),
            fix,
        );
    }
    let mut nodes: Vec<&String> = words
        .iter()
        .filter(|w| w.starts_with("/dev/nvidia"))
        .collect();
    nodes.sort();
    nodes.dedup();
    let gone: Vec<&str> = nodes
        .iter()
        .map(|n| n.as_str())
        // gone, not merely hidden from a user who runs doctor without root
        .filter(|n| {
            std::fs::symlink_metadata(dev_root.join(n.trim_start_matches('/')))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect();
    if !gone.is_empty() {
        return Finding::fail(
            "cdi.spec",
            format!(
                "{} names device nodes that do not exist: {}",
                path.display(),
                gone.join(", ")
            ),
            format!("create them (nvidia-modprobe -u -c=N, or nvidia-smi once as root); for a GPU that is gone: {fix}"),
        );
    }
    Finding::ok(
        "cdi.spec",
        format!(
            "{}: driver {}, hook {}, {} device node(s) present",
            path.display(),
            version.as_deref().unwrap_or("version not named"),
            hooks.first().map(|h| h.as_str()).unwrap_or("none"),
            nodes.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    #[test]
    fn two_specs_warn_only_when_they_offer_the_same_device_name() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        std::fs::create_dir_all(&host.cdi_dirs[0]).unwrap();
        std::fs::create_dir_all(&host.cdi_dirs[1]).unwrap();
        let gpu = r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0"},{"name":"all"}]}"#;
        std::fs::write(host.cdi_dirs[0].join("nvidia.json"), gpu).unwrap();
        // the device plugin's spec (another kind) and a DRA claim's (same kind, own names)
        let plugin = "kind: k8s.device-plugin.nvidia.com/gpu\ndevices:\n- name: \"0\"\n";
        std::fs::write(host.cdi_dirs[1].join("plugin.yaml"), plugin).unwrap();
        let claim = "kind: nvidia.com/gpu\ndevices:\n- name: claim-1234\n";
        std::fs::write(host.cdi_dirs[1].join("claim.yaml"), claim).unwrap();
        let mut out = Vec::new();
        check(&host, &Config::default(), None, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out.iter().all(|f| f.check == "cdi.spec"), "{out:?}");
        let again = "---\nkind: 'nvidia.com/gpu'\ndevices:\n- name: \"0\"\n  containerEdits: {}\n";
        std::fs::write(host.cdi_dirs[1].join("nvidia.yaml"), again).unwrap();
        let mut out = Vec::new();
        check(&host, &Config::default(), None, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.check, "cdi.specs", "{out:?}");
        assert!(
            last.saw
                .starts_with("device names offered twice: nvidia.com/gpu=0 ("),
            "{out:?}"
        );
    }

    #[test]
    fn versions_are_read_from_nvhook_and_nvidia_specs() {
        let w = |t: &str| words(t);
        let ours = r#"{"kind":"nvidia.com/gpu","containerEdits":{"hooks":[{"path":"/usr/bin/nvhook","args":["nvhook","cdi-hook","update-ldcache","--driver-version","550.54.15"]}]}}"#;
        assert_eq!(spec_version(&w(ours)).as_deref(), Some("550.54.15"));
        let theirs = "kind: nvidia.com/gpu\ncontainerEdits:\n  mounts:\n  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n";
        assert_eq!(spec_version(&w(theirs)).as_deref(), Some("535.104.05"));
        assert_eq!(spec_version(&w("kind: nvidia.com/gpu")), None);
    }

    #[test]
    fn a_spec_from_another_driver_version_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nvidia.yaml");
        let stale =
            "kind: nvidia.com/gpu\n  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n";
        let f = spec(&p, stale, Some("550.54.15"), d.path());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(
            f.saw
                .contains("made for driver 535.104.05, the loaded driver is 550.54.15"),
            "{f:?}"
        );
        assert!(f.fix.unwrap().contains("nvhook cdi generate"));
        assert_eq!(
            spec(&p, stale, Some("535.104.05"), d.path()).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn a_spec_whose_hook_is_gone_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nvidia.yaml");
        let hook = "kind: nvidia.com/gpu\nhooks:\n- path: /nonexistent/nvidia-cdi-hook\n";
        let f = spec(&p, hook, Some("550.54.15"), d.path());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(
            f.saw
                .contains("/nonexistent/nvidia-cdi-hook, which does not exist"),
            "{f:?}"
        );
        assert!(f.fix.unwrap().starts_with("nvidia-ctk cdi generate"));
        let there = d.path().join("nvidia-cdi-hook");
        std::fs::write(&there, "").unwrap();
        let here = hook.replace("/nonexistent/nvidia-cdi-hook", &there.display().to_string());
        assert_eq!(
            spec(&p, &here, Some("550.54.15"), d.path()).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn a_spec_naming_missing_nodes_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nvidia.json");
        let node = r#"{"kind":"nvidia.com/gpu","devices":[{"containerEdits":{"deviceNodes":[{"path":"/dev/nvidia7"}]}}]}"#;
        let f = spec(&p, node, Some("550.54.15"), d.path());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("/dev/nvidia7"), "{f:?}");
        assert!(f.fix.unwrap().starts_with("create them"));
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/nvidia7"), "").unwrap();
        assert_eq!(
            spec(&p, node, Some("550.54.15"), d.path()).verdict,
            Verdict::Ok
        );
    }
}
