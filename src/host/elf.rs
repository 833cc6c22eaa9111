//! The little of ELF that writing a loader cache needs: a shared library's `DT_SONAME`,
//! read the way ldconfig reads it (program headers, the dynamic segment, the string
//! table it points at), from 64- and 32-bit little-endian files. Files are the host
//! driver's and, in the directories nvhook scans, the image's: every offset and count
//! is checked, and a bad file gives `None`, never a panic.

use crate::common::arch::NATIVE;
use crate::host::ldcache::Arch;
use std::os::unix::fs::FileExt;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const ET_DYN: u16 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
/// No more program headers or dynamic entries than this are read.
const LIMIT: usize = 4096;

struct Reader<'a, F: FileExt> {
    f: &'a F,
}

impl<F: FileExt> Reader<'_, F> {
    fn bytes(&self, off: u64, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.f.read_exact_at(&mut b, off).ok()?;
        Some(b)
    }
    fn word(b: &[u8], at: usize, wide: bool) -> Option<u64> {
        if wide {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        } else {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
        }
    }
    fn half(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
}

/// A program header: (type, file offset, virtual address, file size).
type Phdr = (u32, u64, u64, u64);

/// The first bytes of a file read once, the rest read through.
struct Prefixed<'a, F: FileExt> {
    f: &'a F,
    head: Vec<u8>,
    /// The whole file is in `head`.
    eof: bool,
}

impl<'a, F: FileExt> Prefixed<'a, F> {
    const LEN: usize = 32 << 10;

    fn new(f: &'a F) -> Prefixed<'a, F> {
        let mut head = vec![0u8; Self::LEN];
        let mut n = 0;
        let mut eof = false;
        while n < head.len() {
            match f.read_at(&mut head[n..], n as u64) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // the rest is read from the file (which reports its error there)
                Err(_) => break,
            }
        }
        head.truncate(n);
        Prefixed { f, head, eof }
    }
}

impl<F: FileExt> FileExt for Prefixed<'_, F> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match usize::try_from(offset) {
            Ok(o) if o < self.head.len() => {
                let n = buf.len().min(self.head.len() - o);
                buf[..n].copy_from_slice(&self.head[o..o + n]);
                Ok(n)
            }
            // past a short file's end: its end
            Ok(_) if self.eof => Ok(0),
            _ => self.f.read_at(buf, offset),
        }
    }

    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    }
}

/// What a loader cache records of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The cache's flags for its kind: x86-64, i386 or x32 glibc.
    pub flags: i32,
    pub soname: Option<String>,
}

/// The kind and `DT_SONAME` of ELF file `f`; `None` when it is not an ELF file of a
/// kind this architecture's loader cache lists.
pub fn info<F: FileExt>(f: &F) -> Option<Info> {
    // One read of the file's start serves the headers, the dynamic segment and its
    // strings of a small library; what lies beyond is read where it is.
    let f = &Prefixed::new(f);
    let mut head = [0u8; 20];
    f.read_exact_at(&mut head, 0).ok()?;
    if &head[..4] != b"\x7fELF" || head[5] != 1 {
        return None;
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    // ldconfig lists shared objects only
    if u16::from_le_bytes([head[16], head[17]]) != ET_DYN {
        return None;
    }
    let dynamic = dynamic_names(f)?;
    // As ldconfig: an x86-64 library is glibc's by its class alone; a 32-bit one by
    // needing (or being) a known C library, else it is a plain ELF library.
    let known = |n: &str| match n {
        "libc.so.6" | "libm.so.6" => 0x0003,
        "libc.so.5" | "libm.so.5" => 0x0002,
        _ => 0,
    };
    let libc_kind = dynamic
        .needed
        .iter()
        .chain(dynamic.soname.iter())
        .map(|n| known(n))
        .find(|k| *k != 0)
        .unwrap_or(0x0001);
    // Only the kinds this architecture's loader runs (`arch_of_header`, and x32 beside
    // x86-64): an x86-64 library on an arm64 host (or the reverse) is no library at all.
    let flags = match arch_of_header(&head) {
        Some(Arch::Native) => crate::host::ldcache::FLAGS_NATIVE,
        Some(Arch::I386) => libc_kind,
        // x32: FLAG_X8664_LIBX32 | FLAG_ELF_LIBC6, as ldconfig has it
        None if NATIVE.compat32.is_some() && (head[4], machine) == (1, 62) => 0x0803,
        None => return None,
    };
    Some(Info {
        flags,
        soname: dynamic.soname,
    })
}

/// The names the dynamic segment gives.
struct Dynamic {
    soname: Option<String>,
    needed: Vec<String>,
}

fn dynamic_names<F: FileExt>(f: &F) -> Option<Dynamic> {
    let (wide, phdrs) = program_headers(f)?;
    let &(_, dyn_off, _, dyn_size) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC)?;
    let DynamicEntries {
        strtab,
        soname,
        needed,
    } = dynamic_entries(f, dyn_off, dyn_size, wide)?;
    let none = Dynamic {
        soname: None,
        needed: Vec::new(),
    };
    // DT_STRTAB is an address: the load segment holding it gives its file offset.
    let Some(base) = strtab.and_then(|strtab| {
        phdrs
            .iter()
            .filter(|p| p.0 == PT_LOAD)
            .find(|p| strtab >= p.2 && strtab - p.2 < p.3)
            .and_then(|p| p.1.checked_add(strtab - p.2))
    }) else {
        return Some(none);
    };
    Some(Dynamic {
        soname: soname.and_then(|o| string_at(f, base.checked_add(o)?)),
        needed: needed
            .into_iter()
            .filter_map(|o| string_at(f, base.checked_add(o)?))
            .collect(),
    })
}

