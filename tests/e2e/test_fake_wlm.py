#!/usr/bin/env python3
"""The fake libwlmData.so (tests/fakes/fake_wlmdata.c, path in $FAKE_WLM_LIB)
driven directly through ctypes, no daemon: it must behave as an instrument
with its own clock, so that the driver tests built on it mean something.
Every test loads a private copy of the library, hence a fresh instrument."""
import ctypes
import os
import shutil
import tempfile
import threading
import time

from wmd import fail, run_tests

LIB = os.environ.get("FAKE_WLM_LIB", "build/tests/libwlmData.so")

# In the ASan build the fake library is instrumented, and the ASan runtime
# must be the first library in the process: Python itself is not built with
# it, so the test runs again with the runtime preloaded (leak checks off:
# the interpreter keeps memory to the end).
if os.environ.get("WMD_SANITIZED") == "1" and "libasan" not in os.environ.get("LD_PRELOAD", ""):
    import subprocess
    import sys
    runtime = subprocess.run([os.environ.get("CC", "gcc"), "-print-file-name=libasan.so"],
                             capture_output=True, text=True).stdout.strip()
    if runtime and os.path.exists(runtime):
        env = dict(os.environ, LD_PRELOAD=runtime,
                   ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)

C = 299792.458  # nm * THz
ErrWlmMissing, ErrChannelNotAvailable, ErrParameterOutOfRange = -5, -10, -28
ErrNoValueYet, ErrNoNewValueYet = -32, -33
ResERR_WlmMissing, ResERR_ParmOutOfRange = -1, -3
cInstReturnMode, cInstNotification = 0, 1
cNotifyRemoveCallback, cNotifyInstallCallbackEx = 1, 4
cmiWavelength1, cmiWavelength2 = 42, 43
CMI_WAVELENGTH = {1: 42, 2: 43, 3: 90, 4: 91}
cmiSwitcherChannel, cmiTimePerMeasurement = 203, 1514
READOUT_MS = 12  # the fake's default

i32, dbl = ctypes.c_int32, ctypes.c_double
i32p = ctypes.POINTER(i32)
PROTOTYPES = {
    "Instantiate": (ctypes.c_ssize_t, [i32, i32, ctypes.c_void_p, i32]),
    "GetWLMCount": (i32, [i32]),
    "GetWLMVersion": (i32, [i32]),
    "GetOperationState": (ctypes.c_uint16, [ctypes.c_uint16]),
    "GetChannelsCount": (i32, [i32]),
    "GetFrequencyNum": (dbl, [i32, dbl]),
    "GetWavelengthNum": (dbl, [i32, dbl]),
    "SetExposureNum": (i32, [i32, i32, i32]),
    "GetExposureNum": (i32, [i32, i32, i32]),
    "GetExposureRange": (i32, [i32]),
    "SetExposureModeNum": (i32, [i32, ctypes.c_bool]),
    "GetExposureModeNum": (i32, [i32, ctypes.c_bool]),
    "GetSwitcherMode": (i32, [i32]),
    "SetSwitcherMode": (i32, [i32]),
    "GetSwitcherChannel": (i32, [i32]),
    "SetSwitcherChannel": (i32, [i32]),
    "GetSwitcherSignalStates": (i32, [i32, i32p, i32p]),
    "SetSwitcherSignalStates": (i32, [i32, i32, i32]),
    "SetDeviationSignalNum": (i32, [i32, dbl]),
    "GetDeviationSignalNum": (dbl, [i32, dbl]),
}
CALLBACK = ctypes.CFUNCTYPE(None, i32, i32, i32, dbl, i32)


