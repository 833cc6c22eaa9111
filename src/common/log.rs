//! Logging through `tracing`: records carry their data as fields (container, stage,
//! GPUs, counts, timings), which the JSON format writes as top-level JSON fields and the
//! text format as `key=value` on one line. No threads (the hook must stay
//! single-threaded for `setns`); each record is one `write(2)` on an `O_APPEND` file,
//! so concurrent hooks never interleave within a line. The shim, which must start fast,
//! writes its few records with [`format_record`] instead of a subscriber.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where records go when the configuration names no file: where operators look, as
/// NVIDIA's `/var/log/nvidia-container-*.log`. Off where it cannot be opened.
pub const DEFAULT_FILE: &str = "/var/log/nvhook.log";
/// Overrides the configured level for one run (`debug`, `info`, `warn`, `error`).
pub const LEVEL_ENV: &str = "NVHOOK_LOG_LEVEL";

/// The `[log]` table of the configuration: where records go, from which level, in
/// which format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogConfig {
    pub file: Option<PathBuf>,
    pub level: Level,
    pub format: Format,
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

/// The level in effect: `NVHOOK_LOG_LEVEL` when it names one, else the configured.
pub fn effective_level(cfg: &LogConfig) -> Level {
    std::env::var(LEVEL_ENV)
        .ok()
        .and_then(|v| level_named(v.trim()))
        .unwrap_or(cfg.level)
}

/// The level a `NVHOOK_LOG_LEVEL` value names, if it names one.
pub fn level_named(name: &str) -> Option<Level> {
    match name {
        "debug" | "trace" => Some(Level::Debug),
        "info" => Some(Level::Info),
        "warn" | "warning" => Some(Level::Warn),
        "error" => Some(Level::Error),
        _ => None,
    }
}

/// The log file: the configured one (reported on stderr when it cannot be opened), or
/// the default one where it can be opened (silently off where not). Never fails.
pub fn open_file(cfg: &LogConfig, program: &str) -> Option<std::fs::File> {
    let (path, configured) = match &cfg.file {
        Some(p) => (p.as_path(), true),
        None => (Path::new(DEFAULT_FILE), false),
    };
    // Not a link, and never waiting: a FIFO planted where the log goes would block the
    // open (and a start with it) without O_NONBLOCK; only a regular file is used.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.file_type().is_file() {
                Ok(f)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
    f.map_err(|e| {
        if configured {
            eprintln!("{program}: cannot open log file {}: {e}", path.display());
        }
    })
    .ok()
}

fn tracing_level(l: Level) -> tracing::Level {
    match l {
        Level::Error => tracing::Level::ERROR,
        Level::Warn => tracing::Level::WARN,
        Level::Info => tracing::Level::INFO,
        Level::Debug => tracing::Level::DEBUG,
    }
}

/// Sets the process's subscriber up from configuration (once; later calls do nothing).
pub fn init(cfg: &LogConfig, program: &'static str) {
    let Some(file) = open_file(cfg, program) else {
        return;
    };
    let level = tracing_level(effective_level(cfg));
    let writer = std::sync::Arc::new(file);
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level);
    let _ = match cfg.format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Whether records at `level` are written anywhere (so callers can skip costly work).
pub fn enabled(level: Level) -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing_level(level)
}

pub fn debug(msg: &str) {
    tracing::debug!("{msg}")
}
pub fn info(msg: &str) {
    tracing::info!("{msg}")
}
pub fn warn(msg: &str) {
    tracing::warn!("{msg}")
}
pub fn error(msg: &str) {
    tracing::error!("{msg}")
}

/// Level names as the subscriber writes them, so both kinds of record read alike.
fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
    }
}

/// One record as a line, for the shim, in the subscriber's shape: in text the time, the
/// level, the message and `key=value` fields (`program` and `pid` first); in JSON the
/// fields at the top level beside `timestamp`, `level` and `message`.
pub fn format_record(
    format: Format,
    level: Level,
    program: &str,
    msg: &str,
    fields: &[(&str, serde_json::Value)],
    at: SystemTime,
) -> String {
    let time = rfc3339(at);
    let pid = std::process::id();
    match format {
        Format::Text => {
            let mut line: String = msg
                .chars()
                .map(|c| if c == '\n' { ' ' } else { c })
                .collect();
            line.push_str(&format!(" program={program:?} pid={pid}"));
            for (k, v) in fields {
                // strings quoted, as the subscriber writes them: a value cannot fake a field
                let v = match v {
                    serde_json::Value::String(s) => format!("{s:?}"),
                    v => v.to_string(),
                };
                line.push_str(&format!(" {k}={v}"));
            }
            format!("{time} {:>5} {line}\n", level_name(level))
        }
        Format::Json => {
            let mut v = serde_json::json!({
                "timestamp": time, "level": level_name(level), "message": msg, "program": program, "pid": pid,
            });
            for (k, x) in fields {
                v[*k] = x.clone();
            }
            format!("{v}\n")
        }
    }
}

/// UTC time as RFC 3339 with milliseconds, without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_709_164_800_123)),
            "2024-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    /// A FIFO (or anything not a regular file) where the log goes is not waited on.
    #[test]
    fn log_file_must_be_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let cfg = LogConfig {
            file: Some(fifo),
            ..LogConfig::default()
        };
        let t = std::time::Instant::now();
        assert!(open_file(&cfg, "test").is_none());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        let cfg = LogConfig {
            file: Some(d.path().join("real.log")),
            ..LogConfig::default()
        };
        assert!(open_file(&cfg, "test").is_some());
    }

    #[test]
    fn records_are_one_line() {
        let f = [
            ("runtime", serde_json::json!("/usr/bin/runc")),
            ("hook", serde_json::json!(true)),
        ];
        let t = format_record(Format::Text, Level::Info, "nvhook", "a\nb", &f, UNIX_EPOCH);
        assert_eq!(t.matches('\n').count(), 1);
        assert!(
            t.contains(" DEBUG a b program=\"nvhook\" pid=")
                || t.contains("  INFO a b program=\"nvhook\" pid="),
            "{t}"
        );
        assert!(t.ends_with(" runtime=\"/usr/bin/runc\" hook=true\n"), "{t}");
        let j = format_record(
            Format::Json,
            Level::Error,
            "nvhook",
            "x\"y\nz",
            &f,
            UNIX_EPOCH,
        );
        assert_eq!(j.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["message"], "x\"y\nz");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["runtime"], "/usr/bin/runc");
        assert_eq!(v["hook"], true);
    }
}
