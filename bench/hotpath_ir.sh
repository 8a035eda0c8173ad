#!/usr/bin/env bash
# Instructions per message of bench/hotpath.py's workloads, under callgrind: the count of a
# run with 2N messages minus one with N, divided by N (start-up and set-up cancel out).
# Repeatable whatever else the machine is doing. Usage: bench/hotpath_ir.sh [WORKLOAD...]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" bench/hotpath.py --once \
        --n "$2" "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for w in "${@:-upper lines echo chat}"; do
    for name in $w; do
        case $name in chat) n=1000 ;; lines) n=5000 ;; *) n=10000 ;; esac
        a=$(ir "$name" "$n"); b=$(ir "$name" $((2 * n)))
        echo "$name $(( (b - a) / n )) instructions/message"
    done
done
