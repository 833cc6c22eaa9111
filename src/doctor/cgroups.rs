//! cgroups as the device cgroup phase meets them: the version, the cgroup driver each
//! engine is set to (a systemd driver needs systemd as PID 1), systemd's private
//! socket (the `DeviceAllow=` that keeps GPUs across `systemctl daemon-reload`), bpffs
//! for the device program cache, and the capability the kernel wants for
//! `BPF_PROG_QUERY` (`CAP_NET_ADMIN` before 6.6) in the engines' daemons, whose
//! bounding set the hook inherits.

use super::{Finding, Host};
use crate::container::config::Config;
use std::path::Path;

/// `CAP_NET_ADMIN`'s bit in `/proc/PID/status` capability masks.
const CAP_NET_ADMIN: u32 = 12;

/// Appends this section's findings.
pub fn check(host: &Host, cfg: &Config, out: &mut Vec<Finding>) {
    let unified = crate::apply::cgroup::is_unified();
    out.push(version(unified));
    let pid1 = std::fs::read_to_string(host.proc.join("1/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // unreadable (`hidepid`, a plain user): unknown, not "not systemd"
    let systemd_pid1 = (!pid1.is_empty()).then(|| pid1 == "systemd");
    out.push(engine_drivers(host, systemd_pid1));
    out.push(systemd(&pid1, cfg.systemd_socket(), unified));
    if unified {
        out.push(bpffs(cfg.device_program_cache()));
        let release =
            std::fs::read_to_string(host.proc.join("sys/kernel/osrelease")).unwrap_or_default();
        out.push(bpf_query(release.trim(), &daemons(host)));
    }
}

fn version(unified: bool) -> Finding {
    let hybrid = !unified
        && nix::sys::statfs::statfs("/sys/fs/cgroup/unified")
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    Finding::ok(
        "cgroups.version",
        match (unified, hybrid) {
            (true, _) => {
                "cgroup v2 (unified): devices are allowed by an eBPF program per container"
            }
            (false, true) => {
                "cgroup v1, hybrid (v2 beside it): devices.allow of the v1 devices controller"
            }
            (false, false) => "cgroup v1: devices.allow of the devices controller",
        },
    )
}

/// The cgroup manager each engine is explicitly set to, from its files.
fn drivers_set(host: &Host) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    let read = |p: &Path| super::read_small(p).unwrap_or_default();
    let docker = read(&host.engines.docker_config);
    if let Some(d) = [
        "native.cgroupdriver=systemd",
        "native.cgroupdriver=cgroupfs",
    ]
    .iter()
    .find(|k| docker.contains(*k))
    {
        v.push(("docker", d.rsplit('=').next().unwrap_or("").to_string()));
    }
    let containerd = read(&host.engines.containerd_config);
    if containerd
        .lines()
        .any(|l| l.trim().replace(' ', "") == "SystemdCgroup=true")
    {
        v.push(("containerd", "systemd".into()));
    }
    let mut crio = vec![host.crio_config.clone()];
    crio.extend(super::files_in([&host.engines.crio_dropin_dir], &[]));
    for (engine, files) in [("crio", crio), ("podman", host.containers_confs.clone())] {
        // the last file that sets it wins, as in the engines' own merge
        let m = files.iter().rev().find_map(|f| cgroup_manager(&read(f)));
        if let Some(m) = m {
            v.push((engine, m));
        }
    }
    v
}

/// A TOML file's `cgroup_manager = "..."`.
fn cgroup_manager(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, val) = l.split_once('=')?;
        (k.trim() == "cgroup_manager").then(|| val.trim().trim_matches('"').to_string())
    })
}

/// A systemd cgroup driver without systemd as PID 1 starts no container at all.
fn engine_drivers(host: &Host, systemd_pid1: Option<bool>) -> Finding {
    let set = drivers_set(host);
    let listed = set
        .iter()
        .map(|(e, d)| format!("{e}: {d}"))
        .collect::<Vec<_>>()
        .join(", ");
    let wrong: Vec<&str> = set
        .iter()
        .filter(|(_, d)| d == "systemd" && systemd_pid1 == Some(false))
        .map(|(e, _)| *e)
        .collect();
    if !wrong.is_empty() {
        return Finding::fail(
            "cgroups.driver",
            format!("{} set to the systemd cgroup driver, but PID 1 is not systemd", wrong.join(", ")),
            "use the cgroupfs driver there (Docker: \"exec-opts\": [\"native.cgroupdriver=cgroupfs\"]; containerd: SystemdCgroup = false; CRI-O/Podman: cgroup_manager = \"cgroupfs\")",
        );
    }
    Finding::ok(
        "cgroups.driver",
        if set.is_empty() {
            "no engine names a cgroup driver: each uses its default".to_string()
        } else {
            listed
        },
    )
}

