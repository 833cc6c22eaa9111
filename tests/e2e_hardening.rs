//! Hostile images, the ldconfig sandbox, faults and load: with real runc through the
//! shim on the synthetic driver. Each hostile case checks that nothing on the host
//! changed and that the container either started or failed with nvhook's own error.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Host state a hostile image must not change.
struct HostWatch {
    canary: tempfile::TempDir,
    ld_cache: Vec<u8>,
}

impl HostWatch {
    fn new() -> HostWatch {
        HostWatch {
            canary: tempfile::Builder::new()
                .prefix("nvhook-canary-")
                .tempdir()
                .unwrap(),
            ld_cache: std::fs::read("/etc/ld.so.cache").unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.canary.path()
    }
    fn assert_unchanged(&self, case: &str, c: &Container) {
        let entries: Vec<_> = std::fs::read_dir(self.path()).unwrap().collect();
        assert!(
            entries.is_empty(),
            "{case}: wrote into the host canary dir: {entries:?}"
        );
        assert_eq!(
            std::fs::read("/etc/ld.so.cache").unwrap(),
            self.ld_cache,
            "{case}: host ld.so.cache changed"
        );
        assert!(
            host_mounts_under(self.path()).is_empty(),
            "{case}: host mount on the canary"
        );
        assert!(
            host_mounts_under(&c.rootfs).is_empty(),
            "{case}: host mount in the rootfs"
        );
        assert!(
            host_mounts_under(&fixtures().driver).is_empty(),
            "{case}: host mount of a driver file"
        );
        for prog in ["nvhook", "ldconfig", "nvhook-runtime", "runc"] {
            let mark = PathBuf::from(format!("/tmp/nvhook-mark-{prog}"));
            assert!(
                !mark.exists(),
                "{case}: {prog} ran the image's preload on the host"
            );
            assert!(
                !c.rootfs.join(format!("tmp/nvhook-mark-{prog}")).exists(),
                "{case}: {prog} loaded the image's preload"
            );
        }
    }
}

/// Runs `setup` (a shell snippet, in the rootfs, `$CANARY` = a host dir) and the
/// container; returns whether it started and its stderr.
fn hostile(case: &str, setup: &str, env: &[&str], must_start: bool) {
    let w = HostWatch::new();
    let c = Container::new(
        Flavor::Debian,
        &[&["NVIDIA_VISIBLE_DEVICES=0"][..], env].concat(),
        "nvidia-smi -L; true",
    );
    let st = Command::new("sh")
        .arg("-ec")
        .arg(setup)
        .current_dir(&c.rootfs)
        .env("CANARY", w.path())
        .env("TOOLS", tools())
        .status()
        .unwrap();
    assert!(st.success(), "{case}: setup failed");
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    w.assert_unchanged(case, &c);
    if must_start {
        assert!(o.status.success(), "{case}: did not start: {out}{err}");
    } else if !o.status.success() {
        let line = err.lines().find(|l| l.contains("nvhook")).unwrap_or("");
        assert!(
            line.contains("nvhook: container"),
            "{case}: failed without nvhook's error: {err}"
        );
    }
    let outcome = if o.status.success() {
        "started".to_string()
    } else {
        err.split("nvhook: container")
            .nth(1)
            .unwrap_or(&err)
            .chars()
            .take(160)
            .collect()
    };
    eprintln!("hostile {case}: {outcome}");
}

#[test]
fn hostile_absolute_symlinks_to_host() {
    let cases = [
        ("lib dir", "mv usr/lib/x86_64-linux-gnu usr/lib/real && ln -s \"$CANARY\" usr/lib/x86_64-linux-gnu"),
        ("/usr/bin", "mv usr/bin usr/realbin && ln -s \"$CANARY\" usr/bin"),
        ("/lib/firmware", "ln -s \"$CANARY\" usr/lib/firmware"),
        ("/etc", "mv etc etc.real && ln -s \"$CANARY\" etc"),
        ("/etc/ld.so.conf.d", "rm -rf etc/ld.so.conf.d && ln -s \"$CANARY\" etc/ld.so.conf.d"),
        ("/etc/ld.so.cache", "rm -f etc/ld.so.cache && ln -s \"$CANARY/ld.so.cache\" etc/ld.so.cache"),
        ("/var/run", "rm -f var/run && ln -s \"$CANARY\" var/run"),
        ("/tmp", "rm -rf tmp && ln -s \"$CANARY\" tmp"),
        ("/proc/driver", "ln -s \"$CANARY\" proc/driver"),
    ];
    for (case, setup) in cases {
        hostile(case, setup, &[], false);
    }
}

#[test]
fn hostile_relative_and_proc_links() {
    let cases = [
        ("climbing relative", "ln -s ../../../../../../../../../..\"$CANARY\" usr/lib/firmware"),
        ("climbing lib dir", "mkdir -p usr/lib/x86_64-linux-gnu && ln -s ../../../../../../../../..\"$CANARY\" usr/lib/x86_64-linux-gnu/nvidia-dir && ln -s nvidia-dir/x usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"),
        ("/proc/self/cwd", "ln -s /proc/self/cwd usr/lib/firmware"),
        ("/proc/self/root", "mv usr/bin usr/realbin && ln -s /proc/self/root\"$CANARY\" usr/bin"),
        ("/proc/1/root", "ln -s /proc/1/root\"$CANARY\" usr/lib/firmware"),
        ("link loop", "ln -s firmware2 usr/lib/firmware && ln -s firmware usr/lib/firmware2"),
        (
            "chain past the kernel limit",
            "mkdir -p chain/end; i=0; prev=/chain/end; while [ $i -lt 45 ]; do ln -s $prev chain/l$i; prev=/chain/l$i; i=$((i+1)); done; ln -s $prev usr/lib/firmware",
        ),
    ];
    for (case, setup) in cases {
        hostile(case, setup, &[], false);
    }
}

#[test]
fn hostile_target_types() {
    let cases = [
        ("FIFO at a library target", "mkdir -p usr/lib/x86_64-linux-gnu && mkfifo usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"),
        ("socket at nvidia-smi", "\"$TOOLS/mksock\" usr/bin/nvidia-smi"),
        ("device node at nvidia-smi", "mknod usr/bin/nvidia-smi c 1 3"),
        ("directory where a file goes", "mkdir -p usr/bin/nvidia-smi/x"),
        ("file where a directory goes", "mkdir -p usr/lib && echo x > usr/lib/firmware"),
        ("device node at /dev target is replaced by runc's /dev", "mkfifo dev/nvidiactl"),
        ("symlink at a library target", "ln -s /etc/shadow usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"),
    ];
    for (case, setup) in cases {
        hostile(case, setup, &[], false);
    }
}

#[test]
fn hostile_env_and_binaries() {
    // the image preloads a library whose constructor would leave a mark; the hook and
    // ldconfig never see the image's environment
    hostile(
        "LD_PRELOAD and friends",
        "cp \"$TOOLS/evil.so\" usr/lib/evil.so",
        &[
            "LD_PRELOAD=/usr/lib/evil.so",
            "LD_LIBRARY_PATH=/usr/lib",
            "LD_AUDIT=/usr/lib/evil.so",
            "GCONV_PATH=/usr/lib",
        ],
        true,
    );
    // a malicious ldconfig in the image does not run where the host's is configured
    let w = HostWatch::new();
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "nvidia-smi -L",
    );
    std::fs::remove_file(c.rootfs.join("usr/sbin/ldconfig")).unwrap();
    std::fs::write(
        c.rootfs.join("usr/sbin/ldconfig"),
        "#!/bin/sh\ntouch /image-ldconfig-ran\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        c.rootfs.join("usr/sbin/ldconfig"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let o = c.run(Cgroup::V1);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        !c.rootfs.join("image-ldconfig-ran").exists(),
        "the image's ldconfig ran"
    );
    assert!(
        text(&o).0.contains(&gpu_uuid(0)),
        "host ldconfig made libnvidia-ml findable"
    );
    w.assert_unchanged("image ldconfig", &c);
}

