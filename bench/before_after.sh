#!/usr/bin/env bash
# Before/after: the same workloads against Node, twoway at a base commit and twoway now, side
# by side in one compare run (A = node, B = before, C = after), so the B/C ratio is free of
# the VM's drift between runs. Run it alone: nothing else on the machine.
#
#   bench/before_after.sh BASE_WORKTREE [REPEAT]       # e.g. a `git worktree add` of the base
#
# JSON per workload goes to bench/results/before_after/.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(cd "$1" && pwd)
repeat=${2:-3}
compare=${TWOWAY_BENCH_HARNESS:-../shared/bench}/compare
py=$(command -v python3)
[ -x .venv/bin/python ] && py=$PWD/.venv/bin/python
out=bench/results/before_after
mkdir -p "$out"
tw() {  # tw SRC ARGS...: a twoway server command for compare
    local src=$1; shift
    echo "env PYTHONPATH=$src $py -m twoway serve $* --host {host} --port {port}"
}
# Chat keeps its history on disk by default since the store landed: "after" runs chat with
# --ephemeral, as "before" always did, so the rows compare the same work (the store has rows
# of its own: bench/chat_store.py).
after_chat=""
grep -q '"--ephemeral"\|ephemeral: bool' src/twoway/config/table.py && after_chat="--ephemeral"
run() {  # run NAME SCENARIO ANCHOR "SERVICE ARGS" COMPARE-ARGS...
    local name=$1 scenario=$2 anchor=$3 service=$4; shift 4
    local after=$service
    [ "${service%% *}" = chat ] && after="$service $after_chat"
    echo "== $name"
    "$compare" "$scenario" --a "$anchor" \
        --b "$(tw "$base/src" $service)" --c "$(tw "$PWD/src" $after)" \
        --label b=before --label c=after --repeat "$repeat" --json "$out/$name.json" "$@"
}
run echo-64 echo node:echo "echo" --conns 64 --duration 3 --warmup 1
run upper-64 echo node:upper "upper" --conns 64 --duration 3 --warmup 1
run stamp-64 echo node:stamp "stamp" --conns 64 --duration 3 --warmup 1
run chat-rate0 chat node:chat "chat --flood-rate 0" --conns 100 --senders 10 --rate 0 --duration 3 --warmup 1
run chat-1000 chat node:chat "chat --flood-rate 0" --conns 1000 --senders 5 --rate 30 --duration 3 --warmup 1
run conns-10k conns node:echo "echo" --conns 10000 --hold 5
run push push node:dump "dump --dir {dir}" --mb 1024
