//! nvhook's own set-up: who runs doctor, the installed binaries, the configuration
//! file (read exactly as the hook reads it), the log file, and the loader cache mode
//! (with `ld-cache = "ldconfig"`, the configured ldconfig run once in its sandbox).

use super::{Finding, Host};
use crate::apply::ldconfig;
use crate::common::log::{LogConfig, DEFAULT_FILE};
use crate::container::config::{Config, LdCache, Loaded};
use std::os::fd::AsFd;
use std::path::Path;

/// Appends this section's findings; gives the configuration where it loads.
pub fn check(host: &Host, out: &mut Vec<Finding>) -> Option<Loaded> {
    out.push(who());
    binaries(host, out);
    let loaded = config(host, out);
    if let Some(l) = &loaded {
        out.push(log_file(&l.config.log));
        out.push(ld_cache(&l.config));
    }
    loaded
}

fn who() -> Finding {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return Finding::ok("nvhook.user", "running as root, as the hook does");
    }
    Finding::warn(
        "nvhook.user",
        format!("running as uid {uid}: files, devices and daemons only root may see are judged as this user sees them"),
        "run it as root: sudo nvhook doctor",
    )
}

/// `nvhook` (the hook every engine and CDI spec names) and `nvhook-runtime` (the shim
/// Docker, containerd and CRI-O run), where the installers look for them.
fn binaries(host: &Host, out: &mut Vec<Finding>) {
    let dirs: Vec<String> = host
        .bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    for (name, check, needed_by) in [
        (
            "nvhook",
            "nvhook.hook",
            "every engine, hooks.d entry and CDI spec runs it",
        ),
        (
            "nvhook-runtime",
            "nvhook.shim",
            "Docker, containerd and CRI-O run it in place of runc",
        ),
    ] {
        let f = match host.installed(name) {
            None => {
                let saw = format!("{name} is in none of {}: {needed_by}", dirs.join(", "));
                let fix = format!(
                    "dpkg -i the nvhook package, or: install -m 755 target/release/{name} /usr/local/bin/"
                );
                if name == "nvhook" {
                    Finding::fail(check, saw, fix)
                } else {
                    Finding::warn(check, saw, fix)
                }
            }
            Some(p) => installed_binary(check, &p),
        };
        out.push(f);
    }
}

/// An installed binary runs as root on every start: it must be root's and writable by
/// no one else; and a copy from another build than this one is worth a word.
pub fn installed_binary(check: &str, p: &Path) -> Finding {
    if let Err(e) = crate::common::trust::check_root_owned("nvhook", p) {
        return Finding::fail(check, e.to_string(), super::FIX_OWNERSHIP);
    }
    let version = super::output_within(
        std::process::Command::new(p).arg("--version").env_clear(),
        std::time::Duration::from_secs(5),
    )
    .ok()
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .unwrap_or_default();
    let this = format!("{} (commit {})", crate::VERSION, crate::COMMIT);
    if !version.contains(crate::VERSION) {
        return Finding::warn(
            check,
            format!(
                "{} says {version:?}; this doctor is nvhook {this}",
                p.display()
            ),
            "install the binaries of one build together (the package, or both from target/release)",
        );
    }
    Finding::ok(check, format!("{} ({version})", p.display()))
}

/// The configuration, loaded as the hook loads it (`--config`, `$NVHOOK_CONFIG`, the
/// default file, NVIDIA's file): a typo is named with its line and the valid keys.
fn config(host: &Host, out: &mut Vec<Finding>) -> Option<Loaded> {
    match Config::load(host.config_flag.as_deref()) {
        Err(e) => {
            out.push(Finding::fail(
                "nvhook.config",
                e.to_string(),
                "edit the file it names: every GPU container's start fails with this error (the package's /etc/nvhook/config.toml lists every key, commented)",
            ));
            None
        }
        Ok(l) => {
            out.push(loaded_finding(&l));
            Some(l)
        }
    }
}

fn loaded_finding(l: &Loaded) -> Finding {
    match (&l.path, &l.nvidia_path) {
        (Some(p), _) => Finding::ok("nvhook.config", format!("{} parses", p.display())),
        (None, Some(nv)) if !l.warnings.is_empty() => Finding::warn(
            "nvhook.config",
            format!(
                "no nvhook file; NVIDIA's {} translated, with keys nvhook ignores: {}",
                nv.display(),
                l.warnings.join("; ")
            ),
            "write /etc/nvhook/config.toml with the settings you need (`nvhook config` prints those in effect)",
        ),
        (None, Some(nv)) => Finding::ok(
            "nvhook.config",
            format!("no nvhook file; NVIDIA's {} translated", nv.display()),
        ),
        (None, None) => Finding::ok("nvhook.config", "no configuration file: the defaults"),
    }
}

