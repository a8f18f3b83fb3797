#!/usr/bin/env python3
"""End to end: the real wavemeterd with driver "highfinesse" on a fake
libwlmData.so (tests/fakes/fake_wlmdata.c, path in $FAKE_WLM_LIB), spoken to
over TCP. The fake is scripted through its environment and a control file."""
import os
import re
import signal
import tempfile
import time

from wmd import Daemon, fail, run_tests, wait_for

LIB = os.environ.get("FAKE_WLM_LIB", "build/tests/libwlmData.so")
# Results the driver throws away after a switch or an exposure change
# (WLM_FLUSH_READS in src/drivers/highfinesse.c), plus the one it keeps.
POLLS_AFTER_SWITCH = 3 + 1
# Answers of GetFrequencyNum that are not a result: "not yet" (read-once mode).
NOT_YET = {"0", "-32", "-33", "0.000000000", "-32.000000000", "-33.000000000"}


def hf_config(channels, library=None, **over):
    lasers = [{"name": "L%d" % ch, "channel": ch, "exposure_ms": 5, "settle_ms": 5,
               "actuator": {"driver": "none"}} for ch in channels]
    cfg = {"listen": "127.0.0.1:0",
           "wavemeter": {"driver": "highfinesse", "library": library or LIB},
           "lasers": lasers}
    cfg.update(over)
    return cfg


class Fake:
    """Scratch files for one daemon: the control file and the call log."""

    def __init__(self, **knobs):
        self.dir = tempfile.mkdtemp(prefix="wmd-fake-wlm-")
        self.control = os.path.join(self.dir, "control")
        self.log = os.path.join(self.dir, "calls.log")
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home)
        open(self.control, "w").close()
        self.env = {"FAKE_WLM_CONTROL": self.control, "FAKE_WLM_LOG": self.log,
                    "HOME": self.home}
        self.env.update({"FAKE_WLM_" + k.upper(): str(v) for k, v in knobs.items()})

    def set(self, **knobs):
        """Replace the control file: these knobs override the environment."""
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            for k, v in knobs.items():
                f.write("FAKE_WLM_%s=%s\n" % (k.upper(), v))
        os.rename(tmp, self.control)

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [line.split() for line in f.read().splitlines()]

    def blocked(self, name):
        """How many calls of name have started to block (FAKE_WLM_BLOCK)."""
        return sum(1 for c in self.calls() if c[:2] == ["block", name])


def reading(d, laser):
    return d.result("read", {"laser": laser})


def wait_status(d, laser, status, detail=None, timeout=10):
    """The first reading of laser with that status ("no reading yet" is none)
    and, if given, detail in its detail."""
    def ok():
        r = reading(d, laser)
        if r["seq"] > 0 and r["status"] == status and (detail is None or detail in r.get("detail", "")):
            return r
        return None
    return wait_for(ok, timeout, "a %s reading of %s (detail %r)" % (status, laser, detail))


def start_fails(cfg, fake, words):
    d = Daemon(cfg, env=fake.env)
    d.start(expect_ready=False)
    rc = d.proc.wait(10)
    log = d.log()
    if rc != 1:
        fail("exit %s, expected 1:\n%s" % (rc, log))
    for w in words:
        if w not in log:
            fail("%r not in the log:\n%s" % (w, log))
    if any(w in log for w in ("AddressSanitizer", "LeakSanitizer", "runtime error")):
        fail("sanitizer report:\n" + log)
    return log


def test_reading():
    fake = Fake(freqs="1:384.2281")
    with Daemon(hf_config([1]), env=fake.env) as d:
        r = wait_status(d, "L1", "ok")
        if abs(r["frequency_thz"] - 384.2281) > 1e-9 or r["exposure_ms"] != 5:
            fail("reading %r" % r)
        if abs(r["wavelength_nm"] * r["frequency_thz"] - 299792.458) > 1e-6:
            fail("wavelength %r" % r)
        st = d.result("status")
        if st["driver"]["name"] != "highfinesse":
            fail("status %r" % st)
        log = d.log()
        for w in ("HighFinesse WS7, serial 4242", LIB):
            if w not in log:
                fail("%r not logged at start:\n%s" % (w, log))
    calls = fake.calls()
    # One laser on channel 1: no switch to own, so it is left alone.
    if any(c[0] in ("SetSwitcherMode", "SetSwitcherChannel") for c in calls):
        fail("switch touched with a single laser on channel 1: %r" % calls[:20])
    if [c for c in calls if c[0] == "SetExposureNum"] != [["SetExposureNum", "1", "1", "5", "=", "0"]]:
        fail("exposure not set exactly once: %r" % [c for c in calls if c[0] == "SetExposureNum"])


