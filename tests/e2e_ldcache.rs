//! The loader in real containers, over the cache nvhook writes itself and the one the
//! sandboxed ldconfig writes (`ld-cache = "ldconfig"`): a program in the container
//! dlopens every driver library by name (and the image's own libc), and both ways it
//! must resolve every one to the same file. Debian and RHEL images, with and without
//! an image CUDA forward-compatibility libcuda newer than the driver (it must win), and
//! an image with many libraries of its own. Also: nvhook's way runs no program on the
//! container's files, and an image's hostile cache is refused in one line.
//! Needs root, runc and gcc; fails (does not skip) without them.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_LAZY | RTLD_LOCAL);
        struct link_map *m = 0;
        if (!h) { printf("%s: not found\n", argv[i]); continue; }
        struct stat st;
        if (dlinfo(h, RTLD_DI_LINKMAP, &m) == 0 && m && stat(m->l_name, &st) == 0)
            printf("%s: %s %lu:%lu\n", argv[i], m->l_name, (unsigned long)st.st_dev, (unsigned long)st.st_ino);
        else printf("%s: no link map\n", argv[i]);
    }
    return 0;
}
"#;

fn probe() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = fixtures().dir.join("dlprobe");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("dlprobe.c"), PROBE).unwrap();
        let o = Command::new("gcc")
            .arg("-o")
            .arg(d.join("dlprobe"))
            .arg(d.join("dlprobe.c"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d.join("dlprobe")
    })
}

const NAMES: &[&str] = &[
    "libcuda.so.1",
    "libcuda.so",
    "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-opticalflow.so.1",
    "libnvidia-encode.so.1",
    "libnvcuvid.so.1",
    "libGLX_nvidia.so.0",
    "libGLX_indirect.so.0",
    "libEGL_nvidia.so.0",
    "libc.so.6",
];

/// What a case does to the image before the start.
type Prepare = dyn Fn(&Path);

fn lib_dir(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Debian => "/usr/lib/x86_64-linux-gnu",
        Flavor::Rhel => "/usr/lib64",
    }
}

/// A GPU container (all capabilities) whose image got `prepare`, running the probe.
fn container(flavor: Flavor, ld_cache: &str, prepare: &dyn Fn(&Path)) -> Container {
    let script = format!("/usr/bin/dlprobe {}", NAMES.join(" "));
    let c = Container::new(
        flavor,
        &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"],
        &script,
    );
    std::fs::copy(probe(), c.rootfs.join("usr/bin/dlprobe")).unwrap();
    prepare(&c.rootfs);
    c.write_config(&format!("ld-cache = \"{ld_cache}\""));
    c
}

/// (name, path the loader opened, the file it is as dev:ino).
fn resolved(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| NAMES.contains(n))
        .map(|(n, rest)| {
            let (p, id) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            (n.to_string(), p.to_string(), id.to_string())
        })
        .collect()
}

fn image_compat(root: &Path) {
    // The image's CUDA forward-compatibility libcuda, newer than the 550 driver
    let dir = root.join("usr/local/cuda/compat");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures()
            .driver
            .join("root/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"),
        dir.join("libcuda.so.560.28.03"),
    )
    .unwrap();
}

fn many_libraries(root: &Path, lib_dir: &str) {
    let src = fixtures()
        .driver
        .join("root/usr/lib/x86_64-linux-gnu/libz-fake.so.1.2.3");
    let d = root.join(lib_dir.trim_start_matches('/'));
    for i in 0..300 {
        std::fs::copy(&src, d.join(format!("libimage{i}.so.1"))).unwrap();
    }
}

