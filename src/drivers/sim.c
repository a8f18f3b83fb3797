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

struct sim_act {
    struct sim_dev *dev;
    int channel;
};

static const char *const fault_names[] = {
    [SIM_FAULT_NONE] = "none",
    [SIM_FAULT_NO_SIGNAL] = "no_signal",
    [SIM_FAULT_UNDEREXPOSED] = "underexposed",
    [SIM_FAULT_OVEREXPOSED] = "overexposed",
};

int sim_fault_parse(const char *name, enum sim_fault *out) {
    for (size_t i = 0; i < sizeof(fault_names) / sizeof(fault_names[0]); i++) {
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

static int sim_open(const struct config *cfg, const struct clock *clk, void **devp, char *err,
                    size_t errlen) {
    struct sim_dev *d = calloc(1, sizeof(*d));
    uint64_t now_ns;

    if (d == NULL) {
        snprintf(err, errlen, "sim: out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->clk = clk;
    d->connected = true;
    now_ns = clock_now_ns(clk);
    rng_seed(d->rng, cfg->seed != 0 ? cfg->seed : now_ns);
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *lc = &cfg->lasers[i];
        struct sim_laser *l = &d->lasers[lc->channel];
        enum sim_fault fault = SIM_FAULT_NONE;

        if (sim_fault_parse(lc->sim.fault, &fault) != 0) {
            snprintf(err, errlen, "laser \"%s\": unknown sim fault \"%s\"", lc->name,
                     lc->sim.fault);
            pthread_mutex_destroy(&d->mu);
            free(d);
            return -EINVAL;
        }
        l->present = true;
        l->nominal_thz = lc->sim.nominal_thz;
        l->offset_mhz = lc->sim.offset_mhz;
        l->drift_mhz_per_sqrt_s = lc->sim.drift_mhz_per_sqrt_s;
        l->noise_mhz = lc->sim.noise_mhz;
        l->sensitivity_mhz_per_v = lc->sim.sensitivity_mhz_per_v;
        l->lag_s = lc->sim.lag_ms * 1e-3;
        l->t_ns = now_ns;
        l->fault = fault;
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

const struct wm_driver sim_driver = {
    .name = "sim",
    .worst_read_ms = sim_worst_read_ms,
    .open = sim_open,
    .close = sim_close,
    .read = sim_read,
};

static int sim_act_open(const struct laser_config *lc, const struct wm_driver *wm, void *wm_dev,
                        void **devp, char *err, size_t errlen) {
    struct sim_act *a;

    if (wm != &sim_driver) {
        snprintf(err, errlen, "laser \"%s\": actuator \"sim\" needs wavemeter driver \"sim\"",
                 lc->name);
        return -EINVAL;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        snprintf(err, errlen, "laser \"%s\": out of memory", lc->name);
        return -ENOMEM;
    }
    a->dev = wm_dev;
    a->channel = lc->channel;
    *devp = a;
    return 0;
}

static void sim_act_close(void *dev) {
    free(dev);
}

static int sim_act_write(void *dev, double output_v, int timeout_ms) {
    struct sim_act *a = dev;
    struct sim_laser *l;
    int rc = 0;

    (void)timeout_ms;
    pthread_mutex_lock(&a->dev->mu);
    if (!a->dev->connected) {
        /* The simulated box shares the wavemeter's cable: pulled together. */
        rc = -ENODEV;
    } else if ((l = laser_get(a->dev, a->channel)) == NULL) {
        rc = -ENOENT;
    } else {
        laser_advance(a->dev, l, clock_now_ns(a->dev->clk));
        l->input_v = output_v;
    }
    pthread_mutex_unlock(&a->dev->mu);
    return rc;
}

const struct act_driver sim_actuator = {
    .name = "sim",
    .open = sim_act_open,
    .close = sim_act_close,
    .write = sim_act_write,
};
