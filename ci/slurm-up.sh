#!/usr/bin/env bash
# Start a single-node SLURM cluster on 127.0.0.1 for tests and CI (Debian/Ubuntu, as root).
#
#   sudo bash ci/slurm-up.sh            # munge + MariaDB + slurmdbd + slurmctld + slurmd
#   sudo WITH_DBD=0 bash ci/slurm-up.sh # no accounting (then pass --slurm-status-command squeue)
#   sudo bash ci/slurm-down.sh          # stops only what this script started, in reverse order
#
# Follows the verified recipe in the shared notes (slurm.md). With WITH_DBD=1 (the default)
# accounting goes through slurmdbd into MariaDB, so `sacct` works (the slurm executor plugin
# polls job states with sacct by default) and the account "ci" exists with the submitting
# user in it: pass `--default-resources slurm_partition=debug slurm_account=ci`.
#
# Idempotent: a second run finds its own daemons alive (through the pid files it wrote under
# $STATE_DIR) and leaves them alone; it rewrites /etc/slurm/*.conf only when the content
# changes, restarting its own daemons if so. A pre-existing slurm.conf that this script did not
# write is kept as slurm.conf.pre-tahoeflow and restored by slurm-down.sh. munged and MariaDB
# that were already running are reused and never stopped; a slurmctld/slurmd/slurmdbd that this
# script did not start is an error (they would fight over the ports and the config).
#
# Memory is enforced (a job whose processes together use more than its --mem is killed):
#   cgroup  TaskPlugin=task/cgroup + ProctrackType=proctrack/cgroup, cgroup.conf
#           ConstrainRAMSpace=yes: the kernel limits the job's cgroup (all its steps together,
#           so the batch step's Snakemake counts with the srun step's). Chosen when a memory
#           cgroup can be created here and takes a limit (cgroup v1, or v2 with the memory
#           controller delegated), and a probe job runs under it.
#   acct    JobAcctGatherType=jobacct_gather/linux, JobAcctGatherFrequency=task=1,
#           JobAcctGatherParams=OverMemoryKill: slurmstepd sums the RSS of each step's processes
#           every second and kills a step over the limit (per step; Slurm >= 19.05 replaced
#           MemLimitEnforce by this). The fallback where cgroups cannot be used.
# The method in use is written to $STATE_DIR/mem_enforce (tests read it).
#
# Environment: WITH_DBD (1), STATE_DIR (/run/tahoeflow-slurm), PARTITION (debug),
# ACCOUNT (ci), SKIP_APT (0; 1 = never call apt-get), WAIT_S (60; per readiness wait),
# MEM_ENFORCE (auto; cgroup or acct to force one).
set -euo pipefail

WITH_DBD=${WITH_DBD:-1}
STATE_DIR=${STATE_DIR:-/run/tahoeflow-slurm}
PARTITION=${PARTITION:-debug}
ACCOUNT=${ACCOUNT:-ci}
SKIP_APT=${SKIP_APT:-0}
WAIT_S=${WAIT_S:-60}
MEM_ENFORCE=${MEM_ENFORCE:-auto}
MEM_ENFORCE_ASKED=$MEM_ENFORCE
MARK="# written by tahoeflow ci/slurm-up.sh"
CONF=/etc/slurm/slurm.conf
CGROUP_CONF=/etc/slurm/cgroup.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOG_DIR=/var/log/slurm

