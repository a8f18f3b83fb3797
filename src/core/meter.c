/*
 * meter: the read schedule. One read job per wavemeter is in flight at a
 * time on libuv's thread pool; its after-work callback stores the reading,
 * tells the listener and queues the next channel. Device errors back off
 * exponentially instead of spinning. It never touches sockets or JSON.
 */
#include "meter.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* Device errors are retried after 250 ms, doubling up to 10 s: quick enough
 * that a re-plugged cable is noticed at once, slow enough not to flood the
 * log or the vendor's network server while it is gone. */
#define BACKOFF_MIN_MS 250u
/* A returning instrument is read within about a second: a failed read costs
 * next to nothing (the driver answers at once that the device is away). */
#define BACKOFF_MAX_MS 1000u
/* While reads keep failing, one warning a minute at most. */
#define BACKOFF_LOG_EVERY 60u
/* A channel's own error holds it back (see meter_store). */
#define METER_HOLD_MIN_MS 250u
#define METER_HOLD_MAX_MS 5000u

static void meter_queue_next(struct meter *m);
static void meter_backoff_cb(uv_timer_t *t);

/* Every change of the meter's state goes through here, so a listener
 * (status notifications) hears of each. */
static void meter_set_state(struct meter *m, enum meter_state st) {
    if (m->state == st)
        return;
    m->state = st;
    if (m->on_state)
        m->on_state(m, m->state_ctx);
}

int meter_init(struct meter *m, uv_loop_t *loop, const struct config *cfg, const struct clock *clk,
               char *err, size_t errlen) {
    int rc;

    memset(m, 0, sizeof(*m));
    m->loop = loop;
    m->cfg = cfg;
    m->clk = clk;
    m->drv = wm_driver_find(cfg->wavemeter.driver);
    if (m->drv == NULL) {
        snprintf(err, errlen, "unknown wavemeter driver \"%s\"", cfg->wavemeter.driver);
        return -EINVAL;
    }
    if (cfg->sw.drv.driver[0] != '\0' && (m->sw = sw_driver_find(cfg->sw.drv.driver)) == NULL) {
        snprintf(err, errlen, "unknown switch driver \"%s\"", cfg->sw.drv.driver);
        return -EINVAL;
    }
    m->nch = cfg->nlasers;
    for (int i = 0; i < cfg->nlasers; i++) {
        m->ch[i].cfg = &cfg->lasers[i];
        m->ch[i].last.channel = cfg->lasers[i].channel;
        meter_set_locked(m, cfg->lasers[i].channel, false);
    }
    m->cur = -1;
    struct wm_open_args args = {.settings = cfg->wavemeter.u.bytes, .cfg = cfg, .clk = clk};
    rc = m->drv->open(&args, &m->dev, err, errlen);
    if (rc < 0)
        return rc;
    rc = uv_timer_init(loop, &m->backoff);
    if (rc < 0) {
        m->drv->close(m->dev);
        snprintf(err, errlen, "timer: %s", uv_strerror(rc));
        return rc;
    }
    m->backoff.data = m;
    meter_set_state(m, METER_IDLE);
    return 0;
}

void meter_set_locked(struct meter *m, int channel, bool locked) {
    struct meter_channel *c = meter_channel_find(m, channel);
    uint64_t ms;

    if (c == NULL)
        return;
    c->locked_hint = locked;
    ms = c->cfg->max_age_ms > 0 ? (uint64_t)c->cfg->max_age_ms
         : locked               ? 0
                                : (uint64_t)m->cfg->monitor_period_ms;
    c->target_ns = ms * 1000000u;
}

/* What a read of channel i costs, for planning: the driver's worst case
 * after a switch, or the exposure alone when the switch stays. */
static uint64_t read_cost_ns(const struct meter *m, int i) {
    const struct laser_config *lc = m->ch[i].cfg;
    int ms = i == m->cur
                 ? lc->exposure_ms
                 : m->drv->worst_read_ms(lc->exposure_ms, lc->settle_ms, m->cfg->read_timeout_ms);

    return (uint64_t)ms * 1000000u;
}

/*
 * Earliest deadline first. A channel is due when its deadline (its last
 * read's end plus its target) is nearer than the time a read of it takes;
 * of the due channels the one with the earliest deadline goes next, the
 * current one winning ties (no switch, no wear). With none due, the switch
 * stays where it is and that channel is read again: fresh data for free.
 * Channels a lock uses (target 0) are always due, so among themselves they
 * take turns by age.
 */
