//! Shared set-up for the end-to-end tests: the synthetic driver, the two rootfs
//! flavours, the built binaries, and a helper that runs a real container with runc
//! through the shim, on cgroup v1 or (inside `unshare -m`) cgroup v2.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Fixtures {
    pub dir: PathBuf,
    pub driver: PathBuf,
    pub debian: PathBuf,
    pub rhel: PathBuf,
    pub bin: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The built binaries: `$NVHOOK_BIN_DIR`, else the target dir of this test binary.
fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("NVHOOK_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().to_path_buf() // target/<profile>/deps/..
        });
    for b in ["nvhook", "nvhook-runtime"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: build the workspace first (scripts/test.sh does `cargo build` before `cargo test`)",
            dir.join(b).display()
        );
    }
    dir
}

/// Builds the fixtures once per test binary. Needs root (mknod), gcc, runc and
/// busybox-static: a machine without them fails here, loudly.
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the end-to-end tests need root (run scripts/test.sh as root)"
        );
        for tool in ["runc", "gcc", "unshare"] {
            assert!(
                which(tool).is_some(),
                "{tool} is not installed (scripts/ci-deps.sh installs it)"
            );
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fixtures-{}", test_binary_name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = repo().join("scripts");
        sh(Command::new(s.join("make-fake-driver.sh"))
            .arg(dir.join("driver"))
            .arg("4"));
        sh(Command::new(s.join("make-rootfs.sh"))
            .arg(dir.join("debian"))
            .arg("debian"));
        sh(Command::new(s.join("make-rootfs.sh"))
            .arg(dir.join("rhel"))
            .arg("rhel"));
        Fixtures {
            driver: dir.join("driver"),
            debian: dir.join("debian"),
            rhel: dir.join("rhel"),
            bin: bin_dir(),
            dir,
        }
    })
}

