//! Stage 1, what the container asks for: the OCI state on stdin and the bundle's
//! config.json (`state`), the devices, capabilities and policy they name (`request`),
//! the `NVIDIA_REQUIRE_*` constraints (`require`), the facts of the image that decide
//! where driver files go (`image`), and the operator's configuration (`config`).
//!
//! Takes: the runtime's state JSON, the bundle, the configuration file. Gives: a
//! `request::Request`, `image::ImageFacts` and a `config::Config`, read without touching
//! the host's driver. Uses only `common`.

pub mod config;
pub mod image;
pub mod request;
pub mod require;
pub mod state;
