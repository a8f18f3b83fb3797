"""Fake serial instruments on pseudo-terminals, for end-to-end tests.

Each fake owns a pty pair and a "by-id style" symlink to the slave side (the
daemon's device path), and serves the instrument's line protocol on the
master side from a background thread. The daemon opens the symlink with the
real libserialport, preloaded with build/tests/libpty_shim.so
(tests/fakes/pty_shim.c) so that libserialport 0.1.1 accepts /dev/pts/N.
Nothing here touches hardware, and every wait has a deadline.

    FakeMDT693B    Thorlabs MDT693B/694B piezo controller (both prompt styles)
    FakeSerialDac  a lab's Arduino DAC box ("SET <ch> <code>" or "V<ch>=<volts>")
    FakeLeoni      Leoni eol/mol 1xN fibre switch, with a settling delay

Each writes what its outputs are doing to a small text file (state_file),
replaced atomically on every change, which the fake libwlmData.so
(tests/fakes/fake_wlmdata.c, FAKE_WLM_TUNE and FAKE_WLM_ROUTE) reads so that
the fake wavemeter's frequencies follow the fake actuators.

Pty facts this relies on (Linux): bytes written to the master go through the
slave's line discipline, so the slave is put in raw mode (no echo, no CR->LF)
at once; the fake keeps its own slave descriptor open so that the master does
not read EIO (hang-up) each time the daemon closes the port, and so that the
pty's settings survive between the daemon's opens. Closing the master is a
hang-up for the daemon: its poll() reports POLLHUP and read()/write() fail
with EIO, as with a pulled USB adapter.
"""
import errno
import heapq
import os
import random
import re
import select
import shutil
import tempfile
import threading
import time
import tty

MODES = ("ok", "garbage", "silent")

# Longest unterminated input kept (a real firmware's line buffer is smaller);
# beyond it the partial line is dropped, so a flood cannot grow memory.
MAX_LINE = 4096

# Longest the serving thread sleeps in poll() with nothing to do; it is woken
# through a pipe by every public call, so this only bounds a lost wake-up.
IDLE_POLL_S = 0.2

# How long close() waits for the serving thread.
JOIN_S = 5.0

# Bytes garbage is made of: none of the protocols' terminators, prompts,
# digits or letters, so a garbage reply can never parse as a valid one.
GARBAGE_ALPHABET = bytes(range(0x80, 0x100)) + b"\x00\x01\x07\x1b#$%&'(),;@^_`{|}~"


def _atomic_write(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _atomic_symlink(target, path):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)


