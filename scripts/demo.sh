#!/bin/sh
# Installs what is needed, builds nvhook, makes a synthetic 2-GPU driver and a small
# Debian-style image, and runs a container through nvhook-runtime (runc) that asks for
# GPU 1 and runs nvidia-smi. Run as root. Everything lives under .work/demo.
set -eu
cd "$(dirname "$0")/.."
scripts/ci-deps.sh
cargo build --release --workspace
work=$(pwd)/.work/demo
rm -rf "$work"
mkdir -p "$work/bundle"
scripts/make-fake-driver.sh "$work/driver" 2 >/dev/null
scripts/make-rootfs.sh "$work/bundle/rootfs" debian >/dev/null
cp "$work/driver/config.toml" "$work/nvhook.toml"
cd "$work/bundle"
runc spec
# A non-interactive container that asks for GPU 1 and lists what it sees.
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|"sh"$|"sh", "-c", "nvidia-smi; echo; ls -l /dev/nvidia*; echo; ldconfig -p \| grep -E \\"libcuda\|libnvidia-ml\\""|' \
    -e 's|"TERM=xterm"|"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=1"|' config.json
NVHOOK_CONFIG=$work/nvhook.toml "$work/../../target/release/nvhook-runtime" run demo-$$
