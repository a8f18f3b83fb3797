/*
 * The wavemeterd live view: a JSON-RPC 2.0 client over the daemon's WebSocket
 * (/ws, one JSON-RPC message per frame, exactly the TCP protocol of
 * docs/PROTOCOL.md) and the table that shows what it says. It holds no state
 * of its own that matters: everything shown comes from the daemon, and the
 * daemon alone decides what this page may change (access.write_from, auth).
 *
 * What it asks, and why:
 *   lasers            on connect, then every POLL_MS: output, error, setpoint,
 *                     rails and lock state (output and error are not pushed)
 *   status            on connect and every ACCESS_POLL_MS: the meter's state and
 *                     this connection's own access (status.session)
 *   subscribe         readings, locks and status pushes: the live values
 *   history           on connect: the plot's last minutes
 *   auth, laser.lock, laser.unlock, laser.set_setpoint: the controls
 */
"use strict";

/* ---- constants (each with its reason) ---- */

/* The plot's window: a few minutes shows a drift and a relock without
 * shrinking the noise to a line. ?minutes=N in the address changes it. */
const PLOT_MINUTES = (() => {
    const m = Number(new URLSearchParams(location.search).get("minutes"));
    return Number.isFinite(m) && m >= 1 && m <= 60 ? m : 5;
})();
/* Output and error are not pushed per step, so `lasers` is asked this often:
 * once a second is live enough for eyes and costs the daemon ~1 kB a laser. */
const POLL_MS = 1000;
/* A reload of the daemon's config can change who may write: asked again this
 * often (and after any "unauthorized" answer). */
const ACCESS_POLL_MS = 10000;
/* A call unanswered this long is given up (the daemon answers in ms; a write
 * waits for the disk, still well under this). */
const CALL_TIMEOUT_MS = 10000;
/* Reconnect back-off: the first retry soon (a restart takes ~1 s), doubling
 * to a ceiling so a daemon that is down for hours costs little. */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
/* A reading older than this is shown as stale (a locked laser is read many
 * times a second; a monitored one at least every monitor_period_ms, 1 s by
 * default). */
const STALE_MS = 5000;
/* Plots are redrawn at most this often: a redraw costs more than a reading. */
const PLOT_REDRAW_MS = 500;
/* Pushes per laser and topic a second: more than a screen can show. */
const PUSH_MAX_HZ = 10;
/* Speed of light, for THz <-> nm (vacuum): lambda_nm = C_NM_THZ / f_thz. */
const C_NM_THZ = 299792.458;

/* ---- small helpers ---- */

const $ = (sel, root = document) => root.querySelector(sel);

/* A number with a fixed number of decimals, or a dash when there is none. */
function fmt(x, decimals) {
    return typeof x === "number" && Number.isFinite(x) ? x.toFixed(decimals) : "–";
}

/* An error answer of the daemon (code, message, data as in PROTOCOL.md), or
 * a failure of the connection (code null). */
class RpcError extends Error {
    constructor(code, message, data) {
        super(message);
        this.code = code;
        this.data = data;
    }
    toString() {
        return this.code === null ? this.message : `${this.message} (error ${this.code})`;
    }
}

/* The daemon's error codes that the page treats specially (PROTOCOL.md). */
const ERR_UNAUTHORIZED = -32001;

/* ---- messages: what went wrong, in plain words ---- */

/* Show text at the top of the page (newest first, at most 6 kept). */
function showMessage(text, kind = "error") {
    const list = $("#messages");
    const li = document.createElement("li");
    li.className = kind;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    const span = document.createElement("span");
    span.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "×";
    close.title = "dismiss";
    close.addEventListener("click", () => li.remove());
    li.append(time, span, close);
    list.prepend(li);
    while (list.children.length > 6) list.lastElementChild.remove();
}

/* ---- the connection: JSON-RPC over one WebSocket ---- */

const conn = {
    ws: null,
    nextId: 1,
    pending: new Map(), // id -> {resolve, reject, timer, method}
    backoffMs: BACKOFF_MIN_MS,
    attempt: 0,
    retryTimer: null,
    open: false, // connected, subscribed and showing live values
};

function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

