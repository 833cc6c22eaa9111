//! cgroup v2 device access: runc attaches an eBPF program that denies every device
//! not in the spec. A second program cannot widen access (every attached program must
//! allow), so the existing program is read back, the GPU allow rules are put in front
//! of it, and the result atomically replaces it (`BPF_F_REPLACE`).

use crate::plan::{CgroupRule, DeviceKind};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot extend program {id}: {reason}")]
    Unsupported { id: u32, reason: String },
    #[error("the kernel refused the extended program: {0}")]
    Verifier(String),
}

pub type Result<T> = std::result::Result<T, Error>;

const BPF_PROG_LOAD: i32 = 5;
const BPF_OBJ_PIN: i32 = 6;
const BPF_OBJ_GET: i32 = 7;
const BPF_PROG_ATTACH: i32 = 8;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;
const BPF_PROG_QUERY: i32 = 16;
pub const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;

/// One eBPF instruction as the kernel lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const JNE_K: u8 = 0x55;
const MOV64_K: u8 = 0xb7;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;

const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

/// Instructions that return "allow" for a read/write (not mknod) open of any of the
/// character devices `devices` (major, minor) and fall through otherwise: the context
/// is read once (type, access, major, minor into r2-r5), then four instructions per
/// device, so the verifier walks as little as it can (its time is most of the swap).
/// Reads only r1 (the context), so the original program that follows starts from the
/// state it expects.
pub fn allow_rules(devices: &[(u32, u32)]) -> Vec<Insn> {
    if devices.is_empty() {
        return Vec::new();
    }
    const PROLOGUE: i16 = 9;
    let end = PROLOGUE + 4 * devices.len() as i16;
    let to_end = |at: i16| end - (at + 1);
    let mut v = vec![
        insn(LDX_W, 2, 1, 0, 0),                      // r2 = access_type
        insn(AND32_K, 2, 0, 0, 0xffff),               // r2 = device type
        insn(JNE_K, 2, 0, to_end(2), DEVCG_DEV_CHAR), // not a char device
        insn(LDX_W, 3, 1, 0, 0),                      // r3 = access_type
        insn(RSH32_K, 3, 0, 0, 16),                   // r3 = access
        insn(AND32_K, 3, 0, 0, !(DEVCG_ACC_READ | DEVCG_ACC_WRITE)), // anything beyond rw?
        insn(JNE_K, 3, 0, to_end(6), 0),
        insn(LDX_W, 4, 1, 4, 0), // r4 = major
        insn(LDX_W, 5, 1, 8, 0), // r5 = minor
    ];
    for (major, minor) in devices {
        v.extend([
            insn(JNE_K, 4, 0, 3, *major as i32),
            insn(JNE_K, 5, 0, 2, *minor as i32),
            insn(MOV64_K, 0, 0, 0, 1), // allow
            insn(EXIT, 0, 0, 0, 0),
        ]);
    }
    v
}

/// The allow rules followed by the original program.
pub fn extend(rules: &[CgroupRule], original: &[Insn], id: u32) -> Result<Vec<Insn>> {
    for i in original {
        if i.code == LD_IMM64 && (i.regs >> 4) != 0 {
            return Err(Error::Unsupported {
                id,
                reason: "it refers to maps".into(),
            });
        }
        if (i.regs & 0xf) > 10 || (i.regs >> 4) > 10 {
            return Err(Error::Unsupported {
                id,
                reason: "its dump uses kernel-internal registers (bpf_jit_harden?)".into(),
            });
        }
    }
    let chars: Vec<(u32, u32)> = rules
        .iter()
        .filter(|r| r.kind == DeviceKind::Char)
        .map(|r| (r.major, r.minor))
        .collect();
    let mut out = allow_rules(&chars);
    out.extend_from_slice(original);
    Ok(out)
}

#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4"))
    }
}

