//! The driver as the hook sees it: discovery under the configured roots, the loaded
//! module's `/proc` files, GPUs and MIG devices, device nodes and their modes, the
//! libraries a CUDA container cannot do without, firmware, NVML loaded as the hook
//! loads it, and the tools (ELF programs, not wrappers).

use super::Finding;
use crate::container::config::Config;
use crate::host::driver::{DeviceNode, Driver, BINARIES, BIN_DIRS};
use crate::host::ldcache::Arch;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Appends this section's findings; gives the driver where discovery found one.
pub fn check(cfg: &Config, out: &mut Vec<Finding>) -> Option<Driver> {
    let roots = crate::pipeline::roots(cfg);
    out.push(proc_files(&roots.proc_root));
    let d = match Driver::discover(&roots) {
        Ok(d) => d,
        Err(e) => {
            out.push(Finding::fail(
                "driver.found",
                format!("{e} (driver-root {})", cfg.driver_root.display()),
                "install the NVIDIA driver and load it (modprobe nvidia; nvidia-smi as root), or set driver-root/proc-root to where it is",
            ));
            return None;
        }
    };
    out.push(Finding::ok(
        "driver.found",
        format!(
            "NVIDIA driver {} (driver root {}, {} libraries, {} tools)",
            d.version,
            cfg.driver_root.display(),
            d.libraries.len(),
            d.binaries.len()
        ),
    ));
    out.push(gpus(&d));
    out.push(nodes(&d));
    out.push(libraries(&d));
    out.push(firmware(&d));
    out.push(nvml(&d));
    out.push(tools(&d, &cfg.driver_root));
    Some(d)
}

/// The module's files the hook reads: the version, and the GPUs' information.
pub fn proc_files(proc_root: &Path) -> Finding {
    let nv = proc_root.join("driver/nvidia");
    let read = std::fs::read_to_string(nv.join("version"))
        .map_err(|e| format!("{}: {e}", nv.join("version").display()))
        .and_then(|_| {
            std::fs::read_dir(nv.join("gpus"))
                .map_err(|e| format!("{}: {e}", nv.join("gpus").display()))
        });
    match read {
        Ok(_) => Finding::ok("driver.proc", format!("{} is readable", nv.display())),
        Err(e) => Finding::fail(
            "driver.proc",
            format!("cannot read the loaded module's files: {e}"),
            "load the kernel module (modprobe nvidia), or set proc-root where /proc is",
        ),
    }
}

fn gpus(d: &Driver) -> Finding {
    let excluded: Vec<&String> = d.warnings.iter().filter(|w| w.contains("exclu")).collect();
    if d.gpus.is_empty() {
        return Finding::fail(
            "driver.gpus",
            "the driver lists no GPU under /proc/driver/nvidia/gpus",
            "check `lspci -d 10de:` and `dmesg | grep -i nvrm`: the module did not take the GPUs",
        );
    }
    let list: Vec<String> = d
        .gpus
        .iter()
        .map(|g| format!("{} {} {}", g.index, g.model, g.bus_id))
        .collect();
    let mut saw = format!("{} GPU(s): {}", d.gpus.len(), list.join("; "));
    if !d.migs.is_empty() {
        saw.push_str(&format!("; {} MIG device(s)", d.migs.len()));
    }
    if !excluded.is_empty() {
        return Finding::warn(
            "driver.gpus",
            format!(
                "{saw}; {}",
                excluded
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "an excluded GPU is left out of containers until the driver takes it back",
        );
    }
    Finding::ok("driver.gpus", saw)
}

/// The control nodes and every GPU's node: present, character devices of the driver's
/// numbers (discovery checks that), and their modes (rootless users need rw).
fn nodes(d: &Driver) -> Finding {
    let mut missing = Vec::new();
    if d.nvidiactl.is_none() {
        missing.push("/dev/nvidiactl".to_string());
    }
    if d.uvm.is_none() {
        missing.push("/dev/nvidia-uvm (CUDA needs it)".to_string());
    }
    for g in d.gpus.iter().filter(|g| g.node.is_none()) {
        missing.push(format!("/dev/nvidia{} (GPU {})", g.minor, g.index));
    }
    let odd: Vec<String> = d
        .warnings
        .iter()
        .filter(|w| w.contains("character device"))
        .cloned()
        .collect();
    if !missing.is_empty() || !odd.is_empty() {
        let mut saw = missing
            .iter()
            .map(|m| format!("{m} missing"))
            .collect::<Vec<_>>();
        saw.extend(odd);
        return Finding::fail(
            "driver.nodes",
            saw.join("; "),
            "create them: nvidia-modprobe -u -c=0 (and -c=N per GPU), or run nvidia-smi once as root; load nvidia-uvm (modprobe nvidia-uvm)",
        );
    }
    let all: Vec<&DeviceNode> = [&d.nvidiactl, &d.uvm, &d.uvm_tools, &d.modeset]
        .into_iter()
        .flatten()
        .chain(d.gpus.iter().filter_map(|g| g.node.as_ref()))
        .collect();
    let modes: Vec<String> = all
        .iter()
        .map(|n| format!("{} {}", n.path, mode_of(&n.host_path)))
        .collect();
    let restricted: Vec<&String> = modes.iter().filter(|m| !m.ends_with("0666")).collect();
    if !restricted.is_empty() {
        return Finding::warn(
            "driver.nodes",
            format!(
                "{} node(s); not 0666: {}",
                all.len(),
                restricted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "fine for root engines; rootless users need rw: NVreg_DeviceFileMode=0666 (or a group they are in)",
        );
    }
    Finding::ok("driver.nodes", format!("{} node(s), all 0666", all.len()))
}

/// A node's mode and owner, as `ls -l` would put it shortly (`0660 root:video`).
fn mode_of(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) if m.mode() & 0o7777 == 0o666 => "0666".into(),
        Ok(m) => format!("{:04o} uid {} gid {}", m.mode() & 0o7777, m.uid(), m.gid()),
        Err(e) => e.to_string(),
    }
}

