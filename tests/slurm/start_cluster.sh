#!/usr/bin/env bash
# A one-node SLURM 22.05 cluster on this machine, from Debian packages, for tests/test_slurm.py
# and CI. Needs root and apt. Idempotent: a cluster that already answers is left as it is.
#   tests/slurm/start_cluster.sh [--restart]   install if needed, configure, (re)start, wait until idle
# Settings known to work in a container (see DESIGN.md): munge; proctrack/linuxproc, task/none
# (no cgroups); select/cons_tres; two fake GPUs (gres on empty files /dev/fakegpu0-1); no slurmdbd,
# so job status comes from squeue, and MinJobAge keeps finished jobs there for an hour.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: needs root (installs packages, starts munged, slurmctld, slurmd)" >&2
    exit 2
fi

node=$(hostname -s)
if [ "${1:-}" != "--restart" ] && [ -c /dev/fakegpu0 ] && grep -qs nvidia_gpu_env /etc/slurm/gres.conf && command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP \
        && sinfo -h -N -n "$node" -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    echo "start_cluster.sh: SLURM already up on $node"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key, and munged running as its own user
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
# Ask munge itself rather than pgrep: a killed munged can linger as a zombie, and a kill leaves
# its socket behind (--force reuses it).
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.2; done
munge -n | unmunge >/dev/null

# slurm.conf: this node with its real CPUs and memory, plus two fake GPUs
hardware=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=snaketune
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$node $hardware Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# Two fake GPUs: slurmd takes only character or block devices (a plain file is dropped with an
# error, and then jobs get no CUDA_VISIBLE_DEVICES), so make /dev/null-like nodes, or links to it.
for i in 0 1; do
    if [ ! -c /dev/fakegpu$i ]; then
        rm -f /dev/fakegpu$i
        mknod -m 0666 /dev/fakegpu$i c 1 3 2>/dev/null || ln -s /dev/null /dev/fakegpu$i
    fi
done
# nvidia_gpu_env: SLURM sets CUDA_VISIBLE_DEVICES as on a real NVIDIA node (a file name
# other than /dev/nvidia* gets no GPU environment by default).
echo "Name=gpu File=/dev/fakegpu[0-1] Flags=nvidia_gpu_env" > /etc/slurm/gres.conf

pkill_pidfile() { [ -s "$1" ] && kill "$(cat "$1")" 2>/dev/null || true; }
pkill_pidfile /run/slurmctld.pid
pkill_pidfile /run/slurmd.pid
sleep 1
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null || true)
    case "$state" in
        idle*|mix*|alloc*) echo "start_cluster.sh: SLURM up on $node ($state): $hardware Gres=gpu:2"; exit 0 ;;
        down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "start_cluster.sh: the node did not come up; see /var/log/slurm/*.log" >&2
sinfo -N -l >&2 || true
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
