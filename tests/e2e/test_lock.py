#!/usr/bin/env python3
"""End to end: laser locks on the simulator. Locking, holding, losing and
relocking, the state file across kill -9, and the laser.* and history
methods, spoken to over TCP as a user would.

One laser on one channel reads every ~5 ms (5 ms exposures, no switching),
so with ki = 1 V/(MHz s) and 50 MHz/V each reading removes about a quarter of
the error (gI ~ 0.25, docs/CONTROL.md): locks take a fraction of a second.
"""
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

from wmd import Client, Daemon, fail, run_tests, sim_config, wait_for

C_NM_THZ = 299792.458
NOMINAL_THZ = 384.0          # sim_config's first laser
SANITIZER_WORDS = ("AddressSanitizer", "runtime error", "LeakSanitizer")


def fast(over=None):
    """One laser, I-only loop with gI ~ 0.25 per reading, small noise, no drift."""
    l = {"kp_v_per_mhz": 0.0, "ki_v_per_mhz_s": 1.0,
         "sim": {"noise_mhz": 0.2, "drift_mhz_per_sqrt_s": 0.0}}
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(l.get(k), dict):
            l[k] = dict(l[k], **v)
        else:
            l[k] = v
    return l


def get(c, name="L1"):
    return c.result("laser.get", {"laser": name})


def wait_laser(c, pred, timeout, what, name="L1"):
    """Poll laser.get until pred(laser) holds; returns that answer."""
    def ok():
        l = get(c, name)
        return l if pred(l) else None
    return wait_for(ok, timeout, what)


def wait_state(c, state, name="L1", timeout=10):
    return wait_laser(c, lambda l: l["state"] == state, timeout,
                      "laser %s to be %s" % (name, state), name)


def over_readings(c, n, check, name="L1", timeout=10, what="readings"):
    """Poll laser.get until n more readings of the laser have been taken,
    calling check(laser) on every answer; returns the last answer."""
    first = []
    last = []

    def done():
        l = get(c, name)
        check(l)
        s = l["reading"]["seq"]
        if not first:
            first.append(s)
        last[:] = [l]
        return s >= first[0] + n
    wait_for(done, timeout, "%d more %s" % (n, what))
    return last[0]


def expect_error(c, method, params, code, what=None):
    ans = c.call(method, params)
    if "error" not in ans or ans["error"]["code"] != code:
        fail("%s %s: expected error %d, got %r" % (method, what or params, code, ans))
    return ans["error"]


def state_file(state_dir):
    with open(os.path.join(state_dir, "state.json")) as f:
        return json.load(f)


def discard(d):
    """Forget a daemon that was killed (or is to be): no exit code to check."""
    if not os.path.isdir(d.tmp):
        return  # already discarded
    if d.proc and d.proc.poll() is None:
        d.kill9()
    for bad in SANITIZER_WORDS:
        if bad in d.log():
            fail("sanitizer report in daemon log:\n" + d.log())
    shutil.rmtree(d.tmp, ignore_errors=True)


def finish(d):
    """Stop a daemon we did not start as a context manager; it must exit cleanly."""
    rc = d.stop()
    if rc != 0:
        fail("wavemeterd exited %s:\n%s" % (rc, d.log()))
    discard(d)


# ---- locking ----

def test_converges_from_200_mhz():
    # The shipped gains (kp 0.002, ki 0.05), a laser free-running 200 MHz
    # above its setpoint: the lock pulls it in and reports locked, and the
    # actuator ends where the physics says (-200 MHz / 50 MHz/V = -4 V).
    cfg = sim_config([{"sim": {"offset_mhz": 200.0, "noise_mhz": 0.2}}])
    with Daemon(cfg) as d, d.client() as c:
        l = wait_laser(c, lambda l: l["reading"]["status"] == "ok", 5, "a first reading")
        if l["state"] != "off" or l["lock"] or abs(l["error_mhz"] - 200.0) > 3:
            fail("before locking: %r" % l)
        l = c.result("laser.lock", {"laser": "L1"})
        if not l["lock"] or l["state"] != "acquiring":
            fail("laser.lock answered %r" % l)
        l = wait_state(c, "locked", timeout=15)
        tol = l["limits"]["tolerance_mhz"]
        # "locked" came from locked_after readings within tolerance; one noisy
        # reading since may stray past it (the hysteresis keeps the state),
        # but not by much.
        if l["error_mhz"] is None or abs(l["error_mhz"]) > 2 * tol:
            fail("locked with error %r (tolerance %g)" % (l["error_mhz"], tol))
        # It keeps converging: the integrator removes the last MHz. (Within
        # 0.02 V of -4 V is within 1 MHz of the setpoint; 0.05 V would let a
        # laser still 2.5 MHz out pass, beyond the tolerance checked below.)
        l = wait_laser(c, lambda l: abs(l["output_v"] + 4.0) < 0.02, 10,
                       "the output to settle at -4 V")
        if l["state"] != "locked" or abs(l["error_mhz"]) > 2 * tol:
            fail("after settling: %r" % l)
        if abs(l["reading"]["frequency_thz"] - NOMINAL_THZ) * 1e6 > tol:
            fail("reading %.9f THz is not at the setpoint" % l["reading"]["frequency_thz"])
        h = c.result("history", {"laser": "L1"})
        states = {s["state"] for s in h["samples"]}
        if states - {"off", "acquiring", "locked"}:
            fail("states while converging: %r" % states)


def test_locked_noise_floor():
    # Locked, the error's spread is the wavemeter noise plus what the loop
    # feeds back of it (~7 % more at gI 0.25); and the mean is ~0 though the
    # laser started 20 MHz off. (0.4 MHz keeps single readings beyond the
    # 2 MHz tolerance, which rightly drop "locked", below 1e-5 per reading.)
    noise = 0.4
    cfg = sim_config([fast({"sim": {"offset_mhz": 20.0, "noise_mhz": noise,
                                    "drift_mhz_per_sqrt_s": 0.2}})])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        # Let the lock-in transient die out (0.75^50 of 20 MHz is ~0), then
        # take a window of at least 150 readings.
        over_readings(c, 50, lambda l: None)
        t0 = time.monotonic()
        over_readings(c, 160, lambda l: None)
        h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})
        st = h["error_mhz"]
        if st["n"] < 100:
            fail("only %d readings in the window: %r" % (st["n"], st))
        bad = [s for s in h["samples"] if s["state"] != "locked"]
        if bad:
            fail("not locked during the window: %r" % bad[:3])
        if st["std"] > 1.5 * noise:
            fail("locked error std %.3f MHz > 1.5 x noise %.3f MHz" % (st["std"], noise))
        if abs(st["mean"]) > 0.25:
            fail("locked error mean %.3f MHz: the offset was not removed" % st["mean"])