/// systemd as PID 1 rewrites a scope's device access on every daemon-reload: nvhook
/// must be able to tell it of the GPU nodes.
pub fn systemd(pid1: &str, socket: Option<&Path>, unified: bool) -> Finding {
    if pid1 != "systemd" {
        return Finding::ok(
            "cgroups.systemd",
            format!(
                "PID 1 is {:?}, not systemd: no daemon-reload can take GPUs away",
                pid1
            ),
        );
    }
    let Some(socket) = socket else {
        return Finding::warn(
            "cgroups.systemd",
            "systemd-socket = \"\": containers in systemd scopes lose their GPUs at the next `systemctl daemon-reload`",
            "remove systemd-socket from the configuration (the default is /run/systemd/private)",
        );
    };
    let clock = std::time::Instant::now();
    let answer = crate::apply::systemd::probe(socket, std::time::Duration::from_secs(5));
    let took = clock.elapsed();
    match answer {
        Ok(_) if took > crate::apply::systemd::TIMEOUT => Finding::warn(
            "cgroups.systemd",
            format!(
                "systemd answered on {} after {} ms; a GPU start waits {} ms, then goes on without DeviceAllow= (a later daemon-reload takes the GPU away)",
                socket.display(),
                took.as_millis(),
                crate::apply::systemd::TIMEOUT.as_millis()
            ),
            "find what keeps systemd busy (systemd-analyze, journalctl -u init.scope); run doctor again",
        ),
        Ok(policy) => Finding::ok(
            "cgroups.systemd",
            format!(
                "systemd answers on {} ({} ms): GPU nodes are added to each container scope's DeviceAllow= (cgroup {}; init.scope DevicePolicy={policy})",
                socket.display(),
                took.as_millis(),
                if unified { "v2" } else { "v1" }
            ),
        ),
        Err(e) if !nix::unistd::geteuid().is_root() => Finding::warn(
            "cgroups.systemd",
            format!("{e}: systemd's private socket answers root only; not checked as uid {}", nix::unistd::geteuid()),
            "run doctor as root",
        ),
        Err(e) => Finding::fail(
            "cgroups.systemd",
            format!("{e}: containers in systemd scopes lose their GPUs at the next `systemctl daemon-reload` (\"Failed to initialize NVML: Unknown Error\")"),
            "systemd-socket must name systemd's private socket (/run/systemd/private, the default), and systemd must answer there (systemctl daemon-reexec if it hangs)",
        ),
    }
}

/// The device program cache must be on bpffs, or every start loads its program anew.
pub fn bpffs(cache: Option<&Path>) -> Finding {
    let Some(dir) = cache else {
        return Finding::ok(
            "cgroups.bpffs",
            "device-program-cache = \"\": each start loads its device program",
        );
    };
    let on_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if on_bpffs(dir) || (!dir.exists() && on_bpffs(parent)) {
        return Finding::ok(
            "cgroups.bpffs",
            format!(
                "{} is on bpffs: device programs are kept for the next start",
                dir.display()
            ),
        );
    }
    Finding::warn(
        "cgroups.bpffs",
        format!("{} is not on bpffs: every start loads its device program (slower, nothing fails)", dir.display()),
        format!("mount -t bpf bpf {} (systemd mounts /sys/fs/bpf at boot), or set device-program-cache = \"\"", parent.display()),
    )
}

/// The engines' daemons running now: name and capability bounding set.
/// Those in the host's PID namespace only (a daemon inside a container, Docker in
/// Docker, is no engine of this host).
fn daemons(host: &Host) -> Vec<(String, u64)> {
    let ns = |pid: &Path| std::fs::read_link(pid.join("ns/pid")).ok();
    let host_ns = ns(&host.proc.join("1"));
    let mut v = Vec::new();
    for e in std::fs::read_dir(&host.proc)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !["dockerd", "containerd", "crio"].contains(&comm) || ns(&e.path()) != host_ns {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if let Some(b) = cap_mask(&status, "CapBnd") {
            v.push((comm.to_string(), b));
        }
    }
    v.sort();
    v.dedup();
    v
}

/// A capability mask of `/proc/PID/status`.
pub fn cap_mask(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    u64::from_str_radix(line.split_once(':')?.1.trim(), 16).ok()
}

/// Whether `release` (`6.1.0-28-amd64`) is older than `major.minor`.
fn older_than(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) < (major, minor)
}

