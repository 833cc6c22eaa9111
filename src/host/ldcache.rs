//! A reader for glibc's `ld.so.cache`, so library discovery needs no `ldconfig -p`
//! child process and trusts no output format meant for humans.
//!
//! Formats: the old `ld.so-1.7.0` table optionally followed by the new
//! `glibc-ld.so.cache1.1` table, or the new table alone. The file is outside input:
//! every offset and length is checked, and a bad file is an error, never a panic.

use crate::common::arch::NATIVE;

/// The flags of a glibc library of the architecture nvhook is built for (`0x0303` on
/// x86-64, `0x0a03` on arm64): the entries the container's loader uses.
pub const FLAGS_NATIVE: i32 = NATIVE.cache_flags;
/// `FLAG_ELF_LIBC6`: an i386 glibc library (listed on x86-64 hosts only).
pub const FLAGS_I386: i32 = 0x0003;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("ld.so.cache: unknown format (bad magic)")]
    Magic,
    #[error("ld.so.cache: truncated ({0})")]
    Truncated(&'static str),
    #[error("ld.so.cache: string offset {0} out of bounds")]
    StringOffset(u64),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
pub(crate) const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
pub(crate) const OLD_HEADER: usize = 16; // magic[11] + pad + u32 nlibs
pub(crate) const OLD_ENTRY: usize = 12;
pub(crate) const NEW_HEADER: usize = 48;
pub(crate) const NEW_ENTRY: usize = 24;

/// Where a cache's table is: the new format (alone, or after the old table, at
/// `start`), or the old format alone (`nlibs` entries, strings from `strings`).
pub(crate) enum Layout {
    New { start: usize },
    Old { nlibs: usize, strings: usize },
}

/// Finds the table to read in a cache of any format.
pub(crate) fn layout(b: &[u8]) -> Result<Layout> {
    if b.starts_with(NEW_MAGIC) {
        return Ok(Layout::New { start: 0 });
    }
    if !b.starts_with(OLD_MAGIC) {
        return Err(Error::Magic);
    }
    let nlibs = u32_at(b, 12, "old header")? as usize;
    let old_end = nlibs
        .checked_mul(OLD_ENTRY)
        .and_then(|n| n.checked_add(OLD_HEADER))
        .filter(|e| *e <= b.len())
        .ok_or(Error::Truncated("old entries"))?;
    let new_start = (old_end + 7) & !7;
    if b.get(new_start..).is_some_and(|r| r.starts_with(NEW_MAGIC)) {
        return Ok(Layout::New { start: new_start });
    }
    Ok(Layout::Old {
        nlibs,
        strings: old_end,
    })
}

const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// The kinds of library a loader cache lists that nvhook serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The architecture nvhook is built for (`common::arch::NATIVE`).
    Native,
    /// i386, beside x86-64 (the `compat32` capability).
    I386,
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Arch::Native => NATIVE.name,
            Arch::I386 => "i386",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, normally the SONAME (`libcuda.so.1`).
    pub name: String,
    /// The path ldconfig recorded (`/usr/lib/aarch64-linux-gnu/libcuda.so.1`).
    pub path: String,
    pub arch: Arch,
}

