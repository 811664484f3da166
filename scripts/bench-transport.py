#!/usr/bin/env python3
"""The segmented transport against the classic POST on loopback (issue 17).

  bench-transport.py [--ferry target/release/ferry] [--work DIR] [--mb 300]
                     [--rounds 3] [--level 1] [--segment MIB] [--out disk|tmpfs|DIR]

Starts three release nodes (standalone, `environment: none`): `dst`, `srcC`
(`transport: classic`) and `srcS` (`transport: auto`, so it sends in
segments to `dst`), each source holding the same incompressible server
(`--mb` MB in 50 MB files, hard links of one cached fixture). Then rounds,
alternating classic, segmented: `sync`, mint the token, POST the transfer
to the source, time it until the source's record says `completed`,
verify the tree (first round of each), delete it on `dst`. Prints each
run, the medians, and the segmented transport's own account of where its
time went (the nodes' log lines: the source's segment summary and the
destination's session summary). Every number is measured in this run.

The destination writes to disk by default (`--out disk`): the segmented
transport's cost is fsyncs, which tmpfs would hide. Standard library only;
the node helpers are scripts/bench-e2e.py's.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_e2e", os.path.join(HERE, "bench-e2e.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

UUIDS = {
    "classic": "a1000000-0000-4000-8000-000000000001",
    "segmented": "a1000000-0000-4000-8000-000000000002",
}
MB = 1000 * 1000


def fixture(path, mb):
    """`mb` MB of random bytes in 50 MB files (and a small config file),
    made once; the archive is as large as the data."""
    done = path + ".done"
    if os.path.exists(done):
        return
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "world"))
    with open(os.path.join(path, "server.properties"), "w") as f:
        f.write("motd=bench\n")
    left, i = mb * MB, 0
    while left:
        size = min(left, 50 * MB)
        with open(os.path.join(path, "world", "r%d.mca" % i), "wb") as f:
            w = 0
            while w < size:
                chunk = os.urandom(min(size - w, 1 << 20))
                f.write(chunk)
                w += len(chunk)
        left -= size
        i += 1
    open(done, "w").close()


def link_tree(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=os.link)


def warm(path):
    for d, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def log_lines(node, needle):
    with open(node.log) as f:
        return [l.rstrip("\n") for l in f if needle in l]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ferry", default=os.path.join(HERE, "..", "target", "release", "ferry"))
    p.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp/ferry-bench-transport"))
    p.add_argument("--mb", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--segment", type=int, default=0, help="segment size in MiB (default: the node's)")
    p.add_argument("--out", default="disk")
    p.add_argument("--perf", default="", help="record `perf` profiles of both nodes' segmented runs here")
    a = p.parse_args()
    binary = os.path.abspath(a.ferry)
    os.makedirs(a.work, exist_ok=True)
    fix = os.path.join(a.work, "fixture-%d" % a.mb)
    fixture(fix, a.mb)
    run = os.path.join(a.work, "run")
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(run)
    if a.out == "disk":
        dst_data = None
    elif a.out == "tmpfs":
        dst_data = "/dev/shm/ferry-bench-transport-dst"
    else:
        dst_data = a.out
    if dst_data:
        shutil.rmtree(dst_data, ignore_errors=True)
    common = {"compression_level": a.level}
    if a.segment:
        common["segment_size"] = a.segment
    dst = e2e.Node("dst", run, binary, dict(common), data=dst_data)
    srcs = {
        "classic": e2e.Node("srcC", run, binary, dict(common, transport="classic")),
        "segmented": e2e.Node("srcS", run, binary, dict(common, transport="auto")),
    }
    for kind, node in srcs.items():
        link_tree(fix, os.path.join(node.data, UUIDS[kind]))
    expected, total = e2e.listing(fix)
    warm(fix)
    nodes = [dst] + list(srcs.values())
    times = {k: [] for k in srcs}
    cpus = {k: [] for k in srcs}
    try:
        for n in nodes:
            n.start()
        e2e.say("== %d cores, load %s; %d MB incompressible, level %d, destination on %s"
                % (os.cpu_count(), open("/proc/loadavg").read().split()[0], total // MB, a.level,
                   a.out))
        for r in range(a.rounds):
            for kind, src in srcs.items():
                uuid = UUIDS[kind]
                e2e.sync()
                token = e2e.mint(binary, dst, uuid)
                perfs = []
                if a.perf and kind == "segmented":
                    os.makedirs(a.perf, exist_ok=True)
                    for n in (src, dst):
                        perfs.append(subprocess.Popen(
                            ["perf", "record", "-q", "-F", "1999", "-p", str(n.proc.pid),
                             "-o", os.path.join(a.perf, "%s-%d.data" % (n.name, r))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(0.5)
                cpu0 = (src.cpu(), dst.cpu())
                t0 = time.monotonic()
                tid = e2e.post_transfer(binary, src, dst, uuid, token)
                rec = e2e.wait_transfer(src, uuid, tid, poll=0.005)
                wall = time.monotonic() - t0
                cpu = (src.cpu() - cpu0[0], dst.cpu() - cpu0[1])
                for pr in perfs:
                    pr.send_signal(signal.SIGINT)
                    pr.wait()
                if rec["status"] != "completed":
                    raise RuntimeError("%s ended %s: %s\n%s" % (kind, rec["status"], rec.get("error"),
                                                               dst.tail()))
                times[kind].append(wall)
                cpus[kind].append(cpu)
                e2e.say("  round %d %-9s %6.2f s  %6.1f MB/s  CPU source %.2f s, destination %.2f s"
                        % (r + 1, kind, wall, total / wall / MB, cpu[0], cpu[1]))
                if r == 0:
                    e2e.verify(expected, os.path.join(dst.data, uuid), kind)
                e2e.delete_on(dst, uuid)
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu_med = {k: tuple(statistics.median(c[i] for c in v) for i in (0, 1)) for k, v in cpus.items()}
        e2e.say("== medians: classic %.2f s (CPU %.2f + %.2f s), segmented %.2f s (CPU %.2f + %.2f s); "
                "segmented/classic %.2f"
                % (med["classic"], cpu_med["classic"][0], cpu_med["classic"][1], med["segmented"],
                   cpu_med["segmented"][0], cpu_med["segmented"][1], med["segmented"] / med["classic"]))
        e2e.say("== the segmented transport's own account (source, then destination):")
        for line in log_lines(srcs["segmented"], "segment requests over session"):
            e2e.say("  " + line.split(": ", 1)[-1])
        for line in log_lines(srcs["segmented"], "the finish took"):
            e2e.say("  " + line.split(": ", 1)[-1])
        for line in log_lines(dst, "session timing"):
            e2e.say("  " + line.split("session timing: ", 1)[-1])
    finally:
        for n in nodes:
            n.stop()
        if dst_data:
            shutil.rmtree(dst_data, ignore_errors=True)
        if os.environ.get("BENCH_KEEP"):
            e2e.say("== logs kept in %s" % run)
        else:
            shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
