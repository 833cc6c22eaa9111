//! nvhook through each container engine, with the real engine: Podman (hooks.d and
//! CDI), Docker (the `nvidia` runtime and `--gpus`), containerd (`ctr` with the shim as
//! runc binary). Each engine instance is started by the test with its own state, and
//! the set-up is done with `nvhook install` where the engine has one.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn driver_config() -> PathBuf {
    fixtures().driver.join("config.toml")
}

fn nvhook(args: &[&str]) -> Output {
    Command::new(fixtures().bin.join("nvhook"))
        .args(args)
        .env("NVHOOK_CONFIG", driver_config())
        .output()
        .unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    out
}

fn uuids(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split("(UUID: ").nth(1))
        .map(|u| u.trim_end_matches(')').to_string())
        .collect();
    v.sort();
    v
}

fn want(indices: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = indices.iter().map(|i| gpu_uuid(*i)).collect();
    v.sort();
    v
}

const PODMAN_FLAGS: &[&str] = &["--runtime", "runc", "--cgroup-manager", "cgroupfs"];
const PODMAN_RUN: &[&str] = &[
    "run",
    "--rm",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

fn podman(global: &[&str], run: &[&str], rootfs: &Path, script: &str) -> Output {
    assert!(
        which("podman").is_some(),
        "podman is not installed (scripts/ci-deps.sh installs it)"
    );
    Command::new("timeout")
        .arg("120")
        .arg("podman")
        .args(global)
        .args(PODMAN_FLAGS)
        .args(PODMAN_RUN)
        .args(run)
        .arg("--rootfs")
        .arg(rootfs)
        .args(["sh", "-c", script])
        .output()
        .unwrap()
}

const SCRIPT: &str = "nvidia-smi -L; ls /dev | grep nvidia; true";

#[test]
fn podman_hooks_dir() {
    let c = Container::new(Flavor::Debian, &[], "true");
    let hooks = c.tmp.path().join("hooks.d");
    let bin = fixtures().bin.join("nvhook");
    let cfg = driver_config();
    let o = nvhook(&[
        "install",
        "podman",
        "--hooks-dir",
        hooks.to_str().unwrap(),
        "--hook-path",
        bin.to_str().unwrap(),
        "--nvhook-config",
        cfg.to_str().unwrap(),
    ]);
    ok(&o, "nvhook install podman");
    let hooks_arg = ["--hooks-dir", hooks.to_str().unwrap()];
    let out = ok(
        &podman(
            &hooks_arg,
            &["-e", "NVIDIA_VISIBLE_DEVICES=0"],
            &c.rootfs,
            SCRIPT,
        ),
        "podman run",
    );
    assert_eq!(uuids(&out), want(&[0]), "{out}");
    assert!(
        out.lines().any(|l| l == format!("nvidia{}", gpu_minor(0))),
        "{out}"
    );
    // without the variable: untouched
    let c2 = Container::new(Flavor::Rhel, &[], "true");
    let out = ok(
        &podman(&hooks_arg, &[], &c2.rootfs, SCRIPT),
        "podman run without GPUs",
    );
    assert!(
        uuids(&out).is_empty() && !out.contains("nvidiactl"),
        "{out}"
    );
    assert!(!c2.rootfs.join("usr/lib64/libcuda.so").exists());
}

/// A CDI spec file in the engine's spec dir for the test's lifetime.
struct CdiSpec(PathBuf);
impl Drop for CdiSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn podman_cdi() {
    let dir = Path::new("/var/run/cdi");
    std::fs::create_dir_all(dir).unwrap();
    let spec = CdiSpec(dir.join(format!("nvhook-test-{}.json", std::process::id())));
    ok(
        &nvhook(&["cdi", "generate", "--output", spec.0.to_str().unwrap()]),
        "nvhook cdi generate",
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec.0).unwrap()).unwrap();
    nvhook::cdi::validate(&v).unwrap();
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"0") && names.contains(&"all") && names.contains(&gpu_uuid(3).as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&"0:1") && names.contains(&"MIG-0000aaaa-bbbb-cccc-dddd-000000000002"),
        "MIG devices: {names:?}"
    );
    for (device, indices) in [
        (format!("nvidia.com/gpu={}", gpu_uuid(1)), vec![1]),
        ("nvidia.com/gpu=all".to_string(), vec![0, 1, 2, 3]),
    ] {
        let c = Container::new(Flavor::Debian, &[], "true");
        let out = ok(
            &podman(
                &[],
                &["--device", &device],
                &c.rootfs,
                &format!("{SCRIPT}; ldconfig -p | grep libcuda.so.1"),
            ),
            "podman run --device",
        );
        assert_eq!(uuids(&out), want(&indices), "{device}: {out}");
        assert!(
            out.contains("libcuda.so.1 (libc6,x86-64)"),
            "the CDI hook ran ldconfig: {out}"
        );
    }
    // a MIG device by its CDI name (the UUID: Podman 4.3 cannot parse a request for
    // `=0:1`, though the spec names it too): the parent GPU and exactly that MIG device
    let c = Container::new(Flavor::Debian, &[], "true");
    let out = ok(
        &podman(
            &[],
            &[
                "--device",
                "nvidia.com/gpu=MIG-0000aaaa-bbbb-cccc-dddd-000000000002",
            ],
            &c.rootfs,
            SCRIPT,
        ),
        "podman run --device MIG",
    );
    let mut expect = vec![
        gpu_uuid(0),
        "MIG-0000aaaa-bbbb-cccc-dddd-000000000002".to_string(),
    ];
    expect.sort();
    assert_eq!(uuids(&out), expect, "{out}");
}

