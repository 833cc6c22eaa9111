#![no_main]
// The TOML configuration.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = nvhook::container::config::Config::parse(s, std::path::Path::new("fuzz.toml"));
        let _ = nvhook::container::config::Config::from_nvidia(s, std::path::Path::new("nvidia.toml"));
    }
});
