#!/usr/bin/env python3
"""End to end: MQTT publishing against a real mosquitto broker that the test
starts (/usr/sbin/mosquitto, a listener on a free port of 127.0.0.1, no
persistence), with mosquitto_sub as the subscriber. Readings arrive for
every laser at the configured rate, retained lock states are right for a
late subscriber, `online`/`offline` on start and clean stop, the will fires
on kill -9, a broker restart and a broker that is down at start are
survived, a password file works (and one others may read is refused), and
TLS checks the broker's name. Every wait is on a condition with a deadline.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from wmd import Daemon, fail, run_tests, sim_config, wait_for

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def broker_readable(path):
    """mosquitto started as root reads its files as user mosquitto."""
    os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One mosquitto process on 127.0.0.1:port; extra: more config lines."""

    def __init__(self, port=None, extra=(), anonymous=True):
        self.port = port or free_port()
        self.tmp = tempfile.mkdtemp(prefix="wmd-mqtt-")
        self.conf = os.path.join(self.tmp, "mosquitto.conf")
        self.log_path = os.path.join(self.tmp, "mosquitto.log")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\n" % self.port)
            f.write("allow_anonymous %s\n" % ("true" if anonymous else "false"))
            f.write("persistence false\n")
            for line in extra:
                f.write(line + "\n")
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        wait_for(self._accepting, 10, "mosquitto to listen on port %d" % self.port)
        return self

    def _accepting(self):
        if self.proc.poll() is not None:
            fail("mosquitto exited %s:\n%s" % (self.proc.returncode, self.log()))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


class Sub:
    """mosquitto_sub printing "RETAIN TOPIC PAYLOAD" lines, read by a thread."""

    def __init__(self, port, topic="wavemeter/#", args=()):
        self.proc = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-F", "%r %t %p"]
            + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.msgs = []  # (arrival monotonic time, retained, topic, payload)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            retain, topic, payload = line.split(" ", 2)
            with self.lock:
                self.msgs.append((time.monotonic(), retain == "1", topic, payload))

    def got(self, topic=None, since=0):
        with self.lock:
            return [m for m in self.msgs[since:] if topic is None or m[2] == topic]

    def wait(self, cond, timeout, what):
        return wait_for(lambda: cond(self.got()), timeout, what)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def retained(port, topics, timeout=10, args=()):
    """What a subscriber arriving now gets first on each topic: (retained, payload)."""
    cmd = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-C", str(len(topics)),
           "-W", str(timeout), "-F", "%r %t %p"] + list(args)
    for t in topics:
        cmd += ["-t", t]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout + 5)
    got = {}
    for line in out.stdout.decode().splitlines():
        r, t, p = line.split(" ", 2)
        got.setdefault(t, (r == "1", p))
    if set(got) != set(topics):
        fail("late subscriber got %r for %r (%s)" % (got, topics, out.stderr.decode()))
    return got


def mqtt_config(port, lasers=3, **mqtt):
    m = {"enabled": True, "host": "127.0.0.1", "port": port, "keepalive_s": 5}
    m.update(mqtt)
    # max_age_ms 1: every laser is always due, so the three take turns and
    # each is read every few tens of ms.
    return sim_config([{"max_age_ms": 1}] * lasers, mqtt=m)


def mqtt_status(d):
    return d.result("status")["mqtt"]


def readings(sub, laser):
    return [json.loads(m[3]) for m in sub.got("wavemeter/laser/%s/reading" % laser)]