log() { echo "slurm-up: $*" >&2; }
die() {
    echo "slurm-up: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

# ---------------------------------------------------------------- packages
pkgs="munge slurmctld slurmd slurm-client"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server mariadb-client"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "$SKIP_APT" = 1 ] && die "missing packages:$missing (SKIP_APT=1)"
    command -v apt-get >/dev/null || die "apt-get not available; install:$missing"
    log "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$STATE_DIR" "$LOG_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
chown slurm:slurm /var/lib/slurm/slurmctld "$LOG_DIR"

# ---------------------------------------------------------------- pid bookkeeping
# ours NAME: the pid of daemon NAME if this script started it and it is still alive.
ours() {
    local f="$STATE_DIR/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        echo "$pid"
        return 0
    fi
    rm -f "$f" # stale (daemon died or the machine restarted)
    return 1
}

# foreign NAME PIDFILE: a live NAME process that this script did not start.
foreign() {
    local pid
    ours "$1" >/dev/null && return 1
    pid=$(pgrep -x "$1" 2>/dev/null | head -1 || true)
    [ -n "$pid" ] && echo "$pid"
}

# try_record NAME PIDFILE: copy the daemon's own pid file into the state dir (wait for it);
# 1 when the daemon did not come up.
try_record() {
    local name=$1 pidfile=$2 pid=""
    for _ in $(seq "$WAIT_S"); do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && break
        fi
        pid=""
        sleep 0.5
    done
    [ -n "$pid" ] || return 1
    echo "$pid" >"$STATE_DIR/$name.pid"
    log "started $name (pid $pid)"
}

record() { try_record "$@" || die "$1 did not start (see $LOG_DIR/)"; }

# stop_ours NAME: stop a daemon this script started (used when its config changed).
stop_ours() {
    local pid
    pid=$(ours "$1") || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE_DIR/$1.pid"
    log "stopped $1 (pid $pid) to apply a new configuration"
}

for d in slurmctld slurmd slurmdbd; do
    if pid=$(foreign "$d"); then
        die "$d (pid $pid) is running but was not started by this script; stop it first"
    fi
done

# install_conf TARGET MODE OWNER CONTENT: write only when different; 0 = changed.
install_conf() {
    local target=$1 mode=$2 owner=$3 content=$4 tmp
    if [ -f "$target" ] && [ "$(cat "$target")" = "$content" ]; then
        return 1
    fi
    if [ -f "$target" ] && ! grep -qF "$MARK" "$target" && [ ! -e "$target.pre-tahoeflow" ]; then
        cp -p "$target" "$target.pre-tahoeflow"
        log "kept the existing $target as $target.pre-tahoeflow"
    fi
    mkdir -p "$(dirname "$target")"
    tmp=$(mktemp "$target.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$target"
    log "wrote $target"
    return 0
}

# ---------------------------------------------------------------- slurm.conf
H=$(hostname -s)
MEM=$(($(free -m | awk '/^Mem:/{print $2}') - 1024))
[ "$MEM" -ge 512 ] || MEM=512
if [ "$WITH_DBD" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
    ACCT="AccountingStorageType=accounting_storage/none"
fi

# ---------------------------------------------------------------- memory enforcement
# cgroup_usable: 0 when a memory cgroup can be made here and holds a limit; sets CGROUP_PLUGIN.
cgroup_usable() {
    local d v="" fs
    fs=$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || true)
    if [ "$fs" = cgroup2fs ]; then
        grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null || return 1
        d=/sys/fs/cgroup/tahoeflow-probe.$$
        mkdir "$d" 2>/dev/null || return 1
        if [ -e "$d/memory.max" ]; then
            echo 67108864 >"$d/memory.max" 2>/dev/null && v=$(cat "$d/memory.max")
        fi
        rmdir "$d"
        CGROUP_PLUGIN=cgroup/v2
    else
        d=/sys/fs/cgroup/memory/tahoeflow-probe.$$
        mkdir "$d" 2>/dev/null || return 1
        echo 67108864 >"$d/memory.limit_in_bytes" 2>/dev/null && v=$(cat "$d/memory.limit_in_bytes")
        rmdir "$d"
        CGROUP_PLUGIN=cgroup/v1
    fi
    [ "$v" = 67108864 ]
}

CGROUP_PLUGIN=""
case "$MEM_ENFORCE" in
cgroup) cgroup_usable || die "MEM_ENFORCE=cgroup but no memory cgroup can be made here" ;;
acct) ;;
auto)
    if [ -s "$STATE_DIR/mem_enforce" ] && ours slurmd >/dev/null; then
        MEM_ENFORCE=$(cat "$STATE_DIR/mem_enforce") # as found by this script's earlier run
        [ "$MEM_ENFORCE" = cgroup ] && { cgroup_usable || MEM_ENFORCE=acct; }
    elif cgroup_usable; then
        MEM_ENFORCE=cgroup
    else
        MEM_ENFORCE=acct
        log "no usable memory cgroup here: memory is enforced by accounting (OverMemoryKill)"
    fi
    ;;
