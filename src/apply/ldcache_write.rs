//! Writes glibc's `ld.so.cache` (the `glibc-ld.so.cache1.1` format, which every glibc
//! since 2.3 reads, alone or after the old table): nvhook adds the driver's entries to
//! a container's cache itself instead of running ldconfig over every library the
//! image has.
//!
//! The loader binary-searches the entries by `_dl_cache_libcmp`, then walks back to
//! the first entry of the name and takes the first one it can use; so entries must be
//! in ldconfig's order exactly: names descending by that comparison, then flags
//! descending, glibc-hwcaps entries first (by subdirectory name), then the more
//! specific legacy hwcap first, and among equal ones the directory ldconfig scanned
//! first. Every other entry of the image's cache is kept as it was: flags, hwcap,
//! osversion, and the glibc-hwcaps subdirectory table its entries index.

use std::cmp::Ordering;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Layout(#[from] crate::host::ldcache::Error),
    #[error("ld.so.cache: truncated ({0})")]
    Truncated(&'static str),
    #[error("ld.so.cache: string offset {0} out of bounds")]
    StringOffset(u32),
    #[error("ld.so.cache: too large ({0} bytes)")]
    TooLarge(usize),
    #[error("ld.so.cache: a name longer than {MAX_NAME} bytes")]
    LongName,
    #[error("ld.so.cache: its names expand past {MAX_EXPANDED} bytes")]
    Expanded,
}

/// The longest key or path an entry may have (glibc's `PATH_MAX`).
pub const MAX_NAME: usize = 4096;
/// The most bytes the names of one cache may add up to once read: strings are shared
/// in the file, so a small crafted file could otherwise name gigabytes.
pub const MAX_EXPANDED: usize = 64 << 20;

pub type Result<T> = std::result::Result<T, Error>;

use crate::host::ldcache::{Layout, NEW_ENTRY, NEW_HEADER, NEW_MAGIC, OLD_ENTRY, OLD_HEADER};
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const TAG_GENERATOR: u32 = 0;
const TAG_GLIBC_HWCAPS: u32 = 1;
/// The hwcap bit that marks a glibc-hwcaps entry; its low 32 bits index the table.
const HWCAP_EXTENSION: u64 = 1 << 62;
/// Header flags byte: little endian (what ldconfig writes on x86).
const FLAGS_LITTLE_ENDIAN: u8 = 2;

/// One entry, with everything the file holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub flags: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub osversion: u32,
    pub hwcap: u64,
}

impl RawEntry {
    /// A plain entry (no hwcap): `key` found at `value`.
    pub fn new(flags: i32, key: &str, value: &str) -> RawEntry {
        RawEntry {
            flags,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            osversion: 0,
            hwcap: 0,
        }
    }

    /// The directory of the value (`/usr/lib` of `/usr/lib/libc.so.6`).
    pub fn dir(&self) -> &[u8] {
        match self.value.iter().rposition(|&c| c == b'/') {
            Some(0) => b"/",
            Some(i) => &self.value[..i],
            None => b"",
        }
    }
}

/// A whole cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cache {
    pub entries: Vec<RawEntry>,
    /// glibc-hwcaps subdirectory names, indexed by those entries' hwcap.
    pub hwcaps: Vec<Vec<u8>>,
}

fn u32_at(b: &[u8], off: usize, what: &'static str) -> Result<u32> {
    b.get(off..off.checked_add(4).ok_or(Error::Truncated(what))?)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or(Error::Truncated(what))
}

fn u64_at(b: &[u8], off: usize, what: &'static str) -> Result<u64> {
    b.get(off..off.checked_add(8).ok_or(Error::Truncated(what))?)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or(Error::Truncated(what))
}

