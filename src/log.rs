//! A tiny logger for the hook and the shim: no threads (the hook must stay
//! single-threaded for `setns`), one `write(2)` per record on an `O_APPEND` file so
//! concurrent hooks never interleave within a line.

use crate::config::{Format, Level, LogConfig};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    file: Option<std::fs::File>,
    level: Level,
    format: Format,
    program: &'static str,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets the logger up from configuration; a log file that cannot be opened is
/// reported once on stderr and logging continues without it.
pub fn init(cfg: &LogConfig, program: &'static str) {
    let file = cfg.file.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(p)
            .map_err(|e| eprintln!("{program}: cannot open log file {}: {e}", p.display()))
            .ok()
    });
    let _ = LOGGER.set(Logger {
        file,
        level: cfg.level,
        format: cfg.format,
        program,
    });
}

/// Whether records at `level` are written anywhere (so callers can skip costly work).
pub fn enabled(level: Level) -> bool {
    LOGGER
        .get()
        .is_some_and(|l| l.file.is_some() && level <= l.level)
}

pub fn log(level: Level, msg: &str) {
    let Some(l) = LOGGER.get() else { return };
    let Some(mut f) = l.file.as_ref() else { return };
    if level > l.level {
        return;
    }
    let line = format_record(l.format, level, l.program, msg, SystemTime::now());
    let _ = f.write_all(line.as_bytes());
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
    }
}

pub fn format_record(
    format: Format,
    level: Level,
    program: &str,
    msg: &str,
    at: SystemTime,
) -> String {
    let time = rfc3339(at);
    let pid = std::process::id();
    match format {
        Format::Text => {
            let msg: String = msg
                .chars()
                .map(|c| if c == '\n' { ' ' } else { c })
                .collect();
            format!("{time} {program}[{pid}] {}: {msg}\n", level_name(level))
        }
        Format::Json => {
            let v = serde_json::json!({
                "time": time, "level": level_name(level), "program": program, "pid": pid, "msg": msg,
            });
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

    #[test]
    fn records_are_one_line() {
        let t = format_record(Format::Text, Level::Info, "nvhook", "a\nb", UNIX_EPOCH);
        assert_eq!(t.matches('\n').count(), 1);
        let j = format_record(Format::Json, Level::Error, "nvhook", "x\"y\nz", UNIX_EPOCH);
        assert_eq!(j.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["msg"], "x\"y\nz");
        assert_eq!(v["level"], "error");
    }
}
