#![no_main]
// ld.so.cache parsers: any bytes give entries or an error, never a panic; both the
// discovery reader and the whole-cache reader of nvhook's own update (which reads the
// image's cache), whose result writes and reads back the same.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nvhook::host::ldcache::parse(data);
    if let Ok(c) = nvhook::apply::ldcache_write::read(data) {
        let again = nvhook::apply::ldcache_write::read(&c.to_bytes("fuzz").unwrap()).unwrap();
        assert_eq!(again.entries, c.entries);
    }
});