def test_no_signal_holds_then_recovers():
    cfg = sim_config([fast()])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.fault", {"laser": "L1", "fault": "no_signal"})
        held = wait_state(c, "holding")
        if not held["lock"] or "no_signal" not in held["reason"]:
            fail("holding: %r" % held)
        t_hold = time.monotonic()

        def still_held(l):
            if l["state"] != "holding" or l["output_v"] != held["output_v"]:
                fail("during no_signal: state %s output %r V, held %r V" %
                     (l["state"], l["output_v"], held["output_v"]))
            if l["actuator_writes"] != held["actuator_writes"]:
                fail("actuator written while holding: %d -> %d writes" %
                     (held["actuator_writes"], l["actuator_writes"]))
        over_readings(c, 40, still_held, what="no_signal readings")
        h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t_hold})
        for s in h["samples"]:
            if s["status"] != "no_signal" or s["state"] != "holding" or \
                    s["output_v"] != held["output_v"] or s["frequency_thz"] is not None:
                fail("history sample during the fault: %r" % s)
        if len(h["samples"]) < 30:
            fail("history has %d samples of the fault" % len(h["samples"]))
        c.result("sim.fault", {"laser": "L1", "fault": "none"})
        l = wait_state(c, "locked", timeout=5)
        if abs(l["error_mhz"]) > l["limits"]["tolerance_mhz"]:
            fail("after the fault: %r" % l)


HOP_REASON = re.compile(r"mode hop suspected: error jumped (-?\d+) MHz in one reading")


def outputs_since(c, t0):
    """The outputs history recorded since t0 (time.monotonic())."""
    h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})
    return [s["output_v"] for s in h["samples"]]


def test_mode_hop_lost():
    # Issue 12: past the 500 MHz capture range the loop stops chasing at the first
    # reading, "lost" says it looks like a mode hop, and the output is parked where
    # the laser was locked: it never wanders off after the hop.
    cfg = sim_config([fast()])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        locked = wait_state(c, "locked")
        t0 = time.monotonic()
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        lost = wait_laser(c, lambda l: l["state"] == "lost" and
                          abs(l["output_v"] - locked["output_v"]) < 0.05, 5,
                          "lost, with the output parked near %.4f V" % locked["output_v"])
        m = HOP_REASON.search(lost["reason"])
        if not lost["lock"] or not m or abs(int(m.group(1)) - 2000) > 5:
            fail("lost: %r" % lost["reason"])
        far = max(abs(v - locked["output_v"]) for v in outputs_since(c, t0))
        if far > 0.05:
            fail("the output went %.3f V from the locked %.4f V after the hop"
                 % (far, locked["output_v"]))

        def frozen(l):
            if l["state"] != "lost" or l["output_v"] != lost["output_v"] or \
                    l["actuator_writes"] != lost["actuator_writes"]:
                fail("output moved while lost: %r (was %r V, %d writes)" %
                     (l, lost["output_v"], lost["actuator_writes"]))
        over_readings(c, 60, frozen, what="readings while lost")
        # Without auto_relock, undoing the hop does not relock by itself.
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -2000})
        over_readings(c, 60, frozen, what="readings back in range, no auto_relock")


def test_lost_hold_leaves_the_output():
    # lost_action "hold": the freeze's output stays; nothing is written at "lost".
    cfg = sim_config([fast({"lost_action": "hold"})])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        lost = wait_state(c, "lost", timeout=5)
        if "output held at" not in lost["reason"]:
            fail("lost with hold: %r" % lost["reason"])

        def held(l):
            if l["output_v"] != lost["output_v"] or \
                    l["actuator_writes"] != lost["actuator_writes"]:
                fail("hold wrote: %r (was %r)" % (l, lost))
        over_readings(c, 30, held, what="readings while lost (hold)")


def test_auto_relock_after_hop_back():
    # auto_relock engages once the error is back inside the capture range, never
    # from outside it: while the hop lasts nothing is tried, when it heals the lock
    # comes back from the parked output.
    cfg = sim_config([fast({"auto_relock": True, "relock_delay_s": 0.2, "relock_attempts": 5})])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        locked = wait_state(c, "locked")
        t0 = time.monotonic()
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        wait_state(c, "lost", timeout=5)

        def not_chasing(l):
            if l["state"] != "lost" or l["relocks"] != 0:
                fail("a relock from outside the capture range: %r" % l)
        over_readings(c, 60, not_chasing, what="readings while the hop lasts")
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -2000})
        l = wait_state(c, "locked", timeout=10)
        if not l["lock"] or l["relocks"] != 0:
            fail("relocked: %r (relocks count attempts since the last lock)" % l)
        if abs(l["output_v"] - locked["output_v"]) > 0.05:
            fail("relocked at %r V, was locked at %r V" % (l["output_v"], locked["output_v"]))
        far = max(abs(v - locked["output_v"]) for v in outputs_since(c, t0))
        if far > 0.05:
            fail("the output went %.3f V from the locked one during the episode" % far)
        seen = [s["state"] for s in
                c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})["samples"]]
        path = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
        if "lost" not in path or "acquiring" not in path[path.index("lost"):] or \
                path[-1] != "locked":
            fail("state path %r: want lost, a relock (acquiring), then locked" % path)
        if "relock attempt 1 of 5" not in d.log():
            fail("relock attempt not logged:\n" + d.log())


def test_auto_relock_gives_up():
    # Attempts count only when they start (inside the capture range) and end "lost"
    # again; after relock_attempts of them the laser stays lost even when the error
    # comes back. The hop back lands 400 MHz off (inside the 500 MHz capture range,
    # 8 V away at 5 V/s), so an attempt is still on its way when the hop returns.
    attempts = 2
    cfg = sim_config([fast({"auto_relock": True, "relock_delay_s": 0.1,
                            "relock_attempts": attempts})])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        wait_state(c, "lost", timeout=5)
        for n in range(1, attempts + 1):
            c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -1600})
            wait_laser(c, lambda l: l["relocks"] == n and l["state"] != "lost", 5,
                       "relock attempt %d" % n)
            c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 1600})
            wait_state(c, "lost", timeout=5)
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -1600})
        over_readings(c, 5, lambda l: None, what="readings for the last park to land")
        last = get(c)

        def given_up(l):
            if l["state"] != "lost" or l["relocks"] != attempts or \
                    l["actuator_writes"] != last["actuator_writes"]:
                fail("after %d attempts: %r (was %r)" % (attempts, l, last))
        over_readings(c, 60, given_up, what="readings back in range after the last attempt")
        if d.log().count("relock attempt") != attempts:
            fail("expected %d relock attempts in the log:\n%s" % (attempts, d.log()))


def test_lock_relocks_a_lost_laser():
    # Without auto_relock a lost laser waits for the user, and laser.lock is
    # how the user says "try again from here": a new acquisition, not a
    # success answer that leaves the laser lost.
    cfg = sim_config([fast()])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        wait_state(c, "lost", timeout=5)
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -2000})
        l = c.result("laser.lock", ["L1"])
        if not l["lock"] or l["state"] != "acquiring":
            fail("laser.lock on a lost laser answered %s: %s" % (l["state"], l["reason"]))
        wait_state(c, "locked", timeout=5)


# ---- the state file ----

