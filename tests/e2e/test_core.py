#!/usr/bin/env python3
"""End to end: the real wavemeterd on the simulator, spoken to over TCP."""
import json
import re
import os
import signal
import socket
import subprocess
import tempfile
import time

from wmd import Client, Daemon, fail, run_tests, sim_config, wait_for, BIN


def wait_reading(d, laser=None, status="ok", timeout=10):
    params = {"laser": laser} if laser else {"channel": 1}

    def ok():
        r = d.result("read", params)
        return r if r["status"] == status else None
    return wait_for(ok, timeout, "a %s reading of %s" % (status, params))


def test_netcat_defaults():
    # No config at all: the built-in simulator with 4 lasers.
    with Daemon() as d:
        wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10, "a reading of every channel")
        out = subprocess.run(["nc", "-N", "127.0.0.1", str(d.port)],
                             input=b'{"jsonrpc":"2.0","id":1,"method":"read"}\n',
                             capture_output=True, timeout=10)
        lines = out.stdout.decode().splitlines()
        if len(lines) != 1:
            fail("nc printed %d lines: %r" % (len(lines), out.stdout))
        ans = json.loads(lines[0])
        readings = ans["result"]
        if [r["channel"] for r in readings] != [1, 2, 3, 4]:
            fail("channels %r" % readings)
        for r in readings:
            if r["status"] != "ok":
                fail("reading not ok: %r" % r)
            for k in ("laser", "frequency_thz", "wavelength_nm", "exposure_ms", "time", "age_ms", "seq"):
                if k not in r:
                    fail("reading lacks %s: %r" % (k, r))
            if abs(r["wavelength_nm"] * r["frequency_thz"] - 299792.458) > 1e-6:
                fail("wavelength does not match frequency: %r" % r)
            if abs(r["time"] - time.time()) > 60:
                fail("time is not Unix seconds: %r" % r)


def test_methods():
    cfg = sim_config([{"name": "399"}, {"name": "866", "channel": 3}])
    with Daemon(cfg) as d:
        with d.client() as c:
            if c.result("ping") != "pong":
                fail("ping")
            v = c.result("version")
            if v["name"] != "wavemeterd" or v["protocol"]["major"] != 1:
                fail("version %r" % v)
            chans = c.result("channels")
            if [(x["channel"], x["laser"]) for x in chans] != [(1, "399"), (3, "866")]:
                fail("channels %r" % chans)
            if chans[0]["exposure_ms"] != 5 or chans[0]["settle_ms"] != 5 or not chans[0]["enabled"]:
                fail("channel fields %r" % chans[0])
            wait_reading(d, "866")
            one = c.result("read", {"laser": "866"})
            if one["channel"] != 3 or abs(one["frequency_thz"] - 385.0) > 1e-3:
                fail("read laser 866: %r" % one)
            same = c.result("read", [3])
            if same["laser"] != "866":
                fail("positional read: %r" % same)
            for params, word in (({"laser": "nope"}, "nope"), ({"channel": 9}, "9"),
                                 ({"channel": 4294967297}, "4294967297")):
                e = c.call("read", params)["error"]
                if e["code"] != -32602 or word not in e["message"]:
                    fail("unknown %r -> %r" % (params, e))
            # A window longer than any history means all of it.
            every = c.result("history", {"laser": "866"})["error_mhz"]["n"]
            huge = c.result("history", {"laser": "866", "seconds": 1e30})["error_mhz"]["n"]
            if every < 1 or huge < every:
                fail("history seconds=1e30 gave %d of %d" % (huge, every))
            st = c.result("status")
            for k in ("uptime_s", "driver", "cycle_ms", "channels", "clients", "loop_lag_ms", "pool_jobs"):
                if k not in st:
                    fail("status lacks %s: %r" % (k, st))
            if st["driver"]["name"] != "sim" or st["clients"] < 1:
                fail("status %r" % st)
            if st["channels"][0]["reads"] < 1:
                fail("no reads counted: %r" % st)


def test_precision():
    # 1 kHz at 800 THz must survive the wire: readings differ from the nominal
    # by the noise only, and the text carries enough digits for 1e-9 THz.
    cfg = sim_config([{"sim": {"nominal_thz": 800.000000001, "noise_mhz": 0.0}}])
    with Daemon(cfg) as d:
        r = wait_reading(d)
        if abs(r["frequency_thz"] - 800.000000001) > 1e-10:
            fail("1 kHz lost: %r" % r["frequency_thz"])


