#!/bin/sh
# Payload (the VM's /payload/run.sh): every engine on its systemd cgroup driver, a
# container given GPU 0 of the synthetic driver, what it can open before and after two
# `systemctl daemon-reload`s, what systemd holds for its scope, and that nothing of
# the container is left in systemd once it is gone; then `nvhook doctor` on the host
# so set up (and on one whose systemd socket is wrong).
#
# Expects in /payload (made by ../suite.sh): nvhook, nvhook-runtime, driver/ (from
# make-fake-driver.sh, 2 GPUs), rootfs/ (make-rootfs.sh debian, with /gpu/nvidia0 =
# 195:0 and /gpu/nvidia1 = 195:1 outside the container's /dev), rootfs.tar (the same,
# for `docker import`).
#
# The synthetic GPU 0 is minor 1: a container given it must open 195:1 (/dev/nvidia1,
# /gpu/nvidia1) and the control node with ENXIO (the cgroup allowed it; no driver is
# behind the node) and 195:0 (/gpu/nvidia0, GPU 1) with EPERM. Each result is one line
# `RESULT <engine> <step> ok|FAIL ...`; the payload fails if any line says FAIL.
set -u
P=/payload
O=$P/out
ENGINES=${ENGINES:-runc crun podman-hooks podman-cdi docker containerd}
fail=0

result() { # ENGINE STEP ok|FAIL DETAIL
    echo "RESULT $1 $2 $3 ${4:-}"
    [ "$3" = ok ] || fail=1
}

# --- the host: nvhook installed as a user would, the driver's nodes in /dev ---------
install -m 755 -o root -g root $P/nvhook $P/nvhook-runtime /usr/local/bin/
cp -a $P/driver/dev/. /dev/
mkdir -p /etc/nvhook
conf() { # RUNTIME: a configuration for the synthetic driver, nodes in the host's /dev
    cat <<CONF
driver-root = "$P/driver/root"
dev-root = "/"
proc-root = "$P/driver/proc"
sys-root = "$P/driver/sys"
[runtime]
runtimes = ["$1"]
[log]
file = "$O/nvhook.log"
level = "debug"
CONF
}
conf runc >/etc/nvhook/config.toml
conf crun >/etc/nvhook/config-crun.toml
echo "== $(uname -r), $(systemctl --version | head -n1), cgroup fs $(stat -fc %T /sys/fs/cgroup)"
echo "== runc $(runc --version | head -n1 | cut -d' ' -f3), crun $(crun --version | head -n1 | cut -d' ' -f3), $(podman --version), $(docker --version 2>/dev/null | cut -d, -f1), containerd $(containerd --version | cut -d' ' -f3)"

gpu() { # INDEX: what the container given synthetic GPU INDEX must see (GPU i is minor
    # 1-i): its node in /dev and in /gpu opens (ENXIO), the other GPU's node is refused
    m=$((1 - $1)) other=$1
    WANT="/dev/nvidia$m=allowed /dev/nvidiactl=allowed /gpu/nvidia$m=allowed /gpu/nvidia$other=denied"
    NODE=/dev/nvidia$m OTHER=/dev/nvidia$other
    PROBE="for d in /dev/nvidia$m /dev/nvidiactl /gpu/nvidia$m /gpu/nvidia$other; do
  r=\$(head -c1 \$d 2>&1 >/dev/null)
  case \"\$r\" in
  *'No such device or address'*) s=allowed ;;
  *'Operation not permitted'*) s=denied ;;
  *'No such file'*) s=missing ;;
  *) s=\"other:\$r\" ;;
  esac
  printf '%s=%s ' \$d \"\$s\"
done"
}

unit_of() { # PID: the systemd scope its cgroup belongs to
    sed -n -e 's|^0::||p' -e 's|^[0-9]*:name=systemd:||p' "/proc/$1/cgroup" 2>/dev/null |
        tr / '\n' | grep '\.scope$' | tail -n 1
}

check() { # ENGINE STEP: probe through $EXEC and compare
    got=$(eval "$EXEC sh -c \"\$PROBE\"" 2>&1 | tr -s ' ' | sed 's/ $//')
    if [ "$got" = "$WANT" ]; then result "$1" "$2" ok "$got"; else result "$1" "$2" FAIL "$got"; fi
}