*) die "MEM_ENFORCE must be auto, cgroup or acct (got $MEM_ENFORCE)" ;;
esac

# slurm_conf MODE: slurm.conf's content for memory enforcement MODE (cgroup or acct).
# DefMemPerCPU: without it a job with no --mem gets the whole node (jobs run one at a time).
# MinJobAge=300: keeps finished jobs visible to squeue long enough for the plugin's polling.
# JobAcctGatherFrequency=task=1: MaxRSS (and, in acct mode, the kill) sampled every second.
slurm_conf() {
    local enforce
    if [ "$1" = cgroup ]; then
        enforce="ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1"
    else
        enforce="ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill"
    fi
    echo "$MARK
ClusterName=localcluster
SlurmctldHost=${H}(127.0.0.1)
AuthType=auth/munge
MpiDefault=none
${enforce}
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmUser=slurm
SlurmdUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
${ACCT}
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
MinJobAge=300
NodeName=${H} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${H} Default=YES MaxTime=INFINITE State=UP"
}

# cgroup.conf (read by task/cgroup and proctrack/cgroup): the job's RAM limit is its --mem,
# no swap beyond it.
CGROUP_CONTENT="$MARK
CgroupPlugin=${CGROUP_PLUGIN:-autodetect}
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedRAMSpace=100
AllowedSwapSpace=0
ConstrainCores=no
ConstrainDevices=no"

# apply_conf MODE: write slurm.conf (and cgroup.conf) for MODE; stop our daemons if changed.
apply_conf() {
    local changed=1
    install_conf "$CONF" 644 root:root "$(slurm_conf "$1")" && changed=0
    if [ "$1" = cgroup ]; then
        install_conf "$CGROUP_CONF" 644 root:root "$CGROUP_CONTENT" && changed=0
    fi
    if [ "$changed" = 0 ]; then
        stop_ours slurmd
        stop_ours slurmctld
    fi
    echo "$1" >"$STATE_DIR/mem_enforce"
}
apply_conf "$MEM_ENFORCE"

# ---------------------------------------------------------------- munge
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -f
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! ours munged >/dev/null; then
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "reusing the munged that is already running"
    else
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG_DIR/munged.out" 2>&1
        record munged /run/munge/munged.pid
    fi
fi
munge -n | unmunge >/dev/null || die "munge does not work"

# ---------------------------------------------------------------- MariaDB + slurmdbd
if [ "$WITH_DBD" = 1 ]; then
    if ! ours mariadbd >/dev/null; then
        if mariadb -e 'select 1' >/dev/null 2>&1; then
            log "reusing the MariaDB server that is already running"
        else
            mkdir -p /run/mysqld
            chown mysql:mysql /run/mysqld
            rm -f /run/mysqld/mysqld.pid
            setsid nohup /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
                --socket=/run/mysqld/mysqld.sock </dev/null >>"$LOG_DIR/mariadbd.out" 2>&1 &
            record mariadbd /run/mysqld/mysqld.pid
        fi
    fi
    for _ in $(seq "$WAIT_S"); do
        mariadb -e 'select 1' >/dev/null 2>&1 && break
        sleep 1
    done
    mariadb -e 'select 1' >/dev/null 2>&1 || die "MariaDB does not answer (see $LOG_DIR/mariadbd.out)"
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

    DBD="$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db"
    if install_conf "$DBD_CONF" 600 slurm:slurm "$DBD"; then
        stop_ours slurmdbd
    fi
    if ! ours slurmdbd >/dev/null; then
        rm -f /run/slurmdbd.pid
        /usr/sbin/slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.out" 2>&1
        record slurmdbd /run/slurmdbd.pid
    fi
    for _ in $(seq "$WAIT_S"); do
        sacctmgr -n list cluster >/dev/null 2>&1 && break
        sleep 1
    done
    sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd does not answer (see $LOG_DIR/slurmdbd.log)"
