//! End to end with real runc through the shim, on the synthetic driver: what a
//! container sees with each kind of request, on cgroup v1 and v2, Debian and RHEL images.
//! Needs root, runc, gcc and busybox-static; fails (does not skip) without them.

mod common;
use common::*;

const ENXIO: &str = "No such device or address";
const EPERM: &str = "Operation not permitted";

struct Seen {
    out: String,
    err: String,
    ok: bool,
}

impl Seen {
    fn sec(&self, name: &str) -> Vec<String> {
        section(&self.out, name)
    }
    fn smi_uuids(&self) -> Vec<String> {
        self.sec("smi")
            .iter()
            .filter_map(|l| {
                l.split("(UUID: ")
                    .nth(1)
                    .map(|u| u.trim_end_matches(')').to_string())
            })
            .collect()
    }
    fn devs(&self) -> Vec<String> {
        self.sec("dev")
    }
}

fn run(flavor: Flavor, cg: Cgroup, env: &[&str]) -> (Container, Seen) {
    let c = Container::new(flavor, env, PROBE);
    let seen = probe(&c, cg);
    (c, seen)
}

/// Runs the container (made with `PROBE`) and keeps what it printed.
fn probe(c: &Container, cg: Cgroup) -> Seen {
    let o = c.run(cg);
    let (out, err) = text(&o);
    Seen {
        out,
        err,
        ok: o.status.success(),
    }
}

fn assert_gpus(c: &Container, s: &Seen, indices: &[u32]) {
    assert!(
        s.ok,
        "container failed: {}\n{}\nlog:\n{}",
        s.out,
        s.err,
        c.log_text()
    );
    let want: Vec<String> = indices.iter().map(|i| gpu_uuid(*i)).collect();
    let mut got = s.smi_uuids();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "nvidia-smi output:\n{}", s.out);
    // exactly the chosen GPU nodes, plus the control nodes
    let mut nodes: Vec<String> = s
        .devs()
        .into_iter()
        .filter(|d| d.trim_start_matches("nvidia").parse::<u32>().is_ok())
        .collect();
    nodes.sort();
    let mut want_nodes: Vec<String> = indices
        .iter()
        .map(|i| format!("nvidia{}", gpu_minor(*i)))
        .collect();
    want_nodes.sort();
    assert_eq!(nodes, want_nodes, "{}", s.out);
    assert!(s.devs().contains(&"nvidiactl".to_string()), "{}", s.out);
    // the cgroup allows each node: opening reaches the (absent) driver, ENXIO not EPERM
    let open = s.sec("open");
    assert!(!open.is_empty(), "{}", s.out);
    for l in &open {
        assert!(l.ends_with(ENXIO), "cgroup did not allow: {l}\n{}", s.out);
    }
    // ldconfig ran in the container
    let ld = s.sec("ldconfig");
    assert!(
        ld.iter().any(|l| l.starts_with("libcuda.so.1 ")),
        "ldconfig -p:\n{ld:?}"
    );
    assert!(
        ld.iter().any(|l| l.starts_with("libnvidia-ml.so.1 ")),
        "ldconfig -p:\n{ld:?}"
    );
    // driver files are read-only
    let w = s.sec("write").join(" ");
    assert!(
        w.contains("Read-only file system"),
        "binary was writable: {w}"
    );
}

#[test]
fn v1_debian_gpu_by_index() {
    let (c, s) = run(Flavor::Debian, Cgroup::V1, &["NVIDIA_VISIBLE_DEVICES=1"]);
    assert_gpus(&c, &s, &[1]);
    let ld = s.sec("ldconfig");
    assert!(
        ld.iter()
            .any(|l| l.contains("=> /usr/lib/x86_64-linux-gnu/libcuda.so.1")),
        "{ld:?}"
    );
    assert!(
        c.log_text().contains("total_us="),
        "debug log has the phase timings"
    );
}

#[test]
fn v2_debian_gpus_by_uuid() {
    let (a, b) = (gpu_uuid(0), gpu_uuid(3));
    let env = format!("NVIDIA_VISIBLE_DEVICES={a},{b}");
    let (c, s) = run(Flavor::Debian, Cgroup::V2, &[&env]);
    assert_gpus(&c, &s, &[0, 3]);
}

