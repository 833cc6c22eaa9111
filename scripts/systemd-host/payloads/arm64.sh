#!/bin/sh
# Payload (the arm64 VM's /payload/run.sh, made by scripts/arm64.sh host): nvhook on a
# whole arm64 Debian host (systemd, cgroup v2, runc:arm64), natively, no qemu-user.
#
# Expects in /payload: nvhook_<version>_arm64.deb; scripts/ (make-fake-driver.sh,
# make-rootfs.sh, package-test.sh, fake/); unit and equiv (the library's unit tests and
# tests/ldcache_equivalence.rs, cross-built for aarch64); driver/ (a synthetic arm64
# driver cross-built on x86-64 by `ARCH=arm64 make-fake-driver.sh`, 2 GPUs).
#
# Each result is one line `RESULT <part> <step> ok|FAIL ...`; it fails if any says FAIL.
set -u
P=/payload
O=$P/out
fail=0
result() { # PART STEP ok|FAIL DETAIL
    echo "RESULT $1 $2 $3 ${4:-}"
    [ "$3" = ok ] || fail=1
}
deb=$(ls $P/nvhook_*_arm64.deb)
echo "== $(uname -m), $(uname -r), $(systemctl --version | head -n1), cgroup fs $(stat -fc %T /sys/fs/cgroup), runc $(runc --version | head -n1 | cut -d' ' -f3), $(gcc --version | head -n1)"
if [ "$(uname -m)" = aarch64 ]; then result host arch ok aarch64; else result host arch FAIL "$(uname -m)"; fi

# 1. The package: installed, a GPU container through the installed shim and hook on a
# synthetic driver built here (native gcc and ldconfig), removed and purged cleanly.
if sh $P/scripts/package-test.sh --deb "$deb" >$O/package.log 2>&1; then
    result package install-run-remove ok "$(tail -n1 $O/package.log)"
else
    result package install-run-remove FAIL "$(tail -n3 $O/package.log | tr '\n' ' ')"
fi

# 2. Every unit test of the library, on an arm64 kernel (openat2, bpf, the mount API:
# what qemu-user lacks) with this host's own glibc files and ldconfig.
if $P/unit --test-threads=2 >$O/unit.log 2>&1; then
    result unit all ok "$(grep '^test result' $O/unit.log)"
else
    result unit all FAIL "$(grep -E '^    |^test result' $O/unit.log | tr '\n' ' ')"
fi

# 3. The loader cache nvhook writes against arm64 glibc's own ldconfig (/sbin/ldconfig
# here), on random library sets in Debian- and RHEL-style trees.
if $P/equiv --test-threads=1 >$O/equiv.log 2>&1; then
    result equivalence arm64-ldconfig ok "$(grep '^test result' $O/equiv.log)"
else
    result equivalence arm64-ldconfig FAIL "$(grep -E 'panicked|^test result' $O/equiv.log | head -n 5 | tr '\n' ' ')"
fi

# 4. The cross-built driver (aarch64-linux-gnu-gcc and ldconfig through qemu-user on
# x86-64), a RHEL-style image (libraries in /usr/lib64), GPU 0 asked for: exactly its
# node, the image's loader resolving the driver's libraries, its ldconfig listing them
# as AArch64, nvidia-smi running.
dpkg -i "$deb" >/dev/null 2>&1 || result e2e install FAIL "dpkg -i"
cp -a $P/driver/dev/. /dev/
cat >$O/config.toml <<CONF
driver-root = "$P/driver/root"
dev-root = "/"
proc-root = "$P/driver/proc"
sys-root = "$P/driver/sys"
[runtime]
runtimes = ["runc"]
CONF
b=/var/tmp/b-rhel
rm -rf $b && mkdir -p $b
sh $P/scripts/make-rootfs.sh $b/rootfs rhel >/dev/null
# GPU 1's node (195:0) in the image, outside the /dev runc mounts over it: the device
# cgroup (nvhook's program on cgroup v2) must refuse it, and allow GPU 0's (195:1).
mkdir -p $b/rootfs/gpu
mknod -m 666 $b/rootfs/gpu/nvidia0 c 195 0
cat >$b/rootfs/probe.sh <<'PROBE'
nvidia-smi -L
ls /dev | grep nvidia
LD_TRACE_LOADED_OBJECTS=1 nvidia-smi
ldconfig -p | grep libcuda
for d in /dev/nvidia1 /gpu/nvidia0; do echo "open $d: $(head -c1 $d 2>&1 >/dev/null)"; done
PROBE
(cd $b && runc spec)
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|"sh"$|"sh", "/probe.sh"|' \
    -e 's|"TERM=xterm"|"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0"|' $b/config.json
