#!/usr/bin/env python3
"""bench_rpc: how fast the daemon answers over TCP, and what it costs in memory.

Starts build/wavemeterd (or $WAVEMETERD) on the built-in simulator on an
ephemeral port, as the end-to-end tests do (tests/e2e/wmd.py), and measures:

  * pipelined ping throughput on one connection (a window of requests in
    flight, answers counted by newline), in requests per second;
  * latency of `read` (all channels) with 16 concurrent clients, each sending
    its next request when the last answer came (p50, p99, max);
  * the daemon's VmRSS from /proc/PID/status: idle, and the peak under each load.

The client is Python (asyncio), so throughput numbers are a floor for the
daemon: the client is often the slower side. Results: docs/BENCHMARKS.md.

usage: bench/bench_rpc.py [--seconds S] [--clients N] [--window W] [--rounds R]
"""
import argparse
import asyncio
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
os.environ.setdefault("WAVEMETERD",
                      os.path.normpath(os.path.join(HERE, "..", "build", "wavemeterd")))

import wmd  # noqa: E402  (path set above)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def cpu_s(pid):
    """User + system CPU seconds the process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the daemon's VmRSS every 20 ms while running; keeps the peak."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.stop_ev.wait(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join()
        self.peak = max(self.peak, rss_kib(self.pid))
        return False


async def pipelined_ping(port, seconds, window):
    """One connection, up to window pings in flight; returns (answers, seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    chunk = 256
    req = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i for i in range(chunk))
    sent = answered = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    first_answer = None
    while True:
        now = time.perf_counter()
        if now < deadline:
            while sent - answered + chunk <= window:
                writer.write(req)
                sent += chunk
        elif answered >= sent:
            break
        data = await reader.read(1 << 20)
        if not data:
            raise RuntimeError("daemon closed the connection")
        if first_answer is None:
            first_answer = data.split(b"\n", 1)[0]
        answered += data.count(b"\n")
    elapsed = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    ans = json.loads(first_answer)
    if ans.get("result") != "pong":
        raise RuntimeError("unexpected answer %r" % first_answer)
    return answered, elapsed


async def read_client(port, deadline, lat):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    i = 0
    while time.perf_counter() < deadline:
        i += 1
        t = time.perf_counter()
        writer.write(b'{"jsonrpc":"2.0","id":%d,"method":"read"}\n' % i)
        line = await reader.readline()
        lat.append(time.perf_counter() - t)
        if i == 1:
            ans = json.loads(line)
            if not isinstance(ans.get("result"), list):
                raise RuntimeError("unexpected read answer %r" % line[:200])
    writer.close()
    await writer.wait_closed()


async def concurrent_read(port, seconds, clients):
    lat = []
    t0 = time.perf_counter()
    await asyncio.gather(*(read_client(port, t0 + seconds, lat) for _ in range(clients)))
    return lat, time.perf_counter() - t0


def pct(sorted_v, p):
    return sorted_v[min(len(sorted_v) - 1, int(p / 100.0 * len(sorted_v)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each load phase")
    ap.add_argument("--clients", type=int, default=16, help="concurrent read clients")
    ap.add_argument("--window", type=int, default=4096, help="pings in flight")
    ap.add_argument("--rounds", type=int, default=3,
                    help="repeat both loads; RSS after each tells a high-water mark from a leak")
    args = ap.parse_args()

    with wmd.Daemon(log_level="notice") as d:
        pid = d.proc.pid
        wmd.wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10,
                     "a reading of every channel")
        time.sleep(1.0)
        idle = rss_kib(pid)
        print("wavemeterd %s (pid %d) on 127.0.0.1:%d, built-in simulator (4 lasers)"
              % (os.path.normpath(wmd.BIN), pid, d.port))
        print("  RSS idle:                          %7d KiB" % idle)

        for rnd in range(1, args.rounds + 1):
            print(" round %d" % rnd)
            c0 = cpu_s(pid)
            with RssSampler(pid) as s:
                n, el = asyncio.run(pipelined_ping(d.port, args.seconds, args.window))
            c1 = cpu_s(pid)
            print("  ping, 1 connection, %d in flight: %.0f requests/s (%d in %.2f s); daemon CPU "
                  "%.0f%%, %.1f us/request; RSS peak %d KiB"
                  % (args.window, n / el, n, el, (c1 - c0) / el * 100, (c1 - c0) / n * 1e6,
                     s.peak))

            c0 = cpu_s(pid)
            with RssSampler(pid) as s:
                lat, el = asyncio.run(concurrent_read(d.port, args.seconds, args.clients))
            c1 = cpu_s(pid)
            lat.sort()
            print("  read, %d clients, one request each in flight: %.0f requests/s; latency p50 "
                  "%.3f ms, p99 %.3f ms, max %.3f ms (%d requests); daemon CPU %.0f%%, "
                  "%.1f us/request; RSS peak %d KiB"
                  % (args.clients, len(lat) / el, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3,
                     lat[-1] * 1e3, len(lat), (c1 - c0) / el * 100, (c1 - c0) / len(lat) * 1e6,
                     s.peak))
            time.sleep(1.0)
            print("  RSS after round %d:                %7d KiB" % (rnd, rss_kib(pid)))


if __name__ == "__main__":
    main()
