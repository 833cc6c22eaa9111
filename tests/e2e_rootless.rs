//! Rootless Podman: an unprivileged user (made by scripts/ci-deps.sh, with subordinate
//! ids) runs GPU containers through the system's nvhook, by hooks.d and by CDI. The
//! hook then runs inside that user's user namespace: host root's files show as the
//! overflow uid, no device cgroup can be changed, and its ldconfig sandbox nests a
//! namespace in the user's. Each test has its own Podman state (storage, run dir and
//! so its own rootless namespace), removed at the end.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "nvhook-rootless";

fn uids_of(user: &str) -> (u32, u32, PathBuf) {
    let o = Command::new("getent")
        .args(["passwd", user])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    let f: Vec<&str> = line.trim().split(':').collect();
    assert!(
        f.len() >= 6,
        "user {user} is missing: scripts/ci-deps.sh creates it (with subordinate ids)"
    );
    for db in ["/etc/subuid", "/etc/subgid"] {
        let t = std::fs::read_to_string(db).unwrap_or_default();
        assert!(
            t.lines().any(|l| l.starts_with(&format!("{user}:"))),
            "{user} has no range in {db}: scripts/ci-deps.sh adds one"
        );
    }
    for tool in ["newuidmap", "podman", "runuser", "unshare"] {
        assert!(
            which(tool).is_some(),
            "{tool} is not installed (scripts/ci-deps.sh installs it)"
        );
    }
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        PathBuf::from(f[5]),
    )
}