fn str_at(b: &[u8], base: usize, off: u32, budget: &mut usize) -> Result<Vec<u8>> {
    let start = base
        .checked_add(off as usize)
        .filter(|s| *s < b.len())
        .ok_or(Error::StringOffset(off))?;
    let end = b.len().min(start + MAX_NAME + 1);
    let len = b[start..end]
        .iter()
        .position(|&c| c == 0)
        .ok_or(if end - start > MAX_NAME {
            Error::LongName
        } else {
            Error::StringOffset(off)
        })?;
    *budget = budget.checked_sub(len + 1).ok_or(Error::Expanded)?;
    Ok(b[start..start + len].to_vec())
}

/// Reads every entry of a cache in any of its formats (new, old followed by new, old).
pub fn read(b: &[u8]) -> Result<Cache> {
    let (nlibs, old_end) = match crate::host::ldcache::layout(b)? {
        Layout::New { start } => return read_new(b, start),
        Layout::Old { nlibs, strings } => (nlibs, strings),
    };
    let mut c = Cache::default();
    let budget = &mut MAX_EXPANDED.clone();
    for i in 0..nlibs {
        let e = OLD_HEADER + i * OLD_ENTRY;
        c.entries.push(RawEntry {
            flags: u32_at(b, e, "old entry")? as i32,
            key: str_at(b, old_end, u32_at(b, e + 4, "old entry")?, budget)?,
            value: str_at(b, old_end, u32_at(b, e + 8, "old entry")?, budget)?,
            osversion: 0,
            hwcap: 0,
        });
    }
    Ok(c)
}

fn read_new(b: &[u8], start: usize) -> Result<Cache> {
    let nlibs = u32_at(b, start + 20, "new header")? as usize;
    let ext_off = u32_at(b, start + 32, "new header")? as usize;
    if b.len() < start + NEW_HEADER {
        return Err(Error::Truncated("new header"));
    }
    nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(start + NEW_HEADER))
        .filter(|e| *e <= b.len())
        .ok_or(Error::Truncated("new entries"))?;
    let mut c = Cache::default();
    let budget = &mut MAX_EXPANDED.clone();
    for i in 0..nlibs {
        let e = start + NEW_HEADER + i * NEW_ENTRY;
        c.entries.push(RawEntry {
            flags: u32_at(b, e, "new entry")? as i32,
            key: str_at(b, start, u32_at(b, e + 4, "new entry")?, budget)?,
            value: str_at(b, start, u32_at(b, e + 8, "new entry")?, budget)?,
            osversion: u32_at(b, e + 12, "new entry")?,
            hwcap: u64_at(b, e + 16, "new entry")?,
        });
    }
    // Extensions: their offset and the offsets in them are from the start of the file
    // (glibc writes and reads them so, after an old table too).
    if ext_off != 0 && u32_at(b, ext_off, "extension").ok() == Some(EXTENSION_MAGIC) {
        let base = ext_off;
        let count = u32_at(b, base + 4, "extension")? as usize;
        for s in 0..count.min(64) {
            let sec = base + 8 + s * 16;
            let tag = u32_at(b, sec, "extension section")?;
            let off = u32_at(b, sec + 8, "extension section")? as usize;
            let size = u32_at(b, sec + 12, "extension section")? as usize;
            if tag == TAG_GLIBC_HWCAPS {
                for k in 0..(size / 4).min(4096) {
                    let so = u32_at(b, off + 4 * k, "glibc-hwcaps table")?;
                    c.hwcaps.push(str_at(b, 0, so, budget)?);
                }
            }
        }
    }
    Ok(c)
}

/// glibc's `_dl_cache_libcmp`: runs of digits compare as numbers (in a C `int`, as
/// glibc does), a digit sorts after any other character, the rest byte by byte as
/// signed chars.
pub fn libcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    let digit = |c: u8| c.is_ascii_digit();
    while at(a, i) != 0 {
        let (c1, c2) = (at(a, i), at(b, j));
        if digit(c1) {
            if !digit(c2) {
                return Ordering::Greater;
            }
            let mut v1: i32 = 0;
            while digit(at(a, i)) {
                v1 = v1.wrapping_mul(10).wrapping_add((at(a, i) - b'0') as i32);
                i += 1;
            }
            let mut v2: i32 = 0;
            while digit(at(b, j)) {
                v2 = v2.wrapping_mul(10).wrapping_add((at(b, j) - b'0') as i32);
                j += 1;
            }
            let d = v1.wrapping_sub(v2);
            if d != 0 {
                return d.cmp(&0);
            }
        } else if digit(c2) {
            return Ordering::Less;
        } else if c1 != c2 {
            return (c1 as i8 as i32 - c2 as i8 as i32).cmp(&0);
        } else {
            i += 1;
            j += 1;
        }
    }
    (at(a, i) as i8 as i32 - at(b, j) as i8 as i32).cmp(&0)
}

