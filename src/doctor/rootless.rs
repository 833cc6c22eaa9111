//! A user's rootless set-up (`--user NAME`): subordinate ids for Podman's user
//! namespace, the setuid helpers that map them, device nodes the user may open, and a
//! way for the user's Podman to reach the hook (hooks.d, or a CDI spec).

use super::{Finding, Host};
use crate::host::driver::Driver;
use nix::unistd::{Gid, User};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Appends this section's findings.
pub fn check(host: &Host, name: &str, driver: Option<&Driver>, out: &mut Vec<Finding>) {
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) | Err(_) => {
            out.push(Finding::fail(
                "rootless.user",
                format!("no user {name:?}"),
                format!("useradd --create-home {name}"),
            ));
            return;
        }
    };
    out.push(Finding::ok(
        "rootless.user",
        format!("{name}: uid {}, gid {}", user.uid, user.gid),
    ));
    out.push(subids(host, &user));
    out.push(id_helpers(host));
    if let Some(d) = driver {
        out.push(devices(d, &user));
    }
    out.push(hook_reachable(host));
}

/// The ids `user` owns in one subordinate id file (`name:start:count` or `uid:...`).
pub fn owned_ids(text: &str, user: &User) -> u64 {
    let uid = user.uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let who = f.next()?;
            let _start: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            (who == user.name || who == uid).then_some(count)
        })
        .fold(0, u64::saturating_add)
}

fn subids(host: &Host, user: &User) -> Finding {
    let count = |p: &Path| owned_ids(&std::fs::read_to_string(p).unwrap_or_default(), user);
    let (u, g) = (count(&host.subuid), count(&host.subgid));
    let fix = format!(
        "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
        user.name
    );
    if u == 0 || g == 0 {
        return Finding::fail(
            "rootless.subids",
            format!(
                "{} has {u} subordinate uids ({}) and {g} gids ({}): Podman cannot make its user namespace",
                user.name,
                host.subuid.display(),
                host.subgid.display()
            ),
            fix,
        );
    }
    if u < 65536 || g < 65536 {
        return Finding::warn(
            "rootless.subids",
            format!("{} has {u} subordinate uids and {g} gids: images with ids above that fail to unpack", user.name),
            fix,
        );
    }
    Finding::ok(
        "rootless.subids",
        format!("{} has {u} subordinate uids and {g} gids", user.name),
    )
}

