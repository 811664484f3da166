#!/usr/bin/env bash
# `make bench`: ferry end to end against the classic tar pipelines (issue 8).
#
# Builds the release binary, generates (once, cached) a ~500 MB
# game-server-like fixture and a 1/8-size one, then runs
# scripts/bench-e2e.py: two real nodes on loopback moving the server
# panel-style, alternating A B A B with `tar|pigz -1 -p2|pigz -dc|tar -x`
# (B2), `tar -cz|tar -xz` (B1) and ferry with one compression thread
# (Wings-like); then 8 concurrent transfers with API latency, and cancel
# latency, and the backups travelling with a transfer (MB/s); then the
# archive engine alone (scripts/bench-archive.sh, issue 3: pack vs
# tar|pigz|sha256sum, extract vs pigz -dc|tar); then the transports over a
# shaped link (scripts/bench-link.sh, issue 17: classic POST and segmented
# transport at 1 Gbit/s and 100 Mbit/s against the link floor, resume after
# a cut, downtime of a Docker server classic against pre-copy, in a private
# network namespace). Prints the tables; every number is measured in this
# run. BENCH_ONLY=backups runs only the backup step (the small fixture, two
# nodes); BENCH_ONLY=link only the shaped-link benches, and with it
# BENCH_LINK_ONLY=link or =downtime only (a)+(c) or only (b) of them.
#
# Usage: scripts/bench.sh [--scale N] [--rounds N]
# Environment: BENCH_DIR (cache and scratch, default /tmp/ferry-bench-e2e),
# BENCH_SCALE (default 1 = ~500 MB; 8 = ~4 GB), BENCH_ROUNDS (default 3),
# BENCH_CANCELS (default 20), BENCH_JSON (also write raw results there;
# the shaped-link results go to the same name with `.link` before `.json`),
# BENCH_LINK_SCALE (the shaped-link benches' fixture, default 1: ~340 MB on
# the wire, ~27 s per transfer at 100 Mbit/s), BENCH_LINK=0 skips them,
# BENCH_OUT: where the destination node and the baselines write: `tmpfs`
# (default, /dev/shm when it has room), `disk` (under BENCH_DIR), or a
# directory. The default keeps the root filesystem's inode allocator out of
# the numbers: this machine's ext4 has no journal, and there every file
# created within a minute of thousands being deleted (the DELETE between
# rounds) first scans the recently freed inodes (`recently_deleted` in a
# profile), which tripled the destination's CPU time in later rounds and
# hit whichever run came after a deletion. Sources always read from disk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/ferry-bench-e2e}
SCALE=${BENCH_SCALE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
CANCELS=${BENCH_CANCELS:-20}
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) SCALE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
SMALL_SCALE=$(awk -v s="$SCALE" 'BEGIN {printf "%g", s / 8}')
LINK_SCALE=${BENCH_LINK_SCALE:-1}

started=$(date +%s)
echo "== machine: $(nproc) cores, kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"

if ! command -v pigz >/dev/null; then
    echo "== installing pigz"
    apt-get update -qq && apt-get install -y -qq pigz >/dev/null
fi

echo "== cargo build --release"
(cd "$ROOT" && cargo build --release --quiet --bin ferry)
BIN=$ROOT/target/release/ferry

mkdir -p "$WORK"
fixture() { # dir scale
    if [ ! -f "$1.done" ]; then
        echo "== generating fixture $1 (scale $2)"
        rm -rf "$1"
        python3 "$ROOT/scripts/gen-fixture.py" --out "$1" --scale "$2"
        touch "$1.done"
    else
        echo "== fixture $1 (scale $2, cached)"
    fi
}
case "${BENCH_ONLY:-}" in
    backups) fixture "$WORK/fixture-$SMALL_SCALE" "$SMALL_SCALE" ;;
    link) fixture "$WORK/fixture-$LINK_SCALE" "$LINK_SCALE" ;;
    *)
        fixture "$WORK/fixture-$SCALE" "$SCALE"
        fixture "$WORK/fixture-$SMALL_SCALE" "$SMALL_SCALE"
        if [ "${BENCH_LINK:-1}" != 0 ] && [ "$LINK_SCALE" != "$SCALE" ]; then
            fixture "$WORK/fixture-$LINK_SCALE" "$LINK_SCALE"
        fi ;;
esac

