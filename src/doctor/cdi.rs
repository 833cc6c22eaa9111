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
    let specs: Vec<(PathBuf, String, String)> = host
        .cdi_dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "json" || x == "yaml" || x == "yml")
        })
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
    let mut kinds: Vec<&str> = specs.iter().map(|(_, k, _)| k.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let files: Vec<String> = specs
            .iter()
            .filter(|(_, sk, _)| sk == k)
            .map(|(p, _, _)| p.display().to_string())
            .collect();
        if files.len() > 1 {
            out.push(Finding::warn(
                "cdi.specs",
                format!(
                    "{} specs offer kind {k}: {}; engines take a device name from the one of highest precedence, and some refuse duplicates",
                    files.len(),
                    files.join(", ")
                ),
                "keep one: remove the others (NVIDIA's nvidia-ctk spec, say, once nvhook's is in place)",
            ));
        }
    }
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
            fix,
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
    fn two_specs_warn_only_when_they_offer_the_same_kind() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        std::fs::create_dir_all(&host.cdi_dirs[0]).unwrap();
        std::fs::create_dir_all(&host.cdi_dirs[1]).unwrap();
        let gpu = r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[]}"#;
        std::fs::write(host.cdi_dirs[0].join("nvidia.json"), gpu).unwrap();
        std::fs::write(
            host.cdi_dirs[1].join("plugin.yaml"),
            "kind: k8s.device-plugin.nvidia.com/gpu\n",
        )
        .unwrap();
        let mut out = Vec::new();
        check(&host, &Config::default(), None, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.iter().all(|f| f.check == "cdi.spec"), "{out:?}");
        std::fs::write(
            host.cdi_dirs[1].join("nvidia.yaml"),
            "---\nkind: 'nvidia.com/gpu'\n",
        )
        .unwrap();
        let mut out = Vec::new();
        check(&host, &Config::default(), None, &mut out);
        assert_eq!(out.last().unwrap().check, "cdi.specs", "{out:?}");
        assert!(
            out.last()
                .unwrap()
                .saw
                .starts_with("2 specs offer kind nvidia.com/gpu"),
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
    fn a_stale_spec_fails_and_so_do_a_missing_hook_and_missing_nodes() {
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
        let hook = "kind: nvidia.com/gpu\nhooks:\n- path: /nonexistent/nvidia-cdi-hook\n";
        let f = spec(&p, hook, Some("550.54.15"), d.path());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(
            f.saw
                .contains("/nonexistent/nvidia-cdi-hook, which does not exist"),
            "{f:?}"
        );
        assert!(f.fix.unwrap().starts_with("nvidia-ctk cdi generate"));
        let node = r#"{"kind":"nvidia.com/gpu","devices":[{"containerEdits":{"deviceNodes":[{"path":"/dev/nvidia7"}]}}]}"#;
        let f = spec(&p, node, Some("550.54.15"), d.path());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("/dev/nvidia7"), "{f:?}");
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/nvidia7"), "").unwrap();
        assert_eq!(
            spec(&p, node, Some("550.54.15"), d.path()).verdict,
            Verdict::Ok
        );
    }
}