/// One rootless Podman set-up: a user-owned rootfs copy, state dirs, a config whose log
/// the user can write, the hook installed in a hooks dir of its own.
struct Rootless {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Rootless {
    fn new(flavor: Flavor) -> Rootless {
        let (uid, gid, home) = uids_of(USER);
        let f = fixtures();
        let dir = tempfile::Builder::new()
            .prefix("nvr-")
            .tempdir() // short: Podman's runroot may not pass 50 characters
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = match flavor {
            Flavor::Debian => &f.debian,
            Flavor::Rhel => &f.rhel,
        };
        let r = Rootless {
            dir,
            uid,
            gid,
            home,
        };
        sh_ok(Command::new("cp").arg("-a").arg(src).arg(r.rootfs()));
        for d in ["state", "run"] {
            std::fs::create_dir(r.path(d)).unwrap();
        }
        std::fs::set_permissions(r.path("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(r.path("nvhook.log"), "").unwrap();
        sh_ok(
            Command::new("chown")
                .args(["-R", "-h", &format!("{uid}:{gid}")])
                .arg(r.rootfs())
                .arg(r.path("state"))
                .arg(r.path("run"))
                .arg(r.path("nvhook.log")),
        );
        r.write_config();
        let hooks = r.path("hooks.d");
        let o = Command::new(f.bin.join("nvhook"))
            .args(["install", "podman", "--hooks-dir"])
            .arg(&hooks)
            .arg("--hook-path")
            .arg(f.bin.join("nvhook"))
            .arg("--nvhook-config")
            .arg(r.path("config.toml"))
            .output()
            .unwrap();
        assert!(o.status.success(), "install podman: {:?}", text(&o));
        r
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn rootfs(&self) -> PathBuf {
        self.path("rootfs")
    }

    /// The synthetic driver's config, logging to a file the user owns.
    fn write_config(&self) {
        self.write_config_with("")
    }

    /// The same, plus `extra` top-level keys.
    fn write_config_with(&self, extra: &str) {
        let d = &fixtures().driver;
        std::fs::write(
            self.path("config.toml"),
            format!(
                "driver-root = \"{0}/root\"\ndev-root = \"{0}\"\nproc-root = \"{0}/proc\"\nsys-root = \"{0}/sys\"\n{extra}\n[runtime]\nruntimes = [\"runc\"]\n[log]\nfile = \"{1}\"\nlevel = \"debug\"\n",
                d.display(),
                self.path("nvhook.log").display(),
            ),
        )
        .unwrap();
    }

    /// `podman run` as the user, with this set-up's state and hooks. With `fake_dev`,
    /// under scripts/fake-dev-ns.sh (CDI: rootless runc binds device nodes from /dev),
    /// after running that shell command as root there.
    fn podman(&self, run: &[&str], script: &str, fake_dev: Option<&str>) -> Output {
        let mut argv: Vec<String> = Vec::new();
        if let Some(setup) = fake_dev {
            argv.extend(["unshare", "-m", "--propagation", "private"].map(String::from));
            argv.push(repo_script("fake-dev-ns.sh"));
            argv.push(fixtures().driver.join("dev").display().to_string());
            argv.extend([
                "sh".into(),
                "-ec".into(),
                format!("{setup}\nexec \"$@\""),
                "sh".into(),
            ]);
        }
        argv.extend(["timeout", "120", "runuser", "-u", USER, "--", "env", "-i"].map(String::from));
        argv.push(format!("HOME={}", self.home.display()));
        argv.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        argv.push(format!("XDG_RUNTIME_DIR={}", self.path("run").display()));
        argv.push("podman".into());
        for (flag, v) in [
            ("--root", self.path("state/storage")),
            ("--runroot", self.path("state/runroot")),
            ("--tmpdir", self.path("state/tmp")),
            ("--hooks-dir", self.path("hooks.d")),
        ] {
            argv.push(flag.into());
            argv.push(v.display().to_string());
        }
        argv.extend(
            [
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "run",
                "--rm",
                "--network",
                "none",
            ]
            .map(String::from),
        );
        argv.extend(run.iter().map(|s| s.to_string()));
        argv.push("--rootfs".into());
        argv.push(self.rootfs().display().to_string());
        argv.extend(["sh".into(), "-c".into(), script.into()]);
        Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("nvhook.log")).unwrap_or_default()
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        self.stop_namespace();
    }
}

impl Rootless {
    /// Stops this set-up's rootless namespace holder (Podman's pause process): nothing
    /// of the test outlives it, and the next `podman` makes a new namespace (which
    /// sees the mount namespace it is started from).
    fn stop_namespace(&self) {
        for p in ["state/tmp/pause.pid", "run/libpod/tmp/pause.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.path(p)) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

fn repo_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
        .display()
        .to_string()
}

fn sh_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {:?}", text(&o));
}

fn ok(o: &Output, what: &str) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    out
}

fn uuids(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("(UUID: ").nth(1))
        .map(|u| u.trim_end_matches(')').to_string())
        .collect()
}

const SCRIPT: &str = "nvidia-smi -L; ls /dev | grep nvidia; ldconfig -p | grep libcuda.so.1; \
     echo '== uid_map'; cat /proc/self/uid_map; \
     echo '== mounts'; grep -E ' /dev/nvidia| /usr/(lib|lib64)/.*libcuda' /proc/self/mounts; \
     echo '== end'";

#[test]
fn rootless_podman_hooks_dir() {
    for flavor in [Flavor::Debian, Flavor::Rhel] {
        let r = Rootless::new(flavor);
        let out = ok(
            &r.podman(&["-e", "NVIDIA_VISIBLE_DEVICES=0"], SCRIPT, None),
            "rootless podman run",
        );
        // exactly GPU 0, its nodes, and the ld cache
        assert_eq!(uuids(&out), vec![gpu_uuid(0)], "{out}");
        assert!(
            out.lines().any(|l| l == format!("nvidia{}", gpu_minor(0))),
            "{out}"
        );
        for other in 1..4 {
            assert!(
                !out.lines()
                    .any(|l| l == format!("nvidia{}", gpu_minor(other))),
                "{out}"
            );
        }
        assert!(out.contains("libcuda.so.1 (libc6,x86-64)"), "{out}");
        // it ran in the user's namespace, not the host's
        let map = section(&out, "uid_map")
            .into_iter()
            .find(|l| l.split_whitespace().nth(1) == Some(&r.uid.to_string()))
            .unwrap_or_else(|| panic!("the container's uid_map maps uid {}: {out}", r.uid));
        assert_eq!(map.split_whitespace().next(), Some("0"), "{out}");
        // everything mounted is read-only: the nodes and the libraries
        let mounts = section(&out, "mounts");
        assert!(
            mounts.iter().any(|l| l.contains("/dev/nvidiactl"))
                && mounts.iter().any(|l| l.contains("libcuda")),
            "{out}"
        );
        for m in &mounts {
            let opts = m.split_whitespace().nth(3).unwrap_or("");
            assert!(opts.split(',').any(|o| o == "ro"), "writable: {m}");
        }
        // the device cgroup was left alone, and the log says why
        let log = r.log();
        assert!(
            log.contains("device cgroup left alone") && log.contains("user namespace"),
            "{log}"
        );
        // what nvhook created in the container belongs to the user (its root there)
        let lib = match flavor {
            Flavor::Debian => r.rootfs().join("usr/lib/x86_64-linux-gnu/libcuda.so.1"),
            Flavor::Rhel => r.rootfs().join("usr/lib64/libcuda.so.1"),
        };
        let m = std::fs::symlink_metadata(&lib).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&m),
                std::os::unix::fs::MetadataExt::gid(&m)
            ),
            (r.uid, r.gid),
            "{}",
            lib.display()
        );
    }
}

