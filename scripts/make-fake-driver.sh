#!/bin/sh
# Builds a synthetic NVIDIA driver that nvhook cannot tell from a real one by its
# files: real ELF libraries with the driver's SONAMEs, an nvidia-smi that links
# libnvidia-ml.so.1, real character device nodes (195:N, uvm on a dynamic major),
# /proc-style files and an ld.so.cache made by ldconfig -r. Needs root (mknod) and gcc.
#
#   scripts/make-fake-driver.sh OUT [NGPUS] [VERSION]
#
# OUT/root is the driver root, OUT/dev the dev root, OUT/proc the proc root, OUT/sys
# the sys root, and OUT/config.toml an nvhook configuration pointing at them.
#
# LAYOUT=ubuntu lays the driver out as on a cloud GPU host (Ubuntu 24.04, driver in
# its own tree): libraries in /usr/local/nvidia/lib64 (lib -> lib64) listed through
# /etc/ld.so.conf.d, ELF tools in /usr/local/nvidia/bin with a wrapper script
# /usr/bin/nvidia-smi, GSP firmware in /usr/local/nvidia/firmware named by the
# kernel's firmware search path (OUT/sys/module/firmware_class/parameters/path).
#
# ARCH=arm64 builds an arm64 (Grace, "sbsa") driver on any machine: its files built by
# aarch64-linux-gnu-gcc, no i386 libraries, the cache made by arm64 glibc's ldconfig
# (run through qemu-user where the machine is not arm64: scripts/arm64.sh tools).
set -eu
out=${1:?usage: make-fake-driver.sh OUT [NGPUS] [VERSION]}
ngpus=${2:-4}
ver=${3:-550.54.14}
here=$(cd "$(dirname "$0")" && pwd)
uvm_major=508

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$out/root
layout=${LAYOUT:-debian}
native=$(dpkg --print-architecture)
arch=${ARCH:-$native}
case $arch in
amd64) triplet=x86_64-linux-gnu kmod_arch=x86_64 ;;
arm64) triplet=aarch64-linux-gnu kmod_arch=aarch64 ;;
*) echo "make-fake-driver.sh: ARCH must be amd64 or arm64" >&2; exit 2 ;;
esac
# gcc for what runs here (mksock makes the socket now), CC for the driver's files.
hostcc=gcc
ldconfig=ldconfig
if [ "$arch" = "$native" ]; then
    target_cc=${CC:-gcc}
else
    target_cc=${CC:-$triplet-gcc}
    ldconfig=${LDCONFIG:-$here/../target/$arch-tools/sbin/ldconfig}
    [ -x "$ldconfig" ] || { echo "make-fake-driver.sh: no $arch ldconfig at $ldconfig (scripts/arm64.sh tools)" >&2; exit 1; }
fi
case $layout in
debian)
    lib=$root/usr/lib/$triplet
    bindir=$root/usr/bin
    fwdir=$root/lib/firmware/nvidia/$ver
    ;;
ubuntu)
    lib=$root/usr/local/nvidia/lib64
    bindir=$root/usr/local/nvidia/bin
    fwdir=$root/usr/local/nvidia/firmware/nvidia/$ver
    ;;
*) echo "make-fake-driver.sh: LAYOUT must be debian or ubuntu" >&2; exit 2 ;;
esac
mkdir -p "$lib" "$bindir" "$root/usr/bin" "$root/etc" "$fwdir" \
    "$root/var/run/nvidia-persistenced" "$out/dev" "$out/proc/driver/nvidia/gpus" "$out/build" \
    "$out/sys/module/firmware_class/parameters"
if [ "$layout" = ubuntu ]; then
    ln -s lib64 "$root/usr/local/nvidia/lib"
    echo /usr/local/nvidia/firmware >"$out/sys/module/firmware_class/parameters/path"
else
    echo >"$out/sys/module/firmware_class/parameters/path"
fi

# GPUs: index i (PCI order) gets minor ngpus-1-i, so index and minor differ.
hdr=$out/build/gpus.h
{
    echo "#define FAKE_DRIVER_VERSION \"$ver\""
    echo "#define FAKE_CUDA_VERSION 12040"
    echo "static const struct { unsigned minor; const char *uuid, *model, *bus; int cc_major, cc_minor, brand; } fake_gpus[] = {"
} >"$hdr"
i=0
while [ "$i" -lt "$ngpus" ]; do
    minor=$((ngpus - 1 - i))
    bus=$(printf '0000:%02x:00.0' $((0x18 + i)))
    uuid=$(printf 'GPU-%08x-5a1e-4e7f-9c2d-%012x' $((0x1000 + i)) $((0xabc000 + i)))
    d=$out/proc/driver/nvidia/gpus/$bus
    mkdir -p "$d"
    printf 'Model: \t\t NVIDIA Synthetic H200\nIRQ:   \t\t %d\nGPU UUID: \t %s\nVideo BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t %s\nDevice Minor: \t %d\nGPU Excluded:\t No\n' \
        $((100 + i)) "$uuid" "$bus" "$minor" >"$d/information"
    # the last GPU of several differs (compute capability 8.0, brand GeForce) so that
    # requirements are checked per GPU; the others are 9.0, Tesla
    if [ "$i" -eq $((ngpus - 1)) ] && [ "$ngpus" -gt 1 ]; then cc="8, 0, 5"; else cc="9, 0, 2"; fi
    echo "  { $minor, \"$uuid\", \"NVIDIA Synthetic H200\", \"$bus\", $cc }," >>"$hdr"
    mknod -m 666 "$out/dev/nvidia$minor" c 195 "$minor"
    i=$((i + 1))
