"""The live view (www/) in a real browser: headless Chromium driven by
Selenium against the real daemon's HTTP server, while a TCP client checks
what the daemon itself says.

What a user relies on: the page shows every laser and its values move as
readings arrive; Lock, Unlock and a setpoint in nm from the page reach the
daemon; a session that may not write has its controls disabled and a forced
attempt is refused by the daemon (write_from, and require_token before
auth); the page survives a daemon restart without a reload.

Runs with the system python3 (Debian's python3-selenium). Every wait is a
WebDriverWait or wmd.wait_for with a deadline. Leaves a screenshot,
web-view.png, in the working directory (the build's tests/ directory).
"""
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wmd  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WWW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "www")
DYGRAPHS = "/usr/share/javascript/dygraphs"
C_NM_THZ = 299792.458
# Deadlines: generous for the ASan build on a loaded 2-core CI machine; a
# pass takes a fraction of them.
WAIT_S = 30 if os.environ.get("WMD_SANITIZED") else 15
LASERS = [{"name": "399"}, {"name": "397"}, {"name": "866", "actuator": {"driver": "none"}}]


def web_config(http_listen="127.0.0.1:0", listen="127.0.0.1:0", **top):
    cfg = wmd.sim_config(LASERS, **top)
    cfg["listen"] = listen
    cfg["http"] = {"listen": http_listen, "www_dir": os.path.realpath(WWW),
                   "dygraphs_dir": DYGRAPHS}
    return cfg


def http_port(d):
    """The port the daemon's HTTP server bound (its log line says)."""
    m = wmd.wait_for(lambda: re.search(r"http: serving http://[^ /]*:(\d+)/", d.log()), WAIT_S,
                     "the http listening line in the log")
    return int(m.group(1))


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1500,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def until(drv, cond, what, timeout=WAIT_S):
    """Wait for cond(drv) to be true; fail naming what, with the page's state."""
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.05).until(cond)
    except TimeoutException:
        msgs = " | ".join(e.text for e in drv.find_elements(By.CSS_SELECTOR, "#messages li"))
        wmd.fail("timed out after %s s waiting for %s (conn: %r, access: %r, messages: %r)" %
                 (timeout, what, drv.find_element(By.ID, "conn").text,
                  drv.find_element(By.ID, "access").text, msgs))


def row(drv, laser):
    return drv.find_element(By.CSS_SELECTOR, 'tr.laser[data-laser="%s"]' % laser)


def cell(drv, laser, cls):
    return row(drv, laser).find_element(By.CLASS_NAME, cls)


def seqs(drv):
    """Each laser's last reading number as the page has it (data-seq)."""
    return {r.get_attribute("data-laser"): int(r.get_attribute("data-seq") or 0)
            for r in drv.find_elements(By.CSS_SELECTOR, "tr.laser")}


def live(drv):
    return drv.find_element(By.ID, "conn").get_attribute("data-state") == "open"


def open_page(drv, port):
    drv.get("http://127.0.0.1:%d/" % port)
    until(drv, live, "the page to connect")
    until(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.laser")) == len(LASERS),
          "a row per laser")


def controls(drv, laser):
    r = row(drv, laser)
    return [r.find_element(By.CLASS_NAME, c) for c in ("setpoint", "unit", "set", "lock", "unlock")]


def force_click(drv, laser, cls):
    """What a user with the browser's developer tools can do: enable the
    button the page disabled and click it. Only the daemon can refuse."""
    el = cell(drv, laser, cls)
    drv.execute_script("arguments[0].disabled = false; arguments[0].hidden = false;"
                       "arguments[0].click();", el)


def check_no_js_errors(drv):
    bad = [e for e in drv.get_log("browser")
           if e["level"] == "SEVERE" and "favicon" not in e["message"]
           and "/ws" not in e["message"]]  # a refused reconnect while down is expected
    if bad:
        wmd.fail("errors in the browser's console: %r" % bad)


