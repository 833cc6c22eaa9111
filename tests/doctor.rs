//! `nvhook doctor` against whole made-up hosts: a good one (the synthetic driver,
//! nvhook installed and set up in Docker, containerd and Podman by its own installers,
//! a CDI spec) passes every check and starts a live container; each test then breaks
//! one thing on purpose and sees the check that must fail, fail (exit status 1).
//! Needs root (device nodes, the live container), runc and busybox-static.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

struct TestHost {
    /// Everything under here: `root/` (the host's files), `driver/`, `config.toml`.
    dir: PathBuf,
    root: PathBuf,
    driver: PathBuf,
    config: PathBuf,
    bin: PathBuf,
}

fn run_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl TestHost {
    /// A host where everything is as it should be.
    fn good(name: &str) -> TestHost {
        let f = common::fixtures();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("doctor-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let bin = root.join("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
        let driver = dir.join("driver");
        run_ok(
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fake-driver.sh"))
                .arg(&driver)
                .arg("2"),
        );
        let config = dir.join("config.toml");
        std::fs::copy(driver.join("config.toml"), &config).unwrap();
        for b in ["nvhook", "nvhook-runtime"] {
            std::fs::copy(f.bin.join(b), bin.join(b)).unwrap();
        }
        std::os::unix::fs::symlink("nvhook", bin.join("nvidia-container-runtime-hook")).unwrap();
        for f in ["etc/subuid", "etc/subgid"] {
            std::fs::write(root.join(f), "nvhook-rootless:300000:65536\n").unwrap();
        }
        let h = TestHost {
            dir,
            root,
            driver,
            config,
            bin,
        };
        h.set_up_engines();
        h
    }

    /// nvhook's installers and CDI generator, writing under the host's root.
    fn set_up_engines(&self) {
        let (nvhook, shim) = (self.bin.join("nvhook"), self.bin.join("nvhook-runtime"));
        let r = |p: &str| self.root.join(p);
        let install = |args: &[&Path]| {
            let mut c = Command::new(&nvhook);
            c.arg("install").args(args);
            run_ok(&mut c);
        };
        install(&[
            Path::new("docker"),
            Path::new("--docker-config"),
            &r("etc/docker/daemon.json"),
            Path::new("--runtime-path"),
            &shim,
        ]);
        install(&[
            Path::new("containerd"),
            Path::new("--containerd-config"),
            &r("etc/containerd/config.toml"),
            Path::new("--containerd-dropin-dir"),
            &r("etc/containerd/conf.d"),
            Path::new("--runtime-path"),
            &shim,
        ]);
        install(&[
            Path::new("podman"),
            Path::new("--hooks-dir"),
            &r("usr/share/containers/oci/hooks.d"),
            Path::new("--hook-path"),
            &nvhook,
        ]);
        run_ok(
            Command::new(&nvhook)
                .arg("--config")
                .arg(&self.config)
                .args(["cdi", "generate", "--output"])
                .arg(r("etc/cdi/nvidia.json"))
                .arg("--hook-path")
                .arg(&nvhook),
        );
    }

    /// `nvhook doctor --json` with the host's binaries first on `PATH`: exit status,
    /// the report.
    fn doctor(&self, args: &[&str]) -> (i32, Value) {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap());
        self.doctor_with_path(args, &path)
    }

    fn doctor_with_path(&self, args: &[&str], path: &str) -> (i32, Value) {
        let o = Command::new(self.bin.join("nvhook"))
            .arg("--config")
            .arg(&self.config)
            .args(["doctor", "--json", "--host-root"])
            .arg(&self.root)
            .args(args)
            .env("PATH", path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text}{}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code().unwrap_or(-1), v)
    }

    /// Top-level keys, before the file's tables.
    fn prepend_config(&self, text: &str) {
        let c = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, format!("{text}{c}")).unwrap();
    }
}

/// The findings of `check` (some checks give one per file).
fn findings<'a>(v: &'a Value, check: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

/// Asserts that `check` failed, its text holds `saw`, and it says how to fix it.
fn assert_fails(code: i32, v: &Value, check: &str, saw: &str) {
    assert_eq!(code, 1, "exit status with a failure: {v:#}");
    let f = findings(v, check);
    assert!(
        f.iter().any(|f| f["verdict"] == "fail"
            && f["saw"].as_str().unwrap().contains(saw)
            && !f["fix"].as_str().unwrap_or("").is_empty()),
        "{check} should fail with {saw:?}: {v:#}"
    );
}

fn failed_checks(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "fail")
        .map(|f| format!("{}: {}", f["check"], f["saw"]))
        .collect()
}

