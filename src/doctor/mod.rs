//! Stage 6, `nvhook doctor`: why GPU containers fail on this host, and what fixes it.
//! An operator's first question is answered by looking where the hook, the shim and
//! the engines look, with their own code: the driver as discovery sees it, NVML as the
//! hook loads it, the configuration as the hook parses it, the engines' files through
//! the installers' lookups, CDI specs against the loaded driver, cgroups and systemd as
//! the device cgroup phase meets them, a user's rootless set-up, and, on request, one
//! throwaway container through the shim.
//!
//! Takes: a [`Host`] (where everything is; tests point it at made-up hosts) and
//! [`Options`] (a user to check for rootless use, the live check). Gives: a [`Report`],
//! one [`Finding`] per check, each a verdict with what was seen and what fixes it.
//! Nothing on the host is changed but what a GPU start leaves, with the live check (its
//! container and bundle are removed).

pub mod cdi;
pub mod cgroups;
pub mod driver;
pub mod engines;
pub mod live;
pub mod rootless;
pub mod setup;

use crate::engines::install;
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How a check came out. Ordered: the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be (or not used here, and nothing needs it).
    Ok,
    /// Works, but something is missing that some containers or some day will need.
    Warn,
    /// GPU containers fail (all, or those of one engine or path), or a setting made on
    /// purpose (a log file) has no effect, until it is fixed.
    Fail,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check's outcome: `check` is a stable name (`driver.nodes`), `saw` what was
/// found, `fix` the command or setting that mends it (none for `ok`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub verdict: Verdict,
    pub saw: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// `saw` on one line: a program's error output (containerd's, runc's) may hold
    /// several, and each line of the report is one verdict.
    pub fn ok(check: &str, saw: impl Into<String>) -> Finding {
        let saw: String = saw.into();
        Finding {
            check: check.into(),
            verdict: Verdict::Ok,
            saw: saw.split_whitespace().collect::<Vec<_>>().join(" "),
            fix: None,
        }
    }
    pub fn warn(check: &str, saw: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(check, saw)
        }
    }
    pub fn fail(check: &str, saw: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Fail,
            fix: Some(fix.into()),
            ..Finding::ok(check, saw)
        }
    }
}

/// Where doctor looks. [`Host::system`] is this machine as the installers and engines
/// see it; [`Host::under`] moves every configuration file and installed binary under
/// another root, for tests (the binaries found there are run).
#[derive(Debug, Clone)]
pub struct Host {
    /// `--config`: nvhook's configuration (else `$NVHOOK_CONFIG`, else the default).
    pub config_flag: Option<PathBuf>,
    /// Where nvhook's binaries are installed, in the order the installers pick.
    pub bin_dirs: Vec<PathBuf>,
    /// The engines' configuration files, as the installers find them.
    pub engines: install::Paths,
    /// Podman's and CRI-O's hooks dirs: the distribution's, then the admin's.
    pub hooks_dirs: Vec<PathBuf>,
    /// CDI spec dirs, lowest precedence first.
    pub cdi_dirs: Vec<PathBuf>,
    pub subuid: PathBuf,
    pub subgid: PathBuf,
    /// CRI-O's and Podman's own configuration files (their cgroup manager).
    pub crio_config: PathBuf,
    /// Podman's `containers.conf`: the distribution's, then the admin's.
    pub containers_confs: Vec<PathBuf>,
    /// The host's `/proc` (PID 1, the engines' daemons, the kernel's settings).
    pub proc: PathBuf,
    /// Where engines' programs and runtimes are looked up: the caller's `PATH`, then the
    /// dirs a service's `PATH` has (under the host's root), as the engines run from
    /// systemd see them whatever `sudo` left the caller.
    pub path_env: OsString,
}

impl Host {
    pub fn system() -> Host {
        Host::under(Path::new("/"))
    }

    /// Every configuration file and binary dir under `root`; `/proc` and `$PATH` stay
    /// the machine's.
    pub fn under(root: &Path) -> Host {
        let at = |p: &str| root.join(p.trim_start_matches('/'));
        let d = install::Paths::default();
        let re = |p: &Path| at(&p.display().to_string());
        Host {
            config_flag: None,
            bin_dirs: vec![at("/usr/bin"), at("/usr/local/bin")],
            engines: install::Paths {
                docker_config: re(&d.docker_config),
                containerd_config: re(&d.containerd_config),
                containerd_dropin_dir: re(&d.containerd_dropin_dir),
                crio_dropin_dir: re(&d.crio_dropin_dir),
                hooks_dir: re(&d.hooks_dir),
                ..d
            },
            hooks_dirs: vec![
                at("/usr/share/containers/oci/hooks.d"),
                at("/etc/containers/oci/hooks.d"),
            ],
            cdi_dirs: vec![at("/etc/cdi"), at("/var/run/cdi")],
            subuid: at("/etc/subuid"),
            subgid: at("/etc/subgid"),
            crio_config: at("/etc/crio/crio.conf"),
            containers_confs: vec![
                at("/usr/share/containers/containers.conf"),
                at("/etc/containers/containers.conf"),
            ],
            proc: "/proc".into(),
            path_env: service_path(root),
        }
    }

