#!/bin/sh
# Builds the Debian package target/debian/nvhook_<version>_<arch>.deb from a release
# build: both binaries in /usr/bin, the nvidia-container-runtime-hook link (Docker's
# --gpus looks for that name), a commented default /etc/nvhook/config.toml (a conffile),
# man pages and shell completions generated from the command definitions, the CDI
# refresh units, the licence and changelog. Needs cargo and dpkg-deb.
#
#   scripts/package.sh [--arch amd64|arm64]   # default: this machine's architecture
#
# --arch arm64 on an x86-64 machine cross-builds (scripts/arm64.sh deps installs the
# toolchain) and runs the arm64 nvhook through qemu-user for the version and the docs.
set -eu
umask 022
cd "$(dirname "$0")/.."
native=$(dpkg --print-architecture)
arch=$native
case ${1:-} in
"") ;;
--arch) arch=${2:?--arch needs amd64 or arm64} ;;
*) echo "usage: package.sh [--arch amd64|arm64]" >&2; exit 2 ;;
esac
case $arch in
"$native")
    cargo build --release --workspace
    bin=target/release
    triple=
    ;;
arm64)
    scripts/arm64.sh deps >&2
    scripts/arm64.sh binfmt >&2
    # the cross build as arm64.sh makes it (Debian's cargo and rustc, the cross linker)
    scripts/arm64.sh build >&2
    triple=aarch64-unknown-linux-gnu
    bin=target/$triple/release
    ;;
*) echo "package.sh: --arch must be amd64 or arm64 (this machine is $native)" >&2; exit 2 ;;
esac
version=$("$bin/nvhook" --version | awk '{print $2}')
out=target/debian
stage=$out/stage
rm -rf "$stage" "$out/docs"
mkdir -p "$stage/DEBIAN"
install -D -m 755 "$bin/nvhook" "$stage/usr/bin/nvhook"
# the shim statically linked: it is exec'd on every runtime call. Not on arm64: Rust
# links aarch64 glibc programs static only as fixed-address executables (no static-pie
# there), and a root program without address randomisation is not worth ~0.3 ms.
if [ "$arch" = arm64 ]; then
    install -D -m 755 "$bin/nvhook-runtime" "$stage/usr/bin/nvhook-runtime"
else
    install -D -m 755 "$(scripts/build-static-shim.sh)" "$stage/usr/bin/nvhook-runtime"
fi
ln -s nvhook "$stage/usr/bin/nvidia-container-runtime-hook"
install -D -m 644 deploy/config.toml "$stage/etc/nvhook/config.toml"
"$bin/nvhook" generate-docs --out "$out/docs"
mkdir -p "$stage/usr/share/man/man1"
for m in "$out"/docs/man/*.1; do
    gzip -9n <"$m" >"$stage/usr/share/man/man1/$(basename "$m").gz"
done
install -D -m 644 "$out/docs/completions/nvhook.bash" "$stage/usr/share/bash-completion/completions/nvhook"
install -D -m 644 "$out/docs/completions/_nvhook" "$stage/usr/share/zsh/vendor-completions/_nvhook"
install -D -m 644 "$out/docs/completions/nvhook.fish" "$stage/usr/share/fish/vendor_completions.d/nvhook.fish"
for u in deploy/systemd/nvhook-cdi-refresh.service deploy/systemd/nvhook-cdi-refresh.path; do
    mkdir -p "$stage/usr/lib/systemd/system"
    sed 's|/usr/local/bin/nvhook|/usr/bin/nvhook|g' "$u" >"$stage/usr/lib/systemd/system/$(basename "$u")"
done
install -D -m 644 deploy/udev/99-nvhook-cdi-refresh.rules "$stage/usr/lib/udev/rules.d/99-nvhook-cdi-refresh.rules"
doc=$stage/usr/share/doc/nvhook
mkdir -p "$doc"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: nvhook"
    echo
    echo "Files: *"
    echo "License: Apache-2.0"
    echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} >"$doc/copyright"
gzip -9n <CHANGELOG.md >"$doc/changelog.gz"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: nvhook
Version: $version
Architecture: $arch
Maintainer: nvhook developers <nvhook@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34)
Recommends: runc | crun
Conflicts: nvidia-container-toolkit
Breaks: nvidia-container-toolkit
Section: admin
Priority: optional
Homepage: https://github.com/nvhook/nvhook
Description: gives OCI containers their NVIDIA GPUs
 nvhook-runtime is a runtime shim that Docker and containerd call instead of runc; it
 adds nvhook's hook to containers that ask for GPUs. nvhook is the OCI hook that mounts
 the driver's device nodes, libraries and tools into them, reading NVIDIA's variables
 (NVIDIA_VISIBLE_DEVICES, ...), and generates CDI specs. A Rust successor of NVIDIA's
 container toolkit.
CONTROL
echo /etc/nvhook/config.toml >"$stage/DEBIAN/conffiles"
# systemd learns of the units (they stay disabled until the operator enables them), and
# forgets them on removal; nothing is started.
cat >"$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
cat >"$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then rm -f /var/log/nvhook.log; fi
SCRIPT
cat >"$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl disable --now nvhook-cdi-refresh.path nvhook-cdi-refresh.service 2>/dev/null || true
fi
SCRIPT
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm" "$stage/DEBIAN/prerm"
deb=$out/nvhook_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$stage" "$deb" >/dev/null
echo "$deb"