fn raw(cmd: i32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a zero-padded buffer at least as large as every command's struct.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf(cmd: i32, attr: &mut Attr, what: &'static str) -> Result<i64> {
    raw(cmd, attr).map_err(|source| Error::Sys { what, source })
}

fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new fd that we own.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// Ids of the device programs attached to a cgroup (`flags` 0), or in effect on it
/// (`BPF_F_QUERY_EFFECTIVE`), and the flags they were attached with.
fn query(cg: &OwnedFd, flags: u32) -> Result<(Vec<u32>, u32)> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new();
    a.u32(0, cg.as_raw_fd() as u32)
        .u32(4, BPF_CGROUP_DEVICE)
        .u32(8, flags)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut a, "query attached device programs")?;
    let n = (a.get_u32(24) as usize).min(ids.len());
    Ok((ids[..n].to_vec(), a.get_u32(12)))
}

/// How many device programs are attached to the cgroup `dir` itself, and how many are
/// in effect on it (its own and its ancestors'): more in effect than its own means an
/// ancestor's program must allow a device too.
pub fn program_counts(dir: &Path) -> Result<(usize, usize)> {
    let cg = open_cgroup(dir)?;
    let (own, _) = query(&cg, 0)?;
    let (effective, _) = query(&cg, BPF_F_QUERY_EFFECTIVE)?;
    Ok((own.len(), effective.len()))
}

/// Attaches `prog` to the cgroup `dir` beside what is there (`BPF_F_ALLOW_MULTI`), as
/// systemd attaches its own: tests use it to stand in for an engine's or systemd's
/// program on a parent cgroup.
pub fn attach_multi(dir: &Path, prog: &OwnedFd) -> Result<()> {
    let cg = open_cgroup(dir)?;
    let mut a = Attr::new();
    a.u32(0, cg.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut a, "attach device program").map(drop)
}

fn open_cgroup(dir: &Path) -> Result<OwnedFd> {
    crate::common::sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|source| Error::Sys {
        what: "open cgroup",
        source,
    })
}

fn prog_fd(id: u32) -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, id);
    Ok(fd_of(bpf(
        BPF_PROG_GET_FD_BY_ID,
        &mut a,
        "open device program",
    )?))
}

/// The program's instructions as the kernel holds them (for device programs, the
/// same as loaded: no context rewriting or maps).
fn dump(prog: &OwnedFd) -> Result<Vec<Insn>> {
    // runc's programs are a few dozen instructions.
    program_of(prog, 256)
        .map(|p| p.insns)
        .map_err(|source| Error::Sys {
            what: if source.raw_os_error() == Some(libc::EPERM) {
                "read device program (no instructions visible; is the hook root?)"
            } else {
                "dump device program"
            },
            source,
        })
}

/// What the kernel tells of a loaded program.
#[derive(Debug)]
pub struct Program {
    pub kind: u32,
    /// `bpf_prog_info.name`, NUL-padded.
    pub name: [u8; 16],
    /// Non-zero when it was loaded with BTF (what an `freplace` extension needs of its
    /// target: a program without BTF cannot have its code replaced behind its dump).
    pub btf_id: u32,
    pub nr_func_info: u32,
    pub insns: Vec<Insn>,
}