#[test]
fn v1_rhel_gpu_by_bus_id() {
    let (c, s) = run(
        Flavor::Rhel,
        Cgroup::V1,
        &["NVIDIA_VISIBLE_DEVICES=00000000:1A:00.0"],
    );
    assert_gpus(&c, &s, &[2]);
    let ld = s.sec("ldconfig");
    assert!(
        ld.iter().any(|l| l.contains("=> /usr/lib64/libcuda.so.1")),
        "{ld:?}"
    );
    assert!(
        !c.rootfs.join("usr/lib/x86_64-linux-gnu").exists(),
        "no Debian dir made in a RHEL image"
    );
}

#[test]
fn v2_rhel_all_gpus() {
    let (c, s) = run(Flavor::Rhel, Cgroup::V2, &["NVIDIA_VISIBLE_DEVICES=all"]);
    assert_gpus(&c, &s, &[0, 1, 2, 3]);
}

/// The control for the two cgroup tests above: without nvhook's cgroup rules the same
/// opens fail with EPERM, so ENXIO really means "allowed by the cgroup".
#[test]
fn cgroup_control_without_rules_is_eperm() {
    for cg in [Cgroup::V1, Cgroup::V2] {
        let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], PROBE);
        c.write_config("no-cgroups = true");
        let (out, err) = text(&c.run(cg));
        let open = section(&out, "open");
        assert!(!open.is_empty(), "{out}{err}");
        for l in &open {
            assert!(l.ends_with(EPERM), "{cg:?}: {l}");
        }
    }
}

#[test]
fn capability_filtering() {
    // utility only: nvidia-smi works, no CUDA library, no uvm nodes
    let (c, s) = run(
        Flavor::Debian,
        Cgroup::V1,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
        ],
    );
    assert!(s.ok, "{}{}", s.out, s.err);
    assert_eq!(s.smi_uuids(), [gpu_uuid(0)]);
    let ld = s.sec("ldconfig");
    assert!(!ld.iter().any(|l| l.contains("libcuda")), "{ld:?}");
    assert!(
        !s.devs().iter().any(|d| d.contains("uvm")),
        "{:?}",
        s.devs()
    );
    assert!(!c
        .rootfs
        .join("usr/lib/x86_64-linux-gnu/libcuda.so")
        .exists());

    // compute only: CUDA and uvm, but no nvidia-smi
    let (c, s) = run(
        Flavor::Debian,
        Cgroup::V1,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=compute",
        ],
    );
    assert!(s.ok, "{}{}", s.out, s.err);
    assert!(
        s.sec("bin").iter().all(|b| b != "nvidia-smi"),
        "{:?}",
        s.sec("bin")
    );
    assert!(
        s.sec("smi").iter().any(|l| l.contains("not found")),
        "{:?}",
        s.sec("smi")
    );
    let ld = s.sec("ldconfig");
    assert!(ld.iter().any(|l| l.starts_with("libcuda.so.1 ")), "{ld:?}");
    assert!(!ld.iter().any(|l| l.contains("libnvidia-ml")), "{ld:?}");
    assert!(s.devs().contains(&"nvidia-uvm".to_string()));
    assert_eq!(
        std::fs::read_link(c.rootfs.join("usr/lib/x86_64-linux-gnu/libcuda.so"))
            .unwrap()
            .to_str(),
        Some("libcuda.so.1")
    );

    // graphics adds the GL libraries; display adds nvidia-modeset
    let (_c, s) = run(
        Flavor::Debian,
        Cgroup::V1,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=display,utility",
        ],
    );
    assert!(s.ok, "{}{}", s.out, s.err);
    assert!(
        s.sec("ldconfig")
            .iter()
            .any(|l| l.starts_with("libGLX_nvidia.so.0 ")),
        "{:?}",
        s.sec("ldconfig")
    );
    assert!(
        s.devs().contains(&"nvidia-modeset".to_string()),
        "{:?}",
        s.devs()
    );
}

#[test]
fn none_gives_driver_without_gpus() {
    let (_c, s) = run(Flavor::Debian, Cgroup::V1, &["NVIDIA_VISIBLE_DEVICES=none"]);
    assert!(s.ok, "{}{}", s.out, s.err);
    assert!(s.devs().is_empty(), "{:?}", s.devs());
    assert!(
        s.sec("smi")
            .iter()
            .any(|l| l.contains("No devices were found")),
        "{:?}",
        s.sec("smi")
    );
    assert!(s
        .sec("ldconfig")
        .iter()
        .any(|l| l.starts_with("libcuda.so.1 ")));
}

