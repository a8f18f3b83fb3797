#!/usr/bin/env python3
"""End to end: wavemeterctl against the real daemon, as a person at a terminal
and a script would use it: short commands with positional arguments and units,
tables for people, JSON for pipes, numbers as the wire has them, exit codes
0/1/2/3, the valid names after an unknown one, the cookie via $STATE_DIRECTORY,
and watch: a table redrawn in place on a terminal, a line per push in a pipe.
"""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

from wmd import CTL, Daemon, fail, run_tests, sim_config, wait_for

C_NM_THZ = 299792.458


def ctl(d, *args, env=None, cwd=None, addr=None):
    """Run wavemeterctl against d with output to a pipe; text stdout and stderr."""
    e = dict(os.environ)
    for k in ("WAVEMETERD_ADDR", "WAVEMETERD_TOKEN_FILE", "STATE_DIRECTORY"):
        e.pop(k, None)
    e.update(env or {})
    addr = addr or "127.0.0.1:%d" % d.port
    return subprocess.run([CTL, "-c", addr] + list(args), capture_output=True, text=True,
                          timeout=20, env=e, cwd=cwd or tempfile.gettempdir())


def ctl_tty(d, *args):
    """Run wavemeterctl with its stdout on a terminal: (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([CTL, "-c", "127.0.0.1:%d" % d.port] + list(args), stdout=slave,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    rc = p.wait(20)
    err = p.stderr.read().decode()
    p.stderr.close()
    return rc, out.decode().replace("\r\n", "\n"), err


def expect(out, rc, what):
    if out.returncode != rc:
        fail("%s: exit %d, wanted %d\nstdout: %s\nstderr: %s" %
             (what, out.returncode, rc, out.stdout, out.stderr))
    return out


def wire(text):
    """JSON with every real kept as the text it came as (a str)."""
    return json.loads(text, parse_float=lambda s: "real:" + s)


def wait_readings(d, names):
    def ok():
        r = d.result("read")
        return all(x["status"] == "ok" and x["seq"] > 0 for x in r if x["laser"] in names)
    wait_for(ok, 10, "good readings of %s" % (names,))


def table(text):
    """A table's lines split on runs of 2+ spaces: (heading cells, rows of cells)."""
    lines = [l for l in text.splitlines() if l.strip()]
    split = [re.split(r"\s{2,}", l.strip()) for l in lines]
    return split[0], split[1:]


def two_lasers(**over):
    # "399" is named like a number on channel 2; L2 is on channel 1. No noise
    # and no drift: every reading of a laser is the same number.
    quiet = {"noise_mhz": 0.0, "drift_mhz_per_sqrt_s": 0.0}
    return sim_config([
        dict({"name": "399", "channel": 2, "setpoint_thz": 384.123456789012,
              "min_thz": 380.0, "max_thz": 390.0, "ki_v_per_mhz_s": 0.05,
              "sim": dict(quiet, nominal_thz=384.123456789012)}, **over),
        {"name": "L2", "channel": 1, "sim": dict(quiet, nominal_thz=385.0)},
    ])


def test_help_and_usage():
    with Daemon(two_lasers()) as d:
        out = expect(ctl(d, "--help"), 0, "--help")
        for cmd in ("ping", "version", "status", "channels", "read", "lasers", "get", "setpoint",
                    "lock", "unlock", "gains", "output", "history", "watch", "auth", "sim.fault",
                    "sim.mode_hop", "sim.disconnect", "sim.connect"):
            if not re.search(r"^  %s\b" % re.escape(cmd), out.stdout, re.M):
                fail("--help does not list %s:\n%s" % (cmd, out.stdout))
        for code in ("0 ok", "1 the daemon answered with an error", "2 usage",
                     "3 cannot connect"):
            if code not in out.stdout:
                fail("--help does not give exit code %r:\n%s" % (code, out.stdout))
        for bad in ([], ["--bogus", "ping"], ["-t", "soon", "ping"],
                    ["setpoint", "399", "12furlongs"],
                    ["setpoint", "399", "751THz", "20", "extra"], ["output", "L2", "1.5mV"],
                    ["nosuch.method", "bare"], ["read", "{not json"]):
            expect(ctl(d, *bad), 2, "usage error %r" % bad)
        e = expect(ctl(d, "-k", "/nonexistent/token", "lock", "L2"), 2, "unreadable -k")
        if "/nonexistent/token" not in e.stderr:
            fail("-k error does not name the file: %r" % e.stderr)
        if d.result("laser.get", ["L2"])["lock"]:
            fail("a usage error changed something")