class _Pty:
    """One plug-in of the device: a pty pair, slave in raw mode."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # also clears ECHO, ICRNL and OPOST
        os.set_blocking(self.master, False)
        self.name = os.ttyname(self.slave)

    def close(self):
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class FakeSerial:
    """Base of the fakes: pty, symlink, serving thread, modes, log.

    Constructor: serial (text in the link name), dir (where the link and the
    default state file go; default a new temp dir, removed by close()),
    state_file (default <dir>/<link name>.state), mode, reply_delay_s (every
    reply goes out this late; a delay past the daemon's timeout makes a late
    reply), seed (for garbage).

    Attributes: path (the symlink the daemon opens), pts (the current
    /dev/pts/N or None while unplugged), state_file, mode ("ok": speaks the
    protocol; "garbage": each line is answered with random bytes that are not
    the protocol, then the protocol's terminator (FakeMDT693B: "]\\r" and
    the prompt), so the daemon gets a complete but meaningless reply; "silent": lines are read and logged but
    never answered; in both other modes commands are NOT executed, as with
    another device or a wrong baud rate), reply_delay_s, log (every received
    line, str decoded as latin-1, without its CR/LF; empty lines are
    skipped), sent (every chunk of bytes written), plugs (how many times
    replugged), errors (lines the fake refused, with why).
    """

    link_name = "usb-Fake_Serial_{serial}-if00-port0"
    garbage_end = b"\n"

    def __init__(self, serial="FAKE0001", dir=None, state_file=None, mode="ok",
                 reply_delay_s=0.0, seed=1):
        self.serial = serial
        self._own_dir = dir is None
        self.dir = tempfile.mkdtemp(prefix="fakeserial-") if dir is None else dir
        self.path = os.path.join(self.dir, self.link_name.format(serial=serial))
        if os.path.lexists(self.path):
            raise ValueError("%s exists already" % self.path)
        self._own_state = state_file is None
        self.state_file = state_file or os.path.join(self.dir, os.path.basename(self.path) + ".state")
        self.mode = mode
        self.reply_delay_s = reply_delay_s
        self.log = []
        self.sent = []
        self.errors = []
        self.plugs = 0
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._timers = []  # heap of (due, seq, kind, fn); kind "reply" or "event"
        self._seq = 0
        self._rx = b""
        self._stopping = False
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pty = None
        self._thread = None

    def _start(self):
        """Called by each subclass at the end of its constructor, once
        state_text() can run: writes the state file, plugs in, serves."""
        with self._cond:
            self._write_state_locked()
        self._pty = _Pty()
        _atomic_symlink(self._pty.name, self.path)
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="fake " + os.path.basename(self.path))
        self._thread.start()

    # ---- public ----------------------------------------------------------

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError("mode must be one of %s, not %r" % (MODES, value))
        self._mode = value

    @property
    def pts(self):
        with self._cond:
            return self._pty.name if self._pty else None

    @property
    def plugged(self):
        with self._cond:
            return self._pty is not None

    def unplug(self):
        """Pull the cable: the symlink goes, then the master closes, so the
        daemon's reads and writes fail (EIO/POLLHUP) and a reopen finds no
        device. Replies not yet sent are lost; the instrument's own state
        (voltages, the switch's motion) carries on."""
        with self._cond:
            if self._pty is None:
                return
            if os.path.lexists(self.path):
                os.unlink(self.path)
            self._pty.close()
            self._pty = None
            self._rx = b""
            self._drop_replies_locked()
            self._cond.notify_all()
        self._wake()

    def replug(self, reset=False):
        """Plug in again: a NEW pty, the symlink moved to it atomically (a
        reader of the link sees the old or the new target, never none). If
        still plugged, the old pty is hung up after the link has moved.
        reset=False keeps the instrument's state, like a mains-powered box of
        which only USB was pulled; reset=True is a power cycle (see
        reset_state() of each fake)."""
        with self._cond:
            new = _Pty()
            _atomic_symlink(new.name, self.path)
            old, self._pty = self._pty, new
            if old is not None:
                old.close()
                self._drop_replies_locked()
            self._rx = b""
            self.plugs += 1
            if reset:
                self.reset_state()
                self._write_state_locked()
            self._cond.notify_all()
        self._wake()

    def wait_for_line(self, pred, timeout=5.0, start=0):
        """The first line of log[start:] that matches pred (a str: equal; a
        compiled regex: search; else a callable taking the line), waiting up
        to timeout s for it. Raises AssertionError naming what was seen."""
        if isinstance(pred, str):
            want = pred
            match = lambda s: s == want
        elif hasattr(pred, "search"):
            match = lambda s: pred.search(s) is not None
        else:
            match = pred
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.log):
                    if match(self.log[i]):
                        return self.log[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no line matching %r within %.1f s; last lines: %r"
                                         % (os.path.basename(self.path), pred, timeout,
                                            self.log[-10:]))
                self._cond.wait(left)

    def close(self):
        """Stop the thread, hang up, remove the link (and what the fake
        created: its temp dir, its default state file). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(JOIN_S)
        if self._thread is not None and self._thread.is_alive():
            raise AssertionError("fake serving thread did not stop within %s s" % JOIN_S)
        with self._cond:
            if self._pty is not None:
                self._pty.close()
                self._pty = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if os.path.lexists(self.path):
            os.unlink(self.path)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self._own_state and os.path.exists(self.state_file):
            os.unlink(self.state_file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- for subclasses (called with the lock held) ------------------------

    def handle(self, line):
        """Execute one command line (str); return the reply bytes or None."""
        raise NotImplementedError

    def state_text(self):
        """The state file's text."""
        return ""

    def reset_state(self):
        """Back to power-on state (replug(reset=True))."""

    def _after(self, delay_s, fn, kind="event"):
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay_s, self._seq, kind, fn))

    def _write_state_locked(self):
        _atomic_write(self.state_file, self.state_text())

    def _state_dict(self, items):
        return _StateDict(self, items)

    def _refuse(self, line, why):
        self.errors.append((line, why))

    # ---- serving thread ----------------------------------------------------

    def _wake(self):
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already, or close() has begun

    def _drop_replies_locked(self):
        self._timers = [t for t in self._timers if t[2] != "reply"]
        heapq.heapify(self._timers)

    def _serve(self):
        while True:
            with self._cond:
                if self._stopping:
                    return
                pty = self._pty
                timeout = IDLE_POLL_S
                if self._timers:
                    timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
            p = select.poll()
            p.register(self._wake_r, select.POLLIN)
            if pty is not None:
                p.register(pty.master, select.POLLIN)
            events = p.poll(int(timeout * 1000) + 1)
            try:
                while os.read(self._wake_r, 256):
                    pass
            except (BlockingIOError, OSError):
                pass
            with self._cond:
                if self._stopping:
                    return
                # The pty may have been unplugged (its fd number even reused)
                # while poll() waited: only read the one still plugged in.
                if pty is not None and pty is self._pty and any(
                        fd == pty.master for fd, _ in events):
                    self._read_locked(pty)
                self._run_timers_locked()

    def _read_locked(self, pty):
        try:
            data = os.read(pty.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                return  # no slave open; cannot happen while the fake holds one
            raise
        self._rx += data
        while True:
            m = re.search(rb"[\r\n]", self._rx)
            if m is None:
                break
            line, self._rx = self._rx[:m.start()], self._rx[m.end():]
            if line:
                self._line_locked(line.decode("latin-1"))
        if len(self._rx) > MAX_LINE:
            self._rx = b""

    def _line_locked(self, line):
        self.log.append(line)
        self._cond.notify_all()
        if self._mode == "silent":
            return
        if self._mode == "garbage":
            n = self._rng.randint(3, 20)
            reply = bytes(self._rng.choice(GARBAGE_ALPHABET) for _ in range(n)) + self.garbage_end
        else:
            reply = self.handle(line)
        if reply:
            if self.reply_delay_s > 0:
                self._after(self.reply_delay_s, lambda: self._send_locked(reply), "reply")
            else:
                self._send_locked(reply)

    def _send_locked(self, data):
        """Like a UART: never blocks. What the slave's full input queue (no
        reader) does not take is lost."""
        if self._pty is None:
            return
        try:
            n = os.write(self._pty.master, data)
        except (BlockingIOError, OSError):
            n = 0
        if n:
            self.sent.append(data[:n])

    def _run_timers_locked(self):
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, _, fn = heapq.heappop(self._timers)
            fn()


class _StateDict(dict):
    """A dict of outputs that rewrites its owner's state file when a test
    (or the fake) sets an item, so the fake wavemeter follows at once."""

    def __init__(self, owner, items):
        super().__init__(items)
        self._owner = owner

    def __setitem__(self, key, value):
        with self._owner._cond:
            super().__setitem__(key, float(value))
            self._owner._write_state_locked()

    def update(self, *a, **kw):
        with self._owner._cond:
            for k, v in dict(*a, **kw).items():
                super().__setitem__(k, float(v))
            self._owner._write_state_locked()


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class FakeMDT693B(FakeSerial):
    """Thorlabs MDT693B (3 axes) or MDT694B (axes="x") piezo controller.

    Constructor (plus FakeSerial's): prompt ">" (firmware >= 1.09: unknown
    commands answer "CMD_NOT_DEFINED>") or "*" (older: "!"); echo (the
    command comes back, then CR, before the reply); vlimit (75, 100 or 150;
    any number is sent as "[%4d]", so 120 makes a bad limit); axes;
    readback_offset_v (added to what the voltage queries answer: the
    measured output differing from the set one); firmware (for id?).

    Bytes, as in tests/fixtures/mdt693b/*.log: a value reply is
    [echo CR] ["*" if prompt "*" and echo] "[%6.1f]" CR prompt (vlimit:
    "[%4d]"); a set is acknowledged by [echo CR] prompt; an unknown command
    gets [echo CR] "CMD_NOT_DEFINED>" or "!". CR or LF ends a command.
    Commands: id?, echo?, echo=0|1, vlimit?, <axis>voltage=<V> (clamped to
    0..vlimit), <axis>voltage?; anything else (a missing axis, a bad number)
    is unknown. "echo=N" is echoed or not as echo was before it. GUESSES
    (no transcript): the text of id?, and echo? answering "[1]"/"[0]".

    Attributes: prompt, echo, vlimit, axes, readback_offset_v, voltages
    (dict axis -> set volts; setting it or an item rewrites the state
    file). State file: "x=V\\ny=V\\nz=V\\n" (the set
    voltages, the model's axes only). Outputs survive replug() (mains
    powered; only USB was pulled); replug(reset=True) zeroes them and
    restores the constructor's echo.
    """

    link_name = "usb-Thorlabs_MDT693B_{serial}-if00-port0"

    def __init__(self, prompt=">", echo=True, vlimit=100, axes="xyz", readback_offset_v=0.0,
                 firmware=None, serial="MDT0001", **kw):
        if prompt not in (">", "*"):
            raise ValueError("prompt must be '>' or '*'")
        super().__init__(serial=serial, **kw)
        self.prompt = prompt
        self.echo = bool(echo)
        self._echo0 = self.echo
        self.vlimit = vlimit
        self.axes = axes
        self.readback_offset_v = readback_offset_v
        self.firmware = firmware or ("1.09" if prompt == ">" else "1.05")
        self._voltages = self._state_dict({a: 0.0 for a in axes})
        # The driver takes a reply to a query as complete only at a prompt
        # after a ']'; garbage ends so, to be read whole and refused as a
        # protocol error, not timed out as in mode "silent".
        self.garbage_end = b"]\r" + prompt.encode()
        self._start()

    @property
    def voltages(self):
        return self._voltages

    @voltages.setter
    def voltages(self, value):
        with self._cond:
            self._voltages = self._state_dict(value)
            self._write_state_locked()

    def state_text(self):
        return "".join("%s=%.6f\n" % (a, self.voltages[a]) for a in self.axes)

    def reset_state(self):
        self.voltages = {a: 0.0 for a in self.axes}
        self.echo = self._echo0

    def _frame(self, cmd, echo, body=None, unknown=False):
        out = cmd + "\r" if echo else ""
        if unknown:
            out += "CMD_NOT_DEFINED>" if self.prompt == ">" else "!"
        elif body is None:
            out += self.prompt
        else:
            if echo and self.prompt == "*":
                out += "*"
            out += body + "\r" + self.prompt
        return out.encode("latin-1")

    def handle(self, line):
        echo = self.echo  # the echo goes out as the line comes in
        cmd = line.strip().lower()
        if cmd == "id?":
            body = "\r".join(["Model MDT69%sB" % ("3" if len(self.axes) > 1 else "4"),
                              "Serial# " + self.serial,
                              "Firmware Version: " + self.firmware])
            return self._frame(line, echo, body)
        if cmd == "echo?":
            return self._frame(line, echo, "[%d]" % self.echo)
        if cmd in ("echo=0", "echo=1"):
            self.echo = cmd.endswith("1")
            return self._frame(line, echo)
        if cmd == "vlimit?":
            return self._frame(line, echo, "[%4d]" % round(self.vlimit))
        m = re.fullmatch(r"([a-z])voltage(\?|=(.*))", cmd)
        if m and m.group(1) in self.axes:
            axis = m.group(1)
            if m.group(2) == "?":
                v = self.voltages[axis] + self.readback_offset_v
                return self._frame(line, echo, "[%6.1f]" % v)
            text = m.group(3).strip()
            if _DECIMAL.fullmatch(text):
                self.voltages[axis] = min(max(float(text), 0.0), float(self.vlimit))
                return self._frame(line, echo)
        self._refuse(line, "unknown command")
        return self._frame(line, echo, unknown=True)


class FakeSerialDac(FakeSerial):
    """An Arduino DAC box of the kind labs build.

    Constructor (plus FakeSerial's): protocol "set" (default: lines
    "SET <ch> <code>", answered "OK\\n", or "ERR\\n" for a bad line, channel
    or code) or "volts" (lines "V<ch>=<volts, exactly 3 decimals>" ended by
    CR, never answered; bad lines are only recorded in errors); channels
    (default 1..4); v_at_min, v_at_max (volts at code 0 and at the top code,
    default -10, 10); bits (16: codes 0..65535); initial_v (0);
    command_re (override the line syntax: a regex fullmatched against the
    line, with named groups "ch" and "code" (or "volts")); reply_ok,
    reply_err (bytes or None for no reply).

    Attributes: volts (dict channel -> volts; setting it or an item
    rewrites the state file), codes (dict channel -> the
    last code, for protocol "set"). State file: "ch<n>=<volts>\\n" per
    channel. Outputs survive replug(); replug(reset=True) sets initial_v.
    """

    link_name = "usb-Arduino__www.arduino.cc__0043_{serial}-if00"

    def __init__(self, protocol="set", channels=(1, 2, 3, 4), v_at_min=-10.0, v_at_max=10.0,
                 bits=16, initial_v=0.0, command_re=None, reply_ok=None, reply_err=None,
                 serial="DAC0001", **kw):
        super().__init__(serial=serial, **kw)
        if protocol == "set":
            default_re = r"SET (?P<ch>\d+) (?P<code>\d+)"
            self.reply_ok = b"OK\n" if reply_ok is None else reply_ok
            self.reply_err = b"ERR\n" if reply_err is None else reply_err
            self.garbage_end = b"\n"
        elif protocol == "volts":
            default_re = r"V(?P<ch>\d+)=(?P<volts>-?\d+\.\d{3})"
            self.reply_ok, self.reply_err = reply_ok, reply_err
            self.garbage_end = b"\r"
        else:
            raise ValueError("protocol must be 'set' or 'volts'")
        self.protocol = protocol
        self.command_re = re.compile(command_re or default_re)
        self.channels = tuple(channels)
        self.v_at_min, self.v_at_max = float(v_at_min), float(v_at_max)
        self.max_code = (1 << bits) - 1
        self.initial_v = float(initial_v)
        self._volts = self._state_dict({c: self.initial_v for c in self.channels})
        self.codes = {}
        self._start()

    @property
    def volts(self):
        return self._volts

    @volts.setter
    def volts(self, value):
        with self._cond:
            self._volts = self._state_dict(value)
            self._write_state_locked()

    def state_text(self):
        return "".join("ch%d=%.6f\n" % (c, self.volts[c]) for c in self.channels)

    def reset_state(self):
        self.volts = {c: self.initial_v for c in self.channels}
        self.codes = {}

    def code_to_volts(self, code):
        return self.v_at_min + (self.v_at_max - self.v_at_min) * code / self.max_code

    def handle(self, line):
        m = self.command_re.fullmatch(line)
        why = None
        if m is None:
            why = "not a command"
        else:
            ch = int(m.group("ch"))
            groups = m.groupdict()
            if ch not in self.channels:
                why = "no channel %d" % ch
            elif groups.get("code") is not None:
                code = int(groups["code"])
                if code > self.max_code:
                    why = "code %d above %d" % (code, self.max_code)
                else:
                    self.codes[ch] = code
                    self.volts[ch] = self.code_to_volts(code)
                    return self.reply_ok
            else:
                v = float(groups["volts"])
                if not min(self.v_at_min, self.v_at_max) <= v <= max(self.v_at_min, self.v_at_max):
                    why = "%g V out of range" % v
                else:
                    self.volts[ch] = v
                    return self.reply_ok
        self._refuse(line, why)
        return self.reply_err


class FakeLeoni(FakeSerial):
    """Leoni eol/mol 1xN fibre switch (CRLF; 57600 baud on the real one).

    Constructor (plus FakeSerial's): nchannels (8), kind ("eol" or "mol"),
    position (1), confirm_delay_s (0: how long the fibre takes to move; until
    then "ch?" still answers the old position).

    Commands, as in tests/fixtures/leoni/*.log: "type?" -> "eol 1xN\\r\\n";
    "ch?" -> "<position>\\r\\n"; "ch<n>" (1..N) selects, with no reply (the
    documented behaviour); a second select while moving retargets. A select
    out of range and any other line get no reply either (a GUESS; recorded
    in errors).

    Attributes: position (where the fibre is), target (where it is going, or
    None), switches (how many times the fibre moved: mechanical wear).
    State file: "position=N\\n", written the moment the fibre arrives. The
    position survives replug() (mains powered); reset=True goes back to the
    constructor's position.
    """

    link_name = "usb-FTDI_FT232R_USB_UART_{serial}-if00-port0"
    garbage_end = b"\r\n"

    def __init__(self, nchannels=8, kind="eol", position=1, confirm_delay_s=0.0,
                 serial="LEONI001", **kw):
        super().__init__(serial=serial, **kw)
        self.nchannels = nchannels
        self.kind = kind
        self._position = self._position0 = position
        self.confirm_delay_s = confirm_delay_s
        self.target = None
        self.switches = 0
        self._move = 0
        self._start()

    @property
    def position(self):
        return self._position

    @position.setter
    def position(self, n):
        """Where the fibre is; a test setting it moves it at once (no wear
        counted) and rewrites the state file."""
        with self._cond:
            self._position = n
            self._write_state_locked()

    def state_text(self):
        return "position=%d\n" % self.position

    def reset_state(self):
        self._position = self._position0
        self.target = None
        self._move += 1

    def _arrive(self, move, n):
        if move != self._move:
            return  # superseded by a later select
        self.target = None
        if n != self._position:
            self.switches += 1
            self.position = n

    def handle(self, line):
        cmd = line.strip()
        if cmd == "type?":
            return ("%s 1x%d\r\n" % (self.kind, self.nchannels)).encode()
        if cmd == "ch?":
            return b"%d\r\n" % self.position
        m = re.fullmatch(r"ch(\d{1,4})", cmd)
        if m and 1 <= int(m.group(1)) <= self.nchannels:
            n = int(m.group(1))
            self._move += 1
            if self.confirm_delay_s > 0:
                self.target = n
                move = self._move
                self._after(self.confirm_delay_s, lambda: self._arrive(move, n))
            else:
                self._arrive(self._move, n)
            return None
        self._refuse(line, "select out of range" if m else "unknown command")
        return None


# ---- self-test: python3 tests/e2e/fakeserial.py ----------------------------
# Drives each fake through its pty with plain Python, as the daemon would
# through libserialport: opens the symlink, raw mode, commands, replies.

class _Client:
    """The daemon's side of a fake: the slave, opened through the symlink."""

    def __init__(self, path):
        import termios
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIFLUSH)

    def close(self):
        os.close(self.fd)

    def send(self, data):
        os.write(self.fd, data)

    def read_exact(self, n, timeout=2.0):
        deadline = time.monotonic() + timeout
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("wanted %d bytes within %.1f s, got %r" % (n, timeout, buf))
            p = select.poll()
            p.register(self.fd, select.POLLIN)
            if p.poll(int(left * 1000) + 1):
                buf += os.read(self.fd, n - len(buf))
        return buf

    def read_until(self, end, timeout=2.0):
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(end):
            buf += self.read_exact(1, max(0.0, deadline - time.monotonic()))
        return buf

    def quiet(self, s=0.05):
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        got = p.poll(int(s * 1000))
        if got:
            raise AssertionError("unexpected bytes %r" % os.read(self.fd, 4096))

    def ask(self, cmd, end, timeout=2.0):
        self.send(cmd)
        return self.read_until(end, timeout)


