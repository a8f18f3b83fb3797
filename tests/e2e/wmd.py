"""Test harness for end-to-end tests: starts the real wavemeterd on an
ephemeral port and talks to it over TCP as a user would.

Every wait is on a condition with a deadline; nothing sleeps and hopes.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("WAVEMETERD", "build/wavemeterd")
CTL = os.environ.get("WAVEMETERCTL", os.path.join(os.path.dirname(BIN), "wavemeterctl"))


def fail(msg):
    raise AssertionError(msg)


def wait_for(cond, timeout, what):
    """Poll cond() until it returns a true value; fail naming what after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


def sim_config(lasers=None, **top):
    """A config dict for the simulator; lasers is a list of per-laser overrides."""
    if lasers is None:
        lasers = [{}]
    out = []
    for i, over in enumerate(lasers):
        l = {
            "name": "L%d" % (i + 1),
            "channel": i + 1,
            "exposure_ms": 5,
            "settle_ms": 5,
            "sim": {"nominal_thz": 384.0 + i, "noise_mhz": 0.2, "drift_mhz_per_sqrt_s": 0.0,
                    "sensitivity_mhz_per_v": 50.0, "lag_ms": 1.0},
            "actuator": {"driver": "sim", "timeout_ms": 1000},
        }
        for k, v in over.items():
            if isinstance(v, dict) and isinstance(l.get(k), dict):
                l[k].update(v)
            else:
                l[k] = v
        out.append(l)
    cfg = {"listen": "127.0.0.1:0", "wavemeter": {"driver": "sim", "seed": 42}, "lasers": out}
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


class Daemon:
    """One wavemeterd process. Use as a context manager."""

    def __init__(self, config=None, args=(), env=None, state_dir=None, log_level="info"):
        self.tmp = tempfile.mkdtemp(prefix="wmd-e2e-")
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.args = list(args)
        if config is not None:
            self.config_path = os.path.join(self.tmp, "config.json")
            with open(self.config_path, "w") as f:
                json.dump(config, f, indent=2)
            self.args = ["--config", self.config_path] + self.args
        if not any(a.startswith("--listen") for a in self.args) and config is None:
            self.args += ["--listen", "127.0.0.1:0"]
        self.args += ["--log-level", log_level]
        self.env = dict(os.environ)
        self.env["STATE_DIRECTORY"] = self.state_dir
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        if env:
            self.env.update(env)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.tmp, "stderr.log")

    def start(self, expect_ready=True):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN] + self.args, stdout=subprocess.DEVNULL,
                                     stderr=self.logf, env=self.env)
        if expect_ready:
            m = wait_for(lambda: self._listening(), 10, "wavemeterd to listen")
            self.port = int(m.group(1))
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            fail("wavemeterd exited with %s before listening:\n%s" %
                 (self.proc.returncode, self.log()))
        return re.search(r"listening on [^ ]*:(\d+),", self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                fail("wavemeterd did not exit within %s s of %s" % (timeout, sig))
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if exc[0] is None:
            if rc != 0:
                fail("wavemeterd exited %s:\n%s" % (rc, self.log()))
            for bad in ("AddressSanitizer", "runtime error", "LeakSanitizer"):
                if bad in self.log():
                    fail("sanitizer report in daemon log:\n" + self.log())
        else:
            sys.stderr.write("---- daemon log ----\n" + self.log())
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def client(self):
        return Client(self.port)

    def call(self, method, params=None, timeout=10):
        with self.client() as c:
            return c.call(method, params, timeout)

    def result(self, method, params=None, timeout=10):
        ans = self.call(method, params, timeout)
        if "error" in ans:
            fail("%s %s -> error %s" % (method, params, ans["error"]))
        return ans["result"]


class Client:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""
        self.notes = []  # notifications that came while waiting for an answer
        self.next_id = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv_line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("no answer line within %.1f s (have %r)" % (timeout, self.buf[:200]))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                fail("connection closed while waiting for a line (have %r)" % self.buf[:200])
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def recv_json(self, timeout=10):
        return json.loads(self.recv_line(timeout))

    def call(self, method, params=None, timeout=10):
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            req["params"] = params
        self.send(json.dumps(req) + "\n")
        ans = self.recv_json(timeout)
        while "id" not in ans and "method" in ans:
            self.notes.append(ans)  # a notification (subscriptions): kept for the test
            ans = self.recv_json(timeout)
        if ans.get("id") != req["id"]:
            fail("answer id %r for request id %r" % (ans.get("id"), req["id"]))
        return ans

    def result(self, method, params=None, timeout=10):
        ans = self.call(method, params, timeout)
        if "error" in ans:
            fail("%s %s -> error %s" % (method, params, ans["error"]))
        return ans["result"]

    def expect_closed(self, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buf += chunk
        fail("connection still open after %s s" % timeout)


def run_tests(tests):
    """Run each (name, fn) and report; exit 1 on the first failure."""
    only = sys.argv[1:]
    for name, fn in tests:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            print("FAIL %s" % name, flush=True)
            raise
        print("ok   %s (%.2f s)" % (name, time.monotonic() - t0), flush=True)