class Wlm:
    """A fresh fake instrument: a private copy of the library (its own state
    and clock), scripted through its control file, calls logged."""

    def __init__(self, **knobs):
        self.dir = tempfile.mkdtemp(prefix="wmd-fake-wlm-")
        self.control = os.path.join(self.dir, "control")
        self.log = os.path.join(self.dir, "calls.log")
        self.set(**knobs)
        for k in [k for k in os.environ if k.startswith("FAKE_WLM_") and k != "FAKE_WLM_LIB"]:
            del os.environ[k]
        os.environ["FAKE_WLM_CONTROL"] = self.control
        os.environ["FAKE_WLM_LOG"] = self.log
        path = os.path.join(self.dir, "libwlmData.so")
        shutil.copy(LIB, path)
        self.lib = ctypes.CDLL(path)
        for name, (res, args) in PROTOTYPES.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = res, args
        self.events = []  # (mode, intval, dblval, res1, ver, monotonic s)
        self.cond = threading.Condition()
        self._cb = None

    def set(self, **knobs):
        """Replace the control file atomically (its mtime dates the change)."""
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            for k, v in knobs.items():
                f.write("FAKE_WLM_%s=%s\n" % (k.upper(), v))
        os.rename(tmp, self.control)

    def __getattr__(self, name):
        return getattr(self.lib, name)

    def install(self, on_event=None):
        def cb(ver, mode, intval, dblval, res1):
            extra = on_event(mode) if on_event else None
            with self.cond:
                self.events.append((mode, intval, dblval, res1, ver, time.monotonic(), extra))
                self.cond.notify_all()
        self._cb = CALLBACK(cb)
        r = self.lib.Instantiate(cInstNotification, cNotifyInstallCallbackEx,
                                 ctypes.cast(self._cb, ctypes.c_void_p), 0)
        if r == 0:
            fail("Instantiate(install callback) = 0")

    def remove(self):
        if self.lib.Instantiate(cInstNotification, cNotifyRemoveCallback, None, 0) == 0:
            fail("Instantiate(remove callback) = 0")

    def wait_events(self, pred, timeout, what):
        """The events once pred(events) holds; fail after timeout s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("timed out after %.1f s waiting for %s; events %r" %
                         (timeout, what, self.events[-10:]))
                self.cond.wait(left)
            return list(self.events)

    def read_once(self, on):
        if self.lib.Instantiate(cInstReturnMode, 1 if on else 0, None, 0) != 1:
            fail("Instantiate(cInstReturnMode, %d) did not return 1" % on)

    def signal_states(self, ch):
        """GetSwitcherSignalStates(ch) as (result, use, show)."""
        use, show = i32(-1), i32(-1)
        r = self.lib.GetSwitcherSignalStates(ch, ctypes.byref(use), ctypes.byref(show))
        return r, use.value, show.value

    def calls(self):
        with open(self.log) as f:
            return [line.split() for line in f.read().splitlines()]


def spin_until(cond, timeout, what, pause=0.0005):
    """Poll cond() with hardly any delay until it returns a true value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(pause)


def collect(w, ch, n, timeout, fn="GetFrequencyNum"):
    """In read-once mode: the next n results of ch as (monotonic s, value)
    (0, ErrNoValue, is "nothing new" with FAKE_WLM_NEW_ERRORS=0)."""
    out = []
    get = getattr(w, fn)
    deadline = time.monotonic() + timeout

    while len(out) < n:
        v = get(ch, 0)
        if v not in (ErrNoValueYet, ErrNoNewValueYet, 0):
            out.append((time.monotonic(), v))
        if time.monotonic() > deadline:
            fail("%d of %d results of channel %d in %.1f s: %r" % (len(out), n, ch, timeout, out))
        time.sleep(0.0005)
    return out


def near(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(b))


def wavelengths(events, mode):
    return [e for e in events if e[0] == mode]


def test_period():
    # P = exposure1 + exposure2 + readout, from the exposures of the channel
    # under the switch: 25 + 5 + 10 = 40 ms.
    w = Wlm(freqs="1:384.1", readout_ms=10)
    if w.SetExposureNum(1, 1, 25) != 0 or w.SetExposureNum(1, 2, 5) != 0:
        fail("SetExposureNum refused")
    if (w.GetExposureNum(1, 1, 0), w.GetExposureNum(1, 2, 0)) != (25, 5):
        fail("exposures read back %r" % ((w.GetExposureNum(1, 1, 0), w.GetExposureNum(1, 2, 0)),))
    w.read_once(True)
    got = collect(w, 1, 10, 3)[2:]  # the first may still be of the old exposure
    times = [t for t, _ in got]
    gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
    mean = (times[-1] - times[0]) * 1e3 / len(gaps)
    if not 38 <= mean <= 43 or min(gaps) < 20:
        fail("results every %.1f ms on average, gaps %r; want 40" % (mean, [round(g) for g in gaps]))
    if any(v != 384.1 for _, v in got):
        fail("values %r" % got)
    # The default mode answers the newest result on every call.
    w.read_once(False)
    if [w.GetFrequencyNum(1, 0) for _ in range(3)] != [384.1] * 3:
        fail("latest mode does not repeat the newest result")
    print("     one result per %.1f ms (P 40 ms)" % mean)