def test_sim_faults():
    with Daemon(sim_config([{}, {}])) as d:
        wait_reading(d, "L1")
        for fault in ("no_signal", "underexposed", "overexposed"):
            d.result("sim.fault", {"laser": "L1", "fault": fault})
            r = wait_reading(d, "L1", fault)
            if "frequency_thz" in r:
                fail("frequency given with status %s" % fault)
        d.result("sim.fault", {"laser": "L1", "fault": "none"})
        wait_reading(d, "L1", "ok")
        d.result("sim.disconnect")
        r = wait_reading(d, "L1", "error")
        wait_for(lambda: d.result("status")["driver"]["state"] == "error", 5, "driver state error")
        errs = d.result("status")["channels"][0]["errors"]
        if errs < 1:
            fail("errors not counted")
        d.result("sim.connect")
        wait_reading(d, "L1", "ok", timeout=15)
        before = d.result("read", {"laser": "L2"})["frequency_thz"]
        d.result("sim.mode_hop", {"laser": "L2", "jump_mhz": 1000})
        wait_for(lambda: d.result("read", {"laser": "L2"}).get("frequency_thz", 0) - before > 900e-6,
                 5, "the mode hop to show")
        e = d.call("sim.fault", {"laser": "L1", "fault": "fire"})["error"]
        if e["code"] != -32602:
            fail("bad fault accepted: %r" % e)


def test_wavemeter_back_within_a_second():
    # Issue 12: the retry back-off is capped, so an instrument that comes back after a
    # long outage is read within about a second (it took 6.4 s after a 60 s outage).
    # 8 s away takes the back-off (250 ms doubling) well past its cap.
    with Daemon(sim_config([{}])) as d:
        wait_reading(d, "L1", "ok")
        d.result("sim.disconnect")
        wait_for(lambda: d.result("status")["driver"]["state"] == "error", 5, "driver state error")
        time.sleep(8)  # the outage itself, not a wait for an event
        seq = d.result("read", {"laser": "L1"})["seq"]
        d.result("sim.connect")
        t0 = time.monotonic()
        wait_for(lambda: (lambda r: r["status"] == "ok" and r["seq"] > seq)(
            d.result("read", {"laser": "L1"})), 5, "a reading after the outage")
        took = time.monotonic() - t0
        if took > 1.5:
            fail("the first reading came %.2f s after the instrument was back" % took)
        # One warning for the outage, not one per retry.
        if d.log().count("wavemeter: channel 1:") != 1:
            fail("warnings during the outage:\n" + d.log())


def test_sim_methods_absent_without_sim():
    # Only the simulator has sim.* methods; with the defaults they exist, and
    # an unknown method is -32601 whatever its prefix.
    with Daemon() as d:
        if d.call("sim.nothing")["error"]["code"] != -32601:
            fail("sim.nothing")


