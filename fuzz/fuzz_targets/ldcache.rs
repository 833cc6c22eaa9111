#![no_main]
// ld.so.cache parsers: any bytes give entries or an error, never a panic; both the
// discovery reader and the whole-cache reader of nvhook's own update (which reads the
// image's cache), whose result writes and reads back the same.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nvhook::host::ldcache::parse(data);
    if let Ok(c) = nvhook::apply::ldcache_write::read(data) {
        let again = nvhook::apply::ldcache_write::read(&c.to_bytes("fuzz").unwrap()).unwrap();
        assert_eq!(again.entries, c.entries);
        // The merge of nvhook's own update over the image's cache, in any order and
        // with any names: never a panic, and no entry lost but the replaced ones.
        let mut merged = c.clone();
        let new: Vec<_> = c.entries.iter().rev().take(64).cloned().collect();
        merged.merge(new, &[], &|d| d.len());
        let key = |e: &nvhook::apply::ldcache_write::RawEntry| (e.key.clone(), e.flags, e.value.clone());
        let after: std::collections::HashSet<_> = merged.entries.iter().map(key).collect();
        assert!(c.entries.iter().all(|e| after.contains(&key(e))));
    }
});