def test_live_view_and_controls(drv):
    state = tempfile.mkdtemp(prefix="wmd-web-state-")
    try:
        with wmd.Daemon(web_config(), state_dir=state) as d:
            port = http_port(d)
            open_page(drv, port)
            daemon_lasers = d.result("lasers")
            # Every laser, with its name, channel and live values.
            for l in daemon_lasers:
                name = l["name"]
                wmd.wait_for(lambda: cell(drv, name, "freq").text not in ("", "–"), WAIT_S,
                             "a frequency for %s" % name)
                if cell(drv, name, "channel").text != "ch %d" % l["channel"]:
                    wmd.fail("laser %s shows %r" % (name, cell(drv, name, "channel").text))
                f_page = float(cell(drv, name, "freq").text)
                wl_page = float(cell(drv, name, "wl").text)
                f_daemon = d.result("read", {"laser": name})["frequency_thz"]
                # The display rounds to 100 kHz; the simulator's noise is 0.2 MHz.
                if abs(f_page - f_daemon) > 5e-6:
                    wmd.fail("%s: page %.7f THz, daemon %.9f THz" % (name, f_page, f_daemon))
                if abs(wl_page - C_NM_THZ / f_page) > 1e-5:
                    wmd.fail("%s: wavelength %.6f nm is not c/f" % (name, wl_page))
                if cell(drv, name, "status").text != "ok":
                    wmd.fail("%s: reading status %r" % (name, cell(drv, name, "status").text))
            # Output and its rails as laser.get has them; monitor only says so.
            if cell(drv, "399", "rails").text != "-10.0 … 10.0 V":
                wmd.fail("rails shown: %r" % cell(drv, "399", "rails").text)
            if cell(drv, "866", "rails").text != "monitor only":
                wmd.fail("866 (no actuator) shows rails %r" % cell(drv, "866", "rails").text)
            # Values change as readings arrive: every row's reading number
            # moves, and the plots draw.
            before = seqs(drv)
            until(drv, lambda dd: all(s > before[n] for n, s in seqs(dd).items()),
                  "every laser's reading to change (from %r)" % before)
            until(drv, lambda dd: len(dd.find_elements(By.CSS_SELECTOR, ".plot canvas"))
                  >= len(LASERS), "a plot per laser")

            # This browser is on loopback: it may write, and says so.
            until(drv, lambda dd: dd.find_element(By.ID, "access").text == "may write",
                  "the access badge to say 'may write'")
            if not all(c.is_enabled() for c in controls(drv, "399")):
                wmd.fail("controls disabled for a session that may write")

            # Lock from the page: the daemon has it (asked over TCP).
            cell(drv, "399", "lock").click()
            wmd.wait_for(lambda: d.result("laser.get", ["399"])["lock"] is True, WAIT_S,
                         "the daemon to have 399 locked")
            until(drv, lambda dd: cell(dd, "399", "state").text in ("acquiring", "locked"),
                  "the page to show 399 acquiring or locked")
            until(drv, lambda dd: cell(dd, "399", "unlock").is_displayed(),
                  "the Unlock button of 399")
            cell(drv, "397", "lock").click()
            wmd.wait_for(lambda: d.result("laser.get", ["397"])["lock"] is True, WAIT_S,
                         "the daemon to have 397 locked")
            until(drv, lambda dd: cell(dd, "397", "state").text == "locked",
                  "397 locked on the page", timeout=WAIT_S * 2)
            # A laser without an actuator has nothing to lock.
            if cell(drv, "866", "lock").is_enabled():
                wmd.fail("Lock enabled for a monitor-only laser")
            drv.save_screenshot("web-view.png")
            print("screenshot: %s" % os.path.abspath("web-view.png"))
            # The README's picture is this screenshot:
            # WMD_WEB_SCREENSHOT=$PWD/docs/img/web-view.png ctest -R e2e_web
            if os.environ.get("WMD_WEB_SCREENSHOT"):
                drv.save_screenshot(os.environ["WMD_WEB_SCREENSHOT"])

            # A setpoint typed in nm: the daemon converts (vacuum).
            sp = d.result("laser.get", ["399"])["setpoint_thz"] + 100e-6  # +100 MHz
            sel = cell(drv, "399", "unit")
            sel.find_element(By.CSS_SELECTOR, 'option[value="nm"]').click()
            field = cell(drv, "399", "setpoint")
            field.clear()
            field.send_keys("%.9f" % (C_NM_THZ / sp))
            cell(drv, "399", "set").click()
            wmd.wait_for(lambda: abs(d.result("laser.get", ["399"])["setpoint_thz"] - sp) < 1e-9,
                         WAIT_S, "the daemon's setpoint of 399 to be %.9f THz" % sp)
            # The page has the answer too (its controls are off while a write is in
            # flight): only then is the field there to type in again.
            until(drv, lambda dd: "done" in cell(dd, "399", "row-msg").text and
                  cell(dd, "399", "setpoint").is_enabled(), "the page to take the answer")
            # Out of range: the daemon's own words under the row.
            field.clear()
            field.send_keys("500")
            cell(drv, "399", "set").click()
            until(drv, lambda dd: "outside" in cell(dd, "399", "row-msg").text,
                  "the range error under 399's row")
            if "-32602" not in cell(drv, "399", "row-msg").text:
                wmd.fail("error shown without its code: %r" % cell(drv, "399", "row-msg").text)

            # Unlock from the page.
            cell(drv, "399", "unlock").click()
            wmd.wait_for(lambda: d.result("laser.get", ["399"])["lock"] is False, WAIT_S,
                         "the daemon to have 399 unlocked")

            # A daemon restart on the same ports: the page comes back by
            # itself, with no reload (a marker set in the page survives).
            tcp_port = d.port
            drv.execute_script("window.wmdTestMarker = 42;")
            rc = d.stop()
            if rc != 0:
                wmd.fail("wavemeterd exited %s:\n%s" % (rc, d.log()))
            until(drv, lambda dd: not live(dd), "the page to notice the daemon went")
            until(drv, lambda dd: dd.find_element(By.ID, "access").text == "read-only",
                  "the controls to go read-only while disconnected")
            if any(c.is_enabled() for c in controls(drv, "399")):
                wmd.fail("controls enabled while disconnected")
        d2 = wmd.Daemon(web_config("127.0.0.1:%d" % port, "127.0.0.1:%d" % tcp_port),
                        state_dir=state)
        with d2:
            until(drv, live, "the page to reconnect to the restarted daemon")
            after = seqs(drv)
            until(drv, lambda dd: all(s != after[n] for n, s in seqs(dd).items()),
                  "live values after the restart (from %r)" % after)
            if drv.execute_script("return window.wmdTestMarker;") != 42:
                wmd.fail("the page was reloaded")
            # The lock survived in the daemon (its state file) and the page says so.
            until(drv, lambda dd: cell(dd, "397", "unlock").is_displayed() and
                  cell(dd, "397", "unlock").is_enabled(),
                  "397 shown locked after the restart, with Unlock enabled")
            cell(drv, "397", "unlock").click()
            wmd.wait_for(lambda: d2.result("laser.get", ["397"])["lock"] is False, WAIT_S,
                         "the restarted daemon to have 397 unlocked from the page")
            check_no_js_errors(drv)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def expect_read_only(drv, d, why):
    until(drv, lambda dd: dd.find_element(By.ID, "access").text == "read-only",
          "the access badge to say read-only")
    said = drv.find_element(By.ID, "access-why").text
    if why not in said:
        wmd.fail("read-only without saying why (%r not in %r)" % (why, said))
    for name in ("399", "397"):
        if any(c.is_enabled() for c in controls(drv, name)):
            wmd.fail("%s: controls enabled in a read-only session" % name)
    # Forced: the daemon refuses, the page says so, nothing changes.
    force_click(drv, "399", "lock")
    until(drv, lambda dd: "Unauthorized" in cell(dd, "399", "row-msg").text,
          "the daemon's refusal under 399's row")
    if d.result("laser.get", ["399"])["lock"] is not False:
        wmd.fail("a read-only page locked 399")


