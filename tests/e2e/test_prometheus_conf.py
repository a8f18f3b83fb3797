"""conf/prometheus/ against the real daemon: every metric, label and label
value that the alert rules and the Grafana dashboard use is one the daemon's
/metrics serves, so a renamed metric or state cannot leave an alert that
never fires. Also: the dashboard is well-formed (unique panel ids, panels
within Grafana's 24 columns and not overlapping) and each of its queries is
valid PromQL (promtool parses them as recording rules).

The rules' own logic is unit-tested by promtool (ctest prometheus_rules_test).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import wmd

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CONF = os.path.join(SRC, "conf", "prometheus")
PROMTOOL = os.environ.get("PROMTOOL", "promtool")
# Labels Prometheus adds at the scrape, not the daemon.
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, as a query is sent: any value, and a rate window.
GRAFANA_VARS = [("$__rate_interval", "1m"), ("$instance", ".*"), ("$laser", ".*"),
                ("$job", ".*")]


def scrape(d):
    m = wmd.wait_for(lambda: re.search(r"http: serving http://[^ /]*:(\d+)/", d.log()), 10,
                     "the http listening line in the log")
    url = "http://127.0.0.1:%s/metrics" % m.group(1)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def parse_exposition(text):
    """{metric name: [ {label: value} per series ]} from the text format."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s', line)
        if not m:
            wmd.fail("not a sample line in /metrics: %r" % line)
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        series.setdefault(m.group(1), []).append(labels)
    return series


def selectors(expr):
    """(metric, [(label, op, value)]) for each metric named in a PromQL expr."""
    out = []
    for m in re.finditer(r'\b(wavemeterd_[a-z0-9_]+)\s*(\{([^}]*)\})?', expr):
        matchers = re.findall(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(3) or "")
        out.append((m.group(1), matchers))
    return out


def grouping_labels(expr):
    labels = set()
    for m in re.finditer(r'\b(?:by|without|on|ignoring)\s*\(([^)]*)\)', expr):
        labels.update(x.strip() for x in m.group(1).split(",") if x.strip())
    return labels


def check_expr(where, expr, have, errs):
    names = selectors(expr)
    if not names and "up{" not in expr:
        errs.append("%s: uses no wavemeterd metric: %s" % (where, expr))
    for metric, matchers in names:
        if metric not in have:
            errs.append("%s: %s is not in /metrics" % (where, metric))
            continue
        for label, op, value in matchers:
            if label in TARGET_LABELS:
                continue
            if not any(label in s for s in have[metric]):
                errs.append("%s: %s has no label %s" % (where, metric, label))
                continue
            if op == "=" and "$" not in value:
                wanted = [value]
            elif op == "=~" and "$" not in value and re.fullmatch(r"[a-z_|]+", value):
                wanted = value.split("|")
            else:
                continue
            for v in wanted:
                if not any(s.get(label) == v for s in have[metric]):
                    errs.append("%s: no series %s{%s=%r} in /metrics (it has %s)" %
                                (where, metric, label, v,
                                 sorted({s.get(label) for s in have[metric]})))
    used = {lab for metric, _ in names if metric in have for s in have[metric] for lab in s}
    for label in grouping_labels(expr) - TARGET_LABELS:
        if names and label not in used:
            errs.append("%s: groups by %s, which its metrics do not have" % (where, label))


def rules_exprs():
    """(alert name, expr) of conf/prometheus/wavemeterd-rules.yml, read without
    a YAML library: each rule's expr is a one-liner or a >- block."""
    out, name, lines = [], None, open(os.path.join(CONF, "wavemeterd-rules.yml")).read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"\s*- alert: (\w+)", lines[i])
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr: (.*)", lines[i])
        if m:
            if m.group(2).strip() == ">-":
                body, ind = [], len(m.group(1))
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > ind):
                    body.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(body)))
                continue
            out.append((name, m.group(2)))
        i += 1
    return out


def dashboard_panels():
    with open(os.path.join(CONF, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    panels = []
    for p in dash["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    return dash, panels


def test_rules_use_what_the_daemon_serves(have):
    errs = []
    exprs = rules_exprs()
    if len(exprs) < 4:
        wmd.fail("found only %d rules: %r" % (len(exprs), exprs))
    for name, expr in exprs:
        check_expr("rule %s" % name, expr, have, errs)
    if errs:
        wmd.fail("\n".join(errs))


def test_dashboard(have):
    dash, panels = dashboard_panels()
    errs = []
    ids, cells = set(), {}
    for p in panels:
        if p["id"] in ids:
            errs.append("panel id %s twice" % p["id"])
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            errs.append("panel %r outside the 24 columns: %r" % (p["title"], g))
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    errs.append("panels %r and %r overlap" % (cells[(x, y)], p["title"]))
                    break
                cells[(x, y)] = p["title"]
    rules = []
    for p in panels:
        for t in p.get("targets", []):
            expr = t["expr"]
            check_expr("panel %r" % p["title"], expr, have, errs)
            for var, val in GRAFANA_VARS:
                expr = expr.replace(var, val)
            if "$" in expr:
                errs.append("panel %r: unknown variable in %s" % (p["title"], t["expr"]))
            rules.append(expr)
    for v in dash["templating"]["list"]:
        q = v.get("definition", "")
        for metric, _ in selectors(q):
            if metric not in have:
                errs.append("variable %s: %s is not in /metrics" % (v["name"], metric))
    if errs:
        wmd.fail("\n".join(errs))
    # Every query parses: promtool checks them as recording rules.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, expr in enumerate(rules):
            f.write("      - record: dashboard_query_%d\n        expr: %s\n" % (i, json.dumps(expr)))
    try:
        p = subprocess.run([PROMTOOL, "check", "rules", f.name], capture_output=True, timeout=60)
        if p.returncode != 0:
            wmd.fail("a dashboard query is not valid PromQL:\n%s%s" %
                     (p.stdout.decode(), p.stderr.decode()))
    finally:
        os.unlink(f.name)


def main():
    # A laser without an actuator and one disabled, so /metrics shows every
    # kind of laser the rules must cope with.
    cfg = wmd.sim_config([{}, {"actuator": {"driver": "none"}}, {"enabled": False}])
    cfg["http"] = {"listen": "127.0.0.1:0"}
    with wmd.Daemon(cfg) as d:
        # Two readings of each enabled laser first, so every series exists
        # (a revisit period needs two).
        wmd.wait_for(lambda: all(r["seq"] >= 2 for r in d.result("read")[:2]), 15,
                     "two readings of each enabled laser")
        have = parse_exposition(scrape(d))
    wmd.run_tests([
        ("rules_use_what_the_daemon_serves", lambda: test_rules_use_what_the_daemon_serves(have)),
        ("dashboard", lambda: test_dashboard(have)),
    ])


if __name__ == "__main__":
    sys.exit(main())
