#![no_main]
// ld.so.cache parser: any bytes give entries or an error, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nvhook::ldcache::parse(data);
});
