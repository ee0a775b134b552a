#!/bin/sh
# PID 1 of a user-mode Linux guest started by tests/uml.py.
#
# The guest's root is the host's own filesystem (hostfs), so the same Python,
# virtualenv and checkout are visible here.  Everything written outside the
# tmpfs mounts below lands on the HOST: keep writes inside the job directory.
#
# The job directory comes from the kernel command line (KANOTIFY_GUEST_DIR=...,
# passed to init as an environment variable).  It holds run.sh (the command,
# written by the host) and modules (one per line, loaded first); it receives
# output, rc and init.log.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
dir="$KANOTIFY_GUEST_DIR"

shutdown() {
    sync
    poweroff -f
    # poweroff may be missing or refuse without an init system: ask the kernel.
    echo o >/proc/sysrq-trigger
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run                 # ip netns, keepalived pid files: private to the guest
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /lib/modules         # point modprobe at the UML kernel's modules
# the kernel's modules: KANOTIFY_UML_MODULES from the kernel command line (tests/uml.py)
ln -s "${KANOTIFY_UML_MODULES:-/usr/lib/uml/modules}/$(uname -r)" "/lib/modules/$(uname -r)"

if [ -z "$dir" ] || [ ! -f "$dir/run.sh" ]; then
    echo "kanotify guest-init: no job (KANOTIFY_GUEST_DIR=$dir)" >/dev/console
    shutdown
fi

{
    echo "kernel $(uname -r)"
    # one module name per line, written by the host
    if [ -f "$dir/modules" ]; then
        while read -r mod; do
            [ -n "$mod" ] && { modprobe "$mod" || echo "modprobe $mod failed"; }
        done <"$dir/modules"
    fi
    ip link set lo up
    hostname kanotify-guest
    echo "init done"
} >"$dir/init.log" 2>&1

# The host reads rc only once it is whole (rename is atomic on the host).
sh "$dir/run.sh" >"$dir/output" 2>&1 </dev/null
echo $? >"$dir/rc.tmp"
mv "$dir/rc.tmp" "$dir/rc"
shutdown