def test_readings_locks_and_clean_stop():
    rate = 5.0
    with Broker() as b, Sub(b.port) as sub:
        with Daemon(mqtt_config(b.port, readings_max_rate_hz=rate)) as d:
            sub.wait(lambda g: any(m[2] == "wavemeter/status" and m[3] == "online" for m in g),
                     10, "status online")
            for name in ("L1", "L2", "L3"):
                wait_for(lambda: len(readings(sub, name)) >= 6, 10, "6 readings of " + name)
                lock = [json.loads(m[3]) for m in sub.got("wavemeter/laser/%s/lock" % name)]
                if not lock or lock[0]["state"] != "off" or lock[0]["lock"] is not False:
                    fail("first lock state of %s: %r" % (name, lock))
            # The reading is the object `read` returns, and at most `rate` a
            # second go out per laser: consecutive ones were taken 1/rate
            # apart (their `time` is the wall clock, the limit goes by the
            # monotonic one: a little slack).
            for name in ("L1", "L2", "L3"):
                rs = readings(sub, name)
                for r in rs:
                    if r["laser"] != name or r["status"] != "ok" or "frequency_thz" not in r:
                        fail("reading %r" % r)
                gaps = [b2["time"] - a["time"] for a, b2 in zip(rs, rs[1:])]
                if min(gaps) < 0.95 / rate:
                    fail("%s: readings %.3f s apart with a limit of %g/s: %r" %
                         (name, min(gaps), rate, gaps))
                seqs = [r["seq"] for r in rs]
                if seqs != sorted(seqs) or seqs[-1] - seqs[0] < 2 * len(seqs):
                    fail("%s: seq %r: not rate-limited (the laser is read every ~30 ms)" %
                         (name, seqs))
            st = mqtt_status(d)
            if st["state"] != "connected" or st["broker"] != "127.0.0.1:%d" % b.port or \
                    st["published"] < 10 or st["reconnects"] != 0 or "error" in st:
                fail("status %r" % st)

            # Lock changes: published retained on each change; a late
            # subscriber gets the newest.
            topic = "wavemeter/laser/L2/lock"
            n0 = len(sub.got(topic))
            d.result("laser.lock", ["L2"])
            sub.wait(lambda g: any(json.loads(m[3])["lock"] for m in g if m[2] == topic), 10,
                     "L2's lock state after laser.lock")
            late = retained(b.port, [topic])[topic]
            if not late[0] or json.loads(late[1])["lock"] is not True or \
                    json.loads(late[1])["state"] == "off":
                fail("late subscriber after lock: %r" % (late,))
            d.result("laser.unlock", ["L2"])
            sub.wait(lambda g: [json.loads(m[3])["state"] for m in g if m[2] == topic][-1] == "off",
                     10, "L2 off after laser.unlock")
            changes = [json.loads(m[3]) for m in sub.got(topic)[n0:]]
            # (A live subscriber gets them with the retain flag clear, as
            # MQTT says; the late one below sees them retained.)
            if changes[0]["state"] == "off" or changes[-1]["lock"] is not False:
                fail("L2 lock messages %r" % sub.got(topic))
            late = retained(b.port, ["wavemeter/laser/L1/lock", topic])
            if json.loads(late[topic][1])["state"] != "off" or \
                    json.loads(late["wavemeter/laser/L1/lock"][1])["laser"] != "L1":
                fail("late subscriber after unlock: %r" % late)
            t_stop = time.monotonic()
        # Stopped cleanly (Daemon's exit checks status 0, no sanitizer
        # report): `offline` was published, and stays retained.
        sub.wait(lambda g: any(m[2] == "wavemeter/status" and m[3] == "offline" and m[0] >= t_stop
                               for m in g), 5, "status offline after SIGTERM")
        if retained(b.port, ["wavemeter/status"])["wavemeter/status"] != (True, "offline"):
            fail("retained status after a clean stop")


def test_every_reading_when_unlimited():
    with Broker() as b, Sub(b.port, "wavemeter/laser/L1/reading") as sub:
        with Daemon(mqtt_config(b.port, lasers=2, readings_max_rate_hz=0)) as d:
            wait_for(lambda: len(readings(sub, "L1")) >= 30, 10, "30 readings of L1")
            seqs = [r["seq"] for r in readings(sub, "L1")]
            if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                fail("with readings_max_rate_hz 0 every reading goes out: seq %r" % seqs)
            if mqtt_status(d)["dropped"] != 0:
                fail("dropped %r" % mqtt_status(d))


def test_mqtt_flag():
    # --mqtt HOST[:PORT] turns publishing on over a config without an mqtt section (as
    # scripts/run does); a bad value is refused at start with the reason.
    with Broker() as b, Sub(b.port, "wavemeter/laser/L1/reading") as sub:
        with Daemon(sim_config([{}]), args=["--mqtt", "localhost:%d" % b.port]) as d:
            wait_for(lambda: len(readings(sub, "L1")) >= 2, 10, "readings through --mqtt")
            if mqtt_status(d)["state"] != "connected":
                fail("status.mqtt %r" % mqtt_status(d))
    for bad in ("localhost:0", "localhost:x", ":1883", "h:70000"):
        d = Daemon(sim_config([{}]), args=["--mqtt", bad])
        d.start(expect_ready=False)
        if d.proc.wait(10) != 1 or "--mqtt \"%s\"" % bad not in d.log():
            fail("--mqtt %r: exit %r\n%s" % (bad, d.proc.returncode, d.log()))
        shutil.rmtree(d.tmp, ignore_errors=True)


def test_will_on_kill9():
    with Broker() as b, Sub(b.port, "wavemeter/status") as sub:
        d = Daemon(mqtt_config(b.port, lasers=1))
        try:
            d.start()
            sub.wait(lambda g: g and g[-1][3] == "online", 10, "online")
            t_kill = time.monotonic()
            d.kill9()
            sub.wait(lambda g: any(m[3] == "offline" and m[0] >= t_kill for m in g), 10,
                     "the will (offline) after kill -9")
            if retained(b.port, ["wavemeter/status"])["wavemeter/status"] != (True, "offline"):
                fail("the will is not retained")
        finally:
            d.stop()
            shutil.rmtree(d.tmp, ignore_errors=True)


