//! `--run`: one throwaway container through the installed shim (the path Docker,
//! containerd and CRI-O take: shim, then the real runtime, then the hook), asking for
//! GPU 0, from a busybox image made on the spot. It names the step that failed: the
//! set-up, the runtime, the hook (its one-line error), or what the container saw (GPU
//! 0's node, and no other GPU's node or `/proc` entry).

use super::{Finding, Host};
use crate::container::config::{Config, Loaded};
use crate::host::driver::Driver;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the container may take, start to exit.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How the throwaway container asks for GPU 0: as users do (`NVIDIA_VISIBLE_DEVICES`),
/// unless the configuration ignores that variable in an unprivileged container; then by
/// NVIDIA's volume-mount form where accepted, else as a privileged container would
/// (`CAP_SYS_ADMIN` in its bounding set, none in effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Env,
    VolumeMount,
    Privileged,
}

impl Ask {
    pub fn for_config(cfg: &Config) -> Ask {
        if cfg.accept_envvar_when_unprivileged {
            Ask::Env
        } else if cfg.accept_volume_mounts {
            Ask::VolumeMount
        } else {
            Ask::Privileged
        }
    }
}

/// Runs the container and judges what it saw.
pub fn check(host: &Host, loaded: Option<&Loaded>, driver: Option<&Driver>) -> Finding {
    if !nix::unistd::geteuid().is_root() {
        return Finding::warn(
            "live.run",
            "not run: the live container is started as root, as engines start GPU containers",
            "sudo nvhook doctor --run",
        );
    }
    let (shim, busybox) = match prerequisites(host) {
        Ok(x) => x,
        Err(f) => return f,
    };
    if loaded.is_none() {
        return fail(
            "step 1, set-up: not run: nvhook's configuration does not load, so every GPU container's start fails with its error".into(),
            "mend nvhook.config first",
        );
    }
    let Some(d) = driver.filter(|d| !d.gpus.is_empty()) else {
        return fail(
            "step 1, set-up: no GPU 0 (see driver.* above)".into(),
            "mend the driver first",
        );
    };
    let dir = match super::private_temp_dir("run") {
        Ok(d) => d,
        Err(e) => {
            return fail(
                format!("step 1, set-up: no scratch dir: {e}"),
                "run it as root",
            )
        }
    };
    let cfg = loaded.map(|l| l.config.clone()).unwrap_or_default();
    let result = bundle(&dir, &busybox, Ask::for_config(&cfg))
        .map_err(|e| {
            format!(
                "step 1, set-up: cannot make the bundle in {}: {e}",
                dir.display()
            )
        })
        .and_then(|()| {
            let how = How {
                config: loaded.and_then(|l| l.path.as_deref()),
                path_env: &host.path_env,
                timeout: TIMEOUT,
            };
            run(&shim, &dir, &how)
        });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(out) => judge(&out, d, &shim),
        Err(saw) => fail(
            saw,
            "mend what that step names; the hook's own line says what and why",
        ),
    }
}

fn fail(saw: String, fix: &str) -> Finding {
    Finding::fail("live.run", saw, fix)
}

/// The installed shim and a static busybox, both root's and writable by no one else
/// (doctor runs them as root).
fn prerequisites(host: &Host) -> Result<(PathBuf, PathBuf), Finding> {
    let Some(shim) = host.installed("nvhook-runtime") else {
        return Err(fail(
            "step 1, set-up: nvhook-runtime is not installed".into(),
            "install it (see nvhook.shim above)",
        ));
    };
    let Some(busybox) = static_busybox(host) else {
        return Err(fail(
            "step 1, set-up: no static busybox on PATH to make the throwaway image from".into(),
            "apt-get install busybox-static (dnf install busybox)",
        ));
    };
    for p in [&shim, &busybox] {
        if let Err(e) = crate::common::trust::check_root_owned("doctor --run", p) {
            return Err(fail(
                format!("step 1, set-up: {e}: not run as root"),
                super::FIX_OWNERSHIP,
            ));
        }
    }
    Ok((shim, busybox))
}

