//! The architecture nvhook serves: the one it is built for. A hook built for x86-64
//! does not run on an arm64 host at all, so everything keyed on the architecture (the
//! loader cache's flags, the ELF machine of the driver's files, the multiarch library
//! dirs, the directories ldconfig scans by itself) is chosen at build time for the
//! target, and never assumed x86-64.

/// What differs between the architectures nvhook supports.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The kernel's name (`uname -m`), and the name plans and `info` show.
    pub name: &'static str,
    /// `e_machine` of its 64-bit ELF files.
    pub elf_machine: u16,
    /// The loader cache's flags for its glibc libraries (`FLAG_ELF_LIBC6` with the
    /// architecture's `FLAG_*_LIB64`): the only entries its loader accepts.
    pub cache_flags: i32,
    /// The image's library dir on Debian and its derivatives (multiarch).
    pub debian_lib_dir: &'static str,
    /// The dirs glibc's ldconfig scans without being told, Debian's build and the
    /// RHEL family's (their `add_system_dir` calls differ per architecture).
    pub debian_system_dirs: &'static [&'static str],
    pub rhel_system_dirs: &'static [&'static str],
    /// Where a driver unpacked without a loader cache keeps its libraries, searched in
    /// this order.
    pub driver_lib_dirs: &'static [&'static str],
    /// The 32-bit libraries the same loader family runs, where there are any
    /// (`compat32`: i386 on x86-64; an arm64 host runs no 32-bit CUDA).
    pub compat32: Option<Compat32>,
}

/// A 32-bit architecture whose libraries the `compat32` capability adds.
#[derive(Debug, PartialEq, Eq)]
pub struct Compat32 {
    /// `e_machine` of its ELF files.
    pub elf_machine: u16,
    /// The image's 32-bit library dir on Debian.
    pub debian_lib_dir: &'static str,
}

/// x86-64, with i386 as its 32-bit companion.
pub const X86_64: Target = Target {
    name: "x86_64",
    elf_machine: 62,
    cache_flags: 0x0303,
    debian_lib_dir: "/usr/lib/x86_64-linux-gnu",
    debian_system_dirs: &[
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/usr/lib",
    ],
    rhel_system_dirs: &["/lib64", "/usr/lib64"],
    driver_lib_dirs: &[
        "usr/lib/x86_64-linux-gnu",
        "usr/lib64",
        "lib64",
        "usr/lib",
        "lib",
    ],
    compat32: Some(Compat32 {
        elf_machine: 3,
        debian_lib_dir: "/usr/lib/i386-linux-gnu",
    }),
};

/// arm64 (Grace: GH200, GB200, GB300, DGX Spark; NVIDIA's "sbsa" driver).
pub const AARCH64: Target = Target {
    name: "aarch64",
    elf_machine: 183,
    cache_flags: 0x0a03,
    debian_lib_dir: "/usr/lib/aarch64-linux-gnu",
    debian_system_dirs: &[
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib",
        "/usr/lib",
    ],
    // glibc's aarch64 add_system_dir adds each dir's `lib` and `lib64` twins.
    rhel_system_dirs: &["/lib", "/lib64", "/usr/lib", "/usr/lib64"],
    driver_lib_dirs: &[
        "usr/lib/aarch64-linux-gnu",
        "usr/lib64",
        "lib64",
        "usr/lib",
        "lib",
    ],
    compat32: None,
};

#[cfg(target_arch = "x86_64")]
pub const NATIVE: Target = X86_64;
#[cfg(target_arch = "aarch64")]
pub const NATIVE: Target = AARCH64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("nvhook supports x86_64 and aarch64 hosts only");

/// The C compiler tests build this architecture's libraries with: `$NVHOOK_CC` where
/// the tests run emulated (scripts/arm64.sh names the cross compiler), else `gcc`.
pub fn test_cc() -> String {
    std::env::var("NVHOOK_CC").unwrap_or_else(|_| "gcc".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_is_the_machine_the_tests_run_on() {
        // SAFETY: uname fills the zeroed struct it is given; each field ends in a NUL.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::uname(&mut u) }, 0);
        let m = unsafe { std::ffi::CStr::from_ptr(u.machine.as_ptr()) };
        assert_eq!(m.to_str().unwrap(), NATIVE.name);
    }

    #[test]
    fn the_native_elf_machine_is_that_of_this_very_program() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(u16::from_le_bytes([exe[18], exe[19]]), NATIVE.elf_machine);
    }

    #[test]
    fn only_x86_64_has_a_32_bit_companion() {
        assert_eq!(X86_64.compat32.as_ref().unwrap().elf_machine, 3);
        assert!(AARCH64.compat32.is_none());
        assert_ne!(X86_64.cache_flags, AARCH64.cache_flags);
    }
}
