//! Linux capabilities, kept to what each phase needs. The hook drops everything else
//! from its bounding, permitted and effective sets right after parsing; the ldconfig
//! child keeps only file-access capabilities.

use std::io;

pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SETFCAP: u32 = 31;
pub const CAP_SYS_CHROOT: u32 = 18;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

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
/// - `SETUID`, `SETGID`: let the NVML child become `nobody` before loading NVML;
/// - `KILL`: kill that child (no longer root's) when NVML hangs.
pub const HOOK: &[u32] = &[
    CAP_SYS_ADMIN,
    CAP_SYS_PTRACE,
    CAP_SYS_CHROOT,
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CAP_FOWNER,
    CAP_BPF,
    CAP_PERFMON,
    CAP_SETPCAP,
    CAP_SETFCAP,
    CAP_SETUID,
    CAP_SETGID,
    CAP_KILL,
];

/// What ldconfig needs: write the container's cache and links whatever their modes.
/// These hold only inside its own user namespace (over files of the mapped root), and
/// `DAC_READ_SEARCH` is left out: it is what `open_by_handle_at` escapes need.
pub const LDCONFIG: &[u32] = &[CAP_DAC_OVERRIDE, CAP_FOWNER];

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

fn mask(keep: &[u32]) -> u64 {
    keep.iter().fold(0u64, |m, c| m | (1u64 << c))
}

/// The process's capability sets (capget, version 3: two 32-bit halves).
fn capget() -> io::Result<[Data; 2]> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: valid header and a two-element data array, as capget v3 requires.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(d)
}

/// Current effective set, as a bit mask.
pub fn effective() -> io::Result<u64> {
    let d = capget()?;
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

/// Drops every capability not in `keep` from the bounding set, the ambient set and
/// the permitted/effective/inheritable sets. Safe to call in a forked child (only raw
/// system calls). Capabilities the process did not hold stay absent.
pub fn limit_to(keep: &[u32]) -> io::Result<()> {
    let m = mask(keep);
    for cap in 0..64u32 {
        if m & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let cur = capget()?;
    let lo = m as u32;
    let hi = (m >> 32) as u32;
    let new = [
        Data {
            effective: cur[0].permitted & lo,
            permitted: cur[0].permitted & lo,
            inheritable: 0,
        },
        Data {
            effective: cur[1].permitted & hi,
            permitted: cur[1].permitted & hi,
            inheritable: 0,
        },
    ];
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: valid header and data, as capset v3 requires.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, new.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask(&[0, 1, 39]), 0b11 | (1 << 39));
        assert_eq!(mask(LDCONFIG) & mask(&[CAP_SYS_ADMIN]), 0);
        assert!(
            HOOK.contains(&CAP_SETPCAP),
            "the ldconfig child needs it to drop its bounding set"
        );
    }

    /// In a forked child: after limit_to, exactly the kept capabilities remain.
    #[test]
    fn limit_in_child() {
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = limit_to(LDCONFIG).is_ok()
                && effective().is_ok_and(|e| e & !mask(LDCONFIG) == 0)
                // SAFETY: prctl query.
                && unsafe { libc::prctl(libc::PR_CAPBSET_READ, CAP_SYS_ADMIN as libc::c_ulong, 0, 0, 0) } == 0;
            // SAFETY: exit the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
    }
}
