#![no_main]
// The NVIDIA driver's /proc files and /proc/devices.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = nvhook::host::procfs::parse_version(&s);
    let _ = nvhook::host::procfs::parse_gpu_information(&s, "fuzz");
    let _ = nvhook::host::procfs::parse_char_majors(&s);
    let _ = nvhook::host::procfs::BusId::parse(&s);
});
