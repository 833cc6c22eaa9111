//! The container engines: for Docker, containerd, CRI-O and Podman, whether each is
//! installed and whether nvhook is set up in it, judged by the installers' own edit (an
//! install that would change nothing is one in place); every nvhook path an engine's
//! files name must exist; containerd's CRI runtimes as containerd itself reads them;
//! the runtime the shim execs (never the shim again); Docker's `--gpus` hook.

use super::{files_in, is_program, Finding, Host, Verdict};
use crate::container::config::Config;
use crate::engines::install::{self, Engine};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const ENGINES: &[(Engine, &str, &str)] = &[
    (Engine::Docker, "docker", "dockerd"),
    (Engine::Containerd, "containerd", "containerd"),
    (Engine::Crio, "crio", "crio"),
    (Engine::Podman, "podman", "podman"),
];

/// The program that tells an engine is installed.
fn program(engine: Engine) -> &'static str {
    ENGINES
        .iter()
        .find(|(e, _, _)| *e == engine)
        .map_or("", |(_, _, p)| p)
}

/// Appends this section's findings.
pub fn check(host: &Host, cfg: &Config, out: &mut Vec<Finding>) {
    let paths = paths(host);
    let mut tally = Tally::default();
    for (engine, name, program) in ENGINES {
        let bin = host.which(program);
        let (f, setup) = engine_finding(host, &paths, *engine, name, bin.as_deref());
        if bin.is_some() {
            tally.installed += 1;
            tally.configured += usize::from(setup == Setup::Nvhook);
            tally.foreign += usize::from(setup == Setup::Nvidias);
        }
        out.push(f);
    }
    if let Some(f) = containerd_cri(host) {
        out.push(f);
    }
    out.push(any_engine(&tally, host));
    out.push(shim_runtime(host, cfg));
    if host.which("dockerd").is_some() {
        out.push(docker_gpus(host));
    }
}

/// The installers' paths, pointed at the installed binaries as `nvhook install` does.
fn paths(host: &Host) -> install::Paths {
    let d = install::Paths::default();
    install::Paths {
        runtime_path: host.installed("nvhook-runtime").unwrap_or(d.runtime_path),
        hook_path: host.installed("nvhook").unwrap_or(d.hook_path),
        ..host.engines.clone()
    }
}

/// The files of `engine` that can name nvhook.
fn engine_files(host: &Host, engine: Engine) -> Vec<PathBuf> {
    let listed = |dir: &PathBuf, ext: &str| files_in([dir], &[ext]);
    let e = &host.engines;
    match engine {
        Engine::Docker => vec![e.docker_config.clone()],
        Engine::Containerd => {
            let mut v = vec![e.containerd_config.clone()];
            v.extend(listed(&e.containerd_dropin_dir, "toml"));
            v
        }
        Engine::Crio => listed(&e.crio_dropin_dir, "conf")
            .into_iter()
            .chain(listed(&e.crio_dropin_dir, "toml"))
            .collect(),
        Engine::Podman => files_in(&host.hooks_dirs, &["json"]),
    }
}

/// Absolute paths to nvhook's binaries that `text` names, wherever they are in it.
pub fn nvhook_paths(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "/._-+@".contains(c)))
        .filter(|t| {
            t.starts_with('/') && (t.ends_with("/nvhook") || t.ends_with("/nvhook-runtime"))
        })
        .map(str::to_owned)
        .collect();
    v.dedup();
    v
}

/// The nvhook paths `file` names outside comments (a TOML file's `#` lines, a commented
/// old path, are no setting).
fn named_in(file: &Path) -> Vec<String> {
    let Some(text) = super::read_small(file) else {
        return Vec::new();
    };
    let live: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    nvhook_paths(&live)
}

/// Whose runtime an engine has for GPU containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// nvhook's, under any runtime name.
    Nvhook,
    /// Someone else's (NVIDIA's toolkit) under nvhook's runtime name, and no nvhook.
    Nvidias,
    Neither,
}

