#!/bin/sh
# The whole test suite, as CI runs it (as root): dependencies, formatting, lints,
# the build, then unit and end-to-end tests against real runc on a synthetic driver,
# then the systemd suite in VMs it builds (debootstrap, cached in /var/cache/nvhook-vm),
# then arm64: built, unit-tested under qemu-user, and run on an arm64 VM.
set -eu
cd "$(dirname "$0")/.."
scripts/ci-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the built binaries: build them first, same profile.
cargo build --workspace
NVHOOK_BIN_DIR=$(pwd)/target/debug cargo test --workspace -- --test-threads=2
# The .deb: built, installed, a GPU container through the installed binaries, removed.
scripts/package-test.sh
# systemd hosts: whole Debian 12 (cgroup v2 and v1) and Debian 13 VMs, every engine on
# systemd's cgroup driver, GPUs kept across daemon-reload (scripts/systemd-host/).
cargo build --release --workspace -q
scripts/systemd-host/suite.sh target/release
# arm64 (Grace): cross-built, unit tests under qemu-user, then a whole arm64 Debian host
# in a VM: the arm64 .deb, every unit test, the loader-cache equivalence against arm64
# ldconfig, GPU containers through the shim and the hook (scripts/arm64.sh).
scripts/arm64.sh all
# Coverage-guided fuzzing of every parser of outside input, briefly (longer: scripts/fuzz.sh 600).
scripts/fuzz.sh "${NVHOOK_FUZZ_SECONDS:-10}"
echo "nvhook: all tests passed"
