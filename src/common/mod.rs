//! Shared low-level code every stage may use, and that uses no stage: the system calls
//! (`sys`), path resolution held inside a container root (`rootfs`), the trust rules for
//! what nvhook runs or reads as root (`trust`), the user namespace nvhook runs in
//! (`userns`), logging (`log`), and what differs between the architectures nvhook is
//! built for (`arch`).
//!
//! Takes: nothing from the rest of the crate. Gives: the primitives the security rules
//! are built from (no path is resolved outside `rootfs`/`sys::openat2`, no binary runs
//! without `trust`).

pub mod arch;
pub mod dbus;
pub mod log;
pub mod rootfs;
pub mod sys;
pub mod trust;
pub mod userns;
