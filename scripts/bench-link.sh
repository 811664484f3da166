#!/usr/bin/env bash
# Transport benches over a shaped link (issue 17): creates a private network
# namespace, runs scripts/bench-link.py inside it (which shapes the
# namespace's loopback with `tc qdisc … tbf` and starts every node there),
# and removes the namespace on exit, failure or interrupt included.
# Needs root (ip netns, tc); (b) also needs both Docker engines
# (scripts/docker-up.sh and scripts/docker-up.sh --second b).
#
# Usage: scripts/bench-link.sh --ferry BIN --fixture DIR --work DIR [bench-link.py options]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "bench-link.sh: needs root (ip netns, tc)" >&2
    exit 1
fi
for tool in ip tc ss; do
    command -v "$tool" >/dev/null || { echo "bench-link.sh: $tool is missing (iproute2)" >&2; exit 1; }
done

NS=ferry-bench-$$
PY_PID=
cleanup() {
    if [ -n "$PY_PID" ] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        wait "$PY_PID" 2>/dev/null || true
    fi
    # Whatever still runs in the namespace (a node the orchestrator could
    # not stop) goes with it; the pids come from the namespace itself.
    for pid in $(ip netns pids "$NS" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" python3 "$ROOT/scripts/bench-link.py" "$@" &
PY_PID=$!
wait "$PY_PID"
PY_PID=