#[test]
fn no_request_is_untouched() {
    for env in [
        &[][..],
        &["NVIDIA_VISIBLE_DEVICES=void"],
        &["NVIDIA_VISIBLE_DEVICES="],
    ] {
        let c = Container::new(Flavor::Debian, env, PROBE);
        let before = std::fs::read(c.bundle.join("config.json")).unwrap();
        let o = c.run(Cgroup::V1);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        assert_eq!(
            std::fs::read(c.bundle.join("config.json")).unwrap(),
            before,
            "config.json changed for {env:?}"
        );
        assert!(section(&out, "dev").is_empty(), "{out}");
        assert!(
            !c.log.exists() || !c.log_text().contains("mounts"),
            "hook ran for {env:?}"
        );
    }
}

#[test]
fn legacy_cuda_image_gets_all_gpus() {
    let (c, s) = run(Flavor::Debian, Cgroup::V1, &["CUDA_VERSION=9.0.176"]);
    assert_gpus(&c, &s, &[0, 1, 2, 3]);
}

#[test]
fn unknown_device_is_refused_clearly() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0,9"], PROBE);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    let err = err.replace("\\\"", "\""); // runc quotes the hook's stderr
    assert!(!o.status.success(), "container started: {out}");
    assert!(
        err.contains("unknown GPU \"9\" in NVIDIA_VISIBLE_DEVICES"),
        "{err}"
    );
    assert!(host_mounts_under(&fixtures().driver).is_empty());
    assert!(!c.rootfs.join("dev/nvidia3").exists());

    let c = Container::new(
        Flavor::Debian,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=compute,gaming",
        ],
        PROBE,
    );
    let (_, err) = text(&c.run(Cgroup::V1));
    let err = err.replace("\\\"", "\"");
    assert!(
        err.contains("unknown driver capability \"gaming\""),
        "{err}"
    );
}

#[test]
fn config_json_keeps_unknown_fields_order_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    let mut spec = c.spec();
    spec["zzFutureField"] = serde_json::json!({"keep": [1, 2, 3]});
    spec["process"]["futureProcessField"] = "x".into();
    c.set_spec(&spec);
    let path = c.bundle.join("config.json");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys_before: Vec<String> = spec.as_object().unwrap().keys().cloned().collect();
    let o = c.run(Cgroup::V1);
    assert!(o.status.success(), "{:?}", text(&o));
    let after = c.spec();
    assert_eq!(after["zzFutureField"]["keep"][2], 3);
    assert_eq!(after["process"]["futureProcessField"], "x");
    let keys_after: Vec<String> = after.as_object().unwrap().keys().cloned().collect();
    assert_eq!(&keys_after[..keys_before.len()], &keys_before[..]);
    let hooks = after["hooks"]["prestart"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0]["path"],
        fixtures().bin.join("nvhook").display().to_string()
    );
    assert!(
        hooks[0]["env"].as_array().is_some_and(|e| !e.is_empty()),
        "hook env is explicit"
    );
    let args: Vec<&str> = hooks[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["nvhook", "--config", c.config.to_str().unwrap(), "prestart"]
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

    // a second create through the shim adds no second entry
    let b = c.bundle.display().to_string();
    let id2 = format!("{}-again", c.id);
    // `create` leaves the container's init holding stdio: do not wait on pipes.
    let st = c
        .shim(Cgroup::V1, &["create", "--bundle", &b, &id2])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let _ = c.shim(Cgroup::V1, &["delete", "--force", &id2]).output();
    assert!(st.success());
    assert_eq!(c.spec()["hooks"]["prestart"].as_array().unwrap().len(), 1);
}

#[test]
fn create_runtime_stage() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=2"], PROBE);
    let cfg = std::fs::read_to_string(&c.config)
        .unwrap()
        .replace("[runtime]\n", "[runtime]\nstage = \"createRuntime\"\n");
    std::fs::write(&c.config, cfg).unwrap();
    let s = probe(&c, Cgroup::V2);
    assert_gpus(&c, &s, &[2]);
    let spec = c.spec();
    assert!(spec["hooks"].get("prestart").is_none());
    assert_eq!(
        spec["hooks"]["createRuntime"][0]["args"][3],
        "create-runtime"
    );
}