def _fixture(path):
    """[(command bytes, expected reply bytes)] from a transcript."""
    import codecs
    steps = []
    with open(path, "rb") as f:
        for raw in f.read().splitlines():
            if raw.startswith(b"> "):
                steps.append([codecs.escape_decode(raw[2:])[0], b""])
            elif raw.startswith(b"< "):
                steps[-1][1] += codecs.escape_decode(raw[2:])[0]
    return steps


def _replay(fake, path):
    c = _Client(fake.path)
    try:
        for cmd, want in _fixture(path):
            c.send(cmd)
            got = c.read_exact(len(want)) if want else b""
            c.quiet()
            if got != want:
                raise AssertionError("%s: %r -> %r, fixture says %r"
                                     % (os.path.basename(path), cmd, got, want))
    finally:
        c.close()


def _state(fake):
    with open(fake.state_file) as f:
        return f.read()


def _selftest_fixtures():
    here = os.path.dirname(os.path.abspath(__file__))
    mdt = os.path.join(here, "..", "fixtures", "mdt693b")
    cases = [
        ("fw109_echo_on.log", dict(readback_offset_v=0.12), {}),
        ("fw109_echo_off.log", dict(echo=False, vlimit=150, readback_offset_v=-0.4), {}),
        ("fw105_echo_on.log", dict(prompt="*", readback_offset_v=0.12), {}),
        ("fw105_echo_off.log", dict(prompt="*", echo=False, vlimit=75), {"z": 12.3}),
        ("fw109_unknown_cmd.log", dict(axes="x", vlimit=150), {}),
        ("fw105_unknown_cmd.log", dict(prompt="*", axes="x", vlimit=150), {}),
        ("fw109_bad_vlimit.log", dict(echo=False, vlimit=120), {}),
        ("fw109_out_of_range.log", dict(vlimit=150), {"z": 151.2}),
        ("fw109_set_over_limit.log", dict(echo=False, vlimit=75), {}),
    ]
    for name, kw, preset in cases:
        with FakeMDT693B(**kw) as f:
            f.voltages.update(preset)
            _replay(f, os.path.join(mdt, name))
    leoni = os.path.join(here, "..", "fixtures", "leoni")
    for name, kw in [("eol1x8_select.log", {}),
                     ("mol1x16_position.log", dict(kind="mol", nchannels=16, position=12))]:
        with FakeLeoni(**kw) as f:
            _replay(f, os.path.join(leoni, name))
    print("ok   fixtures: the fakes speak the transcripts' bytes")