def test_read_once():
    w = Wlm(freqs="1:384.1")
    w.SetExposureNum(1, 1, 20)  # P 32 ms
    if w.GetFrequencyNum(2, 0) != ErrNoValueYet:
        fail("a channel never measured: %r" % w.GetFrequencyNum(2, 0))
    w.read_once(True)
    collect(w, 1, 1, 2)
    values, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.5:
        v = w.GetFrequencyNum(1, 0)
        if v == 384.1:
            values += 1
            t = time.monotonic()
            again = w.GetFrequencyNum(1, 0)
            if again != ErrNoNewValueYet and time.monotonic() - t < 0.005:
                fail("a result returned twice in read-once mode: then %r" % again)
        elif v not in (ErrNoValueYet, ErrNoNewValueYet):
            fail("read-once got %r" % v)
        time.sleep(0.0005)
    periods = (time.monotonic() - t0) * 1e3 / 32
    if not periods - 2 <= values <= periods + 1:
        fail("%d results in %.1f periods" % (values, periods))
    # Each function has its own read mark: the wavelength of the result just
    # read as a frequency is still new.
    t, f = collect(w, 1, 1, 1)[0]
    nm = w.GetWavelengthNum(1, 0)
    if not near(nm, C / f) or w.GetWavelengthNum(1, 0) != ErrNoNewValueYet:
        fail("GetWavelengthNum after GetFrequencyNum: %r" % nm)
    # Older headers: ErrNoValue (0) for both "not yet" errors.
    w.set(freqs="1:384.1", new_errors=0)
    collect(w, 1, 1, 1)
    if w.GetFrequencyNum(1, 0) != 0 or w.GetFrequencyNum(2, 0) != 0:
        fail("NEW_ERRORS=0: %r %r" % (w.GetFrequencyNum(1, 0), w.GetFrequencyNum(2, 0)))
    w.read_once(False)
    if w.GetFrequencyNum(1, 0) != 384.1 or w.GetFrequencyNum(1, 0) != 384.1:
        fail("Instantiate(0, 0) did not restore the latest mode")
    print("     %d results in %.1f periods, each once" % (values, periods))


def test_switch_trap():
    # Two lasers: right after SetSwitcherChannel(2) the newest results are
    # channel 1's light, reported under channel 2.
    w = Wlm(freqs="1:384.1,2:751.5")
    if w.SetSwitcherMode(0) != 0:  # manual: the trap is manual mode's
        fail("SetSwitcherMode(0) refused")
    w.SetExposureNum(1, 1, 40)
    w.SetExposureNum(2, 1, 40)  # P 52 ms
    spin_until(lambda: w.GetFrequencyNum(1, 0) == 384.1, 2, "a result of channel 1")
    if w.SetSwitcherChannel(2) != 0 or w.GetSwitcherChannel(0) != 2:
        fail("switch did not move")
    first = spin_until(lambda: (lambda v: v if v != ErrNoValueYet else None)(w.GetFrequencyNum(2, 0)),
                       1, "a result under channel 2", pause=0)
    if first != 384.1:
        fail("zero-delay poll after the switch got %r, not channel 1's light" % first)
    # Read-once: the measurement under way when the switch moved and the two
    # in the pipeline (depth 3) hold the old light; the next is the new one.
    w.read_once(True)  # the result just seen counts as read
    got = collect(w, 2, 5, 3)
    values = [v for _, v in got]
    n_old = len([v for v in values if v == 384.1])
    if values != [384.1] * n_old + [751.5] * (5 - n_old) or not 1 <= n_old <= 2:
        fail("after the switch: %r" % values)
    # The same through the callback, which misses nothing: exactly depth old
    # results, for each depth (FAKE_WLM_PIPELINE is the old name).
    for knobs, depth in (({}, 3), ({"pipeline_depth": 1}, 1), ({"pipeline": 2}, 2),
                         ({"pipeline_depth": 4, "pipeline": 2}, 4)):
        w = Wlm(freqs="1:384.1,2:751.5", **knobs)
        w.SetSwitcherMode(0)
        w.SetExposureNum(1, 1, 8)
        w.SetExposureNum(2, 1, 8)  # P 20 ms
        w.install()
        w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength1)) >= 2, 2, "results of 1")
        w.SetSwitcherChannel(2)
        ev = w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength2)) >= depth + 3, 2,
                           "results under 2")
        w.remove()
        nms = [round(e[2], 6) for e in wavelengths(ev, cmiWavelength2)]
        want = [round(C / 384.1, 6)] * depth + [round(C / 751.5, 6)] * 3
        if nms[:depth + 3] != want:
            fail("%r: results under channel 2 %r, want %r" % (knobs, nms, want))
    print("     first read after the switch: %.4f THz (channel 1's light)" % first)


