#!/usr/bin/env bash
# Rehearse a multi-host run on this machine: N processes on 127.0.0.1, each with its own CPU
# devices.
#
# Usage:
#   launch/local.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-l LOG_DIR] -- MAIN_FLAGS...
# Example (2 processes x 2 CPU devices = a 4-device mesh, like 2 hosts with 2 chips each):
#   launch/local.sh -n 2 -d 2 -- --config=configs/tiny.py --workdir=/tmp/tiny_2proc \
#       --config.total_steps=20
#
# Every process runs `python -m layerlock_jax.main MAIN_FLAGS` with JAX_COORDINATOR_ADDRESS=
# 127.0.0.1:<free port>, JAX_NUM_PROCESSES=N and its own JAX_PROCESS_ID, exactly what a cluster
# launcher provides, so the code path is the multi-host one: coordination service, gloo
# collectives, one data shard per process, only process 0 writing to the workdir.
# Process 0 prints to this terminal; process i>0 logs to LOG_DIR/process_<i>.log (default: a new
# temp dir, printed at start). The script exits with the first non-zero status of any process
# (each process's status is printed), 0 if all succeed. Ctrl-C stops all of them.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3),
# LAYERLOCK_HEARTBEAT_TIMEOUT (default here 30 s: peers share a machine, so a silent one is dead),
# LAYERLOCK_INIT_TIMEOUT (default here 120 s).
set -euo pipefail

num_processes=2
devices_per_process=2
log_dir=""
while getopts "n:d:l:h" opt; do
  case "$opt" in
    n) num_processes="$OPTARG" ;;
    d) devices_per_process="$OPTARG" ;;
    l) log_dir="$OPTARG" ;;
    h) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "usage: $0 [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-l LOG_DIR] -- MAIN_FLAGS..." >&2
       exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ "${1:-}" == "--" ]]; then shift; fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; fi
fi
if [[ -z "$log_dir" ]]; then log_dir="$(mktemp -d -t layerlock_local.XXXXXX)"; fi
mkdir -p "$log_dir"

# A port the kernel reports free right now, on the loopback interface only.
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"

export JAX_PLATFORMS=cpu
export JAX_NUM_CPU_DEVICES="$devices_per_process"
export JAX_COORDINATOR_ADDRESS="127.0.0.1:$port"
export JAX_NUM_PROCESSES="$num_processes"
export LAYERLOCK_HEARTBEAT_TIMEOUT="${LAYERLOCK_HEARTBEAT_TIMEOUT:-30}"
export LAYERLOCK_INIT_TIMEOUT="${LAYERLOCK_INIT_TIMEOUT:-120}"
echo "local.sh: $num_processes processes x $devices_per_process CPU devices, coordinator" \
     "$JAX_COORDINATOR_ADDRESS, logs of processes 1.. in $log_dir" >&2

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

cd "$repo"
for ((i = 0; i < num_processes; i++)); do
  if ((i == 0)); then
    JAX_PROCESS_ID=$i "$PYTHON" -m layerlock_jax.main "$@" &
  else
    JAX_PROCESS_ID=$i "$PYTHON" -m layerlock_jax.main "$@" >"$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
  echo "local.sh: process $i is pid $!" >&2
done

status=0
for ((i = 0; i < num_processes; i++)); do
  rc=0
  wait "${pids[$i]}" || rc=$?
  echo "local.sh: process $i exited with status $rc" >&2
  if ((rc != 0 && status == 0)); then status=$rc; fi
done
exit "$status"