#[test]
fn rootless_podman_with_the_ldconfig_sandbox() {
    // ld-cache = "ldconfig": the sandbox's user namespace nests in the user's
    let r = Rootless::new(Flavor::Debian);
    r.write_config_with("ld-cache = \"ldconfig\"");
    let out = ok(
        &r.podman(&["-e", "NVIDIA_VISIBLE_DEVICES=0"], SCRIPT, None),
        "rootless podman run, ldconfig",
    );
    assert_eq!(uuids(&out), vec![gpu_uuid(0)], "{out}");
    assert!(out.contains("libcuda.so.1 (libc6,x86-64)"), "{out}");
}

#[test]
fn rootless_podman_cdi() {
    let dir = Path::new("/var/run/cdi");
    std::fs::create_dir_all(dir).unwrap();
    let spec = dir.join(format!("nvhook-rootless-{}.json", std::process::id()));
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&spec);
    let r = Rootless::new(Flavor::Debian);
    let f = fixtures();
    let o = Command::new(f.bin.join("nvhook"))
        .arg("--config")
        .arg(r.path("config.toml"))
        .args(["cdi", "generate", "--output"])
        .arg(&spec)
        .arg("--hook-path")
        .arg(f.bin.join("nvhook"))
        .output()
        .unwrap();
    ok(&o, "nvhook cdi generate");
    let out = ok(
        &r.podman(&["--device", "nvidia.com/gpu=1"], SCRIPT, Some("true")),
        "rootless podman run --device",
    );
    assert_eq!(uuids(&out), vec![gpu_uuid(1)], "{out}");
    assert!(
        out.lines().any(|l| l == format!("nvidia{}", gpu_minor(1))),
        "{out}"
    );
    // the spec's createContainer hook ran its sandboxed ldconfig in the user's namespace
    assert!(out.contains("libcuda.so.1 (libc6,x86-64)"), "{out}");
    // a host whose GPU node the user cannot open: the spec's hook says so in one line
    let node = format!("/dev/nvidia{}", gpu_minor(1));
    r.stop_namespace();
    let o = r.podman(
        &["--device", "nvidia.com/gpu=1"],
        SCRIPT,
        Some(&format!("chmod 0660 {node}")),
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}\n{}", r.log());
    let line = err
        .lines()
        .find(|l| l.contains("nvhook:"))
        .unwrap_or_else(|| panic!("no nvhook line: {err}"));
    assert!(
        line.contains(&format!(
            "{node}: a rootless container could not open it (mode 0660"
        )),
        "{line}"
    );
}

#[test]
fn rootless_device_node_the_user_cannot_open_is_named() {
    // A copy of the synthetic driver whose GPU nodes only root's group may open, as a
    // host with NVreg_DeviceFileMode=0660 has.
    let r = Rootless::new(Flavor::Debian);
    let copy = r.path("driver");
    sh_ok(
        Command::new("cp")
            .arg("-a")
            .arg(&fixtures().driver)
            .arg(&copy),
    );
    let node = copy.join(format!("dev/nvidia{}", gpu_minor(0)));
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
    let cfg = std::fs::read_to_string(r.path("config.toml"))
        .unwrap()
        .replace(
            &fixtures().driver.display().to_string(),
            &copy.display().to_string(),
        );
    std::fs::write(r.path("config.toml"), cfg).unwrap();
    let o = r.podman(&["-e", "NVIDIA_VISIBLE_DEVICES=0"], SCRIPT, None);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    let line = err
        .lines()
        .find(|l| l.contains("nvhook:"))
        .unwrap_or_else(|| panic!("no nvhook line: {err}"));
    assert!(
        line.contains(&node.display().to_string())
            && line.contains("mode 0660")
            && line.contains("rootless")
            && line.contains("readable and writable"),
        "{line}"
    );
}

#[test]
fn hook_run_by_a_plain_user_says_it_cannot_mount() {
    // The hook run by hand, outside any engine, as an unprivileged user against a
    // process of that user: it has no capability to mount, and says so in one line.
    let (uid, gid, _) = uids_of(USER);
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    sh_ok(
        Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(c.tmp.path()),
    );
    std::fs::set_permissions(c.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sleeper = Command::new("runuser")
        .args(["-u", USER, "--", "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // runuser's child: the sleep itself
    let pid = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", sleeper.id()))
        .unwrap()
        .split_whitespace()
        .next()
        .map(str::to_string)
        .unwrap_or(sleeper.id().to_string());
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"by-hand","status":"created","pid":{pid},"bundle":"{}"}}"#,
        c.bundle.display()
    );
    let mut hook = Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(fixtures().bin.join("nvhook"))
        .arg("--config")
        .arg(&c.config)
        .arg("prestart")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    hook.stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let o = hook.wait_with_output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("cannot mount into the container") && lines[0].contains("CAP_SYS_ADMIN"),
        "{err}"
    );
}