#[test]
fn read_only_rootfs_works() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=1"],
        "nvidia-smi -L; touch /x 2>&1; true",
    );
    let mut spec = c.spec();
    spec["root"]["readonly"] = true.into();
    c.set_spec(&spec);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains(&gpu_uuid(1)), "{out}");
    assert!(
        out.contains("Read-only file system"),
        "root was not read-only: {out}"
    );
}

#[test]
fn ldconfig_runs_sandboxed() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "cat /nvhook-sandbox.txt",
    );
    c.write_config(&ldconfig_tool("ldconfig-probe"));
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let get = |k: &str| field(&out, k);
    assert_eq!(get("pid"), "1", "own PID namespace");
    assert_eq!(get("envc"), "0", "empty environment");
    assert_eq!(get("no_new_privs"), "1");
    assert_eq!(get("proc_1_root"), "absent", "/proc covered");
    assert_eq!(get("proc_self"), "absent");
    assert_eq!(get("sys_empty"), "yes", "/sys covered");
    assert_eq!(get("dev_null"), "absent", "/dev covered");
    assert_eq!(get("rlimit_cpu"), "10");
    assert_eq!(get("rlimit_nofile"), "256");
    // only DAC_OVERRIDE and FOWNER (bits 1 and 3), and those in its own user namespace
    // where host root is its root; no DAC_READ_SEARCH (open_by_handle_at)
    assert_eq!(get("capbnd"), "000000000000000a");
    assert_eq!(get("capeff"), "000000000000000a");
    assert_eq!(get("uid"), "0", "host root mapped to its root");
    assert_eq!(get("nodename"), "nvhook-ldconfig", "own UTS namespace");
    // the seccomp filter: no device nodes, no sockets, no file handles
    assert_eq!(get("mknod"), "Operation not permitted");
    assert_eq!(get("socket"), "Operation not permitted");
    assert_eq!(get("open_by_handle"), "Operation not permitted");
}

