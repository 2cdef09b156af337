#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munged + slurmctld + slurmd on localhost), for the
# tests of `elth experiment --launcher slurm` and for trying the launcher by hand.
#
# Idempotent: installs Debian's slurm-wlm and munge when missing (root only), writes
# /etc/slurm/slurm.conf when there is none (or when the one there was written by this script),
# starts each daemon that is not running, and waits until the node accepts jobs. Exits 0 with the
# cluster up, non-zero with the reason on stderr otherwise. `stop-local-cluster.sh` stops it.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# one-node cluster written by elth's start-local-cluster.sh"
NODE="$(hostname -s)"
STATE=/var/lib/elth-slurm
LOG=/var/log/elth-slurm
WAIT_S="${ELTH_SLURM_WAIT_S:-60}"

fail() { echo "start-local-cluster: $*" >&2; exit 1; }
say() { echo "start-local-cluster: $*"; }

cluster_ready() {
    command -v sinfo >/dev/null 2>&1 || return 1
    local state
    state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1)" || return 1
    [[ "$state" =~ ^(idle|mixed|allocated|completing) ]]
}

if cluster_ready; then
    say "already up (node $NODE: $(sinfo -h -N -n "$NODE" -o %T | head -n1))"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "not running as root and no cluster is up: cannot start one"

# -- packages ----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
        || fail "apt-get install slurm-wlm munge failed"
fi

# -- munge -------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
    chmod 755 /run/munge
    say "starting munged"
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged --force || munged --force
    else
        munged --force
    fi
    for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n | unmunge >/dev/null 2>&1 || fail "munged does not answer (see /var/log/munge/munged.log)"
fi

# -- configuration -----------------------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    fail "$CONF exists and was not written by this script: leaving it alone (no cluster started)"
fi
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOG"
NEW_CONF="$(cat <<CONF_EOF
$MARKER
ClusterName=elth-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF_EOF
)"
if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    printf '%s\n' "$NEW_CONF" > "$CONF"
    say "wrote $CONF ($CPUS CPUs, $MEM_MB MB on node $NODE)"
    # A running daemon keeps the old configuration: restart what is running.
    for pid_file in "$STATE/slurmctld.pid" "$STATE/slurmd.pid"; do
        if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
            kill "$(cat "$pid_file")"; sleep 1
        fi
    done
fi

# -- daemons -----------------------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running "$STATE/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -c || fail "slurmctld did not start (see $LOG/slurmctld.log)"
fi
if ! running "$STATE/slurmd.pid"; then
    say "starting slurmd"
    slurmd -N "$NODE" || fail "slurmd did not start (see $LOG/slurmd.log)"
fi

for _ in $(seq 1 $((WAIT_S * 2))); do
    if cluster_ready; then
        say "up: node $NODE, partition local, $CPUS CPUs (stop with $(dirname "$0")/stop-local-cluster.sh)"
        exit 0
    fi
    state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)"
    if [[ "$state" =~ ^(down|drain) ]]; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
fail "node $NODE not ready after ${WAIT_S}s (state: ${state:-unknown}; see $LOG/slurmctld.log, $LOG/slurmd.log)"
