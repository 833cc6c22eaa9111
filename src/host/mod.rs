//! Stage 2, what the host has: the driver found from files alone (`driver`: device
//! nodes, libraries, binaries, firmware, sockets, GPUs and MIG instances), the parsers of
//! the kernel module's `/proc` files (`procfs`), the host's loader cache (`ldcache`) and
//! the libraries' ELF headers (`elf`), and the facts only NVML knows, asked in a
//! sandboxed child (`nvml`).
//!
//! Takes: the configured host roots (driver, dev, proc, sys) and the capability names
//! of `container::request`. Gives: a `driver::Driver` (pure data) and
//! `require::GpuFacts` for the requirement checks. Uses `common` and `container`.

pub mod driver;
pub mod elf;
pub mod ldcache;
pub mod nvml;
pub mod procfs;
