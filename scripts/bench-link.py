#!/usr/bin/env python3
"""Transport benches over a shaped link (issue 17, SPEC §10).

Runs inside a private network namespace whose loopback is shaped with
`tc qdisc … tbf` (scripts/bench-link.sh creates and removes it); every
node, the fake panel and this orchestrator live in it, so every byte
between them crosses the shaped loopback. Usable on its own, as root,
inside such a namespace:

  bench-link.py --ferry target/release/ferry --fixture DIR --work DIR
                [--out DIR] [--json FILE] [--rates 1000,100]
                [--no-docker | --only link|downtime]

  (a) link: the fixture moved by the classic POST and by the segmented
      transport (`FERRY_TRANSPORT=classic|segmented` in the source node's
      environment) at 1 Gbit/s and at 100 Mbit/s; the time from the
      panel-shaped POST to `completed` against the link floor (bytes on
      the wire / rate). A raw TCP stream first shows what the shaped link
      itself carries.
  (c) resume: the segmented transfer at 100 Mbit/s with its connections
      to the destination cut once (`ss -K`: the source's socket aborted,
      a RST to the destination) when half
      of the uncut run's bytes have crossed the link; bytes re-sent (the
      source's own count, and the loopback's byte counter against the
      uncut run) and time lost against the uncut run of (a).
  (b) downtime: a Docker server (engine A for the source, engine B for the
      destination) whose process keeps rewriting ~1% of the data, moved
      at 100 Mbit/s; downtime = the destination container's `start` event
      minus the source container's `die` event, both from the engines'
      own `docker events`. Classic (`FERRY_TRANSPORT=classic`,
      `FERRY_PRECOPY=off`) against pre-copy (`FERRY_TRANSPORT=segmented`,
      `FERRY_PRECOPY=auto`); the pre-copy row says "not built" unless the
      source showed a `precopy` phase (record or log).
Peak RSS (VmHWM, reset before each run) of both nodes for every run.
Standard library only; the node helpers come from scripts/bench-e2e.py.
"""

import argparse
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_e2e", os.path.join(HERE, "bench-e2e.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
say, listing, verify, mint = e2e.say, e2e.listing, e2e.verify, e2e.mint
TOKEN, TERMINAL = e2e.TOKEN, e2e.TERMINAL

# tbf parameters per rate (Mbit/s): a bucket big enough that the qdisc
# itself does not cap below the rate (lo's packets are up to 64 KiB; the
# raw TCP check prints what the link carries), and a 50 ms queue.
SHAPES = {1000: "rate 1gbit burst 512kb latency 50ms",
          100: "rate 100mbit burst 256kb latency 50ms"}
IMAGE = "ferry-test/busybox:latest"
ENGINE_A = "/var/run/docker.sock"
ENGINE_B = os.environ.get("FERRY_DOCKER_SOCKET_B", "/run/ferry-docker-b.sock")
UUIDS = {
    "classic": "1e000000-0000-4000-8000-000000000001",
    "segmented": "1e000000-0000-4000-8000-000000000002",
    # Containers are named after these on the two engines every run shares:
    # the pid keeps two benches running at once apart.
    "docker-classic": "1e000000-0000-4000-8d01-%012x" % os.getpid(),
    "docker-precopy": "1e000000-0000-4000-8d02-%012x" % os.getpid(),
}

# The server's process in (b): the first start (no `.bench-started` yet)
# rewrites, every ~0.5 s, one 16 KiB block in each region file, at one of
# six hot places per file (55 x 96 KiB = ~1% of the scale-1 fixture), adds
# a 4 KiB player file and deletes the one from three rounds before, and
# appends to a log. A start that finds `.bench-started` (the copy on the
# destination) only idles, so the tree it arrived as can be checked.
# (No double braces: the image's entrypoint turns them into variables.)
WRITER = (
    "trap 'exit 0' INT TERM; "
    "if [ -f .bench-started ]; then while :; do sleep 1 & wait $!; done; fi; "
    "touch .bench-started; mkdir -p world/playerdata; echo ready > ready; n=0; "
    "while :; do n=$((n+1)); "
    "for f in world*/region/*.mca; do "
    "dd if=/dev/urandom of=$f bs=16384 count=1 seek=$(( (RANDOM % 6) * 8 )) conv=notrunc 2>/dev/null; "
    "done; "
    "dd if=/dev/urandom of=world/playerdata/p$n.dat bs=4096 count=1 2>/dev/null; "
    "rm -f world/playerdata/p$((n-3)).dat; echo \"round $n\" >> logs/bench-writer.log; "
    "sleep 0.5 & wait $!; done"
)


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def mib(kib):
    return kib / 1024


