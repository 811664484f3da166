#!/usr/bin/env bash
# Benchmarks the archive engine against tar+pigz on a game-server-like
# fixture, alternating A B A B so both see the same machine state.
#
#   pack:    ferry pack+gzip+SHA-256  vs  tar -cf - . | pigz -1 -p2 | sha256sum
#   extract: ferry extract (+SHA-256) vs  pigz -dc | tar -xf -
#            (and, for reference, vs pigz -p1 -dc | tar -xf -: pigz's
#            default decompression hands every buffer between threads,
#            which costs more than it saves on some VMs; the target is
#            quoted against the default, the -p1 line shows the margin
#            against the faster of the two)
#
# Prints medians, throughput ratios (ferry / pigz, higher is better) and
# ferry's peak RSS. Targets: pack >= 1.5x, extract >= 1.2x, RSS < 32 MiB.
#
# Environment: BENCH_DIR (work dir, default /tmp/ferry-bench),
# BENCH_SCALE (fixture scale, default 1 = ~500 MB), BENCH_ROUNDS (default 3),
# BENCH_THREADS (ferry compression threads, default 2 = pigz -p2),
# BENCH_LEVEL (default 1), BENCH_OUT (where extractions go; default
# /dev/shm/ferry-bench-out when /dev/shm has room, else BENCH_DIR/out).
# Why tmpfs by default: on ext4 without a journal (as on the dev machines)
# every new inode skips, one by one, the inodes freed in the last minutes,
# so right after other builds or a previous run deleted thousands of files
# the disk numbers measure the inode allocator, not the archiver. Set
# BENCH_OUT to a disk path to include the disk. Extractions are kept until
# the end of the run for the same reason.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_DIR:-/tmp/ferry-bench}
if [ -z "${BENCH_OUT:-}" ] && [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')" -gt $((8 << 20)) ] 2>/dev/null; then
    BENCH_OUT=/dev/shm/ferry-bench-out
fi
OUT=${BENCH_OUT:-$WORK/out}
SCALE=${BENCH_SCALE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
LEVEL=${BENCH_LEVEL:-1}

missing=()
command -v pigz >/dev/null || missing+=(pigz)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

FIXTURE=$WORK/fixture-$SCALE
if [ ! -f "$FIXTURE.done" ]; then
    rm -rf "$FIXTURE"
    python3 "$ROOT/scripts/gen-fixture.py" --out "$FIXTURE" --scale "$SCALE"
    touch "$FIXTURE.done"
fi

(cd "$ROOT" && cargo build --release --quiet --example archive_bench)
BIN=$ROOT/target/release/examples/archive_bench

# Runs a shell pipeline; appends wall seconds to $1 and CPU seconds
# (user+system of every process in it) to $2.
timed() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.out" bash -c "$3"
    awk '{print $1}' "$WORK/time.out" >>"$1"
    awk '{printf "%.3f\n", $2 + $3}' "$WORK/time.out" >>"$2"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# Warm the page cache so neither side pays for the first read.
tar -cf - -C "$FIXTURE" . >/dev/null
BYTES=$("$BIN" pack "$FIXTURE" "$LEVEL" "$THREADS" | field bytes)

ARCHIVE=$WORK/archive.tar.gz
"$BIN" pack "$FIXTURE" "$LEVEL" "$THREADS" "$ARCHIVE" >/dev/null
WIRE=$(stat -c %s "$ARCHIVE")

rm -rf "$OUT"
for f in pack.ferry pack.pigz x.ferry x.pigz x.pigz1; do : >"$WORK/$f"; : >"$WORK/$f.cpu"; done
: >"$WORK/rss"
for round in $(seq "$ROUNDS"); do
    out=$("$BIN" pack "$FIXTURE" "$LEVEL" "$THREADS")
    echo "$out" | field secs >>"$WORK/pack.ferry"
    echo "$out" | field cpu >>"$WORK/pack.ferry.cpu"
    echo "$out" | field maxrss_kib >>"$WORK/rss"

    timed "$WORK/pack.pigz" "$WORK/pack.pigz.cpu" \
        "tar -cf - -C '$FIXTURE' . | pigz -1 -p2 | sha256sum >/dev/null"

    xf=$OUT/ferry-$round xp=$OUT/pigz-$round
    mkdir -p "$xf" "$xp"; sync
    out=$("$BIN" extract "$ARCHIVE" "$xf")
    echo "$out" | field secs >>"$WORK/x.ferry"
    echo "$out" | field cpu >>"$WORK/x.ferry.cpu"
    echo "$out" | field maxrss_kib >>"$WORK/rss"
    sync

    timed "$WORK/x.pigz" "$WORK/x.pigz.cpu" "pigz -dc '$ARCHIVE' | tar -xf - -C '$xp'"
    sync
    xp1=$OUT/pigz1-$round
    mkdir -p "$xp1"; sync
    timed "$WORK/x.pigz1" "$WORK/x.pigz1.cpu" "pigz -p1 -dc '$ARCHIVE' | tar -xf - -C '$xp1'"
    sync
    # tmpfs has no inode-allocator effect (see above) but holds everything
    # in memory: free each round there.
    if [ "$(stat -f -c %T "$OUT")" = tmpfs ]; then rm -rf "$xf" "$xp" "$xp1"; fi
    echo "round $round: pack ferry $(tail -1 "$WORK/pack.ferry")s pigz $(tail -1 "$WORK/pack.pigz")s;" \
        "extract ferry $(tail -1 "$WORK/x.ferry")s pigz $(tail -1 "$WORK/x.pigz")s pigz -p1 $(tail -1 "$WORK/x.pigz1")s" >&2
done
rm -rf "$OUT"

pf=$(median <"$WORK/pack.ferry"); pp=$(median <"$WORK/pack.pigz")
xf=$(median <"$WORK/x.ferry"); xp=$(median <"$WORK/x.pigz"); xp1=$(median <"$WORK/x.pigz1")
rss=$(sort -n "$WORK/rss" | tail -1)
pfc=$(median <"$WORK/pack.ferry.cpu"); ppc=$(median <"$WORK/pack.pigz.cpu")
xfc=$(median <"$WORK/x.ferry.cpu"); xpc=$(median <"$WORK/x.pigz.cpu")
mbs() { awk -v b="$BYTES" -v s="$1" 'BEGIN {printf "%.1f", b / s / 1e6}'; }
ratio() { awk -v f="$1" -v p="$2" 'BEGIN {printf "%.2f", p / f}'; }

echo "fixture: $((BYTES / 1000000)) MB content, archive $((WIRE / 1000000)) MB (level $LEVEL), $ROUNDS rounds, ferry threads $THREADS, extracting to $OUT"
printf "pack+gzip+sha256   ferry %6.2fs %7s MB/s   tar|pigz -1 -p2|sha256sum %6.2fs %7s MB/s   ratio %sx (target 1.5x)\n" \
    "$pf" "$(mbs "$pf")" "$pp" "$(mbs "$pp")" "$(ratio "$pf" "$pp")"
printf "extract            ferry %6.2fs %7s MB/s   pigz -dc|tar -xf -          %6.2fs %7s MB/s   ratio %sx (target 1.2x)\n" \
    "$xf" "$(mbs "$xf")" "$xp" "$(mbs "$xp")" "$(ratio "$xf" "$xp")"
printf "extract (reference) ferry %6.2fs %7s MB/s   pigz -p1 -dc|tar -xf -      %6.2fs %7s MB/s   ratio %sx\n" \
    "$xf" "$(mbs "$xf")" "$xp1" "$(mbs "$xp1")" "$(ratio "$xf" "$xp1")"
printf "CPU seconds (user+sys, all threads/processes): pack ferry %.2f vs %.2f (%sx), extract ferry %.2f vs %.2f (%sx)\n" \
    "$pfc" "$ppc" "$(ratio "$pfc" "$ppc")" "$xfc" "$xpc" "$(ratio "$xfc" "$xpc")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews wall times)"
echo "ferry peak RSS: $((rss / 1024)) MiB ($rss KiB; target < 32 MiB)"
