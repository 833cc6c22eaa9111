//! Updates a container's `ld.so.cache` with what nvhook mounted, in place of an
//! ldconfig run: the SONAME links ldconfig would make, the entries it would add, and
//! every entry the image's cache had, kept. No program runs on the container's files;
//! its cost grows with the image only as far as reading its cache and listing the
//! directories it scans (bounded: `MAX_ENTRIES`, `MAX_SCANNED`).
//!
//! What ldconfig would have done, given the mounted libraries' directories on its
//! command line (so scanned first, in that order):
//! - each library file: a link `SONAME -> file` (made where nothing is, a link to
//!   something else replaced, anything else left alone) and the entry `SONAME ->
//!   dir/SONAME`;
//! - each link nvhook made that ldconfig keeps under its own name (`libcuda.so ->
//!   libcuda.so.1`: its name is the SONAME or a `.so` prefix of it): an entry under
//!   that name;
//! - a directory whose set of files nvhook's configuration brings in whole (the CUDA
//!   forward-compatibility dir, newly listed in `/etc/ld.so.conf.d`): scanned like
//!   ldconfig scans one, replacing the cache's entries for it;
//! - a directory where an engine mounted the driver from a CDI spec (the spec's hook
//!   names it): scanned the same way for the driver's library names only.

use crate::apply::ldcache_stale;
use crate::apply::ldcache_write::{self, Cache, RawEntry};
use crate::common::rootfs::{self, Root};
use crate::common::sys;
use crate::host::elf;
use std::collections::HashMap;
use std::os::fd::AsFd;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Root(#[from] rootfs::Error),
    #[error("{path}: {source}")]
    Cache {
        path: String,
        source: ldcache_write::Error,
    },
    #[error("{source} (ld-cache = \"ldconfig\" lets ldconfig rebuild the cache instead)")]
    Unreadable { source: rootfs::Error },
    #[error("{dir} in the container holds more than {max} libraries or entries: too many to scan at a container start (ld-cache = \"ldconfig\" runs ldconfig instead)")]
    TooMany { dir: String, max: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where the cache is, and how large a cache nvhook reads (a real one is a few MiB).
pub const CACHE: &str = ldcache_stale::CACHE;
const CACHE_LIMIT: usize = 16 << 20;

/// A library nvhook mounted: `dir/file` in the container, and what its ELF says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub dir: String,
    pub file: String,
    pub elf: elf::Info,
}

impl Mounted {
    fn soname(&self) -> &str {
        self.elf.soname.as_deref().unwrap_or(&self.file)
    }
}

/// What to update.
pub struct Update<'a> {
    /// The library directories in ldconfig's command-line order (earlier wins a tie).
    pub dirs: &'a [String],
    pub libs: &'a [Mounted],
    /// Links nvhook made (the target a name in the same directory).
    pub links: &'a [crate::plan::Symlink],
    /// Directories to scan whole.
    pub rescan: &'a [String],
    /// Directories to scan for the driver's library names only (where an engine
    /// mounted the driver's files from a CDI spec): their other entries stay.
    pub driver_named: &'a [String],
    /// The image cache, judged before nvhook changed the image
    /// (`ldcache_stale::judge`); `None`: judged here, on the image as it is.
    pub judged: Option<ldcache_stale::Judgement>,
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// ldconfig keeps a link under its own name when that name is the SONAME it points at,
/// or a `.so` name the SONAME starts with (a development link).
fn link_keeps_own_name(name: &str, soname: &str) -> bool {
    name == soname || (name.ends_with(".so") && soname.starts_with(name))
}

/// ldconfig's `_dl_is_dso`: the names it considers in a directory.
fn is_dso(name: &str) -> bool {
    ((name.starts_with("lib") || name.starts_with("ld-")) && name.contains(".so"))
        || name.starts_with("ld.so.")
        || name.starts_with("ld64.so.")
}

/// One candidate of a scanned directory.
struct Candidate {
    name: String,
    soname: String,
    flags: i32,
    is_link: bool,
}

/// The most library names nvhook considers in a directory it scans (the CUDA compat
/// dir holds a handful): a start never costs more than this whatever the image holds.
const MAX_SCANNED: usize = 4096;
/// The most entries of any kind nvhook lists in such a directory (a distribution's
/// library dir holds a few thousand).
const MAX_ENTRIES: usize = 65536;

/// A SONAME nvhook makes a link and an entry for: a plain file name (an ELF can say
/// anything, `../x` or `a/b` included), printable, of a library's shape.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.contains('/')
        && s.chars().all(|c| c.is_ascii_graphic())
        && is_dso(s)
}