def _selftest_mdt():
    with FakeMDT693B(serial="ABC123") as f:
        assert os.path.basename(f.path) == "usb-Thorlabs_MDT693B_ABC123-if00-port0"
        assert os.path.realpath(f.path) == f.pts and f.pts.startswith("/dev/pts/")
        assert _state(f) == "x=0.000000\ny=0.000000\nz=0.000000\n"
        c = _Client(f.path)
        assert c.ask(b"vlimit?\r", b">") == b"vlimit?\r[ 100]\r>"
        assert c.ask(b"xvoltage=150\r", b">") == b"xvoltage=150\r>"      # clamped
        assert c.ask(b"xvoltage?\r", b"]\r>") == b"xvoltage?\r[ 100.0]\r>"
        assert c.ask(b"yvoltage=-3\n", b">") == b"yvoltage=-3\r>"        # LF ends a command too
        assert c.ask(b"zvoltage=12.34\r", b">") == b"zvoltage=12.34\r>"
        assert _state(f) == "x=100.000000\ny=0.000000\nz=12.340000\n", _state(f)
        assert c.ask(b"echo?\r", b"]\r>") == b"echo?\r[1]\r>"
        assert c.ask(b"echo=0\r", b">") == b"echo=0\r>"                  # echoed as before
        assert c.ask(b"zvoltage?\r", b">") == b"[  12.3]\r>"
        assert c.ask(b"xvoltage=abc\r", b">") == b"CMD_NOT_DEFINED>"
        assert c.ask(b"id?\r", b">").startswith(b"Model MDT693B\rSerial# ABC123\r")
        f.readback_offset_v = 1.0
        assert c.ask(b"zvoltage?\r", b">") == b"[  13.3]\r>"
        f.readback_offset_v = 0.0
        f.mode = "garbage"
        g = c.ask(b"zvoltage?\r", b">")
        assert g.endswith(b"]\r>") and not re.search(rb"[\[\]0-9\r\n*!>]", g[:-3]), g
        f.mode = "silent"
        c.send(b"xvoltage=1\r")
        f.wait_for_line("xvoltage=1", 2.0)
        c.quiet(0.1)
        assert f.voltages["x"] == 100.0                     # not executed
        f.mode = "ok"
        f.reply_delay_s = 0.3
        t0 = time.monotonic()
        assert c.ask(b"vlimit?\r", b">") == b"[ 100]\r>"
        assert time.monotonic() - t0 >= 0.29
        f.reply_delay_s = 0.0
        assert f.wait_for_line(re.compile(r"^y")) == "yvoltage=-3"
        try:
            f.wait_for_line("never", 0.05)
            raise RuntimeError("wait_for_line did not time out")
        except AssertionError:
            pass
        # The daemon closes the port: the fake's own slave keeps the pty up.
        c.close()
        c = _Client(f.path)
        assert c.ask(b"vlimit?\r", b">") == b"[ 100]\r>"
        # Pulled cable: hang-up on the open descriptor, no link to reopen.
        f.unplug()
        assert not os.path.lexists(f.path) and f.pts is None
        p = select.poll()
        p.register(c.fd, select.POLLIN)
        assert p.poll(1000)[0][1] & select.POLLHUP
        try:
            c.send(b"vlimit?\r")
            raise RuntimeError("write after unplug worked")
        except OSError as e:
            assert e.errno == errno.EIO, e
        c.close()
        f.replug()
        # (The number may be the old one: nothing holds the old pty any more.)
        assert os.path.realpath(f.path) == f.pts and os.path.exists(f.pts)
        c = _Client(f.path)
        got = c.ask(b"xvoltage?\r", b">")
        assert got == b"[ 100.0]\r>", got   # kept: mains powered
        f.replug()                                              # while plugged: hang-up
        p = select.poll()
        p.register(c.fd, select.POLLIN)
        assert p.poll(1000)[0][1] & select.POLLHUP
        c.close()
        f.replug(reset=True)
        c = _Client(f.path)
        assert c.ask(b"xvoltage?\r", b"]\r>") == b"xvoltage?\r[   0.0]\r>"   # power cycled
        assert _state(f) == "x=0.000000\ny=0.000000\nz=0.000000\n"
        f.voltages = {"x": 1.5, "y": 2, "z": 3}                  # a test presets outputs
        f.voltages["y"] = 2.25
        assert _state(f) == "x=1.500000\ny=2.250000\nz=3.000000\n", _state(f)
        assert c.ask(b"yvoltage?\r", b"]\r>") == b"yvoltage?\r[   2.2]\r>"
        c.close()
        assert f.plugs == 3
    assert not os.path.lexists(f.path) and not os.path.exists(f.dir)
    print("ok   FakeMDT693B: protocol, modes, delay, unplug/replug")