/// A loaded program as the kernel holds it: one call when the program has at most
/// `expect` instructions (the usual case, as the caller knows what it looks for), two
/// otherwise.
pub fn program_of(prog: &OwnedFd, expect: usize) -> io::Result<Program> {
    let mut insns = vec![Insn::default(); expect];
    loop {
        let mut info = [0u8; 256];
        info[20..24].copy_from_slice(&((insns.len() * 8) as u32).to_ne_bytes());
        info[32..40].copy_from_slice(&(insns.as_mut_ptr() as u64).to_ne_bytes());
        let mut a = Attr::new();
        a.u32(0, prog.as_raw_fd() as u32)
            .u32(4, info.len() as u32)
            .u64(8, info.as_mut_ptr() as u64);
        raw(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4"));
        let len = u32_at(20) as usize;
        if len == 0 || len % 8 != 0 || len > 1 << 20 {
            // No instructions shown: the caller lacks CAP_SYS_ADMIN (or the kernel hides them).
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if len / 8 <= insns.len() {
            insns.truncate(len / 8);
            return Ok(Program {
                kind: u32_at(0),
                name: info[64..80].try_into().expect("16"),
                btf_id: u32_at(128),
                nr_func_info: u32_at(144),
                insns,
            });
        }
        insns = vec![Insn::default(); len / 8];
    }
}

/// `BPF_OBJ_GET`: the object pinned at `path`.
pub fn obj_get(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u64(0, path.as_ptr() as u64);
    raw(BPF_OBJ_GET, &mut a).map(fd_of)
}

/// `BPF_OBJ_PIN`: pins `prog` at `path` (on bpffs).
pub fn obj_pin(prog: &OwnedFd, path: &std::ffi::CStr) -> io::Result<()> {
    let mut a = Attr::new();
    a.u64(0, path.as_ptr() as u64)
        .u32(8, prog.as_raw_fd() as u32);
    raw(BPF_OBJ_PIN, &mut a).map(drop)
}

/// The name nvhook's device programs are loaded with (`bpf_prog_info.name`).
pub const PROGRAM_NAME: [u8; 16] = *b"nvhook_dev\0\0\0\0\0\0";

/// Loads a device program (the verifier checks it, the JIT compiles it).
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    // Without a log first: the verifier's log at level 1 costs it about 1.4 ms more
    // for this program (it prints every instruction it walks). Only a program it
    // refuses is loaded again with the log, for the message.
    match load_with_log(insns, None) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let mut log = vec![0u8; 65536];
            match load_with_log(insns, Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let end = log.iter().position(|&c| c == 0).unwrap_or(0);
                    if end > 0 {
                        // The reason is the last line before the verifier's statistics.
                        let text = String::from_utf8_lossy(&log[..end]);
                        let reason = text
                            .lines()
                            .rev()
                            .map(str::trim)
                            .find(|l| !l.is_empty() && !l.starts_with("processed "))
                            .unwrap_or("");
                        Err(Error::Verifier(format!("{e}; verifier: {reason}")))
                    } else {
                        Err(e)
                    }
                }
            }
        }
    }
}

fn load_with_log(insns: &[Insn], log: Option<&mut [u8]>) -> Result<OwnedFd> {
    let license = c"Apache";
    let name = &PROGRAM_NAME;
    let mut a = Attr::new();
    a.u32(0, PROG_TYPE_CGROUP_DEVICE)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    if let Some(log) = log {
        a.u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64);
    }
    a.0[48..48 + name.len()].copy_from_slice(name);
    bpf(BPF_PROG_LOAD, &mut a, "load device program").map(fd_of)
}

