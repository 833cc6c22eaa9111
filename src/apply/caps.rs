//! Linux capabilities, kept to what each phase needs (through the `caps` crate). The
//! hook drops everything else from its bounding, permitted and effective sets right
//! after parsing; the ldconfig child keeps only file-access capabilities.

use caps::{CapSet, Capability};
use std::io;

/// What the hook needs, and why:
/// - `SYS_ADMIN`: `setns` into the container's mount namespace, `open_tree`/`move_mount`/
///   `mount_setattr`, new namespaces for ldconfig, and `bpf` on kernels without `CAP_BPF`;
/// - `SYS_PTRACE`: open `/proc/<pid>/ns/mnt` of runc's init, which is not dumpable;
/// - `SYS_CHROOT`: chroot the ldconfig child into the container root;
/// - `DAC_OVERRIDE`, `DAC_READ_SEARCH`, `FOWNER`: read driver files and create mount
///   targets in images whatever their owners and modes;
/// - `BPF`, `PERFMON`: read back and replace the cgroup v2 device program;
/// - `SETPCAP`: let the ldconfig child drop its bounding set further;
/// - `SETFCAP`: map host root to root of the ldconfig child's user namespace (the
///   kernel asks for it whenever uid 0 is mapped);
/// - `SETUID`, `SETGID`: let the NVML child become `nobody` before loading NVML, and
///   write the ldconfig child's id maps;
/// - `KILL`: kill that child (no longer root's) when NVML hangs;
/// - `NET_ADMIN`: `BPF_PROG_QUERY` on a cgroup, which kernels before 6.6 allow only
///   with it (Debian 12's 6.1, RHEL 9's 5.14): without it no v2 device program is found.
pub const HOOK: &[Capability] = &[
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
    Capability::CAP_NET_ADMIN,
];

/// What ldconfig needs: write the container's cache and links whatever their modes.
/// These hold only inside its own user namespace (over files of the mapped root), and
/// `DAC_READ_SEARCH` is left out: it is what `open_by_handle_at` escapes need.
pub const LDCONFIG: &[Capability] = &[Capability::CAP_DAC_OVERRIDE, Capability::CAP_FOWNER];

fn io_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// A set as a bit mask (bit N = capability N), as `/proc/<pid>/status` shows it.
pub fn mask(set: &[Capability]) -> u64 {
    set.iter().fold(0u64, |m, c| m | (1u64 << c.index()))
}

/// Current effective set, as a bit mask.
pub fn effective() -> io::Result<u64> {
    let e = caps::read(None, CapSet::Effective).map_err(io_err)?;
    Ok(e.iter().fold(0u64, |m, c| m | (1u64 << c.index())))
}

/// Drops every capability not in `keep` from the bounding set, the ambient set and
/// the permitted/effective/inheritable sets. Capabilities the process did not hold stay
/// absent; ones that cannot be dropped from the bounding set without `SETPCAP` are
/// skipped there (the permitted set still loses them).
pub fn limit_to(keep: &[Capability]) -> io::Result<()> {
    limit_to_mask(mask(keep)).map_err(io::Error::from_raw_os_error)
}

/// `limit_to` over a mask, by raw `prctl` and `capget`/`capset`: it allocates nothing,
/// so the forked ldconfig child (between clone and exec) calls it too. Gives the errno
/// of a call that failed.
pub fn limit_to_mask(keep: u64) -> Result<(), i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    for c in 0..64 {
        if keep & (1u64 << c) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } {
            // EINVAL: past the last capability this kernel knows
            r if r < 0 => break,
            // EPERM without SETPCAP: the permitted set below still loses it
            // SAFETY: as above.
            1 => unsafe {
                libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0);
            },
            _ => {}
        }
    }
    // Ambient capabilities (Linux 4.3+) would survive exec: none.
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut head = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut now = [Data::default(); 2];
    // SAFETY: a version 3 header and the two data structs that version reads and writes.
    if unsafe { libc::syscall(libc::SYS_capget, &mut head, now.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    let permitted = u64::from(now[0].permitted) | (u64::from(now[1].permitted) << 32);
    let new = permitted & keep;
    let half = |bits: u32| Data {
        effective: bits,
        permitted: bits,
        inheritable: 0,
    };
    let set = [half(new as u32), half((new >> 32) as u32)];
    head.version = VERSION_3;
    head.pid = 0;
    // SAFETY: as above; effective within permitted, both within the old permitted set.
    if unsafe { libc::syscall(libc::SYS_capset, &head, set.as_ptr()) } != 0 {
        return Err(errno());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::CapsHashSet;

    #[test]
    fn masks() {
        assert_eq!(
            mask(&[
                Capability::CAP_CHOWN,
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_BPF
            ]),
            0b11 | (1 << 39)
        );
        assert_eq!(mask(LDCONFIG), 0xa);
        assert_eq!(mask(LDCONFIG) & mask(&[Capability::CAP_SYS_ADMIN]), 0);
        assert!(
            HOOK.contains(&Capability::CAP_SETPCAP),
            "the ldconfig child needs it to drop its bounding set"
        );
    }

    /// In a forked child: after limit_to, exactly the kept capabilities remain.
    /// The raw version leaves exactly what `limit_to` leaves, read from
    /// `/proc/self/status` in a child.
    #[test]
    fn limit_to_mask_leaves_what_the_caps_crate_would() {
        let sets = |f: fn() -> bool| -> String {
            let (rd, wr) = nix::unistd::pipe().unwrap();
            // SAFETY: the child makes system calls, writes to a pipe and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(rd);
                let ok = f();
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                let caps: Vec<&str> = status.lines().filter(|l| l.starts_with("Cap")).collect();
                let text = format!("{ok} {}", caps.join(" "));
                let _ = nix::unistd::write(&wr, text.as_bytes());
                unsafe { libc::_exit(0) };
            }
            drop(wr);
            let mut out = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(rd), &mut out).unwrap();
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            out
        };
        // The same drops through the `caps` crate's calls, as the reference.
        fn by_the_crate(keep: &[Capability]) -> bool {
            let keep: CapsHashSet = keep.iter().copied().collect();
            for c in caps::all().difference(&keep) {
                if caps::has_cap(None, CapSet::Bounding, *c).unwrap_or(false) {
                    let _ = caps::drop(None, CapSet::Bounding, *c);
                }
            }
            let _ = caps::clear(None, CapSet::Ambient);
            let Ok(permitted) = caps::read(None, CapSet::Permitted) else {
                return false;
            };
            let new: CapsHashSet = permitted.intersection(&keep).copied().collect();
            caps::set(None, CapSet::Effective, &new).is_ok()
                && caps::set(None, CapSet::Permitted, &new).is_ok()
                && caps::clear(None, CapSet::Inheritable).is_ok()
        }
        let by_crate = sets(|| by_the_crate(LDCONFIG));
        let raw = sets(|| limit_to_mask(mask(LDCONFIG)).is_ok());
        assert!(raw.starts_with("true CapInh:\t0000000000000000 CapPrm:\t000000000000000a CapEff:\t000000000000000a CapBnd:\t000000000000000a CapAmb:\t0000000000000000"), "{raw}");
        assert_eq!(raw, by_crate);
    }

    #[test]
    fn limit_in_child() {
        // SAFETY: the child only makes system calls (and allocates, single-threaded
        // after fork) and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = limit_to(LDCONFIG).is_ok()
                && effective().is_ok_and(|e| e & !mask(LDCONFIG) == 0)
                && !caps::has_cap(None, CapSet::Bounding, Capability::CAP_SYS_ADMIN)
                    .unwrap_or(true);
            // SAFETY: exit the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
    }
}
