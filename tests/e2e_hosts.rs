//! End to end with real runc on hosts laid out as real GPU hosts were found: Ubuntu's
//! `/sbin/ldconfig` wrapper, the driver in its own tree (`/usr/local/nvidia`) with
//! wrapper scripts on PATH and firmware on the kernel's custom search path, a driver
//! root only root can read, the hook run by hand on a created container, a broken
//! configuration, and the default runtimes.
//! Needs root, runc, gcc and busybox-static; fails (does not skip) without them.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const VERSION: &str = "580.159.04";

/// A synthetic driver laid out like the Ubuntu 24.04 H200 host (`LAYOUT=ubuntu`).
fn ubuntu_driver() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = fixtures().dir.join("ubuntu-driver");
        let o =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fake-driver.sh"))
                .arg(&d)
                .arg("2")
                .arg(VERSION)
                .env("LAYOUT", "ubuntu")
                .output()
                .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    })
}

/// Runs `inner` (the shim's command) in a private mount namespace where `/usr/sbin`
/// (`/sbin` on a merged-/usr host) has Ubuntu's ldconfig: a shell wrapper around a
/// static `ldconfig.real`.
fn with_ubuntu_ldconfig(c: &Container, inner: Command) -> Command {
    let extra = c.tmp.path().join("ubuntu-sbin");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy("/sbin/ldconfig", extra.join("ldconfig.real")).unwrap();
    std::fs::write(
        extra.join("ldconfig"),
        "#!/bin/sh\nexec /sbin/ldconfig.real \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        extra.join("ldconfig"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let sbin = std::fs::canonicalize("/sbin").unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir={}:{} {} && exec \"$@\"",
            extra.display(),
            sbin.display(),
            sbin.display()
        ))
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Item 1: with no `ldconfig` key, an Ubuntu host's `/sbin/ldconfig.real` is used; a
/// configured wrapper is refused with the file that would work.
#[test]
fn ubuntu_ldconfig_wrapper() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "ldconfig -p | grep -c libcuda.so.1",
    );
    let b = c.bundle.display().to_string();
    let mut run = with_ubuntu_ldconfig(&c, c.shim(Cgroup::V1, &["run", "--bundle", &b, &c.id]));
    let out = c.expect_ok(run.output().unwrap());
    assert_eq!(out.trim(), "1", "{out}");
    // the wrapper named explicitly: refused, and the message says what works
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    c.write_config("ld-cache = \"ldconfig\"\nldconfig = \"@/sbin/ldconfig\"");
    let b = c.bundle.display().to_string();
    let o = with_ubuntu_ldconfig(&c, c.shim(Cgroup::V1, &["run", "--bundle", &b, &c.id]))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("/sbin/ldconfig is not a statically linked")
            && err.contains("set ldconfig = \\\"@/sbin/ldconfig.real\\\""),
        "{err}"
    );
}

/// Items 2 and 3: the driver in `/usr/local/nvidia`: the ELF tools from its `bin/`
/// reach the container's PATH (never the host's wrapper scripts), libraries from
/// `lib64/`, firmware from the kernel's custom search path.
#[test]
fn driver_in_its_own_tree() {
    for cg in [Cgroup::V1, Cgroup::V2] {
        let fw = format!("/usr/local/nvidia/firmware/nvidia/{VERSION}/gsp_ga10x.bin");
        let c = Container::new(
            Flavor::Rhel,
            &["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=all"],
            &format!(
                "echo \"== smi\"; nvidia-smi -L 2>&1; echo \"== tools\"; nvidia-debugdump; \
                 ls /usr/bin | grep nvidia; echo \"== fw\"; wc -c < {fw}; \
                 echo \"== head\"; head -c 2 /usr/bin/nvidia-smi; echo; echo \"== end\""
            ),
        );
        c.write_config_for(ubuntu_driver(), "");
        let out = c.run_ok(cg);
        let smi = section(&out, "smi");
        assert!(
            smi.len() == 1 && smi[0].contains(&gpu_uuid(1)),
            "{cg:?}: nvidia-smi from /usr/local/nvidia/bin: {out}"
        );
        let tools = section(&out, "tools");
        assert!(
            tools.contains(&"nvidia-debugdump synthetic".to_string()),
            "{out}"
        );
        assert!(
            !tools.contains(&"nvidia-persistenced".to_string()),
            "a wrapper script was mounted: {out}"
        );
        assert_eq!(section(&out, "fw"), ["4096"], "{cg:?}: firmware: {out}");
        assert_eq!(
            section(&out, "head"),
            ["\u{7f}E"],
            "an ELF nvidia-smi: {out}"
        );
    }
}