#[test]
fn ldconfig_failure_is_reported_and_undone() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    c.write_config(&ldconfig_tool("ldconfig-fail"));
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("ldconfig failed (exit status 3)") && err.contains("injected failure"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(c.rootfs.join("usr/lib/x86_64-linux-gnu"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("nvidia") || n.contains("cuda"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(host_mounts_under(&fixtures().driver).is_empty());
}

#[test]
fn ldconfig_hang_times_out() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    c.write_config(&format!(
        "{}\nldconfig-timeout = 1",
        ldconfig_tool("ldconfig-hang")
    ));
    let t = std::time::Instant::now();
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("ldconfig did not finish within 1s and was killed"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 20);
}

#[test]
fn untrusted_ldconfig_is_refused() {
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let p = d.path().join("ldconfig");
    std::fs::copy("/sbin/ldconfig", &p).unwrap();
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    c.write_config(&format!(
        "ld-cache = \"ldconfig\"\nldconfig = \"@{}\"",
        p.display()
    ));
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(
        err.contains("is not trusted: writable by group or others"),
        "{err}"
    );
}

/// A cgroup write that fails: the container's devices cgroup sits under a parent that
/// denies major 195, so `devices.allow` refuses nvhook's rule.
#[test]
fn cgroup_write_failure_is_reported() {
    assert!(
        !host_is_unified(),
        "this check needs the v1 devices controller"
    );
    let parent_name = format!("nvhook-deny-{}", std::process::id());
    let parent = Path::new("/sys/fs/cgroup/devices").join(&parent_name);
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::write(parent.join("devices.deny"), "c 195:* rw").unwrap();
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    let mut spec = c.spec();
    spec["linux"]["cgroupsPath"] = format!("/{parent_name}/{}", c.id).into();
    c.set_spec(&spec);
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    let _ = std::fs::remove_dir(&parent);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot write") && err.contains("devices.allow"),
        "{err}"
    );
    assert!(host_mounts_under(&fixtures().driver).is_empty());
}

/// The shim's config.json write survives SIGKILL at any moment: the file is always
/// either the old or the new one.
#[test]
fn shim_write_survives_kill() {
    let f = fixtures();
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    let mut spec = c.spec();
    spec["zzPadding"] = "x".repeat(4 << 20).into(); // a slow write
    c.set_spec(&spec);
    let path = c.bundle.join("config.json");
    let old = std::fs::read(&path).unwrap();
    // `create` with a runtime that does not exist: the shim edits, then fails to exec.
    let cfg = c.tmp.path().join("kill.toml");
    std::fs::write(
        &cfg,
        format!(
            "[runtime]\nruntimes = [\"/nonexistent\"]\nhook-path = \"{}/nvhook\"\n",
            f.bin.display()
        ),
    )
    .unwrap();
    let shim = |kill_after: Option<std::time::Duration>| {
        let mut child = Command::new(f.bin.join("nvhook-runtime"))
            .args(["create", "--bundle", c.bundle.to_str().unwrap(), "x"])
            .env("NVHOOK_CONFIG", &cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some(d) = kill_after {
            std::thread::sleep(d);
            let _ = child.kill();
        }
        let _ = child.wait();
    };
    // How long a whole edit takes here, to spread the kills over it.
    let t = std::time::Instant::now();
    shim(None);
    let whole = t.elapsed();
    assert_ne!(
        std::fs::read(&path).unwrap(),
        old,
        "an unkilled shim wrote the file"
    );
    let mut seen = [false, false]; // old, new
    for i in 0..40u32 {
        std::fs::write(&path, &old).unwrap();
        // spread over twice the unkilled time: a loaded machine runs slower than the
        // first measurement, and some kills must come after the write
        shim(Some(whole * i / 16));
        let now = std::fs::read(&path).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&now).expect("config.json torn by a kill");
        if now == old {
            seen[0] = true;
        } else {
            assert_eq!(v["hooks"]["prestart"].as_array().unwrap().len(), 1);
            seen[1] = true;
        }
        let temps = std::fs::read_dir(&c.bundle)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".config.json")
            })
            .count();
        assert!(temps <= 1, "temporary files pile up");
    }
    let seen_new = seen[1];
    eprintln!(
        "kills left the old file: {}, the new file: {}",
        seen[0], seen[1]
    );
    assert!(seen_new, "no run got to write");
}