#[test]
fn firmware_dir_symlinked_to_host_stays_untouched() {
    let host_dir = tempfile::Builder::new()
        .prefix("nvhook-hostile-")
        .tempdir()
        .unwrap();
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], PROBE);
    std::fs::create_dir_all(c.rootfs.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink(host_dir.path(), c.rootfs.join("usr/lib/firmware")).unwrap();
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert_eq!(
        std::fs::read_dir(host_dir.path()).unwrap().count(),
        0,
        "wrote into the host dir"
    );
    if o.status.success() {
        assert_eq!(section(&out, "smi").len(), 2, "{out}");
    } else {
        assert!(err.contains("/lib/firmware"), "unclear error: {err}");
        // the failed start left no mount behind on the host
        assert!(host_mounts_under(&fixtures().driver).is_empty());
    }
}

/// A failure half-way through applying (a directory where nvidia-smi must go, met after
/// the devices and libraries were mounted): the container does not start, the error
/// names the path, and the files nvhook created for the earlier mounts are gone again.
#[test]
fn failure_midway_undoes_what_was_done() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], PROBE);
    std::fs::create_dir_all(c.rootfs.join("usr/bin/nvidia-smi/sub")).unwrap();
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "container started: {out}");
    assert!(
        err.contains(
            "/usr/bin/nvidia-smi in the container is a directory, expected a regular file"
        ),
        "{err}"
    );
    let lib_dir = c.rootfs.join("usr/lib/x86_64-linux-gnu");
    let leftovers: Vec<String> = std::fs::read_dir(&lib_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("nvidia") || n.contains("cuda"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(host_mounts_under(&fixtures().driver).is_empty());
}

/// `NVIDIA_REQUIRE_*`: checked against the driver, and per visible GPU against NVML's
/// facts (the synthetic NVML reports CUDA 12.4; GPUs 0-2 are compute 9.0 Tesla, GPU 3 is
/// compute 8.0 GeForce).
#[test]
fn requirements() {
    let run_env = |env: &[&str]| {
        let c = Container::new(Flavor::Debian, env, "nvidia-smi -L; true");
        let o = c.run(Cgroup::V1);
        let (out, err) = text(&o);
        (o.status.success(), out, err.replace("\\\"", "\""))
    };
    for env in [
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.0"][..],
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.5 driver>=550",
        ],
        &[
            "NVIDIA_VISIBLE_DEVICES=0,1",
            "NVIDIA_REQUIRE_ARCH=arch>=9.0",
            "NVIDIA_REQUIRE_BRAND=brand=tesla",
        ],
        &[
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_REQUIRE_CUDA=cuda>=99",
            "NVIDIA_DISABLE_REQUIRE=true",
        ],
        &[
            "NVIDIA_VISIBLE_DEVICES=none",
            "NVIDIA_REQUIRE_ARCH=arch>=99.0",
        ],
        &["CUDA_VERSION=12.2.1"],
    ] {
        let (ok, out, err) = run_env(env);
        assert!(ok, "{env:?}: {out}{err}");
    }
    for (env, needle) in [
        (&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.5"][..], "unsatisfied requirement NVIDIA_REQUIRE_CUDA=\"cuda>=12.5\": driver 550.54.14, cuda 12.4"),
        (&["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_ARCH=arch>=9.0"], "GPU 0000:1b:00.0 arch 8.0"),
        (&["NVIDIA_VISIBLE_DEVICES=3", "NVIDIA_REQUIRE_BRAND=brand=tesla"], "brand geforce"),
        (&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_DRIVER=driver>=560"], "driver 550.54.14"),
        (&["CUDA_VERSION=13.0"], "CUDA_VERSION=\"cuda>=13.0\""),
        (&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda~12"], "cannot parse requirement"),
    ] {
        let (ok, out, err) = run_env(env);
        assert!(!ok, "{env:?} started: {out}");
        assert!(err.contains(needle), "{env:?}: {err}");
    }
}

/// A wedged NVML is killed after its timeout and the start fails, saying so.
#[test]
fn hung_nvml_times_out() {
    let f = fixtures();
    let d = tempfile::tempdir().unwrap();
    let driver = d.path().join("driver");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.driver)
        .arg(&driver)
        .status()
        .unwrap()
        .success());
    std::fs::write(driver.join("root/usr/lib/x86_64-linux-gnu/nvml-hang"), "").unwrap();
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.0"],
        "true",
    );
    let cfg = std::fs::read_to_string(&c.config).unwrap().replace(
        &f.driver.display().to_string(),
        &driver.display().to_string(),
    );
    std::fs::write(&c.config, cfg).unwrap();
    let t = std::time::Instant::now();
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("did not answer within 10s and was killed"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 40);
}