/// Scans `dir` in the container the way ldconfig does: every file with a library
/// name, its SONAME from its ELF, one winner per SONAME and kind (a file beats a link,
/// then the greater name), each winner's link made. Returns the entries.
fn scan(root: &mut Root, dir: &str, only: Option<&dyn Fn(&str) -> bool>) -> Result<Vec<RawEntry>> {
    let Some(fd) = root.open_dir(dir)? else {
        // a directory that is not there has nothing in it, as ldconfig sees it
        return Ok(Vec::new());
    };
    let wanted =
        |n: &[u8]| std::str::from_utf8(n).is_ok_and(|n| is_dso(n) && only.is_none_or(|f| f(n)));
    let names = match sys::read_dir(fd.as_fd(), MAX_ENTRIES, &wanted) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
            return Err(Error::TooMany {
                dir: dir.into(),
                max: MAX_ENTRIES,
            })
        }
        Err(source) => {
            return Err(rootfs::Error::Io {
                path: dir.into(),
                what: "read directory",
                source,
            }
            .into())
        }
    };
    let mut chosen: Vec<Candidate> = Vec::new();
    let mut index: HashMap<(String, i32), usize> = HashMap::new();
    let mut considered = 0;
    // Links that lead nowhere yet: a SONAME link made below may be their target
    // (`libcuda.so -> libcuda.so.1`), so they are looked at once more after.
    let mut dangling: Vec<String> = Vec::new();
    for raw in names {
        let Ok(name) = String::from_utf8(raw) else {
            continue;
        };
        considered += 1;
        if considered > MAX_SCANNED {
            return Err(Error::TooMany {
                dir: dir.into(),
                max: MAX_SCANNED,
            });
        }
        if let Some(c) = candidate(root, dir, &name, &mut dangling)? {
            choose(&mut chosen, &mut index, c);
        }
    }
    let mut made_links = false;
    for c in &chosen {
        if !c.is_link && c.name != c.soname {
            made_links |= root.set_link(&join(dir, &c.soname), &c.name)?;
        }
    }
    if made_links {
        for name in std::mem::take(&mut dangling) {
            if let Some(c) = candidate(root, dir, &name, &mut Vec::new())? {
                choose(&mut chosen, &mut index, c);
            }
        }
    }
    Ok(chosen
        .iter()
        .map(|c| RawEntry::new(c.flags, &c.soname, &join(dir, &c.soname)))
        .collect())
}

/// What ldconfig makes of `dir/name`: its SONAME (or, for a link that keeps its own
/// name, that name) and kind; `None` for what it skips. A link that leads nowhere is
/// noted in `dangling`.
fn candidate(
    root: &mut Root,
    dir: &str,
    name: &str,
    dangling: &mut Vec<String>,
) -> Result<Option<Candidate>> {
    let path = join(dir, name);
    let Some((lfd, lst)) = root.stat_nofollow(&path)? else {
        return Ok(None);
    };
    drop(lfd);
    let is_link = lst.st_mode & libc::S_IFMT == libc::S_IFLNK;
    // Followed inside the root; only a regular file is opened at all.
    let file = match root.open_regular(&path, libc::O_RDONLY) {
        Ok(Some((file, _))) => file,
        Ok(None) | Err(_) => {
            if is_link {
                dangling.push(name.to_string());
            }
            return Ok(None);
        }
    };
    let Some(info) = elf::info(&std::fs::File::from(file)) else {
        return Ok(None);
    };
    let mut soname = info.soname.unwrap_or_else(|| name.to_string());
    if !plain_name(&soname) {
        return Ok(None);
    }
    let keeps = is_link && link_keeps_own_name(name, &soname);
    if keeps {
        soname = name.to_string();
    }
    Ok(Some(Candidate {
        name: name.to_string(),
        soname,
        flags: info.flags,
        is_link: keeps,
    }))
}

/// ldconfig's choice among the files of one SONAME and kind in a directory: a file
/// beats a link, then the greater name.
fn choose(chosen: &mut Vec<Candidate>, index: &mut HashMap<(String, i32), usize>, c: Candidate) {
    match index.get(&(c.soname.clone(), c.flags)) {
        Some(&i) => {
            let old = &chosen[i];
            let better = if old.is_link == c.is_link {
                ldcache_write::libcmp(old.name.as_bytes(), c.name.as_bytes()).is_lt()
            } else {
                old.is_link
            };
            if better {
                chosen[i] = c;
            }
        }
        None => {
            index.insert((c.soname.clone(), c.flags), chosen.len());
            chosen.push(c);
        }
    }
}

/// What `refresh_stale` found and scanned.
struct Refreshed {
    /// The cache is rebuilt from scratch.
    whole: bool,
    /// Directories whose entries the new ones replace (nvhook's rescans, stale ones).
    rescanned: Vec<String>,
    /// ldconfig's scan order of the image's directories.
    order: Vec<String>,
}

