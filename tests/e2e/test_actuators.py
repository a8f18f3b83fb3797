#!/usr/bin/env python3
"""End to end: real actuators and switches. The real wavemeterd, on the fake
libwlmData.so ($FAKE_WLM_LIB), drives fake serial instruments on
pseudo-terminals (tests/e2e/fakeserial.py) that it opens through the real
libserialport, with the test-only shim $PTY_SHIM preloaded. The fake
wavemeter's frequencies follow the voltages the fake instruments hold
(FAKE_WLM_TUNE), so the locks close a real loop through the serial line."""
import os
import re
import socket
import tempfile
import time

from fakeserial import FakeLeoni, FakeMDT693B, FakeSerialDac
from wmd import Daemon, fail, run_tests, wait_for

LIB = os.environ.get("FAKE_WLM_LIB", "build/tests/libwlmData.so")
SHIM = os.environ.get("PTY_SHIM", "build/tests/libpty_shim.so")

# The loop the tests close: frequency = base + SENS * volts. A laser starts
# at V0 100 MHz above its setpoint, and holds it at V_LOCK.
SENS = 10.0            # MHz/V
V0, V_LOCK = 50.0, 40.0


def setpoint(ch):
    return 384.0 + 0.01 * ch


def base_thz(ch):
    return setpoint(ch) - SENS * V_LOCK * 1e-6


def laser(ch, actuator, **over):
    l = {"name": "L%d" % ch, "channel": ch, "exposure_ms": 5, "settle_ms": 5,
         "setpoint_thz": setpoint(ch), "sensitivity_mhz_per_v": SENS,
         "output_min_v": 0, "output_max_v": 100, "output_initial_v": V0,
         "slew_v_per_s": 100, "kp_v_per_mhz": 0.01, "ki_v_per_mhz_s": 0.3,
         "tolerance_mhz": 2, "locked_after": 3, "lock": True, "actuator": actuator}
    l.update(over)
    return l