#[test]
fn loader_resolves_the_same_with_nvhooks_cache_and_ldconfigs() {
    for flavor in [Flavor::Debian, Flavor::Rhel] {
        let dir = lib_dir(flavor);
        let cases: [(&str, Box<Prepare>); 3] = [
            ("plain", Box::new(|_: &Path| {})),
            ("compat", Box::new(image_compat)),
            (
                "many libraries",
                Box::new(move |r: &Path| many_libraries(r, dir)),
            ),
        ];
        for (case, prepare) in &cases {
            let a = container(flavor, "nvhook", prepare.as_ref());
            let b = container(flavor, "ldconfig", prepare.as_ref());
            let (out_a, out_b) = (a.run_ok(Cgroup::V1), b.run_ok(Cgroup::V1));
            let (ra, rb) = (resolved(&out_a), resolved(&out_b));
            assert_eq!(ra.len(), NAMES.len(), "{case}: {out_a}");
            // the same host file for every driver name (a path may differ: `/lib` is
            // `/usr/lib`), the same path for the image's own files (each container has
            // its own copy of the image: libc, the compat libcuda)
            let files = |r: &[(String, String, String)]| {
                r.iter()
                    .map(|(n, p, id)| {
                        let image = n == "libc.so.6" || p.starts_with("/usr/local/cuda/compat/");
                        (n.clone(), if image { p.clone() } else { id.clone() })
                    })
                    .collect::<Vec<_>>()
            };
            for (a, b) in files(&ra).iter().zip(files(&rb)) {
                // ldconfig lists a development link only from its second run: where it
                // found no `libcuda.so`, nvhook's cache may (the loader's default dirs
                // miss `/usr/lib64` with this image's Debian-built loader)
                let first_run_quirk = a.0 == "libcuda.so" && b.1 == "found";
                assert!(
                    *a == b || first_run_quirk,
                    "{flavor:?} {case}: nvhook's cache {a:?} vs ldconfig's {b:?}\n{out_a}\n{out_b}"
                );
            }
            assert!(
                ra.iter()
                    .filter(|r| r.0 != "libGLX_indirect.so.0" || flavor == Flavor::Debian)
                    .all(|r| r.2 != "found"),
                "{case}: every driver library resolves with nvhook's cache: {out_a}"
            );
            let cuda = &ra[0].1;
            let want = if *case == "compat" {
                "/usr/local/cuda/compat/libcuda.so.1".to_string()
            } else {
                format!("{dir}/libcuda.so.1")
            };
            assert_eq!(cuda, &want, "{flavor:?} {case}: {out_a}");
        }
    }
    // nvhook's way runs no ldconfig at all: one that cannot run changes nothing
    let c = container(Flavor::Debian, "nvhook", &|_| {});
    c.write_config("ld-cache = \"nvhook\"\nldconfig = \"@/bin/false\"");
    let out = c.run_ok(Cgroup::V1);
    assert!(
        out.contains("libcuda.so.1: /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "{out}"
    );
    let c = container(Flavor::Debian, "ldconfig", &|_| {});
    c.write_config("ld-cache = \"ldconfig\"\nldconfig = \"@/bin/false\"");
    assert!(
        !c.run(Cgroup::V1).status.success(),
        "the control: ldconfig mode runs it"
    );
}

#[test]
fn hostile_image_cache() {
    // Not a cache (the loader ignores such a file too): replaced, with a warning
    for (what, content) in [
        ("garbage", b"not a cache at all".to_vec()),
        (
            "truncated",
            b"glibc-ld.so.cache1.1\xff\xff\xff\x00".to_vec(),
        ),
    ] {
        let c = container(Flavor::Debian, "nvhook", &|_| {});
        let cache = c.rootfs.join("etc/ld.so.cache");
        let _ = std::fs::remove_file(&cache);
        std::fs::write(&cache, &content).unwrap();
        let out = c.run_ok(Cgroup::V1);
        assert!(
            out.contains("libcuda.so.1: /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
            "{what}: {out}"
        );
        assert!(
            c.log_text().contains("is not a loader cache"),
            "{what}: {}",
            c.log_text()
        );
        let now = std::fs::read(&cache).unwrap();
        assert!(nvhook::host::ldcache::parse(&now).is_ok(), "{what}");
    }
    // Not a file: never opened (a device's open can act, a FIFO's can hang), and the
    // start fails in one line naming it
    let c = container(Flavor::Debian, "nvhook", &|_| {});
    let cache = c.rootfs.join("etc/ld.so.cache");
    let _ = std::fs::remove_file(&cache);
    assert!(Command::new("mkfifo")
        .arg(&cache)
        .status()
        .unwrap()
        .success());
    // a writer blocks until someone opens the FIFO for reading
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (fifo, flag) = (cache.clone(), opened.clone());
    let writer = std::thread::spawn(move || {
        let _w = std::fs::OpenOptions::new().write(true).open(&fifo);
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("a FIFO") && err.contains("ld.so.cache"),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !opened.load(std::sync::atomic::Ordering::SeqCst),
        "nvhook opened the FIFO"
    );
    let _r = std::fs::File::open(&cache).unwrap(); // release the writer
    writer.join().unwrap();
    let c = container(Flavor::Debian, "nvhook", &|_| {});
    let cache = c.rootfs.join("etc/ld.so.cache");
    let _ = std::fs::remove_file(&cache);
    let st = Command::new("mknod")
        .arg(&cache)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("a character device"), "{err}");
    // Too large to be a real one (sparse): refused, naming the way out
    let c = container(Flavor::Debian, "nvhook", &|_| {});
    let cache = c.rootfs.join("etc/ld.so.cache");
    let f = std::fs::File::create(&cache).unwrap();
    f.set_len(64 << 20).unwrap();
    let o = c.run(Cgroup::V1);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("File too large") && err.contains("ld-cache = "),
        "{err}"
    );
    // a link out of the root reads nothing of the host's (a host file that is not a
    // cache would fail the start) and writes nothing there
    let host = std::env::temp_dir().join(format!("nvhook-host-cache-{}", std::process::id()));
    std::fs::write(&host, "host file, not a cache").unwrap();
    let c = container(Flavor::Debian, "nvhook", &|_| {});
    let cache = c.rootfs.join("etc/ld.so.cache");
    let _ = std::fs::remove_file(&cache);
    std::os::unix::fs::symlink(format!("../../../../../../../..{}", host.display()), &cache)
        .unwrap();
    let out = c.run_ok(Cgroup::V1);
    assert!(
        out.contains("libcuda.so.1: /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&host).unwrap(),
        "host file, not a cache"
    );
    let _ = std::fs::remove_file(&host);
    assert!(
        !std::fs::symlink_metadata(&cache)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is replaced by the container's own cache"
    );
}

/// An image whose last build step listed a directory in `/etc/ld.so.conf.d` without
/// running ldconfig: its library resolves in the container (the loader finds it only
/// through the cache), as it does under NVIDIA's toolkit, which runs ldconfig at every
/// start. An image whose cache is current is not scanned again (nvhook's own mount
/// targets and drop-in, made before the cache update, do not count).
#[test]
fn a_stale_image_cache_gets_the_images_own_libraries() {
    for flavor in [Flavor::Debian, Flavor::Rhel] {
        let c = container(flavor, "nvhook", &|root| {
            let late = root.join("opt/late/lib");
            std::fs::create_dir_all(&late).unwrap();
            std::fs::copy(
                fixtures()
                    .driver
                    .join("root/usr/lib/x86_64-linux-gnu/libz-fake.so.1.2.3"),
                late.join("libz-fake.so.1.2.3"),
            )
            .unwrap();
            std::fs::write(root.join("etc/ld.so.conf.d/late.conf"), "/opt/late/lib\n").unwrap();
        });
        let mut spec = c.spec();
        spec["process"]["args"] = serde_json::json!(["/usr/bin/dlprobe", "libz-fake.so.1"]);
        c.set_spec(&spec);
        let out = c.run_ok(Cgroup::V1);
        assert!(
            out.contains("libz-fake.so.1: /opt/late/lib/libz-fake.so.1"),
            "{flavor:?}: the image's library did not resolve: {out}\nlog:\n{}",
            c.log_text()
        );
        assert!(c.log_text().contains("is older than what it describes"));

        // the same image, current: no second scan
        let c = container(flavor, "nvhook", &|_| {});
        c.run_ok(Cgroup::V1);
        assert!(
            !c.log_text().contains("is older than what it describes"),
            "{flavor:?}: a current cache was judged stale:\n{}",
            c.log_text()
        );
    }
}
