#!/usr/bin/env bash
# Stop the one-node cluster that start-local-cluster.sh started (its jobs, slurmd, slurmctld, munged).
set -uo pipefail

STATE=/var/lib/elth-slurm
command -v scancel >/dev/null && scancel --full --user="$(id -un)" >/dev/null 2>&1 || true
stop_pid_file() {
    local file="$1" name="$2" pid
    pid="$(cat "$file" 2>/dev/null)" || return 0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        echo "stop-local-cluster: stopped $name"
    fi
}
stop_pid_file "$STATE/slurmd.pid" slurmd
stop_pid_file "$STATE/slurmctld.pid" slurmctld
stop_pid_file /run/munge/munged.pid munged
exit 0
