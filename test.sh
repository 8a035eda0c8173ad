#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine: system tools the tests use
# (nc, ncat, socat, telnet, redis-server, node, strace, tmux), a venv with the project and its dev extra,
# then ruff, mypy and pytest. Extra arguments go to pytest (e.g. ./test.sh -k chat).
set -euo pipefail
cd "$(dirname "$0")"

need=()
for pair in nc:netcat-openbsd ncat:ncat socat:socat telnet:telnet redis-server:redis-server \
            strace:strace mkfs.ext4:e2fsprogs fsfreeze:util-linux \
            node:nodejs taskset:util-linux cc:gcc haproxy:haproxy openssl:openssl \
            chromium:chromium promtool:prometheus tmux:tmux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null
    else
        echo "test.sh: missing ${need[*]}: the tests that need them will be skipped" >&2
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[dev]'

echo "test.sh: ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "test.sh: mypy"
.venv/bin/mypy
echo "test.sh: pytest"
.venv/bin/python -m pytest -q "$@"