/// GPU 0's node must be there, and no other GPU's node or `/proc` entry.
fn judge(out: &str, d: &Driver, shim: &Path) -> Finding {
    let gpu = &d.gpus[0];
    let node = format!("/dev/nvidia{}", gpu.minor);
    let others: Vec<String> = d
        .gpus
        .iter()
        .skip(1)
        .flat_map(|g| [format!("/dev/nvidia{}", g.minor), g.uuid.clone()])
        // a node by its whole path (/dev/nvidia1 is no /dev/nvidia10), a UUID anywhere
        .filter(|o| {
            out.lines()
                .any(|l| l.trim() == o || (o.starts_with("GPU-") && l.contains(o.as_str())))
        })
        .collect();
    if !out.lines().any(|l| l.trim() == node) || !others.is_empty() {
        return fail(
            format!(
                "step 4, the container: it ran, but did not see GPU 0 alone ({node}, {}): it saw {:?}",
                gpu.uuid,
                out.trim()
            ),
            "check the hook's log ([log] level = \"debug\") for what it planned",
        );
    }
    Finding::ok(
        "live.run",
        format!(
            "a container through {} asked for GPU 0 ({}) and saw {node}, and no other GPU",
            shim.display(),
            gpu.uuid
        ),
    )
}

/// A busybox that needs no library from the image.
fn static_busybox(host: &Host) -> Option<PathBuf> {
    let p = std::fs::canonicalize(host.which("busybox")?).ok()?;
    let head = super::read_head(&p, 64 << 10)?;
    crate::host::elf::is_static_elf(&head).then_some(p)
}

/// `dir/config.json` and `dir/rootfs`: busybox, the dirs runc and the hook use.
fn bundle(dir: &Path, busybox: &Path, ask: Ask) -> std::io::Result<()> {
    let root = dir.join("rootfs");
    for d in [
        "bin", "usr/bin", "usr/lib", "etc", "proc", "dev", "sys", "tmp",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for a in ["sh", "ls", "cat", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    std::fs::write(root.join("etc/ld.so.conf"), "")?;
    std::fs::write(dir.join("config.json"), spec(ask).to_string())
}

/// The container: GPU 0 asked for as `ask` says, printing its device nodes and the GPUs
/// its `/proc` shows; runc's default masked and read-only paths.
pub fn spec(ask: Ask) -> serde_json::Value {
    let script = "ls -1 /dev/nvidia*; cat /proc/driver/nvidia/gpus/*/information 2>/dev/null; true";
    let visible = if ask == Ask::VolumeMount { "void" } else { "0" };
    let mut v = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/usr/bin:/bin", format!("NVIDIA_VISIBLE_DEVICES={visible}"), "NVIDIA_DRIVER_CAPABILITIES=utility"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "nvhook-doctor",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    match ask {
        Ask::Env => {}
        Ask::VolumeMount => v["mounts"].as_array_mut().expect("an array").push(serde_json::json!(
            {"destination": format!("{}/0", crate::container::request::DEVICE_LIST_DIR), "type": "bind", "source": "/dev/null", "options": ["bind", "ro"]}
        )),
        Ask::Privileged => v["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_ADMIN"]),
    }
    v
}

/// `nvhook-runtime run` on the bundle, with its own state dir, its output in files (a
/// container left behind cannot hold a pipe open), killed with its process group after
/// [`TIMEOUT`]; gives what the container printed, or the step that failed.
/// What the shim is run with.
struct How<'a> {
    /// nvhook's configuration file, for the shim and the hook it registers.
    config: Option<&'a Path>,
    /// The runtime's lookup: the one doctor judged (engines run with a service's).
    path_env: &'a std::ffi::OsStr,
    timeout: Duration,
}