/* One call; resolves with its result, rejects with an RpcError. */
function call(method, params) {
    return new Promise((resolve, reject) => {
        const ws = conn.ws;
        if (!ws || ws.readyState !== WebSocket.OPEN) {
            reject(new RpcError(null, `${method}: not connected to the daemon`));
            return;
        }
        const id = conn.nextId++;
        const timer = setTimeout(() => {
            conn.pending.delete(id);
            reject(new RpcError(null, `${method}: no answer within ${CALL_TIMEOUT_MS / 1000} s`));
        }, CALL_TIMEOUT_MS);
        conn.pending.set(id, { resolve, reject, timer, method });
        const req = { jsonrpc: "2.0", id, method };
        if (params !== undefined) req.params = params;
        ws.send(JSON.stringify(req));
    });
}

/* Every call still waiting fails: its answer can no longer come. */
function failPending(why) {
    for (const [id, p] of conn.pending) {
        clearTimeout(p.timer);
        p.reject(new RpcError(null, `${p.method}: ${why}`));
        conn.pending.delete(id);
    }
}

function connect() {
    conn.retryTimer = null;
    if (!location.host) {
        setConn("closed", "open this page from the daemon's address (http://HOST:PORT/)");
        return;
    }
    setConn("connecting", `connecting to ${wsUrl()}`);
    let ws;
    try {
        ws = new WebSocket(wsUrl());
    } catch (e) {
        scheduleReconnect(String(e));
        return;
    }
    conn.ws = ws;
    ws.onopen = () => {
        if (conn.ws === ws) onConnected(ws);
    };
    ws.onmessage = (ev) => {
        if (conn.ws === ws) onFrame(ev.data);
    };
    /* An error is always followed by close; close does the work. */
    ws.onclose = (ev) => {
        if (conn.ws !== ws) return;
        conn.ws = null;
        conn.open = false;
        failPending("connection closed");
        markDisconnected();
        scheduleReconnect(ev.code === 1006 ? "no connection" : `closed (${ev.code})`);
    };
}

/* Try again after the back-off, doubling it for the next time. */
function scheduleReconnect(why) {
    if (conn.retryTimer !== null) return;
    /* A little jitter, so that many pages do not all come back at once. */
    const delay = conn.backoffMs * (0.8 + 0.4 * Math.random());
    conn.attempt++;
    conn.backoffMs = Math.min(conn.backoffMs * 2, BACKOFF_MAX_MS);
    setConn("closed", `${why}: reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${conn.attempt})`);
    conn.retryTimer = setTimeout(connect, delay);
}

/* Drop this connection (e.g. it answered nonsense) and start over. */
function restart(why) {
    showMessage(why);
    if (conn.ws) conn.ws.close();
}

/* One frame: an answer (or a batch of them), or a push. */
function onFrame(text) {
    let msg;
    try {
        msg = JSON.parse(text);
    } catch (e) {
        showMessage(`the daemon sent a frame that is not JSON: ${String(text).slice(0, 80)}`);
        return;
    }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (m === null || typeof m !== "object") continue;
        const p = m.id !== undefined && m.id !== null ? conn.pending.get(m.id) : undefined;
        if (p) {
            conn.pending.delete(m.id);
            clearTimeout(p.timer);
            if (m.error) p.reject(new RpcError(m.error.code, m.error.message, m.error.data));
            else p.resolve(m.result);
        } else if (typeof m.method === "string") {
            onPush(m.method, m.params || {});
        } else if (m.error) {
            /* An error not tied to a request of ours (id null): say it. */
            showMessage(`daemon: ${m.error.message} (error ${m.error.code})`);
        }
    }
}

/* Connected: learn the lasers and our access, subscribe, fill the plots. */
async function onConnected(ws) {
    try {
        const lasers = await call("lasers");
        buildRows(lasers);
        await refreshStatus();
        if (access.token !== null && access.info && access.info.token_required &&
            !access.info.logged_in)
            await login(access.token, true);
        await call("subscribe", { topics: ["readings", "locks", "status"], max_rate_hz: PUSH_MAX_HZ });
        if (conn.ws !== ws) return;
        conn.open = true;
        conn.backoffMs = BACKOFF_MIN_MS;
        conn.attempt = 0;
        setConn("open", `connected to ${wsUrl()}`);
        document.body.classList.remove("disconnected");
        applyAccess();
        for (const row of rows.values()) prefillPlot(row);
    } catch (e) {
        if (conn.ws === ws) restart(`setting up the connection failed: ${e}`);
    }
}