/// One engine's finding, and whose runtime it has; `bin`: the engine's program on the
/// host's `PATH`, if it is installed.
fn engine_finding(
    host: &Host,
    paths: &install::Paths,
    engine: Engine,
    name: &str,
    bin: Option<&Path>,
) -> (Finding, Setup) {
    let check = format!("engines.{name}");
    let named: Vec<(PathBuf, String)> = engine_files(host, engine)
        .into_iter()
        .flat_map(|f| named_in(&f).into_iter().map(move |p| (f.clone(), p)))
        .collect();
    if let Some((f, p)) = named.iter().find(|(_, p)| !is_program(Path::new(p))) {
        let f = Finding::fail(
            &check,
            format!(
                "{} names {p}, which is not an installed program",
                f.display()
            ),
            format!(
                "install nvhook there, or point {name} at the installed one: nvhook install {name}"
            ),
        );
        return (f, Setup::Neither);
    }
    let set_up = !named.is_empty();
    let mut setup = if set_up {
        Setup::Nvhook
    } else {
        Setup::Neither
    };
    let Some(bin) = bin else {
        let saw = if set_up {
            format!(
                "not installed ({} not on PATH), though its files name nvhook",
                program(engine)
            )
        } else {
            "not installed".to_string()
        };
        return (Finding::ok(&check, saw), setup);
    };
    let f = match install::install(engine, paths, &install::Options::default()) {
        Err(e) => {
            if !set_up && is_taken(&e) {
                setup = Setup::Nvidias;
            }
            install_error(&check, bin, name, &named, e)
        }
        Ok(changes) if changes.is_empty() => Finding::ok(
            &check,
            format!("{} installed, nvhook set up ({})", bin.display(), summary(engine, paths)),
        ),
        Ok(_) if set_up => Finding::ok(
            &check,
            format!(
                "{} installed, nvhook set up in {} (otherwise than `nvhook install {name}` writes it)",
                bin.display(),
                named[0].0.display()
            ),
        ),
        Ok(_) => Finding::warn(
            &check,
            format!("{} installed, nvhook not set up in it", bin.display()),
            format!("nvhook install {name} (see first: nvhook install {name} --dry-run); {}", install::restart_hint(engine)),
        ),
    };
    let f = match (f.verdict, engine) {
        (Verdict::Ok, Engine::Podman) => nvidia_hook_beside(host).unwrap_or(f),
        _ => f,
    };
    (f, setup)
}

/// The installer refused because a runtime of nvhook's name is someone else's.
fn is_taken(e: &install::Error) -> bool {
    use crate::engines::containerd_config::Error as Cd;
    matches!(
        e,
        install::Error::Taken { .. }
            | install::Error::Containerd {
                source: Cd::Taken { .. },
                ..
            }
    )
}

/// What the installer's refusal means: a file the engine cannot read fails; a runtime
/// of that name that is someone else's (NVIDIA's toolkit) is a warning, or nothing
/// where nvhook is set up under another name.
fn install_error(
    check: &str,
    bin: &Path,
    name: &str,
    named: &[(PathBuf, String)],
    e: install::Error,
) -> Finding {
    use crate::engines::containerd_config::Error as Cd;
    let broken = matches!(
        &e,
        install::Error::Read { .. }
            | install::Error::Parse { .. }
            | install::Error::Containerd {
                source: Cd::Parse(_) | Cd::Version(_),
                ..
            }
    );
    if broken {
        return Finding::fail(
            check,
            format!("{} installed; its configuration: {e}", bin.display()),
            format!("mend the file: it does not parse, and {name} will not start with it"),
        );
    }
    if let Some((f, p)) = named.first() {
        return Finding::ok(
            check,
            format!(
                "{} installed, nvhook set up in {} ({p})",
                bin.display(),
                f.display()
            ),
        );
    }
    Finding::warn(
        check,
        format!("{} installed, nvhook not set up in it: {e}", bin.display()),
        format!("nvhook install {name} --force (replaces that runtime), or nvhook install {name} --runtime-name NAME (beside it)"),
    )
}

