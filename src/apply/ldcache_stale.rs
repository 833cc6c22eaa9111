//! Whether an image's `ld.so.cache` is older than what it describes, as ldconfig's own
//! auxiliary cache reasons: by modification times. An image whose last build step added
//! a directory to `/etc/ld.so.conf.d`, or libraries to a listed directory, without
//! running ldconfig, has a cache that misses them; NVIDIA's toolkit runs ldconfig at
//! every start and so finds them, and nvhook must too. A current cache (the usual case)
//! costs a few `stat`s and reading the small configuration files; a stale one gets the
//! directories that changed scanned again, or, where the configuration itself changed
//! or there is no cache, every directory ldconfig would scan.

use crate::common::rootfs::Root;
use crate::common::sys;
use std::os::fd::AsFd;

/// Where the loader's cache is in the root.
pub const CACHE: &str = "/etc/ld.so.cache";
/// The main configuration file, as ldconfig reads it in the root.
pub const CONF: &str = "/etc/ld.so.conf";
/// Include depth and files read at most: a real image has a dozen files, one level.
const MAX_DEPTH: usize = 8;
const MAX_FILES: usize = 256;
const MAX_CONF_BYTES: usize = 64 << 10;

/// What ldconfig's configuration names in the image: the files read and the
/// directories listed, in ldconfig's order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImageConf {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
}

/// Reads `/etc/ld.so.conf` and what it includes (`include PATTERN`, relative patterns
/// relative to the including file's directory, `*` and `?` in the last component),
/// inside the root. A file that cannot be read counts as absent, as for ldconfig.
pub fn read_conf(root: &Root) -> ImageConf {
    let mut c = ImageConf::default();
    parse_file(root, CONF, 0, &mut c);
    c
}

fn parse_file(root: &Root, path: &str, depth: usize, c: &mut ImageConf) {
    if depth > MAX_DEPTH || c.files.len() >= MAX_FILES || c.files.iter().any(|f| f == path) {
        return;
    }
    let Ok(Some(bytes)) = root.read_file(path, MAX_CONF_BYTES) else {
        return;
    };
    c.files.push(path.to_string());
    let here = path.rsplit_once('/').map_or("/", |(d, _)| d);
    for line in String::from_utf8_lossy(&bytes).lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(patterns) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with(|ch: char| ch.is_ascii_whitespace()))
        {
            for p in patterns.split_ascii_whitespace() {
                let p = if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("{}/{p}", here.trim_end_matches('/'))
                };
                for f in expand(root, &p) {
                    parse_file(root, &f, depth + 1, c);
                }
            }
            continue;
        }
        // `dir=TYPE` (libc5 days) and trailing slashes, as ldconfig's add_dir trims them
        let dir = line.split('=').next().unwrap_or("").trim_end_matches('/');
        let dir = if dir.is_empty() { "/" } else { dir };
        if dir.starts_with('/') && !c.dirs.iter().any(|d| d == dir) {
            c.dirs.push(dir.to_string());
        }
    }
}

/// The files a pattern names, sorted as glob(3) sorts them.
fn expand(root: &Root, pattern: &str) -> Vec<String> {
    let (dir, last) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let dir = if dir.is_empty() { "/" } else { dir };
    if !last.contains(['*', '?']) {
        return vec![pattern.to_string()];
    }
    let Ok(Some(fd)) = root.open_dir(dir) else {
        return Vec::new();
    };
    let keep =
        |n: &[u8]| std::str::from_utf8(n).is_ok_and(|n| !n.starts_with('.') && matches(last, n));
    let mut names: Vec<String> = sys::read_dir(fd.as_fd(), 4096, &keep)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| String::from_utf8(n).ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .take(MAX_FILES)
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect()
}

/// A glob of `*` and `?` (no classes), by bytes.
fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    // bounded: a pattern has few stars and a name at most 255 bytes
    pattern.matches('*').count() <= 4 && go(pattern.as_bytes(), name.as_bytes())
}

/// The directories ldconfig scans besides its configuration's: those built into it.
/// nvhook's cache equals the host ldconfig's (what NVIDIA's toolkit runs), and which
/// ones a glibc has depends on its distribution and architecture: Debian's multiarch
/// set where the image is laid out so, RHEL's `lib64` set otherwise.
pub fn system_dirs(root: &Root) -> &'static [&'static str] {
    let native = &crate::common::arch::NATIVE;
    if matches!(root.stat(native.debian_lib_dir), Ok(Some(_))) {
        native.debian_system_dirs
    } else {
        native.rhel_system_dirs
    }
}