scope_state() { # ENGINE UNIT: what systemd holds for the scope. A scope that restricts
    # devices must list the GPU (else a reload takes it away); one that restricts none
    # (crun before 1.9 leaves device control to its own program below the scope) has no
    # program for systemd to rewrite, and nvhook must not give it one.
    show=$(systemctl show "$2" -p DevicePolicy -p DeviceAllow 2>&1)
    echo "  $(echo "$show" | tr '\n' ' ')"
    case $show in
    *DevicePolicy=strict* | *DevicePolicy=closed*)
        if echo "$show" | grep -q "$NODE rw"; then
            result "$1" device-allow ok "$2 lists $NODE"
        else
            result "$1" device-allow FAIL "$2 lists no $NODE"
        fi ;;
    *)
        if echo "$show" | grep -q "DeviceAllow=."; then
            result "$1" device-allow FAIL "a scope without a policy got a DeviceAllow list"
        else
            result "$1" device-allow ok "$2 restricts no device: nothing to keep"
        fi ;;
    esac
    if echo "$show" | grep -q "$OTHER "; then
        result "$1" only-its-gpu FAIL "$2 lists the other GPU's node"
    fi
}

leftovers() { # ENGINE KEY: nothing of the container (its scope's name) left in systemd
    sleep 1
    left=$(
        systemctl list-units --all --plain --no-legend 2>/dev/null | grep -F "$2"
        ls /run/systemd/system.control /run/systemd/transient /etc/systemd/system.control 2>/dev/null | grep -F "$2"
    )
    if [ -z "$left" ]; then result "$1" nothing-left ok; else result "$1" nothing-left FAIL "$(echo $left)"; fi
}

run_case() { # ENGINE START EXEC PID STOP KEY: the whole life of one container
    e=$1 EXEC=$3
    echo
    echo "==== $e"
    # to a file, not a pipe: a detached container keeps the start's stdout open
    if ! timeout 180 sh -c "$2" >"$O/$e.start" 2>&1 </dev/null; then
        result "$e" start FAIL "$(tail -n 3 "$O/$e.start" | tr '\n' ' ')"
        timeout 60 sh -c "$5" >/dev/null 2>&1
        return
    fi
    result "$e" start ok
    pid=$(sh -c "$4" 2>/dev/null)
    unit=$(unit_of "$pid")
    echo "  pid $pid, cgroup $(sed -n 's|^0::||p' /proc/$pid/cgroup 2>/dev/null) unit ${unit:-none}"
    check "$e" before-reload
    [ -n "$unit" ] && scope_state "$e" "$unit"
    systemctl daemon-reload
    sleep 1
    systemctl daemon-reload
    sleep 2
    check "$e" after-2-reloads
    timeout 120 sh -c "$5" >/dev/null 2>&1
    leftovers "$e" "${unit:-$6}"
}

