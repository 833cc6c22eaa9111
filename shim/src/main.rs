//! `nvhook-runtime`: a runc shim. For `create`/`run` of a container that asks for
//! GPUs it adds nvhook's hook to config.json; then, always, it execs the real runtime
//! with the argv unchanged, so exit status, signals and stdio are the runtime's own.
//!
//! It has no Rust `main`: std's start-up before `main` (a stack guard found by reading
//! `/proc/self/maps`, signal handlers for stack overflows, `SIGPIPE` ignored, fds 0-2
//! checked) cost 0.07 ms of every runtime call it passes through (measured on a static
//! build: 1.10 vs 1.03 ms for exec'ing `/bin/true`), and the shim needs only the last
//! of those, done below.
// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

mod args;

use nvhook::container::config::{Config, Loaded};
use nvhook::engines::spec_edit::{self, HookEntry};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Set for the runtime the shim execs. Seeing it means a configured runtime (a copy of
/// the shim, a wrapper script that runs it) led back here: without the check, every
/// runtime call would exec in a circle forever. runc gives its own environment neither
/// to hooks (their `env` is in config.json) nor to containers, so nothing else sees it.
const RUNTIME_ENV: &str = "NVHOOK_RUNTIME_SHIM";

/// The environment every inserted hook gets: never the runtime's, never the image's.
const HOOK_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The C entry point (see the module's doc). `std::env::args_os` still works: std reads
/// the arguments glibc gives its initialisers.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    nvhook::common::sys::open_std_fds();
    run()
}

/// In the unit tests' build: the harness runs, this is only kept compiled.
#[cfg(test)]
fn main() {
    nvhook::common::sys::open_std_fds();
    run()
}

fn run() -> ! {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let rest = &argv[1.min(argv.len())..];
    let parsed = args::parse(rest);
    let fail = |msg: String| -> ! {
        report(&parsed, Severity::Error, &msg);
        std::process::exit(1)
    };
    if std::env::var_os(RUNTIME_ENV).is_some() {
        fail(format!(
            "the runtime it runs leads back to nvhook-runtime ({RUNTIME_ENV} is set): a runtime in [runtime] runtimes, or on PATH as runc/crun, is a copy of it or a wrapper around it"
        ));
    }
    let creating = matches!(parsed.subcommand.as_deref(), Some("create" | "run"));
    let bundle = || {
        parsed
            .bundle
            .clone()
            .map(Ok)
            .unwrap_or_else(std::env::current_dir)
            .unwrap_or_else(|e| fail(format!("cannot find the bundle: {e}")))
    };
    // A broken configuration must never stop runc from listing, killing or deleting
    // containers (where the shim is the default runtime, nothing could be stopped): only
    // the start of a container that asks for GPUs needs it.
    let mut log_cfg = None;
    let mut did = "passed through";
    let runtimes = match Config::load(None) {
        Ok(loaded) => {
            if creating {
                match add_hook(&bundle(), &loaded) {
                    Ok(what) => did = what,
                    Err(e) => fail(e),
                }
            }
            log_cfg = Some(loaded.config.log.clone());
            loaded.config.runtime.runtimes
        }
        Err(e) => {
            if creating && asks_for_gpus(&bundle()) {
                fail(e.to_string());
            }
            runtimes_despite(&parsed, &e)
        }
    };
    let runtime = find_runtime(&runtimes).unwrap_or_else(|e| fail(e));
    if let Some(cfg) = &log_cfg {
        debug_record(
            cfg,
            &[
                ("runtime", runtime.display().to_string().into()),
                (
                    "command",
                    parsed.subcommand.clone().unwrap_or_default().into(),
                ),
                ("config_json", did.into()),
            ],
        );
    }
    if parsed.subcommand.is_none() && rest.iter().any(|a| a == "--version" || a == "-v") {
        // Who is in place first, then the runtime's own lines (tools that parse runc's
        // `--version`, such as `docker info`, take its later lines).
        println!("{}", nvhook::version_line("nvhook-runtime"));
        let _ = std::io::stdout().flush();
    }
    let err = std::process::Command::new(&runtime)
        .arg0(&runtime)
        .args(rest)
        .env(RUNTIME_ENV, "1")
        .exec();
    fail(format!("cannot execute {}: {err}", runtime.display()))
}

/// The runtimes to try when the configuration cannot be loaded: the file's own list
/// where it can still be read (a container made with crun must be killed and deleted by
/// crun), else the defaults; with a warning saying so.
fn runtimes_despite(parsed: &args::Parsed, e: &nvhook::container::config::Error) -> Vec<String> {
    let defaults =
        runtimes_of_broken_config().unwrap_or_else(|| Config::default().runtime.runtimes);
    report(
        parsed,
        Severity::Warning,
        &format!(
            "{e}; running {} with the default runtimes ({})",
            parsed.subcommand.as_deref().unwrap_or("the runtime"),
            defaults.join(", ")
        ),
    );
    defaults
}

/// How bad what the shim reports is (runc's log levels for it).
#[derive(Clone, Copy)]
enum Severity {
    Error,
    Warning,
}

/// Writes a one-line error to stderr and, runc-style, to the `--log` file, which is
/// what Docker and containerd show the user.
fn report(p: &args::Parsed, severity: Severity, msg: &str) {
    let level = match severity {
        Severity::Error => {
            eprintln!("nvhook-runtime: {msg}");
            "error"
        }
        Severity::Warning => {
            eprintln!("nvhook-runtime: warning: {msg}");
            "warning"
        }
    };
    let Some(log) = &p.log else { return };
    let time = nvhook::common::log::rfc3339(std::time::SystemTime::now());
    let line = if p.log_json {
        format!(
            "{}\n",
            serde_json::json!({"level": level, "msg": format!("nvhook-runtime: {msg}"), "time": time})
        )
    } else {
        format!(
            "time=\"{time}\" level={level} msg=\"nvhook-runtime: {}\"\n",
            msg.replace('"', "\\\"")
        )
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn hook_path(loaded: &Loaded) -> Result<PathBuf, String> {
    if let Some(p) = &loaded.config.runtime.hook_path {
        if !p.is_absolute() {
            return Err(format!("hook-path {} is not absolute", p.display()));
        }
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let hook = exe.with_file_name("nvhook");
    if !is_executable(&hook) {
        return Err(format!(
            "hook {} not found beside the shim (set [runtime] hook-path)",
            hook.display()
        ));
    }
    Ok(hook)
}

/// What the shim did to config.json, for its debug record.
fn add_hook(bundle: &Path, loaded: &Loaded) -> Result<&'static str, String> {
    let (mut spec, meta) = spec_edit::read(bundle).map_err(|e| e.to_string())?;
    let policy = loaded
        .config
        .policy()
        .map_err(|e| format!("configuration: {e}"))?;
    if !nvhook::container::request::Source::from_config(&spec).wants_gpus(&policy) {
        return Ok("left alone: no GPU request");
    }
    let path = hook_path(loaded)?;
    // The hook runs as root on every start: refuse one someone else could have replaced.
    nvhook::common::trust::check_root_owned("hook", &path).map_err(|e| e.to_string())?;
    let stage = loaded.config.runtime.stage;
    let mut args = vec!["nvhook".to_string()];
    if let Some(c) = &loaded.path {
        let c = std::path::absolute(c).unwrap_or_else(|_| c.clone());
        args.extend(["--config".to_string(), c.display().to_string()]);
    }
    args.push(stage.subcommand().to_string());
    // The hook's environment is explicit (never the runtime's or the image's); the
    // operator's one-run level override is passed on, when it names a level.
    let mut env = vec![HOOK_PATH_ENV.to_string()];
    if let Ok(level) = std::env::var(nvhook::common::log::LEVEL_ENV) {
        if nvhook::common::log::level_named(&level).is_some() {
            env.push(format!("{}={level}", nvhook::common::log::LEVEL_ENV));
        }
    }
    let entry = HookEntry {
        path: path.display().to_string(),
        args,
        env,
    };
    let config_path = bundle.join("config.json");
    let changed = spec_edit::add_hook(&mut spec, stage, &entry)
        .map_err(|m| format!("{} is not a valid OCI config: {m}", config_path.display()))?;
    if !changed {
        return Ok("left alone: a GPU hook is there already");
    }
    spec_edit::write_atomic(bundle, &spec, &meta).map_err(|e| e.to_string())?;
    Ok("hook inserted")
}

/// A debug record of what the shim did, in nvhook's log (`[log]`, or
/// `/var/log/nvhook.log`), when the level is debug. Never fails the call.
fn debug_record(cfg: &nvhook::common::log::LogConfig, fields: &[(&str, serde_json::Value)]) {
    if nvhook::common::log::effective_level(cfg) < nvhook::common::log::Level::Debug {
        return;
    }
    let Some(mut f) = nvhook::common::log::open_file(cfg, "nvhook-runtime") else {
        return;
    };
    let line = nvhook::common::log::format_record(
        cfg.format,
        nvhook::common::log::Level::Debug,
        "nvhook-runtime",
        "exec",
        fields,
        std::time::SystemTime::now(),
    );
    let _ = f.write_all(line.as_bytes());
}

/// `[runtime] runtimes` of a configuration file that does not load as a whole (a typo
/// elsewhere), read as plain TOML.
fn runtimes_of_broken_config() -> Option<Vec<String>> {
    let (path, _) = nvhook::container::config::chosen_path(None);
    let text = std::fs::read_to_string(path).ok()?;
    let t: toml::Table = toml::from_str(&text).ok()?;
    let list: Vec<String> = t
        .get("runtime")?
        .get("runtimes")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    (!list.is_empty()).then_some(list)
}

/// Whether a bundle's config.json asks for GPUs in any form nvhook could honour (the
/// variable, volume mounts, CDI annotations), read without a configuration: used only
/// to decide whether a broken configuration must stop this start.
fn asks_for_gpus(bundle: &Path) -> bool {
    let Ok((spec, _)) = spec_edit::read(bundle) else {
        return true; // the runtime would fail on it anyway; say why the config is bad
    };
    let source = nvhook::container::request::Source::from_config(&spec);
    // Docker Swarm's generic resources too (`swarm-resource` may name any of them)
    let swarm: Vec<String> = source
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("DOCKER_RESOURCE_"))
        .map(str::to_owned)
        .collect();
    let widest = nvhook::container::request::Policy {
        accept_volume_mounts: true,
        accept_cdi_annotations: true,
        swarm_resources: swarm,
        ..Default::default()
    };
    source.wants_gpus(&widest)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first candidate found: absolute paths as they are, names on `PATH`. The shim
/// itself is skipped (compared by device and inode, so a hard link or a bind mount of
/// it under another name is seen through); a copy or a wrapper script that leads back
/// to it is caught by `RUNTIME_ENV` instead.
fn find_runtime(candidates: &[String]) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && m.permissions().mode() & 0o111 != 0 && Some((m.dev(), m.ino())) != me
        })
    };
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // Only absolute PATH entries: a relative one would depend on the caller's directory.
    let path = std::env::join_paths(std::env::split_paths(&path).filter(|d| d.is_absolute()))
        .unwrap_or_default();
    for c in candidates {
        if c.contains('/') {
            let p = PathBuf::from(c);
            if p.is_absolute() && runnable(&p) {
                return Ok(p);
            }
            continue;
        }
        if let Ok(mut found) = which::which_in_all(c, Some(&path), "/") {
            if let Some(p) = found.find(|p| runnable(p)) {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no OCI runtime found (tried {} on PATH)",
        candidates.join(", ")
    ))
}