def lo_bytes():
    """Bytes the namespace's loopback has carried (both directions: on lo
    every packet is sent once)."""
    with open("/sys/class/net/lo/statistics/tx_bytes") as f:
        return int(f.read())


def shape(mbit):
    subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf"] + SHAPES[mbit].split(), check=True)


def raw_tcp_mbit(seconds):
    """What one TCP stream carries over the shaped loopback right now."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got = [0]

    def rx():
        conn, _ = srv.accept()
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            got[0] += len(b)
        conn.close()

    t = threading.Thread(target=rx)
    t.start()
    c = socket.create_connection(srv.getsockname())
    buf = b"\0" * (1 << 20)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        c.sendall(buf)
    c.close()
    t.join()
    srv.close()
    return got[0] * 8 / (time.monotonic() - t0) / 1e6


# ---------------------------------------------------------------- nodes


class Node(e2e.Node):
    """A release node from a generated config; `docker` = an engine
    socket (with `remote` = the fake panel), `env` = extra environment."""

    def __init__(self, name, work, binary, data=None, env=None, docker=None, remote=None,
                 token_id=None, transfers=None):
        self.name, self.binary, self.env = name, binary, env or {}
        self.root = os.path.join(work, name)
        self.data = data or os.path.join(self.root, "volumes")
        self.config = os.path.join(self.root, "config.yml")
        self.log = os.path.join(self.root, "node.log")
        self.backups = os.path.join(self.root, "backups")
        self.proc = self.addr = None
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        extra = "".join("    %s: %s\n" % kv for kv in (transfers or {}).items())
        text = ("token_id: %s\ntoken: %s\napi:\n  host: 127.0.0.1\n  port: 0\n"
                "system:\n  root_directory: %s\n  data: %s\n  backup_directory: %s\n"
                "  log_directory: %s\n  environment: %s\n  transfers:\n    stop_timeout: 10\n%s"
                % (token_id or name, TOKEN, os.path.join(self.root, "state"), self.data,
                   self.backups, os.path.join(self.root, "log"), "docker" if docker else "none", extra))
        if remote:
            # A node known to a panel has its own uuid.
            text += "uuid: 7c8e0e2a-1d4b-4e55-9b1a-%012x\nremote: %s\n" % (zlib.crc32(name.encode()), remote)
        if docker:
            text += "docker:\n  socket: %s\n  network:\n    name: none\n" % docker
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        env.update(self.env)
        super().start(env)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


class LinkSampler(threading.Thread):
    """Samples the loopback's byte counter every 10 ms: when the bulk of a
    transfer crossed the link, apart from what comes before the first
    byte (walk, session set-up) and after the last (install, report)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.samples.append((time.monotonic(), lo_bytes()))
            self.halt.wait(0.01)

    def stop(self):
        self.halt.set()
        self.join()
        self.samples.append((time.monotonic(), lo_bytes()))

    def streaming(self, t0, lo_total):
        """(seconds from the POST to 1% of the bytes, seconds from 1% to
        99%, seconds from 99% to the end of the samples)."""
        b0 = self.samples[0][1]
        t1 = next((t for t, b in self.samples if b - b0 >= 0.01 * lo_total), None)
        t99 = next((t for t, b in self.samples if b - b0 >= 0.99 * lo_total), None)
        if t1 is None or t99 is None or t99 <= t1:
            return None
        return t1 - t0, t99 - t1, self.samples[-1][0] - t99