/// Kubernetes' volume-mount device lists and NVIDIA's policy keys.
#[test]
fn kubernetes_device_lists_and_policy() {
    // volume mounts (accepted) name GPU 1; the variable says all and is overridden
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=all"], PROBE);
    c.write_config("accept-nvidia-visible-devices-as-volume-mounts = true");
    let mut spec = c.spec();
    spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/var/run/nvidia-container-devices/1", "type": "bind", "source": "/dev/null", "options": ["bind", "ro"]
    }));
    c.set_spec(&spec);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let s = section(&out, "smi");
    assert_eq!(s.iter().filter(|l| l.contains("UUID")).count(), 1, "{out}");
    assert!(s[0].contains(&gpu_uuid(1)), "{out}");

    // an unprivileged container's variable is not trusted when told so: untouched
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], PROBE);
    c.write_config("accept-nvidia-visible-devices-envvar-when-unprivileged = false");
    let before = std::fs::read(c.bundle.join("config.json")).unwrap();
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(section(&out, "dev").is_empty(), "{out}");
    assert_eq!(
        std::fs::read(c.bundle.join("config.json")).unwrap(),
        before,
        "shim added a hook"
    );
    // ... but a privileged one's is
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], PROBE);
    c.write_config("accept-nvidia-visible-devices-envvar-when-unprivileged = false");
    let mut spec = c.spec();
    spec["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push("CAP_SYS_ADMIN".into());
    c.set_spec(&spec);
    let (out, _) = text(&c.run(Cgroup::V1));
    assert!(
        section(&out, "smi")
            .iter()
            .any(|l| l.contains(&gpu_uuid(0))),
        "{out}"
    );
}

/// CUDA forward compatibility: an image's compat libcuda newer than the host driver is
/// preferred by ldconfig configuration; an older one is not.
#[test]
fn cuda_forward_compat() {
    for (version, compat_first) in [("560.28.03", true), ("545.23.08", false)] {
        let c = Container::new(
            Flavor::Debian,
            &["NVIDIA_VISIBLE_DEVICES=0"],
            "ldconfig -p | grep 'libcuda.so.1 '",
        );
        let dir = c.rootfs.join("usr/local/cuda/compat");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            fixtures().driver.join("tools/libcuda-compat.so"),
            dir.join(format!("libcuda.so.{version}")),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("libcuda.so.{version}"), dir.join("libcuda.so.1"))
            .unwrap();
        let o = c.run(Cgroup::V1);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        let first = out.lines().next().unwrap_or("");
        assert_eq!(
            first.contains("/usr/local/cuda/compat/"),
            compat_first,
            "{version}: {out}"
        );
        assert_eq!(
            c.rootfs
                .join("etc/ld.so.conf.d/00-nvhook-cuda-compat.conf")
                .exists(),
            compat_first
        );
    }
}

/// Loader configuration files per capability, the MPS pipe dir (read-only: see
/// `e2e_security.rs` `mps_pipe_dir_is_read_only`), IMEX channels.
#[test]
fn config_files_ipc_and_imex() {
    let script = "cat /usr/share/vulkan/icd.d/nvidia_icd.json /etc/OpenCL/vendors/nvidia.icd 2>&1; \
                  grep -q ' /tmp/nvidia-mps ' /proc/self/mountinfo && echo mps-bound; \
                  ls /dev/nvidia-caps-imex-channels 2>&1; cat /dev/nvidia-caps-imex-channels/channel1 2>&1; true";
    let c = Container::new(
        Flavor::Debian,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=graphics,compute",
            "NVIDIA_IMEX_CHANNELS=1",
        ],
        script,
    );
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("\"library_path\":\"libGLX_nvidia.so.0\""),
        "vulkan ICD: {out}"
    );
    assert!(out.contains("libnvidia-opencl.so.1"), "OpenCL ICD: {out}");
    assert!(out.contains("mps-bound"), "{out}");
    assert!(
        out.lines().any(|l| l == "channel1") && !out.lines().any(|l| l == "channel0"),
        "{out}"
    );
    assert!(
        out.contains("channel1': No such device or address"),
        "IMEX channel allowed in the cgroup: {out}"
    );
    // utility only: none of these
    let c = Container::new(
        Flavor::Debian,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
        ],
        script,
    );
    let (out, _) = text(&c.run(Cgroup::V1));
    assert!(
        !out.contains("library_path") && !out.contains("mps-bound"),
        "{out}"
    );
    // an unknown channel is refused by name
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=7"],
        "true",
    );
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(err.contains("IMEX channel 7"), "{err}");
}

