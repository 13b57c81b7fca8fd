#!/usr/bin/env bash
# Start a single-node SLURM (Debian's 22.05) on this machine, for trying videns
# without a cluster and for the integration tests. Run as root.
#
#   slurm/local/start.sh                 a preempted job gets SIGCONT+SIGTERM
#   slurm/local/start.sh --user-signal   it gets SIGCONT+its own --signal (USR2 for
#                                        submitit) instead of SIGTERM
#                                        (SlurmctldParameters=preempt_send_user_signal)
# Either way it is killed once GraceTime is over and requeued if it was
# submitted with --requeue.
#
# Idempotent: daemons that are up, healthy and started from the current config
# are left alone. A run that asks for the other preemption mode rewrites the
# config and restarts slurmctld and slurmd; running jobs survive that.
#
# Environment:
#   VIDENS_SLURM_DIR   state folder (config, spool, logs, pids); default /tmp/videns-slurm
#   VIDENS_SLURM_CPUS  CPUs the node advertises; default 8 (see below)
#
# Exit status: 0 ready; 1 something failed to start; 3 SLURM cannot run here at
# all (not root, packages not installable). Tests skip on 3 and fail on 1.
set -euo pipefail

readonly EXIT_FAIL=1 EXIT_UNAVAILABLE=3
readonly GPU_TYPE=1g.10gb GPU_COUNT=4
readonly GRACE_S=20
readonly MUNGE_KEY=/etc/munge/munge.key

say() { echo "start.sh: $*"; }
die() { echo "start.sh: error: $*" >&2; exit "$EXIT_FAIL"; }
unavailable() { echo "start.sh: SLURM unavailable here: $*" >&2; exit "$EXIT_UNAVAILABLE"; }

user_signal=0
for arg in "$@"; do
    case $arg in
        --user-signal) user_signal=1 ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (usage: start.sh [--user-signal])" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || unavailable "must run as root (it installs packages and runs slurmd as root)"

dir=${VIDENS_SLURM_DIR:-/tmp/videns-slurm}
# Advertise more CPUs than the 2 real cores (SlurmdParameters=config_overrides)
# so that 4 one-slice array tasks and an urgent job fit at once, as on a MIG
# node. Nothing is pinned (task/none), so the tasks simply share the cores;
# fine for small test jobs, wrong for benchmarks.
cpus=${VIDENS_SLURM_CPUS:-8}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "VIDENS_SLURM_CPUS must be a positive integer, got '$cpus'"

mkdir -p "$dir"/{etc,dev,log,run,state/slurmctld,state/slurmd}
dir=$(cd "$dir" && pwd -P)
conf=$dir/etc/slurm.conf
munge_dir=$dir/munge
munge_socket=$munge_dir/munge.socket.2
export SLURM_CONF=$conf

# Two start.sh at once (parallel test runs) would race on pid files.
exec 9>"$dir/start.lock"
flock -w 300 9 || die "another start.sh holds $dir/start.lock for over 300 s"
touch "$dir/.videns-slurm"

actions=()

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd munged sinfo; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || unavailable "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge (log: $dir/log/apt.log)"
    # The lock timeout makes us wait for an apt already running instead of failing.
    if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y slurm-wlm munge; } \
        >"$dir/log/apt.log" 2>&1; then
        unavailable "apt-get install slurm-wlm munge failed (see $dir/log/apt.log)"
    fi
    actions+=("installed slurm-wlm and munge")
}

# slurmd counts GPUs by opening device files; plain files leave the node INVAL.
make_fake_gpus() {
    local i dev
    for ((i = 0; i < GPU_COUNT; i++)); do
        dev=$dir/dev/fakegpu$i
        [[ -c $dev ]] && continue
        rm -f "$dev"
        mknod "$dev" c 1 3 || die "mknod $dev failed (fake GPU devices need mknod)"
    done
}

make_munge_key() {
    [[ -s $MUNGE_KEY ]] && return 0
    install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
    (umask 077 && head -c 1024 /dev/urandom >"$MUNGE_KEY.tmp")
    chown munge:munge "$MUNGE_KEY.tmp"
    chmod 0400 "$MUNGE_KEY.tmp"
    mv "$MUNGE_KEY.tmp" "$MUNGE_KEY"
    actions+=("created $MUNGE_KEY")
}