/// Kernels before 6.6 answer `BPF_PROG_QUERY` on a cgroup only with `CAP_NET_ADMIN`; a
/// hook whose engine runs without it cannot see the container's device programs.
pub fn bpf_query(release: &str, daemons: &[(String, u64)]) -> Finding {
    if !older_than(release, 6, 6) {
        return Finding::ok(
            "cgroups.bpf-query",
            format!("kernel {release}: BPF_PROG_QUERY needs no CAP_NET_ADMIN"),
        );
    }
    let lacking: Vec<&str> = daemons
        .iter()
        .filter(|(_, bnd)| bnd & (1 << CAP_NET_ADMIN) == 0)
        .map(|(n, _)| n.as_str())
        .collect();
    if !lacking.is_empty() {
        return Finding::fail(
            "cgroups.bpf-query",
            format!("kernel {release} wants CAP_NET_ADMIN for BPF_PROG_QUERY, and {} run(s) without it in the bounding set the hook inherits: GPU starts fail", lacking.join(", ")),
            "add CAP_NET_ADMIN to the engine's CapabilityBoundingSet= (systemctl edit ENGINE), or boot a kernel 6.6 or newer",
        );
    }
    Finding::ok(
        "cgroups.bpf-query",
        format!(
            "kernel {release} wants CAP_NET_ADMIN for BPF_PROG_QUERY: the hook keeps it, and {} allow it",
            if daemons.is_empty() { "no running engine daemon is seen to restrict it".to_string() } else { daemons.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ") }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    #[test]
    fn a_systemd_driver_without_systemd_fails() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        std::fs::create_dir_all(d.path().join("etc/docker")).unwrap();
        std::fs::write(
            &host.engines.docker_config,
            r#"{"exec-opts": ["native.cgroupdriver=systemd"]}"#,
        )
        .unwrap();
        let f = engine_drivers(&host, Some(false));
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.starts_with("docker set to the systemd"), "{f:?}");
        assert_eq!(engine_drivers(&host, Some(true)).verdict, Verdict::Ok);
        // PID 1 not readable (hidepid): unknown, so no verdict against it
        assert_eq!(engine_drivers(&host, None).verdict, Verdict::Ok);
        // CRI-O's packaged drop-in sets it, and a later one of the admin's changes it
        std::fs::write(&host.engines.docker_config, "{}").unwrap();
        let dropins = &host.engines.crio_dropin_dir;
        std::fs::create_dir_all(dropins).unwrap();
        std::fs::write(
            dropins.join("10-crio.conf"),
            "[crio.runtime]\ncgroup_manager = \"systemd\"\n",
        )
        .unwrap();
        let f = engine_drivers(&host, Some(false));
        assert!(
            f.verdict == Verdict::Fail && f.saw.starts_with("crio set"),
            "{f:?}"
        );
        std::fs::write(
            dropins.join("99-local.conf"),
            "[crio.runtime]\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        assert_eq!(engine_drivers(&host, Some(false)).verdict, Verdict::Ok);
    }

    #[test]
    fn systemd_without_an_answering_socket_fails() {
        let d = tempfile::tempdir().unwrap();
        let f = systemd("systemd", Some(&d.path().join("private")), true);
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("daemon-reload"), "{f:?}");
        assert_eq!(systemd("systemd", None, true).verdict, Verdict::Warn);
        assert_eq!(
            systemd("sh", Some(&d.path().join("private")), true).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn a_cache_dir_off_bpffs_warns() {
        let d = tempfile::tempdir().unwrap();
        let f = bpffs(Some(&d.path().join("nvhook")));
        assert_eq!(f.verdict, Verdict::Warn, "{f:?}");
        assert_eq!(bpffs(None).verdict, Verdict::Ok);
    }

    #[test]
    fn an_old_kernel_and_a_daemon_without_net_admin_fail() {
        let status = "Name:\tdockerd\nCapBnd:\t000001ffffffefff\n";
        let bnd = cap_mask(status, "CapBnd").unwrap();
        assert_eq!(bnd & (1 << CAP_NET_ADMIN), 0);
        let f = bpf_query("6.1.0-28-amd64", &[("dockerd".into(), bnd)]);
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert_eq!(
            bpf_query("6.1.0-28-amd64", &[("dockerd".into(), u64::MAX)]).verdict,
            Verdict::Ok
        );
        assert_eq!(
            bpf_query("6.12.9", &[("dockerd".into(), bnd)]).verdict,
            Verdict::Ok
        );
        assert!(older_than("5.15.0-1-generic", 6, 6) && !older_than("6.6.0", 6, 6));
    }
}
