//! The shim on calls it must not change: pass-through of argv, exit status and
//! output, and a clear error when no runtime is found.

mod common;
use common::*;
use std::process::Command;

#[test]
fn pass_through_matches_runc() {
    let f = fixtures();
    let state = tempfile::tempdir().unwrap();
    let root = state.path().display().to_string();
    let direct = Command::new("runc")
        .args(["--root", &root, "state", "no-such-container"])
        .output()
        .unwrap();
    let shim = Command::new(f.bin.join("nvhook-runtime"))
        .args(["--root", &root, "state", "no-such-container"])
        .env("NVHOOK_CONFIG", f.driver.join("config.toml"))
        .output()
        .unwrap();
    assert!(!direct.status.success());
    assert_eq!(shim.status.code(), direct.status.code());
    assert_eq!(shim.stdout, direct.stdout);
    let strip_time = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .split("msg=")
            .nth(1)
            .map(str::to_owned)
    };
    assert_eq!(strip_time(&shim.stderr), strip_time(&direct.stderr));

    let v1 = Command::new("runc").arg("--version").output().unwrap();
    let v2 = Command::new(f.bin.join("nvhook-runtime"))
        .arg("--version")
        .env("NVHOOK_CONFIG", f.driver.join("config.toml"))
        .output()
        .unwrap();
    // `--version`: nvhook's own line first, then exactly runc's output
    let own = format!("{}\n", shim_version_line());
    assert_eq!(v2.stdout, [own.as_bytes(), &v1.stdout[..]].concat());
    assert!(v2.status.success());
}

#[test]
fn missing_runtime_is_one_line_listing_candidates() {
    let f = fixtures();
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[runtime]\nruntimes = [\"no-such-runtime\", \"/nonexistent/runc\"]\n",
    )
    .unwrap();
    let log = d.path().join("runc.log");
    let o = Command::new(f.bin.join("nvhook-runtime"))
        .args([
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "x",
        ])
        .env("NVHOOK_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no-such-runtime") && err.contains("/nonexistent/runc"),
        "{err}"
    );
    // runc-style log for Docker/containerd
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("no-such-runtime"));
}

#[test]
fn bad_config_is_named() {
    let f = fixtures();
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    // the shim still runs runc for everything but a GPU container's start, and says
    // what is wrong with the file
    let o = shim_version_with(&cfg, "driver-rot = \"/\"\n");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("runc version"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: invalid config"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("driver-rot"));
    let o = Command::new(f.bin.join("nvhook"))
        .args(["info"])
        .env("NVHOOK_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("driver-rot"));
}

/// `nvhook-runtime --version`: nvhook's version and commit, then the runtime's own
/// lines, which a runc-style parser (Docker's: the last line holding "version", and
/// `commit:`) still reads as runc's.
#[test]
fn version_names_nvhook_then_the_runtime() {
    let d = tempfile::tempdir().unwrap();
    let o = shim_version_with(
        &d.path().join("c.toml"),
        "[runtime]\nruntimes = [\"runc\"]\n",
    );
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let first = out.lines().next().unwrap_or("");
    assert_eq!(first, shim_version_line());
    assert!(
        first.contains(env!("CARGO_PKG_VERSION")) && first.contains("(commit "),
        "{first}"
    );
    let parse = |text: &str| {
        let (mut name, mut version, mut commit) = (String::new(), String::new(), String::new());
        for l in text.lines() {
            if l.contains("version") {
                let parts: Vec<&str> = l.split("version").collect();
                name = parts[0].trim().to_string();
                version = parts[parts.len() - 1].trim().to_string();
            } else if let Some(c) = l.strip_prefix("commit:") {
                commit = c.trim().to_string();
            }
        }
        (name, version, commit)
    };
    let plain = Command::new("runc").arg("--version").output().unwrap();
    let plain = parse(&String::from_utf8_lossy(&plain.stdout));
    assert_eq!(parse(&out), plain, "{out}");
    assert_eq!(plain.0, "runc");
    // the commit is named (a hex id from this git checkout)
    let line = shim_version_line();
    let commit = line
        .split("(commit ")
        .nth(1)
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
}

/// `nvhook-runtime --version` with `config` written to `cfg` as its configuration.
fn shim_version_with(cfg: &std::path::Path, config: &str) -> std::process::Output {
    std::fs::write(cfg, config).unwrap();
    Command::new(fixtures().bin.join("nvhook-runtime"))
        .arg("--version")
        .env("NVHOOK_CONFIG", cfg)
        .output()
        .unwrap()
}

/// The line the built shim must print first: the built nvhook's own, renamed (both are
/// built from one commit; the test binary may have been rebuilt after a later commit).
fn shim_version_line() -> String {
    let o = Command::new(fixtures().bin.join("nvhook"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let rest = v.strip_prefix("nvhook ").unwrap_or_else(|| panic!("{v}"));
    assert!(rest.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
    format!("nvhook-runtime {rest}")
}

/// The shim has no Rust `main` (std's start-up is skipped for speed), so it opens fds
/// 0-2 on `/dev/null` itself where the caller closed them, as std would: the runtime
/// gets them open, and no file the shim opens can take stderr's place. It never execs
/// itself: not by its own path or a link (skipped), nor through a wrapper (stopped).
#[test]
fn closed_std_fds_are_opened_and_the_shim_never_runs_itself() {
    let f = fixtures();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("fds");
    let rt = d.path().join("runtime");
    std::fs::write(
        &rt,
        format!(
            "#!/bin/sh\nr=\"$(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2)\"\necho \"$r\" >{}\n",
            out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[runtime]\nruntimes = [\"{}\"]\n", rt.display()),
    )
    .unwrap();
    let shim = f.bin.join("nvhook-runtime");
    let st = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" state x <&- >&- 2>&-")
        .arg(&shim)
        .env("NVHOOK_CONFIG", &cfg)
        .status()
        .unwrap();
    assert!(st.success());
    let fds = std::fs::read_to_string(&out).unwrap();
    assert_eq!(fds, "/dev/null /dev/null /dev/null\n");

    // configured as its own runtime (by path, and by a link to it): skipped
    let link = d.path().join("runc");
    std::os::unix::fs::symlink(&shim, &link).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[runtime]\nruntimes = [\"{}\", \"{}\"]\n",
            shim.display(),
            link.display()
        ),
    )
    .unwrap();
    let o = Command::new(&shim)
        .args(["state", "x"])
        .env("NVHOOK_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no OCI runtime found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // a wrapper script that runs the shim (its own inode): the second pass stops
    let wrapper = d.path().join("runc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
exec {} \"$@\"\n",
            shim.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &cfg,
        format!("[runtime]\nruntimes = [\"{}\"]\n", wrapper.display()),
    )
    .unwrap();
    let o = Command::new("timeout")
        .arg("20")
        .arg(&shim)
        .args(["state", "x"])
        .env("NVHOOK_CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("leads back to nvhook-runtime"), "{err}");
}