def test_pipeline_1000():
    with Daemon(sim_config()) as d:
        with d.client() as c:
            reqs = "".join('{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i for i in range(1000))
            c.send(reqs)
            for i in range(1000):
                a = c.recv_json()
                if a != {"jsonrpc": "2.0", "id": i, "result": "pong"}:
                    fail("answer %d: %r" % (i, a))


def test_framing():
    with Daemon(sim_config(), args=[]) as d:
        with d.client() as c:
            # One request split over many segments.
            req = b'{"jsonrpc":"2.0","id":7,"method":"ping"}\r\n'
            for b in req:
                c.send(bytes([b]))
            if c.recv_json()["id"] != 7:
                fail("split request")
            # An over-long line gets one error and the connection resyncs.
            c.send(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":["' + b"x" * 70000 + b'"]}\n')
            c.send(b'{"jsonrpc":"2.0","id":8,"method":"ping"}\n')
            e = c.recv_json()
            if e["error"]["code"] != -32600 or e["id"] is not None:
                fail("over-long line: %r" % e)
            if c.recv_json()["id"] != 8:
                fail("no resync after over-long line")
            # Garbage, then a good line.
            c.send(b'{"jsonrpc":\n{"jsonrpc":"2.0","id":9,"method":"ping"}\n')
            if c.recv_json()["error"]["code"] != -32700 or c.recv_json()["id"] != 9:
                fail("no recovery after a parse error")
            # Notification: no answer; the next request's answer comes first.
            c.send(b'{"jsonrpc":"2.0","method":"ping"}\n{"jsonrpc":"2.0","id":10,"method":"ping"}\n')
            if c.recv_json()["id"] != 10:
                fail("notification answered")


def test_half_close_answers_everything():
    with Daemon(sim_config()) as d:
        s = socket.create_connection(("127.0.0.1", d.port))
        n = 200
        s.sendall(b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"status"}\n' % i for i in range(n)))
        s.shutdown(socket.SHUT_WR)
        data = b""
        s.settimeout(10)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        lines = data.decode().splitlines()
        if len(lines) != n:
            fail("%d answers to %d requests after half-close" % (len(lines), n))
        # A final line without a newline is still a request.
        s = socket.create_connection(("127.0.0.1", d.port))
        s.sendall(b'{"jsonrpc":"2.0","id":5,"method":"ping"}')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        if json.loads(s.recv(1000).decode())["result"] != "pong":
            fail("unterminated last line")


def test_vanishing_client_harms_no_one():
    with Daemon(sim_config()) as d:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", d.port))
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"read"}\n' * 2000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST with answers in flight
        if d.result("ping") != "pong":
            fail("daemon unhappy after vanishing clients")


def test_max_clients():
    with Daemon(sim_config(limits={"max_clients": 2})) as d:
        a, b = d.client(), d.client()
        a.result("ping")
        b.result("ping")
        c = d.client()
        e = c.recv_json()
        if e["error"]["code"] != -32005:
            fail("third client: %r" % e)
        c.expect_closed()
        a.close()
        # Ask on b (a new connection could race a's close): once the server
        # has seen a and c go, a newcomer is served again.
        wait_for(lambda: b.result("status")["clients"] == 1, 5, "a and c to be gone")
        with d.client() as again:
            if again.result("ping") != "pong":
                fail("a free slot was not served")
        b.close()


def test_loop_responsive_during_slow_reads():
    # 300 ms reads: the loop must still answer ping within 50 ms while a read
    # is in flight on the pool.
    cfg = sim_config([{"exposure_ms": 270, "settle_ms": 30}, {"exposure_ms": 270, "settle_ms": 30}])
    with Daemon(cfg) as d:
        with d.client() as c:
            wait_for(lambda: c.result("status")["pool_jobs"] == 1, 5, "a read in flight")
            worst = 0.0
            for _ in range(30):
                t0 = time.monotonic()
                c.result("ping")
                worst = max(worst, time.monotonic() - t0)
                if c.result("status")["pool_jobs"] != 1:
                    fail("no read in flight")
            if worst > 0.050:
                fail("ping took %.1f ms during a read" % (worst * 1e3))


def test_sigterm_during_read():
    cfg = sim_config([{"exposure_ms": 500, "settle_ms": 0}])
    d = Daemon(cfg).start()
    try:
        wait_for(lambda: d.result("status")["pool_jobs"] == 1, 5, "a read in flight")
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM, timeout=0.5 + 1.0)
        if rc != 0:
            fail("exit %s after SIGTERM" % rc)
        if time.monotonic() - t0 > 1.5:
            fail("slow exit")
        if "stopping" not in d.log():
            fail("no stop logged")
    finally:
        d.stop()


def test_sd_notify():
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    got = []
    d = Daemon(sim_config(), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}).start()

    def recv_until(word, timeout=5):
        def has():
            s.settimeout(0.05)
            try:
                got.append(s.recv(4096).decode())
            except socket.timeout:
                pass
            return any(word in m for m in got)
        wait_for(has, timeout, "%s on NOTIFY_SOCKET (got %r)" % (word, got))
    try:
        recv_until("READY=1")
        # READY only after the listener is bound: the port must answer now.
        if d.result("ping") != "pong":
            fail("not serving at READY")
        recv_until("STATUS=")
        n = len([m for m in got if "WATCHDOG=1" in m])
        recv_until("WATCHDOG=1")
        wait_for(lambda: (recv_until("WATCHDOG=1") or True) and
                 len([m for m in got if "WATCHDOG=1" in m]) >= n + 3, 5, "repeated WATCHDOG=1")
        d.proc.send_signal(signal.SIGTERM)
        recv_until("STOPPING=1")
        if d.proc.wait(5) != 0:
            fail("exit code")
    finally:
        d.stop()
        s.close()