fi

# ---------------------------------------------------------------- slurmctld + slurmd
# start_nodes: start slurmctld and slurmd (unless ours already run) and wait for the node;
# 1 (with NODE_STATE set) when slurmd does not come up or the node is not usable.
start_nodes() {
    if ! ours slurmctld >/dev/null; then
        rm -f /run/slurmctld.pid
        /usr/sbin/slurmctld </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1
        record slurmctld /run/slurmctld.pid
    fi
    if ! ours slurmd >/dev/null; then
        rm -f /run/slurmd.pid
        /usr/sbin/slurmd </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 || true
        try_record slurmd /run/slurmd.pid || {
            NODE_STATE="slurmd did not start"
            return 1
        }
    fi
    NODE_STATE=""
    for _ in $(seq "$WAIT_S"); do
        NODE_STATE=$(sinfo -h -n "$H" -o %t 2>/dev/null | head -1 || true)
        case "$NODE_STATE" in idle | mix | alloc | comp) return 0 ;; esac
        sleep 1
    done
    return 1
}

# fall_back REASON: leave the cgroup plugins for accounting-based enforcement and restart.
fall_back() {
    log "memory cgroups do not work here ($1; see $LOG_DIR/slurmd.log): using OverMemoryKill"
    stop_ours slurmd
    MEM_ENFORCE=acct
    apply_conf acct
    stop_ours slurmctld
    start_nodes || die "node $H is not up (state '${NODE_STATE}'; see $LOG_DIR/slurmctld.log and slurmd.log)"
}

if ! start_nodes; then
    if [ "$MEM_ENFORCE" = cgroup ] && [ "${MEM_ENFORCE_ASKED:-auto}" = auto ]; then
        fall_back "node state '${NODE_STATE}'"
    else
        die "node $H is not up (state '${NODE_STATE}'; see $LOG_DIR/slurmctld.log and slurmd.log)"
    fi
fi

# ---------------------------------------------------------------- accounting
if [ "$WITH_DBD" = 1 ]; then
    # slurmctld registers the cluster in slurmdbd on start
    for _ in $(seq "$WAIT_S"); do
        sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx localcluster && break
        sleep 1
    done
    sacctmgr -n -P list cluster format=cluster | grep -qx localcluster ||
        die "cluster localcluster is not registered in slurmdbd"
    user=${SUDO_USER:-root}
    if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account 2>/dev/null)" ]; then
        sacctmgr -i add account "$ACCOUNT" Description="$ACCOUNT" Organization="$ACCOUNT" >/dev/null
    fi
    if ! sacctmgr -n -P list association user="$user" account="$ACCOUNT" format=user 2>/dev/null | grep -qx "$user"; then
        sacctmgr -i add user "$user" Account="$ACCOUNT" >/dev/null
    fi
fi

# ---------------------------------------------------------------- probe job
# A job step must start under the chosen plugins (task/cgroup can load and still fail to set
# up a job's cgroup). Where the cgroup plugins fail and MEM_ENFORCE is auto, fall back.
probe() {
    timeout 60 srun -p "$PARTITION" -N1 -n1 --mem=64 -t 1 -J tahoeflow-probe true \
        </dev/null >>"$LOG_DIR/probe.out" 2>&1
}
if ! probe; then
    if [ "$MEM_ENFORCE" = cgroup ] && [ "$MEM_ENFORCE_ASKED" = auto ]; then
        fall_back "a probe job failed"
        probe || die "a probe job failed (see $LOG_DIR/probe.out and slurmd.log)"
    else
        die "a probe job failed (see $LOG_DIR/probe.out and slurmd.log)"
    fi
fi

sinfo
log "memory enforcement: $MEM_ENFORCE$([ "$MEM_ENFORCE" = cgroup ] && echo " ($CGROUP_PLUGIN)")"
log "ready: partition $PARTITION$([ "$WITH_DBD" = 1 ] && echo ", account $ACCOUNT (sacct works)")"