static int meter_pick_next(const struct meter *m) {
    uint64_t now = clock_now_ns(m->clk), best_deadline = UINT64_MAX;
    int best = -1, first = -1;

    for (int i = 0; i < m->nch; i++) {
        const struct meter_channel *c = &m->ch[i];
        uint64_t deadline = c->last_end_ns == 0 ? 0 : c->last_end_ns + c->target_ns;

        if (!c->cfg->enabled)
            continue;
        if (c->hold_until_ns > now)
            continue; /* its error holds it back */
        if (first < 0)
            first = i;
        if (deadline > now + read_cost_ns(m, i))
            continue; /* not due */
        if (deadline < best_deadline || (deadline == best_deadline && i == m->cur)) {
            best = i;
            best_deadline = deadline;
        }
    }
    if (best >= 0)
        return best;
    if (m->cur >= 0 && m->ch[m->cur].cfg->enabled && m->ch[m->cur].hold_until_ns <= now)
        return m->cur;
    return first;
}

/* The earliest time a held channel may be read again, 0 if none is held. */
static uint64_t meter_next_hold_end(const struct meter *m) {
    uint64_t end = 0;

    for (int i = 0; i < m->nch; i++) {
        const struct meter_channel *c = &m->ch[i];
        if (c->cfg->enabled && c->hold_until_ns != 0 && (end == 0 || c->hold_until_ns < end))
            end = c->hold_until_ns;
    }
    return end;
}

/*
 * The locked channels take turns by age, each read costing the driver's
 * worst case after a switch (only the exposure when one is alone under the
 * switch); the channels with a target take cost/target of the time. So a
 * locked channel comes back every sum(locked costs) / (1 - sum(shares)).
 */
double meter_expected_revisit_ms(const struct meter *m, int channel, bool as_locked) {
    const struct meter_channel *me = NULL;
    double locked_ms = 0, share = 0;
    int nlocked = 0;

    for (int i = 0; i < m->nch; i++)
        if (m->ch[i].cfg->channel == channel)
            me = &m->ch[i];
    if (me == NULL || !me->cfg->enabled)
        return (double)NAN;
    if (me->cfg->max_age_ms > 0)
        return me->cfg->max_age_ms;
    if (!as_locked && !me->locked_hint)
        return m->cfg->monitor_period_ms;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < m->nch; i++) {
            const struct meter_channel *c = &m->ch[i];
            const struct laser_config *lc = c->cfg;
            bool locked = c == me || (c->target_ns == 0 && c->locked_hint);
            double worst;

            if (!lc->enabled)
                continue;
            worst = m->drv->worst_read_ms(lc->exposure_ms, lc->settle_ms, m->cfg->read_timeout_ms);
            if (pass == 0) {
                nlocked += locked;
                if (!locked && c->target_ns > 0)
                    share += worst / ((double)c->target_ns * 1e-6);
            } else if (locked) {
                locked_ms += nlocked == 1 ? lc->exposure_ms : worst;
            }
        }
    }
    /* An overbooked schedule still reads the locked ones now and then. */
    if (share > 0.95)
        share = 0.95;
    return locked_ms / (1.0 - share);
}

void meter_revisit_ms(const struct meter_channel *c, double *mean_ms, double *max_ms) {
    double sum = 0, max = 0;

    for (size_t k = 0; k < c->nrevisit; k++) {
        double ms = (double)c->revisit_ns[k] * 1e-6;
        sum += ms;
        if (ms > max)
            max = ms;
    }
    *mean_ms = c->nrevisit ? sum / (double)c->nrevisit : (double)NAN;
    *max_ms = c->nrevisit ? max : (double)NAN;
}

/* The switch failed: the reading is an error naming it, and the switch is
 * closed so the next read opens it afresh (a replugged cable comes back). */
static int switch_fail(struct meter *m, int rc, const char *what, const char *why) {
    memset(&m->res, 0, sizeof(m->res));
    m->res.status = WM_ERROR;
    m->res.err = rc;
    m->res.t_ns = clock_now_ns(m->clk);
    m->res.time_unix = m->clk->wall_s(m->clk->ctx);
    snprintf(m->res.detail, sizeof(m->res.detail), "switch %s: %s", what, why);
    if (m->sw_dev != NULL) {
        m->sw->close(m->sw_dev);
        m->sw_dev = NULL;
    }
    return rc;
}

/*
 * One reading through an external switch: select the channel and wait for
 * the switch to confirm it, settle, read the wavemeter's input the switch
 * feeds, then ask the switch again. Light from before the confirmation is
 * never read; a switch found elsewhere afterwards marks the reading as
 * straddling, which no lock uses. Pool thread; the job owns m->sw_dev.
 */