fn u32_at(b: &[u8], off: usize, what: &'static str) -> Result<u32> {
    let s = b
        .get(off..off.checked_add(4).ok_or(Error::Truncated(what))?)
        .ok_or(Error::Truncated(what))?;
    Ok(u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

fn bytes_at(b: &[u8], base: usize, off: u32) -> Result<&[u8]> {
    let start = base
        .checked_add(off as usize)
        .filter(|s| *s < b.len())
        .ok_or(Error::StringOffset(off as u64))?;
    let len = b[start..]
        .iter()
        .position(|&c| c == 0)
        .ok_or(Error::StringOffset(off as u64))?;
    Ok(&b[start..start + len])
}

fn cstr_at(b: &[u8], base: usize, off: u32) -> Result<String> {
    Ok(String::from_utf8_lossy(bytes_at(b, base, off)?).into_owned())
}

fn arch_of(flags: i32) -> Option<Arch> {
    if flags & FLAG_TYPE_MASK != FLAG_ELF_LIBC6 {
        return None;
    }
    match flags & FLAG_REQUIRED_MASK {
        f if f == NATIVE.cache_flags & FLAG_REQUIRED_MASK => Some(Arch::Native),
        0 if NATIVE.compat32.is_some() => Some(Arch::I386),
        _ => None,
    }
}

/// Parses a cache and returns its native (and on x86-64 i386) glibc entries, in file order
/// (ldconfig sorts them so that the preferred entry for a name comes first).
pub fn parse(b: &[u8]) -> Result<Vec<Entry>> {
    parse_matching(b, &|_| true)
}

/// As [`parse`], keeping only entries whose name `keep` accepts, decided before any
/// string is copied (a host cache lists thousands of libraries; nvhook wants a few).
pub fn parse_matching(b: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
    let (nlibs, old_end) = match layout(b)? {
        Layout::New { start } => return parse_new(b, start, keep),
        Layout::Old { nlibs, strings } => (nlibs, strings),
    };
    // Old format alone: strings follow the entries.
    let mut out = Vec::new();
    for i in 0..nlibs {
        let e = OLD_HEADER + i * OLD_ENTRY;
        let flags = u32_at(b, e, "old entry")? as i32;
        let Some(arch) = arch_of(flags) else { continue };
        let name = bytes_at(b, old_end, u32_at(b, e + 4, "old entry")?)?;
        if !std::str::from_utf8(name).is_ok_and(keep) {
            continue;
        }
        out.push(Entry {
            name: String::from_utf8_lossy(name).into_owned(),
            path: cstr_at(b, old_end, u32_at(b, e + 8, "old entry")?)?,
            arch,
        });
    }
    Ok(out)
}

fn parse_new(b: &[u8], start: usize, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
    let hdr = b
        .get(
            start
                ..start
                    .checked_add(NEW_HEADER)
                    .ok_or(Error::Truncated("new header"))?,
        )
        .ok_or(Error::Truncated("new header"))?;
    let nlibs = u32_at(hdr, 20, "new header")? as usize;
    let entries_end = nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(start + NEW_HEADER))
        .filter(|e| *e <= b.len())
        .ok_or(Error::Truncated("new entries"))?;
    let mut out = Vec::with_capacity(nlibs.min(4096));
    let mut e = start + NEW_HEADER;
    while e < entries_end {
        let flags = u32_at(b, e, "new entry")? as i32;
        if let Some(arch) = arch_of(flags) {
            // String offsets are relative to the new header.
            let name = bytes_at(b, start, u32_at(b, e + 4, "new entry")?)?;
            if !std::str::from_utf8(name).is_ok_and(keep) {
                e += NEW_ENTRY;
                continue;
            }
            out.push(Entry {
                name: String::from_utf8_lossy(name).into_owned(),
                path: cstr_at(b, start, u32_at(b, e + 8, "new entry")?)?,
                arch,
            });
        }
        e += NEW_ENTRY;
    }
    Ok(out)
}

/// Builds a cache in the new format; used by tests and fuzzing seeds.
#[doc(hidden)]
pub fn build_new(entries: &[(i32, &str, &str)]) -> Vec<u8> {
    let mut strings = Vec::new();
    let strings_base = NEW_HEADER + entries.len() * NEW_ENTRY;
    let mut offs = Vec::new();
    for (_, k, v) in entries {
        let ko = strings_base + strings.len();
        strings.extend_from_slice(k.as_bytes());
        strings.push(0);
        let vo = strings_base + strings.len();
        strings.extend_from_slice(v.as_bytes());
        strings.push(0);
        offs.push((ko as u32, vo as u32));
    }
    let mut b = Vec::new();
    b.extend_from_slice(NEW_MAGIC);
    b.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
    b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    b.resize(NEW_HEADER, 0);
    for ((flags, _, _), (ko, vo)) in entries.iter().zip(offs) {
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&ko.to_ne_bytes());
        b.extend_from_slice(&vo.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&0u64.to_ne_bytes());
    }
    b.extend_from_slice(&strings);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::common::arch::{AARCH64, X86_64};

    const X64: i32 = FLAGS_NATIVE;
    const I386: i32 = 0x0003;

    #[test]
    fn new_format() {
        let other = if NATIVE == X86_64 { &AARCH64 } else { &X86_64 };
        let b = build_new(&[
            (X64, "libcuda.so.1", "/usr/lib/native/libcuda.so.1"),
            (I386, "libcuda.so.1", "/usr/lib/i386-linux-gnu/libcuda.so.1"),
            (other.cache_flags, "libcuda.so.1", "/x"), // another arch: skipped
            (0x0001, "libc5.so", "/y"),                // not libc6: skipped
            (0x0903, "libarmhf.so", "/z"),             // 32-bit arm: not served
        ]);
        let e = parse(&b).unwrap();
        assert_eq!(e[0].name, "libcuda.so.1");
        assert_eq!(e[0].path, "/usr/lib/native/libcuda.so.1");
        assert_eq!(e[0].arch, Arch::Native);
        // i386 entries only where there is an i386 beside the native arch
        if NATIVE.compat32.is_some() {
            assert_eq!(e.len(), 2);
            assert_eq!(e[1].arch, Arch::I386);
        } else {
            assert_eq!(e.len(), 1, "{e:?}");
        }
    }

    #[test]
    fn arch_names_are_the_kernels() {
        assert_eq!(
            serde_json::to_string(&[Arch::Native, Arch::I386]).unwrap(),
            format!("[\"{}\",\"i386\"]", NATIVE.name)
        );
    }

    #[test]
    fn old_plus_new_format() {
        let new = build_new(&[(X64, "libnvidia-ml.so.1", "/lib/libnvidia-ml.so.1")]);
        let mut b = Vec::new();
        b.extend_from_slice(OLD_MAGIC);
        b.push(0);
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]); // one old entry, ignored
        while b.len() % 8 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&new);
        let e = parse(&b).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "libnvidia-ml.so.1");
    }

    #[test]
    fn bad_input_is_error_not_panic() {
        assert_eq!(parse(b"garbage"), Err(Error::Magic));
        assert!(parse(NEW_MAGIC).is_err());
        let mut b = build_new(&[(X64, "a", "b")]);
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse(&b), Err(Error::StringOffset(u32::MAX as u64)));
        let mut b = build_new(&[(X64, "a", "b")]);
        b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&b).is_err());
        let b = build_new(&[(X64, "a", "b")]);
        let cut = &b[..b.len() - 1]; // last string loses its NUL
        assert!(parse(cut).is_err());
        // every truncation of a valid file is handled
        for n in 0..b.len() {
            let _ = parse(&b[..n]);
        }
    }

    /// Caches written by the host's real ldconfig in each format it can write.
    #[test]
    fn real_ldconfig_formats() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::create_dir_all(t.path().join("lib")).unwrap();
        std::fs::copy(
            format!("{}/libc.so.6", NATIVE.debian_lib_dir),
            t.path().join("lib/libc.so.6"),
        )
        .unwrap();
        std::fs::write(t.path().join("etc/ld.so.conf"), "/lib\n").unwrap();
        for format in ["new", "compat", "old"] {
            let st = std::process::Command::new("/sbin/ldconfig")
                .args(["-c", format, "-r"])
                .arg(t.path())
                .status()
                .unwrap();
            assert!(st.success(), "ldconfig -c {format}");
            let b = std::fs::read(t.path().join("etc/ld.so.cache")).unwrap();
            let magic_old = b.starts_with(OLD_MAGIC);
            assert_eq!(magic_old, format != "new", "{format}");
            let e = parse(&b).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(
                e,
                [Entry {
                    name: "libc.so.6".into(),
                    path: "/lib/libc.so.6".into(),
                    arch: Arch::Native
                }],
                "{format}"
            );
        }
    }

    #[test]
    fn real_host_cache_parses() {
        // The machine running the tests has a glibc cache; it must parse and list libc.
        let Ok(b) = std::fs::read("/etc/ld.so.cache") else {
            panic!("/etc/ld.so.cache missing on the test host")
        };
        let e = parse(&b).unwrap();
        assert!(
            e.iter()
                .any(|e| e.name == "libc.so.6" && e.arch == Arch::Native),
            "{e:?}"
        );
    }
}
