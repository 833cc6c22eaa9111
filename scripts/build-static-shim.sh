#!/bin/sh
# Builds nvhook-runtime statically linked and position-independent (static-pie: it
# runs as root on every runtime call, so its addresses stay randomised; a non-PIE build
# was ~0.05 ms faster per call on a 2-core VM, 1.14 against 1.18 ms exec'ing /bin/true),
# and prints its path. The shim is exec'd on every runtime call (state, kill, delete...):
# static saves the dynamic loader's work, ~0.3 ms of ~0.9 ms it adds to a pass-through
# call on a 2-core VM (scripts/bench.sh shim measures it). It calls nothing of glibc's that needs
# shared libraries at run time (no NSS, no dlopen). The hook stays dynamic: its NVML
# child loads libnvidia-ml.so.1.
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
case $triple in
x86_64-*-linux-gnu) ;;
# aarch64: Rust makes no static-pie of a glibc program there (a fixed-address one only)
*) echo "build-static-shim: only for x86-64 glibc hosts (this is $triple)" >&2; exit 1 ;;
esac
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -q -p nvhook-runtime --target "$triple" --target-dir target/static-shim >&2
bin=target/static-shim/$triple/release/nvhook-runtime
# no program interpreter: nothing is loaded before main (readelf comes with gcc's binutils)
if readelf -l "$bin" | grep -q INTERP; then
    echo "build-static-shim: $bin is not statically linked" >&2
    exit 1
fi
# position-independent: the ELF type is DYN (a static-pie), not EXEC
if ! readelf -h "$bin" | grep -q 'Type:.*DYN'; then
    echo "build-static-shim: $bin is not position-independent" >&2
    exit 1
fi
echo "$bin"