static int meter_read_switched(struct meter *m) {
    const struct switch_config *sc = &m->cfg->sw;
    struct wm_read_req req = m->req;
    char why[160];
    int rc, pos = 0;

    if (m->sw_dev == NULL &&
        (rc = m->sw->open(sc->drv.u.bytes, &m->sw_dev, why, sizeof(why))) < 0) {
        m->sw_dev = NULL;
        return switch_fail(m, rc, "open", why);
    }
    if ((rc = m->sw->select(m->sw_dev, m->req.channel, sc->timeout_ms, why, sizeof(why))) < 0)
        return switch_fail(m, rc, "select", why);
    if (sc->settle_ms > 0)
        m->clk->sleep_ns(m->clk->ctx, (uint64_t)sc->settle_ms * 1000000u);
    /* The wavemeter reads the input the switch feeds. switched stays as
     * the scheduler set it: the light changed, so a driver with a result
     * pipeline throws away what it held; the settle was the switch's. */
    req.channel = sc->input;
    req.settle_ms = 0;
    rc = m->drv->read(m->dev, &req, &m->res);
    if (rc < 0)
        return rc;
    if ((rc = m->sw->position(m->sw_dev, sc->timeout_ms, &pos, why, sizeof(why))) < 0)
        return switch_fail(m, rc, "position", why);
    if (pos != m->req.channel)
        m->res.straddled = true;
    return 0;
}

static void meter_work(uv_work_t *w) {
    struct meter *m = w->data;

    if (m->sw != NULL)
        m->rc = meter_read_switched(m);
    else
        m->rc = m->drv->read(m->dev, &m->req, &m->res);
}

static void meter_backoff_cb(uv_timer_t *t) {
    struct meter *m = t->data;

    if (m->state == METER_BACKOFF) {
        /* Retry; the state stays "error" until a read works, so status
         * does not flap at every retry. */
        meter_queue_next(m);
    } else if (m->waiting && m->state == METER_RUNNING) {
        m->waiting = false;
        meter_queue_next(m);
    }
}

static void meter_backoff_closed(uv_handle_t *h) {
    struct meter *m = h->data;

    meter_set_state(m, METER_STOPPED);
    if (m->on_stopped)
        m->on_stopped(m);
}

static void meter_finish_stop(struct meter *m) {
    uv_close((uv_handle_t *)&m->backoff, meter_backoff_closed);
}

static void meter_store(struct meter *m, struct meter_channel *c) {
    struct reading *r = &c->last;

    r->channel = c->cfg->channel;
    r->status = m->res.status;
    r->frequency_thz = m->res.frequency_thz;
    r->exposure_ms = m->res.exposure_ms;
    r->t_ns = m->res.t_ns;
    r->time_unix = m->res.time_unix;
    r->seq++;
    r->straddled = m->res.straddled;
    memcpy(r->detail, m->res.detail, sizeof(r->detail));
    c->reads++;
    if ((unsigned)r->status < WM_NSTATUS)
        c->by_status[r->status]++;
    if (r->status == WM_ERROR)
        c->errors++;
    else if (r->status != WM_OK)
        c->not_ok++;
    uint64_t end_ns = clock_now_ns(m->clk);
    if (c->last_end_ns != 0) {
        c->revisit_ns[c->revisit_head] = end_ns - c->last_end_ns;
        c->revisit_head = (c->revisit_head + 1) % METER_REVISITS;
        if (c->nrevisit < METER_REVISITS)
            c->nrevisit++;
    }
    c->last_end_ns = end_ns;
    /* A channel error that comes back at once, quicker than an exposure
     * (a channel the instrument does not have), holds that channel back,
     * 250 ms doubling to 5 s, or a meter with nothing else due would ask
     * again and again. Errors that are measurements (out of range) come at
     * the measurement's own pace and hold nothing back. */
    if (r->status == WM_ERROR && m->rc >= 0 &&
        end_ns - m->job_start_ns < (uint64_t)c->cfg->exposure_ms * 1000000u) {
        uint64_t hold_ms = METER_HOLD_MIN_MS << (c->err_streak < 5 ? c->err_streak : 5);
        c->err_streak++;
        c->hold_until_ns =
            end_ns + (hold_ms < METER_HOLD_MAX_MS ? hold_ms : METER_HOLD_MAX_MS) * 1000000u;
    } else {
        c->err_streak = 0;
        c->hold_until_ns = 0;
    }
}

/* One log line per change of a channel's condition, not one per cycle:
 * a laser out of range for an hour is one line, and one when it is back. */