def test_kill9_keeps_acknowledged_changes():
    state_dir = tempfile.mkdtemp(prefix="wmd-e2e-state-")
    # No periodic saves: only acknowledged changes write the file.
    cfg = sim_config([fast()], state={"save_interval_s": 3600})
    gains = {"kp_v_per_mhz": 0.0005, "ki_v_per_mhz_s": 0.9, "kd_v_s_per_mhz": 0.00001}
    try:
        d = Daemon(cfg, state_dir=state_dir).start()
        with d.client() as c:
            c.result("laser.set_gains", {"laser": "L1", "kp": 0.0005, "ki": 0.9, "kd": 0.00001})
            c.result("laser.lock", ["L1"])
            wait_state(c, "locked")
            c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": 384.0003})
            d.kill9()
        discard(d)

        d = Daemon(cfg, state_dir=state_dir).start()
        with d.client() as c:
            l = get(c)
            if l["setpoint_thz"] != 384.0003 or not l["lock"]:
                fail("after kill -9: setpoint %r lock %r" % (l["setpoint_thz"], l["lock"]))
            for k, v in gains.items():
                if l["gains"][k] != v:
                    fail("after kill -9: gain %s %r, set %r" % (k, l["gains"][k], v))
            l = wait_state(c, "locked")
            if abs(l["reading"]["frequency_thz"] - 384.0003) * 1e6 > l["limits"]["tolerance_mhz"]:
                fail("locked at %r, setpoint 384.0003" % l["reading"]["frequency_thz"])
            if c.result("laser.unlock", ["L1"])["lock"]:
                fail("unlock answered lock true")
            d.kill9()
        discard(d)

        d = Daemon(cfg, state_dir=state_dir).start()
        with d.client() as c:
            l = get(c)
            if l["lock"] or l["state"] != "off" or l["setpoint_thz"] != 384.0003:
                fail("after unlock and kill -9: %r" % l)
        finish(d)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_restart_policies():
    # A laser free-running 100 MHz above nominal, locked 50 MHz above nominal
    # (output -1 V), killed; the same state file is then started under each
    # policy.
    base = fast({"sim": {"offset_mhz": 100.0}, "output_initial_v": 0.25})
    cfg = sim_config([base], state={"save_interval_s": 3600})
    setpoint = NOMINAL_THZ + 50e-6
    root = tempfile.mkdtemp(prefix="wmd-e2e-restart-")
    first = os.path.join(root, "first")
    os.makedirs(first)
    try:
        d = Daemon(cfg, state_dir=first).start()
        with d.client() as c:
            c.result("laser.set_setpoint", ["L1", setpoint, None, 77.0])
            c.result("laser.set_gains", {"laser": "L1", "kp": 0.001})
            c.result("laser.lock", ["L1"])
            wait_state(c, "locked")
            wait_for(lambda: abs(get(c)["output_v"] + 1.0) < 0.02, 5, "the output near -1 V")
            # Any acknowledged write saves the output of that moment too.
            c.result("laser.set_gains", {"laser": "L1", "kp": 0.001})
            d.kill9()
        discard(d)
        saved = state_file(first)["lasers"]["L1"]
        if not saved["lock"] or abs(saved["output_v"] + 1.0) > 0.05:
            fail("saved state %r" % saved)

        for policy in ("resume", "release", "off"):
            sd = os.path.join(root, policy)
            shutil.copytree(first, sd)
            pcfg = sim_config([dict(base, restart=policy)], state={"save_interval_s": 3600})
            with Daemon(pcfg, state_dir=sd) as d, d.client() as c:
                l = get(c)
                # Acknowledged changes come back under every policy.
                if l["setpoint_thz"] != setpoint or l["gains"]["kp_v_per_mhz"] != 0.001 or \
                        l["gains"]["ki_v_per_mhz_s"] != 1.0 or l["ramp_mhz_per_s"] != 77.0:
                    fail("%s: setpoint/gains not restored: %r" % (policy, l))
                if policy == "resume":
                    if not l["lock"]:
                        fail("resume: came back unlocked: %r" % l)
                    l = wait_state(c, "locked")
                    if abs(l["reading"]["frequency_thz"] - setpoint) * 1e6 > 2:
                        fail("resume: locked at %r" % l["reading"])
                elif policy == "release":
                    # The wire carries 15 significant digits, the state file 17.
                    if l["lock"] or l["state"] != "off" or \
                            abs(l["output_v"] - saved["output_v"]) > 1e-12:
                        fail("release: %r, saved output %r" % (l, saved["output_v"]))
                    # The saved output is written back once, so the laser sits
                    # where it was locked, not 50 MHz above as at 0 V.
                    def near(x):
                        r = x["reading"]
                        return r["status"] == "ok" and \
                            abs(r["frequency_thz"] - setpoint) * 1e6 < 3

                    wait_for(lambda: near(get(c)), 5, "the laser back where it was held")

                    def held(x):
                        if x["state"] != "off" or abs(x["output_v"] - saved["output_v"]) > 1e-12 or \
                                x["actuator_writes"] != 1 or not near(x):
                            fail("release: not held: %r" % x)
                    over_readings(c, 20, held)
                else:
                    # Nothing written: where the actuator is, the daemon does not
                    # know, and says so (null), in laser.get and in the lock push.
                    if l["lock"] or l["state"] != "off" or l["output_v"] is not None or \
                            l["actuator_writes"] != 0:
                        fail("off: %r" % l)
                    # Locking from a number the actuator does not have would jump the
                    # laser: refused until an output is set.
                    e = expect_error(c, "laser.lock", ["L1"], -32006)
                    if "laser.set_output" not in e["message"]:
                        fail("lock with the output unknown: %r" % e)
                    c.result("laser.set_output", {"laser": "L1", "output_v": saved["output_v"]})
                    c.result("laser.lock", ["L1"])
                    wait_state(c, "locked")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_kill9_after_step_resumes_the_applied_output():
    # Issue 12: the saved output follows the laser. Locked, stepped 200 MHz, settled;
    # kill -9 two seconds later (the periodic save is an hour away): the restart
    # resumes from the output last applied, not from the one before the step.
    cfg = sim_config([fast({"tolerance_mhz": 2.0})], state={"save_interval_s": 3600})
    root = tempfile.mkdtemp(prefix="wmd-e2e-fresh-")
    try:
        d = Daemon(cfg, state_dir=root).start()
        with d.client() as c:
            c.result("laser.lock", ["L1"])
            l = wait_state(c, "locked")
            s = l["gains"]["sensitivity_mhz_per_v"]
            c.result("laser.set_setpoint", ["L1", l["setpoint_thz"] + 200e-6])
            wait_laser(c, lambda x: x["state"] == "locked" and
                       abs(x["output_v"] - l["output_v"]) * abs(s) > 150, 20,
                       "locked 200 MHz up")
            # The scenario itself, not a wait for an event: the kill comes two
            # seconds after the lock reported "locked" again.
            time.sleep(2.0)
            before = get(c)["output_v"]
            d.kill9()
        discard(d)
        d = Daemon(cfg, state_dir=root).start()
        with d.client() as c:
            after = get(c)["output_v"]
            jump_mhz = abs(after - before) * abs(s)
            if jump_mhz > 2.0:
                fail("restart jumped %.3f MHz: output %.5f V before kill -9, %.5f V after"
                     % (jump_mhz, before, after))
        finish(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_holding_error_is_null():
    # Issue 12: while holding there is no current reading, so no current error; the
    # age of the last good one is shown instead.
    with Daemon(sim_config([fast()])) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.fault", {"laser": "L1", "fault": "no_signal"})
        l = wait_state(c, "holding")
        if l["error_mhz"] is not None or not isinstance(l["error_age_s"], float):
            fail("holding: error %r, age %r" % (l["error_mhz"], l["error_age_s"]))
        age = l["error_age_s"]
        l = wait_laser(c, lambda x: x["error_age_s"] > age + 0.2, 5, "the error's age to grow")
        c.result("sim.fault", {"laser": "L1", "fault": "none"})
        l = wait_laser(c, lambda x: x["error_mhz"] is not None, 5, "an error again")
        if l["error_age_s"] > 1.0:
            fail("error age after recovery: %r" % l)


class Writer(threading.Thread):
    """A client firing set_setpoint and set_gains as fast as answers come back.
    acked: the last value of each that was answered; inflight: the one request
    sent and not (yet) answered."""

    def __init__(self, port, rng):
        super().__init__(daemon=True)
        self.port = port
        self.rng = rng
        self.mu = threading.Lock()
        self.acked = {}
        self.inflight = None
        self.acks = 0
        self.error = None

    def run(self):
        try:
            c = Client(self.port)
        except OSError as e:
            self.error = e
            return
        try:
            i = 0
            while True:
                if i % 2 == 0:
                    key = "setpoint"
                    val = round(NOMINAL_THZ + self.rng.uniform(-100, 100) * 1e-6, 9)
                    req = ("laser.set_setpoint", {"laser": "L1", "frequency_thz": val})
                else:
                    key = "gains"
                    val = (round(self.rng.uniform(0, 0.004), 6), round(self.rng.uniform(0.5, 1.5), 6))
                    req = ("laser.set_gains", {"laser": "L1", "kp": val[0], "ki": val[1]})
                with self.mu:
                    self.inflight = (key, val)
                ans = c.call(*req)
                if "error" in ans:
                    self.error = ans
                    return
                with self.mu:
                    self.acked[key] = val
                    self.inflight = None
                    self.acks += 1
                i += 1
        except (OSError, AssertionError, ValueError):
            return  # the daemon was killed under us
        finally:
            c.close()


def test_kill9_during_write_burst():
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    state_dir = tempfile.mkdtemp(prefix="wmd-e2e-burst-")
    # Periodic saves every 0.1 s as well, so kills also land in those. The
    # burst is as fast as the writer can go: no write rate limit here.
    cfg = sim_config([fast()], state={"save_interval_s": 0.1},
                     limits={"write_rate_per_s": 100000, "write_burst": 1000000})
    d = Daemon(cfg, state_dir=state_dir).start()
    try:
        d.result("laser.lock", ["L1"])
        for cycle in range(20):
            where = "seed %d, cycle %d" % (seed, cycle)
            w = Writer(d.port, random.Random(rng.random()))
            w.start()
            n = rng.randint(1, 30)
            wait_for(lambda: w.acks >= n or w.error, 10, "%d answered writes (%s)" % (n, where))
            if w.error:
                fail("%s: writer failed: %r" % (where, w.error))
            # Not a wait for anything: moves the kill to a random point of the
            # write in flight (parse, apply, fsync, rename, answer).
            time.sleep(rng.uniform(0, 0.004))
            d.kill9()
            w.join(10)
            if w.is_alive():
                fail("%s: writer still running after the kill" % where)
            discard(d)
            with w.mu:
                acked, inflight = dict(w.acked), w.inflight
            try:
                saved = state_file(state_dir)["lasers"]["L1"]
            except ValueError as e:
                fail("%s: state file not JSON after kill -9: %s" % (where, e))
            if glob.glob(os.path.join(state_dir, "state.json.corrupt-*")):
                fail("%s: a state file was set aside as corrupt" % where)

            d = Daemon(cfg, state_dir=state_dir).start()
            l = get(d)
            if "state: loaded" not in d.log():
                fail("%s: state not loaded:\n%s" % (where, d.log()))
            # What was answered is there; the one request in flight may or may
            # not have made it; nothing else may show.
            for key, have_file, have in (
                    ("setpoint", saved["setpoint_thz"], l["setpoint_thz"]),
                    ("gains", (saved["kp_v_per_mhz"], saved["ki_v_per_mhz_s"]),
                     (l["gains"]["kp_v_per_mhz"], l["gains"]["ki_v_per_mhz_s"]))):
                if key not in acked:
                    continue
                ok = [acked[key]]
                if inflight and inflight[0] == key:
                    ok.append(inflight[1])
                if have_file not in ok or have not in ok:
                    fail("%s: %s in file %r, reported %r; acknowledged %r, in flight %r" %
                         (where, key, have_file, have, acked[key], inflight))
            if not l["lock"]:
                fail("%s: came back unlocked" % where)
        finish(d)
    finally:
        discard(d)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_corrupt_state_file():
    cfg = sim_config([fast({"setpoint_thz": 384.0002, "min_thz": 383.999, "max_thz": 384.001,
                            "sim": {"nominal_thz": 384.0}, "ki_v_per_mhz_s": 0.8,
                            "lock": True})])
    cases = [
        ("truncated", b'{\n "lasers": {\n  "L1": {\n   "setpoint_thz": 384.00099,\n   "lock": fa'),
        ("not an object", b'[384.00099]\n'),
        ("binary", bytes(range(256))),
        ("empty", b""),
    ]
    for label, text in cases:
        state_dir = tempfile.mkdtemp(prefix="wmd-e2e-corrupt-")
        path = os.path.join(state_dir, "state.json")
        with open(path, "wb") as f:
            f.write(text)
        try:
            with Daemon(cfg, state_dir=state_dir) as d, d.client() as c:
                aside = glob.glob(path + ".corrupt-*")
                if len(aside) != 1:
                    fail("%s: set-aside files %r" % (label, os.listdir(state_dir)))
                with open(aside[0], "rb") as f:
                    if f.read() != text:
                        fail("%s: the set-aside file is not the original" % label)
                log = d.log()
                line = [x for x in log.splitlines() if path in x and aside[0] in x]
                if not line or not line[0].startswith("error"):
                    fail("%s: no error naming %s and %s:\n%s" % (label, path, aside[0], log))
                l = get(c)
                if l["setpoint_thz"] != 384.0002 or l["gains"]["ki_v_per_mhz_s"] != 0.8 or \
                        not l["lock"]:
                    fail("%s: not the config's values: %r" % (label, l))
                # A good file replaces the bad one.
                wait_for(lambda: os.path.exists(path), 5, "a new state file")
                if state_file(state_dir)["lasers"]["L1"]["setpoint_thz"] != 384.0002:
                    fail("%s: new state file %r" % (label, state_file(state_dir)))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


# ---- methods ----

def test_method_errors():
    cfg = sim_config([fast({"ki_v_per_mhz_s": 0.8}),
                      {"name": "mon", "actuator": {"driver": "none"}}])
    with Daemon(cfg) as d, d.client() as c:
        l = get(c)
        gains = l["gains"]
        # Setpoint outside [min_thz, max_thz]: the range in data.
        for f in (384.0011, 383.9989, 1000.0):
            e = expect_error(c, "laser.set_setpoint", {"laser": "L1", "frequency_thz": f}, -32602)
            data = e.get("data") or {}
            if data.get("min_thz") != l["limits"]["min_thz"] or \
                    data.get("max_thz") != l["limits"]["max_thz"]:
                fail("range error data %r, limits %r" % (data, l["limits"]))
        for p in ({"laser": "L1"}, {"laser": "L1", "frequency_thz": 384.0, "wavelength_nm": 780.0},
                  {"laser": "L1", "frequency_thz": "384"},
                  {"laser": "L1", "frequency_thz": 384.0, "ramp_mhz_per_s": -1}):
            expect_error(c, "laser.set_setpoint", p, -32602)
        if get(c)["setpoint_thz"] != NOMINAL_THZ:
            fail("a refused set_setpoint changed the setpoint: %r" % get(c))
        # Vacuum wavelength, converted with c.
        want = 384.0004
        l = c.result("laser.set_setpoint", {"laser": "L1", "wavelength_nm": C_NM_THZ / want})
        if abs(l["setpoint_thz"] - want) > 1e-9:
            fail("wavelength_nm %r gave %r THz, want %r" % (C_NM_THZ / want, l["setpoint_thz"], want))
        expect_error(c, "laser.set_setpoint", {"laser": "L1", "wavelength_nm": C_NM_THZ / 384.002},
                     -32602)
        # Positional params, in the documented order.
        if c.result("laser.get", ["L1"])["name"] != "L1":
            fail("positional laser.get")
        if c.result("laser.set_setpoint", ["L1", 384.0001])["setpoint_thz"] != 384.0001:
            fail("positional set_setpoint")
        g = c.result("laser.set_gains", ["L1", 0.0002, 0.7, 0.0])["gains"]
        if (g["kp_v_per_mhz"], g["ki_v_per_mhz_s"], g["kd_v_s_per_mhz"]) != (0.0002, 0.7, 0.0):
            fail("positional set_gains: %r" % g)
        gains = g
        # Gains: numbers >= 0 only; 1e400 (inf to some parsers) is never taken.
        for p in ({"laser": "L1", "kp": "0.1"}, {"laser": "L1", "ki": -0.1},
                  {"laser": "L1", "kd": -1e-9}, {"laser": "L1", "kp": True}):
            expect_error(c, "laser.set_gains", p, -32602)
        # Above the config's bound (a value a client sets must load again).
        e = expect_error(c, "laser.set_gains", {"laser": "L1", "kp": 2000}, -32602)
        if (e.get("data") or {}).get("max") != 1000:
            fail("gain range not in data: %r" % e)
        expect_error(c, "laser.set_setpoint",
                     {"laser": "L1", "frequency_thz": 384.0001, "ramp_mhz_per_s": 2e6}, -32602)
        # null skips a param (so positional calls can leave one out).
        if c.result("laser.set_gains", ["L1", None, None, None])["gains"] != gains:
            fail("null gains changed the gains")
        l = c.result("laser.set_setpoint", ["L1", None, C_NM_THZ / 384.0002, 0])
        if abs(l["setpoint_thz"] - 384.0002) > 1e-9:
            fail("positional wavelength after a null frequency: %r" % l["setpoint_thz"])
        c.result("laser.set_setpoint", ["L1", 384.0001])
        c.send('{"jsonrpc":"2.0","id":77,"method":"laser.set_gains",'
               '"params":{"laser":"L1","kp":1e400}}\n')
        ans = c.recv_json()
        if "result" in ans or ans["error"]["code"] not in (-32602, -32700, -32600):
            fail("kp 1e400: %r" % ans)
        if get(c)["gains"] != gains:
            fail("refused gains changed the gains: %r, was %r" % (get(c)["gains"], gains))
        # Output: only unlocked, only within range.
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        expect_error(c, "laser.set_output", {"laser": "L1", "output_v": 1.0}, -32010)
        c.result("laser.unlock", ["L1"])
        for v in (10.5, -11, 1e6):
            e = expect_error(c, "laser.set_output", {"laser": "L1", "output_v": v}, -32602)
            if (e.get("data") or {}).get("output_max_v") != 10.0:
                fail("output range error data %r" % e)
        expect_error(c, "laser.set_output", {"laser": "L1"}, -32602)
        before = get(c)
        l = c.result("laser.set_output", {"laser": "L1", "output_v": before["output_v"] + 1.5})
        # Answers carry 15 significant digits: equal to within that.
        if abs(l["output_v"] - (before["output_v"] + 1.5)) > 1e-12 or l["lock"]:
            fail("set_output answered %r" % l)
        # 1.5 V at 50 MHz/V: the laser moves 75 MHz.
        f0 = before["reading"]["frequency_thz"]
        wait_for(lambda: abs((get(c)["reading"]["frequency_thz"] - f0) * 1e6 - 75) < 2, 5,
                 "the laser to move 75 MHz")
        # A monitor-only laser cannot be locked or driven.
        expect_error(c, "laser.lock", {"laser": "mon"}, -32011)
        expect_error(c, "laser.set_output", {"laser": "mon", "output_v": 0.0}, -32011)
        if get(c, "mon")["lock"]:
            fail("mon locked")
        # Unknown lasers, missing names.
        for m, p in (("laser.get", {"laser": "nope"}), ("laser.lock", {"laser": "nope"}),
                     ("laser.unlock", ["nope"]), ("laser.set_gains", {"laser": "nope", "kp": 0}),
                     ("laser.set_setpoint", {"laser": "nope", "frequency_thz": 384.0}),
                     ("laser.set_output", {"laser": "nope", "output_v": 0}),
                     ("history", {"laser": "nope"}), ("laser.get", {}),
                     ("laser.set_setpoint", {"laser": "L1", "frequency_thz": 384.0, "bogus": 1})):
            e = expect_error(c, m, p, -32602)
            if "nope" in json.dumps(p) and "nope" not in e["message"]:
                fail("%s %r: message does not name the laser: %r" % (m, p, e))
        if "audit" not in d.log():
            fail("writes not audited")


def test_setpoint_ramp_keeps_the_lock():
    cfg = sim_config([fast()])
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        old, new, rate = NOMINAL_THZ, NOMINAL_THZ + 50e-6, 50.0
        t0 = time.monotonic()
        l = c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": new,
                                            "ramp_mhz_per_s": rate})
        if l["setpoint_thz"] != new or l["ramp_mhz_per_s"] != rate:
            fail("set_setpoint answered %r" % l)
        targets = []

        def arrived():
            l = get(c)
            if l["state"] in ("lost", "railed", "fault", "off") or not l["lock"]:
                fail("lock broke during the ramp: %r" % l)
            if targets and l["target_thz"] < targets[-1]:
                fail("target went back: %r after %r" % (l["target_thz"], targets[-1]))
            targets.append(l["target_thz"])
            return l if l["target_thz"] == new else None
        l = wait_for(arrived, 5, "the target to reach the new setpoint")
        took = time.monotonic() - t0
        if not any(old < t < new for t in targets):
            fail("target never between %r and %r: %r" % (old, new, targets))
        # 50 MHz at 50 MHz/s cannot arrive in much under 1 s.
        if took < 0.9:
            fail("ramp of 50 MHz at %g MHz/s arrived after %.2f s" % (rate, took))
        seen = {s["state"] for s in
                c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})["samples"]}
        # While the target moves the lock says so: never "acquiring" (issue 12).
        if seen - {"locked", "ramping"}:
            fail("states during the ramp: %r" % seen)
        l = wait_state(c, "locked")
        if abs(l["reading"]["frequency_thz"] - new) * 1e6 > l["limits"]["tolerance_mhz"]:
            fail("after the ramp the laser is at %r" % l["reading"])