def transfer(src, dst, uuid, start=False, watch=None):
    """A panel-shaped transfer. Returns a dict: seconds from the POST to
    the end, the record, phases seen, bytes on lo, CPU seconds of both
    nodes, the streaming split, `posted` (wall clock of the POST).
    `watch(rec)` runs on every poll (about 20 ms)."""
    token = mint(src.binary, dst, uuid)
    body = {"url": dst.url("/api/transfers"), "token": "Bearer " + token,
            "server": {"uuid": uuid, "start_on_completion": start}, "server_id": 1}
    phases = set()
    sampler = LinkSampler()
    cpu0 = (src.cpu(), dst.cpu())
    sampler.start()
    posted = time.time()
    t0 = time.monotonic()
    status, rec = src.req("POST", "/api/servers/%s/transfer" % uuid, body, timeout=60)
    if status != 202:
        sampler.stop()
        raise RuntimeError("%s: POST transfer answered %s: %s" % (src.name, status, rec))
    tid = rec["id"]
    deadline = t0 + 900
    while time.monotonic() < deadline:
        status, rec = src.req("GET", "/api/servers/%s/transfer" % uuid, timeout=30)
        if status == 200 and rec["id"] == tid:
            phase = (rec.get("progress") or {}).get("phase")
            if phase:
                phases.add(phase)
            if watch:
                watch(rec)
            if rec["status"] in TERMINAL:
                wall = time.monotonic() - t0
                sampler.stop()
                if rec["status"] != "completed":
                    raise RuntimeError("%s transfer of %s ended %s: %s\n%s\n%s" % (
                        src.name, uuid, rec["status"], rec.get("error"), src.tail(), dst.tail()))
                lo = sampler.samples[-1][1] - sampler.samples[0][1]
                return {"seconds": wall, "rec": rec, "phases": phases, "lo_bytes": lo, "posted": posted,
                        "t0": t0, "samples": sampler.samples,
                        "cpu": (src.cpu() - cpu0[0], dst.cpu() - cpu0[1]),
                        "streaming": sampler.streaming(t0, lo)}
        time.sleep(0.02)
    sampler.stop()
    raise RuntimeError("transfer of %s did not end in 900 s" % uuid)


def describe(run, mbit):
    """`streaming 1%-99% in X s (N% of the link), a s before, b s after;
    CPU src/dst` for a log line."""
    out = []
    st = run.get("streaming")
    if st:
        before, during, after = st
        out.append("1%%-99%% of the bytes in %.2f s (%.0f%% of the link), %.2f s before, %.2f s after" % (
            during, 100 * 0.98 * run["lo_bytes"] * 8 / (mbit * 1e6) / during, before, after))
    out.append("CPU src %.2f s / dst %.2f s" % tuple(run["cpu"]))
    packing, putting, finish = run.get("sender") or (None, None, None)
    if packing is not None:
        out.append("the source's log: %.2f s waiting for packed bytes, %.2f s in segment requests" % (packing, putting))
    if finish is not None:
        out.append("the finish %.2f s" % finish)
    return "; ".join(out)


RESENT = re.compile(r"(\d+) bytes in (\d+) segment requests over session \w+, (\d+) bytes sent twice")
SEGMENT = re.compile(r"speaks the segmented transport \(segments of (\d+) bytes\)")


def resent_from_log(node, since=0):
    """The source's own count of bytes sent twice in its last segmented
    transfer logged after character `since`, None if there is none."""
    found = RESENT.findall(node.log_text()[since:])
    return int(found[-1][2]) if found else None


# The segmented source's own account of its time (when it logs one):
# `…bytes sent twice; P s waiting for packed bytes, Q s in segment
# requests` and `the finish took F s`.
SEG_TIMES = re.compile(r"bytes sent twice; ([0-9.]+) s waiting for packed bytes, ([0-9.]+) s in segment requests")
FINISH_TIME = re.compile(r"the finish took ([0-9.]+) s")


def sender_times(node, since=0):
    """(waiting for packed bytes, in segment requests, the finish) in
    seconds from the source's log after `since`; None where not logged."""
    text = node.log_text()[since:]
    seg, fin = SEG_TIMES.findall(text), FINISH_TIME.findall(text)
    return (float(seg[-1][0]) if seg else None, float(seg[-1][1]) if seg else None,
            float(fin[-1]) if fin else None)


def segment_from_log(node):
    found = SEGMENT.findall(node.log_text())
    return int(found[-1]) if found else None


# A source that runs the pre-copy phase says so: `"phase":"precopy"` in
# the record's progress during pass 1, and in its log (docs/transport.md,
# "Pre-copy", "Progress"): `pre-copy: final pass sent N changed entries,
# D bytes of data (tree T bytes); downtime so far S s`.
PRECOPY_LOG = re.compile(r"pre-?copy: final pass sent (\d+) changed (?:entries|files)[^,]*, (\d+) bytes of data", re.I)


def peaks(*nodes):
    return {n.name: n.status_kib("VmHWM") for n in nodes}


def reset_peaks(*nodes):
    for n in nodes:
        n.reset_peak()


# ---------------------------------------------------------------- (a) + (c)