def test_bad_config():
    d = Daemon({"listen": "127.0.0.1:0", "lasers": [{"name": "a", "channel": 1, "bogus": 1}]})
    d.start(expect_ready=False)
    rc = d.proc.wait(5)
    # json.dump(indent=2) puts "bogus" on line 7, column 7 of the file.
    want = '%s:7:7: key "lasers[0].bogus": unknown key' % d.config_path
    if rc != 1 or want not in d.log():
        fail("bad config: exit %s, want %r in log %r" % (rc, want, d.log()))
    out = subprocess.run([BIN, "--check-config", "--config", d.config_path], capture_output=True)
    if out.returncode != 1 or b"bogus" not in out.stderr:
        fail("--check-config on bad: %r" % (out,))
    # A read that cannot finish within read_timeout_ms with this driver
    # (HighFinesse: settle + 4 measurement periods) is refused at start.
    hf = Daemon({"wavemeter": {"driver": "highfinesse", "read_timeout_ms": 300},
                 "lasers": [{"name": "a", "channel": 1, "exposure_ms": 100, "settle_ms": 100},
                            {"name": "b", "channel": 2, "exposure_ms": 10, "settle_ms": 10}]})
    out = subprocess.run([BIN, "--check-config", "--config", hf.config_path], capture_output=True)
    want = (b'laser "a": with driver highfinesse a read can take 578 ms (exposure_ms 100, '
            b'settle_ms 100), not less than wavemeter.read_timeout_ms 300')
    if out.returncode != 1 or want not in out.stderr:
        fail("HighFinesse read longer than the timeout: %r" % (out,))
    good = Daemon(sim_config())
    out = subprocess.run([BIN, "--check-config", "--config", good.config_path], capture_output=True)
    if out.returncode != 0:
        fail("--check-config on good: %r" % (out,))


def test_port_in_use():
    with Daemon(sim_config()) as d:
        other = Daemon(sim_config(listen="127.0.0.1:%d" % d.port))
        other.start(expect_ready=False)
        if other.proc.wait(5) != 1 or "in use" not in other.log():
            fail("second daemon on a used port: %r" % other.log())


def test_ctl():
    from wmd import CTL
    with Daemon(sim_config([{"name": "399", "exposure_ms": 1, "settle_ms": 0}])) as d:
        wait_reading(d, "399")
        addr = "127.0.0.1:%d" % d.port
        out = subprocess.run([CTL, "-c", addr, "read", "laser=399"], capture_output=True, timeout=10)
        if out.returncode != 0 or json.loads(out.stdout)["laser"] != "399":
            fail("wavemeterctl read: %r" % (out,))
        out = subprocess.run([CTL, "-c", addr, "read", "laser=nope"], capture_output=True, timeout=10)
        if out.returncode != 1 or json.loads(out.stdout)["code"] != -32602:
            fail("wavemeterctl error: %r" % (out,))
        # An answer far over 64 KiB (a full history ring) is read whole.
        wait_for(lambda: len(d.result("history", {"laser": "399"})["samples"]) >= 800, 20,
                 "800 readings in the history")
        out = subprocess.run([CTL, "-c", addr, "history", "laser=399"], capture_output=True,
                             timeout=10)
        if out.returncode != 0 or len(out.stdout) < 65536:
            fail("wavemeterctl history: rc %d, %d bytes, %r" % (out.returncode, len(out.stdout),
                                                               out.stderr))
        if json.loads(out.stdout)["error_mhz"]["n"] < 800:
            fail("wavemeterctl history lost samples")