def ramp_config(**over):
    """One laser read every 50 ms like the simulator's defaults (20 ms exposure, 30 ms
    settle), the default gains, S 50 MHz/V, noise 0.5 MHz, a little drift."""
    l = {"exposure_ms": 20, "settle_ms": 30,
         "sim": {"noise_mhz": 0.5, "drift_mhz_per_sqrt_s": 0.5, "sensitivity_mhz_per_v": 50.0}}
    l.update(over)
    return sim_config([l])


def test_ramp_followed_with_feed_forward():
    # Issue 12: the setpoint's rate is fed forward through S, so a 100 MHz/s ramp is
    # followed within the tolerance (it trailed by rate/(ki|S|) = 40 MHz before), and
    # the state says "ramping", never "acquiring".
    with Daemon(ramp_config()) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked", timeout=20)
        new, rate = l["setpoint_thz"] + 300e-6, 100.0
        t0 = time.monotonic()
        c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": new,
                                        "ramp_mhz_per_s": rate})
        wait_for(lambda: get(c)["target_thz"] == new, 10, "the ramp's end")
        h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0 + 1})["samples"]
        # From the first reading after the change (the ramp takes 3 s) less its first
        # half second, to half a second before its end.
        start = min(s["time"] for s in h if s["state"] == "ramping")
        during = [s for s in h if start + 0.5 <= s["time"] <= start + 2.5]
        states = {s["state"] for s in during}
        errs = [abs(s["error_mhz"]) for s in during if s["error_mhz"] is not None]
        mean = sum(errs) / len(errs)
        if states != {"ramping"}:
            fail("states while ramping at %g MHz/s: %r" % (rate, states))
        if mean > l["limits"]["tolerance_mhz"]:
            fail("tracking error during a %g MHz/s ramp: mean |error| %.2f MHz > tolerance"
                 % (rate, mean))
        l = wait_state(c, "locked", timeout=5)
        print("ramp %g MHz/s: mean |error| %.2f MHz over %d readings" % (rate, mean, len(errs)))


