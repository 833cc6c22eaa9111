//! nvhook through each container engine, with the real engine: Podman (hooks.d and
//! CDI), Docker (the `nvidia` runtime and `--gpus`, set as default and uninstalled),
//! containerd (its own `config dump` of the installed stock config with the CRI plugin
//! enabled, and `ctr` with the shim as runc binary). Each engine instance is started by the test with its own state, and
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
    let hook = fixtures().bin.join("nvhook");
    ok(
        &nvhook(&[
            "cdi",
            "generate",
            "--output",
            spec.0.to_str().unwrap(),
            "--hook-path",
            hook.to_str().unwrap(),
        ]),
        "nvhook cdi generate",
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec.0).unwrap()).unwrap();
    nvhook::engines::cdi::validate(&v).unwrap();
    // the CDI project's own JSON schema
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cdi-schema/validate.py");
    let o = Command::new("/usr/bin/python3")
        .arg(&schema)
        .arg(&spec.0)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "schema validation (python3-jsonschema, scripts/ci-deps.sh installs it): {out}{err}"
    );
    // the installed hook it names, the config it reads, the driver it was made for
    let h = &v["containerEdits"]["hooks"][0];
    assert_eq!(h["path"].as_str(), hook.to_str());
    let args: Vec<&str> = h["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--driver-version", "550.54.14"]),
        "{args:?}"
    );
    assert!(args.windows(2).any(|w| w[0] == "--config"), "{args:?}");
    let common: Vec<&str> = v["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert!(common.contains(&"/dev/nvidia-modeset"), "{common:?}");
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"1") && names.contains(&"all") && names.contains(&gpu_uuid(3).as_str()),
        "{names:?}"
    );
    // GPU 0 is in MIG mode: offered only through its MIG devices, as NVIDIA names them
    assert!(
        !names.contains(&"0") && !names.contains(&gpu_uuid(0).as_str()),
        "{names:?}"
    );
    // `nvhook cdi list` shows the same names
    let listed = ok(
        &nvhook(&["cdi", "list", "--spec", spec.0.to_str().unwrap()]),
        "nvhook cdi list",
    );
    let want_names: Vec<String> = names
        .iter()
        .map(|n| format!("nvidia.com/gpu={n}"))
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want_names);
    assert!(
        names.contains(&"0:1") && names.contains(&"MIG-0000aaaa-bbbb-cccc-dddd-000000000002"),
        "MIG devices: {names:?}"
    );
    let mut every = want(&[0, 1, 2, 3]);
    every.extend([1, 2].map(|i| format!("MIG-0000aaaa-bbbb-cccc-dddd-00000000000{i}")));
    every.sort();
    for (device, expected) in [
        (format!("nvidia.com/gpu={}", gpu_uuid(1)), want(&[1])),
        // every GPU and every MIG device, as NVIDIA's `all`
        ("nvidia.com/gpu=all".to_string(), every),
    ] {
        let c = Container::new(Flavor::Debian, &[], "true");
        let out = ok(
            &podman(
                &[],
                &["--device", &device],
                &c.rootfs,
                &format!(
                    "{SCRIPT}; ldconfig -p | grep libcuda.so; echo \"link: $(readlink /usr/lib/x86_64-linux-gnu/libcuda.so)\""
                ),
            ),
            "podman run --device",
        );
        assert_eq!(uuids(&out), expected, "{device}: {out}");
        assert!(
            out.contains("libcuda.so.1 (libc6,x86-64)"),
            "the CDI hook updated the loader cache: {out}"
        );
        // the development link, made by the spec's hook (`--link`) and in the cache
        assert!(
            out.lines().any(|l| l == "link: libcuda.so.1")
                && out.contains("libcuda.so (libc6,x86-64)"),
            "{device}: {out}"
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
    // the spec's hook refuses a host whose driver is not the one the spec was made for
    let stale = std::fs::read_to_string(&spec.0)
        .unwrap()
        .replace("\"550.54.14\"", "\"549.1.2\"");
    std::fs::write(&spec.0, stale).unwrap();
    let c = Container::new(Flavor::Debian, &[], "true");
    let o = podman(&[], &["--device", "nvidia.com/gpu=1"], &c.rootfs, SCRIPT);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("generated for driver 549.1.2") && err.contains("regenerate"),
        "{err}"
    );
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

/// `nvhook VERB containerd` on the config file `cfg`, with the built shim, and `extra`.
fn nvhook_containerd(verb: &str, cfg: &Path, extra: &[&str]) -> Output {
    let shim = fixtures().bin.join("nvhook-runtime");
    let args = [
        verb,
        "containerd",
        "--containerd-config",
        cfg.to_str().unwrap(),
        "--runtime-path",
        shim.to_str().unwrap(),
    ];
    nvhook(&[&args[..], extra].concat())
}

/// `containerd --config F config dump`: containerd's own view of a config file.
fn containerd_dump(config: &Path) -> String {
    let o = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    ok(&o, "containerd config dump")
}

/// A dump as TOML, without the `imports` line (it names the file dumped).
fn dump_table(dump: &str) -> toml::Table {
    let mut t: toml::Table = toml::from_str(dump).unwrap();
    t.remove("imports");
    t
}

/// containerd's stock configuration (`containerd config default`, CRI plugin enabled)
/// with a CNI dir of the operator's own and the test's own state and sockets.
fn stock_containerd_config(dir: &Path) -> String {
    assert!(
        which("containerd").is_some() && which("ctr").is_some(),
        "containerd is not installed (scripts/ci-deps.sh installs it)"
    );
    let o = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .unwrap();
    let stock = ok(&o, "containerd config default");
    stock
        .replace("bin_dir = \"/opt/cni/bin\"", "bin_dir = \"/usr/lib/cni\"")
        .replace(
            "root = \"/var/lib/containerd\"",
            &format!("root = {:?}", dir.join("root")),
        )
        .replace(
            "state = \"/run/containerd\"",
            &format!("state = {:?}", dir.join("state")),
        )
        .replace(
            "address = \"/run/containerd/containerd.sock\"",
            &format!("address = {:?}", dir.join("containerd.sock")),
        )
        .replace(
            "[ttrpc]\n  address = \"\"",
            &format!("[ttrpc]\n  address = {:?}", dir.join("ttrpc.sock")),
        )
}

/// Installed into the stock config (CRI plugin on) and into an empty one, with and
/// without `--set-as-default`: containerd's own dump keeps every runtime, the CNI
/// settings, `sandbox_image` and the default runtime, and adds exactly the nvidia
/// runtime; uninstalled, the dump and the file are what they were.
#[test]
fn containerd_install_keeps_the_node() {
    let f = fixtures();
    let tmp = tempfile::Builder::new()
        .prefix("nvhook-ctd-install-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let shim = f.bin.join("nvhook-runtime");
    for (case, text) in [
        ("stock", stock_containerd_config(dir)),
        ("empty", String::new()),
    ] {
        for set_default in [false, true] {
            let cfg = dir.join(format!("{case}-{set_default}.toml"));
            std::fs::write(&cfg, &text).unwrap();
            let before = containerd_dump(&cfg);
            let mut extra = vec!["--containerd-dropin-dir", dir.to_str().unwrap()];
            if set_default {
                extra.push("--set-as-default");
            }
            let out = ok(
                &nvhook_containerd("install", &cfg, &extra),
                "nvhook install containerd",
            );
            assert!(out.contains("restart containerd"), "{out}");
            let after = containerd_dump(&cfg);
            if case == "stock" && !set_default {
                eprintln!(
                    "containerd config dump, stock config, before and after install:\n{}",
                    nvhook::engines::unified_diff::unified("before", "after", &before, &after)
                );
            }
            let mut a = dump_table(&after);
            let b = dump_table(&before);
            let cri = |t: &mut toml::Table| -> toml::Table {
                t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
                    .as_table()
                    .unwrap()
                    .clone()
            };
            let ca = cri(&mut a);
            let rt = &ca["runtimes"]["nvidia"];
            assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
            assert_eq!(rt["options"]["BinaryName"].as_str(), shim.to_str());
            assert!(ca["runtimes"].get("runc").is_some(), "{case}: runc kept");
            assert_eq!(
                ca["default_runtime_name"].as_str(),
                Some(if set_default { "nvidia" } else { "runc" })
            );
            // everything else exactly as before
            let mut b = b;
            let c = a["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
                .as_table_mut()
                .unwrap();
            c["runtimes"].as_table_mut().unwrap().remove("nvidia");
            c.insert("default_runtime_name".into(), "runc".into());
            if case == "empty" {
                // containerd's built-in runc, written out by nvhook (a runtimes table in
                // the file replaces the built-in one): its options table is empty where
                // the built-in one lists every option at its zero value, the same thing
                let opts = |t: &mut toml::Table| {
                    t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
                        .as_table_mut()
                        .unwrap()
                        .remove("options")
                        .unwrap()
                };
                let builtin = opts(&mut b);
                let written = opts(&mut a);
                assert!(written.as_table().unwrap().is_empty(), "{written:?}");
                for (k, v) in builtin.as_table().unwrap() {
                    let zero = matches!(v, toml::Value::String(s) if s.is_empty())
                        || matches!(v, toml::Value::Integer(0) | toml::Value::Boolean(false));
                    assert!(zero, "built-in runc option {k} = {v:?} is not a zero value");
                }
            }
            assert_eq!(
                a, b,
                "{case}, set_default {set_default}: only the runtime was added"
            );
            ok(
                &nvhook_containerd("uninstall", &cfg, &extra),
                "nvhook uninstall containerd",
            );
            assert_eq!(
                std::fs::read_to_string(&cfg).unwrap(),
                text,
                "{case}: file restored"
            );
            assert_eq!(containerd_dump(&cfg), before, "{case}: dump restored");
        }
    }
}

/// An imported file that defines the CRI plugin replaces the main file's table in
/// containerd 1.x: an edit of the main file would not take effect. containerd's own dump
/// of the result shows it, and the install refuses, writing nothing.
#[test]
fn containerd_install_refuses_what_an_import_would_override() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cri = dir.join("cri.toml");
    std::fs::write(
        &cri,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n",
    )
    .unwrap();
    let cfg = dir.join("config.toml");
    let original = stock_containerd_config(dir).replace(
        "imports = []",
        &format!("imports = [{:?}]", cri.display().to_string()),
    );
    std::fs::write(&cfg, &original).unwrap();
    let o = nvhook_containerd("install", &cfg, &[]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("containerd config dump") && err.contains("imported file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "nothing written"
    );
}

/// The stock config (CRI plugin on) with nvhook installed runs a GPU container through
/// the shim (`ctr` with the shim as runc binary).
#[test]
fn containerd_with_shim_as_runc() {
    let f = fixtures();
    let tmp = tempfile::Builder::new()
        .prefix("nvhook-containerd-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let sock = dir.join("containerd.sock");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, stock_containerd_config(dir)).unwrap();
    let shim = f.bin.join("nvhook-runtime");
    ok(
        &nvhook_containerd("install", &cfg, &[]),
        "nvhook install containerd",
    );
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
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
            "containerd did not come up: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let plugins = ok(&ctr(&["plugins", "ls"]), "ctr plugins ls");
    let cri_ok = plugins
        .lines()
        .any(|l| l.contains("io.containerd.grpc.v1") && l.contains("cri") && l.contains("ok"));
    let c = Container::new(Flavor::Rhel, &[], "true");
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
    assert!(cri_ok, "the CRI plugin is enabled and loaded: {plugins}");
    let out = ok(&o, "ctr run");
    assert_eq!(uuids(&out), want(&[2]), "{out}");
}

/// Docker with nvhook as its default runtime, then uninstalled: dockerd starts both
/// times, with the default it should have.
#[test]
fn docker_set_as_default_and_uninstalled() {
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let daemon_json = tmp.path().join("daemon.json");
    let original = "{\n    \"log-level\": \"warn\"\n}\n";
    std::fs::write(&daemon_json, original).unwrap();
    let shim = f.bin.join("nvhook-runtime");
    let args = [
        "docker",
        "--docker-config",
        daemon_json.to_str().unwrap(),
        "--runtime-path",
        shim.to_str().unwrap(),
        "--set-as-default",
    ];
    let out = ok(&nvhook(&[&["install"][..], &args].concat()), "install");
    assert!(out.contains("restart dockerd"), "{out}");
    let written = std::fs::read_to_string(&daemon_json).unwrap();
    assert!(
        written.contains("\n    \"runtimes\": {"),
        "indent kept: {written}"
    );
    {
        let d = Dockerd::start(&daemon_json, tmp.path());
        let o = ok(
            &d.docker(&["info", "--format", "{{.DefaultRuntime}}"]),
            "docker info",
        );
        assert_eq!(o.trim(), "nvidia");
        // Docker reads the default runtime's `--version` for its runc commit: the shim's
        // own first line must not hide runc's
        let runc = ok(
            &Command::new("runc").arg("--version").output().unwrap(),
            "runc",
        );
        let commit = runc
            .lines()
            .find_map(|l| l.strip_prefix("commit:"))
            .unwrap()
            .trim()
            .to_string();
        let o = ok(
            &d.docker(&["info", "--format", "{{.RuncCommit.ID}}"]),
            "docker info",
        );
        assert_eq!(
            o.trim(),
            commit,
            "docker info's runc commit through the shim"
        );
    }
    ok(&nvhook(&[&["uninstall"][..], &args].concat()), "uninstall");
    assert_eq!(std::fs::read_to_string(&daemon_json).unwrap(), original);
    let d = Dockerd::start(&daemon_json, tmp.path());
    let o = ok(
        &d.docker(&["info", "--format", "{{.DefaultRuntime}}"]),
        "docker info",
    );
    assert_eq!(o.trim(), "runc");
}

#[test]
fn installer_cli_dry_run_and_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let crio = tmp.path().join("crio.conf.d");
    let shim = fixtures().bin.join("nvhook-runtime");
    let args = [
        "--crio-dropin-dir",
        crio.to_str().unwrap(),
        "--runtime-path",
        shim.to_str().unwrap(),
    ];
    let out = ok(
        &nvhook(&[&["install", "crio", "--dry-run"][..], &args].concat()),
        "dry run",
    );
    assert!(
        out.contains(&format!("+runtime_path = \"{}\"", shim.display())),
        "{out}"
    );
    // a real unified diff: headers and a hunk
    assert!(
        out.contains("--- /dev/null\n+++ ") && out.contains("@@ -0,0 +1,4 @@"),
        "{out}"
    );
    assert!(out.contains("dry run, nothing written"), "{out}");
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
    // an engine is never pointed at a shim that is not there
    let o = nvhook(&[
        "install",
        "crio",
        "--crio-dropin-dir",
        crio.to_str().unwrap(),
        "--runtime-path",
        "/nonexistent/nvhook-runtime",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{:?}",
        text(&o)
    );
    assert!(!crio.join("99-nvhook.toml").exists());
    // nor under a name that is not a name
    let o = nvhook(&[&["install", "crio", "--runtime-name", "a b"][..], &args].concat());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("runtime name"),
        "{:?}",
        text(&o)
    );
}

/// The refresh unit's command, run as written (with the built binary and a temp
/// output), writes a spec that validates: what the operator enables with one command.
#[test]
fn cdi_refresh_unit_command_works() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/nvhook-cdi-refresh.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nvidia.json");
    let bin = fixtures().bin.join("nvhook");
    let cmd = exec
        .replace("/usr/local/bin/nvhook", bin.to_str().unwrap())
        .replace("/var/run/cdi/nvidia.json", out.to_str().unwrap());
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("NVHOOK_CONFIG", driver_config())
        .output()
        .unwrap();
    ok(&o, "the unit's ExecStart");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    nvhook::engines::cdi::validate(&v).unwrap();
    assert_eq!(
        v["containerEdits"]["hooks"][0]["path"].as_str(),
        bin.to_str()
    );
}
