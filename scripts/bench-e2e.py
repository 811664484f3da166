#!/usr/bin/env python3
"""End-to-end benchmark of ferry against the classic tar pipelines (issue 8).

Called by scripts/bench.sh (which builds the release binary and installs
pigz); usable on its own:

  bench-e2e.py --ferry target/release/ferry --fixture DIR --small DIR --work DIR
               [--rounds 3] [--cancels 20] [--concurrent 8]

What it does, printing each step:
  1. starts release nodes on loopback with generated configs (standalone,
     `environment: none`): `dst` (destination), `src` (default threads),
     `src1` (`compression_threads: 1`, the Wings-like sender) and `srcT`
     (`upload_limit`, for the cancel test). Source data directories are
     hard-linked copies of the fixture, adopted at start-up.
  2. idle RSS of `dst` after 50 API requests.
  3. rounds, alternating A B A B: ferry (src -> dst), baseline B2
     `tar -cf - . | pigz -1 -p2 | pigz -dc | tar -xf -`, baseline B1
     `tar -czf - . | tar -xzf -`, ferry one-thread (src1 -> dst). A ferry
     transfer is panel-shaped: POST /api/servers/<uuid>/transfer on the
     source, timed until GET .../transfer shows `completed`. Between rounds
     the server is deleted on the destination (DELETE /api/servers/<uuid>,
     waiting for its directory to go) and baseline outputs are removed;
     `sync` runs before every timed step, outside the timing.
  4. 8 concurrent transfers of smaller servers, with GET /api/transfers
     polled every ~50 ms on both nodes for latency.
  5. cancel latency: a throttled transfer is cancelled N times.
  6. backups travelling with a transfer (issue 14): the small server moved
     with and without two local backups (random bytes, as incompressible
     as the .tar.gz they stand for, --backup-mb in all), alternating; the
     backups' MB/s is their size over the time they add, next to the
     source's own figure from its log. `--only backups` runs just this
     step (and needs only --small).
Every number printed is measured in this run. Standard library only.
"""

import argparse
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TOKEN = "bench-node-token-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BIG = {
    "src": "b0000000-0000-4000-8000-000000000001",
    "src1": "b0000000-0000-4000-8000-000000000002",
}
CANCEL_UUID = "c0000000-0000-4000-8000-000000000001"
TERMINAL = ("completed", "failed", "cancelled")


def say(msg):
    print(msg, flush=True)


def small_uuid(i):
    return "5e000000-0000-4000-8000-%012d" % (i + 1)


# ---------------------------------------------------------------- nodes


def _pdeathsig():
    """In the child: die with SIGTERM if the orchestrator dies first."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Node:
    def __init__(self, name, work, binary, transfers=None, data=None):
        self.name = name
        self.binary = binary
        self.root = os.path.join(work, name)
        self.data = data or os.path.join(self.root, "volumes")
        self.config = os.path.join(self.root, "config.yml")
        self.log = os.path.join(self.root, "node.log")
        # Local backups (Pterodactyl's flat layout: <backup>.tar.gz).
        self.backups = os.path.join(self.root, "backups")
        self.proc = None
        self.addr = None
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        extra = "".join("    %s: %s\n" % kv for kv in (transfers or {}).items())
        with open(self.config, "w") as f:
            f.write(
                "token: %s\n"
                "api:\n  host: 127.0.0.1\n  port: 0\n"
                "system:\n"
                "  root_directory: %s\n"
                "  data: %s\n"
                "  backup_directory: %s\n"
                "  log_directory: %s\n"
                "  environment: none\n"
                "  transfers:\n    stop_timeout: 3\n%s"
                % (TOKEN, os.path.join(self.root, "state"), self.data, self.backups,
                   os.path.join(self.root, "log"), extra)
            )

    def start(self, env=None):
        """Starts the node (with `env` as its whole environment when given)
        and waits for its `listening on` line."""
        logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=logf,
            env=env,
            preexec_fn=_pdeathsig,
        )
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start-up:\n%s" % (self.name, self.tail()))
            with open(self.log) as f:
                for line in f:
                    if "listening on " in line:
                        self.addr = line.split("listening on ", 1)[1].strip()
                        return
            time.sleep(0.02)
        raise RuntimeError("%s did not start:\n%s" % (self.name, self.tail()))

    def tail(self, n=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def url(self, path):
        return "http://%s%s" % (self.addr, path)

    def req(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.url(path), data=data, method=method)
        r.add_header("Authorization", "Bearer " + TOKEN)
        r.add_header("Accept", "application/json")
        if data is not None:
            r.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def stage_cpu(self):
        """{stage: CPU seconds} from the node's own pipeline counters
        (`ferry_transfer_stage_cpu_seconds_total`, ended transfers)."""
        _, text = self.req("GET", "/metrics")
        out = {}
        for line in str(text).splitlines():
            m = re.match(r'ferry_transfer_stage_cpu_seconds_total\{stage="(\w+)"\} ([0-9.eE+-]+)$', line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    # /proc readings: the node must still be running.
    def cpu(self):
        """utime + stime of the whole process, in seconds."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status_kib(self, key):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def reset_peak(self):
        """Resets VmHWM to the current RSS (clear_refs 5)."""
        with open("/proc/%d/clear_refs" % self.proc.pid, "w") as f:
            f.write("5")

    def threads_cpu(self):
        """{tid: (name, cpu seconds)} of the live threads."""
        out = {}
        base = "/proc/%d/task" % self.proc.pid
        try:
            tids = os.listdir(base)
        except OSError:
            return out
        for tid in tids:
            try:
                with open("%s/%s/stat" % (base, tid)) as f:
                    text = f.read()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[tid] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
        return out