/// The log file the hook appends to, checked without creating it.
pub fn log_file(cfg: &LogConfig) -> Finding {
    use std::os::unix::fs::OpenOptionsExt;
    let (path, configured) = match &cfg.file {
        Some(p) => (p.as_path(), true),
        None => (Path::new(DEFAULT_FILE), false),
    };
    let problem = match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            Some("is not a regular file (a link, a FIFO, ...): nothing is logged".to_string())
        }
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(super::NO_FOLLOW_NO_WAIT)
            .open(path)
            .err()
            .map(|e| format!("cannot be opened for appending: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
                .err()
                .map(|e| format!("does not exist, and {} is not writable: {e}", dir.display()))
        }
        Err(e) => Some(format!("cannot be looked at: {e}")),
    };
    let Some(problem) = problem else {
        return Finding::ok("nvhook.log", format!("{} is writable", path.display()));
    };
    let saw = format!("log file {} {problem}", path.display());
    let fix = "make it a regular file root may append to, in a directory root may write (or point [log] file elsewhere)";
    // A configured file that cannot be written: starts go on, unlogged, against the
    // setting (a FAIL); the default one is best effort. A plain user's doctor cannot
    // judge root's file.
    if configured && nix::unistd::geteuid().is_root() {
        Finding::fail("nvhook.log", saw, fix)
    } else {
        Finding::warn("nvhook.log", saw, fix)
    }
}

/// The loader cache mode; with `ldconfig`, the configured binary is checked as the hook
/// checks it and run once in its sandbox over an empty root.
pub fn ld_cache(cfg: &Config) -> Finding {
    if cfg.ld_cache == LdCache::Nvhook {
        return Finding::ok(
            "nvhook.ld-cache",
            "ld-cache = \"nvhook\": nvhook writes each container's ld.so.cache itself, no ldconfig runs",
        );
    }
    let spec = match cfg.ldconfig_checked() {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                "nvhook.ld-cache",
                e.to_string(),
                "set ldconfig = \"@/sbin/ldconfig\", or ld-cache = \"nvhook\"",
            )
        }
    };
    let (on_host, path) = cfg.ldconfig_target();
    if !on_host {
        return Finding::warn(
            "nvhook.ld-cache",
            format!("ldconfig = {spec:?}: the image's own ldconfig runs (as the container's root, in the sandbox); not checked here"),
            "prefer the host's: ldconfig = \"@/sbin/ldconfig\"",
        );
    }
    let exe = match ldconfig::seal_host(path) {
        Ok(exe) => exe,
        Err(e) => {
            return Finding::fail(
                "nvhook.ld-cache",
                e.to_string(),
                "name a static, root-owned host ldconfig: ldconfig = \"@/sbin/ldconfig\" (Ubuntu: \"@/sbin/ldconfig.real\"); or ld-cache = \"nvhook\"",
            )
        }
    };
    match sandbox_run(&exe, cfg) {
        Ok(()) => Finding::ok(
            "nvhook.ld-cache",
            format!(
                "ld-cache = \"ldconfig\": {path} ran in its sandbox (own user namespace: {})",
                if cfg.ldconfig_user_namespace {
                    "yes"
                } else {
                    "no, ldconfig-user-namespace = false"
                }
            ),
        ),
        Err(e) if !nix::unistd::geteuid().is_root() => Finding::warn(
            "nvhook.ld-cache",
            format!(
                "{path} not run in its sandbox as uid {}: {e}",
                nix::unistd::geteuid()
            ),
            "run doctor as root: the hook runs ldconfig as root",
        ),
        Err(e) => {
            let fix = if e.contains("namespace") {
                "allow user namespaces (sysctl user.max_user_namespaces=15000), or set ldconfig-user-namespace = false; or ld-cache = \"nvhook\""
            } else {
                "check that the configured ldconfig is glibc's (it must write the cache it is given with -C); or ld-cache = \"nvhook\""
            };
            Finding::fail(
                "nvhook.ld-cache",
                format!("{path} does not run in its sandbox: {e}"),
                fix,
            )
        }
    }
}