/// A dockerd of the test's own (socket, data and exec roots), stopped on drop.
struct Dockerd {
    child: Child,
    sock: String,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    fn start(config: &Path, path_prefix: &Path) -> Dockerd {
        assert!(
            which("dockerd").is_some(),
            "dockerd is not installed (scripts/ci-deps.sh installs docker.io)"
        );
        let dir = tempfile::Builder::new()
            .prefix("nvhook-dockerd-")
            .tempdir()
            .unwrap();
        let sock = format!("unix://{}", dir.path().join("docker.sock").display());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let path = format!(
            "{}:{}",
            path_prefix.display(),
            std::env::var("PATH").unwrap()
        );
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(config)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .args([
                "-H",
                &sock,
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .env("PATH", path)
            .env("NVHOOK_CONFIG", driver_config())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Dockerd {
            child,
            sock,
            _dir: dir,
        };
        let t = Instant::now();
        while !d.docker(&["info"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not come up"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["120", "docker", "-H", &self.sock])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn docker_runtime_and_gpus_flag() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let daemon_json = tmp.path().join("daemon.json");
    std::fs::write(&daemon_json, "{\"log-level\": \"warn\"}\n").unwrap();
    let shim = f.bin.join("nvhook-runtime");
    ok(
        &nvhook(&[
            "install",
            "docker",
            "--docker-config",
            daemon_json.to_str().unwrap(),
            "--runtime-path",
            shim.to_str().unwrap(),
        ]),
        "nvhook install docker",
    );
    // Docker's --gpus runs `nvidia-container-runtime-hook prestart` found on its PATH.
    let links = tmp.path().join("bin");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(
        f.bin.join("nvhook"),
        links.join("nvidia-container-runtime-hook"),
    )
    .unwrap();
    let d = Dockerd::start(&daemon_json, &links);
    let image = format!("nvhook-test-{}:debian", std::process::id());
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | docker -H '{}' import - '{image}'",
            f.debian.display(),
            d.sock
        ))
        .output()
        .unwrap();
    ok(&tar, "docker import");
    // `docker run --rm --network none FLAGS IMAGE sh -c SCRIPT`, which must succeed
    let run = |flags: &[&str]| {
        let args = [
            &["run", "--rm", "--network", "none"][..],
            flags,
            &[&image, "sh", "-c", SCRIPT],
        ]
        .concat();
        ok(&d.docker(&args), &format!("docker run {}", flags.join(" ")))
    };
    let out = run(&["--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=1"]);
    assert_eq!(uuids(&out), want(&[1]), "{out}");
    let out = run(&["--gpus", "device=0"]);
    assert_eq!(uuids(&out), want(&[0]), "{out}");
    // both at once: the shim sees Docker's hook and adds no second one
    let out = run(&["--runtime", "nvidia", "--gpus", "device=2"]);
    assert_eq!(uuids(&out), want(&[2]), "{out}");
    // a container without GPUs through the nvidia runtime is untouched
    let out = run(&["--runtime", "nvidia"]);
    assert!(
        uuids(&out).is_empty() && !out.contains("nvidiactl"),
        "{out}"
    );
    let _ = d.docker(&["rmi", &image]);
}

#[test]
fn containerd_with_shim_as_runc() {
    assert!(
        which("containerd").is_some() && which("ctr").is_some(),
        "containerd is not installed (scripts/ci-deps.sh installs it)"
    );
    let f = fixtures();
    let tmp = tempfile::Builder::new()
        .prefix("nvhook-containerd-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let sock = dir.join("containerd.sock");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{0}/ttrpc.sock\"\n",
            dir.display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("NVHOOK_CONFIG", driver_config())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ctr = |args: &[&str]| {
        Command::new("timeout")
            .args(["120", "ctr", "--address", sock.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let t = Instant::now();
    while !ctr(&["version"]).status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "containerd did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = Container::new(Flavor::Rhel, &[], "true");
    let shim = f.bin.join("nvhook-runtime");
    let id = format!("nvhook-ctr-{}", std::process::id());
    let o = ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        shim.to_str().unwrap(),
        "--env",
        "PATH=/usr/bin:/bin:/usr/sbin",
        "--env",
        "NVIDIA_VISIBLE_DEVICES=2",
        "--rootfs",
        c.rootfs.to_str().unwrap(),
        &id,
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let out = ok(&o, "ctr run");
    assert_eq!(uuids(&out), want(&[2]), "{out}");
}

#[test]
fn installer_cli_dry_run_and_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let crio = tmp.path().join("crio.conf.d");
    let args = [
        "--crio-dropin-dir",
        crio.to_str().unwrap(),
        "--runtime-path",
        "/opt/nvhook/nvhook-runtime",
    ];
    let out = ok(
        &nvhook(&[&["install", "crio", "--dry-run"][..], &args].concat()),
        "dry run",
    );
    assert!(
        out.contains("+runtime_path = \"/opt/nvhook/nvhook-runtime\""),
        "{out}"
    );
    assert!(!crio.exists(), "dry run wrote");
    ok(
        &nvhook(&[&["install", "crio"][..], &args].concat()),
        "install",
    );
    assert!(crio.join("99-nvhook.toml").exists());
    let out = ok(
        &nvhook(&[&["install", "crio"][..], &args].concat()),
        "install again",
    );
    assert!(out.contains("nothing to change"), "{out}");
    ok(
        &nvhook(&[&["uninstall", "crio"][..], &args].concat()),
        "uninstall",
    );
    assert!(!crio.join("99-nvhook.toml").exists());
    let o = nvhook(&["install", "kubelet"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown engine"));
}
