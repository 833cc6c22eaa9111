//! Reading what the shim needs from a runc-style command line, without a flag
//! parser: the subcommand, the bundle, and the `--log` file for errors.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Global runtime flags that take a value (runc and crun).
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "root",
    "log",
    "log-format",
    "log-level",
    "criu",
    "rootless",
    "cgroup-manager",
];
/// `create`/`run` flags that take a value.
const CREATE_VALUE_FLAGS: &[&str] = &[
    "console-socket",
    "pid-file",
    "preserve-fds",
    "notify-socket",
];
const BUNDLE_FLAGS: &[&str] = &["b", "bundle"];

/// A flag's name (dashes stripped) and its inline `=value`, if the argument is a flag.
fn flag(arg: &OsStr) -> Option<(&str, Option<&OsStr>)> {
    let b = arg.as_bytes();
    if b.len() < 2 || b[0] != b'-' || b == b"--" {
        return None;
    }
    let body = if b.starts_with(b"--") {
        &b[2..]
    } else {
        &b[1..]
    };
    let (name, value) = match body.iter().position(|&c| c == b'=') {
        Some(i) => (&body[..i], Some(OsStr::from_bytes(&body[i + 1..]))),
        None => (body, None),
    };
    Some((std::str::from_utf8(name).ok()?, value))
}

/// What the shim learned from argv (without the program name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub subcommand: Option<String>,
    /// Index of the subcommand in argv.
    pub sub_index: usize,
    pub bundle: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub log_json: bool,
}

pub fn parse(args: &[OsString]) -> Parsed {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        match flag(&args[i]) {
            Some((name, inline)) => {
                let takes = GLOBAL_VALUE_FLAGS.contains(&name);
                let value = if takes && inline.is_none() {
                    i += 1;
                    args.get(i).map(OsString::as_os_str)
                } else {
                    inline
                };
                match (name, value) {
                    ("log", Some(v)) => p.log = Some(PathBuf::from(v)),
                    ("log-format", Some(v)) => p.log_json = v == "json",
                    _ => {}
                }
            }
            None if args[i] == "--" => break,
            None => {
                p.subcommand = args[i].to_str().map(str::to_owned);
                p.sub_index = i;
                break;
            }
        }
        i += 1;
    }
    if p.subcommand.is_none() {
        return p;
    }
    let mut i = p.sub_index + 1;
    while i < args.len() {
        if args[i] == "--" {
            break;
        }
        if let Some((name, inline)) = flag(&args[i]) {
            if BUNDLE_FLAGS.contains(&name) {
                let v = match inline {
                    Some(v) => Some(v.to_os_string()),
                    None => {
                        i += 1;
                        args.get(i).cloned()
                    }
                };
                if let Some(v) = v {
                    p.bundle = Some(PathBuf::from(v));
                }
            } else if CREATE_VALUE_FLAGS.contains(&name) && inline.is_none() {
                i += 1;
            }
        }
        i += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(&s.split_whitespace().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn subcommand_after_global_flags() {
        let r = p("--root /run/runc --log /tmp/l.json --log-format json --systemd-cgroup create --bundle /b c1");
        assert_eq!(r.subcommand.as_deref(), Some("create"));
        assert_eq!(r.bundle, Some("/b".into()));
        assert_eq!(r.log, Some("/tmp/l.json".into()));
        assert!(r.log_json);
    }

    #[test]
    fn bundle_forms() {
        for s in [
            "create -b /b c1",
            "create --bundle /b c1",
            "create -bundle /b c1",
            "create --bundle=/b c1",
            "create -b=/b c1",
            "run c1 --bundle /b",
            "create --pid-file /p --console-socket /s --bundle /b c1",
            "--root=/r run -d -bundle=/b c1",
        ] {
            assert_eq!(p(s).bundle, Some("/b".into()), "{s}");
        }
        assert_eq!(p("create c1").bundle, None);
        // a value of another flag is not a bundle flag
        assert_eq!(p("create --pid-file -b c1").bundle, None);
    }

    proptest::proptest! {
        /// Any argv (runtimes pass what engines give them): no panic, and a bundle is
        /// only ever read after a subcommand.
        #[test]
        fn any_argv(args in proptest::collection::vec("(-{0,2}[a-z=/]{0,8})|--|create|run", 0..10)) {
            let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
            let r = parse(&argv);
            if r.subcommand.is_none() {
                proptest::prop_assert!(r.bundle.is_none());
            }
        }
    }

    #[test]
    fn pass_through_calls() {
        assert_eq!(p("state c1").subcommand.as_deref(), Some("state"));
        assert_eq!(
            p("--log /x kill c1 KILL").subcommand.as_deref(),
            Some("kill")
        );
        assert_eq!(p("--version").subcommand, None);
        assert_eq!(p("").subcommand, None);
    }
}
