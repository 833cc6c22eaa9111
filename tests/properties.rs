//! Property tests: every parser of outside input takes arbitrary input without
//! panicking, and the structured ones round-trip. Bounded (proptest's default 256
//! cases per property) so they run in CI; `scripts/fuzz.sh` runs the coverage-guided
//! counterparts for longer.

use nvhook::apply::{cgroup, ldcache_write};
use nvhook::container::config::{Config, Stage};
use nvhook::container::{request, state};
use nvhook::engines::spec_edit;
use nvhook::host::{ldcache, procfs};
use proptest::prelude::*;
use std::path::Path;

fn env_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "NVIDIA_VISIBLE_DEVICES=[0-9a-zA-Z:.,\\- ]{0,40}",
        "NVIDIA_DRIVER_CAPABILITIES=[a-z0-9,]{0,40}",
        "CUDA_VERSION=[0-9.]{0,8}",
        "NVIDIA_REQUIRE_CUDA=.{0,20}",
        ".{0,30}",
    ]
}

/// Bytes read as a file, for the ELF reader.
struct Bytes(Vec<u8>);
impl std::os::unix::fs::FileExt for Bytes {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    }
}

/// A real shared library's bytes (the test host's libc), to mutate.
fn libc_bytes() -> &'static [u8] {
    static B: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    B.get_or_init(|| std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap())
}

