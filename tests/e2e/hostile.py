"""Hostile clients for wavemeterd, shared by tests/e2e/test_hostile.py (bounds
checked, short attacks) and bench/bench_attack.py (longer attacks, a table).

A case runs one attack against a daemon that is already up with every laser
locked, while:

  * a well-behaved client in its own process (this file run as
    `hostile.py pinger PORT`) connected from 127.0.0.1 before the attack
    sends a `ping` every 20 ms on one connection and records each round
    trip, and any error answer, refusal or close;
  * a thread samples the daemon's VmRSS every 10 ms;
  * a monitor connection, also opened before the attack, reads `lasers` and
    `status` afterwards (a new connection could be refused while attackers
    hold every slot).

Attackers connect from other loopback addresses (127.0.0.2 and up; Linux
routes all of 127/8 to lo), so a per-address limit hits them and not the
well-behaved client. After the attack every attacking socket is closed, and
the runner waits (with a deadline) for the daemon's client count to come back
and its RSS to come down before it takes the "after" numbers.

Every wait is on a condition with a deadline; sleeps inside attacks only
pace the attackers.
"""
import errno
import json
import os
import resource
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import wmd  # noqa: E402

MIB = 1024 * 1024
PING_INTERVAL_S = 0.020
LASERS = 4
HISTORY_DEPTH = 1000   # the default: ~160 bytes a sample, ~160 KB a history answer
MAX_BATCH = 100        # the default limits.max_batch
PER_ADDRESS = 16       # the new default limits.max_clients_per_address
MAX_CLIENTS = 64       # the default limits.max_clients
WRITE_QUEUE_MAX_MIB = 1  # the default limits.write_queue_max_bytes
# The daemon's RSS bound in every case: each of max_clients connections may
# have write_queue_max_bytes of answers outstanding (64 MiB), plus the idle
# daemon (~4 MiB) and room for one answer being built and the allocator.
RSS_PEAK_MIB = MAX_CLIENTS * WRITE_QUEUE_MAX_MIB + 16


# ---- the machine and the binary ----

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sanitized(binary):
    """True for an ASan build: WMD_SANITIZED=1, or the binary references the
    ASan runtime (dynamic or static)."""
    if os.environ.get("WMD_SANITIZED", "") not in ("", "0"):
        return True
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def knows_new_keys(binary):
    """Whether the binary accepts limits.line_timeout_s and
    limits.max_clients_per_address (the daemon refuses unknown keys)."""
    import tempfile
    cfg = sim_config(new_keys=True)
    cfg["limits"]["max_clients_per_address"] = PER_ADDRESS
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    try:
        out = subprocess.run([binary, "--check-config", "--config", f.name],
                             capture_output=True, timeout=10)
        return out.returncode == 0
    finally:
        os.unlink(f.name)


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler:
    """VmRSS of pid every 10 ms in a thread: peak and latest."""

    def __init__(self, pid, interval=0.010):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.last = rss_kib(pid) or 0
        self.ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.ev.is_set():
            v = rss_kib(self.pid)
            if v is None:
                return
            self.last = v
            if v > self.peak:
                self.peak = v
            self.ev.wait(self.interval)

    def start(self):
        self.peak = self.last = rss_kib(self.pid) or 0
        self.t.start()
        return self

    def stop(self):
        self.ev.set()
        self.t.join()


# ---- the daemon's configuration ----

def sim_config(new_keys=False, line_timeout_s=3, **top):
    """LASERS simulated lasers, all locked at start, read as fast as the
    simulator goes (1 ms exposures, no settle: ~1000 readings a laser in
    ~6 s), default history_depth, default limits. With new_keys,
    limits.line_timeout_s is set (the old daemon refuses the key)."""
    lasers = [{"lock": True, "exposure_ms": 1, "settle_ms": 0,
               "history_depth": HISTORY_DEPTH} for _ in range(LASERS)]
    cfg = wmd.sim_config(lasers, **top)
    if new_keys:
        cfg.setdefault("limits", {})["line_timeout_s"] = line_timeout_s
    return cfg


def lasers_state(c, timeout=10):
    return {l["name"]: (l["state"], l["since"]) for l in c.result("lasers", timeout=timeout)}


def wait_ready(d, c, timeout=30):
    """Every laser locked and a full history ring on every channel."""
    wmd.wait_for(lambda: all(s == "locked" for s, _ in lasers_state(c).values()),
                 timeout, "every laser to be locked")
    wmd.wait_for(lambda: min(ch["reads"] for ch in c.result("status")["channels"])
                 >= HISTORY_DEPTH + 10, timeout, "a full history ring on every channel")


# ---- the well-behaved client, in its own process ----