def test_broker_restart_is_survived():
    b = Broker().start()
    try:
        with Daemon(mqtt_config(b.port, lasers=2)) as d:
            d.result("laser.lock", ["L1"])
            wait_for(lambda: mqtt_status(d)["published"] >= 6, 10, "publishing")
            b.kill()
            st = wait_for(lambda: (lambda s: s if s["state"] == "connecting" else None)(
                mqtt_status(d)), 10, "mqtt to notice the broker is gone")
            # The daemon goes on: readings continue while the broker is away.
            seq0 = d.result("read", {"laser": "L1"})["seq"]
            wait_for(lambda: d.result("read", {"laser": "L1"})["seq"] > seq0 + 5, 10,
                     "readings while the broker is down")
            b.start()  # the same port
            with Sub(b.port) as sub:
                # Back-off: 1 s, then 2 s, ...: within a few seconds.
                sub.wait(lambda g: any(m[2] == "wavemeter/laser/L2/reading" for m in g), 15,
                         "readings after the broker restarted")
                # The new broker (no persistence) learnt the retained states
                # again: online and each laser's lock state.
                late = retained(b.port, ["wavemeter/status", "wavemeter/laser/L1/lock",
                                         "wavemeter/laser/L2/lock"])
                if late["wavemeter/status"] != (True, "online") or \
                        json.loads(late["wavemeter/laser/L1/lock"][1])["lock"] is not True or \
                        json.loads(late["wavemeter/laser/L2/lock"][1])["lock"] is not False:
                    fail("retained after the restart: %r" % late)
            st = mqtt_status(d)
            if st["state"] != "connected" or st["reconnects"] != 1:
                fail("status after the restart: %r" % st)
    finally:
        b.kill()
        shutil.rmtree(b.tmp, ignore_errors=True)


def test_broker_down_at_start():
    port = free_port()
    cfg = mqtt_config(port, lasers=2, readings_max_rate_hz=0, queue_max=16)
    with Daemon(cfg) as d:
        # Serves clients and reads on, with a bounded queue of readings.
        if d.result("ping") != "pong":
            fail("ping")
        st = wait_for(lambda: (lambda s: s if s["dropped"] > 0 else None)(mqtt_status(d)), 10,
                      "the queue to drop its oldest readings")
        if st["state"] != "connecting" or st["queued"] > 16 + 2 or \
                "refused" not in st.get("error", ""):
            fail("status with the broker down: %r" % st)
        if d.log().count("Connection refused") > 1:
            fail("a failure that repeats is logged once:\n" + d.log())
        with Broker(port) as b, Sub(b.port) as sub:
            sub.wait(lambda g: any(m[2] == "wavemeter/laser/L1/reading" for m in g), 15,
                     "readings once the broker is up")
            if mqtt_status(d)["reconnects"] != 0:
                fail("a first connection is not a reconnect: %r" % mqtt_status(d))
            wait_for(lambda: mqtt_status(d)["queued"] < 16, 10, "the queue to drain")
    # Stopping without a broker does not hang (Daemon.stop allows 5 s).
    with Daemon(mqtt_config(free_port(), lasers=1)) as d:
        wait_for(lambda: "error" in mqtt_status(d), 10, "a failed attempt")