fn run(shim: &Path, dir: &Path, how: &How<'_>) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let id = format!("nvhook-doctor-{}", std::process::id());
    let state = dir.join("state");
    let file =
        |n: &str| std::fs::File::create(dir.join(n)).map_err(|e| format!("step 1, set-up: {e}"));
    let mut cmd = std::process::Command::new(shim);
    cmd.arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(dir)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?)
        .process_group(0);
    cmd.env("PATH", how.path_env);
    if let Some(c) = how.config {
        cmd.env(crate::container::config::CONFIG_ENV, c);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("step 2, the runtime: cannot run {}: {e}", shim.display()))?;
    // killed with its group at the deadline (or where waiting fails): no status
    let status = super::wait_within(&mut child, how.timeout).unwrap_or(None);
    let _ = super::output_within(
        std::process::Command::new(shim)
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id]),
        how.timeout.min(Duration::from_secs(10)),
    );
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    match status {
        Some(st) if st.success() => Ok(stdout),
        None => Err(format!(
            "step 2, the runtime ({}): no end after {} s, killed: {}",
            shim.display(),
            how.timeout.as_secs(),
            stderr.trim()
        )),
        Some(_) => match stderr.lines().find(|l| l.contains("nvhook:")) {
            Some(l) => Err(format!("step 3, the hook: {}", l.trim())),
            None => Err(format!(
                "step 2, the runtime ({} and what it runs) failed: {}",
                shim.display(),
                stderr.trim()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;
    use std::time::Instant;

    fn driver_of(gpus: &[(u32, &str)]) -> Driver {
        let mut d = Driver::default();
        for (i, (minor, uuid)) in gpus.iter().enumerate() {
            d.gpus.push(crate::host::driver::Gpu {
                index: i as u32,
                minor: *minor,
                uuid: uuid.to_string(),
                bus_id: crate::host::procfs::BusId::parse("0000:18:00.0").unwrap(),
                model: "m".into(),
                node: None,
            });
        }
        d
    }

    #[test]
    fn a_container_that_sees_another_gpu_fails_and_node_names_are_whole() {
        let mut d = driver_of(&[(1, "GPU-aaa"), (0, "GPU-bbb")]);
        let shim = Path::new("/usr/bin/nvhook-runtime");
        assert_eq!(
            judge("/dev/nvidia1\n/dev/nvidiactl\n", &d, shim).verdict,
            Verdict::Ok
        );
        let f = judge("/dev/nvidia0\n/dev/nvidia1\n", &d, shim);
        assert!(f.saw.contains("did not see GPU 0 alone"), "{f:?}");
        let f = judge("/dev/nvidia1\nGPU UUID: GPU-bbb\n", &d, shim);
        assert_eq!(f.verdict, Verdict::Fail, "another GPU's /proc entry: {f:?}");
        // GPU 1 of 12 is minor 1: /dev/nvidia10 of GPU 0 does not count as it
        d = driver_of(&[(10, "GPU-aaa"), (1, "GPU-bbb")]);
        assert_eq!(judge("/dev/nvidia10\n", &d, shim).verdict, Verdict::Ok);
    }

    #[test]
    fn a_runtime_that_does_not_end_is_killed_with_its_group() {
        let d = tempfile::tempdir().unwrap();
        let shim = d.path().join("shim");
        // the child holds the output file open: only the group's kill ends it
        std::fs::write(&shim, "#!/bin/sh\nsleep 60 &\nsleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let how = How {
            config: None,
            path_env: std::ffi::OsStr::new("/usr/bin:/bin"),
            timeout: Duration::from_millis(500),
        };
        let clock = Instant::now();
        let e = run(&shim, d.path(), &how).unwrap_err();
        assert!(e.contains("no end after 0 s, killed"), "{e}");
        assert!(
            clock.elapsed() < Duration::from_secs(20),
            "{:?}",
            clock.elapsed()
        );
        let e = run(&d.path().join("missing"), d.path(), &how).unwrap_err();
        // spawn's error where exec fails in the parent; the child's exit under emulators
        assert!(e.starts_with("step 2, the runtime"), "{e}");
    }

    #[test]
    fn the_container_asks_as_the_configuration_accepts() {
        let cfg = |env: bool, vol: bool| Config {
            accept_envvar_when_unprivileged: env,
            accept_volume_mounts: vol,
            ..Config::default()
        };
        assert_eq!(Ask::for_config(&Config::default()), Ask::Env);
        let vol = spec(Ask::for_config(&cfg(false, true)));
        assert_eq!(
            vol["mounts"][3]["destination"],
            "/var/run/nvidia-container-devices/0"
        );
        let p = spec(Ask::for_config(&cfg(false, false)));
        assert_eq!(p["process"]["capabilities"]["bounding"][0], "CAP_SYS_ADMIN");
        assert_eq!(
            p["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert!(
            spec(Ask::Env)["linux"]["readonlyPaths"]
                .as_array()
                .unwrap()
                .len()
                > 3
        );
    }
}
