#!/usr/bin/env bash
# ferry demo (`make demo`): two standalone nodes on loopback, a generated
# ~200 MB game-server directory on the first, one `ferry transfer` with its
# progress bar, a tree comparison, a summary. Everything lives in a temp
# directory that is removed on exit, whatever happens.
#
# DEMO_SCALE (default 0.4, about 200 MB) sizes the fixture.
set -euo pipefail

cd "$(dirname "$0")/.."
SCALE="${DEMO_SCALE:-0.4}"
SERVER=5e1f0c2a-7b3d-4e8f-9a6b-2c4d6e8f0a1b

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

step "building ferry (release)"
cargo build --release --quiet
FERRY="$PWD/target/release/ferry"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
# Ctrl-C and SIGTERM go through the EXIT trap as well.
trap 'exit 130' INT TERM
DEMO_START="$(now)"

# Writes a standalone config with its own token; port 0 = any free port.
make_node() {
    local name="$1"
    mkdir -p "$WORK/$name/volumes"
    python3 -c 'import secrets; print(secrets.token_hex(24))' >"$WORK/$name/token"
    cat >"$WORK/$name/config.yml" <<EOF
token: $(cat "$WORK/$name/token")
api:
  host: 127.0.0.1
  port: 0
system:
  root_directory: $WORK/$name/root
  data: $WORK/$name/volumes
  environment: none
  transfers:
    stop_timeout: 5
EOF
}

# Starts a node and sets ADDR once it listens (not in a subshell: PIDS
# must reach the EXIT trap).
start_node() {
    local name="$1" addr="" i
    "$FERRY" serve --config "$WORK/$name/config.yml" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    for i in $(seq 1 100); do
        addr="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/$name.log" | head -n1)"
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "node $name did not start; its log:" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    ADDR="$addr"
}

# path, type, mode, size, link target of everything below the server
# directory: what a copy must preserve.
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%p %y %m %s %l\n' | LC_ALL=C sort)
}

step "generating a game-server directory (scale $SCALE)"
make_node source
make_node destination
python3 scripts/gen-fixture.py --out "$WORK/source/volumes/$SERVER" --scale "$SCALE"
BYTES="$(du -sb --apparent-size "$WORK/source/volumes/$SERVER" | cut -f1)"

step "starting two nodes on loopback (standalone, no Docker)"
start_node source
SOURCE="http://$ADDR"
start_node destination
DESTINATION="http://$ADDR"
echo "source:      $SOURCE   (data $WORK/source/volumes)"
echo "destination: $DESTINATION   (data $WORK/destination/volumes)"

step "ferry transfer $SERVER --node $SOURCE --to $DESTINATION"
T0="$(now)"
"$FERRY" transfer "$SERVER" --node "$SOURCE" --to "$DESTINATION" \
    --token-file "$WORK/source/token" --dest-token-file "$WORK/destination/token"
T1="$(now)"

step "comparing the trees"
diff -r --no-dereference "$WORK/source/volumes/$SERVER" "$WORK/destination/volumes/$SERVER"
diff <(listing "$WORK/source/volumes/$SERVER") <(listing "$WORK/destination/volumes/$SERVER")
ENTRIES="$(listing "$WORK/source/volumes/$SERVER" | wc -l)"
echo "identical: $ENTRIES entries (contents, types, modes, sizes, symlink targets)"

step "ferry status on each node"
"$FERRY" status --node "$SOURCE" --token-file "$WORK/source/token"
"$FERRY" status --node "$DESTINATION" --token-file "$WORK/destination/token"

step "summary"
SECS="$(seconds "$T0" "$T1")"
awk -v b="$BYTES" -v s="$SECS" 'BEGIN {
    printf "moved %.1f MB in %s s: %.1f MB/s (%.1f MiB/s)\n", b / 1e6, s, b / 1e6 / s, b / 1048576 / s
}'
echo "whole demo after the build: $(seconds "$DEMO_START" "$(now)") s"
