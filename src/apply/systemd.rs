//! GPUs that survive `systemctl daemon-reload`. Under systemd's cgroup driver a
//! container's cgroup is a transient scope, and systemd owns its device access: on every
//! reload it writes the scope's `DeviceAllow=` list again (v1 `devices.*`, v2 its own
//! device program), and a device allowed behind its back (nvhook's rules, a node runc
//! left out because `/sys/dev/char/MAJ:MIN` does not exist) is denied from then on.
//! So nvhook tells systemd too: `SetUnitProperties(scope, runtime, DeviceAllow=NODE rw)`
//! for exactly the container's own GPU nodes, over systemd's private socket.
//!
//! Only a scope that already restricts devices (`DevicePolicy=strict` or `closed`, as
//! every engine sets it) is told: on a unit without a policy, the first `DeviceAllow=`
//! would turn restriction on. A service is never told: everything in it would get the
//! GPU, not only the container.

use crate::common::dbus::{self, Call, Connection, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("systemd at {socket}: {source}")]
    Bus {
        socket: PathBuf,
        source: dbus::Error,
    },
    #[error("systemd's answer for {unit}: {what}")]
    Answer { unit: String, what: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How long systemd may take to answer both calls.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// The systemd scope a cgroup directory belongs to: the nearest component that names a
/// scope unit (a container's own cgroup may sit below it, as crun's `container`).
pub fn scope_of(cgroup_dir: &Path) -> Option<String> {
    cgroup_dir
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|n| n.ends_with(".scope"))
        .filter(|n| valid_unit_name(n))
        .map(str::to_owned)
}

/// systemd's unit name characters, so a name can go into an object path safely.
fn valid_unit_name(n: &str) -> bool {
    n.len() <= 255
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// The unit's object path: systemd escapes every byte but letters and (not leading)
/// digits as `_XX`.
pub fn object_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// What became of the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// systemd now lists the nodes in the unit's `DeviceAllow=`.
    Added,
    /// The unit restricts no devices (`DevicePolicy=` is this): nothing to keep.
    NoPolicy(String),
}

/// Adds `nodes` (paths under `/dev`) to `unit`'s `DeviceAllow=`, for this boot only,
/// when the unit restricts devices.
pub fn allow(socket: &Path, unit: &str, nodes: &[&Path]) -> Result<Outcome> {
    let bus = |source| Error::Bus {
        socket: socket.to_path_buf(),
        source,
    };
    let mut c = Connection::open(socket, TIMEOUT).map_err(bus)?;
    let policy = device_policy(&mut c, socket, unit)?;
    if policy != "strict" && policy != "closed" {
        return Ok(Outcome::NoPolicy(policy));
    }
    let entries = nodes
        .iter()
        .map(|n| {
            Value::Struct(vec![
                Value::Str(n.display().to_string()),
                Value::Str("rw".into()),
            ])
        })
        .collect();
    c.call(&Call {
        path: "/org/freedesktop/systemd1",
        interface: "org.freedesktop.systemd1.Manager",
        member: "SetUnitProperties",
        destination: Some("org.freedesktop.systemd1"),
        signature: "sba(sv)",
        args: &[
            Value::Str(unit.into()),
            Value::Bool(true),
            Value::Array(
                "(sv)",
                vec![Value::Struct(vec![
                    Value::Str("DeviceAllow".into()),
                    Value::Variant("a(ss)", Box::new(Value::Array("(ss)", entries))),
                ])],
            ),
        ],
    })
    .map_err(bus)?;
    Ok(Outcome::Added)
}

/// The `DevicePolicy=` of the scope `unit`.
fn device_policy(c: &mut Connection, socket: &Path, unit: &str) -> Result<String> {
    let path = object_path(unit);
    let reply = c
        .call(&Call {
            path: &path,
            interface: "org.freedesktop.DBus.Properties",
            member: "Get",
            destination: Some("org.freedesktop.systemd1"),
            signature: "ss",
            args: &[
                Value::Str("org.freedesktop.systemd1.Scope".into()),
                Value::Str("DevicePolicy".into()),
            ],
        })
        .map_err(|source| Error::Bus {
            socket: socket.to_path_buf(),
            source,
        })?;
    variant_string(&reply).ok_or(Error::Answer {
        unit: unit.into(),
        what: "DevicePolicy is not a string",
    })
}

