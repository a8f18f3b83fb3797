/*
 * meter: measurement scheduling. Owns the wavemeter device, the one read job
 * in flight on libuv's thread pool, the channel schedule and the latest
 * reading of every channel. Lives on the loop thread; its pool job sees only
 * a copy of the request and the device.
 */
#ifndef WMD_METER_H
#define WMD_METER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "clock.h"
#include "config.h"
#include "wavemeter.h"

/* One reading as clients see it. */
struct reading {
    int channel;
    enum wm_status status;
    double frequency_thz; /* valid when status is WM_OK */
    int exposure_ms;
    uint64_t t_ns; /* monotonic acquisition time */
    double time_unix;
    uint64_t seq;   /* per-channel count of readings */
    bool straddled; /* the switch moved during it: never used by a lock */
    char detail[96];
};

/* Revisit periods kept per channel for status (mean, max). */
#define METER_REVISITS 64

struct meter_channel {
    const struct laser_config *cfg;
    struct reading last;            /* seq == 0: none yet */
    uint64_t reads, errors;         /* errors: status WM_ERROR */
    uint64_t not_ok;                /* no_signal, under/overexposed */
    uint64_t by_status[WM_NSTATUS]; /* readings by status (the metrics' counter) */

    /* The schedule: a reading is due target_ns after the last one ended
     * (0: as often as the others allow, a locked laser's). */
    uint64_t target_ns;
    bool locked_hint;                    /* the lasers say a lock uses it */
    uint64_t last_end_ns;                /* when its last read finished, 0 = never */
    uint64_t revisit_ns[METER_REVISITS]; /* ring of times between reads */
    size_t nrevisit, revisit_head;
    char last_problem[96];  /* its last status or error, for one log line per change */
    unsigned err_streak;    /* channel errors in a row */
    uint64_t hold_until_ns; /* not read again before (a channel error); 0 = free */
};

struct meter;
/* A new reading, on the loop thread, right after it is stored. */
typedef void (*meter_reading_cb)(struct meter *m, const struct reading *r, void *ctx);
typedef void (*meter_stopped_cb)(struct meter *m);

enum meter_state { METER_IDLE, METER_RUNNING, METER_BACKOFF, METER_STOPPING, METER_STOPPED };

/* Embedded in the daemon; meter_init/meter_fini. */
struct meter {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct clock *clk;
    const struct wm_driver *drv;
    void *dev;
    const struct sw_driver *sw; /* NULL: the wavemeter switches itself */
    void *sw_dev;               /* opened by the read job; NULL until then or after a failure */
    int nch;
    struct meter_channel ch[CONFIG_MAX_LASERS];

    enum meter_state state;
    uv_work_t work;
    bool busy;              /* a read job is in flight */
    int cur;                /* index of the channel being read */
    int switch_channel;     /* where the switch is (0 = unknown) */
    struct wm_read_req req; /* the job's input (copied before queueing) */
    struct wm_sample res;   /* the job's output */
    int rc;

    uint64_t cycle_start_ns, last_cycle_ns; /* a full pass over enabled channels */
    int cycle_reads;
    uint64_t consecutive_errors;
    char last_error[128];
    uv_timer_t backoff;    /* retry after device errors; also the wait when all are held */
    bool waiting;          /* every channel held back by its error: the timer resumes */
    uint64_t job_start_ns; /* when the read in flight was queued */
    unsigned backoff_ms;

    meter_reading_cb on_reading;
    void *cb_ctx;
    meter_stopped_cb on_stopped;
    /* Optional: the state changed (running, error, idle, ...). Loop thread. */
    void (*on_state)(struct meter *m, void *ctx);
    void *state_ctx;
};

/* Opens the driver named in cfg. Returns 0 or < 0 with err filled. */
int meter_init(struct meter *m, uv_loop_t *loop, const struct config *cfg, const struct clock *clk,
               char *err, size_t errlen);
/* Queue the first read. */
void meter_start(struct meter *m, meter_reading_cb cb, void *ctx);
/* Stop re-queuing; cb runs (on the loop) once no job is in flight and the
 * backoff timer is closed. */
void meter_stop(struct meter *m, meter_stopped_cb cb);
/* After stop completed: closes the device. */
void meter_fini(struct meter *m);

/* Lookup by channel number or laser name; NULL if none. */
struct meter_channel *meter_channel_find(struct meter *m, int channel);
struct meter_channel *meter_channel_by_name(struct meter *m, const char *name);
const char *meter_state_name(const struct meter *m);
/* The simulator's sim.* hooks: -ENOTSUP when the driver has none, else the
 * driver's answer (-ENOENT no such channel, -EINVAL bad argument). Loop thread. */
int meter_simulate(struct meter *m, const struct wm_sim_cmd *cmd);
/* The lasers tell the schedule which channels a lock uses: those are read
 * as often as the others allow, the rest every wavemeter.monitor_period_ms,
 * unless the laser sets max_age_ms. Loop thread. */
void meter_set_locked(struct meter *m, int channel, bool locked);
/* A channel's revisit period over the last METER_REVISITS reads, in ms
 * (NAN before two reads). */
void meter_revisit_ms(const struct meter_channel *c, double *mean_ms, double *max_ms);
/* The period the schedule will read a channel at, in ms, from its model of
 * read costs (not from measurements): a channel with a target every target;
 * a locked one (or one that would be, as_locked) its share of what the
 * targets leave. NAN for an unknown or disabled channel. Loop thread. */
double meter_expected_revisit_ms(const struct meter *m, int channel, bool as_locked);
bool meter_can_simulate(const struct meter *m);
bool meter_busy(const struct meter *m);

#endif
