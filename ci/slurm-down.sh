#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by ci/slurm-up.sh.
#
# Stops only the daemons that slurm-up.sh started (their pids are in $STATE_DIR), by pid, in
# the reverse order of starting: slurmd, slurmctld, slurmdbd, mariadbd, munged. A daemon that
# was already running before slurm-up.sh (a system munged or MariaDB) is left alone. Restores
# a slurm.conf / slurmdbd.conf / cgroup.conf that slurm-up.sh replaced. Safe to run twice, or without up.
set -uo pipefail

STATE_DIR=${STATE_DIR:-/run/tahoeflow-slurm}
STOP_WAIT_S=${STOP_WAIT_S:-20}

log() { echo "slurm-down: $*" >&2; }

[ "$(id -u)" = 0 ] || {
    echo "slurm-down: ERROR: must run as root" >&2
    exit 1
}

rc=0
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f="$STATE_DIR/$name.pid"
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    # the pid must still belong to the daemon we started (pids are reused)
    if ! kill -0 "$pid" 2>/dev/null || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
        log "$name (pid $pid) is not running"
        rm -f "$f"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq $((STOP_WAIT_S * 4))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT_S}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || rc=1
    fi
    log "stopped $name (pid $pid)"
    rm -f "$f"
done

for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/cgroup.conf; do
    if [ -e "$conf.pre-tahoeflow" ]; then
        mv -f "$conf.pre-tahoeflow" "$conf"
        log "restored the original $conf"
    fi
done
rm -f "$STATE_DIR/mem_enforce"
rmdir "$STATE_DIR" 2>/dev/null || true
exit $rc
