#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests and CI (not for production use).
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm (and munge) when sinfo is missing
#   scripts/slurm-local.sh start     write /etc/slurm/slurm.conf, start munged/slurmctld/slurmd, wait until ready
#   scripts/slurm-local.sh status    exit 0 when the cluster is up and the node is usable
#   scripts/slurm-local.sh stop      stop the daemons this script started (by their pid files), remove the config
#
# Needs root (SlurmUser=root, config in /etc). Facts behind the choices: shared/docs/slurm-local.md.
# - The config must be /etc/slurm/slurm.conf: the jobstep executor plugin drops SLURM_CONF before its srun.
# - No cgroups in the sandbox: proctrack/linuxproc, task/none, jobacct_gather/none.
# - No accounting database: run snakemake with --slurm-status-command squeue.
# Environment:
#   HEADSIEVE_SLURM_DIR    scratch folder for state, spool, pid and log files (default /tmp/headsieve-slurm)
#   HEADSIEVE_SLURM_AUTH   munge | none (default: munge when munged and /etc/munge/munge.key exist, else none;
#                          none means auth/none + cred/none, test-only)
#   HEADSIEVE_SLURM_FORCE  1: replace an /etc/slurm/slurm.conf that this script did not write (stop puts it back)
#   HEADSIEVE_SLURM_WAIT   seconds to wait for readiness (default 60)
# start is idempotent: daemons that already run (pid file + process name) are left alone.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR="${HEADSIEVE_SLURM_DIR:-/tmp/headsieve-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by headsieve scripts/slurm-local.sh"
WAIT="${HEADSIEVE_SLURM_WAIT:-60}"
NODE=localhost
PARTITION=local

die() {
    echo "slurm-local: $*" >&2
    exit 1
}
say() { echo "slurm-local: $*"; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (SlurmUser=root and the config lives in /etc/slurm)"
}

# alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME that is not a zombie
alive() {
    local pidfile=$1 name=$2 pid state comm
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$name" ] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ "$state" != X ]
}

# a process called NAME runs (any pid file), for daemons started by someone else
running_any() {
    local name=$1 p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = "$name" ] || continue
        [ "$(awk '/^State:/ {print $2}' "$p/status" 2>/dev/null)" != Z ] && return 0
    done
    return 1
}

# stop_pid PIDFILE NAME: TERM, wait up to 15 s (a killed daemon can stay a zombie a while), then KILL
stop_pid() {
    local pidfile=$1 name=$2 pid
    if ! alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        alive "$pidfile" "$name" || break
        sleep 0.5
    done
    if alive "$pidfile" "$name"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$pidfile"
    say "stopped $name ($pid)"
}

auth_mode() {
    local mode="${HEADSIEVE_SLURM_AUTH:-}"
    if [ -z "$mode" ]; then
        if [ -x /usr/sbin/munged ] && [ -s /etc/munge/munge.key ]; then mode=munge; else mode=none; fi
    fi
    case "$mode" in
        munge | none) echo "$mode" ;;
        *) die "HEADSIEVE_SLURM_AUTH must be munge or none, not '$mode'" ;;
    esac
}

cmd_install() {
    need_root
    if command -v sinfo >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null; then
        say "SLURM is installed ($(slurmd -V 2>/dev/null))"
        return 0
    fi
    command -v apt-get >/dev/null || die "sinfo is missing and apt-get is not available: install SLURM yourself"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; then
        apt-get update >/dev/null || die "apt-get update failed"
        apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm failed"
    fi
    command -v sinfo >/dev/null || die "slurm-wlm installed but sinfo is still missing"
    say "installed $(slurmd -V 2>/dev/null)"
}

write_conf() {
    local auth=$1 node tmp
    # the CPU and memory line of this machine, under our node name
    node=$(slurmd -C 2>/dev/null | awk '/^NodeName=/ {sub(/^NodeName=[^ ]+ /, ""); print; exit}')
    [ -n "$node" ] || die "slurmd -C printed no node line"
    if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        [ "${HEADSIEVE_SLURM_FORCE:-0}" = 1 ] \
            || die "$CONF exists and was not written by this script (HEADSIEVE_SLURM_FORCE=1 replaces it until stop)"
        cp -p "$CONF" "$CONF.headsieve-saved" # put back by stop
    fi
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
$MARKER (scratch folder $DIR); stop with: scripts/slurm-local.sh stop
ClusterName=headsieve
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/$auth
CredType=cred/$auth
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if ! cmp -s "$tmp" "$CONF" 2>/dev/null; then
        install -m 0644 "$tmp" "$CONF"
    fi
    rm -f "$tmp"
}