/// Whether the file is 64-bit, and its program headers (type, offset, address, size;
/// at most `LIMIT`), from a little-endian ELF header.
fn program_headers<F: FileExt>(f: &F) -> Option<(bool, Vec<Phdr>)> {
    let head = {
        let mut b = [0u8; 64];
        f.read_exact_at(&mut b[..52], 0).ok()?;
        let _ = f.read_at(&mut b[52..], 52);
        b
    };
    if &head[..4] != b"\x7fELF" || head[5] != 1 {
        return None;
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (
            Reader::<F>::word(&head, 32, true)?,
            Reader::<F>::half(&head, 54)?,
            Reader::<F>::half(&head, 56)?,
        )
    } else {
        (
            Reader::<F>::word(&head, 28, false)?,
            Reader::<F>::half(&head, 42)?,
            Reader::<F>::half(&head, 44)?,
        )
    };
    let (phentsize, phnum) = (phentsize as usize, (phnum as usize).min(LIMIT));
    if phentsize != if wide { 56 } else { 32 } {
        return None;
    }
    let table = Reader { f }.bytes(phoff, phentsize.checked_mul(phnum)?)?;
    let (off, addr, size) = if wide { (8, 16, 32) } else { (4, 8, 16) };
    let phdrs = (0..phnum)
        .filter_map(|i| {
            let p = &table[i * phentsize..(i + 1) * phentsize];
            Some((
                Reader::<F>::u32(p, 0)?,
                Reader::<F>::word(p, off, wide)?,
                Reader::<F>::word(p, addr, wide)?,
                Reader::<F>::word(p, size, wide)?,
            ))
        })
        .collect();
    Some((wide, phdrs))
}

/// What the dynamic segment holds that names are read from, up to `DT_NULL`.
struct DynamicEntries {
    /// The string table's address (`DT_STRTAB`).
    strtab: Option<u64>,
    /// `DT_SONAME`'s offset in it.
    soname: Option<u64>,
    /// `DT_NEEDED` offsets, at most 64.
    needed: Vec<u64>,
}

fn dynamic_entries<F: FileExt>(f: &F, off: u64, size: u64, wide: bool) -> Option<DynamicEntries> {
    let ent = if wide { 16 } else { 8 };
    let n = (size as usize / ent).min(LIMIT);
    let dynamic = Reader { f }.bytes(off, n * ent)?;
    let (mut strtab, mut soname, mut needed) = (None, None, Vec::new());
    for i in 0..n {
        let tag = Reader::<F>::word(&dynamic, i * ent, wide)?;
        let val = Reader::<F>::word(&dynamic, i * ent + ent / 2, wide)?;
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_SONAME => soname = Some(val),
            DT_NEEDED if needed.len() < 64 => needed.push(val),
            _ => {}
        }
    }
    Some(DynamicEntries {
        strtab,
        soname,
        needed,
    })
}

/// The NUL-terminated string at file offset `off`.
fn string_at<F: FileExt>(f: &F, off: u64) -> Option<String> {
    let mut name = Vec::new();
    let mut chunk = [0u8; 64];
    while name.len() < LIMIT {
        let got = f
            .read_at(&mut chunk, off.checked_add(name.len() as u64)?)
            .ok()?;
        if got == 0 {
            return None;
        }
        if let Some(end) = chunk[..got].iter().position(|&c| c == 0) {
            name.extend_from_slice(&chunk[..end]);
            return String::from_utf8(name).ok().filter(|s| !s.is_empty());
        }
        name.extend_from_slice(&chunk[..got]);
    }
    None
}

/// The kind of library a loader of this architecture runs that an ELF header is: a
/// native one, or on x86-64 an i386 one; `None` for another architecture's.
pub fn arch_of_header(b: &[u8]) -> Option<Arch> {
    if b.len() < 20 || b[..4] != *b"\x7fELF" || b[5] != 1 {
        return None;
    }
    match (b[4], u16::from_le_bytes([b[18], b[19]])) {
        (2, m) if m == NATIVE.elf_machine => Some(Arch::Native),
        (1, m) if NATIVE.compat32.as_ref().is_some_and(|c| c.elf_machine == m) => Some(Arch::I386),
        _ => None,
    }
}

