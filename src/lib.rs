//! nvhook: gives OCI containers their NVIDIA GPUs.
//!
//! The pipeline (see `pipeline`): the container's state and config.json become a
//! [`request::Request`], the host driver is discovered into a [`driver::Driver`], the
//! two make a [`plan::Plan`] (pure data), and [`apply`] executes the plan inside the
//! container's mount namespace with kernel-scoped path resolution.

pub mod apply;
pub mod bpf;
pub mod bpf_cache;
pub mod caps;
pub mod cdi;
pub mod cgroup;
pub mod config;
pub mod containerd_config;
pub mod driver;
pub mod elf;
pub mod image;
pub mod install;
pub mod ldcache;
pub mod ldcache_update;
pub mod ldcache_write;
pub mod ldconfig;
pub mod log;
pub mod nvml;
pub mod pipeline;
pub mod plan;
pub mod procfs;
pub mod request;
pub mod require;
pub mod rootfs;
pub mod spec_edit;
pub mod state;
pub mod sys;
pub mod trust;
pub mod unified_diff;
pub mod userns;

/// nvhook's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit it was built from (see build.rs).
pub const COMMIT: &str = env!("NVHOOK_COMMIT");

/// `<program> <version> (commit <id>)`: what `--version` prints first.
pub fn version_line(program: &str) -> String {
    format!("{program} {VERSION} (commit {COMMIT})")
}
