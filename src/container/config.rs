//! The one TOML configuration file shared by the shim and the hook.
//!
//! Every host input is a key here so tests can point nvhook at a synthetic driver
//! and production keeps the real paths as defaults.

use crate::common::log::{Level, LogConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the configuration is read from when no `--config` flag names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/nvhook/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "NVHOOK_CONFIG";
/// NVIDIA's configuration, read when nvhook has none of its own.
pub const NVIDIA_CONFIG_PATH: &str = "/etc/nvidia-container-runtime/config.toml";
/// Overrides [`NVIDIA_CONFIG_PATH`] (tests, unusual installs).
pub const NVIDIA_CONFIG_ENV: &str = "NVHOOK_NVIDIA_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("ldconfig = {0:?} names a binary inside the container: image code would run as root; use \"@/sbin/ldconfig\" (the host's), or set allow-ldconfig-from-container = true to accept the risk")]
    LdconfigInContainer(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Who updates the container's `ld.so.cache` after nvhook mounted the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LdCache {
    /// nvhook itself: the entries and links ldconfig would add, the rest kept.
    #[default]
    Nvhook,
    /// The configured `ldconfig`, in its sandbox, over the whole image's libraries.
    Ldconfig,
}

/// Which OCI hook stage the shim registers nvhook in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum Stage {
    #[default]
    #[serde(rename = "prestart")]
    Prestart,
    #[serde(rename = "createRuntime")]
    CreateRuntime,
}

