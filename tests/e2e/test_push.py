#!/usr/bin/env python3
"""End to end: subscriptions. The real wavemeterd on the simulator pushes
readings, lock changes and status to clients that subscribed, in order,
with per-subscription sequence numbers; a slow reader gets the newest push
per laser and a count of what it missed; a reader that takes nothing is
closed; answers are never dropped or overtaken by a push they announce."""
import json
import socket
import time

from wmd import Client, Daemon, fail, run_tests, sim_config, wait_for


def notes(c, n, timeout=10, method=None):
    """The next n notifications (skipping answers), in order."""
    out = []
    while c.notes and len(out) < n:
        m = c.notes.pop(0)
        if method is None or m["method"] == method:
            out.append(m)
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("only %d of %d notifications within %.0f s: %r" % (len(out), n, timeout, out[-3:]))
        m = c.recv_json(timeout=left)
        if "id" in m:
            continue
        if method is None or m["method"] == method:
            out.append(m)
    return out


def three_lasers():
    # Always due: the three take turns (a reading each every ~30 ms), rather
    # than the schedule's once a second for lasers no lock uses.
    return sim_config([{"max_age_ms": 1}] * 3)


def test_answer_first_then_ordered_pushes():
    with Daemon(three_lasers()) as d, d.client() as c:
        c.send('{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["readings"],'
               '"lasers":["L2"]}}\n')
        first = c.recv_json()
        if first.get("id") != 1 or first["result"]["lasers"] != ["L2"]:
            fail("the answer did not come first: %r" % first)
        sub = first["result"]["subscription"]
        got = notes(c, 20)
        seqs = [m["params"]["seq"] for m in got]
        if seqs != list(range(seqs[0], seqs[0] + 20)) or seqs[0] != 1:
            fail("sequence %r" % seqs)
        for m in got:
            p = m["params"]
            if m["method"] != "reading" or p["subscription"] != sub or "missed" in p or \
                    p["reading"]["laser"] != "L2" or "id" in m:
                fail("notification %r" % m)
        # The readings themselves: new ones, in order.
        rs = [m["params"]["reading"]["seq"] for m in got]
        if rs != sorted(rs) or len(set(rs)) != len(rs):
            fail("reading seq %r" % rs)


def test_filters_topics_and_unsubscribe():
    with Daemon(three_lasers()) as d, d.client() as c:
        a = c.result("subscribe", {"topics": ["readings"], "channels": [1]})["subscription"]
        b = c.result("subscribe", [["readings", "locks"], ["L3"]])["subscription"]
        got = notes(c, 30)
        by = {}
        for m in got:
            by.setdefault(m["params"]["subscription"], set()).add(m["params"]["reading"]["laser"])
        if by.get(a) != {"L1"} or by.get(b) != {"L3"}:
            fail("filters: %r" % by)
        if c.result("unsubscribe", {"subscription": a}) is not True:
            fail("unsubscribe")
        # After the answer to unsubscribe, nothing more of a.
        later = notes(c, 10)
        if any(m["params"]["subscription"] == a for m in later):
            fail("pushes after unsubscribe: %r" % later)
        for params, code in (({"topics": []}, -32602), ({"topics": ["weather"]}, -32602),
                             ({"topics": ["readings"], "lasers": ["nope"]}, -32602),
                             ({"topics": ["readings"], "max_rate_hz": 0}, -32602),
                             ({"topics": ["readings"], "x": 1}, -32602)):
            e = c.call("subscribe", params)
            if "error" not in e or e["error"]["code"] != code:
                fail("subscribe %r: %r" % (params, e))
        e = c.call("unsubscribe", {"subscription": a})
        if e.get("error", {}).get("code") != -32602:
            fail("unsubscribe twice: %r" % e)