done
echo "};" >>"$hdr"
# MIG on GPU index 0 (minor ngpus-1): two GPU instances with one compute instance each.
caps_major=$((uvm_major + 2))
mig_minor=$((ngpus - 1))
capdir=$out/proc/driver/nvidia/capabilities
mkdir -p "$out/dev/nvidia-caps" "$capdir/mig"
cap() { # REL MINOR
    mkdir -p "$(dirname "$capdir/$1")"
    printf 'DeviceFileMinor: %d\nDeviceFileMode: 292\nDeviceFileModify: 1\n' "$2" >"$capdir/$1"
    mknod -m 444 "$out/dev/nvidia-caps/nvidia-cap$2" c $caps_major "$2"
}
cap mig/config 1
cap mig/monitor 2
echo "static const struct { unsigned gpu_minor, gi, ci, ci_cap; const char *uuid; } fake_migs[] = {" >>"$hdr"
for gi in 1 2; do
    cap "gpu$mig_minor/mig/gi$gi/access" $((gi * 10 + 20))
    cap "gpu$mig_minor/mig/gi$gi/ci0/access" $((gi * 10 + 21))
    echo "  { $mig_minor, $gi, 0, $((gi * 10 + 21)), \"MIG-0000aaaa-bbbb-cccc-dddd-00000000000$gi\" }," >>"$hdr"
done
echo "};" >>"$hdr"
mknod -m 666 "$out/dev/nvidiactl" c 195 255
mknod -m 666 "$out/dev/nvidia-modeset" c 195 254
mknod -m 666 "$out/dev/nvidia-uvm" c $uvm_major 0
mknod -m 666 "$out/dev/nvidia-uvm-tools" c $uvm_major 1

printf 'NVRM version: NVIDIA UNIX %s Kernel Module  %s  Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n' "$kmod_arch" "$ver" \
    >"$out/proc/driver/nvidia/version"
printf 'ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n' \
    >"$out/proc/driver/nvidia/params"
printf 'Character devices:\n  1 mem\n195 nvidia-frontend\n%d nvidia-uvm\n%d nvidia-caps-imex-channels\n%d nvidia-caps\n\nBlock devices:\n  7 loop\n' "$uvm_major" $((uvm_major + 1)) $((uvm_major + 2)) \
    >"$out/proc/devices"
# IMEX channels 0 and 1
mkdir -p "$out/dev/nvidia-caps-imex-channels"
mknod -m 666 "$out/dev/nvidia-caps-imex-channels/channel0" c $((uvm_major + 1)) 0
mknod -m 666 "$out/dev/nvidia-caps-imex-channels/channel1" c $((uvm_major + 1)) 1

