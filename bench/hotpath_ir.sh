#!/usr/bin/env bash
# Instructions per message of bench/hotpath.py's workloads, under callgrind: the count of a
# run with 2N messages minus one with N, divided by N (start-up and set-up cancel out).
# Repeatable whatever else the machine is doing. Usage: bench/hotpath_ir.sh [WORKLOAD...]
# Callgrind counts every thread: chat-store's includes the store's writer thread. N=... sets
# the smaller run's messages for every workload named (compare chat and chat-store at the same
# N: chat-store's default, 2000, is past its --keep of 2000, so the difference trims, as a
# busy server does at every commit).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
# One hash seed: dict probing (attribute and global look-ups) then costs the same every run.
export PYTHONHASHSEED=${PYTHONHASHSEED:-0}
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" bench/hotpath.py --once \
        --n "$2" "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for w in "${@:-upper lines echo chat chat-store}"; do
    for name in $w; do
        case $name in chat) n=1000 ;; chat-store) n=2000 ;; lines) n=5000 ;; *) n=10000 ;; esac
        n=${N:-$n}
        a=$(ir "$name" "$n"); b=$(ir "$name" $((2 * n)))
        echo "$name $(( (b - a) / n )) instructions/message"
    done
done