#[test]
fn a_good_host_passes_every_check_and_runs_a_gpu_container() {
    let h = TestHost::good("good");
    let (code, v) = h.doctor(&["--run", "--user", "nvhook-rootless"]);
    assert_eq!(failed_checks(&v), Vec::<String>::new(), "{v:#}");
    assert_eq!(code, 0);
    for check in [
        "nvhook.hook",
        "nvhook.config",
        "nvhook.log",
        "nvhook.ld-cache",
        "driver.proc",
        "driver.found",
        "driver.gpus",
        "driver.nodes",
        "driver.libraries",
        "driver.firmware",
        "driver.nvml",
        "driver.tools",
        "engines.docker",
        "engines.containerd",
        "engines.podman",
        "engines.any",
        "engines.runtime",
        "engines.docker-gpus",
        "cdi.spec",
        "cgroups.version",
        "cgroups.driver",
        "cgroups.systemd",
        "rootless.subids",
        "rootless.devices",
        "rootless.hooks",
        "live.run",
    ] {
        assert_eq!(findings(&v, check).len(), 1, "{check} once: {v:#}");
    }
    let f = findings(&v, "engines.docker")[0];
    assert!(f["saw"].as_str().unwrap().contains("nvhook set up"), "{f}");
    let live = findings(&v, "live.run")[0]["saw"].as_str().unwrap();
    assert!(live.contains(&common::gpu_uuid(0)), "{live}");
    assert_eq!(v["fail"], 0);
}

#[test]
fn a_misspelt_configuration_key_fails_with_its_line() {
    let h = TestHost::good("config-typo");
    h.prepend_config("no-cgroups = false\nld-cahce = \"nvhook\"\n");
    let (code, v) = h.doctor(&["--run"]);
    assert_fails(code, &v, "nvhook.config", "unknown field `ld-cahce`");
    assert_fails(code, &v, "live.run", "configuration does not load");
    let saw = findings(&v, "nvhook.config")[0]["saw"].as_str().unwrap();
    assert!(
        saw.contains("line 2:") && saw.contains("`ld-cache`"),
        "{saw}"
    );
    // where the driver is, the broken file would have said: not blamed on the driver
    let d = findings(&v, "driver.found")[0];
    assert_eq!(d["verdict"], "warn", "{v:#}");
    assert!(d["saw"].as_str().unwrap().starts_with("not checked"), "{d}");
}

#[test]
fn a_driver_that_is_not_loaded_fails() {
    let h = TestHost::good("no-module");
    std::fs::remove_dir_all(h.driver.join("proc/driver")).unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(
        code,
        &v,
        "driver.proc",
        "cannot read the loaded module's files",
    );
    assert_fails(code, &v, "driver.found", "NVIDIA driver not found");
}

#[test]
fn a_missing_gpu_node_fails() {
    let h = TestHost::good("no-node");
    std::fs::remove_file(h.driver.join("dev/nvidia1")).unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(code, &v, "driver.nodes", "/dev/nvidia1 (GPU 0) missing");
}

#[test]
fn a_node_of_the_wrong_device_fails() {
    let h = TestHost::good("odd-node");
    let ctl = h.driver.join("dev/nvidiactl");
    std::fs::remove_file(&ctl).unwrap();
    // /dev/null's numbers where the control node must be 195:255
    let c = std::ffi::CString::new(ctl.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a path and constant mode and device numbers.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    let (code, v) = h.doctor(&[]);
    assert_fails(
        code,
        &v,
        "driver.nodes",
        "is not the expected character device (1:3)",
    );
}

#[test]
fn a_driver_without_gpus_fails() {
    let h = TestHost::good("no-gpus");
    let gpus = h.driver.join("proc/driver/nvidia/gpus");
    std::fs::remove_dir_all(&gpus).unwrap();
    std::fs::create_dir(&gpus).unwrap();
    let (code, v) = h.doctor(&["--run"]);
    assert_fails(code, &v, "driver.gpus", "lists no GPU");
    assert_fails(code, &v, "live.run", "step 1, set-up: no GPU 0");
}

#[test]
fn missing_cuda_libraries_fail() {
    let h = TestHost::good("no-libcuda");
    let lib = h.driver.join("root/usr/lib/x86_64-linux-gnu");
    for e in std::fs::read_dir(&lib).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("libcuda.so") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let (code, v) = h.doctor(&[]);
    assert_fails(code, &v, "driver.libraries", "no libcuda.so.550.54.14");
}

#[test]
fn an_nvml_that_does_not_load_fails() {
    let h = TestHost::good("bad-nvml");
    let lib = h
        .driver
        .join("root/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.14");
    std::fs::write(&lib, "not a library").unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(code, &v, "driver.nvml", "NVML does not load");
}

#[test]
fn a_cdi_spec_from_before_a_driver_upgrade_fails() {
    let h = TestHost::good("stale-cdi");
    let spec = h.root.join("etc/cdi/nvidia.json");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("550.54.14", "535.104.05")).unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(
        code,
        &v,
        "cdi.spec",
        "made for driver 535.104.05, the loaded driver is 550.54.14",
    );
}