/// NVIDIA's own hook in hooks.d beside nvhook's: both would run for every container.
fn nvidia_hook_beside(host: &Host) -> Option<Finding> {
    let theirs: Vec<String> = files_in(&host.hooks_dirs, &[])
        .into_iter()
        .filter(|p| {
            super::read_small(p).is_some_and(|t| {
                t.contains("nvidia-container-runtime-hook") || t.contains("nvidia-ctk")
            })
        })
        .map(|p| p.display().to_string())
        .collect();
    (!theirs.is_empty()).then(|| {
        Finding::warn(
            "engines.podman",
            format!("nvhook is set up in hooks.d, and so is NVIDIA's hook: {}; both run for GPU containers", theirs.join(", ")),
            format!("remove NVIDIA's: rm {}", theirs.join(" ")),
        )
    })
}

fn summary(engine: Engine, p: &install::Paths) -> String {
    match engine {
        Engine::Podman => format!("hooks.d runs {}", p.hook_path.display()),
        _ => format!(
            "runtime \"{}\" runs {}",
            install::RUNTIME_NAME,
            p.runtime_path.display()
        ),
    }
}

/// No engine of those installed is set up, and no CDI spec either: nothing can give a
/// container its GPU.
fn any_engine(t: &Tally, host: &Host) -> Finding {
    let cdi = files_in(&host.cdi_dirs, &[]).iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("nvidia"))
    });
    let installed = t.installed;
    match (installed, t.configured, cdi) {
        (0, _, _) => Finding::fail(
            "engines.any",
            "no container engine found (dockerd, containerd, crio, podman on PATH)",
            "install one (apt-get install docker.io, or podman), then nvhook install ENGINE",
        ),
        (_, 0, false) if t.foreign > 0 => Finding::warn(
            "engines.any",
            format!("{installed} engine(s) installed, none set up with nvhook: NVIDIA's toolkit serves {} of them", t.foreign),
            "to use nvhook: nvhook install ENGINE --force (or --runtime-name NAME beside NVIDIA's)",
        ),
        (_, 0, false) => Finding::fail(
            "engines.any",
            format!("{installed} engine(s) installed, none set up with nvhook, and no NVIDIA CDI spec"),
            "nvhook install docker|containerd|crio|podman, or nvhook cdi generate --output /var/run/cdi/nvidia.json",
        ),
        (_, c, _) => Finding::ok(
            "engines.any",
            format!("{c} of {installed} installed engine(s) set up{}", if cdi { ", and a CDI spec" } else { "" }),
        ),
    }
}

/// What the engine findings add up to.
#[derive(Debug, Default)]
struct Tally {
    installed: usize,
    /// Installed, and nvhook set up in it.
    configured: usize,
    /// Installed, with [`Setup::Nvidias`].
    foreign: usize,
}

/// containerd's CRI runtimes as containerd reads its configuration (imports and all):
/// the default runtime must exist (a drop-in that replaced the CRI table loses it and
/// breaks every pod), and nvhook's, where its file has it.
fn containerd_cri(host: &Host) -> Option<Finding> {
    let bin = host.which("containerd")?;
    let cfg = &host.engines.containerd_config;
    let text = super::read_small(cfg)?;
    if let Err(e) = crate::common::trust::check_root_owned("containerd", &bin) {
        return Some(Finding::warn(
            "engines.containerd-cri",
            format!("{e}: not run to read its configuration"),
            super::FIX_OWNERSHIP,
        ));
    }
    let out = super::output_within(
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(cfg)
            .args(["config", "dump"]),
        std::time::Duration::from_secs(10),
    );
    let dump = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return Some(Finding::fail(
                "engines.containerd-cri",
                format!(
                    "containerd refuses {}: {}",
                    cfg.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                format!("mend {} (containerd does not start with it)", cfg.display()),
            ))
        }
        Err(e) => {
            return Some(Finding::warn(
                "engines.containerd-cri",
                format!("cannot run {}: {e}", bin.display()),
                "check the containerd installation",
            ))
        }
    };
    Some(cri_runtimes(
        &dump,
        crate::engines::containerd_config::has_ours(&text),
        cfg,
    ))
}