proptest! {
    #[test]
    fn ldcache_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ldcache::parse(&b);
        // the image's cache, read whole by nvhook's own update (outside input)
        if let Ok(c) = ldcache_write::read(&b) {
            let again = ldcache_write::read(&c.to_bytes("p").unwrap()).unwrap();
            prop_assert_eq!(again.entries, c.entries);
        }
    }

    #[test]
    fn elf_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut v = b"\x7fELF\x02\x01\x01".to_vec();
        v.extend(b);
        let _ = nvhook::host::elf::info(&Bytes(v));
    }

    #[test]
    fn elf_mutated(flip in proptest::collection::vec((0usize..8192, any::<u8>()), 1..16)) {
        // Headers and the dynamic segment sit in the first pages: flips there reach
        // every offset and count the reader follows.
        let mut v = libc_bytes()[..libc_bytes().len().min(1 << 20)].to_vec();
        for (i, x) in flip {
            let n = v.len();
            v[i % n] = x;
        }
        let _ = nvhook::host::elf::info(&Bytes(v));
    }

    #[test]
    fn ldcache_write_mutated(flip in proptest::collection::vec((0usize..600, any::<u8>()), 0..8), cut in 0usize..600) {
        let mut c = ldcache_write::Cache::default();
        c.merge(vec![
            ldcache_write::RawEntry::new(0x0303, "libcuda.so.1", "/usr/lib/libcuda.so.1"),
            ldcache_write::RawEntry::new(0x0003, "libc.so.6", "/lib/libc.so.6"),
        ], &[], &|_| 0);
        let mut b = c.to_bytes("gen").unwrap();
        for (i, v) in flip {
            let n = b.len();
            b[i % n] = v;
        }
        b.truncate(cut.max(1));
        let _ = ldcache_write::read(&b);
    }

    #[test]
    fn ldcache_mutated(flip in proptest::collection::vec((0usize..400, any::<u8>()), 0..8), cut in 0usize..400) {
        let mut b = ldcache::build_new(&[(0x0303, "libcuda.so.1", "/usr/lib/libcuda.so.1"), (0x0003, "libc.so.6", "/lib/libc.so.6")]);
        for (i, v) in flip {
            let n = b.len();
            b[i % n] = v;
        }
        b.truncate(cut.max(1));
        let _ = ldcache::parse(&b);
    }

    #[test]
    fn ldcache_roundtrip(names in proptest::collection::vec(("[a-z]{1,12}", "/[a-z/]{1,20}"), 0..20)) {
        let entries: Vec<(i32, &str, &str)> = names.iter().map(|(k, v)| (0x0303, k.as_str(), v.as_str())).collect();
        let parsed = ldcache::parse(&ldcache::build_new(&entries)).unwrap();
        prop_assert_eq!(parsed.len(), entries.len());
        for (p, (_, k, v)) in parsed.iter().zip(&entries) {
            prop_assert_eq!(&p.name, k);
            prop_assert_eq!(&p.path, v);
        }
    }

    #[test]
    fn state_and_spec_any_input(s in ".{0,200}") {
        let _ = state::State::parse(s.as_bytes());
        let _ = state::Spec::parse(s.as_bytes(), Path::new("/b"));
    }

    #[test]
    fn state_fields(id in "[a-z0-9]{1,20}", pid in any::<i64>(), status in ".{0,10}") {
        let j = serde_json::json!({"id": id, "pid": pid, "status": status, "bundle": "/b", "x": [1]});
        let r = state::State::parse(j.to_string().as_bytes());
        prop_assert_eq!(r.is_ok(), pid > 0 && pid <= i32::MAX as i64);
    }

    #[test]
    fn config_any_input(s in ".{0,200}") {
        let _ = Config::parse(&s, Path::new("x.toml"));
    }

    #[test]
    fn config_unknown_key_named(key in "[a-z]{3,12}") {
        prop_assume!(!["ldconfig", "runtime", "log"].contains(&key.as_str()));
        let name = format!("{}zz", key);
        let e = Config::parse(&format!("{} = 1", name), Path::new("x.toml")).unwrap_err();
        prop_assert!(e.to_string().contains(&name));
    }

    #[test]
    fn procfs_any_input(s in ".{0,300}") {
        let _ = procfs::parse_version(&s);
        let _ = procfs::parse_gpu_information(&s, "p");
        let _ = procfs::parse_char_majors(&s);
        let _ = procfs::BusId::parse(&s);
    }

    #[test]
    fn bus_id_roundtrip(d in 0u32..0x10000, b in any::<u8>(), dev in 0u8..32, f in 0u8..8) {
        let id = procfs::BusId { domain: d, bus: b, device: dev, function: f };
        prop_assert_eq!(procfs::BusId::parse(&id.to_string()), Some(id));
        prop_assert_eq!(procfs::BusId::parse(&format!("{:08X}:{:02X}:{:02X}.{}", d, b, dev, f)), Some(id));
    }

    #[test]
    fn cgroup_any_input(a in ".{0,200}", b in ".{0,300}", unified in any::<bool>()) {
        let _ = cgroup::locate(&a, &b, unified);
    }

    #[test]
    fn cgroup_path_never_climbs(path in "(/[a-z.]{1,5}){0,6}") {
        let mi = "30 1 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        if let Ok(cgroup::DeviceCgroup::V2(dir)) = cgroup::locate(&format!("0::{path}\n"), mi, true) {
            prop_assert!(dir.starts_with("/sys/fs/cgroup"));
            prop_assert!(!dir.components().any(|c| c == std::path::Component::ParentDir));
        }
    }

    #[test]
    fn request_any_env(env in proptest::collection::vec(env_line(), 0..6)) {
        let wants = request::wants_gpus(&env);
        match request::Request::from_env(&env) {
            Ok(r) => prop_assert_eq!(r.is_some(), wants),
            Err(e) => prop_assert!(wants, "error {} for an env that asks nothing", e),
        }
    }

    #[test]
    fn requirements_any(s in "[a-zA-Z0-9.,=<>! ]{0,60}", cuda in "[0-9]{1,2}\\.[0-9]", arch in "[0-9]\\.[0-9]") {
        if let Ok(r) = nvhook::container::require::Requirement::parse("NVIDIA_REQUIRE_X", &s) {
            let facts = nvhook::container::require::Facts {
                cuda: Some(cuda),
                driver: "550.54.14".into(),
                gpus: vec![nvhook::container::require::GpuFacts { bus_id: "0000:01:00.0".into(), arch: Some(arch), brand: Some("tesla".into()) }],
            };
            let _ = nvhook::container::require::check(&[r], &facts);
        }
    }

    #[test]
    fn nvidia_config_any(s in ".{0,200}") {
        let _ = Config::from_nvidia(&s, Path::new("nvidia.toml"));
    }

    /// Device ids are container input: any text (multi-byte too) gives a plan or an error.
    #[test]
    fn plan_any_device_ids(ids in ".{0,40}") {
        let env = vec![format!("NVIDIA_VISIBLE_DEVICES={ids}")];
        if let Ok(Some(req)) = request::Request::from_env(&env) {
            let opts = nvhook::plan::Options { ldconfig: "@/sbin/ldconfig".into(), no_cgroups: false, ld_cache_by_nvhook: true };
            let _ = nvhook::plan::build(&req, &Default::default(), &nvhook::container::image::ImageFacts::debian(), &opts);
        }
    }

    #[test]
    fn capabilities_any(s in "[a-z0-9, ]{0,60}") {
        if let Ok(c) = request::parse_capabilities(&s) {
            prop_assert!(!c.is_empty());
            if c.contains(&request::Capability::Video) {
                prop_assert!(c.contains(&request::Capability::Compute));
            }
        }
    }

    #[test]
    fn add_hook_idempotent(extra in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..6)) {
        let mut v = serde_json::json!({"ociVersion": "1.0.2"});
        for (k, x) in &extra {
            v[k] = x.clone().into();
        }
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let e = spec_edit::HookEntry { path: "/n".into(), args: vec![], env: vec![] };
        let first = spec_edit::add_hook(&mut v, Stage::Prestart, &e);
        let second = spec_edit::add_hook(&mut v, Stage::CreateRuntime, &e);
        if extra.contains_key("hooks") {
            return Ok(()); // a non-object "hooks" is an error, checked elsewhere
        }
        prop_assert_eq!(first, Ok(true));
        prop_assert_eq!(second, Ok(false));
        let after: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        prop_assert_eq!(&after[..keys.len()], &keys[..]);
    }
}