def test_statuses():
    fake = Fake(freqs="1:-1,2:-3,3:-4,4:-2,5:-8,6:0")
    want = {"L1": "no_signal", "L2": "underexposed", "L3": "overexposed", "L4": "no_signal",
            "L5": "no_signal", "L6": "error"}
    with Daemon(hf_config([1, 2, 3, 4, 5, 6]), env=fake.env) as d:
        for laser, status in want.items():
            r = wait_status(d, laser, status)
            if "frequency_thz" in r:
                fail("frequency with status %s: %r" % (status, r))
        wait_status(d, "L6", "error", detail="ErrNoValue (0)")


def test_vendor_error_and_recovery():
    fake = Fake(freqs="1:384.1,2:751.5")
    with Daemon(hf_config([1, 2]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        fake.set(freqs="1:-26,2:751.5")
        wait_status(d, "L1", "error", detail="GetFrequencyNum: ErrTCPErr (-26)")
        wait_for(lambda: d.result("status")["driver"]["state"] == "error", 5, "driver state error")
        if d.result("ping") != "pong":
            fail("daemon not answering during vendor errors")
        fake.set()
        r = wait_status(d, "L1", "ok", timeout=20)
        if abs(r["frequency_thz"] - 384.1) > 1e-9:
            fail("after recovery: %r" % r)
        # The server vanishes (GetWLMCount 0, ErrWlmMissing) and comes back.
        fake.set(count=0)
        for laser in ("L1", "L2"):
            wait_status(d, laser, "error", detail="ErrWlmMissing (-5)", timeout=20)
        fake.set()
        wait_status(d, "L2", "ok", timeout=20)
        wait_status(d, "L1", "ok", timeout=20)
        if "ErrTCPErr" not in d.log():
            fail("vendor error not logged:\n" + d.log())


def test_switching():
    # The fake keeps returning the previous channel's value for 3 reads after
    # a switch, as the real pipeline does: no reading may show it.
    fake = Fake(freqs="1:384.2281,2:751.5", pipeline=3)
    cfg = hf_config([1, 2])
    for l in cfg["lasers"]:
        l["max_age_ms"] = 1  # both always due: they take turns, a switch every read
    with Daemon(cfg, env=fake.env) as d:
        wait_for(lambda: all(c["reads"] >= 5 for c in d.result("status")["channels"]), 20,
                 "5 reads of each channel")
        for laser, thz in (("L1", 384.2281), ("L2", 751.5)):
            samples = d.result("history", {"laser": laser})["samples"]
            bad = [s for s in samples if s["status"] != "ok" or abs(s["frequency_thz"] - thz) > 1e-9]
            if not samples or bad:
                fail("%s: %d samples, wrong ones %r" % (laser, len(samples), bad[:5]))
    calls = fake.calls()
    names = [c[0] for c in calls]
    if "SetSwitcherMode" not in names or names.index("SetSwitcherMode") > names.index("SetSwitcherChannel"):
        fail("switch not put in manual mode first: %r" % calls[:20])
    if ["SetSwitcherMode", "0", "=", "0"] not in calls:
        fail("SetSwitcherMode(0) missing")
    # Split the log at the switches: every read follows a switch to its own
    # channel, and each switch is followed by exactly the flush plus one read.
    segments, cur = [], None
    for c in calls:
        if c[0] == "SetSwitcherChannel":
            if c[-1] != "0":
                fail("SetSwitcherChannel failed: %r" % c)
            cur = [int(c[1]), 0]
            segments.append(cur)
        elif c[0] == "GetFrequencyNum":
            if cur is None or int(c[1]) != cur[0]:
                fail("GetFrequencyNum(%s) after SetSwitcherChannel(%s)" % (c[1], cur and cur[0]))
            if c[-1] not in NOT_YET:
                cur[1] += 1  # a result, taken or thrown away
    chans = [s[0] for s in segments]
    if len(segments) < 10 or any(a == b for a, b in zip(chans, chans[1:])):
        fail("switches %r" % chans)
    # After each switch: whatever was waiting (a result or "not yet"), then
    # the flush, then the one kept: never fewer results than that.
    counts = {s[1] for s in segments[:-1]}  # the last one may have been cut by SIGTERM
    if not counts <= {POLLS_AFTER_SWITCH, POLLS_AFTER_SWITCH + 1}:
        fail("results per switch %r, expected %d (+1 waiting)" % (counts, POLLS_AFTER_SWITCH))
    expo = [c for c in calls if c[0] == "SetExposureNum"]
    if sorted(c[1] for c in expo) != ["1", "2"]:
        fail("exposure not set exactly once per channel: %r" % expo)


def test_straddle():
    # Someone else keeps moving the switch to channel 2 during every
    # measurement of channel 1: those readings are marked, and the driver
    # moves the switch back before the next one.
    fake = Fake(freqs="1:384.2281,2:751.5")
    cfg = hf_config([1, 2])
    with Daemon(cfg, env=fake.env, log_level="debug") as d:
        wait_for(lambda: d.result("status")["channels"][0]["reads"] >= 2, 10, "reads")
        fake.set(foreign_switch=2)
        wait_for(lambda: "channel 1: switch on 1 before and 2 after" in d.log(), 10,
                 "a straddle of channel 1 to be logged")
        fake.set()
    # With a single laser on channel 3 the scheduler never switches again,
    # so only the driver can notice the switch was moved.
    fake = Fake(freqs="3:384.2281,2:751.5")
    with Daemon(hf_config([3]), env=fake.env, log_level="debug") as d:
        wait_status(d, "L3", "ok")
        fake.set(foreign_switch=2)
        wait_for(lambda: "switch found on 2, moving it back" in d.log(), 10, "the switch moved back")
        fake.set()
        wait_status(d, "L3", "ok")


def test_switch_error():
    fake = Fake(freqs="1:384.2281,2:751.5", switch_rc=-7)
    with Daemon(hf_config([1, 2]), env=fake.env) as d:
        wait_status(d, "L1", "error", detail="SetSwitcherChannel(1): ResERR_WlmBusy")
        fake.set(switch_rc=0)
        wait_status(d, "L1", "ok", timeout=20)
        wait_status(d, "L2", "ok", timeout=20)

# A hung vendor call: wlmDataServer frozen or the network gone, so a call
# into libwlmData never returns. The fake blocks GetFrequencyNum until the
# control file changes.
HANG_TIMEOUT_MS = 500
HANG_DETAIL = ("libwlmData call GetFrequencyNum did not return within %d ms "
               "(wlmDataServer unreachable?)" % HANG_TIMEOUT_MS)


def hang_config(channels):
    cfg = hf_config(channels)
    cfg["wavemeter"]["read_timeout_ms"] = HANG_TIMEOUT_MS
    return cfg


def start_hang(d, fake):
    """Make GetFrequencyNum hang; returns once a call has started to block."""
    fake.set(block="GetFrequencyNum:hang")
    wait_for(lambda: fake.blocked("GetFrequencyNum") > 0, 5, "GetFrequencyNum to block")
    return time.monotonic()


def ping_s(d):
    t0 = time.monotonic()
    if d.result("ping", timeout=2) != "pong":
        fail("ping did not answer pong")
    return time.monotonic() - t0


def wait_status_after(d, laser, seq, detail, timeout):
    """The first reading of laser newer than seq with detail in its detail."""
    def ok():
        r = reading(d, laser)
        return r if r["seq"] > seq and detail in r.get("detail", "") else None
    return wait_for(ok, timeout, "a reading of %s after seq %d with %r" % (laser, seq, detail))


def driver_in_error(d):
    drv = d.result("status")["driver"]
    return drv if drv["state"] == "error" else None


def test_hang_times_out():
    fake = Fake(freqs="1:384.2281")
    with Daemon(hang_config([1]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        t0 = start_hang(d, fake)
        r = wait_status(d, "L1", "error", detail=HANG_DETAIL, timeout=5)
        took = time.monotonic() - t0
        if took > 1.0:
            fail("hung call reported after %.2f s, read_timeout_ms is %d" % (took, HANG_TIMEOUT_MS))
        if "frequency_thz" in r:
            fail("frequency in a timed-out reading: %r" % r)
        drv = wait_for(lambda: driver_in_error(d), 2, "driver state error")
        if not re.search(r"GetFrequencyNum (did not return|still blocked)", drv.get("error", "")):
            fail("status does not name the hung call: %r" % drv)
        # The loop is not held up: pings answer at once, all through the hang.
        slow = [t for t in (ping_s(d) for _ in range(20)) if t > 0.2]
        if slow:
            fail("ping took %r s during the hang" % slow)
        # Later reads fail at once and queue nothing behind the stuck call:
        # it is still the only call that started.
        seq = r["seq"]
        r = wait_status_after(d, "L1", seq, "still blocked after", timeout=5)
        if r["status"] != "error":
            fail("read during the hang: %r" % r)
        if fake.blocked("GetFrequencyNum") != 1:
            fail("more vendor calls behind the stuck one: %r" % fake.calls()[-10:])
        calls = fake.calls()
        if calls[-1][:2] != ["block", "GetFrequencyNum"]:
            fail("vendor calls after the stuck one: %r" % calls[-5:])
        # Release it, so that the daemon stops with its vendor thread joined.
        fake.set(freqs="1:384.2281")
        wait_status(d, "L1", "ok", timeout=15)


def test_hang_recovers():
    # Two lasers: the read that hangs has moved the switch, and the driver
    # must set the exposures again after the hang, in case the server restarted.
    fake = Fake(freqs="1:384.2281,2:751.5")
    with Daemon(hang_config([1, 2]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        wait_status(d, "L2", "ok")
        start_hang(d, fake)
        wait_for(lambda: driver_in_error(d), 5, "driver state error")
        n_expo = len([c for c in fake.calls() if c[0] == "SetExposureNum"])
        fake.set(freqs="1:384.2281,2:751.5")  # the server answers again
        t0 = time.monotonic()
        for laser, thz in (("L1", 384.2281), ("L2", 751.5)):
            r = wait_status(d, laser, "ok", timeout=15)
            if abs(r["frequency_thz"] - thz) > 1e-9:
                fail("after the hang %s reads %r" % (laser, r))
        wait_for(lambda: d.result("status")["driver"]["state"] != "error", 5, "driver out of error")
        log = d.log()
        if not re.search(r"libwlmData call GetFrequencyNum returned after \d+ ms: reading again", log):
            fail("recovery not logged:\n" + log)
        if len([c for c in fake.calls() if c[0] == "SetExposureNum"]) <= n_expo:
            fail("exposure not set again after the hang")
        print("     recovered %.2f s after the hang ended" % (time.monotonic() - t0))


def test_hang_sigterm():
    fake = Fake(freqs="1:384.2281,2:751.5")
    limit = HANG_TIMEOUT_MS / 1000.0 + 1.5
    # SIGTERM just after the call started to block: the read in flight waits
    # out its timeout, then the daemon leaves the stuck thread behind.
    with Daemon(hang_config([1, 2]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        start_hang(d, fake)
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM, timeout=limit)
        took = time.monotonic() - t0
        if rc != 0:
            fail("exit %s with a hung call:\n%s" % (rc, d.log()))
        if "libwlmData call GetFrequencyNum still blocked at close" not in d.log():
            fail("stuck thread not logged at close:\n" + d.log())
        print("     exit %.2f s after SIGTERM, read in flight" % took)
    # SIGTERM once the device is known to be hung (reads fail at once).
    fake = Fake(freqs="1:384.2281")
    with Daemon(hang_config([1]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        start_hang(d, fake)
        wait_status(d, "L1", "error", detail=HANG_DETAIL, timeout=5)
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM, timeout=limit)
        if rc != 0:
            fail("exit %s with a hung call:\n%s" % (rc, d.log()))
        print("     exit %.2f s after SIGTERM, device hung" % (time.monotonic() - t0))


def test_slow_call():
    # A call slower than usual but within read_timeout_ms is no error.
    fake = Fake(freqs="1:384.2281,2:751.5", block="GetFrequencyNum:40")
    with Daemon(hang_config([1, 2]), env=fake.env) as d:
        wait_for(lambda: all(c["reads"] >= 3 for c in d.result("status")["channels"]), 20,
                 "3 reads of each channel")
        chans = d.result("status")["channels"]
        if any(c["errors"] for c in chans):
            fail("errors with a slow call: %r\n%s" % (chans, d.log()))


def test_hang_at_start():
    # The server accepts nothing at start-up: the daemon gives up after
    # read_timeout_ms instead of hanging in open().
    fake = Fake(block="GetWLMCount:hang")
    t0 = time.monotonic()
    start_fails(hang_config([1]), fake,
                ["libwlmData call GetWLMCount did not return within %d ms (wlmDataServer "
                 "unreachable?)" % HANG_TIMEOUT_MS])
    took = time.monotonic() - t0
    if took > HANG_TIMEOUT_MS / 1000.0 + 1.5:
        fail("start-up failure took %.2f s" % took)


def test_missing_library():
    fake = Fake()
    path = os.path.join(fake.dir, "nowhere", "libwlmData.so")
    start_fails(hf_config([1], library=path), fake,
                ["wavemeter: cannot load %s: " % path,
                 "(install the HighFinesse Linux library or set wavemeter.library)"])


def test_missing_symbol():
    # Any shared library without the vendor's functions: the C library.
    with open("/proc/self/maps") as f:
        libc = next(l.split()[-1] for l in f if re.search(r"/libc[.-][^/]*so", l))
    start_fails(hf_config([1], library=libc), Fake(), ["has no function GetWLMCount"])


def test_no_server():
    fake = Fake(count=0)
    start_fails(hf_config([1]), fake,
                ["no wavemeter server (GetWLMCount = 0): is wlmDataServer running and "
                 "wlmData.ini pointing at it?"])


def test_errormode_warning():
    fake = Fake(freqs="1:384.2281")
    ini_dir = os.path.join(fake.home, ".config", "HighFinesse")
    os.makedirs(ini_dir)
    with open(os.path.join(ini_dir, "wlmData.ini"), "w") as f:
        f.write("[default]\naddress = 192.0.2.7\nport=7171\nerrormode = 9\n")
    with Daemon(hf_config([1]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        log = d.log()
        if not re.search(r"wlmData.ini:4: errormode=9 has the 8 bit set", log):
            fail("no errormode warning:\n" + log)
        if "server address 192.0.2.7, port 7171" not in log:
            fail("ini settings not logged:\n" + log)


def test_sim_methods_absent():
    fake = Fake(freqs="1:384.2281")
    with Daemon(hf_config([1]), env=fake.env) as d:
        for m in ("sim.fault", "sim.disconnect", "sim.connect", "sim.mode_hop"):
            e = d.call(m, {"laser": "L1", "fault": "none"} if m == "sim.fault" else None)["error"]
            if e["code"] != -32601:
                fail("%s with driver highfinesse: %r" % (m, e))


def reads_per_s(d, seconds=2.0):
    """Reads per second of each laser over a window, from status."""
    r0 = {c["laser"]: c["reads"] for c in d.result("status")["channels"]}
    t0 = time.monotonic()
    time.sleep(seconds)  # a measurement window, not a wait for a condition
    r1 = {c["laser"]: c["reads"] for c in d.result("status")["channels"]}
    dt = time.monotonic() - t0
    return {k: (r1[k] - r0[k]) / dt for k in r0}


def always_due(cfg):
    for l in cfg["lasers"]:
        l["max_age_ms"] = 1
    return cfg


def test_channel_error_stays_on_its_channel():
    # One laser out of range (ErrOutOfRange on its channel only): it reads
    # as an error, the meter does not back off, the others' rate holds, and
    # the log has one line for it, not one per cycle.
    fake = Fake(freqs="1:384.1,2:751.5,3:346.0,4:350.8")
    with Daemon(always_due(hf_config([1, 2, 3, 4])), env=fake.env) as d:
        for laser in ("L1", "L2", "L3", "L4"):
            wait_status(d, laser, "ok")
        before = reads_per_s(d)
        fake.set(freqs="1:384.1,2:751.5,3:346.0,4:-14")
        wait_status(d, "L4", "error", detail="ErrOutOfRange (-14)")
        after = reads_per_s(d)
        for laser in ("L1", "L2", "L3"):
            if abs(after[laser] - before[laser]) > 0.1 * before[laser]:
                fail("%s: %.2f reads/s before, %.2f with L4 out of range" %
                     (laser, before[laser], after[laser]))
        st = d.result("status")
        if st["driver"]["state"] == "error":
            fail("one channel's error put the meter in back-off: %r" % st["driver"])
        n = d.log().count("channel 4 (L4): error")
        if n != 1:
            fail("%d log lines for L4's condition, want 1:\n%s" % (n, d.log()))
        print("     out of range on L4: L1..L3 at %s reads/s before, %s after" %
              (["%.2f" % before[k] for k in ("L1", "L2", "L3")],
               ["%.2f" % after[k] for k in ("L1", "L2", "L3")]))


def test_each_measurement_once():
    # One laser, never switched: every measurement reaches the clients once
    # (read-once results), so reads come at most once per measurement period.
    fake = Fake(freqs="1:384.2281")
    with Daemon(hf_config([1]), env=fake.env) as d:
        wait_status(d, "L1", "ok")
        rate = reads_per_s(d)["L1"]
        period_s = (5 + 12) / 1000.0  # exposure_ms 5 + the fake's readout
        if rate > 1.05 / period_s or rate < 0.5 / period_s:
            fail("%.1f reads/s with a measurement every %.0f ms" % (rate, period_s * 1e3))
        calls = [c for c in fake.calls() if c[0] == "Instantiate"]
        if not calls or calls[0][1:3] != ["0", "1"]:
            fail("read-once mode not asked for: %r" % calls)
        r = reading(d, "L1")
        # Stamped at its measurement, not when fetched: older than one period.
        if r["age_ms"] < 17:
            fail("age_ms %.1f: stamped at the fetch, not the measurement" % r["age_ms"])
    # Closed: the return mode is put back.
    calls = [c for c in fake.calls() if c[0] == "Instantiate"]
    if calls[-1][1:3] != ["0", "0"]:
        fail("return mode not restored at exit: %r" % calls[-3:])


def test_auto_exposure_read_back():
    fake = Fake(freqs="1:384.2281,2:751.5", auto_exposure="1:37")
    cfg = hf_config([1, 2])
    cfg["lasers"][0]["highfinesse"] = {"auto_exposure": True}
    cfg["lasers"][1]["highfinesse"] = {"exposure2_ms": 7}
    with Daemon(cfg, env=fake.env) as d:
        r1 = wait_status(d, "L1", "ok")
        r2 = wait_status(d, "L2", "ok")
        if r1["exposure_ms"] != 37:
            fail("auto-exposure not read back: %r" % r1)
        if r2["exposure_ms"] != 5:
            fail("fixed exposure: %r" % r2)
    calls = fake.calls()
    if ["SetExposureModeNum", "1", "1", "=", "0"] not in calls:
        fail("auto-exposure not switched on: %r" % [c for c in calls if "Exposure" in c[0]])
    if not any(c[:4] == ["SetExposureNum", "2", "2", "7"] for c in calls):
        fail("second array's exposure not set: %r" % [c for c in calls if "Exposure" in c[0]])


def test_start_checks_against_the_instrument():
    fake = Fake(freqs="1:384.2281", channels=4)
    start_fails(hf_config([1, 6]), fake, ["on channel 6", "has 4 channels"])
    fake = Fake(freqs="1:384.2281", expo_min=10)
    start_fails(hf_config([1]), fake, ["exposure_ms 5 is outside", "10..9999"])


def test_cycling_switch_mode():
    # The instrument cycles through the lasers by itself and files each
    # result under its channel: every reading is its own laser's, each laser
    # is read about once per cycle (no results thrown away), and the mode the
    # switch had is put back at exit.
    fake = Fake(freqs="1:384.1,2:751.5,4:346.0")
    cfg = always_due(hf_config([1, 2, 4]))
    cfg["wavemeter"]["switch_mode"] = "cycling"
    with Daemon(cfg, env=fake.env) as d:
        for laser in ("L1", "L2", "L4"):
            wait_status(d, laser, "ok")
        rates = reads_per_s(d)
        cycle_s = 3 * (5 + 12) / 1000.0
        # Stamped at the measurement (the instrument's tick of it, through
        # its notifications), not at the fetch: a result is fetched at least
        # the readout and two measurements after its exposure.
        ages = []
        for _ in range(10):
            ages.append(reading(d, "L2")["age_ms"])
            time.sleep(0.013)  # spread the samples over the cycle
        if min(ages) < 2 * 17 + 12:
            fail("ages %r: a reading stamped when fetched, not when measured" % ages)
        for laser, thz in (("L1", 384.1), ("L2", 751.5), ("L4", 346.0)):
            samples = d.result("history", {"laser": laser})["samples"]
            bad = [x for x in samples if x["status"] != "ok" or abs(x["frequency_thz"] - thz) > 1e-9]
            if bad:
                fail("%s: readings of another laser: %r" % (laser, bad[:3]))
            if rates[laser] < 0.6 / cycle_s:
                fail("%s read %.1f times a second, the cycle is %.0f ms" %
                     (laser, rates[laser], cycle_s * 1e3))
    calls = fake.calls()
    if ["SetSwitcherMode", "1", "=", "0"] not in calls:
        fail("cycling not started: %r" % [c for c in calls if "Switcher" in c[0]])
    if any(c[0] == "SetSwitcherChannel" for c in calls):
        fail("the switch was moved by hand while cycling")
    used = sorted(int(c[1]) for c in calls if c[0] == "SetSwitcherSignalStates" and c[2] == "1")
    if used != [1, 2, 4]:
        fail("channels in use %r, want [1, 2, 4]" % used)
    modes = [c for c in calls if c[0] in ("GetSwitcherMode", "SetSwitcherMode")]
    if modes[0][0] != "GetSwitcherMode" or modes[-1][:2] != ["SetSwitcherMode", modes[0][-1]]:
        fail("switch mode not put back at exit: %r" % modes)
    print("     cycling: %s reads/s (cycle %.0f ms)" %
          (["%.1f" % rates[k] for k in ("L1", "L2", "L4")], cycle_s * 1e3))


def test_instant_channel_error_not_hammered():
    # The instrument answers at once, every call, that the channel is not
    # there (it lost channels at run time): the meter holds that laser back
    # (250 ms doubling to 5 s) instead of asking thousands of times a second.
    fake = Fake(freqs="2:384.1")
    with Daemon(hf_config([2]), env=fake.env) as d:
        wait_status(d, "L2", "ok")
        fake.set(freqs="2:384.1", channels=1)
        wait_status(d, "L2", "error", detail="ErrChannelNotAvailable (-10)")
        n0 = len(fake.calls())
        rate = reads_per_s(d)["L2"]
        calls = len(fake.calls()) - n0
        if rate > 5 or calls > 100:
            fail("%.1f reads/s, %d vendor calls in 2 s for a missing channel" % (rate, calls))
        if d.result("status")["driver"]["state"] == "error":
            fail("a channel error backed the meter off")
        fake.set(freqs="2:384.1")
        wait_status(d, "L2", "ok", timeout=15)


run_tests([
    ("reading", test_reading),
    ("statuses", test_statuses),
    ("vendor_error_and_recovery", test_vendor_error_and_recovery),
    ("switching", test_switching),
    ("straddle", test_straddle),
    ("switch_error", test_switch_error),
    ("hang_times_out", test_hang_times_out),
    ("hang_recovers", test_hang_recovers),
    ("hang_sigterm", test_hang_sigterm),
    ("slow_call", test_slow_call),
    ("hang_at_start", test_hang_at_start),
    ("missing_library", test_missing_library),
    ("missing_symbol", test_missing_symbol),
    ("no_server", test_no_server),
    ("errormode_warning", test_errormode_warning),
    ("sim_methods_absent", test_sim_methods_absent),
    ("channel_error_stays_on_its_channel", test_channel_error_stays_on_its_channel),
    ("each_measurement_once", test_each_measurement_once),
    ("auto_exposure_read_back", test_auto_exposure_read_back),
    ("start_checks_against_the_instrument", test_start_checks_against_the_instrument),
    ("cycling_switch_mode", test_cycling_switch_mode),
    ("instant_channel_error_not_hammered", test_instant_channel_error_not_hammered),
])