# ---------------------------------------------------------------- helpers


def mint(binary, dst, uuid):
    key = os.path.join(dst.root, "token.txt")
    if not os.path.exists(key):
        with open(key, "w") as f:
            f.write(TOKEN)
    out = subprocess.run(
        [binary, "token", "--server", uuid, "--key-file", key, "--ttl", "3600"],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def post_transfer(binary, src, dst, uuid, token=None, backups=None):
    """Starts a panel-shaped transfer; returns the record id. The panel
    mints the token before it calls the source: pass one to keep the
    minting out of a timing. `backups`: the UUIDs the panel lists."""
    body = {
        "url": dst.url("/api/transfers"),
        "token": "Bearer " + (token or mint(binary, dst, uuid)),
        "server": {"uuid": uuid, "start_on_completion": False},
        "server_id": 1,
    }
    if backups:
        body["backups"] = backups
    status, rec = src.req("POST", "/api/servers/%s/transfer" % uuid, body)
    if status != 202:
        raise RuntimeError("%s: POST transfer of %s answered %s: %s" % (src.name, uuid, status, rec))
    return rec["id"]


def wait_transfer(src, uuid, tid, poll=0.01, timeout=600):
    """Polls the source's record until it ends; returns the record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, rec = src.req("GET", "/api/servers/%s/transfer" % uuid)
        if status == 200 and rec["id"] == tid and rec["status"] in TERMINAL:
            return rec
        time.sleep(poll)
    raise RuntimeError("%s: transfer %s of %s did not end in %ss" % (src.name, tid, uuid, timeout))


def delete_on(node, uuid, timeout=120):
    """DELETE /api/servers/<uuid>, then waits for the directory to go."""
    status, body = node.req("DELETE", "/api/servers/%s" % uuid)
    if status != 204:
        raise RuntimeError("%s: DELETE %s answered %s: %s" % (node.name, uuid, status, body))
    path = os.path.join(node.data, uuid)
    staging = os.path.join(node.data, ".ferry-staging")

    def removing():
        # The node moves the directory out of place before its 204 and
        # removes it in the background: the next measured run must not
        # share the CPU with that removal.
        try:
            return [n for n in os.listdir(staging) if n.startswith(uuid + ".removing-")]
        except FileNotFoundError:
            return []

    deadline = time.monotonic() + timeout
    while os.path.lexists(path) or removing():
        if time.monotonic() > deadline:
            raise RuntimeError("%s: %s still exists %ss after DELETE" % (node.name, path, timeout))
        time.sleep(0.02)


def sync():
    os.sync()


BACKUPS = ["d0000000-0000-4000-8000-000000000001", "d0000000-0000-4000-8000-000000000002"]
SENT_BACKUPS = re.compile(r"sent (\d+) backups, (\d+) bytes in ([0-9.]+) s")


def backup_bench(a, binary, src, dst, small_content):
    """Step 6: the cost of backups travelling with a transfer. Returns the
    results; the caller has started both nodes and placed the small tree
    at src/<small_uuid(0)>."""
    uuid = small_uuid(0)
    each = max(1, a.backup_mb * 1000 * 1000 // len(BACKUPS))
    total = each * len(BACKUPS)
    say("== backups travelling with a transfer: the %.1f MB server with and without %d backups of %.1f MB"
        % (small_content / 1e6, len(BACKUPS), each / 1e6))
    os.makedirs(src.backups, exist_ok=True)
    for b in BACKUPS:
        with open(os.path.join(src.backups, b + ".tar.gz"), "wb") as f:
            left = each
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                f.write(chunk)
                left -= len(chunk)
    for b in BACKUPS:  # warm the page cache, as for the trees
        with open(os.path.join(src.backups, b + ".tar.gz"), "rb") as f:
            while f.read(1 << 20):
                pass
    plain, with_backups, logged = [], [], []
    for r in range(a.rounds):
        for kind in ("plain", "backups"):
            sync()
            token = mint(binary, dst, uuid)
            listed = BACKUPS if kind == "backups" else None
            t0 = time.monotonic()
            tid = post_transfer(binary, src, dst, uuid, token, listed)
            rec = wait_transfer(src, uuid, tid, poll=0.005)
            wall = time.monotonic() - t0
            if rec["status"] != "completed":
                raise RuntimeError("backup round ended %s: %s\n%s" % (rec["status"], rec.get("error"), dst.tail()))
            if kind == "backups":
                for b in BACKUPS:
                    got = os.path.join(dst.backups, b + ".tar.gz")
                    if os.path.getsize(got) != each:
                        raise RuntimeError("backup %s arrived with %d bytes" % (b, os.path.getsize(got)))
                with open(src.log) as f:
                    found = SENT_BACKUPS.findall(f.read())
                if found:
                    n, nbytes, secs = found[-1]
                    logged.append(int(nbytes) / float(secs) / 1e6)
                with_backups.append(wall)
            else:
                plain.append(wall)
            say("  round %d %-7s %6.2f s" % (r + 1, kind, wall))
            delete_on(dst, uuid)
            for b in BACKUPS:
                try:
                    os.remove(os.path.join(dst.backups, b + ".tar.gz"))
                except FileNotFoundError:
                    pass
    added = statistics.median(with_backups) - statistics.median(plain)
    res = {"backup_bytes": total, "plain": plain, "with_backups": with_backups,
           "source_logged_mbs": logged}
    say("  backups: %.1f MB in %.2f s more than without (median of %d): %.1f MB/s; the source's log: %s MB/s"
        % (total / 1e6, added, a.rounds, total / added / 1e6 if added > 0 else float("inf"),
           "/".join("%.0f" % x for x in logged) or "?"))
    return res


def backup_line(res):
    """The report's line for step 6."""
    added = statistics.median(res["with_backups"]) - statistics.median(res["plain"])
    total = res["backup_bytes"]
    logged = res.get("source_logged_mbs") or []
    say("| backups travelling with a transfer: %.0f MB of backups (sent as stored, no recompression) | "
        "%.1f MB/s (+%.2f s; source's log %s MB/s) | | |" % (
            total / 1e6, total / added / 1e6 if added > 0 else float("inf"), added,
            "%.0f" % statistics.median(logged) if logged else "?"))


def listing(root):
    """Sorted entries: (path, type, mode, size, mtime, sha256 or link)."""
    out = []
    total = 0
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out.append((rel, "l", 0, 0, 0, os.readlink(p)))
            elif os.path.isdir(p):
                out.append((rel, "d", st.st_mode & 0o7777, 0, int(st.st_mtime), ""))
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        h.update(b)
                total += st.st_size
                out.append((rel, "f", st.st_mode & 0o7777, st.st_size, int(st.st_mtime), h.hexdigest()))
    out.sort()
    return out, total


def verify(expected, root, what):
    got, _ = listing(root)
    if got != expected:
        exp, have = set(expected), set(got)
        diff = sorted(exp ^ have)[:5]
        raise RuntimeError("%s: tree differs from the source (%d entries vs %d); first differences: %s"
                           % (what, len(got), len(expected), diff))
    say("  verified %s: %d entries, paths, types, modes, sizes, mtimes and sha256 match" % (what, len(got)))


def run_pipeline(cmd):
    """(wall seconds, CPU seconds of every process in the pipeline)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def _renice(nice):
    """Sets this process's nice value; False if not asked or not allowed."""
    if not nice:
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        return True
    except OSError:
        return False


def _poll_loop(node, nice, interval, halt, pause, results):
    """Child process: GET /api/transfers every `interval` until `halt`."""
    raised = _renice(nice)
    latencies, errors = [], 0
    while not halt.is_set():
        if pause.is_set():
            halt.wait(interval)
            continue
        t = time.monotonic()
        try:
            status, _ = node.req("GET", "/api/transfers", timeout=10)
            if status != 200:
                errors += 1
        except (OSError, urllib.error.URLError):
            errors += 1
        dt = time.monotonic() - t
        latencies.append(dt)
        halt.wait(max(0.0, interval - dt))
    results.put((latencies, errors, raised))


def _jitter_loop(nice, interval, halt, pause, results):
    """Child process: sleeps `interval` over and over and records how late
    it wakes. Same priority as a poller, no I/O: the machine's own
    scheduling delay (both vCPUs busy, host steal), the floor under any
    latency measured here."""
    raised = _renice(nice)
    lateness = []
    while not halt.is_set():
        if pause.is_set():
            halt.wait(interval)
            continue
        t = time.monotonic()
        time.sleep(interval)
        lateness.append(max(0.0, time.monotonic() - t - interval))
    results.put((lateness, 0, raised))


def server_side_ms(node, path):
    """Durations (ms) the node's access log gives for GETs of `path`: from
    the complete head to the last response byte, queueing included."""
    # `access method=GET path=/api/transfers status=200 ms=3 …` (labelled
    # columns since the journald work; the old positional form is gone).
    pat = re.compile(r" access method=GET path=%s status=200 ms=(\d+) " % re.escape(path))
    out = []
    with open(node.log) as f:
        for line in f:
            m = pat.search(line)
            if m:
                out.append(float(m.group(1)))
    return out


class Poller:
    """GET /api/transfers every ~50 ms from a separate process (its own
    GIL and scheduling), optionally at a raised priority: the panel is on
    another machine, and a poller competing for these two cores with the
    transfers would mostly measure its own wait for a CPU."""

    def __init__(self, node, nice=0, interval=0.05, target=_poll_loop):
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        self.node, self.nice = node, nice
        self.halt = ctx.Event()
        # Set while something other than what is measured runs.
        self.pause = ctx.Event()
        self.queue = ctx.Queue()
        args = (nice, interval, self.halt, self.pause, self.queue)
        if target is _poll_loop:
            args = (node,) + args
        self.proc = ctx.Process(target=target, args=args, daemon=True)
        self.latencies, self.errors, self.raised = [], 0, False

    def start(self):
        self.proc.start()

    def stop(self):
        self.halt.set()
        lat, err, raised = self.queue.get(timeout=60)
        self.proc.join()
        self.latencies += lat
        self.errors += err
        self.raised = raised


class ThreadSampler(threading.Thread):
    """Samples per-thread CPU of some nodes; keeps each thread's last value."""

    def __init__(self, nodes, interval=0.1):
        super().__init__(daemon=True)
        self.nodes, self.interval = nodes, interval
        self.start_cpu = {n.name: n.threads_cpu() for n in nodes}
        self.last = {n.name: {} for n in nodes}
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)
        self.sample()

    def sample(self):
        for n in self.nodes:
            self.last[n.name].update(n.threads_cpu())

    def busy(self, wall):
        """{node: [(thread name, threads, cpu s, busy fraction)]} by name."""
        out = {}
        for n in self.nodes:
            groups = {}
            for tid, (name, cpu) in self.last[n.name].items():
                base = self.start_cpu[n.name].get(tid, (name, 0.0))[1]
                key = name.split("-")[0] if "-" in name else name
                g = groups.setdefault(key, [0, 0.0])
                if cpu - base > 0:
                    g[0] += 1
                    g[1] += cpu - base
            out[n.name] = sorted(((k, c, s, s / wall) for k, (c, s) in groups.items() if s > 0),
                                 key=lambda r: -r[2])
        return out


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ferry", required=True, help="release ferry binary")
    ap.add_argument("--fixture", help="the large fixture directory (not with --only backups)")
    ap.add_argument("--small", required=True, help="the small fixture (one of the concurrent servers)")
    ap.add_argument("--work", required=True, help="scratch directory (removed by the caller)")
    ap.add_argument("--out", help="where the destination node and the baselines write "
                    "(default: under --work); an existing, empty directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--cancels", type=int, default=20)
    ap.add_argument("--cancel-limit", type=int, default=4, help="upload_limit MiB/s of the cancel node")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--backup-mb", type=int, default=256, help="MB of backups for step 6")
    ap.add_argument("--only", choices=["all", "backups"], default="all",
                    help="`backups`: run step 6 alone")
    a = ap.parse_args()
    if a.only == "backups":
        return only_backups(a)
    if not a.fixture:
        ap.error("--fixture is needed unless --only backups")

    work = os.path.abspath(a.work)
    out_root = os.path.abspath(a.out) if a.out else os.path.join(work, "out")
    nodes = {
        "dst": Node("dst", work, a.ferry, data=os.path.join(out_root, "dst-volumes")),
        "src": Node("src", work, a.ferry),
        "src1": Node("src1", work, a.ferry, {"compression_threads": 1}),
        "srcT": Node("srcT", work, a.ferry, {"upload_limit": a.cancel_limit}),
    }
    dst, src, src1, srcT = nodes["dst"], nodes["src"], nodes["src1"], nodes["srcT"]
    results = {}

    def stop_all(*_):
        for n in nodes.values():
            n.stop()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        say("== source trees (hard links of the fixtures) and the source listing")
        for name in ("src", "src1"):
            subprocess.run(["cp", "-al", a.fixture, os.path.join(nodes[name].data, BIG[name])], check=True)
        for i in range(a.concurrent):
            subprocess.run(["cp", "-al", a.small, os.path.join(src.data, small_uuid(i))], check=True)
        subprocess.run(["cp", "-al", a.small, os.path.join(srcT.data, CANCEL_UUID)], check=True)
        expected, content = listing(os.path.join(src.data, BIG["src"]))
        expected_small, small_content = listing(a.small)
        say("  large tree: %d entries, %.1f MB of file content; small tree: %d entries, %.1f MB"
            % (len(expected), content / 1e6, len(expected_small), small_content / 1e6))
        results["content_bytes"] = content
        stripped = os.path.join(work, "ferry.stripped")
        shutil.copy(a.ferry, stripped)
        if shutil.which("strip"):
            subprocess.run(["strip", stripped], check=True)
        results["binary_bytes"] = os.path.getsize(stripped)
        say("  release binary %s: %d bytes, %d after strip" % (a.ferry, os.path.getsize(a.ferry), results["binary_bytes"]))

        df = subprocess.run(["df", "--output=fstype,target", out_root], capture_output=True, text=True).stdout
        fs = (df.strip().splitlines() or ["?"])[-1].split()
        say("  the destination and the baselines write under %s (%s)" % (out_root, " on ".join(fs)))
        results["out_fs"] = fs[0]
        say("== starting nodes: %s" % ", ".join(nodes))
        for n in nodes.values():
            n.start()
            say("  %-4s pid %d on %s (%s)" % (n.name, n.proc.pid, n.addr, n.config))

        say("== idle footprint of dst after 50 API requests")
        for i in range(50):
            dst.req("GET", "/api/system" if i % 2 else "/api/servers")
        idle_hwm, idle_rss = dst.status_kib("VmHWM"), dst.status_kib("VmRSS")
        idle_threads = dst.status_kib("Threads")
        say("  VmHWM %d KiB, VmRSS %d KiB, %d threads" % (idle_hwm, idle_rss, idle_threads))
        results["idle"] = {"hwm_kib": idle_hwm, "rss_kib": idle_rss, "threads": idle_threads}

        # Warm the page cache so no side pays for the first read.
        say("== warming the page cache (tar of the source trees to /dev/null)")
        for d in (os.path.join(src.data, BIG["src"]), a.small):
            subprocess.run(["tar", "-cf", "/dev/null", "-C", d, "."], check=True)

        times = {"ferry": [], "b2": [], "b1": [], "ferry1": []}
        cpu = {"ferry": [], "b2": [], "b1": [], "ferry1": []}
        node_cpu = {"ferry": [], "ferry1": []}
        wire = {}
        stages = {}
        for n in nodes.values():
            n.reset_peak()
        out_dir = os.path.join(out_root, "baseline-out")
        sampler_report = {}

        def ferry_round(kind, source, uuid, last):
            sync()
            sampler = ThreadSampler([source, dst]) if last else None
            token = mint(a.ferry, dst, uuid)
            st0 = (source.stage_cpu(), dst.stage_cpu())
            c0 = (source.cpu(), dst.cpu())
            t0 = time.monotonic()
            if sampler:
                sampler.start()
            tid = post_transfer(a.ferry, source, dst, uuid, token)
            rec = wait_transfer(source, uuid, tid)
            wall = time.monotonic() - t0
            c1 = (source.cpu(), dst.cpu())
            if sampler:
                sampler.halt.set()
                sampler.join()
                sampler_report[kind] = (wall, sampler.busy(wall))
            if rec["status"] != "completed":
                raise RuntimeError("%s transfer ended %s: %s\n%s\n%s" % (
                    kind, rec["status"], rec.get("error"), source.tail(), dst.tail()))
            times[kind].append(wall)
            node_cpu[kind].append((c1[0] - c0[0], c1[1] - c0[1]))
            cpu[kind].append((c1[0] - c0[0]) + (c1[1] - c0[1]))
            wire[kind] = rec["progress"]["wire_bytes"]
            st1 = (source.stage_cpu(), dst.stage_cpu())
            stages.setdefault(kind, []).append(
                {k: st1[i].get(k, 0.0) - st0[i].get(k, 0.0) for i in (0, 1) for k in st1[i]
                 if st1[i].get(k, 0.0) - st0[i].get(k, 0.0) > 0})
            say("  %-7s %6.2f s  %7.1f MB/s  cpu src %.2f s dst %.2f s  wire %.1f MB" % (
                kind, wall, content / wall / 1e6, c1[0] - c0[0], c1[1] - c0[1], wire[kind] / 1e6))
            if last:
                verify(expected, os.path.join(dst.data, uuid), "%s round %d on dst" % (kind, len(times[kind])))
            delete_on(dst, uuid)

        def baseline_round(kind, cmd_fmt, last):
            out = os.path.join(out_dir, kind)
            os.makedirs(out)
            sync()
            wall, c = run_pipeline(cmd_fmt % {"src": os.path.join(src.data, BIG["src"]), "out": out})
            times[kind].append(wall)
            cpu[kind].append(c)
            say("  %-7s %6.2f s  %7.1f MB/s  cpu %.2f s" % (kind, wall, content / wall / 1e6, c))
            if last:
                verify(expected, out, "%s output" % kind)
            shutil.rmtree(out)

        b2 = "tar -cf - -C '%(src)s' . | pigz -1 -p2 | pigz -dc | tar -xf - -C '%(out)s'"
        b1 = "tar -czf - -C '%(src)s' . | tar -xzf - -C '%(out)s'"
        for r in range(a.rounds):
            last = r == a.rounds - 1
            say("== round %d/%d (ferry, B2, B1, ferry one-thread)" % (r + 1, a.rounds))
            ferry_round("ferry", src, BIG["src"], last)
            baseline_round("b2", b2, last)
            baseline_round("b1", b1, last)
            ferry_round("ferry1", src1, BIG["src1"], last)
        peak = {n: nodes[n].status_kib("VmHWM") for n in ("src", "src1", "dst")}
        say("  peak RSS over the single transfers (VmHWM): " +
            ", ".join("%s %d KiB" % kv for kv in peak.items()))
        results.update(times=times, cpu=cpu, node_cpu=node_cpu, wire=wire, peak_single_kib=peak,
                       stage_cpu=stages)
        for kind, (wall, busy) in sampler_report.items():
            say("  per-thread CPU during the last %s round (%.2f s wall; busy = CPU / wall):" % (kind, wall))
            for node, rows in busy.items():
                for name, count, secs, frac in rows:
                    say("    %-4s %-16s %2d thread(s) %6.2f s  busy %4.0f%%" % (node, name, count, secs, frac * 100))
        results["busy"] = sampler_report

        say("== %d concurrent transfers of %.1f MB each (GET /api/transfers polled every 50 ms)"
            % (a.concurrent, small_content / 1e6))
        for n in (src, dst):
            n.reset_peak()
        pollers = [Poller(src, -10), Poller(dst, -10), Poller(src), Poller(dst)]
        jitter = Poller(None, -10, 0.005, target=_jitter_loop)
        api_lines_before = {n.name: len(server_side_ms(n, "/api/transfers")) for n in (src, dst)}
        conc_times = []
        conc_cpu = []
        seq_times = []
        for r in range(a.rounds):
            # The same servers one at a time first (the latency probes
            # paused): the throughput of "one transfer" of these servers.
            for p in pollers + [jitter]:
                p.pause.set()
            sync()
            t0 = time.monotonic()
            for i in range(a.concurrent):
                tid = post_transfer(a.ferry, src, dst, small_uuid(i), mint(a.ferry, dst, small_uuid(i)))
                rec = wait_transfer(src, small_uuid(i), tid, poll=0.02)
                if rec["status"] != "completed":
                    raise RuntimeError("sequential transfer ended %s: %s" % (rec["status"], rec.get("error")))
            seq_times.append(time.monotonic() - t0)
            for i in range(a.concurrent):
                delete_on(dst, small_uuid(i))
            sync()
            for p in pollers + [jitter]:
                p.pause.clear()
            if r == 0:
                for p in pollers:
                    p.start()
                jitter.start()
            tokens = [mint(a.ferry, dst, small_uuid(i)) for i in range(a.concurrent)]
            c0 = src.cpu() + dst.cpu()
            t0 = time.monotonic()
            ids = [post_transfer(a.ferry, src, dst, small_uuid(i), tokens[i]) for i in range(a.concurrent)]
            recs = [wait_transfer(src, small_uuid(i), tid, poll=0.02) for i, tid in enumerate(ids)]
            wall = time.monotonic() - t0
            c = src.cpu() + dst.cpu() - c0
            bad = [r_ for r_ in recs if r_["status"] != "completed"]
            if bad:
                raise RuntimeError("concurrent transfer ended %s: %s" % (bad[0]["status"], bad[0].get("error")))
            conc_times.append(wall)
            conc_cpu.append(c)
            say("  round %d: one at a time %6.2f s (%7.1f MB/s); concurrently %6.2f s  aggregate %7.1f MB/s  cpu %.2f s" % (
                r + 1, seq_times[-1], a.concurrent * small_content / seq_times[-1] / 1e6,
                wall, a.concurrent * small_content / wall / 1e6, c))
            if r == a.rounds - 1:
                for p in pollers:
                    p.stop()
                jitter.stop()
                for i in range(a.concurrent):
                    verify(expected_small, os.path.join(dst.data, small_uuid(i)), "concurrent server %d" % (i + 1))
            for i in range(a.concurrent):
                delete_on(dst, small_uuid(i))
        conc_peak = {n.name: n.status_kib("VmHWM") for n in (src, dst)}
        lat = {}
        for p in pollers:
            key = "%s%s" % (p.node.name, " raised" if p.raised else "")
            lat.setdefault(key, []).extend(p.latencies)
            say("  API latency GET /api/transfers on %s, client at %s: p50 %.1f ms p90 %.1f ms p99 %.1f ms"
                " max %.1f ms (%d requests, %d errors)"
                % (p.node.name, "nice %d" % p.nice if p.raised else "normal priority",
                   pct(p.latencies, 50) * 1e3, pct(p.latencies, 90) * 1e3, pct(p.latencies, 99) * 1e3,
                   max(p.latencies) * 1e3, len(p.latencies), p.errors))
        server_ms = {n.name: server_side_ms(n, "/api/transfers")[api_lines_before[n.name]:] for n in (src, dst)}
        for name, ms in server_ms.items():
            say("  the same on %s, inside the node (access log, head complete to response sent): p50 %.0f ms"
                " p99 %.0f ms max %.0f ms (%d requests)"
                % (name, pct(ms, 50), pct(ms, 99), max(ms or [0]), len(ms)))
        say("  wake-up lateness of a sleeping process at nice %s (no I/O, same window): p50 %.1f ms p99 %.1f ms"
            " max %.1f ms (%d sleeps)"
            % ("-10" if jitter.raised else "0", pct(jitter.latencies, 50) * 1e3, pct(jitter.latencies, 99) * 1e3,
               max(jitter.latencies or [0]) * 1e3, len(jitter.latencies)))
        say("  peak RSS during them: " + ", ".join("%s %d KiB" % kv for kv in conc_peak.items()))
        results.update(concurrent_times=conc_times, concurrent_cpu=conc_cpu, sequential_times=seq_times,
                       concurrent_bytes=a.concurrent * small_content,
                       concurrent_peak_kib=conc_peak, api_latency=lat,
                       api_server_ms=server_ms, wakeup_lateness=jitter.latencies)

        say("== cancel latency: %d throttled transfers (upload_limit %d MiB/s) cancelled mid-stream"
            % (a.cancels, a.cancel_limit))
        cancel_lat = []
        for i in range(a.cancels):
            tid = post_transfer(a.ferry, srcT, dst, CANCEL_UUID)
            deadline = time.monotonic() + 30
            while True:
                _, rec = srcT.req("GET", "/api/servers/%s/transfer" % CANCEL_UUID)
                if rec["status"] == "processing" and rec["progress"]["wire_bytes"] > 0:
                    break
                if rec["status"] in TERMINAL or time.monotonic() > deadline:
                    raise RuntimeError("throttled transfer did not start streaming: %s" % rec)
                time.sleep(0.01)
            time.sleep(0.05 + 0.01 * (i % 10))  # cancel at different points of the stream
            t0 = time.monotonic()
            status, body = srcT.req("DELETE", "/api/servers/%s/transfer" % CANCEL_UUID,
                                    {"reason": "bench cancel %d" % (i + 1)})
            if status != 202:
                raise RuntimeError("DELETE transfer answered %s: %s" % (status, body))
            while True:
                _, rec = srcT.req("GET", "/api/servers/%s/transfer" % CANCEL_UUID)
                if rec["id"] == tid and rec["status"] in TERMINAL:
                    break
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("cancel did not finish in 30 s: %s" % rec)
                time.sleep(0.002)
            dt = time.monotonic() - t0
            if rec["status"] != "cancelled":
                raise RuntimeError("cancelled transfer ended %s: %s" % (rec["status"], rec.get("error")))
            cancel_lat.append(dt)
            # The destination's side must be over before the next one.
            while True:
                _, recs = dst.req("GET", "/api/transfers")
                active = [x for x in recs if x["server"] == CANCEL_UUID
                          and x["status"] not in TERMINAL]
                if not active:
                    break
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("destination still receiving 30 s after the cancel")
                time.sleep(0.01)
        if os.path.lexists(os.path.join(dst.data, CANCEL_UUID)):
            raise RuntimeError("a cancelled transfer left a server directory on dst")
        say("  cancel -> cancelled: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d" % (
            pct(cancel_lat, 50) * 1e3, pct(cancel_lat, 99) * 1e3, max(cancel_lat) * 1e3, len(cancel_lat)))
        results["cancel_latency"] = cancel_lat
        results["backups"] = backup_bench(a, a.ferry, src, dst, small_content)
        results["rounds"] = a.rounds
    finally:
        stop_all()

    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)
    report(results, a)