# Libraries: name:soname (soname empty = versioned name).
cc=$target_cc
for spec in nvidia-ml:libnvidia-ml.so.1 nvidia-cfg:libnvidia-cfg.so.1 \
    cuda:libcuda.so.1 nvidia-ptxjitcompiler:libnvidia-ptxjitcompiler.so.1 nvidia-nvvm:libnvidia-nvvm.so.4 \
    nvidia-opencl:libnvidia-opencl.so.1 \
    nvidia-encode:libnvidia-encode.so.1 nvcuvid:libnvcuvid.so.1 nvidia-opticalflow:libnvidia-opticalflow.so.1 \
    nvidia-glcore: nvidia-eglcore: nvidia-tls: GLX_nvidia:libGLX_nvidia.so.0 EGL_nvidia:libEGL_nvidia.so.0 \
    nvidia-ngx:libnvidia-ngx.so.1; do
    name=${spec%%:*}
    soname=${spec#*:}
    file=lib$name.so.$ver
    [ -n "$soname" ] || soname=$file
    src=$here/fake/lib.c
    [ "$name" = nvidia-ml ] && src=$here/fake/nvml.c
    $cc -shared -fPIC -O1 -I"$out/build" -Wl,-soname,"$soname" -o "$lib/$file" "$src"
    [ "$soname" = "$file" ] || ln -sf "$file" "$lib/$soname"
done
# (x86-64 only: an arm64 driver has no 32-bit libraries.)
# i386 builds of two libraries, for the compat32 capability (gcc -m32: lib32gcc-N-dev
# and libc6-dev-i386, which scripts/ci-deps.sh installs).
lib32=$root/usr/lib/i386-linux-gnu
[ "$arch" = amd64 ] && mkdir -p "$lib32"
[ "$arch" = amd64 ] && for spec in cuda:libcuda.so.1 nvidia-ml:libnvidia-ml.so.1; do
    name=${spec%%:*}
    soname=${spec#*:}
    $cc -m32 -shared -fPIC -O1 -Wl,-soname,"$soname" -o "$lib32/lib$name.so.$ver" "$here/fake/lib.c" -Wl,--no-as-needed -lc
    ln -sf "lib$name.so.$ver" "$lib32/$soname"
done
# A library of another version and a non-driver library: both must be ignored.
$cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so.1.0.0-old" "$here/fake/lib.c"
$cc -shared -fPIC -Wl,-soname,libz-fake.so.1 -o "$lib/libz-fake.so.1.2.3" "$here/fake/lib.c"
ln -sf libz-fake.so.1.2.3 "$lib/libz-fake.so.1"

# Binaries, ELF as the real ones: nvidia-smi really links libnvidia-ml.so.1.
$cc -O1 -o "$bindir/nvidia-smi" "$here/fake/nvidia-smi.c" -L"$lib" -l:libnvidia-ml.so.1
for b in nvidia-debugdump nvidia-cuda-mps-control; do
    $cc -O1 -o "$bindir/$b" "$here/fake/tool.c"
done
# A wrapper script where the host puts tools on PATH: it cannot work in an image.
printf '#!/bin/sh\nexec /usr/local/nvidia/bin/nvidia-persistenced "$@"\n' >"$root/usr/bin/nvidia-persistenced"
chmod 755 "$root/usr/bin/nvidia-persistenced"
if [ "$layout" = ubuntu ]; then
    printf '#!/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi "$@"\n' >"$root/usr/bin/nvidia-smi"
    chmod 755 "$root/usr/bin/nvidia-smi"
fi

# Loader configuration the driver installs, and the MPS pipe directory.
mkdir -p "$root/usr/share/glvnd/egl_vendor.d" "$root/usr/share/vulkan/icd.d" "$root/etc/OpenCL/vendors" "$root/tmp/nvidia-mps"
printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libEGL_nvidia.so.0"}}\n' >"$root/usr/share/glvnd/egl_vendor.d/10_nvidia.json"
printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libGLX_nvidia.so.0","api_version":"1.3.277"}}\n' >"$root/usr/share/vulkan/icd.d/nvidia_icd.json"
echo libnvidia-opencl.so.1 >"$root/etc/OpenCL/vendors/nvidia.icd"

head -c 4096 /dev/zero >"$fwdir/gsp_ga10x.bin"
head -c 4096 /dev/zero >"$fwdir/gsp_tu10x.bin"
$hostcc -O1 -o "$out/build/mksock" "$here/fake/mksock.c"
"$out/build/mksock" "$root/var/run/nvidia-persistenced/socket"

# Static stand-ins for ldconfig that tests configure to probe the sandbox and faults.
mkdir -p "$out/tools"
for mode in probe fail hang; do
    $cc -static -O1 -DMODE_$(echo $mode | tr a-z A-Z) -o "$out/tools/ldconfig-$mode" "$here/fake/ldconfig-probe.c"
done
$cc -shared -fPIC -o "$out/tools/evil.so" "$here/fake/evil.c"
# What a CUDA image ships in /usr/local/cuda/compat (forward compatibility).
$cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/tools/libcuda-compat.so" "$here/fake/lib.c"
$cc -O1 -o "$out/tools/mksock" "$here/fake/mksock.c"

if [ "$layout" = ubuntu ]; then
    mkdir -p "$root/etc/ld.so.conf.d"
    printf 'include /etc/ld.so.conf.d/*.conf\n' >"$root/etc/ld.so.conf"
    printf '/usr/local/nvidia/lib64\n' >"$root/etc/ld.so.conf.d/000_nvidia.conf"
    [ "$arch" = amd64 ] && printf '/usr/lib/i386-linux-gnu\n' >"$root/etc/ld.so.conf.d/i386.conf"
else
    printf '/usr/lib/%s\n' "$triplet" >"$root/etc/ld.so.conf"
    [ "$arch" = amd64 ] && printf '/usr/lib/i386-linux-gnu\n' >>"$root/etc/ld.so.conf"
fi
"$ldconfig" -r "$root"

cat >"$out/config.toml" <<CONF
# nvhook configuration for the synthetic driver in $out
driver-root = "$root"
dev-root = "$out"
proc-root = "$out/proc"
sys-root = "$out/sys"

[runtime]
runtimes = ["runc"]
CONF
echo "synthetic $arch driver $ver with $ngpus GPUs ($layout layout) in $out"