/// Whether systemd answers at `socket` as [`allow`] needs: it reads the `DevicePolicy=`
/// of `init.scope`, the one scope every systemd has, waiting up to `timeout` (a check
/// may wait longer than a container start does). Gives that policy.
pub fn probe(socket: &Path, timeout: Duration) -> Result<String> {
    let bus = |source| Error::Bus {
        socket: socket.to_path_buf(),
        source,
    };
    let mut c = Connection::open(socket, timeout).map_err(bus)?;
    device_policy(&mut c, socket, "init.scope")
}

/// A `Get` reply's variant holding a string.
fn variant_string(m: &dbus::Message) -> Option<String> {
    if m.signature != "v" {
        return None;
    }
    let mut r = dbus::Reader::new(&m.body, m.big_endian);
    (r.sig().ok()? == "s").then(|| r.str().ok())?
}

/// Tells the scope of `cgroup_dir` about the container's device nodes, when there is
/// one: gives whether systemd listed them (so a check right after may wait for systemd
/// to apply them). Never fails a start; says why nothing was done at debug level, and
/// warns where systemd should have answered and did not.
pub fn keep_devices(socket: Option<&Path>, cgroup_dir: &Path, nodes: &[&Path]) -> bool {
    use crate::common::log;
    let (Some(socket), Some(unit)) = (socket, scope_of(cgroup_dir)) else {
        return false;
    };
    if nodes.is_empty() {
        return false;
    }
    let (under_dev, elsewhere): (Vec<&Path>, Vec<&Path>) =
        nodes.iter().partition(|n| n.starts_with("/dev/"));
    if !elsewhere.is_empty() {
        log::warn(&format!(
            "{} is not under /dev (dev-root): systemd cannot be told of it, so a systemctl daemon-reload may take it from {unit}",
            elsewhere[0].display()
        ));
    }
    if under_dev.is_empty() {
        return false;
    }
    if !socket.exists() {
        log::debug(&format!(
            "{unit}: no systemd socket at {}; device access not kept across reloads",
            socket.display()
        ));
        return false;
    }
    match allow(socket, &unit, &under_dev) {
        Ok(Outcome::Added) => {
            log::debug(&format!(
                "{unit}: DeviceAllow= {} (rw, until the unit goes)",
                under_dev
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            true
        }
        Ok(Outcome::NoPolicy(p)) => {
            log::debug(&format!(
                "{unit}: DevicePolicy={p} restricts no device; nothing to keep"
            ));
            false
        }
        Err(Error::Bus {
            source: dbus::Error::Remote { name, message },
            ..
        }) if name.ends_with(".NoSuchUnit") || name.ends_with(".UnknownObject") => {
            log::debug(&format!("{unit}: not a systemd unit ({message})"));
            false
        }
        Err(e) => {
            log::warn(&format!(
                "{unit}: device access not kept across systemctl daemon-reload: {e}"
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_the_nearest_scope_component() {
        let s = |p: &str| scope_of(Path::new(p));
        assert_eq!(
            s("/sys/fs/cgroup/system.slice/docker-ab12.scope").as_deref(),
            Some("docker-ab12.scope")
        );
        // crun: the process sits in a child of the scope
        assert_eq!(
            s("/sys/fs/cgroup/machine.slice/libpod-c0ffee.scope/container").as_deref(),
            Some("libpod-c0ffee.scope")
        );
        // a service, a slice, cgroupfs paths: no scope, nothing is told
        assert_eq!(s("/sys/fs/cgroup/system.slice/podman.service/c1"), None);
        assert_eq!(s("/sys/fs/cgroup/devices/default/c1"), None);
        assert_eq!(s("/sys/fs/cgroup/kubepods.slice/x"), None);
        // a name systemd would not make is not sent
        assert_eq!(s("/sys/fs/cgroup/we ird$.scope"), None);
    }

    #[test]
    fn object_paths_escape_as_systemd_does() {
        assert_eq!(
            object_path("nvhook-c1.scope"),
            "/org/freedesktop/systemd1/unit/nvhook_2dc1_2escope"
        );
        assert_eq!(
            object_path("1a.scope"),
            "/org/freedesktop/systemd1/unit/_31a_2escope"
        );
    }

    #[test]
    fn nothing_is_done_without_a_scope_a_socket_or_dev_nodes() {
        let none = Path::new("/nonexistent/private");
        let n = [Path::new("/dev/nvidia0")];
        assert!(!keep_devices(None, Path::new("/x/c.scope"), &n));
        assert!(!keep_devices(Some(none), Path::new("/x/c1"), &n));
        assert!(!keep_devices(Some(none), Path::new("/x/c.scope"), &n));
        assert!(!keep_devices(
            Some(none),
            Path::new("/x/c.scope"),
            &[Path::new("/tmp/dev/nvidia0")]
        ));
    }
}