def test_channel_errors():
    # A FREQS entry <= 0 is what a measurement of that light yields.
    w = Wlm(freqs="1:384.1,2:-14,3:-3,4:0")
    for ch in (1, 2, 3, 4):
        w.SetExposureNum(ch, 1, 5)
    spin_until(lambda: w.GetFrequencyNum(1, 0) == 384.1, 2, "channel 1")
    for ch, want in ((2, -14), (3, -3), (4, 0)):
        w.SetSwitcherChannel(ch)
        spin_until(lambda: w.GetFrequencyNum(ch, 0) == want, 2, "channel %d to read %d" % (ch, want))
        if w.GetWavelengthNum(ch, 0) != want:
            fail("GetWavelengthNum(%d) = %r" % (ch, w.GetWavelengthNum(ch, 0)))
        if w.GetFrequencyNum(1, 0) != 384.1 or not near(w.GetWavelengthNum(1, 0), C / 384.1):
            fail("channel 1 changed by channel %d's error: %r" % (ch, w.GetFrequencyNum(1, 0)))
    for ch, want in ((5, ErrNoValueYet), (9, ErrChannelNotAvailable), (0, ErrChannelNotAvailable)):
        if w.GetFrequencyNum(ch, 0) != want:
            fail("GetFrequencyNum(%d) = %r, want %d" % (ch, w.GetFrequencyNum(ch, 0), want))


def test_auto_exposure():
    w = Wlm(freqs="1:384.1,2:751.5", auto_exposure="2:50")
    w.SetExposureNum(1, 1, 20)
    w.install()
    w.wait_events(lambda ev: (cmiTimePerMeasurement, 32) in [e[:2] for e in ev], 2, "P 32 ms")
    if w.SetExposureModeNum(1, True) != 0 or w.GetExposureModeNum(1, False) != 1:
        fail("auto exposure not set")
    if w.GetExposureNum(1, 1, 0) != 37:
        fail("auto exposure of channel 1 reads %d, want the default 37" % w.GetExposureNum(1, 1, 0))
    w.wait_events(lambda ev: (cmiTimePerMeasurement, 37 + READOUT_MS) in [e[:2] for e in ev], 2,
                  "P from the auto exposure")
    w.SetExposureModeNum(2, True)
    if w.GetExposureNum(2, 1, 0) != 50:
        fail("AUTO_EXPOSURE 2:50 reads %d" % w.GetExposureNum(2, 1, 0))
    w.SetSwitcherChannel(2)
    w.wait_events(lambda ev: (cmiTimePerMeasurement, 50 + READOUT_MS) in [e[:2] for e in ev], 2,
                  "P of channel 2")
    w.SetSwitcherChannel(1)
    n = len(w.events)
    if w.SetExposureModeNum(1, False) != 0 or w.GetExposureModeNum(1, False) != 0:
        fail("auto exposure not cleared")
    if w.GetExposureNum(1, 1, 0) != 20:
        fail("manual exposure not back: %d" % w.GetExposureNum(1, 1, 0))
    w.wait_events(lambda ev: (cmiTimePerMeasurement, 32) in [e[:2] for e in ev[n:]], 2,
                  "P back to 32 ms")
    w.remove()