def link_benches(a, res):
    work, out = a.work, a.out
    dst = Node("dst", work, a.ferry, data=os.path.join(out, "dst-volumes"))
    srcs = {k: Node("src-" + k, work, a.ferry, env={"FERRY_TRANSPORT": k}) for k in ("classic", "segmented")}
    nodes = [dst] + list(srcs.values())
    try:
        for k, n in srcs.items():
            subprocess.run(["cp", "-al", a.fixture, os.path.join(n.data, UUIDS[k])], check=True)
        expected = a.expected
        subprocess.run(["tar", "-cf", "/dev/null", "-C", a.fixture, "."], check=True)
        for n in nodes:
            n.start()
        say("  nodes: " + ", ".join("%s pid %d on %s" % (n.name, n.proc.pid, n.addr) for n in nodes))
        runs = res.setdefault("link", [])
        for mbit in a.rates:
            shape(mbit)
            say("== (a) link %d Mbit/s: tc qdisc … tbf %s" % (mbit, SHAPES[mbit]))
            for kind in ("classic", "segmented"):
                src, uuid = srcs[kind], UUIDS[kind]
                e2e.sync()
                reset_peaks(src, dst)
                since = len(src.log_text())
                t = transfer(src, dst, uuid)
                wall, rec, lo = t["seconds"], t["rec"], t["lo_bytes"]
                wire = rec["progress"]["wire_bytes"]
                floor = wire * 8 / (mbit * 1e6)
                run = {"mbit": mbit, "kind": kind, "seconds": wall, "wire_bytes": wire, "lo_bytes": lo,
                       "floor": floor, "peak_kib": peaks(src, dst), "resent": resent_from_log(src),
                       "cpu": t["cpu"], "streaming": t["streaming"], "sender": sender_times(src, since)}
                runs.append(run)
                say("  %-9s %6.2f s, %.1f MB on the wire, floor %.2f s: %.0f%% of the link; lo carried %.1f MB;"
                    " peak RSS src %.1f / dst %.1f MiB" % (
                        kind, wall, wire / 1e6, floor, 100 * floor / wall, lo / 1e6,
                        mib(run["peak_kib"][src.name]), mib(run["peak_kib"][dst.name])))
                say("            " + describe(run, mbit))
                if mbit == a.rates[-1]:
                    verify(expected, os.path.join(dst.data, uuid), "%s at %d Mbit/s on dst" % (kind, mbit))
                e2e.delete_on(dst, uuid)

        # (c) the segmented transfer again at the last (slowest) rate, its
        # connections to the destination cut once at half of the uncut
        # run's bytes on the link.
        mbit = a.rates[-1]
        uncut = [r for r in runs if r["mbit"] == mbit and r["kind"] == "segmented"][-1]
        src, uuid = srcs["segmented"], UUIDS["segmented"]
        port = dst.addr.rsplit(":", 1)[1]
        say("== (c) resume: segmented at %d Mbit/s, connections to the destination cut once at %.0f MB"
            " (half of the uncut run's %.0f MB on lo)" % (mbit, uncut["lo_bytes"] / 2e6, uncut["lo_bytes"] / 1e6))
        e2e.sync()
        reset_peaks(src, dst)
        b0 = lo_bytes()
        log_start = len(src.log_text())
        cut = {}

        def watch(rec):
            if not cut and lo_bytes() - b0 >= uncut["lo_bytes"] / 2:
                cut["at"] = time.monotonic()
                cut["lo"] = lo_bytes() - b0
                # Both ends of every TCP connection to the destination's
                # port: the source's side is aborted, the destination
                # gets a RST, as when a proxy or a NAT drops them.
                killed = subprocess.run(["ss", "-K", "-t", "dst", "127.0.0.1", "dport", "=", ":" + port],
                                        capture_output=True, text=True)
                cut["sockets"] = max(0, len(killed.stdout.strip().splitlines()) - 1)

        t = transfer(src, dst, uuid, watch=watch)
        wall, rec, lo = t["seconds"], t["rec"], t["lo_bytes"]
        if not cut:
            raise RuntimeError("the resume run ended before the cut point")
        run = {"mbit": mbit, "seconds": wall, "wire_bytes": rec["progress"]["wire_bytes"], "lo_bytes": lo,
               "cut_at_lo": cut["lo"], "sockets": cut["sockets"], "resent": resent_from_log(src, log_start),
               "segment": segment_from_log(src), "peak_kib": peaks(src, dst), "uncut_seconds": uncut["seconds"],
               "uncut_lo": uncut["lo_bytes"], "cpu": t["cpu"], "streaming": t["streaming"]}
        res["resume"] = run
        say("  cut %d connection(s) at %.1f MB; %.2f s (uncut %.2f s: %+.2f s); the source's count of bytes"
            " sent twice: %s; lo carried %.1f MB (uncut %.1f MB: %+.1f MB); peak RSS src %.1f / dst %.1f MiB" % (
                cut["sockets"], cut["lo"] / 1e6, wall, uncut["seconds"], wall - uncut["seconds"],
                "?" if run["resent"] is None else "%.1f MB" % (run["resent"] / 1e6),
                lo / 1e6, uncut["lo_bytes"] / 1e6, (lo - uncut["lo_bytes"]) / 1e6,
                mib(run["peak_kib"][src.name]), mib(run["peak_kib"][dst.name])))
        if cut["sockets"] == 0:
            raise RuntimeError("the cut found no connection to the destination\n%s" % src.tail())
        verify(expected, os.path.join(dst.data, uuid), "the resumed transfer on dst")
        e2e.delete_on(dst, uuid)
    finally:
        for n in nodes:
            n.stop()


