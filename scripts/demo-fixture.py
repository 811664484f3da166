#!/usr/bin/env python3
"""Write a deterministic, game-server-like data directory for `make demo`.

At --scale 1 (about 500 MB), mimicking a modded Minecraft server:
  server.jar                     40 MB of random bytes (a jar is already compressed)
  world*/region/r.X.Z.mca        55 region files of 8 MB, random and structured
                                 4 KiB sectors in turn (about 2:1 compressible)
  logs/*.log                     30 text logs of 512 KB
  config/, plugins/              5000 small text files
plus empty directories, symlinks (one dangling) and an executable script.
--scale multiplies every count and size (0.4 is about 200 MB).

Usage: demo-fixture.py --out DIR [--scale N] [--seed S]
Only the standard library; same interface as scripts/gen-fixture.py.
"""

import argparse
import os
import random
import sys

SECTOR = 4096
MB = 1024 * 1024


def structured_sectors(rng, count=64):
    """Sectors that look like NBT: repeated block names with small numbers."""
    words = [b"minecraft:stone", b"minecraft:deepslate", b"minecraft:air",
             b"minecraft:grass_block", b"Palette", b"BlockStates", b"Heightmaps"]
    pool = []
    for _ in range(count):
        chunk = bytearray()
        while len(chunk) < SECTOR:
            chunk += rng.choice(words) + rng.randrange(0, 256).to_bytes(2, "big")
        pool.append(bytes(chunk[:SECTOR]))
    return pool


def region(rng, pool, size):
    noise = rng.randbytes(size // 2)
    parts = []
    for i in range(size // SECTOR):
        if i % 2 == 0:
            start = (i // 2) * SECTOR
            parts.append(noise[start:start + SECTOR])
        else:
            parts.append(pool[rng.randrange(len(pool))])
    return b"".join(parts)


def log_text(rng, size):
    levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG"]
    lines, total, t = [], 0, 0
    while total < size:
        t += rng.randrange(1, 5000)
        line = "[%02d:%02d:%02d] [Server thread/%s]: %s %d\n" % (
            t // 3600000 % 24, t // 60000 % 60, t // 1000 % 60, rng.choice(levels),
            rng.choice(["Player joined the game", "Saving chunks for level",
                        "Can't keep up! Is the server overloaded?", "Preparing spawn area",
                        "ThreadedAnvilChunkStorage: All dimensions are saved"]),
            rng.randrange(0, 100000))
        lines.append(line)
        total += len(line)
    return "".join(lines)[:size]


def small_config(rng, i):
    keys = ["enabled", "max-players", "view-distance", "spawn-protection", "motd", "difficulty"]
    return "".join("%s: %s\n" % (rng.choice(keys), rng.randrange(0, 1000)) for _ in range(rng.randrange(3, 40))) + "# file %d\n" % i


def write(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.scale <= 0:
        sys.exit("demo-fixture.py: --scale must be positive")
    out = args.out
    if os.path.exists(out) and os.listdir(out):
        sys.exit("demo-fixture.py: %s exists and is not empty" % out)
    os.makedirs(out, exist_ok=True)
    rng = random.Random(args.seed)
    s = args.scale
    n = lambda count: max(1, int(round(count * s)))

    write(os.path.join(out, "server.jar"), rng.randbytes(int(40 * MB * s)))
    pool = structured_sectors(rng)
    worlds = ["world/region", "world_nether/DIM-1/region", "world_the_end/DIM1/region"]
    for i in range(n(55)):
        name = "r.%d.%d.mca" % (i % 8 - 4, i // 8 - 3)
        write(os.path.join(out, worlds[i % len(worlds)], name), region(rng, pool, 8 * MB))
    for i in range(n(30)):
        write(os.path.join(out, "logs", "2026-11-%02d-%d.log" % (i % 28 + 1, i)), log_text(rng, 512 * 1024))
    for i in range(n(5000)):
        top = "config" if i % 3 else "plugins/Plugin%d" % (i % 40)
        write(os.path.join(out, top, "sub%d" % (i % 7), "file%d.yml" % i), small_config(rng, i))
    write(os.path.join(out, "server.properties"), "motd=ferry demo\nmax-players=20\nview-distance=10\n")
    write(os.path.join(out, "eula.txt"), "eula=true\n")
    write(os.path.join(out, "start.sh"), "#!/bin/sh\nexec java -Xmx4G -jar server.jar nogui\n", 0o755)
    write(os.path.join(out, "logs", "latest.log"), log_text(rng, 4096))
    for empty in ["plugins/empty", "world/playerdata", "cache"]:
        os.makedirs(os.path.join(out, empty), exist_ok=True)
    os.symlink("logs/latest.log", os.path.join(out, "latest.log"))
    os.symlink("does/not/exist", os.path.join(out, "dangling"))

    total = files = 0
    for root, _, names in os.walk(out):
        for name in names:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
                files += 1
    print("wrote %d files, %.1f MB under %s" % (files, total / 1e6, out))


if __name__ == "__main__":
    main()
