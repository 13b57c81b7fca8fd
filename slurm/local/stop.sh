#!/usr/bin/env bash
# Stop the single-node SLURM that slurm/local/start.sh started: slurmd,
# slurmctld, then munged, found by their pid files in the state folder
# (VIDENS_SLURM_DIR, default /tmp/videns-slurm). Idempotent. Job state is kept,
# so start.sh brings queued jobs back; jobs still running are left to their
# slurmstepd and are lost to SLURM if it stays down.
set -euo pipefail

dir=${VIDENS_SLURM_DIR:-/tmp/videns-slurm}

say() { echo "stop.sh: $*"; }

# Only a live process with the expected name counts: a stale pid file may name
# an unrelated process by now.
running() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

stop() {
    local pidfile=$1 name=$2 pid i
    if ! running "$pidfile" "$name"; then
        say "$name not running"
        return 0
    fi
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        if ! running "$pidfile" "$name"; then
            say "stopped $name (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $name (pid $pid) after 15 s"
}

if [[ ! -d $dir ]]; then
    say "no state folder $dir; nothing to stop"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "stop.sh: error: must run as root" >&2; exit 1; }

stop "$dir/run/slurmd.pid" slurmd
stop "$dir/run/slurmctld.pid" slurmctld
stop "$dir/munge/munged.pid" munged
rm -f "$dir"/run/*.confhash