fn test_binary_name() -> String {
    std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('-')
        .next()
        .unwrap()
        .to_string()
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// UUID and minor of the synthetic GPU at `index` (see make-fake-driver.sh).
pub fn gpu_uuid(index: u32) -> String {
    format!(
        "GPU-{:08x}-5a1e-4e7f-9c2d-{:012x}",
        0x1000 + index,
        0xabc000 + index
    )
}
pub fn gpu_minor(index: u32) -> u32 {
    3 - index
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Debian,
    Rhel,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cgroup {
    V1,
    V2,
}

/// Prints what the container sees, in sections the tests pick apart.
pub const PROBE: &str = r#"
echo "== smi"; nvidia-smi -L 2>&1; echo "smi-rc=$?"
echo "== ldconfig"; ldconfig -p 2>&1 | grep -E 'nvidia|cuda|libnv|GLX|EGL' | sed 's/^[[:space:]]*//'
echo "== dev"; ls /dev | grep nvidia
echo "== open"; for d in /dev/nvidia*; do [ -e "$d" ] && echo "$d: $(cat "$d" 2>&1 </dev/null | head -n1)"; done
echo "== bin"; ls /usr/bin | grep -E '^nvidia|^nv-'
echo "== write"; (echo x >> /usr/bin/nvidia-smi) 2>&1
echo "== end"
"#;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One container: a private copy of the rootfs, a bundle and an nvhook config.
pub struct Container {
    pub tmp: tempfile::TempDir,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub id: String,
}

impl Container {
    /// A container running `script` with `env` added to the default environment.
    pub fn new(flavor: Flavor, env: &[&str], script: &str) -> Container {
        let f = fixtures();
        let tmp = tempfile::Builder::new()
            .prefix("nvhook-e2e-")
            .tempdir()
            .unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let rootfs = bundle.join("rootfs");
        let src = match flavor {
            Flavor::Debian => &f.debian,
            Flavor::Rhel => &f.rhel,
        };
        sh(Command::new("cp").arg("-a").arg(src).arg(&rootfs));
        sh(Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle));
        let path = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        let envs = spec["process"]["env"].as_array_mut().unwrap();
        for e in env {
            envs.push((*e).into());
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let log = tmp.path().join("nvhook.log");
        let config = tmp.path().join("nvhook.toml");
        let c = Container {
            id: format!(
                "nvh-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            ),
            tmp,
            bundle,
            rootfs,
            config,
            log,
        };
        c.write_config("");
        c
    }

    /// Writes the nvhook config: the synthetic driver's, plus `extra` top-level keys.
    pub fn write_config(&self, extra: &str) {
        self.write_config_for(&fixtures().driver, extra)
    }

    /// Writes the nvhook config for the synthetic driver in `d` (as made by
    /// make-fake-driver.sh), plus `extra` top-level keys.
    pub fn write_config_for(&self, d: &Path, extra: &str) {
        let f = fixtures();
        std::fs::write(
            &self.config,
            format!(
                "driver-root = \"{}/root\"\ndev-root = \"{}\"\nproc-root = \"{}/proc\"\nsys-root = \"{}/sys\"\n{extra}\n[runtime]\nruntimes = [\"runc\"]\nhook-path = \"{}/nvhook\"\n[log]\nfile = \"{}\"\nlevel = \"debug\"\n",
                d.display(),
                d.display(),
                d.display(),
                d.display(),
                f.bin.display(),
                self.log.display()
            ),
        )
        .unwrap();
    }

    pub fn spec(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.bundle.join("config.json")).unwrap()).unwrap()
    }

    pub fn set_spec(&self, v: &Value) {
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }

    /// The shim's command line for `args` (runc syntax), with the state root private.
    pub fn shim(&self, cg: Cgroup, args: &[&str]) -> Command {
        let f = fixtures();
        let state = self.tmp.path().join("state");
        let mut inner = vec![
            "timeout".to_string(),
            "60".into(),
            f.bin.join("nvhook-runtime").display().to_string(),
            "--root".into(),
            state.display().to_string(),
        ];
        inner.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = in_cgroup_view(cg, &inner);
        cmd.env("NVHOOK_CONFIG", &self.config);
        cmd
    }

    /// `runc run` through the shim; returns the output.
    pub fn run(&self, cg: Cgroup) -> Output {
        let b = self.bundle.display().to_string();
        self.shim(cg, &["run", "--bundle", &b, &self.id])
            .output()
            .unwrap()
    }

    /// The container's stdout, after checking it ran (its output and nvhook's log in
    /// the failure message otherwise).
    pub fn expect_ok(&self, o: Output) -> String {
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "container failed: {out}{err}\nlog:\n{}",
            self.log_text()
        );
        out
    }

    /// `runc run` through the shim, which must succeed; its stdout.
    pub fn run_ok(&self, cg: Cgroup) -> String {
        self.expect_ok(self.run(cg))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The synthetic driver's test tools (ldconfig stand-ins, a preload library, ...).
pub fn tools() -> PathBuf {
    fixtures().driver.join("tools")
}

/// The nvhook config line that makes the tool `name` (`ldconfig-probe`, `-fail`,
/// `-hang`) the host ldconfig.
/// The config lines that make the synthetic driver's tool `name` the ldconfig nvhook
/// runs (`ld-cache = "ldconfig"`: by default nvhook writes the cache itself).
pub fn ldconfig_tool(name: &str) -> String {
    format!(
        "ld-cache = \"ldconfig\"\nldconfig = \"@{}\"",
        tools().join(name).display()
    )
}

/// The value of `key=` in a report of `key=value` lines (the ldconfig probe's).
pub fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing: {out}"))
        .to_string()
}

/// `argv` as a command that sees cgroup v1 or v2. cgroup v1 (hybrid) is the machine's
/// own layout: it runs in the host mount namespace, so a mount leaking out of a
/// container would show in the host's table. v2 runs inside `unshare -m` with the
/// unified hierarchy bound over `/sys/fs/cgroup`. On a host that is cgroup v2 already,
/// both run as they are.
pub fn in_cgroup_view(cg: Cgroup, argv: &[String]) -> Command {
    if cg == Cgroup::V2 && !host_is_unified() {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"]);
        c.arg("mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec \"$@\"")
            .arg("sh")
            .args(argv);
        return c;
    }
    if cg == Cgroup::V1 && host_is_unified() {
        eprintln!("note: this host has no cgroup v1; the v1 case runs on cgroup v2");
    }
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// Whether `/sys/fs/cgroup` is cgroup v2 already (no hybrid `unified` to bind).
pub fn host_is_unified() -> bool {
    nvhook::apply::cgroup::is_unified()
}

/// Lines of one `== name` section of the probe's output.
pub fn section(out: &str, name: &str) -> Vec<String> {
    let head = format!("== {name}");
    out.lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .map(str::to_owned)
        .collect()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Host mounts whose source or mount point lies under `dir`: must be none after a run.
pub fn host_mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_owned)
        .collect()
}