/* The connection badge: state "connecting", "open" or "closed". */
function setConn(state, title) {
    const el = $("#conn");
    el.dataset.state = state;
    el.textContent = { connecting: "connecting…", open: "live", closed: "disconnected" }[state];
    el.title = title;
    if (state === "closed") $("#conn").textContent = `disconnected: ${title}`;
}

/* Values on screen are no longer live: grey them, break the plot lines. */
function markDisconnected() {
    document.body.classList.add("disconnected");
    for (const row of rows.values()) {
        const d = row.plot.data;
        /* A gap just after the last point (on the daemon's clock, which
         * orders the points; the browser's may differ). */
        if (d.length && d[d.length - 1][1] !== null) {
            d.push([new Date(d[d.length - 1][0].getTime() + 1), null]);
            row.plot.dirty = true;
        }
    }
    applyAccess();
}

/* ---- access: may this page change lasers? ---- */

const access = {
    /* status.session as the daemon said it last; null before, or when the
     * daemon is too old to say (then the controls stay off). */
    info: null,
    /* The token the user logged in with, kept in this page's memory only (not
     * stored anywhere), to log in again after a reconnect. */
    token: null,
};

async function refreshStatus() {
    const st = await call("status");
    access.info = st.session || null;
    showMeter(st.driver || {});
    applyAccess();
}

/* Log in with token; quiet: after a reconnect, without asking the user. */
async function login(token, quiet) {
    try {
        await call("auth", { token });
        access.token = token;
        if (!quiet) showMessage("logged in: this page may change lasers", "info");
    } catch (e) {
        if (e.code === null) throw e; /* the connection went: try again later */
        /* A wrong token withdraws any login of this connection (PROTOCOL.md);
         * a daemon restarted with require_token has a new cookie. */
        access.token = null;
        showMessage(quiet ? `logging in again failed (a restarted daemon has a new token): ${e}`
                          : `login refused: ${e}`);
    }
    await refreshStatus();
}

/* Enable the controls exactly when writes would be accepted, and say why not. */
function applyAccess() {
    const a = access.info;
    const badge = $("#access");
    const form = $("#login");
    let can = false;
    let text = "read-only";
    let why;
    if (!conn.open) {
        why = "not connected to the daemon";
    } else if (a === null) {
        why = "this daemon does not say whether this page may write (status.session is missing)";
    } else if (!a.write_from) {
        why = `read-only: ${a.peer} is not in the daemon's access.write_from`;
    } else if (a.token_required && !a.logged_in) {
        why = "read-only: log in with the daemon's token to change lasers";
    } else {
        can = a.may_write === true;
        text = can ? "may write" : "read-only";
        why = can ? `this page (${a.peer}) may change lasers` : "the daemon says this page may not write";
    }
    badge.dataset.state = can ? "write" : "read-only";
    badge.textContent = text;
    badge.title = why;
    /* Said in words too, not only in a tooltip: a phone has no hover. */
    $("#access-why").textContent = can ? "" : why.replace(/^read-only: /, "");
    form.hidden = !(conn.open && a && a.write_from && a.token_required && !a.logged_in);
    for (const row of rows.values()) {
        for (const el of row.controls) {
            el.disabled = !can || row.busy;
            el.title = can ? "" : why;
        }
        /* No actuator: the setpoint still sets what the error is measured
         * against, but there is nothing to lock. */
        if (row.monitorOnly) {
            for (const el of [row.el.lock, row.el.unlock]) {
                el.disabled = true;
                el.title = "monitor only: this laser has no actuator";
            }
        }
    }
}

/* ---- the lasers on screen ---- */

/* name -> row: {tr, el: {...}, laser: last laser.get answer, target_thz,
 * readingAt: performance.now() of the acquisition, plot: {...}} */
const rows = new Map();

/* One row per laser, in the daemon's order. Rows (and their plots) are kept
 * across reconnects when the lasers are the same; a changed config rebuilds. */
function buildRows(lasers) {
    const same =
        lasers.length === rows.size &&
        lasers.every((l) => rows.has(l.name) && rows.get(l.name).laser.channel === l.channel);
    if (!same) {
        for (const row of rows.values()) if (row.plot.g) row.plot.g.destroy();
        rows.clear();
        const body = $("#lasers tbody");
        body.replaceChildren();
        for (const l of lasers) {
            const row = makeRow(l);
            rows.set(l.name, row);
            body.append(row.tr);
        }
    }
    $("#empty").hidden = lasers.length > 0;
    for (const l of lasers) updateLaser(rows.get(l.name), l);
}