RUN=$(mktemp -d "$WORK/run.XXXXXX")
OUT=
PY_PID=
cleanup() {
    if [ -n "$PY_PID" ] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        wait "$PY_PID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
    if [ -n "$OUT" ]; then rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== scratch directory $RUN (removed on exit)"
args=(--ferry "$BIN" --small "$WORK/fixture-$SMALL_SCALE"
    --work "$RUN" --rounds "$ROUNDS" --cancels "$CANCELS")
if [ "${BENCH_ONLY:-}" = backups ]; then
    args+=(--only backups)
else
    args+=(--fixture "$WORK/fixture-$SCALE")
fi
case "${BENCH_OUT:-tmpfs}" in
    disk) ;;
    tmpfs)
        # Room for two copies of the large tree (a transfer and a baseline
        # never overlap, but deletions are asynchronous).
        # The shaped-link benches write one tree at a time as well.
        need_kib=0
        for f in "$WORK/fixture-$SMALL_SCALE" "$WORK/fixture-$SCALE" "$WORK/fixture-$LINK_SCALE"; do
            if [ -d "$f" ]; then
                kib=$(($(du -sk "$f" | cut -f1) * 2))
                [ "$kib" -gt "$need_kib" ] && need_kib=$kib
            fi
        done
        free_kib=$(df --output=avail -k /dev/shm 2>/dev/null | tail -1 || echo 0)
        if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ "$free_kib" -gt "$need_kib" ]; then
            OUT=$(mktemp -d /dev/shm/ferry-bench-out.XXXXXX)
        else
            echo "== /dev/shm is not a tmpfs with $((need_kib / 1024)) MiB free: writing to disk"
        fi ;;
    *) mkdir -p "$BENCH_OUT"; OUT=$(mktemp -d "$BENCH_OUT/ferry-bench-out.XXXXXX") ;;
esac
[ -n "$OUT" ] && args+=(--out "$OUT")
[ -n "${BENCH_JSON:-}" ] && args+=(--json "$BENCH_JSON")
if [ "${BENCH_ONLY:-}" != link ]; then
    python3 "$ROOT/scripts/bench-e2e.py" "${args[@]}" &
    PY_PID=$!
    wait "$PY_PID"
    PY_PID=
    if [ "${BENCH_ONLY:-}" = backups ]; then
        echo "make bench (backups only) took $(($(date +%s) - started)) s"
        exit 0
    fi

    echo
    echo "== archive engine alone (same fixture; scripts/bench-archive.sh)"
    case "${BENCH_OUT:-tmpfs}" in
        tmpfs) archive_out= ;;
        disk) archive_out=$WORK/archive-out ;;
        *) archive_out=$BENCH_OUT/ferry-bench-archive-out ;;
    esac
    BENCH_DIR=$WORK BENCH_SCALE=$SCALE BENCH_ROUNDS=$ROUNDS BENCH_OUT=$archive_out \
        bash "$ROOT/scripts/bench-archive.sh"
fi

if [ "${BENCH_LINK:-1}" != 0 ] || [ "${BENCH_ONLY:-}" = link ]; then
    echo
    echo "== transports over a shaped link (fixture scale $LINK_SCALE; scripts/bench-link.sh)"
    link_args=(--ferry "$BIN" --fixture "$WORK/fixture-$LINK_SCALE" --work "$RUN/link")
    mkdir -p "$RUN/link"
    if [ -n "$OUT" ]; then mkdir -p "$OUT/link" && link_args+=(--out "$OUT/link"); fi
    [ -n "${BENCH_JSON:-}" ] && link_args+=(--json "${BENCH_JSON%.json}.link.json")
    # BENCH_LINK_ONLY=link|downtime: only (a)+(c) or only (b) of the link benches.
    [ -n "${BENCH_LINK_ONLY:-}" ] && link_args+=(--only "$BENCH_LINK_ONLY")
    if [ "$(id -u)" = 0 ]; then
        bash "$ROOT/scripts/bench-link.sh" "${link_args[@]}" &
        PY_PID=$!
        wait "$PY_PID"
        PY_PID=
    else
        echo "skipped: the shaped-link benches need root (ip netns, tc)"
    fi
fi
echo "machine: $(nproc) cores, kernel $(uname -r), load at the end $(cut -d' ' -f1-3 /proc/loadavg);" \
    "other work on this machine skews wall times, which is why runs alternate and ratios are taken within one run"
echo "make bench took $(($(date +%s) - started)) s"
