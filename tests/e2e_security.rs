//! End to end with real runc: the holes of the second security review, each shown closed
//! (device nodes read-only, device and IMEX lists only from `/dev/null` mounts and the
//! privilege policy, ldconfig from the image refused and every ldconfig sandboxed, the
//! MPS pipe directory checked, the shim's edit of config.json exact).
//! Needs root, runc, gcc and busybox-static; fails (does not skip) without them.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const ENXIO: &str = "No such device or address";

fn add_caps(c: &Container, caps: &[&str]) {
    let mut spec = c.spec();
    for set in ["bounding", "effective", "permitted"] {
        let a = spec["process"]["capabilities"][set].as_array_mut().unwrap();
        for cap in caps {
            a.push((*cap).into());
        }
    }
    c.set_spec(&spec);
}

fn add_mounts(c: &Container, mounts: &[(&str, &str)]) {
    let mut spec = c.spec();
    let a = spec["mounts"].as_array_mut().unwrap();
    for (source, dest) in mounts {
        a.push(json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "ro"]}));
    }
    c.set_spec(&spec);
}

/// Item 1: a container root that chmods and chowns its GPU nodes changes nothing on the
/// host; the nodes still open read-write inside (the cgroup allows, the driver is absent).
#[test]
fn device_nodes_are_read_only_mounts() {
    let dev = fixtures().driver.join("dev");
    let nodes = [
        dev.join("nvidiactl"),
        dev.join(format!("nvidia{}", gpu_minor(0))),
    ];
    let before: Vec<(u32, u32, u32)> = nodes
        .iter()
        .map(|n| {
            let m = std::fs::metadata(n).unwrap();
            (m.mode(), m.uid(), m.gid())
        })
        .collect();
    let node = format!("/dev/nvidia{}", gpu_minor(0));
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        &format!(
            "chmod 000 /dev/nvidiactl {node} 2>&1; echo chmod-rc=$?\n\
             chown 1000:1000 {node} 2>&1; echo chown-rc=$?\n\
             echo \"== rw\"; (exec 3<>{node}) 2>&1; (exec 3<>/dev/nvidiactl) 2>&1\n\
             echo \"== mount\"; grep ' {node} ' /proc/self/mountinfo\n\
             echo \"== end\""
        ),
    );
    add_caps(&c, &["CAP_CHOWN", "CAP_FOWNER"]);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    let after: Vec<(u32, u32, u32)> = nodes
        .iter()
        .map(|n| {
            let m = std::fs::metadata(n).unwrap();
            (m.mode(), m.uid(), m.gid())
        })
        .collect();
    // put the shared fixture back before asserting, so one failure stays one
    for (n, (mode, uid, gid)) in nodes.iter().zip(&before) {
        std::fs::set_permissions(n, std::fs::Permissions::from_mode(*mode)).unwrap();
        std::os::unix::fs::chown(n, Some(*uid), Some(*gid)).unwrap();
    }
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(before, after, "the host's nodes changed: {out}");
    assert!(
        out.contains("Read-only file system"),
        "chmod/chown refused: {out}"
    );
    let rw = section(&out, "rw");
    assert_eq!(rw.len(), 2, "{out}");
    assert!(rw.iter().all(|l| l.ends_with(ENXIO)), "opened rw: {rw:?}");
    let m = section(&out, "mount").join(" ");
    let opts = m.split_whitespace().nth(5).unwrap_or("");
    assert!(
        opts.split(',').any(|o| o == "ro") && opts.contains("nosuid") && opts.contains("noexec"),
        "mount options {opts}: {m}"
    );
}

const POLICY: &str = "accept-nvidia-visible-devices-as-volume-mounts = true\n\
                      accept-nvidia-visible-devices-envvar-when-unprivileged = false";

const SEE: &str = "echo \"== smi\"; nvidia-smi -L 2>&1; echo \"== dev\"; ls /dev /dev/nvidia-caps-imex-channels 2>/dev/null | grep -E 'nvidia|channel'; echo \"== end\"";