# Is the process in $1 (pid file) alive and named $2? Guards against stale pid
# files whose number now belongs to something else.
running() {
    local pid
    # The file can vanish between the test and the read (a concurrent stop).
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

stop_pidfile() {
    local pidfile=$1 name=$2 i
    running "$pidfile" "$name" || return 0
    kill -TERM "$(<"$pidfile")" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        running "$pidfile" "$name" || return 0
        sleep 0.1
    done
    kill -KILL "$(<"$pidfile")" 2>/dev/null || true
    sleep 0.5
}

munge_ok() { munge -n -S "$munge_socket" 2>/dev/null | unmunge -S "$munge_socket" >/dev/null 2>&1; }

start_munge() {
    if running "$munge_dir/munged.pid" munged && munge_ok; then
        return 0
    fi
    stop_pidfile "$munge_dir/munged.pid" munged
    # munged runs as user munge and refuses directories others can write to.
    install -d -o munge -g munge -m 0755 "$munge_dir"
    rm -f "$munge_socket" "$munge_socket.lock"
    # 9>&-: a daemon that inherits the lock fd would hold the lock forever.
    runuser -u munge -- munged --socket="$munge_socket" --pid-file="$munge_dir/munged.pid" \
        --log-file="$munge_dir/munged.log" --seed-file="$munge_dir/munged.seed" 9>&- ||
        die "munged failed to start (see $munge_dir/munged.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && { actions+=("started munged"); return 0; }
        sleep 0.2
    done
    die "munged started but does not answer on $munge_socket (see $munge_dir/munged.log)"
}

write_config() {
    local host=$1 mem=$2 ctld_params=""
    ((user_signal)) && ctld_params="SlurmctldParameters=preempt_send_user_signal"
    # Without DefMemPerCPU a job with no --mem would get the whole node's memory
    # (CR_Core_Memory) and the array tasks could not run side by side.
    local mem_per_cpu=$((mem / cpus))
    cat >"$conf.new" <<EOF
# Written by slurm/local/start.sh; edits are lost on its next run.
ClusterName=videns-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
StateSaveLocation=$dir/state/slurmctld
SlurmdSpoolDir=$dir/state/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$mem_per_cpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
# Keep finished jobs visible to scontrol (no accounting, so no sacct).
MinJobAge=600
# SIGTERM to SIGKILL on scancel and time limits; submitit ignores SIGTERM.
KillWait=10
# Like many sites: only jobs submitted with --requeue survive preemption.
JobRequeue=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$ctld_params
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem Gres=gpu:$GPU_TYPE:$GPU_COUNT State=UNKNOWN
PartitionName=mig Nodes=$host Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S MaxTime=INFINITE State=UP
PartitionName=urgent Nodes=$host PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP
EOF
    cat >"$dir/etc/gres.conf.new" <<EOF
# Written by slurm/local/start.sh: $GPU_COUNT fake MIG slices (character devices).
AutoDetect=off
NodeName=$host Name=gpu Type=$GPU_TYPE File=$dir/dev/fakegpu[0-$((GPU_COUNT - 1))]
EOF
    # Rename so that a client reading the config never sees half a file.
    mv "$dir/etc/gres.conf.new" "$dir/etc/gres.conf"
    mv "$conf.new" "$conf"
}

# Not "scontrol ping | grep -q": with pipefail, grep exiting early can fail the pipe.
ctld_up() {
    local out
    out=$(scontrol ping 2>/dev/null) || true
    [[ $out == *"is UP"* ]]
}

config_hash() { cat "$conf" "$dir/etc/gres.conf" | sha256sum | cut -d' ' -f1; }

# $1 daemon name; restarts it unless it runs from the current config.
ensure_daemon() {
    local name=$1 pidfile=$dir/run/$1.pid stamp=$dir/run/$1.confhash
    if running "$pidfile" "$name" && [[ -s $stamp && $(<"$stamp") == "$hash" ]]; then
        if [[ $name != slurmctld ]] || ctld_up; then
            return 0
        fi
    fi
    local verb=started
    if running "$pidfile" "$name"; then
        verb="restarted (config changed)"
        [[ -s $stamp && $(<"$stamp") == "$hash" ]] && verb="restarted (not answering)"
        stop_pidfile "$pidfile" "$name"
    fi
    rm -f "$stamp"
    "$name" -f "$conf" >>"$dir/log/$name.start.log" 2>&1 9>&- ||
        die "$name failed to start (see $dir/log/$name.log and $dir/log/$name.start.log)"
    echo "$hash" >"$stamp"
    actions+=("$verb $name")
}

wait_for_controller() {
    local i
    for ((i = 0; i < 150; i++)); do
        ctld_up && return 0
        sleep 0.2
    done
    die "slurmctld does not answer 'scontrol ping' after 30 s (see $dir/log/slurmctld.log)"
}

# Wait until the node takes jobs; resume it once slurmd answers if it was left
# DOWN/DRAIN/INVAL by an earlier run.
wait_for_node() {
    local host=$1 state i resumed=0
    for ((i = 0; i < 120; i++)); do
        state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n1) || true
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            *'*' | '') ;; # slurmd not registered or not responding yet
            down* | drain* | inval* | fail*)
                if ((resumed < 3)) && scontrol update nodename="$host" state=resume 2>/dev/null; then
                    resumed=$((resumed + 1))
                    actions+=("resumed node $host (was $state)")
                fi
                ;;
            *) ;; # transient, e.g. planned or reserved
        esac
        sleep 0.5
    done
    local reason
    reason=$(scontrol show node "$host" 2>/dev/null | sed -n 's/^ *Reason=//p') || true
    die "node $host not usable after 60 s: state '${state:-unknown}'${reason:+, reason: $reason} (see $dir/log/slurmd.log)"
}

