#!/usr/bin/env python3
"""How the locks behave in the cases issue 12 names, on the built-in simulator
with the built-in defaults (laser 399: S = +50 MHz/V, kp 0.002 V/MHz, ki 0.05
V/(MHz s), slew 5 V/s, tolerance 2 MHz, capture 500 MHz), measured through
the daemon's own interface as a client sees it:

  restart  the output jump at a restart after kill -9 at 0.5, 1, 3 and 10 s
           after a +200 MHz setpoint step (the output before the kill, read
           by laser.get, against the output the restarted daemon applies);
  ramp     the tracking error while the setpoint ramps at 5, 20 and 100
           MHz/s (history's error_mhz, reading minus the moving target, over
           the ramp less its first second), and the states seen meanwhile;
  hop      a 2 GHz mode hop of a locked laser, without and with auto_relock:
           the output over the next 10 s against the last locked output.

    WAVEMETERD=build/wavemeterd bench/bench_behaviour.py [--only restart,ramp,hop]

Prints Markdown tables for docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from wmd import Daemon, wait_for  # noqa: E402

LASER = "399"


def get(c):
    return c.result("laser.get", {"laser": LASER})


def wait_state(c, states, timeout, what):
    return wait_for(lambda: (lambda l: l if l["state"] in states else None)(get(c)), timeout,
                    what)


def built_in(state_dir, **laser_over):
    """A daemon on conf/simulator.json (the built-in configuration as a file), on a
    free port with its own state directory; laser_over changes laser 399."""
    with open(os.path.join(ROOT, "conf", "simulator.json")) as f:
        cfg = json.load(f)
    cfg["listen"] = "127.0.0.1:0"
    cfg.get("state", {}).pop("dir", None)
    cfg.pop("mqtt", None)
    cfg.pop("http", None)
    for l in cfg["lasers"]:
        if l["name"] == LASER:
            l.update(laser_over)
    return Daemon(cfg, state_dir=state_dir)


def restart(delays):
    print("\n### restart after kill -9, 399 stepped +200 MHz while locked\n")
    print("| kill after the step, s | state at the kill | output at the kill, V | "
          "output applied after the restart, V | jump, MHz |")
    print("|---:|---|---:|---:|---:|")
    for t in delays:
        sd = tempfile.mkdtemp(prefix="bench-behaviour-")
        try:
            d = built_in(sd).start()
            with d.client() as c:
                c.result("laser.lock", [LASER])
                l = wait_state(c, ("locked",), 30, "399 locked")
                s = l["gains"]["sensitivity_mhz_per_v"]
                c.result("laser.set_setpoint", [LASER, l["setpoint_thz"] + 200e-6])
                t0 = time.monotonic()
                time.sleep(max(0.0, t0 + t - time.monotonic()))  # the scenario's delay
                l = get(c)
                d.kill9()
            d2 = built_in(sd).start()
            with d2.client() as c:
                after = wait_for(lambda: (lambda x: x if x["actuator_writes"] >= 1 else None)(
                    get(c)), 10, "the restart's first write")["output_v"]
            d2.stop()
            print("| %.1f | %s | %.4f | %.4f | %.1f |" % (t, l["state"], l["output_v"], after,
                                                          abs(after - l["output_v"]) * abs(s)))
        finally:
            shutil.rmtree(sd, ignore_errors=True)


def ramp(rates):
    print("\n### tracking a setpoint ramp, 399\n")
    print("| ramp, MHz/s | ramp length, s | error mean, MHz | error sd, MHz | |error| max, MHz "
          "| states while ramping (readings) |")
    print("|---:|---:|---:|---:|---:|---|")
    for rate in rates:
        sd = tempfile.mkdtemp(prefix="bench-behaviour-")
        try:
            with built_in(sd) as d, d.client() as c:
                c.result("laser.lock", [LASER])
                l = wait_state(c, ("locked",), 30, "399 locked")
                span = min(rate * 8.0, 400.0)  # within the capture range as a plain step
                dur = span / rate
                c.result("laser.set_setpoint",
                         [LASER, l["setpoint_thz"] + span * 1e-6, None, float(rate)])
                t0 = time.monotonic()
                wait_for(lambda: get(c)["target_thz"] == get(c)["setpoint_thz"], dur + 10,
                         "the ramp's end")
                h = c.result("history", {"laser": LASER, "seconds": time.monotonic() - t0})
            samples = [x for x in h["samples"]
                       if x["time"] >= h["samples"][0]["time"] + 1.0 and
                       x["time"] <= h["samples"][0]["time"] + dur]
            errs = [x["error_mhz"] for x in samples if x["error_mhz"] is not None]
            states = {}
            for x in samples:
                states[x["state"]] = states.get(x["state"], 0) + 1
            print("| %g | %.1f | %.2f | %.2f | %.2f | %s |" % (
                rate, dur, statistics.mean(errs), statistics.pstdev(errs),
                max(abs(e) for e in errs),
                ", ".join("%s %d" % kv for kv in sorted(states.items()))))
        finally:
            shutil.rmtree(sd, ignore_errors=True)


def hop():
    print("\n### a 2 GHz mode hop of locked 399\n")
    print("| auto_relock | last locked output, V | state after 10 s | reason | "
          "output after 10 s, V | furthest output from the locked one, V |")
    print("|---|---:|---|---|---:|---:|")
    for relock in (False, True):
        sd = tempfile.mkdtemp(prefix="bench-behaviour-")
        try:
            with built_in(sd, auto_relock=relock) as d, d.client() as c:
                c.result("laser.lock", [LASER])
                wait_state(c, ("locked",), 30, "399 locked")
                locked_v = get(c)["output_v"]
                c.result("sim.mode_hop", {"laser": LASER, "jump_mhz": 2000.0})
                t_end = time.monotonic() + 10
                far = 0.0
                while time.monotonic() < t_end:  # sampling the output for 10 s
                    l = get(c)
                    far = max(far, abs(l["output_v"] - locked_v))
                    time.sleep(0.05)
                print("| %s | %.4f | %s | %s | %.4f | %.3f |" % (
                    "on" if relock else "off", locked_v, l["state"], l["reason"],
                    l["output_v"], far))
        finally:
            shutil.rmtree(sd, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="restart,ramp,hop")
    a = ap.parse_args()
    parts = a.only.split(",")
    if "restart" in parts:
        restart([0.5, 1.0, 3.0, 10.0])
    if "ramp" in parts:
        ramp([5.0, 20.0, 100.0])
    if "hop" in parts:
        hop()


if __name__ == "__main__":
    main()
