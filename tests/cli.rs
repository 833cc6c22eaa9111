//! `nvhook plan`, `nvhook info` and the hook run by hand with `--state`.

mod common;
use common::*;
use std::process::Command;

fn nvhook(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(fixtures().bin.join("nvhook"))
        .args(args)
        .env("NVHOOK_CONFIG", config)
        .output()
        .unwrap()
}

#[test]
fn info_lists_the_synthetic_driver() {
    let cfg = fixtures().driver.join("config.toml");
    let o = nvhook(&["info", "--json"], &cfg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "550.54.14");
    let gpus = v["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    for (i, g) in gpus.iter().enumerate() {
        assert_eq!(g["index"], i);
        assert_eq!(g["uuid"], gpu_uuid(i as u32));
        assert_eq!(g["minor"], gpu_minor(i as u32));
        assert_eq!(g["node"]["major"], 195);
    }
    let libs: Vec<&str> = v["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["file_name"].as_str().unwrap())
        .collect();
    assert!(libs.contains(&"libcuda.so.550.54.14"));
    assert!(
        !libs
            .iter()
            .any(|l| l.contains("old") || l.contains("libz-fake")),
        "{libs:?}"
    );
    assert_eq!(
        v["sockets"][0]["path"],
        "/var/run/nvidia-persistenced/socket"
    );
    assert_eq!(v["firmware"].as_array().unwrap().len(), 2);
    let text = nvhook(&["info"], &cfg);
    assert!(String::from_utf8_lossy(&text.stdout).contains("driver version: 550.54.14"));
}

#[test]
fn plan_of_two_gpus() {
    let c = Container::new(Flavor::Debian, &["NVIDIA_VISIBLE_DEVICES=0,3"], "true");
    let state = c.tmp.path().join("state.json");
    std::fs::write(
        &state,
        format!(
            r#"{{"ociVersion":"1.0.2","id":"{}","status":"creating","pid":1,"bundle":"{}"}}"#,
            c.id,
            c.bundle.display()
        ),
    )
    .unwrap();
    let before = std::fs::read_dir(&c.rootfs).unwrap().count();
    let o = nvhook(&["plan", "--state", state.to_str().unwrap()], &c.config);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["plan"];
    let uuids: Vec<&str> = p["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, [gpu_uuid(0), gpu_uuid(3)]);
    let devs: Vec<&str> = p["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        devs,
        [
            "/dev/nvidiactl",
            "/dev/nvidia3",
            "/dev/nvidia0",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools"
        ]
    );
    assert!(p["mounts"].as_array().unwrap().iter().any(|m| m["target"]
        == "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14"
        && m["flags"] == serde_json::json!(["ro", "nosuid", "nodev"])));
    assert_eq!(
        p["cgroup"][1],
        serde_json::json!({"type": "c", "major": 195, "minor": 3, "access": "rw"})
    );
    assert_eq!(p["ldconfig"]["path"], "/sbin/ldconfig");
    assert_eq!(
        std::fs::read_dir(&c.rootfs).unwrap().count(),
        before,
        "plan changed nothing"
    );
    // the same state with no request: a null plan
    let c2 = Container::new(Flavor::Debian, &[], "true");
    std::fs::write(
        &state,
        format!(r#"{{"id":"x","bundle":"{}"}}"#, c2.bundle.display()),
    )
    .unwrap();
    let o = nvhook(&["plan", "--state", state.to_str().unwrap()], &c.config);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["plan"].is_null());
}

#[test]
fn hook_errors_are_one_line() {
    let cfg = fixtures().driver.join("config.toml");
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("s.json");
    for (content, needle) in [
        ("{not json", "malformed container state"),
        (
            r#"{"id":"x","bundle":"/nonexistent-bundle"}"#,
            "/nonexistent-bundle/config.json",
        ),
    ] {
        std::fs::write(&state, content).unwrap();
        for sub in ["prestart", "createRuntime", "create-runtime"] {
            let o = nvhook(&[sub, "--state", state.to_str().unwrap()], &cfg);
            assert_eq!(o.status.code(), Some(1));
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }
    // stdin is read when --state is absent
    let mut child = Command::new(fixtures().bin.join("nvhook"))
        .arg("prestart")
        .env("NVHOOK_CONFIG", &cfg)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"[]").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed container state"));
}

/// `nvhook plan` needs no root where its inputs are readable.
#[test]
fn plan_without_root() {
    use std::os::unix::fs::PermissionsExt;
    let c = Container::new(Flavor::Rhel, &["NVIDIA_VISIBLE_DEVICES=1"], "true");
    for p in [c.tmp.path(), c.bundle.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for p in [c.config.as_path(), &c.bundle.join("config.json")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let state = c.tmp.path().join("state.json");
    std::fs::write(
        &state,
        format!(r#"{{"id":"{}","bundle":"{}"}}"#, c.id, c.bundle.display()),
    )
    .unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(fixtures().bin.join("nvhook"))
        .args([
            "--config",
            c.config.to_str().unwrap(),
            "plan",
            "--state",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plan"]["gpus"][0]["uuid"], gpu_uuid(1));
    assert!(v["plan"]["mounts"][0]["target"]
        .as_str()
        .unwrap()
        .starts_with("/usr/lib64/"));
}

/// With no nvhook configuration, NVIDIA's is read and translated, and the keys nvhook
/// does not honour are named.
#[test]
fn nvidia_config_is_read_when_nvhooks_is_absent() {
    let d = tempfile::tempdir().unwrap();
    let nv = d.path().join("config.toml");
    std::fs::write(&nv, "accept-nvidia-visible-devices-as-volume-mounts = true\n[nvidia-container-cli]\nroot = \"/run/nvidia/driver\"\nload-kmods = true\n[nvidia-container-runtime]\nruntimes = [\"crun\"]\n").unwrap();
    let o = Command::new(fixtures().bin.join("nvhook"))
        .arg("config")
        .env_remove("NVHOOK_CONFIG")
        .env("NVHOOK_NVIDIA_CONFIG", &nv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nvidia-file"], nv.display().to_string());
    assert_eq!(v["config"]["driver-root"], "/run/nvidia/driver");
    assert_eq!(
        v["config"]["accept-nvidia-visible-devices-as-volume-mounts"],
        true
    );
    assert_eq!(v["config"]["runtime"]["runtimes"][0], "crun");
    assert!(
        v["warnings"]
            .to_string()
            .contains("nvidia-container-cli.load-kmods"),
        "{v}"
    );
}

/// Output into a pipe whose reader is gone (`nvhook info | head -0`) ends quietly, not
/// with a panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let cfg = fixtures().driver.join("config.toml");
    let o = Command::new("sh")
        .arg("-c")
        .arg("exec 3>&1; ( sleep 0.3; \"$0\" info --json; echo \"rc=$?\" >&3 ) | true")
        .arg(fixtures().bin.join("nvhook"))
        .env("NVHOOK_CONFIG", &cfg)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!err.contains("panicked"), "{err}");
    // killed by SIGPIPE, as `cat` would be: the shell reports 141
    assert!(out.contains("rc=141"), "{out}{err}");
}