def test_notifications():
    w = Wlm(freqs="1:384.1,2:751.5", serial=777)
    w.SetSwitcherMode(0)
    w.SetExposureNum(1, 1, 20)  # P 32
    w.SetExposureNum(2, 1, 30)  # P 42
    spin_until(lambda: w.GetFrequencyNum(1, 0) == 384.1, 2, "a result of channel 1")
    # The callback calls back into the library: no lock may be held.
    w.install(on_event=lambda mode: w.GetSwitcherChannel(0))
    ev = w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength1)) >= 6, 2, "6 results of 1")
    if ev[0][:2] != (cmiTimePerMeasurement, 32):
        fail("first event %r, want cmiTimePerMeasurement 32" % (ev[0],))
    if any(e[4] != 777 for e in ev):
        fail("ver is not the serial: %r" % ev[:3])
    w1 = wavelengths(ev, cmiWavelength1)
    ticks = [e[1] for e in w1]
    if any(not near(e[2], C / 384.1) or e[3] != 0 for e in w1):
        fail("cmiWavelength1 events %r" % w1)
    if any(not 31 <= b - a <= 33 for a, b in zip(ticks, ticks[1:])):
        fail("ticks %r not one period (32 ms) apart" % ticks)
    # Ticks are the instrument's ms, not our clock, but they run at its rate.
    span_tick, span_s = ticks[-1] - ticks[0], w1[-1][5] - w1[0][5]
    if abs(span_tick - span_s * 1e3) > 20:
        fail("%d ms of ticks delivered over %.0f ms" % (span_tick, span_s * 1e3))
    if w.SetSwitcherChannel(2) != 0:
        fail("switch refused")
    ev = w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength2)) >= 5, 2, "results of 2")
    sw = [e for e in ev if e[0] == cmiSwitcherChannel]
    if len(sw) != 1 or sw[0][1] != 2 or sw[0][2] != 0 or sw[0][3] < ticks[-1]:
        fail("switch events %r (last result tick %d)" % (sw, ticks[-1]))
    w2 = wavelengths(ev, cmiWavelength2)
    if [near(e[2], C / 384.1) for e in w2[:4]] != [True, True, True, False] or \
            not near(w2[3][2], C / 751.5):
        fail("results under channel 2 %r" % [e[2] for e in w2])
    if w2[0][1] >= sw[0][3]:
        fail("the first result under 2 (tick %d) was exposed after the switch (%d)" %
             (w2[0][1], sw[0][3]))
    periods = [e[1] for e in ev if e[0] == cmiTimePerMeasurement]
    if periods[-1] != 42:
        fail("cmiTimePerMeasurement after the switch %r, want 42 last" % periods)
    if any(e[6] not in (1, 2) for e in ev):
        fail("GetSwitcherChannel from the callback: %r" % [e[6] for e in ev])
    w.remove()
    n = len(w.events)
    time.sleep(0.15)  # absence cannot be waited for: about 4 periods
    if len(w.events) != n:
        fail("callbacks after the callback was removed: %r" % w.events[n:])
    print("     %d events; ticks %d..%d; switch at tick %d" %
          (n, ticks[0], w2[-1][1], sw[0][3]))


