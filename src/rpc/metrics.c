/*
 * metrics: the Prometheus exposition of a running daemon (text format
 * 0.0.4). Each family is written whole (HELP, TYPE, then every sample), in
 * base units (hertz, volts, seconds), counters ending in _total, state sets
 * as one 0/1 sample per state. A value that does not exist now (no good
 * reading, no actuator) has no sample, never NaN. Reads the daemon's
 * structs; builds no JSON and never sees a socket.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "numfmt.h"

/* About 2 KB per laser and 2 KB for the rest: the first guess fits a lab. */
#define METRICS_INITIAL_BYTES 16384

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void out_grow(struct out *o, size_t need) {
    size_t cap = o->cap ? o->cap : METRICS_INITIAL_BYTES;
    char *b;

    while (cap < o->len + need + 1)
        cap *= 2;
    if (cap == o->cap)
        return;
    if ((b = realloc(o->buf, cap)) == NULL) {
        o->failed = true;
        return;
    }
    o->buf = b;
    o->cap = cap;
}

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...) {
    va_list ap;
    int n;

    if (o->failed)
        return;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        o->failed = true;
        return;
    }
    out_grow(o, (size_t)n);
    if (o->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

/* A label value, escaped as the format wants (\\, \", \n). */
static void put_label(struct out *o, const char *s) {
    for (; *s && !o->failed; s++) {
        if (*s == '\\')
            put(o, "\\\\");
        else if (*s == '"')
            put(o, "\\\"");
        else if (*s == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *s);
    }
}

static void put_value(struct out *o, double x) {
    char num[NUMFMT_REAL_MAX];

    numfmt_real(num, x);
    put(o, " %s\n", num);
}

static void family(struct out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{laser="L",channel="N"[,extra="v"]} */
static void laser_series(struct out *o, const char *name, const struct laser *l, const char *extra,
                         const char *extra_value) {
    put(o, "%s{laser=\"", name);
    put_label(o, l->cfg->name);
    put(o, "\",channel=\"%d\"", l->cfg->channel);
    if (extra) {
        put(o, ",%s=\"", extra);
        put_label(o, extra_value);
        put(o, "\"");
    }
    put(o, "}");
}

static const struct meter_channel *channel_of(const struct daemon *d, const struct laser *l) {
    for (int i = 0; i < d->meter.nch; i++)
        if (d->meter.ch[i].cfg->channel == l->cfg->channel)
            return &d->meter.ch[i];
    return NULL;
}

/* Every lock state, so that one sample of each laser's state set is 1; the
 * assertion fails the build when a state is added after the last here. */
static const enum lock_state lock_states[] = {LOCK_OFF,     LOCK_ACQUIRING, LOCK_LOCKED,
                                              LOCK_HOLDING, LOCK_RAILED,    LOCK_LOST,
                                              LOCK_FAULT,   LOCK_UNSTABLE,  LOCK_RAMPING};
_Static_assert(sizeof(lock_states) / sizeof(lock_states[0]) == (size_t)LOCK_NSTATES,
               "lock_states lists every enum lock_state");

/* The wavemeter's states as the metric names them: "reading" is running
 * with a read in flight, which would flap at every read. */
static const struct {
    enum meter_state state;
    const char *name;
} meter_states[] = {
    {METER_IDLE, "idle"},         {METER_RUNNING, "running"}, {METER_BACKOFF, "error"},
    {METER_STOPPING, "stopping"}, {METER_STOPPED, "stopped"},
};

static void put_daemon(struct out *o, const struct daemon *d, uint64_t now_ns, double now_unix) {
    family(o, "wavemeterd_build_info", "gauge", "The running daemon's version (always 1).");
    put(o, "wavemeterd_build_info{version=\"");
    put_label(o, WMD_VERSION);
    put(o, "\"} 1\n");

    family(o, "wavemeterd_start_time_seconds", "gauge", "When the daemon started, Unix time.");
    put(o, "wavemeterd_start_time_seconds");
    put_value(o, now_unix - (double)(now_ns - d->start_ns) * 1e-9);

    family(o, "wavemeterd_clients", "gauge", "JSON-RPC clients connected, by transport.");
    put(o, "wavemeterd_clients{transport=\"tcp\"} %d\n", d->server.nclients);
    put(o, "wavemeterd_clients{transport=\"ws\"} %d\n", d->http ? http_ws_clients(d->http) : 0);

    family(o, "wavemeterd_http_connections", "gauge",
           "HTTP connections open (page, /metrics and /ws together).");
    put(o, "wavemeterd_http_connections %d\n", d->http ? http_connections(d->http) : 0);

    family(o, "wavemeterd_loop_lag_seconds", "gauge",
           "How late the event loop's 100 ms timer fired last.");
    put(o, "wavemeterd_loop_lag_seconds");
    put_value(o, d->lag_last_ms * 1e-3);
    family(o, "wavemeterd_loop_lag_max_seconds", "gauge",
           "The latest the event loop's 100 ms timer fired since start.");
    put(o, "wavemeterd_loop_lag_max_seconds");
    put_value(o, d->lag_max_ms * 1e-3);

    family(o, "wavemeterd_meter_state", "gauge",
           "The wavemeter's state: 1 for the current one, 0 for the others.");
    for (size_t i = 0; i < sizeof(meter_states) / sizeof(meter_states[0]); i++)
        put(o, "wavemeterd_meter_state{state=\"%s\"} %d\n", meter_states[i].name,
            d->meter.state == meter_states[i].state);

    family(o, "wavemeterd_meter_cycle_seconds", "gauge",
           "The last full pass of the wavemeter over the enabled channels.");
    put(o, "wavemeterd_meter_cycle_seconds");
    put_value(o, (double)d->meter.last_cycle_ns * 1e-9);
}

static void put_lasers(struct out *o, const struct daemon *d, uint64_t now_ns) {
    const struct lasers *ls = &d->lasers;

    family(o, "wavemeterd_laser_frequency_hz", "gauge",
           "The laser's latest reading, vacuum frequency; absent unless that reading is ok.");
    for (int i = 0; i < ls->n; i++) {
        const struct meter_channel *c = channel_of(d, &ls->l[i]);
        if (c == NULL || c->last.seq == 0 || c->last.status != WM_OK)
            continue;
        laser_series(o, "wavemeterd_laser_frequency_hz", &ls->l[i], NULL, NULL);
        put_value(o, c->last.frequency_thz * 1e12);
    }

    family(o, "wavemeterd_laser_reading_age_seconds", "gauge",
           "Time since the laser's latest reading (of any status) was taken.");
    for (int i = 0; i < ls->n; i++) {
        const struct meter_channel *c = channel_of(d, &ls->l[i]);
        if (c == NULL || c->last.seq == 0)
            continue;
        laser_series(o, "wavemeterd_laser_reading_age_seconds", &ls->l[i], NULL, NULL);
        put_value(o, now_ns > c->last.t_ns ? (double)(now_ns - c->last.t_ns) * 1e-9 : 0.0);
    }

    family(o, "wavemeterd_readings_total", "counter",
           "Readings of the laser's channel since start, by status.");
    for (int i = 0; i < ls->n; i++) {
        const struct meter_channel *c = channel_of(d, &ls->l[i]);
        for (int s = 0; c != NULL && s < WM_NSTATUS; s++) {
            laser_series(o, "wavemeterd_readings_total", &ls->l[i], "status",
                         wm_status_name((enum wm_status)s));
            put(o, " %" PRIu64 "\n", c->by_status[s]);
        }
    }

    family(o, "wavemeterd_laser_revisit_seconds", "gauge",
           "Mean time between two readings of the laser over its last 64; absent before two.");
    for (int i = 0; i < ls->n; i++) {
        const struct meter_channel *c = channel_of(d, &ls->l[i]);
        double mean_ms, max_ms;
        if (c == NULL)
            continue;
        meter_revisit_ms(c, &mean_ms, &max_ms);
        if (!isfinite(mean_ms))
            continue;
        laser_series(o, "wavemeterd_laser_revisit_seconds", &ls->l[i], NULL, NULL);
        put_value(o, mean_ms * 1e-3);
    }

    family(o, "wavemeterd_laser_setpoint_hz", "gauge", "The laser's lock setpoint.");
    for (int i = 0; i < ls->n; i++) {
        laser_series(o, "wavemeterd_laser_setpoint_hz", &ls->l[i], NULL, NULL);
        put_value(o, ls->l[i].pid.setpoint_thz * 1e12);
    }

    family(o, "wavemeterd_laser_lock_error_hz", "gauge",
           "Latest reading minus the lock's target; absent without a good reading.");
    for (int i = 0; i < ls->n; i++) {
        if (!isfinite(ls->l[i].error_mhz))
            continue;
        laser_series(o, "wavemeterd_laser_lock_error_hz", &ls->l[i], NULL, NULL);
        put_value(o, ls->l[i].error_mhz * 1e6);
    }

    family(o, "wavemeterd_laser_lock_state", "gauge",
           "The laser's lock state: 1 for the current one, 0 for the others.");
    for (int i = 0; i < ls->n; i++)
        for (size_t s = 0; s < sizeof(lock_states) / sizeof(lock_states[0]); s++) {
            laser_series(o, "wavemeterd_laser_lock_state", &ls->l[i], "state",
                         laser_state_name(lock_states[s]));
            put(o, " %d\n", ls->l[i].state == lock_states[s]);
        }

    family(o, "wavemeterd_laser_lock_wanted", "gauge",
           "1 while the laser is meant to be locked (laser.lock), else 0.");
    for (int i = 0; i < ls->n; i++) {
        laser_series(o, "wavemeterd_laser_lock_wanted", &ls->l[i], NULL, NULL);
        put(o, " %d\n", ls->l[i].lock_on);
    }

    family(o, "wavemeterd_laser_output_volts", "gauge",
           "The actuator output the lock last set; absent for monitor-only lasers.");
    for (int i = 0; i < ls->n; i++) {
        if (!laser_has_actuator(&ls->l[i]))
            continue;
        laser_series(o, "wavemeterd_laser_output_volts", &ls->l[i], NULL, NULL);
        put_value(o, ls->l[i].pid.output_v);
    }
    family(o, "wavemeterd_laser_output_min_volts", "gauge", "The lowest output the lock may set.");
    for (int i = 0; i < ls->n; i++) {
        if (!laser_has_actuator(&ls->l[i]))
            continue;
        laser_series(o, "wavemeterd_laser_output_min_volts", &ls->l[i], NULL, NULL);
        put_value(o, ls->l[i].cfg->output_min_v);
    }
    family(o, "wavemeterd_laser_output_max_volts", "gauge", "The highest output the lock may set.");
    for (int i = 0; i < ls->n; i++) {
        if (!laser_has_actuator(&ls->l[i]))
            continue;
        laser_series(o, "wavemeterd_laser_output_max_volts", &ls->l[i], NULL, NULL);
        put_value(o, ls->l[i].cfg->output_max_v);
    }

    family(o, "wavemeterd_laser_relocks_total", "counter",
           "Automatic relock attempts after the lock was lost, since start.");
    for (int i = 0; i < ls->n; i++) {
        laser_series(o, "wavemeterd_laser_relocks_total", &ls->l[i], NULL, NULL);
        put(o, " %" PRIu64 "\n", ls->l[i].relocks_total);
    }

    family(o, "wavemeterd_laser_actuator_writes_total", "counter",
           "Writes to the laser's actuator since start.");
    for (int i = 0; i < ls->n; i++) {
        if (!laser_has_actuator(&ls->l[i]))
            continue;
        laser_series(o, "wavemeterd_laser_actuator_writes_total", &ls->l[i], NULL, NULL);
        put(o, " %" PRIu64 "\n", ls->l[i].writes);
    }
    family(o, "wavemeterd_laser_actuator_errors_total", "counter",
           "Failed writes to the laser's actuator since start.");
    for (int i = 0; i < ls->n; i++) {
        if (!laser_has_actuator(&ls->l[i]))
            continue;
        laser_series(o, "wavemeterd_laser_actuator_errors_total", &ls->l[i], NULL, NULL);
        put(o, " %" PRIu64 "\n", ls->l[i].write_errors);
    }
}

char *metrics_text(const struct daemon *d, size_t *len) {
    struct out o = {0};
    uint64_t now_ns = clock_now_ns(d->clk);
    double now_unix = d->clk->wall_s(d->clk->ctx);

    put_daemon(&o, d, now_ns, now_unix);
    put_lasers(&o, d, now_ns);
    if (o.failed || o.buf == NULL) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}

char *metrics_hook(void *daemon, size_t *len) {
    return metrics_text(daemon, len);
}