#[test]
fn nvidias_runtime_in_daemon_json_warns_and_says_force() {
    let h = TestHost::good("docker-foreign");
    std::fs::write(
        h.root.join("etc/docker/daemon.json"),
        r#"{"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}"#,
    )
    .unwrap();
    let (code, v) = h.doctor(&[]);
    let f = findings(&v, "engines.docker")[0];
    assert_eq!(f["verdict"], "warn", "{v:#}");
    assert!(
        f["saw"].as_str().unwrap().contains("is not nvhook's"),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("--force"), "{f}");
    assert_eq!(
        code, 0,
        "nvhook is set up elsewhere (containerd, Podman, CDI): {v:#}"
    );
}

#[test]
fn a_daemon_json_dockerd_cannot_read_fails() {
    let h = TestHost::good("docker-broken");
    std::fs::write(h.root.join("etc/docker/daemon.json"), "{\"runtimes\": {").unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(code, &v, "engines.docker", "its configuration");
}

#[test]
fn a_host_without_engines_fails() {
    let h = TestHost::good("no-engines");
    // only nvhook's own binaries and the basic tools: no dockerd, containerd, podman
    let tools = h.dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    for t in ["runc", "busybox"] {
        let p = common::which(t).unwrap();
        std::os::unix::fs::symlink(&p, tools.join(t)).unwrap();
    }
    let path = format!("{}:{}", h.bin.display(), tools.display());
    let (code, v) = h.doctor_with_path(&[], &path);
    assert_fails(code, &v, "engines.any", "no container engine found");
    assert_eq!(findings(&v, "engines.runtime")[0]["verdict"], "ok", "{v:#}");
}

#[test]
fn a_runtime_that_leads_back_to_the_shim_fails_and_the_live_run_names_the_runtime_step() {
    let h = TestHost::good("loop");
    let wrapper = h.dir.join("runc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\"\n",
            h.bin.join("nvhook-runtime").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replace(
            "runtimes = [\"runc\"]",
            &format!("runtimes = [{:?}]", wrapper.display().to_string()),
        ),
    )
    .unwrap();
    let (code, v) = h.doctor(&["--run"]);
    assert_fails(
        code,
        &v,
        "engines.runtime",
        "is a script that runs nvhook-runtime",
    );
    assert_fails(code, &v, "live.run", "step 2, the runtime");
}

#[test]
fn a_containerd_config_containerd_refuses_fails() {
    let h = TestHost::good("containerd-broken");
    let cfg = h.root.join("etc/containerd/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[plugins\n")).unwrap();
    let (code, v) = h.doctor(&[]);
    assert_fails(code, &v, "engines.containerd-cri", "containerd refuses");
}

#[test]
fn a_host_without_the_shim_warns_and_cannot_run_the_live_check() {
    let h = TestHost::good("no-shim");
    std::fs::remove_file(h.bin.join("nvhook-runtime")).unwrap();
    let (code, v) = h.doctor(&["--run"]);
    assert_eq!(findings(&v, "nvhook.shim")[0]["verdict"], "warn", "{v:#}");
    // Docker's and containerd's files still name it
    assert_fails(
        code,
        &v,
        "engines.docker",
        "which is not an installed program",
    );
    assert_fails(
        code,
        &v,
        "live.run",
        "step 1, set-up: nvhook-runtime is not installed",
    );
}

#[test]
fn the_live_run_without_busybox_fails_at_its_set_up() {
    let h = TestHost::good("no-busybox");
    let tools = h.dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::os::unix::fs::symlink(common::which("runc").unwrap(), tools.join("runc")).unwrap();
    let path = format!("{}:{}", h.bin.display(), tools.display());
    let (code, v) = h.doctor_with_path(&["--run"], &path);
    assert_fails(code, &v, "live.run", "step 1, set-up: no static busybox");
    // a busybox someone else owns is not run as root
    let copy = tools.join("busybox");
    std::fs::copy(common::which("busybox").unwrap(), &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
    let (code, v) = h.doctor_with_path(&["--run"], &path);
    assert_fails(code, &v, "live.run", "not run as root");
}

#[test]
fn a_live_container_that_gets_no_gpu_fails_at_what_it_saw() {
    let h = TestHost::good("no-gpu-given");
    // the shim registers a hook that does nothing: the container starts without its GPU
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replace("[runtime]\n", "[runtime]\nhook-path = \"/bin/true\"\n"),
    )
    .unwrap();
    let (code, v) = h.doctor(&["--run"]);
    assert_fails(
        code,
        &v,
        "live.run",
        "step 4, the container: it ran, but did not see GPU 0",
    );
}

