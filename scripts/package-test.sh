#!/bin/sh
# The package end to end (as root, run by scripts/test.sh): build the .deb, install it,
# start a GPU container (synthetic driver) through the installed /usr/bin/nvhook-runtime
# and /usr/bin/nvhook, check versions, man pages and completions, then `dpkg -r` leaves
# only the conffile and `dpkg -P` leaves nothing. Fails loudly on any step.
#
#   scripts/package-test.sh [--deb FILE]   # FILE: a .deb built before, for this machine
#                                          # (the arm64 test host is given the arm64 one)
set -eu
cd "$(dirname "$0")/.."
fail() { echo "package-test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root"
if dpkg-query -W -f='${Status}' nvhook 2>/dev/null | grep -q "install ok installed"; then
    fail "nvhook is installed on this machine already; remove it first (dpkg -P nvhook)"
fi
if [ "${1:-}" = --deb ]; then
    deb=${2:?--deb needs a file}
else
    deb=$(scripts/package.sh | tail -n1)
fi
work=$(mktemp -d /tmp/nvhook-pkg.XXXXXX)
trap 'dpkg -P nvhook >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^/$' >"$work/files"
dpkg -i "$deb" >/dev/null
for f in /usr/bin/nvhook /usr/bin/nvhook-runtime /etc/nvhook/config.toml \
    /usr/share/man/man1/nvhook.1.gz /usr/share/man/man1/nvhook-runtime.1.gz \
    /usr/share/bash-completion/completions/nvhook /usr/lib/systemd/system/nvhook-cdi-refresh.service; do
    [ -e "$f" ] || fail "$f missing after dpkg -i"
done
[ "$(readlink /usr/bin/nvidia-container-runtime-hook)" = nvhook ] || fail "no nvidia-container-runtime-hook link"
/usr/bin/nvhook --version | grep -q "^nvhook [0-9.]* (commit [0-9a-f]*)$" || fail "nvhook --version: $(/usr/bin/nvhook --version)"
# the shipped config is all comments: the defaults
NVHOOK_CONFIG=/etc/nvhook/config.toml /usr/bin/nvhook config >"$work/config.json" || fail "the shipped config does not load"
grep -q '"driver-root": "/"' "$work/config.json" || fail "shipped config is not the defaults: $(cat "$work/config.json")"

# a GPU container through the installed binaries
scripts/make-fake-driver.sh "$work/driver" 2 >/dev/null
mkdir -p "$work/bundle"
scripts/make-rootfs.sh "$work/bundle/rootfs" debian >/dev/null
(cd "$work/bundle" && runc spec)
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|"sh"$|"sh", "-c", "nvidia-smi -L; ls /dev \| grep nvidia; LD_TRACE_LOADED_OBJECTS=1 nvidia-smi"|' \
    -e 's|"TERM=xterm"|"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=1"|' "$work/bundle/config.json"
out=$(NVHOOK_CONFIG="$work/driver/config.toml" /usr/bin/nvhook-runtime --root "$work/runc" run --bundle "$work/bundle" "nvhook-pkg-$$" </dev/null 2>&1) \
    || fail "GPU container through the installed shim failed: $out"
echo "$out" | grep -q "UUID: GPU-00001001" || fail "the container did not see GPU 1: $out"
# GPU 1 of two is minor 0: its node only, not GPU 0's
echo "$out" | grep -qx nvidia0 && ! echo "$out" | grep -qx nvidia1 || fail "not exactly GPU 1's node: $out"
# the image's loader finds the driver's library where nvhook put it, for this machine's
# architecture (x86_64-linux-gnu, aarch64-linux-gnu)
triplet=$(gcc -dumpmachine)
echo "$out" | grep -q "libnvidia-ml.so.1 => /usr/lib/$triplet/libnvidia-ml.so.1" ||
    fail "the loader did not resolve libnvidia-ml.so.1 in /usr/lib/$triplet: $out"
grep -q '/usr/bin/nvhook' "$work/bundle/config.json" || fail "the hook entry does not name the installed nvhook"
/usr/bin/nvhook-runtime --version | head -n1 | grep -q "^nvhook-runtime " || fail "nvhook-runtime --version"
# the packaged shim is position-independent, and on x86-64 statically linked (no program
# interpreter: a static-pie; arm64 has no static-pie glibc build, see package.sh)
[ "$(dpkg --print-architecture)" = amd64 ] && readelf -l /usr/bin/nvhook-runtime | grep -q INTERP &&
    fail "/usr/bin/nvhook-runtime is not static"
readelf -h /usr/bin/nvhook-runtime | grep -q 'Type:.*DYN' || fail "/usr/bin/nvhook-runtime is not position-independent"
# the installers point engines at the installed binaries by default
echo '{}' >"$work/daemon.json"
/usr/bin/nvhook install docker --docker-config "$work/daemon.json" >/dev/null
grep -q '"path": "/usr/bin/nvhook-runtime"' "$work/daemon.json" || fail "install docker named: $(cat "$work/daemon.json")"
/usr/bin/nvhook install podman --hooks-dir "$work/hooks.d" >/dev/null
grep -q '"path": "/usr/bin/nvhook"' "$work/hooks.d/oci-nvhook.json" || fail "install podman named: $(cat "$work/hooks.d/oci-nvhook.json")"
# nvhook doctor from the package: its man page and completion, and its verdicts on the
# installed binaries, the synthetic driver and a live container through the installed shim
[ -e /usr/share/man/man1/nvhook-doctor.1.gz ] || fail "no nvhook-doctor man page"
grep -q doctor /usr/share/bash-completion/completions/nvhook || fail "no doctor in the bash completion"
NVHOOK_CONFIG="$work/driver/config.toml" /usr/bin/nvhook doctor --run >"$work/doctor.txt" || true
for c in nvhook.hook nvhook.shim nvhook.config driver.found driver.nodes driver.nvml live.run; do
    grep -q "^ok  *$c " "$work/doctor.txt" || fail "nvhook doctor: $c is not ok: $(cat "$work/doctor.txt")"
done

# remove: only the conffile stays; purge: nothing
# the package's files (not directories) still on disk
present() {
    while read -r f; do
        if { [ -e "$f" ] || [ -L "$f" ]; } && [ ! -d "$f" ]; then echo "$f"; fi
    done <"$work/files"
}
dpkg -r nvhook >/dev/null
left=$(present)
[ "$left" = /etc/nvhook/config.toml ] || fail "dpkg -r left: $left"
dpkg -P nvhook >/dev/null
left=$(present)
[ -z "$left" ] || fail "dpkg -P left: $left"
[ ! -d /etc/nvhook ] || fail "dpkg -P left /etc/nvhook"
[ ! -e /var/log/nvhook.log ] || fail "dpkg -P left /var/log/nvhook.log"
echo "package-test: $deb installed, ran a GPU container, removed cleanly"