for e in $ENGINES; do
    id=nv$e$$
    # the synthetic GPU 0 has MIG on: a CDI spec names it by its MIG devices only, as
    # NVIDIA's does, so the CDI case asks for GPU 1
    if [ $e = podman-cdi ]; then gpu 1; else gpu 0; fi
    case $e in
    runc | crun)
        cfg=/etc/nvhook/config.toml
        [ $e = crun ] && cfg=/etc/nvhook/config-crun.toml
        b=/var/tmp/b-$e
        rm -rf $b && mkdir -p $b && cp -a $P/rootfs $b/rootfs
        (cd $b && runc spec)
        sed -i -e 's/"terminal": true/"terminal": false/' \
            -e '/"args": \[/,/\]/s/"sh"/"sleep", "3600"/' \
            -e 's/"TERM=xterm"/"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0"/' \
            -e "s/\"linux\": {/\"linux\": { \"cgroupsPath\": \"system.slice:nvhook:$id\",/" $b/config.json
        R="env NVHOOK_CONFIG=$cfg nvhook-runtime --systemd-cgroup"
        run_case $e "$R run -d --bundle $b $id" "$R exec $id" \
            "$R state $id | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'" \
            "$R kill $id KILL; sleep 1; $R delete -f $id" "$id"
        ;;
    podman-hooks | podman-cdi)
        r=/var/tmp/r-$e
        rm -rf $r && cp -a $P/rootfs $r
        if [ $e = podman-hooks ]; then
            nvhook install podman >/dev/null || result $e install FAIL "nvhook install podman"
            ask="-e NVIDIA_VISIBLE_DEVICES=0"
        else
            rm -f /usr/share/containers/oci/hooks.d/*nvhook* /etc/containers/oci/hooks.d/*nvhook*
            mkdir -p /etc/cdi
            nvhook cdi generate --output /etc/cdi/nvidia.json >/dev/null || result $e cdi FAIL "cdi generate"
            ask="--device nvidia.com/gpu=1"
        fi
        run_case $e "podman run -d --name $id --cgroup-manager systemd --network none $ask --rootfs $r sleep 3600" \
            "podman exec $id" "podman inspect -f '{{.State.Pid}}' $id" \
            "podman rm -f -t 0 $id" "$id"
        rm -f /etc/cdi/nvidia.json
        ;;
    docker)
        mkdir -p /etc/docker
        echo '{"exec-opts": ["native.cgroupdriver=systemd"]}' >/etc/docker/daemon.json
        nvhook install docker >/dev/null || result docker install FAIL "nvhook install docker"
        if ! timeout 180 systemctl restart docker; then
            result docker daemon FAIL "$(systemctl status docker 2>&1 | tail -n 5 | tr '\n' ' ')"
            continue
        fi
        echo "  docker cgroup driver: $(docker info -f '{{.CgroupDriver}}' 2>&1)"
        docker import $P/rootfs.tar nvtest >/dev/null
        run_case docker "docker run -d --name $id --runtime nvidia --network none -e NVIDIA_VISIBLE_DEVICES=0 nvtest sleep 3600" \
            "docker exec $id" "docker inspect -f '{{.State.Pid}}' $id" \
            "docker rm -f $id" "$id"
        ;;
    containerd)
        nvhook install containerd >/dev/null || result containerd install FAIL "nvhook install containerd"
        if ! timeout 120 systemctl restart containerd; then
            result containerd daemon FAIL "$(systemctl status containerd 2>&1 | tail -n 5 | tr '\n' ' ')"
            continue
        fi
        r=/var/tmp/r-$e
        rm -rf $r && cp -a $P/rootfs $r
        run_case containerd "ctr run -d --rootfs --runtime io.containerd.runc.v2 --runc-binary /usr/local/bin/nvhook-runtime --runc-systemd-cgroup --cgroup system.slice:ctr:$id --env PATH=/usr/bin:/bin --env NVIDIA_VISIBLE_DEVICES=0 $r $id /bin/sleep 3600" \
            "ctr task exec --exec-id p\$(date +%N) $id" "ctr task ls | awk '\$1==\"$id\"{print \$2}'" \
            "ctr task kill -s KILL $id; sleep 1; ctr task rm -f $id; ctr container rm $id" "$id"
        ;;
    esac
done

# --- nvhook doctor on this host as set up above: nothing fails (systemd as PID 1 answers
# on its private socket, the engines' daemons keep CAP_NET_ADMIN where the kernel wants
# it for BPF_PROG_QUERY, a live container through the shim sees GPU 0); then, with
# systemd-socket pointed nowhere, its daemon-reload check fails.
echo
echo "==== doctor"
nvhook doctor --run >$O/doctor.txt 2>&1
rc=$?
sed 's/^/  /' $O/doctor.txt
if [ $rc = 0 ]; then
    result doctor good-host ok "$(tail -n 1 $O/doctor.txt)"
else
    result doctor good-host FAIL "exit $rc: $(grep '^FAIL' $O/doctor.txt | tr '\n' ' ')"
fi
for c in cgroups.systemd live.run driver.nvml; do
    line=$(grep "^[a-zA-Z]*  *$c " $O/doctor.txt)
    case $line in ok*) result doctor $c ok "$line" ;; *) result doctor $c FAIL "${line:-no $c line}" ;; esac
done
{ echo 'systemd-socket = "/run/nvhook-no-such-socket"'; conf runc; } >/etc/nvhook/config-no-systemd.toml
nvhook --config /etc/nvhook/config-no-systemd.toml doctor >$O/doctor-broken.txt 2>&1
rc=$?
line=$(grep -A1 '^FAIL  *cgroups.systemd ' $O/doctor-broken.txt | tr -s ' ' | tr '\n' ' ')
if [ $rc = 1 ] && [ -n "$line" ]; then
    result doctor systemd-unreachable ok "$line"
else
    result doctor systemd-unreachable FAIL "exit $rc: $(grep cgroups.systemd $O/doctor-broken.txt)"
fi

echo
echo "==== nvhook log: warnings and errors"
grep -E ' (WARN|ERROR) ' $O/nvhook.log | tail -n 20
exit $fail
