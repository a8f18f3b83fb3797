#!/usr/bin/env python3
"""bench_push: notification fan-out, and ping/read throughput against a bare epoll floor.

Two parts (docs/BENCHMARKS.md, "bench_push.py"):

push: wavemeterd on the simulator with 4 lasers at exposure_ms 5, settle_ms 5
  and max_age_ms 1 (every laser always due: about 100 readings/s, measured
  from `status` and printed), limits.max_clients 128. For 0, 1, 10 and 100
  subscribers of all readings (`subscribe {"topics":["readings"]}`), each on
  its own connection, over --push-seconds:
    * notifications delivered per second (all subscribers together) and per
      subscriber, against the readings the daemon made (status `reads`);
    * whether every notification reached every subscriber: its `seq` has no
      gaps and no notification carries `missed`;
    * daemon CPU per notification: /proc/PID/stat utime+stime over the window
      divided by notifications delivered; also net of the 0-subscriber run
      (the readings themselves cost CPU);
    * latency from reading to client: the client's CLOCK_REALTIME when recv()
      returned the notification (time.time(), taken before parsing) minus the
      notification's reading.time (the daemon's CLOCK_REALTIME when the
      simulator finished the exposure), p50/p99/max; and the push's own
      age_ms (monotonic, reading to the push being encoded).
  The subscribers run in --procs processes (epoll loops, nothing but recv and
  json.loads); their CPU is printed so you can see they kept up.

rpc: `ping` and `read` (all 4 channels) with --clients connections, each with
  --window requests in flight (pipelined: a connection sends a window of
  requests, and once half of them are answered tops it up again; --window 1
  is one request at a time; the default runs 16, then 1), from --procs load
  processes (epoll loops that count answer newlines), against
  (a) bench/floor_server (build/bench/floor_server: a bare epoll line server
  answering every line with one fixed line: the ping answer, or the daemon's
  real `read` answer line, captured at the start of the round) and
  (b) wavemeterd on the built-in simulator, default limits (so the
  connections come from 127.0.0.10, .11, ...: at most 16 per address).
  The same load generator drives both, in the same round; printed: answers/s,
  server CPU per request (/proc/PID/stat), the load processes' CPU (a server
  below 100% of a core was not saturated: the generator or the machine was
  the limit), the ratio daemon/floor in answers/s and in CPU per request
  (what one dedicated core would serve), and the daemon's status
  loop_turn_ms.max and loop_lag_ms.max.

usage: bench/bench_push.py [--binary PATH] [--floor PATH] [--rounds R]
                           [--push-seconds S] [--rpc-seconds S] [--subscribers 0,1,10,100]
                           [--clients 50] [--window 16,1] [--procs 2] [--only push|rpc]

Runs by hand, never by ctest. $WAVEMETERD sets the default binary.
"""
import argparse
import json
import multiprocessing
import os
import platform
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import wmd  # noqa: E402  (path set above)

PER_ADDRESS = 16  # the daemon's default limits.max_clients_per_address
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
READ = b'{"jsonrpc":"2.0","id":1,"method":"read"}\n'


def cpu_s(pid):
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s():
    t = os.times()
    return t.user + t.system


def pct(sorted_v, p):
    if not sorted_v:
        return float("nan")
    return sorted_v[min(len(sorted_v) - 1, int(p / 100.0 * len(sorted_v)))]


