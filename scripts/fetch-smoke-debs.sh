#!/bin/sh
# Downloads the Debian packages scripts/gpu-smoke.sh unpacks on a GPU machine that has
# no runc (into .work/debs, which git ignores).
set -eu
cd "$(dirname "$0")/.."
mkdir -p .work/debs
cd .work/debs
apt-get download runc libseccomp2 busybox-static
ls -l
