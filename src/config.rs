//! The one TOML configuration file shared by the shim and the hook.
//!
//! Every host input is a key here so tests can point nvhook at a synthetic driver
//! and production keeps the real paths as defaults.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the configuration is read from when no `--config` flag names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/nvhook/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "NVHOOK_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

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
            runtimes: vec!["docker-runc".into(), "runc".into(), "crun".into()],
            hook_path: None,
            stage: Stage::Prestart,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogConfig {
    pub file: Option<PathBuf>,
    pub level: Level,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub driver_root: PathBuf,
    pub dev_root: PathBuf,
    pub proc_root: PathBuf,
    /// `@/path` runs the host binary; a plain path names a binary inside the container.
    pub ldconfig: String,
    /// Seconds ldconfig may run before it is killed and the start fails.
    pub ldconfig_timeout: u64,
    pub no_cgroups: bool,
    /// Skip all `NVIDIA_REQUIRE_*` checks (as `NVIDIA_DISABLE_REQUIRE` does per container).
    pub disable_require: bool,
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            driver_root: "/".into(),
            dev_root: "/".into(),
            proc_root: "/proc".into(),
            ldconfig: "@/sbin/ldconfig".into(),
            ldconfig_timeout: 30,
            no_cgroups: false,
            disable_require: false,
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
    pub path: Option<PathBuf>,
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// Loads from `flag`, else `$NVHOOK_CONFIG`, else the default path; only a missing
    /// default file means defaults, a missing named file is an error.
    pub fn load(flag: Option<&Path>) -> Result<Loaded> {
        let env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        let (path, explicit) = match (flag, env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(e)) => (PathBuf::from(e), true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Loaded {
                config: Config::parse(&text, &path)?,
                path: Some(path),
            }),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded {
                config: Config::default(),
                path: None,
            }),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// The ldconfig to run: `(true, path)` for a host binary, `(false, path)` for one in
    /// the container.
    pub fn ldconfig_target(&self) -> (bool, &str) {
        match self.ldconfig.strip_prefix('@') {
            Some(p) => (true, p),
            None => (false, self.ldconfig.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_empty_file() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.runtime.runtimes, ["docker-runc", "runc", "crun"]);
        assert_eq!(c.ldconfig_target(), (true, "/sbin/ldconfig"));
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
    fn unknown_key_is_named() {
        let e = Config::parse("driver-rot = \"/\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("driver-rot"), "{e}");
        let e = Config::parse("[runtime]\nstages = 1", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("stages"), "{e}");
        let e = Config::parse("[runtime]\nstage = \"poststart\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("poststart"), "{e}");
    }

    #[test]
    fn missing_named_file_is_error() {
        let e = Config::load(Some(Path::new("/nonexistent/nvhook.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/nvhook.toml"));
    }
}