def test_large_step_is_a_move():
    # Issue 12: a setpoint 900 MHz away (capture 500) is carried out as a ramp at
    # large_step_rate_mhz_per_s, never "lost"; with large_step "refuse" it is refused
    # with the reason and nothing changes.
    # 900 MHz is 18 V at 50 MHz/V: outputs of +-20 V.
    cfg = ramp_config(large_step_rate_mhz_per_s=300.0, slew_v_per_s=20.0, output_min_v=-20.0,
                      output_max_v=20.0)
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked", timeout=20)
        new = l["setpoint_thz"] + 900e-6
        t0 = time.monotonic()
        a = c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": new})
        if a["state"] != "ramping" or a["ramp_mhz_per_s"] != 0.0:
            fail("a 900 MHz step answered %s (%s), ramp %r" % (a["state"], a["reason"],
                                                               a["ramp_mhz_per_s"]))
        l = wait_laser(c, lambda x: x["state"] == "locked" and x["target_thz"] == new, 15,
                       "locked 900 MHz up")
        took = time.monotonic() - t0
        h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})["samples"]
        states = [x["state"] for x in h]
        bad = set(states) - {"locked", "ramping", "acquiring"}
        if bad:
            fail("states during the large step: %r" % bad)
        # While the target moves it is "ramping"; "acquiring" only once it has
        # arrived and the laser settles onto it.
        last_ramp = max(i for i, x in enumerate(states) if x == "ramping")
        if "acquiring" in states[:last_ramp]:
            fail("acquiring while the target moved: %r" % states)
        if took < 2.9:
            fail("900 MHz at 300 MHz/s took %.2f s" % took)
        if abs(l["reading"]["frequency_thz"] - new) * 1e6 > 3 * l["limits"]["tolerance_mhz"]:
            fail("after the large step the laser is at %r" % l["reading"])
    cfg = ramp_config(large_step="refuse")
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked", timeout=20)
        e = expect_error(c, "laser.set_setpoint",
                         {"laser": "L1", "frequency_thz": l["setpoint_thz"] + 900e-6}, -32602)
        if "capture_mhz" not in e["message"] or e["data"]["capture_mhz"] != 500.0:
            fail("refusal: %r" % e)
        if get(c)["setpoint_thz"] != l["setpoint_thz"]:
            fail("a refused step changed the setpoint")
        # Within the capture range a step is a step, as before.
        c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": l["setpoint_thz"] + 100e-6})
        wait_state(c, "locked", timeout=10)