def test_write_access():
    # Writes only from access.write_from; everyone may read. Here loopback is
    # not in the list, so this client is a reader.
    cfg = sim_config([{"name": "399"}], access={"write_from": ["10.0.0.0/8", "fd00::/8"]})
    with Daemon(cfg) as d:
        wait_reading(d, "399")
        with d.client() as c:
            before = c.result("laser.get", {"laser": "399"})
            for method, params in (("laser.lock", {"laser": "399"}),
                                   ("laser.set_setpoint", {"laser": "399", "frequency_thz": 384.0001}),
                                   ("laser.set_gains", {"laser": "399", "kp": 0.1}),
                                   ("laser.set_output", {"laser": "399", "output_v": 1.0}),
                                   ("sim.disconnect", None)):
                e = c.call(method, params)
                if e.get("error", {}).get("code") != -32001 or "127.0.0.1" not in e["error"]["message"]:
                    fail("%s from a reader: %r" % (method, e))
            after = c.result("laser.get", {"laser": "399"})
            for k in ("lock", "setpoint_thz", "gains", "output_v"):
                if before[k] != after[k]:
                    fail("refused write changed %s: %r -> %r" % (k, before[k], after[k]))
            if c.result("read", {"laser": "399"})["status"] != "ok":
                fail("reading refused to a reader")
            # Every write is audited, refused ones with their outcome.
            audits = [l for l in d.log().splitlines() if "audit:" in l]
            if len(audits) != 5 or any("-> error -32001" not in l for l in audits):
                fail("refused writes not audited as refused:\n" + "\n".join(audits))
            if any("-> ok" in l for l in audits):
                fail("a refused write was audited as accepted")


def test_slow_reader_paused_then_served():
    # A client that pipelines far more than the write cap and reads only
    # later is paused (not dropped), and then gets every answer, in order.
    import threading
    # About 18 MB of answers: more than loopback's socket buffers can take
    # (a few MB), so the rest must wait in the daemon, whose flow control
    # pauses the client at a quarter of the smallest cap, 64 KiB.
    n = 20000
    with Daemon(sim_config([{}, {}, {}, {}], limits={"write_queue_max_bytes": 65536})) as d:
        wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10, "readings")
        s = socket.create_connection(("127.0.0.1", d.port))
        reqs = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"read"}\n' % i for i in range(n))
        sender = threading.Thread(target=s.sendall, args=(reqs,))
        sender.start()
        # Not reading yet: the daemon must pause this client, not close it.
        wait_for(lambda: d.result("status")["clients_paused"] == 1, 10, "the client to be paused")
        if "closing" in d.log():
            fail("closed instead of paused:\n" + d.log())
        buf, got = b"", 0
        s.settimeout(10)
        while got < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                fail("closed after %d of %d answers:\n%s" % (got, n, d.log()))
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                a = json.loads(line)
                if a.get("id") != got or len(a["result"]) != 4:
                    fail("answer %d: %r" % (got, line[:200]))
                got += 1
        sender.join(10)
        s.close()
        if "unread, closing" in d.log():
            fail("slow reader was dropped:\n" + d.log())


def test_pipeliner_does_not_starve_others():
    # One client pipelines a flood and reads it all; another pings meanwhile.
    # Each client gets its share of every loop turn, so the ping is answered
    # while the flood is still being worked through.
    import threading
    n = 40000
    with Daemon(sim_config([{}, {}, {}, {}])) as d:
        wait_for(lambda: all(r["seq"] > 0 for r in d.result("read")), 10, "readings")
        flood = socket.create_connection(("127.0.0.1", d.port))
        got = [0]

        def reader():
            buf = b""
            flood.settimeout(60)
            while got[0] < n:
                chunk = flood.recv(1 << 20)
                if not chunk:
                    return
                got[0] += chunk.count(b"\n")
        t = threading.Thread(target=reader)
        t.start()
        reqs = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"read"}\n' % i for i in range(n))
        threading.Thread(target=flood.sendall, args=(reqs,), daemon=True).start()
        with d.client() as c:
            wait_for(lambda: got[0] > 100, 10, "the flood to be under way")
            worst, pings = 0.0, 0
            while got[0] < n * 0.9 and pings < 200:
                t0 = time.monotonic()
                c.result("ping")
                worst = max(worst, time.monotonic() - t0)
                pings += 1
            if pings < 3:
                fail("the flood finished before the pings could be checked")
            if worst > 0.25:
                fail("a ping waited %.0f ms behind another client's flood" % (worst * 1e3))
        t.join(60)
        flood.close()
        if got[0] != n:
            fail("flood got %d of %d answers" % (got[0], n))


