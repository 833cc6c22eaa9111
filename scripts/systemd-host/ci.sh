#!/bin/sh
# The systemd test host's CI entry: builds (or reuses) both images and runs the
# smoke payload on the combinations the project supports: bookworm with cgroup v2
# and v1, trixie with cgroup v2. Fails if any VM run fails.
#
#   scripts/systemd-host/ci.sh [BIN_DIR]     # BIN_DIR: target/release (built before)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release}
fail=0
for c in "bookworm v2" "bookworm v1" "trixie v2"; do
    # shellcheck disable=SC2086
    set -- $c
    echo "==== systemd host: $1 cgroup $2"
    "$here/smoke.sh" "$1" "$2" "$bin" || { echo "==== FAILED: $1 $2"; fail=1; }
done
exit $fail