def test_lock_far_is_a_move():
    # A lock engaged 900 MHz from its setpoint (beyond capture_mhz 500) ramps there
    # from where the laser is instead of ending "lost"; so does a restart that
    # resumes a lock in the middle of a large step (kill -9 half way).
    cfg = ramp_config(large_step_rate_mhz_per_s=300.0, slew_v_per_s=20.0, output_min_v=-20.0,
                      output_max_v=20.0)
    cfg["state"] = {"save_interval_s": 3600}
    root = tempfile.mkdtemp(prefix="wmd-e2e-far-")
    try:
        d = Daemon(cfg, state_dir=root).start()
        with d.client() as c:
            far = get(c)["setpoint_thz"] + 900e-6
            c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": far})
            c.result("laser.lock", ["L1"])
            wait_laser(c, lambda x: x["state"] == "ramping", 5, "ramping from where the laser is")
            if "MHz from the setpoint, beyond capture_mhz 500" not in d.log():
                fail("no log line for the lock engaged far away:\n" + d.log())
            l = wait_laser(c, lambda x: x["state"] == "locked", 15, "locked 900 MHz away")
            if abs(l["reading"]["frequency_thz"] - far) * 1e6 > 3 * l["limits"]["tolerance_mhz"]:
                fail("locked at %r" % l["reading"])
            # Back by 900 MHz (a large step), and kill -9 half way.
            back = far - 900e-6
            c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": back})
            wait_laser(c, lambda x: abs(x["target_thz"] - back) * 1e6 < 450, 5, "half way")
            d.kill9()
        discard(d)
        with Daemon(cfg, state_dir=root) as d, d.client() as c:
            l = wait_laser(c, lambda x: x["state"] in ("locked", "lost"), 15,
                           "the resumed lock to settle")
            if l["state"] != "locked" or abs(l["reading"]["frequency_thz"] - back) * 1e6 > \
                    3 * l["limits"]["tolerance_mhz"]:
                fail("resumed mid-step: %s (%s) at %r" % (l["state"], l["reason"], l["reading"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ramp_pauses_while_holding():
    # A gap in the readings during a ramp (no signal for 3 s): the target waits where
    # the output was held, so the first good reading neither jumps the output by the
    # gap's walk (it did: 8 V at once) nor finds the laser outside the capture range.
    cfg = ramp_config(slew_v_per_s=20.0, output_min_v=-20.0, output_max_v=20.0)
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked", timeout=20)
        new = l["setpoint_thz"] + 900e-6
        t0 = time.monotonic()
        c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": new,
                                        "ramp_mhz_per_s": 100.0})
        wait_laser(c, lambda x: (x["target_thz"] - l["setpoint_thz"]) * 1e6 > 200, 5,
                   "the ramp under way")
        c.result("sim.fault", {"laser": "L1", "fault": "no_signal"})
        wait_state(c, "holding", timeout=5)
        time.sleep(3)  # the gap itself, not a wait for an event
        c.result("sim.fault", {"laser": "L1", "fault": "none"})
        l = wait_laser(c, lambda x: x["state"] == "locked" and x["target_thz"] == new, 20,
                       "locked at the end of the ramp")
        h = c.result("history", {"laser": "L1", "seconds": time.monotonic() - t0})["samples"]
        outs = [x["output_v"] for x in h]
        jump = max(abs(b - a) for a, b in zip(outs, outs[1:]))
        if jump > 1.0:
            fail("the output jumped %.2f V between two readings after the gap" % jump)
        if "lost" in {x["state"] for x in h}:
            fail("lost after a gap during a ramp")


def history_stats(samples):
    e = [s["error_mhz"] for s in samples if s["error_mhz"] is not None]
    return len(e), e


def check_stats(h, what, rel=1e-9):
    n, e = history_stats(h["samples"])
    st = h["error_mhz"]
    if st["n"] != n:
        fail("%s: n %r, %d samples with an error" % (what, st["n"], n))
    want = {"mean": statistics.fmean(e), "std": statistics.stdev(e), "min": min(e), "max": max(e)}
    for k, v in want.items():
        if not math.isclose(st[k], v, rel_tol=rel, abs_tol=1e-12):
            fail("%s: %s %r, computed from the samples %r" % (what, k, st[k], v))


def test_history():
    cfg = sim_config([fast({"history_depth": 300, "sim": {"offset_mhz": 30.0, "noise_mhz": 0.5}})])
    with Daemon(cfg) as d, d.client() as c:
        over_readings(c, 50, lambda l: None)
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        over_readings(c, 300, lambda l: None)
        h = c.result("history", {"laser": "L1"})
        if h["laser"] != "L1" or h["channel"] != 1 or len(h["samples"]) != 300:
            fail("history: %r samples, %r" % (len(h["samples"]), {k: h[k] for k in h if k != "samples"}))
        seqs = [s["seq"] for s in h["samples"]]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            fail("samples not consecutive, oldest first: %r" % seqs[:10])
        for s in h["samples"]:
            if s["status"] == "ok" and s["error_mhz"] is not None and \
                    abs(s["frequency_thz"] - NOMINAL_THZ - s["error_mhz"] * 1e-6) > 1e-9:
                fail("sample error does not match its frequency: %r" % s)
        check_stats(h, "all")
        # A window: only readings of the last 0.3 s, same statistics rules.
        t = time.time()
        w = c.result("history", {"laser": "L1", "seconds": 0.3})
        if not 20 <= len(w["samples"]) < 300 or any(t - s["time"] > 0.3 + 0.05 for s in w["samples"]):
            fail("0.3 s window: %d samples, oldest %.3f s" %
                 (len(w["samples"]), t - w["samples"][0]["time"]))
        check_stats(w, "0.3 s window")
        # By channel: the same laser.
        by_ch = c.result("history", {"channel": 1, "seconds": 0.3})
        if by_ch["laser"] != "L1":
            fail("history by channel: %r" % by_ch["laser"])
        check_stats(by_ch, "by channel")
        # Readings before the lock (30 MHz off the setpoint) are gone from the
        # 300-deep ring, which is why the mean is ~0 now.
        if abs(h["error_mhz"]["mean"]) > 1:
            fail("mean %r" % h["error_mhz"]["mean"])
        expect_error(c, "history", {"laser": "L1", "seconds": -1}, -32602)
        expect_error(c, "history", {"channel": 9}, -32602)


# ---- regressions: bugs found by these tests, fixed ----

def test_history_std_far_from_setpoint():
    # An unlocked laser 100 GHz from its setpoint (a diode that jumped a chip
    # mode) on a quiet wavemeter: the spread is 5 kHz, the mean 1e5 MHz. The std the daemon reports must still be the std of the
    # samples it returns; a one-pass sum of squares loses it to rounding.
    cfg = sim_config([{"history_depth": 800, "sim": {"offset_mhz": 1e5, "noise_mhz": 0.005}}])
    with Daemon(cfg) as d, d.client() as c:
        over_readings(c, 820, lambda l: None, timeout=20)
        h = c.result("history", {"laser": "L1"})
        check_stats(h, "100 GHz off", rel=1e-6)


def test_relock_keeps_ramp_rate():
    # The configured ramp rate is how setpoint changes move this laser; an
    # automatic relock must not quietly turn it into steps.
    cfg = sim_config([fast({"ramp_mhz_per_s": 100.0, "auto_relock": True,
                            "relock_delay_s": 0.1})], state={"save_interval_s": 0.1})
    with Daemon(cfg) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        wait_state(c, "locked")
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": 2000})
        wait_state(c, "lost", timeout=5)
        c.result("sim.mode_hop", {"laser": "L1", "jump_mhz": -2000})
        wait_for(lambda: "relock attempt 1" in d.log(), 5, "a relock attempt")
        wait_state(c, "locked")
        # A setpoint change without a rate must still walk at 100 MHz/s: 50 MHz
        # away, the target cannot be there in the answer.
        new = NOMINAL_THZ + 50e-6
        l = c.result("laser.set_setpoint", {"laser": "L1", "frequency_thz": new})
        if l["ramp_mhz_per_s"] != 100.0 or not NOMINAL_THZ <= l["target_thz"] < new:
            fail("after a relock, set_setpoint steps: ramp_mhz_per_s %r (configured 100), "
                 "target %r THz, setpoint %r THz" % (l["ramp_mhz_per_s"], l["target_thz"], new))


def test_sigterm_answers_owed_writes():
    # SIGTERM right behind a write: the daemon stops reading, but a write it
    # took is answered before it closes, and an answered write is on disk.
    answered = 0
    for k in range(8):
        d = Daemon(sim_config([fast()])).start()
        try:
            with d.client() as c:
                c.result("ping")
                want = 384.0 + (k + 1) * 1e-5
                c.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "laser.set_setpoint",
                                   "params": {"laser": "L1", "frequency_thz": want}}) + "\n")
                d.proc.send_signal(signal.SIGTERM)
                try:
                    ans = c.recv_json(timeout=5)
                except AssertionError:
                    ans = None  # closed before the line was read: never taken
                if d.proc.wait(5) != 0:
                    fail("exit code %s" % d.proc.returncode)
            with open(os.path.join(d.state_dir, "state.json")) as f:
                saved = json.load(f)["lasers"]["L1"]["setpoint_thz"]
            if ans is not None:
                if ans.get("result", {}).get("setpoint_thz") != want or saved != want:
                    fail("answer %r, saved %r, want %r" % (ans, saved, want))
                answered += 1
        finally:
            d.stop()
            shutil.rmtree(d.tmp, ignore_errors=True)
    if answered == 0:
        fail("no write sent just before SIGTERM was ever answered")