/// Many containers at once, a few in parallel: each gets exactly its own GPU, and the
/// shared JSON log holds only whole lines.
#[test]
fn load_many_containers() {
    let log = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let n = 50;
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let gpu = (i % 4) as u32;
                let env = format!("NVIDIA_VISIBLE_DEVICES={gpu}");
                let c = Container::new(Flavor::Debian, &[&env], "nvidia-smi -L");
                let cfg = std::fs::read_to_string(&c.config).unwrap().replace(
                    &format!("file = \"{}\"", c.log.display()),
                    &format!("file = \"{}\"\nformat = \"json\"", log.path().display()),
                );
                std::fs::write(&c.config, cfg).unwrap();
                let o = c.run(if i % 2 == 0 { Cgroup::V1 } else { Cgroup::V2 });
                let (out, err) = text(&o);
                results
                    .lock()
                    .unwrap()
                    .push((gpu, o.status.success(), out, err));
            });
        }
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), n);
    for (gpu, ok, out, err) in &results {
        assert!(ok, "{out}{err}");
        let uuids: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split("(UUID: ").nth(1))
            .collect();
        assert_eq!(uuids, [format!("{})", gpu_uuid(*gpu))], "{out}");
    }
    let text = std::fs::read_to_string(log.path()).unwrap();
    let mut infos = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("garbled log line {line:?}: {e}"));
        if v["level"] == "INFO" && v["message"] == "GPUs given" {
            infos += 1;
        }
    }
    assert_eq!(infos, n, "one info line per container");
}

/// Faults injected at each step of applying a plan (a missing source, a mount that
/// fails, a cgroup write that fails, ldconfig failing): the container does not start,
/// the error says what happened, and nothing nvhook mounted or created is left.
#[test]
fn injected_faults_leave_nothing_behind() {
    let f = fixtures();
    for (fault, needle) in [
        ("source:0", "/nvidiactl: open: No such file or directory"),
        ("source:7", ": open: No such file or directory"),
        ("mount:0", "cannot mount"),
        ("mount:6", "injected fault"),
        ("cgroup", "cannot write \"c 195:255 rw\""),
        ("ldconfig", "ldconfig failed (not started): injected fault"),
        (
            "panic",
            "internal error (a bug, please report it): injected panic",
        ),
    ] {
        let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
        let before = std::fs::read_dir(c.rootfs.join("usr/lib/x86_64-linux-gnu"))
            .unwrap()
            .count();
        // The hook entry written by hand (plain runc, no shim) so it can carry --fail-at.
        let mut spec = c.spec();
        spec["hooks"] = serde_json::json!({"prestart": [{
            "path": f.bin.join("nvhook").display().to_string(),
            "args": ["nvhook", "--config", c.config.display().to_string(), "prestart", "--fail-at", fault],
            "env": ["PATH=/usr/bin:/bin"],
        }]});
        c.set_spec(&spec);
        let state = c.tmp.path().join("state");
        let o = Command::new("timeout")
            .args([
                "60",
                "runc",
                "--root",
                state.to_str().unwrap(),
                "run",
                "--bundle",
                c.bundle.to_str().unwrap(),
                &c.id,
            ])
            .output()
            .unwrap();
        let (_, err) = text(&o);
        let err = err.replace("\\\"", "\"");
        assert!(!o.status.success(), "{fault}: started");
        assert!(err.contains(needle), "{fault}: {err}");
        let after = std::fs::read_dir(c.rootfs.join("usr/lib/x86_64-linux-gnu"))
            .unwrap()
            .count();
        assert_eq!(after, before, "{fault}: files left in the lib dir");
        assert!(
            !c.rootfs.join("usr/bin/nvidia-smi").exists(),
            "{fault}: nvidia-smi target left"
        );
        assert!(
            host_mounts_under(&f.driver).is_empty(),
            "{fault}: host mounts left"
        );
        assert!(
            host_mounts_under(&c.rootfs).is_empty(),
            "{fault}: host mounts left"
        );
    }
}