def test_cannot_connect():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([CTL, "-c", "127.0.0.1:%d" % port, "ping"], capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 3 or "cannot connect" not in out.stderr:
        fail("refused connection: %r" % (out,))
    # A peer that takes the connection and never answers: 3 after the timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        out = subprocess.run([CTL, "-c", "127.0.0.1:%d" % s.getsockname()[1], "-t", "300",
                              "ping"], capture_output=True, text=True, timeout=10)
    if out.returncode != 3 or "no answer within 300 ms" not in out.stderr:
        fail("silent peer: %r" % (out,))


def test_exit_codes_from_answers():
    with Daemon(two_lasers()) as d:
        expect(ctl(d, "ping"), 0, "ping")
        out = expect(ctl(d, "nosuch.method"), 1, "unknown method")
        if json.loads(out.stdout)["code"] != -32601:
            fail("unknown method: %r" % out.stdout)
        out = expect(ctl(d, "-H", "setpoint", "399", "900THz"), 1, "setpoint out of range")
        if "-32602" not in out.stderr or "max_thz" not in out.stderr or out.stdout:
            fail("range error for people: %r" % (out,))


def test_tables_for_people():
    with Daemon(two_lasers()) as d:
        wait_readings(d, ("399", "L2"))
        # At a terminal the output is for people without asking.
        rc, out, err = ctl_tty(d, "read")
        if rc != 0:
            fail("read at a terminal: %d %s" % (rc, err))
        head, rows = table(out)
        if head != ["LASER", "CHANNEL", "STATUS", "FREQUENCY (THz)", "WAVELENGTH (nm)",
                    "AGE (ms)"]:
            fail("read heading %r:\n%s" % (head, out))
        if sorted(r[0] for r in rows) != ["399", "L2"] or any(len(r) != 6 for r in rows):
            fail("read rows %r" % rows)
        lines = out.splitlines()
        col = lines[0].index("FREQUENCY (THz)")
        # Numbers line up on their decimal point.
        points = {l.index(".", col) for l in lines[1:]}
        if len(points) != 1:
            fail("frequencies not aligned:\n%s" % out)
        for r in rows:
            if r[2] != "ok" or abs(float(r[3]) * float(r[4]) - C_NM_THZ) > 1e-6:
                fail("read row %r" % r)
        # -H asks for the same in a pipe; --human may come after the command.
        for args in (["-H", "read"], ["read", "--human"]):
            h, _ = table(expect(ctl(d, *args), 0, " ".join(args)).stdout)
            if h != head:
                fail("%r heading %r" % (args, h))
        head, rows = table(expect(ctl(d, "-H", "lasers"), 0, "lasers").stdout)
        for c in ("LASER", "CHANNEL", "STATE", "SETPOINT (THz)", "FREQUENCY (THz)", "ERROR (MHz)",
                  "OUTPUT (V)", "REASON"):
            if c not in head:
                fail("lasers heading lacks %s: %r" % (c, head))
        if [r[0] for r in rows] != ["399", "L2"]:
            fail("lasers rows %r" % rows)
        out = expect(ctl(d, "-H", "get", "399"), 0, "get").stdout
        for want in (r"^name: +399$", r"^setpoint: +384\.123456789012 THz$", r"^gains:$",
                     r"^  ki: +0\.05 V/\(MHz s\)$", r"^  min: +380\.0 THz$", r"^lock: +no$",
                     r"^output: +0\.0 V$", r"^  age: +[0-9.]+ ms$"):
            if not re.search(want, out, re.M):
                fail("get 399 lacks %r:\n%s" % (want, out))
        out = expect(ctl(d, "-H", "status"), 0, "status").stdout
        for want in (r"^uptime: +[0-9.]+ s$", r"^driver: +name sim, state ",
                     r"^  CHANNEL +LASER +READS", r"REVISIT MEAN \(ms\)", r"^loop lag: +last "):
            if not re.search(want, out, re.M):
                fail("status lacks %r:\n%s" % (want, out))
        out = expect(ctl(d, "-H", "history", "L2", "60s"), 0, "history").stdout
        if not re.search(r"^TIME +SEQ +STATUS +FREQUENCY \(THz\) +ERROR \(MHz\)", out, re.M) or \
                not re.search(r"^error over \d+ readings: mean ", out, re.M):
            fail("history:\n%s" % out)
        if expect(ctl(d, "-H", "ping"), 0, "ping").stdout != "pong\n":
            fail("ping for people")
        if not re.fullmatch(r"wavemeterd \S+, protocol 1\.\d+\n",
                            expect(ctl(d, "-H", "version"), 0, "version").stdout):
            fail("version for people")