/// ldconfig's entry order (`Less`: `e1` comes first); `Equal` leaves the order to the
/// directories' scan order.
fn compare(hwcaps: &[Vec<u8>], e1: &RawEntry, e2: &RawEntry) -> Ordering {
    let res = libcmp(&e2.key, &e1.key);
    if res != Ordering::Equal {
        return res;
    }
    if e1.flags != e2.flags {
        return e2.flags.cmp(&e1.flags);
    }
    let ext = |e: &RawEntry| e.hwcap & HWCAP_EXTENSION != 0;
    match (ext(e1), ext(e2)) {
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (true, true) => {
            let name = |e: &RawEntry| hwcaps.get((e.hwcap & 0xffff_ffff) as usize);
            let r = name(e1).cmp(&name(e2));
            if r != Ordering::Equal {
                return r;
            }
        }
        (false, false) => {}
    }
    let bits = |e: &RawEntry| e.hwcap.count_ones();
    bits(e2)
        .cmp(&bits(e1))
        .then(e2.hwcap.cmp(&e1.hwcap))
        .then(e2.osversion.cmp(&e1.osversion))
}

/// A stable merge sort that never panics, whatever `cmp` says. glibc's comparison
/// (`libcmp`, copied for the loader's sake) wraps its digit arithmetic, so on names
/// such as `lib3000000000.so` it is not a total order, and the standard library's sort
/// may panic on such a comparison ("does not correctly implement a total order"): an
/// image's names must not be able to abort the hook. Here any answer gives some
/// permutation, the loader's own order wherever the comparison is sane.
pub fn merge_sort<T>(v: &mut Vec<T>, cmp: &dyn Fn(&T, &T) -> Ordering) {
    if v.len() < 2 {
        return;
    }
    let mut right = v.split_off(v.len() / 2);
    merge_sort(v, cmp);
    merge_sort(&mut right, cmp);
    let left = std::mem::take(v);
    v.reserve(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
        // stable: the left one first unless the right one is strictly less
        let next = if cmp(b, a) == Ordering::Less {
            r.next()
        } else {
            l.next()
        };
        v.extend(next);
    }
    v.extend(l);
    v.extend(r);
}

/// The string table (each string where it is used: the loader needs no sharing).
struct Strings {
    buf: Vec<u8>,
    base: usize,
}

impl Strings {
    fn add(&mut self, s: &[u8]) -> u32 {
        let o = (self.base + self.buf.len()) as u32;
        self.buf.extend_from_slice(s);
        self.buf.push(0);
        o
    }
}