/// What must be scanned again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// The cache is newer than everything it describes.
    Current,
    /// These directories changed after the cache was written.
    Dirs(Vec<String>),
    /// No cache, or the configuration changed: every directory, from scratch.
    Whole,
}

fn mtime(st: &libc::stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec)
}

/// Compares the cache's time with its configuration's and its directories' (`dirs`:
/// every directory ldconfig scans, in its order).
pub fn staleness(root: &Root, cache: &str, conf: &ImageConf, dirs: &[String]) -> Staleness {
    let when = |p: &str| match root.stat(p) {
        Ok(Some((_, st))) => Some(mtime(&st)),
        _ => None,
    };
    let Some(cache_time) = when(cache) else {
        return Staleness::Whole;
    };
    if conf
        .files
        .iter()
        .any(|f| when(f).is_some_and(|t| t > cache_time))
    {
        return Staleness::Whole;
    }
    let newer: Vec<String> = dirs
        .iter()
        .filter(|d| when(d).is_some_and(|t| t > cache_time))
        .cloned()
        .collect();
    if newer.is_empty() {
        Staleness::Current
    } else {
        Staleness::Dirs(newer)
    }
}

/// The image's cache judged: what is stale, and ldconfig's scan order it was judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub staleness: Staleness,
    pub order: Vec<String>,
}

/// Judges the image's cache as it is now, with `first` (ldconfig's command line) ahead
/// of its configuration: called before nvhook changes anything in the image.
pub fn judge(root: &Root, first: &[String]) -> Judgement {
    let conf = read_conf(root);
    let order = scan_order(root, first, &conf);
    Judgement {
        staleness: staleness(root, CACHE, &conf, &order),
        order,
    }
}

/// The directories ldconfig scans, in its order, each once: `first` (its command
/// line), then the configuration's, then the built-in ones; a directory that is the
/// same as one before it (a link such as merged-/usr's `/lib`) is left out, as ldconfig
/// leaves it out, and so is one that is not there.
pub fn scan_order(root: &Root, first: &[String], conf: &ImageConf) -> Vec<String> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::new();
    let all = first
        .iter()
        .map(|d| d.trim_end_matches('/').to_string())
        .chain(conf.dirs.iter().cloned())
        .chain(system_dirs(root).iter().map(|d| d.to_string()));
    for d in all {
        let Ok(Some((_, st))) = root.stat(&d) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            continue;
        }
        let id = (st.st_dev, st.st_ino);
        if !seen.contains(&id) {
            seen.push(id);
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*.conf", "libc.conf"));
        assert!(matches("*.conf", ".conf"));
        assert!(!matches("*.conf", "libc.conf.bak"));
        assert!(matches("x86_64-?inux*.conf", "x86_64-linux-gnu.conf"));
        assert!(!matches("*.conf", "libc.con"));
        assert!(!matches("a*b*c*d*e*", "abcde"), "more than four stars");
    }

    #[test]
    fn conf_with_includes_comments_and_loops() {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let f = t.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w(
            "etc/ld.so.conf",
            "include /etc/ld.so.conf.d/*.conf\n/usr/lib64/ # trailing\n\n# only a comment\n",
        );
        w(
            "etc/ld.so.conf.d/b.conf",
            "/opt/b/lib\ninclude ../ld.so.conf\n",
        );
        w(
            "etc/ld.so.conf.d/a.conf",
            "/opt/a/lib\n/opt/a/lib\nhwcap 1 x\n",
        );
        w("etc/ld.so.conf.d/z.txt", "/not/included\n");
        let root = Root::open(t.path()).unwrap();
        let c = read_conf(&root);
        assert_eq!(c.dirs, ["/opt/a/lib", "/opt/b/lib", "/usr/lib64"]);
        assert_eq!(
            c.files,
            [
                "/etc/ld.so.conf",
                "/etc/ld.so.conf.d/a.conf",
                "/etc/ld.so.conf.d/b.conf"
            ]
        );
    }
}