/// Judges a `containerd config dump`.
pub fn cri_runtimes(dump: &str, ours_in_file: bool, cfg: &Path) -> Finding {
    use crate::engines::containerd_config::lookup;
    let Ok(t) = toml::from_str::<toml::Table>(dump) else {
        return Finding::warn(
            "engines.containerd-cri",
            "containerd's dump does not parse",
            "check the containerd installation",
        );
    };
    let found = ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]
        .iter()
        .find_map(|plugin| {
            let c = lookup(&t, &["plugins", plugin, "containerd"])?;
            let table = c.get("runtimes")?.as_table()?;
            let runtimes: Vec<String> = table.keys().cloned().collect();
            // nvhook's, under whatever name it was installed (`--runtime-name`)
            let ours: Vec<String> = table
                .iter()
                .filter(|(_, r)| {
                    r.get("options")
                        .and_then(|o| o.get("BinaryName"))
                        .and_then(|b| b.as_str())
                        .is_some_and(|b| b.ends_with("/nvhook-runtime"))
                })
                .map(|(n, _)| n.clone())
                .collect();
            let default = c
                .get("default_runtime_name")
                .and_then(|v| v.as_str())
                .unwrap_or("runc")
                .to_string();
            Some((runtimes, ours, default))
        });
    let Some((runtimes, ours, default)) = found else {
        return Finding::ok(
            "engines.containerd-cri",
            "the CRI plugin is not configured (containerd without Kubernetes)",
        );
    };
    if !runtimes.contains(&default) {
        return Finding::fail(
            "engines.containerd-cri",
            format!("default runtime {default:?} is not among the CRI runtimes containerd reads ({}): every pod fails", runtimes.join(", ")),
            format!("set default_runtime_name to a runtime that exists; if {} defines it, a file under `imports` replaced the CRI plugin's table: define the runtimes in {0} itself (nvhook install containerd does)", cfg.display()),
        );
    }
    if ours_in_file && ours.is_empty() {
        return Finding::fail(
            "engines.containerd-cri",
            format!("{} has nvhook's runtime, but containerd does not read it (runtimes: {})", cfg.display(), runtimes.join(", ")),
            "an imported file defines the CRI plugin and replaces the main file's table (containerd 1.x): add the runtime there",
        );
    }
    Finding::ok(
        "engines.containerd-cri",
        format!("CRI runtimes: {} (default {default})", runtimes.join(", ")),
    )
}

/// The runtime the shim execs, found as the shim finds it: it must exist, and must not
/// lead back to the shim (a copy, a link, a wrapper, or NVIDIA's runtime, which would
/// add a second hook).
fn shim_runtime(host: &Host, cfg: &Config) -> Finding {
    // the shim passes over itself (by device and inode: a link to it, under any name)
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let shim = host.installed("nvhook-runtime").and_then(|s| id(&s));
    let not_shim = |p: &PathBuf| shim.is_none() || id(p) != shim;
    let found = cfg.runtime.runtimes.iter().find_map(|c| {
        if c.contains('/') {
            Path::new(c)
                .is_absolute()
                .then(|| PathBuf::from(c))
                .filter(|p| is_program(p) && not_shim(p))
        } else {
            host.which_all(c).into_iter().find(not_shim)
        }
    });
    let Some(rt) = found else {
        return Finding::fail(
            "engines.runtime",
            format!(
                "none of [runtime] runtimes = {:?} is installed: the shim has nothing to run",
                cfg.runtime.runtimes
            ),
            "apt-get install runc (or crun), or name its absolute path in [runtime] runtimes",
        );
    };
    match leads_back(&rt) {
        Some(why) => Finding::fail(
            "engines.runtime",
            format!(
                "the shim would run {}, which {why}: every container through the shim fails",
                rt.display()
            ),
            "put the real runc first in [runtime] runtimes, e.g. runtimes = [\"/usr/sbin/runc\"]",
        ),
        None => Finding::ok("engines.runtime", format!("the shim runs {}", rt.display())),
    }
}

