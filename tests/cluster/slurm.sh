#!/bin/sh
# A single-node Slurm for the tests, from Debian's slurm-wlm and munge, run as
# root without systemd; everything lives in DIR.
#   tests/cluster/slurm.sh start DIR   writes DIR/slurm.conf, starts munged,
#                                      slurmctld and slurmd, waits for the node
#   tests/cluster/slurm.sh stop DIR    stops them by their pid files
# Commands then need SLURM_CONF=DIR/slurm.conf (and MUNGE's socket, set in it).
set -eu
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
host=$(hostname -s)
case "$cmd" in
start)
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir/munge"
  dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null
  chmod 400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=cbnet-test
SlurmctldHost=localhost
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
NodeName=$host NodeHostname=localhost CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf"
  i=0
  until sinfo -h -o %T 2>/dev/null | grep -q idle; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
      echo "slurm.sh: the node did not come up; logs in $dir/log" >&2
      tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  ;;
stop)
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$dir/$f" ] && kill "$(cat "$dir/$f")" 2>/dev/null || true
  done
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