/// Item 4: a driver under a directory only root can read still answers NVML for a
/// requirement, and an NVML that cannot load says why.
#[test]
fn driver_root_only_root_can_read() {
    let vault = tempfile::Builder::new()
        .prefix("nvhook-vault-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = vault.path().join("driver");
    let st = Command::new("cp")
        .arg("-a")
        .arg(ubuntu_driver())
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success());
    let c = Container::new(
        Flavor::Debian,
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla",
        ],
        "nvidia-smi -L",
    );
    c.write_config_for(&d, "");
    let out = c.run_ok(Cgroup::V1);
    assert!(out.contains(&gpu_uuid(0)), "{out}");
    // a requirement that does not hold is still refused by the real answer
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=13.0"],
        "true",
    );
    c.write_config_for(&d, "");
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(err.contains("cuda>=13.0"), "{err}");
    // NVML that cannot load: the loader's own reason
    let lib = d.join(format!(
        "root/usr/local/nvidia/lib64/libnvidia-ml.so.{VERSION}"
    ));
    std::fs::write(&lib, "not an ELF file\n".repeat(256)).unwrap();
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.0"],
        "true",
    );
    c.write_config_for(&d, "");
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(
        err.contains("cannot load the library: ") && err.contains("invalid ELF header"),
        "{err}"
    );
}

/// Item 5: `runc create`, then the hook by hand with `runc state`'s pid, then
/// `runc start`: the container, already pivoted into its root, gets its GPU.
#[test]
fn hook_run_by_hand_on_a_created_container() {
    for cg in [Cgroup::V1, Cgroup::V2] {
        let c = Container::new(
            Flavor::Debian,
            &["NVIDIA_VISIBLE_DEVICES=1"],
            "nvidia-smi -L; ldconfig -p | grep -c libcuda.so.1",
        );
        let out = by_hand(cg, &c, "");
        assert!(out.contains(&gpu_uuid(1)), "{cg:?}: {out}");
        assert!(
            out.lines().any(|l| l.trim() == "1"),
            "{cg:?}: ld cache: {out}"
        );
    }
}

/// Run by hand from a shell that holds a descriptor of the host's `/`, the hook passes
/// no descriptor of its own to ldconfig.
#[test]
fn ldconfig_gets_no_descriptor_of_the_hook() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "cat /nvhook-sandbox.txt",
    );
    c.write_config(&ldconfig_tool("ldconfig-probe"));
    let out = by_hand(Cgroup::V1, &c, "exec 7</ 8</etc;");
    assert!(out.contains("fds_above_2=0"), "{out}");
}