#[test]
fn the_live_container_asks_as_a_strict_configuration_accepts() {
    // NVIDIA's policy keys: the variable of an unprivileged container is ignored; the
    // throwaway container asks by a volume mount, or as a privileged one would
    for extra in [
        "accept-nvidia-visible-devices-envvar-when-unprivileged = false\naccept-nvidia-visible-devices-as-volume-mounts = true\n",
        "accept-nvidia-visible-devices-envvar-when-unprivileged = false\n",
    ] {
        let h = TestHost::good("strict-policy");
        h.prepend_config(extra);
        let (code, v) = h.doctor(&["--run"]);
        assert_eq!(findings(&v, "live.run")[0]["verdict"], "ok", "{extra}: {v:#}");
        assert_eq!(code, 0, "{v:#}");
    }
}

#[test]
fn a_hook_that_fails_in_the_live_run_is_named_with_its_line() {
    let h = TestHost::good("hook-fails");
    // a dynamic program where the static ldconfig must be: every GPU start fails
    h.prepend_config("ld-cache = \"ldconfig\"\nldconfig = \"@/bin/true\"\n");
    let (code, v) = h.doctor(&["--run"]);
    assert_fails(code, &v, "nvhook.ld-cache", "is not a statically linked");
    assert_fails(code, &v, "live.run", "step 3, the hook: ");
}

#[test]
fn a_rootless_user_who_cannot_open_the_nodes_fails() {
    let h = TestHost::good("rootless-modes");
    use std::os::unix::fs::PermissionsExt;
    for n in ["nvidiactl", "nvidia1", "nvidia-uvm"] {
        std::fs::set_permissions(
            h.driver.join("dev").join(n),
            std::fs::Permissions::from_mode(0o660),
        )
        .unwrap();
    }
    let (code, v) = h.doctor(&["--user", "nvhook-rootless"]);
    assert_fails(
        code,
        &v,
        "rootless.devices",
        "nvhook-rootless cannot open /dev/nvidiactl",
    );
    assert_eq!(findings(&v, "driver.nodes")[0]["verdict"], "warn", "{v:#}");
}

#[test]
fn a_rootless_user_without_subordinate_ids_and_hooks_fails() {
    let h = TestHost::good("rootless-ids");
    std::fs::remove_dir_all(h.root.join("usr/share/containers")).unwrap();
    std::fs::remove_dir_all(h.root.join("etc/cdi")).unwrap();
    // the host's own subuid lists nvhook-rootless; this host's has nobody
    std::fs::write(h.root.join("etc/subuid"), "").unwrap();
    std::fs::write(h.root.join("etc/subgid"), "").unwrap();
    let (code, v) = h.doctor(&["--user", "nvhook-rootless"]);
    assert_fails(code, &v, "rootless.subids", "0 subordinate uids");
    assert_fails(code, &v, "rootless.hooks", "no hooks.d entry naming nvhook");
}

#[test]
fn a_plain_user_gets_warnings_where_root_would_see_more_not_failures() {
    let h = TestHost::good("plain-user");
    // the MIG capability nodes' directory only root may enter, as on real hosts
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        h.driver.join("dev/nvidia-caps"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let path = format!("{}:{}", h.bin.display(), std::env::var("PATH").unwrap());
    let o = Command::new("setpriv")
        .args([
            "--reuid=nvhook-rootless",
            "--regid=nvhook-rootless",
            "--clear-groups",
        ])
        .arg(h.bin.join("nvhook"))
        .arg("--config")
        .arg(&h.config)
        .args(["doctor", "--json", "--run", "--host-root"])
        .arg(&h.root)
        .env("PATH", path)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(failed_checks(&v), Vec::<String>::new(), "{v:#}");
    assert_eq!(findings(&v, "nvhook.user")[0]["verdict"], "warn");
    assert_eq!(findings(&v, "live.run")[0]["verdict"], "warn");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn text_output_has_one_verdict_per_line_and_the_fix_under_it() {
    let h = TestHost::good("text");
    h.prepend_config("no-cgroups = false\nld-cahce = \"nvhook\"\n");
    let o = Command::new(h.bin.join("nvhook"))
        .arg("--config")
        .arg(&h.config)
        .args(["doctor", "--host-root"])
        .arg(&h.root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("FAIL  nvhook.config"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[i + 1].trim_start().starts_with("fix: edit "),
        "{text}"
    );
    assert!(
        lines.last().unwrap().starts_with("nvhook doctor: "),
        "{text}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("ok ")
            || l.starts_with("warn ")
            || l.starts_with("FAIL ")
            || l.starts_with("      ")
            || l.starts_with("nvhook doctor: ")),
        "{text}"
    );
}
