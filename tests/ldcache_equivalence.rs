//! nvhook's own ld.so.cache update against a real ldconfig run, on many random
//! library sets in Debian- and RHEL-style trees: native (x86-64 or arm64) and, on
//! x86-64, i386 libraries, links,
//! libraries without a SONAME, several versions of one, the CUDA forward-compatibility
//! directory, caches written in the new and the compat format. After the same driver
//! files are put in place, the entries (names, kinds, paths, order) and the SONAME
//! links must be what the host's ldconfig makes with the driver's directories on its
//! command line, as nvhook runs it. The container test in e2e_hosts.rs runs the loader
//! itself over both.

use nvhook::apply::ldcache_stale;
use nvhook::apply::ldcache_update::{self, Mounted, Update};
use nvhook::apply::ldcache_write;
use nvhook::common::arch::NATIVE;
use nvhook::common::rootfs::Root;
use nvhook::host::elf;
use nvhook::plan::Symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tiny deterministic generator: the same sets on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn ldconfig() -> &'static str {
    for p in [
        "/sbin/ldconfig.real",
        "/sbin/ldconfig",
        "/usr/sbin/ldconfig",
    ] {
        if Path::new(p).is_file()
            && std::fs::read(p).is_ok_and(|b| nvhook::host::elf::is_static_elf(&b))
        {
            return p;
        }
    }
    panic!("no static ldconfig on this host (libc-bin installs one)");
}