def test_state_dir_gone_then_back():
    # The state directory vanishes (disk trouble): a write is applied but
    # answered -32007, never as an actuator fault; once the directory is back
    # the periodic save writes it, and a kill -9 then keeps it.
    cfg = sim_config([fast()], state={"save_interval_s": 0.2})
    d = Daemon(cfg).start()
    try:
        path = os.path.join(d.state_dir, "state.json")
        wait_for(lambda: os.path.exists(path), 5, "the first state file")
        shutil.rmtree(d.state_dir)
        with d.client() as c:
            ans = c.call("laser.set_setpoint", {"laser": "L1", "frequency_thz": 384.0003})
            e = ans.get("error") or {}
            if e.get("code") != -32007 or "not saved" not in e.get("message", ""):
                fail("write with no state dir: %r" % ans)
            if get(c)["setpoint_thz"] != 384.0003:
                fail("the change was not applied")
            os.makedirs(d.state_dir)

            def saved():
                try:
                    with open(path) as f:
                        return json.load(f)["lasers"]["L1"]["setpoint_thz"] == 384.0003
                except (OSError, ValueError):
                    return False
            wait_for(saved, 5, "the periodic save to retry")
        d.kill9()
        d2 = Daemon(cfg, state_dir=d.state_dir).start()
        try:
            if d2.result("laser.get", {"laser": "L1"})["setpoint_thz"] != 384.0003:
                fail("setpoint lost after the retry and kill -9")
        finally:
            d2.stop()
    finally:
        d.stop()
        shutil.rmtree(d.tmp, ignore_errors=True)


