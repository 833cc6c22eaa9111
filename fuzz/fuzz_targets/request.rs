#![no_main]
// Device and capability lists from a container's environment, one variable per line.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let env: Vec<String> = s.lines().map(str::to_owned).collect();
    let _ = nvhook::request::wants_gpus(&env);
    let _ = nvhook::request::Request::from_env(&env);
    let _ = nvhook::request::parse_capabilities(&s);
    let _ = nvhook::require::Requirement::parse("NVIDIA_REQUIRE_FUZZ", &s);
    let _ = nvhook::require::from_env(&env, true);
});