start_munge() {
    if alive /run/munge/munged.pid munged || running_any munged; then
        return 0 # someone's munged (ours or the system's): munged twice fails
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
    touch "$DIR/run/munged.ours"
    for _ in $(seq 1 20); do
        [ -S /run/munge/munge.socket.2 ] && return 0
        sleep 0.25
    done
    die "munged started but its socket /run/munge/munge.socket.2 did not appear"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

wait_ready() {
    local deadline=$((SECONDS + WAIT)) state=""
    until scontrol ping 2>/dev/null | grep -q "is UP"; do
        [ $SECONDS -lt $deadline ] || die "slurmctld does not answer scontrol ping (see $DIR/log/slurmctld.log)"
        sleep 0.5
    done
    while :; do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated) break ;;
            drain* | down* | fail*)
                # a job that failed under an earlier config can leave the node drained
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                ;;
        esac
        [ $SECONDS -lt $deadline ] || die "node $NODE is '$state', not idle (see $DIR/log/slurmd.log)"
        sleep 0.5
    done
    timeout 60 srun -t 1 -N1 -n1 true >/dev/null 2>&1 \
        || die "srun -t 1 true failed on node $NODE (state '$(node_state)'; see $DIR/log/slurmd.log)"
}

cmd_start() {
    need_root
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null; then
        die "SLURM is not installed (run: scripts/slurm-local.sh install)"
    fi
    local auth ctld=0 sd=0
    auth=$(auth_mode)
    alive "$DIR/run/slurmctld.pid" slurmctld && ctld=1
    alive "$DIR/run/slurmd.pid" slurmd && sd=1
    if [ $ctld = 0 ] && running_any slurmctld; then
        die "a slurmctld not started by this script (pid files under $DIR) is running; stop it first"
    fi
    if [ $sd = 0 ] && running_any slurmd; then
        die "a slurmd not started by this script (pid files under $DIR) is running; stop it first"
    fi
    if [ $ctld = 0 ] && [ $sd = 0 ]; then
        write_conf "$auth"
    elif ! grep -qF "$MARKER" "$CONF" 2>/dev/null; then
        die "daemons run from $DIR but $CONF is not ours; run stop, then start"
    fi
    [ "$auth" = munge ] && start_munge
    if [ $ctld = 0 ]; then
        export SLURM_CONF="$CONF"
        slurmctld -f "$CONF" || die "slurmctld failed to start (see $DIR/log/slurmctld.log)"
        say "started slurmctld"
    fi
    if [ $sd = 0 ]; then
        slurmd -f "$CONF" -N "$NODE" || die "slurmd failed to start (see $DIR/log/slurmd.log)"
        say "started slurmd"
    fi
    wait_ready
    say "ready: partition '$PARTITION', node $NODE ($(node_state)), auth/$auth, files under $DIR"
}

cmd_status() {
    local ok=0 daemon
    for daemon in slurmctld slurmd; do
        if alive "$DIR/run/$daemon.pid" "$daemon"; then
            echo "$daemon: running ($(cat "$DIR/run/$daemon.pid"))"
        else
            echo "$daemon: not running"
            ok=1
        fi
    done
    if [ $ok = 0 ]; then
        scontrol ping 2>/dev/null | grep -q "is UP" || { echo "scontrol ping: controller not UP"; ok=1; }
        echo "node $NODE: $(node_state)"
        case "$(node_state)" in idle | mixed | allocated) ;; *) ok=1 ;; esac
    fi
    return $ok
}

cmd_stop() {
    need_root
    # cancel what is left so slurmd stops cleanly
    if alive "$DIR/run/slurmctld.pid" slurmctld; then
        scancel --quiet --full --user=root >/dev/null 2>&1 || true
    fi
    stop_pid "$DIR/run/slurmd.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    if [ -e "$DIR/run/munged.ours" ]; then
        stop_pid /run/munge/munged.pid munged
        rm -f "$DIR/run/munged.ours"
    fi
    # Remove our config: while it exists, every `scontrol` waits ~10 s for the stopped controller, and
    # snakemake-executor-plugin-slurm runs `scontrol show config` whenever snakemake starts.
    if grep -qF "$MARKER" "$CONF" 2>/dev/null; then
        rm -f "$CONF"
        if [ -e "$CONF.headsieve-saved" ]; then
            mv "$CONF.headsieve-saved" "$CONF"
            say "restored the earlier $CONF"
        fi
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    *)
        echo "usage: $0 install|start|stop|status|restart" >&2
        exit 2
        ;;
esac