/// The persistenced socket, too, is a read-only bind: it still connects, but the
/// container cannot chmod the host's inode.
#[test]
fn sockets_are_read_only_mounts() {
    let host = fixtures()
        .driver
        .join("root/var/run/nvidia-persistenced/socket");
    let before = std::fs::metadata(&host).unwrap().mode();
    let sock = "/var/run/nvidia-persistenced/socket";
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        &format!(
            "chmod 000 {sock} 2>&1; echo \"== mount\"; grep 'nvidia-persistenced/socket ' /proc/self/mountinfo; echo \"== end\""
        ),
    );
    add_caps(&c, &["CAP_FOWNER"]);
    let out = c.run_ok(Cgroup::V1);
    let after = std::fs::metadata(&host).unwrap().mode();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(before)).unwrap();
    assert_eq!(before, after, "the host's socket changed: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let m = section(&out, "mount").join(" ");
    let opts = m.split_whitespace().nth(5).unwrap_or("");
    assert!(opts.split(',').any(|o| o == "ro"), "{m}");
}

/// The real ldconfig still writes where the container's root may but host root's
/// mapping alone would not: a library dir owned by another user (conda, jupyter).
#[test]
fn ldconfig_links_in_a_dir_owned_by_a_user() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "ls /opt/userlib; ldconfig -p | grep libfoo",
    );
    let dir = c.rootfs.join("opt/userlib");
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o"])
        .arg(dir.join("libfoo.so.1.0"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fake/lib.c"))
        .status()
        .unwrap();
    assert!(st.success());
    for p in [&dir, &dir.join("libfoo.so.1.0")] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let conf = c.rootfs.join("etc/ld.so.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
    text.push_str("/opt/userlib\n");
    std::fs::write(&conf, text).unwrap();
    // ldconfig's own run over the image (nvhook's own cache update touches only the
    // driver's entries)
    c.write_config("ld-cache = \"ldconfig\"");
    let out = c.run_ok(Cgroup::V1);
    assert!(
        out.lines().any(|l| l == "libfoo.so.1"),
        "SONAME link made: {out}"
    );
    assert!(
        out.contains("libfoo.so.1 (libc6,x86-64) => /opt/userlib/libfoo.so.1"),
        "{out}"
    );
}

/// A user-namespaced container (rootfs owned by its mapped root, as with
/// `podman --userns=auto` or Kubernetes user namespaces): what nvhook creates belongs to
/// the container's root, and ldconfig runs as that root.
#[test]
fn user_namespaced_container_gets_its_gpu() {
    // both ways of updating the loader cache: nvhook's own and the sandboxed ldconfig
    for ld_cache in ["nvhook", "ldconfig"] {
        user_namespaced_container_with(ld_cache);
    }
}

fn user_namespaced_container_with(ld_cache: &str) {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "nvidia-smi -L; ldconfig -p | grep -c libcuda.so.1",
    );
    let st = std::process::Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(&c.rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    let mut spec = c.spec();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c.set_spec(&spec);
    c.write_config(&format!("ld-cache = \"{ld_cache}\""));
    let out = c.run_ok(Cgroup::V1);
    assert!(out.contains(&gpu_uuid(0)), "{ld_cache}: {out}");
    assert!(out.lines().any(|l| l.trim() == "1"), "ld cache: {out}");
    let owner = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    let lib = c.rootfs.join("usr/lib/x86_64-linux-gnu");
    assert_eq!(
        owner(&lib.join("libcuda.so")),
        (100000, 100000),
        "{ld_cache}: link made by nvhook"
    );
    assert_eq!(
        owner(&c.rootfs.join("etc/ld.so.cache")),
        (100000, 100000),
        "{ld_cache}: the cache written"
    );
}

/// Item 2: device lists from volume mounts count only when the mount's source is `/dev/null`.
#[test]
fn volume_mount_device_lists_need_dev_null() {
    let dir = format!("{}/all", request_dir());
    // an unprivileged pod mounts a directory (an emptyDir) at .../all: nothing
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=all"], SEE);
    c.write_config(POLICY);
    let empty = c.tmp.path().join("emptydir");
    std::fs::create_dir(&empty).unwrap();
    add_mounts(&c, &[(empty.to_str().unwrap(), &dir)]);
    let out = c.run_ok(Cgroup::V1);
    assert!(
        section(&out, "dev").is_empty() && !out.contains("UUID"),
        "a directory at {dir} gave GPUs: {out}"
    );
    // /dev/null at .../1 (cleaned paths): GPU 1, and only GPU 1
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=all"], SEE);
    c.write_config(POLICY);
    add_mounts(&c, &[("/dev/./null", &format!("{}/x/../1", request_dir()))]);
    let out = c.run_ok(Cgroup::V2);
    let uuids: Vec<&str> = out.lines().filter(|l| l.contains("UUID")).collect();
    assert_eq!(uuids.len(), 1, "{out}");
    assert!(uuids[0].contains(&gpu_uuid(1)), "{out}");
}

fn request_dir() -> &'static str {
    "/var/run/nvidia-container-devices"
}

/// Item 3: IMEX channels follow the device policy, and come from `/dev/null` mounts too.
#[test]
fn imex_channels_follow_the_policy() {
    let d = request_dir();
    // the GPU from a mount; the variable of an unprivileged container is not trusted
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=0,1"],
        SEE,
    );
    c.write_config(POLICY);
    add_mounts(&c, &[("/dev/null", &format!("{d}/0"))]);
    let out = c.run_ok(Cgroup::V1);
    let dev = section(&out, "dev");
    assert!(dev.iter().any(|l| l == "nvidiactl"), "{out}");
    assert!(!dev.iter().any(|l| l.starts_with("channel")), "{out}");
    // the volume-mount form: channel 1 only
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=0,1"],
        SEE,
    );
    c.write_config(POLICY);
    add_mounts(
        &c,
        &[
            ("/dev/null", &format!("{d}/0")),
            ("/dev/null", &format!("{d}/imex/1")),
        ],
    );
    let out = c.run_ok(Cgroup::V1);
    let chans: Vec<String> = section(&out, "dev")
        .into_iter()
        .filter(|l| l.starts_with("channel"))
        .collect();
    assert_eq!(chans, ["channel1"], "{out}");
    // a privileged container's variable is trusted
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=0,1"],
        SEE,
    );
    c.write_config(POLICY);
    add_caps(&c, &["CAP_SYS_ADMIN"]);
    let out = c.run_ok(Cgroup::V1);
    let chans: Vec<String> = section(&out, "dev")
        .into_iter()
        .filter(|l| l.starts_with("channel"))
        .collect();
    assert_eq!(chans, ["channel0", "channel1"], "{out}");
}

