#!/bin/sh
# Builds the libFuzzer targets in fuzz/ with coverage instrumentation on the stable
# toolchain (the flags cargo-fuzz passes, without a sanitizer) and runs each for
# SECONDS (default 10). Crashes and their inputs go to fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")/../fuzz"
secs=${1:-10}
[ $# -gt 0 ] && shift
targets=${*:-ldcache state config procfs cgroup request}
RUSTC_BOOTSTRAP=1 RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target-dir target --target x86_64-unknown-linux-gnu -q
seed() { # TARGET NAME: stdin becomes a seed input when the corpus is new
    [ -e "corpus/$1/seed-$2" ] || cat >"corpus/$1/seed-$2"
}
for t in ldcache state config procfs cgroup request; do mkdir -p "corpus/$t" "artifacts/$t"; done
seed ldcache host </etc/ld.so.cache
printf '{"ociVersion":"1.0.2","id":"c","status":"creating","pid":42,"bundle":"/b"}' | seed state state
printf '{"root":{"path":"rootfs"},"process":{"env":["NVIDIA_VISIBLE_DEVICES=0"]},"hooks":{"prestart":[]}}' | seed state spec
printf 'driver-root = "/"\nno-cgroups = true\n[runtime]\nruntimes = ["runc"]\nstage = "prestart"\n[log]\nlevel = "debug"\n' | seed config all
printf 'Model: \t NVIDIA H200\nGPU UUID: \t GPU-4a1b2c3d-0000-1111-2222-333344445555\nBus Location: \t 0000:3b:00.0\nDevice Minor: \t 2\nGPU Excluded:\t No\n' | seed procfs info
printf 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22\n' | seed procfs version
{ cat /proc/self/cgroup; printf '\0'; cat /proc/self/mountinfo; } | seed cgroup self
printf 'NVIDIA_VISIBLE_DEVICES=0,GPU-abc,0000:3b:00.0\nNVIDIA_DRIVER_CAPABILITIES=compute,utility\nCUDA_VERSION=12.4\n' | seed request env
for t in $targets; do
    echo "fuzz $t for ${secs}s"
    ./target/x86_64-unknown-linux-gnu/release/$t -max_total_time="$secs" -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" 2>&1 |
        grep -E 'stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|Done' || true
    if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz $t: crash found, see fuzz/artifacts/$t" >&2
        exit 1
    fi
done
