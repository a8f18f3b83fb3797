#!/usr/bin/env python3
"""Every example in README.md and docs/*.md, run against the real daemon, so
the manuals stay true. The convention (docs/PROTOCOL.md, "Examples in these
manuals", says the same for writers):

```console blocks are run. A line "$ COMMAND" (continued by a trailing "\")
  is run with bash -o pipefail; the lines up to the next "$ " are its
  documented output. Before running, "127.0.0.1 7420" and "127.0.0.1:7420"
  become the test daemon's address, "build/wavemeterd" and
  "build/wavemeterctl" the binaries under test (bare "wavemeterd" and
  "wavemeterctl" find them on PATH), "/var/lib/wavemeterd" the test daemon's
  state directory; $WAVEMETERD_ADDR and $STATE_DIRECTORY point at the
  daemon too. Commands run in a scratch directory with conf/ and docs/ at
  hand (and no build/state). The command must exit 0.
  - No documented output: nothing printed may be a JSON-RPC error.
  - Documented output that is JSON (one or more JSON texts, over one line or
    several): the output must be as many JSON texts, each of the same SHAPE:
    the same members (a "..." member allows more), arrays of the same length
    (a trailing "..." allows more elements, each shaped like the last one
    shown; [...] is any array), the same JSON types. Values are compared by
    type only (frequencies, times, ages, seq and states vary), except the
    members "jsonrpc", "id", "code" (error codes), "name", "laser",
    "channel", "version" and "protocol", and a "result" that is a string or
    boolean ("pong", true), which must be equal.
  - Other documented output: the same lines, exactly.
  Each file gets one daemon on the built-in simulator (no config, as
  scripts/run starts it, on a free port), started before its first example
  and used in document order, so a laser locked by one example is locked in
  the next.
```json blocks: one that starts with "{" is a whole config file and must
  pass `wavemeterd --check-config`; one that starts with '"' is an excerpt
  ("actuator": {...}) and must be JSON once wrapped in {}.
Directives, an HTML comment on the last non-blank line before a block:
  <!-- doc-test: config {JSON} -->  this block runs against its own daemon
                                     started with that config file;
  <!-- doc-test: skip REASON -->     not run (needs hardware, root, ...);
  <!-- doc-test: fragment -->        a json block that starts with "{" but is
                                     not a whole file.
Every "nc" in any block must use only the flags of Debian 12's
netcat-openbsd, and -N when its input is piped (without it nc never exits).
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

from wmd import BIN as BIN_ARG, CTL as CTL_ARG, Daemon, fail, run_tests, wait_for

BIN, CTL = os.path.abspath(BIN_ARG), os.path.abspath(CTL_ARG)

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCS = ["README.md"] + sorted("docs/" + f for f in os.listdir(os.path.join(SRC, "docs"))
                              if f.endswith(".md"))
ELLIPSIS = "\u2026doc-test-ellipsis\u2026"
# netcat-openbsd 1.219 (Debian 12), from its usage line.
NC_FLAGS = set("46CDdFhklNnrStUuvZz" "IiMmOPpqsTVWwXx")
NC_FLAGS_WITH_ARG = set("IiMmOPpqsTVWwXx")
# Members whose values do not vary from run to run: the envelope, error
# codes, which laser and channel an answer is about, the versions.
EXACT_MEMBERS = ("jsonrpc", "id", "code", "name", "laser", "channel", "version", "protocol")

# ---- reading the manuals -------------------------------------------------


class Block:
    def __init__(self, path, line, lang, text, directive):
        self.path, self.line, self.lang, self.text, self.directive = path, line, lang, text, directive

    def where(self):
        return "%s:%d" % (self.path, self.line)


def blocks(path):
    """The fenced blocks of one file, with the directive before each."""
    out = []
    lines = open(os.path.join(SRC, path), encoding="utf-8").read().split("\n")
    i, last = 0, ""
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            if lines[i].strip():
                last = lines[i].strip()
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i + 1
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            fail("%s:%d: fenced block never closed" % (path, start))
        d = re.match(r"^<!--\s*doc-test:\s*(.*?)\s*-->$", last)
        out.append(Block(path, start, lang, "\n".join(body), d.group(1) if d else None))
        i += 1
        last = ""
    return out


# ---- shapes ----------------------------------------------------------------


def expand_ellipses(text):
    """Turn the "..." of a documented answer into markers JSON can carry:
    a member ELLIPSIS in an object, an element ELLIPSIS in an array."""
    out, stack, i, in_str = [], [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1:i + 2])
                i += 2
                continue
            in_str = c != '"'
            i += 1
            continue
        if text.startswith("...", i) and stack:
            out.append('"%s":null' % ELLIPSIS if stack[-1] == "{" else '"%s"' % ELLIPSIS)
            i += 3
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]" and stack:
            stack.pop()
        out.append(c)
        i += 1
    return "".join(out)


def json_texts(text):
    """All JSON texts in text, in order; ValueError if it is anything else."""
    dec, vals, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return vals
        v, i = dec.raw_decode(text, i)
        vals.append(v)


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def short(v):
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."


def compare(doc, act, path, errs, exact=True):
    """Append to errs how act differs in shape from the documented doc; with
    exact, the EXACT_MEMBERS must also be equal (not in the elements a
    trailing "..." stands for: they are other lasers)."""
    if doc == ELLIPSIS:
        return
    if kind(doc) != kind(act):
        errs.append("%s: documented %s %s, the daemon gave %s %s" %
                    (path, kind(doc), short(doc), kind(act), short(act)))
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == ELLIPSIS:
                continue
            if k not in act:
                errs.append("%s: documented member %r is not in the answer" % (path, k))
            elif exact and k in EXACT_MEMBERS and v != act[k]:
                errs.append("%s.%s: documented %s, the daemon gave %s" % (path, k, short(v), short(act[k])))
            else:
                compare(v, act[k], "%s.%s" % (path, k), errs, exact)
        if ELLIPSIS not in doc:
            for k in act:
                if k not in doc:
                    errs.append("%s: member %r of the answer is not documented (add it, or "
                                "\"...\" to say there is more)" % (path, k))
        if exact and "jsonrpc" in doc and kind(doc.get("result")) in ("string", "boolean") and \
                doc.get("result") != act.get("result"):
            errs.append("%s.result: documented %s, the daemon gave %s" %
                        (path, short(doc.get("result")), short(act.get("result"))))
    elif isinstance(doc, list):
        open_ = bool(doc) and doc[-1] == ELLIPSIS
        shown = doc[:-1] if open_ else doc
        if len(act) < len(shown) or (not open_ and len(act) != len(shown)):
            errs.append("%s: documented %s%d elements, the daemon gave %d" %
                        (path, "at least " if open_ else "", len(shown), len(act)))
        for i, a in enumerate(act):
            if i < len(shown):
                compare(shown[i], a, "%s[%d]" % (path, i), errs, exact)
            elif open_ and shown:
                compare(shown[-1], a, "%s[%d]" % (path, i), errs, False)


def shape_errors(documented, output):
    """How output differs from the documented output of one command."""
    try:
        docs = json_texts(expand_ellipses(documented))
    except ValueError:
        docs = None
    if docs is None or not docs:
        want = [l.rstrip() for l in documented.strip().split("\n")]
        got = [l.rstrip() for l in output.strip().split("\n")]
        return [] if want == got else ["documented output %r, got %r" % (want, got)]
    try:
        acts = json_texts(output)
    except ValueError as e:
        return ["the output is not JSON (%s): %r" % (e, output[:300])]
    if len(acts) != len(docs):
        return ["documented %d JSON texts, got %d: %r" % (len(docs), len(acts), output[:300])]
    errs = []
    for i, (d, a) in enumerate(zip(docs, acts)):
        compare(d, a, "answer %d" % (i + 1) if len(docs) > 1 else "answer", errs)
    return errs


def rpc_errors(output):
    """The JSON-RPC errors among what a command printed (none if not JSON)."""
    try:
        vals = json_texts(output)
    except ValueError:
        return []
    errs = []
    for v in vals:
        for a in v if isinstance(v, list) else [v]:
            if isinstance(a, dict) and "error" in a:
                errs.append(a["error"])
    return errs


# ---- running the examples --------------------------------------------------


def console_commands(b):
    """[(line, command, documented output)] of a console block."""
    cmds, lines, i = [], b.text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if line.strip():
                fail("%s: console block: output %r before any \"$ \" command" % (b.where(), line))
            i += 1
            continue
        cmd, at = line[2:], b.line + 1 + i
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd += "\n" + lines[i]
        out = []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        cmds.append((at, cmd, "\n".join(out).strip()))
    if not cmds:
        fail("%s: console block without a \"$ \" command" % b.where())
    return cmds


def start_daemon(config=None):
    if config is not None:
        config.setdefault("listen", "127.0.0.1:0")
    d = Daemon(config)
    try:
        d.start()
        # Two readings of every channel: status then has revisit times, not nulls.
        wait_for(lambda: all(r["seq"] >= 2 for r in d.result("read")), 10,
                 "two readings of every channel")
    except BaseException as e:
        d.__exit__(type(e), e, None)
        raise
    return d


def run_command(cmd, d, workdir):
    run = re.sub(r"127\.0\.0\.1([ :])7420\b", lambda m: "127.0.0.1%s%d" % (m.group(1), d.port), cmd)
    run = re.sub(r"(?<![\w./-])build/wavemeterctl\b", CTL, run)
    run = re.sub(r"(?<![\w./-])build/wavemeterd\b", BIN, run)
    run = run.replace("/var/lib/wavemeterd", d.state_dir)
    env = dict(os.environ)
    env["WAVEMETERD_ADDR"] = "127.0.0.1:%d" % d.port
    env["PATH"] = os.pathsep.join([os.path.dirname(CTL), os.path.dirname(BIN), env.get("PATH", "")])
    env["STATE_DIRECTORY"] = d.state_dir
    env.pop("WAVEMETERD_TOKEN_FILE", None)
    cookie = os.path.join(d.state_dir, "cookie")
    if os.path.exists(cookie):
        env["WAVEMETERD_TOKEN_FILE"] = cookie
    try:
        p = subprocess.run(["bash", "-o", "pipefail", "-c", run], cwd=workdir, env=env,
                           capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None, "", "timed out after 30 s (an nc without -N waits for ever)"
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def check_console(b, d, workdir, errs):
    for at, cmd, documented in console_commands(b):
        rc, out, err = run_command(cmd, d, workdir)
        problems = []
        if rc != 0:
            problems.append("exit status %s; it printed: %s" % (rc, (out + err).strip()[:500]))
        elif not documented:
            problems += ["answered an error, and the manual shows no answer: %s" % short(e)
                         for e in rpc_errors(out)]
        else:
            problems += shape_errors(documented, out)
        for p in problems:
            errs.append("%s:%d: $ %s\n    %s" % (b.path, at, cmd, p))


def check_json(b, tmp, errs):
    text = b.text.strip()
    if text.startswith("{") and b.directive != "fragment":
        path = os.path.join(tmp, "example.json")
        with open(path, "w") as f:
            f.write(b.text + "\n")
        p = subprocess.run([BIN, "--check-config", "-c", path], capture_output=True, timeout=30)
        if p.returncode != 0 or b": ok (" not in p.stdout:
            errs.append("%s: config example fails --check-config: %s" %
                        (b.where(), (p.stderr or p.stdout).decode().strip().replace(path, "FILE")))
    else:
        try:
            json.loads("{" + text + "}" if text.startswith('"') else text)
        except ValueError as e:
            errs.append("%s: json excerpt is not JSON inside {}: %s" % (b.where(), e))


def check_file(path):
    errs, daemons = [], {}
    tmp = tempfile.mkdtemp(prefix="wmd-docs-")
    # The commands run where conf/ and docs/ are at hand, but no build/state
    # (wavemeterctl would take a cookie from there).
    workdir = os.path.join(tmp, "work")
    os.makedirs(workdir)
    for name in ("conf", "docs"):
        os.symlink(os.path.join(SRC, name), os.path.join(workdir, name))
    try:
        for b in blocks(path):
            if b.directive and b.directive.startswith("skip"):
                if not b.directive[4:].strip():
                    errs.append("%s: \"doc-test: skip\" needs a reason" % b.where())
                continue
            if b.lang == "json":
                check_json(b, tmp, errs)
            elif b.lang == "console":
                if b.directive and b.directive.startswith("config "):
                    d = start_daemon(json.loads(b.directive[7:]))
                    try:
                        check_console(b, d, workdir, errs)
                    finally:
                        d.__exit__(None, None, None)
                else:
                    if "file" not in daemons:
                        daemons["file"] = start_daemon()
                    check_console(b, daemons["file"], workdir, errs)
            elif b.directive and b.directive not in ("fragment",):
                errs.append("%s: unknown directive %r" % (b.where(), b.directive))
    finally:
        for d in daemons.values():
            d.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    if errs:
        fail("%d example(s) of %s disagree with the daemon:\n%s" % (len(errs), path, "\n".join(errs)))


# ---- netcat flags ----------------------------------------------------------


def nc_problems(line):
    """What is wrong with the nc invocations in one command line."""
    out = []
    for m in re.finditer(r"(^|[|;&(]\s*|\$\s+)nc\s+([^|;&)]*)", line):
        piped = "|" in line[:m.start(2)]
        words, flags, i = m.group(2).split(), set(), 0
        while i < len(words) and words[i].startswith("-"):
            letters = words[i][1:]
            for k, ch in enumerate(letters):
                if ch not in NC_FLAGS:
                    out.append("nc has no flag -%s (Debian 12's netcat-openbsd)" % ch)
                flags.add(ch)
                if ch in NC_FLAGS_WITH_ARG:
                    if k == len(letters) - 1:
                        i += 1
                    break
            i += 1
        if piped and "N" not in flags:
            out.append("nc reading a pipe needs -N, or it never exits")
    return out


def test_nc_flags():
    errs = []
    for path in DOCS:
        for b in blocks(path):
            for n, line in enumerate(b.text.split("\n")):
                for p in nc_problems(line):
                    errs.append("%s:%d: %s: %s" % (path, b.line + 1 + n, p, line.strip()))
    if errs:
        fail("\n".join(errs))


# ---- the comparison itself, so it cannot quietly stop comparing ----------

ANSWER = '{"jsonrpc":"2.0","id":1,"result":{"a":1.5,"b":"x","c":[1,2,3],"d":null}}'
SHAPES = [
    # label, documented, daemon's output, differences expected
    ("same shape, other values", '{"jsonrpc":"2.0","id":1,"result":{"a":7,"b":"y","c":[4,5,6],"d":null}}',
     ANSWER, False),
    ("member missing from the manual", '{"jsonrpc":"2.0","id":1,"result":{"a":1,"b":"x","c":[1,2,3]}}',
     ANSWER, True),
    ("... allows more members", '{"jsonrpc":"2.0","id":1,"result":{"a":1,...}}', ANSWER, False),
    ("member the daemon lacks", '{"jsonrpc":"2.0","id":1,"result":{"a":1,"z":2,...}}', ANSWER, True),
    ("number documented as string", '{"jsonrpc":"2.0","id":1,"result":{"a":"1.5",...}}', ANSWER, True),
    ("null documented as number", '{"jsonrpc":"2.0","id":1,"result":{"d":0,...}}', ANSWER, True),
    ("array length", '{"jsonrpc":"2.0","id":1,"result":{"c":[1,2],...}}', ANSWER, True),
    ("... in an array", '{"jsonrpc":"2.0","id":1,"result":{"c":[1,...],...}}', ANSWER, False),
    ("... in an array, other lasers", '[{"laser":"399","f":1},...]', '[{"laser":"399","f":2},{"laser":"397","f":3}]',
     False),
    ("... in an array, element shape", '{"jsonrpc":"2.0","id":1,"result":{"c":["1",...],...}}', ANSWER, True),
    ("other id", '{"jsonrpc":"2.0","id":2,"result":{...}}', ANSWER, True),
    ("other laser", '{"laser":"397","frequency_thz":1.0}', '{"laser":"399","frequency_thz":2.0}', True),
    ("other protocol version", '{"protocol":{"major":1,"minor":0}}', '{"protocol":{"major":1,"minor":1}}',
     True),
    ("error code", '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"m"}}',
     '{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"m"}}', True),
    ("result instead of error", '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"m"}}',
     ANSWER, True),
    ("scalar result", '{"jsonrpc":"2.0","id":1,"result":"pong"}', '{"jsonrpc":"2.0","id":1,"result":"pang"}',
     True),
    ("one answer documented, two printed", ANSWER, ANSWER + "\n" + ANSWER, True),
    ("indented output", '{"a": 1, "b": [true]}', '{\n  "a": 2,\n  "b": [\n    false\n  ]\n}', False),
    ("\"...\" inside a string is text", '{"s":"a...b"}', '{"s":"x"}', False),
    ("text output", "conf/x.json: ok (4 lasers, driver sim)", "conf/x.json: ok (1 lasers, driver sim)", True),
]


def test_comparison():
    for label, documented, output, differ in SHAPES:
        errs = shape_errors(documented, output)
        if bool(errs) != differ:
            fail("%s: %s" % (label, errs or "no difference found"))
    for line, bad in (("echo x | nc -N 127.0.0.1 7420", False), ("echo x | nc 127.0.0.1 7420", True),
                      ("echo x | nc -q 1 127.0.0.1 7420", True), ("echo x | nc -c 127.0.0.1 7420", True),
                      ("printf '%s\\n' a b | nc -N -w 5 127.0.0.1 7420", False)):
        if bool(nc_problems(line)) != bad:
            fail("nc check of %r: %s" % (line, nc_problems(line)))


run_tests([("comparison", test_comparison), ("nc_flags", test_nc_flags)] +
          [(path, lambda path=path: check_file(path)) for path in DOCS])