/// What a CUDA container needs at least: `libcuda.so` and `libnvidia-ml.so` of this
/// machine's architecture.
fn libraries(d: &Driver) -> Finding {
    let has = |prefix: &str| {
        d.libraries
            .iter()
            .any(|l| l.arch == Arch::Native && l.file_name.starts_with(prefix))
    };
    let missing: Vec<&str> = ["libcuda.so.", "libnvidia-ml.so."]
        .into_iter()
        .filter(|p| !has(p))
        .collect();
    if !missing.is_empty() {
        return Finding::fail(
            "driver.libraries",
            format!(
                "no {} of driver {} found (through the host's ld.so.cache, then the usual lib dirs)",
                missing.iter().map(|m| format!("{m}{}", d.version)).collect::<Vec<_>>().join(", "),
                d.version
            ),
            "install the driver's user-space libraries of the loaded version, then run ldconfig",
        );
    }
    let lib = d
        .libraries
        .iter()
        .find(|l| l.file_name.starts_with("libcuda.so."));
    Finding::ok(
        "driver.libraries",
        format!(
            "{} libraries, libcuda at {}",
            d.libraries.len(),
            lib.map(|l| l.host_path.display().to_string())
                .unwrap_or_default()
        ),
    )
}

fn firmware(d: &Driver) -> Finding {
    match d.firmware.first() {
        Some(f) => Finding::ok(
            "driver.firmware",
            format!("{} file(s) in {}", d.firmware.len(), f.host_path.parent().unwrap_or(Path::new("/")).display()),
        ),
        None => Finding::warn(
            "driver.firmware",
            format!("no GSP firmware of {} (lib/firmware/nvidia/{}/)", d.version, d.version),
            "GPUs that run GSP firmware need it on the host; containers get it where it exists (reinstall the driver's firmware package)",
        ),
    }
}

/// NVML, loaded from the driver's own library in an unprivileged child, as the hook
/// does for `NVIDIA_REQUIRE_*` and MIG UUIDs.
fn nvml(d: &Driver) -> Finding {
    let bus: Vec<_> = d.gpus.iter().map(|g| g.bus_id).collect();
    match crate::pipeline::ask_nvml(d, &bus, !d.migs.is_empty()) {
        Ok(a) => Finding::ok(
            "driver.nvml",
            format!(
                "NVML answered: CUDA {}, {} GPU(s)",
                a.cuda.as_deref().unwrap_or("?"),
                a.gpus.len()
            ),
        ),
        Err(e) => Finding::fail(
            "driver.nvml",
            format!("NVML does not load or answer: {e}"),
            "the driver's user-space libraries must match the loaded module (reinstall the driver, or reboot after an upgrade)",
        ),
    }
}

/// The driver's tools: the hook mounts only ELF programs; a wrapper script in their
/// place leaves containers without the tool.
fn tools(d: &Driver, driver_root: &Path) -> Finding {
    let found: Vec<&str> = d.binaries.iter().map(|b| b.name.as_str()).collect();
    let wrappers: Vec<String> = BINARIES
        .iter()
        .flat_map(|(_, names)| names.iter())
        .filter(|n| !found.contains(n))
        .flat_map(|n| {
            BIN_DIRS
                .iter()
                .map(move |dir| driver_root.join(dir).join(n))
        })
        .filter(|p| super::is_program(p) && !crate::host::driver::is_elf_executable(p))
        .map(|p| p.display().to_string())
        .collect();
    if !wrappers.is_empty() {
        return Finding::warn(
            "driver.tools",
            format!("not ELF programs (wrappers?), not mounted: {}", wrappers.join(", ")),
            "containers get the real programs only: install the driver's own tools (a wrapper's target in the bin/ beside the driver's libraries is found)",
        );
    }
    if !found.contains(&"nvidia-smi") {
        return Finding::warn(
            "driver.tools",
            "no nvidia-smi found: containers asking for utility get none",
            "install the driver's utilities (nvidia-utils)",
        );
    }
    Finding::ok(
        "driver.tools",
        format!("ELF programs: {}", found.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    #[test]
    fn a_host_without_the_module_fails_proc_and_discovery() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            proc_root: d.path().into(),
            driver_root: d.path().into(),
            dev_root: d.path().into(),
            ..Config::default()
        };
        let mut out = Vec::new();
        assert!(check(&cfg, &mut out).is_none());
        assert_eq!(out[0].check, "driver.proc");
        assert_eq!(out[0].verdict, Verdict::Fail, "{:?}", out[0]);
        assert_eq!(out[1].check, "driver.found");
        assert_eq!(out[1].verdict, Verdict::Fail, "{:?}", out[1]);
        assert!(
            out[1].saw.contains("NVIDIA driver not found"),
            "{:?}",
            out[1]
        );
    }
}
