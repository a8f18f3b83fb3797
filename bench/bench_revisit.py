#!/usr/bin/env python3
"""How often each laser is read: the real wavemeterd on the fake instrument
(tests/fakes/fake_wlmdata.c, a clocked model of a WS7: back-to-back
measurements of exposure + 12 ms readout, a 3-deep result pipeline), every
laser always due (max_age_ms 1), for 1, 4 and 8 lasers with 20 ms exposures,
in both switch modes, against the instrument's floor: one measurement per
laser per pass (the sum of exposures and readouts). Then the shipped
four-laser example (conf/wavemeterd.json's exposures and settles), with
--old a binary from before the driver used read-once results.

    bench/bench_revisit.py [--bin build/wavemeterd] [--lib build/tests/libwlmData.so]
                           [--old /tmp/old/build/wavemeterd] [--seconds 6]

Prints a Markdown table for docs/BENCHMARKS.md. Measures reads over a window
after a warm-up (status "reads" per channel), so it works with old binaries
too.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

READOUT_MS = 12  # the fake's FAKE_WLM_READOUT_MS default


def call(port, method, params=None):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        req = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            req["params"] = params
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)["result"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, lib, lasers, mode, seconds, new_keys=True):
    """Mean time between reads of each laser, in ms, over the window."""
    tmp = tempfile.mkdtemp(prefix="bench-revisit-")
    port = free_port()
    wm = {"driver": "highfinesse", "library": lib}
    if new_keys and mode:
        wm["switch_mode"] = mode
    cfg = {"listen": "127.0.0.1:%d" % port, "wavemeter": wm, "lasers": []}
    freqs = []
    for i, (exp, settle) in enumerate(lasers):
        ch = i + 1
        l = {"name": "L%d" % ch, "channel": ch, "exposure_ms": exp, "settle_ms": settle,
             "actuator": {"driver": "none"}}
        if new_keys:
            l["max_age_ms"] = 1
        cfg["lasers"].append(l)
        freqs.append("%d:%.4f" % (ch, 384.0 + ch))
    path = os.path.join(tmp, "c.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, STATE_DIRECTORY=os.path.join(tmp, "state"), HOME=tmp,
               FAKE_WLM_FREQS=",".join(freqs))
    os.makedirs(env["STATE_DIRECTORY"])
    log = open(os.path.join(tmp, "log"), "w")
    p = subprocess.Popen([binary, "-c", path], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                call(port, "ping")
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError("daemon did not start: see %s" % log.name)
                time.sleep(0.05)
        time.sleep(2.0)  # warm-up: exposures set, pipelines flushed
        r0 = {c["laser"]: c["reads"] for c in call(port, "status")["channels"]}
        t0 = time.monotonic()
        time.sleep(seconds)
        r1 = {c["laser"]: c["reads"] for c in call(port, "status")["channels"]}
        t1 = time.monotonic()
    finally:
        p.terminate()
        p.wait(10)
    per = [(t1 - t0) * 1e3 / max(1, r1[k] - r0[k]) for k in r0]
    return sum(per) / len(per), max(per)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/wavemeterd")
    ap.add_argument("--lib", default="build/tests/libwlmData.so")
    ap.add_argument("--old", default=None)
    ap.add_argument("--seconds", type=float, default=6)
    a = ap.parse_args()
    lib = os.path.abspath(a.lib)

    print("| lasers | switch mode | floor (ms) | revisit mean (ms) | worst laser (ms) | / floor |")
    print("|---|---|---|---|---|---|")
    for n in (1, 4, 8):
        floor = n * (20 + READOUT_MS)
        for mode in ("manual", "cycling"):
            if n == 1 and mode == "cycling":
                continue  # one laser on channel 1: no switch to cycle
            mean, worst = run(a.bin, lib, [(20, 10)] * n, mode, a.seconds)
            print("| %d | %s | %d | %.0f | %.0f | %.2f |" % (n, mode, floor, mean, worst,
                                                              mean / floor))
            sys.stdout.flush()

    shipped = [(50, 30), (20, 30), (100, 30), (100, 30)]  # conf/wavemeterd.json
    floor = sum(e + READOUT_MS for e, _ in shipped)
    print()
    print("| shipped 4-laser example | revisit mean (ms) | worst laser (ms) | / floor (%d ms) |"
          % floor)
    print("|---|---|---|---|")
    rows = []
    if a.old:
        rows.append(("before (%s, round robin, timed polls)" % os.path.basename(a.old), a.old,
                     None, False))
    rows.append(("after, manual", a.bin, "manual", True))
    rows.append(("after, cycling", a.bin, "cycling", True))
    for label, binary, mode, new_keys in rows:
        mean, worst = run(binary, lib, shipped, mode, a.seconds, new_keys)
        print("| %s | %.0f | %.0f | %.2f |" % (label, mean, worst, mean / floor))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