def test_json_is_the_result():
    with Daemon(two_lasers()) as d:
        for args, method, params in ((["--json", "channels"], "channels", None),
                                     (["version", "--json"], "version", None),
                                     (["channels"], "channels", None),  # a pipe gets JSON
                                     (["--json", "get", "L2"], "laser.get", ["L2"])):
            out = expect(ctl(d, *args), 0, " ".join(args))
            got, want = json.loads(out.stdout), d.result(method, params)
            if method == "laser.get":  # the reading and the error move on
                for k in ("reading", "error_mhz", "error_age_s", "since"):
                    got.pop(k, None)
                    want.pop(k, None)
            if got != want:
                fail("%r: %r, wanted %r" % (args, got, want))
        # -r: the answer line as received.
        line = expect(ctl(d, "-r", "ping"), 0, "-r ping").stdout
        if line.count("\n") != 1 or json.loads(line) != {"jsonrpc": "2.0", "id": 1,
                                                         "result": "pong"}:
            fail("-r ping: %r" % line)


def test_numbers_as_on_the_wire():
    # 0.05 is 0.05000000000000000277 as a double: printed with 17 digits it
    # would be 0.050000000000000003. The wire has 0.05; so must every output.
    with Daemon(two_lasers()) as d:
        wait_readings(d, ("399",))
        raw = expect(ctl(d, "-r", "get", "399"), 0, "-r get").stdout
        w = wire(raw)["result"]
        if w["gains"]["ki_v_per_mhz_s"] != "real:0.05" or \
                w["setpoint_thz"] != "real:384.123456789012":
            fail("the wire is not what this test expects: %s" % raw)
        js = expect(ctl(d, "--json", "get", "399"), 0, "--json get").stdout
        j = wire(js)
        for k in ("setpoint_thz", "target_thz", "ramp_mhz_per_s", "output_v", "gains", "limits"):
            if j[k] != w[k]:
                fail("--json %s: %r, the wire %r" % (k, j[k], w[k]))
        # No noise, no drift: the reading is the same number in every answer.
        if j["reading"]["frequency_thz"] != w["reading"]["frequency_thz"]:
            fail("reading moved: %r %r" % (j["reading"], w["reading"]))
        people = expect(ctl(d, "-H", "get", "399"), 0, "get").stdout
        for text in (js, people):
            if re.search(r"\d{16,}", text):
                fail("a number longer than the wire's:\n%s" % text)
        raw_read = wire(expect(ctl(d, "-r", "read", "399"), 0, "-r read").stdout)["result"]
        _, rows = table(expect(ctl(d, "-H", "read", "399"), 0, "read").stdout)
        for cell, key in ((rows[0][3], "frequency_thz"), (rows[0][4], "wavelength_nm")):
            if "real:" + cell != raw_read[key]:
                fail("read %s: %r, the wire %r" % (key, cell, raw_read[key]))
        # What we send keeps the digits typed, too.
        out = expect(ctl(d, "-r", "setpoint", "399", "384.987654321098THz"), 0, "setpoint")
        if wire(out.stdout)["result"]["setpoint_thz"] != "real:384.987654321098":
            fail("setpoint digits: %s" % out.stdout)