def test_stalled_reader_dropped():
    # A client that never takes its answers is paused, then closed after
    # write_stall_timeout_s; everyone else is served all along.
    import threading
    cfg = sim_config(limits={"write_queue_max_bytes": 65536, "write_stall_timeout_s": 1})
    with Daemon(cfg) as d:
        s = socket.create_connection(("127.0.0.1", d.port))
        reqs = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n' * 40000

        def send():
            try:
                s.sendall(reqs)
            except OSError:
                pass  # dropped by the daemon, as it should be
        threading.Thread(target=send, daemon=True).start()
        wait_for(lambda: d.result("status")["clients_paused"] == 1, 10, "the client to be paused")
        wait_for(lambda: "not reading its answers" in d.log(), 5, "the stalled client to be dropped")
        if d.result("ping") != "pong":
            fail("others not served")
        s.close()


def test_journald_prefixes():
    # Under systemd, stderr is the journal (JOURNAL_STREAM names it): every
    # line starts with a <N> syslog priority; anywhere else, with a level word.
    d = Daemon(sim_config())
    open(d.log_path, "wb").close()
    st = os.stat(d.log_path)
    d.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    d.logf = None
    d.proc = subprocess.Popen([BIN] + d.args, stdout=subprocess.DEVNULL,
                              stderr=open(d.log_path, "ab"), env=d.env)
    try:
        m = wait_for(lambda: d._listening(), 10, "wavemeterd to listen")
        d.port = int(m.group(1))
        d.result("ping")
    finally:
        d.stop()
    lines = d.log().splitlines()
    if not lines or not all(re.match(r"<[3-7]>", l) for l in lines):
        fail("not every line has a journald priority: %r" % lines)
    if not any(l.startswith("<5>wavemeterd") for l in lines):
        fail("the start-up notice is not at priority 5: %r" % lines)
    import shutil
    shutil.rmtree(d.tmp, ignore_errors=True)
    with Daemon(sim_config()) as plain:
        if not plain.log().startswith(("info: ", "notice: ")):
            fail("plain stderr lines: %r" % plain.log()[:100])


def test_write_token():
    # access.require_token: readers need nothing; writers log in with the
    # cookie the daemon writes to its state directory at each start.
    import stat
    from wmd import CTL
    cfg = sim_config([{"name": "399"}], access={"require_token": True})
    with Daemon(cfg) as d:
        cookie = os.path.join(d.state_dir, "cookie")
        st = os.stat(cookie)
        if stat.S_IMODE(st.st_mode) != 0o640:
            fail("cookie mode %o" % stat.S_IMODE(st.st_mode))
        token = open(cookie).read().strip()
        if not re.fullmatch(r"[0-9a-f]{64}", token):
            fail("cookie %r" % token)
        with d.client() as c:
            if c.result("read", {"laser": "399"})["laser"] != "399":
                fail("a reader needs no token")
            e = c.call("laser.lock", ["399"])["error"]
            if e["code"] != -32001 or cookie not in e["message"]:
                fail("write without the token: %r" % e)
            if c.call("auth", ["0" * 64])["error"]["code"] != -32001:
                fail("a wrong token was taken")
            if c.result("auth", [token]) is not True:
                fail("the right token was refused")
            if c.result("laser.lock", ["399"])["lock"] is not True:
                fail("write after auth")
        with d.client() as other:
            if other.call("laser.unlock", ["399"]).get("error", {}).get("code") != -32001:
                fail("a login counted on another connection")
        # Five wrong tokens in a row: answered, then the connection closes.
        with d.client() as g:
            for _ in range(5):
                if g.call("auth", {"token": "x" * 64})["error"]["code"] != -32001:
                    fail("wrong token accepted")
            g.expect_closed()
        # wavemeterctl logs in with -k (and only then may write).
        addr = "127.0.0.1:%d" % d.port
        out = subprocess.run([CTL, "-c", addr, "laser.unlock", "laser=399"], capture_output=True,
                             timeout=10, env=dict(os.environ, WAVEMETERD_TOKEN_FILE=""))
        if out.returncode != 1:
            fail("wavemeterctl wrote without a token: %r" % (out,))
        out = subprocess.run([CTL, "-c", addr, "-k", cookie, "laser.unlock", "laser=399"],
                             capture_output=True, timeout=10)
        if out.returncode != 0 or json.loads(out.stdout)["lock"] is not False:
            fail("wavemeterctl -k: %r" % (out,))
    # A token file of the admin's instead of the cookie; a bad one stops the start.
    tmp = tempfile.mkdtemp()
    good = os.path.join(tmp, "token")
    with open(good, "w") as f:
        f.write("correct horse battery staple\n")
    with Daemon(sim_config(access={"require_token": True, "token_file": good})) as d:
        with d.client() as c:
            c.result("auth", ["correct horse battery staple"])
            c.result("laser.lock", ["L1"])
    short = os.path.join(tmp, "short")
    with open(short, "w") as f:
        f.write("tiny\n")
    bad = Daemon(sim_config(access={"require_token": True, "token_file": short}))
    bad.start(expect_ready=False)
    if bad.proc.wait(5) != 1 or "must hold one line of 16 to 256 characters" not in bad.log():
        fail("short token file: %r" % bad.log())