/// Scans again what an image cache older than its configuration or directories misses
/// (`ldcache_stale`), adding the entries to `new`.
fn refresh_stale(root: &mut Root, u: &Update<'_>, new: &mut Vec<RawEntry>) -> Result<Refreshed> {
    let ldcache_stale::Judgement {
        staleness: stale,
        order,
    } = match &u.judged {
        Some(j) => j.clone(),
        None => ldcache_stale::judge(root, u.dirs),
    };
    let mut rescanned: Vec<String> = u
        .rescan
        .iter()
        .map(|d| d.trim_end_matches('/').to_string())
        .collect();
    if stale != ldcache_stale::Staleness::Current {
        crate::common::log::debug(&format!(
            "{CACHE} in the container is older than what it describes ({stale:?}): scanned again as ldconfig would"
        ));
    }
    let stale_dirs: &[String] = match &stale {
        ldcache_stale::Staleness::Current => &[],
        ldcache_stale::Staleness::Dirs(d) => d,
        ldcache_stale::Staleness::Whole => &order,
    };
    for d in stale_dirs {
        if rescanned.contains(d) {
            continue;
        }
        match scan(root, d, None) {
            Ok(entries) => {
                new.extend(entries);
                rescanned.push(d.clone());
            }
            // Too big to scan at a start: its entries stay as the image had them.
            Err(Error::TooMany { .. }) => crate::common::log::warn(&format!(
                "{d} in the container changed after its {CACHE} was written, and is too big to scan again at a start: its new libraries stay unlisted (ld-cache = \"ldconfig\" rebuilds the cache)"
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(Refreshed {
        whole: stale == ldcache_stale::Staleness::Whole,
        rescanned,
        order,
    })
}

/// Makes the links and writes the cache.
pub fn update(root: &mut Root, u: &Update<'_>) -> Result<()> {
    let mut new = Vec::new();
    for l in u.libs.iter().filter(|l| plain_name(l.soname())) {
        let soname = l.soname();
        if soname != l.file {
            root.set_link(&join(&l.dir, soname), &l.file)?;
        }
        new.push(RawEntry::new(l.elf.flags, soname, &join(&l.dir, soname)));
    }
    for crate::plan::Symlink { path, target } in u.links {
        let Some((dir, name)) = path.rsplit_once('/') else {
            continue;
        };
        let dir = if dir.is_empty() { "/" } else { dir };
        let lib = u
            .libs
            .iter()
            .find(|l| l.dir == dir && (l.file == *target || l.soname() == target));
        if let Some(l) = lib {
            if link_keeps_own_name(name, l.soname()) {
                new.push(RawEntry::new(l.elf.flags, name, path));
            }
        }
    }
    for d in u.rescan {
        new.extend(scan(root, d, None)?);
    }
    for d in u.driver_named {
        new.extend(scan(
            root,
            d,
            Some(&crate::host::driver::may_be_driver_library),
        )?);
    }
    let stale = refresh_stale(root, u, &mut new)?;
    let cache_err = |source| Error::Cache {
        path: CACHE.into(),
        source,
    };
    let bytes = root
        .read_file(CACHE, CACHE_LIMIT)
        .map_err(|source| Error::Unreadable { source })?;
    let mut cache = match bytes.map(|b| ldcache_write::read(&b)) {
        None => Cache::default(),
        Some(Ok(c)) => c,
        // The loader ignores a cache it cannot read, and so the image's own libraries
        // are found only in its default directories already: a new cache with the
        // driver's entries loses nothing.
        Some(Err(e)) => {
            crate::common::log::warn(&format!(
                "{CACHE} in the container is not a loader cache ({e}): replaced by one with the driver's entries"
            ));
            Cache::default()
        }
    };
    if stale.whole {
        // From scratch, as ldconfig: entries of directories it no longer scans go too.
        // Those of glibc-hwcaps subdirectories (which nvhook does not scan) stay.
        cache
            .entries
            .retain(|e| e.dir().windows(14).any(|w| w == b"/glibc-hwcaps/"));
    }
    let rescanned: Vec<&[u8]> = stale.rescanned.iter().map(|d| d.as_bytes()).collect();
    // ldconfig's scan order: its command line, its configuration, its built-in dirs.
    let rank = |d: &[u8]| {
        u.dirs
            .iter()
            .map(|x| x.trim_end_matches('/'))
            .chain(stale.order.iter().map(String::as_str))
            .position(|x| x.as_bytes() == d)
            .unwrap_or(usize::MAX)
    };
    cache.merge(new, &rescanned, &rank);
    let bytes = cache
        .to_bytes(&format!("nvhook {}", crate::VERSION))
        .map_err(cache_err)?;
    root.replace_file(CACHE, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ldconfig_considers() {
        assert!(is_dso("libcuda.so.1"));
        assert!(is_dso("ld-linux-x86-64.so.2"));
        assert!(is_dso("libfoo.so"));
        assert!(!is_dso("foo.so"));
        assert!(!is_dso("libfoo.a"));
        assert!(link_keeps_own_name("libcuda.so", "libcuda.so.1"));
        assert!(link_keeps_own_name("libcuda.so.1", "libcuda.so.1"));
        assert!(!link_keeps_own_name(
            "libGLX_indirect.so.0",
            "libGLX_nvidia.so.0"
        ));
        assert!(!link_keeps_own_name("libcu", "libcuda.so.1"));
    }
}