def test_positional_commands():
    with Daemon(two_lasers()) as d:
        def laser(name):
            return d.result("laser.get", [name])

        expect(ctl(d, "setpoint", "399", "384.5THz"), 0, "setpoint THz")
        if laser("399")["setpoint_thz"] != 384.5:
            fail("setpoint THz: %r" % laser("399")["setpoint_thz"])
        expect(ctl(d, "setpoint", "399", "780.24nm"), 0, "setpoint nm")
        if abs(laser("399")["setpoint_thz"] - C_NM_THZ / 780.24) > 1e-9:
            fail("setpoint nm: %r" % laser("399")["setpoint_thz"])
        expect(ctl(d, "setpoint", "399", "384.25", "THz", "20"), 0, "setpoint, unit apart, ramp")
        l = laser("399")
        if l["setpoint_thz"] != 384.25 or l["ramp_mhz_per_s"] != 20:
            fail("setpoint with a ramp: %r" % l)
        expect(ctl(d, "laser.set_setpoint", "399", "384.3"), 0, "method name, no unit: THz")
        if laser("399")["setpoint_thz"] != 384.3:
            fail("setpoint without unit")
        # The forms from before: KEY=VALUE and one JSON text.
        expect(ctl(d, "laser.set_setpoint", "laser=399", "frequency_thz=384.4"), 0, "KEY=VALUE")
        if laser("399")["setpoint_thz"] != 384.4:
            fail("KEY=VALUE setpoint")
        out = expect(ctl(d, "laser.get", '["L2"]'), 0, "JSON params")
        if json.loads(out.stdout)["name"] != "L2":
            fail("JSON params")
        expect(ctl(d, "output", "L2", "-1.5V"), 0, "output")
        if laser("L2")["output_v"] != -1.5:
            fail("output: %r" % laser("L2")["output_v"])
        expect(ctl(d, "gains", "L2", "0.003", "0.04"), 0, "gains")
        g = laser("L2")["gains"]
        if g["kp_v_per_mhz"] != 0.003 or g["ki_v_per_mhz_s"] != 0.04:
            fail("gains: %r" % g)
        expect(ctl(d, "lock", "L2"), 0, "lock")
        if not laser("L2")["lock"]:
            fail("lock")
        expect(ctl(d, "unlock", "L2"), 0, "unlock")
        if laser("L2")["lock"]:
            fail("unlock")
        # A number is a laser's name when a laser has it, else a channel.
        if json.loads(expect(ctl(d, "read", "399"), 0, "read 399").stdout)["channel"] != 2:
            fail("read 399 is not laser 399")
        if json.loads(expect(ctl(d, "read", "1"), 0, "read 1").stdout)["laser"] != "L2":
            fail("read 1 is not channel 1")
        if json.loads(expect(ctl(d, "get", "399"), 0, "get 399").stdout)["name"] != "399":
            fail("get 399")
        h = json.loads(expect(ctl(d, "history", "L2", "60"), 0, "history").stdout)
        if h["laser"] != "L2" or "samples" not in h:
            fail("history: %r" % h)


def test_unknown_names_listed():
    with Daemon(two_lasers()) as d:
        for args in (["get", "398"], ["-H", "lock", "nope"], ["--json", "read", "nope"]):
            out = expect(ctl(d, *args), 1, " ".join(args))
            if "lasers here: 399, L2" not in out.stderr:
                fail("%r does not list the lasers: %r" % (args, out.stderr))
        out = expect(ctl(d, "read", "9"), 1, "read 9")
        if "channels here: 2 (399), 1 (L2)" not in out.stderr:  # in the config's order
            fail("read 9 does not list the channels: %r" % out.stderr)
        if json.loads(out.stdout)["code"] != -32602:
            fail("the error answer on stdout: %r" % out.stdout)