def pinger_main(port, interval_s):
    """Run as a process: ping every interval_s on one connection from
    127.0.0.1 until a line arrives on stdin; print "ready" after the first
    pong, and at the end one JSON line with the latencies (ms), the errors
    (error answers, refusal, close) and the round trip still unanswered."""
    out = {"lat_ms": [], "errors": [], "unanswered_ms": None}
    stop = threading.Event()

    def watch():
        sys.stdin.readline()
        stop.set()
    threading.Thread(target=watch, daemon=True).start()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as e:
        out["errors"].append("connect: %s" % e)
        print("ready", flush=True)
        print(json.dumps(out), flush=True)
        return
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    buf = b""
    i = 0
    ready = False
    next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now < next_send:
            stop.wait(next_send - now)
            continue
        i += 1
        t0 = time.monotonic()
        next_send = t0 + interval_s
        try:
            s.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i)
        except OSError as e:
            out["errors"].append("send: %s" % e)
            break
        dead = False
        while b"\n" not in buf:
            if stop.is_set():
                out["unanswered_ms"] = (time.monotonic() - t0) * 1e3
                dead = True
                break
            r, _, _ = select.select([s], [], [], 0.05)
            if not r:
                continue
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                out["errors"].append("recv: %s" % e)
                dead = True
                break
            if not chunk:
                out["errors"].append("closed by the daemon (have %r)" % buf[:200])
                dead = True
                break
            buf += chunk
        if dead:
            break
        line, buf = buf.split(b"\n", 1)
        lat = (time.monotonic() - t0) * 1e3
        try:
            ans = json.loads(line)
        except ValueError:
            ans = None
        if not isinstance(ans, dict) or ans.get("id") != i or ans.get("result") != "pong":
            out["errors"].append("answer %r" % line[:300])
        if ready:
            out["lat_ms"].append(lat)
        else:
            ready = True
            print("ready", flush=True)
    if not ready:
        print("ready", flush=True)
    s.close()
    print(json.dumps(out), flush=True)