/// Extends every device program attached to cgroup `dir` so the rules' devices are
/// allowed. With no program attached, the cgroup allows every device already. `loader`
/// gives the loaded program for a list of instructions: `load` itself, or one that looks
/// in the device program cache first (`bpf_cache::load_cached`).
pub fn allow_devices(
    dir: &Path,
    rules: &[CgroupRule],
    loader: &mut dyn FnMut(&[Insn]) -> Result<OwnedFd>,
) -> Result<()> {
    let cg = open_cgroup(dir)?;
    let (ids, attach_flags) = query(&cg, 0)?;
    for id in ids {
        let old = prog_fd(id)?;
        let original = dump(&old)?;
        let insns = extend(rules, &original, id)?;
        let new = loader(&insns)?;
        let mut a = Attr::new();
        a.u32(0, cg.as_raw_fd() as u32)
            .u32(4, new.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        if attach_flags & BPF_F_ALLOW_MULTI != 0 {
            // Swap exactly the old program for the new one, atomically.
            a.u32(12, BPF_F_ALLOW_MULTI | BPF_F_REPLACE)
                .u32(16, old.as_raw_fd() as u32);
        } else {
            // A single program (attached without ALLOW_MULTI) is replaced by attaching
            // another with the same flags.
            a.u32(12, attach_flags);
        }
        bpf(BPF_PROG_ATTACH, &mut a, "replace device program")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DeviceAccess;

    #[test]
    fn rule_shape() {
        let r = allow_rules(&[(195, 3), (508, 0)]);
        assert_eq!(r.len(), 9 + 2 * 4);
        // the type and access checks jump exactly past the block
        for i in [2usize, 6] {
            assert_eq!(r[i].code, JNE_K);
            assert_eq!(i as i16 + 1 + r[i].off, r.len() as i16);
        }
        // each device: major, minor, allow, exit; a mismatch jumps to the next device
        for (d, (major, minor)) in [(195, 3), (508, 0)].iter().enumerate() {
            let b = 9 + 4 * d;
            assert_eq!((r[b].code, r[b].regs, r[b].imm), (JNE_K, 4, *major));
            assert_eq!(
                (r[b + 1].code, r[b + 1].regs, r[b + 1].imm),
                (JNE_K, 5, *minor)
            );
            assert_eq!(b as i16 + 1 + r[b].off, b as i16 + 4);
            assert_eq!(b as i16 + 2 + r[b + 1].off, b as i16 + 4);
            assert_eq!((r[b + 2].code, r[b + 2].imm), (MOV64_K, 1));
            assert_eq!(r[b + 3].code, EXIT);
        }
        // loads carry their context offset in `off` and nothing in `imm`
        for (i, off) in [(0, 0), (3, 0), (7, 4), (8, 8)] {
            assert_eq!(r[i].code, LDX_W);
            assert_eq!((r[i].off, r[i].imm), (off, 0));
        }
        assert_eq!(r[0].regs, 0x12); // dst r2, src r1
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert!(allow_rules(&[]).is_empty());
    }

    #[test]
    fn the_rules_load_before_a_real_program() {
        // Needs root (CAP_BPF), as every test here does (scripts/test.sh). The rules
        // followed by a deny-all program: the verifier takes them.
        let deny = [insn(MOV64_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
        let rules = [
            CgroupRule {
                kind: DeviceKind::Char,
                major: 195,
                minor: 255,
                access: DeviceAccess::ReadWrite,
            },
            CgroupRule {
                kind: DeviceKind::Char,
                major: 195,
                minor: 0,
                access: DeviceAccess::ReadWrite,
            },
        ];
        let prog = extend(&rules, &deny, 1).unwrap();
        load(&prog).expect("the extended program loads");
    }

    #[test]
    fn loads_without_log_and_names_the_verifiers_reason() {
        // Needs root (CAP_BPF), as every test here does (scripts/test.sh).
        let ok = [insn(MOV64_K, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)];
        load(&ok).expect("a valid device program loads");
        // r0 never written: the verifier refuses; the reload with its log says why
        let bad = [insn(EXIT, 0, 0, 0, 0)];
        match load(&bad) {
            Err(Error::Verifier(m)) => assert!(m.ends_with("verifier: R0 !read_ok"), "{m}"),
            other => panic!("expected the verifier's reason, got {other:?}"),
        }
    }

    #[test]
    fn extend_prepends_and_refuses_maps() {
        let rules = [CgroupRule {
            kind: DeviceKind::Char,
            major: 195,
            minor: 0,
            access: DeviceAccess::ReadWrite,
        }];
        let orig = [insn(MOV64_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
        let e = extend(&rules, &orig, 1).unwrap();
        assert_eq!(e.len(), 15);
        assert_eq!(&e[13..], &orig);
        let with_map = [insn(LD_IMM64, 1, 1, 0, 5), Insn::default()];
        assert!(extend(&rules, &with_map, 1).is_err());
    }
}