def test_broker_that_never_answers():
    """A broker that takes the connection and then says nothing (hung, or
    overloaded): each attempt ends after connect_timeout_s, readings wait
    in the bounded queue, and the daemon serves its clients meanwhile."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    held = []
    stop = threading.Event()

    def hold():
        ls.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])  # never read, never answered
            except socket.timeout:
                pass

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        cfg = mqtt_config(ls.getsockname()[1], lasers=2, readings_max_rate_hz=0, queue_max=16,
                          connect_timeout_s=1)
        with Daemon(cfg) as d:
            st = wait_for(lambda: (lambda s: s if "no answer to CONNECT" in s.get("error", "")
                                   and s["dropped"] > 0 else None)(mqtt_status(d)), 10,
                          "the connection attempt to time out")
            if st["state"] != "connecting" or st["queued"] > 16 + 2:
                fail("status with a silent broker: %r" % st)
            if d.result("ping") != "pong":
                fail("ping")
            wait_for(lambda: len(held) >= 2, 10, "a second attempt after the back-off")
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        ls.close()


def test_password_file():
    tmp = tempfile.mkdtemp(prefix="wmd-mqtt-pw-")
    try:
        broker_readable(tmp)
        pwfile = os.path.join(tmp, "broker.passwd")
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", pwfile, "wmd", "s3cret pass"], check=True,
                       capture_output=True)
        broker_readable(pwfile)
        mine = os.path.join(tmp, "password")
        with open(mine, "w") as f:
            f.write("s3cret pass\n")
        os.chmod(mine, 0o640)
        with Broker(extra=["password_file " + pwfile], anonymous=False) as b:
            sub_args = ["-u", "wmd", "-P", "s3cret pass"]
            with Sub(b.port, "wavemeter/status", sub_args) as sub, \
                    Daemon(mqtt_config(b.port, lasers=1, username="wmd",
                                       password_file=mine)) as d:
                sub.wait(lambda g: g and g[-1][3] == "online", 10, "online with a password")
            # A wrong password: refused by the broker, said so, retried; the
            # daemon runs on.
            with open(mine, "w") as f:
                f.write("wrong\n")
            with Daemon(mqtt_config(b.port, lasers=1, username="wmd",
                                    password_file=mine)) as d:
                st = wait_for(lambda: (lambda s: s if "error" in s else None)(mqtt_status(d)),
                              10, "the refusal")
                if "not authorised" not in st["error"] or st["state"] != "connecting":
                    fail("status with a wrong password: %r" % st)
            # Readable by others: refused at start, naming the file.
            os.chmod(mine, 0o644)
            d = Daemon(mqtt_config(b.port, lasers=1, username="wmd", password_file=mine))
            d.start(expect_ready=False)
            try:
                if d.proc.wait(10) != 1:
                    fail("started with a world-readable password file")
                if "mqtt.password_file %s: readable by others" % mine not in d.log():
                    fail("error line:\n" + d.log())
            finally:
                shutil.rmtree(d.tmp, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_certs(tmp, name):
    """A CA and a server certificate for DNS name `name`, signed by it."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=tmp)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=wmd test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=" + name)
    with open(os.path.join(tmp, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:%s\n" % name)
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    for f in ("", "ca.crt", "server.crt", "server.key"):
        broker_readable(os.path.join(tmp, f))


def test_tls_checks_the_broker_name():
    for cert_name, ok in (("localhost", True), ("elsewhere.example", False)):
        tmp = tempfile.mkdtemp(prefix="wmd-mqtt-tls-")
        try:
            make_certs(tmp, cert_name)
            tls_port = free_port()
            extra = ["listener %d 127.0.0.1" % tls_port,
                     "cafile " + os.path.join(tmp, "ca.crt"),
                     "certfile " + os.path.join(tmp, "server.crt"),
                     "keyfile " + os.path.join(tmp, "server.key")]
            with Broker(extra=extra) as b, Sub(b.port, "wavemeter/status") as sub:
                # "localhost" is a name: resolved off the loop, each address
                # tried (the broker listens on 127.0.0.1 only, not ::1).
                cfg = mqtt_config(tls_port, lasers=1, host="localhost", tls=True,
                                  tls_cafile=os.path.join(tmp, "ca.crt"))
                with Daemon(cfg) as d:
                    if ok:
                        sub.wait(lambda g: g and g[-1][3] == "online", 10,
                                 "online over TLS to localhost")
                        if mqtt_status(d)["state"] != "connected":
                            fail("status %r" % mqtt_status(d))
                    else:
                        st = wait_for(lambda: (lambda s: s if "127.0.0.1" in s.get("error", "")
                                               else None)(mqtt_status(d)), 10,
                                      "the certificate to be refused")
                        if st["state"] != "connecting" or "certificate verify failed" not in \
                                st["error"]:
                            fail("status with a certificate for another name: %r" % st)
                        if any(m[3] == "online" for m in sub.got()):
                            fail("connected to a broker whose certificate names another host")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for prog in (MOSQUITTO, MOSQUITTO_SUB, MOSQUITTO_PASSWD):
        if not os.access(prog, os.X_OK):
            fail("%s is missing: apt-get install mosquitto mosquitto-clients "
                 "(scripts/deps --test)" % prog)
    run_tests([
        ("readings_locks_and_clean_stop", test_readings_locks_and_clean_stop),
        ("every_reading_when_unlimited", test_every_reading_when_unlimited),
        ("mqtt_flag", test_mqtt_flag),
        ("will_on_kill9", test_will_on_kill9),
        ("broker_restart_is_survived", test_broker_restart_is_survived),
        ("broker_down_at_start", test_broker_down_at_start),
        ("broker_that_never_answers", test_broker_that_never_answers),
        ("password_file", test_password_file),
        ("tls_checks_the_broker_name", test_tls_checks_the_broker_name),
    ])