# ---------------------------------------------------------------- (b)


class Panel:
    """The panel endpoints a Docker node calls: the server list (each
    server listed to one node, by token id), one server's configuration,
    and the transfer reports (answered 204, recorded)."""

    def __init__(self):
        self.servers = {}  # uuid -> (owner token id, configuration)
        self.reports = []
        panel = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, body=None):
                raw = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def caller(self):
                auth = self.headers.get("Authorization", "")
                return auth[len("Bearer "):].split(".", 1)[0] if auth.startswith("Bearer ") else None

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/api/remote/servers":
                    mine = [dict(uuid=u, **cfg) for u, (owner, cfg) in panel.servers.items() if owner == self.caller()]
                    return self.answer(200, {"data": mine, "meta": {"current_page": 1, "last_page": 1,
                                                                     "total": len(mine), "per_page": 50}})
                m = re.match(r"/api/remote/servers/([0-9a-f-]{36})$", path)
                if m and m.group(1) in panel.servers:
                    return self.answer(200, panel.servers[m.group(1)][1])
                self.answer(404, {"errors": [{"code": "NotFoundHttpException", "status": "404",
                                              "detail": "The requested resource could not be found on the server."}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                m = re.match(r"/api/remote/servers/([0-9a-f-]{36})/transfer/(success|failure)$", self.path)
                if m:
                    panel.reports.append((m.group(1), m.group(2), time.monotonic()))
                    return self.answer(204)
                self.answer(404, {"errors": [{"code": "NotFoundHttpException", "status": "404", "detail": "no"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def add(self, uuid, owner):
        self.servers[uuid] = (owner, {
            "settings": {
                "uuid": uuid, "meta": {"name": "bench downtime"}, "invocation": WRITER,
                "container": {"image": IMAGE},
                "build": {"memory_limit": 256, "swap": 0, "cpu_limit": 100, "disk_space": 0},
                "environment": {},
                "allocations": {"default": {"ip": "127.0.0.1", "port": 25565}, "mappings": {}},
            },
            "process_configuration": {"stop": {"type": "signal", "value": "SIGINT"}},
        })

    def close(self):
        self.httpd.shutdown()


class Events:
    """`docker events` of one engine, from now on: (action, container
    name, time in ns) by the engine's own clock."""

    def __init__(self, socket_path):
        self.lines = []
        self.proc = subprocess.Popen(
            ["docker", "-H", "unix://" + socket_path, "events", "--filter", "type=container",
             "--format", "{{json .}}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=e2e._pdeathsig)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # the subscription is live before anything happens

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            name = ((ev.get("Actor") or {}).get("Attributes") or {}).get("name")
            self.lines.append((ev.get("Action") or ev.get("status"), name, int(ev.get("timeNano") or 0)))

    def first(self, action, name):
        for act, n, t in self.lines:
            if act == action and n == name:
                return t
        return None

    def last(self, action, name):
        hits = [t for act, n, t in self.lines if act == action and n == name]
        return hits[-1] if hits else None

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def engine_ready(sock):
    out = subprocess.run(["docker", "-H", "unix://" + sock, "image", "inspect", IMAGE],
                         capture_output=True, text=True)
    return out.returncode == 0


def remove_containers(names):
    for sock in (ENGINE_A, ENGINE_B):
        subprocess.run(["docker", "-H", "unix://" + sock, "rm", "-f", "-v"] + names,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(what, timeout, done):
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.05)


def one_downtime(k, src, dst, uuid, mbit):
    """One Docker transfer of (b): the server started, its writer given a
    few seconds, then moved with `start_on_completion`; returns the run."""
    status, body = src.req("POST", "/api/servers/%s/power" % uuid, {"action": "start"})
    if status != 202:
        raise RuntimeError("power start answered %s: %s\n%s" % (status, body, src.tail()))
    ready = os.path.join(src.data, uuid, "ready")
    wait_for("the server's writer on %s" % src.name, 60, lambda: os.path.exists(ready))
    time.sleep(3)  # a few rounds of writes before the transfer
    e2e.sync()
    reset_peaks(src, dst)
    ev_a, ev_b = Events(ENGINE_A), Events(ENGINE_B)
    try:
        t = transfer(src, dst, uuid, start=True)
        wall, rec, phases = t["seconds"], t["rec"], t["phases"]
        wait_for("the container to start on the destination", 60,
                 lambda: ev_b.first("start", uuid) is not None)
    finally:
        ev_a.close()
        ev_b.close()
    die, started = ev_a.last("die", uuid), ev_b.first("start", uuid)
    if die is None:
        raise RuntimeError("engine A reported no `die` of %s: %s" % (uuid, ev_a.lines))
    # What the downtime had to carry: the loopback's bytes from the
    # source's `die` (engine clock -> this process's monotonic clock
    # through the POST's two timestamps) to the end of the transfer, and
    # when 99.9% of the transfer's bytes had crossed.
    samples = t["samples"]
    die_mono = t["t0"] + (die / 1e9 - t["posted"])
    base, end_bytes = samples[0][1], samples[-1][1]
    at_die = next((b for tm, b in samples if tm >= die_mono), end_bytes)
    last_byte = next((tm for tm, b in samples if b - base >= 0.999 * (end_bytes - base)), samples[-1][0])
    final = PRECOPY_LOG.findall(src.log_text())
    precopy_seen = "precopy" in phases or bool(final)
    run = {"seconds": wall, "downtime": (started - die) / 1e9, "wire_bytes": rec["progress"]["wire_bytes"],
           "phases": sorted(phases), "precopy_seen": precopy_seen, "peak_kib": peaks(src, dst),
           "mbit": mbit, "stopped_after": die / 1e9 - t["posted"], "cpu": t["cpu"],
           "final_pass": [int(x) for x in final[-1]] if final else None,
           "bytes_after_stop": end_bytes - at_die, "stop_to_last_byte": max(0.0, last_byte - die_mono)}
    say("  %-8s transfer %.2f s; the source's container died %.2f s after the POST; source `die` ->"
        " destination `start` %.2f s; phases seen %s; peak RSS src %.1f / dst %.1f MiB" % (
            k, wall, run["stopped_after"], run["downtime"], ",".join(run["phases"]) or "-",
            mib(run["peak_kib"][src.name]), mib(run["peak_kib"][dst.name])))
    say("           after the stop: %.1f MB crossed the link, the last of them %.2f s after the `die`" % (
        run["bytes_after_stop"] / 1e6, run["stop_to_last_byte"]))
    # The destination's copy idles (it found `.bench-started`), so
    # it must equal the stopped source's tree.
    expected, _ = listing(os.path.join(src.data, uuid))
    verify(expected, os.path.join(dst.data, uuid), "%s: the destination against the stopped source" % k)
    e2e.delete_on(dst, uuid)
    # The panel would delete it on the source now; gone already is fine.
    status, body = src.req("DELETE", "/api/servers/%s" % uuid)
    if status not in (204, 404):
        raise RuntimeError("%s: DELETE %s answered %s: %s" % (src.name, uuid, status, body))
    return run


def downtime_bench(a, res):
    mbit = 100 if 100 in a.rates else a.rates[-1]
    for sock in (ENGINE_A, ENGINE_B):
        if not engine_ready(sock):
            why = "no Docker engine with %s at %s (scripts/docker-up.sh [--second b])" % (IMAGE, sock)
            say("== (b) downtime: skipped: " + why)
            res["downtime"] = {"skipped": why}
            return
    shape(mbit)
    work, out = a.work, a.out
    panel = Panel()
    kinds = {"classic": {"FERRY_TRANSPORT": "classic", "FERRY_PRECOPY": "off"},
             "precopy": {"FERRY_TRANSPORT": "segmented", "FERRY_PRECOPY": "auto"}}
    dst = Node("dst-docker", work, a.ferry, data=os.path.join(out, "dst-docker-volumes"),
               docker=ENGINE_B, remote=panel.url)
    srcs = {k: Node("src-docker-" + k, work, a.ferry, env=env, docker=ENGINE_A, remote=panel.url,
                    transfers={"precopy": env["FERRY_PRECOPY"]})
            for k, env in kinds.items()}
    nodes = [dst] + list(srcs.values())
    names = [UUIDS["docker-" + k] for k in kinds]
    runs = res.setdefault("downtime", {})
    say("== (b) downtime at %d Mbit/s: a Docker server rewriting ~1%% of its data, classic against pre-copy" % mbit)
    try:
        remove_containers(names)
        dst.start()  # first, so the panel lists it nothing
        for k, n in srcs.items():
            uuid = UUIDS["docker-" + k]
            # A real copy: the server's process rewrites files in place.
            subprocess.run(["cp", "-a", a.fixture, os.path.join(n.data, uuid)], check=True)
            panel.add(uuid, n.name)
            n.start()
        say("  nodes: " + ", ".join("%s pid %d on %s" % (n.name, n.proc.pid, n.addr) for n in nodes))
        for k, src in srcs.items():
            # One failed run does not lose the other's numbers.
            try:
                runs[k] = one_downtime(k, src, dst, UUIDS["docker-" + k], mbit)
            except Exception as e:  # reported in the table, and the bench fails
                runs[k] = {"error": str(e).splitlines()[0][:300] if str(e) else repr(e)}
                say("  %s FAILED: %s" % (k, e))
    finally:
        for n in nodes:
            n.stop()
        remove_containers(names)
        panel.close()


# ---------------------------------------------------------------- report


def report(res):
    say("")
    say("== transport over a shaped link: one run, %s, load %s at the start and %s at the end; %.0f MB of content" % (
        time.strftime("%Y-%m-%d %H:%M %Z"), res.get("load_start", "?"), load(), res.get("content_bytes", 0) / 1e6))
    say("| measure | value | target | |")
    say("|---|---:|---:|---|")
    for mbit, got in res.get("raw_tcp", {}).items():
        say("| the shaped link itself: one raw TCP stream at %s Mbit/s (tbf %s) | %.1f Mbit/s | | |" % (
            mbit, SHAPES[int(mbit)], got))
    worst = {}
    for r in res.get("link", []):
        frac = r["floor"] / r["seconds"]
        say("| link %d Mbit/s, %s: %.1f MB on the wire, POST to `completed` | %.2f s, floor %.2f s: %.0f%% of the link"
            " (peak RSS src %.1f / dst %.1f MiB) | >= 95%% | %s |" % (
                r["mbit"], "classic POST" if r["kind"] == "classic" else "segmented transport",
                r["wire_bytes"] / 1e6, r["seconds"], r["floor"], 100 * frac,
                *[mib(v) for v in r["peak_kib"].values()], "met" if frac >= 0.95 else "MISSED"))
        say("| the same, where the time went | %s | | |" % describe(r, r["mbit"]))
        for k, v in r["peak_kib"].items():
            worst[k.split("-")[0]] = max(worst.get(k.split("-")[0], 0), v)
    rs = res.get("resume")
    if rs:
        seg = rs.get("segment")
        ok = "" if rs["resent"] is None or not seg else ("met" if rs["resent"] <= seg else "MISSED")
        say("| resume, segmented at %d Mbit/s cut once at %.0f MB: re-sent (the source's count; lo bytes against"
            " the uncut run) | %s; %+.1f MB | <= one segment (%s) | %s |" % (
                rs["mbit"], rs["cut_at_lo"] / 1e6,
                "?" if rs["resent"] is None else "%.1f MB" % (rs["resent"] / 1e6),
                (rs["lo_bytes"] - rs["uncut_lo"]) / 1e6,
                "?" if not seg else "%.1f MB" % (seg / 1e6), ok))
        say("| resume: time lost against the uncut run (%.2f s) | %+.2f s (%.2f s; %s; peak RSS src %.1f / dst %.1f MiB)"
            " | | |" % (rs["uncut_seconds"], rs["seconds"] - rs["uncut_seconds"], rs["seconds"],
                        "CPU src %.2f s / dst %.2f s" % tuple(rs["cpu"]), *[mib(v) for v in rs["peak_kib"].values()]))
        for k, v in rs["peak_kib"].items():
            worst[k.split("-")[0]] = max(worst.get(k.split("-")[0], 0), v)
    dt = res.get("downtime") or {}
    if dt.get("skipped"):
        say("| downtime (Docker events) | skipped: %s | | |" % dt["skipped"])
    elif dt:
        for k in ("classic", "precopy"):
            if (dt.get(k) or {}).get("error"):
                say("| downtime, %s | FAILED: %s | | |" % (k, dt[k]["error"].replace("|", "/")))
        c = dt.get("classic") if "downtime" in (dt.get("classic") or {}) else None
        p = dt.get("precopy") if "downtime" in (dt.get("precopy") or {}) else None
        if c:
            say("| downtime at %d Mbit/s, classic transfer (source `die` -> destination `start`) | %.2f s"
                " (transfer %.2f s, stopped %.2f s after the POST; peak RSS src %.1f / dst %.1f MiB) | | |" % (
                    c["mbit"], c["downtime"], c["seconds"], c["stopped_after"],
                    *[mib(v) for v in c["peak_kib"].values()]))
        if p and c:
            if p["precopy_seen"]:
                frac = p["downtime"] / c["downtime"]
                say("| downtime, pre-copy (phases %s) | %.2f s = %.0f%% of classic (transfer %.2f s, stopped %.2f s"
                    " after the POST; peak RSS src %.1f / dst %.1f MiB) | <= 10%% | %s |" % (
                        ",".join(p["phases"]) or "seen in the log", p["downtime"], 100 * frac, p["seconds"],
                        p["stopped_after"],
                        *[mib(v) for v in p["peak_kib"].values()], "met" if frac <= 0.10 else "MISSED"))
                if "bytes_after_stop" in p:
                    say("| pre-copy: what the downtime carried | %.1f MB over the link after the `die` (%.2f s at the"
                        " rate), the last byte %.2f s after it | | |" % (
                            p["bytes_after_stop"] / 1e6, p["bytes_after_stop"] * 8 / (p["mbit"] * 1e6),
                            p["stop_to_last_byte"]))
                if p.get("final_pass"):
                    say("| pre-copy's final pass (the source's log) | %d changed entries, %.1f MB of data | | |" % (
                        p["final_pass"][0], p["final_pass"][1] / 1e6))
            else:
                say("| downtime, pre-copy | not built (no `precopy` phase from the source; that run's downtime"
                    " was a classic one's: %.2f s) | <= 10%% | |" % p["downtime"])
        for r in (c, p):
            for k, v in (r or {}).get("peak_kib", {}).items():
                worst[k.split("-")[0]] = max(worst.get(k.split("-")[0], 0), v)
    for e in res.get("errors", []):
        say("| FAILED | %s | | |" % e.replace("|", "/"))
    if worst:
        top = max(worst.values())
        say("| peak RSS over these runs (sources / destinations) | %.1f / %.1f MiB | <= 48 MiB | %s |" % (
            mib(worst.get("src", 0)), mib(worst.get("dst", 0)), "met" if top <= 48 * 1024 else "MISSED"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--work", required=True, help="scratch directory (removed by the caller)")
    ap.add_argument("--out", help="where the destinations write (default: under --work)")
    ap.add_argument("--rates", default="1000,100", help="Mbit/s, comma-separated, slowest last")
    ap.add_argument("--json")
    ap.add_argument("--no-docker", action="store_true", help="skip (b)")
    ap.add_argument("--only", choices=["link", "downtime"], help="run (a)+(c) or (b) alone")
    a = ap.parse_args()
    a.rates = [int(x) for x in a.rates.split(",")]
    for r in a.rates:
        if r not in SHAPES:
            ap.error("--rates: only %s" % ",".join(map(str, SHAPES)))
    a.work = os.path.abspath(a.work)
    a.out = os.path.abspath(a.out) if a.out else os.path.join(a.work, "out")
    a.fixture = os.path.abspath(a.fixture)
    os.makedirs(a.out, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    res = {"raw_tcp": {}, "load_start": load()}
    a.expected, res["content_bytes"] = listing(a.fixture)
    for mbit in a.rates:
        shape(mbit)
        res["raw_tcp"][mbit] = raw_tcp_mbit(1.5)
        say("== the shaped link: tbf %s carries %.1f Mbit/s in one raw TCP stream" % (SHAPES[mbit], res["raw_tcp"][mbit]))
    parts = []
    if a.only != "downtime":
        parts.append(link_benches)
    if a.only != "link" and not a.no_docker:
        parts.append(downtime_bench)
    for part in parts:
        # A part that fails does not lose the other's numbers: its error
        # goes into the table and the bench exits non-zero after it.
        try:
            part(a, res)
        except Exception as e:
            traceback.print_exc()
            res.setdefault("errors", []).append("%s: %s" % (part.__name__, str(e).splitlines()[0][:300] if str(e) else repr(e)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    report(res)
    failed = res.get("errors") or any("error" in r for r in (res.get("downtime") or {}).values()
                                      if isinstance(r, dict))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