def _selftest_dac():
    with FakeSerialDac() as f:
        c = _Client(f.path)
        assert _state(f) == "ch1=0.000000\nch2=0.000000\nch3=0.000000\nch4=0.000000\n"
        assert c.ask(b"SET 1 65535\n", b"\n") == b"OK\n"
        assert c.ask(b"SET 2 0\n", b"\n") == b"OK\n"
        assert c.ask(b"SET 3 49151\n", b"\n") == b"OK\n"
        assert c.ask(b"SET 5 1\n", b"\n") == b"ERR\n"
        assert c.ask(b"SET 1 65536\n", b"\n") == b"ERR\n"
        assert c.ask(b"SET 1 -1\n", b"\n") == b"ERR\n"
        assert _state(f) == "ch1=10.000000\nch2=-10.000000\nch3=4.999924\nch4=0.000000\n", _state(f)
        f.unplug()
        c.close()
        f.replug()
        c = _Client(f.path)
        assert c.ask(b"SET 4 32768\n", b"\n") == b"OK\n"
        assert abs(f.volts[4] - 0.000153) < 1e-6 and f.volts[1] == 10.0
        c.close()
    with FakeSerialDac(protocol="volts", channels=(1, 2), v_at_min=0, v_at_max=5) as f:
        c = _Client(f.path)
        c.send(b"V2=1.234\r")
        f.wait_for_line("V2=1.234")
        c.send(b"V1=1.23\rV1=7.000\rV3=1.000\r")
        f.wait_for_line("V3=1.000")
        c.quiet(0.1)
        assert _state(f) == "ch1=0.000000\nch2=1.234000\n", _state(f)
        assert [e[0] for e in f.errors] == ["V1=1.23", "V1=7.000", "V3=1.000"]
        c.close()
    print("ok   FakeSerialDac: both protocols, unplug/replug")