/// True when the first bytes of a file are an ELF header of a 64-bit little-endian
/// executable or shared object (`e_type` 2 or 3) for this architecture: what the
/// driver's tools are, and a `#!` wrapper or another architecture's build is not.
pub fn is_elf_executable_header(b: &[u8]) -> bool {
    arch_of_header(b) == Some(Arch::Native) && matches!(u16::from_le_bytes([b[16], b[17]]), 2 | 3)
}

/// True when `elf` is a 64-bit ELF executable with no `PT_INTERP` (statically linked).
pub fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || !is_elf_executable_header(elf) || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8")) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    if phentsize < 4 {
        return false;
    }
    for i in 0..phnum {
        let Some(off) = phoff.checked_add(i * phentsize) else {
            return false;
        };
        let Some(p) = off.checked_add(4).and_then(|end| elf.get(off..end)) else {
            return false;
        };
        if u32::from_le_bytes(p.try_into().expect("4")) == 3 {
            return false; // PT_INTERP
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soname(f: &std::fs::File) -> Option<String> {
        info(f)?.soname
    }

    fn build(dir: &std::path::Path, name: &str, soname: Option<&str>, m32: bool) -> std::fs::File {
        build_with(dir, name, soname, m32, &[])
    }

    fn build_with(
        dir: &std::path::Path,
        name: &str,
        soname: Option<&str>,
        m32: bool,
        extra: &[&str],
    ) -> std::fs::File {
        let src = dir.join("l.c");
        std::fs::write(&src, "int f(void) { return 1; }\n").unwrap();
        let out = dir.join(name);
        let mut cmd = std::process::Command::new(crate::common::arch::test_cc());
        cmd.args(["-shared", "-fPIC", "-o"]).arg(&out).arg(&src);
        if let Some(s) = soname {
            cmd.arg(format!("-Wl,-soname,{s}"));
        }
        if m32 {
            cmd.arg("-m32");
        }
        cmd.args(extra);
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::File::open(out).unwrap()
    }

    #[test]
    fn reads_sonames_of_real_libraries() {
        let d = tempfile::tempdir().unwrap();
        let f = build(d.path(), "libx.so.1.2", Some("libx.so.1"), false);
        assert_eq!(soname(&f).as_deref(), Some("libx.so.1"));
        let f = build(d.path(), "liby.so", None, false);
        assert_eq!(soname(&f), None);
        let libc = std::fs::File::open(format!("{}/libc.so.6", NATIVE.debian_lib_dir)).unwrap();
        assert_eq!(
            info(&libc),
            Some(Info {
                flags: crate::host::ldcache::FLAGS_NATIVE,
                soname: Some("libc.so.6".into())
            })
        );
        if NATIVE.compat32.is_none() {
            return; // no 32-bit libraries to read on this architecture
        }
        // gcc -m32's libraries (lib32gcc, libc6-dev-i386) come from scripts/ci-deps.sh
        let f = build(d.path(), "libz32.so.3.1", Some("libz32.so.3"), true);
        assert_eq!(soname(&f).as_deref(), Some("libz32.so.3"));
        // a 32-bit library is glibc's (as ldconfig flags it) only by needing libc
        assert_eq!(info(&f).unwrap().flags, 0x0001);
        let f = build_with(
            d.path(),
            "libz32c.so.3.1",
            Some("libz32c.so.3"),
            true,
            &["-Wl,--no-as-needed", "-lc"],
        );
        assert_eq!(info(&f).unwrap().flags, crate::host::ldcache::FLAGS_I386);
    }

    #[test]
    fn another_architectures_build_is_neither_library_nor_tool() {
        use crate::common::arch::{AARCH64, X86_64};
        let d = tempfile::tempdir().unwrap();
        drop(build(d.path(), "libx.so.1.2", Some("libx.so.1"), false));
        let mut b = std::fs::read(d.path().join("libx.so.1.2")).unwrap();
        let p = d.path().join("foreign.so");
        std::fs::write(&p, &b).unwrap();
        assert!(info(&std::fs::File::open(&p).unwrap()).is_some());
        assert!(is_elf_executable_header(&b));
        // the same file claiming to be the other 64-bit architecture's
        let other = if NATIVE == X86_64 { &AARCH64 } else { &X86_64 };
        b[18..20].copy_from_slice(&other.elf_machine.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert_eq!(info(&std::fs::File::open(&p).unwrap()), None);
        assert!(!is_elf_executable_header(&b));
    }

    #[test]
    fn garbage_is_none() {
        let d = tempfile::tempdir().unwrap();
        let f = build(d.path(), "libx.so.1.2", Some("libx.so.1"), false);
        let good = std::fs::read(d.path().join("libx.so.1.2")).unwrap();
        for cut in [0, 4, 20, 63, 64, 200, good.len() / 2] {
            let p = d.path().join("cut");
            std::fs::write(&p, &good[..cut.min(good.len())]).unwrap();
            let _ = soname(&std::fs::File::open(&p).unwrap());
        }
        let p = d.path().join("text");
        std::fs::write(&p, "not an elf file at all, just some text to read").unwrap();
        assert_eq!(soname(&std::fs::File::open(&p).unwrap()), None);
        drop(f);
    }
}