static void meter_note_channel(struct meter_channel *c, const struct reading *r) {
    char now[sizeof(c->last_problem)];

    if (r->status == WM_OK)
        now[0] = '\0';
    else
        snprintf(now, sizeof(now), "%s%s%s", wm_status_name(r->status), r->detail[0] ? ": " : "",
                 r->detail);
    if (strcmp(now, c->last_problem) == 0)
        return;
    if (now[0] == '\0')
        log_notice("wavemeter: channel %d (%s): reading again", c->cfg->channel, c->cfg->name);
    else
        log_warnx("wavemeter: channel %d (%s): %s", c->cfg->channel, c->cfg->name, now);
    memcpy(c->last_problem, now, sizeof(now));
}

static void meter_after_work(uv_work_t *w, int status) {
    struct meter *m = w->data;
    struct meter_channel *c = &m->ch[m->cur];
    uint64_t now_ns = clock_now_ns(m->clk);

    m->busy = false;
    if (status == UV_ECANCELED) {
        /* Only meter_stop cancels, and then nothing was read. */
        meter_finish_stop(m);
        return;
    }
    meter_store(m, c);
    /* A channel's own condition (out of range, no signal, not available)
     * is its reading's status and nothing more: only a device failure
     * (rc < 0: server gone, timed out) stops the meter and backs off. */
    if (m->rc >= 0)
        meter_note_channel(c, &c->last);
    if (m->rc < 0) {
        /* The switch position is unknown after a failed read. */
        m->switch_channel = 0;
        if (m->consecutive_errors++ % BACKOFF_LOG_EVERY == 0)
            log_warnx("wavemeter: channel %d: %s%s", c->cfg->channel, m->res.detail,
                      m->consecutive_errors > 1 ? " (still failing, retried every second)" : "");
        snprintf(m->last_error, sizeof(m->last_error), "%s", m->res.detail);
    } else {
        if (m->consecutive_errors > 0)
            log_notice("wavemeter: reading again after %llu failed reads",
                       (unsigned long long)m->consecutive_errors);
        m->consecutive_errors = 0;
        m->backoff_ms = 0;
        m->last_error[0] = '\0';
        if (m->state == METER_BACKOFF)
            meter_set_state(m, METER_RUNNING);
    }
    if (++m->cycle_reads >= m->nch) {
        if (m->cycle_start_ns != 0)
            m->last_cycle_ns = now_ns - m->cycle_start_ns;
        m->cycle_start_ns = now_ns;
        m->cycle_reads = 0;
    }
    if (m->state != METER_STOPPING && m->rc >= 0) {
        /* The next read goes to the pool first: the listeners (the locks,
         * then the subscribers) run while it settles and exposes, and a
         * hundred subscribers do not slow the readings down. */
        meter_queue_next(m);
        if (m->on_reading)
            m->on_reading(m, &c->last, m->cb_ctx);
        return;
    }
    if (m->on_reading)
        m->on_reading(m, &c->last, m->cb_ctx);

    if (m->state == METER_STOPPING) {
        meter_finish_stop(m);
        return;
    }
    if (m->rc < 0) {
        m->backoff_ms = m->backoff_ms == 0 ? BACKOFF_MIN_MS : m->backoff_ms * 2;
        if (m->backoff_ms > BACKOFF_MAX_MS)
            m->backoff_ms = BACKOFF_MAX_MS;
        meter_set_state(m, METER_BACKOFF);
        uv_timer_start(&m->backoff, meter_backoff_cb, m->backoff_ms, 0);
        return;
    }
    meter_queue_next(m);
}

static void meter_queue_next(struct meter *m) {
    int next = meter_pick_next(m);
    const struct laser_config *lc;
    int rc;

    if (next < 0) {
        uint64_t hold_end = meter_next_hold_end(m), now = clock_now_ns(m->clk);

        if (hold_end == 0) {
            meter_set_state(m, METER_IDLE); /* every channel disabled */
            return;
        }
        /* Every enabled channel is held back by its error: wait for the
         * first to be free (the back-off timer, the meter still running). */
        m->waiting = true;
        uv_timer_start(&m->backoff, meter_backoff_cb,
                       hold_end > now ? (hold_end - now + 999999u) / 1000000u : 1, 0);
        return;
    }
    lc = m->ch[next].cfg;
    m->cur = next;
    m->job_start_ns = clock_now_ns(m->clk);
    m->req.channel = lc->channel;
    m->req.exposure_ms = lc->exposure_ms;
    m->req.settle_ms = lc->settle_ms;
    m->req.chan = m->drv->chan.name != NULL ? lc->meter.u.bytes : NULL;
    m->req.switched = m->switch_channel != lc->channel;
    m->req.timeout_ms = m->cfg->read_timeout_ms;
    m->switch_channel = lc->channel;
    m->work.data = m;
    rc = uv_queue_work(m->loop, &m->work, meter_work, meter_after_work);
    if (rc < 0) {
        /* uv_queue_work fails only on bad arguments; nothing to retry. */
        log_error("wavemeter: cannot queue read: %s", uv_strerror(rc));
        meter_set_state(m, METER_IDLE);
        return;
    }
    m->busy = true;
}