    /// The first executable file `name` on [`Host::path_env`], absolute entries only (as
    /// the shim looks: an empty or relative entry would be the caller's directory).
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        self.which_all(name).into_iter().next()
    }

    /// Every executable file `name` on [`Host::path_env`], in order.
    pub fn which_all(&self, name: &str) -> Vec<PathBuf> {
        std::env::split_paths(&self.path_env)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(name))
            .filter(|p| is_program(p))
            .collect()
    }

    /// Where nvhook's binary `name` is installed: the first of [`Host::bin_dirs`].
    pub fn installed(&self, name: &str) -> Option<PathBuf> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }
}

/// A new directory of its own (mode 0700, a name no one had: `mkdir` fails on anything
/// already there, a planted link included), for the ldconfig sandbox's root and the live
/// check's bundle. As root under `/var/lib` (root's, and not `noexec` as `/tmp` and
/// `/run` often are; `$TMPDIR` may be a user's), else under the temporary dir.
pub fn private_temp_dir(what: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib")
    } else {
        std::env::temp_dir()
    };
    let mut last = None;
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            ".nvhook-doctor-{what}-{}-{nanos:09}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// A regular file with an execute bit (through links), as `PATH` lookups take it.
pub fn is_program(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The entries of `dirs` whose extension is one of `exts` (every entry where `exts` is
/// empty), each dir's sorted by name: the order engines merge drop-ins in. A dir that
/// cannot be read has none.
pub fn files_in<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                exts.is_empty() || p.extension().is_some_and(|x| exts.iter().any(|e| x == *e))
            })
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

/// How doctor opens a file others may have put in place: not through a final link, and
/// never waiting (a FIFO where a file belongs).
pub const NO_FOLLOW_NO_WAIT: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// The fix for a program or file that fails `trust::check_root_owned` (whose message
/// names the path at fault: the file, or a directory above it).
pub const FIX_OWNERSHIP: &str =
    "make the path the message names root's and not writable by group or others (chown root:root, chmod go-w)";

/// The text of a configuration file or spec others may write (a CDI dir, hooks.d): a
/// regular file, not through a final link, never waiting on a FIFO, at most 16 MiB.
pub fn read_small(p: &Path) -> Option<String> {
    read_head(p, 16 << 20).and_then(|b| String::from_utf8(b).ok())
}

/// At most `max` bytes from the start of the regular file at `p` (opened as
/// [`read_small`] opens).
pub fn read_head(p: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(NO_FOLLOW_NO_WAIT)
        .open(p)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Runs `cmd` to its end or for `timeout` at most (then kills its process group), its
/// output read as it comes (a full pipe would stall it): for short commands that start
/// no daemon.
pub fn output_within(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let Some(status) = wait_within(&mut child, timeout)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("did not end within {} s", timeout.as_secs()),
        ));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child`, started as the leader of its own process group, for `timeout`
/// at most: its exit status, or `None` once its whole group has been killed (and it
/// reaped) at the deadline. A failing wait kills the group too, and is given.
pub fn wait_within(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let waited = child.try_wait();
        match waited {
            Ok(Some(st)) => return Ok(Some(st)),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                // SAFETY: a signal to the process group the caller started.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return waited.map(|_| None);
            }
        }
    }
}

/// The caller's `PATH`, then the service dirs under `root` that it lacks.
fn service_path(root: &Path) -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let d = root.join(d.trim_start_matches('/'));
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// What to check beyond the host's set-up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--user NAME`: that user's rootless set-up.
    pub user: Option<String>,
    /// `--run`: start one throwaway container asking for GPU 0.
    pub run: bool,
}