/// MIG: `GPU:MIG` and `MIG-<uuid>` bring the parent GPU's node and the two capability
/// nodes of that MIG device; management caps only for privileged containers.
#[test]
fn mig_devices() {
    let script = "nvidia-smi -L; ls /dev/nvidia-caps; for d in /dev/nvidia-caps/*; do cat $d 2>&1 | head -n1; done; true";
    for (cg, id) in [
        (Cgroup::V1, "0:1".to_string()),
        (
            Cgroup::V2,
            "MIG-0000aaaa-bbbb-cccc-dddd-000000000002".to_string(),
        ),
    ] {
        let env = format!("NVIDIA_VISIBLE_DEVICES={id}");
        let c = Container::new(Flavor::Debian, &[&env], script);
        let o = c.run(cg);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{id}: {out}{err}");
        let migs: Vec<&str> = out.lines().filter(|l| l.contains("MIG-")).collect();
        assert_eq!(migs.len(), 1, "{id}: {out}");
        assert!(
            migs[0].contains("MIG-0000aaaa-bbbb-cccc-dddd-000000000002"),
            "{id}: {out}"
        );
        assert!(out.contains(&gpu_uuid(0)), "parent GPU visible: {out}");
        let caps: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("nvidia-cap"))
            .collect();
        assert_eq!(caps, ["nvidia-cap40", "nvidia-cap41"], "{out}");
        assert!(
            out.contains("nvidia-cap41': No such device or address"),
            "cgroup allows the cap node: {out}"
        );
    }
    // management capabilities: privileged only
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"],
        script,
    );
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(
        err.contains("NVIDIA_MIG_CONFIG_DEVICES is only allowed in a privileged container"),
        "{err}"
    );
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_MONITOR_DEVICES=all"],
        script,
    );
    let mut spec = c.spec();
    spec["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push("CAP_SYS_ADMIN".into());
    c.set_spec(&spec);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.lines().any(|l| l == "nvidia-cap2"),
        "monitor cap node: {out}"
    );
    // an unknown MIG device is named
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=1:0"], "true");
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(
        err.contains("unknown MIG device") && err.contains("GPU 1 has 0 MIG devices"),
        "{err}"
    );
}

/// compat32: the driver's i386 libraries go into the image's 32-bit dir and its cache.
#[test]
fn compat32_libraries() {
    for (flavor, dir) in [
        (Flavor::Debian, "/usr/lib/i386-linux-gnu"),
        (Flavor::Rhel, "/usr/lib"),
    ] {
        let c = Container::new(
            flavor,
            &[
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=compute,utility,compat32",
            ],
            &format!(
                "ls {dir} | grep -E 'libcuda|libnvidia-ml'; ldconfig -p | grep 'libcuda.so.1 '"
            ),
        );
        let o = c.run(Cgroup::V1);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{flavor:?}: {out}{err}");
        assert!(
            out.lines().any(|l| l == "libcuda.so.550.54.14"),
            "{flavor:?}: {out}"
        );
        assert!(
            out.contains(&format!("libcuda.so.1 (libc6) => {dir}/libcuda.so.1")),
            "{flavor:?} i386 cache entry: {out}"
        );
        assert!(
            out.contains("libcuda.so.1 (libc6,x86-64)"),
            "{flavor:?}: {out}"
        );
    }
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "ls /usr/lib/i386-linux-gnu 2>&1; true",
    );
    let (out, _) = text(&c.run(Cgroup::V1));
    assert!(
        !out.contains("libcuda"),
        "no compat32, no i386 libraries: {out}"
    );
}

