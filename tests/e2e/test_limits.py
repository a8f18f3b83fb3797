#!/usr/bin/env python3
"""End to end: the limits that keep one client (or one host) from costing the
others: per-address connections, the line deadline, the answer budget, login
attempts per address; inputs checked for range; ids echoed as written; SIGHUP
and the other signals. The real wavemeterd on the simulator, over TCP."""
import json
import os
import signal
import socket
import subprocess
import time

from wmd import Client, Daemon, fail, run_tests, sim_config, wait_for


def connect_from(port, src):
    """A client whose connection comes from the loopback address src."""
    c = Client.__new__(Client)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    c.sock, c.buf, c.next_id = s, b"", 1
    return c


def test_per_address_limit():
    # Three connections per address: the fourth from 127.0.0.2 is told why
    # and closed; other addresses are not affected; ten refusals from one
    # address in a minute make one log line.
    cfg = sim_config(limits={"max_clients_per_address": 3})
    with Daemon(cfg) as d:
        held = [connect_from(d.port, "127.0.0.2") for _ in range(3)]
        for c in held:
            if c.result("ping") != "pong":
                fail("held connection does not answer")
        for _ in range(10):
            extra = connect_from(d.port, "127.0.0.2")
            e = extra.recv_json()["error"]
            if e["code"] != -32005 or "from this address (max 3)" not in e["message"]:
                fail("refusal %r" % e)
            extra.expect_closed()
            extra.close()
        other = connect_from(d.port, "127.0.0.3")
        if other.result("ping") != "pong":
            fail("another address was refused")
        refusals = [l for l in d.log().splitlines() if "refused" in l and "127.0.0.2" in l]
        if len(refusals) != 1:
            fail("%d refusal log lines for one address within a minute:\n%s" %
                 (len(refusals), "\n".join(refusals)))
        # A slot freed is a slot again.
        held.pop().close()

        def served():
            with connect_from(d.port, "127.0.0.2") as c:
                c.send('{"jsonrpc":"2.0","method":"ping","id":1}\n')
                return c.recv_json().get("result") == "pong"
        wait_for(served, 5, "a freed slot to be usable")
        for c in held + [other]:
            c.close()