/// Every finding, in the order the checks ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, v: Verdict) -> usize {
        self.findings.iter().filter(|f| f.verdict == v).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Verdict::Fail) > 0
    }

    /// One line per finding (`ok`, `warn`, `FAIL`, the check, what was seen), the fix
    /// indented under it, and a count at the end.
    pub fn text(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                f.verdict.label(),
                f.check,
                f.saw
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
            }
        }
        out.push_str(&format!(
            "nvhook doctor: {} ok, {} warn, {} fail\n",
            self.count(Verdict::Ok),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail)
        ));
        out
    }

    /// `--json`: the findings and the counts.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": crate::VERSION,
            "findings": self.findings,
            "ok": self.count(Verdict::Ok),
            "warn": self.count(Verdict::Warn),
            "fail": self.count(Verdict::Fail),
        })
    }
}

/// Runs every check, in the pipeline's order: nvhook's own set-up (its configuration
/// feeds the rest), the driver, the engines, CDI, cgroups, then the user's rootless
/// set-up and the live container where asked.
pub fn examine(host: &Host, opts: &Options) -> Report {
    let mut findings = Vec::new();
    let loaded = setup::check(host, &mut findings);
    let cfg = loaded
        .as_ref()
        .map(|l| l.config.clone())
        .unwrap_or_default();
    // The configuration says where the driver is: with one that does not load, the
    // defaults would send these checks elsewhere and blame the driver.
    let drv = if loaded.is_some() {
        driver::check(&cfg, &mut findings)
    } else {
        findings.push(Finding::warn(
            "driver.found",
            "not checked, nor CDI specs: nvhook's configuration does not load, and it says where the driver is",
            "mend nvhook.config first, then run doctor again",
        ));
        None
    };
    engines::check(host, &cfg, &mut findings);
    if loaded.is_some() {
        cdi::check(host, &cfg, drv.as_ref(), &mut findings);
    }
    cgroups::check(host, &cfg, &mut findings);
    if let Some(user) = &opts.user {
        rootless::check(host, user, drv.as_ref(), &mut findings);
    }
    if opts.run {
        findings.push(live::check(host, loaded.as_ref(), drv.as_ref()));
    }
    Report { findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_puts_the_fix_under_its_finding_and_counts() {
        let r = Report {
            findings: vec![
                Finding::ok("driver.found", "driver 550.54.15"),
                Finding::fail("nvhook.config", "line 2: unknown field", "edit it"),
            ],
        };
        let t = r.text();
        assert!(t.contains("ok    driver.found   driver 550.54.15\n"), "{t}");
        assert!(t.contains("FAIL  nvhook.config  line 2"), "{t}");
        assert!(t.contains("fix: edit it"), "{t}");
        assert!(t.ends_with("1 ok, 0 warn, 1 fail\n"), "{t}");
        assert!(r.failed());
        assert_eq!(r.json()["findings"][1]["verdict"], "fail");
        assert_eq!(r.json()["findings"][0].get("fix"), None);
    }

    #[test]
    fn a_private_temp_dir_is_new_and_only_its_owners() {
        use std::os::unix::fs::PermissionsExt;
        let a = private_temp_dir("t").unwrap();
        let b = private_temp_dir("t").unwrap();
        assert_ne!(a, b);
        let m = std::fs::symlink_metadata(&a).unwrap();
        assert!(m.is_dir() && m.permissions().mode() & 0o777 == 0o700);
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }

    #[test]
    fn which_skips_relative_path_entries_and_reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let host = Host {
            path_env: ".::sh-is-not-here".into(),
            ..Host::under(d.path())
        };
        assert_eq!(host.which("sh"), None);
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            read_small(&fifo),
            None,
            "a FIFO is no file, and is not waited on"
        );
        std::fs::write(d.path().join("f"), "0123456789").unwrap();
        assert_eq!(read_head(&d.path().join("f"), 4).unwrap(), b"0123");
        std::os::unix::fs::symlink("f", d.path().join("l")).unwrap();
        assert_eq!(read_small(&d.path().join("l")), None, "no final link");
        let slow = output_within(
            std::process::Command::new("sleep").arg("10"),
            std::time::Duration::from_millis(200),
        );
        assert_eq!(slow.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        // more than a pipe holds, read while it runs
        let big = output_within(
            std::process::Command::new("head").args(["-c", "300000", "/dev/zero"]),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(big.stdout.len(), 300000);
    }

    #[test]
    fn under_moves_every_file_but_proc() {
        let h = Host::under(Path::new("/x"));
        assert_eq!(
            h.engines.docker_config,
            Path::new("/x/etc/docker/daemon.json")
        );
        assert_eq!(h.cdi_dirs[1], Path::new("/x/var/run/cdi"));
        assert_eq!(h.bin_dirs[1], Path::new("/x/usr/local/bin"));
        assert_eq!(h.proc, Path::new("/proc"));
    }
}
