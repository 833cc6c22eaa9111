//! Around the pipeline, the engines' side: the shim's one edit to config.json
//! (`spec_edit`), `nvhook install` for Docker, containerd, CRI-O and Podman (`install`,
//! with the text edit of containerd's file in `containerd_config` and the dry run's
//! `unified_diff`), and CDI spec generation (`cdi`).
//!
//! Takes: the configuration, engine files, and for CDI the discovered `host::driver`.
//! Gives: edited files and specs; none of it runs inside a container start except the
//! shim's edit. Uses `common`, `container` and `host`; no stage uses it.

pub mod cdi;
pub mod containerd_config;
pub mod install;
pub mod spec_edit;
pub mod unified_diff;