def test_cookie_from_state_directory():
    cfg = two_lasers()
    cfg["access"] = {"require_token": True}
    with Daemon(cfg) as d:
        empty = tempfile.mkdtemp(prefix="wmd-ctl-")  # no build/state/cookie here
        out = expect(ctl(d, "lock", "L2", cwd=empty), 1, "lock without a cookie")
        if "-32001" not in out.stdout:
            fail("no cookie: %r" % (out,))
        expect(ctl(d, "lock", "L2", cwd=empty, env={"STATE_DIRECTORY": d.state_dir}), 0,
               "lock with the cookie in $STATE_DIRECTORY")
        if not d.result("laser.get", ["L2"])["lock"]:
            fail("lock via $STATE_DIRECTORY's cookie did nothing")
        # systemd may list several directories: the daemon's is the first.
        expect(ctl(d, "unlock", "L2", cwd=empty,
                   env={"STATE_DIRECTORY": d.state_dir + ":/nonexistent"}), 0,
               "unlock with a list in $STATE_DIRECTORY")
        if d.result("laser.get", ["L2"])["lock"]:
            fail("unlock via $STATE_DIRECTORY's cookie did nothing")
        # Reading needs no login, and sends no token.
        expect(ctl(d, "read", cwd=empty), 0, "read without a cookie")
    os.rmdir(empty)


WATCH_HEAD = ["LASER", "CHANNEL", "STATUS", "FREQUENCY (THz)", "WAVELENGTH (nm)", "ERROR (MHz)",
              "STATE", "OUTPUT (V)", "AGE (ms)"]