class Wavemeter:
    """The fake wavemeter's knobs: its control file and environment."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wmd-act-")
        self.control = os.path.join(self.dir, "control")
        self.log = os.path.join(self.dir, "calls.log")  # every vendor call
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home)
        open(self.control, "w").close()

    def set(self, **knobs):
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            for k, v in knobs.items():
                f.write("FAKE_WLM_%s=%s\n" % (k.upper(), v))
        os.rename(tmp, self.control)

    def env(self):
        asan = os.environ.get("ASAN_OPTIONS", "")
        return {"FAKE_WLM_CONTROL": self.control, "FAKE_WLM_LOG": self.log, "HOME": self.home,
                "LD_PRELOAD": SHIM,
                # The shim is not built with ASan; the daemon may be.
                "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


def config(lasers, **wavemeter):
    wm = {"driver": "highfinesse", "library": LIB}
    wm.update(wavemeter)
    return {"listen": "127.0.0.1:0", "wavemeter": wm, "lasers": lasers}


def freqs(channels):
    return ",".join("%d:%.9f" % (ch, base_thz(ch)) for ch in channels)


def state(d, name):
    return d.result("laser.get", {"laser": name})


def wait_state(d, name, want, timeout, what=None):
    return wait_for(lambda: (lambda l: l if l["state"] in want else None)(state(d, name)),
                    timeout, what or "laser %s in %s" % (name, want))


def ping_ms(d):
    t0 = time.monotonic()
    d.result("ping")
    return (time.monotonic() - t0) * 1e3


def test_mdt693b_locks_unplug_replug_garbage_silence():
    """Four MDT693Bs, one per firmware style and echo setting, lock from
    100 MHz off; a pulled cable costs only its laser the lock, which comes
    back with the cable; garbage and silence are faults, never hangs."""
    styles = [(">", True), (">", False), ("*", True), ("*", False)]
    fakes = [FakeMDT693B(prompt=p, echo=e, vlimit=100, serial="MDT%d" % i)
             for i, (p, e) in enumerate(styles)]
    for f in fakes:
        f.voltages = {a: V0 for a in f.axes}
    wm = Wavemeter()
    # Laser 4 is on axis y, the others on x.
    axes = ["x", "x", "x", "y"]
    tune = ",".join("%d:%s:%s:%g" % (i + 1, f.state_file, axes[i], SENS)
                    for i, f in enumerate(fakes))
    wm.set(freqs=freqs(range(1, 5)), tune=tune)
    lasers = [laser(i + 1, {"driver": "mdt693b", "port": f.path, "axis": axes[i]})
              for i, f in enumerate(fakes)]
    try:
        with Daemon(config(lasers), env=wm.env()) as d:
            for i in range(4):
                wait_state(d, "L%d" % (i + 1), ("locked",), 60)
            for i, f in enumerate(fakes):
                l = state(d, "L%d" % (i + 1))
                v = f.voltages[axes[i]]
                if abs(v - V_LOCK) > 1.0 or abs(l["error_mhz"]) > 2:
                    fail("L%d locked at %.3f V (want %.1f), error %r MHz" %
                         (i + 1, v, V_LOCK, l["error_mhz"]))
                if l["output_readback_v"] is None or abs(l["output_readback_v"] - v) > 0.2:
                    fail("L%d read-back %r, device holds %.2f V" % (i + 1, l["output_readback_v"], v))
                if l["actuator_state"] != "open":
                    fail("L%d actuator %r" % (i + 1, l["actuator_state"]))

            # Unplug the first controller while locked.
            fakes[0].unplug()
            l1 = wait_state(d, "L1", ("fault",), 10, "L1 in fault after the unplug")
            if "mdt693b" not in l1["reason"]:
                fail("fault reason does not name the device: %r" % l1["reason"])
            worst = 0.0
            for _ in range(20):
                worst = max(worst, ping_ms(d))
                for n in ("L2", "L3", "L4"):
                    if state(d, n)["state"] != "locked":
                        fail("%s left locked while L1 was unplugged: %r" % (n, state(d, n)))
                time.sleep(0.05)
            if worst > 500:
                fail("ping took %.0f ms while a device was away" % worst)
            devs = {a["device"]: a for a in d.result("status")["actuators"]}
            dev1 = devs["mdt693b " + fakes[0].path]
            if dev1["state"] != "fault" or dev1["lasers"] != ["L1"] or not dev1.get("reason"):
                fail("status shows the unplugged controller as %r" % dev1)
            if len(devs) != 4 or any(a["state"] != "open" for k, a in devs.items() if a is not dev1):
                fail("status actuators: %r" % devs)
            held = state(d, "L1")["output_v"]
            # Unlocking and locking again while the device is away keeps the
            # fault (nothing can be written) and the wish.
            d.result("laser.unlock", {"laser": "L1"})
            d.result("laser.lock", {"laser": "L1"})
            l1 = state(d, "L1")
            if l1["state"] != "fault" or not l1["lock"]:
                fail("lock while the device is away: %r" % l1)
            # Replug: a new pty, the by-id link moved to it. No restart.
            fakes[0].replug()
            wait_state(d, "L1", ("locked",), 40, "L1 locked again after the replug")
            if abs(fakes[0].voltages["x"] - held) > 1.0:
                fail("after replug the output %.2f V is not where it was held (%.2f V)" %
                     (fakes[0].voltages["x"], held))

            # Garbage, then silence, from the other controllers.
            for idx, mode in ((1, "garbage"), (2, "silent")):
                name = "L%d" % (idx + 1)
                fakes[idx].mode = mode
                l = wait_state(d, name, ("fault",), 15, "%s in fault on %s" % (name, mode))
                if ping_ms(d) > 500:
                    fail("ping slow while %s is %s" % (name, mode))
                if any(abs(f.voltages[axes[k]] - V_LOCK) > 5 for k, f in enumerate(fakes)):
                    fail("a voltage moved on %s: %r" % (mode, [f.voltages for f in fakes]))
                fakes[idx].mode = "ok"
                wait_state(d, name, ("locked",), 40, "%s locked again after %s" % (name, mode))
            print("mdt693b: 4 styles locked; unplug/replug, garbage, silence recovered "
                  "(worst ping %.0f ms while away)" % worst)
    finally:
        for f in fakes:
            f.close()


def test_restart_off_survives_a_fault():
    """A laser with "restart": "off" is not written at start; a fault of the
    controller it shares must not make the daemon write it either."""
    mdt = FakeMDT693B(serial="SHARED")
    mdt.voltages = {"x": V0, "y": 0.0, "z": 0.0}
    wm = Wavemeter()
    wm.set(freqs=freqs([1, 2]), tune="1:%s:x:%g" % (mdt.state_file, SENS))
    lasers = [laser(1, {"driver": "mdt693b", "port": mdt.path, "axis": "x"}),
              laser(2, {"driver": "mdt693b", "port": mdt.path, "axis": "y"}, lock=False,
                    restart="off")]
    state_dir = tempfile.mkdtemp(prefix="wmd-off-")
    try:
        with Daemon(config(lasers), env=wm.env(), state_dir=state_dir) as d:
            wait_state(d, "L1", ("locked",), 60)
            d.result("laser.set_output", {"laser": "L2", "output_v": 30})
            if abs(mdt.voltages["y"] - 30) > 0.01:
                fail("set_output did not reach the controller: %r" % mdt.voltages)
        # Someone turns the knobs while the daemon is down: L2's to 12 V, L1's 5 V
        # away from the output the daemon saved.
        mdt.voltages = dict(mdt.voltages, x=mdt.voltages["x"] + 5.0, y=12.0)
        turned_x, mark = mdt.voltages["x"], len(mdt.log)
        with Daemon(config(lasers), env=wm.env(), state_dir=state_dir) as d:
            wait_state(d, "L1", ("locked",), 60)
            l2 = state(d, "L2")
            if l2["actuator_writes"] != 0 or mdt.voltages["y"] != 12.0:
                fail("restart off wrote L2: %r, %r" % (l2, mdt.voltages))
            # The MDT693B tells its output: restart "off" shows it instead of null.
            if l2["output_v"] is None or abs(l2["output_v"] - 12.0) > 0.2:
                fail("restart off: output_v %r, the device holds 12 V" % l2["output_v"])
            # L1 resumes from what its axis holds, not from the saved output 5 V away:
            # its first write after the restart is a controller step from there.
            sets = [float(x.split("=")[1]) for x in mdt.log[mark:]
                    if x.startswith("xvoltage=")]
            if not sets or abs(sets[0] - turned_x) > 2.0:
                fail("L1's first write after the restart %r, the axis held %.1f V"
                     % (sets[:3], turned_x))
            if not re.search(r"L1\": the actuator reads 4[45]\.\d+ V, not the saved output",
                             d.log()):
                fail("no log line for the output taken from the device:\n" + d.log())
            mdt.unplug()
            wait_state(d, "L2", ("fault",), 10)
            mdt.replug()
            wait_state(d, "L1", ("locked",), 40, "L1 locked again after the replug")
            l2 = wait_state(d, "L2", ("off",), 10)
            if l2["actuator_writes"] != 0 or mdt.voltages["y"] != 12.0:
                fail("the fault made the daemon write L2: %r, %r" % (l2, mdt.voltages))
            print("restart off: L2 left at %.1f V through a fault of its controller" %
                  mdt.voltages["y"])
    finally:
        mdt.close()


def test_absent_at_start_and_voltage_limit():
    """A controller absent at start-up is found when it appears; one whose
    front-panel limit is below output_max_v is a clear fault."""
    tmp = tempfile.mkdtemp(prefix="wmd-absent-")
    low = FakeMDT693B(vlimit=75, serial="LOW")
    absent_path = os.path.join(tmp, FakeMDT693B.link_name.format(serial="LATE"))
    wm = Wavemeter()
    wm.set(freqs=freqs([1, 2]))
    lasers = [laser(1, {"driver": "mdt693b", "port": absent_path}),
              laser(2, {"driver": "mdt693b", "port": low.path})]
    late = None
    try:
        with Daemon(config(lasers), env=wm.env()) as d:
            l1 = wait_state(d, "L1", ("fault",), 10)
            l2 = wait_state(d, "L2", ("fault",), 10)
            if "No such file" not in l1["reason"] and "cannot open" not in l1["reason"].lower():
                fail("absent device reason: %r" % l1["reason"])
            if "75" not in l2["reason"] or "output_max_v" not in l2["reason"]:
                fail("voltage limit reason: %r" % l2["reason"])
            if low.voltages["x"] != 0.0:
                fail("a refused controller was written: %r" % low.voltages)
            late = FakeMDT693B(dir=tmp, serial="LATE")
            wait_for(lambda: state(d, "L1")["actuator_state"] == "open", 20,
                     "the late controller picked up")
            wait_for(lambda: abs(late.voltages["x"] - V0) < 0.01, 10,
                     "the held output written to the late controller")
            if state(d, "L2")["state"] != "fault":
                fail("L2 left fault: %r" % state(d, "L2"))
            print("absent at start: picked up; vlimit 75 V < output_max_v 100 V: %s" % l2["reason"])
    finally:
        low.close()
        if late:
            late.close()


def test_serial_line_closed_loop():
    """A serial-line DAC box (SET <ch> <code>, answered OK) locks a laser."""
    dac = FakeSerialDac(protocol="set", v_at_min=-10, v_at_max=10)
    wm = Wavemeter()
    wm.set(freqs="1:%.9f" % (setpoint(1) - SENS * 4.0 * 1e-6),
           tune="1:%s:ch2:%g" % (dac.state_file, SENS))
    act = {"driver": "serial_line", "port": dac.path, "channel": 2, "reply": "OK",
           "open_delay_ms": 0}
    lasers = [laser(1, act, output_min_v=-10, output_max_v=10, output_initial_v=-6,
                    kp_v_per_mhz=0.01, ki_v_per_mhz_s=0.3)]
    try:
        with Daemon(config(lasers), env=wm.env()) as d:
            wait_state(d, "L1", ("locked",), 60)
            if abs(dac.volts[2] - 4.0) > 0.2:
                fail("DAC channel 2 at %.3f V, want 4 V" % dac.volts[2])
            if not any(line.startswith("SET 2 ") for line in dac.log):
                fail("no SET 2 command on the wire: %r" % dac.log[:5])
            print("serial_line: locked at %.3f V (code %d)" % (dac.volts[2], dac.codes[2]))
    finally:
        dac.close()


def test_wlm_analog_closed_loop():
    """The wavemeter's own analog output locks a laser: the lock writes
    SetDeviationSignalNum (mV) on the device thread between the reads."""
    wm = Wavemeter()
    wm.set(freqs="1:%.9f" % (setpoint(1) - SENS * 4.0 * 1e-6), tune="1:@analog1:%g" % SENS)
    lasers = [laser(1, {"driver": "highfinesse_analog", "output": 1}, output_min_v=-10,
                    output_max_v=10, output_initial_v=-6)]
    with Daemon(config(lasers), env=wm.env()) as d:
        l = wait_state(d, "L1", ("locked",), 60)
        if abs(l["output_v"] - 4.0) > 0.2:
            fail("locked at %.3f V, want 4 V" % l["output_v"])
        with open(wm.log) as f:
            sets = [line for line in f if line.startswith("SetDeviationSignalNum")]
        if not sets or not any(" 1 " in line or "(1," in line or " 1," in line for line in sets):
            fail("no SetDeviationSignalNum on port 1: %r" % sets[:3])
        print("highfinesse_analog: locked at %.3f V after %d writes" % (l["output_v"], len(sets)))


def test_leoni_switch_readings():
    """A Leoni switch in front of the wavemeter: each laser's readings come
    from its own fibre, never from the one the switch was leaving."""
    sw = FakeLeoni(nchannels=4, confirm_delay_s=0.05)
    wm = Wavemeter()
    # The wavemeter's input 1 sees whatever fibre the switch selected.
    wm.set(freqs="1:384.1,2:384.2,3:384.3,4:384.4", route="1:%s" % sw.state_file)
    lasers = [{"name": "L%d" % ch, "channel": ch, "exposure_ms": 5, "settle_ms": 0,
               "setpoint_thz": 384.0 + 0.1 * ch} for ch in (1, 2, 3)]
    cfg = config(lasers, switch={"driver": "leoni", "port": sw.path, "input": 1,
                                 "settle_ms": 5})
    try:
        with Daemon(cfg, env=wm.env()) as d:
            def enough():
                h = [d.result("history", {"laser": "L%d" % ch})["samples"] for ch in (1, 2, 3)]
                return h if all(len(x) >= 10 for x in h) else None
            hist = wait_for(enough, 30, "10 readings of each switched channel")
            for ch, samples in zip((1, 2, 3), hist):
                want = 384.0 + 0.1 * ch
                for s in samples:
                    if s["status"] == "ok" and abs(s["frequency_thz"] - want) > 1e-6:
                        fail("L%d read %.4f THz: another fibre's light" % (ch, s["frequency_thz"]))
            if sw.switches < 6:
                fail("the switch moved only %d times" % sw.switches)
            print("leoni: %d moves, every reading from its own fibre" % sw.switches)
    finally:
        sw.close()


if __name__ == "__main__":
    run_tests([
        ("mdt693b_locks_unplug_replug_garbage_silence",
         test_mdt693b_locks_unplug_replug_garbage_silence),
        ("restart_off_survives_a_fault", test_restart_off_survives_a_fault),
        ("absent_at_start_and_voltage_limit", test_absent_at_start_and_voltage_limit),
        ("serial_line_closed_loop", test_serial_line_closed_loop),
        ("wlm_analog_closed_loop", test_wlm_analog_closed_loop),
        ("leoni_switch_readings", test_leoni_switch_readings),
    ])