def test_cycling():
    # The instrument's own switch mode: channels 1, 2 and 4 in use, each with
    # its own exposure (P 22, 32 and 47 ms) and 6 ms of dead time per move:
    # one result per channel every 22 + 32 + 47 + 3 * 6 = 119 ms, each filed
    # under the channel it measured.
    freqs = {1: 384.1, 2: 751.5, 3: 500.2, 4: 300.3}
    w = Wlm(freqs=",".join("%d:%s" % kv for kv in freqs.items()), cycle_switch_ms=6)
    period = {1: 10 + READOUT_MS, 2: 20 + READOUT_MS, 3: 10 + READOUT_MS, 4: 35 + READOUT_MS}
    cycle = period[1] + period[2] + period[4] + 3 * 6
    order = {1: 2, 2: 4, 4: 1}  # the next channel in use
    if w.SetSwitcherMode(0) != 0 or w.GetSwitcherMode(0) != 0:
        fail("SetSwitcherMode(0)")
    for ch in (1, 2, 4):
        w.SetExposureNum(ch, 1, period[ch] - READOUT_MS)
    if [w.signal_states(ch) for ch in range(1, 9)] != [(0, 0, 0)] * 8:
        fail("a channel in use by default: %r" % [w.signal_states(ch) for ch in range(1, 9)])
    for args, want in (((1, 1, 1), 0), ((2, 1, 1), 0), ((4, 1, 1), 0), ((3, 0, 1), 0),
                       ((9, 1, 1), ResERR_ParmOutOfRange), ((0, 1, 1), ResERR_ParmOutOfRange)):
        if w.SetSwitcherSignalStates(*args) != want:
            fail("SetSwitcherSignalStates%r = %d, want %d" %
                 (args, w.SetSwitcherSignalStates(*args), want))
    if [w.signal_states(ch) for ch in (1, 3, 4, 5, 9)] != \
            [(0, 1, 1), (0, 0, 1), (0, 1, 1), (0, 0, 0), (ErrChannelNotAvailable, -1, -1)]:
        fail("signal states %r" % [w.signal_states(ch) for ch in (1, 3, 4, 5, 9)])
    w.SetSwitcherSignalStates(3, 0, 0)
    w.install()
    w.read_once(True)
    if w.SetSwitcherMode(1) != 0 or w.GetSwitcherMode(0) != 1:
        fail("SetSwitcherMode(1)")
    got = {ch: [] for ch in freqs}
    deadline = time.monotonic() + 3
    while any(len(got[ch]) < 9 for ch in (1, 2, 4)):
        for ch in freqs:
            v = w.GetFrequencyNum(ch, 0)
            if v not in (ErrNoValueYet, ErrNoNewValueYet):
                got[ch].append((time.monotonic(), v))
        if time.monotonic() > deadline:
            fail("results in 3 s: %r" % {ch: len(r) for ch, r in got.items()})
        time.sleep(0.0005)
    if got[3]:
        fail("channel 3, not in use, got %r" % got[3])
    means = {}
    for ch in (1, 2, 4):
        if any(v != freqs[ch] for _, v in got[ch]):
            fail("channel %d read %r, want its own %r" % (ch, [v for _, v in got[ch]], freqs[ch]))
        times = [t for t, _ in got[ch][2:]]  # the first may be of before the cycling
        gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
        means[ch] = (times[-1] - times[0]) * 1e3 / len(gaps)
        if not 0.9 * cycle <= means[ch] <= 1.1 * cycle or min(gaps) < cycle / 2:
            fail("channel %d: a result every %.1f ms, gaps %r; want %d" %
                 (ch, means[ch], [round(g) for g in gaps], cycle))
    ev = list(w.events)
    sw = [(e[1], e[3]) for e in ev if e[0] == cmiSwitcherChannel]
    if len(sw) < 20 or sw[0][0] != 2 or any(b[0] != order[a[0]] for a, b in zip(sw, sw[1:])):
        fail("switch moves %r, want 2, 4, 1, 2, ..." % [c for c, _ in sw])
    # On the instrument's clock: a move, its dead time, the channel's P.
    bad = [(a, b) for a, b in zip(sw, sw[1:]) if abs(b[1] - a[1] - 6 - period[a[0]]) > 1]
    if bad:
        fail("moves (channel, tick) not a dead time and a P apart: %r" % bad[:5])
    nm = {mode: freqs[ch] for ch, mode in CMI_WAVELENGTH.items()}
    results = [e for e in ev if e[0] in nm]
    wrong = [e[:3] for e in results if not near(e[2], C / nm[e[0]])]
    if wrong or CMI_WAVELENGTH[3] in [e[0] for e in results] or len(results) < 27:
        fail("cmiWavelengthN events: %d, wrong %r" % (len(results), wrong[:5]))
    if not {period[1], period[2], period[4]} <= {e[1] for e in ev if e[0] == cmiTimePerMeasurement}:
        fail("cmiTimePerMeasurement %r" % [e[1] for e in ev if e[0] == cmiTimePerMeasurement])
    # SetSwitcherChannel while cycling: the next measurement is of the
    # channel set, even one not in use, and the cycle goes on from there.
    # The loop above ended just after a result, i.e. a measurement's end:
    # 15 ms later the next one (P >= 22 ms) is under way, past its dead time.
    time.sleep(0.015)
    if w.SetSwitcherChannel(3) != 0:
        fail("SetSwitcherChannel(3) while cycling")
    _, v = collect(w, 3, 1, 2)[0]

    def moves(ev):
        return [e[1] for e in ev if e[0] == cmiSwitcherChannel]
    ev = w.wait_events(lambda ev: 3 in moves(ev)[:-1], 2, "a move after the one to 3")
    after = moves(ev)[moves(ev).index(3) + 1:]
    if v != freqs[3] or after[:1] != [4]:
        fail("after SetSwitcherChannel(3): channel 3 read %r, then moves %r" % (v, after))
    time.sleep(0.25)  # absence cannot be waited for: about 2 cycles
    if w.GetFrequencyNum(3, 0) != ErrNoNewValueYet:
        fail("channel 3 measured again")
    # Manual mode again: the switch stays, only its channel gets results.
    if w.SetSwitcherMode(0) != 0 or w.GetSwitcherMode(0) != 0:
        fail("SetSwitcherMode(0) while cycling")
    here = w.GetSwitcherChannel(0)
    time.sleep(0.05)  # moves made before the call may still be on their way
    n = len(moves(w.events))
    for ch in freqs:
        w.GetFrequencyNum(ch, 0)  # read-once: what the pipeline held is taken
    time.sleep(0.3)  # absence cannot be waited for: about 2.5 cycles
    if moves(w.events)[n:] or w.GetSwitcherChannel(0) != here:
        fail("the switch moved in manual mode: %r, now on %d" %
             (moves(w.events)[n:], w.GetSwitcherChannel(0)))
    news = {ch: w.GetFrequencyNum(ch, 0) for ch in freqs}
    want = {ch: freqs[ch] if ch == here else ErrNoNewValueYet for ch in freqs}
    if news != want:
        fail("after SetSwitcherMode(0) on channel %d: %r" % (here, news))
    w.remove()
    print("     a result every %s ms (cycle %d ms), %d moves" %
          ("/".join("%.1f" % means[ch] for ch in (1, 2, 4)), cycle, len(sw)))