fn probe_image(c: &Container) {
    std::fs::copy(
        tools().join("ldconfig-probe"),
        c.rootfs.join("sbin/ldconfig"),
    )
    .unwrap();
}

/// Item 4a: an ldconfig path inside the container is refused unless opted in; the image's
/// binary never runs.
#[test]
fn image_ldconfig_is_refused_without_opt_in() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    probe_image(&c);
    c.write_config("ld-cache = \"ldconfig\"\nldconfig = \"/sbin/ldconfig\"");
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "started with the image's ldconfig");
    assert!(
        err.contains("names a binary inside the container")
            && err.contains("allow-ldconfig-from-container"),
        "{err}"
    );
    assert!(
        !c.rootfs.join("nvhook-sandbox.txt").exists(),
        "the image's ldconfig ran"
    );
}

/// Item 4b: opted in, the image's ldconfig runs in the sandbox: mapped root only, its own
/// user, network and UTS namespaces, no mknod, sockets or file handles.
#[test]
fn image_ldconfig_opted_in_is_sandboxed() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "cat /nvhook-sandbox.txt",
    );
    probe_image(&c);
    c.write_config("ld-cache = \"ldconfig\"\nldconfig = \"/sbin/ldconfig\"\nallow-ldconfig-from-container = true");
    let out = c.run_ok(Cgroup::V1);
    assert_eq!(field(&out, "capeff"), "000000000000000a", "{out}");
    assert_eq!(field(&out, "capbnd"), "000000000000000a", "{out}");
    assert_eq!(field(&out, "uid"), "0");
    assert_eq!(field(&out, "nodename"), "nvhook-ldconfig");
    assert_eq!(field(&out, "envc"), "0");
    for k in ["mknod", "socket", "open_by_handle"] {
        assert_eq!(field(&out, k), "Operation not permitted", "{k}: {out}");
    }
}