if out=$(NVHOOK_CONFIG=$O/config.toml nvhook-runtime run --bundle $b nv-rhel </dev/null 2>&1); then
    result e2e start ok
else
    result e2e start FAIL "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
echo "$out" | sed 's/^/  | /'
check() { # STEP PATTERN (grep -E, on the container's output)
    if echo "$out" | grep -qE "$2"; then result e2e "$1" ok; else result e2e "$1" FAIL "no /$2/"; fi
}
# GPU 0 of two is minor 1 (the synthetic driver numbers minors backwards)
check nvidia-smi 'GPU 0: NVIDIA Synthetic H200 \(UUID: GPU-00001000-'
check its-node '^nvidia1$'
if echo "$out" | grep -qx nvidia0; then result e2e only-its-gpu FAIL "GPU 1's node is there"; else result e2e only-its-gpu ok; fi
check loader 'libnvidia-ml\.so\.1 => /usr/lib64/libnvidia-ml\.so\.1'
check ldcache 'libcuda\.so\.1 \(libc6,AArch64\) => /usr/lib64/libcuda\.so\.1'
# ENXIO: the cgroup let the open through (no driver is behind the synthetic node)
check cgroup-allows-its-gpu 'open /dev/nvidia1: .*No such device or address'
check cgroup-refuses-the-other 'open /gpu/nvidia0: .*Operation not permitted'
# The same with the host's arm64 ldconfig in nvhook's sandbox (its seccomp list is
# the architecture's: a syscall missing from it kills ldconfig, and the start fails).
sed 's/^\[runtime\]/ld-cache = "ldconfig"\n[runtime]/' $O/config.toml >$O/config-ldconfig.toml
if out=$(NVHOOK_CONFIG=$O/config-ldconfig.toml nvhook-runtime run --bundle $b nv-rhel-ldconfig </dev/null 2>&1); then
    check ldconfig-sandbox 'libcuda\.so\.1 \(libc6,AArch64\) => /usr/lib64/libcuda\.so\.1'
else
    result e2e ldconfig-sandbox FAIL "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
m=$(od -An -tu2 -j18 -N2 /usr/bin/nvhook | tr -d ' ')
if [ "$m" = 183 ]; then result e2e binary-arch ok "e_machine 183 (aarch64)"; else result e2e binary-arch FAIL "e_machine $m"; fi

# 5. What a start costs here (emulated: qemu TCG on x86-64; compare ratios, not times):
# the same bundle run to completion through the shim, with a GPU (shim + hook) and
# without (the shim passes the call through to runc), alternating. Each run checks
# that it was what it is counted as: GPU 0's node there, or no node at all.
sed -e 's|"sh", "/probe.sh"|"test", "-c", "/dev/nvidia1"|' $b/config.json >$b/config.gpu.json
sed -e 's|"sh", "/probe.sh"|"test", "!", "-e", "/dev/nvidia1"|' -e 's|, "NVIDIA_VISIBLE_DEVICES=0"||' \
    $b/config.json >$b/config.plain.json
ms() { echo $(($(date +%s%N) / 1000000)); }
gpu=0 plain=0 n=${NVHOOK_ARM64_STARTS:-8}
i=0
while [ $i -lt "$n" ]; do
    for kind in gpu plain; do
        cp $b/config.$kind.json $b/config.json
        t0=$(ms)
        NVHOOK_CONFIG=$O/config.toml nvhook-runtime run --bundle $b nv-t$i-$kind </dev/null >/dev/null 2>&1 ||
            result bench "start-$kind" FAIL "run $i"
        t=$(($(ms) - t0))
        eval "$kind=\$((\$$kind + t))"
    done
    i=$((i + 1))
done
echo "  arm64 (emulated) container start, mean of $n: with a GPU $((gpu / n)) ms, without $((plain / n)) ms"
result bench start ok "gpu=$((gpu / n))ms plain=$((plain / n))ms ratio=$(awk "BEGIN{printf \"%.2f\", $gpu/$plain}")"
dpkg -P nvhook >/dev/null 2>&1
exit $fail
