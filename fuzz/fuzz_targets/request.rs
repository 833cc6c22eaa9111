#![no_main]
// Device and capability lists from a container's environment, one variable per line.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let env: Vec<String> = s.lines().map(str::to_owned).collect();
    let _ = nvhook::container::request::wants_gpus(&env);
    let _ = nvhook::container::request::Request::from_env(&env);
    let _ = nvhook::container::request::parse_capabilities(&s);
    let _ = nvhook::container::require::Requirement::parse("NVIDIA_REQUIRE_FUZZ", &s);
    let _ = nvhook::container::require::from_env(&env, true);
});