/// The first host uid of `user`'s subordinate range.
fn subuid_start(user: &str) -> u32 {
    std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && f[0] == user).then(|| f[1].parse().unwrap())
        })
        .unwrap()
}

#[test]
fn rootless_trust_is_not_fooled_by_the_overflow_uid() {
    // In the user's namespace host root's files show as uid 65534, and so do another
    // host user's, and so does the containers' own `nobody` (a mapped subordinate id).
    // The MPS pipe directory, the one read-write bind, shows which ones pass.
    let r = Rootless::new(Flavor::Debian);
    let root = fixtures().driver.join("root");
    let base = format!("rl-mps-{}", std::process::id());
    let host = |p: &str| root.join(format!("tmp/{base}/{p}"));
    for d in [
        "good/nvidia-mps",
        "sticky/nvidia-mps",
        "sticky/other-mps",
        "mapped/nvidia-mps",
    ] {
        std::fs::create_dir_all(host(d)).unwrap();
    }
    std::fs::set_permissions(host("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // what any host user can make in /tmp
    std::os::unix::fs::chown(host("sticky/other-mps"), Some(4321), Some(4321)).unwrap();
    // host id of the namespace's uid 65534: subordinate range start + 65533
    let nobody = subuid_start(USER) + 65533;
    std::os::unix::fs::chown(host("mapped/nvidia-mps"), Some(nobody), Some(nobody)).unwrap();
    for (case, path, bound, why) in [
        ("root-owned", "good/nvidia-mps", true, ""),
        // a root engine accepts this one (SECURITY.md row 16); rootless, another host
        // user's dir in a sticky /tmp looks the same, so neither passes
        (
            "root's, under a sticky dir",
            "sticky/nvidia-mps",
            false,
            "writable by group or others (mode 1777)",
        ),
        (
            "another host user's, under a sticky dir",
            "sticky/other-mps",
            false,
            "writable by group or others (mode 1777)",
        ),
        (
            "the containers' nobody's",
            "mapped/nvidia-mps",
            false,
            "writable from this user namespace",
        ),
    ] {
        let target = format!("/tmp/{base}/{path}");
        r.write_config_with(&format!("mps-pipe-directory = \"{target}\""));
        let out = ok(
            &r.podman(
                &["-e", "NVIDIA_VISIBLE_DEVICES=0"],
                &format!("echo '== mps'; grep ' {target} ' /proc/self/mountinfo; echo '== end'"),
                None,
            ),
            case,
        );
        let mounted = section(&out, "mps")
            .iter()
            .any(|l| l.contains(&format!(" {target} ")));
        assert_eq!(mounted, bound, "{case}: {out}\n{}", r.log());
        if !bound {
            assert!(
                r.log()
                    .lines()
                    .any(|l| l.contains(&target) && l.contains("not trusted") && l.contains(why)),
                "{case}: {}",
                r.log()
            );
        }
    }
    let _ = std::fs::remove_dir_all(root.join(format!("tmp/{base}")));
}

#[test]
fn hook_in_a_containers_user_namespace_refuses() {
    // Under a root engine, a createContainer hook runs in the container's user
    // namespace, which host root made: the rootless rules must not apply there.
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "nvidia-smi -L",
    );
    sh_ok(
        Command::new("chown")
            .args(["-R", "-h", "100000:100000"])
            .arg(&c.rootfs),
    );
    let mut spec = c.spec();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["hooks"] = serde_json::json!({"createContainer": [{
        "path": fixtures().bin.join("nvhook").display().to_string(),
        "args": ["nvhook", "--config", c.config.display().to_string(), "prestart"],
    }]});
    c.set_spec(&spec);
    // the world-readable way into the bundle for the namespace's root
    std::fs::set_permissions(c.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("timeout")
        .arg("60")
        .arg("runc")
        .arg("--root")
        .arg(c.tmp.path().join("state"))
        .args(["run", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("user namespace that an id it cannot see created")
            && err.contains("not createContainer"),
        "{err}\n{}",
        c.log_text()
    );
    assert!(!out.contains("GPU 0"), "{out}");
}