/// `runc create` (plain runc, no hook in config.json), the hook run by hand on the
/// state `runc state` prints (after `shell_prefix` in the shell that starts it), then
/// `runc start`; returns what the container printed.
fn by_hand(cg: Cgroup, c: &Container, shell_prefix: &str) -> String {
    // created, a container with a read-only root has it remounted read-only already:
    // the by-hand hook can only add to a writable one (Docker's default)
    let mut spec = c.spec();
    spec["root"]["readonly"] = false.into();
    c.set_spec(&spec);
    let root = c.tmp.path().join("runc-root");
    let out_file = c.tmp.path().join("out.txt");
    let b = c.bundle.display().to_string();
    let r = root.display().to_string();
    let in_cgroup_view = |inner: Vec<String>| {
        let mut cmd = in_cgroup_view(cg, &inner);
        cmd.stdin(Stdio::null());
        cmd
    };
    let runc = |args: &[&str]| {
        let mut inner: Vec<String> = vec!["runc".into(), "--root".into(), r.clone()];
        inner.extend(args.iter().map(|a| a.to_string()));
        in_cgroup_view(inner)
    };
    let st = runc(&["create", "--bundle", &b, &c.id])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(c.tmp.path().join("err.txt")).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "runc create failed");
    let state = runc(&["state", &c.id]).output().unwrap();
    assert!(state.status.success());
    let state_file = c.tmp.path().join("state.json");
    std::fs::write(&state_file, &state.stdout).unwrap();
    let hook = in_cgroup_view(vec![
        "sh".into(),
        "-c".into(),
        format!("{shell_prefix} exec \"$@\""),
        "sh".into(),
        fixtures().bin.join("nvhook").display().to_string(),
        "--config".into(),
        c.config.display().to_string(),
        "prestart".into(),
        "--state".into(),
        state_file.display().to_string(),
    ])
    .output()
    .unwrap();
    let hook_ok = hook.status.success();
    if hook_ok {
        assert!(runc(&["start", &c.id]).status().unwrap().success());
        for _ in 0..500 {
            let s = runc(&["state", &c.id]).output().unwrap();
            if !String::from_utf8_lossy(&s.stdout).contains("\"running\"") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let _ = runc(&["delete", "-f", &c.id]).status();
    assert!(
        hook_ok,
        "{cg:?}: hook by hand: {}{}",
        String::from_utf8_lossy(&hook.stdout),
        String::from_utf8_lossy(&hook.stderr)
    );
    std::fs::read_to_string(&out_file).unwrap()
}

/// Item 6: a typo in the configuration never stops runc: list, state, kill and delete
/// pass (with a warning in the `--log`), a container without a GPU request starts, and
/// only the start of a GPU container fails, with the configuration's error.
#[test]
fn broken_config_never_blocks_runc() {
    let c = Container::new(Flavor::Debian, &[], "sleep 30");
    let good = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&c.config, good.replace("driver-root", "driver-rot")).unwrap();
    let log = c.tmp.path().join("runc.log");
    let l = log.display().to_string();
    let b = c.bundle.display().to_string();
    // stdio to files: a created container holds what runc create had
    let err_file = c.tmp.path().join("stderr.txt");
    let ok = |args: &[&str]| {
        let mut a = vec!["--log", &l];
        a.extend_from_slice(args);
        let st = c
            .shim(Cgroup::V1, &a)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "{args:?}: {}",
            std::fs::read_to_string(&err_file).unwrap_or_default()
        );
    };
    ok(&["create", "--bundle", &b, &c.id]);
    ok(&["list"]);
    ok(&["state", &c.id]);
    ok(&["kill", &c.id, "KILL"]);
    ok(&["delete", "-f", &c.id]);
    let warned = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        warned.contains("level=warning") && warned.contains("driver-rot"),
        "{warned}"
    );
    // the file's own runtime list still counts (a container made with crun must be
    // killed and deleted by crun): a wrapper named there is what runs
    let marker = c.tmp.path().join("wrapper-ran");
    let wrapper = c.tmp.path().join("my-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho ran >> {}\nexec runc \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &c.config,
        good.replace("driver-root", "driver-rot").replace(
            "runtimes = [\"runc\"]",
            &format!("runtimes = [{:?}]", wrapper.display().to_string()),
        ),
    )
    .unwrap();
    ok(&["list"]);
    assert!(marker.exists(), "the broken file's runtimes were not used");
    // a GPU container: the configuration's error, and nothing started
    let g = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    std::fs::write(&g.config, good.replace("driver-root", "driver-rot")).unwrap();
    let (_, err) = text(&g.run(Cgroup::V1));
    assert!(
        err.contains("invalid config") && err.contains("driver-rot"),
        "{err}"
    );
}

/// Item 7: with no `runtimes` key the shim runs `runc` (then `crun`), as NVIDIA does
/// since v1.18, never a `docker-runc` that happens to be on PATH.
#[test]
fn default_runtimes_are_runc_then_crun() {
    let c = Container::new(Flavor::Debian, &[], "true");
    let bin = c.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("docker-runc"),
        "#!/bin/sh\necho docker-runc was run >&2\nexit 99\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("docker-runc"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(&c.config, "").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = c
        .shim(Cgroup::V1, &["--version"])
        .env("PATH", path)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("runc version"), "{out}");
    assert!(!err.contains("docker-runc was run"), "{err}");
}