impl Stage {
    /// The key of `hooks` in config.json for this stage.
    pub fn spec_key(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
        }
    }
    /// The hook subcommand that serves this stage.
    pub fn subcommand(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "create-runtime",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Candidates for the real OCI runtime: names looked up on `PATH`, or absolute paths.
    pub runtimes: Vec<String>,
    /// Absolute path of the hook binary; `None` means `nvhook` beside the shim.
    pub hook_path: Option<PathBuf>,
    pub stage: Stage,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            // NVIDIA's default since v1.18 (`docker-runc` first was a leftover).
            runtimes: vec!["runc".into(), "crun".into()],
            hook_path: None,
            stage: Stage::Prestart,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub driver_root: PathBuf,
    pub dev_root: PathBuf,
    pub proc_root: PathBuf,
    /// Where the kernel's custom firmware search path is read
    /// (`module/firmware_class/parameters/path`).
    pub sys_root: PathBuf,
    /// `@/path` runs the host binary; a plain path names a binary inside the container.
    pub ldconfig: String,
    /// Who updates the container's loader cache: `nvhook` (default) or `ldconfig`.
    pub ld_cache: LdCache,
    /// Lets `ldconfig` name a binary inside the container (image code, run as the
    /// container's root in the sandbox). Off: such a setting is refused.
    pub allow_ldconfig_from_container: bool,
    /// The MPS daemon's pipe directory on the host (under the driver root), bound
    /// read-write into compute containers when it is root-owned and safe.
    pub mps_pipe_directory: String,
    /// Run ldconfig in a user namespace of its own (on by default). Off only for hosts
    /// where user namespaces are disabled (`user.max_user_namespaces = 0`): the rest of
    /// the sandbox (PID, IPC, mount, network, UTS namespaces, two capabilities, seccomp)
    /// stays.
    pub ldconfig_user_namespace: bool,
    /// Seconds ldconfig may run before it is killed and the start fails.
    pub ldconfig_timeout: u64,
    pub no_cgroups: bool,
    /// A bpffs directory where cgroup v2 device programs, once loaded, are pinned for
    /// the next start with the same devices (empty: load every time).
    pub device_program_cache: String,
    /// systemd's private D-Bus socket: a container's scope is told of its GPU nodes
    /// there (`DeviceAllow=`), so `systemctl daemon-reload` keeps them (empty: never).
    pub systemd_socket: String,
    /// Skip all `NVIDIA_REQUIRE_*` checks (as `NVIDIA_DISABLE_REQUIRE` does per container).
    pub disable_require: bool,
    /// NVIDIA's policy keys for where a device list may come from (see `request::Policy`).
    #[serde(rename = "accept-nvidia-visible-devices-envvar-when-unprivileged")]
    pub accept_envvar_when_unprivileged: bool,
    #[serde(rename = "accept-nvidia-visible-devices-as-volume-mounts")]
    pub accept_volume_mounts: bool,
    pub accept_cdi_annotations: bool,
    /// What `NVIDIA_DRIVER_CAPABILITIES=all` means.
    pub supported_driver_capabilities: String,
    /// Docker Swarm: comma list of variables read instead of `NVIDIA_VISIBLE_DEVICES`.
    pub swarm_resource: Option<String>,
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            driver_root: "/".into(),
            dev_root: "/".into(),
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            ldconfig: default_ldconfig(Path::new("/")),
            ld_cache: LdCache::Nvhook,
            allow_ldconfig_from_container: false,
            mps_pipe_directory: "/tmp/nvidia-mps".into(),
            ldconfig_timeout: 30,
            ldconfig_user_namespace: true,
            no_cgroups: false,
            device_program_cache: "/sys/fs/bpf/nvhook".into(),
            systemd_socket: "/run/systemd/private".into(),
            disable_require: false,
            accept_envvar_when_unprivileged: true,
            accept_volume_mounts: false,
            accept_cdi_annotations: false,
            supported_driver_capabilities: "compat32,compute,display,graphics,ngx,utility,video"
                .into(),
            swarm_resource: None,
            runtime: RuntimeConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// A loaded configuration and the file it came from (if any), so the shim can hand the
/// same file to the hook it registers.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// An nvhook configuration file (what `--config` can be given).
    pub path: Option<PathBuf>,
    /// NVIDIA's configuration file, when the settings were translated from it.
    pub nvidia_path: Option<PathBuf>,
    /// Keys of NVIDIA's file that nvhook does not honour.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let c: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: located(text, &e),
        })?;
        c.validate(path)?;
        Ok(c)
    }

    /// What parsing alone does not catch, caught at load (where a broken configuration
    /// is handled as one: only a GPU container's start fails), not at every use.
    fn validate(&self, path: &Path) -> Result<()> {
        crate::container::request::parse_capabilities(&self.supported_driver_capabilities).map_err(|e| {
            Error::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "supported-driver-capabilities = {:?}: {}",
                    self.supported_driver_capabilities,
                    match e {
                        crate::container::request::Error::UnknownCapability(c) => format!(
                            "unknown capability {c:?} (known: compute, compat32, display, graphics, ngx, utility, video, all)"
                        ),
                        e => e.to_string(),
                    }
                ),
            }
        })?;
        for (key, value) in [
            ("device-program-cache", &self.device_program_cache),
            ("systemd-socket", &self.systemd_socket),
        ] {
            if !(value.is_empty() || value.starts_with('/')) {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "{key} = {value:?}: must be an absolute path, or \"\" for none"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Loads from `flag`, else `$NVHOOK_CONFIG`, else the default path; only a missing
    /// default file means defaults, a missing named file is an error.
    pub fn load(flag: Option<&Path>) -> Result<Loaded> {
        let (path, explicit) = chosen_path(flag);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Loaded {
                config: Config::parse(&text, &path)?,
                path: Some(path),
                nvidia_path: None,
                warnings: Vec::new(),
            }),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                let nv = std::env::var_os(NVIDIA_CONFIG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(NVIDIA_CONFIG_PATH));
                match std::fs::read_to_string(&nv) {
                    Ok(text) => {
                        let (config, warnings) = Config::from_nvidia(&text, &nv)?;
                        config.validate(&nv)?;
                        Ok(Loaded {
                            config,
                            path: None,
                            nvidia_path: Some(nv),
                            warnings,
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded {
                        config: Config::default(),
                        path: None,
                        nvidia_path: None,
                        warnings: Vec::new(),
                    }),
                    Err(source) => Err(Error::Read { path: nv, source }),
                }
            }
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// Translates NVIDIA's `config.toml` (nvidia-container-toolkit) into nvhook's
    /// settings, so a host can switch without rewriting its configuration. Returns the
    /// keys that have no meaning for nvhook, for a warning each.
    pub fn from_nvidia(text: &str, path: &Path) -> Result<(Config, Vec<String>)> {
        use toml::Value;
        let mut tr = Translation {
            path,
            warnings: Vec::new(),
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| tr.err(e.message().to_string()))?;
        let mut c = Config::default();
        for (k, v) in &table {
            match (k.as_str(), v) {
                ("accept-nvidia-visible-devices-envvar-when-unprivileged", v) => {
                    c.accept_envvar_when_unprivileged = tr.bool(k, v)?
                }
                ("accept-nvidia-visible-devices-as-volume-mounts", v) => {
                    c.accept_volume_mounts = tr.bool(k, v)?
                }
                ("disable-require", v) => c.disable_require = tr.bool(k, v)?,
                ("supported-driver-capabilities", v) => {
                    c.supported_driver_capabilities = tr.string(k, v)?
                }
                ("nvidia-container-cli", Value::Table(t)) => tr.cli(&mut c, t)?,
                ("nvidia-container-runtime", Value::Table(t)) => tr.runtime(&mut c, t)?,
                ("nvidia-container-runtime-hook", Value::Table(t)) => tr.hook(&mut c, t)?,
                ("features", Value::Table(t)) => tr.features(&mut c, t)?,
                _ => tr.ignore(k),
            }
        }
        Ok((c, tr.warnings))
    }

    /// The request policy these keys describe.
    pub fn policy(
        &self,
    ) -> std::result::Result<crate::container::request::Policy, crate::container::request::Error>
    {
        Ok(crate::container::request::Policy {
            accept_envvar_when_unprivileged: self.accept_envvar_when_unprivileged,
            accept_volume_mounts: self.accept_volume_mounts,
            accept_cdi_annotations: self.accept_cdi_annotations,
            supported: crate::container::request::parse_capabilities(
                &self.supported_driver_capabilities,
            )?,
            swarm_resources: self
                .swarm_resource
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The device program cache's directory; `None` when turned off.
    pub fn device_program_cache(&self) -> Option<&Path> {
        Some(Path::new(&self.device_program_cache)).filter(|p| !p.as_os_str().is_empty())
    }

    pub fn systemd_socket(&self) -> Option<&Path> {
        Some(Path::new(&self.systemd_socket)).filter(|p| !p.as_os_str().is_empty())
    }

    /// How long ldconfig may run (at least a second).
    pub fn ldconfig_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ldconfig_timeout.max(1))
    }

    /// The ldconfig setting the plan carries: checked where it will run
    /// (`ld-cache = "ldconfig"`); with nvhook's own cache update it never runs, and a
    /// setting that would be refused stops nothing.
    pub fn ldconfig_for_plan(&self) -> Result<&str> {
        match self.ld_cache {
            LdCache::Nvhook => Ok(&self.ldconfig),
            LdCache::Ldconfig => self.ldconfig_checked(),
        }
    }

    /// The `ldconfig` setting, refused when it names a binary in the container and
    /// `allow-ldconfig-from-container` is off (NVIDIA refuses the same).
    pub fn ldconfig_checked(&self) -> Result<&str> {
        match split_ldconfig(&self.ldconfig) {
            (false, _) if !self.allow_ldconfig_from_container => {
                Err(Error::LdconfigInContainer(self.ldconfig.clone()))
            }
            _ => Ok(&self.ldconfig),
        }
    }

    /// The ldconfig to run: `(true, path)` for a host binary, `(false, path)` for one in
    /// the container.
    pub fn ldconfig_target(&self) -> (bool, &str) {
        split_ldconfig(&self.ldconfig)
    }
}

/// A TOML error with the line it is on: serde's message for a misspelt key names the
/// key and every valid one, but not where the key is.
fn located(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(s) => format!(
            "line {}: {}",
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
            e.message()
        ),
        None => e.message().to_string(),
    }
}

/// nvhook's configuration file: `flag`, else `$NVHOOK_CONFIG`, else the default path;
/// and whether it was named (a named file must exist).
pub fn chosen_path(flag: Option<&Path>) -> (PathBuf, bool) {
    let env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
    match (flag, env) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(e)) => (PathBuf::from(e), true),
        (None, None) => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

/// The host's ldconfig under `root`: Ubuntu and its derivatives ship `/sbin/ldconfig`
/// as a shell wrapper around the static `/sbin/ldconfig.real` (NVIDIA's packages there
/// default to it too); elsewhere `/sbin/ldconfig` is the static binary.
pub fn default_ldconfig(root: &Path) -> String {
    if root.join("sbin/ldconfig.real").is_file() {
        "@/sbin/ldconfig.real".into()
    } else {
        "@/sbin/ldconfig".into()
    }
}

/// Reads an `ldconfig` setting: `@/path` is a host binary, a plain path one in the
/// container.
pub fn split_ldconfig(spec: &str) -> (bool, &str) {
    match spec.strip_prefix('@') {
        Some(p) => (true, p),
        None => (false, spec),
    }
}

/// NVIDIA's `config.toml` being translated: its path (for messages) and the keys that
/// mean nothing to nvhook, a warning each.
struct Translation<'a> {
    path: &'a Path,
    warnings: Vec<String>,
}

impl Translation<'_> {
    fn err(&self, message: String) -> Error {
        Error::Parse {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn ignore(&mut self, key: &str) {
        self.warnings.push(format!(
            "{}: {key} is not honoured by nvhook",
            self.path.display()
        ))
    }

    fn string(&self, k: &str, v: &toml::Value) -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err(format!("{k} must be a string")))
    }

    fn bool(&self, k: &str, v: &toml::Value) -> Result<bool> {
        v.as_bool()
            .ok_or_else(|| self.err(format!("{k} must be a boolean")))
    }

    /// `[nvidia-container-cli]`: the driver root, ldconfig, cgroups, the debug log.
    fn cli(&mut self, c: &mut Config, t: &toml::Table) -> Result<()> {
        for (k2, v2) in t {
            let key = format!("nvidia-container-cli.{k2}");
            match k2.as_str() {
                "root" => c.driver_root = self.string(&key, v2)?.into(),
                "ldconfig" => c.ldconfig = self.string(&key, v2)?,
                "no-cgroups" => c.no_cgroups = self.bool(&key, v2)?,
                "debug" => c.log.file = Some(self.string(&key, v2)?.into()),
                _ => self.ignore(&key),
            }
        }
        Ok(())
    }

    /// `[nvidia-container-runtime]`: the runtimes and the log level (legacy and auto
    /// modes are what nvhook does anyway).
    fn runtime(&mut self, c: &mut Config, t: &toml::Table) -> Result<()> {
        for (k2, v2) in t {
            let key = format!("nvidia-container-runtime.{k2}");
            match k2.as_str() {
                "runtimes" => {
                    c.runtime.runtimes = v2
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .ok_or_else(|| self.err(format!("{key} must be an array of strings")))?
                }
                "log-level" => {
                    c.log.level = match self.string(&key, v2)?.as_str() {
                        "debug" | "trace" => Level::Debug,
                        "warn" | "warning" => Level::Warn,
                        "error" | "fatal" | "panic" => Level::Error,
                        _ => Level::Info,
                    }
                }
                "mode" if matches!(v2.as_str(), Some("legacy" | "auto")) => {}
                _ => self.ignore(&key),
            }
        }
        Ok(())
    }

    /// `[nvidia-container-runtime-hook]`: the hook's path.
    fn hook(&mut self, c: &mut Config, t: &toml::Table) -> Result<()> {
        for (k2, v2) in t {
            let key = format!("nvidia-container-runtime-hook.{k2}");
            match k2.as_str() {
                // NVIDIA's hook name: nvhook answers to it through a link.
                "path" => c.runtime.hook_path = Some(self.string(&key, v2)?.into()),
                "skip-mode-detection" => {}
                _ => self.ignore(&key),
            }
        }
        Ok(())
    }

    /// `[features]`: only `allow-ldconfig-from-container` means something here.
    fn features(&mut self, c: &mut Config, t: &toml::Table) -> Result<()> {
        for (k2, v2) in t {
            let key = format!("features.{k2}");
            match k2.as_str() {
                "allow-ldconfig-from-container" => {
                    c.allow_ldconfig_from_container = self.bool(&key, v2)?
                }
                _ => self.ignore(&key),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::log::Format;

    #[test]
    fn device_program_cache_is_absolute_or_off() {
        let p = Path::new("c.toml");
        assert_eq!(
            Config::default().device_program_cache(),
            Some(Path::new("/sys/fs/bpf/nvhook"))
        );
        let off = Config::parse("device-program-cache = \"\"", p).unwrap();
        assert_eq!(off.device_program_cache(), None);
        let e = Config::parse("device-program-cache = \"bpf/nvhook\"", p).unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
    }

    #[test]
    fn a_misspelt_key_is_named_with_its_line_and_the_valid_keys() {
        let text = "driver-root = \"/\"\n\nld-cahce = \"nvhook\"\n";
        let e = Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config c.toml: line 3: unknown field `ld-cahce`"),
            "{e}"
        );
        assert!(
            e.contains("`ld-cache`") && e.contains("`driver-root`"),
            "{e}"
        );
        let e = Config::parse("[log]\nlevle = \"debug\"\n", Path::new("c.toml")).unwrap_err();
        assert!(
            e.to_string().contains("line 2: unknown field `levle`"),
            "{e}"
        );
    }

    #[test]
    fn defaults_from_empty_file() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.runtime.runtimes, ["runc", "crun"]);
        assert_eq!(c.ldconfig, default_ldconfig(Path::new("/")));
        assert!(c.ldconfig_target().0, "the host's ldconfig by default");
    }

    #[test]
    fn all_keys() {
        let c = Config::parse(
            r#"
driver-root = "/d"
dev-root = "/e"
proc-root = "/p"
ldconfig = "/sbin/ldconfig"
ldconfig-timeout = 5
no-cgroups = true
mps-pipe-directory = "/run/mps"
[runtime]
runtimes = ["/usr/bin/runc"]
hook-path = "/opt/nvhook"
stage = "createRuntime"
[log]
file = "/var/log/nvhook.log"
level = "debug"
format = "json"
"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.driver_root, Path::new("/d"));
        assert_eq!(c.dev_root, Path::new("/e"));
        assert_eq!(c.proc_root, Path::new("/p"));
        assert!(c.no_cgroups);
        assert_eq!(c.ldconfig_timeout, 5);
        assert_eq!(c.mps_pipe_directory, "/run/mps");
        assert_eq!(c.ldconfig_target(), (false, "/sbin/ldconfig"));
        assert_eq!(c.runtime.stage, Stage::CreateRuntime);
        assert_eq!(
            c.runtime.hook_path.as_deref(),
            Some(Path::new("/opt/nvhook"))
        );
        assert_eq!(c.log.level, Level::Debug);
        assert_eq!(c.log.format, Format::Json);
    }

    #[test]
    fn bad_supported_capabilities_fail_at_load() {
        let e = Config::parse(
            "supported-driver-capabilities = \"compute,gaming\"",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("supported-driver-capabilities") && e.contains("gaming"),
            "{e}"
        );
        assert!(!e.contains("NVIDIA_DRIVER_CAPABILITIES"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("driver-rot = \"/\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("driver-rot"), "{e}");
        let e = Config::parse("[runtime]\nstages = 1", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("stages"), "{e}");
        let e = Config::parse("[runtime]\nstage = \"poststart\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("poststart"), "{e}");
    }

    #[test]
    fn nvidia_config_translated() {
        let text = r#"
accept-nvidia-visible-devices-as-volume-mounts = true
accept-nvidia-visible-devices-envvar-when-unprivileged = false
disable-require = false
supported-driver-capabilities = "compute,utility"
swarm-resource = "DOCKER_RESOURCE_GPU"

[nvidia-container-cli]
environment = []
ldconfig = "@/sbin/ldconfig.real"
load-kmods = true
root = "/run/nvidia/driver"
no-cgroups = false

[nvidia-container-runtime]
log-level = "debug"
mode = "auto"
runtimes = ["docker-runc", "runc", "crun"]

[nvidia-container-runtime.modes.cdi]
default-kind = "nvidia.com/gpu"

[nvidia-container-runtime-hook]
path = "/usr/bin/nvidia-container-runtime-hook"
skip-mode-detection = false
"#;
        let (c, w) =
            Config::from_nvidia(text, Path::new("/etc/nvidia-container-runtime/config.toml"))
                .unwrap();
        assert_eq!(c.driver_root, Path::new("/run/nvidia/driver"));
        assert_eq!(c.ldconfig, "@/sbin/ldconfig.real");
        assert!(c.accept_volume_mounts && !c.accept_envvar_when_unprivileged);
        assert_eq!(c.supported_driver_capabilities, "compute,utility");
        assert_eq!(c.log.level, Level::Debug);
        assert_eq!(
            c.runtime.hook_path.as_deref(),
            Some(Path::new("/usr/bin/nvidia-container-runtime-hook"))
        );
        let w = w.join("\n");
        for key in [
            "swarm-resource",
            "nvidia-container-cli.environment",
            "nvidia-container-cli.load-kmods",
            "nvidia-container-runtime.modes",
        ] {
            assert!(w.contains(key), "{key} not warned about: {w}");
        }
        assert!(!w.contains("runtimes") && !w.contains(".root"), "{w}");
        assert!(Config::from_nvidia("[nvidia-container-cli]\nroot = 1\n", Path::new("x")).is_err());
    }

    /// The packaged /etc/nvhook/config.toml: all comments, so the defaults; and every
    /// commented key, uncommented, is a valid setting.
    #[test]
    fn shipped_config_is_the_defaults_and_documents_valid_keys() {
        let text = include_str!("../../deploy/config.toml");
        assert_eq!(
            Config::parse(text, Path::new("x")).unwrap(),
            Config::default()
        );
        let mut table = String::new();
        let mut in_table = false;
        let mut top = String::new();
        for l in text.lines() {
            let Some(body) = l.strip_prefix("# ") else {
                continue;
            };
            if body.starts_with('[') {
                in_table = true;
                table.push_str(body);
                table.push('\n');
            } else if body.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            }) {
                if in_table {
                    table.push_str(body);
                    table.push('\n');
                } else {
                    top.push_str(body);
                    top.push('\n');
                }
            }
        }
        let c = Config::parse(&format!("{top}{table}"), Path::new("x")).unwrap();
        assert_eq!(c.runtime.runtimes, ["runc", "crun"]);
        assert_eq!(c.mps_pipe_directory, "/tmp/nvidia-mps");
    }

    #[test]
    fn ubuntu_ldconfig_real_is_the_default() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sbin")).unwrap();
        std::fs::write(d.path().join("sbin/ldconfig"), "#!/bin/sh\n").unwrap();
        assert_eq!(default_ldconfig(d.path()), "@/sbin/ldconfig");
        std::fs::write(d.path().join("sbin/ldconfig.real"), "").unwrap();
        assert_eq!(default_ldconfig(d.path()), "@/sbin/ldconfig.real");
    }

    #[test]
    fn ldconfig_in_container_needs_opt_in() {
        let c = Config::parse("ldconfig = \"/sbin/ldconfig\"", Path::new("c.toml")).unwrap();
        let e = c.ldconfig_checked().unwrap_err().to_string();
        assert!(
            e.contains("/sbin/ldconfig") && e.contains("allow-ldconfig-from-container"),
            "{e}"
        );
        let c = Config::parse(
            "ldconfig = \"/sbin/ldconfig\"\nallow-ldconfig-from-container = true",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.ldconfig_checked().unwrap(), "/sbin/ldconfig");
        assert!(Config::default()
            .ldconfig_checked()
            .unwrap()
            .starts_with("@/sbin/ldconfig"));
        // NVIDIA's file: the same refusal, the same opt-in
        let text = "[nvidia-container-cli]\nldconfig = \"/sbin/ldconfig\"\n";
        let (c, _) = Config::from_nvidia(text, Path::new("n.toml")).unwrap();
        assert!(c.ldconfig_checked().is_err());
        let text = format!("{text}[features]\nallow-ldconfig-from-container = true\n");
        let (c, w) = Config::from_nvidia(&text, Path::new("n.toml")).unwrap();
        assert!(c.ldconfig_checked().is_ok() && w.is_empty(), "{w:?}");
    }

    #[test]
    fn missing_named_file_is_error() {
        let e = Config::load(Some(Path::new("/nonexistent/nvhook.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/nvhook.toml"));
    }
}
