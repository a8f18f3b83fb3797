/*
 * sim: a simulated switched wavemeter with one simulated laser per configured
 * channel, and the actuator that drives a simulated laser's input. Reads spend
 * the switch settle and the exposure as real (clock) time, as a real device
 * does. It must not know about the loop, sockets or the controller.
 */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sim_laser {
    bool present;
    double nominal_thz;
    double offset_mhz; /* configured offset plus every mode hop */
    double drift_mhz;  /* random-walk state */
    double drift_mhz_per_sqrt_s;
    double noise_mhz;
    double sensitivity_mhz_per_v;
    double lag_s;
    double input_v;  /* what the actuator was last told */
    double actual_v; /* what the laser follows, lagging input_v */
    uint64_t t_ns;   /* time the state was last advanced to */
    enum sim_fault fault;
};

struct sim_dev {
    pthread_mutex_t mu;
    const struct clock *clk;
    uint64_t rng[4];
    bool connected;
    struct sim_laser lasers[CONFIG_MAX_LASERS + 1]; /* by channel */
};

static const char *const fault_names[] = {
    [SIM_FAULT_NONE] = "none",
    [SIM_FAULT_NO_SIGNAL] = "no_signal",
    [SIM_FAULT_UNDEREXPOSED] = "underexposed",
    [SIM_FAULT_OVEREXPOSED] = "overexposed",
    NULL, /* the end, for the config table */
};

int sim_fault_parse(const char *name, enum sim_fault *out) {
    for (size_t i = 0; fault_names[i] != NULL; i++) {
        if (strcmp(name, fault_names[i]) == 0) {
            *out = (enum sim_fault)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *sim_fault_name(enum sim_fault f) {
    return fault_names[f];
}

/* xoshiro256**, seeded through splitmix64: fast, and one seed gives one run. */
static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15u);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        s[i] = z ^ (z >> 31);
    }
}

/* A standard normal deviate (Box-Muller; one of the pair is thrown away,
 * which costs nothing that matters at wavemeter rates). */
