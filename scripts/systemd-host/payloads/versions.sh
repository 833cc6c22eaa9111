#!/bin/sh
# Payload (the VM's /payload/run.sh): what the image holds and how it booted. The
# smoke test of the systemd test host itself; fails if any tool is missing.
set -u
rc=0
show() { # LABEL COMMAND...: run it, print its first line, remember a failure
    l=$1
    shift
    v=$("$@" 2>&1) || rc=1
    printf '%-12s %s\n' "$l" "$(printf '%s\n' "$v" | head -n 1)"
}
show kernel uname -r
show systemd systemctl --version
show cgroupfs stat -fc %T /sys/fs/cgroup
show runc runc --version
show crun crun --version
show podman podman --version
show docker docker --version
show containerd containerd --version
show nvhook /payload/nvhook --version
show nvhook-rt /payload/nvhook-runtime --version
echo "uptime      $(cut -d' ' -f1 /proc/uptime)s"
echo "state       $(systemctl is-system-running 2>&1)"
systemctl --failed --no-legend --plain 2>&1 | sed 's/^/failed      /'
exit $rc