/*
 * Can the wavemeter meet every laser's target? Each read after a switch
 * costs about the driver's worst case; a laser with a target of T ms needs
 * cost/T of the wavemeter's time (earliest-deadline-first meets all targets
 * when those shares add up to at most 1). Locked lasers (no target) share
 * what is left. One warning at start-up, with the numbers.
 */
static void meter_check_schedule(const struct meter *m) {
    double share = 0;
    int n = 0;
    char worst[64] = "";
    double worst_share = 0;

    for (int i = 0; i < m->nch; i++) {
        const struct meter_channel *c = &m->ch[i];
        const struct laser_config *lc = c->cfg;
        double cost_ms, target_ms = (double)c->target_ns * 1e-6, sh;

        if (!lc->enabled || c->target_ns == 0)
            continue;
        cost_ms = m->drv->worst_read_ms(lc->exposure_ms, lc->settle_ms, m->cfg->read_timeout_ms);
        sh = cost_ms / target_ms;
        share += sh;
        n++;
        if (sh > worst_share) {
            worst_share = sh;
            snprintf(worst, sizeof(worst), "%s: %.0f ms a read every %.0f ms", lc->name, cost_ms,
                     target_ms);
        }
    }
    if (share > 1.0)
        log_warnx("wavemeter: the %d lasers with a revisit target need %.0f%% of the wavemeter's "
                  "time (largest share %s): some will be read later than their target; raise "
                  "max_age_ms or monitor_period_ms, or shorten exposures",
                  n, share * 100, worst);
}

void meter_start(struct meter *m, meter_reading_cb cb, void *ctx) {
    m->on_reading = cb;
    m->cb_ctx = ctx;
    meter_set_state(m, METER_RUNNING);
    m->cycle_start_ns = clock_now_ns(m->clk);
    meter_check_schedule(m);
    meter_queue_next(m);
}

void meter_stop(struct meter *m, meter_stopped_cb cb) {
    m->on_stopped = cb;
    if (m->state == METER_STOPPING || m->state == METER_STOPPED)
        return;
    meter_set_state(m, METER_STOPPING);
    uv_timer_stop(&m->backoff);
    /* A job not yet started is cancelled; one running finishes its read
     * (bounded by read_timeout_ms) and its callback completes the stop. */
    if (m->busy)
        uv_cancel((uv_req_t *)&m->work);
    else
        meter_finish_stop(m);
}

void meter_fini(struct meter *m) {
    if (m->sw && m->sw_dev)
        m->sw->close(m->sw_dev);
    m->sw_dev = NULL;
    if (m->drv && m->dev)
        m->drv->close(m->dev);
    m->dev = NULL;
}

int meter_simulate(struct meter *m, const struct wm_sim_cmd *cmd) {
    if (m->drv->simulate == NULL || m->dev == NULL)
        return -ENOTSUP;
    return m->drv->simulate(m->dev, cmd);
}

bool meter_can_simulate(const struct meter *m) {
    return m->drv->simulate != NULL;
}

struct meter_channel *meter_channel_find(struct meter *m, int channel) {
    for (int i = 0; i < m->nch; i++)
        if (m->ch[i].cfg->channel == channel)
            return &m->ch[i];
    return NULL;
}

struct meter_channel *meter_channel_by_name(struct meter *m, const char *name) {
    for (int i = 0; i < m->nch; i++)
        if (strcmp(m->ch[i].cfg->name, name) == 0)
            return &m->ch[i];
    return NULL;
}

const char *meter_state_name(const struct meter *m) {
    switch (m->state) {
    case METER_IDLE:
        return "idle";
    case METER_RUNNING:
        return m->busy ? "reading" : "running";
    case METER_BACKOFF:
        return "error";
    case METER_STOPPING:
        return "stopping";
    case METER_STOPPED:
        break;
    }
    return "stopped";
}

bool meter_busy(const struct meter *m) {
    return m->busy;
}