/// Where user namespaces are off (`user.max_user_namespaces = 0`), an operator can run
/// ldconfig without its own: the rest of the sandbox stays.
#[test]
fn ldconfig_without_a_user_namespace_keeps_the_rest_of_the_sandbox() {
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0"],
        "cat /nvhook-sandbox.txt",
    );
    c.write_config(&format!(
        "{}\nldconfig-user-namespace = false",
        ldconfig_tool("ldconfig-probe")
    ));
    let out = c.run_ok(Cgroup::V1);
    assert_eq!(field(&out, "pid"), "1");
    assert_eq!(field(&out, "capeff"), "000000000000000a", "{out}");
    assert_eq!(field(&out, "nodename"), "nvhook-ldconfig");
    assert_eq!(field(&out, "fds_above_2"), "0");
    for k in ["mknod", "socket", "open_by_handle"] {
        assert_eq!(field(&out, k), "Operation not permitted", "{k}: {out}");
    }
}

/// Item 4c: seen from outside while it runs: ldconfig's user, network and UTS namespaces are
/// not the host's, its ids map to themselves, its capabilities are DAC_OVERRIDE
/// and FOWNER, and a seccomp filter is on.
#[test]
fn ldconfig_namespaces_seen_from_outside() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    c.write_config(&format!(
        "{}\nldconfig-timeout = 4",
        ldconfig_tool("ldconfig-hang")
    ));
    let child = std::thread::spawn({
        let cmd_bundle = c.bundle.display().to_string();
        let id = c.id.clone();
        let mut cmd = c.shim(Cgroup::V1, &["run", "--bundle", &cmd_bundle, &id]);
        move || cmd.output().unwrap()
    });
    let rootfs = c.rootfs.canonicalize().unwrap();
    let mut found = None;
    for _ in 0..300 {
        found = find_sandboxed_ldconfig(&rootfs);
        if found.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = found.expect("the hung ldconfig was not seen");
    let ns = |p: &str, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    for n in ["user", "net", "uts", "pid", "ipc", "mnt"] {
        assert_ne!(ns(&pid, n), ns("self", n), "{n} namespace is the host's");
    }
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("CapEff"), "000000000000000a");
    assert_eq!(field("CapBnd"), "000000000000000a");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "filter mode");
    let o = child.join().unwrap();
    assert!(!o.status.success(), "the hung ldconfig was killed");
}

/// The pid of a process whose executable is nvhook's sealed ldconfig and whose root is
/// `rootfs`.
fn find_sandboxed_ldconfig(rootfs: &Path) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().into_string().ok()?;
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if !exe.to_string_lossy().starts_with("/memfd:nvhook-ldconfig") {
            continue;
        }
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        if root == rootfs {
            return Some(pid);
        }
    }
    None
}