/// Why `rt` is no real runtime, if it is not one.
pub fn leads_back(rt: &Path) -> Option<String> {
    let real = std::fs::canonicalize(rt).unwrap_or_else(|_| rt.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "nvhook-runtime" {
        return Some("is a copy of nvhook-runtime".into());
    }
    if name.starts_with("nvidia-container-runtime") {
        return Some(
            "is NVIDIA's runtime (it adds its own hook, and may run the shim again)".into(),
        );
    }
    let head = super::read_head(&real, 4096).unwrap_or_default();
    let text = String::from_utf8_lossy(&head);
    (head.starts_with(b"#!")
        && (text.contains("nvhook-runtime") || text.contains("nvidia-container-runtime")))
    .then(|| "is a script that runs nvhook-runtime or nvidia-container-runtime".into())
}

/// `docker run --gpus` runs `nvidia-container-runtime-hook` from dockerd's `PATH`.
fn docker_gpus(host: &Host) -> Finding {
    const NAME: &str = "nvidia-container-runtime-hook";
    let fix = |hook: &str| format!("ln -sf {hook} /usr/local/bin/{NAME}");
    let hook = host
        .installed("nvhook")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/local/bin/nvhook".into());
    match host.which(NAME) {
        None => Finding::warn(
            "engines.docker-gpus",
            format!("no {NAME} on PATH: `docker run --gpus` fails (could not select device driver \"\" with capabilities: [[gpu]])"),
            fix(&hook),
        ),
        Some(p) => {
            let real = std::fs::canonicalize(&p).unwrap_or(p.clone());
            if real.file_name().is_some_and(|n| n == "nvhook") {
                Finding::ok("engines.docker-gpus", format!("{} is nvhook ({})", p.display(), real.display()))
            } else {
                Finding::warn(
                    "engines.docker-gpus",
                    format!("{} is not nvhook ({}): `docker run --gpus` runs NVIDIA's hook", p.display(), real.display()),
                    fix(&hook),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_to_nvhook_are_found_in_any_format() {
        let t = r#"{"runtimes":{"nvidia":{"path":"/opt/x/nvhook-runtime"}}} BinaryName = "/usr/bin/nvhook" args = ["nvhook", "prestart"]"#;
        assert_eq!(
            nvhook_paths(t),
            ["/opt/x/nvhook-runtime", "/usr/bin/nvhook"]
        );
        assert!(nvhook_paths("/usr/bin/nvhook-cdi /usr/bin/runc").is_empty());
    }

    const P: &str = "/etc/containerd/config.toml";
    const RUNC: &str = "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"runc\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n";

    #[test]
    fn a_dump_whose_default_runtime_is_gone_fails() {
        let lost = "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"runc\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\nruntime_type = \"io.containerd.runc.v2\"\n";
        let f = cri_runtimes(lost, false, Path::new(P));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("\"runc\" is not among"), "{f:?}");
        assert_eq!(cri_runtimes(RUNC, false, Path::new(P)).verdict, Verdict::Ok);
    }

    #[test]
    fn a_dump_without_the_runtime_the_file_has_fails() {
        let f = cri_runtimes(RUNC, true, Path::new(P));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("does not read it"), "{f:?}");
        // nvhook installed under another name (--runtime-name) is nvhook's all the same
        let renamed = format!("{RUNC}[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.gpu.options]\nBinaryName = \"/usr/bin/nvhook-runtime\"\n");
        assert_eq!(
            cri_runtimes(&renamed, true, Path::new(P)).verdict,
            Verdict::Ok
        );
    }

    fn runtime_host(d: &Path) -> Host {
        Host {
            path_env: d.into(),
            ..Host::under(d)
        }
    }

    #[test]
    fn a_runtime_that_leads_back_to_the_shim_fails() {
        let d = tempfile::tempdir().unwrap();
        let host = runtime_host(d.path());
        use std::os::unix::fs::PermissionsExt;
        let script = d.path().join("runc");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec /usr/local/bin/nvhook-runtime \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = shim_runtime(&host, &Config::default());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("is a script"), "{f:?}");
        std::fs::remove_file(&script).unwrap();
        std::os::unix::fs::symlink("/bin/true", &script).unwrap();
        assert_eq!(shim_runtime(&host, &Config::default()).verdict, Verdict::Ok);
    }

    #[test]
    fn the_shim_itself_on_path_is_passed_over_as_the_shim_does() {
        let d = tempfile::tempdir().unwrap();
        let host = runtime_host(d.path());
        let bin = d.path().join("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/true", bin.join("nvhook-runtime")).unwrap();
        // runc on PATH is a link to the installed shim; crun is real
        std::os::unix::fs::symlink(bin.join("nvhook-runtime"), d.path().join("runc")).unwrap();
        std::os::unix::fs::symlink("/bin/true", d.path().join("crun")).unwrap();
        let f = shim_runtime(&host, &Config::default());
        assert_eq!(f.verdict, Verdict::Ok, "{f:?}");
        assert!(f.saw.ends_with("/crun"), "{f:?}");
    }

    #[test]
    fn no_runtime_at_all_fails() {
        let d = tempfile::tempdir().unwrap();
        let f = shim_runtime(&runtime_host(d.path()), &Config::default());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("none of"), "{f:?}");
    }

    #[test]
    fn no_engine_set_up_and_no_spec_fails() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        let t = |installed, configured, foreign| Tally {
            installed,
            configured,
            foreign,
        };
        assert_eq!(any_engine(&t(2, 0, 0), &host).verdict, Verdict::Fail);
        assert_eq!(any_engine(&t(2, 1, 0), &host).verdict, Verdict::Ok);
        // NVIDIA's toolkit gives GPUs there: a warning, not a failure
        assert_eq!(any_engine(&t(2, 0, 1), &host).verdict, Verdict::Warn);
        std::fs::create_dir_all(d.path().join("etc/cdi")).unwrap();
        std::fs::write(d.path().join("etc/cdi/nvidia.json"), "{}").unwrap();
        assert_eq!(any_engine(&t(2, 0, 0), &host).verdict, Verdict::Ok);
    }

    #[test]
    fn no_engine_installed_fails() {
        let d = tempfile::tempdir().unwrap();
        let f = any_engine(&Tally::default(), &Host::under(d.path()));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.starts_with("no container engine found"), "{f:?}");
    }

    /// A host with a `dockerd` and a `containerd` (stand-ins) and their config dirs.
    fn engine_host(d: &Path) -> (Host, install::Paths) {
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for p in ["dockerd", "containerd"] {
            std::os::unix::fs::symlink("/bin/true", bin.join(p)).unwrap();
        }
        let host = Host {
            path_env: bin.into(),
            ..Host::under(d)
        };
        std::fs::create_dir_all(d.join("etc/docker")).unwrap();
        std::fs::create_dir_all(d.join("etc/containerd")).unwrap();
        let p = paths(&host);
        (host, p)
    }

    /// The finding of `engine`, its program looked up as `check` does.
    fn finding(
        host: &Host,
        p: &install::Paths,
        engine: Engine,
        name: &str,
        program: &str,
    ) -> (Finding, Setup) {
        engine_finding(host, p, engine, name, host.which(program).as_deref())
    }

    fn docker(host: &Host, p: &install::Paths, daemon_json: &str) -> (Finding, Setup) {
        std::fs::write(&host.engines.docker_config, daemon_json).unwrap();
        finding(host, p, Engine::Docker, "docker", "dockerd")
    }

    #[test]
    fn an_engine_file_naming_a_missing_nvhook_fails() {
        let d = tempfile::tempdir().unwrap();
        let (host, p) = engine_host(d.path());
        let (f, _) = docker(
            &host,
            &p,
            r#"{"runtimes":{"nvidia":{"path":"/nonexistent/nvhook-runtime"}}}"#,
        );
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("/nonexistent/nvhook-runtime"), "{f:?}");
        // naming nothing of nvhook's: not set up, a warning
        let (f, _) = docker(&host, &p, "{}");
        assert_eq!(f.verdict, Verdict::Warn, "not set up: {f:?}");
    }

    #[test]
    fn an_engine_file_that_does_not_parse_fails() {
        let d = tempfile::tempdir().unwrap();
        let (host, p) = engine_host(d.path());
        let (f, _) = docker(&host, &p, "{");
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.fix.unwrap().contains("does not parse"));
    }

    #[test]
    fn an_engine_file_that_cannot_be_read_fails() {
        let d = tempfile::tempdir().unwrap();
        let (host, p) = engine_host(d.path());
        std::fs::create_dir(&host.engines.docker_config).unwrap();
        let (f, _) = finding(&host, &p, Engine::Docker, "docker", "dockerd");
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("cannot read"), "{f:?}");
    }

    #[test]
    fn a_containerd_config_of_an_unknown_version_fails() {
        let d = tempfile::tempdir().unwrap();
        let (host, p) = engine_host(d.path());
        std::fs::write(&host.engines.containerd_config, "version = 9\n").unwrap();
        let (f, _) = finding(&host, &p, Engine::Containerd, "containerd", "containerd");
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("config version 9"), "{f:?}");
        // commented out, nvhook's old block names nothing
        let old = "version = 2\n# BinaryName = \"/nonexistent/nvhook-runtime\"\n";
        std::fs::write(&host.engines.containerd_config, old).unwrap();
        let (f, set_up) = finding(&host, &p, Engine::Containerd, "containerd", "containerd");
        assert_eq!(
            (f.verdict, set_up),
            (Verdict::Warn, Setup::Neither),
            "{f:?}"
        );
    }

    #[test]
    fn nvidias_runtime_under_the_name_warns_and_nvhook_beside_it_is_set_up() {
        let d = tempfile::tempdir().unwrap();
        let (host, p) = engine_host(d.path());
        let theirs = r#"{"runtimes":{"nvidia":{"path":"/usr/bin/nvidia-container-runtime"}}}"#;
        let (f, setup) = docker(&host, &p, theirs);
        assert_eq!((f.verdict, setup), (Verdict::Warn, Setup::Nvidias), "{f:?}");
        assert!(f.fix.unwrap().contains("--force"));
        let shim = d.path().join("bin/nvhook-runtime");
        std::os::unix::fs::symlink("/bin/true", &shim).unwrap();
        let both = format!(
            r#"{{"runtimes":{{"nvidia":{{"path":"/usr/bin/nvidia-container-runtime"}},"gpu":{{"path":"{}"}}}}}}"#,
            shim.display()
        );
        let (f, set_up) = docker(&host, &p, &both);
        assert_eq!((f.verdict, set_up), (Verdict::Ok, Setup::Nvhook), "{f:?}");
        let (f, _) = finding(&host, &p, Engine::Crio, "crio", "crio");
        assert_eq!((f.verdict, f.saw.as_str()), (Verdict::Ok, "not installed"));
    }
}