def only_backups(a):
    """`--only backups`: two nodes, the small tree, step 6."""
    work = os.path.abspath(a.work)
    out_root = os.path.abspath(a.out) if a.out else os.path.join(work, "out")
    src = Node("src", work, a.ferry)
    dst = Node("dst", work, a.ferry, data=os.path.join(out_root, "dst-volumes"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        subprocess.run(["cp", "-al", a.small, os.path.join(src.data, small_uuid(0))], check=True)
        _, small_content = listing(a.small)
        for n in (src, dst):
            n.start()
        res = backup_bench(a, a.ferry, src, dst, small_content)
    finally:
        src.stop()
        dst.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"backups": res}, f)
    say("")
    say("| measure | value | target | |")
    say("|---|---:|---:|---|")
    backup_line(res)


def report(res, a):
    med = {k: statistics.median(v) for k, v in res["times"].items()}
    content = res["content_bytes"]
    gb = content / 1e9

    def mbs(s):
        return content / s / 1e6

    def mib(kib):
        return kib / 1024

    def ok(cond):
        return "met" if cond else "MISSED"

    say("")
    say("== results: %d rounds alternating A B A B, medians; %.0f MB of content; %s"
        % (res["rounds"], content / 1e6, time.strftime("%Y-%m-%d %H:%M %Z")))
    say("| run | median s | MB/s | CPU s per GB moved | rounds (s) |")
    say("|---|---:|---:|---:|---|")
    names = {"ferry": "ferry end to end (src+dst nodes)",
             "ferry1": "ferry one compression thread (Wings-like)",
             "b2": "B2 `tar -cf - . \\| pigz -1 -p2 \\| pigz -dc \\| tar -xf -`",
             "b1": "B1 `tar -czf - . \\| tar -xzf -`"}
    for k in ("ferry", "ferry1", "b2", "b1"):
        say("| %s | %.2f | %.1f | %.2f | %s |" % (
            names[k], med[k], mbs(med[k]), statistics.median(res["cpu"][k]) / gb,
            " ".join("%.2f" % t for t in res["times"][k])))
    f_cpu = [c for c in res["node_cpu"]["ferry"]]
    say("")
    say("| measure | value | target | |")
    say("|---|---:|---:|---|")
    r2 = med["ferry"] / med["b2"]
    say("| ferry / B2 time | %.2fx | <= 0.40x | %s |" % (r2, ok(r2 <= 0.40)))
    say("| ferry / B1 time | %.2fx | | |" % (med["ferry"] / med["b1"]))
    say("| ferry / one-thread time | %.2fx | | |" % (med["ferry"] / med["ferry1"]))
    say("| ferry CPU per GB: source / destination node | %.2f s / %.2f s | | |" % (
        statistics.median(c[0] for c in f_cpu) / gb, statistics.median(c[1] for c in f_cpu) / gb))
    say("| archive on the wire (ferry, level 1) | %.1f MB (%.0f%% of content) | | |" % (
        res["wire"]["ferry"] / 1e6, 100 * res["wire"]["ferry"] / content))
    peak = res["peak_single_kib"]
    worst = max(peak.values())
    say("| peak RSS during a %.0f MB transfer: src / src1 / dst | %.1f / %.1f / %.1f MiB | <= 48 MiB | %s |" % (
        content / 1e6, mib(peak["src"]), mib(peak["src1"]), mib(peak["dst"]), ok(worst <= 48 * 1024)))
    idle = res["idle"]
    say("| idle RSS (VmHWM after 50 requests) | %.1f MiB (%d threads) | <= 8 MiB | %s |" % (
        mib(idle["hwm_kib"]), idle["threads"], ok(idle["hwm_kib"] <= 8 * 1024)))
    size = res.get("binary_bytes")
    if size:
        say("| stripped release binary | %.1f MiB | <= 8 MiB | %s |" % (size / 2**20, ok(size <= 8 * 2**20)))
    ct = statistics.median(res["concurrent_times"])
    agg = res["concurrent_bytes"] / ct / 1e6
    seq = res.get("sequential_times")
    if seq:
        # "One transfer's throughput" of the same servers: moved one at a
        # time, alternating with the concurrent rounds.
        one = res["concurrent_bytes"] / statistics.median(seq) / 1e6
        say("| %d concurrent: aggregate MB/s, share of the same servers moved one at a time (%.1f MB/s) | %.1f MB/s (%.0f%%) | >= 90%% | %s |" % (
            a.concurrent, one, agg, 100 * agg / one, ok(agg / one >= 0.90)))
    frac = agg / mbs(med["ferry"])
    say("| %d concurrent: the same against the large transfer's %.1f MB/s (other content; see docs/performance.md) | %.1f MB/s (%.0f%%) | | |" % (
        a.concurrent, mbs(med["ferry"]), agg, frac * 100))
    lat = res["api_latency"]
    if "src raised" in lat:
        p99 = max(pct(lat[k], 99) for k in ("src raised", "dst raised"))
        say("| API p99 `GET /api/transfers` during them, client at nice -10 (src / dst) | %.1f / %.1f ms | < 50 ms | %s |" % (
            pct(lat["src raised"], 99) * 1e3, pct(lat["dst raised"], 99) * 1e3, ok(p99 < 0.050)))
    say("| the same from a client at normal priority on this machine (src / dst) | %.1f / %.1f ms | | |" % (
        pct(lat["src"], 99) * 1e3, pct(lat["dst"], 99) * 1e3))
    sm = res.get("api_server_ms")
    if sm:
        say("| the same inside the node (access log: head complete to response sent; src / dst) | %.0f / %.0f ms | | |" % (
            pct(sm["src"], 99), pct(sm["dst"], 99)))
    wl = res.get("wakeup_lateness")
    if wl:
        say("| p99 wake-up lateness of an idle sleeper at the client's priority, same window (machine floor) | %.1f ms | | |" % (
            pct(wl, 99) * 1e3))
    cp = res["concurrent_peak_kib"]
    say("| peak RSS during the %d concurrent (src / dst) | %.1f / %.1f MiB | | |" % (
        a.concurrent, mib(cp["src"]), mib(cp["dst"])))
    if res.get("backups"):
        backup_line(res["backups"])
    c99 = pct(res["cancel_latency"], 99)
    say("| cancel -> `cancelled` p99 over %d (p50) | %.0f ms (%.0f ms) | < 250 ms | %s |" % (
        len(res["cancel_latency"]), c99 * 1e3, pct(res["cancel_latency"], 50) * 1e3, ok(c99 < 0.250)))
    sc = res.get("stage_cpu", {}).get("ferry")
    if sc:
        order = ["walk", "deflate", "write", "send", "receive", "inflate", "unpack"]
        med = {k: statistics.median(r.get(k, 0.0) for r in sc) for k in order}
        total = sum(med.values()) or 1.0
        say("")
        say("CPU by pipeline stage, from the nodes' own counters (`ferry_transfer_stage_cpu_seconds_total`),"
            " median of the ferry rounds:")
        say("| node | stage | CPU s | CPU s per GB | share |")
        say("|---|---|---:|---:|---:|")
        for k in order:
            say("| %s | %s | %.2f | %.2f | %.0f%% |" % (
                "source" if k in ("walk", "deflate", "write", "send") else "destination",
                k, med[k], med[k] / gb, 100 * med[k] / total))


if __name__ == "__main__":
    if "--report-only" in sys.argv:
        # Re-prints the table from a saved --json file.
        i = sys.argv.index("--report-only")
        with open(sys.argv[i + 1]) as f:
            res = json.load(f)
        report(res, argparse.Namespace(concurrent=8))
    else:
        main()