def test_lock_and_status_topics():
    with Daemon(three_lasers()) as d, d.client() as c:
        c.result("subscribe", {"topics": ["locks", "status"]})
        with d.client() as w:
            w.result("laser.lock", ["L1"])
            states = []
            wait_for(lambda: states.extend(
                m["params"]["lock"]["state"] for m in notes(c, 1, method="lock")) or
                "locked" in states, 20, "a lock notification of locked")
            if states[0] != "acquiring":
                fail("lock states %r" % states)
            w.result("sim.disconnect")
            st = notes(c, 1, method="status")[0]["params"]["status"]
            if st["state"] != "error" or "disconnected" not in st.get("error", ""):
                fail("status push %r" % st)
            w.result("sim.connect")
            st = notes(c, 1, timeout=15, method="status")[0]["params"]["status"]
            if st["state"] not in ("running", "reading"):
                fail("status push after reconnect %r" % st)


def test_slow_reader_gets_newest_and_missed():
    # A reader that pauses: above the soft cap only the newest push per
    # laser waits, and the next one says how many it missed; the sequence
    # shows the same gap. Memory stays bounded; the connection stays open.
    cfg = three_lasers()
    cfg["limits"] = {"push_soft_bytes": 4096, "write_stall_timeout_s": 30}
    with Daemon(cfg) as d:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        s.connect(("127.0.0.1", d.port))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":'
                  b'{"topics":["readings"],"lasers":["L1"]}}\n')
        time.sleep(3)  # not reading: the daemon must coalesce, not queue
        st = d.result("status")
        c = Client.__new__(Client)
        c.sock, c.buf, c.notes = s, b"", []
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = c.recv_json()
            if "id" in m:
                continue
            got.append(m["params"])
            if any("missed" in p for p in got) and len(got) > 5 and \
                    got[-1]["seq"] == got[-2]["seq"] + 1:
                break
        missed = [p for p in got if "missed" in p]
        if not missed:
            fail("no push said what was missed: %r" % [p["seq"] for p in got])
        for prev, p in zip(got, got[1:]):
            gap = p["seq"] - prev["seq"] - 1
            if gap != p.get("missed", 0):
                fail("seq %d -> %d but missed %r" % (prev["seq"], p["seq"], p.get("missed")))
        s.close()
        print("     slow reader: %d pushes, missed %s, daemon answered status while it slept "
              "(%d clients)" % (len(got), [p["missed"] for p in missed], st["clients"]))


def test_stalled_reader_closed():
    cfg = three_lasers()
    cfg["limits"] = {"push_soft_bytes": 4096, "write_stall_timeout_s": 2}
    with Daemon(cfg) as d:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        s.connect(("127.0.0.1", d.port))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"topics":["readings"]}}\n')
        wait_for(lambda: "took no notifications for 2 s" in d.log(), 20, "the stalled reader closed")
        if d.result("ping") != "pong":
            fail("daemon not answering")
        s.close()


def test_max_rate():
    with Daemon(three_lasers()) as d, d.client() as c:
        c.result("subscribe", {"topics": ["readings"], "lasers": ["L1"], "max_rate_hz": 4})
        t0 = time.monotonic()
        got = notes(c, 9, timeout=10)
        dt = time.monotonic() - t0
        if dt < 8 / 4 * 0.9:
            fail("9 pushes in %.2f s at max_rate_hz 4" % dt)
        if any("missed" in m["params"] for m in got):
            fail("rate-limited pushes counted as missed: %r" % got)


def test_many_subscriptions_capped():
    cfg = three_lasers()
    cfg["limits"] = {"max_subscriptions": 2}
    with Daemon(cfg) as d, d.client() as c:
        c.result("subscribe", {"topics": ["status"]})
        c.result("subscribe", {"topics": ["status"]})
        e = c.call("subscribe", {"topics": ["status"]})
        if e.get("error", {}).get("code") != -32005:
            fail("third subscription: %r" % e)
        v = c.result("version")
        if v["protocol"] != {"major": 1, "minor": 2}:
            fail("protocol version %r" % v)


run_tests([
    ("answer_first_then_ordered_pushes", test_answer_first_then_ordered_pushes),
    ("filters_topics_and_unsubscribe", test_filters_topics_and_unsubscribe),
    ("lock_and_status_topics", test_lock_and_status_topics),
    ("slow_reader_gets_newest_and_missed", test_slow_reader_gets_newest_and_missed),
    ("stalled_reader_closed", test_stalled_reader_closed),
    ("max_rate", test_max_rate),
    ("many_subscriptions_capped", test_many_subscriptions_capped),
])
