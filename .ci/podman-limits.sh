#!/bin/sh
# Makes sure podman runs a container with this machine's own configuration, as the README's
# commands and the compose files run the images of `make image`. Where root may not raise
# resource limits (a sandbox, a CI container without CAP_SYS_RESOURCE), podman's defaults for
# a root container, nofile and nproc of 1048576, make every `podman run` fail ("error setting
# rlimit type 7: operation not permitted"); and where cgroups are a v1/v2 hybrid, crun refuses
# ("cgroups in hybrid mode not supported") where runc runs. There this writes a containers.conf
# drop-in, as tests/integration/containers.rs writes its own containers.conf: limits no higher
# than this shell's (nproc at most kernel.pid_max, as podman lowers its own to it) and runc;
# and says so. Where podman runs a container already, nothing is written.
#
# The probe runs a container from a bare directory holding busybox, in a store of its own that
# is removed afterwards: nothing is pulled, and no image or container of the machine is seen.
set -u
dropin=/etc/containers/containers.conf.d/50-envharness-limits.conf

# Runs the probe; its last lines of output are in $error when it fails.
probe() {
	work=$(mktemp -d)
	mkdir -p "$work/rootfs/bin"
	cp /bin/busybox "$work/rootfs/bin/busybox"
	timeout 60 podman --root "$work/root" --runroot "$work/runroot" --tmpdir "$work/tmp" \
		--storage-driver vfs run --rm --network=none --rootfs "$work/rootfs" \
		/bin/busybox true >"$work/output" 2>&1
	status=$?
	error=$(tail -n 3 "$work/output")
	rm -rf "$work"
	return $status
}

# The soft and hard values of this shell's limit $1 ("Max open files") as SOFT:HARD, none
# higher than $2 (unlimited counts as $2). Read from /proc, as sh's ulimit has no portable
# option for the number of processes.
limit() {
	awk -v name="$1" -v most="$2" '
		function capped(value) { return (value == "unlimited" || value + 0 > most) ? most : value }
		index($0, name) == 1 {
			split(substr($0, length(name) + 1), fields, " ")
			print capped(fields[1]) ":" capped(fields[2])
		}' /proc/self/limits
}

probe && exit 0
case $error in
*rlimit*|*"hybrid mode"*) ;;
*)
	echo "podman cannot run a container here: $error" >&2
	exit 1
	;;
esac
nofile=$(limit "Max open files" 1048576)
nproc=$(limit "Max processes" "$(cat /proc/sys/kernel/pid_max)")
mkdir -p "$(dirname "$dropin")"
cat >"$dropin" <<CONF
# Written by envharness's make engine (.ci/podman-limits.sh): podman could not run a
# container here with its defaults:
# $(echo "$error" | tail -n 1)
[containers]
# Limits no higher than those of the shell that ran make: root may not raise its own.
default_ulimits = ["nofile=$nofile", "nproc=$nproc"]
[engine]
# runc runs where crun refuses a hybrid cgroup v1/v2 hierarchy.
runtime = "runc"
CONF
if probe; then
	echo "podman: wrote $dropin (container limits nofile=$nofile nproc=$nproc, runtime runc): its defaults could not run a container here"
	exit 0
fi
rm -f "$dropin"
echo "podman cannot run a container here, even with limits of nofile=$nofile nproc=$nproc and runc: $error" >&2
exit 1