def test_exposure_range():
    w = Wlm()
    if [w.GetExposureRange(i) for i in range(4)] != [1, 9999, 1, 9999]:
        fail("default range %r" % [w.GetExposureRange(i) for i in range(4)])
    w.set(expo_min=2, expo_max=2000)
    if [w.GetExposureRange(i) for i in range(4)] + [w.GetExposureRange(7)] != \
            [2, 2000, 2, 2000, ErrParameterOutOfRange]:
        fail("range %r" % [w.GetExposureRange(i) for i in range(5)])
    for args, want in (((1, 1, 1), ResERR_ParmOutOfRange), ((1, 1, 2001), ResERR_ParmOutOfRange),
                       ((1, 1, 2000), 0), ((1, 2, 2), 0), ((1, 3, 10), ResERR_ParmOutOfRange),
                       ((9, 1, 10), ResERR_ParmOutOfRange), ((0, 1, 10), ResERR_ParmOutOfRange)):
        if w.SetExposureNum(*args) != want:
            fail("SetExposureNum%r = %d, want %d" % (args, w.SetExposureNum(*args), want))
    if (w.GetExposureNum(1, 1, 0), w.GetExposureNum(1, 2, 0), w.GetExposureNum(1, 3, 0)) != \
            (2000, 2, ErrParameterOutOfRange):
        fail("exposures after refusals: %r" % w.GetExposureNum(1, 1, 0))


def test_channels():
    w = Wlm()
    if w.GetChannelsCount(0) != 8:
        fail("default channel count %d" % w.GetChannelsCount(0))
    w.set(channels=4)
    if w.GetChannelsCount(0) != 4:
        fail("CHANNELS=4: %d" % w.GetChannelsCount(0))
    for ch, want in ((5, ResERR_ParmOutOfRange), (0, ResERR_ParmOutOfRange), (4, 0)):
        if w.SetSwitcherChannel(ch) != want:
            fail("SetSwitcherChannel(%d) = %d, want %d" % (ch, w.SetSwitcherChannel(ch), want))
    if w.GetSwitcherChannel(0) != 4 or w.GetFrequencyNum(5, 0) != ErrChannelNotAvailable:
        fail("switch %d, channel 5 %r" % (w.GetSwitcherChannel(0), w.GetFrequencyNum(5, 0)))
    w.set(channels=4, switch_rc=-7)
    if w.SetSwitcherChannel(2) != -7 or w.GetSwitcherChannel(0) != 4:
        fail("SWITCH_RC: the switch moved")
    if w.GetSwitcherMode(0) != 1 or w.SetSwitcherMode(0) != 0 or w.GetSwitcherMode(0) != 0:
        fail("switcher mode")


def test_server_gone_and_back():
    w = Wlm(freqs="1:384.1")
    w.SetExposureNum(1, 1, 20)  # P 32 ms
    w.SetDeviationSignalNum(1, 250.0)
    w.install()
    w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength1)) >= 3, 2, "results")
    w.set(freqs="1:384.1", count=0)
    gets = [w.GetFrequencyNum(1, 0), w.GetWavelengthNum(1, 0), w.GetExposureNum(1, 1, 0),
            w.GetChannelsCount(0), w.GetWLMVersion(0), w.GetSwitcherChannel(0),
            w.GetSwitcherMode(0), w.GetDeviationSignalNum(1, 0), w.GetExposureRange(0),
            w.signal_states(1)[0]]
    sets = [w.SetSwitcherChannel(2), w.SetExposureNum(1, 1, 5), w.SetSwitcherMode(0),
            w.SetDeviationSignalNum(1, 0.0), w.SetExposureModeNum(1, True),
            w.SetSwitcherSignalStates(1, 1, 1)]
    if w.GetWLMCount(0) != 0 or set(gets) != {ErrWlmMissing} or set(sets) != {ResERR_WlmMissing}:
        fail("server gone: count %d, gets %r, sets %r" % (w.GetWLMCount(0), gets, sets))
    time.sleep(0.05)  # results made visible before the change may still be on their way
    n = len(w.events)
    time.sleep(0.25)  # absence cannot be waited for: about 8 periods
    if len(w.events) != n:
        fail("results while the server is gone: %r" % w.events[n:])
    w.set(freqs="1:384.1")
    w.wait_events(lambda ev: len(wavelengths(ev[n:], cmiWavelength1)) >= 4, 2,
                  "results after the server came back")
    w.remove()
    ticks = [e[1] for e in wavelengths(w.events, cmiWavelength1)]
    gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    if gap < 250:
        fail("the clock did not stop: ticks %r" % ticks)
    if w.GetFrequencyNum(1, 0) != 384.1 or w.GetDeviationSignalNum(1, 0) != 250.0:
        fail("after the server came back: %r" % w.GetFrequencyNum(1, 0))
    # Not measuring (OPSTATE) stops the clock too.
    w.read_once(True)
    collect(w, 1, 1, 1)
    w.set(freqs="1:384.1", opstate=0)
    w.GetFrequencyNum(1, 0)  # one may have come between collect and set
    time.sleep(0.15)
    if w.GetFrequencyNum(1, 0) != ErrNoNewValueYet:
        fail("a new result while not measuring")
    w.set(freqs="1:384.1")
    collect(w, 1, 1, 1)
    print("     %d ms without measurements" % gap)