def test_read_only_address(drv):
    # Writers only from another network: this browser (loopback) may read.
    with wmd.Daemon(web_config(access={"write_from": ["192.0.2.0/24"]})) as d:
        open_page(drv, http_port(d))
        expect_read_only(drv, d, "not in the daemon's access.write_from")
        if drv.find_element(By.ID, "login").is_displayed():
            wmd.fail("a token field offered where a token cannot help")
        # On a phone: one card per laser, nothing to scroll sideways.
        drv.set_window_size(420, 900)
        try:
            until(drv, lambda dd: not dd.find_element(By.CSS_SELECTOR, "#lasers thead")
                  .is_displayed(), "the cards layout on a narrow screen")
            wide = drv.execute_script("return document.documentElement.scrollWidth -"
                                      " document.documentElement.clientWidth;")
            if wide > 0:
                wmd.fail("the page is %d px wider than a phone's screen" % wide)
            if not cell(drv, "399", "freq").is_displayed():
                wmd.fail("no frequency on the phone's card")
        finally:
            drv.set_window_size(1500, 900)
        check_no_js_errors(drv)


def test_token(drv):
    with wmd.Daemon(web_config(access={"require_token": True})) as d:
        open_page(drv, http_port(d))
        expect_read_only(drv, d, "log in")
        until(drv, lambda dd: dd.find_element(By.ID, "login").is_displayed(),
              "the token field")
        # A wrong token: refused in plain words, still read-only.
        drv.find_element(By.ID, "token").send_keys("not-the-token")
        drv.find_element(By.ID, "login-btn").click()
        until(drv, lambda dd: any("login refused" in e.text
                                  for e in dd.find_elements(By.CSS_SELECTOR, "#messages li")),
              "the refusal of a wrong token")
        if cell(drv, "399", "lock").is_enabled():
            wmd.fail("controls enabled after a wrong token")
        # The right one (the cookie in the state directory) unlocks the controls.
        with open(os.path.join(d.state_dir, "cookie")) as f:
            token = f.read().strip()
        drv.find_element(By.ID, "token").send_keys(token)
        drv.find_element(By.ID, "login-btn").click()
        until(drv, lambda dd: dd.find_element(By.ID, "access").text == "may write",
              "'may write' after the right token")
        until(drv, lambda dd: cell(dd, "399", "lock").is_enabled(), "399's Lock enabled")
        cell(drv, "399", "lock").click()
        wmd.wait_for(lambda: d.result("laser.get", ["399"])["lock"] is True, WAIT_S,
                     "the daemon to have 399 locked by the logged-in page")
        check_no_js_errors(drv)


def main():
    drv = browser()
    try:
        wmd.run_tests([
            ("live_view_and_controls", lambda: test_live_view_and_controls(drv)),
            ("read_only_address", lambda: test_read_only_address(drv)),
            ("token", lambda: test_token(drv)),
        ])
    finally:
        drv.quit()


if __name__ == "__main__":
    main()