def connect_from(port, i, host="127.0.0.1"):
    """Connection i, from 127.0.0.(10 + i // 16): the daemon serves 16 per address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.%d" % (10 + i // PER_ADDRESS), 0))
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def split(n, parts):
    """Indices 0..n-1 dealt into parts lists."""
    return [list(range(k, n, parts)) for k in range(parts)]


# ---------------------------------------------------------------- push part

def subscriber_proc(port, idxs, conn):
    """Subscribe on one connection per index; count what arrives in the window."""
    socks = []
    for i in idxs:
        s = connect_from(port, i)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["readings"]}}\n')
        socks.append(s)
    bufs = {}
    for s in socks:  # the answer comes before any push
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("daemon closed a subscriber")
            buf += chunk
        line, rest = buf.split(b"\n", 1)
        ans = json.loads(line)
        if "result" not in ans:
            raise RuntimeError("subscribe refused: %r" % line)
        bufs[s.fileno()] = rest
        s.setblocking(False)
    conn.send("ready")
    t_start, t_end = conn.recv()  # CLOCK_REALTIME (time.time())

    ep = select.epoll()
    byfd = {s.fileno(): s for s in socks}
    for fd in byfd:
        ep.register(fd, select.EPOLLIN)
    last_seq = {fd: None for fd in byfd}
    n = gaps = missed = bad = 0
    per_sub = {fd: 0 for fd in byfd}
    lat = []
    ages = []
    c0 = None
    while True:
        now = time.time()
        if c0 is None and now >= t_start:
            c0 = self_cpu_s()
        if now >= t_end + 0.3:
            break
        got = []
        for fd, _ in ep.poll(0.05):
            try:
                chunk = byfd[fd].recv(1 << 20)
            except BlockingIOError:
                continue
            got.append((fd, time.time(), chunk))  # the receive time, before any parsing
        for fd, t_rx, chunk in got:
            if not chunk:
                raise RuntimeError("daemon closed a subscriber")
            data = bufs[fd] + chunk
            lines = data.split(b"\n")
            bufs[fd] = lines.pop()
            for line in lines:
                msg = json.loads(line)
                p = msg.get("params")
                if msg.get("method") != "reading" or p is None:
                    bad += 1
                    continue
                seq = p["seq"]
                prev = last_seq[fd]
                if prev is not None and seq != prev + 1:
                    gaps += 1
                last_seq[fd] = seq
                if p.get("missed"):
                    missed += p["missed"]
                if t_start <= t_rx < t_end:
                    n += 1
                    per_sub[fd] += 1
                    r = p["reading"]
                    lat.append(t_rx - r["time"])
                    ages.append(r["age_ms"])
    c1 = self_cpu_s()
    for s in socks:
        s.close()
    conn.send({"n": n, "gaps": gaps, "missed": missed, "bad": bad, "lat": lat, "ages": ages,
               "per_sub": list(per_sub.values()), "cpu": c1 - (c0 if c0 is not None else c1)})


def push_config():
    cfg = wmd.sim_config([{"max_age_ms": 1}] * 4, limits={"max_clients": 128})
    return cfg


def reads_total(d):
    return sum(c["reads"] for c in d.result("status")["channels"])


def run_push(d, nsubs, seconds, procs):
    ctx = multiprocessing.get_context("fork")
    parts = [p for p in split(nsubs, min(procs, max(1, nsubs)))] if nsubs else []
    workers = []
    for idxs in parts:
        a, b = ctx.Pipe()
        w = ctx.Process(target=subscriber_proc, args=(d.port, idxs, b), daemon=True)
        w.start()
        workers.append((w, a))
    for w, a in workers:
        if not a.poll(20) or a.recv() != "ready":
            raise RuntimeError("a subscriber process did not get ready")
    time.sleep(0.5)  # let the first pushes flow
    t_start = time.time() + 0.2
    t_end = t_start + seconds
    for w, a in workers:
        a.send((t_start, t_end))
    while time.time() < t_start:
        time.sleep(0.001)
    r0, c0 = reads_total(d), cpu_s(d.proc.pid)
    while time.time() < t_end:
        time.sleep(min(0.05, max(0.0, t_end - time.time())))
    r1, c1 = reads_total(d), cpu_s(d.proc.pid)
    res = {"n": 0, "gaps": 0, "missed": 0, "bad": 0, "lat": [], "ages": [], "per_sub": [],
           "cpu": []}
    for w, a in workers:
        if not a.poll(30):
            raise RuntimeError("a subscriber process did not report")
        r = a.recv()
        w.join(5)
        for k in ("n", "gaps", "missed", "bad"):
            res[k] += r[k]
        res["lat"] += r["lat"]
        res["ages"] += r["ages"]
        res["per_sub"] += r["per_sub"]
        res["cpu"].append(r["cpu"])
    res["readings"] = r1 - r0
    res["daemon_cpu"] = c1 - c0
    res["seconds"] = seconds
    st = d.result("status")
    res["turn_max_ms"] = st["loop_turn_ms"]["max"]
    res["lag_max_ms"] = st["loop_lag_ms"]["max"]
    return res


def push_part(args):
    print("== push: 4 simulated lasers, exposure 5 ms + settle 5 ms, max_age_ms 1; "
          "%.0f s windows, subscribers in up to %d processes" % (args.push_seconds, args.procs))
    base = {}
    for rnd in range(1, args.rounds + 1):
        with wmd.Daemon(push_config(), log_level="notice") as d:
            wmd.wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10,
                         "a reading of every channel")
            print(" round %d (wavemeterd pid %d)" % (rnd, d.proc.pid))
            for nsubs in args.subscribers:
                r = run_push(d, nsubs, args.push_seconds, args.procs)
                el = r["seconds"]
                rate = r["readings"] / el
                line = ("  %3d subscribers: readings %.1f/s" % (nsubs, rate))
                cpu_pct = r["daemon_cpu"] / el * 100
                if nsubs == 0:
                    base[rnd] = r["daemon_cpu"] / el
                    print(line + "; daemon CPU %.2f%% (the readings alone); loop_turn_ms.max %.2f"
                          % (cpu_pct, r["turn_max_ms"]))
                    continue
                lat = sorted(r["lat"])
                ages = sorted(r["ages"])
                per = r["per_sub"]
                ok = r["gaps"] == 0 and r["missed"] == 0 and r["bad"] == 0
                net = (r["daemon_cpu"] - base.get(rnd, 0.0) * el)
                print(line + "; notifications %.0f/s (%.1f-%.1f/s per subscriber, %d in all); %s"
                      % (r["n"] / el, min(per) / el, max(per) / el, r["n"],
                         "no gaps, none missed" if ok else
                         "GAPS %d, missed %d, unexpected lines %d" % (r["gaps"], r["missed"],
                                                                     r["bad"])))
                print("       daemon CPU %.2f%%, %.1f us/notification (%.1f us net of the "
                      "0-subscriber run); loop_turn_ms.max %.2f, loop_lag_ms.max %.2f"
                      % (cpu_pct, r["daemon_cpu"] / max(1, r["n"]) * 1e6,
                         net / max(1, r["n"]) * 1e6, r["turn_max_ms"], r["lag_max_ms"]))
                print("       latency reading.time -> client recv: p50 %.3f ms, p99 %.3f ms, "
                      "max %.3f ms; push age_ms p50 %.3f, p99 %.3f; subscriber CPU %s"
                      % (pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, lat[-1] * 1e3 if lat else 0,
                         pct(ages, 50), pct(ages, 99),
                         ", ".join("%.0f%%" % (c / el * 100) for c in r["cpu"])))


# ---------------------------------------------------------------- rpc part

def load_proc(port, idxs, req, window, conn):
    """Drive len(idxs) connections, window requests in flight on each; count answers."""
    top = max(1, window // 2)
    chunks = [req * k for k in range(window + 1)]
    socks = [connect_from(port, i) for i in idxs]
    conn.send("ready")
    t_start, t_end = conn.recv()  # time.monotonic()
    ep = select.epoll()
    byfd = {}
    out = {}
    first = {}
    for s in socks:
        byfd[s.fileno()] = s
        out[s.fileno()] = 0
        ep.register(s.fileno(), select.EPOLLIN)
    time.sleep(max(0.0, t_start - time.monotonic()))
    c0 = self_cpu_s()
    for s in socks:
        s.sendall(chunks[window])
        out[s.fileno()] = window
    answered = 0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        for fd, _ in ep.poll(0.05):
            data = byfd[fd].recv(1 << 20)
            if not data:
                raise RuntimeError("server closed a connection")
            if fd not in first:
                first[fd] = data.split(b"\n", 1)[0]
            k = data.count(b"\n")
            answered += k
            out[fd] -= k
            if out[fd] <= window - top:  # back to a full window
                byfd[fd].sendall(chunks[window - out[fd]])
                out[fd] = window
    c1 = self_cpu_s()
    for s in socks:
        s.close()
    conn.send({"answered": answered, "cpu": c1 - c0,
               "first": [f.decode("utf-8", "replace") for f in first.values()]})


def run_load(port, pid, req, clients, window, procs, seconds):
    ctx = multiprocessing.get_context("fork")
    workers = []
    for idxs in split(clients, procs):
        a, b = ctx.Pipe()
        w = ctx.Process(target=load_proc, args=(port, idxs, req, window, b), daemon=True)
        w.start()
        workers.append((w, a))
    for w, a in workers:
        if not a.poll(20) or a.recv() != "ready":
            raise RuntimeError("a load process did not get ready")
    t_start = time.monotonic() + 0.2
    t_end = t_start + seconds
    for w, a in workers:
        a.send((t_start, t_end))
    while time.monotonic() < t_start:
        time.sleep(0.001)
    c0 = cpu_s(pid)
    while time.monotonic() < t_end:
        time.sleep(min(0.05, max(0.0, t_end - time.monotonic())))
    c1 = cpu_s(pid)
    n = 0
    cpus = []
    firsts = []
    for w, a in workers:
        if not a.poll(30):
            raise RuntimeError("a load process did not report")
        r = a.recv()
        w.join(5)
        n += r["answered"]
        cpus.append(r["cpu"] / seconds)
        firsts += r["first"]
    return {"rate": n / seconds, "n": n, "server_cpu": (c1 - c0) / seconds,
            "us_per_req": (c1 - c0) / max(1, n) * 1e6, "load_cpu": cpus, "firsts": firsts}


def check_answers(firsts, method):
    for f in firsts:
        ans = json.loads(f)
        if method == "ping" and ans.get("result") != "pong":
            raise RuntimeError("unexpected ping answer %r" % f[:200])
        if method == "read" and not isinstance(ans.get("result"), list):
            raise RuntimeError("unexpected read answer %r" % f[:200])


class Floor:
    def __init__(self, path, reply):
        self.proc = subprocess.Popen([path, "--reply", reply], stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError("floor_server said %r" % line)
        self.port = int(line.split()[2].rstrip(",").rsplit(":", 1)[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(5)
        return False


def fmt_load(r):
    return ("%8.0f answers/s, server CPU %3.0f%%, %5.2f us/request; load CPU %s"
            % (r["rate"], r["server_cpu"] * 100, r["us_per_req"],
               "+".join("%.0f%%" % (c * 100) for c in r["load_cpu"])))


def rpc_part(args):
    print("== rpc: %d connections, %s requests in flight on each, %d load processes, %.0f s each"
          % (args.clients, " and ".join(str(w) for w in args.window), args.procs,
             args.rpc_seconds))
    for rnd in range(1, args.rounds + 1):
        print(" round %d" % rnd)
        with wmd.Daemon(log_level="notice") as d:
            wmd.wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10,
                         "a reading of every channel")
            with d.client() as c:
                c.send(READ)
                read_line = c.recv_line()
            for window in args.window:
                for method, req in (("ping", PING), ("read", READ)):
                    reply = (json.dumps({"jsonrpc": "2.0", "id": 1, "result": "pong"},
                                        separators=(",", ":")) if method == "ping" else read_line)
                    with Floor(args.floor, reply) as fl:
                        fr = run_load(fl.port, fl.proc.pid, req, args.clients, window,
                                      args.procs, args.rpc_seconds)
                    check_answers(fr["firsts"], method)
                    print("  %-4s window %3d floor      (%4d B answer): %s"
                          % (method, window, len(reply) + 1, fmt_load(fr)))
                    r = run_load(d.port, d.proc.pid, req, args.clients, window, args.procs,
                                 args.rpc_seconds)
                    check_answers(r["firsts"], method)
                    st = d.result("status")
                    print("  %-4s window %3d wavemeterd (%4d B answer): %s"
                          % (method, window, len(reply) + 1, fmt_load(r)))
                    print("       ratio to the floor (target %s): %.2f in answers/s, %.2f in CPU "
                          "per request; daemon loop_turn_ms.max %.2f (since start), "
                          "loop_lag_ms.max %.2f"
                          % (">= 0.8" if method == "ping" else ">= 0.5",
                             r["rate"] / fr["rate"], fr["us_per_req"] / r["us_per_req"],
                             st["loop_turn_ms"]["max"], st["loop_lag_ms"]["max"]))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Results and how to read them: docs/BENCHMARKS.md.")
    default_bin = os.environ.get(
        "WAVEMETERD", os.path.normpath(os.path.join(HERE, "..", "build", "wavemeterd")))
    ap.add_argument("--binary", default=default_bin, help="wavemeterd (default %(default)s)")
    ap.add_argument("--floor", default=None,
                    help="floor_server (default: bench/floor_server in the binary's build dir)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat each part (default 3)")
    ap.add_argument("--only", choices=("push", "rpc"), help="run one part")
    ap.add_argument("--push-seconds", type=float, default=20.0,
                    help="measurement window per subscriber count (default 20; CPU is "
                         "counted in 10 ms ticks)")
    ap.add_argument("--subscribers", default="0,1,10,100",
                    help="subscriber counts, comma-separated; 0 is the baseline (default "
                         "%(default)s)")
    ap.add_argument("--rpc-seconds", type=float, default=5.0,
                    help="load window per server and method (default 5)")
    ap.add_argument("--clients", type=int, default=50, help="connections (default 50)")
    ap.add_argument("--window", default="16,1",
                    help="requests in flight per connection, comma-separated for several "
                         "runs; 1: one at a time (default %(default)s)")
    ap.add_argument("--procs", type=int, default=2,
                    help="client processes, for the load and for the subscribers (default 2)")
    args = ap.parse_args()
    args.subscribers = [int(x) for x in args.subscribers.split(",") if x != ""]
    args.window = [int(x) for x in args.window.split(",") if x != ""]
    if args.floor is None:
        args.floor = os.path.join(os.path.dirname(os.path.abspath(args.binary)), "bench",
                                  "floor_server")
    wmd.BIN = args.binary
    for p in (args.binary, args.floor) if args.only != "push" else (args.binary,):
        if not os.access(p, os.X_OK):
            ap.error("%s is not an executable (build first, or see --binary/--floor)" % p)

    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    print("wavemeterd %s; %d CPUs (%s), Linux %s, Python %s; load average %s"
          % (args.binary, os.cpu_count(), model, platform.release(), platform.python_version(),
             " ".join("%.2f" % x for x in os.getloadavg())))
    if args.only in (None, "push"):
        push_part(args)
    if args.only in (None, "rpc"):
        rpc_part(args)


if __name__ == "__main__":
    main()
