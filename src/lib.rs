//! nvhook: gives OCI containers their NVIDIA GPUs.
//!
//! The tree is the pipeline (ARCHITECTURE.md draws it): [`container`] reads what the
//! container asks for, [`host`] discovers what the host's driver offers, [`plan`] turns
//! the two into pure data, and [`apply`] carries the plan out inside the container's
//! mount namespace with kernel-scoped path resolution. [`pipeline`] runs the stages in
//! that order for the hook; [`engines`] holds what sits around it (the shim's edit,
//! installers, CDI). [`common`] is the low-level code all of them share; [`doctor`]
//! looks at a whole host with all of them. Dependencies
//! point one way only, down that list (checked by `tests/layout.rs`).

pub mod apply;
pub mod common;
pub mod container;
pub mod doctor;
pub mod engines;
pub mod host;
pub mod pipeline;
pub mod plan;

/// nvhook's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit it was built from (see build.rs).
pub const COMMIT: &str = env!("NVHOOK_COMMIT");

/// `<program> <version> (commit <id>)`: what `--version` prints first.
pub fn version_line(program: &str) -> String {
    format!("{program} {VERSION} (commit {COMMIT})")
}