function makeRow(l) {
    const tr = $("#row").content.firstElementChild.cloneNode(true);
    tr.dataset.laser = l.name;
    const el = {};
    for (const k of ["name", "channel", "freq", "wl", "status", "age", "state", "reason", "err",
                     "out", "rail", "rail-mark", "rails", "plot", "setpoint", "unit", "set",
                     "lock", "unlock", "row-msg", "setpoint-form"])
        el[k] = $("." + k, tr);
    el.name.textContent = l.name;
    el.channel.textContent = `ch ${l.channel}`;
    const row = {
        tr, el, laser: l, target_thz: null, readingAt: null, busy: false, monitorOnly: false,
        controls: [el.setpoint, el.unit, el.set, el.lock, el.unlock],
        plot: { data: [], g: null, dirty: false, unavailable: false },
        setpointEdited: false,
        setpointShown: "", // what the page last put in the field
    };
    el["setpoint-form"].addEventListener("submit", (ev) => {
        ev.preventDefault();
        setSetpoint(row);
    });
    el.lock.addEventListener("click", () => write(row, "laser.lock", { laser: row.laser.name }));
    el.unlock.addEventListener("click", () => write(row, "laser.unlock", { laser: row.laser.name }));
    /* The field follows the daemon's setpoint until the user goes into it;
     * leaving it unchanged (or a Set that succeeds) makes it follow again. */
    const editing = () => { row.setpointEdited = true; };
    el.setpoint.addEventListener("focus", editing);
    el.setpoint.addEventListener("input", editing);
    el.setpoint.addEventListener("blur", () => {
        if (el.setpoint.value === row.setpointShown) row.setpointEdited = false;
    });
    el.unit.addEventListener("change", () => {
        const x = Number(el.setpoint.value);
        if (el.setpoint.value !== "" && x > 0) {
            el.setpoint.value = (C_NM_THZ / x).toPrecision(12);
            if (!row.setpointEdited) row.setpointShown = el.setpoint.value;
        }
    });
    return row;
}

/* A laser object (laser.get, lasers, a write's answer): everything but the
 * reading's own values, which the pushes keep live. */
function updateLaser(row, l) {
    row.laser = l;
    row.monitorOnly = l.actuator === "none";
    row.target_thz = typeof l.target_thz === "number" ? l.target_thz : null;
    showLock(row, l.state, l.reason, l.lock);
    showError(row, l.error_mhz);
    showOutput(row, l.output_v);
    const lim = l.limits || {};
    row.el.rails.textContent = `${fmt(lim.output_min_v, 1)} … ${fmt(lim.output_max_v, 1)} V`;
    row.tr.classList.toggle("monitor-only", row.monitorOnly);
    if (row.monitorOnly) row.el.rails.textContent = "monitor only";
    if (!row.setpointEdited && typeof l.setpoint_thz === "number") {
        row.el.setpoint.value = row.el.unit.value === "nm"
            ? (C_NM_THZ / l.setpoint_thz).toPrecision(12)
            : l.setpoint_thz.toPrecision(12);
        row.setpointShown = row.el.setpoint.value;
    }
    if (l.reading && row.readingAt === null) showReading(row, l.reading, false);
}

function showLock(row, state, reason, lock) {
    row.tr.dataset.state = state || "off";
    row.el.state.textContent = state || "–";
    row.el.reason.textContent = reason || "";
    row.el.lock.hidden = lock === true;
    row.el.unlock.hidden = lock !== true;
}

function showError(row, mhz) {
    row.el.err.textContent = fmt(mhz, 2);
    const tol = row.laser.limits ? row.laser.limits.tolerance_mhz : undefined;
    row.el.err.classList.toggle("out-of-tol", typeof mhz === "number" && typeof tol === "number" &&
        Math.abs(mhz) > tol);
}

/* The output and its place between the rails: the bar is full width between
 * output_min_v and output_max_v; the mark turns red within 5 % of a rail. */
function showOutput(row, v) {
    row.el.out.textContent = row.monitorOnly ? "–" : fmt(v, 3);
    const lim = row.laser.limits || {};
    const lo = lim.output_min_v, hi = lim.output_max_v;
    if (typeof v !== "number" || typeof lo !== "number" || typeof hi !== "number" || !(hi > lo)) {
        row.el["rail-mark"].hidden = true;
        return;
    }
    const pos = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
    row.el["rail-mark"].hidden = false;
    row.el["rail-mark"].style.left = `${(pos * 100).toFixed(2)}%`;
    row.el.rail.dataset.near = pos < 0.05 || pos > 0.95 ? "rail" : "";
}

