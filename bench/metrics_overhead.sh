#!/usr/bin/env bash
# Metrics on vs off: the same workloads against Node, twoway without --metrics and twoway with
# --metrics scraped every second, side by side in one compare run (A = node, B = metrics off,
# C = metrics on), so the B/C ratio is free of the VM's drift between runs. Run it alone:
# nothing else on the machine.
#
#   bench/metrics_overhead.sh [REPEAT]
#   TWOWAY_BENCH_QUICK=1 bench/metrics_overhead.sh 1     # a tiny run: does it work at all
#
# JSON per workload goes to bench/results/metrics_overhead/.
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3}
compare=${TWOWAY_BENCH_HARNESS:-../shared/bench}/compare
py=$(command -v python3)
[ -x .venv/bin/python ] && py=$PWD/.venv/bin/python
out=bench/results/metrics_overhead
mkdir -p "$out"
mport=${TWOWAY_BENCH_METRICS_PORT:-19109}
tw() {  # tw ARGS...: a twoway server command for compare
    echo "env PYTHONPATH=$PWD/src $py -m twoway serve $* --host {host} --port {port}"
}
# What Prometheus does, a little harder: one scrape of the C server per second.
( while sleep 1; do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$mport/metrics" || true
  done ) &
scraper=$!
trap 'kill "$scraper" 2>/dev/null || true' EXIT
run() {  # run NAME SCENARIO ANCHOR "SERVICE ARGS" COMPARE-ARGS...
    local name=$1 scenario=$2 anchor=$3 service=$4; shift 4
    echo "== $name"
    "$compare" "$scenario" --a "$anchor" \
        --b "$(tw $service)" --c "$(tw $service --metrics 127.0.0.1:$mport)" \
        --label b=metrics-off --label c=metrics-on --repeat "$repeat" \
        --json "$out/$name.json" "$@"
}
if [ -n "${TWOWAY_BENCH_QUICK:-}" ]; then
    run echo-quick echo node:echo "echo" --conns 8 --duration 1 --warmup 0.5
    run chat-quick chat node:chat "chat --flood-rate 0" --conns 20 --senders 2 --rate 0 --duration 1 --warmup 0.5
    exit 0
fi
run echo-64 echo node:echo "echo" --conns 64 --duration 3 --warmup 1
run upper-64 echo node:upper "upper" --conns 64 --duration 3 --warmup 1
run stamp-64 echo node:stamp "stamp" --conns 64 --duration 3 --warmup 1
run chat-rate0 chat node:chat "chat --flood-rate 0" --conns 100 --senders 10 --rate 0 --duration 3 --warmup 1
run chat-1000 chat node:chat "chat --flood-rate 0" --conns 1000 --senders 5 --rate 30 --duration 3 --warmup 1
run conns-10k conns node:echo "echo" --conns 10000 --hold 5
run push push node:dump "dump --dir {dir}" --mb 1024