/// Item 5: the MPS pipe directory is bound only when it and its parents are root-owned, not
/// writable by others, and reached without a symbolic link.
#[test]
fn mps_pipe_dir_is_checked() {
    let root = fixtures().driver.join("root");
    let base = format!("mps-{}", std::process::id());
    let host = |p: &str| root.join(format!("tmp/{base}/{p}"));
    std::fs::create_dir_all(host("good/nvidia-mps")).unwrap();
    std::fs::create_dir_all(host("user/nvidia-mps")).unwrap();
    std::os::unix::fs::chown(host("user/nvidia-mps"), Some(1000), Some(1000)).unwrap();
    std::fs::create_dir_all(host("open/nvidia-mps")).unwrap();
    std::fs::set_permissions(
        host("open/nvidia-mps"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let secret = host("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "host secret").unwrap();
    std::os::unix::fs::symlink(&secret, host("link")).unwrap();
    std::fs::create_dir_all(host("parent-link-target/nvidia-mps")).unwrap();
    std::os::unix::fs::symlink(host("parent-link-target"), host("plink")).unwrap();
    std::fs::create_dir_all(host("wparent/nvidia-mps")).unwrap();
    std::fs::set_permissions(host("wparent"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(host("sticky/nvidia-mps")).unwrap();
    std::fs::create_dir_all(host("tmpmode/nvidia-mps")).unwrap();
    std::fs::set_permissions(
        host("tmpmode/nvidia-mps"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    std::fs::set_permissions(host("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();

    for (case, path, bound) in [
        ("root-owned", "good/nvidia-mps", true),
        ("under a root-owned sticky dir", "sticky/nvidia-mps", true),
        ("owned by a user", "user/nvidia-mps", false),
        ("world-writable", "open/nvidia-mps", false),
        (
            "sticky and world-writable itself",
            "tmpmode/nvidia-mps",
            false,
        ),
        ("a symlink to a host dir", "link", false),
        ("a symlinked parent", "plink/nvidia-mps", false),
        ("a writable parent", "wparent/nvidia-mps", false),
    ] {
        let target = format!("/tmp/{base}/{path}");
        let c = Container::new(
            Flavor::Debian,
            &["NVIDIA_VISIBLE_DEVICES=0"],
            &format!("echo \"== mps\"; grep ' {target} ' /proc/self/mountinfo; ls {target} 2>&1; echo \"== end\""),
        );
        c.write_config(&format!("mps-pipe-directory = \"{target}\""));
        let out = c.run_ok(Cgroup::V1);
        let seen = section(&out, "mps");
        let mounted = seen.iter().any(|l| l.contains(&format!(" {target} ")));
        assert_eq!(mounted, bound, "{case}: {out}");
        assert!(!out.contains("key"), "{case}: the secret is visible: {out}");
        if bound {
            let opts = seen[0].split_whitespace().nth(5).unwrap_or("");
            assert!(
                opts.starts_with("ro") && opts.contains("nosuid"),
                "{case}: {opts}"
            );
        } else {
            assert!(
                c.log_text().contains("MPS pipe directory"),
                "{case}: no warning in the log: {}",
                c.log_text()
            );
        }
    }
    let _ = std::fs::remove_dir_all(root.join(format!("tmp/{base}")));
}

/// The MPS pipe directory is bound read-only, and only into a container that got a GPU:
/// a client opens the daemon's FIFO for writing (what a read-only mount allows), and a
/// container's root can create, chmod or set-uid nothing in the host's directory.
#[test]
fn mps_pipe_dir_is_read_only() {
    let dir = fixtures().driver.join("root/tmp/nvidia-mps");
    let fifo = dir.join(format!("control-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let name = fifo.file_name().unwrap().to_str().unwrap().to_string();
    let before = |p: &Path| std::fs::metadata(p).map(|m| (m.mode(), m.uid()));
    let (dir_before, fifo_before) = (before(&dir).unwrap(), before(&fifo).unwrap());
    let script = format!(
        "cd /tmp/nvidia-mps || exit 9; \
         exec 3<>{name} && echo 'start' >&3 && echo client-ok; \
         touch planted 2>&1; cp /bin/busybox planted-suid 2>&1; \
         chmod 4755 {name} 2>&1; chmod 0777 . 2>&1; mkdir sub 2>&1; echo done"
    );
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], &script);
    let out = c.run_ok(Cgroup::V1);
    assert!(
        out.contains("client-ok"),
        "the FIFO did not open for writing: {out}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("mps-unbound"), "{out}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("planted") || n == "sub"),
        "the container wrote in the host's MPS dir: {names:?}"
    );
    assert_eq!(before(&dir).unwrap(), dir_before, "its mode changed");
    assert_eq!(
        before(&fifo).unwrap(),
        fifo_before,
        "the FIFO's mode changed"
    );

    // No GPU (`none`: the driver's files, no device), no MPS directory.
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=none"],
        "grep ' /tmp/nvidia-mps ' /proc/self/mountinfo || echo mps-unbound",
    );
    let out = c.run_ok(Cgroup::V1);
    assert!(out.contains("mps-unbound"), "{out}");
    std::fs::remove_file(&fifo).unwrap();
}

/// What nvhook writes in a container (the loader cache, the CUDA compat drop-in, links,
/// mount targets) lands on the container's own file system: an image whose `/etc` is a
/// link into a directory the engine bound from the host (a volume) fails the start,
/// naming the path, and the host directory is untouched, although the hook is host
/// root and the container's user could not write there.
#[test]
fn writes_never_land_on_a_host_mount() {
    let vol = tempfile::tempdir().unwrap();
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    // the image's /etc moves into the volume, and /etc becomes a link to it
    let etc = c.rootfs.join("etc");
    Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", etc.display()))
        .arg(vol.path())
        .status()
        .unwrap();
    std::fs::remove_dir_all(&etc).unwrap();
    std::os::unix::fs::symlink("/hostvol", &etc).unwrap();
    let listing = |p: &Path| {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().mtime() as u64,
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(vol.path());
    let mut spec = c.spec();
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hostvol",
        "type": "bind",
        "source": vol.path().display().to_string(),
        "options": ["rbind", "rw"],
    }));
    c.set_spec(&spec);
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "started: {out}");
    assert!(
        err.contains(" /etc/") && err.contains("resolves onto a mount from the host"),
        "{err}\nlog:\n{}",
        c.log_text()
    );
    assert_eq!(listing(vol.path()), before, "the host directory changed");
    assert!(!c.rootfs.join("usr/bin/nvidia-smi").exists(), "not undone");
}

/// The shim keeps numbers exactly and refuses a symlinked config.json.
#[test]
fn shim_keeps_numbers_and_refuses_symlinked_config() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    let path = c.bundle.join("config.json");
    let spec_text = std::fs::read_to_string(&path).unwrap();
    let spec_text = spec_text.replacen(
        '{',
        "{\"zNumbers\":[-0,123456789012345678901234567890,1.50],",
        1,
    );
    std::fs::write(&path, &spec_text).unwrap();
    let o = c.run(Cgroup::V1);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.contains("\"zNumbers\":[-0,123456789012345678901234567890,1.50]"),
        "{after}"
    );
    let v: Value = serde_json::from_str(&after).unwrap();
    assert!(v["hooks"]["prestart"].is_array());

    // config.json as a link: refused, the target untouched
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0"], "true");
    let real = c.tmp.path().join("real-config.json");
    std::fs::rename(c.bundle.join("config.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, c.bundle.join("config.json")).unwrap();
    let before = std::fs::read(&real).unwrap();
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&real).unwrap(), before);
}

/// NVIDIA_MIG_CONFIG_DEVICES / NVIDIA_MIG_MONITOR_DEVICES take device lists, as NVIDIA's.
#[test]
fn mig_management_takes_device_lists() {
    let script = "ls /dev/nvidia-caps";
    for (var, list, node) in [
        ("NVIDIA_MIG_MONITOR_DEVICES", "0".to_string(), "nvidia-cap2"),
        ("NVIDIA_MIG_CONFIG_DEVICES", gpu_uuid(0), "nvidia-cap1"),
    ] {
        let env = format!("{var}={list}");
        let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0", &env], script);
        add_caps(&c, &["CAP_SYS_ADMIN"]);
        let out = c.run_ok(Cgroup::V1);
        assert!(out.lines().any(|l| l == node), "{var}={list}: {out}");
    }
    // an unknown GPU in the list is an error that names it
    let c = Container::new(
        Flavor::Debian,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_MONITOR_DEVICES=0,9"],
        "true",
    );
    add_caps(&c, &["CAP_SYS_ADMIN"]);
    let (_, err) = text(&c.run(Cgroup::V1));
    assert!(
        err.contains("unknown GPU")
            && err.contains("9")
            && err.contains("in NVIDIA_MIG_MONITOR_DEVICES"),
        "{err}"
    );
}