def test_light_changes_dated():
    # A followed file's change is dated by its mtime, not by the next call.
    # P is 212 ms; the fibre moves after a second without calls, and a call
    # 50 ms later sees a result of a measurement that started between the
    # two: the old fibre's light, though nobody looked at the file then.
    w = Wlm()
    pos = os.path.join(w.dir, "leoni.state")
    with open(pos, "w") as f:
        f.write("position=2\n")
    w.set(freqs="1:384.1,2:384.2,3:384.3", route="1:%s" % pos)
    w.SetExposureNum(1, 1, 200)
    spin_until(lambda: w.GetFrequencyNum(1, 0) == 384.2, 5, "fibre 2's light", pause=0.01)
    time.sleep(1.0)  # the experiment: no calls
    with open(pos + ".tmp", "w") as f:
        f.write("position=3\n")
    os.rename(pos + ".tmp", pos)
    time.sleep(0.05)
    if w.GetFrequencyNum(1, 0) != 384.2:
        fail("fibre 3's light in a measurement that started before the fibre moved")
    spin_until(lambda: w.GetFrequencyNum(1, 0) == 384.3, 5, "fibre 3's light", pause=0.01)
    # An analog output moves the laser at the call (made from the callback,
    # just after a result): the next depth results have the old frequency.
    w = Wlm(freqs="1:384.1", tune="1:@analog1:25")
    w.SetExposureNum(1, 1, 8)
    seen = []

    def on_event(mode):
        if mode == cmiWavelength1:
            seen.append(mode)
            if len(seen) == 3:
                return w.SetDeviationSignalNum(1, 2000.0) == 0  # +50 MHz
        return None
    w.install(on_event)
    ev = w.wait_events(lambda ev: len(wavelengths(ev, cmiWavelength1)) >= 8, 2, "results")
    w.remove()
    w1 = wavelengths(ev, cmiWavelength1)
    if w1[2][6] is not True:
        fail("SetDeviationSignalNum from the callback failed")
    thz = [C / e[2] for e in w1[3:8]]
    if [near(f, 384.1) for f in thz] != [True] * 3 + [False] * 2 or not near(thz[3], 384.10005):
        fail("after SetDeviationSignalNum: %r" % thz)


def test_every_call_logged():
    w = Wlm(freqs="1:384.1", block="GetWLMCount:30")
    t0 = time.monotonic()
    w.GetWLMCount(0)
    if time.monotonic() - t0 < 0.03:
        fail("BLOCK did not block")
    w.set(freqs="1:384.1")
    w.read_once(True)
    w.remove()
    for name, (_, args) in PROTOTYPES.items():
        if name != "Instantiate":
            getattr(w, name)(*[ctypes.byref(i32()) if a is i32p else 1 for a in args])
    names = [c[0] for c in w.calls()]
    missing = [n for n in PROTOTYPES if n not in names]
    if missing or names[:2] != ["block", "GetWLMCount"]:
        fail("not logged: %r; log %r" % (missing, names))
    if ["Instantiate", "0", "1", "0", "0", "=", "1"] not in w.calls():
        fail("Instantiate line: %r" % [c for c in w.calls() if c[0] == "Instantiate"])


run_tests([
    ("period", test_period),
    ("read_once", test_read_once),
    ("switch_trap", test_switch_trap),
    ("channel_errors", test_channel_errors),
    ("auto_exposure", test_auto_exposure),
    ("notifications", test_notifications),
    ("cycling", test_cycling),
    ("exposure_range", test_exposure_range),
    ("channels", test_channels),
    ("server_gone_and_back", test_server_gone_and_back),
    ("light_changes_dated", test_light_changes_dated),
    ("every_call_logged", test_every_call_logged),
])
