#!/usr/bin/env python3
"""End to end: hostile clients against the real wavemeterd on its default
limits (no login, read methods only), with 4 simulated lasers locked and a
full history ring (1000 readings a laser, ~160 KB a `history` answer).

Each case runs one attack (tests/e2e/hostile.py says what each does) while a
well-behaved client in its own process, connected from 127.0.0.1 before the
attack, pings every 20 ms on one connection. Attackers come from 127.0.0.2
and up, so a per-address limit hits them, not the well-behaved client.
Every case checks, over the attack and until the daemon has let the
attackers go (at most 20 s) and its RSS has come back (at most 3 s):

  * the daemon is up and answers;
  * the well-behaved client's ping p99 < 50 ms and max < 250 ms, and it never
    got an error answer, a refusal or a close. The p99 counts the pings that
    were due while an earlier one waited (coordinated omission corrected), so
    a 1 s stall is 50 slow pings, not one;
  * the daemon's peak RSS < 80 MiB: max_clients (64) connections with
    write_queue_max_bytes (1 MiB) of answers each, plus 16 MiB (idle it is
    ~4 MiB);
  * no lock left "locked" (each laser's state and "since" are unchanged);
  * the case's own bounds: slow lines closed by limits.line_timeout_s (3 s
    here) with a -32600 line, at most 16 connections from one address, at
    most max_clients served at once, refusals logged once per address, an
    error for each over-long or over-deep line and the connection goes on,
    SIGHUP with a bad file keeps the old config and says why, with a good
    one applies it.

Under ASan+UBSan (WMD_SANITIZED=1, or a binary with the ASan runtime) RSS is
not bounded (shadow memory, quarantine) and the ping bounds are p99 < 200 ms
and max < 1000 ms: such builds run about 3x slower.

The attacks last 3 s here, amplify_history 7 s (about 65 s in all, about
the same under ASan, which waits for no RSS to come back);
bench/bench_attack.py runs them longer and prints the numbers
(docs/BENCHMARKS.md). Every case runs even when one fails; a failed case
takes the shared daemon with it. Run some cases only: test_hostile.py NAME...
"""
import sys
import time

import hostile
from wmd import BIN, Daemon, fail

SECONDS = 3.0
LINE_TIMEOUT_S = 3
SAN = hostile.sanitized(BIN)
BOUNDS = hostile.Bounds(SAN)
NEW = hostile.knows_new_keys(BIN)
hostile.raise_nofile()

_shared = {}


def shared():
    """One daemon for the attack cases: the history ring takes ~6 s to fill."""
    if "d" not in _shared:
        d = Daemon(hostile.sim_config(new_keys=NEW, line_timeout_s=LINE_TIMEOUT_S))
        _shared["d"] = d
        d.start()
        with d.client() as c:
            hostile.wait_ready(d, c)
    d = _shared["d"]
    if d.proc.poll() is not None:
        fail("the shared daemon is gone (exit %s)" % d.proc.returncode)
    return d


def report(case_what, r):
    print("     %s: %s" % (r.name, case_what), flush=True)
    print("       bounds: %s" % BOUNDS.describe(case_what and _case(r.name)), flush=True)
    print("       ping p50 %.1f p99 %.1f max %s%.1f ms (%d pings); RSS before %.1f, peak %.1f, "
          "after %.1f MiB; loop lag max %s ms, loop turn max %s ms (since the daemon started)" %
          (r.p50, r.p99, ">" if r.max_is_lower_bound else "", r.max, r.pings,
           r.rss_before / 1024.0, r.rss_peak / 1024.0, r.rss_after / 1024.0,
           "-" if r.lag_max is None else "%.0f" % r.lag_max,
           "-" if r.turn_max is None else "%.0f" % r.turn_max), flush=True)
    print("       %s" % r.notes, flush=True)


def _case(name):
    for c in hostile.CASES:
        if c.name == name:
            return c
    return None


def attack_test(case):
    def t():
        d = shared()
        ctx = hostile.Ctx(d, SECONDS, LINE_TIMEOUT_S if NEW else None, SAN, NEW)
        r = hostile.run_case(d, case, ctx, BOUNDS)
        report(case.what, r)
        if r.violations:
            fail("%s: %s" % (case.name, "; ".join(r.violations)))
    return t


def test_sighup():
    # Its own daemon: the good config changes limits.max_batch.
    cfg = hostile.sim_config(new_keys=NEW, line_timeout_s=LINE_TIMEOUT_S)
    with Daemon(cfg) as d, d.client() as c:
        hostile.wait_ready(d, c)
        ctx = hostile.Ctx(d, SECONDS, None, SAN, NEW)
        r = hostile.sighup_case(d, d.config_path, cfg, BOUNDS, ctx)
        report("SIGHUP with an invalid file (refused, old config kept), then one with "
               "limits.max_batch 50 (applied)", r)
        if r.violations:
            fail("sighup: %s" % "; ".join(r.violations))


def drop_shared(show_log):
    d = _shared.pop("d", None)
    if d is None:
        return
    if show_log:
        sys.stderr.write("---- daemon log (last 3000 characters) ----\n" + d.log()[-3000:])
    try:
        d.stop(timeout=10)
    except AssertionError as e:
        sys.stderr.write("%s\n" % e)


def test_shutdown():
    # The shared daemon took every attack: SIGTERM, exit 0, no sanitizer report.
    d = _shared.pop("d", None)
    if d is not None:
        d.__exit__(None, None, None)


def main():
    print("wavemeterd %s%s; %s" % (BIN, " (sanitizer build)" if SAN else "",
                                   "limits.line_timeout_s %d s" % LINE_TIMEOUT_S if NEW else
                                   "this binary refuses limits.line_timeout_s: run without it"),
          flush=True)
    print("bounds: %s" % BOUNDS.describe(), flush=True)
    suite = [(c.name, attack_test(c)) for c in hostile.CASES]
    suite += [("sighup", test_sighup), ("shutdown", test_shutdown)]
    only = sys.argv[1:]
    # Every case runs, each failure is reported, and a case that failed
    # takes the shared daemon with it (the next case starts a fresh one).
    failed = []
    t_all = time.monotonic()
    for name, fn in suite:
        if only and name not in only and name != "shutdown":
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:
            print("FAIL %s (%.2f s): %s" % (name, time.monotonic() - t0, e), flush=True)
            failed.append(name)
            drop_shared(show_log=True)
            continue
        print("ok   %s (%.2f s)" % (name, time.monotonic() - t0), flush=True)
    print("total %.1f s; %s" % (time.monotonic() - t_all,
                                "failed: " + " ".join(failed) if failed else "all passed"),
          flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
