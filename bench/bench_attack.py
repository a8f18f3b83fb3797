#!/usr/bin/env python3
"""bench_attack: what hostile clients do to the daemon, as a Markdown table.

For each attack of tests/e2e/hostile.py (the same code test_hostile.py runs,
here with longer attacks), on a fresh daemon: 4 simulated lasers, all
locked, full history rings (1000 readings each, ~160 KB a `history` answer),
default limits. A well-behaved client in its own process pings every 20 ms
from 127.0.0.1, connected before the attack; the attackers come from
127.0.0.2 and up. Reported per attack: the well-behaved client's ping
round trip p50/p99/max over the attack and its aftermath, the daemon's
VmRSS before, at its peak and after (once the attackers are gone and RSS
came back, or 5 s), and the longest loop turn (`status` loop_lag_ms.max:
how late a 100 ms timer fired), with what happened and which of
test_hostile.py's bounds broke. A ping still unanswered when the case
ended is counted at its age so far (max shown as ">N").

usage: bench/bench_attack.py [--binary PATH] [--old] [--seconds S]
                             [--case-timeout S] [CASE...]

--old: the binary predates limits.line_timeout_s (the daemon refuses
unknown keys): run without it. Without --old the binary is asked
(--check-config) and --old is implied when it refuses the key.
Results: docs/BENCHMARKS.md.
"""
import argparse
import os
import platform
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import hostile  # noqa: E402  (path set above)
import wmd  # noqa: E402

LINE_TIMEOUT_S = 3


def attack_idle(ctx):
    t_end = time.monotonic() + ctx.seconds
    wmd.wait_for(lambda: not ctx.alive() or time.monotonic() >= t_end, ctx.seconds + 5,
                 "the idle window")
    return "no attack: the pinger alone", []


def start_daemon(cfg, timeout):
    d = wmd.Daemon(cfg, log_level="info")
    try:
        d.start()
        with d.client() as c:
            hostile.wait_ready(d, c, timeout)
    except BaseException:
        finish(d)
        raise
    return d


def finish(d):
    try:
        d.stop(timeout=10)
    except AssertionError:
        pass
    if d.proc is not None and d.proc.poll() is None:
        d.kill9()
    shutil.rmtree(d.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.environ.get(
        "WAVEMETERD", os.path.normpath(os.path.join(HERE, "..", "build", "wavemeterd"))))
    ap.add_argument("--old", action="store_true",
                    help="the binary does not know limits.line_timeout_s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    ap.add_argument("--case-timeout", type=float, default=60.0,
                    help="longest wait for the daemon to answer after an attack")
    ap.add_argument("cases", nargs="*", help="run only these (default: all)")
    args = ap.parse_args()

    # Killed (SIGTERM, a timeout): stop the daemon of the case on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wmd.BIN = os.path.abspath(args.binary)
    hostile.raise_nofile()
    san = hostile.sanitized(wmd.BIN)
    new = not args.old and hostile.knows_new_keys(wmd.BIN)
    bounds = hostile.Bounds(san)
    cases = [hostile.Case("idle", "no attack", attack_idle)] + hostile.CASES
    names = [c.name for c in cases] + ["sighup"]
    for n in args.cases:
        if n not in names:
            ap.error("unknown case %r (cases: %s)" % (n, " ".join(names)))
    todo = [c for c in cases if not args.cases or c.name in args.cases]

    print("wavemeterd %s%s, %s; attacks of %g s; %s; %s, %d CPUs, Python %s" % (
        wmd.BIN, " (sanitizer build)" if san else "",
        "limits.line_timeout_s %d" % LINE_TIMEOUT_S if new else "old config keys only",
        args.seconds, time.strftime("%Y-%m-%d %H:%M"), platform.platform(terse=True),
        os.cpu_count(), platform.python_version()), flush=True)
    print("bounds checked (test_hostile.py): %s" % bounds.describe(), flush=True)
    print("", flush=True)
    rows = []
    t_all = time.monotonic()
    for case in todo:
        cfg = hostile.sim_config(new_keys=new, line_timeout_s=LINE_TIMEOUT_S)
        t0 = time.monotonic()
        try:
            d = start_daemon(cfg, 60)
        except AssertionError as e:
            print("%s: daemon did not start: %s" % (case.name, e), file=sys.stderr)
            continue
        try:
            ctx = hostile.Ctx(d, args.seconds, LINE_TIMEOUT_S if new else None, san, new)
            r = hostile.run_case(d, case, ctx, bounds, settle_s=5.0,
                                 answer_timeout=args.case_timeout)
        finally:
            finish(d)
        rows.append(r.row())
        print("%s done in %.0f s" % (case.name, time.monotonic() - t0), file=sys.stderr,
              flush=True)
    if not args.cases or "sighup" in args.cases:
        cfg = hostile.sim_config(new_keys=new, line_timeout_s=LINE_TIMEOUT_S)
        d = start_daemon(cfg, 60)
        try:
            ctx = hostile.Ctx(d, args.seconds, None, san, new)
            r = hostile.sighup_case(d, d.config_path, cfg, bounds, ctx,
                                    answer_timeout=args.case_timeout)
        finally:
            finish(d)
        rows.append(r.row())
    print(hostile.TABLE_HEAD)
    for row in rows:
        print(row)
    print("\n(%.0f s in all)" % (time.monotonic() - t_all), flush=True)


if __name__ == "__main__":
    main()