def _selftest_leoni():
    with FakeLeoni(confirm_delay_s=0.3) as f:
        c = _Client(f.path)
        assert c.ask(b"type?\r\n", b"\r\n") == b"eol 1x8\r\n"
        c.send(b"ch5\r\n")
        c.quiet(0.05)                                   # no answer to a select
        assert c.ask(b"ch?\r\n", b"\r\n") == b"1\r\n"    # still moving
        assert _state(f) == "position=1\n" and f.target == 5
        deadline = time.monotonic() + 2
        while _state(f) != "position=5\n":
            assert time.monotonic() < deadline, "switch never arrived"
            time.sleep(0.01)
        assert c.ask(b"ch?\r\n", b"\r\n") == b"5\r\n" and f.switches == 1
        c.send(b"ch9\r\n")
        c.quiet(0.05)
        assert f.errors[-1] == ("ch9", "select out of range")
        # Pulled while moving: the fibre still arrives (mains powered).
        c.send(b"ch2\r\n")
        f.wait_for_line("ch2")
        f.unplug()
        c.close()
        deadline = time.monotonic() + 2
        while f.position != 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        f.replug()
        c = _Client(f.path)
        assert c.ask(b"ch?\r\n", b"\r\n") == b"2\r\n"
        f.mode = "garbage"
        g = c.ask(b"ch?\r\n", b"\r\n")
        assert not re.search(rb"[0-9\r\n]", g[:-2]), g
        c.close()
    print("ok   FakeLeoni: select, settling delay, unplug/replug")


if __name__ == "__main__":
    _selftest_fixtures()
    _selftest_mdt()
    _selftest_dac()
    _selftest_leoni()
