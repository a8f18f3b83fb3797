#!/usr/bin/env python3
"""End to end: the HTTP side of the real wavemeterd (http.listen). /ws speaks
the TCP protocol over WebSocket (a minimal RFC 6455 client below, standard
library only): ping, read, batches, subscriptions with seq, answers in
request order, auth before writes, limits, bad and oversized frames, a
reader that stops, many clients vanishing. The page's files are served, and
nothing outside them. /metrics passes `promtool check metrics` and a real
Prometheus server scrapes it."""
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from wmd import Client, Daemon, fail, run_tests, sim_config, wait_for

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"


class Closed(Exception):
    """The server closed the WebSocket: code (None without a close frame)."""

    def __init__(self, code, reason=""):
        super().__init__("closed %r %r" % (code, reason))
        self.code = code
        self.reason = reason


class WS:
    """A WebSocket client: masked frames out, fragmented messages in."""

    def __init__(self, port, path="/ws", origin=None, rcvbuf=None, handshake=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.port = port
        self.buf = b""
        self.next_id = 1
        self.notes = []
        if handshake:
            self.handshake(path, origin)

    def handshake(self, path="/ws", origin=None, expect=101):
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (path, self.port, key))
        if origin:
            req += "Origin: %s\r\n" % origin
        self.sock.sendall((req + "\r\n").encode())
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in self.buf:
            chunk = self._recv(deadline)
            if not chunk:
                if expect is None:
                    return None
                fail("connection closed during the handshake (have %r)" % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if expect is not None and status != expect:
            fail("handshake: %r" % lines[0])
        if status == 101:
            hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
            want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if hdrs.get("sec-websocket-accept") != want:
                fail("bad Sec-WebSocket-Accept: %r" % hdrs)
        return status

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            fail("nothing from the server in time (have %r)" % self.buf[:200])
        self.sock.settimeout(left)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            fail("nothing from the server in time (have %r)" % self.buf[:200])
        except ConnectionResetError:
            return b""

    def frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode()
        b0 = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            hdr = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return hdr + payload
        key = os.urandom(4)
        return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))

    def send_text(self, text):
        self.sock.sendall(self.frame(1, text))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            chunk = self._recv(deadline)
            if not chunk:
                raise Closed(None)
            self.buf += chunk

    def recv_frame(self, timeout=10):
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            fail("the server masked a frame")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_msg(self, timeout=10):
        """One whole text message (continuation frames joined); Closed on close."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            if op == 9:  # ping: answer, go on
                self.sock.sendall(self.frame(10, payload))
                continue
            if op == 10:
                continue
            if not parts and op != 1:
                fail("a message with opcode %d" % op)
            if parts and op != 0:
                fail("a new message (opcode %d) inside a fragmented one" % op)
            parts.append(payload)
            if fin:
                return b"".join(parts).decode()

    def recv_json(self, timeout=10):
        return json.loads(self.recv_msg(timeout))

    def call(self, method, params=None, timeout=10):
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            req["params"] = params
        self.send_text(json.dumps(req))
        while True:
            ans = self.recv_json(timeout)
            if "id" in ans:
                break
            self.notes.append(ans)
        if ans["id"] != req["id"]:
            fail("answer id %r for request id %r" % (ans["id"], req["id"]))
        return ans

    def result(self, method, params=None):
        ans = self.call(method, params)
        if "error" in ans:
            fail("%s %s -> %s" % (method, params, ans["error"]))
        return ans["result"]

    def expect_close(self, timeout=10):
        """Read until the server closes; returns the close code (None: no frame)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_msg(max(0.01, deadline - time.monotonic()))
        except Closed as e:
            return e.code

    def close(self):
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """A daemon serving a www_dir and a dygraphs_dir made for the test."""

    def __init__(self, **top):
        self.tmp = tempfile.mkdtemp(prefix="wmd-http-")
        self.www = os.path.join(self.tmp, "www")
        self.dyg = os.path.join(self.tmp, "dygraphs")
        os.makedirs(os.path.join(self.www, "sub"))
        os.makedirs(self.dyg)
        self.files = {
            "index.html": b"<!doctype html><title>wavemeter</title>\n",
            "app.js": b"console.log('hi');\n",
            "style.css": b"body { color: black }\n",
            "icon.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 16,
            "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
            "favicon.ico": b"\0\0\1\0",
        }
        for name, data in self.files.items():
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(data)
        with open(os.path.join(self.www, "sub", "secret.txt"), "w") as f:
            f.write("not for the web\n")
        with open(os.path.join(self.www, ".hidden"), "w") as f:
            f.write("hidden\n")
        with open(os.path.join(self.tmp, "outside.txt"), "w") as f:
            f.write("outside\n")
        with open(os.path.join(self.dyg, "dygraph.min.js"), "w") as f:
            f.write("var Dygraph = 1;\n")
        cfg = sim_config([{"max_age_ms": 1}, {"max_age_ms": 1}],
                         http={"listen": "127.0.0.1:0", "www_dir": self.www,
                               "dygraphs_dir": self.dyg}, **top)
        self.daemon = Daemon(cfg)

    def __enter__(self):
        self.daemon.start()
        m = wait_for(lambda: re.search(r"http: serving http://127\.0\.0\.1:(\d+)/",
                                       self.daemon.log()), 10, "the http address in the log")
        self.port = int(m.group(1))
        return self

    def __exit__(self, *exc):
        try:
            return self.daemon.__exit__(*exc)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def get(self, path, method="GET", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def ws(self, **kw):
        return WS(self.port, **kw)

    def metrics(self):
        status, hdrs, body = self.get("/metrics")
        if status != 200:
            fail("/metrics: %d" % status)
        return hdrs, body.decode()


def samples(text, name):
    """{labels-string: value} of one metric family."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def test_static_files():
    with Site() as s:
        for path, name, ctype in [("/", "index.html", "text/html"),
                                  ("/index.html", "index.html", "text/html"),
                                  ("/app.js", "app.js", "text/javascript"),
                                  ("/style.css", "style.css", "text/css"),
                                  ("/icon.png", "icon.png", "image/png"),
                                  ("/logo.svg", "logo.svg", "image/svg+xml"),
                                  ("/favicon.ico", "favicon.ico", "image/x-icon")]:
            status, hdrs, body = s.get(path)
            if status != 200 or body != s.files[name]:
                fail("GET %s: %d %r" % (path, status, body[:80]))
            if not hdrs.get("content-type", "").startswith(ctype):
                fail("GET %s: Content-Type %r, want %s" % (path, hdrs.get("content-type"), ctype))
            if hdrs.get("x-content-type-options") != "nosniff":
                fail("GET %s: no nosniff header: %r" % (path, hdrs))
        status, hdrs, body = s.get("/dygraphs/dygraph.min.js")
        if status != 200 or b"Dygraph" not in body or "javascript" not in hdrs["content-type"]:
            fail("GET /dygraphs/dygraph.min.js: %d %r %r" % (status, hdrs, body))
        # Nothing but the files directly in the two directories.
        for path in ["/sub/secret.txt", "/sub/", "/sub", "/.hidden", "/nope.html",
                     "/../outside.txt", "/%2e%2e/outside.txt", "/..%2foutside.txt",
                     "/%2e%2e%2foutside.txt", "/dygraphs/../outside.txt",
                     "/dygraphs/%2e%2e/outside.txt", "/dygraphs/", "/dygraphs",
                     "/www/index.html", "//etc/passwd", "/%00index.html", "/index.html%00"]:
            try:
                status, _, body = s.get(path)
            except http.client.RemoteDisconnected:
                status, body = None, b""  # lws refuses some (%00) by closing
            if status not in (None, 400, 403, 404) or b"outside" in body or \
                    b"not for the web" in body:
                fail("GET %s: %d %r (want a 404)" % (path, status, body[:80]))
        # A request line with the traversal as sent, byte for byte.
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
            raw.sendall(b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")
            data = b""
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                data += chunk
            if b"root:" in data or not re.match(rb"HTTP/1\.1 (400|403|404)", data):
                fail("raw traversal: %r" % data[:200])
        status, _, _ = s.get("/", method="POST")
        if status != 405:
            fail("POST /: %d, want 405" % status)
        status, _, body = s.get("/ws")
        if status != 400:
            fail("GET /ws without an upgrade: %d %r" % (status, body))


def test_ws_protocol():
    with Site() as s:
        w = s.ws(origin="http://127.0.0.1:%d" % s.port)  # the page's own origin
        if w.result("ping") != "pong":
            fail("ping")
        readings = w.result("read")
        if [r["laser"] for r in readings] != ["L1", "L2"]:
            fail("read: %r" % readings)
        one = w.result("read", {"laser": "L2"})
        if one["channel"] != 2:
            fail("read L2: %r" % one)
        # A batch: one message, one answer array; its notification unanswered.
        w.send_text(json.dumps([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
                                {"jsonrpc": "2.0", "method": "ping"},
                                {"jsonrpc": "2.0", "id": "b", "method": "nope"}]))
        ans = w.recv_json()
        if [a["id"] for a in ans] != ["a", "b"] or ans[1]["error"]["code"] != -32601:
            fail("batch: %r" % ans)
        # Errors as on TCP, and the connection goes on.
        w.send_text('{"jsonrpc":"2.0","id":1,"method":ping}')
        if w.recv_json()["error"]["code"] != -32700:
            fail("a parse error")
        w.send_text("   ")  # blank: skipped, as a blank line
        # Pipelined: answers in request order.
        w.send_raw(b"".join(w.frame(1, json.dumps({"jsonrpc": "2.0", "id": i, "method":
                                                   "ping" if i % 3 else "status"}))
                            for i in range(100, 160)))
        ids = [w.recv_json()["id"] for _ in range(60)]
        if ids != list(range(100, 160)):
            fail("answers out of order: %r" % ids)
        # A message in fragments is one message.
        req = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}).encode()
        w.send_raw(w.frame(1, req[:5], fin=False) + w.frame(0, req[5:9], fin=False) +
                   w.frame(9, b"hb") + w.frame(0, req[9:]))
        fin, op, payload = w.recv_frame()
        if op != 10 or payload != b"hb":
            fail("a ping between fragments: no pong (%r %r)" % (op, payload))
        if w.recv_json() != {"jsonrpc": "2.0", "id": 7, "result": "pong"}:
            fail("fragmented request")
        # Subscribe: the answer first, then pushes numbered 1, 2, 3, ...
        sub = w.result("subscribe", {"topics": ["readings"], "lasers": ["L1"]})
        got = []
        while len(got) < 5:
            m = w.recv_json()
            if m.get("method") != "reading":
                fail("unexpected message while subscribed: %r" % m)
            if m["params"]["subscription"] != sub["subscription"]:
                fail("push of another subscription: %r" % m)
            if m["params"]["reading"]["laser"] != "L1":
                fail("push for a laser not asked for: %r" % m)
            got.append(m["params"]["seq"])
        if got != list(range(got[0], got[0] + 5)) or got[0] != 1:
            fail("push seq: %r" % got)
        if w.result("unsubscribe", {"subscription": sub["subscription"]}) is not True:
            fail("unsubscribe")
        w.close()


def test_ws_auth_and_write_order():
    with Site(access={"require_token": True}) as s:
        cookie = open(os.path.join(s.daemon.state_dir, "cookie")).read().strip()
        w = s.ws()
        lock = {"laser": "L1"}
        ans = w.call("laser.lock", lock)
        if ans.get("error", {}).get("code") != -32001:
            fail("a write before auth: %r" % ans)
        if w.call("auth", [cookie + "x"])["error"]["code"] != -32001:
            fail("a wrong token was taken")
        if w.result("auth", [cookie]) is not True:
            fail("auth")
        # A durable write between pings: answers still in request order.
        w.send_raw(w.frame(1, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})) +
                   w.frame(1, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "laser.lock",
                                          "params": lock})) +
                   w.frame(1, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"})))
        ans = [w.recv_json() for _ in range(3)]
        if [a["id"] for a in ans] != [1, 2, 3] or ans[1]["result"]["lock"] is not True:
            fail("write between pings: %r" % ans)
        # Another connection has not logged in: read only.
        other = s.ws()
        if other.call("laser.unlock", lock)["error"]["code"] != -32001:
            fail("a second connection could write without auth")
        other.close()
        if w.result("laser.unlock", lock)["lock"] is not False:
            fail("unlock after auth")
        w.close()
        # Guessing: five wrong tokens in a row, each answered, then a close
        # frame 1008 (policy violation) naming the reason.
        g = s.ws()
        for _ in range(5):
            if "error" not in g.call("auth", [cookie + "y"]):
                fail("a wrong token was taken")
        try:
            g.recv_msg()
            fail("a message after the fifth wrong token")
        except Closed as e:
            if e.code != 1008 or "wrong tokens" not in e.reason:
                fail("closed after guessing with %r %r, want 1008" % (e.code, e.reason))
        g.close()


def test_ws_bad_frames_and_limits():
    with Site(limits={"max_line_bytes": 4096, "max_clients": 12,
                      "write_stall_timeout_s": 2, "push_soft_bytes": 4096}) as s:
        w = s.ws()
        # Too long: one -32600 with id null, the connection goes on.
        w.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping",
                                "params": ["x" * 5000]}))
        ans = w.recv_json()
        if ans["error"]["code"] != -32600 or ans["id"] is not None or "4096" not in \
                ans["error"]["message"]:
            fail("oversize: %r" % ans)
        w.sock.sendall(w.frame(2, b'{"jsonrpc":"2.0","id":2,"method":"ping"}'))  # binary
        if w.recv_json()["error"]["code"] != -32600:
            fail("a binary frame was not refused")
        if w.result("ping") != "pong":
            fail("ping after bad messages")
        # Invalid UTF-8 in a text frame: closed 1007, the daemon goes on.
        w.sock.sendall(w.frame(1, b'"\xff\xfe"'))
        code = w.expect_close()
        if code not in (1007, None):
            fail("invalid UTF-8: closed with %r" % code)
        # Frames no client may send (reserved opcodes and bits): closed.
        for junk in [b"\xff" * 64, w.frame(3, b"x"), w.frame(1, b"x", rsv=0x40),
                     w.frame(9, b"p" * 200)]:  # a control frame over 125 bytes
            b = s.ws()
            b.send_raw(junk)
            b.expect_close()
        # lws takes a frame the client did not mask (RFC 6455 says close);
        # either way it is not a request, and the daemon goes on.
        b = s.ws()
        b.send_raw(w.frame(1, b'{"x":1}', mask=False))
        try:
            if b.recv_json()["error"]["code"] != -32600:
                fail("an unmasked frame was taken as a request")
        except Closed:
            pass
        b.close()
        # A page of another site: no WebSocket.
        bad = s.ws(handshake=False)
        if bad.handshake(origin="http://evil.example", expect=None) == 101:
            fail("a page of another origin got a WebSocket")
        bad.close()
        # An upgrade elsewhere than /ws.
        bad = s.ws(handshake=False)
        if bad.handshake(path="/metrics", expect=None) == 101:
            fail("a WebSocket on /metrics")
        bad.close()
        # max_clients: the 13th of 13 gets one -32005 and a close 1013.
        many = [s.ws() for _ in range(12)]
        extra = s.ws()
        ans = extra.recv_json()
        code = extra.expect_close()
        # A close frame says why: 1013, try again later.
        if ans["error"]["code"] != -32005 or code != 1013:
            fail("client over max_clients: %r, closed %r" % (ans, code))
        for c in many:
            c.close()
        # A reader that stops: its pushes are coalesced, then it is closed
        # after write_stall_timeout_s; the daemon's memory does not follow.
        slow = s.ws(rcvbuf=4096)
        slow.result("subscribe", {"topics": ["readings"]})
        wait_for(lambda: "ws client" in s.daemon.log() and
                 re.search(r"ws client \S+: (took no notifications|not reading)", s.daemon.log()),
                 15, "the stalled reader to be closed")
        slow.close()
        if s.get("/")[0] != 200:
            fail("the page after the limits")


def test_ws_many_vanish():
    """Clients that vanish mid-message, mid-subscription, mid-answer: none
    is left behind, and the daemon answers the next."""
    with Site() as s:
        socks = []
        for i in range(40):
            w = s.ws()
            if i % 4 == 0:
                w.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                                        "params": {"topics": ["readings", "locks"]}}))
            elif i % 4 == 1:
                w.send_raw(w.frame(1, b'{"jsonrpc":"2.0","id":1,', fin=False))  # half
            elif i % 4 == 2:
                w.send_raw(w.frame(1, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "history",
                                                  "params": {"laser": "L1"}}))[:20])
            else:
                w.send_text(json.dumps([{"jsonrpc": "2.0", "id": n, "method": "status"}
                                        for n in range(100)]))
            socks.append(w)
        for w in socks:
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()  # RST, no close frame
        wait_for(lambda: samples(s.metrics()[1], "wavemeterd_clients").get(
            '{transport="ws"}') == 0, 10, "every ws client to be gone")
        w = s.ws()
        if w.result("ping") != "pong":
            fail("ping after the crowd left")
        w.close()


def test_shutdown_closes_ws():
    with Site() as s:
        w = s.ws()
        w.result("subscribe", {"topics": ["readings"]})
        s.daemon.proc.send_signal(15)
        # A close frame: 1001, going away.
        code = w.expect_close()
        if code != 1001:
            fail("closed at shutdown with %r, want 1001" % code)
        if s.daemon.proc.wait(10) != 0:
            fail("exit status %r" % s.daemon.proc.returncode)


def test_metrics_promtool():
    with Site() as s:
        w = s.ws()
        w.result("ping")
        # Both lasers read a few times, with good readings.
        wait_for(lambda: all(v >= 3 for k, v in samples(s.metrics()[1],
                 "wavemeterd_readings_total").items() if 'status="ok"' in k), 10, "readings")
        hdrs, text = s.metrics()
        if hdrs["content-type"] != "text/plain; version=0.0.4; charset=utf-8":
            fail("Content-Type %r" % hdrs["content-type"])
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            fail("promtool check metrics:\n%s%s\n%s" % (r.stdout.decode(), r.stderr.decode(), text))
        freq = samples(text, "wavemeterd_laser_frequency_hz")
        if sorted(freq) != ['{laser="L1",channel="1"}', '{laser="L2",channel="2"}']:
            fail("frequency series: %r" % freq)
        if abs(freq['{laser="L1",channel="1"}'] - 384.0e12) > 1e9:
            fail("L1 frequency %r Hz, want about 384 THz" % freq)
        for laser, ch in [("L1", 1), ("L2", 2)]:
            states = {k: v for k, v in samples(text, "wavemeterd_laser_lock_state").items()
                      if 'laser="%s"' % laser in k}
            if len(states) != 9 or sum(states.values()) != 1 or \
                    states['{laser="%s",channel="%d",state="off"}' % (laser, ch)] != 1:
                fail("lock_state of %s: %r" % (laser, states))
        clients = samples(text, "wavemeterd_clients")
        if clients.get('{transport="ws"}') != 1 or '{transport="tcp"}' not in clients:
            fail("clients: %r" % clients)
        for name in ["wavemeterd_laser_lock_error_hz", "wavemeterd_laser_output_volts",
                     "wavemeterd_laser_revisit_seconds", "wavemeterd_laser_relocks_total",
                     "wavemeterd_loop_lag_seconds", "wavemeterd_meter_state",
                     "wavemeterd_build_info"]:
            if not samples(text, name):
                fail("no %s in:\n%s" % (name, text))
        if samples(text, "wavemeterd_meter_state").get('{state="running"}') != 1:
            fail("meter_state: %r" % samples(text, "wavemeterd_meter_state"))
        if "NaN" in text:
            fail("NaN in the exposition")
        w.close()


def test_prometheus_scrapes():
    with Site() as s:
        tmp = tempfile.mkdtemp(prefix="wmd-prom-")
        port = free_port()
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: wavemeterd\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % s.port)
        log = open(os.path.join(tmp, "prometheus.log"), "wb")
        prom = subprocess.Popen([PROMETHEUS, "--config.file", os.path.join(tmp, "prometheus.yml"),
                                 "--storage.tsdb.path", os.path.join(tmp, "data"),
                                 "--web.listen-address", "127.0.0.1:%d" % port],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            def query(q):
                url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(q))
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return json.load(r)["data"]["result"]
                except OSError:
                    if prom.poll() is not None:
                        fail("prometheus exited %s" % prom.returncode)
                    return None

            res = wait_for(lambda: (lambda r: r if r and len(r) == 2 else None)(
                query("wavemeterd_laser_frequency_hz")), 60,
                "Prometheus to have both lasers' frequency")
            lasers = sorted(r["metric"]["laser"] for r in res)
            if lasers != ["L1", "L2"] or any(r["metric"]["job"] != "wavemeterd" for r in res):
                fail("scraped series: %r" % res)
            up = query('up{job="wavemeterd"}')
            if not up or up[0]["value"][1] != "1":
                fail("up: %r" % up)
        except Exception:
            log.flush()
            print(open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
            raise
        finally:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()
            shutil.rmtree(tmp, ignore_errors=True)


def test_config_and_bind_errors():
    with Site() as s:
        # The same port again: a clear error naming the key, exit 1.
        cfg = sim_config(http={"listen": "127.0.0.1:%d" % s.port})
        d = Daemon(cfg)
        d.start(expect_ready=False)
        if d.proc.wait(10) != 1 or "http.listen 127.0.0.1:%d: Address already in use" % s.port \
                not in d.log():
            fail("port in use: %r\n%s" % (d.proc.returncode, d.log()))
        shutil.rmtree(d.tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.json")
        with open(path, "w") as f:
            f.write('{\n  "http": {\n    "listen": "localhost:80"\n  }\n}\n')
        r = subprocess.run([os.environ.get("WAVEMETERD", "build/wavemeterd"), "--check-config",
                            "-c", path], capture_output=True, timeout=10)
        if r.returncode != 1 or b'c.json:3:5: key "http.listen": must be' not in r.stderr:
            fail("bad http.listen: %r" % r.stderr)


run_tests([
    ("static_files", test_static_files),
    ("ws_protocol", test_ws_protocol),
    ("ws_auth_and_write_order", test_ws_auth_and_write_order),
    ("ws_bad_frames_and_limits", test_ws_bad_frames_and_limits),
    ("ws_many_vanish", test_ws_many_vanish),
    ("shutdown_closes_ws", test_shutdown_closes_ws),
    ("metrics_promtool", test_metrics_promtool),
    ("prometheus_scrapes", test_prometheus_scrapes),
    ("config_and_bind_errors", test_config_and_bind_errors),
])
