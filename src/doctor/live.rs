//! `--run`: one throwaway container through the installed shim (the path Docker,
//! containerd and CRI-O take: shim, then the real runtime, then the hook), asking for
//! GPU 0, from a busybox image made on the spot. It names the step that failed: the
//! set-up, the runtime, the hook (its one-line error), or what the container saw (GPU
//! 0's node, and no other GPU's node or `/proc` entry).

use super::{Finding, Host};
use crate::container::config::{Config, Loaded};
use crate::host::driver::Driver;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        .and_then(|()| run(&shim, &dir, loaded.and_then(|l| l.path.as_deref())));
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
                "chown root:root it and chmod go-w it",
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
        .filter(|o| out.lines().any(|l| l.trim() == o || l.contains(o.as_str())))
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
    let p = host.which("busybox")?;
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
fn run(shim: &Path, dir: &Path, config: Option<&Path>) -> Result<String, String> {
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
    if let Some(c) = config {
        cmd.env(crate::container::config::CONFIG_ENV, c);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("step 2, the runtime: cannot run {}: {e}", shim.display()))?;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                // SAFETY: a signal to the process group this function started.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = super::output_within(
        std::process::Command::new(shim)
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id]),
        Duration::from_secs(10),
    );
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    match status {
        Some(st) if st.success() => Ok(stdout),
        None => Err(format!(
            "step 2, the runtime ({}): no end after {} s: {}",
            shim.display(),
            TIMEOUT.as_secs(),
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