static double rng_gauss(uint64_t s[4]) {
    double u1 = ((double)(rng_next(s) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(rng_next(s) >> 11) * 0x1.0p-53;

    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

/* Advance one laser's drift and actuator lag to now. Caller holds mu. */
static void laser_advance(struct sim_dev *d, struct sim_laser *l, uint64_t now_ns) {
    double dt_s;

    if (now_ns <= l->t_ns)
        return;
    dt_s = (double)(now_ns - l->t_ns) * 1e-9;
    l->t_ns = now_ns;
    l->drift_mhz += l->drift_mhz_per_sqrt_s * sqrt(dt_s) * rng_gauss(d->rng);
    if (l->lag_s > 0)
        l->actual_v += (l->input_v - l->actual_v) * (1.0 - exp(-dt_s / l->lag_s));
    else
        l->actual_v = l->input_v;
}

static double laser_true_thz(const struct sim_laser *l) {
    return l->nominal_thz +
           (l->offset_mhz + l->drift_mhz + l->sensitivity_mhz_per_v * l->actual_v) * 1e-6;
}

static int sim_open(const struct wm_open_args *a, void **devp, char *err, size_t errlen) {
    const struct config *cfg = a->cfg;
    const struct sim_settings *set = a->settings;
    struct sim_dev *d = calloc(1, sizeof(*d));
    uint64_t now_ns;

    if (d == NULL) {
        snprintf(err, errlen, "sim: out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->clk = a->clk;
    d->connected = true;
    now_ns = clock_now_ns(a->clk);
    rng_seed(d->rng, set->seed != 0 ? set->seed : now_ns);
    (void)err;
    (void)errlen;
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *lc = &cfg->lasers[i];
        const struct sim_chan *sc = sim_chan_const(lc);
        struct sim_laser *l = &d->lasers[lc->channel];

        l->present = true;
        l->nominal_thz = sc->nominal_thz;
        l->offset_mhz = sc->offset_mhz;
        l->drift_mhz_per_sqrt_s = sc->drift_mhz_per_sqrt_s;
        l->noise_mhz = sc->noise_mhz;
        l->sensitivity_mhz_per_v = sc->sensitivity_mhz_per_v;
        l->lag_s = sc->lag_ms * 1e-3;
        l->t_ns = now_ns;
        l->fault = (enum sim_fault)sc->fault;
    }
    *devp = d;
    return 0;
}

static void sim_close(void *dev) {
    struct sim_dev *d = dev;

    if (d == NULL)
        return;
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static struct sim_laser *laser_get(struct sim_dev *d, int channel) {
    if (channel < 1 || channel > CONFIG_MAX_LASERS || !d->lasers[channel].present)
        return NULL;
    return &d->lasers[channel];
}

static int sim_read(void *dev, const struct wm_read_req *req, struct wm_sample *out) {
    struct sim_dev *d = dev;
    struct sim_laser *l;
    uint64_t spend_ms = (uint64_t)req->exposure_ms + (req->switched ? (uint64_t)req->settle_ms : 0);
    uint64_t budget_ms = req->timeout_ms > 0 ? (uint64_t)req->timeout_ms : spend_ms;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->exposure_ms = req->exposure_ms;
    /* The device gives up at the timeout, as the real drivers do. */
    d->clk->sleep_ns(d->clk->ctx, (spend_ms < budget_ms ? spend_ms : budget_ms) * 1000000u);

    pthread_mutex_lock(&d->mu);
    out->t_ns = clock_now_ns(d->clk);
    out->time_unix = d->clk->wall_s(d->clk->ctx);
    if ((l = laser_get(d, req->channel)) == NULL) {
        out->status = WM_ERROR;
        snprintf(out->detail, sizeof(out->detail), "no simulated laser on channel %d",
                 req->channel);
        rc = -ENOENT;
        goto out;
    }
    if (!d->connected) {
        out->status = WM_ERROR;
        snprintf(out->detail, sizeof(out->detail), "simulated wavemeter disconnected");
        rc = -ENODEV;
        goto out;
    }
    if (spend_ms > budget_ms) {
        out->status = WM_ERROR;
        snprintf(out->detail, sizeof(out->detail), "read timed out after %d ms", req->timeout_ms);
        rc = -ETIMEDOUT;
        goto out;
    }
    laser_advance(d, l, out->t_ns);
    switch (l->fault) {
    case SIM_FAULT_NO_SIGNAL:
        out->status = WM_NO_SIGNAL;
        break;
    case SIM_FAULT_UNDEREXPOSED:
        out->status = WM_UNDEREXPOSED;
        break;
    case SIM_FAULT_OVEREXPOSED:
        out->status = WM_OVEREXPOSED;
        break;
    case SIM_FAULT_NONE:
        out->status = WM_OK;
        out->frequency_thz = laser_true_thz(l) + l->noise_mhz * rng_gauss(d->rng) * 1e-6;
        break;
    }
out:
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int sim_set_fault(void *dev, int channel, enum sim_fault fault) {
    struct sim_dev *d = dev;
    struct sim_laser *l;
    int rc = 0;

    pthread_mutex_lock(&d->mu);
    if ((l = laser_get(d, channel)) == NULL)
        rc = -ENOENT;
    else
        l->fault = fault;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int sim_set_connected(void *dev, bool connected) {
    struct sim_dev *d = dev;

    pthread_mutex_lock(&d->mu);
    d->connected = connected;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

int sim_mode_hop(void *dev, int channel, double jump_mhz) {
    struct sim_dev *d = dev;
    struct sim_laser *l;
    int rc = 0;

    pthread_mutex_lock(&d->mu);
    if ((l = laser_get(d, channel)) == NULL)
        rc = -ENOENT;
    else
        l->offset_mhz += jump_mhz;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int sim_peek(void *dev, int channel, double *input_v, double *true_thz) {
    struct sim_dev *d = dev;
    struct sim_laser *l;
    int rc = 0;

    pthread_mutex_lock(&d->mu);
    if ((l = laser_get(d, channel)) == NULL) {
        rc = -ENOENT;
    } else {
        laser_advance(d, l, clock_now_ns(d->clk));
        if (input_v)
            *input_v = l->actual_v;
        if (true_thz)
            *true_thz = laser_true_thz(l);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/* The simulator spends exactly the settle and the exposure. */
static int sim_worst_read_ms(int exposure_ms, int settle_ms, int timeout_ms) {
    (void)timeout_ms;
    return exposure_ms + settle_ms;
}

/* sim.*: the test hooks a client reaches through meter_simulate(). */
static int sim_simulate(void *dev, const struct wm_sim_cmd *cmd) {
    enum sim_fault fault;

    switch (cmd->op) {
    case WM_SIM_FAULT:
        if (cmd->arg == NULL || sim_fault_parse(cmd->arg, &fault) != 0)
            return -EINVAL;
        return sim_set_fault(dev, cmd->channel, fault);
    case WM_SIM_MODE_HOP:
        return sim_mode_hop(dev, cmd->channel, cmd->jump_mhz);
    case WM_SIM_CONNECT:
        return sim_set_connected(dev, true);
    case WM_SIM_DISCONNECT:
        return sim_set_connected(dev, false);
    }
    return -EINVAL;
}

#define S struct sim_settings
#define CH struct sim_chan

static const struct cfg_key sim_keys[] = {
    CFG_ROW_U64("seed", S, seed, "simulator random seed; 0 takes one from the clock"),
    CFG_ROW_END,
};

/* "Not in the file": the laser keys follow them, or they follow the laser. */
#define SIM_UNSET ((double)NAN)
#define SIM_DEFAULT_SENSITIVITY_MHZ_PER_V 50.0

static const struct cfg_key sim_chan_keys[] = {
    CFG_ROW_DBL("nominal_thz", CH, nominal_thz, 1, 2000,
                "free-running frequency at 0 V, in THz; default: the laser's setpoint_thz"),
    CFG_ROW_DBL("offset_mhz", CH, offset_mhz, -1000000, 1000000,
                "start offset from nominal_thz, in MHz"),
    CFG_ROW_DBL("drift_mhz_per_sqrt_s", CH, drift_mhz_per_sqrt_s, 0, 10000,
                "random-walk strength, in MHz per sqrt(s)"),
    CFG_ROW_DBL("noise_mhz", CH, noise_mhz, 0, 10000, "white measurement noise, 1 sigma, in MHz"),
    CFG_ROW_DBL("sensitivity_mhz_per_v", CH, sensitivity_mhz_per_v, -1000000, 1000000,
                "frequency change per actuator volt, signed, in MHz/V; default: the laser's"),
    CFG_ROW_DBL("lag_ms", CH, lag_ms, 0, 100000,
                "first-order time constant of the actuator, in ms"),
    CFG_ROW_CHOICE("fault", CH, fault, fault_names, "every reading of this channel has this fault"),
    CFG_ROW_END,
};
#undef S
#undef CH

static void sim_chan_defaults(void *p) {
    struct sim_chan *c = p;

    c->nominal_thz = SIM_UNSET;
    c->offset_mhz = 0;
    c->drift_mhz_per_sqrt_s = 0.5;
    c->noise_mhz = 0.5;
    c->sensitivity_mhz_per_v = SIM_UNSET;
    c->lag_ms = 20;
    c->fault = SIM_FAULT_NONE;
}

/* The simulated light and the laser's keys default to each other: the
 * laser sits on its setpoint, and the loop's sign is the light's. */
static void sim_chan_resolve(void *p, struct laser_config *lc) {
    struct sim_chan *c = p;

    if (isnan(c->nominal_thz) && !isnan(lc->setpoint_thz))
        c->nominal_thz = lc->setpoint_thz;
    if (isnan(c->nominal_thz))
        c->nominal_thz = 384.23; /* Rb D2, as the core's default setpoint */
    if (isnan(lc->setpoint_thz))
        lc->setpoint_thz = c->nominal_thz;
    /* A laser's 0 means "assume +", which a simulated laser cannot follow
     * (its frequency would ignore the actuator): it gets the default. */
    if (isnan(c->sensitivity_mhz_per_v))
        c->sensitivity_mhz_per_v =
            isnan(lc->sensitivity_mhz_per_v) || lc->sensitivity_mhz_per_v == 0
                ? SIM_DEFAULT_SENSITIVITY_MHZ_PER_V
                : lc->sensitivity_mhz_per_v;
    if (isnan(lc->sensitivity_mhz_per_v))
        lc->sensitivity_mhz_per_v = c->sensitivity_mhz_per_v;
}

const struct wm_driver sim_driver = {
    .cfg = {.name = "sim", .keys = sim_keys, .size = sizeof(struct sim_settings)},
    .chan = {.name = "sim",
             .keys = sim_chan_keys,
             .size = sizeof(struct sim_chan),
             .defaults = sim_chan_defaults},
    .chan_resolve = sim_chan_resolve,
    .default_actuator = "sim",
    .worst_read_ms = sim_worst_read_ms,
    .open = sim_open,
    .close = sim_close,
    .read = sim_read,
    .simulate = sim_simulate,
};

/* The simulated actuators are channels of the simulated wavemeter: one
 * device, the channel is the laser's. */
static void sim_act_ident(const void *settings, const struct laser_config *lc, char *device,
                          size_t devlen, char *channel, size_t chanlen) {
    (void)settings;
    snprintf(device, devlen, "sim");
    snprintf(channel, chanlen, "%d", lc->channel);
}

static int sim_act_check(const void *settings, const struct laser_config *lc,
                         const struct wm_driver *wm, const char **key, char *why, size_t whylen) {
    (void)settings;
    (void)lc;
    if (wm == &sim_driver)
        return 0;
    *key = "driver";
    snprintf(why, whylen,
             "actuator \"sim\" moves simulated lasers only (wavemeter driver \"sim\")");
    return -EINVAL;
}

static int sim_act_open(const struct act_open_args *a, void **devp, char *err, size_t errlen) {
    if (a->wm != &sim_driver || a->wm_dev == NULL) {
        snprintf(err, errlen, "actuator \"sim\" needs the simulated wavemeter");
        return -EINVAL;
    }
    *devp = a->wm_dev; /* borrowed: the meter owns and closes it */
    return 0;
}

static void sim_act_close(void *dev) {
    (void)dev;
}

static int sim_act_write(void *dev, const void *settings, const struct laser_config *lc,
                         double output_v, int timeout_ms, struct act_io *io) {
    struct sim_dev *d = dev;
    struct sim_laser *l;
    int rc = 0;

    (void)settings;
    (void)timeout_ms;
    io->readback_v = (double)NAN;
    pthread_mutex_lock(&d->mu);
    if (!d->connected) {
        /* The simulated box shares the wavemeter's cable: pulled together. */
        snprintf(io->why, sizeof(io->why), "simulated wavemeter disconnected");
        rc = -ENODEV;
    } else if ((l = laser_get(d, lc->channel)) == NULL) {
        snprintf(io->why, sizeof(io->why), "no simulated laser on channel %d", lc->channel);
        rc = -ENOENT;
    } else {
        laser_advance(d, l, clock_now_ns(d->clk));
        l->input_v = output_v;
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

const struct act_driver sim_actuator = {
    .cfg = {.name = "sim"},
    .ident = sim_act_ident,
    .check = sim_act_check,
    .open = sim_act_open,
    .close = sim_act_close,
    .write = sim_act_write,
};