/// Runs the sealed ldconfig as the hook does, over an empty root made for it: it must
/// write that root's cache.
fn sandbox_run(exe: &ldconfig::Exe, cfg: &Config) -> Result<(), String> {
    let dir = super::private_temp_dir("ldconfig").map_err(|e| format!("temporary dir: {e}"))?;
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("etc"))?;
        std::fs::create_dir_all(dir.join("lib"))?;
        std::fs::write(dir.join("etc/ld.so.conf"), "")
    })();
    let result = made.map_err(|e| e.to_string()).and_then(|()| {
        let root = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let proc = std::fs::File::open("/proc").map_err(|e| e.to_string())?;
        let maps = ldconfig::IdMaps::identity();
        let args: Vec<String> = ["-f", "/etc/ld.so.conf", "-C", "/etc/ld.so.cache", "/lib"]
            .map(String::from)
            .into();
        ldconfig::run(
            exe,
            root.as_fd(),
            proc.as_fd(),
            cfg.ldconfig_user_namespace.then_some(&maps),
            &args,
            cfg.ldconfig_deadline(),
        )
        .map_err(|e| e.to_string())?;
        if !dir.join("etc/ld.so.cache").is_file() {
            return Err("it exited without writing the cache".into());
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn host_with_config(dir: &Path, text: &str) -> Host {
        let p = dir.join("config.toml");
        std::fs::write(&p, text).unwrap();
        Host {
            config_flag: Some(p),
            ..Host::under(dir)
        }
    }

    #[test]
    fn a_config_typo_fails_with_its_line_and_the_valid_keys() {
        let d = tempfile::tempdir().unwrap();
        let host = host_with_config(d.path(), "no-cgroups = false\nld-cahce = \"nvhook\"\n");
        let mut out = Vec::new();
        assert!(config(&host, &mut out).is_none());
        assert_eq!(out[0].verdict, Verdict::Fail);
        assert!(
            out[0].saw.contains("line 2: unknown field `ld-cahce`"),
            "{:?}",
            out[0]
        );
        assert!(out[0].saw.contains("`ld-cache`"), "{:?}", out[0]);
        let host = host_with_config(d.path(), "ld-cache = \"nvhook\"\n");
        let mut out = Vec::new();
        assert!(config(&host, &mut out).is_some());
        assert_eq!(out[0].verdict, Verdict::Ok, "{:?}", out[0]);
    }

    #[test]
    fn a_missing_hook_binary_fails_and_a_group_writable_one_too() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        let mut out = Vec::new();
        binaries(&host, &mut out);
        assert_eq!(out[0].check, "nvhook.hook");
        assert_eq!(out[0].verdict, Verdict::Fail, "{:?}", out[0]);
        assert_eq!(out[1].verdict, Verdict::Warn, "{:?}", out[1]);
        // a copy of this test binary stands in for nvhook: writable by its group
        let bin = d.path().join("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(std::env::current_exe().unwrap(), bin.join("nvhook")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("nvhook"), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        let f = installed_binary("nvhook.hook", &bin.join("nvhook"));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
    }

    #[test]
    fn an_unwritable_configured_log_fails() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut cfg = LogConfig {
            file: Some(fifo),
            ..Default::default()
        };
        let f = log_file(&cfg);
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("not a regular file"), "{f:?}");
        cfg.file = Some(d.path().join("no-such-dir/nvhook.log"));
        assert_eq!(log_file(&cfg).verdict, Verdict::Fail);
        cfg.file = Some(d.path().join("nvhook.log"));
        assert_eq!(log_file(&cfg).verdict, Verdict::Ok);
        assert!(
            !d.path().join("nvhook.log").exists(),
            "checked, not created"
        );
    }

    fn ldconfig_mode(l: &str) -> Config {
        Config {
            ld_cache: LdCache::Ldconfig,
            ldconfig: l.into(),
            ..Config::default()
        }
    }

    #[test]
    fn an_ldconfig_that_is_not_static_fails() {
        // a dynamic program where a static ldconfig is expected
        let f = ld_cache(&ldconfig_mode("@/bin/true"));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("not a statically linked"), "{f:?}");
        assert_eq!(ld_cache(&Config::default()).verdict, Verdict::Ok);
    }

    #[test]
    fn an_ldconfig_in_the_container_fails_without_the_opt_in() {
        let f = ld_cache(&ldconfig_mode("/sbin/ldconfig"));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("inside the container"), "{f:?}");
    }

    #[test]
    fn a_sealed_program_that_is_no_ldconfig_fails_in_the_sandbox() {
        // static and root's, so it is sealed, but it writes no cache
        let f = ld_cache(&ldconfig_mode("@/bin/busybox"));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("does not run in its sandbox"), "{f:?}");
        assert!(f
            .fix
            .unwrap()
            .starts_with("check that the configured ldconfig"));
    }

    #[test]
    fn the_hosts_ldconfig_runs_in_its_sandbox() {
        let c = ldconfig_mode(&crate::container::config::default_ldconfig(Path::new("/")));
        let f = ld_cache(&c);
        assert_eq!(f.verdict, Verdict::Ok, "{f:?}");
    }
}
