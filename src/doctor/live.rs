//! `--run`: one throwaway container through the installed shim (the path Docker,
//! containerd and CRI-O take: shim, then the real runtime, then the hook), asking for
//! GPU 0, from a busybox image made on the spot. It names the step that failed: the
//! set-up, the runtime, the hook (its one-line error), or what the container saw (GPU
//! 0's node, and no other GPU's node or `/proc` entry).

use super::{Finding, Host};
use crate::container::config::Loaded;
use crate::host::driver::Driver;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the container may take, start to exit.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the container and judges what it saw.
pub fn check(host: &Host, loaded: Option<&Loaded>, driver: Option<&Driver>) -> Finding {
    let fail = |saw: String, fix: &str| Finding::fail("live.run", saw, fix);
    let Some(shim) = host.installed("nvhook-runtime") else {
        return fail(
            "step 1, set-up: nvhook-runtime is not installed".into(),
            "install it (see nvhook.shim above)",
        );
    };
    let Some(gpu) = driver.and_then(|d| d.gpus.first()) else {
        return fail(
            "step 1, set-up: no GPU 0 (see driver.* above)".into(),
            "mend the driver first",
        );
    };
    let Some(busybox) = static_busybox(host) else {
        return fail(
            "step 1, set-up: no static busybox on PATH to make the throwaway image from".into(),
            "apt-get install busybox-static (dnf install busybox)",
        );
    };
    let dir = match super::private_temp_dir("run") {
        Ok(d) => d,
        Err(e) => {
            return fail(
                format!("step 1, set-up: no temporary dir: {e}"),
                "set TMPDIR to a writable directory",
            )
        }
    };
    let result = bundle(&dir, &busybox)
        .map_err(|e| {
            format!(
                "step 1, set-up: cannot make the bundle in {}: {e}",
                dir.display()
            )
        })
        .and_then(|()| run(&shim, &dir, loaded.and_then(|l| l.path.as_deref())));
    let _ = std::fs::remove_dir_all(&dir);
    let out = match result {
        Ok(out) => out,
        Err(saw) => {
            return fail(
                saw,
                "mend what that step names; the hook's own line says what and why",
            )
        }
    };
    let node = format!("/dev/nvidia{}", gpu.minor);
    let others: Vec<String> = driver
        .into_iter()
        .flat_map(|d| d.gpus.iter().skip(1))
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
    let head = std::fs::read(&p).ok()?;
    crate::host::elf::is_static_elf(&head).then_some(p)
}

/// `dir/config.json` and `dir/rootfs`: busybox, the dirs runc and the hook use.
fn bundle(dir: &Path, busybox: &Path) -> std::io::Result<()> {
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
    std::fs::write(dir.join("config.json"), spec().to_string())
}

/// The container: GPU 0 asked for as users ask (`NVIDIA_VISIBLE_DEVICES=0`), printing
/// its device nodes and the GPUs its `/proc` shows.
fn spec() -> serde_json::Value {
    let script = "ls -1 /dev/nvidia*; cat /proc/driver/nvidia/gpus/*/information 2>/dev/null; true";
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=utility"],
            "cwd": "/",
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
            "resources": {"devices": [{"allow": false, "access": "rwm"}]}
        }
    })
}

/// `nvhook-runtime run` on the bundle, with its own state dir; gives what the container
/// printed, or the step that failed.
fn run(shim: &Path, dir: &Path, config: Option<&Path>) -> Result<String, String> {
    let id = format!("nvhook-doctor-{}", std::process::id());
    let state = dir.join("state");
    let mut cmd = std::process::Command::new(shim);
    cmd.arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(dir)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(c) = config {
        cmd.env(crate::container::config::CONFIG_ENV, c);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("step 2, the runtime: cannot run {}: {e}", shim.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + TIMEOUT;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !waiter.is_finished() {
        // SAFETY: a signal to the child this function started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let out = waiter
        .join()
        .map_err(|_| "step 2, the runtime: waiting for it failed".to_string())?
        .map_err(|e| format!("step 2, the runtime: {e}"))?;
    let _ = std::process::Command::new(shim)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    if let Some(l) = stderr.lines().find(|l| l.contains("nvhook:")) {
        return Err(format!("step 3, the hook: {}", l.trim()));
    }
    Err(format!(
        "step 2, the runtime ({} and what it runs) failed{}: {}",
        shim.display(),
        if Instant::now() >= deadline {
            " (killed after 60 s)"
        } else {
            ""
        },
        stderr.trim()
    ))
}