/* A reading (a push, or the one in laser.get): value cells, age, plot point. */
function showReading(row, r, live) {
    const ok = r.status === "ok";
    row.tr.dataset.seq = r.seq;
    row.el.freq.textContent = ok ? fmt(r.frequency_thz, 7) : "–";
    row.el.wl.textContent = ok ? fmt(r.wavelength_nm, 6) : "–";
    row.el.status.textContent = r.status + (r.detail ? `: ${r.detail}` : "");
    row.el.status.dataset.status = r.status;
    row.readingAt = typeof r.age_ms === "number" ? performance.now() - r.age_ms : null;
    showAge(row);
    if (!live) return;
    /* The error of this reading against the target from the last poll (the
     * daemon's own error_mhz is the same number; it is not in the push). */
    const err = ok && row.target_thz !== null ? (r.frequency_thz - row.target_thz) * 1e6 : null;
    if (err !== null) showError(row, err);
    if (typeof r.time === "number") {
        row.plot.data.push([new Date(r.time * 1000), err]);
        row.plot.dirty = true;
    }
}

function showAge(row) {
    if (row.readingAt === null) {
        row.el.age.textContent = "";
        return;
    }
    const age = performance.now() - row.readingAt;
    row.el.age.textContent = age < 1000 ? `${age.toFixed(0)} ms ago` : `${(age / 1000).toFixed(1)} s ago`;
    row.tr.classList.toggle("stale", age > STALE_MS);
}

function showMeter(drv) {
    const el = $("#meter");
    el.dataset.state = drv.state || "unknown";
    el.textContent = `meter: ${drv.name || "?"} ${drv.state || "?"}`;
    el.title = drv.error ? `error: ${drv.error}` : "the wavemeter's state";
    if (drv.error) el.textContent += `: ${drv.error}`;
}

/* ---- pushes (subscribe) ---- */

function onPush(method, params) {
    if (method === "reading" && params.reading) {
        const row = rows.get(params.reading.laser);
        if (row) showReading(row, params.reading, true);
    } else if (method === "lock" && params.lock) {
        const l = params.lock;
        const row = rows.get(l.laser);
        if (!row) return;
        showLock(row, l.state, l.reason, l.lock);
        showError(row, l.error_mhz);
        showOutput(row, l.output_v);
    } else if (method === "status" && params.status) {
        showMeter(params.status);
    }
}

/* ---- the controls ---- */

/* A write method for one laser: buttons off while it is in flight, the answer
 * (the laser object) shown at once, a refusal in plain words under the row. */
async function write(row, method, params) {
    row.busy = true;
    applyAccess();
    row.el["row-msg"].textContent = "";
    row.el["row-msg"].className = "row-msg";
    try {
        const l = await call(method, params);
        /* A setpoint the daemon took: the field follows the daemon again. */
        if (method === "laser.set_setpoint") row.setpointEdited = false;
        updateLaser(row, l);
        row.el["row-msg"].textContent = `${method}: done`;
        row.el["row-msg"].classList.add("ok");
    } catch (e) {
        row.el["row-msg"].textContent = `${method}: ${e}`;
        row.el["row-msg"].classList.add("error");
        if (e.code === ERR_UNAUTHORIZED) refreshStatus().catch(() => {});
    } finally {
        row.busy = false;
        applyAccess();
    }
}

/* The setpoint as typed, in THz or nm: the daemon converts nm (vacuum) and
 * checks the laser's range; its refusal says the range. */
function setSetpoint(row) {
    const x = Number(row.el.setpoint.value);
    if (row.el.setpoint.value.trim() === "" || !Number.isFinite(x)) {
        row.el["row-msg"].textContent = "setpoint: type a number";
        row.el["row-msg"].className = "row-msg error";
        return;
    }
    const p = { laser: row.laser.name };
    if (row.el.unit.value === "nm") p.wavelength_nm = x;
    else p.frequency_thz = x;
    write(row, "laser.set_setpoint", p);
}

$("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#token").value.trim();
    if (!t) return;
    $("#token").value = "";
    login(t, false).catch((e) => showMessage(`login: ${e}`));
});