# Plain sbatch/squeue (and submitit, which calls them) read /etc/slurm/slurm.conf.
# Point it here unless a real config lives there.
link_system_config() {
    local link=/etc/slurm/slurm.conf target
    if [[ -L $link ]]; then
        target=$(readlink "$link")
        [[ $target == "$conf" ]] && return 0
        [[ -e "$(dirname "$(dirname "$target")")/.videns-slurm" || ! -e $target ]] || {
            say "note: $link points to $target, not ours; export SLURM_CONF=$conf"
            return 0
        }
    elif [[ -e $link ]]; then
        say "note: $link is a real config; left alone. Use: export SLURM_CONF=$conf"
        return 0
    fi
    mkdir -p /etc/slurm
    ln -sfn "$conf" "$link"
    actions+=("linked $link -> $conf")
}

install_packages
make_fake_gpus
make_munge_key
start_munge

host=$(hostname -s)
node_line=$(slurmd -C | head -n1) || die "'slurmd -C' failed"
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
[[ -n $mem ]] || die "no RealMemory in 'slurmd -C' output: $node_line"
write_config "$host" "$mem"
hash=$(config_hash)

ensure_daemon slurmctld
wait_for_controller
ensure_daemon slurmd
wait_for_node "$host"
link_system_config

running_params=$(scontrol show config | sed -n 's/^SlurmctldParameters *= *//p')
if ((user_signal)); then
    [[ $running_params == *preempt_send_user_signal* ]] ||
        die "slurmctld runs without preempt_send_user_signal although it was asked for"
    mode="user signal: a preempted job gets SIGCONT + its own --signal (preempt_send_user_signal)"
else
    [[ $running_params != *preempt_send_user_signal* ]] ||
        die "slurmctld still runs with preempt_send_user_signal"
    mode="default: a preempted job gets SIGCONT + SIGTERM (no preempt_send_user_signal)"
fi

if ((${#actions[@]})); then
    for a in "${actions[@]}"; do say "$a"; done
else
    say "already running and healthy; nothing to do"
fi
say "state folder: $dir"
say "node $host: $cpus CPUs advertised (real: $(nproc)), ${mem} MB, gres gpu:$GPU_TYPE:$GPU_COUNT (fake)"
say "mode: $mode"
say "mig jobs are preempted by urgent jobs: killed ${GRACE_S}-$((GRACE_S + 30)) s later, requeued if --requeue"
say "clients: export SLURM_CONF=$conf"
sinfo -o '%10P %.5a %.10l %.6D %.8t %.16G %N'