/// The masked `/proc/driver/nvidia`. This kernel has no NVIDIA module (so runc's procfs
/// shows no such directory) and runc allows no mount over /proc subdirectories, so the
/// container here is a process in its own mount namespace whose root holds a plain
/// `proc/driver/nvidia` showing every GPU, and the hook is run by hand with its state,
/// as anyone can.
#[test]
fn proc_driver_nvidia_is_masked() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=1"], "true");
    c.write_config("no-cgroups = true");
    let fake = c.rootfs.join("proc/driver/nvidia");
    for i in 0..4 {
        std::fs::create_dir_all(fake.join(format!("gpus/0000:{:02x}:00.0", 0x18 + i))).unwrap();
    }
    std::fs::write(fake.join("params"), "ModifyDeviceFiles: 1\n").unwrap();
    let mut sleeper = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "120"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300)); // let unshare exec sleep
    let pid = sleeper.id();
    let state = c.tmp.path().join("state.json");
    std::fs::write(
        &state,
        format!(
            r#"{{"ociVersion":"1.0.2","id":"{}","status":"creating","pid":{pid},"bundle":"{}"}}"#,
            c.id,
            c.bundle.display()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(fixtures().bin.join("nvhook"))
        .args([
            "--config",
            c.config.to_str().unwrap(),
            "prestart",
            "--state",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let inside = |cmd: &str| {
        let o = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "sh", "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let dir = fake.display().to_string();
    let params = inside(&format!("cat {dir}/params"));
    let gpus = inside(&format!("ls {dir}/gpus"));
    let version = inside(&format!("head -n1 {dir}/version"));
    let write = inside(&format!("echo x > {dir}/params"));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // the host driver's params, with device file creation turned off
    assert!(
        params.contains("ModifyDeviceFiles: 0") && params.contains("DeviceFileMode: 438"),
        "{params}"
    );
    assert!(!params.contains("ModifyDeviceFiles: 1"), "{params}");
    assert_eq!(gpus.trim(), "0000:19:00.0", "only the visible GPU");
    assert!(version.contains("Kernel Module  550.54.14"), "{version}");
    assert!(write.contains("Read-only file system"), "{write}");
    // the host's view of the image is untouched underneath
    assert_eq!(
        std::fs::read_to_string(fake.join("params")).unwrap(),
        "ModifyDeviceFiles: 1\n"
    );
}

/// The JSON log: a GPU container's start is a record whose data are top-level fields
/// (container, stage, GPUs, counts, per-phase timings), the shim's own debug record says
/// what it ran and did, and `NVHOOK_LOG_LEVEL` overrides the configured level.
#[test]
fn json_log_records_have_fields() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=2"], "true");
    let cfg = std::fs::read_to_string(&c.config)
        .unwrap()
        .replace("level = \"debug\"", "level = \"debug\"\nformat = \"json\"");
    std::fs::write(&c.config, cfg).unwrap();
    let o = c.run(Cgroup::V1);
    assert!(o.status.success(), "{:?}", text(&o));
    let records: Vec<serde_json::Value> = c
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let start = records
        .iter()
        .find(|r| r["message"] == "GPUs given")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(start["container"], c.id.as_str());
    assert_eq!(start["stage"], "prestart");
    assert_eq!(start["gpus"], gpu_uuid(2).as_str());
    assert!(start["devices"].as_u64().unwrap() >= 2 && start["mounts"].as_u64().unwrap() > 0);
    assert_eq!(start["level"], "INFO");
    let t = records.iter().find(|r| r["message"] == "timings").unwrap();
    for k in [
        "parse_us",
        "discover_us",
        "plan_us",
        "prepare_us",
        "mount_us",
        "ldconfig_us",
        "total_us",
    ] {
        assert!(t[k].is_u64(), "{k}: {t}");
    }
    let shim: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["program"] == "nvhook-runtime")
        .collect();
    assert!(
        shim.iter().any(|r| r["command"] == "run"
            && r["config_json"] == "hook inserted"
            && r["runtime"].as_str().is_some_and(|p| p.ends_with("runc"))),
        "{shim:?}"
    );
    // NVHOOK_LOG_LEVEL=warn: no info or debug record for this run
    let c2 = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=1"], "true");
    let b = c2.bundle.display().to_string();
    let o = c2
        .shim(Cgroup::V1, &["run", "--bundle", &b, &c2.id])
        .env("NVHOOK_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(c2.log_text().trim().is_empty(), "{}", c2.log_text());
}

/// Unmounts a test's bpffs when dropped.
struct BpfFs(tempfile::TempDir);

impl BpfFs {
    fn new() -> BpfFs {
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a bpf filesystem (needs root)");
        BpfFs(d)
    }
    fn pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.path().join("nvhook"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// cgroup v2's device program, once loaded, is pinned and reused by the next start with
/// the same devices; a program planted under its name (here: GPU 1's, renamed) is not
/// used, it is replaced; a cache directory others can write is not used at all.
#[test]
fn v2_device_program_cache() {
    let fs = BpfFs::new();
    let cache = fs.0.path().join("nvhook");
    let conf = format!("device-program-cache = \"{}\"", cache.display());
    let start = |env: &str| {
        let c = Container::new(Flavor::Debian, &[env], PROBE);
        c.write_config(&conf);
        let s = probe(&c, Cgroup::V2);
        (c, s)
    };
    // the start's debug record counts them
    let hits = |c: &Container| {
        c.log_text()
            .lines()
            .filter_map(|l| l.split("device_programs_cached=").nth(1))
            .map(|v| {
                v.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum::<usize>()
    };

    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert_gpus(&c, &s, &[0]);
    assert_eq!(hits(&c), 0, "{}", c.log_text());
    let gpu0 = fs.pins();
    assert_eq!(gpu0.len(), 1, "one program pinned: {gpu0:?}");
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert_gpus(&c, &s, &[0]);
    assert_eq!(hits(&c), 1, "the second start reuses it:\n{}", c.log_text());
    assert_eq!(fs.pins(), gpu0);

    // Another device list, another program.
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=1");
    assert_gpus(&c, &s, &[1]);
    assert_eq!(hits(&c), 0);
    let gpu1: Vec<String> = fs
        .pins()
        .into_iter()
        .filter(|p| !gpu0.contains(p))
        .collect();
    assert_eq!(gpu1.len(), 1, "{:?}", fs.pins());

    // GPU 1's program under GPU 0's name: a start for GPU 0 must not attach it.
    std::fs::rename(cache.join(&gpu1[0]), cache.join(&gpu0[0])).unwrap();
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert_gpus(&c, &s, &[0]);
    assert_eq!(hits(&c), 0, "a planted program was used:\n{}", c.log_text());
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert_gpus(&c, &s, &[0]);
    assert_eq!(hits(&c), 1, "the replaced pin is GPU 0's again");

    // A directory others can write: no cache, a warning, the start still works.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = fs.pins();
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert_gpus(&c, &s, &[0]);
    assert_eq!(hits(&c), 0);
    assert!(
        c.log_text().contains("writable by group or others"),
        "{}",
        c.log_text()
    );
    assert_eq!(fs.pins(), before);
}

/// A cgroup v2 parent with a device program of its own (as systemd puts on the scope
/// above crun's `container` cgroup): every program in effect must allow a device, so a
/// GPU its parent denies is a failed start that names the parent, never a container
/// that starts and cannot open its GPU; a GPU the parent allows starts as usual.
#[test]
fn v2_parent_program_that_denies_the_gpu_fails_the_start() {
    use nvhook::apply::bpf::{self, Insn};
    let root = if host_is_unified() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    let name = format!("nvhook-parent-{}", std::process::id());
    let parent = std::path::Path::new(root).join(&name);
    std::fs::create_dir(&parent).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Remove(parent.clone());
    // Denies GPU 0's node (195:minor), allows every other device.
    let i = |code: u8, regs: u8, off: i16, imm: i32| Insn {
        code,
        regs,
        off,
        imm,
    };
    let deny_gpu0 = [
        i(0x61, 0x14, 4, 0),                   // r4 = major
        i(0x61, 0x15, 8, 0),                   // r5 = minor
        i(0x55, 0x04, 3, 195),                 // major != 195: allow
        i(0x55, 0x05, 2, gpu_minor(0) as i32), // minor != GPU 0's: allow
        i(0xb7, 0x00, 0, 0),                   // deny
        i(0x95, 0, 0, 0),
        i(0xb7, 0x00, 0, 1), // allow
        i(0x95, 0, 0, 0),
    ];
    let prog = bpf::load(&deny_gpu0).unwrap();
    bpf::attach_multi(&parent, &prog).unwrap();

    let start = |env: &str| {
        let c = Container::new(Flavor::Debian, &[env], PROBE);
        let mut spec = c.spec();
        spec["linux"]["cgroupsPath"] = format!("/{name}/{}", c.id).into();
        c.set_spec(&spec);
        let s = probe(&c, Cgroup::V2);
        (c, s)
    };
    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=0");
    assert!(!s.ok, "started with a GPU it cannot open:\n{}", s.out);
    let node = format!("nvidia{}", gpu_minor(0));
    assert!(
        s.err.contains(&node) && s.err.contains("stays denied") && s.err.contains(&name),
        "the error names the node and the parent cgroup:\n{}\nlog:\n{}",
        s.err,
        c.log_text()
    );
    // A failure in the cgroup phase comes before any mount: the image is untouched.
    assert!(!c.rootfs.join("usr/bin/nvidia-smi").exists());

    let (c, s) = start("NVIDIA_VISIBLE_DEVICES=1");
    assert_gpus(&c, &s, &[1]);
}
