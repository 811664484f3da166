#!/usr/bin/env python3
"""Generate a deterministic, game-server-like data directory for benchmarks.

At --scale 1 (about 500 MB):
  server.jar              40 MB of random bytes (a jar is already compressed)
  world*/region/r.X.Z.mca 55 x 8 MB region files, half random sectors and
                          half low-entropy sectors (so about 2:1 compressible)
  logs/*.log              30 text logs, 512 KB each
  config/, plugins/       5000 small config files (YAML/properties/JSON-like)
plus a few empty directories and symlinks, like a real server directory.
--scale multiplies every count and size class (0.1 makes a ~50 MB tree).

Usage: gen-fixture.py --out DIR [--scale N] [--seed S]
Standalone: only the Python standard library.
"""

import argparse
import os
import random
import sys

SECTOR = 4096


def structured_pool(rng, count=256):
    """NBT-ish sectors: repeated names with small varying integers."""
    words = [b"minecraft:stone", b"minecraft:air", b"minecraft:dirt",
             b"minecraft:grass_block", b"Palette", b"BlockStates", b"Heightmaps"]
    pool = []
    for _ in range(count):
        chunk = bytearray()
        while len(chunk) < SECTOR:
            chunk += rng.choice(words)
            chunk += rng.randrange(0, 64).to_bytes(2, "big")
        pool.append(bytes(chunk[:SECTOR]))
    return pool


def region_bytes(rng, pool, size):
    """Region sectors: alternating incompressible and structured."""
    parts = []
    for i in range(size // SECTOR):
        parts.append(rng.randbytes(SECTOR) if i % 2 == 0 else pool[rng.randrange(len(pool))])
    return b"".join(parts)


def log_text(rng, size):
    levels = ["INFO", "WARN", "INFO", "INFO", "DEBUG"]
    msgs = ["Player joined the game", "Saving chunks for level 'world'",
            "Can't keep up! Is the server overloaded?", "UUID of player is",
            "Preparing spawn area", "Done! For help, type \"help\"",
            "Loaded 7 recipes", "ThreadedAnvilChunkStorage: All chunks are saved"]
    lines = []
    n = 0
    t = 0
    while n < size:
        t += rng.randrange(1, 900)
        line = "[%02d:%02d:%02d] [Server thread/%s]: %s %d\n" % (
            (t // 3600) % 24, (t // 60) % 60, t % 60, rng.choice(levels),
            rng.choice(msgs), rng.randrange(100000))
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def config_text(rng, i):
    kind = i % 3
    if kind == 0:
        body = "".join("key-%d=%s\n" % (k, rng.choice(["true", "false", str(rng.randrange(1000))]))
                       for k in range(rng.randrange(10, 80)))
        return "config-%05d.properties" % i, body.encode()
    if kind == 1:
        body = "".join("  option_%d: %d\n" % (k, rng.randrange(10000))
                       for k in range(rng.randrange(10, 80)))
        return "config-%05d.yml" % i, ("settings:\n" + body).encode()
    body = ",".join('"k%d": %d' % (k, rng.randrange(10 ** 6)) for k in range(rng.randrange(10, 60)))
    return "config-%05d.json" % i, ("{" + body + "}\n").encode()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    if a.scale <= 0:
        sys.exit("--scale must be positive")
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    if os.listdir(a.out):
        sys.exit("%s is not empty" % a.out)

    def n(count):
        return max(1, int(round(count * a.scale)))

    total = 0
    jar = rng.randbytes(n(40 << 20))
    write(os.path.join(a.out, "server.jar"), jar)
    total += len(jar)

    pool = structured_pool(rng)
    for r in range(n(55)):
        world = ["world", "world_nether", "world_the_end"][r % 3]
        d = os.path.join(a.out, world, "region")
        os.makedirs(d, exist_ok=True)
        data = region_bytes(rng, pool, 8 << 20)
        write(os.path.join(d, "r.%d.%d.mca" % (r // 8 - 3, r % 8 - 4)), data)
        total += len(data)

    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    for i in range(n(30)):
        data = log_text(rng, 512 << 10)
        write(os.path.join(a.out, "logs", "2024-01-%02d-%d.log" % (i % 28 + 1, i)), data)
        total += len(data)

    for i in range(n(5000)):
        sub = os.path.join(a.out, "plugins" if i % 2 else "config", "group-%02d" % (i % 50))
        os.makedirs(sub, exist_ok=True)
        name, data = config_text(rng, i)
        write(os.path.join(sub, name), data)
        total += len(data)

    for d in ["world/data", "world/playerdata", "cache", "libraries/empty"]:
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    for name, target in [("latest.log", "logs/2024-01-01-0.log"), ("dangling", "nowhere/at/all")]:
        p = os.path.join(a.out, name)
        if not os.path.lexists(p):
            os.symlink(target, p)
    print("%s: %.1f MB in %d files" % (a.out, total / 1e6, 1 + n(55) + n(30) + n(5000)))


if __name__ == "__main__":
    main()