/// Builds the library files once: (soname or none, 32-bit) -> path in `dir`.
fn template(dir: &Path, soname: Option<&str>, m32: bool) -> PathBuf {
    let tag = format!("{}-{}", soname.unwrap_or("none"), if m32 { 32 } else { 64 });
    let out = dir.join(format!("t-{tag}"));
    if out.exists() {
        return out;
    }
    let src = dir.join(format!("{tag}.c"));
    std::fs::write(&src, format!("int f_{}(void) {{ return 1; }}\n", tag.len())).unwrap();
    let mut cmd = Command::new(nvhook::common::arch::test_cc());
    cmd.args(["-shared", "-fPIC", "-o"]).arg(&out).arg(&src);
    if let Some(s) = soname {
        cmd.arg(format!("-Wl,-soname,{s}"));
    }
    if m32 {
        cmd.arg("-m32");
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "gcc (-m32 needs lib32gcc-N-dev and libc6-dev-i386; scripts/ci-deps.sh installs them): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn put(tmpl: &Path, root: &Path, path: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::copy(tmpl, &p).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(target, p).unwrap();
}

fn run_ldconfig(root: &Path, format: &str, dirs: &[String]) {
    let o = Command::new(ldconfig())
        .args(["-c", format, "-r"])
        .arg(root)
        .args(["-f", "/etc/ld.so.conf", "-C", "/etc/ld.so.cache"])
        .args(dirs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ldconfig: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn cache_of(root: &Path) -> ldcache_write::Cache {
    ldcache_write::read(&std::fs::read(root.join("etc/ld.so.cache")).unwrap()).unwrap()
}

/// Every symlink under `root`, as (path, target).
fn links_of(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.push((
                    e.path().strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read_link(e.path()).unwrap().display().to_string(),
                ));
            } else if t.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

struct Layout {
    name: &'static str,
    lib_dir: &'static str,
    lib32_dir: &'static str,
    /// What ld.so.conf lists (Debian's ldconfig knows only Debian's own system dirs).
    conf: &'static str,
}

const LAYOUTS: [Layout; 2] = [
    Layout {
        name: "debian",
        lib_dir: NATIVE.debian_lib_dir,
        lib32_dir: match &NATIVE.compat32 {
            Some(c) => c.debian_lib_dir,
            None => "/usr/lib/no-32-bit",
        },
        conf: "include /etc/ld.so.conf.d/*.conf\n",
    },
    Layout {
        name: "rhel",
        lib_dir: "/usr/lib64",
        lib32_dir: "/usr/lib",
        conf: "include ld.so.conf.d/*.conf\n/usr/lib64\n/usr/lib\n",
    },
];

const DRIVER: &str = "550.54.14";
/// Whether the architecture has 32-bit libraries (i386 beside x86-64; arm64 has none).
const HAS32: bool = NATIVE.compat32.is_some();
const COMPAT: &str = "/usr/local/cuda/compat";

#[test]
fn nvhook_update_equals_ldconfig_on_random_library_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("templates");
    std::fs::create_dir_all(&t).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0;
    for round in 0..24 {
        let layout = &LAYOUTS[round % 2];
        let format = if round % 4 < 2 { "new" } else { "compat" };
        let tree = tmp.path().join(format!("tree{round}"));
        let w = |p: &str, s: &str| {
            let f = tree.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w("/etc/ld.so.conf", layout.conf);
        w("/etc/ld.so.conf.d/local.conf", "/usr/local/lib\n");
        w("/etc/ld.so.conf.d/app.conf", "/opt/app/lib\n");
        if layout.name == "debian" {
            let triplet = NATIVE.debian_lib_dir.trim_start_matches("/usr/lib/");
            w(
                &format!("/etc/ld.so.conf.d/{triplet}.conf"),
                &format!("/usr/local/lib/{triplet}\n/lib/{triplet}\n/usr/lib/{triplet}\n"),
            );
            if HAS32 {
                w(
                    "/etc/ld.so.conf.d/i386-linux-gnu.conf",
                    "/usr/lib/i386-linux-gnu\n",
                );
            }
        }
        // The image's own libraries, in several file versions, some with development
        // links, some of one SONAME in two directories (ldconfig given the driver's
        // dirs first prefers the copy there: so does nvhook).
        let dirs = ["/usr/local/lib", "/opt/app/lib", layout.lib_dir];
        for i in 0..(4 + rng.below(10)) {
            // the draw is made on every architecture: the same sets follow
            let m32 = rng.chance(20) && HAS32;
            let soname = format!("libapp{i}.so.{}", rng.below(3));
            let dir = if m32 {
                layout.lib32_dir
            } else {
                dirs[rng.below(3) as usize]
            };
            let tmpl = template(&t, Some(&soname), m32);
            for _ in 0..(1 + rng.below(2)) {
                let file = format!("{soname}.{}.{}", rng.below(12), rng.below(3));
                put(&tmpl, &tree, &format!("{dir}/{file}"));
            }
            if rng.chance(30) {
                let dev = format!("libapp{i}.so");
                link(&tree, &format!("{dir}/{dev}"), &soname);
            }
            if !m32 && rng.chance(25) {
                let other = dirs[rng.below(3) as usize];
                put(&tmpl, &tree, &format!("{other}/{soname}.99"));
            }
        }
        if rng.chance(50) {
            put(
                &template(&t, None, false),
                &tree,
                "/usr/local/lib/libnosoname.so",
            );
        }
        // The image's CUDA compat libraries, newer than the driver
        let compat = rng.chance(50);
        if compat {
            put(
                &template(&t, Some("libcuda.so.1"), false),
                &tree,
                &format!("{COMPAT}/libcuda.so.560.28.03"),
            );
            put(
                &template(&t, Some("libnvidia-ptxjitcompiler.so.1"), false),
                &tree,
                &format!("{COMPAT}/libnvidia-ptxjitcompiler.so.560.28.03"),
            );
        }
        // A stale driver entry of an earlier start (a restarted container)
        let restarted = rng.chance(25);
        // twice: the first run makes SONAME links that development links point at
        run_ldconfig(&tree, format, &[]);
        run_ldconfig(&tree, format, &[]);
        let stale = make_stale(&tree, &t, layout, &mut rng, round);
        // judged as the hook judges it: on the image as it came, before the driver's
        // files (nvhook's mounts, or an engine's from a CDI spec) make its dirs newer
        let judged = ldcache_stale::judge(&Root::open(&tree).unwrap(), &[]);

        // What nvhook mounts and links, and where ldconfig would be told to look
        let mut libs = Vec::new();
        for (soname, stem, m32) in [
            ("libcuda.so.1", "libcuda.so", false),
            ("libnvidia-ml.so.1", "libnvidia-ml.so", false),
            (
                "libnvidia-ptxjitcompiler.so.1",
                "libnvidia-ptxjitcompiler.so",
                false,
            ),
            ("libGLX_nvidia.so.0", "libGLX_nvidia.so", false),
            ("libcuda.so.1", "libcuda.so", true),
        ] {
            if m32 && (!HAS32 || !rng.chance(60)) {
                continue;
            }
            let dir = if m32 {
                layout.lib32_dir
            } else {
                layout.lib_dir
            };
            let tmpl = template(&t, Some(soname), m32);
            let file = format!("{stem}.{DRIVER}");
            put(&tmpl, &tree, &format!("{dir}/{file}"));
            libs.push(Mounted {
                dir: dir.into(),
                file,
                elf: elf::info(&std::fs::File::open(&tmpl).unwrap()).unwrap(),
            });
        }
        let links = vec![
            Symlink {
                path: format!("{}/libcuda.so", layout.lib_dir),
                target: "libcuda.so.1".to_string(),
            },
            Symlink {
                path: format!("{}/libGLX_indirect.so.0", layout.lib_dir),
                target: "libGLX_nvidia.so.0".to_string(),
            },
        ];
        for Symlink { path: p, target } in &links {
            link(&tree, p, target);
        }
        let mut dirs: Vec<String> = Vec::new();
        let mut rescan = Vec::new();
        if compat {
            w(
                "/etc/ld.so.conf.d/00-nvhook-cuda-compat.conf",
                &format!("{COMPAT}\n"),
            );
            dirs.push(COMPAT.into());
            rescan.push(COMPAT.to_string());
        }
        dirs.push(layout.lib_dir.into());
        if libs.iter().any(|l| l.dir == layout.lib32_dir) {
            dirs.push(layout.lib32_dir.into());
        }

        let a = tmp.path().join(format!("a{round}"));
        let b = tmp.path().join(format!("b{round}"));
        let c = tmp.path().join(format!("c{round}"));
        for copy in [&a, &b, &c] {
            let o = Command::new("cp")
                .arg("-a")
                .arg(&tree)
                .arg(copy)
                .output()
                .unwrap();
            assert!(o.status.success());
        }
        let update = Update {
            dirs: &dirs,
            libs: &libs,
            links: &links,
            rescan: &rescan,
            driver_named: &[],
            judged: Some(judged.clone()),
        };
        let mut root = Root::open(&a).unwrap();
        ldcache_update::update(&mut root, &update).unwrap();
        if restarted {
            // the same start again: nothing changes
            let before = std::fs::read(a.join("etc/ld.so.cache")).unwrap();
            ldcache_update::update(&mut root, &update).unwrap();
            assert_eq!(std::fs::read(a.join("etc/ld.so.cache")).unwrap(), before);
        }
        // ldconfig deletes a link whose target it has not made yet (the SONAME link
        // it makes in the same run: `libGLX_indirect.so.0 -> libGLX_nvidia.so.0` is
        // gone after it), and skips a development link in the same case
        // (`libcuda.so -> libcuda.so.1`) until its next run. nvhook keeps the first
        // and lists the second at once: compared with ldconfig's settled result with
        // the links made after its first run.
        for Symlink { path: p, .. } in &links {
            std::fs::remove_file(b.join(p.trim_start_matches('/'))).unwrap();
        }
        run_ldconfig(&b, "new", &dirs);
        for Symlink { path: p, target } in &links {
            link(&b, p, target);
        }
        run_ldconfig(&b, "new", &dirs);

        let (ca, cb) = (cache_of(&a), cache_of(&b));
        let show = |c: &ldcache_write::Cache| {
            c.entries
                .iter()
                .map(|e| {
                    format!(
                        "{:#06x} {} -> {} hw={:x}",
                        e.flags,
                        String::from_utf8_lossy(&e.key),
                        String::from_utf8_lossy(&e.value),
                        e.hwcap
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            show(&ca),
            show(&cb),
            "round {round} ({}, {format}, compat {compat}, stale: {stale})",
            layout.name
        );
        assert_eq!(links_of(&a), links_of(&b), "round {round}: links");
        // The CDI hook's way: the engine mounted the files, nvhook scans the driver's
        // library names in the spec's folders (the same result)
        let driver_dirs: Vec<String> = dirs.iter().filter(|d| *d != COMPAT).cloned().collect();
        ldcache_update::update(
            &mut Root::open(&c).unwrap(),
            &Update {
                dirs: &dirs,
                libs: &[],
                links: &[],
                rescan: &rescan,
                driver_named: &driver_dirs,
                judged: Some(judged.clone()),
            },
        )
        .unwrap();
        assert_eq!(
            show(&cache_of(&c)),
            show(&cb),
            "round {round}: the CDI hook's way"
        );
        assert_eq!(
            links_of(&c),
            links_of(&b),
            "round {round}: the CDI hook's links"
        );
        // the discovery reader reads the written cache too (it lists glibc's kinds)
        assert_eq!(
            nvhook::host::ldcache::parse(&std::fs::read(a.join("etc/ld.so.cache")).unwrap())
                .unwrap()
                .len(),
            ca.entries
                .iter()
                .filter(|e| e.flags == NATIVE.cache_flags || (HAS32 && e.flags == 0x0003))
                .count()
        );
        cases += 1;
    }
    assert_eq!(cases, 24);
}

/// Makes the image's cache stale the ways an image build does, without running
/// ldconfig after: libraries added to a listed directory, a directory added through
/// `/etc/ld.so.conf.d`, or no cache at all; or leaves it current. Times are set, not
/// waited for: everything the cache describes is older than it, then the change is made.
fn make_stale(tree: &Path, t: &Path, layout: &Layout, rng: &mut Rng, round: usize) -> &'static str {
    let set_time = |p: &Path, when: &str| {
        let st = Command::new("touch")
            .args(["-h", "-d", when])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    };
    // the cache an hour ago, everything else two hours ago
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            set_time(&e.path(), "2 hours ago");
        }
    }
    set_time(&tree.join("etc/ld.so.cache"), "1 hour ago");
    let lib = |soname: &str| template(t, Some(soname), false);
    match (round / 2) % 4 {
        0 => "current",
        1 => {
            // a library put in a listed directory by a later step
            let dir = if rng.chance(50) {
                "/usr/local/lib"
            } else {
                layout.lib_dir
            };
            let soname = format!("liblate{round}.so.1");
            put(&lib(&soname), tree, &format!("{dir}/{soname}.2.0"));
            "a library added to a listed directory"
        }
        2 => {
            // a directory listed by a later step, with its libraries
            let soname = format!("libaddon{round}.so.3");
            put(&lib(&soname), tree, &format!("/opt/addon/lib/{soname}.1"));
            put(
                &lib("libapp0.so.0"),
                tree,
                "/opt/addon/lib/libapp0.so.0.77.1",
            );
            std::fs::write(
                tree.join("etc/ld.so.conf.d/zz-addon.conf"),
                "/opt/addon/lib\n",
            )
            .unwrap();
            "a directory added to ld.so.conf.d"
        }
        _ => {
            std::fs::remove_file(tree.join("etc/ld.so.cache")).unwrap();
            "no cache"
        }
    }
}

#[test]
fn a_directory_too_big_to_scan_is_refused() {
    // An image can put millions of names in a directory nvhook scans: it stops
    // listing at its bound and says so, naming the way out.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usr/local/cuda/compat");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..65537 {
        std::fs::File::create(dir.join(format!("x{i}"))).unwrap();
    }
    let rescan = vec![COMPAT.to_string()];
    let e = ldcache_update::update(
        &mut Root::open(tmp.path()).unwrap(),
        &Update {
            dirs: &rescan,
            libs: &[],
            links: &[],
            rescan: &rescan,
            driver_named: &[],
            judged: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("more than 65536") && e.contains("ld-cache"),
        "{e}"
    );
    // nothing written
    assert!(!tmp.path().join("etc/ld.so.cache").exists());
}