def test_lock_state_edges():
    # A laser that holds its setpoint with the output on a limit, within
    # tolerance, is locked (not railed, never lost by the rail timeout).
    # A setpoint step larger than the tolerance drops "locked" at once.
    over = fast({"sim": {"offset_mhz": 51.0}, "output_min_v": -1.0, "rail_timeout_s": 1.0,
                 "tolerance_mhz": 2.0, "capture_mhz": 100.0})
    with Daemon(sim_config([over])) as d, d.client() as c:
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked")

        def still_locked(x):
            if x["state"] != "locked":
                fail("left locked while on frequency at the rail: %r" % x)
        last = over_readings(c, 100, still_locked)  # well past rail_timeout_s
        if abs(last["output_v"] + 1.0) > 1e-9:
            fail("output not on its lower limit: %r" % last["output_v"])
        # -1 V gives -50 MHz of the 51 MHz offset: 1 MHz of error, in tolerance.
        step = c.result("laser.set_setpoint", ["L1", NOMINAL_THZ + 30e-6])
        if step["state"] == "locked":
            fail("still locked right after a 30 MHz setpoint step: %r" % step)


def test_autotune_over_rpc():
    """laser.autotune as a user runs it: refused while locked, then on the
    unlocked laser it reports progress in laser.get, finds the simulator's
    S (-30 MHz/V, the config says +50) and applies it; the lock then holds."""
    cfg = sim_config([fast({"sensitivity_mhz_per_v": 50.0,
                            "sim": {"sensitivity_mhz_per_v": -30.0, "noise_mhz": 0.2,
                                    "drift_mhz_per_sqrt_s": 0.1}})])
    with Daemon(cfg) as d, Client(d.port) as c:
        c.result("laser.lock", ["L1"])
        expect_error(c, "laser.autotune", ["L1"], -32010, "while locked")
        c.result("laser.unlock", ["L1"])
        expect_error(c, "laser.autotune", {"laser": "L1", "step_v": 100}, -32602, "step_v 100")
        started = c.result("laser.autotune", {"laser": "L1", "apply": True})
        if started["autotune"]["state"] != "holding":
            fail("autotune did not start holding: %r" % started["autotune"])
        l = wait_laser(c, lambda l: l["autotune"]["state"] in ("done", "failed"), 30,
                       "autotune to finish")
        res = l["autotune"].get("result")
        if l["autotune"]["state"] != "done" or not res["applied"]:
            fail("autotune: %r" % l["autotune"])
        if abs(res["sensitivity_mhz_per_v"] / -30.0 - 1) > 0.1:
            fail("autotune found S %r, want -30" % res["sensitivity_mhz_per_v"])
        # The result is shown to 6 digits, the gains in full.
        if not math.isclose(l["gains"]["sensitivity_mhz_per_v"], res["sensitivity_mhz_per_v"],
                            rel_tol=1e-5) or \
                not math.isclose(l["gains"]["ki_v_per_mhz_s"], res["gains"]["ki_v_per_mhz_s"],
                                 rel_tol=1e-5):
            fail("autotune result not applied: %r" % l["gains"])
        c.result("laser.lock", ["L1"])
        l = wait_state(c, "locked", timeout=20)
        if not (l["control"]["dt_s"] > 0 and l["control"]["gi"] > 0 and
                l["control"]["backoff"] == 1.0):
            fail("control after the lock: %r" % l["control"])


SUITE = [
    ("converges", test_converges_from_200_mhz),
    ("noise_floor", test_locked_noise_floor),
    ("no_signal_hold", test_no_signal_holds_then_recovers),
    ("mode_hop_lost", test_mode_hop_lost),
    ("auto_relock", test_auto_relock_after_hop_back),
    ("lost_hold", test_lost_hold_leaves_the_output),
    ("auto_relock_gives_up", test_auto_relock_gives_up),
    ("ramp_feed_forward", test_ramp_followed_with_feed_forward),
    ("large_step_is_a_move", test_large_step_is_a_move),
    ("lock_far_is_a_move", test_lock_far_is_a_move),
    ("ramp_pauses_while_holding", test_ramp_pauses_while_holding),
    ("lock_relocks_lost", test_lock_relocks_a_lost_laser),
    ("kill9_acknowledged", test_kill9_keeps_acknowledged_changes),
    ("kill9_after_step", test_kill9_after_step_resumes_the_applied_output),
    ("holding_error_is_null", test_holding_error_is_null),
    ("restart_policies", test_restart_policies),
    ("kill9_burst", test_kill9_during_write_burst),
    ("corrupt_state", test_corrupt_state_file),
    ("method_errors", test_method_errors),
    ("ramp", test_setpoint_ramp_keeps_the_lock),
    ("history", test_history),
    ("relock_keeps_ramp", test_relock_keeps_ramp_rate),
    ("history_std_far", test_history_std_far_from_setpoint),
    ("sigterm_answers_owed", test_sigterm_answers_owed_writes),
    ("state_dir_gone", test_state_dir_gone_then_back),
    ("lock_state_edges", test_lock_state_edges),
    ("autotune_over_rpc", test_autotune_over_rpc),
]
run_tests(SUITE)