class Output:
    """What a child writes to fd, read as it comes, with deadlines."""

    def __init__(self, fd):
        self.fd = fd
        self.data = b""
        self.eof = False

    def read_for(self, seconds):
        """Read whatever comes within seconds (less once the writer is gone)."""
        deadline = time.monotonic() + seconds
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: a terminal whose other side has closed
                    chunk = b""
                self.data += chunk
                self.eof = not chunk

    def until(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond(self.text()):
            if self.eof or time.monotonic() > deadline:
                fail("%s: not seen within %.0f s; got:\n%s" % (what, timeout, self.text()[-3000:]))
            self.read_for(0.05)

    def text(self):
        return self.data.decode("utf-8", "replace").replace("\r\n", "\n")


def watch(d, *args, tty=False):
    """Start wavemeterctl watch against d: (process, Output of its stdout)."""
    if tty:
        master, slave = pty.openpty()
    else:
        master, slave = os.pipe()
    p = subprocess.Popen([CTL, "-c", "127.0.0.1:%d" % d.port, "watch"] + list(args),
                         stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    return p, Output(master)


def finish(p, out, rc, what):
    """Wait for p to exit rc, read all it wrote; its stderr."""
    try:
        got = p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        fail("%s: still running after 10 s" % what)
    while not out.eof:
        out.read_for(1)
    os.close(out.fd)
    err = p.stderr.read().decode()
    p.stderr.close()
    if got != rc:
        fail("%s: exit %d, wanted %d\nstdout: %s\nstderr: %s" % (what, got, rc, out.text(), err))
    return err


def rows_of(text):
    """The lines of a watch table after its heading, as cells."""
    return [re.split(r"\s{2,}", l.strip()) for l in text.splitlines()
            if l.strip() and not l.startswith("LASER") and not l.startswith("missed")]


def test_watch_piped():
    with Daemon(two_lasers()) as d:
        wait_readings(d, ("399", "L2"))
        p, out = watch(d)
        out.until(lambda t: len(t.splitlines()) >= 3, 10, "the heading and a line per laser")
        lines = out.text().splitlines()
        if re.split(r"\s{2,}", lines[0].strip()) != WATCH_HEAD:
            fail("watch heading %r" % lines[0])
        first = rows_of("\n".join(lines[1:3]))
        if sorted(r[0] for r in first) != ["399", "L2"] or any(len(r) != 9 for r in first):
            fail("watch's first lines %r" % first)
        for r in first:
            # No noise, no drift: the frequency as the wire has it (384.123456789012,
            # 385.0), the lock as `lasers` has it.
            want = {"399": "384.123456789012", "L2": "385.0"}[r[0]]
            if r[1:4] != [{"399": "2", "L2": "1"}[r[0]], "ok", want] or r[6] != "off" or \
                    r[7] != "0.0" or not r[8].isdigit():
                fail("watch row %r" % r)
        # Readings keep coming, a line each.
        out.until(lambda t: len(t.splitlines()) >= 6, 10, "lines for readings")
        # A lock from another client shows in its line.
        d.result("laser.lock", ["L2"])
        out.until(lambda t: any(r[0] == "L2" and r[6] in ("acquiring", "locked")
                                for r in rows_of(t)), 10, "L2's lock")
        p.send_signal(signal.SIGINT)
        finish(p, out, 0, "watch in a pipe, SIGINT")
        if any(len(r) != 9 for r in rows_of(out.text())):
            fail("a line without every column:\n%s" % out.text())

        # --count: that many pushes, a line each after the heading and the first lines.
        o = expect(ctl(d, "watch", "399", "--count", "3"), 0, "watch --count 3")
        lines = o.stdout.splitlines()
        if len(lines) != 1 + 1 + 3 or any(r[0] != "399" for r in rows_of(o.stdout)):
            fail("watch 399 --count 3:\n%s" % o.stdout)
        # --json: each push as received; the option before the command too.
        o = expect(ctl(d, "--count", "2", "--json", "watch", "L2"), 0, "watch --json")
        notes = [json.loads(l) for l in o.stdout.splitlines()]
        if len(notes) != 2 or [n["params"]["seq"] for n in notes] != [1, 2] or \
                any("id" in n or n["params"]["reading" if n["method"] == "reading" else "lock"]
                    ["laser"] != "L2" for n in notes):
            fail("watch --json: %r" % notes)
        for bad in (["watch", "--count", "0"], ["watch", "--count", "x"], ["watch", "--count"],
                    ["read", "--count", "2"]):
            expect(ctl(d, *bad), 2, "usage %r" % bad)


def test_watch_lock_live():
    # A lock's error and output change with every controller step, while a `lock` push
    # comes only when its state changes: watch's line must follow them in between. L2 is
    # 200 MHz from its setpoint with a slow integrator, so it acquires for many seconds.
    cfg = two_lasers()
    cfg["lasers"][1].update(setpoint_thz=385.0002, ki_v_per_mhz_s=0.002)
    with Daemon(cfg) as d:
        wait_readings(d, ("399", "L2"))
        p, out = watch(d, "L2")
        out.until(lambda t: len(rows_of(t)) >= 1, 10, "L2's first line")
        d.result("laser.lock", ["L2"])

        def outputs(t):
            return {(r[5], r[7]) for r in rows_of(t) if len(r) == 9 and r[6] == "acquiring"}
        out.until(lambda t: len(outputs(t)) >= 3, 20,
                  "three different error/output pairs while L2 acquires")
        p.send_signal(signal.SIGINT)
        finish(p, out, 0, "watch L2, SIGINT")


def test_watch_terminal():
    with Daemon(two_lasers()) as d:
        wait_readings(d, ("399", "L2"))
        p, out = watch(d, tty=True)
        out.until(lambda t: "AGE (ms)" in t, 10, "the table")
        t0 = time.monotonic()
        n0 = len(re.findall(r"\x1b\[\d+A", out.text()))
        out.read_for(1.5)
        moves = re.findall(r"\x1b\[(\d+)A", out.text())
        # Redrawn in place at least 4 times a second, readings or not: up over the
        # heading and both lasers.
        if (len(moves) - n0) / (time.monotonic() - t0) < 4 or set(moves) != {"3"}:
            fail("redraws: %r in %.1f s:\n%r" % (moves, time.monotonic() - t0, out.text()[-2000:]))
        text = out.text()
        if not text.startswith("\x1b[?25l") or "\x1b[K" not in text:
            fail("the cursor is not hidden first: %r" % text[:100])
        frame = text[text.rindex("\x1b[3A"):]
        if not re.match(r"\x1b\[3A\rLASER +CHANNEL +STATUS +FREQUENCY \(THz\)", frame):
            fail("no heading in the last frame: %r" % frame)
        # The ages grow between readings: the frames do not all show the same ones.
        ages = set(re.findall(r" (\d+)\x1b\[K\n", text))
        if len(ages) < 3:
            fail("ages do not change: %r" % ages)
        p.send_signal(signal.SIGINT)
        err = finish(p, out, 0, "watch on a terminal, SIGINT")
        text = out.text()
        if not text.rstrip("\n").endswith("\x1b[?25h") or \
                text.rindex("\x1b[?25h") < text.rindex("\x1b[?25l") or err:
            fail("the cursor is not shown again at the end: %r, stderr %r" % (text[-200:], err))


def test_watch_unknown_laser():
    with Daemon(two_lasers()) as d:
        out = expect(ctl(d, "watch", "399", "nope"), 1, "watch nope")
        if 'no laser "nope"' not in out.stderr or "lasers here: 399, L2" not in out.stderr or \
                out.stdout:
            fail("watch nope: %r" % (out,))


def test_watch_daemon_gone():
    with Daemon(two_lasers()) as d:
        p, out = watch(d, "L2")
        out.until(lambda t: len(t.splitlines()) >= 3, 10, "lines")
        d.stop()
        err = finish(p, out, 3, "watch, daemon stopped")
        if "closed the connection" not in err:
            fail("daemon gone: %r" % err)


def test_watch_missed_and_stale():
    """A daemon of our own that says pushes were missed and sends a push older than
    what `read` answered: the footer counts, the old reading is not shown."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    reading = {"channel": 1, "laser": "A", "status": "ok", "frequency_thz": 400.5,
               "wavelength_nm": 748.5, "time": 1.0, "age_ms": 5.0, "seq": 7}

    def serve():
        c, _ = srv.accept()
        f = c.makefile("rw")
        answers = {
            "subscribe": {"subscription": 4, "topics": ["readings", "locks"], "lasers": ["A"],
                          "max_rate_hz": None},
            "lasers": [{"name": "A", "channel": 1, "state": "off", "output_v": 1.25,
                        "error_mhz": 0.5, "setpoint_thz": 400.5}],
            "read": [reading],
        }
        for _ in answers:
            req = json.loads(f.readline())
            f.write(json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                "result": answers[req["method"]]}) + "\n")
            f.flush()
        old = dict(reading, seq=6, frequency_thz=399.0)
        new = dict(reading, seq=9, frequency_thz=401.25)
        lock = {"laser": "A", "channel": 1, "lock": True, "state": "acquiring",
                "output_v": 1.5, "error_mhz": -2.5}
        for method, params in (("reading", {"seq": 1, "reading": old}),
                               ("reading", {"seq": 5, "missed": 3, "reading": new}),
                               ("lock", {"seq": 6, "lock": lock})):
            params["subscription"] = 4
            f.write(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + "\n")
        f.close()
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    out = subprocess.run([CTL, "-c", "127.0.0.1:%d" % srv.getsockname()[1], "watch"],
                         capture_output=True, text=True, timeout=10)
    t.join()
    srv.close()
    if out.returncode != 3:
        fail("exit %d: %r" % (out.returncode, out))
    rows = [r[:8] for r in rows_of(out.stdout)]
    want = [["A", "1", "ok", "400.5", "748.5", "0.5", "off", "1.25"],
            ["A", "1", "ok", "400.5", "748.5", "0.5", "off", "1.25"],  # seq 6 < 7: not shown
            ["A", "1", "ok", "401.25", "748.5", "0.5", "off", "1.25"],
            ["A", "1", "ok", "401.25", "748.5", "-2.5", "acquiring", "1.5"]]
    if rows != want or "missed 3 pushes" not in out.stdout.splitlines():
        fail("watch of a fake daemon:\n%s\nrows %r" % (out.stdout, rows))


run_tests([
    ("help_and_usage", test_help_and_usage),
    ("cannot_connect", test_cannot_connect),
    ("exit_codes_from_answers", test_exit_codes_from_answers),
    ("tables_for_people", test_tables_for_people),
    ("json_is_the_result", test_json_is_the_result),
    ("numbers_as_on_the_wire", test_numbers_as_on_the_wire),
    ("positional_commands", test_positional_commands),
    ("unknown_names_listed", test_unknown_names_listed),
    ("cookie_from_state_directory", test_cookie_from_state_directory),
    ("watch_piped", test_watch_piped),
    ("watch_lock_live", test_watch_lock_live),
    ("watch_terminal", test_watch_terminal),
    ("watch_unknown_laser", test_watch_unknown_laser),
    ("watch_daemon_gone", test_watch_daemon_gone),
    ("watch_missed_and_stale", test_watch_missed_and_stale),
])