class Pinger:
    """The well-behaved client's process."""

    def __init__(self, port, interval_s=PING_INTERVAL_S):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "pinger", str(port), str(interval_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        deadline = time.monotonic() + 10
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                wmd.fail("the pinger did not get its first pong within 10 s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    wmd.fail("the pinger exited before its first pong")
                line += ch
        if line.strip() != b"ready":
            wmd.fail("pinger said %r" % line)

    def stop(self):
        try:
            out, _ = self.proc.communicate(b"stop\n", timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = out.decode().strip().splitlines()
        if not lines:
            return {"lat_ms": [], "errors": ["pinger printed nothing"], "unanswered_ms": None}
        return json.loads(lines[-1])


def corrected(lat_ms, interval_ms=PING_INTERVAL_S * 1e3):
    """The round trips the pinger would have seen had it sent a ping every
    interval whatever happened: a ping answered after L ms also stands for
    those due while it waited, answered after L - interval, L - 2 interval...
    (coordinated omission, as HdrHistogram corrects it). Without this a 30 s
    freeze is one sample of 1500 and barely moves the p99."""
    out = []
    for v in lat_ms:
        out.append(v)
        w = v - interval_ms
        while w >= interval_ms:
            out.append(w)
            w -= interval_ms
    return out


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


# ---- attacking connections ----

def addrs(first, n):
    """n loopback source addresses from 127.0.<first/256>.<first%256>, skipping 127.0.0.1."""
    out = []
    k = first
    while len(out) < n:
        hi, lo = divmod(k, 256)
        if 0 < lo < 255 and (hi, lo) != (0, 1):
            out.append("127.0.%d.%d" % (hi, lo))
        k += 1
    return out


def spread(n, sources):
    """n source addresses taken round-robin from sources."""
    return [sources[i % len(sources)] for i in range(n)]


class Conn:
    """A non-blocking attacking connection from one loopback address."""

    def __init__(self, port, src):
        self.src = src
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.bind((src, 0))
        self.err = None
        rc = self.sock.connect_ex(("127.0.0.1", port))
        if rc not in (0, errno.EINPROGRESS):
            self.err = os.strerror(rc)
        self.out = bytearray()
        self.inbuf = bytearray()
        self.first_line = None
        self.lines = 0
        self.taken = 0
        self.nsent = 0
        self.nrecv = 0
        self.eof = False
        self.closed = False
        self.t_closed = None

    def fileno(self):
        return self.sock.fileno()

    def flush(self):
        """Send what the kernel takes now; False once the connection is dead."""
        while self.out and not self.closed and self.err is None:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as e:
                self.err = e.strerror or str(e)
                self.t_closed = time.monotonic()
                return False
            del self.out[:n]
            self.nsent += n
        return self.err is None

    def drain(self, keep=False, limit=1 << 20):
        """Read what is there; count lines; remember the first line."""
        while not self.eof and self.err is None:
            try:
                chunk = self.sock.recv(limit)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.err = e.strerror or str(e)
                self.t_closed = time.monotonic()
                return
            if not chunk:
                self.eof = True
                self.t_closed = time.monotonic()
                return
            self.nrecv += len(chunk)
            self.lines += chunk.count(b"\n")
            if self.first_line is None or keep:
                self.inbuf += chunk
                if self.first_line is None and b"\n" in self.inbuf:
                    self.first_line = bytes(self.inbuf.split(b"\n", 1)[0])
                if not keep:
                    self.inbuf.clear()

    def take_lines(self):
        """Complete lines kept by drain(keep=True)."""
        *lines, rest = bytes(self.inbuf).split(b"\n")
        self.inbuf = bytearray(rest)
        self.taken += len(lines)
        return lines

    def refused(self):
        if self.first_line is None:
            return False
        try:
            return json.loads(self.first_line).get("error", {}).get("code") == -32005
        except (ValueError, AttributeError):
            return False

    def close(self, rst=False):
        if self.closed:
            return
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True


def open_conns(port, sources, timeout=5.0):
    """One connection per entry of sources, all at once; waits (deadline
    timeout) until each is connected or failed."""
    conns = [Conn(port, s) for s in sources]
    sel = selectors.DefaultSelector()
    for c in conns:
        if c.err is None:
            sel.register(c, selectors.EVENT_WRITE)
    pending = len(sel.get_map())
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            c = key.fileobj
            rc = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc:
                c.err = os.strerror(rc)
            sel.unregister(c)
            pending -= 1
    for key in list(sel.get_map().values()):
        key.fileobj.err = "connect timed out"
    sel.close()
    return conns


def close_all(conns, rst=False):
    for c in conns:
        c.close(rst)


def pump(conns, until, read=True, keep=False, on_turn=None, tick=0.05):
    """Write pending output and (with read) drain answers of conns until
    until() is true; on_turn() is called about every tick s."""
    sel = selectors.DefaultSelector()
    reg = {}

    def update(c):
        ev = 0
        if c.closed or c.err or c.eof:
            ev = 0
        else:
            if read:
                ev |= selectors.EVENT_READ
            if c.out:
                ev |= selectors.EVENT_WRITE
        old = reg.get(c, 0)
        if ev == old:
            return
        if old and ev:
            sel.modify(c, ev)
        elif old:
            sel.unregister(c)
        else:
            sel.register(c, ev)
        reg[c] = ev

    for c in conns:
        update(c)
    next_turn = 0.0
    while not until():
        now = time.monotonic()
        if on_turn and now >= next_turn:
            on_turn()
            next_turn = now + tick
            for c in conns:
                update(c)
        wait = min(0.05, max(0.0, next_turn - time.monotonic())) if on_turn else 0.05
        if not reg or not any(reg.values()):
            time.sleep(wait)
            continue
        for key, ev in sel.select(wait):
            c = key.fileobj
            if ev & selectors.EVENT_READ:
                c.drain(keep)
            if ev & selectors.EVENT_WRITE:
                c.flush()
            update(c)
    sel.close()


def req(method, params=None, id_=1):
    r = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        r["params"] = params
    return r


def batch_line(method, n=MAX_BATCH):
    """One line holding a batch of n calls of a read method (history cycles
    through the lasers)."""
    calls = []
    for i in range(n):
        p = {"laser": "L%d" % (i % LASERS + 1)} if method == "history" else None
        calls.append(req(method, p, i + 1))
    return (json.dumps(calls, separators=(",", ":")) + "\n").encode()


# ---- the attacks ----
# Each takes a Ctx and returns (notes, violations): what happened, in a few
# words, and what broke this attack's own bounds.

class Ctx:
    def __init__(self, d, seconds, line_timeout_s, sanitized, new_keys):
        self.d = d
        self.port = d.port
        self.seconds = seconds            # length of a sustained attack
        self.line_timeout_s = line_timeout_s  # None: the daemon has none
        self.sanitized = sanitized
        self.new_keys = new_keys
        self.alive = lambda: d.proc.poll() is None
        self.mon = None      # the runner's monitor connection (opened before the attack)
        self.clients0 = 0    # clients the daemon had before the attack (the test's own)


def attack_amplify(method, nconns=60, naddrs=8, first_lines=3, every_s=0.1):
    """nconns connections from naddrs addresses send first_lines batches of
    MAX_BATCH calls of method at once, then one more every every_s while
    the kernel takes them, and never read."""
    def run(ctx):
        line = batch_line(method)
        conns = open_conns(ctx.port, spread(nconns, addrs(2, naddrs)))
        for c in conns:
            c.out += line * first_lines
        end = time.monotonic() + ctx.seconds

        def more():
            # One more batch a connection every every_s, if its kernel
            # buffer has room (a daemon that stopped reading it leaves none).
            for c in conns:
                if not c.out and c.err is None:
                    c.out += line
        pump(conns, lambda: time.monotonic() >= end or not ctx.alive(), read=False,
             on_turn=more, tick=every_s)
        sent = sum(c.nsent for c in conns)
        dead = sum(1 for c in conns if c.err)
        close_all(conns)
        return ("%d conns, %.1f MB of %d-call `%s` batches (%d B a line) sent, %d conns "
                "broken" % (nconns, sent / 1e6, MAX_BATCH, method, len(line), dead)), []
    return run


def attack_readers(nconns=2, inflight=2):
    """Clients that read their answers as fast as they can, each keeping
    inflight history batches of 100 in flight."""
    def run(ctx):
        line = batch_line("history")
        conns = open_conns(ctx.port, spread(nconns, addrs(2, 1)))
        sent_lines = {c: 0 for c in conns}
        end = time.monotonic() + ctx.seconds

        def more():
            for c in conns:
                if c.err is None and not c.eof and sent_lines[c] - c.lines < inflight:
                    c.out += line
                    sent_lines[c] += 1
        pump(conns, lambda: time.monotonic() >= end or not ctx.alive(), read=True,
             on_turn=more, tick=0.005)
        got = sum(c.nrecv for c in conns)
        answers = sum(c.lines for c in conns)
        viol = ["reader %s: %s" % (c.src, c.err or "closed by the daemon")
                for c in conns if c.err or c.eof]
        close_all(conns)
        return ("%d readers got %d batch answers, %.1f MB, in %.0f s" %
                (nconns, answers, got / 1e6, ctx.seconds)), viol
    return run


def attack_conn1000(n=1000, naddrs=100):
    """n connections from naddrs addresses opened at once and held for the
    attack's length (at least until the daemon has served or refused every
    one). The daemon serves at most max_clients at once (its `status`
    says), refuses the rest with -32005, and logs the refusals once per
    address."""
    def run(ctx):
        mark = len(ctx.d.log())
        t0 = time.monotonic()
        conns = open_conns(ctx.port, spread(n, addrs(256 + 1, naddrs)), timeout=10)
        seen = {"max": 0, "now": 0}

        def look():
            st = ctx.mon.result("status")
            seen["now"] = st["clients"] - ctx.clients0
            seen["max"] = max(seen["max"], seen["now"])

        def accounted():
            return sum(1 for c in conns if c.eof or c.err) + seen["now"] >= n
        end = t0 + ctx.seconds
        pump(conns, lambda: not ctx.alive() or time.monotonic() >= end and accounted() or
             time.monotonic() >= end + 2, read=True, on_turn=look, tick=0.25)
        took = time.monotonic() - t0
        # status "clients" also counts refusals still being written, so it
        # may pass max_clients during the flood; once the flood is over it
        # may not.
        if ctx.alive():
            look()
        all_in = accounted()
        failed = sum(1 for c in conns if c.err and c.nrecv == 0 and not c.eof)
        refused = sum(1 for c in conns if c.refused())
        closed = sum(1 for c in conns if c.eof or c.err)
        # Reset, not FIN: a connection whose handshake the server had not
        # finished (its accept queue full) and whose client then sent a FIN
        # and went away can still become established on the server, with no
        # peer left to ever close it: a ghost until idle_timeout_s. A reset
        # leaves nothing behind.
        close_all(conns, rst=True)
        viol = []
        if seen["now"] + ctx.clients0 > MAX_CLIENTS:
            viol.append("the daemon has %d clients after the flood, max_clients is %d" %
                        (seen["now"] + ctx.clients0, MAX_CLIENTS))
        viol += refusal_logging(ctx, mark, naddrs)
        # Connections the kernel completed while the daemon's accept queue
        # (backlog 128) was full wait for SYN-ACK retransmissions (1, 2,
        # 4 s...): the kernel's doing, noted but not a violation.
        return ("%d conns from %d addresses: %d clients after the flood (at most %d, with "
                "refusals in flight), %d refused with -32005, %d closed otherwise, "
                "%d failed to connect%s" %
                (n, naddrs, seen["now"] + ctx.clients0, seen["max"] + ctx.clients0, refused,
                 closed - refused - failed, failed,
                 "" if all_in else ", %d still in the listen backlog after %.0f s" %
                 (n - closed - seen["now"], took))), viol
    return run


def attack_slow_bytes(nconns=20):
    """nconns connections from one address, each sending one byte a second of
    a request line. The daemon must take at most PER_ADDRESS of them and
    close each accepted one about line_timeout_s after its first byte."""
    def run(ctx):
        text = json.dumps(req("ping", None, 1)).encode() + b"\n"
        mark = len(ctx.d.log())
        conns = open_conns(ctx.port, [addrs(10, 1)[0]] * nconns)
        t0 = time.monotonic()
        lt = ctx.line_timeout_s
        length = (lt + 3.0) if lt else ctx.seconds
        end = t0 + length
        pos = [0]

        def more():
            k = int(time.monotonic() - t0) + 1  # bytes due so far
            if k > pos[0]:
                for c in conns:
                    if c.err is None and not c.eof and pos[0] < len(text):
                        c.out += text[pos[0]:k]
                pos[0] = min(k, len(text))
        pump(conns, lambda: time.monotonic() >= end or not ctx.alive() or
             all(c.eof or c.err for c in conns), read=True, keep=True, on_turn=more, tick=0.05)
        refused = [c for c in conns if c.refused()]
        served = [c for c in conns if not c.refused()]
        open_ = [c for c in served if not (c.eof or c.err)]
        closed_t = [c.t_closed - t0 for c in served if c.t_closed]
        viol = []
        if len(served) > PER_ADDRESS:
            viol.append("%d of %d connections from one address accepted (per-address limit %d)"
                        % (len(served), len(conns), PER_ADDRESS))
        if open_:
            viol.append("%d slow connections still open after %.0f s" % (len(open_), length))
        if lt:
            late = [t for t in closed_t if t > lt + 2.0]
            if late:
                viol.append("slow connections closed after %.1f s (line_timeout_s %g)" %
                            (max(late), lt))
            bad = [c for c in served if c.t_closed and not _has_code(c.first_line, -32600)]
            if bad:
                viol.append("%d slow connections closed without a -32600 line (first %r)" %
                            (len(bad), bad[0].first_line))
        viol += refusal_logging(ctx, mark, 1)
        note = "%d conns from 1 address at 1 byte/s: %d refused, " % (nconns, len(refused))
        if closed_t:
            note += "%d closed after %.1f-%.1f s" % (len(closed_t), min(closed_t), max(closed_t))
        if open_:
            note += "%s%d still open after %.0f s" % (", " if closed_t else "", len(open_), length)
        close_all(conns)
        return note, viol
    return run


def refusal_logging(ctx, mark, naddrs):
    """Refusals are logged once per address per minute: at most naddrs
    lines about refused clients since the log was mark bytes long."""
    lines = [l for l in ctx.d.log()[mark:].splitlines() if "refus" in l]
    if len(lines) > naddrs:
        return ["%d log lines about refused clients from %d addresses (want at most one per "
                "address a minute), e.g. %r" % (len(lines), naddrs, lines[0][:120])]
    return []


def _has_code(line, code):
    try:
        return json.loads(line)["error"]["code"] == code
    except (TypeError, ValueError, KeyError):
        return False


def expect_answers(c, codes, timeout, what):
    """Read len(codes) answer lines on c (keep=True) and compare the error
    codes (None: a pong). Returns violations."""
    got = []
    end = time.monotonic() + timeout
    pump([c], lambda: c.lines - c.taken >= len(codes) or c.eof or c.err or
         time.monotonic() > end, read=True, keep=True)
    got = c.take_lines()
    viol = []
    if len(got) < len(codes):
        viol.append("%s: %d of %d answers (%s)" % (what, len(got), len(codes),
                                                  c.err or ("closed" if c.eof else "timed out")))
    for i, (line, code) in enumerate(zip(got, codes)):
        try:
            a = json.loads(line)
        except ValueError:
            viol.append("%s: answer %d not JSON: %r" % (what, i, line[:200]))
            continue
        if code is None:
            if a.get("result") != "pong":
                viol.append("%s: answer %d: %r, want pong" % (what, i, line[:200]))
        elif not (isinstance(code, tuple) and a.get("error", {}).get("code") in code
                  or a.get("error", {}).get("code") == code):
            viol.append("%s: answer %d: %r, want error %s" % (what, i, line[:200], code))
    return viol


def attack_long_line(mb=10):
    """Lines of mb MB (a ping whose param never ends), each followed by a
    ping, on one connection for the attack's length: the daemon answers
    -32600 for each long line, then pong, and the connection goes on."""
    def run(ctx):
        c = open_conns(ctx.port, addrs(12, 1))[0]
        big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":["' + b"x" * (mb * MIB) + b'"]}\n'
        t0 = time.monotonic()
        stop = t0 + ctx.seconds
        viol = []
        n = 0
        while time.monotonic() < stop and ctx.alive() and not viol:
            c.out += big
            c.out += b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n'
            viol = expect_answers(c, [-32600, None], max(10.0, ctx.seconds), "%d MB line" % mb)
            n += 1
        took = time.monotonic() - t0
        close_all([c])
        return "%d lines of %d MB, each followed by a ping, in %.1f s: %s" % (
            n, mb, took, "ok" if not viol else "; ".join(viol)), viol
    return run


def attack_nesting(reps=None):
    """100 000-deep `[[[..` and `{"a":{"a":..` lines (longer than
    max_line_bytes: -32600), the deepest that fit in 64 KiB (30 000 and
    10 000 levels: -32700 or -32600), an unclosed 30 000-deep line, and a
    batch holding a deep param, each answered with an error, then a ping."""
    lines = [
        (b"[" * 100000 + b"]" * 100000, -32600),
        (b'{"a":' * 100000 + b"1" + b"}" * 100000, -32600),
        (b"[" * 30000 + b"]" * 30000, (-32700, -32600)),
        (b'{"a":' * 10000 + b"1" + b"}" * 10000, (-32700, -32600)),
        (b"[" * 30000, (-32700, -32600)),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 20000 + b"]" * 20000
         + b"}]", (-32700, -32600)),
    ]

    def run(ctx):
        c = open_conns(ctx.port, addrs(13, 1))[0]
        t0 = time.monotonic()
        stop = t0 + ctx.seconds
        end = stop + 20.0
        viol = []
        done = 0
        while (done < reps if reps else time.monotonic() < stop) and ctx.alive():
            codes = []
            for text, code in lines:
                c.out += text + b"\n"
                codes.append(code)
            c.out += b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n'
            codes.append(None)
            viol = expect_answers(c, codes, max(1.0, end - time.monotonic()), "deep nesting")
            if viol:
                break
            done += 1
        close_all([c])
        return "%d rounds of 6 deeply nested lines and a ping in %.2f s%s" % (
            done, time.monotonic() - t0, "" if not viol else ": " + "; ".join(viol)), viol
    return run


def attack_random(mb=50):
    """mb MB of os.urandom from one connection as fast as the daemon takes
    it; its answers (parse errors) are read and dropped. The daemon may
    close the connection (protocol errors): that ends the attack early."""
    def run(ctx):
        c = open_conns(ctx.port, addrs(14, 1))[0]
        data = os.urandom(mb * MIB)
        c.out += data
        t0 = time.monotonic()
        end = t0 + max(15.0, ctx.seconds * 2)
        pump([c], lambda: not c.out or c.eof or c.err or time.monotonic() > end or
             not ctx.alive(), read=True)
        sent = c.nsent
        # The answers to what was sent, until the daemon has caught up.
        quiet = [time.monotonic(), c.nrecv]

        def caught_up():
            if c.nrecv != quiet[1]:
                quiet[:] = [time.monotonic(), c.nrecv]
            return c.eof or c.err or time.monotonic() - quiet[0] > 0.5 or time.monotonic() > end
        pump([c], caught_up, read=True)
        took = time.monotonic() - t0
        how = ("closed by the daemon" if c.eof else c.err) if (c.eof or c.err) else "still open"
        close_all([c])
        return "%.1f of %d MB random bytes sent in %.1f s, %d answer lines, %s" % (
            sent / MIB, mb, took, c.lines, how), []
    return run


def attack_vanish(per_round=12, batches=3, read_bytes=65536):
    """Rounds of per_round connections that each send batches history
    batches, read read_bytes of the answers, and reset the connection
    (SO_LINGER 0) with the rest in flight."""
    def run(ctx):
        line = batch_line("history")
        end = time.monotonic() + ctx.seconds
        rounds = 0
        srcs = addrs(15, 2)
        while time.monotonic() < end and ctx.alive():
            conns = open_conns(ctx.port, spread(per_round, srcs))
            for c in conns:
                c.out += line * batches
            deadline = min(end, time.monotonic() + 2.0)
            pump(conns, lambda: all(c.nrecv >= read_bytes or c.eof or c.err for c in conns)
                 or time.monotonic() > deadline, read=True)
            close_all(conns, rst=True)
            rounds += 1
        return "%d rounds of %d conns x %d history batches, reset mid-answer" % (
            rounds, per_round, batches), []
    return run


# ---- the cases ----

class Case:
    def __init__(self, name, what, attack, rss_peak_mib=None, min_seconds=0.0):
        self.name = name
        self.what = what
        self.attack = attack
        self.rss_peak_mib = rss_peak_mib or RSS_PEAK_MIB
        self.min_seconds = min_seconds  # the attack lasts at least this long


CASES = [
    # At least 7 s: a daemon whose RSS stayed under 60 MiB for 4 s went to
    # 100 MiB 5-6 s into this attack, once the attackers' socket buffers
    # were full; 3 s missed it.
    Case("amplify_history", "60 conns (8 addresses) send batches of 100 `history` (~16 MB of "
         "answer each) and never read", attack_amplify("history"), min_seconds=7.0),
    Case("amplify_read", "the same with batches of 100 `read`", attack_amplify("read")),
    Case("amplify_lasers", "the same with batches of 100 `lasers`", attack_amplify("lasers")),
    Case("amplify_status", "the same with batches of 100 `status`", attack_amplify("status")),
    Case("amplify_channels", "the same with batches of 100 `channels`",
         attack_amplify("channels")),
    Case("readers", "2 conns pipeline batches of 100 `history` and read as fast as they can",
         attack_readers()),
    Case("conn1000", "1000 conns from 100 addresses opened at once and held", attack_conn1000()),
    Case("slow_bytes", "20 conns from one address send a request line at 1 byte/s",
         attack_slow_bytes()),
    Case("line_10mb", "10 MB lines, each followed by a ping, on one connection",
         attack_long_line()),
    Case("nesting", "100 000-deep [[[ and {\"a\": lines, and the deepest that fit in a line",
         attack_nesting()),
    Case("random_50mb", "50 MB of random bytes on one connection, as fast as it goes",
         attack_random()),
    Case("vanish", "conns send history batches, read 64 KiB, reset (SO_LINGER 0)",
         attack_vanish()),
]


class Bounds:
    """What every case must keep to. Under ASan+UBSan (shadow memory,
    quarantine, ~3x slower) RSS bounds cannot hold and are not checked, and
    the ping bounds are looser."""

    def __init__(self, sanitized):
        self.sanitized = sanitized
        self.p99_ms = 200.0 if sanitized else 50.0
        self.max_ms = 1000.0 if sanitized else 250.0
        self.check_rss = not sanitized

    def describe(self, case=None):
        s = "ping p99 < %.0f ms, max < %.0f ms" % (self.p99_ms, self.max_ms)
        if self.check_rss:
            s += ", RSS peak < %d MiB" % (case.rss_peak_mib if case else RSS_PEAK_MIB)
        else:
            s += ", RSS not bounded (sanitizer build)"
        return s + ", daemon up, every lock stays locked, pinger never refused or in error"


class Result:
    def __init__(self, name):
        self.name = name
        self.p50 = self.p99 = self.max = float("nan")
        self.pings = 0
        self.max_is_lower_bound = False
        self.rss_before = self.rss_peak = self.rss_after = 0
        self.lag_max = None
        self.lag_before = None
        self.turn_max = None      # status loop_turn_ms.max, where the daemon has it
        self.notes = ""
        self.violations = []
        self.died = None

    def row(self):
        def ms(v):
            return "%.1f" % v if v == v else "-"

        def mib(k):
            return "%.1f" % (k / 1024.0) if k else "-"
        mx = (">" if self.max_is_lower_bound else "") + ms(self.max)
        if self.lag_max is None:
            lag = "-"
        elif self.lag_before is not None and self.lag_max <= self.lag_before:
            lag = "<= %.0f" % self.lag_max
        else:
            lag = "%.0f" % self.lag_max
        turn = "-" if self.turn_max is None else "%.0f" % self.turn_max
        notes = self.notes
        if self.violations:
            notes += " **VIOLATED:** " + "; ".join(self.violations)
        return "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            self.name, ms(self.p50), ms(self.p99), mx, mib(self.rss_before),
            mib(self.rss_peak), mib(self.rss_after), lag, turn, notes.replace("|", "/"))


TABLE_HEAD = ("| attack | ping p50 ms | p99 ms | max ms | RSS before MiB | peak MiB | after MiB "
              "| loop lag max ms | loop turn max ms | what happened |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def run_case(d, case, ctx, bounds, settle_s=3.0, answer_timeout=20.0):
    """Run one case against the running daemon d (every laser locked).
    Returns a Result whose violations list every bound it broke."""
    r = Result(case.name)
    mon = wmd.Client(d.port)
    mon.sock.settimeout(answer_timeout)
    before = lasers_state(mon)
    unlocked = [n for n, (s, _) in before.items() if s != "locked"]
    if unlocked:
        wmd.fail("%s: lasers %s not locked before the attack" % (case.name, unlocked))
    pinger = Pinger(d.port)
    st = mon.result("status")
    clients0 = st["clients"]  # the monitor, the pinger, and any other of the test's own
    r.lag_before = st["loop_lag_ms"]["max"]
    sampler = RssSampler(d.proc.pid).start()
    r.rss_before = sampler.last
    ctx.mon, ctx.clients0 = mon, clients0
    seconds = ctx.seconds
    ctx.seconds = max(seconds, case.min_seconds)
    try:
        r.notes, viol = case.attack(ctx)
    except Exception as e:  # an attack that breaks is a result, not a crash of the suite
        r.notes, viol = "attack raised %r" % e, ["attack raised %r" % e]
    ctx.seconds = seconds
    r.violations += viol
    mon_ok = [True]
    # After: every attacking socket is closed. Wait (deadlines) for the
    # daemon to have let them go, then for its RSS to come back down.
    last = [None]

    def let_go():
        if d.proc.poll() is not None:
            return True
        last[0] = mon.result("status", timeout=answer_timeout)["clients"]
        return last[0] <= clients0
    try:
        wmd.wait_for(let_go, answer_timeout, "the attackers' connections to be closed")
    except (AssertionError, OSError) as e:
        r.violations.append("after the attack: %s (status clients %s, %d before the attack)" %
                            (e, last[0], clients0))
        mon_ok[0] = False
    # (Under a sanitizer RSS does not come back: ASan keeps freed memory in
    # quarantine. No wait then.)
    deadline = time.monotonic() + (settle_s if bounds.check_rss else 0.0)
    while d.proc.poll() is None and sampler.last > r.rss_before + 2048 and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    r.rss_after = sampler.last
    res = pinger.stop()
    sampler.stop()
    r.rss_peak = max(sampler.peak, r.rss_before)
    lat = res["lat_ms"]
    if res["unanswered_ms"] is not None:
        lat = lat + [res["unanswered_ms"]]
        if res["unanswered_ms"] >= max(lat):
            r.max_is_lower_bound = True
    r.pings = len(lat)
    if lat:
        full = corrected(lat)
        r.p50, r.p99, r.max = pct(full, 50), pct(full, 99), max(lat)
    # Checks.
    if d.proc.poll() is not None:
        r.died = d.proc.returncode
        r.violations.append("daemon died (exit %s)" % d.proc.returncode)
        r.notes += "; daemon DIED (exit %s)" % d.proc.returncode
        mon.close()
        return r
    for e in res["errors"][:3]:
        r.violations.append("well-behaved client: %s" % e)
    if r.p99 > bounds.p99_ms:
        r.violations.append("ping p99 %.1f ms > %.0f ms" % (r.p99, bounds.p99_ms))
    if r.max > bounds.max_ms:
        r.violations.append("ping max %s%.1f ms > %.0f ms" % (
            ">" if r.max_is_lower_bound else "", r.max, bounds.max_ms))
    if bounds.check_rss and r.rss_peak > case.rss_peak_mib * 1024:
        r.violations.append("RSS peak %.1f MiB > %d MiB" % (r.rss_peak / 1024.0,
                                                            case.rss_peak_mib))
    if not mon_ok[0]:
        # A call timed out: its answer may still come on that connection.
        mon.close()
        try:
            mon = wmd.Client(d.port)
        except OSError as e:
            r.violations.append("cannot connect after the attack: %s" % e)
            return r
    try:
        if mon.result("ping", timeout=answer_timeout) != "pong":
            r.violations.append("monitor ping not answered pong")
        after = lasers_state(mon, timeout=answer_timeout)
        moved = ["%s %s since %.3f (was locked since %.3f)" % (n, after[n][0], after[n][1],
                                                              before[n][1])
                 for n in before if after.get(n) != before[n]]
        if moved:
            r.violations.append("locks left locked: " + ", ".join(moved))
        st = mon.result("status")
        r.lag_max = st["loop_lag_ms"]["max"]
        r.turn_max = (st.get("loop_turn_ms") or {}).get("max")
    except (AssertionError, OSError) as e:
        r.violations.append("monitor: %s" % e)
    mon.close()
    if d.proc.poll() is not None:
        r.died = d.proc.returncode
        r.violations.append("daemon died (exit %s)" % d.proc.returncode)
    return r


def sighup_case(d, config_path, cfg, bounds, ctx, answer_timeout=20.0):
    """SIGHUP with a bad config (invalid JSON: refused, the daemon keeps its
    config and says why), then a good one (limits.max_batch 50: a batch of
    60 is refused with -32600). The pinger runs throughout; locks stay."""
    r = Result("sighup")
    mon = wmd.Client(d.port)
    mon.sock.settimeout(answer_timeout)
    before = lasers_state(mon)
    r.lag_before = mon.result("status")["loop_lag_ms"]["max"]
    pinger = Pinger(d.port)
    sampler = RssSampler(d.proc.pid).start()
    r.rss_before = sampler.last
    batch60 = json.dumps([req("ping", None, i) for i in range(60)]) + "\n"
    t_start = time.monotonic()

    def batch60_answer():
        mon.send(batch60)
        return mon.recv_json(answer_timeout)
    notes = []
    try:
        a = batch60_answer()
        if not isinstance(a, list) or len(a) != 60:
            r.violations.append("a batch of 60 before SIGHUP: %r" % str(a)[:200])
        # Bad file.
        with open(config_path, "w") as f:
            f.write('{"limits": {"max_batch": 50,\n')
        mark = len(d.log())
        d.proc.send_signal(signal.SIGHUP)
        try:
            wmd.wait_for(lambda: d.proc.poll() is not None or
                         ("invalid JSON" in d.log()[mark:] or config_path in d.log()[mark:]),
                         5, "the daemon to log why it refused the bad config")
        except AssertionError as e:
            r.violations.append(str(e))
        if d.proc.poll() is not None:
            raise RuntimeError("killed by SIGHUP (exit %s)" % d.proc.returncode)
        notes.append("bad file refused, logged: %s" % d.log()[mark:].strip().replace(
            "\n", " / ").replace(config_path, "FILE")[:160])
        a = batch60_answer()
        if not isinstance(a, list) or len(a) != 60:
            r.violations.append("after the bad config a batch of 60 is no longer served: %r" %
                                str(a)[:200])
        # Good file.
        good = json.loads(json.dumps(cfg))
        good.setdefault("limits", {})["max_batch"] = 50
        with open(config_path, "w") as f:
            json.dump(good, f, indent=2)
        d.proc.send_signal(signal.SIGHUP)

        def refused():
            if d.proc.poll() is not None:
                raise RuntimeError("killed by SIGHUP (exit %s)" % d.proc.returncode)
            a = batch60_answer()
            return isinstance(a, dict) and a.get("error", {}).get("code") == -32600 and \
                "batch" in a["error"]["message"].lower()
        try:
            wmd.wait_for(refused, 5, "a batch of 60 to be refused after max_batch 50")
            notes.append("good file applied (a batch of 60 refused)")
        except AssertionError as e:
            r.violations.append(str(e))
        # Watch the pings a while with the new config: the daemon keeps
        # answering and a batch of 50 is served.
        t_end = t_start + ctx.seconds

        def watched():
            if d.proc.poll() is not None:
                raise RuntimeError("died after SIGHUP (exit %s)" % d.proc.returncode)
            return time.monotonic() >= t_end
        wmd.wait_for(watched, ctx.seconds + 5, "the observation window to pass")
        mon.send(json.dumps([req("ping", None, i) for i in range(50)]) + "\n")
        a = mon.recv_json(answer_timeout)
        if not isinstance(a, list) or len(a) != 50:
            r.violations.append("a batch of 50 after max_batch 50: %r" % str(a)[:200])
    except RuntimeError as e:
        notes.append(str(e))
        r.violations.append(str(e))
    except (AssertionError, OSError) as e:
        r.violations.append("monitor: %s" % e)
    res = pinger.stop()
    sampler.stop()
    r.rss_after = sampler.last
    r.rss_peak = max(sampler.peak, r.rss_before)
    lat = res["lat_ms"]
    if res["unanswered_ms"] is not None:
        lat = lat + [res["unanswered_ms"]]
    r.pings = len(lat)
    if lat:
        full = corrected(lat)
        r.p50, r.p99, r.max = pct(full, 50), pct(full, 99), max(lat)
    r.notes = "; ".join(notes)
    if d.proc.poll() is not None:
        r.died = d.proc.returncode
        if not any("killed" in v for v in r.violations):
            r.violations.append("daemon died (exit %s)" % d.proc.returncode)
        mon.close()
        return r
    for e in res["errors"][:3]:
        r.violations.append("well-behaved client: %s" % e)
    if r.p99 > bounds.p99_ms:
        r.violations.append("ping p99 %.1f ms > %.0f ms" % (r.p99, bounds.p99_ms))
    if r.max > bounds.max_ms:
        r.violations.append("ping max %.1f ms > %.0f ms" % (r.max, bounds.max_ms))
    if bounds.check_rss and r.rss_peak > RSS_PEAK_MIB * 1024:
        r.violations.append("RSS peak %.1f MiB > %d MiB" % (r.rss_peak / 1024.0, RSS_PEAK_MIB))
    try:
        after = lasers_state(mon, timeout=answer_timeout)
        moved = [n for n in before if after.get(n) != before[n]]
        if moved:
            r.violations.append("locks left locked: %s" % moved)
        st = mon.result("status")
        r.lag_max = st["loop_lag_ms"]["max"]
        r.turn_max = (st.get("loop_turn_ms") or {}).get("max")
    except (AssertionError, OSError) as e:
        r.violations.append("monitor: %s" % e)
    mon.close()
    return r


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "pinger":
    pinger_main(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else PING_INTERVAL_S)
