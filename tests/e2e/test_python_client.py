#!/usr/bin/env python3
"""End to end: the Python client (clients/python/wavemeter) against the real
wavemeterd on the simulator. Calls and typed errors, subscriptions (order,
filters, unsubscribe, pushes queued while a call waits, missed counts), the
asyncio client, reconnecting after the daemon restarts on the same port
(read calls sent again, writes never twice, subscriptions resumed with a
gap marker), wait_for_state, and every python example of docs/PYTHON.md.
Every wait has a deadline."""
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import json

from wmd import Daemon, fail, run_tests, sim_config, wait_for

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT_DIR = os.path.join(SRC, "clients", "python")
sys.path.insert(0, CLIENT_DIR)

import wavemeter  # noqa: E402
from wavemeter import AsyncClient, Client, Gap  # noqa: E402


def expect(exc_type, fn, *args, **kw):
    """fn(*args) must raise exc_type; returns the exception."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        fail("%s%r raised %r, not %s" % (getattr(fn, "__name__", fn), args, e, exc_type.__name__))
    fail("%s%r did not raise %s" % (getattr(fn, "__name__", fn), args, exc_type.__name__))


async def aexpect(exc_type, coro):
    try:
        await coro
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        fail("%r raised %r, not %s" % (coro, e, exc_type.__name__))
    fail("%r did not raise %s" % (coro, exc_type.__name__))


def four_lasers():
    """Three simulated lasers with actuators, a fourth measured only."""
    cfg = sim_config([{}, {}, {}, {}])
    cfg["lasers"][3]["actuator"] = {"driver": "none"}
    cfg["wavemeter"]["monitor_period_ms"] = 50  # pushes for the unlocked ones too
    return cfg


def wait_ok(c, laser, timeout=10):
    wait_for(lambda: c.read(laser)["status"] == "ok", timeout, "a good reading of %s" % laser)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def take(sub, n, timeout=10):
    """The next n items of a blocking subscription, within timeout in all."""
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("only %d of %d pushes within %s s" % (len(out), n, timeout))
        try:
            out.append(sub.get(timeout=left))
        except TimeoutError:
            continue
    return out


async def atake(sub, n, timeout=10):
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("only %d of %d pushes within %s s" % (len(out), n, timeout))
        try:
            out.append(await sub.get(timeout=left))
        except TimeoutError:
            continue
    return out


def contiguous(items, what):
    seqs = [p["seq"] for p in items]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        fail("%s: seq not contiguous: %r" % (what, seqs))
    if any("missed" in p for p in items):
        fail("%s: missed pushes for a reader that keeps up: %r" % (what, items))
    return seqs


# ---- calls and errors ---------------------------------------------------------


def test_calls_and_typed_errors():
    with Daemon(four_lasers()) as d, Client(port=d.port) as c:
        if c.ping() != "pong" or c.version()["name"] != "wavemeterd":
            fail("ping/version")
        st = c.status()
        if not isinstance(st, dict) or st["driver"]["name"] != "sim":
            fail("status %r" % st)
        if [ch["laser"] for ch in c.channels()] != ["L1", "L2", "L3", "L4"]:
            fail("channels")
        wait_ok(c, "L1")
        r = c.read("L1")
        if not isinstance(r, dict) or r["laser"] != "L1" or not isinstance(r["frequency_thz"], float):
            fail("read L1 %r" % r)
        if c.read(channel=2)["laser"] != "L2":
            fail("read channel 2")
        all_ = c.read()
        if not isinstance(all_, list) or not all(isinstance(x, dict) for x in all_) or len(all_) != 4:
            fail("read all %r" % all_)
        if [l["name"] for l in c.lasers()] != ["L1", "L2", "L3", "L4"]:
            fail("lasers")
        l1 = c.laser("L1")
        if l1["name"] != "L1" or l1["lock"] is not False:
            fail("laser.get %r" % l1)
        h = c.history("L1", seconds=10)
        if h["laser"] != "L1" or not h["samples"] or not isinstance(h["samples"][0], dict):
            fail("history %r" % h)
        if c.call("read", [2])["laser"] != "L2":
            fail("positional call")

        # Writes and their typed errors.
        if c.lock("L1")["lock"] is not True:
            fail("lock")
        e = expect(wavemeter.LaserLocked, c.set_output, "L1", 1.0)
        if e.code != -32010 or not isinstance(e, wavemeter.RpcError) or "locked" not in e.message \
                or e.method != "laser.set_output":
            fail("LaserLocked %r" % e)
        e = expect(wavemeter.MethodNotFound, c.call, "laser.explode", {"laser": "L1"})
        if e.code != -32601:
            fail("MethodNotFound code %r" % e.code)
        e = expect(wavemeter.InvalidParams, c.call, "read", {"lazer": "L1"})
        if "lazer" not in e.message:
            fail("InvalidParams message %r" % e.message)
        sp = l1["setpoint_thz"]
        e = expect(wavemeter.InvalidParams, c.set_setpoint, "L1", frequency_thz=sp + 1.0)
        if not isinstance(e.data, dict) or not e.data["min_thz"] < sp < e.data["max_thz"]:
            fail("range error data %r" % e.data)
        expect(wavemeter.InvalidParams, c.set_gains, "L1", kp=-1)
        expect(wavemeter.InvalidParams, c.laser, "nope")
        expect(ValueError, c.set_setpoint, "L1", frequency_thz=sp, wavelength_nm=780.0)
        e = expect(wavemeter.NoActuator, c.lock, "L4")
        if e.code != -32011:
            fail("NoActuator %r" % e)
        # The connection is still good after errors, and the writes work.
        c.unlock("L1")
        if abs(c.set_output("L1", 0.5)["output_v"] - 0.5) > 1e-9:
            fail("set_output")
        if c.set_gains("L1", kp=0.003)["gains"]["kp_v_per_mhz"] != 0.003:
            fail("set_gains")
        got = c.set_setpoint("L1", frequency_thz=sp + 1e-6, ramp_mhz_per_s=5)
        if got["setpoint_thz"] != sp + 1e-6 or got["ramp_mhz_per_s"] != 5:
            fail("set_setpoint %r" % got)
        # A client-side deadline: TimeoutError, and the late answer is skipped.
        expect(TimeoutError, c.call, "history", {"laser": "L1"}, timeout=0.0)
        if c.ping() != "pong":
            fail("ping after a timed-out call")


def test_token_and_rate_limit():
    cfg = sim_config(access={"require_token": True})
    with Daemon(cfg) as d:
        token = wavemeter.read_token(os.path.join(d.state_dir, "cookie"))
        with Client(port=d.port) as anon:
            anon.ping()
            expect(wavemeter.Unauthorized, anon.lock, "L1")
        with Client(port=d.port, token=token) as c:
            if c.lock("L1")["lock"] is not True:
                fail("lock with token")
        # Wrong tokens: Unauthorized at connect, then RateLimited with a hint.
        limited = None
        for _ in range(15):
            try:
                Client(port=d.port, token="wrong").close()
                fail("a wrong token was taken")
            except wavemeter.Unauthorized:
                continue
            except wavemeter.RateLimited as e:
                limited = e
                break
        if limited is None or not limited.retry_after or limited.retry_after <= 0:
            fail("no RateLimited with a retry hint: %r" % limited)


# ---- subscriptions ----------------------------------------------------------------


def test_subscriptions():
    with Daemon(four_lasers()) as d, Client(port=d.port) as c:
        # Ordered, filtered, and the answer's echo.
        s2 = c.subscribe(["readings"], lasers=["L2"])
        if s2.info["lasers"] != ["L2"] or not isinstance(s2.id, int):
            fail("subscribe answer %r" % s2.info)
        got = take(s2, 20)
        if contiguous(got, "L2")[0] != 1:
            fail("first seq")
        if any(p["reading"]["laser"] != "L2" or p["subscription"] != s2.id for p in got):
            fail("filter lasers: %r" % got)
        s1 = c.subscribe("readings", channels=[1])
        # Pushes that come while calls wait for their answers are queued.
        for _ in range(30):
            c.ping()
            time.sleep(0.01)
        if not s1._queue or not s2._queue:
            fail("no push was queued during 30 calls")
        a, b = take(s1, 40), take(s2, 40)
        contiguous(a, "channel 1")
        if contiguous(b, "L2 after calls")[0] != 21:
            fail("L2 lost pushes during calls: %r" % [p["seq"] for p in b[:3]])
        if {p["reading"]["channel"] for p in a} != {1}:
            fail("filter channels")
        if s1.missed or s2.missed or s2.last_seq != 60:
            fail("missed %r/%r last_seq %r" % (s1.missed, s2.missed, s2.last_seq))
        # Unsubscribe: no push of it after the answer; the other goes on.
        s1.close()
        before = c.unclaimed_pushes
        more = take(s2, 20)
        contiguous(b + more, "L2 after unsubscribe")
        if c.unclaimed_pushes != before or s1._queue:
            fail("pushes of a closed subscription (%d)" % (c.unclaimed_pushes - before))
        if list(s1) != []:
            fail("a closed subscription yields")
        expect(wavemeter.ConnectionLost, s1.get, 1)
        s2.close()

        # Locks and status topics.
        with c.subscribe(["locks"], lasers=["L3"]) as sl:
            c.lock("L3")
            p = take(sl, 1)[0]
            if p["lock"]["laser"] != "L3" or p["lock"]["state"] != "acquiring" or p["seq"] != 1:
                fail("lock push %r" % p)
            c.unlock("L3")
        with c.subscribe(["status"]) as ss:
            c.call("sim.disconnect")
            deadline = time.monotonic() + 10
            while take(ss, 1, timeout=deadline - time.monotonic())[0]["status"]["state"] != "error":
                pass
            c.call("sim.connect")
            while take(ss, 1, timeout=deadline - time.monotonic())[0]["status"]["state"] == "error":
                pass

        # max_rate_hz: at most that many a second (plus the first).
        with c.subscribe(["readings"], lasers=["L1"], max_rate_hz=4) as sr:
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 1.5:
                try:
                    sr.get(timeout=max(0.0, 1.5 - (time.monotonic() - t0)))
                    n += 1
                except TimeoutError:
                    break
            if not 2 <= n <= 8:
                fail("max_rate_hz 4 gave %d pushes in 1.5 s" % n)

        # Iteration with an idle deadline.
        with c.subscribe(["readings"], lasers=["L1"], idle_timeout=5) as si:
            for i, p in enumerate(si):
                if p["seq"] != i + 1:
                    fail("iteration seq %r" % p["seq"])
                if i == 9:
                    break
        # Nothing comes: TimeoutError, not a hang.
        with c.subscribe(["locks"], lasers=["L2"]) as quiet:
            t0 = time.monotonic()
            expect(TimeoutError, quiet.get, 0.3)
            if time.monotonic() - t0 > 2:
                fail("get(0.3) took %.1f s" % (time.monotonic() - t0))


def test_missed_for_a_slow_reader():
    cfg = sim_config([{}, {}, {}])
    cfg["limits"] = {"push_soft_bytes": 4096, "write_stall_timeout_s": 30}
    real = socket.create_connection

    def small_window(addr, timeout=None, *args, **kw):  # a small receive window
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(timeout)
        s.connect(addr)
        return s

    with Daemon(cfg) as d:
        socket.create_connection = small_window
        try:
            c = Client(port=d.port)
        finally:
            socket.create_connection = real
        s = c.subscribe(["readings"], lasers=["L1"])
        time.sleep(3)  # a slow reader: the daemon coalesces
        got = take(s, 40, timeout=20)
        if not s.missed:
            fail("no missed count: %r" % [p["seq"] for p in got])
        total = 0
        for prev, p in zip(got, got[1:]):
            if p["seq"] - prev["seq"] - 1 != p.get("missed", 0):
                fail("seq %d -> %d, missed %r" % (prev["seq"], p["seq"], p.get("missed")))
        total = sum(p.get("missed", 0) for p in got)
        if total != s.missed:
            fail("missed %d, pushes say %d" % (s.missed, total))
        print("     slow reader missed %d" % s.missed)
        c.close()


# ---- wait_for_state --------------------------------------------------------------


def test_wait_for_state():
    with Daemon(four_lasers()) as d, Client(port=d.port) as c:
        wait_ok(c, "L1")
        c.lock("L1")
        t0 = time.monotonic()
        lk = c.wait_for_state("L1", "locked", timeout=20)
        if lk["state"] != "locked" or lk["laser" if "laser" in lk else "name"] != "L1":
            fail("wait_for_state %r" % lk)
        if c.laser("L1")["state"] != "locked":
            fail("not locked after wait_for_state")
        print("     L1 locked %.2f s after lock" % (time.monotonic() - t0))
        # Already there: answers at once, with the laser.
        if c.wait_for_state("L1", ("locked", "acquiring"), timeout=5)["name"] != "L1":
            fail("already locked")
        # A step away and back.
        sp = c.laser("L1")["setpoint_thz"]
        c.set_setpoint("L1", frequency_thz=sp + 10e-6)
        if c.laser("L1")["state"] != "acquiring":
            fail("a 10 MHz step left it locked")
        c.wait_for_state("L1", "locked", timeout=20)
        # Never: TimeoutError naming the state, within its deadline.
        t0 = time.monotonic()
        e = expect(TimeoutError, c.wait_for_state, "L2", "locked", timeout=0.5)
        if "off" not in str(e) or time.monotonic() - t0 > 3:
            fail("timeout %r after %.1f s" % (e, time.monotonic() - t0))


# ---- asyncio ---------------------------------------------------------------------


def test_async_client():
    async def main(port):
        async with AsyncClient(port=port) as a:
            pong, ver, lasers, r = await asyncio.gather(a.ping(), a.version(), a.lasers(),
                                                        a.read(channel=1))
            if pong != "pong" or ver["name"] != "wavemeterd" or len(lasers) != 4 or r["laser"] != "L1":
                fail("async calls")
            deadline = time.monotonic() + 10
            while (await a.read("L1"))["status"] != "ok":
                if time.monotonic() > deadline:
                    fail("no good reading")
                await asyncio.sleep(0.02)
            if not isinstance(await a.read(), list) or not isinstance(await a.read("L2"), dict):
                fail("read shapes")
            await a.lock("L1")
            await aexpect(wavemeter.LaserLocked, a.set_output("L1", 1.0))
            await aexpect(wavemeter.MethodNotFound, a.call("nope"))
            await aexpect(wavemeter.InvalidParams, a.call("read", {"lazer": 1}))
            await aexpect(wavemeter.NoActuator, a.lock("L4"))
            # Many calls at once on the one connection.
            res = await asyncio.gather(*[a.laser("L%d" % (i % 4 + 1)) for i in range(40)])
            if [x["name"] for x in res] != ["L%d" % (i % 4 + 1) for i in range(40)]:
                fail("concurrent answers mixed up")

            s2 = await a.subscribe(["readings"], lasers=["L2"])
            async with a.subscribe(["readings"], channels=[3]) as s3:
                # Calls while pushes flow: nothing lost.
                for _ in range(20):
                    await a.ping()
                    await asyncio.sleep(0.01)
                x2, x3 = await atake(s2, 30), await atake(s3, 30)
                if contiguous(x2, "async L2")[0] != 1 or contiguous(x3, "async ch3")[0] != 1:
                    fail("async seq did not start at 1")
                if {p["reading"]["laser"] for p in x2} != {"L2"} or \
                        {p["reading"]["channel"] for p in x3} != {3}:
                    fail("async filters")
            # s3 closed: its pushes stop; s2 goes on.
            before = a.unclaimed_pushes
            more = await atake(s2, 15)
            contiguous(x2 + more, "async L2 after unsubscribe")
            if a.unclaimed_pushes != before:
                fail("async pushes after unsubscribe")
            await aexpect(wavemeter.ConnectionLost, s3.get(0.1))
            await s2.close()
            # async for, with an idle deadline.
            n = 0
            async for p in a.subscribe(["readings"], lasers=["L1"], idle_timeout=5):
                n += 1
                if p["seq"] != n:
                    fail("async for seq")
                if n == 5:
                    break
            lk = await a.wait_for_state("L1", "locked", timeout=20)
            if lk["state"] != "locked":
                fail("async wait_for_state %r" % lk)
            await aexpect(TimeoutError, a.wait_for_state("L2", "locked", timeout=0.3))
            quiet = await a.subscribe(["locks"], lasers=["L3"])
            await aexpect(TimeoutError, quiet.get(0.2))
            await quiet.close()

    with Daemon(four_lasers()) as d:
        asyncio.run(asyncio.wait_for(main(d.port), 120))


# ---- dropped connections -------------------------------------------------------


class FakeDaemon:
    """A scripted stand-in for the daemon: answers every call, except that
    the first time it gets a method in drop_once it closes the connection
    without answering. Records (connection number, method) of each request."""

    def __init__(self, drop_once):
        self.drop_once = set(drop_once)
        self.received = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        n = 0
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            n += 1
            conn.settimeout(0.1)
            buf = b""
            with conn:
                while not self.stop:
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    buf += chunk
                    dropped = False
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        req = json.loads(line)
                        self.received.append((n, req["method"]))
                        if req["method"] in self.drop_once:
                            self.drop_once.discard(req["method"])
                            dropped = True
                            break
                        res = "pong" if req["method"] == "ping" else {"name": "L1", "lock": True}
                        conn.sendall((json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                                  "result": res}) + "\n").encode())
                    if dropped:
                        break

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.srv.close()


def test_retry_reads_never_writes():
    f = FakeDaemon(["ping", "laser.lock"])
    try:
        with Client(port=f.port, timeout=5) as c:
            if c.ping() != "pong":
                fail("ping not retried")
            if [m for _, m in f.received] != ["ping", "ping"] or c.connects != 2:
                fail("read retry: %r, %d connections" % (f.received, c.connects))
            e = expect(wavemeter.ConnectionLost, c.lock, "L1")
            if not isinstance(e, ConnectionError) or "may or may not" not in str(e):
                fail("ConnectionLost %r" % e)
            if [m for _, m in f.received].count("laser.lock") != 1:
                fail("a write was sent twice: %r" % f.received)
            # The next call connects again.
            if c.lock("L1")["lock"] is not True or c.connects != 3:
                fail("no reconnect after a lost write (%d connections)" % c.connects)
    finally:
        f.close()

    async def amain(port, fake):
        async with AsyncClient(port=port, timeout=5) as a:
            if await a.ping() != "pong" or a.connects != 2:
                fail("async ping not retried")
            await aexpect(wavemeter.ConnectionLost, a.lock("L1"))
            if [m for _, m in fake.received].count("laser.lock") != 1:
                fail("async write sent twice: %r" % fake.received)
            if (await a.lock("L1"))["lock"] is not True:
                fail("async no reconnect after a lost write")
    f = FakeDaemon(["ping", "laser.lock"])
    try:
        asyncio.run(asyncio.wait_for(amain(f.port, f), 30))
    finally:
        f.close()
    # Nobody listening: the first connection is refused at once.
    port = free_port()
    t0 = time.monotonic()
    expect(ConnectionRefusedError, Client, port=port)
    if time.monotonic() - t0 > 2:
        fail("a refused connection took %.1f s" % (time.monotonic() - t0))


def until_gap(take, sub, before, timeout=20):
    """The Gap a restart causes; the pushes before it continue the sequence."""
    deadline = time.monotonic() + timeout
    items = list(before)
    while True:
        g = take(sub, 1, timeout=max(0.1, deadline - time.monotonic()))[0]
        if isinstance(g, Gap):
            contiguous(items, "before the gap")
            return g
        items.append(g)


def restartable(port, state_dir):
    return Daemon(args=["--listen", "127.0.0.1:%d" % port], state_dir=state_dir)


def stop(d):
    """SIGTERM, exit 0, no sanitizer report (once per daemon)."""
    if not getattr(d, "stopped", False):
        d.stopped = True
        d.__exit__(None, None, None)


def test_reconnect_after_restart():
    port, sd = free_port(), tempfile.mkdtemp(prefix="wmd-pyc-")
    d1 = restartable(port, sd).start()
    try:
        c = Client(port=port, reconnect_timeout=20)
        w = Client(port=port)
        wait_ok(c, "866")
        sub = c.subscribe(["readings"], lasers=["866"])
        first = take(sub, 3)
        contiguous(first, "before restart")
        old_id = sub.id
        c.lock("397")
        sp = c.laser("397")["setpoint_thz"]
        c.set_setpoint("397", frequency_thz=sp + 5e-6)
        stop(d1)
        d2 = restartable(port, sd).start()
        try:
            # The subscription notices, connects again, subscribes again.
            g = until_gap(take, sub, first)
            if not isinstance(g, Gap) or g.previous != old_id or g.last_seq < 3 or \
                    g.subscription != sub.id or not g.reason:
                fail("no gap marker after the restart: %r" % (g,))
            after = take(sub, 2)
            if contiguous(after, "after restart")[0] != 1 or sub.gaps != 1:
                fail("seq after the gap")
            if c.ping() != "pong" or c.connects != 2:
                fail("calls after the restart (%d connections)" % c.connects)
            # The state came through the restart.
            l397 = c.laser("397")
            if l397["lock"] is not True or abs(l397["setpoint_thz"] - (sp + 5e-6)) > 1e-12:
                fail("state after restart %r" % {k: l397[k] for k in ("lock", "setpoint_thz")})
            # A write on a connection that the restart closed: noticed before
            # sending, so it is sent (once) on a new connection.
            if w.unlock("397")["lock"] is not False or w.connects != 2:
                fail("write after restart (%d connections)" % w.connects)
            # gaps="raise"
            with c.subscribe(["readings"], lasers=["399"], gaps="raise") as sr:
                take(sr, 2)
                stop(d2)
                d2 = restartable(port, sd).start()
                deadline = time.monotonic() + 20
                while True:
                    try:
                        sr.get(timeout=max(0.0, deadline - time.monotonic()))
                    except wavemeter.SubscriptionGap as e:
                        if not isinstance(e.gap, Gap):
                            fail("SubscriptionGap without its gap")
                        break
                    except TimeoutError:
                        fail("no SubscriptionGap after a restart")
                if take(sr, 2)[0]["seq"] != 1:
                    fail("gaps=raise: no fresh seq")
            # The daemon gone for good: ConnectionLost once reconnect_timeout is up.
            short = Client(port=port, timeout=5, reconnect_timeout=1)
            ssub = short.subscribe(["readings"], idle_timeout=10)
            stop(d2)
            t0 = time.monotonic()
            expect(wavemeter.ConnectionLost, short.ping)
            deadline = time.monotonic() + 15
            while True:
                try:
                    item = ssub.get(timeout=max(0.1, deadline - time.monotonic()))
                except wavemeter.ConnectionLost:
                    break
                except TimeoutError:
                    fail("the subscription did not give up")
                if time.monotonic() > deadline:
                    fail("pushes from a stopped daemon: %r" % (item,))
            if time.monotonic() - t0 > 8:
                fail("giving up took %.1f s" % (time.monotonic() - t0))
            short.close()
        finally:
            stop(d2)
        c.close()
        w.close()
    finally:
        stop(d1)
        shutil.rmtree(sd, ignore_errors=True)


def test_async_reconnect_after_restart():
    port, sd = free_port(), tempfile.mkdtemp(prefix="wmd-pyc-")
    ds = [restartable(port, sd).start()]

    async def main():
        async with AsyncClient(port=port, reconnect_timeout=20) as a:
            deadline = time.monotonic() + 10
            while (await a.read("866"))["status"] != "ok":
                if time.monotonic() > deadline:
                    fail("no good reading")
                await asyncio.sleep(0.02)
            sub = await a.subscribe(["readings"], lasers=["866"])
            raising = await a.subscribe(["readings"], lasers=["399"], gaps="raise")
            contiguous(await atake(sub, 3), "async before restart")
            await atake(raising, 2)
            old = sub.id
            stop(ds[0])
            ds.append(restartable(port, sd).start())
            # The reader saw the close; the background task reconnects.
            g = None
            deadline = time.monotonic() + 20
            while not isinstance(g, Gap):  # pushes that came before the close
                prev = sub.last_seq
                g = (await atake(sub, 1, timeout=deadline - time.monotonic()))[0]
                if not isinstance(g, Gap) and g["seq"] != prev + 1:
                    fail("async: before the gap %r after seq %d" % (g, prev))
            if not isinstance(g, Gap) or g.previous != old or g.last_seq < 3:
                fail("async gap marker %r" % (g,))
            if contiguous(await atake(sub, 5), "async after restart")[0] != 1:
                fail("async seq after gap")
            try:
                await asyncio.wait_for(raising.get(), 20)
                fail("gaps=raise did not raise")
            except wavemeter.SubscriptionGap:
                pass
            if (await atake(raising, 1))[0]["seq"] != 1:
                fail("async gaps=raise seq")
            if await a.ping() != "pong" or a.connects != 2:
                fail("async calls after restart (%d)" % a.connects)
            if (await a.lock("854"))["lock"] is not True:
                fail("async write after restart")
            await a.unlock("854")

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        for d in ds:
            stop(d)
        shutil.rmtree(sd, ignore_errors=True)


def test_keepalive():
    # The daemon closes connections that send nothing for idle_timeout_s: a
    # quiet subscription stays up with keepalive pings, and without them it
    # comes back after the close with a gap.
    cfg = four_lasers()
    cfg["limits"] = {"idle_timeout_s": 1}
    with Daemon(cfg) as d:
        with Client(port=d.port, keepalive=0.3) as c, \
                c.subscribe(["locks"], lasers=["L2"]) as sub:
            expect(TimeoutError, sub.get, 2.5)
            if c.connects != 1:
                fail("keepalive: %d connections" % c.connects)
        with Client(port=d.port, keepalive=None) as c, \
                c.subscribe(["locks"], lasers=["L2"]) as sub:
            if not isinstance(take(sub, 1, timeout=5)[0], Gap) or c.connects != 2:
                fail("no gap after an idle close")

        async def main():
            async with AsyncClient(port=d.port, keepalive=0.3) as a:
                sub = await a.subscribe(["locks"], lasers=["L2"])
                await aexpect(TimeoutError, sub.get(2.5))
                if a.connects != 1:
                    fail("async keepalive: %d connections" % a.connects)
            async with AsyncClient(port=d.port, keepalive=None) as a:
                sub = await a.subscribe(["locks"], lasers=["L2"])
                if not isinstance((await atake(sub, 1, timeout=5))[0], Gap) or a.connects != 2:
                    fail("async: no gap after an idle close")
        asyncio.run(asyncio.wait_for(main(), 30))


# ---- docs/PYTHON.md ----------------------------------------------------------


def python_blocks():
    text = open(os.path.join(SRC, "docs", "PYTHON.md"), encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def test_docs_examples():
    blocks = python_blocks()
    scan = [b for b in blocks if "wait_for_state" in b and "set_setpoint" in b]
    if len(scan) != 1 or len(scan[0].strip().split("\n")) > 10:
        fail("docs/PYTHON.md: no ten-line scan example")
    env = dict(os.environ, PYTHONPATH=CLIENT_DIR)
    with Daemon() as d:
        for b in blocks:
            code, n = re.subn(r'Client\("127\.0\.0\.1", 7420\)|Client\(\)',
                              lambda m: m.group(0).split("(")[0] + '("127.0.0.1", %d)' % d.port, b)
            if n == 0:
                fail("docs/PYTHON.md: an example that connects nowhere:\n" + b)
            try:
                p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                   text=True, timeout=120)
            except subprocess.TimeoutExpired:
                fail("docs/PYTHON.md example did not finish in 120 s:\n" + b)
            if p.returncode != 0:
                fail("docs/PYTHON.md example failed (%d):\n%s\n%s%s" %
                     (p.returncode, b, p.stdout, p.stderr))
            if b is scan[0]:
                lines = p.stdout.strip().split("\n")
                if len(lines) != 5 or not all(re.match(r"step \d: locked, error [-+]\d+\.\d{3} MHz$",
                                                       l) for l in lines):
                    fail("scan printed %r" % p.stdout)
                l399 = d.result("laser.get", ["399"])
                if l399["lock"] is not True:
                    fail("399 not locked after the scan: %r" % l399["state"])
                print("     scan: " + " | ".join(lines))


if __name__ == "__main__":
    run_tests([
        ("calls_and_typed_errors", test_calls_and_typed_errors),
        ("token_and_rate_limit", test_token_and_rate_limit),
        ("subscriptions", test_subscriptions),
        ("missed_for_a_slow_reader", test_missed_for_a_slow_reader),
        ("wait_for_state", test_wait_for_state),
        ("async_client", test_async_client),
        ("retry_reads_never_writes", test_retry_reads_never_writes),
        ("reconnect_after_restart", test_reconnect_after_restart),
        ("async_reconnect_after_restart", test_async_reconnect_after_restart),
        ("keepalive", test_keepalive),
        ("docs_examples", test_docs_examples),
    ])