impl Cache {
    /// Adds `new` entries where ldconfig would have put them. `rank` is a directory's
    /// place in ldconfig's scan (lower first); among entries otherwise equal, one
    /// goes after every entry of a directory ranked no later. An existing entry equal
    /// to a new one in key, flags and value is replaced by it. Entries of a directory
    /// in `rescanned` are dropped first: the caller scanned it again and gives all of
    /// them.
    pub fn merge(
        &mut self,
        new: Vec<RawEntry>,
        rescanned: &[&[u8]],
        rank: &dyn Fn(&[u8]) -> usize,
    ) {
        use std::collections::HashSet;
        let mut seen = HashSet::new();
        let new: Vec<RawEntry> = new
            .into_iter()
            .filter(|n| seen.insert((n.key.clone(), n.flags, n.value.clone())))
            .collect();
        {
            // Hash sets, so the cost is old + new entries, not old x new (a 16 MiB image
            // cache against 4096 compat names took seconds with a scan per entry).
            let news: HashSet<(&[u8], i32, &[u8])> = new
                .iter()
                .map(|n| (&n.key[..], n.flags, &n.value[..]))
                .collect();
            let rescanned: HashSet<&[u8]> = rescanned.iter().copied().collect();
            // An existing entry of a new entry's name, kind and path is replaced by it.
            self.entries.retain(|e| {
                !rescanned.contains(e.dir()) && !news.contains(&(&e.key[..], e.flags, &e.value[..]))
            });
        }
        // ldconfig's order, then its scan order (the directories it is given first),
        // then the order entries came in (the image's own, then nvhook's). An image
        // cache in that order already (the usual case) takes the new entries by one
        // linear merge; one out of order is sorted whole.
        let key = |e: &RawEntry| rank(e.dir());
        let hwcaps = std::mem::take(&mut self.hwcaps);
        let order = |a: &RawEntry, ra: usize, b: &RawEntry, rb: usize| {
            compare(&hwcaps, a, b).then(ra.cmp(&rb))
        };
        let old: Vec<(usize, RawEntry)> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| (key(&e), e))
            .collect();
        let mut added: Vec<(usize, RawEntry)> = new.into_iter().map(|e| (key(&e), e)).collect();
        merge_sort(&mut added, &|(ra, a), (rb, b)| order(a, *ra, b, *rb));
        let in_order = old
            .windows(2)
            .all(|w| order(&w[0].1, w[0].0, &w[1].1, w[1].0) != Ordering::Greater);
        let mut out: Vec<(usize, RawEntry)> = Vec::with_capacity(old.len() + added.len());
        if in_order {
            let mut a = added.into_iter().peekable();
            for o in old {
                while let Some(n) = a.next_if(|n| order(&n.1, n.0, &o.1, o.0) == Ordering::Less) {
                    out.push(n);
                }
                out.push(o);
            }
            out.extend(a);
        } else {
            out = old;
            out.extend(added);
            merge_sort(&mut out, &|(ra, a), (rb, b)| order(a, *ra, b, *rb));
        }
        self.entries = out.into_iter().map(|(_, e)| e).collect();
        self.hwcaps = hwcaps;
    }

    /// The cache file, new format alone; `generator` names the writer.
    pub fn to_bytes(&self, generator: &str) -> Result<Vec<u8>> {
        let base = NEW_HEADER + self.entries.len() * NEW_ENTRY;
        let mut st = Strings {
            buf: Vec::with_capacity(self.entries.len() * 64),
            base,
        };
        let offs: Vec<(u32, u32)> = self
            .entries
            .iter()
            .map(|e| (st.add(&e.key), st.add(&e.value)))
            .collect();
        let used_hwcaps = self.entries.iter().any(|e| e.hwcap & HWCAP_EXTENSION != 0);
        let hwcap_offs: Vec<u32> = if used_hwcaps {
            self.hwcaps.iter().map(|h| st.add(h)).collect()
        } else {
            Vec::new()
        };
        let strings = st.buf;
        let total = base + strings.len() + 64 + hwcap_offs.len() * 4 + generator.len();
        if total > MAX_EXPANDED * 2 {
            return Err(Error::TooLarge(total));
        }
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(NEW_MAGIC);
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.push(FLAGS_LITTLE_ENDIAN);
        b.extend_from_slice(&[0; 3]);
        let ext_at = (base + strings.len()).div_ceil(4) * 4;
        b.extend_from_slice(&(ext_at as u32).to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        for (e, (k, v)) in self.entries.iter().zip(offs) {
            b.extend_from_slice(&e.flags.to_le_bytes());
            b.extend_from_slice(&k.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
            b.extend_from_slice(&e.osversion.to_le_bytes());
            b.extend_from_slice(&e.hwcap.to_le_bytes());
        }
        b.extend_from_slice(&strings);
        b.resize(ext_at, 0);
        // The extension: the generator, then the glibc-hwcaps table where it is used.
        let sections = 1 + used_hwcaps as usize;
        let data = ext_at + 8 + 16 * sections;
        let hw_size = hwcap_offs.len() * 4;
        b.extend_from_slice(&EXTENSION_MAGIC.to_le_bytes());
        b.extend_from_slice(&(sections as u32).to_le_bytes());
        for (tag, off, size) in [
            (TAG_GENERATOR, data + hw_size, generator.len()),
            (TAG_GLIBC_HWCAPS, data, hw_size),
        ]
        .into_iter()
        .take(sections)
        {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&(off as u32).to_le_bytes());
            b.extend_from_slice(&(size as u32).to_le_bytes());
        }
        for o in hwcap_offs {
            b.extend_from_slice(&o.to_le_bytes());
        }
        b.extend_from_slice(generator.as_bytes());
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ldcache::{FLAGS_I386, FLAGS_NATIVE};

    #[test]
    fn libcmp_is_glibcs() {
        use Ordering::*;
        for (a, b, want) in [
            ("libc.so.6", "libc.so.6", Equal),
            ("libfoo.so.10", "libfoo.so.9", Greater),
            ("libfoo.so.1.10", "libfoo.so.1.9", Greater),
            ("libfoo.so.01", "libfoo.so.1", Equal),
            ("libfoo.so", "libfoo.so.1", Less),
            ("libfoo1.so", "libfoo.so", Greater), // a digit sorts after '.'
            ("liba.so", "libb.so", Less),
            ("libé.so", "libz.so", Less), // signed chars: 0xc3 < 'z'
        ] {
            assert_eq!(libcmp(a.as_bytes(), b.as_bytes()), want, "{a} vs {b}");
        }
    }

    #[test]
    fn round_trip_and_order() {
        let mut c = Cache::default();
        c.merge(
            vec![
                RawEntry::new(FLAGS_NATIVE, "libc.so.6", "/lib/libc.so.6"),
                RawEntry::new(FLAGS_I386, "libcuda.so.1", "/usr/lib32/libcuda.so.1"),
                RawEntry::new(FLAGS_NATIVE, "libcuda.so.1", "/usr/lib/libcuda.so.1"),
                RawEntry::new(FLAGS_NATIVE, "libz.so.1", "/lib/libz.so.1"),
            ],
            &[],
            &|_| 0,
        );
        let keys: Vec<(&[u8], i32)> = c.entries.iter().map(|e| (&e.key[..], e.flags)).collect();
        assert_eq!(
            keys,
            [
                (&b"libz.so.1"[..], FLAGS_NATIVE),
                (b"libcuda.so.1", FLAGS_NATIVE),
                (b"libcuda.so.1", FLAGS_I386),
                (b"libc.so.6", FLAGS_NATIVE),
            ]
        );
        let b = c.to_bytes("test").unwrap();
        assert_eq!(read(&b).unwrap(), c);
        // the reader nvhook's discovery uses agrees (on arm64 it passes over the i386
        // entry: no loader there uses one)
        let served = if crate::common::arch::NATIVE.compat32.is_some() {
            4
        } else {
            3
        };
        assert_eq!(crate::host::ldcache::parse(&b).unwrap().len(), served);
    }

    #[test]
    fn an_image_cache_out_of_order_comes_out_in_order() {
        let mut sorted = Cache::default();
        let all = vec![
            RawEntry::new(FLAGS_NATIVE, "libz.so.1", "/lib/libz.so.1"),
            RawEntry::new(FLAGS_NATIVE, "libm.so.6", "/lib/libm.so.6"),
            RawEntry::new(FLAGS_I386, "libm.so.6", "/lib32/libm.so.6"),
            RawEntry::new(FLAGS_NATIVE, "libc.so.6", "/lib/libc.so.6"),
        ];
        sorted.merge(all.clone(), &[], &|_| 0);
        let mut shuffled = Cache {
            entries: all.into_iter().rev().collect(),
            ..Default::default()
        };
        shuffled.merge(vec![], &[], &|_| 0);
        assert_eq!(shuffled, sorted);
    }

    /// Names whose digit runs overflow glibc's `int` make its comparison non-transitive;
    /// the standard library's sort panicked on a shuffled cache of them (and a panic
    /// aborts the hook). Every shuffle merges without a panic, keeps every entry, and
    /// the sane names still come out in the loader's order.
    #[test]
    fn hostile_names_never_panic_the_merge() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Numbers all over 0..2^32: glibc's int wraps, and the comparison has cycles.
        // The standard sort's checks fire on some sizes only: several are tried.
        for n in [20usize, 33, 40, 50, 64, 100, 300] {
            for _ in 0..40 {
                let mut names: Vec<String> = (0..n)
                    .map(|i| {
                        if i % 10 == 0 {
                            format!("libsane{i}.so.1")
                        } else {
                            format!("lib{}.so", next() % 4_294_967_296)
                        }
                    })
                    .collect();
                names.push("lib3000000000.so".into());
                let entries: Vec<RawEntry> = names
                    .iter()
                    .map(|n| RawEntry::new(FLAGS_NATIVE, n, &format!("/lib/{n}")))
                    .collect();
                let mut c = Cache {
                    entries: entries.clone(),
                    ..Default::default()
                };
                c.merge(entries[..3].to_vec(), &[], &|_| 0);
                assert_eq!(c.entries.len(), names.len());
                let sane: Vec<&[u8]> = c
                    .entries
                    .iter()
                    .map(|e| &e.key[..])
                    .filter(|k| k.starts_with(b"libsane"))
                    .collect();
                let mut want = sane.clone();
                want.sort_by(|a, b| libcmp(b, a));
                assert_eq!(sane, want);
            }
        }
        // a comparison that answers at random still gives a permutation
        let mut v: Vec<u32> = (0..1000).collect();
        let state = std::cell::Cell::new(7u64);
        merge_sort(&mut v, &|_, _| {
            let x = state
                .get()
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
            state.set(x);
            [Ordering::Less, Ordering::Equal, Ordering::Greater][(x >> 62) as usize % 3]
        });
        v.sort();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn equal_entries_follow_the_scan_order() {
        let mut c = Cache {
            entries: vec![RawEntry::new(FLAGS_NATIVE, "libx.so.1", "/opt/b/libx.so.1")],
            ..Default::default()
        };
        let rank = |d: &[u8]| match d {
            b"/opt/a" => 0,
            b"/opt/c" => 1,
            _ => usize::MAX,
        };
        c.merge(
            vec![
                RawEntry::new(FLAGS_NATIVE, "libx.so.1", "/opt/c/libx.so.1"),
                RawEntry::new(FLAGS_NATIVE, "libx.so.1", "/opt/a/libx.so.1"),
            ],
            &[],
            &rank,
        );
        let vals: Vec<&[u8]> = c.entries.iter().map(|e| &e.value[..]).collect();
        assert_eq!(
            vals,
            [
                &b"/opt/a/libx.so.1"[..],
                b"/opt/c/libx.so.1",
                b"/opt/b/libx.so.1"
            ]
        );
        // again: nothing doubles
        let before = c.clone();
        c.merge(
            vec![RawEntry::new(FLAGS_NATIVE, "libx.so.1", "/opt/a/libx.so.1")],
            &[],
            &rank,
        );
        assert_eq!(c, before);
        // a rescanned directory's old entries go
        c.merge(vec![], &[b"/opt/c"], &rank);
        assert_eq!(c.entries.len(), 2);
    }

    #[test]
    fn bad_input_is_error_not_panic() {
        assert_eq!(
            read(b"junk"),
            Err(Error::Layout(crate::host::ldcache::Error::Magic))
        );
        let mut c = Cache::default();
        c.merge(vec![RawEntry::new(FLAGS_NATIVE, "a", "/b/a")], &[], &|_| 0);
        let b = c.to_bytes("g").unwrap();
        for n in 0..b.len() {
            let _ = read(&b[..n]);
        }
    }
}
