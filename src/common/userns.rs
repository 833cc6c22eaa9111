//! The user namespace nvhook itself runs in. Under a root engine that is the host's
//! (every id maps to itself). Under rootless Podman the hook runs inside the user's
//! namespace: host root's files show as the overflow uid there, no device cgroup can
//! be changed from there, and a nested namespace may map only the ids this one has.

use std::sync::OnceLock;

/// One line of a `uid_map`/`gid_map`: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Parses a map file's text; lines that do not parse are skipped.
pub fn parse_map(text: &str) -> Vec<Extent> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some(Extent {
                inside: f.next()??,
                outside: f.next()??,
                count: f.next()??,
            })
        })
        .collect()
}

/// Whether `map` is the initial namespace's: every id to itself.
pub fn is_full_identity(map: &[Extent]) -> bool {
    matches!(
        map,
        [Extent {
            inside: 0,
            outside: 0,
            count: u32::MAX
        }]
    )
}

/// The id inside the namespace that `outside` (an id of the parent) shows as, if mapped.
pub fn inside_of(map: &[Extent], outside: u32) -> Option<u32> {
    map.iter().find_map(|e| {
        let off = outside.checked_sub(e.outside)?;
        (off < e.count).then(|| e.inside + off)
    })
}

/// The same ids mapped to themselves, as map text: the maps a nested namespace gets to
/// hold exactly the ids of this one.
pub fn identity_text(map: &[Extent]) -> String {
    map.iter()
        .map(|e| format!("{} {} {}\n", e.inside, e.inside, e.count))
        .collect()
}

#[derive(Debug)]
struct Own {
    uid: Vec<Extent>,
    gid: Vec<Extent>,
    overflow_uid: u32,
    /// The namespace's creator, as this namespace sees it (`NS_GET_OWNER_UID`).
    owner: Option<u32>,
}

/// `NS_GET_OWNER_UID`: `_IO(0xb7, 0x4)`.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

fn owner_uid() -> Option<u32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/proc/self/ns/user").ok()?;
    let mut uid: libc::uid_t = 0;
    // SAFETY: valid fd; the kernel writes one uid_t.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    (r == 0).then_some(uid)
}

fn own() -> &'static Own {
    static OWN: OnceLock<Own> = OnceLock::new();
    OWN.get_or_init(|| {
        let read = |f: &str| std::fs::read_to_string(f).map(|t| parse_map(&t));
        let full = || {
            vec![Extent {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }]
        };
        // A kernel without user namespaces has no map files: it is all the initial one.
        Own {
            uid: read("/proc/self/uid_map").unwrap_or_else(|_| full()),
            gid: read("/proc/self/gid_map").unwrap_or_else(|_| full()),
            overflow_uid: std::fs::read_to_string("/proc/sys/kernel/overflowuid")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(65534),
            owner: owner_uid(),
        }
    })
}

/// Reads nvhook's own namespace now. Call first thing: the answers come from `/proc`
/// paths, which are the host's only until nvhook joins a container's mount namespace.
pub fn init() {
    own();
}

/// Whether nvhook runs in the host's user namespace.
pub fn is_initial() -> bool {
    is_full_identity(&own().uid)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nvhook runs inside a user namespace that an id it cannot see created (a container's, made by a root engine): run it as a prestart or createRuntime hook, which runtimes run in the host's namespaces, not createContainer")]
    Foreign,
}

/// The rootless rules (trust in what shows as root's, no device cgroup) hold only in a
/// namespace a user made for itself, whose creator is mapped inside (rootless Podman:
/// the user is its root). A namespace host root made for a container (a
/// `createContainer` hook under a root engine runs there) has an unmapped creator:
/// there the rules would trust any unmapped owner, so nvhook refuses to act.
pub fn check_not_foreign() -> Result<(), Error> {
    let o = own();
    if is_full_identity(&o.uid) {
        return Ok(());
    }
    // The creator's id as seen here: unmapped (overflow) or the parent's root means
    // host root made it.
    let parent_root = inside_of(&o.uid, 0);
    match o.owner {
        Some(uid) if uid != o.overflow_uid && Some(uid) != parent_root => Ok(()),
        _ => Err(Error::Foreign),
    }
}

/// The owner that a file of host root shows here: 0 in the initial namespace; in a
/// rootless one, root's id if the namespace maps it, else the overflow uid. Every
/// unmapped owner shows as that too, so `trust` adds rules there (no sticky exception,
/// not writable from this namespace); what it still cannot tell apart is a file of
/// another host user under directories only root can write, which only root could
/// have put there.
pub fn host_root_shows_as() -> u32 {
    let o = own();
    if is_full_identity(&o.uid) {
        return 0;
    }
    inside_of(&o.uid, 0).unwrap_or(o.overflow_uid)
}

/// This namespace's own ids, each to itself (uid map text, gid map text).
pub fn own_identity_maps() -> (String, String) {
    let o = own();
    (identity_text(&o.uid), identity_text(&o.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_translate() {
        let m = parse_map("         0       1000          1\n         1     100000      65536\n");
        assert_eq!(m.len(), 2);
        assert!(!is_full_identity(&m));
        assert_eq!(inside_of(&m, 1000), Some(0));
        assert_eq!(inside_of(&m, 100000), Some(1));
        assert_eq!(inside_of(&m, 165535), Some(65536));
        assert_eq!(inside_of(&m, 165536), None);
        assert_eq!(inside_of(&m, 0), None);
        assert_eq!(identity_text(&m), "0 0 1\n1 1 65536\n");
        let init = parse_map("0 0 4294967295\n");
        assert!(is_full_identity(&init));
        assert_eq!(identity_text(&init), "0 0 4294967295\n");
        assert!(parse_map("x y\n").is_empty());
    }
}