/// `newuidmap`/`newgidmap` (package uidmap), setuid root or with file capabilities.
fn id_helpers(host: &Host) -> Finding {
    let mut bad = Vec::new();
    for h in ["newuidmap", "newgidmap"] {
        match host.which(h) {
            None => bad.push(format!("{h} not installed")),
            Some(p) => {
                let setuid =
                    std::fs::metadata(&p).is_ok_and(|m| m.mode() & 0o4000 != 0 && m.uid() == 0);
                if !setuid && !has_file_caps(&p) {
                    bad.push(format!(
                        "{} is neither setuid root nor has file capabilities",
                        p.display()
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        return Finding::ok(
            "rootless.uidmap",
            "newuidmap and newgidmap are installed and privileged",
        );
    }
    Finding::fail(
        "rootless.uidmap",
        bad.join("; "),
        "apt-get install uidmap (dnf install shadow-utils)",
    )
}

fn has_file_caps(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a size query with no buffer.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// How `user` may open the device node at `p`: by owner or other bits (`Some(true)`),
/// only through a group (`Some(false)`), or not at all (`None`).
pub fn may_open(meta: &std::fs::Metadata, uid: u32, groups: &[u32]) -> Option<bool> {
    let m = meta.mode();
    if (meta.uid() == uid && m & 0o600 == 0o600) || m & 0o006 == 0o006 {
        return Some(true);
    }
    (groups.contains(&meta.gid()) && m & 0o060 == 0o060).then_some(false)
}

fn devices(d: &Driver, user: &User) -> Finding {
    let groups: Vec<u32> = std::ffi::CString::new(user.name.as_str())
        .ok()
        .and_then(|n| nix::unistd::getgrouplist(&n, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid])
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let nodes = [&d.nvidiactl, &d.uvm, &d.uvm_tools]
        .into_iter()
        .flatten()
        .chain(d.gpus.iter().filter_map(|g| g.node.as_ref()));
    let (mut denied, mut by_group) = (Vec::new(), Vec::new());
    for n in nodes {
        match std::fs::metadata(&n.host_path).map(|m| may_open(&m, user.uid.as_raw(), &groups)) {
            Ok(Some(true)) => {}
            Ok(Some(false)) => by_group.push(n.path.clone()),
            Ok(None) | Err(_) => denied.push(n.path.clone()),
        }
    }
    if !denied.is_empty() {
        return Finding::fail(
            "rootless.devices",
            format!("{} cannot open {}: CUDA in its rootless containers cannot use the GPU", user.name, denied.join(", ")),
            "make the nodes rw for the user: the driver's NVreg_DeviceFileMode=0666 (or NVreg_DeviceFileGID = a group the user is in)",
        );
    }
    if !by_group.is_empty() {
        return Finding::warn(
            "rootless.devices",
            format!(
                "{} opens {} only through a group, not by its owner or other bits",
                user.name,
                by_group.join(", ")
            ),
            "run containers with podman --group-add keep-groups (or make the nodes 0666)",
        );
    }
    Finding::ok(
        "rootless.devices",
        format!("{} may open every NVIDIA device node", user.name),
    )
}

/// The user's Podman reaches nvhook through a hooks.d entry or a CDI spec.
fn hook_reachable(host: &Host) -> Finding {
    let hooks: Vec<String> = super::files_in(&host.hooks_dirs, &["json"])
        .into_iter()
        .filter(|p| {
            super::read_small(p).is_some_and(|t| !super::engines::nvhook_paths(&t).is_empty())
        })
        .map(|p| p.display().to_string())
        .collect();
    let specs: Vec<String> = super::files_in(&host.cdi_dirs, &[])
        .into_iter()
        .filter(|p| {
            super::read_small(p)
                .and_then(|t| super::cdi::kind_of(&t))
                .is_some_and(|k| k == "nvidia.com/gpu")
        })
        .map(|p| p.display().to_string())
        .collect();
    if hooks.is_empty() && specs.is_empty() {
        return Finding::fail(
            "rootless.hooks",
            format!(
                "no hooks.d entry naming nvhook in {}, and no NVIDIA CDI spec: the user's Podman cannot give GPUs",
                host.hooks_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            "as root: nvhook install podman (or nvhook cdi generate --output /var/run/cdi/nvidia.json)",
        );
    }
    Finding::ok(
        "rootless.hooks",
        format!(
            "hooks.d: {}; CDI: {}",
            none_if_empty(&hooks),
            none_if_empty(&specs)
        ),
    )
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn root() -> User {
        User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_user_without_subordinate_ids_fails() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(&host.subuid, "someone:100000:65536\n").unwrap();
        std::fs::write(&host.subgid, "someone:100000:65536\n").unwrap();
        let f = subids(&host, &root());
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        std::fs::write(&host.subuid, "0:100000:65536\n").unwrap();
        std::fs::write(&host.subgid, "root:100000:1000\n").unwrap();
        assert_eq!(subids(&host, &root()).verdict, Verdict::Warn);
    }

    #[test]
    fn an_unknown_user_fails() {
        let mut out = Vec::new();
        check(
            &Host::under(Path::new("/nonexistent")),
            "no-such-user-nvhook",
            None,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verdict, Verdict::Fail);
    }

    #[test]
    fn missing_id_helpers_fail() {
        let d = tempfile::tempdir().unwrap();
        let host = Host {
            path_env: d.path().into(),
            ..Host::under(d.path())
        };
        let f = id_helpers(&host);
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(f.saw.contains("newuidmap not installed"), "{f:?}");
    }

    #[test]
    fn id_helpers_without_privilege_fail() {
        let d = tempfile::tempdir().unwrap();
        for h in ["newuidmap", "newgidmap"] {
            std::fs::copy("/bin/true", d.path().join(h)).unwrap();
        }
        let host = Host {
            path_env: d.path().into(),
            ..Host::under(d.path())
        };
        let f = id_helpers(&host);
        assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
        assert!(
            f.saw
                .contains("neither setuid root nor has file capabilities"),
            "{f:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        for h in ["newuidmap", "newgidmap"] {
            std::fs::set_permissions(d.path().join(h), std::fs::Permissions::from_mode(0o4755))
                .unwrap();
        }
        assert_eq!(id_helpers(&host).verdict, Verdict::Ok);
    }

    #[test]
    fn a_node_the_user_cannot_open_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("node");
        std::fs::write(&p, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o660)).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(may_open(&m, 4242, &[4242]), None);
        assert_eq!(may_open(&m, 4242, &[m.gid()]), Some(false));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            may_open(&std::fs::metadata(&p).unwrap(), 4242, &[]),
            Some(true)
        );
    }

    #[test]
    fn no_hooks_entry_and_no_spec_fails() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::under(d.path());
        assert_eq!(hook_reachable(&host).verdict, Verdict::Fail);
        std::fs::create_dir_all(&host.hooks_dirs[1]).unwrap();
        std::fs::write(
            host.hooks_dirs[1].join("oci-nvhook.json"),
            crate::engines::install::hooks_json(Path::new("/usr/bin/nvhook"), None),
        )
        .unwrap();
        assert_eq!(hook_reachable(&host).verdict, Verdict::Ok);
    }
}
