#![no_main]
// /proc/<pid>/cgroup and mountinfo, separated by the first NUL byte.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let (a, b) = s.split_once('\0').unwrap_or((&s, ""));
    let _ = nvhook::apply::cgroup::locate(a, b, false);
    let _ = nvhook::apply::cgroup::locate(a, b, true);
});
