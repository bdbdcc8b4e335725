#!/usr/bin/env bash
# The robustness study of docs/robustness.md in one go on one GPU: every run (7 methods and 5
# penalty modes, seeds 0, 1, 2) dealt over N processes that share the device, then the report.
#   bash experiments/robustness_study_gpu.sh DATA_DIR ROOT [N_PROCS [TIME_LIMIT_S [FLAGS...]]]
# DATA_DIR holds fashion_mnist_{train,test}.npz; N_PROCS defaults to 6; TIME_LIMIT_S (0 = none)
# stops every process after that many seconds and still writes the report over what finished.
# FLAGS go to every process (e.g. --square_queries=1000). Resumable: a second call runs only
# what the first left. SCALE=smoke runs the seconds-long sizes (how the test suite checks this
# script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash experiments/robustness_study_gpu.sh DATA_DIR ROOT [N_PROCS [TIME_LIMIT_S [FLAGS...]]]"
data="${1:?$usage}"
root="${2:?$usage}"
procs="${3:-6}"
limit="${4:-0}"
extra=("${@:5}")
py="${PYTHON:-python}"
scale="${SCALE:-gpu}"
if ! [[ "$procs" =~ ^[1-9][0-9]*$ && "$limit" =~ ^[0-9]+$ ]]; then
  echo "N_PROCS must be an integer >= 1 and TIME_LIMIT_S an integer >= 0; got '$procs' and '$limit'" >&2
  exit 2
fi
mkdir -p "$root/logs"
# Each process may take an equal share of the GPU's memory (JAX would take 75 % per process).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-$("$py" -c "print(round(0.9 / $procs, 3))")}"
study=("$py" -m experiments.robustness_study --data_dir="$data" --root="$root" --scale="$scale"
       --seeds=0,1,2)
limiter=()
if [ "$limit" -gt 0 ]; then limiter=(timeout "$limit"); fi
pids=()
for ((i = 0; i < procs; i++)); do
  "${limiter[@]}" "${study[@]}" --shard="$i/$procs" "${extra[@]}" > "$root/logs/shard$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  if [ "$rc" -eq 124 ]; then
    echo "shard $i/$procs: stopped at the time limit ($limit s); its unfinished runs are left for the next call"
  elif [ "$rc" -ne 0 ]; then
    echo "shard $i/$procs failed (exit $rc); see $root/logs/shard$i.log:" >&2
    tail -n 5 "$root/logs/shard$i.log" >&2
    failed=1
  fi
done
"${study[@]}" --report_only "${extra[@]}"
grep -h "^\[" "$root"/logs/shard*.log | sort -t']' -k2 || true
exit "$failed"