def test_write_rate_limit_and_audit():
    # Writes per connection are limited (a token bucket): the burst goes
    # through, the next gets -32004 with the wait, a later one goes through
    # again; reads are never limited; every write is one audit line with
    # peer, method, params and outcome.
    cfg = sim_config([{}], limits={"write_rate_per_s": 2, "write_burst": 3})
    with Daemon(cfg) as d, d.client() as c:
        for _ in range(3):
            c.result("laser.set_gains", {"laser": "L1", "kp": 0.001})
        e = c.call("laser.set_gains", {"laser": "L1", "kp": 0.001})
        err = e.get("error", {})
        if err.get("code") != -32004 or not (0 < err.get("data", {}).get("retry_after_s", 0) <= 0.5):
            fail("fourth write: %r" % e)
        for _ in range(20):
            c.result("read", {"laser": "L1"})
        time.sleep(err["data"]["retry_after_s"])  # the wait the daemon asked for
        c.result("laser.set_gains", {"laser": "L1", "kp": 0.002})
        lines = [l for l in d.log().splitlines() if "audit:" in l]
        if len(lines) != 5:
            fail("%d audit lines for 5 writes:\n%s" % (len(lines), "\n".join(lines)))
        if not all("laser.set_gains" in l and '"laser":"L1"' in l for l in lines) or \
                sum("-> ok" in l for l in lines) != 4 or "-> error -32004" not in lines[3]:
            fail("audit lines:\n" + "\n".join(lines))


def test_schedule_warning_and_status():
    # Four lasers that each want a read every 20 ms, at 10 ms a read (5 ms
    # exposure, 5 ms settle): twice what the wavemeter can give. One warning
    # at start-up with the numbers; status shows each laser's revisit period
    # against its target.
    cfg = sim_config([{"max_age_ms": 20}] * 4)
    with Daemon(cfg) as d:
        wait_for(lambda: "need 200% of the wavemeter's time" in d.log(), 5, "the warning")
        if d.log().count("need 200%") != 1:
            fail("warning repeated:\n" + d.log())
        def revisits():
            ch = d.result("status")["channels"]
            return ch if all(c["revisit_ms"]["mean"] is not None for c in ch) else None
        chans = wait_for(revisits, 5, "revisit periods")
        for c in chans:
            r = c["revisit_ms"]
            if r["target"] != 20 or r["mean"] < 20 or r["max"] < r["mean"]:
                fail("revisit %r" % c)


run_tests([
    ("netcat_defaults", test_netcat_defaults),
    ("methods", test_methods),
    ("precision", test_precision),
    ("sim_faults", test_sim_faults),
    ("wavemeter_back_within_a_second", test_wavemeter_back_within_a_second),
    ("sim_methods_absent", test_sim_methods_absent_without_sim),
    ("pipeline_1000", test_pipeline_1000),
    ("framing", test_framing),
    ("half_close", test_half_close_answers_everything),
    ("vanishing_client", test_vanishing_client_harms_no_one),
    ("max_clients", test_max_clients),
    ("loop_responsive", test_loop_responsive_during_slow_reads),
    ("sigterm_during_read", test_sigterm_during_read),
    ("sd_notify", test_sd_notify),
    ("bad_config", test_bad_config),
    ("port_in_use", test_port_in_use),
    ("wavemeterctl", test_ctl),
    ("write_access", test_write_access),
    ("slow_reader", test_slow_reader_paused_then_served),
    ("fair_turns", test_pipeliner_does_not_starve_others),
    ("stalled_reader", test_stalled_reader_dropped),
    ("journald", test_journald_prefixes),
    ("write_token", test_write_token),
    ("schedule_warning_and_status", test_schedule_warning_and_status),
    ("write_rate_limit_and_audit", test_write_rate_limit_and_audit),
])
