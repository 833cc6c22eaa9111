#![no_main]
// The OCI state on stdin and the bundle's config.json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nvhook::container::state::State::parse(data);
    let _ = nvhook::container::state::Spec::parse(data, std::path::Path::new("/bundle"));
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = nvhook::container::request::Source::from_config(&v).wants_gpus(&Default::default());
        let entry = nvhook::engines::spec_edit::HookEntry {
            path: "/nvhook".into(),
            args: vec![],
            env: vec![],
        };
        let _ = nvhook::engines::spec_edit::add_hook(&mut v, nvhook::container::config::Stage::Prestart, &entry);
    }
});