def test_line_deadline():
    # A line begun must end within line_timeout_s: a byte every 300 ms never
    # finishing a line is answered -32600 and closed; a connection that sends
    # whole lines, or nothing, stays.
    cfg = sim_config(limits={"line_timeout_s": 1})
    with Daemon(cfg) as d:
        quiet = d.client()
        slow = d.client()
        t0 = time.monotonic()
        closed = None
        line = b'{"jsonrpc":"2.0","method":"ping","id":1' + b" " * 100
        for b in line:
            try:
                slow.send(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                break
            slow.sock.settimeout(0.3)
            try:
                chunk = slow.sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            slow.buf += chunk
            if b"\n" in slow.buf:
                closed = time.monotonic() - t0
                break
        if closed is None:
            fail("no answer to a line dribbled for %.1f s" % (time.monotonic() - t0))
        e = json.loads(slow.buf.split(b"\n")[0])["error"]
        if e["code"] != -32600 or "not finished within 1 s" not in e["message"]:
            fail("line deadline answer %r" % e)
        if not 1.0 <= closed < 4.0:
            fail("closed after %.1f s, line_timeout_s is 1" % closed)
        slow.expect_closed()
        # The quiet one sent nothing and is still served.
        if quiet.result("ping") != "pong":
            fail("idle client lost")
        quiet.close()
        slow.close()


def wait_reads(d, n):
    return wait_for(lambda: d.result("status")["channels"][0]["reads"] >= n, 30,
                    "%d readings" % n)


def test_answer_budget():
    # With 64 KiB of answers allowed per client, a history of 1000 samples
    # (~130 KB) is refused before it is built, naming the limit; a shorter
    # window is served; a batch gets its first answers and -32005 for the
    # rest, and the connection goes on.
    cfg = sim_config([{"name": "fast", "exposure_ms": 1, "settle_ms": 0}],
                     limits={"write_queue_max_bytes": 65536})
    with Daemon(cfg) as d:
        wait_reads(d, 1000)
        with d.client() as c:
            e = c.call("history", {"laser": "fast"})["error"]
            if e["code"] != -32005 or "limits.write_queue_max_bytes" not in e["message"]:
                fail("big history: %r" % e)
            if not e["data"]["need_bytes"] > e["data"]["budget_bytes"] > 0:
                fail("big history data: %r" % e["data"])
            small = c.result("history", {"laser": "fast", "seconds": 0.05})
            if not 0 < len(small["samples"]) < 200:
                fail("short window: %d samples" % len(small["samples"]))
            batch = [{"jsonrpc": "2.0", "id": i, "method": "lasers"} for i in range(100)]
            c.send(json.dumps(batch) + "\n")
            ans = c.recv_json()
            ok = [a for a in ans if "result" in a]
            busy = [a for a in ans if a.get("error", {}).get("code") == -32005]
            if len(ans) != 100 or not ok or not busy or len(ok) + len(busy) != 100:
                fail("batch: %d answers, %d results, %d busy" % (len(ans), len(ok), len(busy)))
            if sorted(a["id"] for a in ans) != list(range(100)):
                fail("batch ids")
            if len(json.dumps(ans)) > 65536 + 100 * 400:
                fail("batch answer of %d bytes" % len(json.dumps(ans)))
            if c.result("ping") != "pong":
                fail("connection not usable after refusals")


def test_login_attempts_per_address():
    # Reconnecting does not buy guesses: after 10 wrong tokens from one
    # address, auth is refused unchecked (-32004), even with the right token,
    # for a minute; another address is not affected. A wrong token after a
    # right one withdraws the login, and the answer says so.
    cfg = sim_config([{"name": "399"}], access={"require_token": True,
                                                "write_from": ["127.0.0.0/8"]})
    with Daemon(cfg) as d:
        token = open(os.path.join(d.state_dir, "cookie")).read().strip()
        with connect_from(d.port, "127.0.0.4") as c:
            if c.result("auth", {"token": token}) is not True:
                fail("right token refused")
            if "result" not in c.call("laser.unlock", ["399"]):
                fail("write after login refused")
            e = c.call("auth", {"token": "x" * 32})["error"]
            if e["code"] != -32001 or "withdrawn" not in e["message"]:
                fail("wrong token after a right one: %r" % e)
            e = c.call("laser.unlock", ["399"])["error"]
            if e["code"] != -32001:
                fail("write after a withdrawn login: %r" % e)
        wrong = 1
        while wrong < 10:
            with connect_from(d.port, "127.0.0.5") as c:
                for _ in range(4):  # the 5th in a row would close the connection
                    if wrong >= 10:
                        break
                    if c.call("auth", {"token": "y" * 32})["error"]["code"] != -32001:
                        fail("wrong token %d" % wrong)
                    wrong += 1
        with connect_from(d.port, "127.0.0.5") as c:
            e = c.call("auth", {"token": "z" * 32})["error"]  # the 10th
            e = c.call("auth", {"token": token})["error"]
            if e["code"] != -32004 or "try again in" not in e["message"]:
                fail("11th attempt from one address: %r" % e)
        with connect_from(d.port, "127.0.0.6") as c:
            if c.result("auth", {"token": token}) is not True:
                fail("another address was blocked too")


def test_inputs_bounded():
    cfg = sim_config([{"name": "399"}])
    with Daemon(cfg) as d, d.client() as c:
        for jump in (1e308, -1e308, 1e6 + 1):
            e = c.call("sim.mode_hop", {"laser": "399", "jump_mhz": jump})["error"]
            if e["code"] != -32602 or e["data"] != {"min": -1e6, "max": 1e6}:
                fail("mode_hop %g: %r" % (jump, e))
        for wl in (0, -1, 5e-324, 1e300):
            e = c.call("laser.set_setpoint", {"laser": "399", "wavelength_nm": wl})["error"]
            if e["code"] != -32602 or "requested_thz" in e.get("data", {}) or \
                    set(e["data"]) != {"min_nm", "max_nm"} or "nm is outside" not in e["message"]:
                fail("wavelength %g: %r" % (wl, e))
        # Still running, and the simulated reading is a frequency.
        r = wait_for(lambda: c.result("read", {"laser": "399"}), 5, "a reading")
        if r["status"] == "ok" and not 383 < r["frequency_thz"] < 385:
            fail("reading %r" % r)


def test_ids_as_written():
    # Through netcat, as a user would: number ids come back as sent.
    with Daemon(sim_config()) as d:
        lines = [b'{"jsonrpc":"2.0","method":"ping","id":1e-400}',
                 b'{"jsonrpc":"2.0","method":"ping","id":-0}',
                 b'[{"jsonrpc":"2.0","method":"ping","id":2.50}]',
                 b'{"jsonrpc":"2.0","method":"ping","id":[}']
        out = subprocess.run(["nc", "-N", "127.0.0.1", str(d.port)], input=b"\n".join(lines) + b"\n",
                             capture_output=True, timeout=10).stdout.decode().splitlines()
        want = ['{"jsonrpc":"2.0","id":1e-400,"result":"pong"}',
                '{"jsonrpc":"2.0","id":-0,"result":"pong"}',
                '[{"jsonrpc":"2.0","id":2.50,"result":"pong"}]']
        if out[:3] != want:
            fail("ids: %r" % out)
        e = json.loads(out[3])["error"]
        if e["code"] != -32700 or e["message"] != "Parse error: invalid JSON near column 40":
            fail("parse error in our words: %r" % e)


def test_sighup_reload():
    cfg = sim_config([{"name": "399"}])
    with Daemon(cfg) as d:
        with open(d.config_path, "w") as f:
            f.write('{"limits": {"max_batch": "two"}}')
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in d.log(), 5, "the bad file to be refused")
        if "limits.max_batch" not in d.log():
            fail("refusal does not name the key:\n" + d.log())
        with d.client() as c:
            if len(c.result("lasers")) != 1 or c.result("ping") != "pong":
                fail("not running the old config after a bad reload")
            cfg["limits"] = {"max_batch": 2}
            cfg["lasers"][0]["kp_v_per_mhz"] = 0.005
            cfg["listen"] = "127.0.0.1:1"  # restart-only: named, kept
            with open(d.config_path, "w") as f:
                json.dump(cfg, f)
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "applied:" in d.log(), 5, "the good file to be applied")
            if "listen changed" not in d.log():
                fail("restart-only change not named:\n" + d.log())
            c.send(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(3)])
                   + "\n")
            e = c.recv_json()["error"]
            if e["code"] != -32600 or "batch too large (3 > 2)" not in e["message"]:
                fail("max_batch not reloaded: %r" % e)
            g = wait_for(lambda: c.result("laser.get", ["399"])["gains"], 5, "gains")
            if g["kp_v_per_mhz"] != 0.005:
                fail("gains not reloaded: %r" % g)
    # SIGHUP without a config file is harmless.
    with Daemon() as d:
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "no config file to re-read" in d.log(), 5, "the SIGHUP log line")
        if d.result("ping") != "pong":
            fail("not answering after SIGHUP")


def test_other_signals_stop_cleanly():
    for sig in (signal.SIGUSR1, signal.SIGQUIT, signal.SIGALRM):
        d = Daemon(sim_config([{"name": "399", "lock": True}]))
        with d:
            wait_for(lambda: d.result("laser.get", ["399"])["state"] == "locked", 15, "a lock")
            rc = d.stop(sig)
            if rc != 0 or "stopping" not in d.log() or "stopped" not in d.log():
                fail("%s: exit %s\n%s" % (sig, rc, d.log()))
            state = json.load(open(os.path.join(d.state_dir, "state.json")))
            if "399" not in json.dumps(state):
                fail("%s: no final save: %r" % (sig, state))


run_tests([
    ("per_address_limit", test_per_address_limit),
    ("line_deadline", test_line_deadline),
    ("answer_budget", test_answer_budget),
    ("login_per_address", test_login_attempts_per_address),
    ("inputs_bounded", test_inputs_bounded),
    ("ids_as_written", test_ids_as_written),
    ("sighup_reload", test_sighup_reload),
    ("other_signals", test_other_signals_stop_cleanly),
])