/* ---- the plots (dygraphs) ---- */

/* The last minutes of error from history, before the live points. */
async function prefillPlot(row) {
    let h;
    try {
        h = await call("history", { laser: row.laser.name, seconds: PLOT_MINUTES * 60 });
    } catch (e) {
        if (e.code !== null) showMessage(`history of ${row.laser.name}: ${e}`);
        return;
    }
    const first = row.plot.data.length ? row.plot.data[0][0].getTime() : Infinity;
    const old = [];
    for (const s of h.samples || []) {
        const t = s.time * 1000;
        if (t < first) old.push([new Date(t), typeof s.error_mhz === "number" ? s.error_mhz : null]);
    }
    row.plot.data = old.concat(row.plot.data);
    row.plot.dirty = true;
}

/* Shade the band where the lock counts as within tolerance. */
function toleranceBand(row) {
    return (ctx, area, g) => {
        const tol = row.laser.limits ? row.laser.limits.tolerance_mhz : undefined;
        if (typeof tol !== "number") return;
        const y1 = g.toDomYCoord(tol), y2 = g.toDomYCoord(-tol);
        ctx.fillStyle = "rgba(60, 170, 90, 0.15)";
        ctx.fillRect(area.x, Math.min(y1, y2), area.w, Math.abs(y2 - y1));
    };
}

function redrawPlots() {
    for (const row of rows.values()) {
        const p = row.plot;
        if (!p.dirty) continue;
        p.dirty = false;
        /* The window ends at the newest reading, on the daemon's clock (the
         * browser's may differ). */
        const cutoff = p.data.length ? p.data[p.data.length - 1][0].getTime() - PLOT_MINUTES * 60e3 : 0;
        let i = 0;
        while (i < p.data.length && p.data[i][0].getTime() < cutoff) i++;
        if (i) p.data.splice(0, i);
        if (!p.data.length) continue;
        if (typeof window.Dygraph !== "function") {
            if (!p.unavailable) {
                row.el.plot.textContent = "no plot: /dygraphs/dygraph.min.js did not load";
                p.unavailable = true;
            }
            continue;
        }
        if (p.g === null) {
            /* Axis labels follow the page's type size (big on a wall screen). */
            const px = parseFloat(getComputedStyle(row.el.plot).fontSize) || 11;
            p.g = new window.Dygraph(row.el.plot, p.data, {
                labels: ["time", "error (MHz)"],
                legend: "onmouseover",
                strokeWidth: 1.2,
                color: "#2266cc",
                connectSeparatedPoints: false,
                resizable: "passive",
                axisLabelFontSize: px,
                axes: {
                    y: { pixelsPerLabel: 1.2 * px, axisLabelWidth: 3.5 * px },
                    /* Wall-clock time of day: dygraphs writes "34.000" for
                     * seconds when the window is short. */
                    x: {
                        axisLabelFormatter: (d) => d.toTimeString().slice(0, 8),
                        pixelsPerLabel: 7 * px,
                        axisLabelWidth: 5.5 * px,
                    },
                },
                underlayCallback: toleranceBand(row),
            });
        } else {
            p.g.updateOptions({ file: p.data });
        }
    }
}

/* ---- start ---- */

document.querySelectorAll(".plot-minutes").forEach((e) => { e.textContent = String(PLOT_MINUTES); });
$("#daemon-host").textContent = location.host;

/* The poll: output, error, setpoint and rails of every laser. One at a time:
 * a slow answer is not stacked behind another. */
let polling = false;
setInterval(async () => {
    for (const row of rows.values()) showAge(row);
    if (!conn.open || polling) return;
    polling = true;
    try {
        const lasers = await call("lasers");
        if (lasers.length !== rows.size || !lasers.every((l) => rows.has(l.name)))
            restart("the daemon's lasers changed: reloading them");
        else
            for (const l of lasers) updateLaser(rows.get(l.name), l);
    } catch (e) {
        if (e.code !== null) showMessage(`lasers: ${e}`);
    } finally {
        polling = false;
    }
}, POLL_MS);
setInterval(() => {
    if (conn.open) refreshStatus().catch((e) => { if (e.code !== null) showMessage(`status: ${e}`); });
}, ACCESS_POLL_MS);
setInterval(redrawPlots, PLOT_REDRAW_MS);
connect();
