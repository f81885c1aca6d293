#!/usr/bin/env bash
# A two-node SLURM 22.05 cluster on this machine, from Debian packages, for tests/test_slurm.py
# and CI. Needs root and apt. Idempotent: a cluster that already answers is left as it is.
#   tests/slurm/start_cluster.sh [--restart]   install if needed, configure, (re)start, wait until idle
# Settings known to work in a container (see DESIGN.md): munge; proctrack/linuxproc, task/none
# (no cgroups); select/cons_tres; two fake GPUs a node (gres on /dev/fakegpu0-1); no slurmdbd,
# so job status comes from squeue, and MinJobAge keeps finished jobs there for an hour.
# The nodes: this machine under its own name, at HOST_ADDR; and NODE2, a slurmd in a network
# namespace of its own (its own loopback, address and routes), joined to this machine by a veth
# pair: a job there reaches slurmctld and a database only by the network, as on a second machine.
# Both share this machine's file system, as cluster nodes share theirs.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: needs root (installs packages, starts munged, slurmctld, slurmd)" >&2
    exit 2
fi

node=$(hostname -s)
NODE2=node2
NAMESPACE=snaketune-node2
HOST_ADDR=10.201.0.1      # this machine's end of the veth pair: slurmctld, node 1, a test's database
NODE2_ADDR=10.201.0.2
up() { sinfo -h -N -n "$1" -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }
if [ "${1:-}" != "--restart" ] && [ -c /dev/fakegpu0 ] && grep -qs nvidia_gpu_env /etc/slurm/gres.conf && command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP \
        && up "$node" && up "$NODE2"; then
    echo "start_cluster.sh: SLURM already up on $node and $NODE2"
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

# The second node's network: a namespace, a veth pair, an address each end, a route to this machine.
if ! ip netns list | grep -q "^$NAMESPACE\b"; then
    ip netns add "$NAMESPACE"
fi
if ! ip link show st-node2 >/dev/null 2>&1; then
    ip link add st-node2 type veth peer name st-node2-ns
    ip link set st-node2-ns netns "$NAMESPACE"
    ip addr add "$HOST_ADDR/24" dev st-node2
    ip netns exec "$NAMESPACE" ip addr add "$NODE2_ADDR/24" dev st-node2-ns
fi
ip link set st-node2 up
ip netns exec "$NAMESPACE" ip link set lo up
ip netns exec "$NAMESPACE" ip link set st-node2-ns up
ip netns exec "$NAMESPACE" ip route replace default via "$HOST_ADDR"

# slurm.conf: each node with this machine's CPUs and memory, plus two fake GPUs; per-node spool,
# pid and log files (%n: the node's name), as two slurmd share this file system
hardware=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd/"$node" /var/spool/slurmd/"$NODE2" /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=snaketune
SlurmctldHost=$node($HOST_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
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
NodeName=$node NodeAddr=$HOST_ADDR $hardware Gres=gpu:2 State=UNKNOWN
NodeName=$NODE2 NodeAddr=$NODE2_ADDR NodeHostname=$NODE2 $hardware Gres=gpu:2 State=UNKNOWN
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
pkill_pidfile /run/slurmd.pid   # (a one-node cluster's, from before)
pkill_pidfile "/run/slurmd-$node.pid"
pkill_pidfile "/run/slurmd-$NODE2.pid"
sleep 1
/usr/sbin/slurmctld
/usr/sbin/slurmd -N "$node"
# nsenter, not `ip netns exec`: that mounts a sysfs of its own, without the cgroup file system slurmd reads
nsenter --net="/run/netns/$NAMESPACE" /usr/sbin/slurmd -N "$NODE2"
for _ in $(seq 60); do
    ready=1
    for name in "$node" "$NODE2"; do
        state=$(sinfo -h -N -n "$name" -o %t 2>/dev/null || true)
        case "$state" in
            idle*|mix*|alloc*) ;;
            down*|drain*) ready=0; scontrol update nodename="$name" state=resume 2>/dev/null || true ;;
            *) ready=0 ;;
        esac
    done
    if [ "$ready" = 1 ]; then
        echo "start_cluster.sh: SLURM up on $node ($HOST_ADDR) and $NODE2 ($NODE2_ADDR, network namespace $NAMESPACE): $hardware Gres=gpu:2 each"
        exit 0
    fi
    sleep 1
done
echo "start_cluster.sh: the nodes did not come up; see /var/log/slurm/*.log" >&2
sinfo -N -l >&2 || true
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
